//! Times the pieces of SAM ViT-B at 1024 px on the CPU backend, to see where the image
//! encoder and the decoder spend their time: `cargo run -p mimo-bench --example sam_ops`.

use std::time::Instant;

use burn::backend::Flex;
use burn::tensor::activation::gelu;
use burn::tensor::{Distribution, Tensor};
use mimo_core::nn;
use mimo_core::sam::{SamConfig, window_partition, window_unpartition};

type B = Flex;

fn t<const D: usize>(name: &str, f: impl Fn() -> Tensor<B, D>) {
    let _ = f().into_data();
    let n = 3;
    let s = Instant::now();
    for _ in 0..n {
        let _ = f().into_data();
    }
    println!(
        "{name:<44} {:>9.1} ms",
        s.elapsed().as_secs_f64() * 1e3 / n as f64
    );
}

fn main() {
    let d = Default::default();
    let sam = SamConfig::vit_b().init::<B>(&d);
    let enc = &sam.image_encoder;
    let img = Tensor::<B, 4>::random([1, 3, 1024, 1024], Distribution::Default, &d);
    t("patch_embed", || enc.patch_embed.proj.forward(img.clone()));
    let x = Tensor::<B, 4>::random([1, 64, 64, 768], Distribution::Default, &d);
    let win = &enc.blocks[0];
    let glob = &enc.blocks[2];
    t("windowed block", || win.forward(x.clone()));
    t("global block", || glob.forward(x.clone()));
    t("  norm1", || win.norm1.forward(x.clone()));
    let (w, padded) = window_partition(x.clone(), 14);
    t("  window partition+unpartition", || {
        window_unpartition(window_partition(x.clone(), 14).0, 14, padded, [64, 64])
    });
    t("  windowed attention", || win.attn.forward(w.clone()));
    t("  global attention", || glob.attn.forward(x.clone()));
    t("  mlp", || win.mlp.forward(x.clone()));
    t("    lin1", || win.mlp.lin1.forward(x.clone()));
    let hdn = win.mlp.lin1.forward(x.clone());
    t("    gelu", || gelu(hdn.clone()));
    t("    lin2", || win.mlp.lin2.forward(hdn.clone()));
    t("  qkv linear", || glob.attn.qkv.forward(x.clone()));
    let xn = x.clone().permute([0, 3, 1, 2]);
    t("neck", || {
        let y = enc.neck.ln1.forward(enc.neck.conv1.forward(xn.clone()));
        enc.neck.ln2.forward(enc.neck.conv2.forward(y))
    });

    // Decoder pieces at the real sizes.
    let emb = Tensor::<B, 4>::random([1, 256, 64, 64], Distribution::Default, &d);
    let pe = sam.prompt_encoder.get_dense_pe();
    t("dense pe", || sam.prompt_encoder.get_dense_pe());
    let tokens = Tensor::<B, 3>::random([1, 7, 256], Distribution::Default, &d);
    t("two-way transformer", || {
        sam.mask_decoder
            .transformer
            .forward(emb.clone(), pe.clone(), tokens.clone())
            .0
    });
    let up = &sam.mask_decoder.output_upscaling;
    t("upscale conv1 (ConvTranspose2d)", || {
        up.conv1.forward(emb.clone())
    });
    let u1 = up.conv1.forward(emb.clone());
    t("upscale ln", || up.ln.forward(u1.clone()));
    t("upscale conv2 (ConvTranspose2d)", || {
        up.conv2.forward(u1.clone())
    });
    t("upscale gelu 1 (nn::gelu)", || nn::gelu(u1.clone()));
    let u2 = up.conv2.forward(u1.clone());
    t("upscale gelu 2 (nn::gelu)", || nn::gelu(u2.clone()));
    let (sparse, dense) = sam.prompt_encoder.forward(None, None, None);
    let _ = sparse;
    t("mask decoder total", || {
        sam.mask_decoder
            .forward(
                emb.clone(),
                pe.clone(),
                tokens.clone(),
                dense.clone(),
                false,
            )
            .0
    });
}
