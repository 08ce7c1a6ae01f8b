//! Grounding F1 (MIMO's own rule: the paper's evaluation code is not public): grounded
//! phrases `<p>…</p>` paired in order with the answer's `<SEG>` masks; a prediction matches
//! a ground truth when the normalised phrases are equal and the masks' IoU is above 0.5;
//! one-to-one greedy matching by descending IoU; micro-averaged over the test set.

use super::seg::mask_iou;

/// The phrases inside `<p>…</p>` of an answer, in order (LISA/GLaMM's `<p>(.*?)</p>`).
pub fn grounded_phrases(answer: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = answer;
    while let Some(start) = rest.find("<p>") {
        let after = &rest[start + 3..];
        match after.find("</p>") {
            Some(end) => {
                out.push(after[..end].to_string());
                rest = &after[end + 4..];
            }
            None => break,
        }
    }
    out
}

/// Number of `<SEG>` tokens in an answer.
pub fn seg_count(answer: &str) -> usize {
    answer.matches("<SEG>").count()
}

/// Phrase normalisation: lowercase, punctuation removed, spaces collapsed, a leading article
/// (a/an/the) dropped.
pub fn normalize_phrase(s: &str) -> String {
    let lower = s.to_lowercase();
    let cleaned: String = lower
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c.is_whitespace() {
                c
            } else {
                ' '
            }
        })
        .collect();
    let mut words: Vec<&str> = cleaned.split_whitespace().collect();
    if words.len() > 1 && matches!(words[0], "a" | "an" | "the") {
        words.remove(0);
    }
    words.join(" ")
}

/// One grounded item: a phrase (if any) and a mask (if any).
#[derive(Debug, Clone, Default)]
pub struct Grounded {
    /// The phrase.
    pub phrase: Option<String>,
    /// The mask (row-major).
    pub mask: Option<Vec<bool>>,
}

/// Pairs phrases and masks by order; leftovers of either kind become items without the other.
pub fn pair_by_order(phrases: Vec<String>, masks: Vec<Vec<bool>>) -> Vec<Grounded> {
    let n = phrases.len().max(masks.len());
    let mut p = phrases.into_iter();
    let mut m = masks.into_iter();
    (0..n)
        .map(|_| Grounded {
            phrase: p.next(),
            mask: m.next(),
        })
        .collect()
}

/// Micro-averaged grounding precision/recall/F1.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GroundingF1 {
    /// Matched pairs.
    pub tp: usize,
    /// Predicted items.
    pub n_pred: usize,
    /// Ground-truth items.
    pub n_gt: usize,
}

impl GroundingF1 {
    /// Adds one sample.
    pub fn add(&mut self, preds: &[Grounded], gts: &[Grounded]) {
        let mut cands: Vec<(f64, usize, usize)> = Vec::new();
        for (i, p) in preds.iter().enumerate() {
            for (j, g) in gts.iter().enumerate() {
                let (Some(pp), Some(pm), Some(gp), Some(gm)) =
                    (&p.phrase, &p.mask, &g.phrase, &g.mask)
                else {
                    continue;
                };
                if normalize_phrase(pp) != normalize_phrase(gp) || pm.len() != gm.len() {
                    continue;
                }
                let iou = mask_iou(pm, gm);
                if iou > 0.5 {
                    cands.push((iou, i, j));
                }
            }
        }
        // Descending IoU; ties in (prediction, ground truth) order.
        cands.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        let (mut used_p, mut used_g) = (vec![false; preds.len()], vec![false; gts.len()]);
        for (_, i, j) in cands {
            if !used_p[i] && !used_g[j] {
                used_p[i] = true;
                used_g[j] = true;
                self.tp += 1;
            }
        }
        self.n_pred += preds.len();
        self.n_gt += gts.len();
    }

    /// Precision.
    pub fn precision(&self) -> f64 {
        if self.n_pred == 0 {
            0.0
        } else {
            self.tp as f64 / self.n_pred as f64
        }
    }

    /// Recall.
    pub fn recall(&self) -> f64 {
        if self.n_gt == 0 {
            0.0
        } else {
            self.tp as f64 / self.n_gt as f64
        }
    }

    /// F1 (0 when precision + recall is 0).
    pub fn f1(&self) -> f64 {
        let (p, r) = (self.precision(), self.recall());
        if p + r == 0.0 {
            0.0
        } else {
            2.0 * p * r / (p + r)
        }
    }
}
