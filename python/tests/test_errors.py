"""Bad input raises ValueError / TypeError / RuntimeError naming the argument."""
import numpy as np
import pytest

import reference as R
import unique_attn as ua


@pytest.fixture(scope="module")
def setup():
    cache, ip, idx, last = R.build([40, 20], num_kv_heads=2, quest=False)
    return cache, ip, idx, last, R.rand_q(2, 4, 64)


def planned(setup, **kw):
    cache, ip, idx, last, q = setup
    w = ua.SparseDecodeWrapper()
    w.plan(ip, idx, last, 4, 2, 64, 16, **{"budget": 32, **kw})
    return w


def test_run_before_plan(setup):
    with pytest.raises(RuntimeError, match="plan"):
        ua.SparseDecodeWrapper().run(setup[4], setup[0])


@pytest.mark.parametrize("kw,match", [
    (dict(budget=8), "budget_tokens"),
    (dict(sink=-1), "sink_pages"),
    (dict(recent=-2), "recent_pages"),
    (dict(estimator="best"), "estimator"),
    (dict(gqa="mean"), "gqa"),
    (dict(offset="diag"), "offset"),
    (dict(alpha=float("nan")), "alpha"),
    (dict(sm_scale=-1.0), "sm_scale"),
])
def test_bad_config(setup, kw, match):
    with pytest.raises(ValueError, match=match):
        planned(setup, **kw)


@pytest.mark.parametrize("which,value,match", [
    ("ip", [1, 3, 5], r"page_indptr\[0\]"),
    ("ip", [0, 3, 3], "empty sequence"),
    ("ip", [0], "page_indptr"),
    ("last", [17, 4], r"last_page_len\[0\]"),
    ("last", [0, 4], r"last_page_len\[0\]"),
    ("last", [5], "last_page_len"),
    ("idx", [0, 1], "page_indices"),
    ("idx", [0, 1, 2, -4, 1], r"page_indices\[3\]"),
])
def test_bad_page_table(setup, which, value, match):
    cache, ip, idx, last, q = setup
    args = dict(ip=ip, idx=idx, last=last)
    args[which] = np.array(value)
    w = ua.SparseDecodeWrapper()
    with pytest.raises(ValueError, match=match):
        w.plan(args["ip"], args["idx"], args["last"], 4, 2, 64, 16, budget=32)


def test_page_id_past_cache(setup):
    cache, ip, idx, last, q = setup
    bad = idx.copy()
    bad[1] = cache.num_pages + 3
    with pytest.raises(ValueError, match=r"page_indices\[1\]"):
        ua.select_pages(q, cache, ip, bad, last, budget=32)
    w = ua.SparseDecodeWrapper()
    w.plan(ip, bad, last, 4, 2, 64, 16, budget=32)  # the plan does not know the cache
    with pytest.raises(ValueError, match=r"page_indices\[1\]"):
        w.run(q, cache)


def test_float_page_table_is_type_error(setup):
    cache, ip, idx, last, q = setup
    with pytest.raises(TypeError, match="page_indptr"):
        ua.SparseDecodeWrapper().plan(ip.astype(np.float32) + 0.5, idx, last, 4, 2, 64, 16, budget=32)


def test_bad_heads(setup):
    cache, ip, idx, last, q = setup
    with pytest.raises(ValueError, match="num_qo_heads"):
        ua.SparseDecodeWrapper().plan(ip, idx, last, 3, 2, 64, 16, budget=32)


def test_bad_q(setup):
    cache, ip, idx, last, q = setup
    w = planned(setup)
    with pytest.raises(ValueError, match="q: expected shape"):
        w.run(q[:1], cache)
    with pytest.raises(ValueError, match="q: expected shape"):
        w.run(q[:, :2], cache)
    with pytest.raises(TypeError, match="q: expected dtype"):
        w.run(q.astype(np.float64), cache)
    with pytest.raises(TypeError, match="q: expected a torch.Tensor or numpy.ndarray"):
        w.run(q.tolist(), cache)


def test_bad_out_and_lse(setup):
    cache, ip, idx, last, q = setup
    w = planned(setup)
    with pytest.raises(ValueError, match="out"):
        w.run(q, cache, out=np.empty((2, 4, 32), np.float32))
    with pytest.raises(TypeError, match="lse"):
        w.run(q, cache, lse=np.empty((2, 4), np.float16), return_lse=True)
    with pytest.raises(ValueError, match="lse"):
        w.run(q, cache, lse=np.empty((2, 3), np.float32), return_lse=True)


def test_cache_mismatch(setup):
    cache, ip, idx, last, q = setup
    w = planned(setup)
    other = ua.PagedKVCache.empty(cache.num_pages, 2, 32, 64)
    with pytest.raises(ValueError, match="kv_cache"):
        w.run(q, other)
    with pytest.raises(TypeError, match="kv_cache"):
        w.run(q, "cache")


def test_missing_stats(setup):
    cache, ip, idx, last, q = setup
    with pytest.raises(ValueError, match="kmin"):
        ua.select_pages(q, cache, ip, idx, last, budget=32, estimator="quest")
    w = planned(setup)
    with pytest.raises(ValueError, match="mean"):
        w.run(q, (cache.k_cache, cache.v_cache))


def test_bad_cache_tensors():
    k = np.zeros((4, 2, 16, 64), np.float32)
    with pytest.raises(ValueError, match="v_cache"):
        ua.PagedKVCache(k, np.zeros((4, 2, 16, 32), np.float32))
    with pytest.raises(ValueError, match="k_cache"):
        ua.PagedKVCache(k[0], k[0])
    with pytest.raises(ValueError, match="mean/std"):
        ua.PagedKVCache(k, k, mean=np.zeros((4, 2, 64), np.float32))
    cache = ua.PagedKVCache(k, k.astype(np.float16), np.zeros((4, 2, 64), np.float32),
                            np.zeros((4, 2, 64), np.float32))
    with pytest.raises(TypeError, match="v_cache"):
        ua.select_pages(np.zeros((1, 2, 64), np.float32), cache, [0, 1], [0], [3])
    strided = np.zeros((4, 2, 16, 128), np.float32)[..., ::2]
    cache = ua.PagedKVCache(strided, strided)
    w = ua.DenseDecodeWrapper()
    w.plan([0, 1], [0], [3], 2, 2, 64, 16)
    with pytest.raises(ValueError, match="k_cache: expected a contiguous"):
        w.run(np.zeros((1, 2, 64), np.float32), cache)
    cache = ua.PagedKVCache(k, k, np.zeros((4, 2, 64), np.float32), np.zeros((4, 2, 64), np.float16))
    with pytest.raises(TypeError, match="std"):
        ua.select_pages(np.zeros((1, 2, 64), np.float32), cache, [0, 1], [0], [3])
    with pytest.raises(TypeError, match="dtype"):
        ua.PagedKVCache.empty(2, 1, 16, 16, dtype="int8")


def test_bad_append():
    cache = ua.PagedKVCache.empty(4, 2, 16, 32)
    k = np.zeros((5, 2, 32), np.float32)
    with pytest.raises(ValueError, match="append_indptr"):
        cache.append(k, k, [0, 5, 6], [0, 1], [0], [5])
    with pytest.raises(ValueError, match="tokens appended to sequence 0"):
        cache.append(k, k, [0, 5], [0, 1], [0], [4])
    with pytest.raises(ValueError, match="k: expected shape"):
        cache.append(k[:, :1], k, [0, 5], [0, 1], [0], [5])
    with pytest.raises(TypeError, match="v: expected dtype"):
        cache.append(k, k.astype(np.int32), [0, 5], [0, 1], [0], [5])
    big = np.random.default_rng(0).standard_normal((5, 2, 64)).astype(np.float32)
    cache.append(big[..., ::2], k, [0, 5], [0, 1], [0], [5])  # strided input is copied
    np.testing.assert_array_equal(cache.k_cache[0, :, :5], big[..., ::2].transpose(1, 0, 2))
    with pytest.raises(ValueError, match=r"page_indices\[0\]"):
        cache.append(k, k, [0, 5], [0, 1], [7], [5])


def test_failed_replan_keeps_the_plan(setup):
    cache, ip, idx, last, q = setup
    w = planned(setup)
    before = w.run(q, cache).copy()
    with pytest.raises(ValueError, match="last_page_len"):
        w.plan(ip, idx, np.array([0, 4]), 4, 2, 64, 16, budget=32)
    np.testing.assert_array_equal(w.run(q, cache), before)
