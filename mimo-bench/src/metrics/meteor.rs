//! METEOR, two labelled implementations:
//!
//! * [`nltk_meteor`]: nltk's `meteor_score` (`nltk/translate/meteor_score.py`: exact, then
//!   Porter-stem, then WordNet-synonym matching; `Fmean = PR / (αP + (1-α)R)`, fragmentation
//!   penalty `γ (chunks/matches)^β`), natively, with WordNet read from the WordNet 3.0
//!   database files (Debian's `wordnet-base` installs them in `/usr/share/wordnet`) by
//!   [`WordNet`].
//! * [`JavaMeteor`]: pycocoevalcap's METEOR 1.5 (`pycocoevalcap/meteor/meteor.py`), which
//!   papers quote, by running the user's `meteor-1.5.jar` (`-stdio -l en -norm`) through
//!   Java exactly as pycocoevalcap does.
//!
//! The two give different values; tables say which one was used.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use super::porter;

/// Where synonyms come from.
pub trait Synonyms {
    /// nltk's `{lemma.name() for synset in wordnet.synsets(word) for lemma in synset.lemmas()
    /// if "_" not in lemma.name()}`.
    fn synonyms(&self, word: &str) -> BTreeSet<String>;
}

/// A fixed synonym table (tests, or a precomputed subset).
#[derive(Debug, Clone, Default)]
pub struct SynonymTable(pub HashMap<String, BTreeSet<String>>);

impl Synonyms for SynonymTable {
    fn synonyms(&self, word: &str) -> BTreeSet<String> {
        self.0.get(word).cloned().unwrap_or_default()
    }
}

/// No synonyms (METEOR with exact and stem matching only).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoSynonyms;

impl Synonyms for NoSynonyms {
    fn synonyms(&self, _: &str) -> BTreeSet<String> {
        BTreeSet::new()
    }
}

const POS: [(&str, char); 4] = [("noun", 'n'), ("verb", 'v'), ("adj", 'a'), ("adv", 'r')];

/// The WordNet 3.0 database (the `index.*`, `data.*` and `*.exc` files), with nltk's
/// `synsets` lookup: nltk's `_morphy` (exception lists, else one round of its suffix rules,
/// plus the word itself) per part of speech.
#[derive(Debug)]
pub struct WordNet {
    dir: PathBuf,
    /// lemma -> part of speech -> synset offsets
    index: HashMap<String, HashMap<char, Vec<u64>>>,
    exceptions: HashMap<char, HashMap<String, Vec<String>>>,
    /// (pos, offset) -> lemma names (adjective markers like "(a)" removed)
    data: HashMap<(char, u64), Vec<String>>,
}

/// Why WordNet could not be read.
#[derive(Debug, thiserror::Error)]
#[error(
    "WordNet at {path}: {message} (install Debian's wordnet-base, or give the folder holding index.noun, data.noun, noun.exc, ...)"
)]
pub struct WordNetError {
    /// The file or folder.
    pub path: PathBuf,
    /// What went wrong.
    pub message: String,
}

impl WordNet {
    /// Debian's location.
    pub const DEFAULT_DIR: &'static str = "/usr/share/wordnet";

    /// Reads the database from `dir`.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, WordNetError> {
        let dir = dir.as_ref().to_path_buf();
        let read = |name: &str| {
            let p = dir.join(name);
            std::fs::read_to_string(&p).map_err(|e| WordNetError {
                path: p,
                message: e.to_string(),
            })
        };
        let mut index: HashMap<String, HashMap<char, Vec<u64>>> = HashMap::new();
        let mut exceptions = HashMap::new();
        let mut data = HashMap::new();
        for (suffix, pos) in POS {
            for line in read(&format!("index.{suffix}"))?.lines() {
                if line.starts_with(' ') {
                    continue;
                }
                let t: Vec<&str> = line.split_whitespace().collect();
                let parse = || -> Option<(String, Vec<u64>)> {
                    let n_synsets: usize = t.get(2)?.parse().ok()?;
                    let n_ptr: usize = t.get(3)?.parse().ok()?;
                    let start = 4 + n_ptr + 2;
                    let offs = t
                        .get(start..start + n_synsets)?
                        .iter()
                        .map(|o| o.parse().ok())
                        .collect::<Option<Vec<u64>>>()?;
                    Some((t.first()?.to_string(), offs))
                };
                if let Some((lemma, offs)) = parse() {
                    index.entry(lemma).or_default().insert(pos, offs);
                }
            }
            let mut exc: HashMap<String, Vec<String>> = HashMap::new();
            for line in read(&format!("{suffix}.exc"))?.lines() {
                let mut t = line.split_whitespace();
                if let Some(k) = t.next() {
                    exc.insert(k.to_string(), t.map(String::from).collect());
                }
            }
            exceptions.insert(pos, exc);
            for line in read(&format!("data.{suffix}"))?.lines() {
                if line.starts_with(' ') {
                    continue;
                }
                let t: Vec<&str> = line.split_whitespace().collect();
                let parse = || -> Option<(u64, Vec<String>)> {
                    let off: u64 = t.first()?.parse().ok()?;
                    let n = usize::from_str_radix(t.get(3)?, 16).ok()?;
                    let words = (0..n)
                        .map(|i| {
                            let w = t.get(4 + 2 * i)?;
                            // adjective syntactic markers: "able(a)", "galore(ip)"
                            Some(match w.find('(') {
                                Some(k) if w.ends_with(')') => w[..k].to_string(),
                                _ => w.to_string(),
                            })
                        })
                        .collect::<Option<Vec<String>>>()?;
                    Some((off, words))
                };
                if let Some((off, words)) = parse() {
                    data.insert((pos, off), words);
                }
            }
        }
        if index.is_empty() {
            return Err(WordNetError {
                path: dir,
                message: "no index entries".into(),
            });
        }
        Ok(Self {
            dir,
            index,
            exceptions,
            data,
        })
    }

    /// The folder it was read from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn morphy(&self, form: &str, pos: char) -> Vec<String> {
        let subs: &[(&str, &str)] = match pos {
            'n' => &[
                ("s", ""),
                ("ses", "s"),
                ("ves", "f"),
                ("xes", "x"),
                ("zes", "z"),
                ("ches", "ch"),
                ("shes", "sh"),
                ("men", "man"),
                ("ies", "y"),
            ],
            'v' => &[
                ("s", ""),
                ("ies", "y"),
                ("es", "e"),
                ("es", ""),
                ("ed", "e"),
                ("ed", ""),
                ("ing", "e"),
                ("ing", ""),
            ],
            'a' => &[("er", ""), ("est", ""), ("er", "e"), ("est", "e")],
            _ => &[],
        };
        let mut forms = vec![form.to_string()];
        match self.exceptions.get(&pos).and_then(|e| e.get(form)) {
            Some(exc) => forms.extend(exc.iter().cloned()),
            None => {
                for (old, new) in subs {
                    if let Some(stem) = form.strip_suffix(old) {
                        forms.push(format!("{stem}{new}"));
                    }
                }
            }
        }
        let mut seen = HashSet::new();
        forms
            .into_iter()
            .filter(|f| self.index.get(f).is_some_and(|m| m.contains_key(&pos)))
            .filter(|f| seen.insert(f.clone()))
            .collect()
    }
}

impl Synonyms for WordNet {
    fn synonyms(&self, word: &str) -> BTreeSet<String> {
        let lemma = word.to_lowercase();
        let mut out = BTreeSet::new();
        for (_, pos) in POS {
            for form in self.morphy(&lemma, pos) {
                for off in self.index[&form].get(&pos).into_iter().flatten() {
                    for name in self.data.get(&(pos, *off)).into_iter().flatten() {
                        if !name.contains('_') {
                            out.insert(name.clone());
                        }
                    }
                }
            }
        }
        out
    }
}

/// One matching stage of nltk: scans hypothesis words from the end and, for each, the first
/// remaining reference word from the end that `matches`; matched words leave both lists.
fn match_stage(
    hyp: &mut Vec<(usize, String)>,
    reference: &mut Vec<(usize, String)>,
    mut matches: impl FnMut(&str, &str) -> bool,
) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut i = hyp.len();
    while i > 0 {
        i -= 1;
        let mut j = reference.len();
        while j > 0 {
            j -= 1;
            if matches(&hyp[i].1, &reference[j].1) {
                out.push((hyp[i].0, reference[j].0));
                hyp.remove(i);
                reference.remove(j);
                break;
            }
        }
    }
    out
}

/// nltk `single_meteor_score(reference, hypothesis)` on pre-tokenised words (lowercased
/// here, as nltk's default `preprocess`), with α 0.9, β 3, γ 0.5.
pub fn nltk_single_meteor(reference: &[&str], hypothesis: &[&str], wordnet: &dyn Synonyms) -> f64 {
    let (alpha, beta, gamma) = (0.9, 3.0, 0.5);
    let mut hyp: Vec<(usize, String)> = hypothesis
        .iter()
        .map(|w| w.to_lowercase())
        .enumerate()
        .collect();
    let mut refs: Vec<(usize, String)> = reference
        .iter()
        .map(|w| w.to_lowercase())
        .enumerate()
        .collect();
    let (hyp_len, ref_len) = (hyp.len(), refs.len());
    let mut matches = match_stage(&mut hyp, &mut refs, |a, b| a == b);
    // The stem stage replaces the remaining words by their stems, which the synonym stage
    // then looks up (as nltk does).
    for w in hyp.iter_mut().chain(refs.iter_mut()) {
        w.1 = porter::stem(&w.1);
    }
    matches.extend(match_stage(&mut hyp, &mut refs, |a, b| a == b));
    let mut cache: HashMap<String, BTreeSet<String>> = HashMap::new();
    matches.extend(match_stage(&mut hyp, &mut refs, |h, r| {
        r == h
            || cache
                .entry(h.to_string())
                .or_insert_with(|| wordnet.synonyms(h))
                .contains(r)
    }));
    matches.sort_by_key(|m| m.0);
    let m = matches.len();
    if m == 0 || hyp_len == 0 || ref_len == 0 {
        return 0.0;
    }
    let p = m as f64 / hyp_len as f64;
    let r = m as f64 / ref_len as f64;
    let fmean = (p * r) / (alpha * p + (1.0 - alpha) * r);
    let mut chunks = 1;
    for w in matches.windows(2) {
        if !(w[1].0 == w[0].0 + 1 && w[1].1 == w[0].1 + 1) {
            chunks += 1;
        }
    }
    let frag = chunks as f64 / m as f64;
    (1.0 - gamma * frag.powf(beta)) * fmean
}

/// nltk `meteor_score(references, hypothesis)`: the best score over the references.
pub fn nltk_meteor(references: &[Vec<&str>], hypothesis: &[&str], wordnet: &dyn Synonyms) -> f64 {
    references
        .iter()
        .map(|r| nltk_single_meteor(r, hypothesis, wordnet))
        .fold(0.0, f64::max)
}

/// pycocoevalcap's METEOR 1.5 through Java: one `java -jar meteor-1.5.jar - - -stdio -l en
/// -norm` process, fed `SCORE ||| refs ||| hyp` lines and an `EVAL` line per batch.
pub struct JavaMeteor {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl std::fmt::Debug for JavaMeteor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JavaMeteor").finish_non_exhaustive()
    }
}

impl JavaMeteor {
    /// Starts the jar (its `data/paraphrase-en.gz` must lie next to it, as shipped).
    pub fn start(jar: &Path) -> std::io::Result<Self> {
        if !jar.is_file() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("METEOR jar {} not found", jar.display()),
            ));
        }
        let mut child = Command::new("java")
            .args(["-jar", "-Xmx2G"])
            .arg(jar)
            .args(["-", "-", "-stdio", "-l", "en", "-norm"])
            .current_dir(jar.parent().unwrap_or(Path::new(".")))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| std::io::Error::other("no stdin"))?;
        let stdout = BufReader::new(
            child
                .stdout
                .take()
                .ok_or_else(|| std::io::Error::other("no stdout"))?,
        );
        Ok(Self {
            child,
            stdin,
            stdout,
        })
    }

    fn line(&mut self) -> std::io::Result<String> {
        let mut s = String::new();
        if self.stdout.read_line(&mut s)? == 0 {
            return Err(std::io::Error::other("METEOR process ended"));
        }
        Ok(s.trim().to_string())
    }

    /// pycocoevalcap `Meteor().compute_score`: (corpus score, per-sample scores) for
    /// `(references, hypothesis)` samples (already tokenised and lowercased).
    pub fn score(&mut self, samples: &[(Vec<String>, String)]) -> std::io::Result<(f64, Vec<f64>)> {
        let mut eval = String::from("EVAL");
        for (refs, hyp) in samples {
            let hyp = hyp.replace("|||", "").replace("  ", " ");
            let line = format!("SCORE ||| {} ||| {}\n", refs.join(" ||| "), hyp);
            self.stdin.write_all(line.as_bytes())?;
            self.stdin.flush()?;
            let stats = self.line()?;
            eval.push_str(&format!(" ||| {stats}"));
        }
        eval.push('\n');
        self.stdin.write_all(eval.as_bytes())?;
        self.stdin.flush()?;
        let parse = |s: String| {
            s.parse::<f64>()
                .map_err(|e| std::io::Error::other(format!("METEOR output {s:?}: {e}")))
        };
        let mut per = Vec::with_capacity(samples.len());
        for _ in samples {
            let l = self.line()?;
            per.push(parse(l)?);
        }
        let total = self.line()?;
        Ok((parse(total)?, per))
    }
}

impl Drop for JavaMeteor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
