//! COCO run-length encoding of binary masks, compatible with pycocotools
//! (`mask.encode` / `mask.decode` and the compressed `counts` string).
//!
//! Masks are read in column-major (Fortran) order, runs alternate starting with zeros, and
//! the compressed string stores each count (minus the count two places back, from the
//! third on) as 5-bit groups with a continuation bit, offset by 48 into printable ASCII.

use serde::{Deserialize, Serialize};

/// A COCO RLE with the compressed counts string, as in COCO JSON files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rle {
    /// `[height, width]`.
    pub size: [usize; 2],
    /// Compressed counts.
    pub counts: String,
}

/// Why an RLE could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RleError {
    /// A character outside the encoding's alphabet or a truncated number.
    #[error("invalid RLE counts string at byte {0}")]
    BadString(usize),
    /// The runs do not add up to `height * width`.
    #[error("RLE runs cover {got} pixels, expected {expected}")]
    Length {
        /// Pixels covered.
        got: u64,
        /// `height * width`.
        expected: u64,
    },
}

/// Run lengths of a row-major `height x width` mask in column-major order, starting with
/// a (possibly empty) run of zeros.
pub fn encode_counts(mask: &[bool], height: usize, width: usize) -> Vec<u32> {
    assert_eq!(mask.len(), height * width, "mask size");
    let mut counts = Vec::new();
    let mut current = false;
    let mut run = 0u32;
    for x in 0..width {
        for y in 0..height {
            let v = mask[y * width + x];
            if v != current {
                counts.push(run);
                run = 0;
                current = v;
            }
            run += 1;
        }
    }
    counts.push(run);
    counts
}

/// The compressed string of run lengths (pycocotools `rleToString`).
pub fn counts_to_string(counts: &[u32]) -> String {
    let mut s = Vec::new();
    for i in 0..counts.len() {
        let mut x = counts[i] as i64;
        if i > 2 {
            x -= counts[i - 2] as i64;
        }
        loop {
            let mut c = (x & 0x1f) as u8;
            x >>= 5;
            let more = if c & 0x10 != 0 { x != -1 } else { x != 0 };
            if more {
                c |= 0x20;
            }
            s.push(c + 48);
            if !more {
                break;
            }
        }
    }
    // Only ASCII 48..=111 is produced.
    String::from_utf8(s).unwrap_or_default()
}

/// Inverse of [`counts_to_string`] (pycocotools `rleFrString`).
pub fn string_to_counts(s: &str) -> Result<Vec<u32>, RleError> {
    let bytes = s.as_bytes();
    let mut counts: Vec<u32> = Vec::new();
    let mut p = 0;
    while p < bytes.len() {
        let mut x: i64 = 0;
        let mut k = 0;
        loop {
            let b = *bytes.get(p).ok_or(RleError::BadString(p))?;
            if !(48..48 + 64).contains(&b) || k > 12 {
                return Err(RleError::BadString(p));
            }
            let c = (b - 48) as i64;
            x |= (c & 0x1f) << (5 * k);
            let more = c & 0x20 != 0;
            p += 1;
            k += 1;
            if !more {
                if c & 0x10 != 0 {
                    x |= -1i64 << (5 * k);
                }
                break;
            }
        }
        let i = counts.len();
        if i > 2 {
            x += counts[i - 2] as i64;
        }
        counts.push(u32::try_from(x).map_err(|_| RleError::BadString(p))?);
    }
    Ok(counts)
}

impl Rle {
    /// Encodes a row-major `height x width` mask.
    pub fn encode(mask: &[bool], height: usize, width: usize) -> Self {
        Self {
            size: [height, width],
            counts: counts_to_string(&encode_counts(mask, height, width)),
        }
    }

    /// Decodes to a row-major mask.
    pub fn decode(&self) -> Result<Vec<bool>, RleError> {
        let [h, w] = self.size;
        let counts = string_to_counts(&self.counts)?;
        let total: u64 = counts.iter().map(|&c| c as u64).sum();
        if total != (h * w) as u64 {
            return Err(RleError::Length {
                got: total,
                expected: (h * w) as u64,
            });
        }
        let mut mask = vec![false; h * w];
        let mut i = 0usize;
        let mut v = false;
        for c in counts {
            for _ in 0..c {
                let (x, y) = (i / h, i % h);
                mask[y * w + x] = v;
                i += 1;
            }
            v = !v;
        }
        Ok(mask)
    }

    /// Number of foreground pixels.
    pub fn area(&self) -> Result<u64, RleError> {
        let counts = string_to_counts(&self.counts)?;
        Ok(counts.iter().skip(1).step_by(2).map(|&c| c as u64).sum())
    }
}

#[cfg(test)]
mod tests;
