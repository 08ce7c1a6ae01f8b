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
mod tests {
    use super::*;
    use crate::phantom::{Style, phantom};

    #[test]
    fn builtin_covers_the_paper_table_and_the_phantoms() {
        let kb = KnowledgeBase::builtin();
        // Labels of the paper's dataset table (Appendix B), as written there.
        for l in [
            "Atrium Blood Cavity",
            "COVID",
            "Duodenum",
            "Edema",
            "Esophagus",
            "Femur Head",
            "Heart Blood Pool",
            "Hip",
            "Intracranial Hemorrhage",
            "Ischemic Stroke",
            "Kidney",
            "Kidney Tumor",
            "Left Atrium",
            "Left Lung",
            "Liver",
            "Lumbar Vertebra",
            "Lung",
            "Lung Cancer",
            "Lung Infections",
            "Lung Nodule",
            "Lung Vessel",
            "Matter Tracts",
            "Multiple Sclerosis Lesion",
            "Myocardium",
            "Optic Cup",
            "Optic Disc",
            "Pancreas",
            "Pneumothorax",
            "Polyp",
            "Prostate",
            "Prostate Cancer",
            "Prostate Zone",
            "Pulmonary Artery",
            "Pulmonary Embolism",
            "Respiratory Tract",
            "Right Lung",
            "Sacrum",
            "Skin Lesion",
            "Spleen",
            "Stomach",
            "Tumor",
            "Ultrasound Nerve",
            "Urinary Bladder",
            "Ventricle",
            "Ventricular Myocardium",
            "Vertebrae",
            "Vestibular Schwannoma",
        ] {
            assert!(kb.get(l).is_some(), "no knowledge for {l}");
        }
        for style in Style::ALL {
            for seed in 0..4 {
                for (label, _) in phantom(style, 32, seed, 0).masks {
                    assert!(
                        kb.get(&label).is_some(),
                        "no knowledge for phantom label {label}"
                    );
                }
            }
        }
        let e = kb.get("left kidney").unwrap();
        assert_eq!(e.label, "kidney");
        assert!(e.function.is_some() || e.cause.is_some());
    }

    #[test]
    fn user_files_extend_and_override() {
        let dir = std::env::temp_dir().join(format!("mimo-kb-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("kb.json");
        std::fs::write(
            &f,
            r#"{"entries": [{"label": "liver", "kind": "organ", "definition": "Custom.", "location": "right", "function": "f", "findings": "x"},
                            {"label": "gallbladder", "aliases": ["gall bladder"], "kind": "organ", "definition": "A sac.", "location": "under the liver", "function": "stores bile", "findings": "stones"}]}"#,
        )
        .unwrap();
        let kb = KnowledgeBase::builtin().with_file(&f).unwrap();
        assert_eq!(kb.get("Liver").unwrap().definition, "Custom.");
        assert_eq!(kb.get("gall bladder").unwrap().label, "gallbladder");
        std::fs::write(&f, "{").unwrap();
        let e = KnowledgeBase::builtin()
            .with_file(&f)
            .unwrap_err()
            .to_string();
        assert!(e.contains("kb.json"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
