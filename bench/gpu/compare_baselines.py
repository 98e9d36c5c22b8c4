#!/usr/bin/env python3
"""Baselines for the GPU decode benchmark, measured in the same device call.

Reads the JSON lines of unique_bench_gpu (--ours), times torch SDPA dense decode (GQA,
bf16, contiguous K/V), FlashInfer's dense paged decode when `import flashinfer` works,
and the naive torch page top-k (score with einsum, topk, gather, SDPA) on the same shapes,
with the same L2 flush + CUDA-event median method, then prints one comparison table.

    python3 bench/gpu/compare_baselines.py --ours bench.jsonl [--json out.json]
"""
import argparse
import json
import os
import sys

import torch
import torch.nn.functional as F


def bench(fn, reps=30, warm=3):
    flush = torch.ones(256 << 20, dtype=torch.uint8, device="cuda")
    read_flush = os.environ.get("UNIQUE_BENCH_FLUSH") == "read"  # as unique_bench_gpu
    for _ in range(warm):
        fn()
    ts = []
    for i in range(reps):
        if read_flush:
            flush.view(torch.int64).max()
        else:
            flush.fill_(i & 0xFF)
        a = torch.cuda.Event(enable_timing=True)
        b = torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b) * 1e3)
    ts.sort()
    return ts[len(ts) // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ours", required=True)
    ap.add_argument("--json")
    ap.add_argument("--reps", type=int, default=30)
    args = ap.parse_args()
    rows = [json.loads(l) for l in open(args.ours) if l.strip()]
    peak = next(r["copy_GBps"] for r in rows if r["kind"] == "peak")
    ours = {(r["batch"], r["context"], r["page"], r["budget"], r["variant"]): r for r in rows if r["kind"] == "ours"}
    try:
        import flashinfer  # noqa: F401
        have_fi = True
    except Exception as e:  # the wheel is optional on the device
        print(f"flashinfer: not importable ({type(e).__name__}: {e}); comparing with torch SDPA", file=sys.stderr)
        have_fi = False
    Hq, Hk, D = 32, 8, 128
    shapes = sorted({(k[0], k[1]) for k in ours})
    out = []
    print(f"copy peak {peak:.0f} GB/s; times in us (median, L2 flushed); speed-ups vs torch SDPA dense"
          + (" and FlashInfer dense" if have_fi else ""))
    hdr = f"{'batch':>5} {'ctx':>7} {'sdpa':>9} {'fi':>9} {'ours_d':>9} {'d/sdpa':>7} {'d/fi':>6} {'naive16':>9} " \
          f"{'u16':>8} {'x_sdpa16':>8} {'x_fi16':>7} {'u32':>8} {'x_sdpa32':>8} {'x_fi32':>7} {'ideal16':>7}"
    print(hdr)
    for B, L in shapes:
        torch.cuda.empty_cache()
        q = torch.randn(B, Hq, 1, D, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(B, Hk, L, D, device="cuda", dtype=torch.bfloat16)
        v = torch.randn(B, Hk, L, D, device="cuda", dtype=torch.bfloat16)
        sdpa = bench(lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=True), args.reps)
        fi = None
        if have_fi:
            try:
                import flashinfer
                P = 16
                npg = L // P
                kc = k.view(B, Hk, npg, P, D).permute(0, 2, 1, 3, 4).reshape(B * npg, Hk, P, D).contiguous()
                vc = v.view(B, Hk, npg, P, D).permute(0, 2, 1, 3, 4).reshape(B * npg, Hk, P, D).contiguous()
                ws = torch.empty(256 << 20, dtype=torch.uint8, device="cuda")
                w = flashinfer.BatchDecodeWithPagedKVCacheWrapper(ws, "HND")
                indptr = torch.arange(B + 1, dtype=torch.int32, device="cuda") * npg
                idx = torch.arange(B * npg, dtype=torch.int32, device="cuda")
                last = torch.full((B,), P, dtype=torch.int32, device="cuda")
                w.plan(indptr, idx, last, Hq, Hk, D, P, q_data_type=torch.bfloat16)
                qf = q.view(B, Hq, D)
                fi = bench(lambda: w.run(qf, (kc, vc)), args.reps)
                del kc, vc
            except Exception as e:
                print(f"flashinfer failed at B={B} L={L}: {e}", file=sys.stderr)
        naive = None
        if (B, L) in {(1, 131072), (8, 131072), (8, 32768), (1, 32768)}:
            P, budget = 16, 2048
            npg = L // P
            kp = k.view(B, Hk, npg, P, D)
            mu = kp.float().mean(3).to(torch.bfloat16)
            sd = kp.float().std(3).to(torch.bfloat16)
            g = Hq // Hk

            def sparse():
                qg = q.view(B, Hk, g, D)
                s = torch.einsum("bhgd,bhpd->bhgp", qg, mu) + torch.einsum("bhgd,bhpd->bhgp", qg.abs(), sd)
                idx = s.amax(2).topk(budget // P, dim=-1).indices
                gi = idx[..., None, None].expand(B, Hk, budget // P, P, D)
                ks = torch.gather(kp, 2, gi).view(B, Hk, budget, D)
                vs = torch.gather(v.view(B, Hk, npg, P, D), 2, gi).view(B, Hk, budget, D)
                return F.scaled_dot_product_attention(q, ks, vs, enable_gqa=True)

            naive = bench(sparse, args.reps)
            del mu, sd
        del q, k, v
        od = ours.get((B, L, 16, 0, "dense"))
        u16 = ours.get((B, L, 16, 2048, "unique"))
        u32 = ours.get((B, L, 32, 2048, "unique"))
        base = fi if fi else sdpa
        r = dict(batch=B, context=L, sdpa_us=sdpa, flashinfer_us=fi, naive_topk_us=naive,
                 ours_dense_us=od["us"] if od else None, unique16_us=u16["us"] if u16 else None,
                 unique32_us=u32["us"] if u32 else None)
        out.append(r)
        f = lambda x: f"{x:9.1f}" if x else f"{'-':>9}"
        x = lambda a, b: f"{a / b:7.2f}" if a and b else f"{'-':>7}"
        print(f"{B:5d} {L:7d} {f(sdpa)} {f(fi)} {f(r['ours_dense_us'])} {x(sdpa, r['ours_dense_us'])} "
              f"{x(fi, r['ours_dense_us']):>6} {f(naive)} {f(r['unique16_us'])[1:]} {x(sdpa, r['unique16_us']):>8} "
              f"{x(fi, r['unique16_us'])} {f(r['unique32_us'])[1:]} {x(sdpa, r['unique32_us']):>8} "
              f"{x(fi, r['unique32_us'])} {u16['ideal_x'] if u16 else 0:7.1f}")
    if args.json:
        json.dump(dict(copy_GBps=peak, flashinfer=have_fi, rows=out), open(args.json, "w"), indent=1)


if __name__ == "__main__":
    main()
