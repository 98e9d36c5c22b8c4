// CUDA prefill (UniSparse selection + block-sparse causal attention) against the CPU
// reference: page size, head dim, GQA group, KV dtype, block and pool sizes, chunks that
// start mid-block, partial last pages, top_p below and at 1; outputs poisoned first.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

#include "cuda/prefill_kernels.h"
#include "gpu/gpu_test_util.h"
#include "test_util.h"
#include "unique/prefill.h"
#include "unique/unique.h"

namespace unique::test {
namespace {

struct Case {
  int P, D, group;
  DType dt;
  int block, pool;
  int64_t L, q_len;
  float top_p;
  int top_k = 0;  // > 0: the fixed top-k rule (AttentionConfig::prefill_top_k) instead of top_p
};

std::string case_str(const Case& c) {
  return detail::concat("P", c.P, " D", c.D, " g", c.group, " ", to_string(c.dt), " block", c.block, " pool", c.pool,
                        " L", c.L, " q_len", c.q_len, " top_p", c.top_p, " top_k", c.top_k);
}

struct PrefillSetup {
  CacheCase cc;
  int Hq;
  Buf q;  // [q_len, Hq, D] in the KV dtype (the device sees the same values)
  AttentionConfig cfg;
  PrefillBlocks pb;
};

PrefillSetup make_setup(const Case& c, uint64_t seed) {
  CaseSpec s;
  s.lens = {c.L};
  s.page_size = c.P;
  s.head_dim = c.D;
  s.num_kv_heads = 2;
  s.dtype = c.dt;
  s.max_chunk = 257;
  PrefillSetup st{make_case(s, seed), 2 * c.group, Buf(c.dt, size_t(c.q_len) * 2 * c.group * c.D), {}, {}};
  Rng r(seed + 7);
  // Queries lean on the key model's direction (a few pages carry it) so attention has structure.
  for (int64_t t = 0; t < c.q_len; ++t)
    for (int hq = 0; hq < st.Hq; ++hq)
      for (int d = 0; d < c.D; ++d)
        st.q.set((t * st.Hq + hq) * c.D + d, 0.4f * st.cc.models[hq / c.group].dir[d] + r.normal());
  st.cfg.page_size = c.P;
  st.cfg.prefill_block = c.block;
  st.cfg.pool = c.pool;
  st.cfg.top_p = c.top_p;
  st.cfg.prefill_top_k = c.top_k;
  st.pb = prefill_blocks(st.cfg, c.q_len, c.L);
  return st;
}

struct HostSel {
  std::vector<int32_t> blocks, counts;
  BlockSelection sel;
  HostSel(int hq, const PrefillBlocks& pb)
      : blocks(size_t(hq) * pb.num_q_blocks * pb.num_kv_blocks, kSentinel), counts(size_t(hq) * pb.num_q_blocks, kSentinel) {
    sel = {blocks.data(), counts.data(), hq, pb.num_q_blocks, pb.num_kv_blocks, Device::cpu};
  }
};

// A GPU selection is a top-p selection of the reference masses up to rounding: forced
// blocks kept, ascending ids, padding; every kept optional block at least as heavy as every
// dropped one (within tol); the kept mass reaches top_p (within tol) unless nothing was
// dropped; and it is minimal: without its lightest optional block it would not reach top_p.
// A fixed top-k (top_k > 0) keeps min(top_k, qb + 1) blocks instead, by the same order.
void expect_top_p_selection(const HostSel& got, const std::vector<float>& mass, const PrefillBlocks& pb, int Hq,
                            float top_p, int top_k, float tol) {
  for (int hq = 0; hq < Hq; ++hq)
    for (int i = 0; i < pb.num_q_blocks; ++i) {
      const int qb = pb.first_q_block + i;
      const size_t r = size_t(hq) * pb.num_q_blocks + i;
      const int c = got.counts[r];
      ASSERT_TRUE(c >= 1 && c <= qb + 1) << "count " << c << " hq " << hq << " qb " << qb;
      std::vector<char> kept(qb + 1, 0);
      const int32_t* b = got.blocks.data() + r * pb.num_kv_blocks;
      for (int j = 0; j < pb.num_kv_blocks; ++j) {
        if (j >= c) {
          ASSERT_EQ(b[j], -1) << "padding";
          continue;
        }
        ASSERT_TRUE(b[j] >= 0 && b[j] <= qb) << "block " << b[j];
        if (j) {
          ASSERT_GT(b[j], b[j - 1]) << "not ascending";
        }
        kept[b[j]] = 1;
      }
      ASSERT_TRUE(kept[0] && kept[qb]) << "forced blocks, hq " << hq << " qb " << qb;
      const float* m = mass.data() + r * pb.num_kv_blocks;
      double cum = 0, lightest = INFINITY, heaviest_dropped = -INFINITY;
      for (int kb = 0; kb <= qb; ++kb) {
        if (kept[kb]) cum += m[kb];
        if (kb == 0 || kb == qb) continue;
        if (kept[kb]) lightest = std::min<double>(lightest, m[kb]);
        else heaviest_dropped = std::max<double>(heaviest_dropped, m[kb]);
      }
      if (top_k == 0 && top_p >= 1.0f) {
        EXPECT_EQ(c, qb + 1);
        continue;
      }
      EXPECT_GE(lightest + tol, heaviest_dropped) << "hq " << hq << " qb " << qb;
      if (top_k > 0) {
        EXPECT_EQ(c, std::min(top_k, qb + 1)) << "hq " << hq << " qb " << qb;
        continue;
      }
      if (c < qb + 1) {
        EXPECT_GE(cum + tol, top_p) << "hq " << hq << " qb " << qb;
      }
      if (std::isfinite(lightest)) {
        EXPECT_LT(cum - lightest, top_p + tol) << "not minimal: hq " << hq << " qb " << qb;
      }
    }
}

void expect_close(const Buf& got, const Buf& want, int64_t rows, int D, float tol, const char* what) {
  int bad = 0;
  for (int64_t r = 0; r < rows; ++r) {
    double rms = 0;
    for (int d = 0; d < D; ++d) rms += double(want.get(r * D + d)) * want.get(r * D + d);
    rms = std::sqrt(rms / D);
    for (int d = 0; d < D; ++d) {
      const float g = got.get(r * D + d), w = want.get(r * D + d);
      if (!(std::fabs(g - w) <= tol * (std::fabs(w) + rms) + 1e-6) && ++bad <= 8)
        ADD_FAILURE() << what << " row " << r << " d " << d << ": gpu " << g << " ref " << w;
    }
  }
  EXPECT_EQ(bad, 0) << what;
}

float tol_for(DType t) { return t == DType::f16 ? 4e-3f : 2.5e-2f; }

void run_case(const Case& c, uint64_t seed) {
  SCOPED_TRACE(case_str(c) + " seed " + std::to_string(seed));
  PrefillSetup st = make_setup(c, seed);
  const PagedKV hkv = st.cc.kv();
  DevKV dkv(hkv);
  const int Hq = st.Hq, D = c.D;
  const PrefillBlocks& pb = st.pb;
  const TensorView hq_view = st.q.view({c.q_len, Hq, D});
  Dev dq(st.q.data(), st.q.bytes.size());
  const TensorView dq_view = dview(dq, c.dt, {c.q_len, Hq, D});

  // Selection: GPU vs the reference masses.
  std::vector<float> mass(size_t(Hq) * pb.num_q_blocks * pb.num_kv_blocks);
  ref::prefill_block_mass(st.cfg, hq_view, hkv, 0, c.L, false,
                          make_view(mass.data(), DType::f32, {Hq, pb.num_q_blocks, pb.num_kv_blocks}));
  HostSel ref_sel(Hq, pb), gpu_sel(Hq, pb);
  ref::select_prefill_blocks(st.cfg, hq_view, hkv, 0, c.L, ref_sel.sel);
  Dev db(ref_sel.blocks.size() * 4), dc(ref_sel.counts.size() * 4);
  db.poison();
  dc.poison();
  BlockSelection dsel{db.as<int32_t>(), dc.as<int32_t>(), Hq, pb.num_q_blocks, pb.num_kv_blocks, Device::cuda};
  select_prefill_blocks(st.cfg, dq_view, dkv.kv, 0, c.L, dsel);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  db.down(gpu_sel.blocks.data(), db.n);
  dc.down(gpu_sel.counts.data(), dc.n);
  // Pooled composite tokens are rounded to the KV dtype on the GPU: masses move by ~1e-3.
  expect_top_p_selection(gpu_sel, mass, pb, Hq, c.top_p, c.top_k, c.dt == DType::f16 ? 2e-3f : 1e-2f);

  // Attention over the reference selection and dense, outputs f32 and the KV dtype.
  db.up(ref_sel.blocks.data(), db.n);
  dc.up(ref_sel.counts.data(), dc.n);
  for (const bool sparse : {true, false}) {
    const BlockSelection* hs = sparse ? &ref_sel.sel : nullptr;
    const BlockSelection* ds = sparse ? &dsel : nullptr;
    Buf want(DType::f32, size_t(c.q_len) * Hq * D), want_lse(DType::f32, size_t(c.q_len) * Hq);
    ref::sparse_prefill(st.cfg, hq_view, hkv, 0, c.L, hs, want.view({c.q_len, Hq, D}), want_lse.view({c.q_len, Hq}));
    for (DType ot : {DType::f32, c.dt}) {
      SCOPED_TRACE(std::string(sparse ? "sparse" : "dense") + " out " + to_string(ot));
      Dev dout(size_t(c.q_len) * Hq * D * dtype_size(ot)), dlse(size_t(c.q_len) * Hq * 4);
      dout.poison();
      dlse.poison();
      sparse_prefill(st.cfg, dq_view, dkv.kv, 0, c.L, ds, dview(dout, ot, {c.q_len, Hq, D}),
                     dview(dlse, DType::f32, {c.q_len, Hq}));
      ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      Buf got(ot, size_t(c.q_len) * Hq * D), got_lse(DType::f32, size_t(c.q_len) * Hq);
      dout.down(got.data(), dout.n);
      dlse.down(got_lse.data(), dlse.n);
      expect_close(got, want, c.q_len * Hq, D, tol_for(c.dt) + (ot == DType::f32 ? 0.0f : 8e-3f), "out");
      for (size_t i = 0; i < got_lse.size(); ++i)
        ASSERT_NEAR(got_lse.get(i), want_lse.get(i), 2e-2 * (1 + std::fabs(want_lse.get(i)))) << "lse " << i;
    }
  }
  // top_p = 1 (or a top-k above the block count): the GPU keeps everything and the sparse
  // attention is the dense one, bit for bit.
  if (st.cfg.prefill_keeps_all() || c.top_k >= pb.num_kv_blocks) {
    Dev a(size_t(c.q_len) * Hq * D * 4), b(size_t(c.q_len) * Hq * D * 4);
    a.poison();
    b.poison();
    select_prefill_blocks(st.cfg, dq_view, dkv.kv, 0, c.L, dsel);
    sparse_prefill(st.cfg, dq_view, dkv.kv, 0, c.L, &dsel, dview(a, DType::f32, {c.q_len, Hq, D}), TensorView{});
    sparse_prefill(st.cfg, dq_view, dkv.kv, 0, c.L, nullptr, dview(b, DType::f32, {c.q_len, Hq, D}), TensorView{});
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    std::vector<float> ha(a.n / 4), hb(b.n / 4);
    a.down(ha.data(), a.n);
    b.down(hb.data(), b.n);
    EXPECT_EQ(ha, hb);
  }
}

class GpuPrefillSweep : public ::testing::TestWithParam<Case> {};

// UNIQUE_PREFILL_KERNEL (and UNIQUE_PREFILL_SELECT_SPLIT) for one scope.
struct KernelChoice : ScopedEnv {
  explicit KernelChoice(const char* k, const char* split = nullptr)
      : ScopedEnv({{"UNIQUE_PREFILL_KERNEL", k}, {"UNIQUE_PREFILL_SELECT_SPLIT", split}}) {}
};

// Every case through both attention kernels: the default (wgmma on sm_90; its selection with
// one key split at these lengths, and forced to two, which it picks on its own only above
// ~125K tokens) and mma.sync.
TEST_P(GpuPrefillSweep, MatchesReference) {
  SKIP_WITHOUT_GPU();
  const Case c = GetParam();
  for (const auto& [kernel, split] : {std::pair<const char*, const char*>{"auto", nullptr}, {"auto", "2"}, {"mma", nullptr}}) {
    SCOPED_TRACE(std::string("UNIQUE_PREFILL_KERNEL=") + kernel + (split ? " UNIQUE_PREFILL_SELECT_SPLIT=2" : ""));
    KernelChoice choice(kernel, split);
    run_case(c, case_seed(97, ((uint64_t(c.P) * 1000 + c.D) * 100 + c.group) * 1000 + c.block + int(c.dt) +
                                  uint64_t(c.L) * 7 + uint64_t(c.top_p * 100) + uint64_t(c.top_k) * 13));
  }
}

// On an sm_90 device the default is the wgmma kernel (so the sweep above tests it), and a
// request for it where it cannot run is an error naming the reason.
TEST(GpuPrefill, KernelChoice) {
  SKIP_WITHOUT_GPU();
  int dev = 0, major = 0;
  ASSERT_EQ(cudaGetDevice(&dev), cudaSuccess);
  ASSERT_EQ(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev), cudaSuccess);
#ifdef UNIQUE_CUDA_SM90A
  EXPECT_STREQ(cuda::prefill_attention_kernel(128, 131072, true), major == 9 ? "wgmma" : "mma");
#endif
  {
    KernelChoice choice("mma");
    EXPECT_STREQ(cuda::prefill_attention_kernel(128, 4096, false), "mma");
  }
  {
    KernelChoice choice("fastest");
    EXPECT_ERROR_MSG(cuda::prefill_attention_kernel(128, 4096, false), "UNIQUE_PREFILL_KERNEL", "auto, mma or wgmma",
                     "fastest");
  }
  if (major != 9) {
    KernelChoice choice("wgmma");
    EXPECT_ERROR_MSG(cuda::prefill_attention_kernel(128, 4096, false), "UNIQUE_PREFILL_KERNEL", "wgmma:");
  }
}

std::vector<Case> sweep() {
  std::vector<Case> v;
  for (int P : {16, 64})
    for (int D : {64, 128})
      for (int g : {1, 4})
        for (DType t : {DType::bf16, DType::f16}) {
          // whole prompt, block 64 / pool 8; a chunk starting mid-block, block 128 / pool 8;
          // a chunk with pool 4 and a partial last page; everything kept.
          v.push_back({P, D, g, t, 64, 8, 400, 400, 0.9f});
          v.push_back({P, D, g, t, 128, 8, 709, 201, 0.95f});
          v.push_back({P, D, g, t, 64, 4, 499, 300, 0.5f});
          v.push_back({P, D, g, t, 64, 8, 333, 200, 1.0f});
        }
  // The fixed top-k baseline: 3 blocks per query block, and more blocks than there are.
  for (DType t : {DType::bf16, DType::f16}) {
    v.push_back({16, 128, 4, t, 64, 8, 400, 400, 0.9f, 3});
    v.push_back({64, 64, 1, t, 128, 8, 709, 201, 0.5f, 1000});
  }
  // Long sequences: many key tiles and a large sort (780 blocks); GQA 8.
  v.push_back({16, 128, 8, DType::bf16, 64, 8, 50001, 40, 0.9f});
  v.push_back({16, 128, 8, DType::bf16, 64, 8, 50001, 40, 0.9f, 100});
  v.push_back({32, 64, 2, DType::f16, 128, 16, 30000, 129, 0.95f});
  return v;
}
std::string name(const ::testing::TestParamInfo<Case>& i) {
  const Case& c = i.param;
  return detail::concat("P", c.P, "_D", c.D, "_g", c.group, "_", to_string(c.dt), "_B", c.block, "_pool", c.pool,
                        "_L", c.L, "_q", c.q_len, "_p", int(c.top_p * 100), c.top_k ? detail::concat("_k", c.top_k) : "");
}
INSTANTIATE_TEST_SUITE_P(Sweep, GpuPrefillSweep, ::testing::ValuesIn(sweep()), name);

TEST(GpuPrefill, BadInputIsRejectedBeforeLaunch) {
  SKIP_WITHOUT_GPU();
  PrefillSetup st = make_setup({16, 64, 2, DType::bf16, 64, 8, 200, 100, 0.9f}, 3);
  DevKV dkv(st.cc.kv());
  Dev dq(st.q.data(), st.q.bytes.size()), out(size_t(100) * 4 * 64 * 4);
  const TensorView q = dview(dq, DType::bf16, {100, 4, 64});
  const TensorView o = dview(out, DType::f32, {100, 4, 64});
  AttentionConfig cfg = st.cfg;
  cfg.prefill_block = 32;
  EXPECT_ERROR_MSG(sparse_prefill(cfg, q, dkv.kv, 0, 200, nullptr, o, {}), "prefill_block", "multiple of 64", "32");
  cfg = st.cfg;
  cfg.pool = 2;
  Dev db(size_t(4) * 2 * 4 * 4), dc(size_t(4) * 2 * 4);
  const PrefillBlocks pb = prefill_blocks(cfg, 100, 200);
  BlockSelection sel{db.as<int32_t>(), dc.as<int32_t>(), 4, pb.num_q_blocks, pb.num_kv_blocks, Device::cuda};
  EXPECT_ERROR_MSG(select_prefill_blocks(cfg, q, dkv.kv, 0, 200, sel), "pool", "2");
  EXPECT_ERROR_MSG(sparse_prefill(st.cfg, q, dkv.kv, 0, int64_t(dkv.kv.max_pages_per_seq) * 16 + 1, nullptr, o, {}),
                   "kv_len");
  BlockSelection host_sel = sel;
  host_sel.device = Device::cpu;
  EXPECT_ERROR_MSG(sparse_prefill(st.cfg, q, dkv.kv, 0, 200, &host_sel, o, {}), "block selection.device");
}

}  // namespace
}  // namespace unique::test
