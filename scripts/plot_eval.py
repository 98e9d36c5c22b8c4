#!/usr/bin/env python3
"""PNG plots of a `unique eval` results file (JSONL).

    python3 scripts/plot_eval.py eval_results.jsonl plots/

Writes, per task (and kv variant) and context: score (perplexity for ppl) vs budget, one line per
estimator, one panel per page size, dense as a dashed line; and for the recall task one
heatmap (layer x head, mean attention-mass recall) per estimator, page size and budget.
Needs matplotlib (Debian: python3-matplotlib, installed by scripts/install-deps).
"""
import collections
import json
import math
import os
import sys


def load(path):
    rows = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                r = json.loads(line)
            except json.JSONDecodeError as e:
                sys.exit(f"plot_eval: {path}:{n}: expected one JSON object per line, got invalid JSON ({e})")
            for field in ("task", "estimator", "budget", "page_size"):
                if field not in r:
                    sys.exit(f"plot_eval: {path}:{n}: expected field \"{field}\", got none")
            rows.append(r)
    return rows


def prefill_tag(r):
    """Rows of a sparse prefill get plots of their own ("" for dense and older rows)."""
    return "" if r.get("prefill", "dense") == "dense" else f"_unisparse-p{r['prefill_top_p']}"


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: plot_eval.py RESULTS.jsonl OUTDIR")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit("plot_eval: expected matplotlib (Debian package python3-matplotlib: scripts/install-deps), got none")
    rows = load(sys.argv[1])
    out = sys.argv[2]
    os.makedirs(out, exist_ok=True)
    written = []
    order = ["unique", "quest", "mean", "oracle", "random", "dense"]

    # Score (or perplexity) vs budget.
    curves = collections.defaultdict(lambda: collections.defaultdict(list))
    for r in rows:
        if r["task"] == "recall":
            continue
        name = r["task"] + ("_" + r["variant"] if r.get("variant") else "") + f"_{r['context']}" + prefill_tag(r)
        y = math.exp(r["nll"]) if r["task"] == "ppl" else r["score"]
        curves[name][(r["page_size"], r["estimator"], r["budget"])].append(y)
    for name, data in sorted(curves.items()):
        pages = sorted({k[0] for k in data})
        fig, axes = plt.subplots(1, len(pages), figsize=(4.2 * len(pages), 3.4), squeeze=False)
        for ax, page in zip(axes[0], pages):
            budgets = sorted({k[2] for k in data if k[0] == page and k[2] > 0})
            for est in order:
                pts = [(b, sum(v) / len(v)) for (p, e, b), v in data.items() if p == page and e == est]
                if not pts:
                    continue
                if est == "dense":
                    ax.axhline(pts[0][1], color="black", linestyle="--", label="dense")
                    continue
                pts.sort()
                ax.plot([b for b, _ in pts], [y for _, y in pts], marker="o", label=est)
            ax.set_xscale("log", base=2)
            if budgets:
                ax.set_xticks(budgets)
                ax.set_xticklabels([str(b) for b in budgets], fontsize=7)
            ax.set_xlabel("budget (tokens)")
            ppl = name.startswith("ppl_")
            ax.set_ylabel("perplexity" if ppl else "score")
            if ppl:
                ax.set_yscale("log")
            else:
                ax.set_ylim(-0.05, 1.05)
            ax.set_title(f"{name}, page {page}")
            ax.grid(alpha=0.3)
        axes[0][-1].legend(fontsize=7)
        fig.tight_layout()
        path = os.path.join(out, f"{name}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    # Recall heatmaps: layer x head per estimator, page size, budget.
    rec = collections.defaultdict(lambda: collections.defaultdict(list))
    for r in rows:
        if r["task"] == "recall" and r["estimator"] != "dense":
            rec[(r["context"], r["page_size"], r["budget"], prefill_tag(r))][(r["estimator"], r["layer"], r["head"])].append(r["recall"])
    for (context, page, budget, tag), data in sorted(rec.items()):
        ests = [e for e in order if any(k[0] == e for k in data)]
        layers = 1 + max(k[1] for k in data)
        heads = 1 + max(k[2] for k in data)
        fig, axes = plt.subplots(1, len(ests), figsize=(1.5 + (0.9 + 0.35 * heads) * len(ests), 1.6 + 0.35 * layers),
                                 squeeze=False, layout="constrained")
        for ax, est in zip(axes[0], ests):
            grid = [[float("nan")] * heads for _ in range(layers)]
            for (e, l, h), v in data.items():
                if e == est:
                    grid[l][h] = sum(v) / len(v)
            im = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto")
            ax.set_title(est, fontsize=9)
            ax.set_xlabel("head")
            ax.set_ylabel("layer")
            step = max(1, heads // 8)
            ax.set_xticks(range(0, heads, step))
            ax.set_yticks(range(0, layers, max(1, layers // 8)))
            if layers * heads <= 64:
                for l in range(layers):
                    for h in range(heads):
                        if not math.isnan(grid[l][h]):
                            ax.text(h, l, f"{grid[l][h]:.2f}", ha="center", va="center", fontsize=6,
                                    color="white" if grid[l][h] < 0.6 else "black")
        fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="attention-mass recall")
        fig.suptitle(f"attention-mass recall, context {context}, page {page}, budget {budget}{tag}", fontsize=10)
        path = os.path.join(out, f"recall_{context}_p{page}_b{budget}{tag}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    print(f"plot_eval: wrote {len(written)} plots to {out}: " + ", ".join(os.path.basename(p) for p in written))


if __name__ == "__main__":
    main()
