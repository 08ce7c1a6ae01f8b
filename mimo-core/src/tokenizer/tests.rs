//! Parity with the Python `tokenizers` library and `sentencepiece` (fixtures written by
//! `scripts/reference/tokenizer.py`), and with the real LLaMA vocabulary when it is present.

use super::conversation::{Template, tokenize_conversation, tokenize_image_prompt};
use super::*;
use crate::test_util::fixture;

#[derive(serde::Deserialize)]
struct Case {
    text: String,
    ids: Vec<u32>,
    decoded: String,
}

#[derive(serde::Deserialize)]
struct Conv {
    template: String,
    rounds: Vec<(String, String)>,
    prompt: String,
    expanded: String,
    input_ids: Vec<i64>,
    labels: Vec<i64>,
}

#[derive(serde::Deserialize)]
struct Cases {
    added_ids: std::collections::BTreeMap<String, u32>,
    vocab_size: usize,
    plain: Vec<Case>,
    added: Vec<Case>,
    conversations: Vec<Conv>,
    #[serde(default)]
    tf431: Option<Tf431>,
}

/// transformers 4.31's slow tokenizer on the same strings and conversations.
#[derive(serde::Deserialize)]
struct Tf431 {
    transformers: String,
    added: Vec<IdsCase>,
    conversations: Vec<ConvIds>,
}

#[derive(serde::Deserialize)]
struct IdsCase {
    text: String,
    ids: Vec<u32>,
    decoded: String,
}

#[derive(serde::Deserialize)]
struct ConvIds {
    input_ids: Vec<i64>,
    labels: Vec<i64>,
}

fn read_cases(name: &str) -> Cases {
    let text = std::fs::read_to_string(fixture(&format!("tokenizer/{name}"))).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Checks every case of `cases` against `tok`; returns the number of comparisons.
fn check(tok: &MimoTokenizer, cases: &Cases) -> usize {
    let mut n = 0;
    for (t, &id) in &cases.added_ids {
        let ids = tok.ids();
        let got = match t.as_str() {
            "<p>" => ids.p_start,
            "</p>" => ids.p_end,
            "<SEG>" => ids.seg,
            "<image>" => ids.image,
            "<im_start>" => ids.im_start,
            "<im_end>" => ids.im_end,
            other => panic!("unexpected token {other}"),
        };
        assert_eq!(got, id, "{t}");
        n += 1;
    }
    assert_eq!(tok.vocab_size(), cases.vocab_size);
    for c in cases.plain.iter().chain(&cases.added) {
        // `plain` ids were also checked against sentencepiece by the script.
        assert_eq!(tok.encode(&c.text, false).unwrap(), c.ids, "{:?}", c.text);
        assert_eq!(
            tok.decode_raw(&c.ids, false).unwrap(),
            c.decoded,
            "{:?}",
            c.text
        );
        assert_eq!(
            tok.decode(&c.ids, false).unwrap(),
            c.text,
            "round trip {:?}",
            c.text
        );
        let mut with_bos = vec![tok.ids().bos];
        with_bos.extend(&c.ids);
        assert_eq!(tok.encode(&c.text, true).unwrap(), with_bos);
        n += 3;
    }
    for c in &cases.conversations {
        let template = Template::by_name(&c.template).unwrap();
        let rounds: Vec<(String, Option<String>)> = c
            .rounds
            .iter()
            .map(|(q, a)| (q.clone(), Some(a.clone())))
            .collect();
        assert_eq!(template.prompt(&rounds), c.prompt);
        let expanded = template.expand_image(&c.prompt);
        assert_eq!(expanded, c.expanded);
        let got = tokenize_conversation(tok, &template, &expanded).unwrap();
        assert_eq!(got.input_ids, c.input_ids, "{:?}", c.prompt);
        assert_eq!(got.labels, c.labels, "{:?}", c.prompt);
        n += 2;
    }
    n
}

/// `keep`: the `tokenizers` library on every case (the script also asserts that
/// transformers 4.46.3's slow tokenizer gives the same ids and labels);
/// `strip` (the default): transformers 4.31's slow tokenizer on the strings with added tokens
/// and on LISA's conversation tokenisation and label masking.
#[test]
fn tiny_tokenizer_matches_python() {
    let tok = MimoTokenizer::from_file(fixture("tokenizer")).unwrap();
    assert_eq!(tok.added_token_spaces(), AddedTokenSpaces::Strip);
    let cases = read_cases("cases.json");
    let keep = tok.clone().with_added_token_spaces(AddedTokenSpaces::Keep);
    let n = check(&keep, &cases);
    println!("tiny tokenizer, whitespace kept: {n} comparisons equal");

    let tf = cases
        .tf431
        .as_ref()
        .expect("cases.json has the transformers 4.31 cases");
    assert_eq!(tf.transformers, "4.31.0");
    let mut differ = 0;
    for (c, k) in tf.added.iter().zip(&cases.added) {
        assert_eq!(
            tok.encode(&c.text, false).unwrap(),
            c.ids,
            "4.31: {:?}",
            c.text
        );
        assert_eq!(
            tok.decode(&c.ids, false).unwrap(),
            c.decoded,
            "4.31 decode: {:?}",
            c.text
        );
        differ += usize::from(c.ids != k.ids);
    }
    assert!(differ >= 4, "the two rules differ on {differ} strings");
    for (c, want) in cases.conversations.iter().zip(&tf.conversations) {
        let template = Template::by_name(&c.template).unwrap();
        let got = tokenize_conversation(&tok, &template, &c.expanded).unwrap();
        assert_eq!(got.input_ids, want.input_ids, "4.31: {:?}", c.prompt);
        assert_eq!(got.labels, want.labels, "4.31: {:?}", c.prompt);
    }
    // LISA's examples: no "▁" before <SEG>, and the "\n" after <im_end> goes.
    let seg = tok.ids().seg;
    let before_seg = |ids: &[u32]| ids[ids.iter().position(|&i| i == seg).unwrap() - 1];
    let space = keep.inner().token_to_id("\u{2581}").unwrap();
    assert_eq!(
        before_seg(&keep.encode("Sure, <SEG>.", false).unwrap()),
        space
    );
    assert_ne!(
        before_seg(&tok.encode("Sure, <SEG>.", false).unwrap()),
        space
    );
    let q = "<im_start><image><im_end>\nWhat";
    assert!(keep.encode(q, false).unwrap().contains(&13)); // the newline's byte token
    assert!(!tok.encode(q, false).unwrap().contains(&13));
    println!(
        "tiny tokenizer, whitespace stripped: {} strings and {} conversations equal to transformers 4.31",
        tf.added.len(),
        tf.conversations.len()
    );
}

/// The real 32000-token LLaMA vocabulary is Meta's and not in the repository. Build it with
/// `../shared/tools/make_llama_tokenizer.py` (see `scripts/reference/README.md`) and point
/// `MIMO_LLAMA_TOKENIZER` at the directory holding its `tokenizer.json`; if llama.cpp's
/// `ggml-vocab-llama-spm.gguf.inp`/`.out` lie in that directory or its parent, their 47
/// vectors are checked too.
#[test]
fn real_llama_tokenizer_when_present() {
    let Some(dir) = std::env::var_os("MIMO_LLAMA_TOKENIZER") else {
        println!(
            "skipped: set MIMO_LLAMA_TOKENIZER to a directory with the real LLaMA tokenizer.json"
        );
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    // real_golden.json holds the `tokenizers` library's ids (the whitespace-keeping rule).
    let tok = MimoTokenizer::from_file(&dir)
        .unwrap()
        .with_added_token_spaces(AddedTokenSpaces::Keep);
    let n = check(&tok, &read_cases("real_golden.json"));
    println!("real tokenizer: {n} golden comparisons equal");
    for d in [dir.clone(), dir.join("..")] {
        let inp = d.join("ggml-vocab-llama-spm.gguf.inp");
        let out = d.join("ggml-vocab-llama-spm.gguf.out");
        if !inp.is_file() {
            continue;
        }
        let inp = std::fs::read_to_string(inp).unwrap();
        let out = std::fs::read_to_string(out).unwrap();
        let mut count = 0;
        for (s, o) in inp.split("\n__ggml_vocab_test__\n").zip(out.split('\n')) {
            let want: Vec<u32> = o.split_whitespace().map(|x| x.parse().unwrap()).collect();
            assert_eq!(tok.encode(s, false).unwrap(), want, "{s:?}");
            count += 1;
        }
        assert_eq!(count, 47);
        println!("real tokenizer: {count}/47 llama.cpp vectors equal");
        return;
    }
}

#[test]
fn added_tokens_come_from_the_table() {
    // A file that already has `<SEG>` keeps its id; the others are appended after it.
    let mut inner = tokenizers::Tokenizer::from_file(fixture("tokenizer/tokenizer.json")).unwrap();
    let base = inner.get_vocab_size(true) as u32;
    inner
        .add_tokens([AddedToken::from("<SEG>", false).normalized(false)])
        .unwrap();
    let tok = MimoTokenizer::from_tokenizer(inner, "mem".into()).unwrap();
    let ids = tok.ids();
    assert_eq!(ids.seg, base);
    assert_eq!(
        [ids.p_start, ids.p_end, ids.image, ids.im_start, ids.im_end],
        [base + 1, base + 2, base + 3, base + 4, base + 5]
    );
    assert_eq!(tok.vocab_size(), base as usize + 6);
    // Tokenising "<SEG>" alone gives the id, never a leading "▁".
    assert_eq!(tok.encode("<SEG>", false).unwrap(), vec![ids.seg]);
    assert_eq!((ids.unk, ids.bos, ids.eos, ids.pad()), (0, 1, 2, 0));
}

#[test]
fn stream_decoding_equals_full_decode() {
    let tok = MimoTokenizer::from_file(fixture("tokenizer/tokenizer.json"))
        .unwrap()
        // The round trip below needs the whitespace next to added tokens kept.
        .with_added_token_spaces(AddedTokenSpaces::Keep);
    for text in [
        "Sure, <p>liver</p><SEG> is enlarged.",
        "Ünïcödé 脾脏 🫁 a  b\n1234",
    ] {
        let ids = tok.encode(text, false).unwrap();
        let mut stream = tok.stream(false);
        let mut out = String::new();
        for &id in &ids {
            if let Some(piece) = stream.push(id).unwrap() {
                out.push_str(&piece);
            }
        }
        assert_eq!(out, tok.decode(&ids, false).unwrap());
        assert_eq!(out, text);
        // transformers 4.31's rule: the stream still equals the full decode.
        let strip = tok.clone().with_added_token_spaces(AddedTokenSpaces::Strip);
        let mut stream = strip.stream(false);
        let mut out = String::new();
        for &id in &ids {
            if let Some(piece) = stream.push(id).unwrap() {
                out.push_str(&piece);
            }
        }
        assert_eq!(out, strip.decode(&ids, false).unwrap());
    }
}

#[test]
fn image_prompt_and_generation_prompt() {
    let tok = MimoTokenizer::from_file(fixture("tokenizer")).unwrap();
    let t = Template::vicuna_v1();
    let p = t.generation_prompt("<image>\nWhat is shown?");
    assert!(p.ends_with("USER: <image>\nWhat is shown? ASSISTANT:"));
    let ids = tokenize_image_prompt(&tok, &t.expand_image(&p)).unwrap();
    assert_eq!(ids.iter().filter(|&&t| t == IMAGE_TOKEN_INDEX).count(), 1);
    assert_eq!(ids[0], 1);
    let pos = ids.iter().position(|&t| t == IMAGE_TOKEN_INDEX).unwrap();
    assert_eq!(ids[pos - 1], i64::from(tok.ids().im_start));
    assert_eq!(ids[pos + 1], i64::from(tok.ids().im_end));
    // A conversation without "ASSISTANT: " is rejected with a message, not a panic.
    let err = tokenize_conversation(&tok, &t, "no separator</s>").unwrap_err();
    assert!(err.to_string().contains("ASSISTANT:"), "{err}");
}

#[test]
fn missing_file_is_an_error() {
    let err = MimoTokenizer::from_file("/nonexistent/tokenizer.json").unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent/tokenizer.json"),
        "{err}"
    );
}
