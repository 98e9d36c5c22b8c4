"""NumPy float64 references of every entry point (plain loops), and a workload builder."""
import numpy as np

import unique_attn as ua


def f64(x):
    """float64 NumPy copy of a NumPy array (ml_dtypes bf16 too) or torch tensor."""
    if hasattr(x, "detach"):
        return x.detach().to("cpu").double().numpy()
    return np.asarray(x).astype(np.float64)


def seq_tokens(cache, indptr, indices, last, b):
    """Keys and values of sequence b, [H, T, D] float64, read from the stored pages."""
    k, v = f64(cache.k_cache), f64(cache.v_cache)
    pages = indices[indptr[b]:indptr[b + 1]]
    P = cache.page_size
    ks = np.concatenate([k[p] for p in pages], axis=1)  # [H, n*P, D]
    vs = np.concatenate([v[p] for p in pages], axis=1)
    T = (len(pages) - 1) * P + last[b]
    return ks[:, :T], vs[:, :T]


def page_stats(cache, indptr, indices, last):
    """{page: (mean, std, min, max)} each [H, D] over the stored keys of the page."""
    k = f64(cache.k_cache)
    out = {}
    for b in range(len(last)):
        pages = indices[indptr[b]:indptr[b + 1]]
        for j, p in enumerate(pages):
            t = last[b] if j == len(pages) - 1 else cache.page_size
            x = k[p, :, :t]
            out[int(p)] = (x.mean(1), x.std(1), x.min(1), x.max(1))
    return out


def scores(q, cache, indptr, indices, last, estimator="unique", gqa="max", offset="channel",
           alpha=1.0, sm_scale=None):
    """[B, H, max_pages] float64, -inf past each sequence (oracle: true page mass)."""
    q = f64(q)
    B, Hq, D = q.shape
    H = cache.num_kv_heads
    g = Hq // H
    scale = sm_scale or 1.0 / np.sqrt(D)
    n = np.diff(indptr)
    out = np.full((B, H, n.max()), -np.inf)
    mean, std = f64(cache.mean) if cache.mean is not None else None, f64(cache.std) if cache.std is not None else None
    kmin, kmax = (f64(cache.kmin), f64(cache.kmax)) if cache.kmin is not None else (None, None)
    for b in range(B):
        pages = indices[indptr[b]:indptr[b + 1]]
        ks, _ = seq_tokens(cache, indptr, indices, last, b)
        for h in range(H):
            agg = np.full(len(pages), -np.inf) if gqa == "max" else np.zeros(len(pages))
            for i in range(g):
                qq = q[b, h * g + i]
                if estimator == "oracle":
                    logit = ks[h] @ qq * scale
                    w = np.exp(logit - logit.max())
                    w /= w.sum()
                    s = np.array([w[j * cache.page_size:(j + 1) * cache.page_size].sum()
                                  for j in range(len(pages))])
                else:
                    s = np.empty(len(pages))
                    for j, p in enumerate(pages):
                        if estimator == "quest":
                            s[j] = np.maximum(qq * kmin[p, h], qq * kmax[p, h]).sum()
                        elif estimator == "mean":
                            s[j] = qq @ mean[p, h]
                        elif estimator == "unique":
                            off = (np.abs(qq) * std[p, h]).sum() if offset == "channel" else \
                                np.linalg.norm(qq) * np.linalg.norm(std[p, h])
                            s[j] = qq @ mean[p, h] + alpha * off
                        else:
                            s[j] = 0.0
                    if gqa == "softmax_sum":
                        e = np.exp((s - s.max()) * scale)
                        s = e / e.sum()
                agg = np.maximum(agg, s) if gqa == "max" else agg + s
            out[b, h, :len(pages)] = agg
    return out


def select(score, indptr, page_size, budget, sink=1, recent=1, dense=False):
    """Per (b, h) the sorted list of selected logical pages (ties to the lower position)."""
    B, H, _ = score.shape
    n = np.diff(indptr)
    res = {}
    for b in range(B):
        for h in range(H):
            forced = {j for j in range(n[b]) if j < sink or j >= n[b] - max(recent, 1)}
            rest = sorted((j for j in range(n[b]) if j not in forced), key=lambda j: (-score[b, h, j], j))
            k = n[b] if dense else budget // page_size
            res[b, h] = sorted(forced | set(rest[:k]))
    return res


def decode(q, cache, indptr, indices, last, sel=None, sm_scale=None):
    """(out [B, Hq, D], lse [B, Hq]) float64; sel maps (b, h) -> logical pages (None: all)."""
    q = f64(q)
    B, Hq, D = q.shape
    H = cache.num_kv_heads
    g = Hq // H
    P = cache.page_size
    scale = sm_scale or 1.0 / np.sqrt(D)
    out = np.zeros((B, Hq, D))
    lse = np.zeros((B, Hq))
    for b in range(B):
        ks, vs = seq_tokens(cache, indptr, indices, last, b)
        T = ks.shape[1]
        for hq in range(Hq):
            h = hq // g
            pages = range((T + P - 1) // P) if sel is None else sel[b, h]
            idx = np.concatenate([np.arange(j * P, min((j + 1) * P, T)) for j in pages])
            logit = ks[h, idx] @ q[b, hq] * scale
            m = logit.max()
            w = np.exp(logit - m)
            out[b, hq] = w @ vs[h, idx] / w.sum()
            lse[b, hq] = m + np.log(w.sum())
    return out, lse


def sel_dict(pages, counts):
    pages, counts = np.asarray(f64(pages)).astype(int), np.asarray(f64(counts)).astype(int)
    B, H, M = pages.shape
    return {(b, h): list(pages[b, h, :counts[b, h]]) for b in range(B) for h in range(H)}


def build(lens, num_kv_heads=2, page_size=16, head_dim=64, dtype="float32", stats_dtype="float32",
          quest=True, seed=0, lib="numpy", device="cpu", chunks=2, spare_pages=3):
    """A cache holding sequences of `lens` tokens in shuffled pages, filled by `chunks`
    appends (prefill, then decode-like appends), and its page table."""
    rng = np.random.default_rng(seed)
    P = page_size
    n_pages = [(t + P - 1) // P for t in lens]
    total = sum(n_pages) + spare_pages
    perm = rng.permutation(total).astype(np.int32)
    indptr = np.concatenate([[0], np.cumsum(n_pages)]).astype(np.int32)
    indices = perm[:indptr[-1]].copy()
    if lib == "torch":
        import torch
        dt = getattr(torch, dtype)
        cache = ua.PagedKVCache.empty(total, num_kv_heads, P, head_dim, dtype=dt, device=device,
                                      stats_dtype=getattr(torch, stats_dtype), quest=quest)
    else:
        cache = ua.PagedKVCache.empty(total, num_kv_heads, P, head_dim, dtype=dtype,
                                      stats_dtype=stats_dtype, quest=quest)
    done = np.zeros(len(lens), dtype=np.int64)
    for c in range(chunks):
        upto = np.array([t if c == chunks - 1 else max(1, t * (c + 1) // chunks) for t in lens])
        add = upto - done
        ai = np.concatenate([[0], np.cumsum(add)]).astype(np.int32)
        # a keyed structure per sequence (page-level offsets) so selection is meaningful
        kn = rng.standard_normal((ai[-1], num_kv_heads, head_dim)).astype(np.float32)
        vn = rng.standard_normal((ai[-1], num_kv_heads, head_dim)).astype(np.float32)
        kn += rng.standard_normal((ai[-1], num_kv_heads, 1)).astype(np.float32)
        npg = [(int(t) + P - 1) // P for t in upto]
        ip = np.concatenate([[0], np.cumsum(npg)]).astype(np.int32)
        idx = np.concatenate([indices[indptr[b]:indptr[b] + npg[b]] for b in range(len(lens))]).astype(np.int32)
        lastc = np.array([int(t) - (npg[b] - 1) * P for b, t in enumerate(upto)], dtype=np.int32)
        if lib == "torch":
            import torch
            kt, vt = torch.from_numpy(kn).to(device), torch.from_numpy(vn).to(device)
            cache.append(kt, vt, ai, ip, idx, lastc)
        else:
            cache.append(kn, vn, ai, ip, idx, lastc)
        done = upto
    last = np.array([t - (n - 1) * P for t, n in zip(lens, n_pages)], dtype=np.int32)
    return cache, indptr, indices, last


def rand_q(B, Hq, D, seed=1, dtype="float32"):
    q = np.random.default_rng(seed).standard_normal((B, Hq, D)) * 1.5
    return q.astype(ua._arrays.np_dtype(dtype))
