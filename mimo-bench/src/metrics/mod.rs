//! The paper's metrics, each with the semantics of the reference implementation it claims
//! to be (each module names the upstream files it follows): segmentation ([`seg`]: mIoU =
//! LISA gIoU, cIoU, Dice, Pr@0.5, GLaMM's greedy mIoU), [`coco`] AP50 (pycocotools),
//! [`grounding`] F1, [`text`] (pycocoevalcap BLEU/ROUGE-L, rouge-score ROUGE-L, nltk BLEU)
//! and [`vqa`] accuracy (LLaVA-Med, HuatuoGPT-Vision). Golden tests compare them with the
//! Python references on a committed corpus (`scripts/reference/metrics.py`).

pub mod coco;
pub mod grounding;
pub mod meteor;
pub mod porter;
pub mod seg;
pub mod text;
pub mod vqa;

#[cfg(test)]
mod tests;
