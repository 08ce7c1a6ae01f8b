//! Training only the rows of added tokens: `embed_tokens` and `lm_head` split into the
//! frozen rows of the base vocabulary and a small trainable [`NewTokenRows`].
//!
//! LISA trains both matrices whole (`model.get_input_embeddings().requires_grad_(True)`,
//! `lm_head` in `modules_to_save`; LISA `train_ds.py`), which at 7B is 262 M trained
//! parameters with their AdamW state. With the rows split, gradients and optimiser state
//! exist for the added tokens only, and the forward is unchanged: the full matrices are the
//! concatenation of both parts.

use burn::module::Param;
use burn::prelude::*;

use super::Llama;

/// The rows of the tokens added after the base vocabulary, trained apart from the base rows.
#[derive(Module, Debug)]
pub struct NewTokenRows<B: Backend> {
    /// Their `embed_tokens` rows `[added, hidden]`.
    pub embed: Param<Tensor<B, 2>>,
    /// Their `lm_head` columns in burn's `[hidden, added]` layout; `None` when the head is
    /// tied to `embed_tokens`.
    pub head: Option<Param<Tensor<B, 2>>>,
}

impl<B: Backend> Llama<B> {
    /// Moves the rows of tokens `first_new..` of `embed_tokens` (and the columns of an untied
    /// `lm_head`) into [`Llama::new_token_rows`], trainable, leaving the base rows frozen.
    /// Logits and embeddings are unchanged. Errors when there is nothing to split, when the
    /// rows are already split, or when the head has a bias.
    pub fn split_token_rows(mut self, first_new: usize) -> Result<Self, String> {
        if self.new_token_rows.is_some() {
            return Err("the token rows are already split".into());
        }
        let w = self.model.embed_tokens.weight.val();
        let [vocab, hidden] = w.dims();
        if first_new == 0 || first_new >= vocab {
            return Err(format!(
                "cannot split the token rows at {first_new}: the vocabulary has {vocab} rows \
                 (the added tokens must follow at least one base token)"
            ));
        }
        // New leaves: a slice of a tracked parameter is not one.
        let frozen = |t: Tensor<B, 2>| Param::from_tensor(t.detach()).set_require_grad(false);
        // A copy of the few added rows: a slice shares the whole matrix's buffer, which would
        // stay alive in its loaded dtype beside the frozen base as long as these rows do (until
        // the first optimiser step replaced them: 1 GB of f32 matrices at 7B).
        let trained = |t: Tensor<B, 2>| {
            let (device, dtype) = (t.device(), t.dtype());
            let copy = Tensor::<B, 2>::from_data(t.into_data(), &device).cast(dtype);
            Param::from_tensor(copy).set_require_grad(true)
        };
        self.model.embed_tokens.weight = frozen(w.clone().slice([0..first_new, 0..hidden]));
        let embed = trained(w.slice([first_new..vocab, 0..hidden]));
        let head = match self.lm_head.as_mut() {
            Some(head) => {
                if head.bias.is_some() {
                    return Err("lm_head has a bias: its rows cannot be split".into());
                }
                let h = head.weight.val();
                // Copied into a contiguous matrix once: its columns are a strided view, which
                // a matmul would copy (and the graph keep) at every forward.
                let base = h.clone().slice([0..hidden, 0..first_new]);
                let (device, dtype) = (base.device(), base.dtype());
                head.weight =
                    frozen(Tensor::<B, 2>::from_data(base.into_data(), &device).cast(dtype));
                Some(trained(h.slice([0..hidden, first_new..vocab])))
            }
            None => None,
        };
        self.new_token_rows = Some(NewTokenRows { embed, head });
        Ok(self)
    }

    /// Puts split rows back into `embed_tokens` and `lm_head` (the layout every checkpoint
    /// format has); a model without split rows is returned unchanged. The whole matrices
    /// are frozen afterwards: set the trainable set again if they should train.
    pub fn merge_token_rows(mut self) -> Self {
        let Some(rows) = self.new_token_rows.take() else {
            return self;
        };
        let frozen = |t: Tensor<B, 2>| Param::from_tensor(t.detach()).set_require_grad(false);
        self.model.embed_tokens.weight = frozen(self.token_embeddings_with(Some(&rows)));
        if let (Some(head), Some(new)) = (self.lm_head.as_mut(), rows.head.as_ref()) {
            head.weight = frozen(Tensor::cat(vec![head.weight.val(), new.val()], 1));
        }
        self
    }

    fn token_embeddings_with(&self, rows: Option<&NewTokenRows<B>>) -> Tensor<B, 2> {
        let base = self.model.embed_tokens.weight.val();
        let dtype = base.dtype();
        match rows {
            Some(r) => Tensor::cat(vec![base, r.embed.val().cast(dtype)], 0),
            None => base,
        }
    }

    /// The whole `embed_tokens` matrix `[vocab, hidden]`, split rows included.
    pub fn token_embeddings(&self) -> Tensor<B, 2> {
        self.token_embeddings_with(self.new_token_rows.as_ref())
    }

    /// The number of tokens, split rows included.
    pub fn vocab_size(&self) -> usize {
        self.model.embed_tokens.weight.dims()[0]
            + self
                .new_token_rows
                .as_ref()
                .map_or(0, |r| r.embed.dims()[0])
    }
}
