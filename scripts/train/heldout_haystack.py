#!/usr/bin/env python3
"""Writes the held-out KJV books of the training corpus (prepare_corpus.py keeps every 10th
document out of training) as one text file: the haystack for evaluating the in-house model
on text it never trained on.

  python3 scripts/train/heldout_haystack.py --corpus .train/corpus --out kjv_heldout.txt
  unique eval --model models/unique-demo --haystack kjv_heldout.txt ...
"""
import argparse
import json
import os

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("--corpus", default=".train/corpus")
ap.add_argument("--source", default="kjv")
ap.add_argument("--out", required=True)
a = ap.parse_args()
meta = json.load(open(os.path.join(a.corpus, "meta.json")))
docs = [d for d in meta["heldout"]["docs"] if d["source"] == a.source]
if not docs:
    raise SystemExit(f"heldout_haystack: no held-out {a.source} documents in {a.corpus}/meta.json")
data = open(os.path.join(a.corpus, "heldout.bin"), "rb").read()
with open(a.out, "wb") as f:
    f.write(b" ".join(data[d["offset"]:d["offset"] + d["bytes"]] for d in docs))
print(f"heldout_haystack: {len(docs)} documents ({', '.join(d['name'] for d in docs)}) -> {a.out}")
