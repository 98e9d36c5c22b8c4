// How well UniSparse's composite-token block mass ranks key blocks on given queries and
// keys (a real model's: `unique bench-prefill --model`). Per (query head, sampled query
// block): the composite estimate next to the exact causal block mass, their Spearman rank
// correlation, and the exact mass kept by the top-p selection and by a fixed top-k rule.
// Evaluation only: the exact mass is ref::prefill_block_mass (double, O(block * L * D)
// per sampled query block). CPU, host memory.
#pragma once
#include <cstdint>
#include <vector>

#include "unique/config.h"
#include "unique/paged_kv.h"
#include "unique/tensor.h"

namespace unique {

// Spearman rank correlation of a and b (n values, ties share their mean rank). 1 when
// either side is constant: there is no ranking to disagree with.
double spearman(const float* a, const float* b, int n);

// One sampled query block of one query head; vectors over its n = q_block + 1 visible
// key blocks.
struct BlockMassRow {
  int head = 0, q_block = 0;
  std::vector<float> est, exact;             // composite estimate, exact mass (each sums to ~1)
  std::vector<std::vector<int>> top_p_kept;  // select_prefill_blocks' kept blocks, one list per top_p asked
};

// q [L, Hq, D] (any dtype, CPU): every query of a prompt whose L keys are sequence `seq` of
// kv (exactly L tokens). For each query block in q_blocks (each in 0..(L-1)/prefill_block)
// and each query head, the row above. The block's queries are taken as one chunk over the
// key prefix that ends with the block: causal, and pool groups never straddle blocks, so
// estimate and selection equal those of a whole-prompt prefill.
std::vector<BlockMassRow> sample_block_mass(const AttentionConfig& cfg, const TensorView& q, const PagedKV& kv,
                                            int seq, const std::vector<int>& q_blocks,
                                            const std::vector<float>& top_ps);

// The fixed top-k rule on a mass vector over n = q_block + 1 visible blocks: block 0 and
// the diagonal always (as top-p), then the largest masses (ties to the lower block) up to
// k blocks in all; every block when k >= n. Ascending ids.
std::vector<int> top_k_blocks(const std::vector<float>& mass, int k);

// Exact mass of a row on the blocks `kept`.
double kept_mass(const BlockMassRow& row, const std::vector<int>& kept);

// Smallest fixed k whose top-k keeps, summed over rows, at least `blocks` key blocks (so a
// fixed top-k baseline spends the blocks a top-p selection spent).
int matching_k(const std::vector<BlockMassRow>& rows, int64_t blocks);

// Smallest fixed k whose top-k by the estimate (top_k_blocks(est, k)) keeps, in the mean over
// rows, at least `mass` of the exact mass: the fixed top-k baseline at top-p's accuracy. The
// largest row's block count when no smaller k gets there.
int equal_mass_k(const std::vector<BlockMassRow>& rows, double mass);

// `count` query blocks spread evenly over 2..num_q_blocks-1, the last one included (blocks
// 0 and 1 have no choice to rank); count <= 0 or more than there are: all of them.
std::vector<int> spread_q_blocks(int num_q_blocks, int count);

}  // namespace unique
