//! Segmentation metrics: per-mask IoU, LISA's gIoU (= the papers' mIoU) and cIoU (LISA's
//! validation in `train_ds.py` with `intersectionAndUnionGPU` from `utils/utils.py`), Dice
//! (0/0 counts as 1), the hit rate Pr@0.5 (IoU strictly above 0.5), GLaMM's greedy-pairing
//! mIoU (`groundingLMM/eval/gcg/evaluate.py`), and mask IoU with pycocotools' conventions
//! (`maskUtils.iou`).

/// A binary mask, row-major.
pub type Mask = [bool];

/// Intersection and union pixel counts of two equally sized masks.
pub fn inter_union(pred: &Mask, gt: &Mask) -> (u64, u64) {
    assert_eq!(pred.len(), gt.len(), "masks of different sizes");
    let mut i = 0u64;
    let mut u = 0u64;
    for (&p, &g) in pred.iter().zip(gt) {
        i += u64::from(p && g);
        u += u64::from(p || g);
    }
    (i, u)
}

/// IoU as pycocotools' `maskUtils.iou` (iscrowd 0): `I/U`, and 0 when the union is empty.
pub fn mask_iou(pred: &Mask, gt: &Mask) -> f64 {
    let (i, u) = inter_union(pred, gt);
    if u == 0 { 0.0 } else { i as f64 / u as f64 }
}

/// Accumulates LISA's validation metrics over masks.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IouMeter {
    giou_sum: f64,
    dice_sum: f64,
    inter: f64,
    union: f64,
    hits: usize,
    n: usize,
}

impl IouMeter {
    /// An empty meter.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one predicted mask (`logit > 0`) and its ground truth.
    pub fn add(&mut self, pred: &Mask, gt: &Mask) {
        let (i, u) = inter_union(pred, gt);
        self.add_counts(
            i,
            u,
            pred.iter().filter(|&&p| p).count() as u64,
            gt.iter().filter(|&&g| g).count() as u64,
        );
    }

    /// Adds one mask given its intersection, union and the two areas.
    pub fn add_counts(&mut self, inter: u64, union: u64, pred_area: u64, gt_area: u64) {
        let (i, u) = (inter as f64, union as f64);
        // LISA: I / (U + 1e-5), and 1.0 when both masks are empty.
        self.giou_sum += if union == 0 { 1.0 } else { i / (u + 1e-5) };
        self.dice_sum += if pred_area + gt_area == 0 {
            1.0
        } else {
            2.0 * i / (pred_area + gt_area) as f64
        };
        self.inter += i;
        self.union += u;
        self.hits += usize::from(union > 0 && i / u > 0.5);
        self.n += 1;
    }

    /// Number of masks.
    pub fn count(&self) -> usize {
        self.n
    }

    /// gIoU (the mIoU of LISA-style papers): the mean per-mask IoU.
    pub fn miou(&self) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            self.giou_sum / self.n as f64
        }
    }

    /// cIoU: cumulative intersection over cumulative union (`+ 1e-10`).
    pub fn ciou(&self) -> f64 {
        self.inter / (self.union + 1e-10)
    }

    /// Mean Dice (0/0 counts as 1).
    pub fn dice(&self) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            self.dice_sum / self.n as f64
        }
    }

    /// Pr@0.5: the fraction of masks with IoU strictly above 0.5.
    pub fn precision_at_05(&self) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            self.hits as f64 / self.n as f64
        }
    }

    /// Merges another meter (e.g. from another thread).
    pub fn merge(&mut self, o: &IouMeter) {
        self.giou_sum += o.giou_sum;
        self.dice_sum += o.dice_sum;
        self.inter += o.inter;
        self.union += o.union;
        self.hits += o.hits;
        self.n += o.n;
    }
}

/// GLaMM's per-image mIoU for several predicted and ground-truth masks: pair greedily by the
/// largest remaining IoU until it is 0; the image's score is the mean paired IoU (0 without
/// pairs).
pub fn greedy_pair_miou(preds: &[&Mask], gts: &[&Mask]) -> f64 {
    let mut ious: Vec<Vec<f64>> = preds
        .iter()
        .map(|p| gts.iter().map(|g| mask_iou(p, g)).collect())
        .collect();
    let mut paired = Vec::new();
    loop {
        let mut best = (0.0, usize::MAX, usize::MAX);
        for (i, row) in ious.iter().enumerate() {
            for (j, &v) in row.iter().enumerate() {
                if v > best.0 {
                    best = (v, i, j);
                }
            }
        }
        if best.1 == usize::MAX {
            break;
        }
        paired.push(best.0);
        ious[best.1].iter_mut().for_each(|v| *v = 0.0);
        ious.iter_mut().for_each(|r| r[best.2] = 0.0);
    }
    if paired.is_empty() {
        0.0
    } else {
        paired.iter().sum::<f64>() / paired.len() as f64
    }
}
