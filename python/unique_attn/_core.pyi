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
