//! `Source::Folder`: 2D images (PNG/JPEG/BMP/TIFF) with label-map masks of the same stem.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{Reader, SourceSample, find_mask, read_label_image, volume_of};

/// A folder source's settings and its listed images.
pub(super) struct Folder<'a> {
    /// The images, sorted (masks beside them left out).
    pub(super) files: Vec<PathBuf>,
    /// Mask folder.
    pub(super) masks: &'a Path,
    /// Mask value -> structure name (values not listed are background).
    pub(super) labels: &'a BTreeMap<u16, String>,
    /// Modality written in records.
    pub(super) modality: &'a str,
    /// The volume id is the stem up to this separator (whole stem when absent).
    pub(super) volume_separator: Option<&'a str>,
    /// Appended to the image's file stem to name its mask.
    pub(super) mask_suffix: Option<&'a str>,
}

impl Folder<'_> {
    /// One image and its mask.
    fn read_sample(&self, img: &Path) -> Result<SourceSample, String> {
        let Folder {
            masks: masks_dir,
            labels,
            modality,
            volume_separator: sep,
            mask_suffix,
            ..
        } = *self;
        let stem = img
            .file_stem()
            .and_then(|s| s.to_str())
            .ok_or("file name is not UTF-8")?
            .to_string();
        let mask_stem = format!("{stem}{}", mask_suffix.unwrap_or(""));
        let mask_path = find_mask(masks_dir, &mask_stem)?;
        let im = image::open(img)
            .map_err(|e| format!("cannot read image: {e}"))?
            .to_rgb8();
        let (mw, mh, m) = read_label_image(&mask_path)?;
        if (mw, mh) != im.dimensions() {
            return Err(format!(
                "mask {} is {mw}x{mh}, the image {}x{}",
                mask_path.display(),
                im.width(),
                im.height()
            ));
        }
        let (w, h) = (im.width() as usize, im.height() as usize);
        let masks: Vec<(String, Vec<bool>)> = labels
            .iter()
            .map(|(v, name)| {
                (
                    name.clone(),
                    m.iter().map(|p| p == v).collect::<Vec<bool>>(),
                )
            })
            .filter(|(_, mm)| mm.iter().any(|&b| b))
            .collect();
        if masks.is_empty() {
            return Err("the mask has none of the configured label values".into());
        }
        let volume = volume_of(&stem, sep);
        Ok(SourceSample {
            negatives: Vec::new(),
            stem,
            volume,
            modality: modality.into(),
            rgb: im.into_raw(),
            h,
            w,
            masks,
        })
    }
}

impl Reader for Folder<'_> {
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
