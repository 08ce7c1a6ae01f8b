//! AP50 for masks with pycocotools' `COCOeval(..., "segm")` semantics, as GLaMM scores
//! it (`groundingLMM/eval/gcg/evaluate.py`): one
//! category, area range "all", at most 100 detections per image, greedy matching in score
//! order with ties kept in input order, precision made monotone from the right and sampled
//! at 101 recall thresholds; AP50 is `stats[1]`.

use super::seg::{Mask, mask_iou};

/// One image: ground-truth masks and scored detections (in the order they were given).
#[derive(Debug, Clone, Default)]
pub struct CocoImage {
    /// Ground-truth masks (iscrowd 0).
    pub gts: Vec<Vec<bool>>,
    /// Detections: mask and score.
    pub dets: Vec<(Vec<bool>, f64)>,
}

const MAX_DETS: usize = 100;

/// pycocotools' AP at IoU 0.5 over `images` (in image-id order), or -1 when there is no
/// ground truth (as `COCOeval.summarize` reports).
pub fn coco_ap50(images: &[CocoImage]) -> f64 {
    let mut scores: Vec<f64> = Vec::new();
    let mut matched: Vec<bool> = Vec::new();
    let mut npig = 0usize;
    for img in images {
        if img.gts.is_empty() && img.dets.is_empty() {
            continue;
        }
        npig += img.gts.len();
        // Stable sort by descending score (numpy mergesort on -score).
        let mut order: Vec<usize> = (0..img.dets.len()).collect();
        order.sort_by(|&a, &b| img.dets[b].1.total_cmp(&img.dets[a].1));
        order.truncate(MAX_DETS);
        let mut gt_taken = vec![false; img.gts.len()];
        for &d in &order {
            let det: &Mask = &img.dets[d].0;
            let mut best = 0.5f64.min(1.0 - 1e-10);
            let mut m = None;
            for (g, gt) in img.gts.iter().enumerate() {
                if gt_taken[g] {
                    continue;
                }
                let iou = mask_iou(det, gt);
                if iou < best {
                    continue;
                }
                best = iou;
                m = Some(g);
            }
            if let Some(g) = m {
                gt_taken[g] = true;
            }
            scores.push(img.dets[d].1);
            matched.push(m.is_some());
        }
    }
    if npig == 0 {
        return -1.0;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let (mut tp, mut fp) = (0f64, 0f64);
    let mut rc = Vec::with_capacity(order.len());
    let mut pr = Vec::with_capacity(order.len());
    for &i in &order {
        if matched[i] {
            tp += 1.0;
        } else {
            fp += 1.0;
        }
        rc.push(tp / npig as f64);
        pr.push(tp / (fp + tp + f64::EPSILON));
    }
    for i in (1..pr.len()).rev() {
        if pr[i] > pr[i - 1] {
            pr[i - 1] = pr[i];
        }
    }
    // numpy.linspace(0, 1, 101): i * 0.01, the last one exactly 1.
    let mut q = [0f64; 101];
    for (ri, slot) in q.iter_mut().enumerate() {
        let thr = if ri == 100 { 1.0 } else { ri as f64 * 0.01 };
        // searchsorted(rc, thr, side='left'); an index past the end stops the filling.
        let pi = rc.partition_point(|&r| r < thr);
        if pi >= pr.len() {
            break;
        }
        *slot = pr[pi];
    }
    q.iter().sum::<f64>() / q.len() as f64
}
