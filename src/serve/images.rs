//! Uploaded images: format detection and decoding (PNG, JPEG, BMP, TIFF, DICOM, NIfTI), and a
//! small in-memory store the API refers to by id.
//!
//! The client's file name is never used as a path: DICOM and NIfTI readers take a file, so
//! their bytes go to a temporary file whose name the server makes up, deleted at once.

use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::io::Cursor;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use mimo_core::Image;
use mimo_data::dicom_source::read_dicom;
use mimo_data::nifti_source::{Intensity, SliceAxis, Volume, read_volume, to_grey};

use super::api::ApiError;

/// Limits on what an upload may hold.
#[derive(Debug, Clone, Copy)]
pub struct ImageLimits {
    /// Longest side in pixels of an image or a slice.
    pub max_side: usize,
    /// Most slices of a volume.
    pub max_slices: usize,
}

enum Pixels {
    Flat(Image),
    Volume { volume: Volume, range: (f32, f32) },
}

/// A decoded upload.
pub struct Upload {
    /// Its id (a hash of the bytes).
    pub id: String,
    /// `png`, `jpeg`, ..., `dicom` or `nifti`.
    pub kind: String,
    /// Width of an image or a slice.
    pub width: usize,
    /// Height of an image or a slice.
    pub height: usize,
    /// 1 for an image, the number of axial slices for a volume.
    pub slices: usize,
    pixels: Pixels,
}

impl Upload {
    /// Slice `k` (0 for a 2-D image) in RGB.
    pub fn slice(&self, k: usize) -> Result<Image, ApiError> {
        if k >= self.slices {
            return Err(ApiError::bad_request(format!(
                "slice {k} does not exist: the image has {} slice(s), 0..={}",
                self.slices,
                self.slices - 1
            )));
        }
        match &self.pixels {
            Pixels::Flat(img) => Ok(img.clone()),
            Pixels::Volume { volume, range } => {
                let (h, w, values) = volume.slice(SliceAxis::Axial, k);
                let rgb = to_grey(&values, *range)
                    .into_iter()
                    .flat_map(|g| [g, g, g])
                    .collect();
                Image::new(w, h, rgb).map_err(|e| ApiError::bad_request(e.to_string()))
            }
        }
    }
}

fn unsupported() -> ApiError {
    ApiError::unsupported(
        "not an image this server reads: expected PNG, JPEG, BMP, TIFF, DICOM (.dcm) or NIfTI \
         (.nii, .nii.gz)",
    )
}

/// Removes its file when dropped.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn temp_file(bytes: &[u8], ext: &str) -> Result<TempFile, ApiError> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = format!(
        "mimo-serve-{}-{}.{ext}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let path = std::env::temp_dir().join(name);
    std::fs::write(&path, bytes)
        .map_err(|e| ApiError::internal(format!("cannot write a temporary file: {e}")))?;
    Ok(TempFile(path))
}

fn check_side(w: usize, h: usize, limits: &ImageLimits) -> Result<(), ApiError> {
    if w == 0 || h == 0 {
        return Err(ApiError::bad_request(format!(
            "the image is empty ({w}x{h})"
        )));
    }
    if w.max(h) > limits.max_side {
        return Err(ApiError::too_large(format!(
            "the image is {w}x{h}: the longest side may be at most {} px (--max-image-side)",
            limits.max_side
        )));
    }
    Ok(())
}

fn is_nifti1(bytes: &[u8]) -> bool {
    bytes.len() >= 348
        && (bytes[..4] == 348i32.to_le_bytes() || bytes[..4] == 348i32.to_be_bytes())
        && (&bytes[344..347] == b"n+1" || &bytes[344..347] == b"ni1")
}

/// Decodes an upload; every failure is a 4xx with a message naming what is wrong.
pub fn decode(bytes: &[u8], limits: &ImageLimits) -> Result<Upload, ApiError> {
    if bytes.is_empty() {
        return Err(ApiError::bad_request("the upload is empty"));
    }
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut hasher);
    let id = format!("{:016x}", hasher.finish());
    if bytes.len() > 132 && &bytes[128..132] == b"DICM" {
        let file = temp_file(bytes, "dcm")?;
        let d = read_dicom(&file.0).map_err(|e| {
            ApiError::bad_request(format!(
                "cannot read the DICOM file: {}",
                e.trim_start_matches(&format!("{}: ", file.0.display()))
            ))
        })?;
        check_side(d.width, d.height, limits)?;
        let volume = Volume {
            dims: [d.width, d.height, 1],
            data: d.values,
        };
        let range = match d.window {
            Some((c, w)) => volume.range(Intensity::Window(c, w)),
            None => volume.range(Intensity::default()),
        };
        let grey = to_grey(&volume.data, range);
        let img = Image::new(
            d.width,
            d.height,
            grey.iter().flat_map(|&g| [g, g, g]).collect(),
        )
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
        return Ok(Upload {
            id,
            kind: "dicom".into(),
            width: d.width,
            height: d.height,
            slices: 1,
            pixels: Pixels::Flat(img),
        });
    }
    let gz = bytes.starts_with(&[0x1f, 0x8b]);
    if gz || is_nifti1(bytes) {
        let file = temp_file(bytes, if gz { "nii.gz" } else { "nii" })?;
        let volume = read_volume(&file.0).map_err(|e| {
            let e = e.trim_start_matches(&format!("{}: ", file.0.display()));
            if gz {
                ApiError::unsupported(format!(
                    "gzip data that is not a readable NIfTI volume: {e}"
                ))
            } else {
                ApiError::bad_request(format!("cannot read the NIfTI volume: {e}"))
            }
        })?;
        let [nx, ny, nz] = volume.dims;
        check_side(nx, ny, limits)?;
        if nz > limits.max_slices {
            return Err(ApiError::too_large(format!(
                "the volume has {nz} slices: at most {} are accepted",
                limits.max_slices
            )));
        }
        let range = volume.range(Intensity::default());
        return Ok(Upload {
            id,
            kind: "nifti".into(),
            width: nx,
            height: ny,
            slices: nz,
            pixels: Pixels::Volume { volume, range },
        });
    }
    let mut reader = image::ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|_| unsupported())?;
    let format = reader.format().ok_or_else(unsupported)?;
    let mut image_limits = image::Limits::default();
    image_limits.max_image_width = Some(limits.max_side as u32);
    image_limits.max_image_height = Some(limits.max_side as u32);
    reader.limits(image_limits);
    let img = reader.decode().map_err(|e| match e {
        image::ImageError::Limits(_) => ApiError::too_large(format!(
            "the image is larger than {0}x{0} px (--max-image-side)",
            limits.max_side
        )),
        image::ImageError::Unsupported(_) => unsupported(),
        e => ApiError::bad_request(format!(
            "cannot decode the {} image: {e}",
            format.extensions_str().first().unwrap_or(&"")
        )),
    })?;
    let rgb = img.to_rgb8();
    let (w, h) = (rgb.width() as usize, rgb.height() as usize);
    check_side(w, h, limits)?;
    let img = Image::new(w, h, rgb.into_raw()).map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(Upload {
        id,
        kind: format
            .extensions_str()
            .first()
            .copied()
            .unwrap_or("image")
            .to_string(),
        width: w,
        height: h,
        slices: 1,
        pixels: Pixels::Flat(img),
    })
}

/// Uploads by id, and the ids oldest first.
type Uploads = (HashMap<String, Arc<Upload>>, VecDeque<String>);

/// The last `capacity` uploads, by id.
pub struct Store {
    capacity: usize,
    inner: Mutex<Uploads>,
}

impl Store {
    /// An empty store that keeps `capacity` uploads (the oldest is dropped first).
    pub fn new(capacity: usize) -> Self {
        Store {
            capacity: capacity.max(1),
            inner: Mutex::new((HashMap::new(), VecDeque::new())),
        }
    }

    /// Adds an upload (or returns the one with the same id).
    pub fn insert(&self, upload: Upload) -> Arc<Upload> {
        let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (map, order) = &mut *guard;
        if let Some(u) = map.get(&upload.id) {
            return u.clone();
        }
        let id = upload.id.clone();
        let u = Arc::new(upload);
        map.insert(id.clone(), u.clone());
        order.push_back(id);
        while order.len() > self.capacity {
            if let Some(old) = order.pop_front() {
                map.remove(&old);
            }
        }
        u
    }

    /// The upload with this id.
    pub fn get(&self, id: &str) -> Result<Arc<Upload>, ApiError> {
        let guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        guard.0.get(id).cloned().ok_or_else(|| {
            ApiError::not_found(format!(
                "no image `{id}` on this server (it may have been dropped: the server keeps the \
                 last {} uploads); upload it again",
                self.capacity
            ))
        })
    }
}
