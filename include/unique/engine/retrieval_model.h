// A 2-layer Llama model whose weights are set by hand so that it retrieves by induction
// (copying), the test subject of `unique eval` until a trained model exists.
//
// Residual stream (hidden H, code dimension d, token codes: random unit vectors in R^d):
//   E  [0, d)    code of the current token          (embedding)
//   P1 [d, 2d)   code of the previous token         (layer 0, head 0: attends to offset 1)
//   P2 [2d, 3d)  code of the token two back         (layer 0, head 1: offset 2)
//   P3 [3d, 4d)  code of the token three back       (layer 0, head 2: offset 3)
//   O  [4d, 5d)  code of the copied token           (layer 1), read by the LM head
//   c  5d        a constant (the positional heads' queries and keys come from it)
// Layer 0, heads 0-2: content-free queries/keys on the fast RoPE pairs whose relative
// phase peaks at offset j (1, 2, 3); values copy E into P_j.
// Layer 1, head 0: trigram induction: query [E, P1, P2] of position t against key
// [P1, P2, P3] of position s on the slow (position-free) RoPE pairs, so t attends to the s
// right after an earlier occurrence of tokens t-2..t, and copies E(s) into O.
// Heads 1 and 2: bigram and unigram induction (lower weight): an in-context n-gram
// back-off. Head 3 of both layers: an attention sink on the BOS token (no output).
// MLPs are zero. Weights fp32 (16-bit rounding of the large scores would cost nats).
#pragma once
#include <cstdint>
#include <string>

namespace unique::engine {

struct RetrievalModelOptions {
  int code_dim = 48;              // d: token code dimension
  int head_dim = 256;             // RoPE pairs = head_dim / 2
  double rope_theta = 1e16;       // pairs span ~1 rad/token down to ~1e-16 rad/token
  int64_t max_position = 32768;   // the context the construction is checked for
  int merges = 1000;              // BPE merges learned from the built-in text
  double position_logit = 250;    // layer 0: logit of the wanted offset (before softmax)
  double match_logit = 50;        // layer 1: logit per matching token of the n-gram
  double sink_logit = 60;         // head 3: logit of the BOS token
  double output_logit = 4;        // LM head: logit of a copied token (trigram head alone);
                                  // greedy answers do not depend on it, perplexity does (4: best of 2..10)
  uint64_t seed = 0;              // token codes
  void validate() const;
};

struct RetrievalModelInfo {
  int64_t bytes = 0;
  int vocab = 0, hidden = 0;
  int fast_pairs = 0, slow_pairs = 0;
  // Smallest (peak - off-peak) / peak of the positional score over every distance up to
  // max_position (offsets 1..3), and the largest rotation (radians) of a content pair at
  // max_position: the construction is refused when position_logit * gap < 20 nats or the
  // drift > 0.05 rad.
  double min_position_gap = 0, max_content_drift = 0;
};

// Writes config.json, generation_config.json, model.safetensors, tokenizer.json and
// tokenizer_config.json into dir (created if missing). Throws unique::Error naming the
// option when a value is out of range or the RoPE checks above fail.
RetrievalModelInfo write_retrieval_model(const std::string& dir, const RetrievalModelOptions& opt);

// The built-in English text the tokenizer's merges are learned from (no digits, so
// numbers stay one token per digit).
const std::string& retrieval_corpus();

}  // namespace unique::engine
