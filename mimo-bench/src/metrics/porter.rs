//! The Porter stemmer as nltk's `PorterStemmer()` runs it by default (mode
//! `NLTK_EXTENSIONS`: Martin Porter's published extensions plus nltk's own changes), which
//! nltk's METEOR and rouge-score's stemming use.

fn is_vowel(c: char) -> bool {
    matches!(c, 'a' | 'e' | 'i' | 'o' | 'u')
}

/// Consonant flags: `y` is a consonant at the start or after a vowel.
fn consonants(w: &[char]) -> Vec<bool> {
    let mut f: Vec<bool> = Vec::with_capacity(w.len());
    for (i, &c) in w.iter().enumerate() {
        let cons = if is_vowel(c) {
            false
        } else if c == 'y' {
            i == 0 || !f[i - 1]
        } else {
            true
        };
        f.push(cons);
    }
    f
}

fn is_consonant(w: &[char], i: usize) -> bool {
    consonants(&w[..=i])[i]
}

/// m in `[C](VC){m}[V]`.
fn measure(w: &[char]) -> usize {
    let f = consonants(w);
    f.windows(2).filter(|p| !p[0] && p[1]).count()
}

fn contains_vowel(w: &[char]) -> bool {
    !consonants(w).iter().all(|&c| c)
}

fn ends_double_consonant(w: &[char]) -> bool {
    let n = w.len();
    n >= 2 && w[n - 1] == w[n - 2] && is_consonant(w, n - 1)
}

fn ends_cvc(w: &[char]) -> bool {
    let n = w.len();
    (n >= 3
        && is_consonant(w, n - 3)
        && !is_consonant(w, n - 2)
        && is_consonant(w, n - 1)
        && !matches!(w[n - 1], 'w' | 'x' | 'y'))
        || (n == 2 && !is_consonant(w, 0) && is_consonant(w, 1))
}

fn ends_with(w: &[char], s: &str) -> bool {
    let s: Vec<char> = s.chars().collect();
    w.len() >= s.len() && w[w.len() - s.len()..] == s[..]
}

fn strip(w: &[char], suffix: &str) -> Vec<char> {
    w[..w.len() - suffix.chars().count()].to_vec()
}

fn with(mut stem: Vec<char>, add: &str) -> Vec<char> {
    stem.extend(add.chars());
    stem
}

type Cond<'a> = Option<&'a dyn Fn(&[char]) -> bool>;

/// nltk's `_apply_rule_list`: the first rule whose suffix matches decides (applied if its
/// condition holds, otherwise the word is returned unchanged). Suffix `*d` means "ends in a
/// double consonant" (two letters removed).
fn apply(w: &[char], rules: &[(&str, &str, Cond<'_>)]) -> Vec<char> {
    for (suffix, repl, cond) in rules {
        if *suffix == "*d" && ends_double_consonant(w) {
            let stem = w[..w.len() - 2].to_vec();
            return if cond.is_none_or(|c| c(&stem)) {
                with(stem, repl)
            } else {
                w.to_vec()
            };
        }
        if *suffix != "*d" && ends_with(w, suffix) {
            let stem = strip(w, suffix);
            return if cond.is_none_or(|c| c(&stem)) {
                with(stem, repl)
            } else {
                w.to_vec()
            };
        }
    }
    w.to_vec()
}

fn step1a(w: &[char]) -> Vec<char> {
    if ends_with(w, "ies") && w.len() == 4 {
        return with(strip(w, "ies"), "ie");
    }
    apply(
        w,
        &[
            ("sses", "ss", None),
            ("ies", "i", None),
            ("ss", "ss", None),
            ("s", "", None),
        ],
    )
}

fn step1b(w: &[char]) -> Vec<char> {
    if ends_with(w, "ied") {
        return with(strip(w, "ied"), if w.len() == 4 { "ie" } else { "i" });
    }
    if ends_with(w, "eed") {
        let stem = strip(w, "eed");
        return if measure(&stem) > 0 {
            with(stem, "ee")
        } else {
            w.to_vec()
        };
    }
    let mut inter = None;
    for suffix in ["ed", "ing"] {
        if ends_with(w, suffix) {
            let s = strip(w, suffix);
            if contains_vowel(&s) {
                inter = Some(s);
                break;
            }
        }
    }
    let Some(s) = inter else {
        return w.to_vec();
    };
    let last = s.last().copied().unwrap_or(' ');
    let last_s = last.to_string();
    let not_lsz = move |_: &[char]| !matches!(last, 'l' | 's' | 'z');
    let cvc = |stem: &[char]| measure(stem) == 1 && ends_cvc(stem);
    apply(
        &s,
        &[
            ("at", "ate", None),
            ("bl", "ble", None),
            ("iz", "ize", None),
            ("*d", &last_s, Some(&not_lsz)),
            ("", "e", Some(&cvc)),
        ],
    )
}

fn step1c(w: &[char]) -> Vec<char> {
    let cond = |stem: &[char]| stem.len() > 1 && is_consonant(stem, stem.len() - 1);
    apply(w, &[("y", "i", Some(&cond))])
}

fn positive(stem: &[char]) -> bool {
    measure(stem) > 0
}

fn step2(w: &[char]) -> Vec<char> {
    if ends_with(w, "alli") && positive(&strip(w, "alli")) {
        return step2(&with(strip(w, "alli"), "al"));
    }
    let word = w.to_vec();
    let logi = move |_: &[char]| positive(&word[..word.len().saturating_sub(3)]);
    let p: Cond<'_> = Some(&positive);
    apply(
        w,
        &[
            ("ational", "ate", p),
            ("tional", "tion", p),
            ("enci", "ence", p),
            ("anci", "ance", p),
            ("izer", "ize", p),
            ("bli", "ble", p),
            ("alli", "al", p),
            ("entli", "ent", p),
            ("eli", "e", p),
            ("ousli", "ous", p),
            ("ization", "ize", p),
            ("ation", "ate", p),
            ("ator", "ate", p),
            ("alism", "al", p),
            ("iveness", "ive", p),
            ("fulness", "ful", p),
            ("ousness", "ous", p),
            ("aliti", "al", p),
            ("iviti", "ive", p),
            ("biliti", "ble", p),
            ("fulli", "ful", p),
            ("logi", "log", Some(&logi)),
        ],
    )
}

fn step3(w: &[char]) -> Vec<char> {
    let p: Cond<'_> = Some(&positive);
    apply(
        w,
        &[
            ("icate", "ic", p),
            ("ative", "", p),
            ("alize", "al", p),
            ("iciti", "ic", p),
            ("ical", "ic", p),
            ("ful", "", p),
            ("ness", "", p),
        ],
    )
}

fn step4(w: &[char]) -> Vec<char> {
    let gt1 = |s: &[char]| measure(s) > 1;
    let ion = |s: &[char]| measure(s) > 1 && matches!(s.last(), Some('s' | 't'));
    let g: Cond<'_> = Some(&gt1);
    apply(
        w,
        &[
            ("al", "", g),
            ("ance", "", g),
            ("ence", "", g),
            ("er", "", g),
            ("ic", "", g),
            ("able", "", g),
            ("ible", "", g),
            ("ant", "", g),
            ("ement", "", g),
            ("ment", "", g),
            ("ent", "", g),
            ("ion", "", Some(&ion)),
            ("ou", "", g),
            ("ism", "", g),
            ("ate", "", g),
            ("iti", "", g),
            ("ous", "", g),
            ("ive", "", g),
            ("ize", "", g),
        ],
    )
}

fn step5a(w: &[char]) -> Vec<char> {
    if ends_with(w, "e") {
        let stem = strip(w, "e");
        let m = measure(&stem);
        if m > 1 || (m == 1 && !ends_cvc(&stem)) {
            return stem;
        }
    }
    w.to_vec()
}

fn step5b(w: &[char]) -> Vec<char> {
    let word = w.to_vec();
    let cond = move |_: &[char]| measure(&word[..word.len() - 1]) > 1;
    apply(w, &[("ll", "l", Some(&cond))])
}

/// nltk's irregular forms (NLTK_EXTENSIONS).
fn irregular(w: &str) -> Option<&'static str> {
    Some(match w {
        "sky" | "skies" => "sky",
        "dying" => "die",
        "lying" => "lie",
        "tying" => "tie",
        "news" => "news",
        "innings" | "inning" => "inning",
        "outings" | "outing" => "outing",
        "cannings" | "canning" => "canning",
        "howe" => "howe",
        "proceed" => "proceed",
        "exceed" => "exceed",
        "succeed" => "succeed",
        _ => return None,
    })
}

/// `nltk.stem.PorterStemmer().stem(word)`.
pub fn stem(word: &str) -> String {
    let lower = word.to_lowercase();
    if let Some(s) = irregular(&lower) {
        return s.to_string();
    }
    if word.chars().count() <= 2 {
        return lower;
    }
    let mut w: Vec<char> = lower.chars().collect();
    for step in [step1a, step1b, step1c, step2, step3, step4, step5a, step5b] {
        w = step(&w);
    }
    w.into_iter().collect()
}
