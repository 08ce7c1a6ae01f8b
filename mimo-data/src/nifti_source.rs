//! NIfTI-1 volumes (`.nii`, `.nii.gz`) as 2D slices: reoriented to RAS from the header's
//! sform (or qform) direction, sliced along an anatomical axis, shown in the radiological
//! convention (axial: anterior at the top, the patient's right on the image's left), and
//! mapped to 8 bits with a CT window or an MR percentile normalisation.

use std::path::Path;

use nifti::{IntoNdArray, NiftiObject, ReaderOptions};
use serde::{Deserialize, Serialize};

/// A volume in RAS order: `data[(z * ny + y) * nx + x]`.
#[derive(Debug, Clone)]
pub struct Volume {
    /// `[nx, ny, nz]`.
    pub dims: [usize; 3],
    /// Voxel values (scaled by the header's slope and intercept).
    pub data: Vec<f32>,
}

/// Slicing direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum SliceAxis {
    /// Along superior-inferior (z).
    #[default]
    Axial,
    /// Along anterior-posterior (y).
    Coronal,
    /// Along left-right (x).
    Sagittal,
}

/// How voxel values become grey levels.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Intensity {
    /// A CT window `(center, width)` in HU.
    Window(f32, f32),
    /// CT abdomen window (40, 400).
    CtAbdomen,
    /// CT lung window (-600, 1500).
    CtLung,
    /// CT bone window (400, 1800).
    CtBone,
    /// CT brain window (40, 80).
    CtBrain,
    /// Per-volume percentiles `(low, high)` in percent (MR), e.g. (0.5, 99.5).
    Percentile(f32, f32),
}

impl Default for Intensity {
    fn default() -> Self {
        Intensity::Percentile(0.5, 99.5)
    }
}

/// Reads a volume and reorients it to RAS (axis permutation and flips from the largest
/// component of each voxel axis's world direction).
pub fn read_volume(path: &Path) -> Result<Volume, String> {
    let obj = ReaderOptions::new()
        .read_file(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let h = obj.header().clone();
    let arr = obj
        .into_volume()
        .into_ndarray::<f32>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let shape = arr.shape().to_vec();
    if shape.len() < 3 || shape[3..].iter().any(|&d| d != 1) {
        return Err(format!(
            "{}: expected a 3-D volume, found dimensions {shape:?}",
            path.display()
        ));
    }
    let dims = [shape[0], shape[1], shape[2]];
    // Voxel-axis directions (columns of the affine's 3x3 part).
    let cols: [[f64; 3]; 3] = if h.sform_code > 0 {
        let r = [h.srow_x, h.srow_y, h.srow_z];
        [0, 1, 2].map(|i| [r[0][i] as f64, r[1][i] as f64, r[2][i] as f64])
    } else if h.qform_code > 0 {
        let (b, c, d) = (h.quatern_b as f64, h.quatern_c as f64, h.quatern_d as f64);
        let a = (1.0 - (b * b + c * c + d * d)).max(0.0).sqrt();
        let rm = [
            [
                a * a + b * b - c * c - d * d,
                2.0 * (b * c - a * d),
                2.0 * (b * d + a * c),
            ],
            [
                2.0 * (b * c + a * d),
                a * a + c * c - b * b - d * d,
                2.0 * (c * d - a * b),
            ],
            [
                2.0 * (b * d - a * c),
                2.0 * (c * d + a * b),
                a * a + d * d - c * c - b * b,
            ],
        ];
        let qfac = if h.pixdim[0] < 0.0 { -1.0 } else { 1.0 };
        [0, 1, 2].map(|i| {
            let s = if i == 2 { qfac } else { 1.0 };
            [rm[0][i] * s, rm[1][i] * s, rm[2][i] * s]
        })
    } else {
        [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    };
    // world axis and sign of each voxel axis
    let mut world = [0usize; 3];
    let mut flip = [false; 3];
    for i in 0..3 {
        let c = cols[i];
        let j = (0..3)
            .max_by(|&a, &b| c[a].abs().total_cmp(&c[b].abs()))
            .unwrap_or(i);
        world[i] = j;
        flip[i] = c[j] < 0.0;
    }
    let mut sorted = world;
    sorted.sort_unstable();
    if sorted != [0, 1, 2] {
        return Err(format!(
            "{}: oblique orientation the reader cannot map to RAS",
            path.display()
        ));
    }
    let mut out_dims = [0usize; 3];
    for i in 0..3 {
        out_dims[world[i]] = dims[i];
    }
    let [nx, ny, _] = out_dims;
    // Drop the trailing length-1 axes: static 3-D indexing is several times faster than
    // dynamic-dimension indexing per voxel.
    let mut arr = arr;
    while arr.ndim() > 3 {
        let last = ndarray::Axis(arr.ndim() - 1);
        arr = arr.index_axis_move(last, 0);
    }
    let arr = arr
        .into_dimensionality::<ndarray::Ix3>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut data = vec![0f32; dims.iter().product()];
    for k in 0..dims[2] {
        for j in 0..dims[1] {
            for i in 0..dims[0] {
                let idx = [i, j, k];
                let mut o = [0usize; 3];
                for a in 0..3 {
                    let v = if flip[a] {
                        dims[a] - 1 - idx[a]
                    } else {
                        idx[a]
                    };
                    o[world[a]] = v;
                }
                data[(o[2] * ny + o[1]) * nx + o[0]] = arr[idx];
            }
        }
    }
    Ok(Volume {
        dims: out_dims,
        data,
    })
}

impl Volume {
    /// Number of slices along `axis`.
    pub fn slices(&self, axis: SliceAxis) -> usize {
        match axis {
            SliceAxis::Axial => self.dims[2],
            SliceAxis::Coronal => self.dims[1],
            SliceAxis::Sagittal => self.dims[0],
        }
    }

    /// Slice `index` in display order: `(height, width, values)` row-major. Axial: rows from
    /// anterior to posterior, columns from the patient's right to left; coronal: rows from
    /// superior to inferior, columns right to left; sagittal: rows superior to inferior,
    /// columns anterior to posterior.
    pub fn slice(&self, axis: SliceAxis, index: usize) -> (usize, usize, Vec<f32>) {
        let [nx, ny, nz] = self.dims;
        let at = |x: usize, y: usize, z: usize| self.data[(z * ny + y) * nx + x];
        match axis {
            SliceAxis::Axial => (
                ny,
                nx,
                (0..ny)
                    .flat_map(|r| (0..nx).map(move |c| at(nx - 1 - c, ny - 1 - r, index)))
                    .collect(),
            ),
            SliceAxis::Coronal => (
                nz,
                nx,
                (0..nz)
                    .flat_map(|r| (0..nx).map(move |c| at(nx - 1 - c, index, nz - 1 - r)))
                    .collect(),
            ),
            SliceAxis::Sagittal => (
                nz,
                ny,
                (0..nz)
                    .flat_map(|r| (0..ny).map(move |c| at(index, ny - 1 - c, nz - 1 - r)))
                    .collect(),
            ),
        }
    }

    /// The grey-level range `(lo, hi)` for `intensity` over the whole volume.
    pub fn range(&self, intensity: Intensity) -> (f32, f32) {
        let window = |c: f32, w: f32| (c - w / 2.0, c + w / 2.0);
        match intensity {
            Intensity::Window(c, w) => window(c, w),
            Intensity::CtAbdomen => window(40.0, 400.0),
            Intensity::CtLung => window(-600.0, 1500.0),
            Intensity::CtBone => window(400.0, 1800.0),
            Intensity::CtBrain => window(40.0, 80.0),
            Intensity::Percentile(lo, hi) => {
                let mut v: Vec<f32> = self
                    .data
                    .iter()
                    .copied()
                    .filter(|x| x.is_finite())
                    .collect();
                v.sort_by(f32::total_cmp);
                let q = |p: f32| {
                    v.get(((p / 100.0) * (v.len().max(1) - 1) as f32).round() as usize)
                        .copied()
                        .unwrap_or(0.0)
                };
                (q(lo), q(hi))
            }
        }
    }
}

/// Maps values to 0..255 with `(lo, hi)`, clamping outside.
pub fn to_grey(values: &[f32], (lo, hi): (f32, f32)) -> Vec<u8> {
    let span = (hi - lo).max(f32::EPSILON);
    values
        .iter()
        .map(|&v| (((v - lo) / span).clamp(0.0, 1.0) * 255.0).round() as u8)
        .collect()
}

#[cfg(test)]
mod tests;
