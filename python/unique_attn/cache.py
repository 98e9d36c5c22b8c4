"""PagedKVCache: plain tensors in FlashInfer's HND layout plus UNIQUE's page statistics."""
from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np

from . import _arrays as A
from . import _core


class PagedKVCache:
    """A paged KV cache held in plain tensors (torch CPU/CUDA or NumPy CPU), zero-copy.

    Tensors (FlashInfer HND layout, C-contiguous):
      k_cache, v_cache  [num_pages, num_kv_heads, page_size, head_dim]  float32/float16/bfloat16
      mean, std         [num_pages, num_kv_heads, head_dim]  stats dtype (float32 or bfloat16
                        halves the selection bytes); the UNIQUE and `mean` estimators need them
      kmin, kmax        same shape; only the `quest` estimator needs them (``quest=True``)

    The statistics of a page are those of the keys stored in it; :meth:`append` keeps them
    exact. Page tables are not part of the cache: every call takes the batch's CSR table
    (``page_indptr [batch+1]``, ``page_indices [nnz]``, ``last_page_len [batch]``, int32)
    as FlashInfer does.
    """

    def __init__(self, k_cache: Any, v_cache: Any, mean: Any = None, std: Any = None,
                 kmin: Any = None, kmax: Any = None):
        for name, t in (("k_cache", k_cache), ("v_cache", v_cache)):
            A.check_array(t, name)
            if t.ndim != 4:
                raise ValueError(f"{name}: expected shape [num_pages, num_kv_heads, page_size, "
                                 f"head_dim], got {list(t.shape)}")
        if tuple(v_cache.shape) != tuple(k_cache.shape):
            raise ValueError(f"v_cache: expected shape {list(k_cache.shape)} (k_cache's), "
                             f"got {list(v_cache.shape)}")
        if A.device_of(v_cache) != A.device_of(k_cache):
            raise ValueError(f"v_cache: expected device {A.device_of(k_cache)}, got {A.device_of(v_cache)}")
        if (mean is None) != (std is None):
            raise ValueError("mean/std: expected both or neither, got one")
        if (kmin is None) != (kmax is None):
            raise ValueError("kmin/kmax: expected both or neither, got one")
        self.k_cache, self.v_cache = k_cache, v_cache
        self.mean, self.std, self.kmin, self.kmax = mean, std, kmin, kmax
        self.num_pages, self.num_kv_heads, self.page_size, self.head_dim = (int(s) for s in k_cache.shape)
        self.device = A.device_of(k_cache)
        self.dtype = A.dtype_name(k_cache)

    @classmethod
    def empty(cls, num_pages: int, num_kv_heads: int, page_size: int, head_dim: int,
              dtype: Any = "float32", device: Any = "cpu", stats_dtype: Any = "float32",
              unique: bool = True, quest: bool = False) -> "PagedKVCache":
        """Allocates a zeroed cache. NumPy arrays when ``device == "cpu"`` and ``dtype`` is
        not a torch dtype, torch tensors otherwise (``device="cuda"`` needs torch).
        ``unique`` keeps mean/std, ``quest`` keeps kmin/kmax."""
        dt = A.normalize_dtype(dtype, "dtype")
        sdt = A.normalize_dtype(stats_dtype, "stats_dtype")
        kv_shape = (num_pages, num_kv_heads, page_size, head_dim)
        st_shape = (num_pages, num_kv_heads, head_dim)
        use_torch = str(device) != "cpu" or "torch" in str(type(dtype)) or "torch" in str(type(stats_dtype))
        if use_torch:
            torch = A.torch_module()
            if torch is None:
                import torch  # noqa: F811 - only when the caller asked for torch tensors
            mk = lambda shape, d: torch.zeros(shape, dtype=getattr(torch, d), device=device)  # noqa: E731
        else:
            mk = lambda shape, d: np.zeros(shape, dtype=A.np_dtype(d))  # noqa: E731
        stats = [mk(st_shape, sdt) if on else None for on in (unique, unique, quest, quest)]
        return cls(mk(kv_shape, dt), mk(kv_shape, dt), *stats)

    @property
    def is_cuda(self) -> bool:
        return self.device != "cpu"

    def _ext_tensors(self) -> Tuple[Any, ...]:
        f = lambda t, n: None if t is None else A.float_arg(t, n)  # noqa: E731
        return (A.float_arg(self.k_cache, "k_cache"), A.float_arg(self.v_cache, "v_cache"),
                f(self.mean, "mean"), f(self.std, "std"), f(self.kmin, "kmin"), f(self.kmax, "kmax"))

    def _table(self, page_indptr: Any, page_indices: Any, last_page_len: Any,
               max_pages_per_seq: Optional[int] = None) -> A.PageTable:
        return A.PageTable(page_indptr, page_indices, last_page_len, self.page_size,
                           self.device, num_pages=self.num_pages)

    def append(self, k: Any, v: Any, append_indptr: Any, page_indptr: Any, page_indices: Any,
               last_page_len: Any) -> None:
        """Writes new tokens and updates the statistics of every page they land in.

        k, v           [nnz, num_kv_heads, head_dim], any float dtype (converted to the
                       cache dtype), same device as the cache (strided input is copied)
        append_indptr  [batch + 1] int32: sequence b gets rows append_indptr[b]:append_indptr[b+1]
        page_indptr, page_indices, last_page_len: the page table AFTER the append (the
                       new tokens fill the last positions of each sequence).

        Page tables may be given on the host or the device (a host copy is taken to check
        them; for a CUDA cache they are copied to the device). Raises ValueError /
        TypeError naming the argument.
        """
        table = self._table(page_indptr, page_indices, last_page_len)
        ai = A.to_host_int32(append_indptr, "append_indptr")
        if ai.size != table.batch + 1:
            raise ValueError(f"append_indptr: expected {table.batch + 1} entries (batch + 1), got {ai.size}")
        n = np.diff(ai)
        if ai[0] != 0 or (n < 0).any():
            raise ValueError(f"append_indptr: expected non-decreasing offsets from 0, got {ai.tolist()}")
        bad = np.nonzero(n > table.seq_lens)[0]
        if bad.size:
            b = int(bad[0])
            raise ValueError(f"tokens appended to sequence {b}: expected 0..{int(table.seq_lens[b])} "
                             f"(its length after the append), got {int(n[b])}")
        for name, t in (("k", k), ("v", v)):
            A.check_array(t, name)
            if A.device_of(t) != self.device:
                raise ValueError(f"{name}: expected device {self.device} (the cache's), got {A.device_of(t)}")
            if tuple(t.shape) != (int(ai[-1]), self.num_kv_heads, self.head_dim):
                raise ValueError(f"{name}: expected shape [{int(ai[-1])}, {self.num_kv_heads}, "
                                 f"{self.head_dim}] (append_indptr[batch], num_kv_heads, head_dim), "
                                 f"got {list(t.shape)}")
        # The library reads k/v rows densely; a strided input is copied (append copies anyway).
        k = k.contiguous() if A.is_torch(k) else np.ascontiguousarray(k)
        v = v.contiguous() if A.is_torch(v) else np.ascontiguousarray(v)
        if self.device == "cpu":
            ai_dev = ai
        else:
            ai_dev = A.torch_module().from_numpy(ai).to(self.device)
        _core.append_kv(*self._ext_tensors(), *table.ext_args(), A.float_arg(k, "k"),
                        A.float_arg(v, "v"), A.int_arg(ai_dev, "append_indptr"),
                        A.stream_of(self.device))

    def recompute_stats(self, page_indptr: Any, page_indices: Any, last_page_len: Any) -> None:
        """Recomputes every statistic of the pages in the table from the stored keys
        (CPU caches; the reference the incremental update matches)."""
        table = self._table(page_indptr, page_indices, last_page_len)
        _core.recompute_page_stats(*self._ext_tensors(), *table.ext_args())


def as_cache(kv_cache: Any, name: str = "kv_cache") -> PagedKVCache:
    """A PagedKVCache from itself or from a (k_cache, v_cache[, mean, std[, kmin, kmax]]) tuple."""
    if isinstance(kv_cache, PagedKVCache):
        return kv_cache
    if isinstance(kv_cache, (tuple, list)) and len(kv_cache) in (2, 4, 6):
        return PagedKVCache(*kv_cache)
    raise TypeError(f"{name}: expected a PagedKVCache or a (k_cache, v_cache[, mean, std[, kmin, kmax]]) "
                    f"tuple, got {type(kv_cache).__name__}")
