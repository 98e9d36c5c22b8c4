#!/usr/bin/env python3
"""Checks, on a real model and real data, that the soft-mask CUDA kernels give the gradients
of the fp32 torch implementation: one batch, the loss of train.py, every parameter's gradient
through (1) the torch path in fp32 (the reference), (2) the torch path under bf16 autocast,
(3) the CUDA kernels under autocast (the default set, wgmma on Hopper) and (4) the mma.sync set;
and, for the scale of bf16 noise, dense SDPA under autocast vs fp32. Prints cosine similarity
and relative L2 error of the whole gradient, and the worst parameter's cosine (GPU machine):

  python3 scripts/train/check_soft_mask_grads.py --model models/unique-demo --corpus .train/corpus
"""
import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as C  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="models/unique-demo")
    ap.add_argument("--corpus", default=".train/corpus")
    ap.add_argument("--batch", type=int, default=2, help="sequences of the model's context length")
    ap.add_argument("--temperatures", default="0.5,0.05")
    ap.add_argument("--budget-fracs", default="16,64", help="budget = context / f")
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("check_soft_mask_grads: needs a CUDA GPU")
    from transformers import LlamaForCausalLM
    sm, hf = C.load_unique_attn()
    hf.register_transformers()
    print("soft-mask CUDA kernel set:", sm.cuda_kernel())
    torch.backends.cuda.matmul.allow_tf32 = False
    model = LlamaForCausalLM.from_pretrained(a.model, dtype=torch.float32).cuda()
    cfg = model.config
    L = cfg.max_position_embeddings
    cfg.unique_page_size, cfg.unique_sink, cfg.unique_recent, cfg.unique_mode = 16, 1, 1, "soft"
    toks, ans = C.make_batch(np.random.default_rng(a.seed), C.Corpus(a.corpus, "train"), a.batch, L, 0.5)
    x, am = torch.from_numpy(toks).cuda(), torch.from_numpy(ans).cuda()

    def grads(attn, backend, autocast, T=1.0, frac=16):
        cfg._attn_implementation, cfg.unique_backend = attn, backend
        cfg.unique_budget, cfg.unique_temperature = max(16, L // frac), T
        model.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
            logits = model(input_ids=x, use_cache=False).logits
        text, ansl, _ = C.lm_losses(logits, x, am)
        loss = text + (ansl if ansl is not None else 0.0)
        loss.backward()
        return loss.item(), {n: p.grad.detach().flatten().clone() for n, p in model.named_parameters()
                             if p.grad is not None}

    def compare(g, ref):
        cos = torch.nn.functional.cosine_similarity
        va, vb = torch.cat(list(g.values())), torch.cat([ref[n] for n in g])
        worst = min((cos(g[n], ref[n], dim=0).item(), n) for n in g)
        return (f"cos {cos(va, vb, dim=0).item():.5f}  rel L2 {((va - vb).norm() / vb.norm()).item():.4f}  "
                f"worst {worst[0]:.4f} ({worst[1]})")

    for T in (float(t) for t in a.temperatures.split(",")):
        for frac in (int(f) for f in a.budget_fracs.split(",")):
            l_ref, ref = grads("unique_soft_mask", "torch", False, T, frac)
            rows = [("torch, bf16 autocast", grads("unique_soft_mask", "torch", True, T, frac))]
            rows.append((f"cuda {sm.cuda_kernel()}, autocast", grads("unique_soft_mask", "cuda", True, T, frac)))
            os.environ["UNIQUE_SOFT_MASK_KERNEL"] = "mma"
            rows.append(("cuda mma, autocast", grads("unique_soft_mask", "cuda", True, T, frac)))
            del os.environ["UNIQUE_SOFT_MASK_KERNEL"]
            print(f"T {T}, budget context/{frac}: loss fp32 torch {l_ref:.5f}")
            for name, (loss, g) in rows:
                print(f"  {name:22s} loss {loss:.5f}  {compare(g, ref)}")
    l_d, ref = grads("sdpa", None, False)
    l_a, g = grads("sdpa", None, True)
    print(f"dense SDPA (the scale of bf16 autocast noise): loss fp32 {l_d:.5f}, autocast {l_a:.5f}")
    print(f"  {'sdpa, bf16 autocast':22s} {compare(g, ref)}")


if __name__ == "__main__":
    main()
