//! Generation parity with transformers (fixtures by `scripts/reference/generate.py`).

use super::*;
use crate::llm::LlamaConfig;
use crate::test_util::*;

type Bk = TestBackend;

#[test]
fn logits_processors_match_transformers() {
    let f = read_fixture("llm/sampling.safetensors");
    let v = f["scores"].shape[1];
    let w = f["input_ids"].shape[1];
    let rows = f["scores"].shape[0];
    let mut worst = 0f32;
    for name in ["rep", "temp", "topk", "topp", "chain"] {
        for r in 0..rows {
            let mut s = f["scores"].f32[r * v..(r + 1) * v].to_vec();
            let seen: Vec<u32> = f["input_ids"].i64[r * w..(r + 1) * w]
                .iter()
                .map(|&x| x as u32)
                .collect();
            match name {
                "rep" => repetition_penalty(&mut s, &seen, 1.3),
                "temp" => temperature(&mut s, 0.7),
                "topk" => top_k(&mut s, 5),
                "topp" => top_p(&mut s, 0.8),
                _ => {
                    let cfg = GenerationConfig {
                        do_sample: true,
                        repetition_penalty: 1.3,
                        temperature: 0.7,
                        top_k: 5,
                        top_p: 0.8,
                        ..Default::default()
                    };
                    process_logits(&cfg, &mut s, &seen);
                }
            }
            let want = &f[name].f32[r * v..(r + 1) * v];
            let kept = &f[&format!("{name}_kept")].u8[r * v..(r + 1) * v];
            for i in 0..v {
                assert_eq!(
                    s[i].is_finite(),
                    kept[i] == 1,
                    "{name} row {r} token {i} kept"
                );
                if kept[i] == 1 {
                    worst = worst.max((s[i] - want[i]).abs());
                }
            }
        }
    }
    println!("logits processors: kept sets equal, max abs err {worst:.3e}");
    assert!(worst <= 1e-5);
}

struct Chat {
    model: Llama<Bk>,
    ids: Vec<Vec<u32>>,
    mask: Vec<Vec<u8>>,
    io: std::collections::HashMap<String, Array>,
}

fn chat() -> Chat {
    let dir = fixture("llm/chat");
    let cfg = LlamaConfig::load(&dir).unwrap();
    let (model, _) = crate::llm::load::load_llama::<Bk>(&cfg, &dir, &Default::default()).unwrap();
    let io = read_fixture("llm/chat/io.safetensors");
    let w = io["input_ids"].shape[1];
    let ids = io["input_ids"]
        .i64
        .chunks(w)
        .map(|r| r.iter().map(|&x| x as u32).collect())
        .collect();
    let mask = io["attention_mask"]
        .i64
        .chunks(w)
        .map(|r| r.iter().map(|&x| x as u8).collect())
        .collect();
    Chat {
        model,
        ids,
        mask,
        io,
    }
}

fn rows(a: &Array) -> Vec<Vec<u32>> {
    a.i64
        .chunks(a.shape[1])
        .map(|r| r.iter().map(|&x| x as u32).collect())
        .collect()
}

#[test]
fn greedy_repetition_penalty_and_eos_match_transformers() {
    let c = chat();
    let base = GenerationConfig {
        max_new_tokens: 12,
        eos_token_id: vec![],
        ..Default::default()
    };
    let g = c.model.generate(&c.ids, &c.mask, &base, &mut |_, _| false);
    assert_eq!(g.tokens, rows(&c.io["generated"]));
    assert_eq!(g.finish, vec![FinishReason::Length; 2]);

    let rep = GenerationConfig {
        repetition_penalty: 1.2,
        ..base.clone()
    };
    let g = c.model.generate(&c.ids, &c.mask, &rep, &mut |_, _| false);
    assert_eq!(g.tokens, rows(&c.io["generated_rep"]));

    let eos = c.io["eos_id"].i64[0] as u32;
    let cfg = GenerationConfig {
        eos_token_id: vec![eos],
        ..base
    };
    let g = c.model.generate(&c.ids, &c.mask, &cfg, &mut |_, _| false);
    let want = rows(&c.io["generated_eos"]);
    // transformers returns EOS and then padding; ours stops before EOS.
    let cut = want[0].iter().position(|&t| t == eos).unwrap();
    assert_eq!(g.tokens[0], want[0][..cut].to_vec());
    assert_eq!(g.finish[0], FinishReason::Eos);
    assert_eq!(g.tokens[1], want[1]);
    assert_eq!(g.finish[1], FinishReason::Length);
}

/// The two prompts `generate.py` answered with transformers.
fn chat_prompts() -> Vec<String> {
    [
        "Where is the liver?",
        "Please segment the left kidney in this CT image.",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[test]
fn text_generation_streams_and_stops_at_stop_strings() {
    let c = chat();
    let tok = MimoTokenizer::from_file(fixture("llm/chat")).unwrap();
    let prompts = chat_prompts();
    let template = Template::vicuna_v1();
    let cfg = GenerationConfig {
        max_new_tokens: 12,
        eos_token_id: vec![],
        ..Default::default()
    };
    let mut streamed = vec![String::new(); 2];
    let out = generate_text(
        &c.model,
        &tok,
        Some(&template),
        &prompts,
        &cfg,
        &mut |r, t| streamed[r].push_str(t),
    )
    .unwrap();
    // The same tokens as transformers on the same prompts (tokenised here).
    let want = rows(&c.io["generated"]);
    for r in 0..2 {
        assert_eq!(out[r].tokens, want[r]);
        assert_eq!(streamed[r], out[r].text);
        assert_eq!(out[r].text, tok.decode(&want[r], true).unwrap());
    }
    // Stop at a string in the middle of row 0's answer (spanning tokens).
    let text = out[0].text.clone();
    let stop: String = text.chars().skip(3).take(4).collect();
    let cfg = GenerationConfig {
        stop_strings: vec![stop.clone()],
        ..cfg
    };
    let mut streamed = vec![String::new(); 2];
    let out = generate_text(
        &c.model,
        &tok,
        Some(&template),
        &prompts,
        &cfg,
        &mut |r, t| streamed[r].push_str(t),
    )
    .unwrap();
    let cut = text.find(&stop).unwrap();
    assert_eq!(out[0].text, text[..cut]);
    assert_eq!(out[0].finish, FinishReason::Stop);
    assert_eq!(streamed[0], out[0].text);
    assert!(out[0].tokens.len() < 12);
}

#[test]
fn sampling_is_seeded_and_follows_the_distribution() {
    let c = chat();
    let cfg = GenerationConfig {
        max_new_tokens: 8,
        do_sample: true,
        temperature: 1.5,
        top_k: 0,
        eos_token_id: vec![],
        seed: 7,
        ..Default::default()
    };
    let a = c.model.generate(&c.ids, &c.mask, &cfg, &mut |_, _| false);
    let b = c.model.generate(&c.ids, &c.mask, &cfg, &mut |_, _| false);
    assert_eq!(a, b, "same seed, same tokens");
    let d = c.model.generate(
        &c.ids,
        &c.mask,
        &GenerationConfig { seed: 8, ..cfg },
        &mut |_, _| false,
    );
    assert_ne!(a.tokens, d.tokens);

    // Frequencies of 40000 draws match the softmax within 0.01.
    let scores = [1.0f32, 0.5, -0.3, 2.0, f32::NEG_INFINITY, 0.0];
    let max = 2.0f32;
    let z: f32 = scores.iter().map(|s| (s - max).exp()).sum();
    let mut counts = [0usize; 6];
    let mut rng = Rng::new(1);
    let n = 40_000;
    for _ in 0..n {
        counts[choose(&scores, true, &mut rng) as usize] += 1;
    }
    for (i, s) in scores.iter().enumerate() {
        let p = (s - max).exp() / z;
        let f = counts[i] as f32 / n as f32;
        assert!((p - f).abs() < 0.01, "token {i}: p {p} freq {f}");
    }
    assert_eq!(counts[4], 0, "a filtered token was drawn");
}

#[test]
fn bad_generation_config_names_the_field() {
    for (cfg, field) in [
        (
            GenerationConfig {
                top_p: 0.0,
                ..Default::default()
            },
            "top_p",
        ),
        (
            GenerationConfig {
                temperature: 0.0,
                ..Default::default()
            },
            "temperature",
        ),
        (
            GenerationConfig {
                max_new_tokens: 0,
                ..Default::default()
            },
            "max_new_tokens",
        ),
        (
            GenerationConfig {
                stop_strings: vec![String::new()],
                ..Default::default()
            },
            "stop_strings",
        ),
    ] {
        let e = cfg.validate().unwrap_err().to_string();
        assert!(e.contains(field), "{e}");
    }
}

/// `ChatModel::open` (config, weights, tokenizer, added rows, adapter in one call) generates
/// transformers' tokens on the chat fixture, and with an adapter and another tokenizer it
/// builds the same model as the manual steps.
#[test]
fn chat_model_open_does_the_five_steps() {
    use crate::llm::{ChatError, ChatModel, ChatOptions, NewTokenInit};
    let device = Default::default();
    let dir = fixture("llm/chat");
    let (chat, report) = ChatModel::<Bk>::open(&dir, None, &device).unwrap();
    assert!(report.base.unused.is_empty() && report.adapter.is_none());
    assert_eq!(report.weights, dir.join("model.safetensors"));
    let prompts = chat_prompts();
    let cfg = GenerationConfig {
        eos_token_id: vec![],
        ..chat.greedy(12)
    };
    let out = chat
        .generate(Some(&Template::vicuna_v1()), &prompts, &cfg, &mut |_, _| {})
        .unwrap();
    let io = read_fixture("llm/chat/io.safetensors");
    let want = rows(&io["generated"]);
    assert_eq!(out[0].tokens, want[0]);
    assert_eq!(out[1].tokens, want[1]);

    // A base without a tokenizer, the chat tokenizer (more tokens: rows are added), and a
    // peft adapter, against the same steps by hand.
    let base = fixture("llm/mha");
    let adapter = fixture("llm/lora/peft_qv");
    let options = ChatOptions {
        tokenizer: Some(dir.clone()),
        ..ChatOptions::<Bk>::new(&device)
    };
    let (chat, report) = ChatModel::open(&base, Some(&adapter), options).unwrap();
    let tok = MimoTokenizer::from_file(&dir).unwrap();
    assert_eq!(report.added_rows, Some((96, tok.vocab_size())));
    let (lora, adapter_report) = report.adapter.unwrap();
    assert!(adapter_report.applied > 0 && lora.r > 0);
    let cfg = LlamaConfig::load(&base).unwrap();
    let (manual, _) = crate::llm::load::load_llama::<Bk>(&cfg, &base, &device).unwrap();
    let (manual, _, _) = manual
        .resize_token_embeddings(tok.vocab_size(), NewTokenInit::Mean)
        .load_lora(&adapter)
        .unwrap();
    let ids = vec![vec![1u32, 17, 42, 9, 700]];
    let mask = vec![vec![1u8; 5]];
    let pos = positions_from_mask(&mask);
    let logits = |m: &Llama<Bk>| {
        m.forward_ids(&ids, &mask, &pos, &mut KvCache::new(), false)
            .logits
    };
    let err = (logits(&chat.model) - logits(&manual))
        .abs()
        .max()
        .into_scalar();
    assert_eq!(err, 0.0);

    // Not a directory: the error names it.
    let err = ChatModel::<Bk>::open(dir.join("config.json"), None, &device).unwrap_err();
    assert!(matches!(err, ChatError::NotADirectory(_)), "{err}");
    assert!(err.to_string().contains("config.json"), "{err}");
}
