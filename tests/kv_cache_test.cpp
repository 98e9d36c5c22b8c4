// KVCache (page allocation, page table, pool exhaustion) and page statistics: the
// incremental statistics of any sequence of appends equal a from-scratch recomputation,
// through KVCache::append and through unique::append_kv on a caller-owned cache; and the
// statistics of a simple case equal ones computed here from the input keys.
#include <gtest/gtest.h>

#include <map>
#include <set>

#include "test_util.h"

namespace unique::test {
namespace {

// Copies of the four statistics arrays of a cache (as float), all pages.
struct StatsSnapshot {
  std::vector<float> mean, std, kmin, kmax;
};
StatsSnapshot snapshot(const PagedKV& kv) {
  const size_t n = size_t(kv.num_pages) * kv.num_kv_heads * kv.head_dim;
  StatsSnapshot s;
  auto copy = [&](const void* p, std::vector<float>& out) {
    out.resize(p ? n : 0);
    for (size_t i = 0; p && i < n; ++i) out[i] = load_as_float(p, kv.stats_dtype, i);
  };
  copy(kv.mean, s.mean);
  copy(kv.std, s.std);
  copy(kv.kmin, s.kmin);
  copy(kv.kmax, s.kmax);
  return s;
}

// Compares incremental statistics (a) with recomputed ones (b) on the pages of kv's table.
// bf16 statistics may differ by one bf16 ulp (fp32 vs double before the one rounding).
void expect_stats_equal(const PagedKV& kv, const StatsSnapshot& a, const StatsSnapshot& b) {
  const double rel = kv.stats_dtype == DType::f32 ? 1e-5 : kv.stats_dtype == DType::f16 ? 1.0 / 1024 : 1.0 / 128;
  int bad = 0;
  auto cmp = [&](const std::vector<float>& x, const std::vector<float>& y, const char* what,
                 int page, int h) {
    for (int d = 0; d < kv.head_dim; ++d) {
      const size_t i = size_t(kv.stats_offset(page, h)) + d;
      const double tol = rel * std::fabs(y[i]) + 1e-6;
      if (!(std::fabs(double(x[i]) - y[i]) <= tol) && ++bad <= 10)
        ADD_FAILURE() << what << " page " << page << " head " << h << " d " << d
                      << ": incremental " << x[i] << " vs recomputed " << y[i];
    }
  };
  for (int j = 0; j < kv.page_indptr[kv.batch]; ++j)
    for (int h = 0; h < kv.num_kv_heads; ++h) {
      const int page = kv.page_indices[j];
      if (!a.mean.empty()) {
        cmp(a.mean, b.mean, "mean", page, h);
        cmp(a.std, b.std, "std", page, h);
      }
      if (!a.kmin.empty()) {
        cmp(a.kmin, b.kmin, "kmin", page, h);
        cmp(a.kmax, b.kmax, "kmax", page, h);
      }
    }
  EXPECT_EQ(bad, 0);
}

TEST(PageStats, KVCacheAppendMatchesRecompute) {
  uint64_t i = 0;
  for (int P : {16, 32, 64})
    for (int D : {64, 128})
      for (DType dt : {DType::f32, DType::f16, DType::bf16})
        for (int rep = 0; rep < 2; ++rep) {
          // Stats dtype cycles through fp32, fp16, bf16 over the cases.
          const DType st = DType((i + i / 6) % 3);
          CaseSpec s;
          s.page_size = P;
          s.head_dim = D;
          s.dtype = dt;
          s.stats_dtype = st;
          s.num_kv_heads = 2;
          s.lens = {int64_t(3 * P + 5), 1, int64_t(P), int64_t(2 * P - 1)};
          s.max_chunk = i % 2 ? P + 7 : 11;  // small and page-crossing chunks
          const uint64_t seed = case_seed(11, i++);
          SCOPED_TRACE(case_name(s, 1, DType::f32, seed));
          CacheCase c = make_case(s, seed);
          const PagedKV kv = c.kv();
          const StatsSnapshot inc = snapshot(kv);
          recompute_page_stats(kv);
          expect_stats_equal(kv, inc, snapshot(kv));
        }
}

// A caller-owned cache (scattered page ids) filled by unique::append_kv directly, in
// random chunks over several sequences at once; K/V rows land where the table says.
TEST(PageStats, AppendKvMatchesRecomputeAndStoresRows) {
  uint64_t ci = 0;
  for (int P : {16, 32, 64})
    for (DType dt : {DType::f32, DType::f16, DType::bf16})
      for (DType st : {DType::f32, DType::bf16}) {
        const uint64_t seed = case_seed(12, ci++);
        SCOPED_TRACE("seed=" + std::to_string(seed) + " P=" + std::to_string(P) + " kv=" +
                     to_string(dt) + " stats=" + to_string(st));
        Rng r(seed);
        const int H = 2, D = 64, B = 3, num_pages = 40;
        const std::vector<int64_t> target = {int64_t(2 * P + 3), 7, int64_t(P + 1)};
        Buf K(dt, size_t(num_pages) * H * P * D), V(dt, K.size());
        Buf mean(st, size_t(num_pages) * H * D), sd(st, mean.size()), lo(st, mean.size()),
            hi(st, mean.size());
        // Scattered page ids: a shuffled pool.
        std::vector<int32_t> pool(num_pages);
        for (int p = 0; p < num_pages; ++p) pool[p] = p;
        std::shuffle(pool.begin(), pool.end(), r.g);
        std::vector<std::vector<int32_t>> pages(B);
        std::vector<int64_t> len(B, 0);
        // Every appended key, by (b, position, h).
        std::map<std::tuple<int, int64_t, int>, std::vector<float>> keys, vals;
        std::vector<KeyModel> models(B * H);
        for (auto& m : models) m.init(r, D, true);
        while (len != target) {
          std::vector<int32_t> indptr{0}, append_indptr{0}, indices, last;
          std::vector<float> kn, vn;
          for (int b = 0; b < B; ++b) {
            const int n = static_cast<int>(std::min<int64_t>(r.range(0, P + 3), target[b] - len[b]));
            for (int t = 0; t < n; ++t) {
              const int64_t pos = len[b] + t;
              for (int h = 0; h < H; ++h) {
                std::vector<float> kr(D), vr(D);
                models[b * H + h].key(r, pos, P, kr.data());
                for (float& x : vr) x = r.normal();
                kn.insert(kn.end(), kr.begin(), kr.end());
                vn.insert(vn.end(), vr.begin(), vr.end());
                keys[{b, pos, h}] = kr;
                vals[{b, pos, h}] = vr;
              }
            }
            len[b] += n;
            while (int64_t(pages[b].size()) * P < len[b]) {
              pages[b].push_back(pool.back());
              pool.pop_back();
            }
            append_indptr.push_back(append_indptr.back() + n);
          }
          // Sequences still empty are left out of the batch.
          std::vector<int32_t> app{0};
          for (int b = 0; b < B; ++b) {
            if (len[b] == 0) continue;
            indices.insert(indices.end(), pages[b].begin(), pages[b].end());
            indptr.push_back(static_cast<int32_t>(indices.size()));
            last.push_back(static_cast<int32_t>(len[b] - (pages[b].size() - 1) * P));
            app.push_back(append_indptr[b + 1]);
          }
          if (indices.empty()) continue;
          PagedKV kv;
          kv.dtype = dt;
          kv.num_pages = num_pages;
          kv.num_kv_heads = H;
          kv.page_size = P;
          kv.head_dim = D;
          kv.k = K.data();
          kv.v = V.data();
          kv.stats_dtype = st;
          kv.mean = mean.data();
          kv.std = sd.data();
          kv.kmin = lo.data();
          kv.kmax = hi.data();
          kv.batch = static_cast<int>(last.size());
          kv.page_indptr = indptr.data();
          kv.page_indices = indices.data();
          kv.last_page_len = last.data();
          const int64_t rows = append_indptr.back();
          append_kv(kv, make_view(kn.data(), DType::f32, {rows, H, D}),
                    make_view(vn.data(), DType::f32, {rows, H, D}), app.data());
          if (len == target) {
            const StatsSnapshot inc = snapshot(kv);
            recompute_page_stats(kv);
            expect_stats_equal(kv, inc, snapshot(kv));
          }
        }
        // Every row stored (rounded to dt) at its page and slot.
        int bad = 0;
        for (const auto& [key, kr] : keys) {
          const auto [b, pos, h] = key;
          const int64_t off = (int64_t(pages[b][pos / P]) * H + h) * P * D + (pos % P) * D;
          for (int d = 0; d < D; ++d) {
            Buf one(dt, 1);
            one.set(0, kr[d]);
            if (K.get(off + d) != one.get(0) && ++bad < 5) ADD_FAILURE() << "K b" << b << " pos " << pos;
            one.set(0, vals[key][d]);
            if (V.get(off + d) != one.get(0) && ++bad < 5) ADD_FAILURE() << "V b" << b << " pos " << pos;
          }
        }
        EXPECT_EQ(bad, 0);
      }
}

// Statistics computed here (double, from the input keys of an fp32 cache) for a simple
// case: two sequences, one page each partly filled, appended one token at a time.
TEST(PageStats, IndependentPopulationStatistics) {
  const uint64_t seed = 4242;
  SCOPED_TRACE("seed=" + std::to_string(seed));
  Rng r(seed);
  const int H = 2, D = 32, P = 16;
  KVCacheOptions opt;
  opt.num_pages = 6;
  opt.num_kv_heads = H;
  opt.page_size = P;
  opt.head_dim = D;
  opt.dtype = DType::f32;
  KVCache cache(opt);
  const int a = cache.add_sequence(), b = cache.add_sequence();
  const std::vector<int> lens = {P + 5, 1};
  std::vector<std::vector<float>> keys(2);  // [t][h][d]
  for (int s = 0; s < 2; ++s) keys[s].resize(size_t(lens[s]) * H * D);
  for (int s = 0; s < 2; ++s)
    for (size_t i = 0; i < keys[s].size(); ++i) keys[s][i] = 3.0f * r.normal() + (i % D == 3 ? 40.0f : 0.0f);
  std::vector<float> zeros(size_t(H) * D, 0.0f);
  for (int t = 0; t < P + 5; ++t) {
    std::vector<int> seqs, counts;
    std::vector<float> k;
    for (int s = 0; s < 2; ++s)
      if (t < lens[s]) {
        seqs.push_back(s == 0 ? a : b);
        counts.push_back(1);
        k.insert(k.end(), keys[s].begin() + size_t(t) * H * D, keys[s].begin() + size_t(t + 1) * H * D);
      }
    const int64_t rows = static_cast<int64_t>(seqs.size());
    std::vector<float> v(k.size(), 1.0f);
    cache.append(seqs, counts, make_view(k.data(), DType::f32, {rows, H, D}),
                 make_view(v.data(), DType::f32, {rows, H, D}));
  }
  PageTable table = cache.page_table({a, b});
  const PagedKV kv = cache.view(table);
  for (int s = 0; s < 2; ++s) {
    const auto& pg = cache.pages(s == 0 ? a : b);
    for (size_t j = 0; j < pg.size(); ++j) {
      const int t0 = static_cast<int>(j) * P, t1 = std::min(lens[s], t0 + P);
      for (int h = 0; h < H; ++h)
        for (int d = 0; d < D; ++d) {
          double sum = 0, mn = INFINITY, mx = -INFINITY;
          for (int t = t0; t < t1; ++t) {
            const double x = keys[s][(size_t(t) * H + h) * D + d];
            sum += x;
            mn = std::min(mn, x);
            mx = std::max(mx, x);
          }
          const double mu = sum / (t1 - t0);
          double ss = 0;
          for (int t = t0; t < t1; ++t) {
            const double x = keys[s][(size_t(t) * H + h) * D + d] - mu;
            ss += x * x;
          }
          const double sdv = std::sqrt(ss / (t1 - t0));  // population std
          const size_t i = size_t(kv.stats_offset(pg[j], h)) + d;
          const float* m = static_cast<const float*>(kv.mean);
          const float* sd = static_cast<const float*>(kv.std);
          EXPECT_NEAR(m[i], mu, 1e-5 * std::fabs(mu) + 1e-6) << s << " " << j << " " << h << " " << d;
          EXPECT_NEAR(sd[i], sdv, 1e-5 * sdv + 1e-6) << s << " " << j << " " << h << " " << d;
          EXPECT_EQ(static_cast<const float*>(kv.kmin)[i], float(mn));
          EXPECT_EQ(static_cast<const float*>(kv.kmax)[i], float(mx));
          if (t1 - t0 == 1) {
            EXPECT_EQ(sd[i], 0.0f);  // std of a one-token page is 0
          }
        }
    }
  }
}

// Statistics of a bf16 cache are those of the stored (rounded) keys.
TEST(PageStats, StatisticsOfStoredRoundedKeys) {
  KVCacheOptions opt;
  opt.num_pages = 2;
  opt.num_kv_heads = 1;
  opt.page_size = 16;
  opt.head_dim = 16;
  opt.dtype = DType::bf16;
  KVCache cache(opt);
  const int s = cache.add_sequence();
  std::vector<float> k(3 * 16), v(3 * 16, 0.0f);
  const float vals[3] = {1.00390625f /* 1 + 2^-8: rounds to 1 (tie, even) */, 1.01171875f, 3.0f};
  for (int t = 0; t < 3; ++t)
    for (int d = 0; d < 16; ++d) k[t * 16 + d] = vals[t];
  cache.append({s}, {3}, make_view(k.data(), DType::f32, {3, 1, 16}), make_view(v.data(), DType::f32, {3, 1, 16}));
  PageTable table = cache.page_table({s});
  const PagedKV kv = cache.view(table);
  const double r0 = bf16_bits_to_float(float_to_bf16_bits(vals[0]));
  const double r1 = bf16_bits_to_float(float_to_bf16_bits(vals[1]));
  EXPECT_EQ(r0, 1.0);
  const double mu = (r0 + r1 + 3.0) / 3;
  EXPECT_NEAR(static_cast<const float*>(kv.mean)[0], mu, 1e-6);
  EXPECT_EQ(static_cast<const float*>(kv.kmin)[0], float(r0));
}

TEST(KVCache, AllocatesAndFreesPages) {
  KVCacheOptions opt;
  opt.num_pages = 10;
  opt.num_kv_heads = 2;
  opt.page_size = 16;
  opt.head_dim = 64;
  opt.dtype = DType::f16;
  KVCache cache(opt);
  EXPECT_EQ(cache.free_pages(), 10);
  const int a = cache.add_sequence(), b = cache.add_sequence();
  EXPECT_NE(a, b);
  EXPECT_EQ(cache.length(a), 0);
  EXPECT_TRUE(cache.pages(a).empty());
  auto append = [&](std::vector<int> seqs, std::vector<int> counts) {
    int64_t rows = 0;
    for (int c : counts) rows += c;
    std::vector<float> k(size_t(rows) * 2 * 64, 0.5f);
    cache.append(seqs, counts, make_view(k.data(), DType::f32, {rows, 2, 64}),
                 make_view(k.data(), DType::f32, {rows, 2, 64}));
  };
  append({a, b}, {17, 16});  // 2 + 1 pages
  EXPECT_EQ(cache.free_pages(), 7);
  EXPECT_EQ(cache.length(a), 17);
  EXPECT_EQ(cache.length(b), 16);
  EXPECT_EQ(cache.pages(a).size(), 2u);
  EXPECT_EQ(cache.pages(b).size(), 1u);
  append({b}, {1});  // b crosses into its second page
  EXPECT_EQ(cache.free_pages(), 6);
  append({a}, {15});  // fills a's second page exactly: no new page
  EXPECT_EQ(cache.free_pages(), 6);
  EXPECT_EQ(cache.length(a), 32);
  append({a, b}, {0, 0});
  EXPECT_EQ(cache.free_pages(), 6);

  // All page ids distinct and in range.
  std::set<int32_t> ids;
  for (int s : {a, b})
    for (int32_t p : cache.pages(s)) {
      EXPECT_GE(p, 0);
      EXPECT_LT(p, 10);
      ids.insert(p);
    }
  EXPECT_EQ(ids.size(), 4u);

  // Page table: CSR over the requested sequences in order.
  const PageTable t = cache.page_table({b, a});
  ASSERT_EQ(t.batch(), 2);
  EXPECT_EQ(t.indptr, (std::vector<int32_t>{0, 2, 4}));
  std::vector<int32_t> want = cache.pages(b);
  want.insert(want.end(), cache.pages(a).begin(), cache.pages(a).end());
  EXPECT_EQ(t.indices, want);
  EXPECT_EQ(t.last_page_len, (std::vector<int32_t>{1, 16}));
  const PagedKV kv = cache.view(t);
  EXPECT_EQ(kv.batch, 2);
  EXPECT_EQ(seq_len(kv, 0), 17);
  EXPECT_EQ(seq_len(kv, 1), 32);
  EXPECT_EQ(max_seq_pages(kv), 2);
  EXPECT_NO_THROW(validate_paged_kv(kv, true));

  // Freeing returns the pages; the freed ids are reused.
  const std::vector<int32_t> freed = cache.pages(a);
  cache.free_sequence(a);
  EXPECT_EQ(cache.free_pages(), 8);
  EXPECT_ERROR_MSG(cache.length(a), "sequence id");
  EXPECT_ERROR_MSG(cache.page_table({a}), "sequence id");
  EXPECT_ERROR_MSG(cache.free_sequence(a), "sequence id");
  const int c = cache.add_sequence();
  append({c}, {40});  // 3 pages
  EXPECT_EQ(cache.free_pages(), 5);
  int reused = 0;
  for (int32_t p : cache.pages(c)) reused += std::count(freed.begin(), freed.end(), p);
  EXPECT_EQ(reused, 2);
  std::set<int32_t> all(cache.pages(b).begin(), cache.pages(b).end());
  all.insert(cache.pages(c).begin(), cache.pages(c).end());
  EXPECT_EQ(all.size(), 5u);
}

TEST(KVCache, PoolExhaustionLeavesStateUnchanged) {
  KVCacheOptions opt;
  opt.num_pages = 4;
  opt.num_kv_heads = 1;
  opt.page_size = 16;
  opt.head_dim = 16;
  opt.dtype = DType::f32;
  KVCache cache(opt);
  const int a = cache.add_sequence(), b = cache.add_sequence();
  std::vector<float> k(64 * 16);
  for (size_t i = 0; i < k.size(); ++i) k[i] = float(i % 97);
  auto kv_rows = [&](int64_t rows) { return make_view(k.data(), DType::f32, {rows, 1, 16}); };
  cache.append({a, b}, {20, 5}, kv_rows(25), kv_rows(25));  // 2 + 1 pages
  ASSERT_EQ(cache.free_pages(), 1);
  const auto pa = cache.pages(a), pb = cache.pages(b);
  PageTable t0 = cache.page_table({a, b});
  const PagedKV kv0 = cache.view(t0);
  const std::vector<float> kbefore(static_cast<const float*>(kv0.k), static_cast<const float*>(kv0.k) + 4 * 16 * 16);
  const StatsSnapshot sbefore = snapshot(kv0);

  // a needs 1 more page (20 + 13 = 33 -> 3 pages), b needs 1 (5 + 12 = 17): 2 > 1 free.
  EXPECT_ERROR_MSG(cache.append({a, b}, {13, 12}, kv_rows(25), kv_rows(25)), "KV cache pool", "2", "1");
  EXPECT_ERROR_MSG(cache.append({a}, {64}, kv_rows(64), kv_rows(64)), "KV cache pool");
  EXPECT_EQ(cache.free_pages(), 1);
  EXPECT_EQ(cache.length(a), 20);
  EXPECT_EQ(cache.length(b), 5);
  EXPECT_EQ(cache.pages(a), pa);
  EXPECT_EQ(cache.pages(b), pb);
  EXPECT_EQ(std::vector<float>(static_cast<const float*>(kv0.k), static_cast<const float*>(kv0.k) + 4 * 16 * 16),
            kbefore);
  const StatsSnapshot safter = snapshot(kv0);
  EXPECT_EQ(safter.mean, sbefore.mean);
  EXPECT_EQ(safter.kmax, sbefore.kmax);
  // What fits still works afterwards.
  cache.append({a, b}, {12, 11}, kv_rows(23), kv_rows(23));
  EXPECT_EQ(cache.free_pages(), 1);
  EXPECT_EQ(cache.length(a), 32);
  EXPECT_EQ(cache.length(b), 16);
}

// Any rejected append (not only pool exhaustion) must leave lengths and pages as they were:
// otherwise the cache claims tokens it never stored.
TEST(KVCache, RejectedAppendLeavesStateUnchanged) {
  KVCacheOptions opt;
  opt.num_pages = 8;
  opt.num_kv_heads = 2;
  opt.page_size = 16;
  opt.head_dim = 16;
  opt.dtype = DType::f32;
  KVCache cache(opt);
  const int a = cache.add_sequence();
  std::vector<float> k(40 * 2 * 16, 1.0f);
  cache.append({a}, {3}, make_view(k.data(), DType::f32, {3, 2, 16}), make_view(k.data(), DType::f32, {3, 2, 16}));
  ASSERT_EQ(cache.length(a), 3);
  ASSERT_EQ(cache.free_pages(), 7);

  // Wrong row count.
  EXPECT_ERROR_MSG(cache.append({a}, {20}, make_view(k.data(), DType::f32, {19, 2, 16}),
                                make_view(k.data(), DType::f32, {19, 2, 16})),
                   "k_new");
  EXPECT_EQ(cache.length(a), 3);
  EXPECT_EQ(cache.free_pages(), 7);
  // Wrong head count in v_new.
  EXPECT_ERROR_MSG(cache.append({a}, {20}, make_view(k.data(), DType::f32, {20, 2, 16}),
                                make_view(k.data(), DType::f32, {20, 1, 32})),
                   "v_new");
  EXPECT_EQ(cache.length(a), 3);
  EXPECT_EQ(cache.free_pages(), 7);
  // Non-contiguous k_new (a strided view of the right shape).
  TensorView strided = make_view(k.data(), DType::f32, {20, 2, 16});
  strided.stride[0] = 2 * 2 * 16;
  EXPECT_ERROR_MSG(cache.append({a}, {20}, strided, make_view(k.data(), DType::f32, {20, 2, 16})), "k_new");
  EXPECT_EQ(cache.length(a), 3) << "a rejected append changed the sequence length";
  EXPECT_EQ(cache.free_pages(), 7) << "a rejected append took pages from the pool";
  // Device mismatch.
  const int64_t len_before = cache.length(a);
  const int free_before = cache.free_pages();
  TensorView on_gpu = make_view(k.data(), DType::f32, {20, 2, 16}, Device::cuda);
  EXPECT_ERROR_MSG(cache.append({a}, {20}, on_gpu, on_gpu), "k_new");
  EXPECT_EQ(cache.length(a), len_before) << "a rejected append changed the sequence length";
  EXPECT_EQ(cache.free_pages(), free_before) << "a rejected append took pages from the pool";
}

// Statistics kept only when asked for; an estimator whose statistics are missing is refused.
TEST(KVCache, OptionalStatistics) {
  for (int which = 0; which < 3; ++which) {
    KVCacheOptions opt;
    opt.num_pages = 4;
    opt.num_kv_heads = 1;
    opt.page_size = 16;
    opt.head_dim = 16;
    opt.dtype = DType::f32;
    opt.keep_unique_stats = which != 0;
    opt.keep_quest_stats = which != 1;
    if (which == 2) opt.keep_unique_stats = opt.keep_quest_stats = false;
    KVCache cache(opt);
    const int s = cache.add_sequence();
    std::vector<float> k(40 * 16);
    for (size_t i = 0; i < k.size(); ++i) k[i] = float(i % 13) - 6.0f;
    cache.append({s}, {40}, make_view(k.data(), DType::f32, {40, 1, 16}), make_view(k.data(), DType::f32, {40, 1, 16}));
    PageTable t = cache.page_table({s});
    const PagedKV kv = cache.view(t);
    EXPECT_EQ(kv.mean != nullptr, opt.keep_unique_stats);
    EXPECT_EQ(kv.std != nullptr, opt.keep_unique_stats);
    EXPECT_EQ(kv.kmin != nullptr, opt.keep_quest_stats);
    EXPECT_EQ(kv.kmax != nullptr, opt.keep_quest_stats);
    std::vector<float> q(16, 1.0f);
    SelBuf sel(1, 1, 3);
    AttentionConfig cfg;
    cfg.budget_tokens = 16;
    for (Estimator e : {Estimator::unique, Estimator::quest, Estimator::mean, Estimator::oracle}) {
      cfg.estimator = e;
      const bool ok = e == Estimator::oracle || (e == Estimator::quest ? opt.keep_quest_stats : opt.keep_unique_stats);
      if (ok) {
        EXPECT_NO_THROW(select_pages(cfg, make_view(q.data(), DType::f32, {1, 1, 16}), kv, sel.sel)) << which;
      } else {
        EXPECT_ERROR_MSG(select_pages(cfg, make_view(q.data(), DType::f32, {1, 1, 16}), kv, sel.sel),
                         e == Estimator::quest ? "kv.kmin/kv.kmax" : "kv.mean/kv.std");
      }
    }
    const StatsSnapshot inc = snapshot(kv);
    recompute_page_stats(kv);
    expect_stats_equal(kv, inc, snapshot(kv));
  }
}

TEST(KVCache, BadArguments) {
  KVCacheOptions opt;
  opt.num_pages = 4;
  opt.num_kv_heads = 2;
  opt.page_size = 16;
  opt.head_dim = 64;
  {
    KVCacheOptions o = opt;
    o.num_pages = 0;
    EXPECT_ERROR_MSG(KVCache{o}, "num_pages");
  }
  {
    KVCacheOptions o = opt;
    o.head_dim = 60;
    EXPECT_ERROR_MSG(KVCache{o}, "head_dim", "60");
  }
  {
    KVCacheOptions o = opt;
    o.page_size = 0;
    EXPECT_ERROR_MSG(KVCache{o}, "page_size");
  }
  {
    KVCacheOptions o = opt;
    o.num_kv_heads = 0;
    EXPECT_ERROR_MSG(KVCache{o}, "num_kv_heads");
  }
  KVCache cache(opt);
  const int a = cache.add_sequence();
  std::vector<float> k(4 * 2 * 64);
  const TensorView kv4 = make_view(k.data(), DType::f32, {4, 2, 64});
  EXPECT_ERROR_MSG(cache.append({a}, {4, 1}, kv4, kv4), "counts");
  EXPECT_ERROR_MSG(cache.append({a, a}, {2, 2}, kv4, kv4), "distinct");
  EXPECT_ERROR_MSG(cache.append({a + 7}, {4}, kv4, kv4), "sequence id", "7");
  EXPECT_ERROR_MSG(cache.append({a}, {-1}, kv4, kv4), "counts[0]");
  EXPECT_ERROR_MSG(cache.append({}, {}, kv4, kv4), "seqs");
  EXPECT_ERROR_MSG(cache.page_table({a}), "empty");  // no tokens yet
  EXPECT_EQ(cache.free_pages(), 4);
  EXPECT_EQ(cache.length(a), 0);
}

}  // namespace
}  // namespace unique::test
