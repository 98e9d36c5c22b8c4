"""transformers integration: UNIQUE soft-mask attention as an attention implementation.

    import unique_attn.hf as uhf
    uhf.register_transformers()                      # registers "unique_soft_mask"
    model = AutoModelForCausalLM.from_pretrained(dir, attn_implementation="unique_soft_mask")
    # or, on a loaded model: model.config._attn_implementation = "unique_soft_mask"
    model.config.unique_budget = 512                 # per-model settings (config attributes)
    with uhf.soft_mask_options(budget=256, temperature=0.05):   # or a context (wins)
        loss = model(ids, labels=ids).loss

Settings (context > model.config attribute `unique_<name>` > default):
    page_size 16, budget 2048 (tokens), temperature 0.1, sink 1, recent 1, alpha 1.0,
    mode "soft" (training: soft_mask_attention) or "hard" (eval: hard_topk_attention, the
    T -> 0 limit), estimator "unique" (hard mode only: "unique", "quest", "mean"),
    backend "auto" ("torch" / "cuda" force the soft-mask implementation), sparse_from 0
    (hard mode: queries before this position attend densely).

The function assumes causal attention without padding (the attention_mask transformers
passes is None for a registered implementation it has no mask function for; a padding mask
is rejected). It works for any model whose attention modules call
ALL_ATTENTION_FUNCTIONS[config._attn_implementation](module, q, k, v, mask, scaling=...,
dropout=..., **kw) with q [B, Hq, L, D] and k / v [B, Hkv, L, D] (Llama, Mistral, Qwen2/3),
and it returns ([B, L, Hq, D], None). Generation with a KV cache works too (queries are
the last positions).
"""
from __future__ import annotations

import contextlib
import threading
from typing import Any, Dict, Optional

try:
    from . import soft_mask as _sm
except ImportError:  # loaded as a standalone file (scripts/train)
    import importlib.util as _ilu
    import os as _os
    _spec = _ilu.spec_from_file_location("unique_attn_soft_mask",
                                          _os.path.join(_os.path.dirname(_os.path.abspath(__file__)), "soft_mask.py"))
    _sm = _ilu.module_from_spec(_spec)
    _spec.loader.exec_module(_sm)

NAME = "unique_soft_mask"
DEFAULTS: Dict[str, Any] = dict(page_size=16, budget=2048, temperature=0.1, sink=1, recent=1, alpha=1.0,
                                mode="soft", estimator="unique", backend=None, sparse_from=0, chunk=None)
_local = threading.local()


def _ctx() -> Dict[str, Any]:
    if not hasattr(_local, "stack"):
        _local.stack = [{}]
    return _local.stack[-1]


@contextlib.contextmanager
def soft_mask_options(**kw):
    """Overrides settings for the calls inside the `with` block (nested blocks stack)."""
    bad = set(kw) - set(DEFAULTS)
    if bad:
        raise ValueError(f"soft_mask_options: unknown settings {sorted(bad)}; expected some of {sorted(DEFAULTS)}")
    _ctx()
    _local.stack.append({**_local.stack[-1], **kw})
    try:
        yield
    finally:
        _local.stack.pop()


def resolve_options(config: Any = None) -> Dict[str, Any]:
    opts = dict(DEFAULTS)
    if config is not None:
        for name in DEFAULTS:
            val = getattr(config, "unique_" + name, None)
            if val is not None:
                opts[name] = val
    opts.update(_ctx())
    return opts


def unique_soft_mask_attention(module, query, key, value, attention_mask=None, scaling: Optional[float] = None,
                               dropout: float = 0.0, **kwargs):
    """transformers attention function: (module, q [B,Hq,L,D], k/v [B,Hkv,L,D], mask, scaling,
    dropout) -> (out [B, L, Hq, D], None)."""
    if attention_mask is not None and attention_mask.dim() == 2 and not bool(attention_mask.all()):
        raise ValueError("unique_soft_mask: padding masks are not supported (causal attention without padding)")
    if dropout and getattr(module, "training", False):
        raise ValueError("unique_soft_mask: attention dropout is not supported; set attention_dropout=0")
    o = resolve_options(getattr(module, "config", None))
    budget = int(o["budget"])
    if o["mode"] == "hard":
        out = _sm.hard_topk_attention(query, key, value, int(o["page_size"]), budget, int(o["sink"]),
                                      int(o["recent"]), o["estimator"], float(o["alpha"]), scaling, o["chunk"],
                                      int(o["sparse_from"]))
    elif o["mode"] == "soft":
        out = _sm.soft_mask_attention(query, key, value, int(o["page_size"]), budget, float(o["temperature"]),
                                      int(o["sink"]), int(o["recent"]), float(o["alpha"]), scaling, o["chunk"],
                                      o["backend"])
    elif o["mode"] == "dense":
        import torch.nn.functional as F
        g = query.shape[1] // key.shape[1]
        k, v = key.repeat_interleave(g, 1), value.repeat_interleave(g, 1)
        Lq, Lk = query.shape[2], key.shape[2]
        if Lq == Lk or Lq == 1:
            out = F.scaled_dot_product_attention(query, k, v, is_causal=Lq == Lk and Lq > 1, scale=scaling)
        else:  # queries are the last Lq positions: causal alignment at the bottom right
            out = _sm.hard_topk_attention(query, key, value, int(o["page_size"]), max(Lk, int(o["page_size"])),
                                          scale=scaling)
    else:
        raise ValueError(f"unique_soft_mask mode: expected soft, hard or dense, got {o['mode']!r}")
    return out.transpose(1, 2).contiguous(), None


def _no_padding_mask(batch_size=None, cache_position=None, kv_length=None, kv_offset=0, mask_function=None,
                     attention_mask=None, **kwargs):
    """Mask function for transformers' AttentionMaskInterface: the attention is causal by
    construction, so no mask is built; a padding mask (zeros in the 2-D attention_mask) is
    rejected instead of silently ignored."""
    if attention_mask is not None and not bool(attention_mask.all()):
        raise ValueError("unique_soft_mask: padding masks are not supported (causal attention without padding)")
    return None


def register_transformers(name: str = NAME) -> str:
    """Registers the attention function with transformers' AttentionInterface (and a mask
    function that builds no mask and rejects padding with AttentionMaskInterface) under
    `name` (default "unique_soft_mask") and returns the name. Idempotent."""
    from transformers import AttentionInterface
    AttentionInterface.register(name, unique_soft_mask_attention)
    try:
        from transformers.masking_utils import AttentionMaskInterface
        AttentionMaskInterface.register(name, _no_padding_mask)
    except ImportError:  # older transformers: no mask interface, no mask is built for unknown names
        pass
    return name


__all__ = ["register_transformers", "soft_mask_options", "unique_soft_mask_attention", "resolve_options", "NAME",
           "DEFAULTS"]
