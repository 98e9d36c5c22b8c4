"""UNIQUE sparse decode attention inside a Hugging Face transformers Llama model.

Registers an attention function through transformers' AttentionInterface: every layer
appends its new keys/values to a unique_attn PagedKVCache (keeping the page statistics),
prefill runs dense (SDPA), and each decode step runs SparseDecodeWrapper (top-k pages).
With budget >= context the greedy output equals dense attention's (in fp32 token for token;
in bf16/fp16 up to a near-tie of the logits, which is checked: two attention kernels round
differently); a small budget shows how close the sparse output stays. A random tiny
LlamaConfig keeps it runnable anywhere (on CUDA when the extension was built with
UNIQUE_PY_CUDA=ON; float32 by default).

    python examples/hf_generate.py [--budget 32] [--new-tokens 40]
"""
import argparse

import numpy as np
import torch
from transformers import AttentionInterface, LlamaConfig, LlamaForCausalLM
from transformers.integrations.sdpa_attention import sdpa_attention_forward

import unique_attn as ua


class UniqueAttention:
    """Attention function for transformers: paged cache per layer, sparse decode."""

    def __init__(self, max_len, page_size=16, budget=2048, **cfg):
        self.max_len, self.page_size, self.budget, self.cfg = max_len, page_size, budget, cfg
        self.caches, self.wrapper, self.planned_len = {}, ua.SparseDecodeWrapper(), None

    def table(self, batch, length):  # sequence b owns pages [b * max_pages, (b + 1) * max_pages)
        P, max_pages = self.page_size, -(-self.max_len // self.page_size)
        n = -(-length // P)
        indptr = np.arange(batch + 1, dtype=np.int32) * n
        indices = np.concatenate([b * max_pages + np.arange(n) for b in range(batch)]).astype(np.int32)
        return indptr, indices, np.full(batch, length - (n - 1) * P, dtype=np.int32)

    def __call__(self, module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kw):
        B, Hq, S, D = query.shape  # key/value [B, Hkv, T, D]: the whole sequence so far
        Hkv, T = key.shape[1], key.shape[2]
        if module.layer_idx not in self.caches:
            pages = B * -(-self.max_len // self.page_size)
            self.caches[module.layer_idx] = ua.PagedKVCache.empty(
                pages, Hkv, self.page_size, D, dtype=key.dtype, device=key.device)
        cache, table = self.caches[module.layer_idx], self.table(B, T)
        new = lambda x: x[:, :, T - S:].transpose(1, 2).reshape(B * S, Hkv, D)  # noqa: E731
        cache.append(new(key), new(value), np.arange(B + 1, dtype=np.int32) * S, *table)
        if S > 1:  # prefill: dense
            return sdpa_attention_forward(module, query, key, value, attention_mask,
                                          scaling=scaling, dropout=dropout, **kw)
        if self.planned_len != T:  # one plan per step, shared by all layers
            self.wrapper.plan(*table, Hq, Hkv, D, self.page_size, budget=self.budget,
                              sm_scale=scaling, device=key.device, kv_data_type=key.dtype, **self.cfg)
            self.planned_len = T
        out = self.wrapper.run(query[:, :, 0].contiguous(), cache)  # [B, Hq, D]
        return out[:, None], None  # [B, S=1, Hq, D]


def generate(model, ids, new_tokens, attn):
    """Greedy tokens [B, new_tokens] and the logits of every step [new_tokens, B, vocab]."""
    if attn != "sdpa":
        AttentionInterface.register("unique", attn)
    model.set_attn_implementation("unique" if attn != "sdpa" else "sdpa")
    out = model.generate(ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                         pad_token_id=0, return_dict_in_generate=True, output_logits=True)
    return out.sequences[:, ids.shape[1]:], torch.stack(out.logits).float()


def check_same_as_dense(tokens, logits, dense_tokens, dense_logits, rel_tol):
    """budget >= context must give dense attention's greedy output. In fp32 (rel_tol 0) the tokens
    must be equal. In 16-bit types two attention implementations round differently, so greedy
    tokens may part at a near-tie: then, for each sequence, the logits must agree within rel_tol
    (of the step's largest |logit|) on every step up to the first differing token (the contexts
    are equal until then), and at that step the two chosen tokens' dense logits must be within
    that tolerance of each other."""
    if rel_tol == 0:
        assert torch.equal(tokens, dense_tokens), "budget >= context must reproduce dense greedy output"
        return
    for b in range(tokens.shape[0]):
        differ = (tokens[b] != dense_tokens[b]).nonzero()
        last = int(differ[0]) if len(differ) else tokens.shape[1] - 1
        for t in range(last + 1):
            tol = rel_tol * dense_logits[t, b].abs().max().item()
            err = (logits[t, b] - dense_logits[t, b]).abs().max().item()
            assert err <= tol, f"sequence {b} step {t}: logits differ by {err:.4g} > {tol:.4g} from dense"
        if len(differ):
            gap = (dense_logits[last, b, dense_tokens[b, last]] - dense_logits[last, b, tokens[b, last]]).item()
            tol = rel_tol * dense_logits[last, b].abs().max().item()
            assert gap <= tol, f"sequence {b} step {last}: token differs from dense by a logit gap {gap:.4g} > {tol:.4g}"
            print(f"sequence {b}: parts from dense at step {last} on a near-tie (dense logit gap {gap:.3g})")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompt-len", type=int, default=200)
    ap.add_argument("--new-tokens", type=int, default=40)
    ap.add_argument("--budget", type=int, default=64, help="sparse budget in tokens (second run)")
    ap.add_argument("--estimator", default="unique")
    ap.add_argument("--dtype", default="float32", help="float32 | bfloat16 | float16 (model and KV cache)")
    args = ap.parse_args()
    cuda = torch.cuda.is_available() and ua.cuda_available()
    device, dtype = "cuda" if cuda else "cpu", getattr(torch, args.dtype)
    torch.manual_seed(0)
    # head_dim 64: the CUDA kernels take head_dim 64, 128 or 256
    config = LlamaConfig(vocab_size=512, hidden_size=512, intermediate_size=1024, num_hidden_layers=4,
                         num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=1024,
                         initializer_range=0.1)
    model = LlamaForCausalLM(config).to(device=device, dtype=dtype).eval()
    ids = torch.randint(1, 512, (2, args.prompt_len), device=device)
    max_len = args.prompt_len + args.new_tokens
    with torch.inference_mode():
        dense, dense_logits = generate(model, ids, args.new_tokens, "sdpa")
        full, full_logits = generate(model, ids, args.new_tokens, UniqueAttention(max_len, budget=max_len,
                                                                                  estimator=args.estimator))
        sparse, _ = generate(model, ids, args.new_tokens, UniqueAttention(max_len, budget=args.budget,
                                                                          estimator=args.estimator))
    print(f"device {device}, dtype {dtype}, context {args.prompt_len}+{args.new_tokens}, batch 2")
    print(f"budget {max_len} (>= context): greedy tokens equal to dense: {torch.equal(full, dense)}")
    agree = (sparse == dense).float().mean().item()
    print(f"budget {args.budget}: {agree:.0%} of greedy tokens equal to dense")
    print("dense :", dense[0, :16].tolist())
    print("sparse:", sparse[0, :16].tolist())
    # 16-bit tolerances: through 4 layers two kernels' roundings of bf16 (8-bit mantissa) moved
    # logits by up to ~2% of the largest one on the H100; fp16 has 3 more mantissa bits.
    rel_tol = {torch.float32: 0.0, torch.bfloat16: 5e-2, torch.float16: 1e-2}[dtype]
    check_same_as_dense(full, full_logits, dense, dense_logits, rel_tol)


if __name__ == "__main__":
    main()
