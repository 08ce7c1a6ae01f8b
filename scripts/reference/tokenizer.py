#!/usr/bin/env python3
"""Reference fixtures for mimo-core's tokenizer and conversation tokenisation.

1. Trains a small LLaMA-style SentencePiece BPE model (LLaMA's trainer settings: byte fallback,
   split digits, dummy prefix, no whitespace folding, ids unk=0 bos=1 eos=2) on a generated
   medical corpus, and converts it to an HF `tokenizer.json` with the *legacy* LLaMA pipeline
   (Prepend "▁" + spaces to "▁", no pre-tokenizer, BPE with byte fallback) — the same layout
   as Vicuna's tokenizer.json. The conversion is checked against `sentencepiece` itself on
   every test string, so the committed file tokenises like the slow LLaMA tokenizer.
2. Writes `cases.json`: ids for plain strings (sentencepiece = tokenizers, asserted), ids with
   MIMO's added tokens (tokenizers), decodes, and LISA-style conversation tokenisation with
   label masking (a line-by-line port of LISA's `tokenizer_image_token` from
   `model/llava/mm_utils.py` and `utils/dataset.py` target masking).
3. With `--real DIR` (a directory holding the real LLaMA `tokenizer.json` built by
   ../shared/tools/make_llama_tokenizer.py): writes `real_golden.json` with the ids of the
   golden prompts under the real 32000-token vocabulary (numbers only; the vocabulary itself
   is Meta's and is never committed).

4. With `--tf431 PYTHON` (the python of a venv with `transformers==4.31.0 sentencepiece`, LISA's
   pin): the ids of the added-token strings and the conversations under transformers 4.31's slow
   tokenizer, whose tokens added with `add_tokens` strip the whitespace on both sides
   (tokenizer_tf431.py), as `tf431`. With `--tf-keep PYTHON` (a venv with a transformers >= 4.34,
   e.g. 4.46.3), the same helper asserts that that version's slow tokenizer gives exactly the
   `tokenizers` library's ids of `added` and `conversations` (the whitespace-keeping rule).

Environment: the reference venv plus `pip install sentencepiece tokenizers transformers`.
Run from the repository root: ~/.cache/mimo-ref-venv/bin/python scripts/reference/tokenizer.py [--real DIR] [--tf431 PY]
"""
import json
import os
import random
import subprocess
import sys
import tempfile

import sentencepiece as spm
from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers
from sentencepiece import sentencepiece_model_pb2 as pb
from transformers.convert_slow_tokenizer import generate_merges

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "mimo-core", "fixtures", "tokenizer")
ADDED = ["<p>", "</p>", "<SEG>", "<image>", "<im_start>", "<im_end>"]
IMAGE_TOKEN_INDEX = -200
IGNORE_INDEX = -100

VICUNA_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
                 "The assistant gives helpful, detailed, and polite answers to the user's questions.")
LLAVA_SYSTEM = ("A chat between a curious human and an artificial intelligence assistant. "
                "The assistant gives helpful, detailed, and polite answers to the human's questions.")

ORGANS = ["liver", "spleen", "left kidney", "right kidney", "pancreas", "aorta", "gallbladder", "stomach",
          "heart", "left lung", "right lung", "brain", "white matter", "grey matter", "tumor", "lesion",
          "polyp", "optic disc", "optic cup", "skin lesion", "prostate", "bladder", "esophagus", "trachea"]
MODALITIES = ["CT", "MRI", "X-ray", "ultrasound", "endoscopy", "fundus photograph", "dermoscopy", "PET"]
VERBS = ["shows", "contains", "reveals", "depicts", "presents"]
ADJ = ["small", "large", "hypodense", "hyperintense", "irregular", "round", "well-defined", "enhancing"]


def corpus(rng):
    lines = [VICUNA_SYSTEM, LLAVA_SYSTEM]
    for _ in range(3000):
        o, m, v, a = rng.choice(ORGANS), rng.choice(MODALITIES), rng.choice(VERBS), rng.choice(ADJ)
        n = rng.randint(0, 999)
        lines.append(rng.choice([
            f"USER: What is the {o} in this {m} image? ASSISTANT: Sure, it is the {o}.",
            f"The {m} scan {v} a {a} {o} measuring {n} mm.",
            f"Please segment the {o}. ASSISTANT: The {o} is located in the image.",
            f"Is there a {a} {o}? Answer: yes, {n}% of the slice.",
            f"Findings: the {o} appears {a}; no other abnormality in the {m} study.",
        ]))
    return lines


def build(model_file):
    """tokenizer.json with the legacy LLaMA pipeline from a SentencePiece BPE model."""
    proto = pb.ModelProto()
    with open(model_file, "rb") as f:
        proto.ParseFromString(f.read())
    vocab = {p.piece: i for i, p in enumerate(proto.pieces)}
    # SentencePiece BPE merges by piece score (higher first), as HF's LlamaConverter orders them.
    scores = {p.piece: p.score for p in proto.pieces if p.type == 1}
    merges = generate_merges(vocab, scores)
    bpe = models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", fuse_unk=True, byte_fallback=True)
    tok = Tokenizer(bpe)
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in ["<unk>", "<s>", "</s>"]])
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    return tok


PLAIN = [
    "Hello world", " Hello world", "Hello  world", "  leading spaces", "trailing space ", "",
    "The liver shows a 23 mm hypodense lesion.", "1234567890", "tab\tand\nnewline", "Ünïcödé façade",
    "脾脏 CT 图像", "emoji 🫁 lungs", "USER: What is it? ASSISTANT: Sure.", "a  b   c", "\n", " ",
    "ASSISTANT: ", "x<y>z <b>tags</b>",
]
WITH_ADDED = [
    "<p>liver</p><SEG>", "The <p>liver</p> <SEG> is enlarged.", "Sure, <SEG>.", "<SEG>",
    "<im_start><image><im_end>\nWhat is this?", "It is <p>left kidney</p><SEG> and <p>spleen</p><SEG>.",
    " <p> spaced </p> ", "<image>",
    "The segmentation results include <p>liver tumor</p><SEG>, <p>spleen</p><SEG> and <p>aorta</p><SEG>.",
    "Sure,<SEG>.", "<p>a</p><SEG><p>b</p><SEG>",
]
# (system, [(question, answer)]) conversations for the LISA tokenisation/label rule.
CONVERSATIONS = [
    ("vicuna_v1", [("<image>\nWhat is the liver in this image? Please output segmentation mask.",
                    "Sure, <p>liver</p><SEG>.")]),
    ("llava_v1", [("<image>\nWhat is tumor in this image? Please output segmentation mask.", "Sure, <SEG>.")]),
    ("vicuna_v1", [("<image>\nPlease segment the <p>spleen</p> and <p>aorta</p>.",
                    "<p>spleen</p><SEG> and <p>aorta</p><SEG> are shown."),
                   ("What is the function of the spleen?", "It filters blood and stores 45 % of platelets.")]),
    ("vicuna_v1", [("Describe the findings.", "A small hypodense lesion in the liver.")]),
]


def prompt(system, rounds):
    """Vicuna v1 / LLaVA v1 `get_prompt()` (SeparatorStyle.TWO, sep " ", sep2 "</s>")."""
    ret = system + " "
    for q, a in rounds:
        ret += "USER: " + q + " " + "ASSISTANT: " + a + "</s>"
    return ret


def tokenizer_image_token(tok, text):
    """LISA model/llava/mm_utils.py: each `<image>` chunk tokenised with BOS; later BOS dropped."""
    bos = tok.token_to_id("<s>")
    chunks = [[bos] + tok.encode(c, add_special_tokens=False).ids for c in text.split("<image>")]
    out, offset = [], 0
    if chunks and chunks[0] and chunks[0][0] == bos:
        offset = 1
        out.append(bos)
    sep = [IMAGE_TOKEN_INDEX] * (offset + 1)
    inter = []
    for i, c in enumerate(chunks):
        inter.append(c)
        if i < len(chunks) - 1:
            inter.append(sep)
    for x in inter:
        out.extend(x[offset:])
    return out


def lisa_targets(tok, conversation):
    """LISA utils/dataset.py collate_fn target masking for one conversation string."""
    conversation = conversation.replace("<image>", "<im_start><image><im_end>")
    ids = tokenizer_image_token(tok, conversation)
    target = list(ids)
    total_len = sum(1 for t in ids if t != 0)  # pad id 0 (unk): target.ne(pad).sum()
    sep = " ASSISTANT: "
    rounds = conversation.split("</s>")
    cur_len = 1
    target[:cur_len] = [IGNORE_INDEX] * cur_len
    for rou in rounds:
        if rou == "":
            break
        parts = rou.split(sep)
        assert len(parts) == 2, rou
        parts[0] += sep
        round_len = len(tokenizer_image_token(tok, rou))
        instruction_len = len(tokenizer_image_token(tok, parts[0])) - 2
        target[cur_len:cur_len + instruction_len] = [IGNORE_INDEX] * instruction_len
        cur_len += round_len
    target[cur_len:] = [IGNORE_INDEX] * (len(target) - cur_len)
    assert cur_len == total_len, (cur_len, total_len)
    return conversation, ids, target


def cases(tok, sp):
    plain = []
    for s in PLAIN:
        ids = tok.encode(s, add_special_tokens=False).ids
        if sp is not None:
            assert ids == sp.encode(s), (s, ids, sp.encode(s))
        plain.append({"text": s, "ids": ids, "decoded": tok.decode(ids, skip_special_tokens=False)})
    with_added = tok.from_str(tok.to_str())
    with_added.add_tokens([AddedToken(t, normalized=False, special=False) for t in ADDED])
    added = []
    for s in WITH_ADDED:
        ids = with_added.encode(s, add_special_tokens=False).ids
        added.append({"text": s, "ids": ids, "decoded": with_added.decode(ids, skip_special_tokens=False)})
    systems = {"vicuna_v1": VICUNA_SYSTEM, "llava_v1": LLAVA_SYSTEM}
    convs = []
    for system, rounds in CONVERSATIONS:
        text = prompt(systems[system], rounds)
        expanded, ids, target = lisa_targets(with_added, text)
        convs.append({"template": system, "rounds": [list(r) for r in rounds], "prompt": text,
                      "expanded": expanded, "input_ids": ids, "labels": target})
    return {
        "added_ids": {t: with_added.token_to_id(t) for t in ADDED},
        "vocab_size": with_added.get_vocab_size(with_added_tokens=True),
        "plain": plain, "added": added, "conversations": convs,
    }


def run_slow(python, model):
    """tokenizer_tf431.py under another venv's python: a transformers version's slow tokenizer on
    the added-token strings and the conversations."""
    systems = {"vicuna_v1": VICUNA_SYSTEM, "llava_v1": LLAVA_SYSTEM}
    req = {"model": model, "added": ADDED, "strings": WITH_ADDED,
           "conversations": [prompt(systems[s], r) for s, r in CONVERSATIONS]}
    helper = os.path.join(os.path.dirname(__file__), "tokenizer_tf431.py")
    return json.loads(subprocess.run([python, helper], input=json.dumps(req), capture_output=True,
                                     text=True, check=True).stdout)


def main():
    os.makedirs(OUT, exist_ok=True)
    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp:
        with open(f"{tmp}/corpus.txt", "w") as f:
            f.write("\n".join(corpus(rng)) + "\n")
        spm.SentencePieceTrainer.train(
            input=f"{tmp}/corpus.txt", model_prefix=f"{tmp}/sp", model_type="bpe", vocab_size=700,
            byte_fallback=True, split_digits=True, add_dummy_prefix=True, remove_extra_whitespaces=False,
            normalization_rule_name="identity", character_coverage=1.0, unk_id=0, bos_id=1, eos_id=2,
            pad_id=-1, allow_whitespace_only_pieces=True, num_threads=1, minloglevel=2)
        sp = spm.SentencePieceProcessor(model_file=f"{tmp}/sp.model")
        tok = build(f"{tmp}/sp.model")
        tf431 = run_slow(sys.argv[sys.argv.index("--tf431") + 1], f"{tmp}/sp.model") if "--tf431" in sys.argv else None
        keep = run_slow(sys.argv[sys.argv.index("--tf-keep") + 1], f"{tmp}/sp.model") if "--tf-keep" in sys.argv else None
        keep = None
        if "--tf-keep" in sys.argv:
            systems = {"vicuna_v1": VICUNA_SYSTEM, "llava_v1": LLAVA_SYSTEM}
            req = {"model": f"{tmp}/sp.model", "added": ADDED, "strings": WITH_ADDED,
                   "conversations": [prompt(systems[s], r) for s, r in CONVERSATIONS]}
            py = sys.argv[sys.argv.index("--tf-keep") + 1]
            helper = os.path.join(os.path.dirname(__file__), "tokenizer_tf431.py")
            keep = json.loads(subprocess.run([py, helper], input=json.dumps(req), capture_output=True,
                                             text=True, check=True).stdout)
    tok.save(f"{OUT}/tokenizer.json")
    tok = Tokenizer.from_file(f"{OUT}/tokenizer.json")
    result = cases(tok, sp)
    if tf431 is not None:
        assert tf431["added_ids"] == result["added_ids"], (tf431["added_ids"], result["added_ids"])
        result["tf431"] = {
            "transformers": tf431["transformers"],
            "added": [{"text": s, "ids": ids, "decoded": d}
                      for s, ids, d in zip(WITH_ADDED, tf431["strings"], tf431["decoded"])],
            "conversations": tf431["conversations"],
        }
    if keep is not None:
        assert [c["ids"] for c in result["added"]] == keep["strings"], keep["strings"]
        for c, k in zip(result["conversations"], keep["conversations"]):
            assert (c["input_ids"], c["labels"]) == (k["input_ids"], k["labels"]), c["prompt"]
        result["keep_checked_with_transformers"] = keep["transformers"]
    with open(f"{OUT}/cases.json", "w") as f:
        json.dump(result, f, indent=1, ensure_ascii=False)
    print("wrote", OUT, "vocab", tok.get_vocab_size())
    if "--real" in sys.argv:
        real = sys.argv[sys.argv.index("--real") + 1]
        rtok = Tokenizer.from_file(os.path.join(real, "tokenizer.json"))
        golden = cases(rtok, None)
        with open(f"{OUT}/real_golden.json", "w") as f:
            json.dump(golden, f, indent=1, ensure_ascii=False)
        print("wrote real_golden.json; added ids", golden["added_ids"])


if __name__ == "__main__":
    main()
