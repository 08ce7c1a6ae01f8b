//! Which parameters train: module paths, stable parameter ids, freezing by path prefix.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
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

/// Sets `require_grad` on parameters whose path starts with one of `prefixes`.
struct GradByPrefix<'a> {
    path: Vec<String>,
    prefixes: &'a [String],
    require: bool,
    hits: usize,
}

impl<B: Backend> ModuleMapper<B> for GradByPrefix<'_> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let p = self.path.join(".");
        if self.prefixes.iter().any(|x| p.starts_with(x.as_str())) {
            self.hits += 1;
            param.set_require_grad(self.require)
        } else {
            param
        }
    }
}

/// Paths of the parameters that require a gradient (or of all, with `all`).
struct TrainedPaths {
    path: Vec<String>,
    found: Vec<String>,
    all: bool,
}

impl<B: Backend> ModuleVisitor<B> for TrainedPaths {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if self.all || param.val().is_require_grad() {
            self.found.push(self.path.join("."));
        }
    }
}

/// Module paths of the parameters of `m` that train.
pub fn trained_paths<B: Backend, M: Module<B>>(m: &M) -> Vec<String> {
    let mut v = TrainedPaths {
        path: Vec::new(),
        found: Vec::new(),
        all: false,
    };
    m.visit(&mut v);
    v.found
}

/// Module paths of every parameter of `m`.
pub fn all_paths<B: Backend, M: Module<B>>(m: &M) -> Vec<String> {
    let mut v = TrainedPaths {
        path: Vec::new(),
        found: Vec::new(),
        all: true,
    };
    m.visit(&mut v);
    v.found
}

pub(crate) fn set_grad<B: Backend, M: Module<B>>(
    m: M,
    prefixes: &[String],
    require: bool,
    field: &str,
) -> Result<M, TrainError> {
    let mut mapper = GradByPrefix {
        path: Vec::new(),
        prefixes,
        require,
        hits: 0,
    };
    let m = m.map(&mut mapper);
    if !prefixes.is_empty() && mapper.hits == 0 {
        return Err(TrainError::Other(format!(
            "experiment field `{field}`: no parameter path starts with {prefixes:?} \
             (paths look like `llm.model.layers.0.self_attn.q_proj.weight`)"
        )));
    }
    Ok(m)
}
