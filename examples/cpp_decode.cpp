// The README's library example, compiled and run as a test: build a paged cache, append a
// sequence, select pages with UNIQUE and decode over them; compare with dense.
#include <cstdio>
#include <random>
#include <vector>

#include "unique/unique.h"

int main() {
  const int H = 8, Hq = 32, D = 128, n_tokens = 4000;
  unique::KVCache cache({.num_pages = 512, .num_kv_heads = H, .page_size = 16, .head_dim = D,
                         .dtype = unique::DType::bf16});
  std::mt19937 rng(0);
  std::normal_distribution<float> normal;
  std::vector<float> k(size_t(n_tokens) * H * D), v(k.size()), q(size_t(Hq) * D), out(q.size()),
      dense(q.size());
  for (auto* buf : {&k, &v, &q})
    for (float& x : *buf) x = normal(rng);

  int seq = cache.add_sequence();
  cache.append({seq}, {n_tokens}, unique::make_view(k.data(), unique::DType::f32, {n_tokens, H, D}),
               unique::make_view(v.data(), unique::DType::f32, {n_tokens, H, D}));
  unique::PageTable table = cache.page_table({seq});
  unique::PagedKV kv = cache.view(table);

  unique::AttentionConfig cfg;  // estimator unique, budget 2048 tokens, page 16, sink 1, recent 1
  const int max_sel = cfg.max_selected(static_cast<int>(table.indices.size()));
  std::vector<int32_t> pages(size_t(H) * max_sel), counts(H);
  unique::Selection sel{pages.data(), counts.data(), 1, H, max_sel, unique::Device::cpu};
  auto qv = unique::make_view(q.data(), unique::DType::f32, {1, Hq, D});
  auto ov = unique::make_view(out.data(), unique::DType::f32, {1, Hq, D});
  auto dv = unique::make_view(dense.data(), unique::DType::f32, {1, Hq, D});
  unique::select_pages(cfg, qv, kv, sel);
  unique::paged_decode(cfg, qv, kv, &sel, ov, {});
  unique::paged_decode(cfg, qv, kv, nullptr, dv, {});
  std::printf("pages %zu, selected %d per KV head, recall %.3f, rel. error vs dense %.3f\n",
              table.indices.size(), counts[0], unique::attention_recall(cfg, qv, kv, sel),
              unique::relative_l2(ov, dv));
  return counts[0] == max_sel ? 0 : 1;
}
