#!/usr/bin/env python3
"""Evaluates model directories at their training length, dense and under hard top-k page
attention (python/unique_attn/soft_mask.py: hard_topk_attention, the T -> 0 limit of the soft
mask; selection per query head, which equals the engine's per-KV-head selection for these
MHA models), for the estimators unique / quest / mean and budgets context / f:
  - loss: mean next-byte CE on held-out documents (prepare_corpus.py's held-out split),
    per source (kjv, python) and their mean;
  - passkey: the engine's passkey template (src/eval/tasks.cpp) with a held-out KJV
    haystack at evenly spread depths; a sample is correct when the greedy continuation
    is the key (teacher-forced argmax on every answer token == greedy decoding);
  - kv: one question over 4 key-value needles (RULER multi-key), same criterion.
All positions attend sparsely (every query selects its own pages, as in token-by-token
decoding) unless --sparse-from-question: then the prompt before the question is dense.

  python3 scripts/train/evaluate.py --models OUT/model-dense OUT/model-softmask --out OUT/eval.json
  python3 scripts/train/evaluate.py --tiny --models /tmp/tiny --out /tmp/eval.json
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as C  # noqa: E402


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", required=True, help="HF model directories")
    ap.add_argument("--labels", nargs="*", default=None, help="names of the models (default: dir names)")
    ap.add_argument("--corpus", default=".train/corpus")
    ap.add_argument("--out", default=".train/eval.json")
    ap.add_argument("--context", type=int, default=0, help="0: the model's max_position_embeddings")
    ap.add_argument("--budget-fracs", default="8,16,32,64")
    ap.add_argument("--estimators", default="unique,quest,mean",
                    help="estimators for the first model; later models get --estimators-rest")
    ap.add_argument("--estimators-rest", default="unique")
    ap.add_argument("--page-size", type=int, default=16)
    ap.add_argument("--sink", type=int, default=1)
    ap.add_argument("--recent", type=int, default=1)
    ap.add_argument("--loss-seqs", type=int, default=8, help="held-out windows per source")
    ap.add_argument("--passkey", type=int, default=32, help="passkey samples")
    ap.add_argument("--kv", type=int, default=16, help="kv samples")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--sparse-from-question", action="store_true")
    ap.add_argument("--seed", type=int, default=777)
    ap.add_argument("--minutes", type=float, default=0, help="stop starting new configurations after this (0: none)")
    ap.add_argument("--tiny", action="store_true", help="smoke settings (CPU): few samples")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = ap.parse_args(argv)
    if a.tiny:
        a.loss_seqs, a.passkey, a.kv, a.batch, a.budget_fracs = 2, 4, 2, 2, "4,8"
    return a


def build_sets(a, corpus, L):
    rng = np.random.default_rng(a.seed)
    loss = {s: np.stack([C.text_sample(rng, corpus, L, s)[0] for _ in range(a.loss_seqs)]) for s in corpus.sources()}
    hay = "kjv" if "kjv" in corpus.spans else corpus.sources()[0]
    depths = np.linspace(0.02, 0.98, max(1, a.passkey))
    pk = [C.passkey_sample(rng, corpus, L, hay, depth=float(d)) for d in depths[:a.passkey]]
    kv = [C.kv_sample(rng, corpus, L, hay, n_keys=4, n_questions=1) for _ in range(a.kv)]
    return loss, pk, kv


def question_start(ans_row):
    """First position of the tail (the question): just before the first answer token's span."""
    idx = np.nonzero(ans_row)[0]
    return int(idx[0]) if len(idx) else len(ans_row)


@torch.no_grad()
def run_config(model, hf, sets, a, mode, estimator, budget, dev):
    loss_sets, pk, kv = sets
    opts = dict(mode=mode, estimator=estimator, budget=budget, page_size=a.page_size, sink=a.sink,
                recent=a.recent)
    res = {}

    def fwd(x, sparse_from=0):
        with hf.soft_mask_options(**opts, sparse_from=sparse_from), \
                torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            return model(input_ids=x, use_cache=False).logits.float()

    losses = {}
    for src, arr in loss_sets.items():
        tot, n = 0.0, 0
        for i in range(0, len(arr), a.batch):
            x = torch.from_numpy(arr[i:i + a.batch]).to(dev)
            lg = fwd(x)
            ce = torch.nn.functional.cross_entropy(lg[:, :-1].reshape(-1, lg.shape[-1]), x[:, 1:].reshape(-1),
                                                   reduction="sum")
            tot += float(ce)
            n += x[:, 1:].numel()
        losses[src] = tot / max(n, 1)
    res["loss"] = {k: round(v, 5) for k, v in losses.items()}
    res["loss_mean"] = round(float(np.mean(list(losses.values()))), 5)
    for name, samples in (("passkey", pk), ("kv", kv)):
        ok = []
        for i in range(0, len(samples), a.batch):
            chunk = samples[i:i + a.batch]
            x = torch.from_numpy(np.stack([t for t, _ in chunk])).to(dev)
            am = np.stack([m for _, m in chunk])
            sf = min(question_start(r) for r in am) - 64 if a.sparse_from_question and mode == "hard" else 0
            pred = fwd(x, max(0, sf)).argmax(-1)[:, :-1].cpu().numpy()
            tgt = x[:, 1:].cpu().numpy()
            m = am[:, 1:]
            for r in range(len(chunk)):
                ok.append(bool((pred[r][m[r]] == tgt[r][m[r]]).all()))
        res[name] = round(float(np.mean(ok)) if ok else float("nan"), 4)
    return res


def main(argv=None):
    a = parse(argv)
    dev = torch.device(a.device)
    from transformers import LlamaForCausalLM
    _, hf = C.load_unique_attn()
    hf.register_transformers()
    corpus = C.Corpus(a.corpus, "heldout")
    labels = a.labels or [os.path.basename(m.rstrip("/")) for m in a.models]
    fracs = [int(f) for f in a.budget_fracs.split(",")]
    out = {"corpus": a.corpus, "page_size": a.page_size, "sink": a.sink, "recent": a.recent,
           "budget_fracs": fracs, "selection": "per query head (MHA: equals the engine's per-KV-head selection)",
           "sparse_positions": "from the question on" if a.sparse_from_question else "all",
           "samples": {"loss_seqs_per_source": a.loss_seqs, "passkey": a.passkey, "kv": a.kv}, "models": {}}
    models, jobs = {}, []
    for mi, (path, label) in enumerate(zip(a.models, labels)):
        model = LlamaForCausalLM.from_pretrained(path, dtype=torch.float32).to(dev).eval()
        model.config._attn_implementation = "unique_soft_mask"
        models[label] = model
        out["models"][label] = {"path": path, "rows": []}
        info = os.path.join(path, "training_info.json")
        if os.path.exists(info):
            ti = json.load(open(info))
            out["models"][label]["training"] = {k: ti.get(k) for k in ("steps", "seconds", "parameters")}
        ests = [e for e in (a.estimators if mi == 0 else a.estimators_rest).split(",") if e]
        jobs.append((label, "dense", 1))
        jobs += [(label, e, f) for e in ests[:1] for f in fracs]
    # the other estimators of the first model last (a time limit cuts them first)
    first_ests = [e for e in a.estimators.split(",") if e]
    jobs += [(labels[0], e, f) for e in first_ests[1:] for f in fracs]
    L = a.context or models[labels[0]].config.max_position_embeddings
    out["context"] = L
    sets = build_sets(a, corpus, L)
    t0 = time.time()
    for label, est, f in jobs:
        if a.minutes and time.time() - t0 > a.minutes * 60:
            print(f"evaluate: --minutes {a.minutes} reached: skipping {label} {est} 1/{f}", flush=True)
            out.setdefault("skipped", []).append(f"{label} {est} 1/{f}")
            continue
        b = L if est == "dense" else max(a.page_size, L // f)
        mode = "dense" if est == "dense" else "hard"
        ts = time.time()
        r = run_config(models[label], hf, sets, a, mode, est, b, dev)
        out["models"][label]["rows"].append({"estimator": est, "budget_frac": f, "budget": b, **r,
                                             "seconds": round(time.time() - ts, 1)})
        print(f"evaluate: {label} {est} 1/{f} ({b} tokens, {time.time() - ts:.1f}s): {r}", flush=True)
        write(out, a.out)
    write(out, a.out)
    print(summary(out), flush=True)
    print(f"evaluate: wrote {a.out}", flush=True)


def summary(out) -> str:
    """Markdown table of every row: loss (mean, kjv, python), change vs the model's dense loss,
    passkey and kv accuracy."""
    lines = ["| model | estimator | budget | loss | loss kjv | loss python | vs dense | passkey | kv |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for label, m in out["models"].items():
        dense = next((r for r in m["rows"] if r["estimator"] == "dense"), None)
        for r in m["rows"]:
            rel = "" if dense is None or r is dense else \
                f"{100 * (r['loss_mean'] - dense['loss_mean']) / dense['loss_mean']:+.2f}%"
            b = "dense" if r["estimator"] == "dense" else f"1/{r['budget_frac']} = {r['budget']}"
            lines.append(f"| {label} | {r['estimator']} | {b} | {r['loss_mean']:.4f} | {r['loss'].get('kjv', float('nan')):.4f} "
                         f"| {r['loss'].get('python', float('nan')):.4f} | {rel} | {r['passkey']:.3f} | {r['kv']:.3f} |")
    return "\n".join(lines)


def write(out, path):
    """Written after every configuration, so a run cut short keeps what it measured."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(out, f, indent=1)
    os.replace(path + ".tmp", path)


if __name__ == "__main__":
    main()
