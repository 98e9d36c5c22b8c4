"""Soft-mask sparsity-aware training attention (python/unique_attn/soft_mask.py) and its
transformers registration (python/unique_attn/hf.py). Skipped without torch (transformers
tests also without transformers). The module is loaded from the package when it imports,
else from the source file, so these tests also run where the extension is not built."""
import importlib.util
import math
import os

import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(HERE, "..", "unique_attn")


def _load(name):
    try:
        import unique_attn  # noqa: F401
        return importlib.import_module("unique_attn." + name)
    except ImportError:
        spec = importlib.util.spec_from_file_location("_ua_" + name, os.path.join(SRC, name + ".py"))
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod


sm = _load("soft_mask")


def rand(B, Hq, Hkv, L, D, dtype=torch.float64, seed=0, grad=True):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, Hq, L, D, generator=g, dtype=dtype)
    k = torch.randn(B, Hkv, L, D, generator=g, dtype=dtype)
    v = torch.randn(B, Hkv, L, D, generator=g, dtype=dtype)
    return [x.requires_grad_(grad) for x in (q, k, v)]


def sdpa_causal(q, k, v):
    g = q.shape[1] // k.shape[1]
    return F.scaled_dot_product_attention(q, k.repeat_interleave(g, 1), v.repeat_interleave(g, 1), is_causal=True)


@pytest.mark.parametrize("Hq,Hkv,sink,recent", [(2, 2, 1, 1), (4, 2, 0, 2), (4, 1, 1, 1)])
def test_gradcheck_float64(Hq, Hkv, sink, recent):
    # the threshold is a stop-gradient: check against the function with tau held fixed
    q, k, v = rand(1, Hq, Hkv, 23, 4, seed=Hq + Hkv)
    P, budget, T = 3, 6, 0.3
    tau = sm.soft_mask_threshold(q, k, P, budget, sink, recent)
    assert tau is not None
    f = lambda q, k, v: sm.soft_mask_attention(q, k, v, P, budget, T, sink, recent, chunk=7, threshold=tau,
                                               backend="torch")
    assert torch.autograd.gradcheck(f, (q, k, v), fast_mode=True)
    # with the threshold computed inside, the gradient equals the fixed-tau one
    out = sm.soft_mask_attention(q, k, v, P, budget, T, sink, recent, chunk=7, backend="torch")
    g1 = torch.autograd.grad(out.square().sum(), (q, k, v))
    out2 = f(q, k, v)
    g2 = torch.autograd.grad(out2.square().sum(), (q, k, v))
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("hard", [False, True])
def test_matches_materialised_reference(hard):
    q, k, v = rand(2, 4, 2, 45, 8, seed=3)
    if hard:
        got = sm.hard_topk_attention(q, k, v, 4, 12, 1, 1, chunk=10)
    else:
        got = sm.soft_mask_attention(q, k, v, 4, 12, 0.2, 1, 1, chunk=10, backend="torch")
    ref = sm.reference_attention(q, k, v, 4, 12, 0.2, 1, 1, hard=hard)
    torch.testing.assert_close(got, ref)
    if not hard:  # gradients too (autograd through the materialised reference)
        ga = torch.autograd.grad(got.sum(), (q, k, v))
        gb = torch.autograd.grad(ref.sum(), (q, k, v))
        for a, b in zip(ga, gb):
            torch.testing.assert_close(a, b)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_budget_ge_context_is_causal_sdpa(dtype):
    q, k, v = rand(2, 4, 2, 50, 16, dtype=dtype, seed=1)
    out = sm.soft_mask_attention(q, k, v, page_size=8, budget=64, temperature=0.1, backend="torch")
    tol = dict(rtol=2e-2, atol=2e-2) if dtype == torch.bfloat16 else {}
    torch.testing.assert_close(out, sdpa_causal(q, k, v), **tol)
    hard = sm.hard_topk_attention(q, k, v, page_size=8, budget=64)
    torch.testing.assert_close(hard, sdpa_causal(q, k, v), **tol)


def test_small_temperature_is_hard_topk():
    q, k, v = rand(1, 4, 2, 64, 8, seed=5, grad=False)
    soft = sm.soft_mask_attention(q, k, v, 4, 8, 1e-7, 1, 1, backend="torch")
    hard = sm.hard_topk_attention(q, k, v, 4, 8, 1, 1)
    torch.testing.assert_close(soft, hard, rtol=1e-6, atol=1e-6)
    # and a sparse result differs from dense
    assert (hard - sdpa_causal(q, k, v)).abs().max() > 1e-3


def test_k_gradient_through_page_stats():
    """The soft mask sends gradient into k through mu and sigma: compared with the same
    attention with a frozen bias (mask values held constant), dk differs."""
    q, k, v = rand(1, 2, 2, 40, 8, seed=7)
    P, budget, T = 4, 8, 0.5
    out = sm.soft_mask_attention(q, k, v, P, budget, T, 1, 1, backend="torch")
    dk = torch.autograd.grad(out.square().sum(), k)[0]
    with torch.no_grad():
        bias = sm.page_bias(q, k, P, budget, T, 1, 1)
    # frozen mask: materialised attention with the bias as a constant
    scale = 1 / math.sqrt(8)
    z = q @ k.transpose(-1, -2) * scale + sm._key_bias(bias, P, 40)
    z = z.masked_fill(torch.ones(40, 40, dtype=torch.bool).triu(1), float("-inf"))
    out2 = torch.softmax(z, -1) @ v
    torch.testing.assert_close(out, out2)
    dk2 = torch.autograd.grad(out2.square().sum(), k)[0]
    diff = (dk - dk2).abs().max()
    assert diff > 1e-3 * dk.abs().max()
    # the difference is exactly the gradient through the page scores (mu and sigma)
    kk = k.detach().requires_grad_(True)
    b = sm.page_bias(q.detach(), kk, P, budget, T, 1, 1)
    assert b.requires_grad


def test_estimators_and_sparse_from():
    q, k, v = rand(1, 2, 2, 48, 8, seed=9, grad=False)
    outs = {e: sm.hard_topk_attention(q, k, v, 4, 8, estimator=e) for e in sm.ESTIMATORS}
    for e, o in outs.items():
        assert torch.isfinite(o).all(), e
    dense = sdpa_causal(q, k, v)
    o = sm.hard_topk_attention(q, k, v, 4, 8, sparse_from=30)
    torch.testing.assert_close(o[:, :, :30], dense[:, :, :30])
    torch.testing.assert_close(o[:, :, 30:], outs["unique"][:, :, 30:])


def test_decode_shape_q_shorter_than_k():
    q, k, v = rand(1, 4, 2, 37, 8, seed=11, grad=False)
    full = sm.soft_mask_attention(q, k, v, 4, 8, 0.2, backend="torch")
    last = sm.soft_mask_attention(q[:, :, -3:], k, v, 4, 8, 0.2, backend="torch")
    torch.testing.assert_close(last, full[:, :, -3:])


def test_errors():
    q, k, v = rand(1, 3, 2, 16, 8, grad=False)
    with pytest.raises(ValueError, match="q heads"):
        sm.soft_mask_attention(q, k, v, 4, 8)
    q, k, v = rand(1, 2, 2, 16, 8, grad=False)
    with pytest.raises(ValueError, match="budget"):
        sm.soft_mask_attention(q, k, v, 4, 2)
    with pytest.raises(ValueError, match="temperature"):
        sm.soft_mask_attention(q, k, v, 4, 8, temperature=0)
    with pytest.raises(ValueError, match="recent"):
        sm.hard_topk_attention(q, k, v, 4, 8, recent=0)
    with pytest.raises(ValueError, match="estimator"):
        sm.hard_topk_attention(q, k, v, 4, 8, estimator="oracle")


@pytest.mark.skipif(not (torch.cuda.is_available() and sm.cuda_kernels_available()),
                    reason="needs a GPU and the extension's soft-mask kernels")
@pytest.mark.gpu
def test_cuda_kernels_match_torch():
    q, k, v = [x.detach().cuda().to(torch.bfloat16).requires_grad_(True) for x in rand(2, 8, 2, 300, 64, seed=2)]
    outs, grads = [], []
    for be in ("torch", "cuda"):
        o = sm.soft_mask_attention(q, k, v, 16, 64, 0.1, 1, 1, backend=be)
        g = torch.autograd.grad(o.float().square().sum(), (q, k, v))
        outs.append(o.float())
        grads.append([x.float() for x in g])
    torch.testing.assert_close(outs[0], outs[1], rtol=2e-2, atol=2e-2)
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=5e-2, atol=5e-2)


@pytest.mark.skipif(not (torch.cuda.is_available() and sm.cuda_kernels_available()),
                    reason="needs a GPU and the extension's soft-mask kernels")
@pytest.mark.gpu
def test_cuda_autocast_runs_the_kernels(monkeypatch):
    # What transformers' Llama hands the attention under bf16 autocast: fp32 q / k (after RoPE),
    # bf16 v. The kernels must run on the autocast dtype, not the fp32 torch path.
    q, k, v = [x.detach().cuda() for x in rand(2, 4, 2, 200, 64, dtype=torch.float32, seed=5)]
    q.requires_grad_(True)
    k.requires_grad_(True)
    v = v.to(torch.bfloat16).requires_grad_(True)
    calls = []
    real = sm._cuda_forward
    monkeypatch.setattr(sm, "_cuda_forward", lambda *a: calls.append(1) or real(*a))
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = sm.soft_mask_attention(q, k, v, 16, 64, 0.1)
    assert calls, "the CUDA kernels did not run under autocast"
    assert out.dtype == torch.bfloat16
    ref = sm.soft_mask_attention(q.detach().bfloat16(), k.detach().bfloat16(), v.detach(), 16, 64, 0.1, backend="cuda")
    torch.testing.assert_close(out, ref)
    out.float().square().sum().backward()
    assert q.grad.dtype == torch.float32 and torch.isfinite(q.grad).all() and q.grad.abs().sum() > 0
    assert torch.isfinite(k.grad).all() and torch.isfinite(v.grad).all()


@pytest.mark.skipif(not (torch.cuda.is_available() and sm.cuda_kernels_available()),
                    reason="needs a GPU and the extension's soft-mask kernels")
@pytest.mark.gpu
def test_cuda_kernel_choice():
    # The wheel is built for 90a (and 80): on a Hopper GPU the wgmma kernels must be the ones
    # that run (a build that left out UNIQUE_CUDA_SM90A ran the mma.sync ones everywhere).
    want = "wgmma" if torch.cuda.get_device_capability()[0] == 9 else "mma"
    assert sm.cuda_kernel(64) == want and sm.cuda_kernel(128) == want


def _tiny_llama(impl):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    torch.manual_seed(0)
    m = transformers.LlamaForCausalLM(cfg).to(torch.float32)
    m.config._attn_implementation = impl
    return m


def test_transformers_registration():
    pytest.importorskip("transformers")
    hf = _load("hf")
    hf.register_transformers()
    ids = torch.randint(0, 64, (2, 80), generator=torch.Generator().manual_seed(0))
    dense = _tiny_llama("sdpa")
    ref = dense(ids).logits
    m = _tiny_llama("unique_soft_mask")
    m.load_state_dict(dense.state_dict())
    # budget >= context: equals dense
    with hf.soft_mask_options(page_size=8, budget=128, temperature=0.1):
        out = m(ids).logits
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    # sparse: differs, trains (forward + backward), config attributes work too
    m.config.unique_page_size, m.config.unique_budget, m.config.unique_temperature = 8, 16, 0.2
    out = m(ids, labels=ids)
    assert (out.logits - ref).abs().max() > 1e-4
    out.loss.backward()
    g = m.model.layers[0].self_attn.k_proj.weight.grad
    assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0
    # hard top-k through the same registration
    with hf.soft_mask_options(mode="hard", estimator="quest"):
        h = m(ids).logits
    assert torch.isfinite(h).all()
    # an all-ones attention mask is fine; padding is rejected, not silently ignored
    ones = torch.ones_like(ids)
    torch.testing.assert_close(m(ids, attention_mask=ones).logits, m(ids).logits)
    pad = ones.clone()
    pad[0, :5] = 0
    with pytest.raises(ValueError, match="padding"):
        m(ids, attention_mask=pad)


def test_autocast_keeps_fp32_math():
    q, k, v = rand(1, 2, 2, 64, 16, dtype=torch.float32, seed=13)
    ref = sm.soft_mask_attention(q, k, v, 8, 16, 0.2, backend="torch")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = sm.soft_mask_attention(q, k, v, 8, 16, 0.2, backend="torch")
        out.sum().backward()
    torch.testing.assert_close(out, ref)
    assert q.grad is not None and torch.isfinite(q.grad).all()


def test_transformers_generate_with_cache():
    """Greedy generation with a KV cache through the registration (queries shorter than keys)."""
    pytest.importorskip("transformers")
    hf = _load("hf")
    hf.register_transformers()
    dense = _tiny_llama("sdpa")
    m = _tiny_llama("unique_soft_mask")
    m.load_state_dict(dense.state_dict())
    ids = torch.randint(0, 64, (1, 40), generator=torch.Generator().manual_seed(1))
    ref = dense.generate(ids, max_new_tokens=8, do_sample=False)
    for mode in ("dense", "hard"):
        with hf.soft_mask_options(mode=mode, page_size=8, budget=256):
            out = m.generate(ids, max_new_tokens=8, do_sample=False)
        assert torch.equal(out, ref), mode


@pytest.mark.skipif(not hasattr(getattr(sm, "_core", None), "soft_mask_forward"),
                    reason="needs unique_attn._core with soft_mask_forward (the library's float64 reference)")
@pytest.mark.parametrize("Hq,Hkv,P,budget,sink,recent,T", [(2, 2, 4, 8, 1, 1, 0.3), (4, 2, 4, 12, 0, 2, 0.1),
                                                           (4, 1, 8, 16, 1, 1, 0.05)])
def test_matches_library_reference(Hq, Hkv, P, budget, sink, recent, T):
    """The torch path against the C++ float64 reference (_core on CPU), forward and backward."""
    import types
    q, k, v = rand(2, Hq, Hkv, 53, 16, seed=Hq * 7 + P)
    out = sm.soft_mask_attention(q, k, v, P, budget, T, sink, recent, backend="torch")
    dout = torch.randn_like(out)
    gq, gk, gv = torch.autograd.grad(out, (q, k, v), dout)
    ctx = types.SimpleNamespace(P=P, budget=budget, sink=sink, recent=recent, T=T, alpha=1.0,
                                scale=1 / math.sqrt(16), device=q.device)
    f32 = [x.detach().float() for x in (q, k, v)]  # the library takes fp32/fp16/bf16 arrays
    with torch.no_grad():
        ref_out, ref_lse, ref_tau = sm._cuda_forward(ctx, *f32)  # CPU arrays: the float64 reference
        tol = dict(rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(out.float(), ref_out.transpose(1, 2), **tol)
        dq, dk, dv = sm._cuda_backward(ctx, *f32, ref_out, ref_lse, ref_tau, dout.float().contiguous())
    torch.testing.assert_close(gq.float(), dq, **tol)
    torch.testing.assert_close(gk.float(), dk, **tol)
    torch.testing.assert_close(gv.float(), dv, **tol)
