//! Conversation templates (Vicuna v1 and LLaVA v1, FastChat's `SeparatorStyle.TWO`, as in
//! LISA's `model/llava/conversation.py`) and LISA's tokenisation of `<image>` with label
//! masking (`tokenizer_image_token` in `model/llava/mm_utils.py`, the targets of
//! `utils/dataset.py`).

use serde::{Deserialize, Serialize};

use super::{IGNORE_INDEX, IMAGE_TOKEN_INDEX, MimoTokenizer, TokenizerError};

/// Vicuna v1's system prompt (FastChat `conv_vicuna_v1`), MIMO's default.
pub const VICUNA_V1_SYSTEM: &str = "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the user's questions.";

/// LLaVA v1's system prompt (`conv_llava_v1`, LISA's default): "human" instead of "user".
pub const LLAVA_V1_SYSTEM: &str = "A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the human's questions.";

/// A two-separator conversation template: `system + sep`, then per round
/// `USER: q + sep + ASSISTANT: a + sep2`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Template {
    /// System prompt.
    pub system: String,
    /// Role names (user, assistant).
    pub roles: (String, String),
    /// After the system prompt and each user turn.
    pub sep: String,
    /// After each assistant turn (the EOS text).
    pub sep2: String,
    /// Whether `<image>` is wrapped as `<im_start><image><im_end>` (LISA's
    /// `use_mm_start_end`, default on).
    pub mm_start_end: bool,
}

impl Default for Template {
    fn default() -> Self {
        Self::vicuna_v1()
    }
}

impl Template {
    /// Vicuna v1 (MIMO's choice: the model starts from Vicuna-7B).
    pub fn vicuna_v1() -> Self {
        Self {
            system: VICUNA_V1_SYSTEM.into(),
            roles: ("USER".into(), "ASSISTANT".into()),
            sep: " ".into(),
            sep2: "</s>".into(),
            mm_start_end: true,
        }
    }

    /// LLaVA v1 (LISA's default template).
    pub fn llava_v1() -> Self {
        Self {
            system: LLAVA_V1_SYSTEM.into(),
            ..Self::vicuna_v1()
        }
    }

    /// A template by name: `vicuna_v1` or `llava_v1`.
    pub fn by_name(name: &str) -> Option<Self> {
        match name {
            "vicuna_v1" => Some(Self::vicuna_v1()),
            "llava_v1" => Some(Self::llava_v1()),
            _ => None,
        }
    }

    /// The full text of `rounds` (`(question, Some(answer))`); a last round with `None` as
    /// answer ends with `"ASSISTANT:"`, the generation prompt.
    pub fn prompt(&self, rounds: &[(String, Option<String>)]) -> String {
        let mut out = format!("{}{}", self.system, self.sep);
        for (q, a) in rounds {
            out.push_str(&format!("{}: {}{}", self.roles.0, q, self.sep));
            match a {
                Some(a) => out.push_str(&format!("{}: {}{}", self.roles.1, a, self.sep2)),
                None => out.push_str(&format!("{}:", self.roles.1)),
            }
        }
        out
    }

    /// The prompt for one question awaiting an answer.
    pub fn generation_prompt(&self, question: &str) -> String {
        self.prompt(&[(question.to_string(), None)])
    }

    /// `<image>` replaced by `<im_start><image><im_end>` when the template says so.
    pub fn expand_image(&self, text: &str) -> String {
        if self.mm_start_end {
            text.replace("<image>", "<im_start><image><im_end>")
        } else {
            text.to_string()
        }
    }
}

/// Token ids of a prompt with `<image>` as [`IMAGE_TOKEN_INDEX`] (LLaVA's
/// `tokenizer_image_token`): each chunk between `<image>`s is tokenised on its own with BOS,
/// the BOS of later chunks dropped.
pub fn tokenize_image_prompt(tok: &MimoTokenizer, text: &str) -> Result<Vec<i64>, TokenizerError> {
    let mut out = Vec::new();
    for (i, chunk) in text.split("<image>").enumerate() {
        if i > 0 {
            out.push(IMAGE_TOKEN_INDEX);
        }
        let ids = tok.encode(chunk, i == 0)?;
        out.extend(ids.into_iter().map(i64::from));
    }
    Ok(out)
}

/// A tokenised training conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenizedConversation {
    /// Token ids with [`IMAGE_TOKEN_INDEX`] where the image goes.
    pub input_ids: Vec<i64>,
    /// Targets: the ids of the assistant answers and their closing `</s>`, [`IGNORE_INDEX`]
    /// elsewhere.
    pub labels: Vec<i64>,
}

/// Tokenises a full training conversation (`template.prompt` with every answer given) and
/// masks everything but the answers, exactly as LISA's `collate_fn` does: per round, the
/// instruction length is `len(tokenize(round up to "ASSISTANT: ")) - 2` (BOS and the
/// trailing `"▁"` that merges into the answer's first token).
///
/// The text must already have `<image>` expanded ([`Template::expand_image`]). A mismatch
/// between the rounds' lengths and the whole (the template does not fit the tokenizer) is an
/// error rather than LISA's silent all-ignore.
pub fn tokenize_conversation(
    tok: &MimoTokenizer,
    template: &Template,
    conversation: &str,
) -> Result<TokenizedConversation, TokenizerError> {
    let input_ids = tokenize_image_prompt(tok, conversation)?;
    let pad = i64::from(tok.ids().pad());
    let total = input_ids.iter().filter(|&&t| t != pad).count();
    let mut labels = input_ids.clone();
    let sep = format!("{}{}: ", template.sep, template.roles.1);
    let mut cur = 1usize;
    let n = labels.len();
    labels[..cur.min(n)].fill(IGNORE_INDEX);
    for round in conversation.split(template.sep2.as_str()) {
        if round.is_empty() {
            break;
        }
        let parts: Vec<&str> = round.split(sep.as_str()).collect();
        if parts.len() != 2 {
            return Err(TokenizerError::Conversation(format!(
                "a round must contain `{}` exactly once: {round:?}",
                sep.trim()
            )));
        }
        let instruction = format!("{}{}", parts[0], sep);
        let round_len = tokenize_image_prompt(tok, round)?.len();
        let instruction_len = tokenize_image_prompt(tok, &instruction)?
            .len()
            .saturating_sub(2);
        let end = (cur + instruction_len).min(labels.len());
        labels[cur.min(end)..end].fill(IGNORE_INDEX);
        cur += round_len;
    }
    if cur < labels.len() {
        labels[cur..].fill(IGNORE_INDEX);
    }
    if cur != total {
        return Err(TokenizerError::Conversation(format!(
            "label rule counted {cur} tokens but the conversation has {total}: the template's \
             separators do not tokenise as expected"
        )));
    }
    Ok(TokenizedConversation { input_ids, labels })
}
