//! Text metrics (spec §7.4): BLEU-1..4 and ROUGE-L with pycocoevalcap's semantics (corpus
//! BLEU with the closest reference length; per-sample ROUGE-L with β = 1.2, averaged),
//! `rouge-score`'s ROUGE-L (its tokeniser, β = 1), nltk's `sentence_bleu`, and an
//! approximation of the PTB tokenisation pycocoevalcap applies first.

use std::collections::HashMap;

fn ngrams(words: &[&str], n: usize) -> HashMap<Vec<String>, usize> {
    let mut m = HashMap::new();
    if words.len() >= n {
        for w in words.windows(n) {
            *m.entry(w.iter().map(|s| s.to_string()).collect())
                .or_insert(0) += 1;
        }
    }
    m
}

/// The reference length closest to `len` (ties: the shorter), as both pycocoevalcap
/// (`closest`) and nltk choose it.
fn closest(ref_lens: &[usize], len: usize) -> usize {
    ref_lens
        .iter()
        .copied()
        .min_by_key(|&l| (l.abs_diff(len), l))
        .unwrap_or(0)
}

/// Clipped n-gram matches and guesses of one hypothesis against its references.
fn bleu_stats(refs: &[&str], hyp: &str, n: usize) -> (Vec<usize>, Vec<usize>, usize, usize) {
    let hyp_w: Vec<&str> = hyp.split_whitespace().collect();
    let refs_w: Vec<Vec<&str>> = refs
        .iter()
        .map(|r| r.split_whitespace().collect())
        .collect();
    let mut correct = vec![0; n];
    let mut guess = vec![0; n];
    for k in 1..=n {
        let mut maxc: HashMap<Vec<String>, usize> = HashMap::new();
        for r in &refs_w {
            for (g, c) in ngrams(r, k) {
                let e = maxc.entry(g).or_insert(0);
                *e = (*e).max(c);
            }
        }
        for (g, c) in ngrams(&hyp_w, k) {
            correct[k - 1] += c.min(maxc.get(&g).copied().unwrap_or(0));
        }
        guess[k - 1] = (hyp_w.len() + 1).saturating_sub(k);
    }
    let ref_lens: Vec<usize> = refs_w.iter().map(Vec::len).collect();
    (correct, guess, hyp_w.len(), closest(&ref_lens, hyp_w.len()))
}

/// pycocoevalcap `Bleu(4).compute_score`: corpus BLEU-1..4 over `(references, hypothesis)`
/// samples, tokens split on whitespace (tokenise first with [`coco_tokenize`]).
pub fn coco_bleu(samples: &[(Vec<String>, String)]) -> [f64; 4] {
    const TINY: f64 = 1e-15;
    const SMALL: f64 = 1e-9;
    let (mut correct, mut guess) = ([0usize; 4], [0usize; 4]);
    let (mut testlen, mut reflen) = (0usize, 0usize);
    for (refs, hyp) in samples {
        let refs: Vec<&str> = refs.iter().map(String::as_str).collect();
        let (c, g, t, r) = bleu_stats(&refs, hyp, 4);
        for k in 0..4 {
            correct[k] += c[k];
            guess[k] += g[k];
        }
        testlen += t;
        reflen += r;
    }
    let mut out = [0f64; 4];
    let mut bleu = 1.0f64;
    for k in 0..4 {
        bleu *= (correct[k] as f64 + TINY) / (guess[k] as f64 + SMALL);
        out[k] = bleu.powf(1.0 / (k as f64 + 1.0));
    }
    let ratio = (testlen as f64 + TINY) / (reflen as f64 + SMALL);
    if ratio < 1.0 {
        for v in &mut out {
            *v *= (1.0 - 1.0 / ratio).exp();
        }
    }
    out
}

/// Length of the longest common subsequence.
pub fn lcs(a: &[&str], b: &[&str]) -> usize {
    let mut prev = vec![0usize; b.len() + 1];
    let mut cur = vec![0usize; b.len() + 1];
    for x in a {
        for (j, y) in b.iter().enumerate() {
            cur[j + 1] = if x == y {
                prev[j] + 1
            } else {
                cur[j].max(prev[j + 1])
            };
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// pycocoevalcap ROUGE-L of one sample: tokens split on single spaces, best precision and
/// recall over the references, F with β = 1.2.
pub fn coco_rouge_l_sample(refs: &[String], hyp: &str) -> f64 {
    const BETA: f64 = 1.2;
    let c: Vec<&str> = hyp.split(' ').collect();
    let (mut p_max, mut r_max) = (0f64, 0f64);
    for r in refs {
        let t: Vec<&str> = r.split(' ').collect();
        let l = lcs(&t, &c) as f64;
        p_max = p_max.max(l / c.len() as f64);
        r_max = r_max.max(l / t.len() as f64);
    }
    if p_max != 0.0 && r_max != 0.0 {
        ((1.0 + BETA * BETA) * p_max * r_max) / (r_max + BETA * BETA * p_max)
    } else {
        0.0
    }
}

/// pycocoevalcap `Rouge().compute_score`: the mean per-sample ROUGE-L.
pub fn coco_rouge_l(samples: &[(Vec<String>, String)]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    samples
        .iter()
        .map(|(r, h)| coco_rouge_l_sample(r, h))
        .sum::<f64>()
        / samples.len() as f64
}

/// `rouge-score`'s tokeniser: lowercase, every run of characters outside `[a-z0-9]` becomes
/// a space, split; with `stem`, tokens longer than 3 characters go through nltk's Porter
/// stemmer.
pub fn rouge_score_tokenize(s: &str, stem: bool) -> Vec<String> {
    let lower = s.to_lowercase();
    let spaced: String = lower
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                ' '
            }
        })
        .collect();
    spaced
        .split_whitespace()
        .map(|t| {
            if stem && t.chars().count() > 3 {
                super::porter::stem(t)
            } else {
                t.to_string()
            }
        })
        .filter(|t| {
            !t.is_empty()
                && t.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        })
        .collect()
}

/// `rouge-score` `RougeScorer(["rougeL"], use_stemmer).score(target, prediction)`:
/// `(precision, recall, F1)`.
pub fn rouge_score_l(target: &str, prediction: &str, use_stemmer: bool) -> (f64, f64, f64) {
    let t = rouge_score_tokenize(target, use_stemmer);
    let p = rouge_score_tokenize(prediction, use_stemmer);
    if t.is_empty() || p.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    let tr: Vec<&str> = t.iter().map(String::as_str).collect();
    let pr: Vec<&str> = p.iter().map(String::as_str).collect();
    let l = lcs(&tr, &pr) as f64;
    let (prec, rec) = (l / pr.len() as f64, l / tr.len() as f64);
    let f = if prec + rec > 0.0 {
        2.0 * prec * rec / (prec + rec)
    } else {
        0.0
    };
    (prec, rec, f)
}

/// nltk `sentence_bleu(references, hypothesis, weights)` without smoothing: tokens split on
/// whitespace; 0 without a unigram match; a zero higher-order precision counts as
/// `f64::MIN_POSITIVE` (nltk's `sys.float_info.min`).
pub fn nltk_sentence_bleu(refs: &[&str], hyp: &str, weights: &[f64]) -> f64 {
    let n = weights.len();
    let (correct, _, hyp_len, ref_len) = bleu_stats(refs, hyp, n);
    if correct.first().copied().unwrap_or(0) == 0 {
        return 0.0;
    }
    let hyp_w: Vec<&str> = hyp.split_whitespace().collect();
    let bp = if hyp_len > ref_len {
        1.0
    } else if hyp_len == 0 {
        0.0
    } else {
        (1.0 - ref_len as f64 / hyp_len as f64).exp()
    };
    let mut terms = Vec::with_capacity(n);
    for (k, w) in weights.iter().enumerate() {
        let denom = (hyp_w.len() + 1).saturating_sub(k + 1).max(1);
        let p = if correct[k] == 0 {
            f64::MIN_POSITIVE
        } else {
            correct[k] as f64 / denom as f64
        };
        terms.push(w * p.ln());
    }
    bp * fsum(&terms).exp()
}

/// Exactly rounded sum (Shewchuk), like Python's `math.fsum`.
pub fn fsum(xs: &[f64]) -> f64 {
    let mut partials: Vec<f64> = Vec::new();
    for &x0 in xs {
        let mut x = x0;
        let mut i = 0;
        for j in 0..partials.len() {
            let mut y = partials[j];
            if x.abs() < y.abs() {
                std::mem::swap(&mut x, &mut y);
            }
            let hi = x + y;
            let lo = y - (hi - x);
            if lo != 0.0 {
                partials[i] = lo;
                i += 1;
            }
            x = hi;
        }
        partials.truncate(i);
        partials.push(x);
    }
    // Round the partials' sum correctly (the half-way correction of CPython's fsum).
    let mut n = partials.len();
    if n == 0 {
        return 0.0;
    }
    n -= 1;
    let mut hi = partials[n];
    let mut lo = 0.0;
    while n > 0 {
        let x = hi;
        n -= 1;
        let y = partials[n];
        hi = x + y;
        let yr = hi - x;
        lo = y - yr;
        if lo != 0.0 {
            break;
        }
    }
    if n > 0 && ((lo < 0.0 && partials[n - 1] < 0.0) || (lo > 0.0 && partials[n - 1] > 0.0)) {
        let y = lo * 2.0;
        let x = hi + y;
        let yr = x - hi;
        if y == yr {
            hi = x;
        }
    }
    hi
}

/// PTB's bracket tokens, lowercased as `-lowerCase` leaves them; pycocoevalcap's removal list
/// has them in upper case, so they stay in the token stream.
fn bracket(c: char) -> Option<&'static str> {
    match c {
        '(' => Some("-lrb-"),
        ')' => Some("-rrb-"),
        '[' => Some("-lsb-"),
        ']' => Some("-rsb-"),
        '{' => Some("-lcb-"),
        '}' => Some("-rcb-"),
        _ => None,
    }
}

/// Punctuation tokens pycocoevalcap drops after PTB tokenisation.
const PUNCTUATION: [&str; 17] = [
    "''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--",
    "...", ";",
];

/// An approximation of pycocoevalcap's tokenisation (Stanford PTBTokenizer with
/// `-lowerCase`, then punctuation tokens removed): punctuation is split from words and
/// dropped, brackets stay as `-lrb-`/`-rrb-`/... (pycocoevalcap's removal list has them in
/// upper case), `'s`/`n't` are split off and abbreviations keep their period as PTB does.
/// Not byte-identical to the Java tokenizer on unusual text (the agreement on the test
/// corpus is printed by the tests).
pub fn coco_tokenize(s: &str) -> String {
    let lower = s.to_lowercase();
    let mut tokens: Vec<String> = Vec::new();
    for word in lower.split_whitespace() {
        let mut cur = String::new();
        let chars: Vec<char> = word.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            let inner = i > 0
                && i + 1 < chars.len()
                && chars[i - 1].is_alphanumeric()
                && chars[i + 1].is_alphanumeric();
            if c.is_alphanumeric() || (inner && matches!(c, '-' | '.' | ',' | '/')) {
                cur.push(c);
            } else if c == '.' && cur.contains('.') && chars[i - 1].is_alphanumeric() {
                // abbreviations keep their final period: "e.g.", "u.s."
                cur.push(c);
            } else if let Some(b) = bracket(c) {
                if !cur.is_empty() {
                    tokens.push(std::mem::take(&mut cur));
                }
                tokens.push(b.to_string());
            } else if c == '\'' && !cur.is_empty() && i + 1 < chars.len() {
                // clitics: "liver's" -> "liver 's", "don't" -> "do n't"
                let negation = cur.len() > 1 && cur.ends_with('n') && chars[i + 1] == 't';
                if negation {
                    cur.pop();
                }
                tokens.push(std::mem::take(&mut cur));
                if negation {
                    cur.push('n');
                }
                cur.push(c);
            } else {
                if !cur.is_empty() {
                    tokens.push(std::mem::take(&mut cur));
                }
                tokens.push(c.to_string());
            }
            i += 1;
        }
        if !cur.is_empty() {
            tokens.push(cur);
        }
    }
    tokens
        .into_iter()
        .filter(|t| {
            !t.is_empty()
                && !PUNCTUATION.contains(&t.as_str())
                && t.chars().any(|c| c.is_alphanumeric())
        })
        .collect::<Vec<_>>()
        .join(" ")
}
