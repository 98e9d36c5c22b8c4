#!/usr/bin/env python3
"""Baseline for the GPU prefill benchmark, measured in the same device call.

Reads the JSON lines of unique_bench_prefill (--ours), times torch SDPA's flash-attention
causal prefill on the same shapes (one sequence, 32 query heads, K/V of 8 heads repeated to
32 so the flash backend takes it, head dim 128, bf16; median of CUDA-event-timed runs) and
prints one table: our dense and UniSparse prefill against it (and the mma.sync kernel's dense
time and the fixed-kept rows when the benchmark wrote them).

    python3 bench/gpu/compare_prefill.py --ours prefill.jsonl [--json out.json]
"""
import argparse
import json

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel


def median_ms(fn, reps):
    fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        a = torch.cuda.Event(enable_timing=True)
        b = torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b))
    ts.sort()
    return ts[len(ts) // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ours", required=True)
    ap.add_argument("--json")
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    rows = [json.loads(l) for l in open(args.ours) if l.strip()]
    Hq, Hk, D = 32, 8, 128
    out = []
    print(f"{'context':>8} {'sdpa_flash ms':>13} {'ours dense':>10} {'vs sdpa':>7} {'rows':>8} {'kept':>6} "
          f"{'ours sparse':>11} {'vs sdpa':>7}")
    for L in sorted({r["context"] for r in rows}):
        torch.cuda.empty_cache()
        q = torch.randn(1, Hq, L, D, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(1, Hk, L, D, device="cuda", dtype=torch.bfloat16).repeat_interleave(Hq // Hk, dim=1)
        v = torch.randn(1, Hk, L, D, device="cuda", dtype=torch.bfloat16).repeat_interleave(Hq // Hk, dim=1)
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            sdpa = median_ms(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True), args.reps)
        del q, k, v
        dense = next(r for r in rows if r["context"] == L and r["mode"] == "dense")
        mma = next((r for r in rows if r["context"] == L and r["mode"] == "dense-mma"), None)
        if mma:  # the mma.sync kernel, for the record
            print(f"{L:8d} {sdpa:13.2f} {mma['ms']:10.2f} {sdpa / mma['ms']:6.2f}x {'mma':>8}")
        for r in [x for x in rows if x["context"] == L and x["mode"] in ("unisparse", "fixed-kept")]:
            label = f"p={r['top_p']:.2f}" if r["mode"] == "unisparse" else "fixed"
            print(f"{L:8d} {sdpa:13.2f} {dense['ms']:10.2f} {sdpa / dense['ms']:6.2f}x {label:>8} "
                  f"{100 * r['kept']:5.1f}% {r['ms']:11.2f} {sdpa / r['ms']:6.2f}x")
            out.append(dict(context=L, sdpa_flash_ms=sdpa, dense_ms=dense["ms"], mode=r["mode"], top_p=r.get("top_p"),
                            kept=r["kept"], unisparse_ms=r["ms"], select_ms=r["select_ms"], attn_ms=r["attn_ms"],
                            dense_mma_ms=mma["ms"] if mma else None))
    if args.json:
        json.dump(out, open(args.json, "w"), indent=1)


if __name__ == "__main__":
    main()
