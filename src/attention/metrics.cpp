#include "unique/metrics.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "attention/validate.h"
#include "unique/error.h"

namespace unique {

std::vector<double> page_attention_mass(const TensorView& q, const PagedKV& kv, int b, int hq, double scale) {
  const int D = kv.head_dim, h = hq / (static_cast<int>(q.shape[1]) / kv.num_kv_heads), n = seq_pages(kv, b);
  std::vector<double> qd(static_cast<size_t>(D));
  for (int d = 0; d < D; ++d)
    qd[size_t(d)] = load_as_float(q.data, q.dtype, b * q.stride[0] + hq * q.stride[1] + d * q.stride[2]);
  std::vector<double> logits;
  std::vector<int> page_of;
  for (int j = 0; j < n; ++j) {
    const int page = kv.page_indices[kv.page_indptr[b] + j];
    const int tokens = j == n - 1 ? kv.last_page_len[b] : kv.page_size;
    for (int t = 0; t < tokens; ++t) {
      const int64_t off = kv.kv_offset(page, h) + int64_t(t) * D;
      double s = 0;
      for (int d = 0; d < D; ++d) s += qd[size_t(d)] * load_as_float(kv.k, kv.dtype, off + d);
      logits.push_back(s * scale);
      page_of.push_back(j);
    }
  }
  const double mx = *std::max_element(logits.begin(), logits.end());
  double sum = 0;
  for (double& l : logits) sum += (l = std::exp(l - mx));
  std::vector<double> mass(static_cast<size_t>(n), 0.0);
  for (size_t i = 0; i < logits.size(); ++i) mass[size_t(page_of[i])] += logits[i] / sum;
  return mass;
}

double attention_recall(const AttentionConfig& cfg, const TensorView& q, const PagedKV& kv,
                        const Selection& sel) {
  UNIQUE_CHECK_ARG(kv.device == Device::cpu, "kv.device", "cpu (attention_recall runs on the host)",
                   to_string(kv.device));
  validate_paged_kv(kv, false);
  detail::validate_query(q, kv);
  validate_selection(sel, kv, cfg);
  detail::validate_host_selection(sel, kv);
  const int H = kv.num_kv_heads, D = kv.head_dim, Hq = static_cast<int>(q.shape[1]);
  const int group = Hq / H;
  const double scale = cfg.scale_for(D);
  double total = 0;
  for (int b = 0; b < kv.batch; ++b) {
    const int n = seq_pages(kv, b);
    for (int hq = 0; hq < Hq; ++hq) {
      const int h = hq / group;
      std::vector<char> chosen(static_cast<size_t>(n), 0);  // a page listed twice counts once
      const int32_t* p = sel.pages + (int64_t(b) * H + h) * sel.max_selected;
      for (int i = 0; i < sel.counts[b * H + h]; ++i) chosen[size_t(p[i])] = 1;
      const std::vector<double> mass = page_attention_mass(q, kv, b, hq, scale);
      for (int j = 0; j < n; ++j)
        if (chosen[size_t(j)]) total += mass[size_t(j)];
    }
  }
  return total / (double(kv.batch) * Hq);
}

double relative_l2(const TensorView& a, const TensorView& b) {
  UNIQUE_CHECK_ARG(a.numel() == b.numel(), "relative_l2 sizes", b.numel(), a.numel());
  UNIQUE_CHECK_ARG(a.is_contiguous() && b.is_contiguous(), "relative_l2 inputs", "contiguous", "strided");
  double num = 0, den = 0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    const double x = load_as_float(a.data, a.dtype, i), y = load_as_float(b.data, b.dtype, i);
    num += (x - y) * (x - y);
    den += y * y;
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

}  // namespace unique
