//! Decoder-layer recomputation gives the gradients of the plain backward.

use burn::backend::Autodiff;
use burn::module::{Module, ModuleVisitor, Param};
use burn::nn::DropoutConfig;
use burn::optim::GradientsParams;
use burn::tensor::{DType, Tensor};

use super::super::Mimo;
use super::super::tests::{fixture_input, tiny_model};
use crate::test_util::{TestBackend, read_fixture};

type AD = Autodiff<TestBackend>;

/// Compares two gradient sets parameter by parameter: both must hold the same parameters;
/// returns the largest difference relative to the gradient's largest magnitude, and how
/// many parameters were compared.
struct Compare<'a> {
    a: &'a GradientsParams,
    b: &'a GradientsParams,
    path: Vec<String>,
    worst: (f32, String),
    compared: usize,
}

impl ModuleVisitor<AD> for Compare<'_> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.into());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<AD, D>>) {
        let path = self.path.join(".");
        let a = self.a.get::<TestBackend, D>(param.id);
        let b = self.b.get::<TestBackend, D>(param.id);
        match (a, b) {
            (None, None) => {}
            (Some(a), Some(b)) => {
                let v = |t: Tensor<TestBackend, D>| -> Vec<f32> {
                    t.cast(DType::F32).into_data().to_vec().unwrap()
                };
                let (a, b) = (v(a), v(b));
                let scale = b.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-6);
                let err = a
                    .iter()
                    .zip(&b)
                    .fold(0f32, |m, (x, y)| m.max((x - y).abs()))
                    / scale;
                if err >= self.worst.0 {
                    self.worst = (err, path);
                }
                self.compared += 1;
            }
            (a, b) => panic!(
                "{path}: gradient in one run only (recomputed {}, reference {})",
                a.is_some(),
                b.is_some()
            ),
        }
    }
}

fn compare(model: &Mimo<AD>, a: &GradientsParams, b: &GradientsParams) -> (f32, String, usize) {
    let mut c = Compare {
        a,
        b,
        path: vec![],
        worst: (0.0, String::new()),
        compared: 0,
    };
    model.visit(&mut c);
    (c.worst.0, c.worst.1, c.compared)
}

fn plain(model: &Mimo<AD>) -> GradientsParams {
    let io = read_fixture("mimo/io.safetensors");
    let out = model
        .forward_train(fixture_input::<AD>(&io, "prompt_labels"))
        .expect("forward");
    GradientsParams::from_grads(out.loss.backward(), model)
}

fn recomputed(model: &Mimo<AD>, recompute: bool) -> (f32, GradientsParams) {
    let io = read_fixture("mimo/io.safetensors");
    let (out, grads) = model
        .forward_backward_layers(
            fixture_input::<AD>(&io, "prompt_labels"),
            recompute,
            &mut || {},
        )
        .expect("forward-backward");
    (out.loss.into_scalar(), grads)
}

fn with_dropout(mut model: Mimo<AD>, p: f64) -> Mimo<AD> {
    for layer in model.llm.model.layers.iter_mut() {
        for proj in layer.projections_mut() {
            proj.dropout = DropoutConfig::new(p).init();
        }
    }
    model
}

/// Without dropout, recomputing every decoder layer in the backward gives the gradients
/// of the plain `loss.backward()` for every trained parameter, and none to frozen ones:
/// with the whole token matrices, with the added rows only, and with a bf16 frozen base.
#[test]
fn recomputed_layers_give_the_plain_gradients() {
    let first_new = tiny_model::<AD>(true).llm.model.embed_tokens.weight.dims()[0] - 3;
    for (name, model, tol) in [
        ("f32, whole token matrices", tiny_model::<AD>(true), 1e-5),
        ("f32, no aligner", tiny_model::<AD>(false), 1e-5),
        (
            "f32, added rows only",
            tiny_model::<AD>(true)
                .with_new_token_rows_trainable(first_new)
                .expect("split rows"),
            1e-5,
        ),
        (
            "bf16 frozen base",
            tiny_model::<AD>(true).with_frozen_dtype(DType::BF16),
            1e-5,
        ),
    ] {
        assert!(!model.has_dropout());
        let want = plain(&model);
        let (_, got) = recomputed(&model, true);
        let (err, at, n) = compare(&model, &got, &want);
        println!("{name}: {n} gradients, worst relative difference {err:.2e} at {at}");
        assert!(n >= 20, "{name}: only {n} gradients compared");
        assert!(err <= tol, "{name}: {at} differs by {err:e} (relative)");
    }
}

/// With LoRA dropout, the recomputation draws the forward's masks again: its gradients
/// equal those of the same layer-by-layer forward kept whole (same per-layer seeds), and
/// differ from a run without dropout (the masks are really applied).
///
/// burn-flex's generator is process-wide and other tests of this binary draw from it while
/// they build models, so the check runs in a child process of its own.
#[test]
fn recomputed_layers_redraw_the_dropout_masks() {
    const NAME: &str = "mimo::train::tests::recomputed_layers_redraw_the_dropout_masks";
    if std::env::var_os("MIMO_TEST_ALONE").is_none() {
        let exe = std::env::current_exe().expect("test binary");
        let out = std::process::Command::new(exe)
            .args(["--exact", NAME, "--nocapture", "--test-threads=1"])
            .env("MIMO_TEST_ALONE", "1")
            .output()
            .expect("run the check alone");
        let text = String::from_utf8_lossy(&out.stdout);
        println!("{text}{}", String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "the check failed alone");
        assert!(text.contains("1 passed"), "the check did not run");
        return;
    }
    let model = with_dropout(tiny_model::<AD>(true), 0.5);
    assert!(model.has_dropout());
    <AD as burn::tensor::backend::Backend>::seed(&Default::default(), 7);
    let (loss_kept, kept) = recomputed(&model, false);
    <AD as burn::tensor::backend::Backend>::seed(&Default::default(), 7);
    let (loss_re, re) = recomputed(&model, true);
    let (err, at, n) = compare(&model, &re, &kept);
    println!("dropout 0.5: loss {loss_re} vs {loss_kept}; {n} gradients, worst {err:.2e} at {at}");
    assert_eq!(loss_re, loss_kept);
    assert!(err <= 1e-5, "{at} differs by {err:e}");
    let clean = plain(&with_dropout(model.clone(), 0.0));
    let (off, at, _) = compare(&model, &re, &clean);
    println!("dropout 0.5 vs none: worst {off:.2e} at {at}");
    assert!(off > 1e-2, "dropout changed no gradient ({off:e})");
}
