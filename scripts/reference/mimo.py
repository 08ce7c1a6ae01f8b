#!/usr/bin/env python3
"""Reference fixtures for mimo-core's MIMO model: the tiny model stated in plain PyTorch.

MIMO is LISA-shaped: a frozen CLIP vision tower, a LLaMA with LoRA, a SAM whose mask decoder is
trained, plus a visual prompt encoder (`vp_encoder`) and a query "aligner" that turns image
features, visual prompts and the instruction text into N_q extra image tokens. This script is
the specification the Rust side matches: every step below is written out literally.

Reuses (never rewrites) the tiny fixtures of the other scripts:
  clip/hf_tiny_vision.safetensors   CLIP vision tower (clip.py)
  sam/tiny_a.safetensors            SAM, 128 px, 8x8 embedding grid, prompt dim 32 (sam.py)
  llm/chat/                         LLaMA, hidden 32, vocab 706 with MIMO's added tokens (generate.py)
Both configurations are restated here and checked against those scripts' io fixtures.

Writes into mimo-core/fixtures/mimo/:
  tiny.json                  the sizes and token ids of the tiny model
  new_modules.safetensors    vp_encoder.*, aligner.*, mm_projector.*, text_hidden_fcs.* (random, seeded)
  adapter/                   the LoRA adapter (peft save_pretrained: adapter_config.json,
                             adapter_model.safetensors), lora_B random so that it matters
  io.safetensors             inputs, intermediates, losses and gradients of one training batch
                             (two images, two conversation rows) for three variants:
                               al_        with the aligner
                               na_        without the aligner (prompt tokens projected by mm_projector)
                               al_empty_  with the aligner, image 1 without any visual prompt
                             gradients (`{al_,na_}grad.<parameter key>`) after loss.backward();
                             and a greedy answer (`gen_*`) with <SEG> forced at steps 3 and 7.

Environment: the reference venv of scripts/reference/README.md (torch, torchvision, safetensors,
segment-anything, transformers, peft, tokenizers).
Run from the repository root: ~/.cache/mimo-ref-venv/bin/python scripts/reference/mimo.py
"""
import json
import math
import os
import shutil
from functools import partial

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file, save_file
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
from tokenizers import Tokenizer
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaForCausalLM

FIX = os.path.join(os.path.dirname(__file__), "..", "..", "mimo-core", "fixtures")
OUT = os.path.join(FIX, "mimo")
torch.use_deterministic_algorithms(True)
torch.set_num_threads(1)
torch.manual_seed(0)  # peft's kaiming-uniform lora_A init draws from the global generator

# ---------------------------------------------------------------------------------------------
# Sizes and token ids
# ---------------------------------------------------------------------------------------------
TINY = dict(
    clip_width=64,        # Dc
    prompt_dim=32,        # C, SAM's prompt embedding dim
    llm_width=32,         # D
    aligner_dim=32,       # d
    aligner_heads=4,
    aligner_depth=2,
    num_queries=4,        # N_q
    aligner_ffn=64,
    aligner_ln_eps=1e-5,
    clip_tokens=16,       # (56 / 14)^2, CLS dropped
    clip_select_layer=-2,
    sam_grid=8,
    lora_r=4,
    lora_alpha=8,
    lora_targets=["q_proj", "v_proj"],
    image_token_index=-200,
    ignore_index=-100,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
    tokens={"<p>": 700, "</p>": 701, "<SEG>": 702, "<image>": 703, "<im_start>": 704, "<im_end>": 705},
    ce_weight=1.0,
    bce_weight=2.0,
    dice_weight=0.5,
)
Dc, C, D, d = TINY["clip_width"], TINY["prompt_dim"], TINY["llm_width"], TINY["aligner_dim"]
HEADS, DEPTH, NQ, FFN = TINY["aligner_heads"], TINY["aligner_depth"], TINY["num_queries"], TINY["aligner_ffn"]
IMAGE, IGNORE, SEG, EOS = TINY["image_token_index"], TINY["ignore_index"], TINY["tokens"]["<SEG>"], 2
NEG = torch.finfo(torch.float32).min  # key-padding fill value in the aligner's attention scores

SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
          "The assistant gives helpful, detailed, and polite answers to the user's questions.")
# (question, answer) per row; `<image>` becomes `<im_start><image><im_end>` (LISA, mm_use_im_start_end)
ROWS = [("<image>\nPlease segment the liver and the kidney.", "It shows <p>liver</p><SEG> and <p>kidney</p><SEG>."),
        ("<image>\nWhat is in this image?", "<p>lesion</p><SEG>.")]
GEN_QUESTION = "<image>\nWhat is in this image?"
GEN_MAX_NEW, GEN_FORCED = 16, [3, 7]  # 0-based indices of the new token: gen_tokens[3] = gen_tokens[7] = <SEG>

SIZES = [(40, 56), (64, 48)]                 # original (H, W) of the two images
SAM_RESIZED = [(91, 128), (128, 96)]         # ResizeLongestSide(128): int(h * scale + 0.5)
PROMPT_POINTS = [[[30, 12], [5, 4], [44, 33]], [[10, 50], [0, 0], [0, 0]]]   # (x, y) original pixels
PROMPT_LABELS = [[1, 2, 3], [0, -1, -1]]      # 1 fg, 0 bg, 2/3 box corners, -1 padding
PROMPT_LABELS_EMPTY = [[1, 2, 3], [-1, -1, -1]]


# ---------------------------------------------------------------------------------------------
# Frozen pretrained parts (tiny fixtures of clip.py, sam.py, generate.py)
# ---------------------------------------------------------------------------------------------
def load_clip():
    """hf_tiny.ron: HF CLIPVisionModel, keys without the `vision_model.` prefix (transformers v5)."""
    cfg = CLIPVisionConfig(hidden_size=64, intermediate_size=112, num_hidden_layers=3, num_attention_heads=4,
                           image_size=56, patch_size=14, projection_dim=32, hidden_act="quick_gelu",
                           layer_norm_eps=1e-5)
    cfg._attn_implementation = "eager"
    clip = CLIPVisionModel(cfg).eval()
    clip.load_state_dict(load_file(f"{FIX}/clip/hf_tiny_vision.safetensors"), strict=True)
    io = load_file(f"{FIX}/clip/hf_tiny_io.safetensors")
    with torch.no_grad():
        hs = clip(pixel_values=io["pixel_values"], output_hidden_states=True).hidden_states
    for i, h in enumerate(hs):
        assert torch.allclose(h, io[f"hidden_states_{i}"], atol=1e-5), f"clip hidden_states_{i}"
    return clip.requires_grad_(False)


def load_sam():
    """tiny_a.ron, built as sam.py builds it."""
    sam = Sam(
        image_encoder=ImageEncoderViT(
            img_size=128, patch_size=16, embed_dim=48, depth=2, num_heads=2, mlp_ratio=4.0, out_chans=32,
            qkv_bias=True, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), use_rel_pos=True,
            rel_pos_zero_init=True, window_size=3, global_attn_indexes=[1]),
        prompt_encoder=PromptEncoder(embed_dim=32, image_embedding_size=(8, 8), input_image_size=(128, 128),
                                     mask_in_chans=16),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=32, mlp_dim=64, num_heads=2),
            transformer_dim=32, iou_head_depth=3, iou_head_hidden_dim=32),
        pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375],
    ).eval()
    sam.load_state_dict(load_file(f"{FIX}/sam/tiny_a.safetensors"), strict=True)
    io = load_file(f"{FIX}/sam/tiny_a_io.safetensors")
    with torch.no_grad():
        x = sam.preprocess(io["resized"].permute(2, 0, 1)[None].float())
        assert torch.allclose(sam.image_encoder(x), io["image_embeddings"], atol=1e-4), "sam image encoder"
        sparse, dense = sam.prompt_encoder(points=None, boxes=None, masks=None)
        low, _ = sam.mask_decoder(image_embeddings=io["image_embeddings"], image_pe=sam.prompt_encoder.get_dense_pe(),
                                  sparse_prompt_embeddings=torch.cat([sparse.expand(2, -1, -1), io["text_embeds"]], 1),
                                  dense_prompt_embeddings=dense.expand(2, -1, -1, -1), multimask_output=False)
        assert torch.allclose(low, io["text_low_res"], atol=1e-4), "sam mask decoder"
    sam.image_encoder.requires_grad_(False)
    sam.prompt_encoder.requires_grad_(False)
    sam.mask_decoder.requires_grad_(True)
    return sam


def load_llm(gen):
    """llm/chat LLaMA + LoRA(q_proj, v_proj); embed_tokens and lm_head trained in full (LISA)."""
    base = LlamaForCausalLM.from_pretrained(f"{FIX}/llm/chat", attn_implementation="eager").eval()
    llm = get_peft_model(base, LoraConfig(r=TINY["lora_r"], lora_alpha=TINY["lora_alpha"], lora_dropout=0.0,
                                          target_modules=TINY["lora_targets"], bias="none", task_type="CAUSAL_LM"))
    with torch.no_grad():
        for k, p in llm.named_parameters():
            if "lora_B" in k:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    inner = llm.base_model.model  # the LlamaForCausalLM
    inner.model.embed_tokens.weight.requires_grad_(True)
    inner.lm_head.weight.requires_grad_(True)
    return llm.eval()


# ---------------------------------------------------------------------------------------------
# New modules
# ---------------------------------------------------------------------------------------------
class VisualPromptEncoder(nn.Module):
    """Visual prompt encoder: SAM-style point/box tokens (random-Fourier PE + label embedding), projected to the
    CLIP width."""

    def __init__(self):
        super().__init__()
        self.pe_gaussian = nn.Parameter(torch.zeros(2, C // 2), requires_grad=False)
        self.point_embeddings = nn.ModuleList([nn.Embedding(1, C) for _ in range(4)])
        self.not_a_point_embed = nn.Embedding(1, C)
        self.proj = nn.Linear(C, Dc)

    def forward(self, points, labels, sizes):
        """points [N, Np, 2] (x, y) in original pixels, labels [N, Np] int64, sizes [N, 2] (H, W).
        Returns V [N, Np, Dc] and vp_pad [N, Np] (label == -1)."""
        h, w = sizes[:, 0], sizes[:, 1]
        s = torch.maximum(h, w)
        pad_x = torch.where(w < s, (s - w) // 2, 0)  # expand2square offset
        pad_y = torch.where(h < s, (s - h) // 2, 0)
        pad = torch.stack([pad_x, pad_y], -1).float()[:, None, :]                 # [N, 1, 2]
        c = (points + pad + 0.5) / s.float()[:, None, None]                       # [N, Np, 2] in [0, 1]
        x = (2 * c - 1) @ self.pe_gaussian                                        # [N, Np, C/2]
        x = 2 * math.pi * x
        pe = torch.cat([torch.sin(x), torch.cos(x)], -1)                          # [N, Np, C]
        table = torch.cat([e.weight for e in self.point_embeddings])              # [4, C]
        tok = pe + table[labels.clamp(min=0)]
        vp_pad = labels == -1
        tok = torch.where(vp_pad[..., None], self.not_a_point_embed.weight[0], tok)  # pe * 0 + not_a_point
        return self.proj(tok), vp_pad


class Attention(nn.Module):
    """Multi-head attention with biased q/k/v/out projections and an optional key-padding mask."""

    def __init__(self):
        super().__init__()
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(d, d) for _ in range(4))

    def forward(self, q, kv, key_pad=None):
        b, lq, _ = q.shape
        lk, hd = kv.shape[1], d // HEADS
        q = self.q_proj(q).view(b, lq, HEADS, hd).transpose(1, 2)               # [b, h, lq, hd]
        k = self.k_proj(kv).view(b, lk, HEADS, hd).transpose(1, 2)
        v = self.v_proj(kv).view(b, lk, HEADS, hd).transpose(1, 2)
        scores = q @ k.transpose(-1, -2) / math.sqrt(hd)                         # [b, h, lq, lk]
        if key_pad is not None:
            scores = scores.masked_fill(key_pad[:, None, None, :], NEG)
        out = scores.softmax(-1) @ v                                              # [b, h, lq, hd]
        return self.out_proj(out.transpose(1, 2).reshape(b, lq, d))


class Mlp(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d, FFN), nn.Linear(FFN, d)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))  # exact (erf) GELU


class AlignerBlock(nn.Module):
    def __init__(self):
        super().__init__()
        ln = partial(nn.LayerNorm, d, eps=TINY["aligner_ln_eps"])
        self.ln1, self.self_attn = ln(), Attention()
        self.ln2, self.ln_kv, self.cross_attn = ln(), ln(), Attention()
        self.ln3, self.mlp = ln(), Mlp()

    def forward(self, q, ctx, key_pad):
        h = self.ln1(q)
        q = q + self.self_attn(h, h)
        q = q + self.cross_attn(self.ln2(q), self.ln_kv(ctx), key_pad)
        return q + self.mlp(self.ln3(q))


class Aligner(nn.Module):
    """Multi-modal Input Aligner: N_q learned queries attend to [image features, visual prompts, instruction text]."""

    def __init__(self):
        super().__init__()
        self.query = nn.Parameter(torch.zeros(NQ, d))
        self.type_embed = nn.Parameter(torch.zeros(3, d))
        self.ln_img = nn.LayerNorm(Dc, eps=TINY["aligner_ln_eps"])
        self.img_ctx = nn.Linear(Dc, d)
        self.txt_ctx = nn.Linear(D, d)
        self.blocks = nn.ModuleList([AlignerBlock() for _ in range(DEPTH)])
        self.ln_f = nn.LayerNorm(d, eps=TINY["aligner_ln_eps"])
        self.llm_proj = nn.Linear(d, D)

    def forward(self, f_img, v, vp_pad, t, instr_mask):
        """f_img [N, 16, Dc], v [N, Np, Dc], vp_pad [N, Np], t [N, L, D], instr_mask [N, L] -> A [N, N_q, D]."""
        ci = self.img_ctx(self.ln_img(f_img))
        cv = self.img_ctx(self.ln_img(v))
        ct = self.txt_ctx(t)
        ctx = torch.cat([ci + self.type_embed[0], cv + self.type_embed[1], ct + self.type_embed[2]], 1)
        img_pad = torch.zeros(f_img.shape[:2], dtype=torch.bool)
        key_pad = torch.cat([img_pad, vp_pad, ~instr_mask], 1)
        q = self.query[None].expand(f_img.shape[0], -1, -1)
        for blk in self.blocks:
            q = blk(q, ctx, key_pad)
        return self.llm_proj(self.ln_f(q))


class NewModules(nn.Module):
    """Everything of MIMO that is not CLIP, SAM or the LLM; its state_dict is new_modules.safetensors."""

    def __init__(self):
        super().__init__()
        self.vp_encoder = VisualPromptEncoder()
        self.aligner = Aligner()
        self.mm_projector = nn.Linear(Dc, D)
        self.text_hidden_fcs = nn.ModuleList([nn.Sequential(nn.Linear(D, D), nn.ReLU(inplace=False), nn.Linear(D, C))])


def expected_new_keys():
    keys = ["vp_encoder.pe_gaussian", "vp_encoder.not_a_point_embed.weight", "vp_encoder.proj.weight",
            "vp_encoder.proj.bias"] + [f"vp_encoder.point_embeddings.{i}.weight" for i in range(4)]
    lin = lambda p: [f"{p}.weight", f"{p}.bias"]
    keys += ["aligner.query", "aligner.type_embed"] + lin("aligner.ln_img") + lin("aligner.img_ctx") \
        + lin("aligner.txt_ctx") + lin("aligner.ln_f") + lin("aligner.llm_proj")
    for i in range(DEPTH):
        b = f"aligner.blocks.{i}"
        for m in ["ln1", "ln2", "ln_kv", "ln3", "mlp.fc1", "mlp.fc2"]:
            keys += lin(f"{b}.{m}")
        for a in ["self_attn", "cross_attn"]:
            for p in ["q_proj", "k_proj", "v_proj", "out_proj"]:
                keys += lin(f"{b}.{a}.{p}")
    keys += lin("mm_projector") + lin("text_hidden_fcs.0.0") + lin("text_hidden_fcs.0.2")
    return set(keys)


def init_new(new, sam, gen):
    """Random, seeded, nothing trivial: Linear W ~ N(0, 1/fan_in), biases 0.1 N, LayerNorm 1 + 0.1 N / 0.1 N."""
    pe = sam.prompt_encoder
    with torch.no_grad():
        for name, p in new.named_parameters():
            if name == "vp_encoder.pe_gaussian":
                p.copy_(pe.pe_layer.positional_encoding_gaussian_matrix)
            elif name.startswith("vp_encoder.point_embeddings."):
                i = int(name.split(".")[2])
                p.copy_(pe.point_embeddings[i].weight + 0.05 * torch.randn(p.shape, generator=gen))
            elif name == "vp_encoder.not_a_point_embed.weight":
                p.copy_(pe.not_a_point_embed.weight + 0.05 * torch.randn(p.shape, generator=gen))
            elif name in ("aligner.query", "aligner.type_embed"):
                p.copy_(torch.randn(p.shape, generator=gen))
            elif ".ln" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
            elif name.endswith("weight"):
                p.copy_(torch.randn(p.shape, generator=gen) / p.shape[1] ** 0.5)
            else:  # Linear and LayerNorm biases
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    new.vp_encoder.pe_gaussian.requires_grad_(False)


# ---------------------------------------------------------------------------------------------
# Conversations (LISA: model/llava/mm_utils.py tokenizer_image_token, utils/dataset.py targets;
# the same port as scripts/reference/tokenizer.py)
# ---------------------------------------------------------------------------------------------
def conversation(question, answer):
    """Vicuna v1 get_prompt(); answer None = the inference prompt ending at " ASSISTANT:"."""
    text = SYSTEM + " " + "USER: " + question + " " + "ASSISTANT:" + ("" if answer is None else " " + answer + "</s>")
    return text.replace("<image>", "<im_start><image><im_end>")


def tokenizer_image_token(tok, text):
    """Each `<image>` chunk tokenised with BOS in front; the BOS of later chunks dropped; -200 in between."""
    chunks = [[1] + tok.encode(c, add_special_tokens=False).ids for c in text.split("<image>")]
    out = [1]
    for i, c in enumerate(chunks):
        out.extend(c[1:])
        if i < len(chunks) - 1:
            out.append(IMAGE)
    return out


def lisa_targets(tok, text):
    """Labels: -100 for BOS and each round's instruction (through " ASSISTANT:"), the answer and </s> kept."""
    ids = tokenizer_image_token(tok, text)
    target, cur = list(ids), 1
    target[0] = IGNORE
    sep = " ASSISTANT: "
    for rou in text.split("</s>"):
        if rou == "":
            break
        inst, _ = rou.split(sep)
        round_len = len(tokenizer_image_token(tok, rou))
        inst_len = len(tokenizer_image_token(tok, inst + sep)) - 2
        target[cur:cur + inst_len] = [IGNORE] * inst_len
        cur += round_len
    target[cur:] = [IGNORE] * (len(target) - cur)
    assert cur == len(ids), (cur, len(ids))
    return ids, target


def batch_rows(tok):
    rows = [lisa_targets(tok, conversation(q, a)) for q, a in ROWS]
    width = max(len(i) for i, _ in rows)
    input_ids = torch.tensor([i + [0] * (width - len(i)) for i, _ in rows])
    labels = torch.tensor([t + [IGNORE] * (width - len(t)) for _, t in rows])
    attention_mask = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i, _ in rows])
    return input_ids, labels, attention_mask


def instruction_mask(input_ids, attention_mask, labels=None):
    """True after the placeholder, on non-padding tokens, before the first supervised (label != -100) token."""
    m = torch.zeros(input_ids.shape, dtype=torch.bool)
    for r in range(input_ids.shape[0]):
        i0 = int((input_ids[r] == IMAGE).nonzero())
        end = int(attention_mask[r].sum())
        if labels is not None:
            sup = (labels[r] != IGNORE).nonzero().flatten()
            sup = sup[sup > i0]
            if len(sup):
                end = min(end, int(sup[0]))
        m[r, i0 + 1:end] = True
    return m


# ---------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------
def embed(llm, ids):
    return llm.get_input_embeddings()(torch.where(ids == IMAGE, 0, ids))


def image_tokens(new, f_img, v, vp_pad, t, instr_mask, use_aligner):
    """X_r per image: 16 projected CLIP tokens + N_q aligner tokens, or + projected valid prompt tokens."""
    img = new.mm_projector(f_img)
    if use_aligner:
        a = new.aligner(f_img, v, vp_pad, t, instr_mask)
        return [torch.cat([img[r], a[r]]) for r in range(len(img))], a
    return [torch.cat([img[r], new.mm_projector(v[r][~vp_pad[r]])]) for r in range(len(img))], None


def assemble(llm, input_ids, labels, attention_mask, x):
    """Replace each row's -200 by its K_r image tokens, right-pad to the longest row."""
    e = embed(llm, input_ids)
    embs, labs, index_maps = [], [], []
    for r in range(input_ids.shape[0]):
        n = int(attention_mask[r].sum())
        i0 = int((input_ids[r] == IMAGE).nonzero())
        k = x[r].shape[0]
        embs.append(torch.cat([e[r, :i0], x[r], e[r, i0 + 1:n]]))
        if labels is not None:
            labs.append(torch.cat([labels[r, :i0], torch.full((k,), IGNORE), labels[r, i0 + 1:n]]))
        index_maps.append(lambda j, i0=i0, k=k: j if j < i0 else j + k - 1)
    width = max(len(t) for t in embs)
    emb = torch.stack([F.pad(t, (0, 0, 0, width - len(t))) for t in embs])
    mask = torch.tensor([[1] * len(t) + [0] * (width - len(t)) for t in embs])
    lab = torch.stack([F.pad(t, (0, width - len(t)), value=IGNORE) for t in labs]) if labels is not None else None
    return emb, lab, mask, index_maps


def llm_forward(llm, emb, mask):
    out = llm(inputs_embeds=emb, attention_mask=mask, output_hidden_states=True)
    hidden = out.hidden_states[-1]  # after the final RMSNorm
    assert torch.allclose(llm.get_output_embeddings()(hidden), out.logits, atol=1e-5)
    return out.logits, hidden


def decode_masks(new, sam, e_sam, hidden_seg, input_size, original_size):
    """[SEG] hidden states [n, D] -> post-processed mask logits [n, H, W] (LISA: text embeds as the only sparse prompt)."""
    e = new.text_hidden_fcs[0](hidden_seg)
    n = e.shape[0]
    g = TINY["sam_grid"]
    sparse = e.unsqueeze(1)
    dense = sam.prompt_encoder.no_mask_embed.weight.reshape(1, C, 1, 1).expand(n, C, g, g)
    low, _ = sam.mask_decoder(image_embeddings=e_sam, image_pe=sam.prompt_encoder.get_dense_pe(),
                              sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=False)
    return sam.postprocess_masks(low, input_size=input_size, original_size=original_size)[:, 0], e


def dice_loss(p_logits, t, n):
    p = p_logits.sigmoid().flatten(1)
    t = t.flatten(1)
    num = 2 * (p / 1000 * t).sum(-1)
    den = (p / 1000).sum(-1) + (t / 1000).sum(-1)
    return (1 - (num + 1e-6) / (den + 1e-6)).sum() / (n + 1e-8)


def bce_loss(p_logits, t, n):
    return F.binary_cross_entropy_with_logits(p_logits, t, reduction="none").flatten(1).mean(1).sum() / (n + 1e-8)


def mimo_forward(models, batch, prompt_labels, use_aligner):
    clip, sam, llm, new = models
    input_ids, labels, attention_mask = batch["input_ids"], batch["labels"], batch["attention_mask"]
    with torch.no_grad():
        f_img = clip(pixel_values=batch["clip_pixels"], output_hidden_states=True).hidden_states[-2][:, 1:]
        e_sam = sam.image_encoder(batch["sam_pixels"])
    v, vp_pad = new.vp_encoder(batch["prompt_points"], prompt_labels, batch["sizes"])
    instr_mask = instruction_mask(input_ids, attention_mask, labels)
    t = embed(llm, input_ids).detach()
    x, a = image_tokens(new, f_img, v, vp_pad, t, instr_mask, use_aligner)
    emb, lab, mask, index_maps = assemble(llm, input_ids, labels, attention_mask, x)
    logits, hidden = llm_forward(llm, emb, mask)
    ce = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), lab[:, 1:].reshape(-1), ignore_index=IGNORE)

    seg_rows, seg_positions, preds, embeds = [], [], [], []
    bce_total, dice_total, n_masks = 0.0, 0.0, 0
    for r in range(input_ids.shape[0]):
        pos = [index_maps[r](int(p) - 1) for p in (input_ids[r] == SEG).nonzero().flatten()]
        seg_rows += [r] * len(pos)
        seg_positions += pos
        h, w = batch["sizes"][r].tolist()
        pred, e = decode_masks(new, sam, e_sam[r:r + 1], hidden[r, pos], tuple(batch["sam_resized"][r].tolist()), (h, w))
        gt = batch[f"gt_masks_{r}"]
        n = len(pos)
        assert gt.shape[0] == n
        bce_total = bce_total + bce_loss(pred, gt, n) * n
        dice_total = dice_total + dice_loss(pred, gt, n) * n
        n_masks += n
        preds.append(pred)
        embeds.append(e)
    mask_bce = TINY["bce_weight"] * bce_total / (n_masks + 1e-8)
    mask_dice = TINY["dice_weight"] * dice_total / (n_masks + 1e-8)
    loss = TINY["ce_weight"] * ce + mask_bce + mask_dice
    out = dict(F_img=f_img, sam_image_embeddings=e_sam, V=v, instr_mask=instr_mask.long(), inputs_embeds=emb,
               expanded_labels=lab, expanded_attention_mask=mask, hidden=hidden,
               seg_positions=torch.tensor(seg_positions), seg_rows=torch.tensor(seg_rows),
               pred_embeddings=torch.cat(embeds), pred_masks_0=preds[0], pred_masks_1=preds[1],
               ce=ce.reshape(1), mask_bce=mask_bce.reshape(1), mask_dice=mask_dice.reshape(1), loss=loss.reshape(1))
    if a is not None:
        out["A"] = a
    return out


# ---------------------------------------------------------------------------------------------
# Part 2: greedy answer with forced <SEG>
# ---------------------------------------------------------------------------------------------
@torch.no_grad()
def greedy(models, tok, batch):
    """Image 0, aligner. A (and so X) is computed once from the prompt (what a KV-cached loop sees);
    each step runs the full LLM forward over [prompt with X, new tokens] and takes the last position."""
    clip, sam, llm, new = models
    ids = torch.tensor([tokenizer_image_token(tok, conversation(GEN_QUESTION, None))])
    mask = torch.ones_like(ids)
    f_img = clip(pixel_values=batch["clip_pixels"][:1], output_hidden_states=True).hidden_states[-2][:, 1:]
    e_sam = sam.image_encoder(batch["sam_pixels"][:1])
    v, vp_pad = new.vp_encoder(batch["prompt_points"][:1], batch["prompt_labels"][:1], batch["sizes"][:1])
    instr_mask = instruction_mask(ids, mask)  # no labels: every token after the placeholder
    x, a = image_tokens(new, f_img, v, vp_pad, embed(llm, ids), instr_mask, True)
    prompt_emb, _, _, _ = assemble(llm, ids, None, mask, x)
    tokens, seg_hidden = [], []
    for step in range(GEN_MAX_NEW):
        new_emb = embed(llm, torch.tensor([tokens], dtype=torch.long))
        emb = torch.cat([prompt_emb, new_emb], 1)
        logits, hidden = llm_forward(llm, emb, torch.ones(emb.shape[:2], dtype=torch.long))
        t = int(logits[0, -1].argmax())
        if step in GEN_FORCED:
            t = SEG
        tokens.append(t)
        if t == SEG:
            seg_hidden.append(hidden[0, -1])
        if t == EOS:
            break
    seg_hidden = torch.stack(seg_hidden)
    h, w = batch["sizes"][0].tolist()
    masks, _ = decode_masks(new, sam, e_sam, seg_hidden, tuple(batch["sam_resized"][0].tolist()), (h, w))
    return dict(gen_prompt_ids=ids, gen_instr_mask=instr_mask.long(), gen_A=a, gen_tokens=torch.tensor(tokens),
                gen_forced_steps=torch.tensor(GEN_FORCED), gen_seg_hidden=seg_hidden, gen_masks=masks)


# ---------------------------------------------------------------------------------------------
def make_batch(tok, gen):
    clip_pixels = torch.randn(2, 3, 56, 56, generator=gen)
    sam_pixels = torch.zeros(2, 3, 128, 128)
    for r, (h, w) in enumerate(SAM_RESIZED):
        sam_pixels[r, :, :h, :w] = torch.randn(3, h, w, generator=gen)
    gts = {}
    for r, ((h, w), n) in enumerate(zip(SIZES, [2, 1])):
        m = torch.zeros(n, h, w)
        for i in range(n):  # union of two random rectangles
            for _ in range(2):
                y0, x0 = int(torch.randint(0, h - 4, (1,), generator=gen)), int(torch.randint(0, w - 4, (1,), generator=gen))
                y1 = y0 + 3 + int(torch.randint(0, h - y0 - 3, (1,), generator=gen))
                x1 = x0 + 3 + int(torch.randint(0, w - x0 - 3, (1,), generator=gen))
                m[i, y0:y1, x0:x1] = 1.0
        gts[f"gt_masks_{r}"] = m
    input_ids, labels, attention_mask = batch_rows(tok)
    return dict(clip_pixels=clip_pixels, sam_pixels=sam_pixels, sam_resized=torch.tensor(SAM_RESIZED),
                sizes=torch.tensor(SIZES), prompt_points=torch.tensor(PROMPT_POINTS, dtype=torch.float32),
                prompt_labels=torch.tensor(PROMPT_LABELS), prompt_labels_empty=torch.tensor(PROMPT_LABELS_EMPTY),
                input_ids=input_ids, labels=labels, attention_mask=attention_mask, **gts)


def grads(models, with_aligner):
    _, sam, llm, new = models
    keys = ["vp_encoder.proj.weight", "vp_encoder.point_embeddings.1.weight", "vp_encoder.point_embeddings.2.weight"]
    if with_aligner:
        keys += ["aligner.query", "aligner.blocks.0.cross_attn.q_proj.weight", "aligner.blocks.1.mlp.fc2.weight",
                 "aligner.llm_proj.weight"]
    keys += ["mm_projector.weight", "text_hidden_fcs.0.0.weight", "text_hidden_fcs.0.2.bias"]
    params = dict(new.named_parameters())
    params.update(sam.named_parameters())
    for k, p in llm.named_parameters():
        k = k.replace(".default", "")
        params[k if "lora_" in k else k.removeprefix("base_model.model.")] = p
    keys += ["mask_decoder.output_hypernetworks_mlps.0.layers.0.weight", "mask_decoder.iou_token.weight"]
    for layer, proj in [(0, "q_proj"), (1, "v_proj")]:
        keys += [f"base_model.model.model.layers.{layer}.self_attn.{proj}.lora_{ab}.weight" for ab in "AB"]
    if with_aligner:  # the full [vocab, D] matrices once: they are most of the file's size
        keys += ["model.embed_tokens.weight", "lm_head.weight"]
    out = {}
    for k in keys:
        g = params[k].grad
        assert g is not None, f"{k} got no gradient"
        assert g.abs().sum() > 0, f"{k} has a zero gradient"
        out[f"grad.{k}"] = g.clone()
    return out


def check_frozen(models):
    clip, sam, llm, new = models
    frozen = [("clip." + k, p) for k, p in clip.named_parameters()]
    frozen += [(k, p) for k, p in sam.named_parameters() if k.startswith(("image_encoder.", "prompt_encoder."))]
    frozen += [(k, p) for k, p in llm.named_parameters()
               if "lora_" not in k and not k.endswith(("embed_tokens.weight", "lm_head.weight"))]
    frozen += [("vp_encoder.pe_gaussian", new.vp_encoder.pe_gaussian)]
    for k, p in frozen:
        assert not p.requires_grad and p.grad is None, k
    trainable = [k for k, p in llm.named_parameters() if p.requires_grad]
    assert len(trainable) == 2 + 2 * 2 * 2, trainable  # embed, lm_head, (A, B) x (q, v) x 2 layers


def zero_grads(models):
    for m in models:
        for p in m.parameters():
            p.grad = None


def main():
    os.makedirs(OUT, exist_ok=True)
    gen = torch.Generator().manual_seed(20240611)
    tok = Tokenizer.from_file(f"{FIX}/llm/chat/tokenizer.json")
    for t, i in TINY["tokens"].items():
        assert tok.token_to_id(t) == i, t
    clip, sam, llm = load_clip(), load_sam(), load_llm(gen)
    new = NewModules().eval()
    assert set(new.state_dict()) == expected_new_keys(), set(new.state_dict()) ^ expected_new_keys()
    init_new(new, sam, gen)
    models = (clip, sam, llm, new)
    batch = make_batch(tok, gen)

    io = dict(batch)
    for prefix, labels, aligner, backward in [("al_", "prompt_labels", True, True), ("na_", "prompt_labels", False, True),
                                              ("al_empty_", "prompt_labels_empty", True, False)]:
        zero_grads(models)
        with torch.set_grad_enabled(backward):
            out = mimo_forward(models, batch, batch[labels], aligner)
        if backward:
            out["loss"].sum().backward()
            check_frozen(models)
            out.update(grads(models, aligner))
        if prefix == "al_":
            io["F_img"] = out["F_img"]
            io["sam_image_embeddings"] = out["sam_image_embeddings"]
        out.pop("F_img")
        out.pop("sam_image_embeddings")
        io.update({prefix + k: v for k, v in out.items()})
        print(prefix, " ".join(f"{k}={out[k].item():.6f}" for k in ["ce", "mask_bce", "mask_dice", "loss"]))
    zero_grads(models)
    io.update(greedy(models, tok, batch))

    save_file({k: v.detach().contiguous() for k, v in io.items()}, f"{OUT}/io.safetensors")
    save_file({k: v.detach().contiguous() for k, v in new.state_dict().items()}, f"{OUT}/new_modules.safetensors")
    adapter = f"{OUT}/adapter"
    shutil.rmtree(adapter, ignore_errors=True)
    llm.save_pretrained(adapter, save_embedding_layers=False)
    os.remove(f"{adapter}/README.md")  # peft's model card template
    with open(f"{adapter}/adapter_config.json") as f:
        cfg = json.load(f)
    cfg["base_model_name_or_path"] = "mimo-core/fixtures/llm/chat"  # not this machine's absolute path
    cfg["target_modules"] = sorted(cfg["target_modules"])  # peft keeps a set: order varies with PYTHONHASHSEED
    with open(f"{adapter}/adapter_config.json", "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
    with open(f"{OUT}/tiny.json", "w") as f:
        json.dump(TINY, f, indent=1)

    print("input_ids", io["input_ids"].tolist())
    print("labels", io["labels"].tolist())
    print("gen_prompt_ids", io["gen_prompt_ids"].tolist())
    print("gen_tokens", io["gen_tokens"].tolist(), tok.decode(io["gen_tokens"].tolist(), skip_special_tokens=False))
    for root, _, files in sorted(os.walk(OUT)):
        for fn in sorted(files):
            p = os.path.join(root, fn)
            print(f"{os.path.getsize(p):>9}  {os.path.relpath(p, OUT)}")


if __name__ == "__main__":
    main()
