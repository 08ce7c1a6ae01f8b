//! `Source::Dicom`: DICOM images (`.dcm`) with a DICOM-SEG or label-image mask of the same
//! stem.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{Reader, SourceSample, find_mask, read_label_image, volume_of};
use crate::dicom_source::{read_dicom, read_dicom_seg};
use crate::nifti_source::{Intensity, Volume, to_grey};

/// A DICOM folder source's settings and its listed images.
pub(super) struct Dicom<'a> {
    /// The DICOM images, sorted.
    pub(super) files: Vec<PathBuf>,
    /// Mask folder.
    pub(super) masks: &'a Path,
    /// Mask value -> structure name for image masks.
    pub(super) labels: &'a BTreeMap<u16, String>,
    /// Grey-level mapping; `None`: the file's window, else MR-style percentiles.
    pub(super) intensity: Option<Intensity>,
    /// The volume id is the stem up to this separator (whole stem when absent).
    pub(super) volume_separator: Option<&'a str>,
}

impl Dicom<'_> {
    /// One DICOM image and its mask (DICOM-SEG or label image).
    fn read_sample(&self, img: &Path) -> Result<SourceSample, String> {
        let Dicom {
            masks: masks_dir,
            labels,
            intensity,
            volume_separator: sep,
            ..
        } = *self;
        let stem = img
            .file_stem()
            .and_then(|s| s.to_str())
            .ok_or("file name is not UTF-8")?
            .to_string();
        let d = read_dicom(img)?;
        let mask_path = find_mask(masks_dir, &stem)?;
        let masks: Vec<(String, Vec<bool>)> = if mask_path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("dcm"))
        {
            let (h, w, m, label) = read_dicom_seg(&mask_path)?;
            if (h, w) != (d.height, d.width) {
                return Err(format!(
                    "SEG {} is {w}x{h}, the image {}x{}",
                    mask_path.display(),
                    d.width,
                    d.height
                ));
            }
            vec![(label.to_lowercase(), m)]
        } else {
            let (mw, mh, m) = read_label_image(&mask_path)?;
            if (mh as usize, mw as usize) != (d.height, d.width) {
                return Err(format!(
                    "mask {} does not have the image's size",
                    mask_path.display()
                ));
            }
            labels
                .iter()
                .map(|(v, name)| {
                    (
                        name.clone(),
                        m.iter().map(|p| p == v).collect::<Vec<bool>>(),
                    )
                })
                .collect()
        };
        let masks: Vec<(String, Vec<bool>)> = masks
            .into_iter()
            .filter(|(_, m)| m.iter().any(|&b| b))
            .collect();
        if masks.is_empty() {
            return Err("the mask is empty".into());
        }
        let vol = Volume {
            dims: [d.width, d.height, 1],
            data: d.values.clone(),
        };
        let range = match (intensity, d.window) {
            (Some(i), _) => vol.range(i),
            (None, Some((c, w))) => vol.range(Intensity::Window(c, w)),
            (None, None) => vol.range(Intensity::default()),
        };
        let grey = to_grey(&d.values, range);
        let volume = volume_of(&stem, sep);
        Ok(SourceSample {
            negatives: Vec::new(),
            stem,
            volume,
            modality: d.modality,
            rgb: grey.iter().flat_map(|&g| [g, g, g]).collect(),
            h: d.height,
            w: d.width,
            masks,
        })
    }
}

impl Reader for Dicom<'_> {
    fn inputs(&self) -> usize {
        self.files.len()
    }

    fn path(&self, index: usize) -> Option<&Path> {
        self.files.get(index).map(PathBuf::as_path)
    }

    fn read(&self, index: usize) -> Result<Vec<SourceSample>, String> {
        self.read_sample(&self.files[index]).map(|s| vec![s])
    }
}
