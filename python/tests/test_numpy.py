"""Every entry point on NumPy arrays (CPU) against the float64 references in reference.py."""
import numpy as np
import pytest

import reference as R
import unique_attn as ua

LENS = [37, 100, 16, 65]


def check_selection(pages, counts, ref_scores, indptr, page_size, budget, sink=1, recent=1, tol=1e-4):
    """Selected = forced pages + a top-k by the reference score (near-ties may swap)."""
    got = R.sel_dict(pages, counts)
    n = np.diff(indptr)
    for (b, h), chosen in got.items():
        forced = {j for j in range(n[b]) if j < sink or j >= n[b] - max(recent, 1)}
        k = budget // page_size
        rest = [j for j in range(n[b]) if j not in forced]
        assert len(chosen) == len(forced) + min(k, len(rest)), (b, h)
        assert chosen == sorted(chosen) and forced <= set(chosen), (b, h)
        s = ref_scores[b, h]
        picked = [j for j in chosen if j not in forced]
        left = [j for j in rest if j not in chosen]
        if picked and left:
            assert min(s[picked]) >= max(s[left]) - tol * (1 + abs(max(s[left]))), (b, h)
        row = np.asarray(R.f64(pages))[b, h]
        assert (row[len(chosen):] == -1).all()


@pytest.mark.parametrize("dtype,stats_dtype", [("float32", "float32"), ("float16", "float32"),
                                               ("bfloat16", "bfloat16"), ("float32", "bfloat16")])
@pytest.mark.parametrize("page_size", [16, 32])
def test_append_keeps_stats(dtype, stats_dtype, page_size):
    cache, ip, idx, last = R.build(LENS, page_size=page_size, dtype=dtype, stats_dtype=stats_dtype, chunks=3)
    ref = R.page_stats(cache, ip, idx, last)
    tol = dict(rtol=1e-5, atol=1e-5) if stats_dtype == "float32" else dict(rtol=1e-2, atol=1e-2)
    for p, (mean, std, mn, mx) in ref.items():
        np.testing.assert_allclose(R.f64(cache.mean[p]), mean, **tol)
        np.testing.assert_allclose(R.f64(cache.std[p]), std, **tol)
        np.testing.assert_allclose(R.f64(cache.kmin[p]), mn, **tol)
        np.testing.assert_allclose(R.f64(cache.kmax[p]), mx, **tol)


def test_append_stores_rounded_tokens_and_matches_recompute():
    cache = ua.PagedKVCache.empty(4, 2, 16, 32, dtype="float16", quest=True)
    k = np.random.default_rng(0).standard_normal((20, 2, 32)).astype(np.float32)
    v = k[::-1].copy()
    ua.append_paged_kv_cache(k, v, [0, 20], cache, [0, 2], [3, 1], [4])
    np.testing.assert_array_equal(cache.k_cache[3].transpose(1, 0, 2), k[:16].astype(np.float16))
    np.testing.assert_array_equal(cache.v_cache[1, :, :4].transpose(1, 0, 2), v[16:].astype(np.float16))
    before = [np.array(t) for t in (cache.mean, cache.std, cache.kmin, cache.kmax)]
    cache.recompute_stats([0, 2], [3, 1], [4])
    for a, b in zip(before, (cache.mean, cache.std, cache.kmin, cache.kmax)):
        np.testing.assert_allclose(a[[3, 1]], b[[3, 1]], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("estimator", ["unique", "quest", "mean", "oracle"])
@pytest.mark.parametrize("gqa", ["max", "softmax_sum"])
def test_score_pages(estimator, gqa):
    cache, ip, idx, last = R.build(LENS, num_kv_heads=2)
    q = R.rand_q(len(LENS), 8, 64)
    got = ua.score_pages(q, cache, ip, idx, last, estimator=estimator, gqa=gqa, alpha=0.7)
    ref = R.scores(q, cache, ip, idx, last, estimator=estimator, gqa=gqa, alpha=0.7)
    assert got.dtype == np.float32 and got.shape == ref.shape
    np.testing.assert_array_equal(np.isinf(got), np.isinf(ref))
    fin = np.isfinite(ref)
    np.testing.assert_allclose(got[fin], ref[fin], rtol=1e-4, atol=1e-5)


def test_score_pages_norm_offset_and_dense():
    cache, ip, idx, last = R.build(LENS)
    q = R.rand_q(len(LENS), 4, 64)
    got = ua.score_pages(q, cache, ip, idx, last, offset="norm", alpha=2.0)
    ref = R.scores(q, cache, ip, idx, last, offset="norm", alpha=2.0)
    fin = np.isfinite(ref)
    np.testing.assert_allclose(got[fin], ref[fin], rtol=1e-4, atol=1e-5)
    dense = ua.score_pages(q, cache, ip, idx, last, estimator="dense")
    assert (dense[fin] == 0).all()


@pytest.mark.parametrize("estimator", ["unique", "quest", "mean", "oracle"])
@pytest.mark.parametrize("budget,sink,recent", [(32, 1, 1), (64, 0, 2), (48, 2, 0)])
def test_select_pages(estimator, budget, sink, recent):
    cache, ip, idx, last = R.build(LENS)
    q = R.rand_q(len(LENS), 4, 64, seed=3)
    pages, counts = ua.select_pages(q, cache, ip, idx, last, budget=budget, estimator=estimator,
                                    sink=sink, recent=recent)
    assert pages.dtype == np.int32 and counts.dtype == np.int32 and counts.shape == (4, 2)
    ref = R.scores(q, cache, ip, idx, last, estimator=estimator)
    check_selection(pages, counts, ref, ip, 16, budget, sink, recent)


def test_select_pages_random_and_dense():
    cache, ip, idx, last = R.build(LENS)
    q = R.rand_q(len(LENS), 4, 64)
    n = np.diff(ip)
    p1, c1 = ua.select_pages(q, cache, ip, idx, last, budget=32, estimator="random", seed=5)
    p2, c2 = ua.select_pages(q, cache, ip, idx, last, budget=32, estimator="random", seed=5)
    np.testing.assert_array_equal(p1, p2)
    for (b, h), ch in R.sel_dict(p1, c1).items():
        assert 0 in ch and n[b] - 1 in ch and len(ch) == min(n[b], 4)
    pd, cd = ua.select_pages(q, cache, ip, idx, last, budget=16, estimator="dense")
    for (b, h), ch in R.sel_dict(pd, cd).items():
        assert ch == list(range(n[b]))


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("estimator", ["unique", "quest"])
@pytest.mark.parametrize("group", [1, 4])
def test_sparse_decode_wrapper(dtype, estimator, group):
    H = 2
    cache, ip, idx, last = R.build(LENS, num_kv_heads=H, dtype=dtype)
    q = R.rand_q(len(LENS), H * group, 64, dtype=dtype)
    w = ua.SparseDecodeWrapper()
    w.plan(ip, idx, last, H * group, H, 64, 16, budget=32, estimator=estimator, sink=1, recent=1)
    out, lse, (pages, counts) = w.run(q, cache, return_lse=True, return_selection=True)
    assert out.dtype == q.dtype and out.shape == q.shape and lse.dtype == np.float32
    ref_s = R.scores(q, cache, ip, idx, last, estimator=estimator)
    check_selection(pages, counts, ref_s, ip, 16, 32)
    ref_out, ref_lse = R.decode(q, cache, ip, idx, last, sel=R.sel_dict(pages, counts))
    tol = 1e-5 if dtype == "float32" else 1e-2
    np.testing.assert_allclose(R.f64(out), ref_out, rtol=tol, atol=tol)
    np.testing.assert_allclose(lse, ref_lse, rtol=1e-5, atol=1e-5)


def test_budget_covering_context_equals_dense():
    cache, ip, idx, last = R.build(LENS, num_kv_heads=2)
    q = R.rand_q(len(LENS), 8, 64)
    sparse, dense = ua.SparseDecodeWrapper(), ua.DenseDecodeWrapper()
    sparse.plan(ip, idx, last, 8, 2, 64, 16, budget=4096)
    dense.plan(ip, idx, last, 8, 2, 64, 16)
    o_s, l_s = sparse.run(q, cache, return_lse=True)
    o_d, l_d = dense.run(q, (cache.k_cache, cache.v_cache), return_lse=True)
    ref_out, ref_lse = R.decode(q, cache, ip, idx, last)
    np.testing.assert_allclose(o_d, ref_out, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(l_d, ref_lse, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(o_s, o_d, rtol=1e-6, atol=1e-6)


def test_dense_wrapper_out_and_sm_scale():
    cache, ip, idx, last = R.build([50, 7], num_kv_heads=1, head_dim=32)
    q = R.rand_q(2, 2, 32)
    w = ua.DenseDecodeWrapper()
    w.plan(ip, idx, last, 2, 1, 32, 16, sm_scale=0.05)
    out = np.full((2, 2, 32), np.nan, dtype=np.float32)
    res = w.run(q, cache, out=out)
    assert res is out
    ref_out, _ = R.decode(q, cache, ip, idx, last, sm_scale=0.05)
    np.testing.assert_allclose(out, ref_out, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="return_selection"):
        w.run(q, cache, return_selection=True)


def test_wrapper_workspace_and_replan():
    cache, ip, idx, last = R.build(LENS)
    q = R.rand_q(4, 2, 64)
    ws = np.zeros(1 << 16, dtype=np.uint8)
    w = ua.SparseDecodeWrapper(ws)
    w.plan(ip, idx, last, 2, 2, 64, 16, budget=32)
    w.run(q, cache)
    assert np.shares_memory(w.selection[0], ws)
    # re-plan for a smaller batch (the first two sequences), same wrapper
    w.plan(ip[:3], idx[:ip[2]], last[:2], 2, 2, 64, 16, budget=32)
    out = w.run(q[:2], cache)
    ref_out, _ = R.decode(q[:2], cache, ip[:3], idx[:ip[2]], last[:2], sel=R.sel_dict(*w.selection))
    np.testing.assert_allclose(out, ref_out, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="workspace_buffer"):
        ua.SparseDecodeWrapper(np.zeros(8, np.uint8)).plan(ip, idx, last, 2, 2, 64, 16, budget=32)


def test_bf16_without_ml_dtypes_is_a_type_error(monkeypatch):
    monkeypatch.setattr(ua._arrays, "_NP_BF16", None)
    with pytest.raises(TypeError, match="ml_dtypes"):
        ua.PagedKVCache.empty(2, 1, 16, 16, dtype="bfloat16")


def test_strided_q_is_accepted():
    cache, ip, idx, last = R.build([40, 20])
    qbig = R.rand_q(2, 4, 128)
    q = qbig[:, :, ::2]  # non-contiguous view
    w = ua.DenseDecodeWrapper()
    w.plan(ip, idx, last, 4, 2, 64, 16)
    ref_out, _ = R.decode(q, cache, ip, idx, last)
    np.testing.assert_allclose(w.run(q, cache), ref_out, rtol=1e-5, atol=1e-5)


def test_version_and_cuda_flags():
    assert ua.__version__
    assert isinstance(ua.cuda_available(), bool) and isinstance(ua.built_with_cuda(), bool)


def test_read_only_inputs():
    cache, ip, idx, last = R.build([40, 20])
    q = R.rand_q(2, 4, 64)
    for a in (q, ip, idx, last):
        a.setflags(write=False)
    w = ua.DenseDecodeWrapper()
    w.plan(ip, idx, last, 4, 2, 64, 16)
    ref_out, _ = R.decode(q, cache, ip, idx, last)
    np.testing.assert_allclose(w.run(q, cache), ref_out, rtol=1e-5, atol=1e-5)
