//! Closed-ended medical VQA accuracy: LLaVA-Med v1.0's `normalize_word`
//! (`eval_metrics/glossary.py`) and the substring hit rule for yes/no questions of its
//! `llava/eval/run_eval.py` (commit `b9a98a7`; later versions dropped this code), and
//! HuatuoGPT-Vision's multiple-choice prompt (`eval.py`, `llava_prompt`) and answer-letter
//! regex (`scorer.py`, `match_choice3`).

use std::collections::HashMap;
use std::sync::OnceLock;

/// The contractions table LLaVA-Med uses (VQA challenge list), from `data/vqa_contractions.json`.
fn contractions() -> &'static HashMap<String, String> {
    static TABLE: OnceLock<HashMap<String, String>> = OnceLock::new();
    TABLE.get_or_init(|| {
        #[derive(serde::Deserialize)]
        struct File {
            contractions: HashMap<String, String>,
        }
        let f: File = serde_json::from_str(include_str!("../../data/vqa_contractions.json"))
            .expect("bundled contractions table is valid JSON");
        f.contractions
    })
}

const PUNCT: [char; 21] = [
    ';', '/', '[', ']', '"', '{', '}', '(', ')', '=', '+', '\\', '_', '-', '>', '<', '@', '`', ',',
    '?', '!',
];

/// Whether `s` contains a digit, a comma and a digit in a row (`(\d)(\,)(\d)`).
fn has_digit_comma_digit(s: &str) -> bool {
    let c: Vec<char> = s.chars().collect();
    c.windows(3)
        .any(|w| w[0].is_numeric() && w[1] == ',' && w[2].is_numeric())
}

/// LLaVA-Med's `normalize_word` (eval_metrics/glossary.py), quirks included: a punctuation
/// mark next to a space anywhere (or any digit,digit) deletes every occurrence of it,
/// otherwise it becomes a space; at most 32 periods not followed by a digit are removed (the
/// `re.UNICODE` flag landing in `count`); number words become digits; articles are dropped;
/// contractions are restored; commas are removed.
pub fn normalize_word(token: &str) -> String {
    let comma = has_digit_comma_digit(token);
    let mut out = token.to_string();
    for p in PUNCT {
        let spaced = token.contains(&format!("{p} ")) || token.contains(&format!(" {p}"));
        out = if spaced || comma {
            out.replace(p, "")
        } else {
            out.replace(p, " ")
        };
    }
    // period_strip: "." not followed by a digit, first 32 occurrences.
    let chars: Vec<char> = out.chars().collect();
    let mut stripped = String::with_capacity(out.len());
    let mut removed = 0;
    for (i, &c) in chars.iter().enumerate() {
        let next_digit = chars.get(i + 1).is_some_and(|n| n.is_numeric());
        if c == '.' && !next_digit && removed < 32 {
            removed += 1;
            continue;
        }
        stripped.push(c);
    }
    let lower = stripped.to_lowercase();
    let mut words: Vec<String> = Vec::new();
    for w in lower.split_whitespace() {
        let w = match w {
            "none" | "zero" => "0",
            "one" => "1",
            "two" => "2",
            "three" => "3",
            "four" => "4",
            "five" => "5",
            "six" => "6",
            "seven" => "7",
            "eight" => "8",
            "nine" => "9",
            "ten" => "10",
            w => w,
        };
        if !matches!(w, "a" | "an" | "the") {
            words.push(w.to_string());
        }
    }
    let table = contractions();
    for w in &mut words {
        if let Some(c) = table.get(w.as_str()) {
            *w = c.clone();
        }
    }
    words.join(" ").replace(',', "")
}

/// LLaVA-Med's CLOSED hit: after lowercasing and [`normalize_word`], the prediction must
/// contain "yes" or "no" and the answer, all as substrings ("no" is in "nodule").
pub fn closed_hit(gt: &str, pred: &str) -> bool {
    let gt = normalize_word(&gt.to_lowercase());
    let pred = normalize_word(&pred.to_lowercase());
    (pred.contains("yes") || pred.contains("no")) && pred.contains(&gt)
}

/// HuatuoGPT-Vision's multiple-choice prompt: the question, one `"L. option"` line per
/// option (letters A–K), and the instruction.
pub fn multiple_choice_prompt(question: &str, options: &[String]) -> String {
    let lines: Vec<String> = options
        .iter()
        .zip("ABCDEFGHIJK".chars())
        .map(|(o, l)| format!("{l}. {o}"))
        .collect();
    format!(
        "{question}\n{}\nAnswer with the option's letter from the given choices directly.",
        lines.join("\n")
    )
}

/// HuatuoGPT-Vision's `match_choice3`: the first letter a–n/A–N standing alone (after
/// "is ", "*", a non-word character, "(", "'", '"', "#", "是", "为" or the start, not "a "/"A "
/// as an article, and before a non-word character or the end), case preserved.
pub fn match_choice(text: &str) -> Option<char> {
    static RE: OnceLock<fancy_regex::Regex> = OnceLock::new();
    let re = RE.get_or_init(|| {
        fancy_regex::Regex::new(
            r#"(?s)(is |是|\*|\W| |\(|为|^|'|"|#)(?![aA] )([abcdefghijklmnABCDEFGHIJKLMN])(\W|$)"#,
        )
        .expect("valid regex")
    });
    // Python's findall scans for non-overlapping matches; the first one is the leftmost.
    let caps = re.captures(text).ok().flatten()?;
    caps.get(2).and_then(|m| m.as_str().chars().next())
}

/// Whether a multiple-choice answer is right: the matched letter must equal the answer's
/// letter exactly (a lowercase letter is wrong, as in the released scorer).
pub fn choice_correct(pred: &str, answer_index: usize) -> bool {
    let want = "ABCDEFGHIJK".chars().nth(answer_index);
    want.is_some() && match_choice(pred) == want
}
