//! MIMO as a library on a burn backend of your choice: build a model from its model file and
//! a trained checkpoint, ask about an image with a point on it, and read the grounded phrases
//! with their masks.
//!
//! ```sh
//! cargo run -p mimo-core --example grounded_answer
//! ```
//!
//! Everything in mimo-core is generic over `B: Backend`; `main` picks burn's CPU backend
//! (Flex). On a GPU, build with burn's `cuda` feature and call
//! `answer::<burn::backend::Cuda>(&Default::default())`; for training, wrap the backend in
//! `burn::backend::Autodiff` and use `Mimo::forward` (see mimo-train).

use std::error::Error;
use std::path::Path;

use burn::tensor::backend::Backend;
use mimo_core::Image;
use mimo_core::llm::GenerationConfig;
use mimo_core::mimo::{AnswerRequest, MimoConfig};
use mimo_core::prompt::VisualPrompt;

/// Answers one question with the bundled demo model (mimo-tiny trained on phantoms).
fn answer<B: Backend>(device: &B::Device) -> Result<(), Box<dyn Error>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let model_file = root.join("configs/mimo/mimo-tiny.ron");
    let built = MimoConfig::load(&model_file)?
        .with_checkpoint(&root.join("assets/demo/mimo-tiny-phantom"))?
        .build::<B>(&root.join("configs/mimo"), device)?;
    let tok = built
        .tokenizer
        .as_ref()
        .ok_or("the model file names no tokenizer")?;

    let image = Image::open(root.join("assets/demo/samples/phantom_xray.png"))?;
    let (w, h) = (image.width(), image.height());
    // A point on the right lung of the chest phantom, in image pixels.
    let prompts = [VisualPrompt::Point {
        x: 41.0,
        y: 60.0,
        positive: true,
    }];
    let generation = GenerationConfig {
        max_new_tokens: 64,
        eos_token_id: vec![tok.ids().eos],
        pad_token_id: tok.ids().pad(),
        ..Default::default()
    };
    let request = AnswerRequest {
        image: &image,
        question: "What is the structure at the marked point, and what is it responsible for?",
        prompts: &prompts,
    };
    let answer = built
        .model
        .answer(tok, &built.template, request, &generation, &mut |piece| {
            print!("{piece}")
        })?;
    println!("\n\nanswer: {}", answer.text);
    for s in &answer.segments {
        let area = s.mask.iter().filter(|&&m| m).count();
        println!(
            "  {:?} at characters {:?}: mask of {area} px ({w}x{h}), predicted IoU {:.3}",
            s.phrase.as_deref().unwrap_or("(no phrase)"),
            s.char_span,
            s.score
        );
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    answer::<burn::backend::Flex>(&Default::default())
}
