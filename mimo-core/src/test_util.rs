//! Helpers for the parity tests: reading reference fixtures and comparing tensors.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use safetensors::{Dtype, SafeTensors};

/// The CPU backend the tests run on.
pub type TestBackend = burn::backend::Flex;

/// `mimo-core/fixtures/<rel>`.
pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(rel)
}

/// A tensor read from a fixture: shape and values (f32, i64 or u8 widened).
#[derive(Debug, Clone)]
pub struct Array {
    pub shape: Vec<usize>,
    pub f32: Vec<f32>,
    pub i64: Vec<i64>,
    pub u8: Vec<u8>,
}

/// All tensors of a safetensors fixture.
pub fn read_fixture(rel: &str) -> HashMap<String, Array> {
    let path = fixture(rel);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = SafeTensors::deserialize(&bytes).expect("valid safetensors fixture");
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            let data = view.data();
            let mut a = Array {
                shape: view.shape().to_vec(),
                f32: vec![],
                i64: vec![],
                u8: vec![],
            };
            match view.dtype() {
                Dtype::F32 => {
                    a.f32 = data
                        .chunks_exact(4)
                        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                        .collect()
                }
                Dtype::I64 => {
                    a.i64 = data
                        .chunks_exact(8)
                        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                        .collect()
                }
                Dtype::U8 => a.u8 = data.to_vec(),
                other => panic!("{name}: unsupported fixture dtype {other:?}"),
            }
            (name, a)
        })
        .collect()
}

/// Max absolute difference between a tensor and reference values; asserts equal shapes.
pub fn max_abs_diff<B: Backend, const D: usize>(got: Tensor<B, D>, want: &Array) -> f32 {
    assert_eq!(got.dims().to_vec(), want.shape, "shape mismatch");
    let got = got.into_data().convert::<f32>().to_vec::<f32>().unwrap();
    got.iter()
        .zip(&want.f32)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max)
}

/// Asserts `max |got - want| <= tol`, printing the figure.
pub fn assert_close<B: Backend, const D: usize>(
    what: &str,
    got: Tensor<B, D>,
    want: &Array,
    tol: f32,
) {
    let err = max_abs_diff(got, want);
    println!("{what}: max abs err {err:.3e} (tol {tol:.0e})");
    assert!(err <= tol, "{what}: max abs err {err:e} > {tol:e}");
}

/// A key list written by a reference script: `key [d0,d1,..]` per line, `#` comments.
pub fn read_key_list(rel: &str) -> BTreeMap<String, Vec<usize>> {
    let text = std::fs::read_to_string(fixture(rel)).unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, s) = l.split_once(' ').unwrap();
            let dims = s
                .trim_matches(|c| c == '[' || c == ']')
                .split(',')
                .filter(|d| !d.is_empty())
                .map(|d| d.trim().parse().unwrap())
                .collect();
            (k.to_string(), dims)
        })
        .collect()
}

/// Asserts that a module's checkpoint keys and shapes equal a reference key list exactly.
pub fn assert_key_list(rel: &str, got: Vec<crate::loader::FileParam>) {
    let want = read_key_list(rel);
    let got: BTreeMap<String, Vec<usize>> = got.into_iter().map(|p| (p.key, p.shape)).collect();
    let missing: Vec<_> = want.keys().filter(|k| !got.contains_key(*k)).collect();
    let extra: Vec<_> = got.keys().filter(|k| !want.contains_key(*k)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{rel}: missing {missing:?}, extra {extra:?}"
    );
    for (k, s) in &want {
        assert_eq!(&got[k], s, "{rel}: shape of {k}");
    }
    println!("{rel}: {} keys match", want.len());
}
