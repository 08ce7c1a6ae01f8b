#!/usr/bin/env python3
"""Reference fixtures for mimo-core's CLIP vision tower.

Writes into mimo-core/fixtures/clip/:
  hf_tiny.ron, hf_tiny_clipmodel.safetensors, hf_tiny_vision.safetensors, hf_tiny_io.safetensors
      HF CLIP, QuickGELU, 56 px / patch 14, 3 layers; saved as a full CLIPModel (keys
      `vision_model.*` + text tower + `visual_projection`) and as a transformers-v5
      CLIPVisionModel (no `vision_model.` prefix).
  open_clip_tiny.ron, open_clip_tiny.pth, open_clip_tiny.safetensors, open_clip_tiny_io.safetensors
      open_clip native ViT, exact GELU, 48 px / patch 8, 2 layers, full CLIP state dict.
  keys_vit_h14_open_clip.txt, keys_vit_l14_336_hf.txt
      vision-tower keys and shapes of the real models (built without weights).
Every parameter is random, LayerNorms included. Each *_io file holds the input pixels, all
hidden states (`hidden_states_{i}`, i = 0 after the pre-LayerNorm), the pooled embedding and
the projected embedding.

Environment: the reference venv of scripts/reference/README.md plus
  ~/.cache/mimo-ref-venv/bin/pip install transformers open-clip-torch
Run from the repository root: ~/.cache/mimo-ref-venv/bin/python scripts/reference/clip.py
"""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "mimo-core", "fixtures", "clip")
os.makedirs(OUT, exist_ok=True)
torch.set_grad_enabled(False)
torch.use_deterministic_algorithms(True)


def contig(d):
    return {k: v.detach().clone().contiguous() for k, v in d.items()}


def randomise(model, gen):
    for name, t in model.state_dict().items():
        if not t.is_floating_point():
            continue
        if t.dim() >= 2:
            t.copy_(torch.randn(t.shape, generator=gen) / t[0].numel() ** 0.5)
        elif name.endswith("weight") and ("norm" in name or "ln" in name):
            t.copy_(1.0 + 0.1 * torch.randn(t.shape, generator=gen))
        else:
            t.copy_(0.3 * torch.randn(t.shape, generator=gen))


def ron_config(path, hidden, inter, layers, heads, image, patch, act, proj):
    with open(path, "w") as f:
        f.write(f"""// Tiny CLIP vision tower written by scripts/reference/clip.py
(
    hidden_size: {hidden},
    intermediate_size: {inter},
    num_hidden_layers: {layers},
    num_attention_heads: {heads},
    image_size: {image},
    patch_size: {patch},
    hidden_act: {act},
    layer_norm_eps: 1e-5,
    projection_dim: Some({proj}),
)
""")


def hf(gen):
    from transformers import CLIPConfig, CLIPModel, CLIPTextConfig, CLIPVisionConfig, CLIPVisionModel

    vcfg = CLIPVisionConfig(hidden_size=64, intermediate_size=112, num_hidden_layers=3, num_attention_heads=4,
                            image_size=56, patch_size=14, projection_dim=32, hidden_act="quick_gelu",
                            layer_norm_eps=1e-5)
    tcfg = CLIPTextConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                          vocab_size=100, max_position_embeddings=16, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    model = CLIPModel(CLIPConfig(text_config=tcfg.to_dict(), vision_config=vcfg.to_dict(), projection_dim=32)).eval()
    randomise(model, gen)
    save_file(contig(model.state_dict()), f"{OUT}/hf_tiny_clipmodel.safetensors")
    vision = CLIPVisionModel(vcfg).eval()
    vision.load_state_dict(model.vision_model.state_dict())
    save_file(contig(vision.state_dict()), f"{OUT}/hf_tiny_vision.safetensors")
    ron_config(f"{OUT}/hf_tiny.ron", 64, 112, 3, 4, 56, 14, "quick_gelu", 32)

    px = torch.randn(2, 3, 56, 56, generator=gen)
    o = model.vision_model(pixel_values=px, output_hidden_states=True)
    io = {"pixel_values": px, "pooled": o.pooler_output, "image_embeds": model.visual_projection(o.pooler_output)}
    for i, h in enumerate(o.hidden_states):
        io[f"hidden_states_{i}"] = h
    save_file(contig(io), f"{OUT}/hf_tiny_io.safetensors")


def open_clip_tiny(gen):
    from open_clip.model import CLIP

    vision = dict(layers=2, width=48, head_width=12, mlp_ratio=2.5, patch_size=8, image_size=48)
    text = dict(context_length=16, vocab_size=100, width=32, heads=2, layers=1)
    model = CLIP(embed_dim=24, vision_cfg=vision, text_cfg=text, quick_gelu=False).eval()
    randomise(model, gen)
    sd = contig(model.state_dict())
    torch.save(sd, f"{OUT}/open_clip_tiny.pth")
    save_file(sd, f"{OUT}/open_clip_tiny.safetensors")
    ron_config(f"{OUT}/open_clip_tiny.ron", 48, 120, 2, 4, 48, 8, "gelu", 24)

    v = model.visual
    captured = []
    hooks = [v.ln_pre.register_forward_hook(lambda m, i, o: captured.append(o))]
    for blk in v.transformer.resblocks:
        hooks.append(blk.register_forward_hook(lambda m, i, o: captured.append(o)))
    post = []
    hooks.append(v.ln_post.register_forward_hook(lambda m, i, o: post.append(o)))
    px = torch.randn(2, 3, 48, 48, generator=gen)
    embeds = v(px)
    for h in hooks:
        h.remove()
    io = {"pixel_values": px, "image_embeds": embeds}
    for i, h in enumerate(captured):
        if h.shape[0] != px.shape[0]:  # sequence-first transformer
            h = h.permute(1, 0, 2)
        io[f"hidden_states_{i}"] = h
    p = post[0]
    if p.dim() == 3:
        p = p[:, 0] if p.shape[0] == px.shape[0] else p[0]
    io["pooled"] = p
    save_file(contig(io), f"{OUT}/open_clip_tiny_io.safetensors")


def keys():
    import open_clip
    from open_clip.model import _build_vision_tower
    from transformers import CLIPConfig, CLIPModel, CLIPVisionConfig

    cfg = open_clip.get_model_config("ViT-H-14")
    tower = _build_vision_tower(cfg["embed_dim"], cfg["vision_cfg"], quick_gelu=False)
    with open(f"{OUT}/keys_vit_h14_open_clip.txt", "w") as f:
        f.write("# open_clip ViT-H-14 vision tower (visual.*), open_clip_torch %s\n" % open_clip.__version__)
        for k, v in tower.state_dict().items():
            f.write(f"visual.{k} {list(v.shape)}\n".replace(", ", ","))
    del tower
    vcfg = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                            image_size=336, patch_size=14, projection_dim=768, hidden_act="quick_gelu")
    with torch.device("meta"):
        model = CLIPModel(CLIPConfig(vision_config=vcfg.to_dict(), projection_dim=768))
    import transformers
    with open(f"{OUT}/keys_vit_l14_336_hf.txt", "w") as f:
        f.write("# HF CLIPModel openai/clip-vit-large-patch14-336 layout, vision keys, transformers %s\n"
                % transformers.__version__)
        for k, v in model.state_dict().items():
            if k.startswith(("vision_model.", "visual_projection.")):
                f.write(f"{k} {list(v.shape)}\n".replace(", ", ","))


def expand2square(img, background):
    """LLaVA's expand2square (llava/mm_utils.py)."""
    from PIL import Image
    width, height = img.size
    if width == height:
        return img
    side = max(width, height)
    result = Image.new(img.mode, (side, side), background)
    result.paste(img, (0, (width - height) // 2) if width > height else ((height - width) // 2, 0))
    return result


def pass_order(img, size):
    """0: Pillow resized horizontally first, 1: vertically first, 2: either (same result)."""
    import numpy as np
    from PIL import Image
    w, h = img.size
    nw, nh = size
    full = np.array(img.resize(size, Image.BICUBIC))
    hv = np.array(img.resize((nw, h), Image.BICUBIC).resize((nw, nh), Image.BICUBIC))
    vh = np.array(img.resize((w, nh), Image.BICUBIC).resize((nw, nh), Image.BICUBIC))
    a, b = (hv == full).all(), (vh == full).all()
    assert a or b
    return 2 if a and b else (0 if a else 1)


def preprocess():
    """HF CLIPImageProcessorPil (the Pillow path LLaVA/LISA used) and the torchvision
    CLIPImageProcessor on the repo's sample images, plain and with expand2square."""
    import numpy as np
    from PIL import Image
    from transformers import CLIPImageProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
    from transformers.image_processing_utils import get_size_dict  # noqa: F401
    from transformers.image_transforms import get_resize_output_image_size  # noqa: F401

    kw = dict(size={"shortest_edge": 56}, crop_size={"height": 56, "width": 56})
    pil_proc, tv_proc = CLIPImageProcessorPil(**kw), CLIPImageProcessor(**kw)
    background = tuple(int(x * 255) for x in pil_proc.image_mean)
    samples = os.path.join(os.path.dirname(__file__), "..", "..", "assets", "samples")
    io = {}
    for i, name in enumerate(["mni152_t1_z95.png", "abdomen_mr_liver_lesion.png"]):
        img = Image.open(os.path.join(samples, name)).convert("RGB")
        for expand in (False, True):
            x = expand2square(img, background) if expand else img
            tag = f"img{i}_{'square' if expand else 'plain'}"
            w, h = x.size
            short, long = (w, h) if w <= h else (h, w)
            new_long = int(56 * long / short)
            size = (56, new_long) if w <= h else (new_long, 56)
            io[f"{tag}_order"] = torch.tensor([pass_order(x, size)], dtype=torch.int64)
            io[f"{tag}_pil"] = pil_proc(x, return_tensors="pt")["pixel_values"][0]
            io[f"{tag}_torchvision"] = tv_proc(x, return_tensors="pt")["pixel_values"][0]
    save_file(contig(io), f"{OUT}/preprocess.safetensors")


if __name__ == "__main__":
    gen = torch.Generator().manual_seed(0)
    hf(gen)
    open_clip_tiny(gen)
    keys()
    preprocess()
    for fn in sorted(os.listdir(OUT)):
        print(f"{os.path.getsize(os.path.join(OUT, fn)):>9}  {fn}")
