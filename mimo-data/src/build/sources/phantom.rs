//! `Source::Phantom`: synthetic scans with exact masks, one generated image per input.

use std::path::Path;

use super::{Reader, SourceSample};
use crate::phantom::{Style, phantom};

/// A phantom source's settings.
pub(super) struct Phantoms {
    /// Modality style.
    pub(super) style: Style,
    /// Number of images.
    pub(super) count: usize,
    /// Image side in pixels.
    pub(super) size: usize,
    /// Images are grouped into this many pseudo-volumes (for volume-wise splits).
    pub(super) volumes: usize,
    /// The build's seed mixed with the source name.
    pub(super) seed: u64,
}

impl Reader for Phantoms {
    fn inputs(&self) -> usize {
        self.count
    }

    fn path(&self, _index: usize) -> Option<&Path> {
        None
    }

    fn read(&self, index: usize) -> Result<Vec<SourceSample>, String> {
        let index = index as u64;
        let p = phantom(self.style, self.size, self.seed, index);
        Ok(vec![SourceSample {
            negatives: Vec::new(),
            stem: format!("{index:06}"),
            volume: format!("vol{:04}", index as usize % self.volumes),
            modality: self.style.modality().into(),
            rgb: p.rgb,
            h: p.height,
            w: p.width,
            masks: p.masks,
        }])
    }
}
