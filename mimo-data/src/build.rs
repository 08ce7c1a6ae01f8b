//! Building a MIMOSeg-style dataset from sources: a RON file lists the sources (synthetic
//! phantoms, 2D image + mask folders), the perspectives to generate, the split shares and
//! the prompt sampling; `build` writes the images and `records.jsonl`.
//!
//! Every sample is generated from `(seed, source, file)` alone, so a build is deterministic,
//! can run in any order, and an interrupted build rerun gives the same records (images
//! already written are kept). Files are written atomically; unreadable inputs are counted
//! and reported with their reason, never silently dropped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use mimo_core::fsutil::write_atomic;
use mimo_core::rng::{Rng, hash64};
use serde::{Deserialize, Serialize};

use crate::dicom_source::{Series, list_files, read_seg, read_seg_refs, read_series, scan_series};
use crate::knowledge::KnowledgeBase;
use crate::phantom::{Style, phantom};
use crate::prompts::{PointMode, sample_box, sample_point};
use crate::qa;
use crate::qa_endpoint::{PromptKind, QaEndpoint, QaJob, QaReport, run_jobs};
use crate::record::{LabeledMask, Perspective, Record, Turn, VisualPrompt};
use crate::rle::Rle;
use crate::templates;

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
    fn name(&self) -> &str {
        match self {
            Source::Phantom { name, .. }
            | Source::Folder { name, .. }
            | Source::Nifti { name, .. }
            | Source::Dicom { name, .. }
            | Source::DicomSeries { name, .. } => name,
        }
    }
}

/// Split shares (summing to 1).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Splits {
    /// Training share.
    pub train: f64,
    /// Validation share.
    pub val: f64,
    /// Test share.
    pub test: f64,
}

impl Default for Splits {
    fn default() -> Self {
        Self {
            train: 0.8,
            val: 0.1,
            test: 0.1,
        }
    }
}

fn default_jitter() -> f64 {
    0.1
}

fn default_point_share() -> f64 {
    0.5
}

fn default_perspectives() -> Vec<Perspective> {
    vec![Perspective::P1, Perspective::P2]
}

fn default_point_mode() -> PointMode {
    PointMode::Interior
}

/// A dataset build description (`DATASET.ron`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetConfig {
    /// Dataset name.
    pub name: String,
    /// Seed of every random choice.
    pub seed: u64,
    /// Sources.
    pub sources: Vec<Source>,
    /// Perspectives to generate (P1 and P2 from templates).
    #[serde(default = "default_perspectives")]
    pub perspectives: Vec<Perspective>,
    /// Split shares, by volume.
    #[serde(default)]
    pub splits: Splits,
    /// Box jitter: each side moves outward by up to this share of the box size.
    #[serde(default = "default_jitter")]
    pub box_jitter: f64,
    /// Share of P2 samples with a point prompt (the rest get a box).
    #[serde(default = "default_point_share")]
    pub point_share: f64,
    /// How points are placed.
    #[serde(default = "default_point_mode")]
    pub point_mode: PointMode,
    /// A knowledge file extending the built-in knowledge base (Perspective III/IV).
    #[serde(default)]
    pub knowledge: Option<PathBuf>,
    /// Write Perspective III/IV with a chat model behind an OpenAI-compatible endpoint
    /// (`None`: the built-in offline generator over the knowledge base).
    #[serde(default)]
    pub qa_endpoint: Option<QaEndpoint>,
    /// Threads reading inputs and writing images (default: every core). The records do not
    /// depend on it. Each thread holds one input in memory: a 512 x 512 x 600 CT volume is
    /// about 0.6 GB as f32, so bound this on machines with many cores and little memory.
    #[serde(default)]
    pub workers: Option<usize>,
}

/// What a build is doing, for progress reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Reading inputs, writing images, P-I/P-II (and offline P-III/P-IV) records.
    Inputs,
    /// Asking the chat endpoint for P-III/P-IV questions and answers.
    Questions,
}

/// Why a build failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The configuration is invalid.
    #[error("{path}: {message}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong (names the field).
        message: String,
    },
    /// The chat endpoint refused the requests (bad key, unknown model) or the reply cache
    /// could not be written.
    #[error("{0}")]
    Endpoint(String),
    /// Every input was skipped (or there was none): nothing to write. The message lists
    /// the reasons.
    #[error("the build produced no record ({} input(s) skipped){}", skipped.len(), reasons(skipped))]
    Empty {
        /// The inputs left out, with their reasons.
        skipped: Vec<Skipped>,
    },
    /// Writing the output failed.
    #[error("{path}: {message}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The reason.
        message: String,
    },
}

fn reasons(skipped: &[Skipped]) -> String {
    const SHOWN: usize = 5;
    let mut s: String = skipped
        .iter()
        .take(SHOWN)
        .map(|k| format!("\n  {}: {}", k.path, k.reason))
        .collect();
    if skipped.len() > SHOWN {
        s.push_str(&format!(
            "\n  ... ({} more in the list)",
            skipped.len() - SHOWN
        ));
    }
    if skipped.is_empty() {
        s.push_str(": the sources list no input");
    }
    s
}

impl DatasetConfig {
    /// Reads and checks a RON file.
    pub fn load(path: &Path) -> Result<Self, BuildError> {
        let err = |message: String| BuildError::Config {
            path: path.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let cfg: Self = ron::from_str(&text).map_err(|e| err(e.to_string()))?;
        cfg.validate().map_err(err)?;
        Ok(cfg)
    }

    /// Checks values; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        let s = self.splits;
        if [s.train, s.val, s.test]
            .iter()
            .any(|v| !(0.0..=1.0).contains(v))
            || (s.train + s.val + s.test - 1.0).abs() > 1e-6
        {
            return Err("`splits`: train, val and test must be in [0, 1] and sum to 1".into());
        }
        if !(0.0..=1.0).contains(&self.point_share) {
            return Err("`point_share` must be in [0, 1]".into());
        }
        if !(0.0..=1.0).contains(&self.box_jitter) {
            return Err("`box_jitter` must be in [0, 1]".into());
        }
        for p in &self.perspectives {
            if !matches!(
                p,
                Perspective::P1 | Perspective::P2 | Perspective::P3 | Perspective::P4
            ) {
                return Err(format!(
                    "`perspectives`: {p:?} is not a MIMOSeg perspective; use P1, P2, P3, P4"
                ));
            }
        }
        if let Some(q) = &self.qa_endpoint {
            q.validate()?;
        }
        if self.workers == Some(0) {
            return Err("`workers` must be at least 1 (or absent: every core)".into());
        }
        let mut names = std::collections::HashSet::new();
        for src in &self.sources {
            if !names.insert(src.name()) {
                return Err(format!(
                    "`sources`: the name `{}` is used twice",
                    src.name()
                ));
            }
            if let Source::Phantom {
                count,
                size,
                volumes,
                ..
            } = src
                && (*count == 0 || *size < 16 || *volumes == 0)
            {
                return Err(format!(
                    "`sources`: phantom `{}` needs count >= 1, size >= 16, volumes >= 1",
                    src.name()
                ));
            }
        }
        Ok(())
    }
}

/// The split of a volume: a seeded hash of the volume id, so every slice of a volume lands
/// in the same split and the assignment does not depend on the order of the files.
pub fn split_of(volume: &str, seed: u64, s: Splits) -> &'static str {
    let u = (hash64(&format!("{seed}/{volume}")) >> 11) as f64 / (1u64 << 53) as f64;
    if u < s.train {
        "train"
    } else if u < s.train + s.val {
        "val"
    } else {
        "test"
    }
}

/// Whether a training record belongs to the `ratio` subset (e.g. 0.25). The decision is a
/// seeded hash of the volume compared with the ratio, so subsets are nested (25 % ⊂ 50 % ⊂
/// 75 % ⊂ 100 %) and volumes are never split.
pub fn in_ratio(record: &Record, ratio: f64, seed: u64) -> bool {
    let key = if record.volume.is_empty() {
        &record.id
    } else {
        &record.volume
    };
    let u = (hash64(&format!("ratio/{seed}/{}/{key}", record.source)) >> 11) as f64
        / (1u64 << 53) as f64;
    u < ratio
}

/// One input that was not used, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Skipped {
    /// The file.
    pub path: String,
    /// The reason.
    pub reason: String,
}

/// What a build wrote.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BuildSummary {
    /// Images read or generated.
    pub images: usize,
    /// Images already present from an earlier (interrupted) run and reused.
    pub reused_images: usize,
    /// Records by perspective.
    pub records: BTreeMap<String, usize>,
    /// Records by split.
    pub splits: BTreeMap<String, usize>,
    /// Inputs not used.
    pub skipped: Vec<Skipped>,
    /// The chat-endpoint phase (requests, cache hits, rejections by reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qa: Option<QaReport>,
}

/// What one input gave.
#[derive(Default)]
struct InputOut {
    records: Vec<Record>,
    /// Endpoint jobs and the index of their record in `records`.
    jobs: Vec<QaJob>,
    job_records: Vec<usize>,
    skipped: Vec<Skipped>,
    images: usize,
    reused_images: usize,
}

/// One loaded image with its labelled masks.
struct Sample {
    /// Structures asked for in a negative sample (no masks).
    negatives: Vec<String>,
    stem: String,
    volume: String,
    modality: String,
    rgb: Vec<u8>,
    h: usize,
    w: usize,
    masks: Vec<(String, Vec<bool>)>,
}

fn read_folder_sample(
    img: &Path,
    masks_dir: &Path,
    labels: &BTreeMap<u16, String>,
    modality: &str,
    sep: Option<&str>,
    mask_suffix: Option<&str>,
) -> Result<Sample, String> {
    let stem = img
        .file_stem()
        .and_then(|s| s.to_str())
        .ok_or("file name is not UTF-8")?
        .to_string();
    let mask_stem = format!("{stem}{}", mask_suffix.unwrap_or(""));
    let mask_path = std::fs::read_dir(masks_dir)
        .map_err(|e| format!("{}: {e}", masks_dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.file_stem().and_then(|s| s.to_str()) == Some(mask_stem.as_str()))
        .ok_or_else(|| format!("no mask named {mask_stem}.* in {}", masks_dir.display()))?;
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
    let volume = match sep {
        Some(s) => stem.split(s).next().unwrap_or(&stem).to_string(),
        None => stem.clone(),
    };
    Ok(Sample {
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

/// One DICOM image and its mask (DICOM-SEG or label image).
fn read_dicom_sample(
    img: &Path,
    masks_dir: &Path,
    labels: &BTreeMap<u16, String>,
    intensity: Option<crate::nifti_source::Intensity>,
    sep: Option<&str>,
) -> Result<Sample, String> {
    use crate::dicom_source::{read_dicom, read_dicom_seg};
    use crate::nifti_source::{Intensity, Volume, to_grey};
    let stem = img
        .file_stem()
        .and_then(|s| s.to_str())
        .ok_or("file name is not UTF-8")?
        .to_string();
    let d = read_dicom(img)?;
    let mask_path = std::fs::read_dir(masks_dir)
        .map_err(|e| format!("{}: {e}", masks_dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.file_stem().and_then(|s| s.to_str()) == Some(stem.as_str()))
        .ok_or_else(|| format!("no mask named {stem}.* in {}", masks_dir.display()))?;
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
    let volume = match sep {
        Some(s) => stem.split(s).next().unwrap_or(&stem).to_string(),
        None => stem.clone(),
    };
    Ok(Sample {
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

/// A DICOM series source's series and its SEG files by series UID.
type SeriesSource = (Vec<Series>, BTreeMap<String, Vec<PathBuf>>);

/// Groups the DICOM images under `images` into series and indexes the DICOM-SEG files under
/// `masks` by the series they segment (ReferencedSeriesSequence, else the series holding a
/// frame's source image). Unusable files are added to `skipped`.
fn scan_dicom_series(images: &Path, masks: &Path, skipped: &mut Vec<Skipped>) -> SeriesSource {
    let mut skip = |path: &Path, reason: String| {
        skipped.push(Skipped {
            path: path.display().to_string(),
            reason,
        })
    };
    let (series, bad) = match scan_series(images) {
        Ok(r) => r,
        Err(e) => {
            skip(images, format!("cannot list the image folder: {e}"));
            return (Vec::new(), BTreeMap::new());
        }
    };
    for (p, reason) in bad {
        skip(&p, reason);
    }
    let sop_series: std::collections::HashMap<&str, &str> = series
        .iter()
        .flat_map(|s| s.slices.iter().map(|sl| (sl.sop.as_str(), s.uid.as_str())))
        .collect();
    let mut segs: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    let files = match list_files(masks) {
        Ok(f) => f,
        Err(e) => {
            skip(masks, format!("cannot list the mask folder: {e}"));
            Vec::new()
        }
    };
    for p in files {
        let seg = match read_seg_refs(&p) {
            Ok(s) => s,
            // Images in a shared images/masks folder are not masks.
            Err(e) if e.contains("not a DICOM-SEG") && masks == images => continue,
            Err(e) => {
                skip(&p, e);
                continue;
            }
        };
        let uid = seg
            .series
            .clone()
            .filter(|u| series.iter().any(|s| &s.uid == u))
            .or_else(|| {
                seg.frames.iter().find_map(|f| {
                    sop_series
                        .get(f.source_sop.as_deref()?)
                        .map(|u| u.to_string())
                })
            });
        match uid {
            Some(u) => segs.entry(u).or_default().push(p),
            None => skip(
                &p,
                "the SEG refers to no series found under the image folder".into(),
            ),
        }
    }
    (series, segs)
}

/// The slices of one DICOM series with the masks of its SEG files.
fn read_series_samples(
    series: &Series,
    segs: &[PathBuf],
    rename: &BTreeMap<String, String>,
    intensity: Option<crate::nifti_source::Intensity>,
    empty_share: f64,
    seed: u64,
) -> Result<Vec<Sample>, String> {
    use crate::nifti_source::{Intensity, Volume, to_grey};
    let imgs = read_series(series)?;
    let Some(first) = imgs.first() else {
        return Err(format!("series {} has no slices", series.uid));
    };
    let (h, w) = (first.height, first.width);
    if let Some(k) = imgs.iter().position(|i| (i.height, i.width) != (h, w)) {
        return Err(format!(
            "series {}: slice {} ({}) is {}x{}, the first {w}x{h}",
            series.uid,
            k,
            series.slices[k].path.display(),
            imgs[k].width,
            imgs[k].height
        ));
    }
    let n = imgs.len();
    let mut per_slice: Vec<Vec<(String, Vec<bool>)>> = vec![Vec::new(); n];
    let mut order: Vec<String> = Vec::new();
    for p in segs {
        let seg = read_seg(p)?;
        if (seg.rows, seg.columns) != (h, w) {
            return Err(format!(
                "SEG {} is {}x{}, the series {w}x{h}",
                p.display(),
                seg.columns,
                seg.rows
            ));
        }
        for name in seg.segments.values() {
            let name = name.to_lowercase();
            let name = rename.get(&name).cloned().unwrap_or(name);
            if !order.contains(&name) {
                order.push(name);
            }
        }
        for (fi, f) in seg.frames.iter().enumerate() {
            let k = series.slice_of(f).ok_or_else(|| {
                format!(
                    "SEG {} frame {}: refers to no slice of series {}",
                    p.display(),
                    fi + 1,
                    series.uid
                )
            })?;
            let name = seg
                .segments
                .get(&f.segment)
                .map(|l| l.to_lowercase())
                .unwrap_or_else(|| format!("segment {}", f.segment));
            let name = rename.get(&name).cloned().unwrap_or(name);
            if !order.contains(&name) {
                order.push(name.clone());
            }
            match per_slice[k].iter_mut().find(|(l, _)| *l == name) {
                Some((_, m)) => m.iter_mut().zip(&f.mask).for_each(|(a, &b)| *a |= b),
                None => per_slice[k].push((name, f.mask.clone())),
            }
        }
    }
    // The file's window unless `intensity` says otherwise; only percentiles read the voxels.
    let intensity = match (intensity, first.window) {
        (Some(i), _) => i,
        (None, Some((c, ww))) => Intensity::Window(c, ww),
        (None, None) => Intensity::default(),
    };
    let data = match intensity {
        Intensity::Percentile(..) => imgs.iter().flat_map(|i| i.values.iter().copied()).collect(),
        _ => Vec::new(),
    };
    let range = Volume {
        dims: [w, h, n],
        data,
    }
    .range(intensity);
    let volume = if series.patient.is_empty() {
        series.uid.clone()
    } else {
        series.patient.clone()
    };
    let mut out = Vec::new();
    for (k, (img, mut masks)) in imgs.iter().zip(per_slice).enumerate() {
        masks.retain(|(_, m)| m.iter().any(|&b| b));
        masks.sort_by_key(|(l, _)| order.iter().position(|o| o == l));
        let stem = format!("{}_{k:04}", series.uid);
        let negatives = if masks.is_empty() {
            let u = (hash64(&format!("empty/{seed}/{stem}")) >> 11) as f64 / (1u64 << 53) as f64;
            if u >= empty_share || order.is_empty() {
                continue;
            }
            order.clone()
        } else {
            Vec::new()
        };
        let grey = to_grey(&img.values, range);
        out.push(Sample {
            negatives,
            stem,
            volume: volume.clone(),
            modality: series.modality.clone(),
            rgb: grey.iter().flat_map(|&g| [g, g, g]).collect(),
            h,
            w,
            masks,
        });
    }
    Ok(out)
}

/// The slices of one NIfTI volume and its label volume.
#[allow(clippy::too_many_arguments)]
fn read_nifti_samples(
    img: &Path,
    masks_dir: &Path,
    labels: &BTreeMap<u16, String>,
    threshold: Option<f32>,
    axis: crate::nifti_source::SliceAxis,
    intensity: crate::nifti_source::Intensity,
    empty_share: f64,
    modality: &str,
    seed: u64,
) -> Result<Vec<Sample>, String> {
    use crate::nifti_source::{read_volume, to_grey};
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
            let u =
                (hash64(&format!("empty/{seed}/{slice_stem}")) >> 11) as f64 / (1u64 << 53) as f64;
            if u >= empty_share {
                continue;
            }
            labels.values().cloned().collect()
        } else {
            Vec::new()
        };
        let grey = to_grey(&v, range);
        out.push(Sample {
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

fn png_bytes(rgb: &[u8], h: usize, w: usize) -> Vec<u8> {
    let img = image::RgbImage::from_raw(w as u32, h as u32, rgb.to_vec()).expect("buffer size");
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .expect("PNG encoding to memory");
    out
}

/// Builds the dataset into `out` (`records.jsonl`, `images/`, `build.json`; with a chat
/// endpoint also its reply cache, `qa-cache/` by default). `progress(stage, done, total)` is
/// called after each input and, with an endpoint, after each generated question/answer.
pub fn build(
    cfg: &DatasetConfig,
    out: &Path,
    progress: &mut dyn FnMut(Stage, usize, usize),
) -> Result<BuildSummary, BuildError> {
    let werr = |p: &Path, e: String| BuildError::Write {
        path: p.to_path_buf(),
        message: e,
    };
    let mut summary = BuildSummary::default();
    // The inputs, in a fixed order.
    let mut inputs: Vec<(usize, u64, Option<PathBuf>)> = Vec::new();
    for (si, src) in cfg.sources.iter().enumerate() {
        match src {
            Source::Phantom { count, .. } => {
                inputs.extend((0..*count as u64).map(|i| (si, i, None)))
            }
            // Listed below, one input per series.
            Source::DicomSeries { .. } => {}
            Source::Folder { images, .. }
            | Source::Nifti { images, .. }
            | Source::Dicom { images, .. } => match std::fs::read_dir(images) {
                Ok(rd) => {
                    // Masks that live beside their images (`case_001_seg.png` next to
                    // `case_001.png`) are not inputs.
                    let mask_beside = match src {
                        Source::Folder {
                            images,
                            masks,
                            mask_suffix: Some(suffix),
                            ..
                        } if images == masks && !suffix.is_empty() => Some(suffix.as_str()),
                        _ => None,
                    };
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
                    inputs.extend(
                        files
                            .into_iter()
                            .enumerate()
                            .map(|(i, p)| (si, i as u64, Some(p))),
                    );
                }
                Err(e) => summary.skipped.push(Skipped {
                    path: images.display().to_string(),
                    reason: format!("cannot list the image folder: {e}"),
                }),
            },
        }
    }
    // DICOM series: one input per series; SEG files indexed by the series they segment.
    let mut series_of: BTreeMap<usize, SeriesSource> = BTreeMap::new();
    for (si, src) in cfg.sources.iter().enumerate() {
        if let Source::DicomSeries { images, masks, .. } = src {
            let (series, segs) = scan_dicom_series(images, masks, &mut summary.skipped);
            inputs.extend(series.iter().enumerate().map(|(i, s)| {
                let first = s.slices.first().map(|sl| sl.path.clone());
                (si, i as u64, Some(first.unwrap_or_else(|| images.clone())))
            }));
            series_of.insert(si, (series, segs));
        }
    }
    inputs.sort_by_key(|(si, i, _)| (*si, *i));
    let total = inputs.len();
    // Temporary files of an interrupted earlier run (write_atomic's `.NAME.tmp-PID`).
    for dir in std::iter::once(out.to_path_buf()).chain(
        cfg.sources
            .iter()
            .map(|s| out.join("images").join(s.name())),
    ) {
        if let Ok(rd) = std::fs::read_dir(&dir) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') && name.contains(".tmp-") {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
    let kb = match &cfg.knowledge {
        Some(p) => KnowledgeBase::builtin()
            .with_file(p)
            .map_err(|e| BuildError::Config {
                path: p.clone(),
                message: e.to_string(),
            })?,
        None => KnowledgeBase::builtin(),
    };
    let mut records: Vec<Record> = Vec::new();
    // Endpoint questions to ask once every input is read, and their records.
    let mut jobs: Vec<QaJob> = Vec::new();
    let mut job_records: Vec<usize> = Vec::new();
    // One input (an image, a volume or a series) to records; runs on worker threads.
    let process = |si: usize, index: u64, path: Option<PathBuf>| -> Result<InputOut, BuildError> {
        let mut o = InputOut::default();
        let src = &cfg.sources[si];
        let loaded: Result<Vec<Sample>, String> = match (src, &path) {
            (
                Source::Phantom {
                    style,
                    size,
                    volumes,
                    ..
                },
                _,
            ) => {
                let p = phantom(*style, *size, cfg.seed ^ hash64(src.name()), index);
                Ok(vec![Sample {
                    negatives: Vec::new(),
                    stem: format!("{index:06}"),
                    volume: format!("vol{:04}", index as usize % volumes),
                    modality: style.modality().into(),
                    rgb: p.rgb,
                    h: p.height,
                    w: p.width,
                    masks: p.masks,
                }])
            }
            (
                Source::Folder {
                    masks,
                    labels,
                    modality,
                    volume_separator,
                    mask_suffix,
                    ..
                },
                Some(p),
            ) => read_folder_sample(
                p,
                masks,
                labels,
                modality,
                volume_separator.as_deref(),
                mask_suffix.as_deref(),
            )
            .map(|s| vec![s]),
            (
                Source::Nifti {
                    masks,
                    labels,
                    modality,
                    threshold,
                    axis,
                    intensity,
                    empty_share,
                    ..
                },
                Some(p),
            ) => read_nifti_samples(
                p,
                masks,
                labels,
                *threshold,
                *axis,
                *intensity,
                *empty_share,
                modality,
                cfg.seed,
            ),
            (
                Source::Dicom {
                    masks,
                    labels,
                    intensity,
                    volume_separator,
                    ..
                },
                Some(p),
            ) => read_dicom_sample(p, masks, labels, *intensity, volume_separator.as_deref())
                .map(|s| vec![s]),
            (
                Source::DicomSeries {
                    rename,
                    intensity,
                    empty_share,
                    ..
                },
                Some(_),
            ) => {
                let (series, segs) = &series_of[&si];
                let s = &series[index as usize];
                read_series_samples(
                    s,
                    segs.get(&s.uid).map(Vec::as_slice).unwrap_or(&[]),
                    rename,
                    *intensity,
                    *empty_share,
                    cfg.seed,
                )
            }
            (_, None) => unreachable!("folder inputs carry their path"),
        };
        let samples = match loaded {
            Ok(s) => s,
            Err(reason) => {
                o.skipped.push(Skipped {
                    path: path.map(|p| p.display().to_string()).unwrap_or_default(),
                    reason,
                });
                return Ok(o);
            }
        };
        for sample in samples {
            let rel = format!("images/{}/{}.png", src.name(), sample.stem);
            let image_path = out.join(&rel);
            if image_path.is_file() {
                o.reused_images += 1;
            } else {
                write_atomic(&image_path, &png_bytes(&sample.rgb, sample.h, sample.w))
                    .map_err(|e| werr(&image_path, e.to_string()))?;
            }
            o.images += 1;
            let volume = format!("{}/{}", src.name(), sample.volume);
            let split = split_of(&volume, cfg.seed, cfg.splits);
            for persp in &cfg.perspectives {
                let mut rng = Rng::for_item(
                    cfg.seed ^ hash64(&format!("{}/{}/{persp:?}", src.name(), sample.stem)),
                    0,
                );
                let (h, w) = (sample.h, sample.w);
                let labels: Vec<String> = sample.masks.iter().map(|(l, _)| l.clone()).collect();
                if labels.is_empty() && *persp != Perspective::P1 {
                    continue;
                }
                let mut pending: Option<QaJob> = None;
                let generated = match persp {
                    Perspective::P1 if labels.is_empty() => {
                        let names: Vec<String> = sample.negatives.clone();
                        let (q, _) = templates::p1(&names, &mut rng);
                        Ok((
                            q,
                            format!(
                                "The image does not include {}.",
                                templates::join_names(&names)
                            ),
                            Vec::new(),
                            Vec::new(),
                        ))
                    }
                    Perspective::P1 => {
                        let (q, a) = templates::p1(&labels, &mut rng);
                        Ok((q, a, sample.masks.clone(), Vec::new()))
                    }
                    Perspective::P3 if cfg.qa_endpoint.is_some() => {
                        pending = Some(QaJob {
                            id: String::new(),
                            perspective: *persp,
                            modality: sample.modality.clone(),
                            labels: labels.clone(),
                            prompt: None,
                        });
                        Ok((
                            String::new(),
                            String::new(),
                            sample.masks.clone(),
                            Vec::new(),
                        ))
                    }
                    Perspective::P3 => qa::p3(&kb, &labels, &sample.modality, &mut rng)
                        .map(|(q, a)| (q, a, sample.masks.clone(), Vec::new())),
                    _ => {
                        let (label, mask) = sample.masks[rng.index(sample.masks.len())].clone();
                        let point = rng.next_f64() < cfg.point_share;
                        let prompt = if point {
                            sample_point(&mask, h, w, cfg.point_mode, &mut rng).map(|p| {
                                VisualPrompt {
                                    kind: "point".into(),
                                    coords: p.to_vec(),
                                    label: Some(1),
                                }
                            })
                        } else {
                            sample_box(&mask, h, w, cfg.box_jitter, &mut rng).map(|b| {
                                VisualPrompt {
                                    kind: "box".into(),
                                    coords: b.to_vec(),
                                    label: None,
                                }
                            })
                        };
                        let qa = if *persp == Perspective::P4 && cfg.qa_endpoint.is_some() {
                            pending = Some(QaJob {
                                id: String::new(),
                                perspective: *persp,
                                modality: sample.modality.clone(),
                                labels: vec![label.clone()],
                                prompt: Some(if point {
                                    PromptKind::Point
                                } else {
                                    PromptKind::Box
                                }),
                            });
                            Ok((String::new(), String::new()))
                        } else if *persp == Perspective::P4 {
                            qa::p4(&kb, &label, &sample.modality, point, &mut rng)
                        } else {
                            Ok(templates::p2(std::slice::from_ref(&label), point, &mut rng))
                        };
                        qa.map(|(q, a)| (q, a, vec![(label, mask)], prompt.into_iter().collect()))
                    }
                };
                let (question, answer, masks, prompts) = match generated {
                    Ok(g) => g,
                    Err(reason) => {
                        o.skipped.push(Skipped {
                            path: format!("{}/{} ({persp:?})", src.name(), sample.stem),
                            reason,
                        });
                        continue;
                    }
                };
                let id = format!("{}/{}/{persp:?}", src.name(), sample.stem);
                if let Some(mut job) = pending {
                    job.id = id.clone();
                    o.job_records.push(o.records.len());
                    o.jobs.push(job);
                }
                o.records.push(Record {
                    id,
                    image: rel.clone(),
                    size: Some([h, w]),
                    modality: sample.modality.clone(),
                    source: src.name().into(),
                    volume: volume.clone(),
                    split: split.into(),
                    perspective: *persp,
                    prompts,
                    turns: vec![
                        Turn {
                            from: "human".into(),
                            value: format!("<image>\n{question}"),
                        },
                        Turn {
                            from: "gpt".into(),
                            value: answer,
                        },
                    ],
                    masks: masks
                        .into_iter()
                        .map(|(label, m)| LabeledMask {
                            label,
                            rle: Rle::encode(&m, h, w),
                        })
                        .collect(),
                    vqa: None,
                });
            }
        }
        Ok(o)
    };
    let workers = cfg
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, total.max(1));
    let mut outs: Vec<Option<InputOut>> = (0..total).map(|_| None).collect();
    let mut failure = None;
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::channel();
        for _ in 0..workers {
            let tx = tx.clone();
            let (process, inputs, next, stop) = (&process, &inputs, &next, &stop);
            s.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((si, index, path)) = inputs.get(i) else {
                        break;
                    };
                    if tx.send((i, process(*si, *index, path.clone()))).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        for (done, (i, r)) in rx.into_iter().enumerate() {
            match r {
                Ok(o) => outs[i] = Some(o),
                Err(e) => {
                    stop.store(true, Ordering::Relaxed);
                    failure.get_or_insert(e);
                }
            }
            progress(Stage::Inputs, done + 1, total);
        }
    });
    if let Some(e) = failure {
        return Err(e);
    }
    // Merged in input order: the records do not depend on the number of workers.
    for o in outs.into_iter().flatten() {
        let offset = records.len();
        job_records.extend(o.job_records.iter().map(|r| offset + r));
        jobs.extend(o.jobs);
        records.extend(o.records);
        summary.skipped.extend(o.skipped);
        summary.images += o.images;
        summary.reused_images += o.reused_images;
    }
    if !jobs.is_empty()
        && let Some(endpoint) = &cfg.qa_endpoint
    {
        let (results, report) = run_jobs(endpoint, out, &kb, &jobs, &mut |d, t| {
            progress(Stage::Questions, d, t)
        })
        .map_err(|e| BuildError::Endpoint(e.to_string()))?;
        let mut drop = vec![false; records.len()];
        for ((ri, job), result) in job_records.iter().zip(&jobs).zip(results) {
            match result {
                Ok((q, a)) => {
                    records[*ri].turns[0].value = format!("<image>\n{q}");
                    records[*ri].turns[1].value = a;
                }
                Err(reason) => {
                    drop[*ri] = true;
                    summary.skipped.push(Skipped {
                        path: job.id.clone(),
                        reason,
                    });
                }
            }
        }
        let mut keep = drop.iter().map(|d| !d);
        records.retain(|_| keep.next().unwrap_or(true));
        summary.qa = Some(report);
    }
    for r in &records {
        *summary
            .records
            .entry(format!("{:?}", r.perspective))
            .or_default() += 1;
        *summary.splits.entry(r.split.clone()).or_default() += 1;
    }
    if records.is_empty() {
        return Err(BuildError::Empty {
            skipped: summary.skipped,
        });
    }
    let mut text = String::new();
    for r in &records {
        text.push_str(&serde_json::to_string(r).map_err(|e| werr(out, e.to_string()))?);
        text.push('\n');
    }
    let rp = out.join("records.jsonl");
    write_atomic(&rp, text.as_bytes()).map_err(|e| werr(&rp, e.to_string()))?;
    let sp = out.join("build.json");
    let json = serde_json::to_string_pretty(&summary).map_err(|e| werr(&sp, e.to_string()))?;
    write_atomic(&sp, json.as_bytes()).map_err(|e| werr(&sp, e.to_string()))?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::read_jsonl;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mimo-build-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn phantoms(count: usize) -> DatasetConfig {
        DatasetConfig {
            name: "t".into(),
            seed: 5,
            sources: vec![
                Source::Phantom {
                    name: "ct".into(),
                    style: Style::Ct,
                    count,
                    size: 48,
                    volumes: 6,
                },
                Source::Phantom {
                    name: "fundus".into(),
                    style: Style::Fundus,
                    count: 4,
                    size: 32,
                    volumes: 2,
                },
            ],
            perspectives: vec![Perspective::P1, Perspective::P2],
            splits: Splits::default(),
            box_jitter: 0.1,
            point_share: 0.5,
            point_mode: PointMode::Interior,
            knowledge: None,
            qa_endpoint: None,
            workers: None,
        }
    }

    #[test]
    fn phantom_build_is_deterministic_resumable_and_split_by_volume() {
        let out = tmp("det");
        let cfg = phantoms(24);
        let s = build(&cfg, &out, &mut |_, _, _| {}).unwrap();
        assert_eq!(s.images, 28);
        assert_eq!(s.records["P1"], 28);
        assert_eq!(s.records["P2"], 28);
        assert!(s.skipped.is_empty());
        assert!(
            s.splits.len() >= 2,
            "every volume in one split: {:?}",
            s.splits
        );
        let first = std::fs::read(out.join("records.jsonl")).unwrap();
        // An interrupted build (records not yet written, some images missing) rerun gives the
        // same records.
        std::fs::remove_file(out.join("records.jsonl")).unwrap();
        std::fs::remove_file(out.join("images/ct/000003.png")).unwrap();
        let again = build(&cfg, &out, &mut |_, _, _| {}).unwrap();
        assert_eq!(again.reused_images, 27);
        assert_eq!(std::fs::read(out.join("records.jsonl")).unwrap(), first);
        // A fresh directory gives byte-identical output, whatever the number of workers.
        let out2 = tmp("det2");
        let one = DatasetConfig {
            workers: Some(1),
            ..cfg.clone()
        };
        build(&one, &out2, &mut |_, _, _| {}).unwrap();
        assert_eq!(std::fs::read(out2.join("records.jsonl")).unwrap(), first);
        let out2 = tmp("det3");
        let three = DatasetConfig {
            workers: Some(3),
            ..cfg.clone()
        };
        build(&three, &out2, &mut |_, _, _| {}).unwrap();
        assert_eq!(std::fs::read(out2.join("records.jsonl")).unwrap(), first);
        assert_eq!(
            std::fs::read(out.join("images/fundus/000001.png")).unwrap(),
            std::fs::read(out2.join("images/fundus/000001.png")).unwrap()
        );

        let records: Vec<Record> = read_jsonl(out.join("records.jsonl")).unwrap();
        // No volume in two splits.
        let mut split_of_volume: BTreeMap<&str, &str> = BTreeMap::new();
        for r in &records {
            let prev = split_of_volume.insert(&r.volume, &r.split);
            assert!(
                prev.is_none() || prev == Some(r.split.as_str()),
                "volume {} in two splits",
                r.volume
            );
        }
        for r in &records {
            let answer = r.answer().unwrap();
            assert_eq!(answer.matches("<SEG>").count(), r.masks.len(), "{}", r.id);
            for (m, phrase) in r.masks.iter().zip(answer.split("<p>").skip(1)) {
                assert!(
                    phrase.starts_with(&format!("{}</p><SEG>", m.label)),
                    "{answer}"
                );
            }
            if r.perspective == Perspective::P2 {
                let mask = r.masks[0].rle.decode().unwrap();
                let [h, w] = r.size.unwrap();
                let p = &r.prompts[0];
                match p.kind.as_str() {
                    "point" => assert!(mask[p.coords[1] as usize * w + p.coords[0] as usize]),
                    _ => {
                        let [x0, y0, x1, y1] = crate::prompts::bbox(&mask, h, w).unwrap();
                        assert!(p.coords[0] <= x0 as f64 && p.coords[1] <= y0 as f64);
                        assert!(p.coords[2] >= x1 as f64 && p.coords[3] >= y1 as f64);
                    }
                }
            }
        }
        std::fs::remove_dir_all(&out).ok();
        std::fs::remove_dir_all(&out2).ok();
    }

    #[test]
    fn all_four_perspectives_with_offline_qa() {
        let out = tmp("p34");
        let mut cfg = phantoms(6);
        cfg.perspectives = vec![
            Perspective::P1,
            Perspective::P2,
            Perspective::P3,
            Perspective::P4,
        ];
        let s = build(&cfg, &out, &mut |_, _, _| {}).unwrap();
        assert!(s.skipped.is_empty(), "{:?}", s.skipped);
        assert_eq!((s.records["P3"], s.records["P4"]), (10, 10));
        let records: Vec<Record> = read_jsonl(out.join("records.jsonl")).unwrap();
        for r in records
            .iter()
            .filter(|r| matches!(r.perspective, Perspective::P3 | Perspective::P4))
        {
            let labels: Vec<String> = r.masks.iter().map(|m| m.label.clone()).collect();
            crate::qa::validate_answer(r.answer().unwrap(), &labels).unwrap();
            assert_eq!(
                r.prompts.len(),
                usize::from(r.perspective == Perspective::P4),
                "{}",
                r.id
            );
        }
        std::fs::remove_dir_all(&out).ok();
    }

    #[test]
    fn ratio_subsets_are_nested_and_keep_volumes_whole() {
        let out = tmp("ratio");
        build(&phantoms(40), &out, &mut |_, _, _| {}).unwrap();
        let records: Vec<Record> = read_jsonl(out.join("records.jsonl")).unwrap();
        let subset =
            |r: f64| -> Vec<&Record> { records.iter().filter(|x| in_ratio(x, r, 5)).collect() };
        let (a, b, c, d) = (subset(0.25), subset(0.5), subset(0.75), subset(1.0));
        assert_eq!(d.len(), records.len());
        assert!(a.len() <= b.len() && b.len() <= c.len() && c.len() <= d.len());
        for (small, big) in [(&a, &b), (&b, &c), (&c, &d)] {
            for r in small.iter() {
                assert!(big.iter().any(|x| x.id == r.id), "not nested");
            }
        }
        for r in &records {
            let same_volume = records
                .iter()
                .filter(|x| x.volume == r.volume && x.source == r.source);
            for x in same_volume {
                assert_eq!(in_ratio(x, 0.5, 5), in_ratio(r, 0.5, 5));
            }
        }
        std::fs::remove_dir_all(&out).ok();
    }

    #[test]
    fn folder_source_reads_real_slices_and_reports_bad_files() {
        let root = tmp("folder");
        let (img, msk) = (root.join("images"), root.join("masks"));
        std::fs::create_dir_all(&img).unwrap();
        std::fs::create_dir_all(&msk).unwrap();
        let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/samples");
        std::fs::copy(samples.join("mni152_t1_z95.png"), img.join("mni_z95.png")).unwrap();
        std::fs::copy(
            samples.join("mni152_t1_z95_brain.png"),
            msk.join("mni_z95.png"),
        )
        .unwrap();
        std::fs::write(img.join("broken.png"), b"\x89PNG not really").unwrap();
        std::fs::write(msk.join("broken.png"), b"x").unwrap();
        std::fs::copy(samples.join("mni152_t1_z95.png"), img.join("nomask.png")).unwrap();
        let cfg = DatasetConfig {
            sources: vec![Source::Folder {
                name: "mni".into(),
                images: img.clone(),
                masks: msk.clone(),
                modality: "MR".into(),
                labels: BTreeMap::from([(255, "brain".to_string())]),
                volume_separator: Some("_".into()),
                mask_suffix: None,
            }],
            ..phantoms(1)
        };
        let out = root.join("out");
        let s = build(&cfg, &out, &mut |_, _, _| {}).unwrap();
        assert_eq!(s.images, 1);
        assert_eq!(s.skipped.len(), 2, "{:?}", s.skipped);
        assert!(
            s.skipped
                .iter()
                .any(|k| k.path.ends_with("broken.png") && k.reason.contains("cannot read image"))
        );
        assert!(
            s.skipped
                .iter()
                .any(|k| k.path.ends_with("nomask.png") && k.reason.contains("no mask"))
        );
        let records: Vec<Record> = read_jsonl(out.join("records.jsonl")).unwrap();
        assert_eq!(records[0].size, Some([233, 197]));
        assert_eq!(records[0].volume, "mni/mni");
        let area = records[0].masks[0].rle.area().unwrap();
        assert!(area > 10_000, "brain mask area {area}");
        std::fs::remove_dir_all(&root).ok();
    }

    /// The committed MNI ICBM152 excerpt (T1 + grey-matter probability map) through the NIfTI
    /// source: every slice has grey matter, the masks equal nibabel's thresholded map.
    /// Synthetic CT volumes written as NIfTI (the benchmark's input) come back slice by slice
    /// with the phantoms' structures.
    #[test]
    fn synthetic_ct_volumes_round_trip_through_the_nifti_source() {
        let root = tmp("synthetic-nifti");
        let labels = crate::phantom::write_ct_volumes(&root, 2, 40, 3, 9).unwrap();
        let cfg = DatasetConfig {
            sources: vec![Source::Nifti {
                name: "ct".into(),
                images: root.join("images"),
                masks: root.join("masks"),
                modality: "CT".into(),
                labels: labels.clone(),
                threshold: None,
                axis: crate::nifti_source::SliceAxis::Axial,
                intensity: crate::nifti_source::Intensity::CtAbdomen,
                empty_share: 0.0,
            }],
            ..phantoms(1)
        };
        let s = build(&cfg, &root.join("out"), &mut |_, _, _| {}).unwrap();
        assert!(s.skipped.is_empty(), "{:?}", s.skipped);
        assert_eq!(s.images, 6);
        let recs = read_jsonl::<Record>(&root.join("out/records.jsonl")).unwrap();
        for v in 0..2 {
            for z in 0..3 {
                let p = phantom(Style::Ct, 40, 9, (v * 3 + z) as u64);
                let union =
                    |ms: Vec<Vec<bool>>| (0..40 * 40).filter(|&i| ms.iter().any(|m| m[i])).count();
                let want = union(p.masks.iter().map(|(_, m)| m.clone()).collect());
                let rec = recs
                    .iter()
                    .find(|r| r.id == format!("ct/vol{v:03}_{z:04}/P1"))
                    .unwrap();
                let got = union(rec.masks.iter().map(|m| m.rle.decode().unwrap()).collect());
                assert_eq!(got, want, "volume {v} slice {z}");
                assert_eq!(rec.volume, format!("ct/vol{v:03}"));
            }
        }
    }

    /// The full MNI template from the nilearn wheel, when `MIMO_NILEARN_DATA` names its
    /// `nilearn/datasets/data/` folder: the reoriented volumes equal nibabel's canonical ones
    /// slice by slice (T1 sums, grey-matter areas), and the builder makes one sample per slice
    /// with grey matter.
    #[test]
    fn full_mni_template_when_present() {
        let Some(dir) = std::env::var_os("MIMO_NILEARN_DATA").map(PathBuf::from) else {
            eprintln!("MIMO_NILEARN_DATA not set: full MNI template check skipped");
            return;
        };
        let r: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(
                Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/nifti/full_reference.json"),
            )
            .unwrap(),
        )
        .unwrap();
        let file = |k: &str| dir.join(format!("mni_icbm152_{k}_tal_nlin_sym_09a_converted.nii.gz"));
        let t1 = crate::nifti_source::read_volume(&file("t1")).unwrap();
        let gm = crate::nifti_source::read_volume(&file("gm")).unwrap();
        assert_eq!(serde_json::json!(t1.dims), r["shape"]);
        let [nx, ny, nz] = t1.dims;
        let plane = nx * ny;
        let mut with_gm = 0;
        for z in 0..nz {
            let sum: f64 = t1.data[z * plane..(z + 1) * plane]
                .iter()
                .map(|&v| v as f64)
                .sum();
            let want = r["t1_sum"][z].as_f64().unwrap();
            assert!(
                (sum - want).abs() <= 1e-6 * want.abs().max(1.0),
                "T1 slice {z}: {sum} vs {want}"
            );
            let area = gm.data[z * plane..(z + 1) * plane]
                .iter()
                .filter(|&&v| v > 127.0)
                .count();
            assert_eq!(
                area as u64,
                r["gm_area"][z].as_u64().unwrap(),
                "GM slice {z}"
            );
            with_gm += usize::from(area > 0);
        }
        let root = tmp("nifti-full");
        for sub in ["vol", "lab"] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
        }
        std::fs::copy(file("t1"), root.join("vol/mni.nii.gz")).unwrap();
        std::fs::copy(file("gm"), root.join("lab/mni.nii.gz")).unwrap();
        let cfg = DatasetConfig {
            sources: vec![Source::Nifti {
                name: "mni".into(),
                images: root.join("vol"),
                masks: root.join("lab"),
                modality: "MR".into(),
                labels: BTreeMap::from([(1, "grey matter".to_string())]),
                threshold: Some(127.0),
                axis: crate::nifti_source::SliceAxis::Axial,
                intensity: crate::nifti_source::Intensity::Percentile(0.5, 99.5),
                empty_share: 0.0,
            }],
            ..phantoms(1)
        };
        let s = build(&cfg, &root.join("out"), &mut |_, _, _| {}).unwrap();
        assert_eq!(s.images, with_gm);
        eprintln!(
            "full MNI template: {nx}x{ny}x{nz}, {with_gm} slices with grey matter, equal to nibabel"
        );
    }

    #[test]
    fn nifti_source_slices_the_mni_template() {
        let root = tmp("nifti");
        let (img, msk) = (root.join("vol"), root.join("lab"));
        std::fs::create_dir_all(&img).unwrap();
        std::fs::create_dir_all(&msk).unwrap();
        let fx = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/nifti");
        std::fs::copy(fx.join("mni_t1.nii.gz"), img.join("mni.nii.gz")).unwrap();
        std::fs::copy(fx.join("mni_gm.nii.gz"), msk.join("mni.nii.gz")).unwrap();
        std::fs::copy(fx.join("mni_t1.nii.gz"), img.join("unlabelled.nii.gz")).unwrap();
        let cfg = DatasetConfig {
            sources: vec![Source::Nifti {
                name: "mni".into(),
                images: img,
                masks: msk,
                modality: "MR".into(),
                labels: BTreeMap::from([(1, "grey matter".to_string())]),
                threshold: Some(127.0),
                axis: crate::nifti_source::SliceAxis::Axial,
                intensity: crate::nifti_source::Intensity::Percentile(0.5, 99.5),
                empty_share: 0.0,
            }],
            ..phantoms(1)
        };
        let out = root.join("out");
        let s = build(&cfg, &out, &mut |_, _, _| {}).unwrap();
        assert_eq!(s.images, 6);
        assert_eq!(s.skipped.len(), 1);
        assert!(
            s.skipped[0].reason.contains("no label volume"),
            "{:?}",
            s.skipped
        );
        let records: Vec<Record> = read_jsonl(out.join("records.jsonl")).unwrap();
        let refs: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(fx.join("reference.json")).unwrap())
                .unwrap();
        let p1: Vec<&Record> = records
            .iter()
            .filter(|r| r.perspective == Perspective::P1)
            .collect();
        assert_eq!(p1.len(), 6);
        for (r, want) in p1.iter().zip(refs["slices"].as_array().unwrap()) {
            assert_eq!(r.size, Some([70, 60]));
            assert_eq!(
                r.masks[0].rle.area().unwrap(),
                want["gm_area"].as_u64().unwrap(),
                "{}",
                r.id
            );
            assert_eq!(r.volume, "mni/mni");
        }
        // A threshold no voxel passes: every slice is empty; with empty_share 1 they become
        // negative Perspective I samples (no masks, no <SEG>), and no other perspective.
        let mut neg = cfg.clone();
        if let Source::Nifti {
            threshold,
            empty_share,
            ..
        } = &mut neg.sources[0]
        {
            *threshold = Some(255.0);
            *empty_share = 1.0;
        }
        let out2 = root.join("out2");
        let s = build(&neg, &out2, &mut |_, _, _| {}).unwrap();
        assert_eq!(s.records.get("P1"), Some(&6));
        assert_eq!(s.records.get("P2"), None);
        let records: Vec<Record> = read_jsonl(out2.join("records.jsonl")).unwrap();
        assert!(
            records.iter().all(|r| r.masks.is_empty()
                && r.answer().unwrap().contains("does not include grey matter"))
        );
        std::fs::remove_dir_all(&root).ok();
    }

    /// A DICOM CT image with a PNG label mask, and a DICOM-SEG mask whose size does not fit
    /// its image is reported, not used.
    /// A CT series of shuffled single-frame files and a multi-frame MR file, with SEGs whose
    /// frames are stored out of order: masks land on the right slices, empty slices become
    /// negatives, patients are split units.
    #[test]
    fn dicom_series_source_places_seg_frames_on_their_slices() {
        let fx = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/dicom/series");
        let r: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(fx.join("reference.json")).unwrap())
                .unwrap();
        let out = tmp("series");
        let mut cfg = phantoms(1);
        cfg.sources = vec![Source::DicomSeries {
            name: "tcia".into(),
            images: fx.join("images"),
            masks: fx.join("seg"),
            rename: [("kidney".to_string(), "left kidney".to_string())].into(),
            intensity: None,
            empty_share: 1.0,
        }];
        cfg.perspectives = vec![Perspective::P1];
        let s = build(&cfg, &out, &mut |_, _, _| {}).unwrap();
        assert!(s.skipped.is_empty(), "{:?}", s.skipped);
        assert_eq!(s.images, 9);
        let recs = read_jsonl::<Record>(&out.join("records.jsonl")).unwrap();
        let a_uid = r["A"]["uid"].as_str().unwrap();
        for k in 0..5 {
            let rec = recs
                .iter()
                .find(|x| x.id == format!("tcia/{a_uid}_{k:04}/P1"))
                .unwrap();
            assert_eq!(rec.volume, "tcia/patient-1");
            assert_eq!(rec.modality, "CT");
            for (name, want) in [
                ("liver", &r["A"]["liver"]),
                ("liver tumor", &r["A"]["liver tumor"]),
            ] {
                let area = rec.masks.iter().find(|m| m.label == name).map_or(0, |m| {
                    m.rle.decode().unwrap().iter().filter(|&&b| b).count()
                });
                assert_eq!(area as u64, want[k].as_u64().unwrap(), "slice {k} {name}");
            }
            if k == 0 {
                assert!(
                    rec.answer().unwrap().contains("does not include"),
                    "{rec:?}"
                );
            } else {
                assert_eq!(
                    rec.masks[0].label, "liver",
                    "mask order follows segment numbers"
                );
            }
        }
        let b_uid = r["B"]["uid"].as_str().unwrap();
        let kidney: Vec<u64> = (0..4)
            .map(|k| {
                let rec = recs
                    .iter()
                    .find(|x| x.id == format!("tcia/{b_uid}_{k:04}/P1"))
                    .unwrap();
                assert_eq!(rec.modality, "MR");
                rec.masks
                    .iter()
                    .filter(|m| m.label == "left kidney")
                    .map(|m| m.rle.decode().unwrap().iter().filter(|&&b| b).count() as u64)
                    .sum()
            })
            .collect();
        assert_eq!(serde_json::json!(kidney), r["B"]["kidney"]);
        // A SEG that refers to no series is reported by name.
        let lone = tmp("series-lone");
        std::fs::copy(fx.join("seg/B_seg.dcm"), lone.join("B_seg.dcm")).unwrap();
        cfg.sources = vec![Source::DicomSeries {
            name: "tcia".into(),
            images: fx.join("images/A"),
            masks: lone.clone(),
            rename: BTreeMap::new(),
            intensity: None,
            empty_share: 0.0,
        }];
        // Series A has no mask here, so nothing is built: the error carries the report.
        let skipped = match build(&cfg, &tmp("series-out2"), &mut |_, _, _| {}) {
            Err(BuildError::Empty { skipped }) => skipped,
            other => panic!("expected an empty build, got {other:?}"),
        };
        assert_eq!(skipped.len(), 1, "{skipped:?}");
        assert!(skipped[0].path.ends_with("B_seg.dcm"));
        assert!(skipped[0].reason.contains("no series"));
    }

    #[test]
    fn dicom_source_reads_ct_and_reports_mismatched_seg() {
        let root = tmp("dicom");
        let (img, msk) = (root.join("img"), root.join("msk"));
        std::fs::create_dir_all(&img).unwrap();
        std::fs::create_dir_all(&msk).unwrap();
        let fx = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/dicom");
        std::fs::copy(fx.join("CT_small.dcm"), img.join("ct.dcm")).unwrap();
        std::fs::copy(fx.join("CT_small.dcm"), img.join("seg.dcm")).unwrap();
        std::fs::copy(fx.join("liver_1frame.dcm"), msk.join("seg.dcm")).unwrap();
        let mut m = image::GrayImage::new(128, 128);
        for y in 40..90 {
            for x in 30..100 {
                m.put_pixel(x, y, image::Luma([1]));
            }
        }
        m.save(msk.join("ct.png")).unwrap();
        let cfg = DatasetConfig {
            sources: vec![Source::Dicom {
                name: "ct".into(),
                images: img,
                masks: msk,
                labels: BTreeMap::from([(1, "liver".to_string())]),
                intensity: Some(crate::nifti_source::Intensity::CtAbdomen),
                volume_separator: None,
            }],
            ..phantoms(1)
        };
        let out = root.join("out");
        let s = build(&cfg, &out, &mut |_, _, _| {}).unwrap();
        assert_eq!(s.images, 1);
        assert_eq!(s.skipped.len(), 1);
        assert!(
            s.skipped[0].reason.contains("SEG") && s.skipped[0].reason.contains("512x512"),
            "{:?}",
            s.skipped
        );
        let records: Vec<Record> = read_jsonl(out.join("records.jsonl")).unwrap();
        assert_eq!(records[0].modality, "CT");
        assert_eq!(records[0].masks[0].rle.area().unwrap(), 50 * 70);
        std::fs::remove_dir_all(&root).ok();
    }

    #[test]
    fn bad_configs_name_the_field() {
        let mut c = phantoms(1);
        c.splits.train = 0.9;
        assert!(c.validate().unwrap_err().contains("splits"));
        let mut c = phantoms(1);
        c.perspectives.push(Perspective::Vqa);
        assert!(c.validate().unwrap_err().contains("perspectives"));
        let text = "(name: \"x\", seed: 1, sources: [], bogus: 3)";
        let dir = tmp("badcfg");
        std::fs::write(dir.join("d.ron"), text).unwrap();
        let e = DatasetConfig::load(&dir.join("d.ron"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("bogus") && e.contains("d.ron"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }
}

/// Chat-endpoint generation against a local OpenAI-compatible mock server.
#[cfg(test)]
mod strictness_tests {
    use super::DatasetConfig;

    fn parse(text: &str) -> Result<DatasetConfig, String> {
        mimo_core::config::parse_ron(text)
    }

    /// A build that produced nothing (a missing input folder) is an error that says why, and
    /// writes no records file.
    #[test]
    fn empty_build_is_an_error() {
        let out = std::env::temp_dir().join(format!("mimo-empty-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&out);
        let text = r#"(name: "d", seed: 1, sources: [Folder(name: "f", images: "/nonexistent/images",
            masks: "/nonexistent/masks", modality: "CT", labels: {1: "liver"}, volume_separator: None)],
            perspectives: [P1], splits: (train: 1.0, val: 0.0, test: 0.0), box_jitter: 0.1,
            point_share: 0.5, point_mode: Interior)"#;
        let cfg = parse(text).unwrap();
        let e = super::build(&cfg, &out, &mut |_, _, _| {})
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no record") && e.contains("/nonexistent/images"),
            "{e}"
        );
        assert!(!out.join("records.jsonl").exists());
        let _ = std::fs::remove_dir_all(&out);
    }

    /// A 16-bit label map is read as the labels it stores (an AAL-style atlas: 37, 41,
    /// 2001), not rescaled to zeros; a colour mask is skipped with a clear reason.
    #[test]
    fn sixteen_bit_label_maps_keep_their_values() {
        let root = std::env::temp_dir().join(format!("mimo-labels16-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let (img, msk) = (root.join("img"), root.join("msk"));
        std::fs::create_dir_all(&img).unwrap();
        std::fs::create_dir_all(&msk).unwrap();
        let (w, h) = (24u32, 16u32);
        for name in ["a", "b"] {
            image::GrayImage::from_fn(w, h, |x, y| image::Luma([(x * 9 + y * 5) as u8]))
                .save(img.join(format!("{name}.png")))
                .unwrap();
        }
        let labels16 = image::ImageBuffer::<image::Luma<u16>, Vec<u16>>::from_fn(w, h, |x, _| {
            image::Luma([match x {
                0..=7 => 37,
                8..=15 => 41,
                _ => 2001,
            }])
        });
        labels16.save(msk.join("a.png")).unwrap();
        image::RgbImage::from_pixel(w, h, image::Rgb([255, 0, 0]))
            .save(msk.join("b.png"))
            .unwrap();
        let text = format!(
            r#"(name: "d", seed: 1, sources: [Folder(name: "aal", images: "{}", masks: "{}",
            modality: "MR", labels: {{37: "left hippocampus", 41: "left amygdala", 2001: "precentral gyrus"}},
            volume_separator: None)], perspectives: [P1], splits: (train: 1.0, val: 0.0, test: 0.0),
            box_jitter: 0.1, point_share: 0.5, point_mode: Interior)"#,
            img.display(),
            msk.display()
        );
        let cfg = parse(&text).unwrap();
        let out = root.join("out");
        let summary = super::build(&cfg, &out, &mut |_, _, _| {}).unwrap();
        let records: Vec<crate::record::Record> =
            crate::record::read_jsonl(out.join("records.jsonl")).unwrap();
        let labels: std::collections::BTreeSet<&str> = records
            .iter()
            .flat_map(|r| r.masks.iter().map(|m| m.label.as_str()))
            .collect();
        assert_eq!(
            labels.into_iter().collect::<Vec<_>>(),
            vec!["left amygdala", "left hippocampus", "precentral gyrus"]
        );
        assert_eq!(summary.skipped.len(), 1, "{:?}", summary.skipped);
        assert!(
            summary.skipped[0].reason.contains("colour image"),
            "{:?}",
            summary.skipped
        );
        let _ = std::fs::remove_dir_all(&root);
    }

    /// Real folder layouts: masks named `<stem>_seg.png`, in their own folder or beside the
    /// images (where they are not taken for images).
    #[test]
    fn mask_suffix_finds_masks_beside_or_apart() {
        let root = std::env::temp_dir().join(format!("mimo-suffix-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let (apart, beside) = (root.join("apart"), root.join("beside"));
        for d in [apart.join("img"), apart.join("label"), beside.clone()] {
            std::fs::create_dir_all(d).unwrap();
        }
        let (w, h) = (20u32, 12u32);
        let img = image::GrayImage::from_fn(w, h, |x, y| image::Luma([(x * 11 + y) as u8]));
        let mask = image::GrayImage::from_fn(w, h, |x, _| image::Luma([u8::from(x < 9) * 255]));
        for k in 0..2 {
            img.save(apart.join(format!("img/case_{k:03}.png")))
                .unwrap();
            mask.save(apart.join(format!("label/case_{k:03}_seg.png")))
                .unwrap();
            img.save(beside.join(format!("case_{k:03}.png"))).unwrap();
            mask.save(beside.join(format!("case_{k:03}_seg.png")))
                .unwrap();
        }
        for (name, images, masks) in [
            ("apart", apart.join("img"), apart.join("label")),
            ("beside", beside.clone(), beside.clone()),
        ] {
            let text = format!(
                r#"(name: "d", seed: 1, sources: [Folder(name: "{name}", images: "{}", masks: "{}",
                modality: "CT", labels: {{255: "lesion"}}, mask_suffix: Some("_seg"))],
                perspectives: [P1], splits: (train: 1.0, val: 0.0, test: 0.0), box_jitter: 0.1,
                point_share: 0.5, point_mode: Interior)"#,
                images.display(),
                masks.display()
            );
            let cfg = parse(&text).unwrap();
            let out = root.join(format!("out-{name}"));
            let s = super::build(&cfg, &out, &mut |_, _, _| {}).unwrap();
            assert!(s.skipped.is_empty(), "{name}: {:?}", s.skipped);
            assert_eq!(s.images, 2, "{name}");
        }
        let _ = std::fs::remove_dir_all(&root);
    }

    /// A misspelt field inside a source or the splits is an error naming it: ignoring
    /// `volume_seperator` would put slices of one volume into different splits.
    #[test]
    fn misspelt_source_fields_are_errors() {
        let ok = r#"(name: "d", seed: 1, sources: [Folder(name: "f", images: "i", masks: "m",
            modality: "CT", labels: {1: "liver"}, volume_separator: Some("_z"))],
            perspectives: [P1], splits: (train: 1.0, val: 0.0, test: 0.0), box_jitter: 0.1,
            point_share: 0.5, point_mode: Interior)"#;
        assert!(parse(ok).is_ok(), "{:?}", parse(ok).err());
        let bad = ok.replace("volume_separator", "volume_seperator");
        let e = parse(&bad).unwrap_err();
        assert!(e.contains("volume_seperator"), "{e}");
        let bad = ok.replace("test: 0.0", "tset: 0.0");
        let e = parse(&bad).unwrap_err();
        assert!(e.contains("tset"), "{e}");
    }
}

#[cfg(test)]
mod endpoint_tests {
    use super::*;
    use crate::record::read_jsonl;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex};

    /// What the mock saw: (authorization header, request body).
    type Seen = Arc<Mutex<Vec<(String, serde_json::Value)>>>;

    /// Serves chat completions on 127.0.0.1: the first request gets HTTP 500, the second
    /// 429 with `Retry-After: 0`, then every request is answered; a reply whose seed is
    /// divisible by 3 forgets the markup (to be rejected). With `status` set, every request
    /// gets that status instead.
    fn mock(status: Option<u16>) -> (String, Seen) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/v1", listener.local_addr().unwrap());
        let seen: Seen = Arc::default();
        let log = seen.clone();
        std::thread::spawn(move || {
            for (n, stream) in listener.incoming().enumerate() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let (mut len, mut auth) = (0usize, String::new());
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    let lower = line.to_lowercase();
                    if let Some(v) = lower.strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap();
                    }
                    if lower.starts_with("authorization:") {
                        auth = line[14..].trim().to_string();
                    }
                }
                let mut body = vec![0; len];
                reader.read_exact(&mut body).unwrap();
                let req: serde_json::Value = serde_json::from_slice(&body).unwrap();
                log.lock().unwrap().push((auth, req.clone()));
                let (code, extra, text) = match (status, n) {
                    (Some(c), _) => (c, "", r#"{"error": {"message": "invalid key"}}"#.into()),
                    (None, 0) => (500, "", "overloaded".to_string()),
                    (None, 1) => (429, "Retry-After: 0\r\n", "slow down".to_string()),
                    _ => (200, "", reply(&req)),
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\n{extra}\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{text}",
                    text.len()
                );
            }
        });
        (url, seen)
    }

    /// A chat-completions response that answers the prompt like a careful model.
    fn reply(req: &serde_json::Value) -> String {
        let user = req["messages"][1]["content"].as_str().unwrap();
        let names = user
            .split("in this order: ")
            .nth(1)
            .unwrap()
            .split(".\n")
            .next()
            .unwrap();
        let labels: Vec<&str> = names
            .split(", ")
            .map(|n| n.rsplit_once(" (").unwrap().0)
            .collect();
        let question = if user.contains("A point is placed") {
            "What is the structure at the marked point?"
        } else if user.contains("A bounding box") {
            "What lies within the bounding box?"
        } else {
            "Which structures can be recognised here, and why?"
        };
        let marked: Vec<String> = labels.iter().map(|l| format!("<p>{l}</p>")).collect();
        let answer = if req["seed"].as_u64().unwrap().is_multiple_of(3) {
            format!("It shows {}.", labels.join(" and "))
        } else {
            format!("It shows {}.", marked.join(" and "))
        };
        let content = serde_json::json!({"question": question, "answer": answer}).to_string();
        serde_json::json!({"choices": [{"message": {"role": "assistant", "content": content}}]})
            .to_string()
    }

    fn config(url: &str, key_env: &str) -> DatasetConfig {
        DatasetConfig {
            name: "t".into(),
            seed: 3,
            sources: vec![Source::Phantom {
                name: "ct".into(),
                style: Style::Ct,
                count: 6,
                size: 32,
                volumes: 3,
            }],
            perspectives: vec![Perspective::P1, Perspective::P3, Perspective::P4],
            splits: Splits::default(),
            box_jitter: 0.1,
            point_share: 0.5,
            point_mode: PointMode::Interior,
            knowledge: None,
            qa_endpoint: Some(QaEndpoint {
                base_url: url.into(),
                model: "mock-4o".into(),
                api_key_env: key_env.into(),
                temperature: 0.7,
                max_tokens: 600,
                json_mode: false,
                timeout_s: 10.0,
                max_retries: 3,
                initial_backoff_s: 0.01,
                max_backoff_s: 0.05,
                attempts: 3,
                concurrency: 3,
                cache: None,
                allow_names_in_question: false,
            }),
            workers: None,
        }
    }

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mimo-qa-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn endpoint_qa_retries_validates_caches_and_resumes() {
        let key_env = format!("MIMO_TEST_QA_KEY_{}", std::process::id());
        // SAFETY: a variable name only this test uses.
        unsafe { std::env::set_var(&key_env, "test-key") };
        let (url, seen) = mock(None);
        let out = tmp("run");
        let cfg = config(&url, &key_env);
        let mut stages = Vec::new();
        let s = build(&cfg, &out, &mut |st, d, t| stages.push((st, d, t))).unwrap();
        let q = s.qa.clone().unwrap();
        // 6 images: 6 P3 and 6 P4 jobs.
        assert_eq!(q.jobs, 12);
        assert_eq!(q.accepted + q.failed, 12);
        assert!(q.accepted >= 10, "{q:?}");
        assert_eq!(q.retries, 2, "the 500 and the 429 are retried: {q:?}");
        let rejected: usize = q.rejected.values().sum();
        assert!(rejected > 0 && q.rejected.keys().all(|k| k == "answer_entity_count"));
        assert_eq!(q.requests, 12 + rejected + 2, "{q:?}");
        assert_eq!(s.records["P3"] + s.records["P4"], q.accepted);
        assert_eq!(s.skipped.len(), q.failed);
        assert!(stages.contains(&(Stage::Questions, 12, 12)));
        // Every request carried the key, the model and the Appendix E.2 prompt parts.
        for (auth, req) in seen.lock().unwrap().iter() {
            assert_eq!(auth, "Bearer test-key");
            assert_eq!(req["model"], "mock-4o");
            let u = req["messages"][1]["content"].as_str().unwrap();
            assert!(
                u.contains("Knowledge:\n") && u.contains("Example:\n"),
                "{u}"
            );
        }
        let records = read_jsonl::<Record>(&out.join("records.jsonl")).unwrap();
        let mut p4_points = 0;
        for r in records.iter().filter(|r| r.perspective != Perspective::P1) {
            let labels: Vec<String> = r.masks.iter().map(|m| m.label.clone()).collect();
            crate::qa::validate_answer(r.answer().unwrap(), &labels).unwrap();
            if r.perspective == Perspective::P4 {
                assert_eq!(r.prompts.len(), 1);
                p4_points += usize::from(r.prompts[0].kind == "point");
                let word = if r.prompts[0].kind == "point" {
                    "point"
                } else {
                    "box"
                };
                assert!(r.turns[0].value.contains(word), "{:?}", r.turns[0]);
            }
        }
        assert!(p4_points > 0 && p4_points < s.records["P4"]);
        let first = std::fs::read(out.join("records.jsonl")).unwrap();

        // Rerun with the endpoint gone: every reply comes from the cache, same records.
        let dead = TcpListener::bind("127.0.0.1:0").unwrap();
        let dead_url = format!("http://{}/v1", dead.local_addr().unwrap());
        drop(dead);
        let again = build(&config(&dead_url, &key_env), &out, &mut |_, _, _| {}).unwrap();
        let qa = again.qa.unwrap();
        assert_eq!((qa.requests, qa.cached), (0, 12 + rejected), "{qa:?}");
        assert_eq!(std::fs::read(out.join("records.jsonl")).unwrap(), first);
        let _ = std::fs::remove_dir_all(&out);
    }

    #[test]
    fn a_refused_key_stops_the_build_with_the_servers_reason() {
        let (url, _) = mock(Some(401));
        let out = tmp("refused");
        let e = build(&config(&url, "MIMO_TEST_QA_UNSET"), &out, &mut |_, _, _| {}).unwrap_err();
        let m = e.to_string();
        assert!(m.contains("HTTP 401") && m.contains("invalid key"), "{m}");
        assert!(!out.join("records.jsonl").exists());
        let _ = std::fs::remove_dir_all(&out);
    }

    #[test]
    fn endpoint_settings_are_checked_by_name() {
        let mut cfg = config("http://localhost:1/v1", "K");
        cfg.qa_endpoint.as_mut().unwrap().base_url = "localhost:8000".into();
        assert!(cfg.validate().unwrap_err().contains("qa_endpoint.base_url"));
        let mut cfg = config("http://localhost:1/v1", "K");
        cfg.qa_endpoint.as_mut().unwrap().attempts = 0;
        assert!(cfg.validate().unwrap_err().contains("qa_endpoint.attempts"));
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/data/endpoint.ron");
        let cfg = DatasetConfig::load(&shipped).unwrap();
        assert_eq!(cfg.qa_endpoint.unwrap().model, "gpt-4o");
        let ron = r#"(name: "x", seed: 1, sources: [],
            qa_endpoint: Some((model: "gpt-4o", concurency: 2)))"#;
        let e = ron::from_str::<DatasetConfig>(ron).unwrap_err().to_string();
        assert!(e.contains("concurency"), "{e}");
    }
}
