//! The LLaMA/Vicuna tokenizer with MIMO's added tokens, over the `tokenizers` crate and the
//! model's own `tokenizer.json`.
//!
//! * The `tokenizer.json` of Vicuna (or one rebuilt with the legacy LLaMA pipeline) gives the
//!   same ids as the slow `LlamaTokenizer(legacy=True)` that LISA and MIMO train with,
//!   including the bare `"▁"` (29871) before an added token and the dummy prefix after one.
//! * MIMO's tokens `<p>`, `</p>`, `<SEG>`, `<image>`, `<im_start>`, `<im_end>` are added
//!   (in that order, after the base vocabulary) unless the file already has them, and their
//!   ids are read from the added-token table — never by tokenising the string, which can give
//!   `[29871, id]` (LISA issue #55).
//! * [`conversation`] holds the Vicuna v1 / LLaVA v1 templates and LISA's tokenisation of
//!   `<image>` with label masking.

pub mod conversation;

use std::path::{Path, PathBuf};

use tokenizers::{AddedToken, Tokenizer};

/// MIMO's added tokens, in the order they are appended to the vocabulary.
pub const ADDED_TOKENS: [&str; 6] = ["<p>", "</p>", "<SEG>", "<image>", "<im_start>", "<im_end>"];

/// How the whitespace next to MIMO's added tokens is tokenised; the two transformers versions
/// the LISA family is used with disagree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AddedTokenSpaces {
    /// transformers 4.31 (LISA's pin, what the LISA family trained with): a token added with
    /// `add_tokens` strips the whitespace on both sides of it (`PreTrainedTokenizer.tokenize`,
    /// "We strip left and right by default"): `"Sure, <SEG>."` has no `"▁"` before `<SEG>`,
    /// and the `"\n"` after `<im_end>` goes.
    #[default]
    Strip,
    /// transformers ≥ 4.34 and the `tokenizers` library: the whitespace stays (a bare `"▁"`,
    /// id 29871 in LLaMA, before the token).
    Keep,
}

/// Placeholder id where image embeddings are spliced in (LLaVA's `IMAGE_TOKEN_INDEX`).
pub const IMAGE_TOKEN_INDEX: i64 = -200;

/// Label of positions that are not supervised (PyTorch's `ignore_index`).
pub const IGNORE_INDEX: i64 = -100;

/// Why a tokenizer could not be loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// The file is missing or not a valid `tokenizer.json`.
    #[error("cannot load tokenizer {path}: {message}")]
    Load {
        /// The file.
        path: PathBuf,
        /// The reader's message.
        message: String,
    },
    /// A token the model needs is not in the vocabulary.
    #[error("tokenizer {path} has no token `{token}`")]
    MissingToken {
        /// The file.
        path: PathBuf,
        /// The token.
        token: String,
    },
    /// Encoding or decoding failed.
    #[error("tokenizer: {0}")]
    Codec(String),
    /// A conversation does not have the structure the label rule needs.
    #[error("conversation: {0}")]
    Conversation(String),
}

/// Ids of the special and added tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialIds {
    /// `<unk>`, also the padding id (LISA sets `pad_token = unk_token`).
    pub unk: u32,
    /// `<s>`.
    pub bos: u32,
    /// `</s>`.
    pub eos: u32,
    /// `<p>`: opens a grounded phrase.
    pub p_start: u32,
    /// `</p>`: closes a grounded phrase.
    pub p_end: u32,
    /// `<SEG>`: its hidden state drives the mask decoder.
    pub seg: u32,
    /// `<image>`.
    pub image: u32,
    /// `<im_start>`.
    pub im_start: u32,
    /// `<im_end>`.
    pub im_end: u32,
}

impl SpecialIds {
    /// The padding id (= `unk`).
    pub fn pad(&self) -> u32 {
        self.unk
    }
}

/// A LLaMA tokenizer with MIMO's added tokens.
#[derive(Clone)]
pub struct MimoTokenizer {
    inner: Tokenizer,
    ids: SpecialIds,
    path: PathBuf,
    spaces: AddedTokenSpaces,
}

impl std::fmt::Debug for MimoTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MimoTokenizer")
            .field("path", &self.path)
            .field("vocab_size", &self.vocab_size())
            .field("ids", &self.ids)
            .field("spaces", &self.spaces)
            .finish()
    }
}

impl MimoTokenizer {
    /// Loads `tokenizer.json` (or the one inside a model directory) and adds MIMO's tokens.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, TokenizerError> {
        let mut path = path.as_ref().to_path_buf();
        if path.is_dir() {
            path = path.join("tokenizer.json");
        }
        let load = |message: String| TokenizerError::Load {
            path: path.clone(),
            message,
        };
        if !path.is_file() {
            return Err(load(
                "no such file (give the model directory or its tokenizer.json; a sentencepiece \
                 tokenizer.model alone is not read)"
                    .into(),
            ));
        }
        let inner = Tokenizer::from_file(&path).map_err(|e| load(e.to_string()))?;
        Self::from_tokenizer(inner, path)
    }

    /// Wraps an already built tokenizer (`path` is for messages).
    pub fn from_tokenizer(mut inner: Tokenizer, path: PathBuf) -> Result<Self, TokenizerError> {
        let missing: Vec<AddedToken> = ADDED_TOKENS
            .iter()
            .filter(|t| !inner.get_added_vocabulary().get_vocab().contains_key(**t))
            .map(|t| AddedToken::from(*t, false).normalized(false))
            .collect();
        inner
            .add_tokens(missing)
            .map_err(|e| TokenizerError::Codec(e.to_string()))?;
        let added = inner.get_added_vocabulary().get_vocab();
        let lookup = |t: &str, table_only: bool| {
            let id = if table_only {
                added.get(t).copied()
            } else {
                added.get(t).copied().or_else(|| inner.token_to_id(t))
            };
            id.ok_or_else(|| TokenizerError::MissingToken {
                path: path.clone(),
                token: t.to_string(),
            })
        };
        let ids = SpecialIds {
            unk: lookup("<unk>", false)?,
            bos: lookup("<s>", false)?,
            eos: lookup("</s>", false)?,
            p_start: lookup("<p>", true)?,
            p_end: lookup("</p>", true)?,
            seg: lookup("<SEG>", true)?,
            image: lookup("<image>", true)?,
            im_start: lookup("<im_start>", true)?,
            im_end: lookup("<im_end>", true)?,
        };
        Ok(Self {
            inner,
            ids,
            path,
            spaces: AddedTokenSpaces::default(),
        })
    }

    /// The same tokenizer with another rule for the whitespace next to added tokens.
    pub fn with_added_token_spaces(mut self, spaces: AddedTokenSpaces) -> Self {
        self.spaces = spaces;
        self
    }

    /// The rule for the whitespace next to added tokens (default: transformers 4.31's).
    pub fn added_token_spaces(&self) -> AddedTokenSpaces {
        self.spaces
    }

    /// Special and added token ids.
    pub fn ids(&self) -> SpecialIds {
        self.ids
    }

    /// Vocabulary size including added tokens (the embedding rows the model needs).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }

    /// Token ids of `text`, with `<s>` first when `bos` (the file's post-processor is not
    /// used, so this does not depend on how the file configures it).
    /// Under [`AddedTokenSpaces::Strip`] the whitespace next to MIMO's added tokens is
    /// removed first, as transformers 4.31 does.
    pub fn encode(&self, text: &str, bos: bool) -> Result<Vec<u32>, TokenizerError> {
        let stripped;
        let text = match self.spaces {
            AddedTokenSpaces::Keep => text,
            AddedTokenSpaces::Strip => {
                stripped = strip_around_added(text);
                stripped.as_str()
            }
        };
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| TokenizerError::Codec(e.to_string()))?;
        let mut ids = Vec::with_capacity(enc.len() + 1);
        if bos {
            ids.push(self.ids.bos);
        }
        ids.extend_from_slice(enc.get_ids());
        Ok(ids)
    }

    /// Text of `ids`, the inverse of [`MimoTokenizer::encode`]: each run of ordinary tokens
    /// between added tokens is decoded on its own, which drops the dummy-prefix space the
    /// legacy pipeline put at its start, so `decode(encode(t)) == t` under
    /// [`AddedTokenSpaces::Keep`] — except for text holding a literal `"▁"`, which decodes as
    /// a space. Under `Strip` the pieces are joined with one space, as transformers 4.31
    /// decodes (`"Sure, <SEG> ."`). With `skip_special`,
    /// `<s>`, `</s>` and `<unk>` are dropped; MIMO's added tokens are not special and always
    /// stay (the grounding parser needs them).
    ///
    /// Byte-fallback tokens that do not form valid UTF-8 become one U+FFFD per invalid
    /// sequence (Rust's lossy conversion), where the `tokenizers` decoder replaces every byte
    /// of the group; valid text decodes identically. This keeps the decode of a prefix a
    /// prefix of the decode, which streaming relies on.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String, TokenizerError> {
        let added = self.inner.get_added_vocabulary().get_added_tokens_decoder();
        // Keep: the pieces side by side. Strip: transformers 4.31's slow `_decode`, which
        // joins them with one space (`spaces_between_special_tokens`), so that
        // "<p>liver</p><SEG>." reads "<p> liver </p> <SEG> .".
        let mut pieces: Vec<String> = Vec::new();
        let mut run: Vec<u32> = Vec::new();
        for &id in ids {
            match added.get(&id) {
                Some(t) => {
                    if !run.is_empty() {
                        pieces.push(self.decode_run(&run));
                        run.clear();
                    }
                    if !(skip_special && t.special) {
                        pieces.push(t.content.clone());
                    }
                }
                None => run.push(id),
            }
        }
        if !run.is_empty() {
            pieces.push(self.decode_run(&run));
        }
        Ok(match self.spaces {
            AddedTokenSpaces::Keep => pieces.concat(),
            AddedTokenSpaces::Strip => pieces.join(" "),
        })
    }

    /// Metaspace + byte-fallback decoding of ordinary tokens, minus one leading space.
    fn decode_run(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::new();
        for &id in ids {
            let Some(piece) = self.inner.id_to_token(id) else {
                continue;
            };
            match byte_token(&piece) {
                Some(b) => bytes.push(b),
                None => bytes.extend_from_slice(piece.replace('\u{2581}', " ").as_bytes()),
            }
        }
        let text = String::from_utf8_lossy(&bytes);
        text.strip_prefix(' ').unwrap_or(&text).to_string()
    }

    /// The `tokenizers` library's own decode of the whole sequence (what Python's
    /// `tokenizer.decode` gives: a space after each added token, from the dummy prefix).
    pub fn decode_raw(&self, ids: &[u32], skip_special: bool) -> Result<String, TokenizerError> {
        if ids.is_empty() {
            return Ok(String::new());
        }
        self.inner
            .decode(ids, skip_special)
            .map_err(|e| TokenizerError::Codec(e.to_string()))
    }

    /// The piece of one id (`"▁the"`, `"<0x0A>"`, `"<SEG>"`).
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// An incremental decoder for streaming generated tokens: each pushed id yields the new
    /// text it completes (none while a multi-byte character is still incomplete).
    pub fn stream(&self, skip_special: bool) -> TextStream<'_> {
        TextStream {
            tok: self,
            ids: Vec::new(),
            emitted: 0,
            skip_special,
        }
    }
}

/// The byte of a byte-fallback piece `<0xAB>`.
fn byte_token(piece: &str) -> Option<u8> {
    let hex = piece.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// `text` with the whitespace on both sides of each of MIMO's added tokens removed
/// (transformers 4.31 `PreTrainedTokenizer.tokenize`: the neighbours of a token added with
/// `add_tokens` are `rstrip`ped on the left and `lstrip`ped on the right).
fn strip_around_added(text: &str) -> String {
    let mut parts: Vec<(bool, &str)> = Vec::new();
    let mut rest = text;
    while let Some((at, token)) = ADDED_TOKENS
        .iter()
        .filter_map(|t| rest.find(t).map(|i| (i, *t)))
        .min_by_key(|&(i, t)| (i, std::cmp::Reverse(t.len())))
    {
        parts.push((false, &rest[..at]));
        parts.push((true, token));
        rest = &rest[at + token.len()..];
    }
    parts.push((false, rest));
    let mut out = String::with_capacity(text.len());
    for (k, &(is_token, s)) in parts.iter().enumerate() {
        if is_token {
            out.push_str(s);
            continue;
        }
        let mut s = s;
        if k + 1 < parts.len() && parts[k + 1].0 {
            s = s.trim_end();
        }
        if k > 0 && parts[k - 1].0 {
            s = s.trim_start();
        }
        out.push_str(s);
    }
    out
}

/// Incremental decoding (see [`MimoTokenizer::stream`]): decodes the whole sequence and emits
/// the new suffix, so spaces from the metaspace decoder and byte-fallback characters come
/// out exactly as a final `decode` would give them.
#[derive(Debug)]
pub struct TextStream<'a> {
    tok: &'a MimoTokenizer,
    ids: Vec<u32>,
    emitted: usize,
    skip_special: bool,
}

impl TextStream<'_> {
    /// Adds one id; returns the text it completes.
    pub fn push(&mut self, id: u32) -> Result<Option<String>, TokenizerError> {
        self.ids.push(id);
        let text = self.tok.decode(&self.ids, self.skip_special)?;
        // An incomplete UTF-8 sequence decodes to U+FFFD at the end: wait for more bytes.
        if text.ends_with('\u{FFFD}') {
            return Ok(None);
        }
        if text.len() <= self.emitted || !text.is_char_boundary(self.emitted) {
            return Ok(None);
        }
        let new = text[self.emitted..].to_string();
        self.emitted = text.len();
        Ok(Some(new))
    }
}

#[cfg(test)]
mod tests;
