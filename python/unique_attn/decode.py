"""Decode attention over a paged KV cache: plan/run wrappers (sparse and dense), and the
selection and scoring steps on their own."""
from __future__ import annotations

import os
from typing import Any, Optional, Tuple

import numpy as np

from . import _arrays as A
from . import _core
from .cache import PagedKVCache, as_cache

ESTIMATORS = ("unique", "quest", "mean", "oracle", "random", "dense", "composite")


def _config(page_size: int, budget: Optional[int], sink: int, recent: int, estimator: str,
            gqa: str, offset: str, alpha: float, sm_scale: Optional[float], seed: int) -> dict:
    """Keyword arguments -> AttentionConfig fields (validated by the library):
    budget -> budget_tokens, sink -> sink_pages, recent -> recent_pages, estimator, gqa,
    offset, alpha, sm_scale (None -> 1/sqrt(head_dim)), seed; page_size comes from the cache."""
    cfg = dict(budget=page_size if budget is None else int(budget), sink=int(sink),
               recent=int(recent), estimator=str(estimator), gqa=str(gqa), offset=str(offset),
               alpha=float(alpha), sm_scale=0.0 if sm_scale is None else float(sm_scale),
               seed=int(seed))
    _core.validate_config(page_size=page_size, num_pages=1, **cfg)
    return cfg


def _check_q(q: Any, batch: int, num_qo_heads: Optional[int], head_dim: int, device: str) -> None:
    A.check_array(q, "q")
    if q.ndim != 3 or q.shape[0] != batch or q.shape[2] != head_dim or (
            num_qo_heads is not None and q.shape[1] != num_qo_heads):
        h = "num_qo_heads" if num_qo_heads is None else num_qo_heads
        raise ValueError(f"q: expected shape [{batch}, {h}, {head_dim}] (batch, num_qo_heads, "
                         f"head_dim), got {list(q.shape)}")
    if A.device_of(q) != device:
        raise ValueError(f"q: expected device {device}, got {A.device_of(q)}")


def _device_guard(device: str):
    if device == "cpu":
        import contextlib
        return contextlib.nullcontext()
    return A.torch_module().cuda.device(A.torch_module().device(device))


def _as_lib(x: np.ndarray, like: Any) -> Any:
    """A zero-copy torch view of a NumPy buffer when the caller works in torch (CPU)."""
    return A.torch_module().from_numpy(x) if A.is_torch(like) and isinstance(x, np.ndarray) else x


class SparseDecodeWrapper:
    """Top-k sparse decode attention over a paged KV cache, FlashInfer style.

    ``plan()`` once per batch shape (host work: checks the page table, sizes the
    selection buffers, copies the table to the device); ``run()`` per layer and step
    (selection + attention; on CUDA only kernel launches on torch's current stream, so it
    can be captured in a CUDA graph).

    workspace_buffer: optional uint8 tensor/array on the run device; on the CPU the
    selection buffers are carved from its front (ValueError if it is too small). On CUDA
    the library's DecodePlan allocates the step's workspaces in ``plan`` (the buffer only
    picks the device there). Without it ``plan`` allocates.
    """

    _dense = False

    def __init__(self, workspace_buffer: Any = None):
        self._ws = workspace_buffer
        self._planned = False
        self._plan = None
        self._use_plan = False

    def plan(self, page_indptr: Any, page_indices: Any, last_page_len: Any, num_qo_heads: int,
             num_kv_heads: int, head_dim: int, page_size: int, budget: int = 2048,
             estimator: str = "unique", sink: int = 1, recent: int = 1, gqa: str = "max",
             offset: str = "channel", alpha: float = 1.0, sm_scale: Optional[float] = None,
             seed: int = 0, *, device: Any = None, kv_data_type: Any = None) -> None:
        """Plans decode steps for a batch.

        page_indptr [batch+1], page_indices [nnz], last_page_len [batch]: int32 (or any
        integer) page table, host or device (a host copy is kept for the checks, like
        FlashInfer's plan). The run device is ``device`` if given, else the workspace's,
        else the page table's (CPU for lists / NumPy). kv_data_type (CUDA): the cache dtype
        of the runs to come, so that plan() allocates every workspace (without it the first
        run does; give it before capturing run() in a CUDA graph).
        Config keywords map onto AttentionConfig: budget -> budget_tokens (k = budget //
        page_size pages), sink -> sink_pages, recent -> recent_pages, estimator (unique,
        quest, mean, oracle, random, dense; composite: pooled 8-token key blocks, CPU only),
        gqa (max, softmax_sum), offset (channel, norm), alpha, sm_scale (None =
        1/sqrt(head_dim)), seed (random estimator).
        """
        if device is not None:
            dev = str(A.torch_module().device(device)) if str(device) != "cpu" else "cpu"
            if dev == "cuda":
                dev = f"cuda:{A.torch_module().cuda.current_device()}"
        elif self._ws is not None:
            dev = A.device_of(self._ws)
        else:
            dev = A.device_of(page_indptr)
        if num_qo_heads <= 0 or num_kv_heads <= 0 or num_qo_heads % num_kv_heads:
            raise ValueError(f"num_qo_heads: expected a positive multiple of num_kv_heads "
                             f"({num_kv_heads}), got {num_qo_heads}")
        if self._dense:
            budget, estimator = page_size, "dense"
        # Everything into locals first: a plan that raises leaves the previous one intact.
        cfg = _config(page_size, budget, sink, recent, estimator, gqa, offset, alpha, sm_scale, seed)
        table = A.PageTable(page_indptr, page_indices, last_page_len, page_size, dev)
        max_selected = _core.validate_config(page_size=page_size, num_pages=table.max_pages, **cfg)
        use_plan = dev != "cpu" and _core.has_decode_plan and not os.environ.get("UNIQUE_PY_NO_DECODE_PLAN")
        shape = (int(num_qo_heads), int(num_kv_heads), int(head_dim), int(page_size))
        plan = sel = None
        if use_plan:
            # The library's DecodePlan owns every workspace of the step (selection included):
            # run() then neither allocates nor shares a cached workspace, which CUDA graphs
            # and concurrent streams need. It is sized for one KV dtype: kv_data_type here,
            # else the first run's cache dtype (that run then allocates).
            if kv_data_type is not None:
                plan, sel = self._decode_plan(cfg, table, shape, A.normalize_dtype(kv_data_type, "kv_data_type"), dev)
        elif not self._dense:
            sel = self._selection_buffers(table.batch, num_kv_heads, max_selected, dev)
        self._cfg, self._table, self.max_selected, self._sel, self._device = cfg, table, max_selected, sel, dev
        self._plan, self._use_plan = plan, use_plan
        self._shape = (int(num_qo_heads), int(num_kv_heads), int(head_dim), int(page_size))
        self._planned = True

    def _decode_plan(self, cfg: dict, table: A.PageTable, shape: tuple, kv_dtype: str, dev: str):
        hq, hkv, d, p = shape
        plan = _core.DecodePlan()
        with _device_guard(dev):
            plan.plan(page_size=p, **cfg, batch=table.batch, num_qo_heads=hq, num_kv_heads=hkv,
                      head_dim=d, max_pages_per_seq=table.max_pages, dtype=kv_dtype)
        t = A.torch_module()
        sel = None if self._dense else tuple(t.from_dlpack(x) for x in plan.selection())
        return (plan, kv_dtype), sel

    def _selection_buffers(self, batch: int, heads: int, max_sel: int, dev: str):
        n_pages, n_counts = batch * heads * max_sel, batch * heads
        if self._ws is not None:
            if A.device_of(self._ws) != dev:
                raise ValueError(f"workspace_buffer: expected device {dev}, got {A.device_of(self._ws)}")
            need = 4 * (n_pages + n_counts)
            nbytes = self._ws.numel() * self._ws.element_size() if A.is_torch(self._ws) else self._ws.nbytes
            if nbytes < need:
                raise ValueError(f"workspace_buffer: expected >= {need} bytes, got {nbytes}")
            if A.is_torch(self._ws):
                buf = self._ws.view(-1).view(A.torch_module().uint8)[:need].view(A.torch_module().int32)
            else:
                buf = self._ws.reshape(-1).view(np.uint8)[:need].view(np.int32)
        elif dev == "cpu":
            buf = np.empty(n_pages + n_counts, dtype=np.int32)
        else:
            t = A.torch_module()
            buf = t.empty(n_pages + n_counts, dtype=t.int32, device=dev)
        return buf[:n_pages].reshape(batch, heads, max_sel), buf[n_pages:].reshape(batch, heads)

    def run(self, q: Any, kv_cache: Any, *, out: Any = None, lse: Any = None,
            return_lse: bool = False, return_selection: bool = False) -> Any:
        """Decode attention for one new query token per sequence.

        q        [batch, num_qo_heads, head_dim] float32/float16/bfloat16, on the plan's device
        kv_cache PagedKVCache (or a (k_cache, v_cache, mean, std[, kmin, kmax]) tuple)
        out      optional [batch, num_qo_heads, head_dim] output (any float dtype); default:
                 a new tensor of q's dtype and library
        lse      optional [batch, num_qo_heads] float32 (natural log of the softmax
                 denominator of sm_scale * q.k over the attended tokens)

        Returns out, or a tuple (out[, lse][, (pages, counts)]): the selection is
        pages [batch, num_kv_heads, max_selected] int32 (logical page positions within
        each sequence, ascending, -1 after counts) and counts [batch, num_kv_heads] int32.
        """
        if not self._planned:
            raise RuntimeError("run: call plan() first")
        cache = as_cache(kv_cache)
        hq, hkv, d, p = self._shape
        _check_q(q, self._table.batch, hq, d, self._device)
        if (cache.num_kv_heads, cache.page_size, cache.head_dim) != (hkv, p, d):
            raise ValueError(f"kv_cache: expected num_kv_heads, page_size, head_dim = {hkv}, {p}, {d} "
                             f"(the plan's), got {cache.num_kv_heads}, {cache.page_size}, {cache.head_dim}")
        if cache.device != self._device:
            raise ValueError(f"kv_cache: expected device {self._device} (the plan's), got {cache.device}")
        if self._device == "cpu":
            self._table.check_num_pages(cache.num_pages)
        if out is None:
            out = A.empty_like_lib(q, q.shape, A.dtype_name(q), self._device)
        if lse is None and return_lse:
            lse = A.empty_like_lib(q, q.shape[:2], "float32", self._device)
        lse_arg = None if lse is None else A.float_arg(lse, "lse")
        if self._use_plan:
            if self._plan is None or self._plan[1] != cache.dtype:
                self._plan, self._sel = self._decode_plan(self._cfg, self._table, self._shape, cache.dtype,
                                                          self._device)
            with _device_guard(self._device):
                self._plan[0].run(q=A.float_arg(q, "q"), **_kv_kwargs(cache, self._table),
                               out=A.float_arg(out, "out"), lse=lse_arg, stream=A.stream_of(self._device))
            return self._result(q, out, lse, return_lse, return_selection)
        sel = (None, None) if self._sel is None else (A.int_arg(self._sel[0], "pages"),
                                                      A.int_arg(self._sel[1], "counts"))
        with _device_guard(self._device):
            _core.paged_decode(**self._cfg, q=A.float_arg(q, "q"),
                               **_kv_kwargs(cache, self._table), sel_pages=sel[0], sel_counts=sel[1],
                               select=self._sel is not None, out=A.float_arg(out, "out"),
                               lse=lse_arg, stream=A.stream_of(self._device))
        return self._result(q, out, lse, return_lse, return_selection)

    def _result(self, q: Any, out: Any, lse: Any, return_lse: bool, return_selection: bool) -> Any:
        res = [out]
        if return_lse:
            res.append(lse)
        if return_selection:
            if self._sel is None:
                raise ValueError("return_selection: expected False for dense decode (every page is attended)")
            res.append(tuple(_as_lib(s, q) for s in self._sel))
        return res[0] if len(res) == 1 else tuple(res)

    @property
    def selection(self) -> Optional[Tuple[Any, Any]]:
        """(pages, counts) written by the last run (None for the dense wrapper)."""
        return self._sel


class DenseDecodeWrapper(SparseDecodeWrapper):
    """Dense paged decode attention (every page), same plan/run API as
    SparseDecodeWrapper; budget/estimator/sink/recent are ignored. The cache needs no
    statistics: kv_cache may be a (k_cache, v_cache) tuple."""

    _dense = True


def _kv_kwargs(cache: PagedKVCache, table: A.PageTable) -> dict:
    k, v, mean, std, kmin, kmax = cache._ext_tensors()
    ip, idx, last, mp = table.ext_args()
    return dict(k_cache=k, v_cache=v, mean=mean, std=std, kmin=kmin, kmax=kmax, page_indptr=ip,
                page_indices=idx, last_page_len=last, max_pages_per_seq=mp)


def _one_shot(q: Any, kv_cache: Any, page_indptr: Any, page_indices: Any, last_page_len: Any):
    cache = as_cache(kv_cache)
    table = A.PageTable(page_indptr, page_indices, last_page_len, cache.page_size, cache.device,
                        num_pages=cache.num_pages)
    _check_q(q, table.batch, None, cache.head_dim, cache.device)
    return cache, table


def select_pages(q: Any, kv_cache: Any, page_indptr: Any, page_indices: Any, last_page_len: Any,
                 budget: int = 2048, estimator: str = "unique", sink: int = 1, recent: int = 1,
                 gqa: str = "max", offset: str = "channel", alpha: float = 1.0,
                 sm_scale: Optional[float] = None, seed: int = 0) -> Tuple[Any, Any]:
    """Top-k page selection per (sequence, KV head), for bringing your own attention kernel.

    q [batch, num_qo_heads, head_dim] float; kv_cache PagedKVCache (with the statistics
    the estimator needs); page table as in SparseDecodeWrapper.plan (host or device; a
    device table is read back once to size the output, so prefer the wrapper inside CUDA
    graphs). Returns (pages, counts): pages [batch, num_kv_heads, max_selected] int32
    logical page positions (0 = first page of the sequence; map through page_indices for
    physical ids), ascending, -1 after counts[b, h]; counts [batch, num_kv_heads] int32.
    Always kept: the first `sink` and last `recent` pages (the last page always).
    """
    cache, table = _one_shot(q, kv_cache, page_indptr, page_indices, last_page_len)
    cfg = _config(cache.page_size, budget, sink, recent, estimator, gqa, offset, alpha, sm_scale, seed)
    max_sel = _core.validate_config(page_size=cache.page_size, num_pages=table.max_pages, **cfg)
    pages = A.empty_like_lib(q, (table.batch, cache.num_kv_heads, max_sel), "int32", cache.device)
    counts = A.empty_like_lib(q, (table.batch, cache.num_kv_heads), "int32", cache.device)
    with _device_guard(cache.device):
        _core.select_pages(**cfg, q=A.float_arg(q, "q"), **_kv_kwargs(cache, table),
                           sel_pages=A.int_arg(pages, "pages"), sel_counts=A.int_arg(counts, "counts"),
                           stream=A.stream_of(cache.device))
    return pages, counts


def score_pages(q: Any, kv_cache: Any, page_indptr: Any, page_indices: Any, last_page_len: Any,
                estimator: str = "unique", gqa: str = "max", offset: str = "channel",
                alpha: float = 1.0, sm_scale: Optional[float] = None, seed: int = 0) -> Any:
    """Page scores aggregated over each GQA group.

    Returns scores [batch, num_kv_heads, max_pages] float32 (max_pages = pages of the
    longest sequence); entries past a sequence's pages are -inf. For "unique":
    s = q.mean + alpha * sum_d |q_d| * std_d (offset="channel") or alpha * |q| * |std|
    (offset="norm"); "quest": sum_d max(q_d kmin_d, q_d kmax_d); "mean": q.mean; GQA
    aggregation "max" (max over the group's heads) or "softmax_sum" (sum over heads of
    softmax over pages of sm_scale * score).
    """
    cache, table = _one_shot(q, kv_cache, page_indptr, page_indices, last_page_len)
    cfg = _config(cache.page_size, None, 1, 1, estimator, gqa, offset, alpha, sm_scale, seed)
    scores = A.empty_like_lib(q, (table.batch, cache.num_kv_heads, table.max_pages), "float32", cache.device)
    with _device_guard(cache.device):
        _core.score_pages(**cfg, q=A.float_arg(q, "q"), **_kv_kwargs(cache, table),
                          scores=A.float_arg(scores, "scores"), stream=A.stream_of(cache.device))
    return scores


def append_paged_kv_cache(k: Any, v: Any, append_indptr: Any, kv_cache: PagedKVCache,
                          page_indptr: Any, page_indices: Any, last_page_len: Any) -> None:
    """Function form of :meth:`PagedKVCache.append` (FlashInfer's name)."""
    as_cache(kv_cache).append(k, v, append_indptr, page_indptr, page_indices, last_page_len)


__all__ = ["SparseDecodeWrapper", "DenseDecodeWrapper", "select_pages", "score_pages",
           "append_paged_kv_cache", "PagedKVCache", "ESTIMATORS"]
