//! `Source::DicomSeries`: DICOM series in any folder tree, with DICOM-SEG files placed on
//! the slices they refer to.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mimo_core::rng::hash64;

use super::{Reader, SourceSample};
use crate::build::Skipped;
use crate::dicom_source::{Series, list_files, read_seg, read_seg_refs, read_series, scan_series};
use crate::nifti_source::{Intensity, Volume, to_grey};

/// A DICOM series source's series and its SEG files by series UID.
type SeriesSource = (Vec<Series>, BTreeMap<String, Vec<PathBuf>>);

/// Groups the DICOM images under `images` into series and indexes the DICOM-SEG files under
/// `masks` by the series they segment (ReferencedSeriesSequence, else the series holding a
/// frame's source image). Unusable files are added to `skipped`.
pub(super) fn scan(images: &Path, masks: &Path, skipped: &mut Vec<Skipped>) -> SeriesSource {
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

/// A DICOM series source's settings and its scanned series.
pub(super) struct DicomSeries<'a> {
    /// Folder tree of DICOM images (reported for a series without slices).
    pub(super) images: &'a Path,
    /// The series, one input each.
    pub(super) series: Vec<Series>,
    /// The SEG files of each series, by series UID.
    pub(super) segs: BTreeMap<String, Vec<PathBuf>>,
    /// Lower-cased segment label -> structure name (labels not listed are kept).
    pub(super) rename: &'a BTreeMap<String, String>,
    /// Grey-level mapping; `None`: the first slice's window, else MR-style percentiles.
    pub(super) intensity: Option<Intensity>,
    /// Share of slices without masks kept as negative samples.
    pub(super) empty_share: f64,
    /// The build's seed.
    pub(super) seed: u64,
}

impl DicomSeries<'_> {
    /// The slices of one DICOM series with the masks of its SEG files.
    fn read_samples(&self, series: &Series, segs: &[PathBuf]) -> Result<Vec<SourceSample>, String> {
        let DicomSeries {
            rename,
            intensity,
            empty_share,
            seed,
            ..
        } = *self;
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
            Intensity::Percentile(..) => {
                imgs.iter().flat_map(|i| i.values.iter().copied()).collect()
            }
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
                let u =
                    (hash64(&format!("empty/{seed}/{stem}")) >> 11) as f64 / (1u64 << 53) as f64;
                if u >= empty_share || order.is_empty() {
                    continue;
                }
                order.clone()
            } else {
                Vec::new()
            };
            let grey = to_grey(&img.values, range);
            out.push(SourceSample {
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
}

impl Reader for DicomSeries<'_> {
    fn inputs(&self) -> usize {
        self.series.len()
    }

    fn path(&self, index: usize) -> Option<&Path> {
        let first = self.series.get(index)?.slices.first();
        Some(first.map_or(self.images, |sl| sl.path.as_path()))
    }

    fn read(&self, index: usize) -> Result<Vec<SourceSample>, String> {
        let s = &self.series[index];
        self.read_samples(s, self.segs.get(&s.uid).map(Vec::as_slice).unwrap_or(&[]))
    }
}
