//! Dialects declared as tables of `(file pattern, module pattern)` rules, with both
//! directions derived from the one table.

use burn_store::TensorSnapshot;

use super::Dialect;

/// One segment of a [`PatternDialect`] pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seg<'a> {
    /// This exact segment.
    Lit(&'a str),
    /// Any one segment.
    One,
    /// One of `a|b|c`.
    Alt(&'a str),
    /// One or more segments.
    Rest,
}

fn segments(pattern: &str) -> Vec<Seg<'_>> {
    pattern
        .split('.')
        .map(|s| match s {
            "*" => Seg::One,
            "**" => Seg::Rest,
            _ => match s.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
                Some(alts) => Seg::Alt(alts),
                None => Seg::Lit(s),
            },
        })
        .collect()
}

/// The captures of `key` against `pattern` (wildcards in order), if it matches.
fn captures<'k>(pattern: &[Seg], key: &'k str) -> Option<Vec<String>> {
    let parts: Vec<&'k str> = key.split('.').collect();
    let rest = pattern.iter().position(|s| *s == Seg::Rest);
    let one = |seg: &Seg, part: &str, out: &mut Vec<String>| match seg {
        Seg::Lit(l) => *l == part,
        Seg::One => {
            out.push(part.to_string());
            true
        }
        Seg::Alt(alts) => {
            let hit = alts.split('|').any(|a| a == part);
            if hit {
                out.push(part.to_string());
            }
            hit
        }
        Seg::Rest => false,
    };
    let mut out = Vec::new();
    match rest {
        None => {
            if parts.len() != pattern.len() {
                return None;
            }
            for (seg, part) in pattern.iter().zip(&parts) {
                if !one(seg, part, &mut out) {
                    return None;
                }
            }
        }
        Some(r) => {
            let tail = pattern.len() - r - 1;
            if parts.len() < r + tail + 1 {
                return None;
            }
            for (seg, part) in pattern[..r].iter().zip(&parts[..r]) {
                if !one(seg, part, &mut out) {
                    return None;
                }
            }
            let middle = parts[r..parts.len() - tail].join(".");
            let mut after = Vec::new();
            for (seg, part) in pattern[r + 1..].iter().zip(&parts[parts.len() - tail..]) {
                if !one(seg, part, &mut after) {
                    return None;
                }
            }
            out.push(middle);
            out.extend(after);
        }
    }
    Some(out)
}

/// `pattern` with its wildcards filled by `caps` in order.
fn fill(pattern: &[Seg], caps: &[String]) -> String {
    let mut caps = caps.iter();
    pattern
        .iter()
        .map(|s| match s {
            Seg::Lit(l) => l.to_string(),
            _ => caps.next().cloned().unwrap_or_default(),
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// Whether two patterns have the same wildcards in the same order (the rule converts both
/// ways); a rule whose file side has more wildcards is an alias read in one direction only.
fn reversible(a: &[Seg], b: &[Seg]) -> bool {
    let kinds = |p: &[Seg]| -> Vec<u8> {
        p.iter()
            .filter_map(|s| match s {
                Seg::Lit(_) => None,
                Seg::One | Seg::Alt(_) => Some(0),
                Seg::Rest => Some(1),
            })
            .collect()
    };
    kinds(a) == kinds(b)
}

/// A dialect declared as one table of `(file pattern, module pattern)` rules, from which
/// both directions are derived. Patterns are dotted paths whose segments are literals, `*`
/// (any one segment), `{a|b}` (one of these) or `**` (one or more segments, once per
/// pattern); a rule's captures fill the other side's wildcards in order. The first rule
/// that matches applies, in both directions, so canonical rules come first and read-only
/// aliases (with more wildcards on the file side) after them. A rule with an empty module
/// side marks file keys that are not the model's (buffers such as `position_ids`). Keys no
/// rule matches keep their name when `keep_unmatched`, else they are not the model's.
#[derive(Debug, Clone, Copy)]
pub struct PatternDialect {
    /// Human-readable name, for messages.
    pub name: &'static str,
    /// `(file pattern, module pattern)` rules.
    pub rules: &'static [(&'static str, &'static str)],
    /// Whether an unmatched key names a module path as it is.
    pub keep_unmatched: bool,
}

impl PatternDialect {
    /// Module path of a file key (`None`: not the model's).
    pub fn to_module(&self, key: &str) -> Option<String> {
        for (file, module) in self.rules {
            let (f, m) = (segments(file), segments(module));
            if let Some(caps) = captures(&f, key) {
                return (!module.is_empty()).then(|| fill(&m, &caps));
            }
        }
        self.keep_unmatched.then(|| key.to_string())
    }

    /// File key of a module path (the canonical form: aliases are never written).
    pub fn to_file(&self, path: &str) -> String {
        for (file, module) in self.rules {
            let (f, m) = (segments(file), segments(module));
            if module.is_empty() || !reversible(&f, &m) {
                continue;
            }
            if let Some(caps) = captures(&m, path) {
                return fill(&f, &caps);
            }
        }
        path.to_string()
    }
}

impl Dialect for PatternDialect {
    fn name(&self) -> &str {
        self.name
    }

    fn module_tensors(&self, key: &str, tensor: &TensorSnapshot) -> Vec<(String, TensorSnapshot)> {
        self.to_module(key)
            .map(|p| vec![(p, tensor.clone())])
            .unwrap_or_default()
    }

    fn file_param(&self, torch_path: &str, torch_shape: &[usize]) -> (String, Vec<usize>) {
        (self.to_file(torch_path), torch_shape.to_vec())
    }
}
