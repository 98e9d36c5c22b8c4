#!/usr/bin/env python3
"""Builds the byte corpus of the in-house long-context model from real text installed from
Debian packages by name:
  - bible-kjv-text: the King James Bible (/usr/lib/bible.data, decoded by kjv.py), one
    document per book, cleaned as the engine's haystack is (src/eval/haystack.cpp: verse
    references and digits removed, whitespace collapsed to single spaces);
  - python3 (libpython3.11-stdlib on Debian 12): the standard library's *.py sources, one document per file
    (tests excluded), as they are.
Documents are split train / held-out deterministically (every --heldout-every-th document of
each source, by sorted name), and written as uint8 byte streams plus a meta JSON with the
document offsets:
  OUT/train.bin  OUT/heldout.bin  OUT/meta.json        (default OUT = .train/corpus)
Standard library only. Run on the CPU machine; carry OUT.
"""
import argparse
import glob
import hashlib
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kjv import KJV_PATH, read_kjv  # noqa: E402

REF = re.compile(r"^([0-9]?[A-Za-z]+)([0-9]+):([0-9]+) ")


def clean(text: str) -> str:
    """As unique::eval::clean_text: no digits, whitespace runs -> one space."""
    text = re.sub(r"[0-9]", "", text)
    return re.sub(r"\s+", " ", text).strip()


def kjv_books(path: str):
    raw = read_kjv(path)
    books, order = {}, []
    for line in raw.split("\n"):
        m = REF.match(line)
        if not m:
            continue
        name = m.group(1)
        if name not in books:
            books[name] = []
            order.append(name)
        books[name].append(line[m.end():])
    return [(f"kjv/{i:02d}-{n}", clean(" ".join(books[n]))) for i, n in enumerate(order)]


def python_sources(root: str, max_bytes: int):
    files = sorted(f for f in glob.glob(os.path.join(root, "**", "*.py"), recursive=True)
                   if "/test/" not in f and "/tests/" not in f and "site-packages" not in f
                   and "dist-packages" not in f and "/idle_test/" not in f)
    docs, total = [], 0
    for f in files:
        try:
            t = open(f, "rb").read().decode("utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        t = t.encode("ascii", "ignore").decode("ascii")
        if len(t) < 2000:
            continue
        if total + len(t) > max_bytes:
            break
        docs.append(("py/" + os.path.relpath(f, root), t))
        total += len(t)
    return docs


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=".train/corpus")
    ap.add_argument("--kjv", default=KJV_PATH)
    roots = sorted(glob.glob("/usr/lib/python3.[0-9]*"), key=lambda r: [int(x) for x in r.split("python")[1].split(".")])
    ap.add_argument("--python-root", default="/usr/lib/python3.11" if os.path.isdir("/usr/lib/python3.11")
                    else (roots[-1] if roots else "/usr/lib/python3"),
                    help="standard library sources (Debian libpython3.X-stdlib); default python3.11 when present")
    ap.add_argument("--python-mb", type=float, default=12.0, help="at most this many MB of Python sources")
    ap.add_argument("--heldout-every", type=int, default=10, help="every n-th document of a source is held out")
    ap.add_argument("--tiny", action="store_true", help="a small corpus (smoke tests): 1 MB of each source")
    a = ap.parse_args()
    if not os.path.exists(a.kjv):
        sys.exit(f"prepare_corpus: {a.kjv} missing: apt-get install bible-kjv-text (scripts/install-deps)")
    docs = {"kjv": kjv_books(a.kjv)}
    if os.path.isdir(a.python_root):
        docs["python"] = python_sources(a.python_root, int((1 if a.tiny else a.python_mb) * 1e6))
    else:
        print(f"prepare_corpus: {a.python_root} missing: KJV only", file=sys.stderr)
    if a.tiny:
        docs["kjv"] = docs["kjv"][:20]
    os.makedirs(a.out, exist_ok=True)
    meta = {"sources": {}, "format": "uint8 bytes; documents concatenated; offsets per split",
            "heldout_every": a.heldout_every}
    streams = {"train": [], "heldout": []}
    docs_meta = {"train": [], "heldout": []}
    pos = {"train": 0, "heldout": 0}
    for src, items in docs.items():
        n = {"train": 0, "heldout": 0}
        for i, (name, text) in enumerate(items):
            split = "heldout" if i % a.heldout_every == a.heldout_every // 2 else "train"
            b = text.encode("utf-8")
            streams[split].append(b)
            docs_meta[split].append({"name": name, "source": src, "offset": pos[split], "bytes": len(b)})
            pos[split] += len(b)
            n[split] += 1
        meta["sources"][src] = n
    for split in ("train", "heldout"):
        data = b"".join(streams[split])
        with open(os.path.join(a.out, f"{split}.bin"), "wb") as f:
            f.write(data)
        meta[split] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(), "docs": docs_meta[split]}
    # the haystack for synthetic retrieval sequences: the cleaned KJV text of the train books
    # (what `unique eval` uses as its haystack too), as offsets into train.bin
    meta["haystack_docs"] = [d["name"] for d in docs_meta["train"] if d["source"] == "kjv"]
    with open(os.path.join(a.out, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    for split in ("train", "heldout"):
        by = {}
        for d in docs_meta[split]:
            by[d["source"]] = by.get(d["source"], 0) + d["bytes"]
        print(f"prepare_corpus: {split}: {meta[split]['bytes'] / 1e6:.2f} MB, {len(docs_meta[split])} documents "
              + ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in by.items()))
    print(f"prepare_corpus: wrote {a.out}/train.bin, heldout.bin, meta.json")


if __name__ == "__main__":
    main()
