//! Writing a build's output, atomically: the images (PNG), `records.jsonl` and `build.json`.

use std::path::Path;

use mimo_core::fsutil::write_atomic;

use super::sources::SourceSample;
use super::{BuildError, BuildSummary, Source};
use crate::record::Record;

/// Writing `path` failed.
pub(super) fn write_error(path: &Path, message: String) -> BuildError {
    BuildError::Write {
        path: path.to_path_buf(),
        message,
    }
}

/// Removes the temporary files of an interrupted earlier run (write_atomic's
/// `.NAME.tmp-PID`) from `out` and the sources' image folders.
pub(super) fn remove_temporaries(out: &Path, sources: &[Source]) {
    for dir in std::iter::once(out.to_path_buf())
        .chain(sources.iter().map(|s| out.join("images").join(s.name())))
    {
        if let Ok(rd) = std::fs::read_dir(&dir) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') && name.contains(".tmp-") {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
}

/// Writes a sample's image to `out/rel` (PNG) unless an earlier run did; returns whether
/// the image was already there (and is reused).
pub(super) fn write_image(
    out: &Path,
    rel: &str,
    sample: &SourceSample,
) -> Result<bool, BuildError> {
    let image_path = out.join(rel);
    if image_path.is_file() {
        return Ok(true);
    }
    let png =
        png_bytes(&sample.rgb, sample.h, sample.w).map_err(|e| write_error(&image_path, e))?;
    write_atomic(&image_path, &png).map_err(|e| write_error(&image_path, e.to_string()))?;
    Ok(false)
}

/// Writes `out/records.jsonl`, one record a line.
pub(super) fn write_records(out: &Path, records: &[Record]) -> Result<(), BuildError> {
    let mut text = String::new();
    for r in records {
        text.push_str(&serde_json::to_string(r).map_err(|e| write_error(out, e.to_string()))?);
        text.push('\n');
    }
    let rp = out.join("records.jsonl");
    write_atomic(&rp, text.as_bytes()).map_err(|e| write_error(&rp, e.to_string()))
}

/// Writes `out/build.json`, the summary.
pub(super) fn write_summary(out: &Path, summary: &BuildSummary) -> Result<(), BuildError> {
    let sp = out.join("build.json");
    let json =
        serde_json::to_string_pretty(summary).map_err(|e| write_error(&sp, e.to_string()))?;
    write_atomic(&sp, json.as_bytes()).map_err(|e| write_error(&sp, e.to_string()))
}

/// PNG bytes of an RGB buffer; a buffer that does not fit its size is an error, not a panic.
fn png_bytes(rgb: &[u8], h: usize, w: usize) -> Result<Vec<u8>, String> {
    let img = image::RgbImage::from_raw(w as u32, h as u32, rgb.to_vec()).ok_or_else(|| {
        format!(
            "{} bytes of pixels do not make a {w}x{h} RGB image",
            rgb.len()
        )
    })?;
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .map_err(|e| format!("PNG encoding: {e}"))?;
    Ok(out)
}
