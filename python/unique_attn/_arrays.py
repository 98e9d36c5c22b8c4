"""Array plumbing shared by the public API: dtype checks, zero-copy hand-off to the
extension, page tables, the CUDA stream. torch is optional: it is used only when the
caller passes torch tensors (it is then already imported)."""
from __future__ import annotations

import sys
from typing import Any, Optional, Sequence, Tuple

import numpy as np

try:  # NumPy has no bfloat16; ml_dtypes adds one.
    import ml_dtypes as _ml_dtypes

    _NP_BF16: Optional[np.dtype] = np.dtype(_ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover - depends on the environment
    _NP_BF16 = None

FLOAT_DTYPES = ("float32", "float16", "bfloat16")


def torch_module():
    """torch if the caller's process has imported it, else None (we never import it)."""
    return sys.modules.get("torch")


def is_torch(x: Any) -> bool:
    t = torch_module()
    return t is not None and isinstance(x, t.Tensor)


def is_cuda(x: Any) -> bool:
    return is_torch(x) and x.is_cuda


_NP_NAMES = {np.dtype(np.float32): "float32", np.dtype(np.float16): "float16"}
if _NP_BF16 is not None:
    _NP_NAMES[_NP_BF16] = "bfloat16"
_TORCH_NAMES: dict = {}


def dtype_name(x: Any) -> str:
    """'float32' | 'float16' | 'bfloat16' | other dtype name of a tensor or array."""
    if isinstance(x, np.ndarray):
        name = _NP_NAMES.get(x.dtype)
        return name if name is not None else str(x.dtype)
    name = _TORCH_NAMES.get(x.dtype)  # per-call cost matters in run(): cache the names
    if name is None:
        name = _TORCH_NAMES[x.dtype] = str(x.dtype).replace("torch.", "")
    return name


def check_array(x: Any, name: str) -> None:
    if not (is_torch(x) or isinstance(x, np.ndarray)):
        raise TypeError(f"{name}: expected a torch.Tensor or numpy.ndarray, got {type(x).__name__}")


def float_arg(x: Any, name: str) -> Any:
    """What the extension receives for a float tensor: zero-copy, no host sync."""
    check_array(x, name)
    dt = dtype_name(x)
    if dt not in FLOAT_DTYPES:
        raise TypeError(f"{name}: expected dtype float32, float16 or bfloat16, got {dt}")
    if is_torch(x):
        x = x.detach()
        # stream=-1: no cross-stream event. A plain __dlpack__() would make the legacy
        # default stream wait on the current one, which breaks CUDA-graph capture.
        return x.__dlpack__(stream=-1) if x.is_cuda else x
    if dt == "bfloat16":
        return x.view(np.uint16)  # DLPack cannot carry ml_dtypes; _core reads uint16 as bf16
    return x


def int_arg(x: Any, name: str) -> Any:
    """An int32 tensor for the extension (tables the wrappers already hold)."""
    if is_torch(x):
        if x.is_cuda:
            return x.detach().__dlpack__(stream=-1)
        return x.detach()
    return x


def device_of(x: Any) -> str:
    """'cpu' or 'cuda:<index>'."""
    if is_torch(x) and x.is_cuda:
        return f"cuda:{x.device.index}"
    return "cpu"


def stream_of(device: str) -> int:
    """torch's current CUDA stream on `device` as an int (0 on the CPU)."""
    if device == "cpu":
        return 0
    t = torch_module()
    return int(t.cuda.current_stream(t.device(device)).cuda_stream)


def to_host_int32(x: Any, name: str) -> np.ndarray:
    """A host int32 copy (or the array itself when it already is one) of a page-table
    argument given as list, NumPy array or torch tensor (CPU or CUDA)."""
    if is_torch(x):
        t = torch_module()
        if x.is_floating_point() or x.dtype == t.bool:
            raise TypeError(f"{name}: expected an integer tensor, got {x.dtype}")
        x = x.detach().to("cpu").numpy()
    a = np.asarray(x)
    if a.dtype.kind not in "iu":
        if a.size == 0 and a.dtype.kind == "f":  # np.asarray([]) is float64
            a = a.astype(np.int32)
        else:
            raise TypeError(f"{name}: expected an integer array, got dtype {a.dtype}")
    if a.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array, got shape {list(a.shape)}")
    if a.size and (a.min() < np.iinfo(np.int32).min or a.max() > np.iinfo(np.int32).max):
        raise ValueError(f"{name}: expected values that fit int32")
    return np.ascontiguousarray(a, dtype=np.int32)


class PageTable:
    """A batch's CSR page table, checked on the host, with a copy on the cache's device.

    page_indptr [batch + 1], page_indices [nnz], last_page_len [batch], all int32.
    """

    def __init__(self, page_indptr: Any, page_indices: Any, last_page_len: Any, page_size: int,
                 device: str, num_pages: Optional[int] = None):
        self.indptr_h = to_host_int32(page_indptr, "page_indptr")
        self.indices_h = to_host_int32(page_indices, "page_indices")
        self.last_h = to_host_int32(last_page_len, "last_page_len")
        ip, idx, last = self.indptr_h, self.indices_h, self.last_h
        if ip.size < 2:
            raise ValueError(f"page_indptr: expected batch + 1 >= 2 entries, got {ip.size}")
        if ip[0] != 0:
            raise ValueError(f"page_indptr[0]: expected 0, got {ip[0]}")
        n = np.diff(ip)
        bad = np.nonzero(n < 1)[0]
        if bad.size:
            b = int(bad[0])
            raise ValueError(f"page_indptr[{b + 1}] - page_indptr[{b}]: expected >= 1 page "
                             f"(empty sequence), got {int(n[b])}")
        self.batch = int(ip.size - 1)
        if last.size != self.batch:
            raise ValueError(f"last_page_len: expected {self.batch} entries (batch), got {last.size}")
        bad = np.nonzero((last < 1) | (last > page_size))[0]
        if bad.size:
            b = int(bad[0])
            raise ValueError(f"last_page_len[{b}]: expected 1..{page_size}, got {int(last[b])}")
        if idx.size < ip[-1]:
            raise ValueError(f"page_indices: expected >= page_indptr[batch] ({int(ip[-1])}) "
                             f"entries, got {idx.size}")
        used = idx[: ip[-1]]
        hi = num_pages if num_pages is not None else np.iinfo(np.int32).max
        bad = np.nonzero((used < 0) | (used >= hi))[0]
        if bad.size:
            j = int(bad[0])
            raise ValueError(f"page_indices[{j}]: expected a page id in [0, {hi}), got {int(used[j])}")
        self.page_size = page_size
        self.max_pages = int(n.max())
        self.seq_lens = (n - 1).astype(np.int64) * page_size + last
        self.device = device
        if device == "cpu":
            self.indptr, self.indices, self.last = ip, idx, last
        else:
            t = torch_module()
            self.indptr, self.indices, self.last = (
                t.from_numpy(a).to(device, non_blocking=False) for a in (ip, idx, last))

    def check_num_pages(self, num_pages: int) -> None:
        used = self.indices_h[: self.indptr_h[-1]]
        if used.size and int(used.max()) >= num_pages:
            j = int(np.argmax(used >= num_pages))
            raise ValueError(f"page_indices[{j}]: expected a page id in [0, {num_pages}), got {int(used[j])}")

    def ext_args(self) -> Tuple[Any, Any, Any, int]:
        return (int_arg(self.indptr, "page_indptr"), int_arg(self.indices, "page_indices"),
                int_arg(self.last, "last_page_len"), self.max_pages)


def empty_like_lib(like: Any, shape: Sequence[int], dtype: str, device: str) -> Any:
    """An uninitialised array of `dtype` in the library of `like` (torch or NumPy)."""
    if is_torch(like):
        t = torch_module()
        return t.empty(tuple(shape), dtype=getattr(t, dtype), device=like.device)
    return np.empty(tuple(shape), dtype=np_dtype(dtype))


def np_dtype(name: str) -> np.dtype:
    if name == "bfloat16":
        if _NP_BF16 is None:
            raise TypeError("dtype: bfloat16 NumPy arrays need the ml_dtypes package "
                            "(pip install ml_dtypes), or use torch tensors")
        return _NP_BF16
    return np.dtype(name)


def normalize_dtype(dtype: Any, name: str = "dtype") -> str:
    """'float32' | 'float16' | 'bfloat16' from a string, NumPy dtype or torch dtype."""
    s = str(dtype).replace("torch.", "")
    aliases = {"fp32": "float32", "f32": "float32", "float": "float32", "fp16": "float16",
               "f16": "float16", "half": "float16", "bf16": "bfloat16"}
    s = aliases.get(s, s)
    if s not in FLOAT_DTYPES:
        raise TypeError(f"{name}: expected float32, float16 or bfloat16, got {dtype}")
    return s
