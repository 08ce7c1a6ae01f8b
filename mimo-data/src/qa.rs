//! Perspective III/IV questions and answers. The built-in offline generator writes them from
//! templates over the knowledge base (no endpoint needed: tests, the quickstart); every
//! answer, generated here or by a chat model, goes through [`validate_answer`], which
//! requires each expected entity to be marked exactly once, in mask order.

use mimo_core::rng::Rng;

use crate::knowledge::{Entry, KnowledgeBase};
use crate::templates::{grounded, join_names};

/// Why an answer was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// `<SEG>` count differs from the number of expected entities.
    #[error("{found} <SEG> token(s) for {expected} entit(ies)")]
    SegCount {
        /// Expected.
        expected: usize,
        /// Found.
        found: usize,
    },
    /// The marked phrases are not the expected entities in order.
    #[error("marked entities {found:?}, expected {expected:?}")]
    Entities {
        /// Expected labels.
        expected: Vec<String>,
        /// Marked phrases.
        found: Vec<String>,
    },
    /// A `<p>` without `</p><SEG>`.
    #[error("malformed grounding markup near {0:?}")]
    Markup(String),
}

/// Checks that `answer` marks exactly `labels` (case-insensitive), each as
/// `<p>label</p><SEG>`, in order.
pub fn validate_answer(answer: &str, labels: &[String]) -> Result<(), Rejection> {
    let segs = answer.matches("<SEG>").count();
    if segs != labels.len() {
        return Err(Rejection::SegCount {
            expected: labels.len(),
            found: segs,
        });
    }
    let mut found = Vec::new();
    let mut rest = answer;
    while let Some(i) = rest.find("<p>") {
        let after = &rest[i + 3..];
        let Some(j) = after.find("</p><SEG>") else {
            return Err(Rejection::Markup(after.chars().take(30).collect()));
        };
        found.push(after[..j].trim().to_string());
        rest = &after[j + 9..];
    }
    let norm = |v: &[String]| v.iter().map(|s| s.to_lowercase()).collect::<Vec<_>>();
    if norm(&found) != norm(labels) {
        return Err(Rejection::Entities {
            expected: labels.to_vec(),
            found,
        });
    }
    Ok(())
}

fn sentence(s: &str) -> String {
    let mut c = s.trim().chars();
    let mut out = match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect::<String>(),
        None => String::new(),
    };
    if !out.ends_with('.') {
        out.push('.');
    }
    out
}

fn role(e: &Entry) -> String {
    match (&e.function, &e.cause) {
        (Some(f), _) => format!("it {f}"),
        (None, Some(c)) => format!("it is caused by {c}"),
        _ => e.definition.to_lowercase(),
    }
}

/// What is known about each label, for generation (built-in knowledge for unknown labels is
/// an error, so datasets never get empty answers).
fn entries<'a>(kb: &'a KnowledgeBase, labels: &[String]) -> Result<Vec<&'a Entry>, String> {
    labels
        .iter()
        .map(|l| {
            kb.get(l).ok_or_else(|| {
                format!("no knowledge for the label `{l}` (add it to a knowledge file)")
            })
        })
        .collect()
}

/// A Perspective III (question, answer): identify structures from their knowledge and explain.
pub fn p3(
    kb: &KnowledgeBase,
    labels: &[String],
    modality: &str,
    rng: &mut Rng,
) -> Result<(String, String), String> {
    let es = entries(kb, labels)?;
    let q = if es.len() == 1 {
        let e = es[0];
        let clue = match (&e.function, &e.cause) {
            (Some(f), _) => f.to_string(),
            (None, Some(c)) => format!("is typically caused by {c}"),
            _ => e.definition.to_lowercase(),
        };
        let templates = [
            format!(
                "Could you identify the {} in this {modality} image that {clue}?",
                e.kind
            ),
            format!(
                "Which {} visible in this {modality} image {clue}? Please explain your reasoning.",
                e.kind
            ),
            format!(
                "In this {modality} image, find the {} that {clue}, and describe how it appears.",
                e.kind
            ),
        ];
        rng.pick(&templates).clone()
    } else {
        let kinds: Vec<String> = es
            .iter()
            .map(|e| e.kind.clone())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        format!(
            "Which {}s can be recognised in this {modality} image, and how are they related to each other?",
            join_names(&kinds).replace(" and ", " or ")
        )
    };
    let mut a = String::new();
    for (l, e) in labels.iter().zip(&es) {
        a.push_str(&format!(
            "The {} {} lies {}; {}. Typical imaging findings: {} ",
            e.kind,
            grounded(l),
            e.location,
            role(e),
            sentence(&e.findings)
        ));
    }
    if es.len() > 1 {
        a.push_str(&format!(
            "Together they show how {} lie next to each other in this {modality} image.",
            join_names(labels)
        ));
    }
    let a = a.trim().to_string();
    validate_answer(&a, labels).map_err(|e| e.to_string())?;
    Ok((q, a))
}

/// A Perspective IV (question, answer) about the region under a box or point prompt.
pub fn p4(
    kb: &KnowledgeBase,
    label: &str,
    modality: &str,
    point: bool,
    rng: &mut Rng,
) -> Result<(String, String), String> {
    let e = entries(kb, std::slice::from_ref(&label.to_string()))?[0];
    let place = if point {
        "at the marked point"
    } else {
        "within the bounding box"
    };
    let templates = [
        format!(
            "Can you provide details about the physiological role of the area {place} in this {modality} image?"
        ),
        format!("What is the structure {place}, and what is it responsible for?"),
        format!(
            "Please describe the region {place} and what it typically looks like on {modality}."
        ),
    ];
    let q = rng.pick(&templates).clone();
    let a = format!(
        "The area {place} is the {}. {} It lies {}; {}. Typical imaging findings: {}",
        grounded(label),
        sentence(&e.definition),
        e.location,
        role(e),
        sentence(&e.findings)
    );
    validate_answer(&a, &[label.to_string()]).map_err(|e| e.to_string())?;
    Ok((q, a))
}

#[cfg(test)]
mod tests;
