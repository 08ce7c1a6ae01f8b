//! Which parameters train: module paths, stable parameter ids, freezing by path prefix.

use burn::module::{Module, ModuleMapper, Param, ParamId};
use burn::prelude::*;

use crate::error::TrainError;

/// FNV-1a of a string (stable across platforms and runs).
pub(crate) fn fnv(s: &str) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// Gives every parameter an id derived from its module path, so optimiser state saved by
/// one process (keyed by id) finds its parameters in another.
pub(crate) struct PathIds {
    pub(crate) path: Vec<String>,
}

impl<B: Backend> ModuleMapper<B> for PathIds {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn map_float<const D: usize>(&mut self, mut param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        param.id = ParamId::from(fnv(&self.path.join(".")));
        param
    }
}

pub use mimo_core::params::{all_paths, trained_paths};

pub(crate) fn set_grad<B: Backend, M: Module<B>>(
    m: M,
    prefixes: &[String],
    require: bool,
    field: &str,
) -> Result<M, TrainError> {
    let (m, hits) = mimo_core::params::set_trainable(m, prefixes, require);
    if !prefixes.is_empty() && hits == 0 {
        return Err(TrainError::Other(format!(
            "experiment field `{field}`: no parameter path starts with {prefixes:?} \
             (paths look like `llm.model.layers.0.self_attn.q_proj.weight`)"
        )));
    }
    Ok(m)
}
