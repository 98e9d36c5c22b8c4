"""Soft-mask sparsity-aware training attention (UNIQUE) and its hard top-k limit, in torch.

    out = soft_mask_attention(q, k, v, page_size=16, budget=512, temperature=0.1,
                              sink=1, recent=1)            # differentiable
    out = hard_topk_attention(q, k, v, page_size=16, budget=512, estimator="unique")  # eval

q [B, Hq, Lq, D], k / v [B, Hkv, Lk, D] (the layout of F.scaled_dot_product_attention and of
transformers' attention functions), Lq <= Lk (queries are the last Lq positions), GQA: query
head h reads KV head h // (Hq // Hkv). Returns [B, Hq, Lq, D] in q's dtype.

Semantics (shared with the CUDA kernels `_core.soft_mask_forward/backward`):
  - causal self-attention; pages of P tokens, page j = tokens [jP, jP+P); for the query at
    position t the own page is c = t // P;
  - candidate pages: complete pages j < c with j >= sink and j < c - recent + 1 (the own page
    always counts as recent); sink, recent and own-page tokens have weight 1;
  - page statistics per (b, kv head, page): mean mu and population std sigma of the P keys;
    score of candidate page j for query head h at t:
        s = scale * (q . mu_j + alpha * sum_d |q_d| * sigma_j,d)
    (quest: scale * sum_d max(q_d kmin_d, q_d kmax_d); mean: scale * q . mu_j);
  - kp = budget // P pages; a query with <= kp candidates keeps them all (weight 1); else
    tau = midpoint of the kp-th and (kp+1)-th largest candidate scores (stop-gradient) and
    the weight of candidate j is m = sigmoid((s - tau) / T);
  - logits z = scale * q.k + log m (log-sigmoid), softmax over keys <= t;
  - gradients flow into q and k through the scores (mu, sigma) as well as through attention;
  - hard top-k (T -> 0): the kp best candidates weight 1, the other candidates are excluded.

Implementation: page scores [B, Hq, Lq, Npages] and a per-(query, page) additive bias; the
attention itself runs chunked over queries (fp32 logits, only keys <= the chunk's last
query), so memory is O(chunk * Lk) per head, never Lq * Lk. The autograd.Function saves
q, k, v, out and the log-sum-exp (on CUDA also the thresholds) and recomputes logits and
scores in backward.

Backend: on CUDA, when the extension has `soft_mask_forward` (built with UNIQUE_PY_CUDA=ON),
the fused kernels run; the environment variable UNIQUE_SOFT_MASK_BACKEND=torch|cuda|auto
(or the `backend=` argument) forces one side. The kernels take bf16/fp16: under CUDA
autocast q, k, v are cast to the autocast dtype first (as SDPA does), otherwise fp32 inputs
take the torch path; `cuda_kernel()` names the kernel set that runs (wgmma on Hopper). This
module imports torch; the package
imports it lazily, so `import unique_attn` keeps working without torch.
"""
from __future__ import annotations

import math
import os
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

try:  # the compiled extension; absent when this file is used on its own (scripts/train)
    from . import _core  # type: ignore
except ImportError:  # pragma: no cover - depends on the build
    _core = None

ESTIMATORS = ("unique", "quest", "mean")
DEFAULT_CHUNK = int(os.environ.get("UNIQUE_SOFT_MASK_CHUNK", "1024"))

__all__ = ["soft_mask_attention", "hard_topk_attention", "page_scores", "page_bias",
           "SoftMaskAttention", "soft_mask_threshold", "cuda_kernels_available", "ESTIMATORS"]


# ---------------------------------------------------------------------------------------
# argument checks
# ---------------------------------------------------------------------------------------
def _check(q, k, v, page_size, budget, sink, recent):
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            raise ValueError(f"{name}: expected a 4-D torch tensor [B, H, L, D], got "
                             f"{getattr(x, 'shape', type(x))}")
        if not x.is_floating_point():
            raise TypeError(f"{name}: expected a floating dtype, got {x.dtype}")
    B, Hq, Lq, D = q.shape
    if k.shape != v.shape or k.shape[0] != B or k.shape[3] != D:
        raise ValueError(f"k/v: expected [B={B}, Hkv, Lk, D={D}] (same shape), got {tuple(k.shape)} "
                         f"and {tuple(v.shape)}")
    Hkv, Lk = k.shape[1], k.shape[2]
    if Hkv == 0 or Hq % Hkv != 0:
        raise ValueError(f"q heads: expected a multiple of the KV heads {Hkv}, got {Hq}")
    if Lq > Lk:
        raise ValueError(f"q length: expected <= key length {Lk}, got {Lq}")
    if page_size < 1:
        raise ValueError(f"page_size: expected >= 1, got {page_size}")
    if budget < page_size:
        raise ValueError(f"budget: expected >= page_size ({page_size}) tokens, got {budget}")
    if sink < 0:
        raise ValueError(f"sink: expected >= 0 pages, got {sink}")
    if recent < 1:
        raise ValueError(f"recent: expected >= 1 pages (the own page), got {recent}")
    if q.device != k.device or q.device != v.device:
        raise ValueError(f"k/v: expected q's device {q.device}, got {k.device} / {v.device}")


def _acc_dtype(dt: torch.dtype) -> torch.dtype:
    return torch.float64 if dt == torch.float64 else torch.float32


# ---------------------------------------------------------------------------------------
# page scores and the per-(query, page) bias
# ---------------------------------------------------------------------------------------
def _gqa_matmul(q: torch.Tensor, stat: torch.Tensor) -> torch.Tensor:
    """q [B, Hq, L, D] x stat [B, Hkv, N, D] -> [B, Hq, L, N] with head h using stat h // g."""
    B, Hq, L, D = q.shape
    Hkv, N = stat.shape[1], stat.shape[2]
    g = Hq // Hkv
    out = torch.matmul(q.reshape(B, Hkv, g * L, D), stat.transpose(-1, -2))
    return out.reshape(B, Hq, L, N)


def page_scores(q: torch.Tensor, k: torch.Tensor, page_size: int, estimator: str = "unique",
                alpha: float = 1.0, scale: Optional[float] = None) -> torch.Tensor:
    """Scores of the complete pages: [B, Hq, Lq, Lk // page_size] in fp32 (fp64 for fp64 input),
    differentiable in q and k. Entries for pages that are not candidates of a query are
    computed anyway (the caller masks them)."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator: expected one of {ESTIMATORS}, got {estimator!r}")
    acc = _acc_dtype(q.dtype)
    B, Hkv, Lk, D = k.shape
    P = page_size
    n = Lk // P
    scale = 1.0 / math.sqrt(D) if scale is None else float(scale)
    qa = q.to(acc)
    if n == 0:
        return qa.new_zeros(q.shape[0], q.shape[1], q.shape[2], 0)
    kp = k[:, :, : n * P].to(acc).reshape(B, Hkv, n, P, D)
    if estimator == "quest":
        kmin, kmax = kp.amin(3), kp.amax(3)
        s = _gqa_matmul(qa.clamp(min=0), kmax) + _gqa_matmul(qa.clamp(max=0), kmin)
        return s * scale
    mu = kp.mean(3)
    s = _gqa_matmul(qa, mu)
    if estimator == "unique" and alpha != 0.0:
        var = (kp - mu.unsqueeze(3)).square().mean(3)
        pos = var > 0
        # sqrt with a zero (not infinite) gradient where a page's keys are all equal
        sigma = torch.where(pos, var.clamp(min=torch.finfo(acc).tiny).sqrt(), torch.zeros_like(var))
        s = s + alpha * _gqa_matmul(qa.abs(), sigma)
    return s * scale


def _candidates(Lq: int, Lk: int, n: int, P: int, sink: int, recent: int, device) -> Tuple[torch.Tensor, torch.Tensor]:
    """cand [Lq, n] bool (page j is a candidate of query i) and its count per query."""
    t = torch.arange(Lk - Lq, Lk, device=device)
    hi = t // P - recent + 1  # candidates: sink <= j < hi
    j = torch.arange(n, device=device)
    cand = (j[None, :] >= sink) & (j[None, :] < hi[:, None])
    count = (hi - sink).clamp(min=0)
    return cand, count


def page_bias(q: torch.Tensor, k: torch.Tensor, page_size: int, budget: int, temperature: float = 0.0,
              sink: int = 1, recent: int = 1, estimator: str = "unique", alpha: float = 1.0,
              scale: Optional[float] = None, threshold: Optional[torch.Tensor] = None) -> Optional[torch.Tensor]:
    """Additive logit bias per (query, complete page) [B, Hq, Lq, Lk // P] (fp32/fp64), or None
    when no query has more candidates than the budget (dense). temperature > 0: log of the
    soft mask (differentiable in q, k; threshold detached); temperature == 0: hard top-k
    (0 for kept pages, -inf for dropped candidates). threshold [B, Hq, Lq]: use this tau
    instead of the top-k midpoint (a constant; for gradient checks of the stop-gradient)."""
    P = page_size
    Lq, Lk = q.shape[2], k.shape[2]
    n = Lk // P
    kpages = budget // P
    if n <= kpages:
        return None
    cand, count = _candidates(Lq, Lk, n, P, sink, recent, q.device)
    active = count > kpages  # [Lq]
    if not bool(active.any()):
        return None
    s = page_scores(q, k, P, estimator, alpha, scale)
    masked = s.masked_fill(~cand, float("-inf"))
    keep = cand & active[:, None]  # where the mask applies
    if temperature > 0:
        if threshold is not None:
            tau = threshold.detach().to(s.dtype)
        else:
            top = masked.detach().topk(kpages + 1, dim=-1).values
            tau = 0.5 * (top[..., kpages - 1] + top[..., kpages])  # [B, Hq, Lq]
        tau = torch.where(active, tau, torch.zeros_like(tau))  # finite everywhere
        logm = F.logsigmoid((s - tau.unsqueeze(-1)) / temperature)
        return torch.where(keep, logm, torch.zeros_like(logm))
    idx = masked.topk(kpages, dim=-1).indices
    sel = torch.zeros_like(masked, dtype=torch.bool).scatter_(-1, idx, True)
    drop = keep & ~sel
    return torch.zeros_like(s).masked_fill(drop, float("-inf"))


# ---------------------------------------------------------------------------------------
# chunked attention with a per-page bias (forward and backward), no autograd inside
# ---------------------------------------------------------------------------------------
def _key_bias(bias_pages: Optional[torch.Tensor], P: int, kend: int) -> Optional[torch.Tensor]:
    """[B, Hq, C, n] page bias -> [B, Hq, C, kend] key bias (0 past the complete pages)."""
    if bias_pages is None:
        return None
    n = bias_pages.shape[-1]
    npg = min(n, -(-kend // P))
    kb = bias_pages[..., :npg].repeat_interleave(P, dim=-1)[..., :kend]
    if kb.shape[-1] < kend:
        kb = F.pad(kb, (0, kend - kb.shape[-1]))
    return kb


def _logits(qc, k, bias_pages_c, P, scale, q0, Lk):
    """fp32 logits of a query chunk (queries at absolute positions q0 .. q0 + C - 1) over the
    keys 0 .. q0 + C - 1 (later keys are masked anyway): [B, Hq, C, q0 + C], built in place."""
    B, Hq, C, D = qc.shape
    kend = q0 + C
    z = _gqa_matmul(qc, k[:, :, :kend])
    z.mul_(scale)
    if bias_pages_c is not None:
        # every candidate page of these queries ends at or before q0 <= kend: whole pages only
        npg = min(bias_pages_c.shape[-1], kend // P)
        if npg > 0:
            z[..., : npg * P].view(B, Hq, C, npg, P).add_(bias_pages_c[..., :npg, None])
    causal = torch.ones(C, C, dtype=torch.bool, device=qc.device).triu_(1)
    z[..., q0:kend].masked_fill_(causal, float("-inf"))
    return z


def _attn_forward(q, k, v, bias_pages, P, scale, chunk):
    B, Hq, Lq, D = q.shape
    Hkv, Lk = k.shape[1], k.shape[2]
    g = Hq // Hkv
    acc = _acc_dtype(q.dtype)
    qa, ka, va = q.to(acc), k.to(acc), v.to(acc)
    off = Lk - Lq
    out = torch.empty(B, Hq, Lq, D, dtype=acc, device=q.device)
    lse = torch.empty(B, Hq, Lq, dtype=acc, device=q.device)
    for s0 in range(0, Lq, chunk):
        e = min(Lq, s0 + chunk)
        bc = None if bias_pages is None else bias_pages[:, :, s0:e]
        z = _logits(qa[:, :, s0:e], ka, bc, P, scale, off + s0, Lk)
        m = z.amax(-1, keepdim=True)
        z.sub_(m).exp_()
        ssum = z.sum(-1, keepdim=True)
        C, kend = e - s0, z.shape[-1]
        o = torch.matmul(z.view(B, Hkv, g * C, kend), va[:, :, :kend]).view(B, Hq, C, D)
        out[:, :, s0:e] = o / ssum
        lse[:, :, s0:e] = (m + ssum.log()).squeeze(-1)
        del z
    return out, lse


def _attn_backward(q, k, v, bias_pages, out, lse, dout, P, scale, chunk, need_dbias):
    B, Hq, Lq, D = q.shape
    Hkv, Lk = k.shape[1], k.shape[2]
    g = Hq // Hkv
    acc = _acc_dtype(q.dtype)
    qa, ka, va = q.to(acc), k.to(acc), v.to(acc)
    do = dout.to(acc)
    off = Lk - Lq
    delta = (do * out.to(acc)).sum(-1)  # [B, Hq, Lq]
    dq = torch.empty(B, Hq, Lq, D, dtype=acc, device=q.device)
    dk = torch.zeros(B, Hkv, Lk, D, dtype=acc, device=q.device)
    dv = torch.zeros(B, Hkv, Lk, D, dtype=acc, device=q.device)
    n = Lk // P
    dbias = torch.zeros(B, Hq, Lq, n, dtype=acc, device=q.device) if need_dbias else None
    for s0 in range(0, Lq, chunk):
        e = min(Lq, s0 + chunk)
        C = e - s0
        bc = None if bias_pages is None else bias_pages[:, :, s0:e]
        p = _logits(qa[:, :, s0:e], ka, bc, P, scale, off + s0, Lk)
        kend = p.shape[-1]
        p.sub_(lse[:, :, s0:e].unsqueeze(-1)).exp_()  # probabilities [B, Hq, C, kend]
        doc = do[:, :, s0:e].reshape(B, Hkv, g * C, D)
        pv = p.view(B, Hkv, g * C, kend)
        dv[:, :, :kend] += torch.matmul(pv.transpose(-1, -2), doc)  # sums the group's heads too
        ds = torch.matmul(doc, va[:, :, :kend].transpose(-1, -2)).view(B, Hq, C, kend)
        ds.sub_(delta[:, :, s0:e].unsqueeze(-1)).mul_(p)
        del p, pv
        dsv = ds.view(B, Hkv, g * C, kend)
        dq[:, :, s0:e] = torch.matmul(dsv, ka[:, :, :kend]).view(B, Hq, C, D) * scale
        dk[:, :, :kend] += torch.matmul(dsv.transpose(-1, -2), qa[:, :, s0:e].reshape(B, Hkv, g * C, D)) * scale
        if dbias is not None:
            npg = min(n, kend // P)
            if npg > 0:
                dbias[:, :, s0:e, :npg] = ds[..., : npg * P].reshape(B, Hq, C, npg, P).sum(-1)
        del ds, dsv
    return dq, dk, dv, dbias


# ---------------------------------------------------------------------------------------
# CUDA kernels (unique_attn._core, optional)
# ---------------------------------------------------------------------------------------
def cuda_kernels_available() -> bool:
    """True when the extension has the fused soft-mask kernels and was built with CUDA."""
    return (_core is not None and hasattr(_core, "soft_mask_forward") and hasattr(_core, "soft_mask_backward")
            and bool(getattr(_core, "cuda_available", lambda: False)()))


def cuda_kernel(head_dim: int = 128) -> str:
    """The CUDA kernels soft_mask_attention runs on the current GPU: "wgmma" (Hopper),
    "mma" (other GPUs, or UNIQUE_SOFT_MASK_KERNEL=mma) or "none" (no CUDA kernels)."""
    if not cuda_kernels_available() or not hasattr(_core, "soft_mask_cuda_kernel"):
        return "none"
    return str(_core.soft_mask_cuda_kernel(int(head_dim)))


def _kernel_shape_ok(q: torch.Tensor, k: torch.Tensor, page_size: int) -> bool:
    """What the CUDA kernels take (include/unique/soft_mask.h): bf16/fp16 q/k/v, head_dim 64 or
    128, page_size 16/32/64, self-attention (Lq == Lk)."""
    return (q.dtype in (torch.bfloat16, torch.float16) and q.dtype == k.dtype and q.shape[-1] in (64, 128)
            and page_size in (16, 32, 64) and q.shape[2] == k.shape[2])


def _backend(backend: Optional[str]) -> str:
    """The backend asked for: the argument, else UNIQUE_SOFT_MASK_BACKEND, else auto."""
    b = (backend or os.environ.get("UNIQUE_SOFT_MASK_BACKEND", "auto")).lower()
    if b not in ("auto", "torch", "cuda"):
        raise ValueError(f"backend: expected auto, torch or cuda, got {b!r}")
    return b


def _use_cuda(q: torch.Tensor, k: torch.Tensor, page_size: int, backend: Optional[str]) -> bool:
    b = _backend(backend)
    if b == "torch":
        return False
    ok = q.is_cuda and cuda_kernels_available() and _kernel_shape_ok(q, k, page_size)
    if b == "cuda" and not ok:
        raise RuntimeError("backend=cuda: needs CUDA tensors, unique_attn._core built with the soft-mask kernels "
                           "(UNIQUE_PY_CUDA=ON) and what they take: bf16/fp16, head_dim 64/128, page_size "
                           f"16/32/64, Lq == Lk (got {q.dtype}, D {q.shape[-1]}, P {page_size}, on {q.device})")
    return ok


def _autocast_inputs(q, k, v, backend, threshold):
    """Under CUDA autocast the kernels take q, k, v in the autocast dtype, as SDPA does.
    transformers' Llama hands fp32 q / k (RoPE multiplies the autocast-bf16 projections by
    fp32 cos / sin) beside a bf16 v: without the cast the fp32 torch path ran instead of the
    kernels (a fine-tune at ~1/10 of the dense step rate)."""
    if not (q.is_cuda and threshold is None and torch.is_autocast_enabled("cuda")) or _backend(backend) == "torch":
        return q, k, v
    dt = torch.get_autocast_dtype("cuda")
    if dt not in (torch.bfloat16, torch.float16):
        return q, k, v
    return q.to(dt), k.to(dt), v.to(dt)


def _dl(x: torch.Tensor):
    # stream=-1: no cross-stream synchronisation (the kernels run on torch's current stream)
    x = x.detach()  # the kernels neither need nor keep the autograd graph
    return x.__dlpack__(stream=-1) if x.is_cuda else x.__dlpack__()


def _cfg_args(ctx):
    stream = int(torch.cuda.current_stream(ctx.device).cuda_stream) if ctx.device.type == "cuda" else 0
    return (ctx.P, ctx.budget, ctx.sink, ctx.recent, float(ctx.T), float(ctx.alpha), float(ctx.scale), stream)


def _cuda_forward(ctx, q, k, v):
    B, Hq, Lq, D = q.shape
    # the kernels take [B, L, H, D] strided views: transposes of the [B, H, L, D] inputs
    qt, kt, vt = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    out = torch.empty(B, Lq, Hq, D, dtype=q.dtype, device=q.device)
    lse = torch.empty(B, Lq, Hq, dtype=torch.float32, device=q.device)
    # the thresholds, saved for the backward (which then skips its top-k pre-pass)
    tau = torch.empty(B, Hq, Lq, dtype=torch.float32, device=q.device)
    _core.soft_mask_forward(_dl(qt), _dl(kt), _dl(vt), _dl(out), _dl(lse), *_cfg_args(ctx), tau=_dl(tau))
    return out, lse, tau


def _cuda_backward(ctx, q, k, v, out, lse, tau, dout):
    qt, kt, vt = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    dq, dk, dv = torch.empty_like(qt), torch.empty_like(kt), torch.empty_like(vt)
    do = dout.transpose(1, 2)
    _core.soft_mask_backward(_dl(qt), _dl(kt), _dl(vt), _dl(out), _dl(lse), _dl(do), _dl(dq), _dl(dk), _dl(dv),
                             *_cfg_args(ctx), tau=_dl(tau))
    return dq.transpose(1, 2), dk.transpose(1, 2), dv.transpose(1, 2)


def _no_autocast(x: torch.Tensor):
    """The torch path computes in fp32 (fp64 for fp64 input) whatever autocast says."""
    return torch.autocast(device_type=x.device.type, enabled=False)


# ---------------------------------------------------------------------------------------
# autograd.Function
# ---------------------------------------------------------------------------------------
class SoftMaskAttention(torch.autograd.Function):
    """forward(q, k, v, page_size, budget, temperature, sink, recent, alpha, scale, chunk, use_cuda)"""

    @staticmethod
    def forward(ctx, q, k, v, page_size, budget, temperature, sink, recent, alpha, scale, chunk, use_cuda,
                threshold=None):
        ctx.threshold = threshold
        ctx.P, ctx.budget, ctx.T, ctx.sink, ctx.recent = page_size, budget, temperature, sink, recent
        ctx.alpha, ctx.scale, ctx.chunk, ctx.use_cuda, ctx.device = alpha, scale, chunk, use_cuda, q.device
        if use_cuda:
            out_t, lse, tau = _cuda_forward(ctx, q, k, v)  # [B, L, H, D], [B, L, H], [B, H, L]
            ctx.save_for_backward(q, k, v, out_t, lse, tau)
            return out_t.transpose(1, 2)
        with torch.no_grad(), _no_autocast(q):
            bias = page_bias(q, k, page_size, budget, temperature, sink, recent, "unique", alpha, scale, threshold)
            out, lse = _attn_forward(q, k, v, bias, page_size, scale, chunk)
        out = out.to(q.dtype)
        ctx.save_for_backward(q, k, v, out, lse)
        return out

    @staticmethod
    def backward(ctx, dout):
        if ctx.use_cuda:
            q, k, v, out, lse, tau = ctx.saved_tensors
            dq, dk, dv = _cuda_backward(ctx, q, k, v, out, lse, tau, dout.contiguous())
            return dq, dk, dv, None, None, None, None, None, None, None, None, None, None
        q, k, v, out, lse = ctx.saved_tensors
        qd = q.detach().requires_grad_(True)
        kd = k.detach().requires_grad_(True)
        with torch.enable_grad(), _no_autocast(q):
            bias = page_bias(qd, kd, ctx.P, ctx.budget, ctx.T, ctx.sink, ctx.recent, "unique", ctx.alpha, ctx.scale,
                             ctx.threshold)
        with torch.no_grad(), _no_autocast(q):
            dq, dk, dv, dbias = _attn_backward(q, k, v, None if bias is None else bias.detach(), out, lse, dout,
                                               ctx.P, ctx.scale, ctx.chunk, need_dbias=bias is not None)
        if bias is not None and bias.requires_grad:
            with _no_autocast(q):
                gq, gk = torch.autograd.grad(bias, (qd, kd), dbias, allow_unused=True)
            if gq is not None:
                dq = dq + gq
            if gk is not None:
                dk = dk + gk
        return (dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), None, None, None, None, None, None, None, None,
                None, None)


def soft_mask_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, page_size: int = 16,
                        budget: int = 2048, temperature: float = 0.1, sink: int = 1, recent: int = 1,
                        alpha: float = 1.0, scale: Optional[float] = None, chunk: Optional[int] = None,
                        backend: Optional[str] = None, threshold: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Causal attention with UNIQUE's soft page mask (see the module docstring).

    q [B, Hq, Lq, D], k / v [B, Hkv, Lk, D]; budget in tokens (>= page_size); temperature
    T > 0 (the soft mask); sink / recent in pages; scale defaults to 1/sqrt(D). Returns
    [B, Hq, Lq, D] in q's dtype. backend: "auto" (default: the CUDA kernels when available
    for CUDA tensors, else torch), "torch" or "cuda"; env UNIQUE_SOFT_MASK_BACKEND sets the
    default. threshold [B, Hq, Lq] (torch backend only): a fixed tau instead of the top-k
    midpoint, for gradient checks (the midpoint is a stop-gradient)."""
    _check(q, k, v, page_size, budget, sink, recent)
    if not temperature > 0:
        raise ValueError(f"temperature: expected > 0 (use hard_topk_attention for T -> 0), got {temperature}")
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    chunk = int(chunk or DEFAULT_CHUNK)
    q, k, v = _autocast_inputs(q, k, v, backend, threshold)
    use_cuda = threshold is None and _use_cuda(q, k, int(page_size), backend)
    return SoftMaskAttention.apply(q, k, v, int(page_size), int(budget), float(temperature), int(sink),
                                   int(recent), float(alpha), scale, chunk, use_cuda, threshold)


def soft_mask_threshold(q, k, page_size, budget, sink=1, recent=1, alpha=1.0, scale=None):
    """The detached tau [B, Hq, Lq] soft_mask_attention uses (0 where a query keeps every
    candidate), or None when no query has more candidates than the budget."""
    with torch.no_grad():
        P = page_size
        Lq, Lk = q.shape[2], k.shape[2]
        n, kpages = Lk // P, budget // P
        if n <= kpages:
            return None
        cand, count = _candidates(Lq, Lk, n, P, sink, recent, q.device)
        s = page_scores(q, k, P, "unique", alpha, scale).masked_fill(~cand, float("-inf"))
        top = s.topk(kpages + 1, dim=-1).values
        tau = 0.5 * (top[..., kpages - 1] + top[..., kpages])
        return torch.where(count > kpages, tau, torch.zeros_like(tau))


def hard_topk_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, page_size: int = 16,
                        budget: int = 2048, sink: int = 1, recent: int = 1, estimator: str = "unique",
                        alpha: float = 1.0, scale: Optional[float] = None, chunk: Optional[int] = None,
                        sparse_from: int = 0) -> torch.Tensor:
    """Hard top-k page attention (the T -> 0 limit; what sparse inference does), for evaluation:
    every query keeps its sink / recent / own pages and the budget // page_size best candidate
    pages by `estimator` ("unique", "quest" or "mean"), scored per query head. Queries at
    positions < sparse_from attend densely (e.g. a dense prefill). No gradient."""
    _check(q, k, v, page_size, budget, sink, recent)
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator: expected one of {ESTIMATORS}, got {estimator!r}")
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    chunk = int(chunk or DEFAULT_CHUNK)
    with torch.no_grad(), _no_autocast(q):
        bias = page_bias(q, k, page_size, budget, 0.0, sink, recent, estimator, alpha, scale)
        if bias is not None and sparse_from > 0:
            off = k.shape[2] - q.shape[2]
            nd = max(0, min(q.shape[2], sparse_from - off))
            bias[:, :, :nd] = 0
        out, _ = _attn_forward(q, k, v, bias, page_size, scale, chunk)
    return out.to(q.dtype)


def reference_attention(q, k, v, page_size=16, budget=2048, temperature=0.1, sink=1, recent=1, alpha=1.0,
                        scale=None, hard=False, estimator="unique"):
    """Plain autograd reference (materialises [B, Hq, Lq, Lk]); for tests on small shapes."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    B, Hq, Lq, D = q.shape
    Hkv, Lk = k.shape[1], k.shape[2]
    g = Hq // Hkv
    acc = _acc_dtype(q.dtype)
    ke = k.to(acc).repeat_interleave(g, dim=1)
    ve = v.to(acc).repeat_interleave(g, dim=1)
    z = torch.matmul(q.to(acc), ke.transpose(-1, -2)) * scale
    bias = page_bias(q, k, page_size, budget, 0.0 if hard else temperature, sink, recent, estimator, alpha, scale)
    if bias is not None:
        z = z + _key_bias(bias, page_size, Lk)
    tq = torch.arange(Lk - Lq, Lk, device=q.device)
    tk = torch.arange(Lk, device=q.device)
    z = z.masked_fill(tk[None, :] > tq[:, None], float("-inf"))
    return torch.matmul(torch.softmax(z, -1), ve).to(q.dtype)
