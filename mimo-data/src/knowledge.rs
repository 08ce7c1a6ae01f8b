//! The knowledge base: short reference text per segmentation label (definition, location,
//! function or cause, typical imaging findings), used to write Perspective III/IV questions
//! and answers. A built-in file covers the labels of the paper's dataset table and the
//! phantoms; users extend or override it with their own JSON file of the same layout.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// One label's knowledge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Canonical label.
    pub label: String,
    /// Other names that map to this entry (e.g. "left kidney" -> kidney).
    #[serde(default)]
    pub aliases: Vec<String>,
    /// organ, structure, lesion or finding.
    pub kind: String,
    /// What it is.
    pub definition: String,
    /// Where it is.
    pub location: String,
    /// What it does (organs, structures).
    #[serde(default)]
    pub function: Option<String>,
    /// What causes it (lesions, findings).
    #[serde(default)]
    pub cause: Option<String>,
    /// What imaging typically shows.
    pub findings: String,
}

#[derive(Deserialize)]
struct File {
    entries: Vec<Entry>,
}

/// Labels to knowledge, looked up case-insensitively by label or alias.
#[derive(Debug, Clone, Default)]
pub struct KnowledgeBase {
    entries: Vec<Entry>,
    index: HashMap<String, usize>,
}

/// Why a knowledge file could not be read.
#[derive(Debug, thiserror::Error)]
#[error("knowledge file {path}: {message}")]
pub struct KnowledgeError {
    /// The file.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl KnowledgeBase {
    /// The built-in knowledge (`mimo-data/data/knowledge.json`).
    pub fn builtin() -> Self {
        let mut kb = Self::default();
        let f: File = serde_json::from_str(include_str!("../data/knowledge.json"))
            .expect("bundled knowledge is valid");
        for e in f.entries {
            kb.insert(e);
        }
        kb
    }

    /// The built-in knowledge extended (and overridden, label by label) by a user file.
    pub fn with_file(mut self, path: &Path) -> Result<Self, KnowledgeError> {
        let err = |message: String| KnowledgeError {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let f: File = serde_json::from_str(&text).map_err(|e| err(e.to_string()))?;
        for e in f.entries {
            self.insert(e);
        }
        Ok(self)
    }

    fn insert(&mut self, e: Entry) {
        let i = match self.index.get(&e.label.to_lowercase()) {
            Some(&i) => {
                self.entries[i] = e.clone();
                i
            }
            None => {
                self.entries.push(e.clone());
                self.entries.len() - 1
            }
        };
        for name in std::iter::once(&e.label).chain(&e.aliases) {
            self.index.insert(name.to_lowercase(), i);
        }
    }

    /// The entry of a label or alias.
    pub fn get(&self, label: &str) -> Option<&Entry> {
        self.index
            .get(&label.trim().to_lowercase())
            .map(|&i| &self.entries[i])
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests;
