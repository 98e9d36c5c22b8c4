// Reference paged decode: gather the attended tokens, softmax in double, weighted sum.
#include <cmath>
#include <vector>

#include "unique/decode.h"
#include "unique/error.h"

namespace unique::ref {

void paged_decode(const AttentionConfig& cfg, const TensorView& q, const PagedKV& kv,
                  const Selection* sel, const TensorView& out, const TensorView& lse) {
  validate_decode_args(cfg, q, kv, sel, out, lse);
  UNIQUE_CHECK_ARG(kv.device == Device::cpu, "kv.device", "cpu (reference)", to_string(kv.device));
  const int H = kv.num_kv_heads, D = kv.head_dim, Hq = static_cast<int>(q.shape[1]);
  const int group = Hq / H;
  const double scale = cfg.scale_for(D);
  for (int b = 0; b < kv.batch; ++b) {
    const int n = seq_pages(kv, b);
    for (int hq = 0; hq < Hq; ++hq) {
      const int h = hq / group;
      std::vector<int> pages;
      if (sel) {
        const int32_t* p = sel->pages + (int64_t(b) * H + h) * sel->max_selected;
        pages.assign(p, p + sel->counts[b * H + h]);
      } else {
        for (int j = 0; j < n; ++j) pages.push_back(j);
      }
      std::vector<double> logits;
      std::vector<int64_t> rows;  // element offset of each attended token's K/V row
      for (int j : pages) {
        const int page = kv.page_indices[kv.page_indptr[b] + j];
        const int tokens = j == n - 1 ? kv.last_page_len[b] : kv.page_size;
        for (int t = 0; t < tokens; ++t) {
          const int64_t row = kv.kv_offset(page, h) + int64_t(t) * D;
          double s = 0;
          for (int d = 0; d < D; ++d)
            s += load_as_float(q.data, q.dtype, b * q.stride[0] + hq * q.stride[1] + d * q.stride[2]) *
                 load_as_float(kv.k, kv.dtype, row + d);
          logits.push_back(s * scale);
          rows.push_back(row);
        }
      }
      double m = -INFINITY;
      for (double l : logits) m = std::max(m, l);
      double sum = 0;
      for (double& l : logits) sum += (l = std::exp(l - m));
      for (int d = 0; d < D; ++d) {
        double acc = 0;
        for (size_t t = 0; t < rows.size(); ++t)
          acc += logits[t] * load_as_float(kv.v, kv.dtype, rows[t] + d);
        store_from_float(out.data, out.dtype, b * out.stride[0] + hq * out.stride[1] + d * out.stride[2],
                         static_cast<float>(acc / sum));
      }
      if (lse.data) lse.ptr<float>()[b * lse.stride[0] + hq * lse.stride[1]] = static_cast<float>(m + std::log(sum));
    }
  }
}

}  // namespace unique::ref
