"""torch tensors: CPU against the NumPy references; CUDA (marked gpu) against torch math,
streams and CUDA-graph capture. Skipped without torch."""
import numpy as np
import pytest

import reference as R
import unique_attn as ua

torch = pytest.importorskip("torch")

LENS = [37, 100, 16, 65]
needs_cuda = pytest.mark.skipif(not (torch.cuda.is_available() and ua.cuda_available()),
                                reason="needs a GPU and the extension built with UNIQUE_PY_CUDA=ON")


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_torch_cpu_sparse_decode(dtype):
    cache, ip, idx, last = R.build(LENS, dtype=dtype, stats_dtype="float32", lib="torch")
    assert isinstance(cache.k_cache, torch.Tensor)
    q = torch.from_numpy(R.rand_q(4, 8, 64)).to(getattr(torch, dtype)).requires_grad_(True)
    w = ua.SparseDecodeWrapper()
    w.plan(torch.from_numpy(ip), torch.from_numpy(idx), torch.from_numpy(last), 8, 2, 64, 16, budget=32)
    out, lse, (pages, counts) = w.run(q, cache, return_lse=True, return_selection=True)
    assert isinstance(out, torch.Tensor) and out.dtype == q.dtype and isinstance(pages, torch.Tensor)
    ref_out, ref_lse = R.decode(q, cache, ip, idx, last, sel=R.sel_dict(pages, counts))
    tol = 1e-5 if dtype == "float32" else 1e-2
    np.testing.assert_allclose(R.f64(out), ref_out, rtol=tol, atol=tol)
    np.testing.assert_allclose(R.f64(lse), ref_lse, rtol=1e-5, atol=1e-5)
    ref_s = R.scores(q, cache, ip, idx, last)
    got_s = ua.score_pages(q, cache, ip, idx, last)
    fin = np.isfinite(ref_s)
    np.testing.assert_allclose(R.f64(got_s)[fin], ref_s[fin], rtol=1e-4, atol=1e-4)


def test_torch_cpu_stats_bf16():
    cache, ip, idx, last = R.build(LENS, dtype="bfloat16", stats_dtype="bfloat16", lib="torch")
    for p, (mean, std, mn, mx) in R.page_stats(cache, ip, idx, last).items():
        np.testing.assert_allclose(R.f64(cache.mean[p]), mean, rtol=1e-2, atol=1e-2)
        np.testing.assert_allclose(R.f64(cache.std[p]), std, rtol=1e-2, atol=1e-2)


def test_torch_cpu_errors():
    cache, ip, idx, last = R.build([20], lib="torch")
    w = ua.SparseDecodeWrapper()
    w.plan(ip, idx, last, 2, 2, 64, 16, budget=16)
    with pytest.raises(TypeError, match="q: expected dtype"):
        w.run(torch.zeros(1, 2, 64, dtype=torch.float64), cache)
    with pytest.raises(TypeError, match="page_indptr"):
        w.plan(torch.tensor([0.0, 1.0]), idx, last, 2, 2, 64, 16)


# ---------------------------------------------------------------- CUDA

def torch_decode(q, k_cache, v_cache, ip, idx, last, sel=None, sm_scale=None):
    """Torch float64 reference on the GPU: softmax over the selected pages' tokens."""
    B, Hq, D = q.shape
    H, P = k_cache.shape[1], k_cache.shape[2]
    g = Hq // H
    scale = sm_scale or D ** -0.5
    out = torch.empty(B, Hq, D, dtype=torch.float64, device=q.device)
    for b in range(B):
        pages = torch.as_tensor(idx[ip[b]:ip[b + 1]], device=q.device, dtype=torch.long)
        n = len(pages)
        T = (n - 1) * P + int(last[b])
        k = k_cache[pages].double().permute(1, 0, 2, 3).reshape(H, n * P, D)[:, :T]
        v = v_cache[pages].double().permute(1, 0, 2, 3).reshape(H, n * P, D)[:, :T]
        for hq in range(Hq):
            h = hq // g
            js = range(n) if sel is None else sel[b, h]
            tok = torch.cat([torch.arange(j * P, min((j + 1) * P, T)) for j in js]).to(q.device)
            w = torch.softmax(k[h, tok] @ q[b, hq].double() * scale, 0)
            out[b, hq] = w @ v[h, tok]
    return out


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("group", [1, 4])
def test_cuda_matches_torch(dtype, group):
    dev = "cuda"
    cache, ip, idx, last = R.build(LENS, num_kv_heads=2, head_dim=128, dtype=dtype, lib="torch", device=dev)
    q = torch.randn(4, 2 * group, 128, device=dev, dtype=getattr(torch, dtype))
    # statistics kept on the GPU match the host reference
    for p, (mean, std, mn, mx) in R.page_stats(cache, ip, idx, last).items():
        np.testing.assert_allclose(R.f64(cache.mean[p]), mean, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(R.f64(cache.std[p]), std, rtol=1e-4, atol=1e-4)
    w = ua.SparseDecodeWrapper(torch.empty(1 << 20, dtype=torch.uint8, device=dev))
    w.plan(torch.from_numpy(ip).to(dev), torch.from_numpy(idx).to(dev), torch.from_numpy(last).to(dev),
           2 * group, 2, 128, 16, budget=32)
    out, lse, (pages, counts) = w.run(q, cache, return_lse=True, return_selection=True)
    assert out.is_cuda and pages.is_cuda
    sel = R.sel_dict(pages, counts)
    ref = torch_decode(q, cache.k_cache, cache.v_cache, ip, idx, last, sel)
    torch.testing.assert_close(out.double(), ref, rtol=2e-2, atol=2e-2)
    # selection and scores agree with the host reference
    ref_s = R.scores(q, cache, ip, idx, last)
    got_s = ua.score_pages(q, cache, torch.from_numpy(ip).to(dev), torch.from_numpy(idx).to(dev),
                           torch.from_numpy(last).to(dev))
    fin = np.isfinite(ref_s)
    np.testing.assert_allclose(R.f64(got_s)[fin], ref_s[fin], rtol=1e-3, atol=1e-3)
    p2, c2 = ua.select_pages(q, cache, ip, idx, last, budget=32)
    assert torch.equal(p2.cpu(), pages.cpu()) and torch.equal(c2.cpu(), counts.cpu())
    # dense wrapper == torch dense; sparse with budget >= context == dense
    d = ua.DenseDecodeWrapper()
    d.plan(ip, idx, last, 2 * group, 2, 128, 16, device=dev)
    ref_d = torch_decode(q, cache.k_cache, cache.v_cache, ip, idx, last)
    torch.testing.assert_close(d.run(q, cache).double(), ref_d, rtol=2e-2, atol=2e-2)
    full = ua.SparseDecodeWrapper()
    full.plan(ip, idx, last, 2 * group, 2, 128, 16, budget=4096, device=dev)
    torch.testing.assert_close(full.run(q, cache).double(), ref_d, rtol=2e-2, atol=2e-2)


@pytest.mark.gpu
@needs_cuda
def test_cuda_side_stream_and_graph_capture():
    dev = "cuda"
    cache, ip, idx, last = R.build(LENS, num_kv_heads=2, head_dim=128, dtype="bfloat16", lib="torch", device=dev)
    w = ua.SparseDecodeWrapper()
    w.plan(ip, idx, last, 8, 2, 128, 16, budget=48, device=dev, kv_data_type=torch.bfloat16)
    q_static = torch.randn(4, 8, 128, device=dev, dtype=torch.bfloat16)
    out_static = torch.empty_like(q_static)
    eager = w.run(q_static, cache).clone()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        side = w.run(q_static, cache)
    torch.cuda.current_stream().wait_stream(s)
    torch.testing.assert_close(side, eager, rtol=0, atol=0)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        w.run(q_static, cache, out=out_static)
    # Another, larger step between capture and replay must not disturb the captured one.
    big, bip, bidx, blast = R.build([900] * 6, num_kv_heads=2, head_dim=128, dtype="bfloat16", lib="torch",
                                    device=dev, seed=7)
    w2 = ua.SparseDecodeWrapper()
    w2.plan(bip, bidx, blast, 8, 2, 128, 16, budget=256, device=dev)
    w2.run(torch.randn(6, 8, 128, device=dev, dtype=torch.bfloat16), big)
    for seed in range(3):
        torch.manual_seed(seed)
        q_new = torch.randn(4, 8, 128, device=dev, dtype=torch.bfloat16)
        q_static.copy_(q_new)
        g.replay()
        torch.cuda.synchronize()
        torch.testing.assert_close(out_static, w.run(q_new, cache), rtol=0, atol=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_tensors_without_cuda_build_raise():
    if ua.built_with_cuda():
        pytest.skip("the extension has CUDA")
    cache = ua.PagedKVCache.empty(4, 2, 16, 64, dtype=torch.bfloat16, device="cuda")
    with pytest.raises(ValueError, match="CUDA support"):
        cache.append(torch.zeros(3, 2, 64, device="cuda"), torch.zeros(3, 2, 64, device="cuda"),
                     [0, 3], [0, 1], [0], [3])
