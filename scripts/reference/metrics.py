#!/usr/bin/env python3
"""Golden values for mimo-bench's paper metrics, from the reference implementations.

Writes into mimo-bench/fixtures/metrics/:
  text.json   250 generated (references, hypothesis) pairs, already tokenised and lowercased, with
              pycocoevalcap Bleu_1..4 (corpus) and ROUGE_L (mean) over the whole corpus and over each of
              5 slices; per pair: rouge-score rougeL P/R/F (use_stemmer False and True) on the untokenised strings,
              and nltk sentence_bleu BLEU-4 / BLEU-1 (no smoothing).
  masks.json  200 images of 12x10 masks (COCO RLE): ground truths and predictions with scores (many ties),
              pycocotools COCOeval segm AP50 (stats[1]) with all scores set to 1.0 and with the given scores;
              per (prediction, ground truth) pair of each image the mask IoU (maskUtils.iou, iscrowd 0).
  vqa.json    LLaVA-Med `normalize_word` outputs and CLOSED hits, and HuatuoGPT-Vision `match_choice3` letters,
              on generated and hand-written strings (the functions are transcribed from the released code,
              LLaVA-Med v1.0's llava/eval/run_eval.py and eval_metrics/glossary.py and HuatuoGPT-Vision's
              scorer.py, and run here).

  stems.json  nltk PorterStemmer() on ~7000 WordNet lemmas and inflections plus the paper's examples.
  text.json also holds nltk `meteor_score` per pair (WordNet 3.0), pycocoevalcap's Java METEOR 1.5 over the
              corpus, and the WordNet synonym sets nltk looks up for the corpus's words and stems.

Environment: the reference venv plus `pip install pycocoevalcap nltk rouge-score pycocotools`, Java (for
pycocoevalcap's PTB tokenizer and METEOR), and WordNet for nltk: `apt-get install wordnet-base`, then copy
/usr/share/wordnet/{index,data}.* and *.exc into $NLTK_DATA/corpora/wordnet/ with a `lexnames` file.
Run from the repository root: NLTK_DATA=~/.cache/nltk_data ~/.cache/mimo-ref-venv/bin/python scripts/reference/metrics.py
"""
import contextlib
import io
import json
import os
import random
import re
import warnings

import numpy as np
from nltk.translate.bleu_score import sentence_bleu
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.rouge.rouge import Rouge
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from rouge_score import rouge_scorer

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "mimo-bench", "fixtures", "metrics")
warnings.filterwarnings("ignore")

WORDS = ("the liver spleen kidney left right lobe lesion small large hypodense hyperintense mass shows is in of a an "
         "there no evidence tumor located upper lower segment image ct mri scan appears normal abnormal with and "
         "cyst nodule lung heart aorta brain white matter enhancing margin irregular round 2 3 cm mm "
         "big little growth picture displays demonstrates lesions kidneys enlarged enlarging showing").split()


def sentence(rng, n):
    return [rng.choice(WORDS) for _ in range(n)]


def perturb(rng, toks):
    out = list(toks)
    for _ in range(rng.randint(0, 4)):
        op = rng.random()
        i = rng.randrange(len(out)) if out else 0
        if op < 0.3 and out:
            out.pop(i)
        elif op < 0.6:
            out.insert(i, rng.choice(WORDS))
        elif out:
            out[i] = rng.choice(WORDS)
    return out or [rng.choice(WORDS)]


def text(rng):
    pairs = []
    for k in range(250):
        base = sentence(rng, rng.randint(3, 16))
        refs = [base] + [perturb(rng, base) for _ in range(rng.randint(0, 2))]
        hyp = perturb(rng, base) if rng.random() < 0.8 else sentence(rng, rng.randint(1, 10))
        if k % 50 == 0:
            hyp = list(base)  # exact match
        if k % 50 == 1:
            hyp = ["zebra"]  # no overlap
        pairs.append({"refs": [" ".join(r) for r in refs], "hyp": " ".join(hyp)})
    # rouge-score / nltk inputs with case and punctuation (their own tokenisers)
    for p in pairs:
        p["hyp_raw"] = p["hyp"].capitalize() + rng.choice([".", "!", "", " ?"])
        p["ref_raw"] = p["refs"][0].upper() if rng.random() < 0.2 else p["refs"][0] + "."
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    stem_scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    for p in pairs:
        s = scorer.score(p["ref_raw"], p["hyp_raw"])["rougeL"]
        p["rouge_score_L"] = [s.precision, s.recall, s.fmeasure]
        s = stem_scorer.score(p["ref_raw"], p["hyp_raw"])["rougeL"]
        p["rouge_score_L_stem"] = [s.precision, s.recall, s.fmeasure]
        refs = [r.split() for r in p["refs"]]
        hyp = p["hyp"].split()
        p["nltk_bleu4"] = sentence_bleu(refs, hyp)
        p["nltk_bleu1"] = sentence_bleu(refs, hyp, weights=(1, 0, 0, 0))

    def coco(sub):
        gts = {i: p["refs"] for i, p in enumerate(sub)}
        res = {i: [p["hyp"]] for i, p in enumerate(sub)}
        with contextlib.redirect_stdout(io.StringIO()):
            bleu, _ = Bleu(4).compute_score(gts, res)
        rouge, _ = Rouge().compute_score(gts, res)
        return {"bleu": bleu, "rouge_l": rouge}

    # pycocoevalcap's own tokenisation (Stanford PTBTokenizer via Java) of raw sentences, to measure how
    # closely mimo's approximation follows it.
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
    raw = [p["hyp_raw"] for p in pairs] + [p["ref_raw"] for p in pairs] + [
        "The liver's lesion, 2.5 cm (left)!", "Don't know...", "x-ray -- ok; fine?", "It is 3/4 of the \"lobe\".",
        "No evidence of mass; the spleen isn't enlarged.", "Findings: 1) cyst 2) nodule", "e.g. a U.S. scan",
        "A 5-mm nodule at T12-L1.", "Well-defined, round mass: benign?", "He said 'normal' twice."]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        tok = PTBTokenizer().tokenize({i: [{"caption": r}] for i, r in enumerate(raw)})
    ptb = [{"raw": r, "tokenized": tok[i][0]} for i, r in enumerate(raw)]
    # METEOR: nltk (WordNet from NLTK_DATA) per pair, and pycocoevalcap's Java METEOR 1.5 over the corpus.
    from nltk.corpus import wordnet
    from nltk.stem import PorterStemmer
    from nltk.translate.meteor_score import meteor_score
    from pycocoevalcap.meteor.meteor import Meteor
    for p in pairs:
        p["nltk_meteor"] = meteor_score([r.split() for r in p["refs"]], p["hyp"].split())
    java = Meteor()
    java_score, java_scores = java.compute_score({i: p["refs"] for i, p in enumerate(pairs)},
                                                 {i: [p["hyp"]] for i, p in enumerate(pairs)})
    del java
    # The synonym sets nltk's METEOR looks up (words and their stems), so the Rust test runs without WordNet.
    stemmer = PorterStemmer()
    vocab = sorted({w for p in pairs for t in p["refs"] + [p["hyp"]] for w in t.split()})
    lookups = sorted(set(vocab) | {stemmer.stem(w) for w in vocab})
    synonyms = {w: sorted({l.name() for s in wordnet.synsets(w) for l in s.lemmas() if "_" not in l.name()})
                for w in lookups}
    return {"pairs": pairs, "corpus": coco(pairs), "slices": [coco(pairs[i * 50:(i + 1) * 50]) for i in range(5)],
            "ptb": ptb, "meteor_java": {"score": java_score, "scores": java_scores}, "synonyms": synonyms}


def stems(rng):
    """nltk PorterStemmer() on a deterministic sample of WordNet lemmas and inflections."""
    from nltk.corpus import wordnet
    from nltk.stem import PorterStemmer
    words = sorted({l for l in wordnet.all_lemma_names() if l.isalpha() and l.islower()})
    sample = rng.sample(words, 4000)
    extra = [w + suf for w in rng.sample(words, 1500) for suf in ["s", "ed", "ing", "ly", "ness", "ational", "iveness"][:2]]
    extra += ["sky", "skies", "dying", "lying", "news", "innings", "proceed", "exceed", "ies", "ties", "flies", "dies",
              "happy", "enjoy", "spy", "agreed", "feed", "plastered", "bled", "motoring", "sing", "conflated", "troubled",
              "sized", "hopping", "tanned", "falling", "hissing", "fizzed", "failing", "filing", "relational",
              "conditional", "rational", "valenci", "digitizer", "conformabli", "radicalli", "differentli", "vileli",
              "analogousli", "vietnamization", "predication", "operator", "feudalism", "decisiveness", "hopefulness",
              "callousness", "formaliti", "sensitiviti", "sensibiliti", "triplicate", "formative", "formalize",
              "electriciti", "electrical", "hopeful", "goodness", "revival", "allowance", "inference", "airliner",
              "gyroscopic", "adjustable", "defensible", "irritant", "replacement", "adjustment", "dependent", "adoption",
              "homologou", "communism", "activate", "angulariti", "homologous", "effective", "bowdlerize", "probate",
              "rate", "cease", "controll", "roll", "yyyy", "ay", "y", "by", "bye", "ooze", "abyss", "syzygy", "toy",
              "archaeology", "fully", "generously", "Running", "CAPS", "a", "at", "ied", "cried", "ties"]
    stemmer = PorterStemmer()
    return [[w, stemmer.stem(w)] for w in sample + extra]


def masks(rng):
    h, w = 12, 10
    images, anns, dets = [], [], []
    rs = np.random.RandomState(0)
    iou_pairs = []
    for img in range(200):
        images.append({"id": img + 1, "height": h, "width": w})
        gts = []
        for _ in range(rng.randint(0, 3)):
            m = np.zeros((h, w), np.uint8)
            y, x = rng.randrange(h - 2), rng.randrange(w - 2)
            m[y:y + rng.randint(2, 7), x:x + rng.randint(2, 6)] = 1
            gts.append(m)
        preds = []
        for g in gts:
            if rng.random() < 0.8:
                p = g.copy()
                flip = rs.rand(h, w) < rng.choice([0.02, 0.1, 0.3])
                p[flip] = 1 - p[flip]
                preds.append(p)
        for _ in range(rng.randint(0, 2)):
            preds.append((rs.rand(h, w) < 0.15).astype(np.uint8))
        if img % 7 == 0:
            preds.append(np.zeros((h, w), np.uint8))  # an empty prediction
        rng.shuffle(preds)
        for g in gts:
            r = mask_utils.encode(np.asfortranarray(g))
            anns.append({"id": len(anns) + 1, "image_id": img + 1, "category_id": 1, "iscrowd": 0,
                         "segmentation": {"size": r["size"], "counts": r["counts"].decode()},
                         "area": float(mask_utils.area(r)), "bbox": list(mask_utils.toBbox(r))})
        for p in preds:
            r = mask_utils.encode(np.asfortranarray(p))
            score = 1.0 if rng.random() < 0.6 else rng.choice([0.5, 0.75, 0.9, round(rng.random(), 3)])
            dets.append({"image_id": img + 1, "category_id": 1, "score": score,
                         "segmentation": {"size": r["size"], "counts": r["counts"].decode()}})
        if gts and preds:
            g_r = [mask_utils.encode(np.asfortranarray(g)) for g in gts]
            p_r = [mask_utils.encode(np.asfortranarray(p)) for p in preds]
            iou_pairs.append({"image_id": img + 1,
                              "ious": mask_utils.iou(p_r, g_r, [0] * len(g_r)).tolist()})

    def ap50(detections):
        gt = COCO()
        gt.dataset = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "object"}]}
        with contextlib.redirect_stdout(io.StringIO()):
            gt.createIndex()
            dt = gt.loadRes([dict(d) for d in detections]) if detections else COCO()
            ev = COCOeval(gt, dt, "segm")
            ev.params.catIds = [1]
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        return float(ev.stats[1])

    ones = [dict(d, score=1.0) for d in dets]
    return {"images": images, "annotations": anns, "detections": dets, "ap50_scored": ap50(dets),
            "ap50_all_ones": ap50(ones), "ious": iou_pairs}


# ---- LLaVA-Med v1.0 eval_metrics (transcribed from llava/eval/run_eval.py and eval_metrics/glossary.py);
# HuatuoGPT-Vision's match_choice3 (transcribed from scorer.py) ----
# The contractions table is shared with the Rust implementation (one data file, transcribed from the
# VQA-challenge list LLaVA-Med ships in eval_metrics/glossary.py).
with open(os.path.join(os.path.dirname(__file__), "..", "..", "mimo-bench", "data", "vqa_contractions.json")) as _f:
    CONTRACTIONS = json.load(_f)["contractions"]
MANUAL_MAP = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
              "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
ARTICLES = ["a", "an", "the"]
PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
COMMA_STRIP = re.compile(r"(\d)(\,)(\d)")
PUNCT = [";", r"/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!"]


def process_punctuation(in_text):
    out_text = in_text
    for p in PUNCT:
        if (p + " " in in_text or " " + p in in_text) or (re.search(COMMA_STRIP, in_text) is not None):
            out_text = out_text.replace(p, "")
        else:
            out_text = out_text.replace(p, " ")
    out_text = PERIOD_STRIP.sub("", out_text, re.UNICODE)
    return out_text


def process_digit_article(in_text):
    out_text = []
    for word in in_text.lower().split():
        word = MANUAL_MAP.setdefault(word, word)
        if word not in ARTICLES:
            out_text.append(word)
    for word_id, word in enumerate(out_text):
        if word in CONTRACTIONS:
            out_text[word_id] = CONTRACTIONS[word]
    return " ".join(out_text)


def normalize_word(token):
    token = process_punctuation(token)
    token = process_digit_article(token)
    return token.replace(",", "")


def closed_hit(gt, pred):
    gt, pred = normalize_word(gt.lower()), normalize_word(pred.lower())
    return 1 if (("yes" in pred) or ("no" in pred)) and (gt in pred) else 0


def match_choice3(text):
    m = re.findall(r"(is |是|\*|\W|\ |\(|为|^|'|\"|#)(?![aA] )([abcdefghijklmnABCDEFGHIJKLMN])(\W|$)", text, re.S)
    return m[0][1] if m else None


def vqa(rng):
    raw = ["Yes.", "No, the nodule is benign", "The nodule is benign", "no", "yes, there is (a) mass",
           "1,000 cells", "Three lesions; left-sided", "It's the L.V. in 3.5 cm", "one/two", "The answer: YES!",
           "isnt it normal", "a. b. c. d.", "x-ray_image <ct> @scan", "won't tell", "None of the above",
           "1.2.3. " * 12, "ten, nine", "\"quoted\" [bracket] {brace}", "no.", "N/A", ""]
    pieces = ["yes", "no", "not", "nodule", "know", "the", "a", "an", "left", "right", "lung", "3", "three", ",", ".",
              "!", "?", "-", "/", "(", ")", "1,5", "2.5", "ct", "mri", "its", "dont", ";", "_"]
    for _ in range(120):
        s = ""
        for _ in range(rng.randint(1, 7)):
            s += rng.choice(pieces) + rng.choice([" ", "", " "])
        raw.append(s.strip() if rng.random() < 0.7 else s)
    norm = [{"text": s, "normalized": normalize_word(s.lower())} for s in raw]
    gts = ["yes", "no", "no", "yes", "left"]
    hits = [{"gt": g, "pred": p, "hit": closed_hit(g, p)} for p in raw[:60] for g in gts[:3]]
    hits.append({"gt": "no", "pred": "The nodule is benign", "hit": closed_hit("no", "The nodule is benign")})
    choices = ["B", "B. yes", "The answer is B.", "(C) no", "A lesion is present, so A.", "a", "b) no", "Answer: D",
               "I think it's c", "Yes", "**E**", "#F", "是B", "为C", "'D'", "A", "answer is A because", "None",
               "K.", "option n", "The options are A and B"]
    for _ in range(40):
        choices.append(rng.choice(["The answer is ", "", "I pick ", "(", "Option ", "a "]) +
                       rng.choice("ABCDEFGHIJKLMNabcdn") + rng.choice([".", ")", " is correct", "", ":"]))
    letters = [{"text": t, "letter": match_choice3(t)} for t in choices]
    return {"normalize": norm, "closed": hits, "choice": letters}


def main():
    os.makedirs(OUT, exist_ok=True)
    rng = random.Random(0)
    for name, f in [("text", text), ("masks", masks), ("vqa", vqa), ("stems", stems)]:
        with open(f"{OUT}/{name}.json", "w") as fh:
            json.dump(f(rng), fh, indent=0, ensure_ascii=False)
        print("wrote", name)


if __name__ == "__main__":
    main()
