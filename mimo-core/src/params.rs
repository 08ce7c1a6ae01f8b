//! Parameters by module path: which train, and freezing or unfreezing by path prefix
//! (`llm.model.embed_tokens.`, `sam.mask_decoder.`, ...). Lazy parameters stay lazy.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::prelude::*;

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

/// Sets whether the parameters of `m` whose module path starts with one of `prefixes`
/// train; returns the model and how many parameters matched.
pub fn set_trainable<B: Backend, M: Module<B>>(
    m: M,
    prefixes: &[String],
    trainable: bool,
) -> (M, usize) {
    let mut mapper = GradByPrefix {
        path: Vec::new(),
        prefixes,
        require: trainable,
        hits: 0,
    };
    let m = m.map(&mut mapper);
    (m, mapper.hits)
}

/// Draws every lazily initialised parameter of `m` now, in module order.
///
/// burn initialises a lazy parameter on its first use, and a clone of a parameter that is
/// still lazy draws its own values (burn-core 0.21.0, `module/param/base.rs`, `impl Clone
/// for Param`). A randomly initialised component used through clones — a training step's
/// model replica, say — would be drawn again at every use. After this call its values are
/// fixed by the random state at this point (seed the backend first for reproducible ones).
pub fn materialize<B: Backend, M: Module<B>>(m: &M) {
    struct Touch;
    impl<B: Backend> burn::module::ModuleVisitor<B> for Touch {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let _ = param.val();
        }
    }
    m.visit(&mut Touch);
}

/// The dtype of every float parameter of `m`, in visiting order.
pub fn dtypes<B: Backend, M: Module<B>>(m: &M) -> Vec<burn::tensor::DType> {
    struct Dtypes(Vec<burn::tensor::DType>);
    impl<B: Backend> ModuleVisitor<B> for Dtypes {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            self.0.push(param.dtype());
        }
    }
    let mut d = Dtypes(Vec::new());
    m.visit(&mut d);
    d.0
}

/// `m` with every float parameter cast to the dtype at its place in `dtypes` (as
/// [`dtypes`] gave them for a module of the same structure), keeping whether it trains.
pub fn cast_to_dtypes<B: Backend, M: Module<B>>(m: M, dtypes: &[burn::tensor::DType]) -> M {
    struct Cast<'a>(&'a [burn::tensor::DType], usize);
    impl<B: Backend> ModuleMapper<B> for Cast<'_> {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
            let i = self.1;
            self.1 += 1;
            match self.0.get(i) {
                Some(&dtype) => crate::nn::cast_param(param, dtype),
                None => param,
            }
        }
    }
    m.map(&mut Cast(dtypes, 0))
}
