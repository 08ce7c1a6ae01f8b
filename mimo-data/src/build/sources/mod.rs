//! The sources a dataset is built from: the [`Source`] variants of a dataset file, and one
//! reader per kind of source (phantoms, 2D folders, NIfTI volumes, DICOM files, DICOM series).
//!
//! [`Source::open`] is the one place the variants are told apart: it lists a source's inputs
//! and returns a [`Reader`] that turns any of them into [`SourceSample`]s, on any worker
//! thread.

mod dicom;
mod dicom_series;
mod folder;
mod nifti;
mod phantom;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mimo_core::rng::hash64;
use serde::{Deserialize, Serialize};

use super::Skipped;
use crate::phantom::Style;
use dicom::Dicom;
use dicom_series::DicomSeries;
use folder::Folder;
use nifti::Nifti;
use phantom::Phantoms;

/// A data source. Misspelt fields are errors (in every variant), never ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum Source {
    /// Synthetic phantoms.
    Phantom {
        /// Source name (records' `source`).
        name: String,
        /// Modality style.
        style: Style,
        /// Number of images.
        count: usize,
        /// Image side in pixels.
        size: usize,
        /// Images are grouped into this many pseudo-volumes (for volume-wise splits).
        volumes: usize,
    },
    /// A folder of NIfTI volumes (`.nii`/`.nii.gz`) with label volumes of the same file name
    /// in `masks`, sliced along `axis`; slices with a labelled voxel are used, and a share
    /// `empty_share` of the others (seeded) becomes negative Perspective I samples.
    Nifti {
        /// Source name.
        name: String,
        /// Volume folder.
        images: PathBuf,
        /// Label-volume folder.
        masks: PathBuf,
        /// Modality written in records.
        modality: String,
        /// Label value -> structure name; with `threshold`, the single entry's name is used
        /// for voxels above the threshold (probability maps).
        labels: BTreeMap<u16, String>,
        /// Foreground threshold for probability-map masks.
        #[serde(default)]
        threshold: Option<f32>,
        /// Slicing direction.
        #[serde(default)]
        axis: crate::nifti_source::SliceAxis,
        /// Grey-level mapping (CT window or MR percentiles).
        #[serde(default)]
        intensity: crate::nifti_source::Intensity,
        /// Share of slices without labels kept as negative samples.
        #[serde(default)]
        empty_share: f64,
    },
    /// DICOM series: every DICOM file under `images` (any folder tree, e.g. TCIA's
    /// patient/study/series layout) grouped by SeriesInstanceUID, multi-frame files expanded
    /// into frames, slices ordered along the slice normal; DICOM-SEG files under `masks` (may
    /// be the same folder) are matched to their series and each frame placed on the slice it
    /// refers to (SOPInstanceUID and frame number, else position). Segment labels are
    /// lower-cased, then renamed through `rename`. The volume (split unit) is the PatientID,
    /// else the series. A share `empty_share` of slices without masks (seeded) becomes
    /// negative Perspective I samples.
    DicomSeries {
        /// Source name.
        name: String,
        /// Folder tree of DICOM images.
        images: PathBuf,
        /// Folder tree of DICOM-SEG files.
        masks: PathBuf,
        /// Lower-cased segment label -> structure name (labels not listed are kept).
        #[serde(default)]
        rename: BTreeMap<String, String>,
        /// Grey-level mapping; `None`: the first slice's window, else MR-style percentiles.
        #[serde(default)]
        intensity: Option<crate::nifti_source::Intensity>,
        /// Share of slices without masks kept as negative samples.
        #[serde(default)]
        empty_share: f64,
    },
    /// A folder of DICOM images (`.dcm`) with masks of the same file stem in `masks`: a
    /// 1-bit DICOM-SEG (`.dcm`, its segment label names the mask) or an 8-bit image whose
    /// values map to names through `labels`. Values go through the modality LUT (HU for CT)
    /// and then `intensity`, or the file's own window when `intensity` is absent.
    Dicom {
        /// Source name.
        name: String,
        /// DICOM image folder.
        images: PathBuf,
        /// Mask folder.
        masks: PathBuf,
        /// Mask value -> structure name for image masks.
        #[serde(default)]
        labels: BTreeMap<u16, String>,
        /// Grey-level mapping; `None`: the file's window, else MR-style percentiles.
        #[serde(default)]
        intensity: Option<crate::nifti_source::Intensity>,
        /// Volume id = the stem up to this separator (whole stem when absent).
        #[serde(default)]
        volume_separator: Option<String>,
    },
    /// A folder of 2D images (PNG/JPEG/BMP/TIFF) with masks whose pixel values name
    /// structures: the mask of `case_001.png` is `case_001.*` in `masks`, or
    /// `case_001<mask_suffix>.*` (e.g. `_seg`, `_mask`, `_label`).
    Folder {
        /// Source name.
        name: String,
        /// Image folder.
        images: PathBuf,
        /// Mask folder.
        masks: PathBuf,
        /// Modality written in records.
        modality: String,
        /// Mask value -> structure name (values not listed are background).
        labels: BTreeMap<u16, String>,
        /// Characters of the file stem before this separator form the volume id (e.g.
        /// `case12_slice040` with `"_"` -> `case12`); the whole stem when absent.
        #[serde(default)]
        volume_separator: Option<String>,
        /// Appended to the image's file stem to name its mask (`case_001.png` ->
        /// `case_001_seg.png` with `"_seg"`); none: the same stem.
        #[serde(default)]
        mask_suffix: Option<String>,
    },
}

impl Source {
    /// The source name (records' `source`).
    pub(super) fn name(&self) -> &str {
        match self {
            Source::Phantom { name, .. }
            | Source::Folder { name, .. }
            | Source::Nifti { name, .. }
            | Source::Dicom { name, .. }
            | Source::DicomSeries { name, .. } => name,
        }
    }

    /// Lists this source's inputs (in a fixed order) and returns their reader; `seed` is the
    /// build's. A folder that cannot be listed is reported in `skipped`, what a DICOM series
    /// scan leaves out in `scanned`.
    fn open(
        &self,
        seed: u64,
        skipped: &mut Vec<Skipped>,
        scanned: &mut Vec<Skipped>,
    ) -> Box<dyn Reader + '_> {
        match self {
            Source::Phantom {
                name,
                style,
                count,
                size,
                volumes,
            } => Box::new(Phantoms {
                style: *style,
                count: *count,
                size: *size,
                volumes: *volumes,
                seed: seed ^ hash64(name),
            }),
            Source::Folder {
                images,
                masks,
                modality,
                labels,
                volume_separator,
                mask_suffix,
                ..
            } => {
                // Masks that live beside their images (`case_001_seg.png` next to
                // `case_001.png`) are not inputs.
                let mask_beside = mask_suffix
                    .as_deref()
                    .filter(|suffix| images == masks && !suffix.is_empty());
                Box::new(Folder {
                    files: list_images(images, mask_beside, skipped),
                    masks,
                    labels,
                    modality,
                    volume_separator: volume_separator.as_deref(),
                    mask_suffix: mask_suffix.as_deref(),
                })
            }
            Source::Nifti {
                images,
                masks,
                modality,
                labels,
                threshold,
                axis,
                intensity,
                empty_share,
                ..
            } => Box::new(Nifti {
                files: list_images(images, None, skipped),
                masks,
                labels,
                threshold: *threshold,
                axis: *axis,
                intensity: *intensity,
                empty_share: *empty_share,
                modality,
                seed,
            }),
            Source::Dicom {
                images,
                masks,
                labels,
                intensity,
                volume_separator,
                ..
            } => Box::new(Dicom {
                files: list_images(images, None, skipped),
                masks,
                labels,
                intensity: *intensity,
                volume_separator: volume_separator.as_deref(),
            }),
            // One input per series; SEG files indexed by the series they segment.
            Source::DicomSeries {
                images,
                masks,
                rename,
                intensity,
                empty_share,
                ..
            } => {
                let (series, segs) = dicom_series::scan(images, masks, scanned);
                Box::new(DicomSeries {
                    images,
                    series,
                    segs,
                    rename,
                    intensity: *intensity,
                    empty_share: *empty_share,
                    seed,
                })
            }
        }
    }
}

/// Lists the inputs of every source, in order, and returns one reader per source. Folders
/// that cannot be listed are reported in `skipped` before what the DICOM series scans left
/// out (the order `build.json` has always had: series were listed in a second pass).
pub(super) fn open_all<'a>(
    sources: &'a [Source],
    seed: u64,
    skipped: &mut Vec<Skipped>,
) -> Vec<Box<dyn Reader + 'a>> {
    let mut scanned = Vec::new();
    let readers = sources
        .iter()
        .map(|src| src.open(seed, skipped, &mut scanned))
        .collect();
    skipped.extend(scanned);
    readers
}

/// A source whose inputs are listed: reads any of them, on any worker thread. Every sample
/// is generated from `(seed, source, input)` alone, so the order of the reads does not
/// matter.
pub(super) trait Reader: Sync {
    /// The number of inputs (an image, a volume or a series each).
    fn inputs(&self) -> usize;
    /// The file an input is reported under when it cannot be read (none for generated
    /// inputs).
    fn path(&self, index: usize) -> Option<&Path>;
    /// The samples of input `index` (`index < inputs()`), or why it cannot be used.
    fn read(&self, index: usize) -> Result<Vec<SourceSample>, String>;
}

/// One loaded image with its labelled masks.
pub(super) struct SourceSample {
    /// Structures asked for in a negative sample (no masks).
    pub(super) negatives: Vec<String>,
    pub(super) stem: String,
    pub(super) volume: String,
    pub(super) modality: String,
    pub(super) rgb: Vec<u8>,
    pub(super) h: usize,
    pub(super) w: usize,
    pub(super) masks: Vec<(String, Vec<bool>)>,
}

/// The files in `images`, sorted; with `mask_beside`, files whose stem ends with it (masks
/// beside their images) are left out. A folder that cannot be listed is reported in
/// `skipped` and gives no input.
fn list_images(
    images: &Path,
    mask_beside: Option<&str>,
    skipped: &mut Vec<Skipped>,
) -> Vec<PathBuf> {
    match std::fs::read_dir(images) {
        Ok(rd) => {
            let mut files: Vec<PathBuf> = rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .filter(|p| {
                    mask_beside.is_none_or(|suffix| {
                        !p.file_stem()
                            .and_then(|s| s.to_str())
                            .is_some_and(|s| s.ends_with(suffix))
                    })
                })
                .collect();
            files.sort();
            files
        }
        Err(e) => {
            skipped.push(Skipped {
                path: images.display().to_string(),
                reason: format!("cannot list the image folder: {e}"),
            });
            Vec::new()
        }
    }
}

/// The mask of `stem` in `masks_dir`: the file with that stem, any extension.
fn find_mask(masks_dir: &Path, stem: &str) -> Result<PathBuf, String> {
    std::fs::read_dir(masks_dir)
        .map_err(|e| format!("{}: {e}", masks_dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.file_stem().and_then(|s| s.to_str()) == Some(stem))
        .ok_or_else(|| format!("no mask named {stem}.* in {}", masks_dir.display()))
}

/// The volume id of a file stem: the characters before `sep`, the whole stem without one.
fn volume_of(stem: &str, sep: Option<&str>) -> String {
    match sep {
        Some(s) => stem.split(s).next().unwrap_or(stem).to_string(),
        None => stem.to_string(),
    }
}

/// A label map as the integers it stores: 8- or 16-bit greyscale (raw values, never
/// rescaled, so a 16-bit atlas keeps labels such as 37 or 2001), or RGB whose three channels
/// are equal (grey saved as colour). Colour and floating-point images are errors: their
/// values are not labels.
fn read_label_image(path: &Path) -> Result<(u32, u32, Vec<u16>), String> {
    use image::DynamicImage as D;
    let img = image::open(path).map_err(|e| format!("cannot read mask {}: {e}", path.display()))?;
    let (w, h) = (img.width(), img.height());
    let values: Vec<u16> = match img {
        D::ImageLuma8(m) => m.into_raw().into_iter().map(u16::from).collect(),
        D::ImageLuma16(m) => m.into_raw(),
        D::ImageLumaA8(m) => m.pixels().map(|p| u16::from(p.0[0])).collect(),
        D::ImageLumaA16(m) => m.pixels().map(|p| p.0[0]).collect(),
        D::ImageRgb8(m) if m.pixels().all(|p| p.0[0] == p.0[1] && p.0[1] == p.0[2]) => {
            m.pixels().map(|p| u16::from(p.0[0])).collect()
        }
        D::ImageRgba8(m) if m.pixels().all(|p| p.0[0] == p.0[1] && p.0[1] == p.0[2]) => {
            m.pixels().map(|p| u16::from(p.0[0])).collect()
        }
        D::ImageRgb16(m) if m.pixels().all(|p| p.0[0] == p.0[1] && p.0[1] == p.0[2]) => {
            m.pixels().map(|p| p.0[0]).collect()
        }
        D::ImageRgb8(_) | D::ImageRgba8(_) | D::ImageRgb16(_) | D::ImageRgba16(_) => {
            return Err(format!(
                "mask {} is a colour image; label maps must be 8- or 16-bit greyscale \
                 (one integer label per pixel)",
                path.display()
            ));
        }
        other => {
            return Err(format!(
                "mask {} has {:?} pixels; label maps must be 8- or 16-bit integer greyscale",
                path.display(),
                other.color()
            ));
        }
    };
    Ok((w, h, values))
}
