#!/usr/bin/env python3
"""Plots the eval JSON of scripts/train/evaluate.py (python3-matplotlib):
  PREFIX_loss.png     held-out loss increase over the model's own dense loss (%) vs budget
  PREFIX_passkey.png  passkey accuracy vs budget (dense as a dashed line per model)
for every (model, estimator) row set.

  python3 scripts/train/plot_train_eval.py OUT/eval.json --prefix docs/train_softmask
"""
import argparse
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("eval_json")
    ap.add_argument("--prefix", default="docs/train_softmask")
    a = ap.parse_args()
    ev = json.load(open(a.eval_json))
    L = ev.get("context")
    styles = {"unique": "o-", "quest": "s--", "mean": "^:"}
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    series = []
    for mi, (label, m) in enumerate(ev["models"].items()):
        rows = m["rows"]
        dense = next((r for r in rows if r["estimator"] == "dense"), None)
        for est in sorted({r["estimator"] for r in rows if r["estimator"] != "dense"}):
            rs = sorted((r for r in rows if r["estimator"] == est), key=lambda r: r["budget_frac"])
            series.append((label, est, dense, rs, colors[mi % len(colors)]))
    for metric, ylabel, fname in (("loss", "held-out loss increase over dense (%)", "loss"),
                                  ("passkey", "passkey accuracy", "passkey"), ("kv", "kv (multi-key) accuracy", "kv")):
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for label, est, dense, rs, col in series:
            xs = [r["budget_frac"] for r in rs]
            if metric == "loss":
                ys = [100.0 * (r["loss_mean"] - dense["loss_mean"]) / dense["loss_mean"] for r in rs]
            else:
                ys = [r[metric] for r in rs]
            ax.plot(xs, ys, styles.get(est, "x-"), color=col, label=f"{label}: {est}")
        if metric != "loss":
            for label, est, dense, rs, col in series:
                if est == "unique" and dense is not None:
                    ax.axhline(dense[metric], color=col, ls="--", lw=0.8, label=f"{label}: dense")
        ax.set_xscale("log", base=2)
        fr = sorted({r["budget_frac"] for *_, rs, _ in series for r in rs})
        ax.set_xticks(fr)
        ax.set_xticklabels([f"1/{f}" for f in fr])
        ax.set_xlabel(f"budget (fraction of the {L}-token context)")
        ax.set_ylabel(ylabel)
        if metric == "loss":
            ax.axhline(1.0, color="grey", ls=":", lw=0.8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax.set_title(f"hard top-k (page {ev['page_size']}, sink {ev['sink']}, recent {ev['recent']})")
        fig.tight_layout()
        path = f"{a.prefix}_{fname}.png"
        fig.savefig(path, dpi=120)
        print("plot:", path)


if __name__ == "__main__":
    main()
