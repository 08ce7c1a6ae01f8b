//! `Source::Nifti`: NIfTI volumes with label volumes of the same file name, sliced along an
//! axis.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mimo_core::rng::hash64;

use super::{Reader, SourceSample};
use crate::nifti_source::{Intensity, SliceAxis, read_volume, to_grey};

/// A NIfTI source's settings and its listed volumes.
pub(super) struct Nifti<'a> {
    /// The volumes, sorted.
    pub(super) files: Vec<PathBuf>,
    /// Label-volume folder.
    pub(super) masks: &'a Path,
    /// Label value -> structure name.
    pub(super) labels: &'a BTreeMap<u16, String>,
    /// Foreground threshold for probability-map masks.
    pub(super) threshold: Option<f32>,
    /// Slicing direction.
    pub(super) axis: SliceAxis,
    /// Grey-level mapping (CT window or MR percentiles).
    pub(super) intensity: Intensity,
    /// Share of slices without labels kept as negative samples.
    pub(super) empty_share: f64,
    /// Modality written in records.
    pub(super) modality: &'a str,
    /// The build's seed.
    pub(super) seed: u64,
}

impl Nifti<'_> {
    /// The slices of one NIfTI volume and its label volume.
    fn read_samples(&self, img: &Path) -> Result<Vec<SourceSample>, String> {
        let Nifti {
            masks: masks_dir,
            labels,
            threshold,
            axis,
            intensity,
            empty_share,
            modality,
            seed,
            ..
        } = *self;
        let file = img
            .file_name()
            .and_then(|s| s.to_str())
            .ok_or("file name is not UTF-8")?;
        let stem = file
            .trim_end_matches(".gz")
            .trim_end_matches(".nii")
            .to_string();
        let mask_path = masks_dir.join(file);
        if !mask_path.is_file() {
            return Err(format!(
                "no label volume {} in {}",
                file,
                masks_dir.display()
            ));
        }
        let vol = read_volume(img)?;
        let lab = read_volume(&mask_path)?;
        if vol.dims != lab.dims {
            return Err(format!(
                "label volume is {:?}, image {:?}",
                lab.dims, vol.dims
            ));
        }
        let range = vol.range(intensity);
        let mut out = Vec::new();
        for k in 0..vol.slices(axis) {
            let (h, w, v) = vol.slice(axis, k);
            let (_, _, l) = lab.slice(axis, k);
            let masks: Vec<(String, Vec<bool>)> = match threshold {
                Some(t) => labels
                    .values()
                    .next()
                    .map(|name| {
                        (
                            name.clone(),
                            l.iter().map(|&x| x > t).collect::<Vec<bool>>(),
                        )
                    })
                    .into_iter()
                    .collect(),
                None => labels
                    .iter()
                    .map(|(val, name)| {
                        (
                            name.clone(),
                            l.iter()
                                .map(|&x| x.round() == f32::from(*val))
                                .collect::<Vec<bool>>(),
                        )
                    })
                    .collect(),
            };
            let masks: Vec<(String, Vec<bool>)> = masks
                .into_iter()
                .filter(|(_, m)| m.iter().any(|&b| b))
                .collect();
            let slice_stem = format!("{stem}_{k:04}");
            let negatives = if masks.is_empty() {
                let u = (hash64(&format!("empty/{seed}/{slice_stem}")) >> 11) as f64
                    / (1u64 << 53) as f64;
                if u >= empty_share {
                    continue;
                }
                labels.values().cloned().collect()
            } else {
                Vec::new()
            };
            let grey = to_grey(&v, range);
            out.push(SourceSample {
                negatives,
                stem: slice_stem,
                volume: stem.clone(),
                modality: modality.into(),
                rgb: grey.iter().flat_map(|&g| [g, g, g]).collect(),
                h,
                w,
                masks,
            });
        }
        Ok(out)
    }
}

impl Reader for Nifti<'_> {
    fn inputs(&self) -> usize {
        self.files.len()
    }

    fn path(&self, index: usize) -> Option<&Path> {
        self.files.get(index).map(PathBuf::as_path)
    }

    fn read(&self, index: usize) -> Result<Vec<SourceSample>, String> {
        self.read_samples(&self.files[index])
    }
}
