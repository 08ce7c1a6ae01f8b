#!/usr/bin/env python3
"""Run by tokenizer.py with `--tf431 PYTHON`, in a venv with `transformers==4.31.0 sentencepiece`
(LISA's pin; no torch needed): the slow `LlamaTokenizer(legacy=True)` on the SentencePiece model,
MIMO's tokens added with `add_tokens` as LISA and LLaVA add theirs, then the ids of the strings
and LISA's conversation tokenisation with label masking (the same port as tokenizer.py's, with
`tokenizer(chunk).input_ids` as LISA calls it).

stdin: {"model": SP_MODEL, "added": [...], "strings": [...], "conversations": [...]}; stdout: JSON.
"""
import json
import sys
import tempfile

import transformers
from transformers import LlamaTokenizer

IMAGE_TOKEN_INDEX = -200
IGNORE_INDEX = -100


def tokenizer_image_token(tok, text):
    """LISA model/llava/mm_utils.py."""
    chunks = [tok(c).input_ids for c in text.split("<image>")]
    out, offset = [], 0
    if chunks and chunks[0] and chunks[0][0] == tok.bos_token_id:
        offset = 1
        out.append(chunks[0][0])
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
    """LISA utils/dataset.py collate_fn target masking (pad id 0)."""
    conversation = conversation.replace("<image>", "<im_start><image><im_end>")
    ids = tokenizer_image_token(tok, conversation)
    target = list(ids)
    total_len = sum(1 for t in ids if t != 0)
    sep = " ASSISTANT: "
    cur_len = 1
    target[:cur_len] = [IGNORE_INDEX] * cur_len
    for rou in conversation.split("</s>"):
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
    # LISA prints a mismatch warning and masks everything when the lengths disagree.
    return conversation, ids, target, cur_len == total_len


def main():
    req = json.load(sys.stdin)
    # Through a saved directory, as LISA loads it (`from_pretrained` also registers <s>, </s>,
    # <unk> as tokens that are never split).
    with tempfile.TemporaryDirectory() as d:
        LlamaTokenizer(vocab_file=req["model"], legacy=True).save_pretrained(d)
        tok = LlamaTokenizer.from_pretrained(d, legacy=True)
    tok.add_tokens(req["added"])
    out = {
        "transformers": transformers.__version__,
        "added_ids": {t: tok.convert_tokens_to_ids(t) for t in req["added"]},
        "strings": [tok(s, add_special_tokens=False).input_ids for s in req["strings"]],
        # decode as LISA calls it (skip_special_tokens=False): spaces between added tokens.
        "decoded": [tok.decode(tok(s, add_special_tokens=False).input_ids, skip_special_tokens=False)
                    for s in req["strings"]],
        "conversations": [],
    }
    for text in req["conversations"]:
        expanded, ids, labels, consistent = lisa_targets(tok, text)
        out["conversations"].append({"expanded": expanded, "input_ids": ids, "labels": labels,
                                     "lengths_agree": consistent})
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
