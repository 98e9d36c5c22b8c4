#!/usr/bin/env python3
"""Baseline for the GPU soft-mask benchmark, measured in the same device call.

Reads the JSON lines of unique_bench_soft_mask --json (--ours), times torch SDPA's
flash-attention causal forward+backward on the same shapes (each row's B, query / KV heads
(enable_gqa), head dim; rows without them: B 1, 32 / 8 heads, D 128; bf16, [B, H, L, D];
median of CUDA-event-timed runs) and prints our fwd+bwd time against it (target: ratio <= 1.3).

    python3 bench/gpu/compare_soft_mask.py --ours soft_mask.jsonl [--json out.json]
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


def sdpa_fwd_bwd_ms(L, reps, B=1, Hq=32, Hk=8, D=128):
    q = torch.randn(B, Hq, L, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    k = torch.randn(B, Hk, L, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    v = torch.randn(B, Hk, L, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    g = torch.randn(B, Hq, L, D, device="cuda", dtype=torch.bfloat16)

    def fwd():
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)

    def fwd_bwd():
        q.grad = k.grad = v.grad = None
        fwd().backward(g)

    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        f = median_ms(fwd, reps)
        fb = median_ms(fwd_bwd, reps)
    return f, fb


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ours", required=True)
    ap.add_argument("--json")
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    rows = [json.loads(l) for l in open(args.ours) if l.strip()]
    out = []
    def shape(r):
        return (r.get("B", 1), r.get("Hq", 32), r.get("Hkv", 8), r.get("D", 128), r["L"])

    print(f"{'B':>2} {'Hq':>3} {'Hkv':>3} {'D':>3} {'L':>6} {'P':>3} {'sdpa fwd':>9} {'sdpa f+b':>9} {'ours fwd':>9} "
          f"{'ours f+b':>9} {'f+b ratio':>9} {'fwd mma':>9} {'ours bwd':>9} {'bwd mma':>9} {'kernel':>7}")
    for sh in sorted({shape(r) for r in rows}, key=lambda s: (s[3] != 128, s[4], s)):
        torch.cuda.empty_cache()
        B, Hq, Hk, D, L = sh
        f, fb = sdpa_fwd_bwd_ms(L, args.reps, B, Hq, Hk, D)
        for r in [x for x in rows if shape(x) == sh]:
            ratio = r["fwd_bwd_ms"] / fb
            print(f"{B:2d} {Hq:3d} {Hk:3d} {D:3d} {L:6d} {r['page_size']:3d} {f:9.2f} {fb:9.2f} {r['fwd_ms']:9.2f} "
                  f"{r['fwd_bwd_ms']:9.2f} {ratio:8.2f}x {r.get('fwd_mma_ms', r['fwd_ms']):9.2f} {r['bwd_ms']:9.2f} "
                  f"{r.get('bwd_mma_ms', r['bwd_ms']):9.2f} {r.get('kernel', 'mma'):>7}")
            out.append(dict(B=B, Hq=Hq, Hkv=Hk, D=D, L=L, page_size=r["page_size"], sdpa_fwd_ms=f,
                            sdpa_fwd_bwd_ms=fb, ours_fwd_ms=r["fwd_ms"], ours_bwd_ms=r["bwd_ms"],
                            ours_fwd_bwd_ms=r["fwd_bwd_ms"], ratio=ratio,
                            kernel=r.get("kernel", "mma"), ours_fwd_mma_ms=r.get("fwd_mma_ms"),
                            ours_bwd_mma_ms=r.get("bwd_mma_ms")))
    if args.json:
        json.dump(out, open(args.json, "w"), indent=1)


if __name__ == "__main__":
    main()
