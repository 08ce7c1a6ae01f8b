//! Training mixtures: LLaVA-Med's VQA instruction data as records, and a burn [`Dataset`]
//! that draws from several record groups (the four perspectives, VQA) with given weights, as
//! MIMO mixes MIMOSeg and LLaVA-Med VQA for training.

use std::path::Path;

use burn::data::dataset::Dataset;
use mimo_core::rng::Rng;

use crate::record::{Perspective, Record, Role, Split, Turn};

/// Why an instruction file could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct MixError {
    /// The file.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

#[derive(serde::Deserialize)]
struct LlavaItem {
    id: serde_json::Value,
    image: Option<String>,
    conversations: Vec<Turn>,
}

/// LLaVA-Med instruction JSON (a list of `{"id", "image", "conversations": [{"from",
/// "value"}, ...]}`) as `vqa` training records; items without an image or with an unpaired
/// turn are skipped and counted.
pub fn read_llava_vqa(path: &Path, source: &str) -> Result<(Vec<Record>, usize), MixError> {
    let err = |message: String| MixError {
        path: path.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let items: Vec<LlavaItem> = serde_json::from_str(&text).map_err(|e| err(e.to_string()))?;
    let mut skipped = 0;
    let mut out = Vec::new();
    for it in items {
        let ok = it.conversations.len() >= 2
            && it.conversations.len() % 2 == 0
            && it
                .conversations
                .iter()
                .enumerate()
                .all(|(i, t)| t.from == if i % 2 == 0 { Role::Human } else { Role::Gpt });
        let Some(image) = it.image.filter(|_| ok) else {
            skipped += 1;
            continue;
        };
        let id = match &it.id {
            serde_json::Value::String(s) => s.clone(),
            v => v.to_string(),
        };
        out.push(Record {
            id: format!("{source}/{id}"),
            image,
            size: None,
            modality: String::new(),
            source: source.into(),
            volume: String::new(),
            split: Split::Train,
            perspective: Perspective::Vqa,
            prompts: Vec::new(),
            turns: it.conversations,
            masks: Vec::new(),
            vqa: None,
        });
    }
    Ok((out, skipped))
}

/// Draws `len` items from groups with the given weights (seeded): item `i` comes from group
/// `g` with probability `weight_g / Σ weights`, cycling through each group in a seeded
/// shuffled order, so every item of a group is used before any repeats.
#[derive(Debug)]
pub struct MixedDataset<D> {
    groups: Vec<D>,
    plan: Vec<(usize, usize)>,
}

impl<D> MixedDataset<D> {
    /// A mixture of `groups` with `weights` (positive; empty groups are never drawn).
    pub fn new<I>(groups: Vec<D>, weights: &[f64], len: usize, seed: u64) -> Result<Self, String>
    where
        D: Dataset<I>,
    {
        if groups.len() != weights.len() {
            return Err(format!(
                "{} groups but {} weights",
                groups.len(),
                weights.len()
            ));
        }
        if weights.iter().any(|w| !(w.is_finite() && *w >= 0.0)) {
            return Err("weights must be finite and non-negative".into());
        }
        let live: Vec<f64> = groups
            .iter()
            .zip(weights)
            .map(|(g, w)| if g.is_empty() { 0.0 } else { *w })
            .collect();
        let total: f64 = live.iter().sum();
        if total <= 0.0 {
            return Err("no group with items and a positive weight".into());
        }
        let mut rng = Rng::new(seed);
        let mut orders: Vec<Vec<usize>> = groups
            .iter()
            .map(|g| {
                let mut v: Vec<usize> = (0..g.len()).collect();
                for i in (1..v.len()).rev() {
                    v.swap(i, rng.index(i + 1));
                }
                v
            })
            .collect();
        let mut cursor = vec![0usize; groups.len()];
        let mut plan = Vec::with_capacity(len);
        for _ in 0..len {
            let mut u = rng.next_f64() * total;
            let mut g = live.iter().position(|&w| w > 0.0).unwrap_or(0);
            for (k, w) in live.iter().enumerate() {
                if *w > 0.0 {
                    g = k;
                    if u < *w {
                        break;
                    }
                    u -= w;
                }
            }
            let order = &mut orders[g];
            plan.push((g, order[cursor[g] % order.len()]));
            cursor[g] += 1;
        }
        Ok(Self { groups, plan })
    }

    /// Items drawn from each group.
    pub fn counts(&self) -> Vec<usize> {
        let mut c = vec![0; self.groups.len()];
        for (g, _) in &self.plan {
            c[*g] += 1;
        }
        c
    }
}

impl<I, D: Dataset<I>> Dataset<I> for MixedDataset<D> {
    fn get(&self, index: usize) -> Option<I> {
        let (g, i) = *self.plan.get(index)?;
        self.groups[g].get(i)
    }

    fn len(&self) -> usize {
        self.plan.len()
    }
}

#[cfg(test)]
mod tests;
