//! The two building blocks on their own, a few lines each: a chat model opened from an HF
//! model directory (weights, tokenizer, MIMO's tokens, optional LoRA adapter in one call),
//! and SAM predicting a mask for a click on an image.
//!
//! ```sh
//! cargo run -p mimo-core --example chat_and_sam
//! ```
//!
//! Both use the repository's tiny random-weight fixtures, so the text is gibberish and the
//! mask arbitrary; point them at Vicuna-7B and SAM ViT-H (`SamConfig::vit_h()`) for real
//! outputs. On a GPU, pick burn's CUDA backend and load in bf16 with
//! `LoadOptions::new(&device).with_dtype(DType::BF16)` in place of `&device`.

use std::error::Error;
use std::path::Path;

use burn::tensor::backend::Backend;
use mimo_core::Image;
use mimo_core::config::ModelConfig;
use mimo_core::llm::ChatModel;
use mimo_core::sam::load::load_sam;
use mimo_core::sam::{Prompt, SamConfig};
use mimo_core::tokenizer::conversation::Template;

fn chat<B: Backend>(root: &Path, device: &B::Device) -> Result<(), Box<dyn Error>> {
    let (chat, _) = ChatModel::<B>::open(root.join("mimo-core/fixtures/llm/chat"), None, device)?;
    let question = "Where is the liver?".to_string();
    let answers = chat.generate(
        Some(&Template::vicuna_v1()),
        std::slice::from_ref(&question),
        &chat.greedy(12),
        &mut |_, _| {},
    )?;
    println!("chat: {question} -> {:?}", answers[0].text);
    Ok(())
}

fn segment<B: Backend>(root: &Path, device: &B::Device) -> Result<(), Box<dyn Error>> {
    let fixtures = root.join("mimo-core/fixtures/sam");
    let config = SamConfig::load(fixtures.join("tiny_a.ron"))?;
    let (sam, _) = load_sam::<B>(&config, fixtures.join("tiny_a.safetensors"), device)?;

    let image = Image::open(root.join("assets/samples/mni152_t1_z95.png"))?;
    let (w, h) = (image.width(), image.height());
    let embedding = sam.embed_image(&image);
    let prompt = Prompt::default().point(98.0, 110.0, true);
    let masks = sam.predict(&embedding, &prompt, true)?.to_host()?;

    let area = masks.mask(masks.best).iter().filter(|&&m| m).count();
    println!(
        "sam: best of {} masks is #{} (predicted IoU {:.3}), {area} of {} px",
        masks.ious.len(),
        masks.best,
        masks.ious[masks.best],
        w * h
    );
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let device = Default::default();
    chat::<burn::backend::Flex>(&root, &device)?;
    segment::<burn::backend::Flex>(&root, &device)
}
