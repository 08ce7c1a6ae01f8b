#!/usr/bin/env python3
"""Reference fixtures for mimo-core's Segment Anything (segment_anything 1.0, the
facebookresearch/segment-anything release).

Writes into mimo-core/fixtures/sam/:
  tiny_a.ron / tiny_a.safetensors / tiny_a.pth   window 3 on an 8x8 token grid (padding path),
                                                  one global block, 128 px input
  tiny_b.ron / tiny_b.safetensors                 window 4 (divides the grid), two global blocks,
                                                  mlp_ratio 2, no qkv bias, narrower decoder
  tiny_{a,b}_io.safetensors                       inputs and expected outputs (see CASES)
  transforms.safetensors                          Pillow-bilinear ResizeLongestSide cases
  keys_vit_b.txt / keys_vit_h.txt                 state_dict keys and shapes of the real models

Every weight is random (biases, LayerNorms, relative positions and position embeddings
included) so that no term of the forward pass can hide behind a zero or one initialisation.

Environment (outside the repo; never needed by `cargo test`):
  python3 -m venv ~/.cache/mimo-ref-venv
  ~/.cache/mimo-ref-venv/bin/pip install torch torchvision safetensors segment-anything numpy pillow
Run from the repository root:
  ~/.cache/mimo-ref-venv/bin/python scripts/reference/sam.py
"""
import os
from functools import partial

import numpy as np
import torch
from safetensors.torch import save_file
from segment_anything import SamPredictor, sam_model_registry
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
from segment_anything.utils.transforms import ResizeLongestSide

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "mimo-core", "fixtures", "sam")
os.makedirs(OUT, exist_ok=True)
torch.set_grad_enabled(False)
torch.use_deterministic_algorithms(True)
torch.set_num_threads(1)

CONFIGS = {
    "tiny_a": dict(
        image_encoder=dict(img_size=128, patch_size=16, embed_dim=48, depth=2, num_heads=2, mlp_ratio=4.0,
                           out_chans=32, qkv_bias=True, use_rel_pos=True, window_size=3,
                           global_attn_indexes=[1]),
        prompt_encoder=dict(embed_dim=32, mask_in_chans=16),
        mask_decoder=dict(transformer_dim=32, num_multimask_outputs=3, iou_head_depth=3, iou_head_hidden_dim=32,
                          transformer=dict(depth=2, embedding_dim=32, mlp_dim=64, num_heads=2)),
        image_hw=(40, 56),  # upscaled to 91x128: bottom padding
        formats=("safetensors", "pth"),
    ),
    "tiny_b": dict(
        image_encoder=dict(img_size=128, patch_size=16, embed_dim=32, depth=4, num_heads=4, mlp_ratio=2.0,
                           out_chans=16, qkv_bias=False, use_rel_pos=True, window_size=4,
                           global_attn_indexes=[1, 3]),
        prompt_encoder=dict(embed_dim=16, mask_in_chans=8),
        mask_decoder=dict(transformer_dim=16, num_multimask_outputs=3, iou_head_depth=2, iou_head_hidden_dim=24,
                          transformer=dict(depth=2, embedding_dim=16, mlp_dim=40, num_heads=2)),
        image_hw=(140, 100),  # downscaled (antialiased) to 128x91: right padding
        formats=("safetensors",),
    ),
}


def ron(v, indent=0):
    pad = "    " * (indent + 1)
    if isinstance(v, dict):
        items = [f"{pad}{k}: {ron(x, indent + 1)}," for k, x in v.items()]
        return "(\n" + "\n".join(items) + "\n" + "    " * indent + ")"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(ron(x, indent) for x in v) + "]"
    return str(v)


def build(cfg):
    e, p, d = cfg["image_encoder"], cfg["prompt_encoder"], cfg["mask_decoder"]
    grid = e["img_size"] // e["patch_size"]
    t = d["transformer"]
    return Sam(
        image_encoder=ImageEncoderViT(
            img_size=e["img_size"], patch_size=e["patch_size"], embed_dim=e["embed_dim"], depth=e["depth"],
            num_heads=e["num_heads"], mlp_ratio=e["mlp_ratio"], out_chans=e["out_chans"], qkv_bias=e["qkv_bias"],
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), use_rel_pos=e["use_rel_pos"],
            rel_pos_zero_init=True, window_size=e["window_size"], global_attn_indexes=e["global_attn_indexes"]),
        prompt_encoder=PromptEncoder(embed_dim=p["embed_dim"], image_embedding_size=(grid, grid),
                                     input_image_size=(e["img_size"], e["img_size"]),
                                     mask_in_chans=p["mask_in_chans"]),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=d["num_multimask_outputs"],
            transformer=TwoWayTransformer(depth=t["depth"], embedding_dim=t["embedding_dim"],
                                          mlp_dim=t["mlp_dim"], num_heads=t["num_heads"]),
            transformer_dim=d["transformer_dim"], iou_head_depth=d["iou_head_depth"],
            iou_head_hidden_dim=d["iou_head_hidden_dim"]),
        pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375],
    ).eval()


def randomise(model, gen):
    for name, t in model.state_dict().items():
        if t.dim() >= 2 and not name.endswith(("pos_embed", "rel_pos_h", "rel_pos_w", "gaussian_matrix")) \
                and "embed" not in name.split(".")[-2] and "token" not in name:
            fan_in = t[0].numel()
            t.copy_(torch.randn(t.shape, generator=gen) / fan_in ** 0.5)
        elif name.endswith("gaussian_matrix"):
            t.copy_(torch.randn(t.shape, generator=gen))
        elif t.dim() == 1 and ("norm" in name or ".ln" in name or name.split(".")[-2].isdigit()) \
                and name.endswith("weight"):
            t.copy_(1.0 + 0.1 * torch.randn(t.shape, generator=gen))
        else:
            t.copy_(0.3 * torch.randn(t.shape, generator=gen))


def contig(d):
    return {k: v.detach().clone().contiguous() for k, v in d.items()}


def cases(h, w, low):
    g = torch.Generator().manual_seed(7)
    mask = torch.randn(1, low, low, generator=g).numpy()
    pt = lambda fx, fy: [fx * w, fy * h]
    return {
        "point": dict(point_coords=np.array([pt(0.4, 0.55)]), point_labels=np.array([1])),
        "points": dict(point_coords=np.array([pt(0.3, 0.3), pt(0.7, 0.8), pt(0.0, 1.0)]),
                       point_labels=np.array([1, 0, 1])),
        "box": dict(box=np.array([0.1 * w, 0.2 * h, 0.8 * w, 0.9 * h])),
        "points_box": dict(point_coords=np.array([pt(0.5, 0.5)]), point_labels=np.array([0]),
                           box=np.array([0.0, 0.0, w, h])),
        "mask_point": dict(point_coords=np.array([pt(0.25, 0.75)]), point_labels=np.array([1]), mask_input=mask),
        "mask_only": dict(mask_input=mask),
    }


def write_config(name, cfg, gen):
    sam = build(cfg)
    randomise(sam, gen)
    sd = contig(sam.state_dict())
    with open(f"{OUT}/{name}.ron", "w") as f:
        f.write(f"// Tiny SAM written by scripts/reference/sam.py\n")
        f.write(ron({k: cfg[k] for k in ("image_encoder", "prompt_encoder", "mask_decoder")}) + "\n")
    if "safetensors" in cfg["formats"]:
        save_file(sd, f"{OUT}/{name}.safetensors")
    if "pth" in cfg["formats"]:
        torch.save(sd, f"{OUT}/{name}.pth")

    h, w = cfg["image_hw"]
    image = torch.randint(0, 256, (h, w, 3), generator=gen, dtype=torch.uint8).numpy()
    pred = SamPredictor(sam)
    pred.set_image(image)
    io = {
        "image": torch.from_numpy(image),
        "resized": torch.from_numpy(pred.transform.apply_image(image)),
        "image_embeddings": pred.features,
        "image_pe": sam.prompt_encoder.get_dense_pe(),
    }
    low = 4 * sam.prompt_encoder.image_embedding_size[0]
    keep_masks = cfg.get("keep_masks")
    for cname, kw in cases(h, w, low).items():
        for multi in (False, True):
            masks, iou, low_res = pred.predict(multimask_output=multi, return_logits=True, **kw)
            tag = f"{cname}_{'multi' if multi else 'single'}"
            io[f"{tag}_iou"] = torch.from_numpy(iou)
            io[f"{tag}_low_res"] = torch.from_numpy(low_res)
            if keep_masks is None or tag in keep_masks:
                io[f"{tag}_masks"] = torch.from_numpy(masks)
        for k, v in kw.items():
            io[f"{cname}_{k}"] = torch.from_numpy(np.asarray(v, dtype=np.float32 if k != "point_labels" else np.int64))
    # LISA path: no prompt, a projected [SEG] embedding as the only sparse token.
    text = torch.randn(2, 1, cfg["prompt_encoder"]["embed_dim"], generator=gen)
    sparse, dense = sam.prompt_encoder(points=None, boxes=None, masks=None)
    low_t, iou_t = sam.mask_decoder(image_embeddings=pred.features, image_pe=sam.prompt_encoder.get_dense_pe(),
                                    sparse_prompt_embeddings=torch.cat([sparse.expand(2, -1, -1), text], 1),
                                    dense_prompt_embeddings=dense.expand(2, -1, -1, -1), multimask_output=False)
    io.update(text_embeds=text, text_low_res=low_t, text_iou=iou_t)
    save_file(contig(io), f"{OUT}/{name}_io.safetensors")


def pass_order(img, out):
    """Which pass order the installed Pillow used: 0 horizontal first (Pillow <= 12 always),
    1 vertical first (Pillow 13 for some shapes), 2 either (same result)."""
    from PIL import Image
    h, w = img.shape[:2]
    nh, nw = out.shape[:2]
    one = lambda a, size: np.array(Image.fromarray(a).resize(size, Image.BILINEAR))
    hv = one(one(img, (nw, h)), (nw, nh))
    vh = one(one(img, (w, nh)), (nw, nh))
    a, b = (hv == out).all(), (vh == out).all()
    assert a or b, "neither pass order reproduces Pillow"
    return 2 if a and b else (0 if a else 1)


def write_transforms(gen):
    io = {}
    for i, (h, w, long) in enumerate([(40, 56, 128), (140, 100, 128), (137, 61, 128), (133, 200, 96),
                                      (7, 300, 64), (64, 64, 64), (33, 20, 256)]):
        img = torch.randint(0, 256, (h, w, 3), generator=gen, dtype=torch.uint8).numpy()
        out = ResizeLongestSide(long).apply_image(img)
        io[f"case{i}_order"] = torch.tensor([pass_order(img, out)], dtype=torch.int64)
        io[f"case{i}_image"] = torch.from_numpy(img)
        io[f"case{i}_resized"] = torch.from_numpy(np.ascontiguousarray(out))
        io[f"case{i}_long"] = torch.tensor([long], dtype=torch.int64)
    save_file(contig(io), f"{OUT}/transforms.safetensors")


def write_keys():
    for name in ("vit_b", "vit_h"):
        sam = sam_model_registry[name](checkpoint=None)
        with open(f"{OUT}/keys_{name}.txt", "w") as f:
            f.write(f"# sam_model_registry['{name}'](checkpoint=None).state_dict(), segment_anything 1.0\n")
            for k, v in sam.state_dict().items():
                f.write(f"{k} {list(v.shape)}\n".replace(", ", ","))
        del sam


if __name__ == "__main__":
    gen = torch.Generator().manual_seed(0)
    CONFIGS["tiny_b"]["keep_masks"] = {"box_single", "points_multi"}
    for name, cfg in CONFIGS.items():
        write_config(name, cfg, gen)
    write_transforms(gen)
    write_keys()
    for fn in sorted(os.listdir(OUT)):
        print(f"{os.path.getsize(os.path.join(OUT, fn)):>9}  {fn}")
