# Private extension module (nanobind). Arrays are DLPack capsules, torch tensors or NumPy
# arrays: float arrays float32/float16/bfloat16 (uint16 = bfloat16 bits), tables int32.
from typing import Any, Optional

__version__: str
has_decode_plan: bool  # CUDA builds with unique/decode_plan.h

def cuda_available() -> bool: ...
def built_with_cuda() -> bool: ...
def validate_config(page_size: int, budget: int, sink: int, recent: int, estimator: str,
                    gqa: str, offset: str, alpha: float, sm_scale: float, seed: int,
                    num_pages: int) -> int: ...
def append_kv(k_cache: Any, v_cache: Any, mean: Optional[Any], std: Optional[Any],
              kmin: Optional[Any], kmax: Optional[Any], page_indptr: Any, page_indices: Any,
              last_page_len: Any, max_pages_per_seq: int, k: Any, v: Any, append_indptr: Any,
              stream: int) -> None: ...
def score_pages(budget: int, sink: int, recent: int, estimator: str, gqa: str, offset: str,
                alpha: float, sm_scale: float, seed: int, q: Any, k_cache: Any, v_cache: Any,
                mean: Optional[Any], std: Optional[Any], kmin: Optional[Any], kmax: Optional[Any],
                page_indptr: Any, page_indices: Any, last_page_len: Any, max_pages_per_seq: int,
                scores: Any, stream: int) -> None: ...
def select_pages(budget: int, sink: int, recent: int, estimator: str, gqa: str, offset: str,
                 alpha: float, sm_scale: float, seed: int, q: Any, k_cache: Any, v_cache: Any,
                 mean: Optional[Any], std: Optional[Any], kmin: Optional[Any], kmax: Optional[Any],
                 page_indptr: Any, page_indices: Any, last_page_len: Any, max_pages_per_seq: int,
                 sel_pages: Any, sel_counts: Any, stream: int) -> None: ...
def paged_decode(budget: int, sink: int, recent: int, estimator: str, gqa: str, offset: str,
                 alpha: float, sm_scale: float, seed: int, q: Any, k_cache: Any, v_cache: Any,
                 mean: Optional[Any], std: Optional[Any], kmin: Optional[Any], kmax: Optional[Any],
                 page_indptr: Any, page_indices: Any, last_page_len: Any, max_pages_per_seq: int,
                 sel_pages: Optional[Any], sel_counts: Optional[Any], select: bool, out: Any,
                 lse: Optional[Any], stream: int) -> None: ...
# Soft-mask attention (include/unique/soft_mask.h): q/out/dout/dq [B, L, Hq, D], k/v/dk/dv
# [B, L, Hkv, D] (strided views OK), lse [B, L, Hq] float32. CPU arrays run the float64
# reference; CUDA arrays (bf16/fp16, D 64/128, page_size 16/32/64) the kernels on `stream`.
def soft_mask_forward(q: Any, k: Any, v: Any, out: Any, lse: Any, page_size: int, budget_tokens: int,
                      sink_pages: int, recent_pages: int, temperature: float, alpha: float,
                      sm_scale: float, stream: int) -> None: ...
def soft_mask_backward(q: Any, k: Any, v: Any, out: Any, lse: Any, dout: Any, dq: Any, dk: Any,
                       dv: Any, page_size: int, budget_tokens: int, sink_pages: int,
                       recent_pages: int, temperature: float, alpha: float, sm_scale: float,
                       stream: int) -> None: ...
def recompute_page_stats(k_cache: Any, v_cache: Any, mean: Optional[Any], std: Optional[Any],
                         kmin: Optional[Any], kmax: Optional[Any], page_indptr: Any,
                         page_indices: Any, last_page_len: Any, max_pages_per_seq: int) -> None: ...

class DecodePlan:
    """CUDA builds only: plan-time workspaces; run() only launches."""
    workspace_bytes: int
    def __init__(self) -> None: ...
    def plan(self, page_size: int, budget: int, sink: int, recent: int, estimator: str, gqa: str,
             offset: str, alpha: float, sm_scale: float, seed: int, batch: int, num_qo_heads: int,
             num_kv_heads: int, head_dim: int, max_pages_per_seq: int, dtype: str) -> None: ...
    def run(self, q: Any, k_cache: Any, v_cache: Any, mean: Optional[Any], std: Optional[Any],
            kmin: Optional[Any], kmax: Optional[Any], page_indptr: Any, page_indices: Any,
            last_page_len: Any, max_pages_per_seq: int, out: Any, lse: Optional[Any],
            stream: int) -> None: ...
    def selection(self) -> tuple[Any, Any]: ...
