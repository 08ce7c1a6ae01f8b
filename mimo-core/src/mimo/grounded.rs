//! Reading grounded answers: `It shows <p>the liver</p><SEG> and <p>a cyst</p><SEG>.` becomes
//! the plain text `It shows the liver and a cyst.` with one segment per `<SEG>`, each with
//! the phrase it grounds and that phrase's character span in the plain text.
//!
//! Model output is not always well formed, so the parser never fails: a `</p>` without `<p>`
//! is dropped, a `<p>` opened again restarts the phrase, a `<SEG>` inside an open phrase
//! closes it, a `<SEG>` without a phrase right before it (whitespace allowed) gets no phrase,
//! and a phrase without `<SEG>` stays plain text. Every `<SEG>` yields exactly one segment,
//! in order, because each `<SEG>` token carries one mask.

use serde::{Deserialize, Serialize};

/// Opens a grounded phrase.
pub const P_START: &str = "<p>";
/// Closes a grounded phrase.
pub const P_END: &str = "</p>";
/// Asks for a mask.
pub const SEG: &str = "<SEG>";

/// One `<SEG>` of an answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParsedSegment {
    /// The phrase it grounds, if the answer marked one.
    pub phrase: Option<String>,
    /// `[start, end)` of the phrase in the plain text, in characters (not bytes).
    pub char_span: Option<(usize, usize)>,
}

/// An answer with its markup read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParsedAnswer {
    /// The answer without `<p>`, `</p>` and `<SEG>`.
    pub text: String,
    /// One entry per `<SEG>`, in order.
    pub segments: Vec<ParsedSegment>,
}

/// Reads `<p>…</p><SEG>` markup (see the module documentation for malformed input).
pub fn parse_grounded(raw: &str) -> ParsedAnswer {
    let mut text = String::new();
    let mut chars = 0usize; // characters in `text`
    let mut open: Option<usize> = None; // char start of an open phrase
    // A closed phrase waiting for its <SEG>: (start, end), while only whitespace follows.
    let mut pending: Option<(usize, usize)> = None;
    let mut segments = Vec::new();
    let mut rest = raw;
    let span_text = |text: &str, (s, e): (usize, usize)| -> String {
        text.chars().skip(s).take(e - s).collect()
    };
    // Trims whitespace off both ends of a character span of `text`.
    let trim = |text: &str, (s, e): (usize, usize)| -> (usize, usize) {
        let cs: Vec<char> = text.chars().skip(s).take(e - s).collect();
        let lead = cs.iter().take_while(|c| c.is_whitespace()).count();
        let trail = cs.iter().rev().take_while(|c| c.is_whitespace()).count();
        if lead == cs.len() {
            (s, s)
        } else {
            (s + lead, e - trail)
        }
    };
    while !rest.is_empty() {
        let next = [P_START, P_END, SEG]
            .iter()
            .filter_map(|m| rest.find(m).map(|i| (i, *m)))
            .min_by_key(|(i, _)| *i);
        let (i, marker) = match next {
            Some(x) => x,
            None => (rest.len(), ""),
        };
        let mut plain = &rest[..i];
        // One space across a marker: transformers 4.31 decodes "<p>liver</p>" as
        // "<p> liver </p>", which must read like "<p>liver</p>".
        if text.ends_with(char::is_whitespace) {
            plain = plain.trim_start();
        }
        if !plain.is_empty() {
            if !plain.chars().all(char::is_whitespace) {
                pending = None;
            }
            text.push_str(plain);
            chars += plain.chars().count();
        }
        if marker.is_empty() {
            break;
        }
        rest = &rest[i + marker.len()..];
        match marker {
            P_START => {
                open = Some(chars);
                pending = None;
            }
            P_END => {
                if let Some(s) = open.take() {
                    pending = Some(trim(&text, (s, chars)));
                }
            }
            _ => {
                let span = match open.take() {
                    Some(s) => Some(trim(&text, (s, chars))),
                    None => pending.take(),
                };
                let span = span.filter(|(s, e)| e > s);
                segments.push(ParsedSegment {
                    phrase: span.map(|sp| span_text(&text, sp)),
                    char_span: span,
                });
            }
        }
    }
    ParsedAnswer { text, segments }
}

#[cfg(test)]
mod tests;
