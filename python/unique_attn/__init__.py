"""unique_attn: UNIQUE top-k sparse attention over a paged KV cache, for torch and NumPy.

FlashInfer-style API (HND paged layout [num_pages, num_kv_heads, page_size, head_dim]):

    cache = PagedKVCache.empty(num_pages, num_kv_heads, page_size, head_dim, dtype=...)
    cache.append(k, v, append_indptr, page_indptr, page_indices, last_page_len)
    w = SparseDecodeWrapper()
    w.plan(page_indptr, page_indices, last_page_len, num_qo_heads, num_kv_heads,
           head_dim, page_size, budget=2048, estimator="unique", sink=1, recent=1)
    out = w.run(q, cache)

Tensors: torch (CPU or CUDA) or NumPy (CPU), float32 / float16 / bfloat16, zero-copy
through DLPack. NumPy bfloat16 needs ml_dtypes; otherwise use torch for bf16. On CUDA the
library launches on torch.cuda.current_stream(). Bad input raises ValueError (TypeError
for a dtype) naming the argument; a CUDA failure raises RuntimeError.
"""
from . import _core
from .cache import PagedKVCache
from .decode import (ESTIMATORS, DenseDecodeWrapper, SparseDecodeWrapper, append_paged_kv_cache,
                     score_pages, select_pages)

__version__ = _core.__version__


def cuda_available() -> bool:
    """True when the extension was built with CUDA (UNIQUE_PY_CUDA=ON) and a GPU is visible."""
    return bool(_core.cuda_available())


def built_with_cuda() -> bool:
    """True when the extension was built with the CUDA kernels."""
    return bool(_core.built_with_cuda())


# Sparsity-aware training (needs torch; imported on first use so the package imports without it):
#   unique_attn.soft_mask_attention / hard_topk_attention  (unique_attn/soft_mask.py)
#   unique_attn.register_transformers / soft_mask_options   (unique_attn/hf.py)
_LAZY = {"soft_mask_attention": "soft_mask", "hard_topk_attention": "soft_mask", "SoftMaskAttention": "soft_mask",
         "page_scores": "soft_mask", "register_transformers": "hf", "soft_mask_options": "hf"}


def __getattr__(name):
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'unique_attn' has no attribute {name!r}")
    import importlib
    return getattr(importlib.import_module(f"{__name__}.{mod}"), name)


__all__ = ["PagedKVCache", "SparseDecodeWrapper", "DenseDecodeWrapper", "select_pages",
           "score_pages", "append_paged_kv_cache", "ESTIMATORS", "cuda_available",
           "built_with_cuda", "__version__", *_LAZY]
