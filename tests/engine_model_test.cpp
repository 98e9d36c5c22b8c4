// The engine's forward against an independent float64 forward of a tiny model that the
// test writes itself; sparse decode with budget >= context against dense.
#include <gtest/gtest.h>

#include <cmath>

#include "engine_test_util.h"
#include "unique/engine/engine.h"
#include "unique/engine/model.h"

using namespace unique;
using namespace unique::engine;
using enginetest::TinySpec;

namespace {

double rel_err(const float* a, const std::vector<double>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < b.size(); ++i) {
    num = std::max(num, std::abs(a[i] - b[i]));
    den = std::max(den, std::abs(b[i]));
  }
  return num / den;
}

struct Case {
  const char* name;
  TinySpec spec;
  double tol;
};

class EngineVsReference : public ::testing::TestWithParam<Case> {};

TEST_P(EngineVsReference, PrefillAndGreedyDecodeMatchFloat64) {
  const Case& c = GetParam();
  const std::string dir = enginetest::temp_dir(c.name);
  const enginetest::RefModel ref = enginetest::write_tiny(dir, c.spec);
  auto model = Model::load(dir);
  EngineOptions eo;
  eo.attention.estimator = Estimator::dense;
  eo.attention.page_size = 16;
  eo.attention.budget_tokens = 16;
  eo.kv_dtype = DType::f32;
  eo.max_context = 64;
  eo.prefill_chunk = 7;  // several chunks, the last one partial
  Engine eng(*model, eo);
  std::vector<int> tokens = {1, 5, 9, 17, 33, 2, 40, 41, 8, 8, 8, 3, 49, 0, 12, 22, 7, 30, 31};
  const int V = c.spec.vocab;
  std::vector<float> logits(V);
  const int s = eng.add_sequence();
  eng.prefill(s, tokens, logits.data());
  EXPECT_LT(rel_err(logits.data(), ref.logits(tokens)), c.tol) << "prefill";
  for (int step = 0; step < 12; ++step) {
    int next = 0;
    for (int i = 1; i < V; ++i)
      if (logits[i] > logits[next]) next = i;
    tokens.push_back(next);
    eng.decode({s}, {next}, logits.data());
    EXPECT_LT(rel_err(logits.data(), ref.logits(tokens)), c.tol) << "decode step " << step;
  }
}

// A prompt longer than the 64-row attention blocks and than one chunk, GQA group 4.
TEST(EngineVsReferenceLong, MultiBlockPrefill) {
  const std::string dir = enginetest::temp_dir("long_prefill");
  TinySpec sp;
  sp.heads = 8;
  sp.kv_heads = 2;
  sp.llama3_rope = true;
  const enginetest::RefModel ref = enginetest::write_tiny(dir, sp);
  auto model = Model::load(dir);
  for (int chunk : {100, 256}) {
    EngineOptions eo;
    eo.attention.estimator = Estimator::dense;
    eo.kv_dtype = DType::f32;
    eo.max_context = 256;
    eo.prefill_chunk = chunk;
    Engine eng(*model, eo);
    std::vector<int> tokens;
    for (int i = 0; i < 150; ++i) tokens.push_back((i * 13 + 5) % sp.vocab);
    std::vector<float> logits(sp.vocab);
    eng.prefill(eng.add_sequence(), tokens, logits.data());
    EXPECT_LT(rel_err(logits.data(), ref.logits(tokens)), 2e-5) << "chunk " << chunk;
  }
}

TinySpec spec(const char* arch, bool tie, bool llama3, bool bias, bool qk, const char* dt) {
  TinySpec s;
  s.arch = arch;
  s.tie = tie;
  s.llama3_rope = llama3;
  s.bias = bias;
  s.qk_norm = qk;
  s.dtype = dt;
  return s;
}

INSTANTIATE_TEST_SUITE_P(
    Archs, EngineVsReference,
    ::testing::Values(Case{"llama_fp32", spec("LlamaForCausalLM", false, false, false, false, "F32"), 2e-5},
                      Case{"llama3_rope_tied", spec("LlamaForCausalLM", true, true, false, false, "F32"), 2e-5},
                      Case{"mistral_fp32", spec("MistralForCausalLM", false, false, false, false, "F32"), 2e-5},
                      Case{"qwen2_bias", spec("Qwen2ForCausalLM", false, false, true, false, "F32"), 2e-5},
                      Case{"qwen3_qknorm", spec("Qwen3ForCausalLM", true, false, false, true, "F32"), 2e-5},
                      Case{"llama_bf16", spec("LlamaForCausalLM", false, true, false, false, "BF16"), 2e-5},
                      Case{"qwen3_fp16", spec("Qwen3ForCausalLM", false, false, false, true, "F16"), 1e-4}),
    [](const auto& info) { return std::string(info.param.name); });

// Sparse selection that keeps every page must give exactly the dense tokens (and logits).
TEST(EngineSparse, BudgetAtLeastContextGivesDenseTokens) {
  const std::string dir = enginetest::temp_dir("sparse_eq");
  TinySpec s;
  s.vocab = 64;
  enginetest::write_tiny(dir, s);
  auto model = Model::load(dir);
  std::vector<std::vector<int>> prompts = {{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20},
                                           {5, 6, 7}};
  GenerateOptions go;
  go.max_new_tokens = 24;
  go.keep_logits = true;
  auto run = [&](Estimator e, int page) {
    EngineOptions eo;
    eo.attention.estimator = e;
    eo.attention.page_size = page;
    eo.attention.budget_tokens = 256;  // >= context
    eo.kv_dtype = DType::f32;
    eo.max_batch = 2;
    eo.max_context = 64;
    Engine eng(*model, eo);
    return generate(eng, prompts, go);
  };
  const GenerateResult dense = run(Estimator::dense, 4);
  for (Estimator e : {Estimator::unique, Estimator::quest, Estimator::mean, Estimator::oracle}) {
    const GenerateResult sp = run(e, 4);
    EXPECT_EQ(sp.tokens, dense.tokens) << to_string(e);
    for (size_t b = 0; b < prompts.size(); ++b)
      for (size_t t = 0; t < dense.logits[b].size(); ++t)
        for (size_t i = 0; i < dense.logits[b][t].size(); ++i)
          ASSERT_NEAR(sp.logits[b][t][i], dense.logits[b][t][i], 1e-5) << to_string(e) << " b" << b << " t" << t;
  }
}

// A small budget really is sparse (different pages attended), and still runs with
// dense_layers and a batch of different lengths.
TEST(EngineSparse, SmallBudgetRunsWithDenseLayersAndRaggedBatch) {
  const std::string dir = enginetest::temp_dir("sparse_small");
  TinySpec s;
  s.layers = 3;
  enginetest::write_tiny(dir, s);
  auto model = Model::load(dir);
  std::vector<std::vector<int>> prompts(3);
  for (int i = 0; i < 90; ++i) prompts[0].push_back((i * 7) % 50);
  for (int i = 0; i < 17; ++i) prompts[1].push_back((i * 3) % 50);
  prompts[2] = {4};
  EngineOptions eo;
  eo.attention.estimator = Estimator::unique;
  eo.attention.page_size = 16;
  eo.attention.budget_tokens = 16;
  eo.dense_layers = 1;
  eo.max_batch = 3;
  eo.max_context = 128;
  eo.kv_dtype = DType::bf16;
  Engine eng(*model, eo);
  GenerateOptions go;
  go.max_new_tokens = 10;
  go.sampler.temperature = 0.8f;
  go.sampler.top_k = 20;
  go.sampler.top_p = 0.9f;
  go.sampler.seed = 7;
  const GenerateResult r = generate(eng, prompts, go);
  ASSERT_EQ(r.tokens.size(), 3u);
  for (const auto& t : r.tokens) EXPECT_EQ(t.size(), 10u);
  EXPECT_EQ(r.prefill_tokens, 90 + 17 + 1);
  // Same seed, same tokens.
  Engine eng2(*model, eo);
  EXPECT_EQ(generate(eng2, prompts, go).tokens, r.tokens);
}

TEST(EngineGenerate, StopsOnEos) {
  const std::string dir = enginetest::temp_dir("eos");
  TinySpec s;
  enginetest::write_tiny(dir, s);
  auto model = Model::load(dir);
  EngineOptions eo;
  eo.attention.estimator = Estimator::dense;
  eo.max_context = 64;
  Engine eng(*model, eo);
  GenerateOptions go;
  go.max_new_tokens = 20;
  const GenerateResult free_run = generate(eng, {{1, 2, 3}}, go);
  ASSERT_EQ(free_run.tokens[0].size(), 20u);
  go.eos_ids = {free_run.tokens[0][3]};
  const GenerateResult r = generate(eng, {{1, 2, 3}}, go);
  const auto& t = free_run.tokens[0];
  const size_t first = std::find(t.begin(), t.end(), t[3]) - t.begin();
  EXPECT_EQ(r.tokens[0].size(), first + 1);
}

}  // namespace

// `unique make-tiny-model` output loads for every architecture and its tokenizer
// round-trips the built-in text.
#include "unique/engine/tiny_model.h"
#include "unique/engine/tokenizer.h"

namespace {
TEST(TinyModel, EveryArchLoadsAndGenerates) {
  for (const char* arch : {"llama", "mistral", "qwen2", "qwen3"}) {
    const std::string dir = enginetest::temp_dir(std::string("tiny_") + arch);
    TinyModelOptions o;
    o.arch = arch;
    o.hidden = 64;
    o.layers = 2;
    o.heads = 4;
    o.kv_heads = 2;
    o.head_dim = 16;
    o.intermediate = 96;
    o.merges = 64;
    write_tiny_model(dir, o);
    auto model = Model::load(dir);
    EXPECT_EQ(model->config().qkv_bias, std::string(arch) == "qwen2");
    EXPECT_EQ(model->config().qk_norm, std::string(arch) == "qwen3");
    const Tokenizer tok = Tokenizer::from_file(dir + "/tokenizer.json");
    EXPECT_EQ(tok.decode(tok.encode(tiny_corpus(), false)), tiny_corpus());
    EngineOptions eo;
    eo.max_context = 64;
    Engine eng(*model, eo);
    GenerateOptions go;
    go.max_new_tokens = 4;
    EXPECT_EQ(generate(eng, {tok.encode("The page")}, go).tokens[0].size(), 4u) << arch;
  }
}
}  // namespace

// ---- UniSparse prefill in the engine ----------------------------------------------------
namespace {

struct PrefillRun {
  std::vector<float> logits;  // last prompt token
  GenerateResult gen;
};

PrefillRun run_prefill(const Model& model, const std::vector<int>& prompt, PrefillMode mode, float top_p,
                       int dense_layers = 0, int max_new = 6) {
  EngineOptions eo;
  eo.attention.estimator = Estimator::dense;
  eo.attention.prefill = mode;
  eo.attention.top_p = top_p;
  eo.attention.prefill_block = 16;
  eo.attention.pool = 4;
  eo.dense_layers = dense_layers;
  eo.kv_dtype = DType::f32;
  eo.max_context = 1024;
  eo.prefill_chunk = 90;  // chunks start mid-block and mid-pool-group
  PrefillRun r;
  {
    Engine eng(model, eo);
    r.logits.resize(model.config().vocab_size);
    eng.prefill(eng.add_sequence(), prompt, r.logits.data());
  }
  Engine eng(model, eo);
  GenerateOptions go;
  go.max_new_tokens = max_new;
  go.keep_logits = true;
  r.gen = generate(eng, {prompt}, go);
  return r;
}

// The prefill tests' model: 8 query / 2 KV heads (GQA group 4), written to a fresh directory.
std::unique_ptr<Model> load_gqa_tiny(const std::string& name, TinySpec& sp) {
  const std::string dir = enginetest::temp_dir(name);
  sp.heads = 8;
  sp.kv_heads = 2;
  enginetest::write_tiny(dir, sp);
  return Model::load(dir);
}

double max_rel(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < b.size(); ++i) {
    num = std::max(num, double(std::abs(a[i] - b[i])));
    den = std::max(den, double(std::abs(b[i])));
  }
  return num / den;
}

// top_p = 1 keeps every key block: the same greedy tokens as the dense prefill (sgemm
// path) and logits within float rounding, and the float64 reference agrees.
TEST(EnginePrefill, UnisparseTopPOneMatchesDense) {
  const std::string dir = enginetest::temp_dir("pf_top1");
  TinySpec sp;
  sp.heads = 8;
  sp.kv_heads = 2;
  const enginetest::RefModel ref = enginetest::write_tiny(dir, sp);
  auto model = Model::load(dir);
  std::vector<int> prompt;
  for (int i = 0; i < 230; ++i) prompt.push_back((i * 17 + i / 7) % sp.vocab);
  const PrefillRun dense = run_prefill(*model, prompt, PrefillMode::dense, 1.0f);
  const PrefillRun sparse = run_prefill(*model, prompt, PrefillMode::unisparse, 1.0f);
  EXPECT_EQ(sparse.gen.tokens, dense.gen.tokens);
  EXPECT_LT(max_rel(sparse.logits, dense.logits), 1e-5);
  for (size_t t = 0; t < dense.gen.logits[0].size(); ++t)
    EXPECT_LT(max_rel(sparse.gen.logits[0][t], dense.gen.logits[0][t]), 1e-5) << "step " << t;
  EXPECT_LT(rel_err(sparse.logits.data(), ref.logits(prompt)), 2e-5);
  EXPECT_EQ(dense.gen.prefill_blocks_dense, 0);
  EXPECT_GT(sparse.gen.prefill_blocks_dense, 0);
  EXPECT_EQ(sparse.gen.prefill_blocks_kept, sparse.gen.prefill_blocks_dense);
}

// top_p = 0.9 on a 400-token prompt (25 blocks of 16) keeps fewer blocks and stays close
// to dense. The bound: a row that keeps blocks of true mass m renormalises, so its output
// moves by (1 - m)(mean of the dropped values - mean of the kept ones), at most
// 2 (1 - m) max|v|, i.e. ~0.2 max|v| per layer at m ~ 0.9 in the worst case; here the
// dropped values are averages of many unrelated tokens, so the shift is far smaller
// (measured: max relative logit error 1.7e-2 at top_p 0.9, 8e-2 at 0.5). 5e-2 leaves 3x
// margin for other data yet fails a selection as poor as top_p 0.5.
TEST(EnginePrefill, UnisparseKeepsFewerBlocksAndStaysClose) {
  TinySpec sp;
  auto model = load_gqa_tiny("pf_sparse", sp);
  std::vector<int> prompt;
  for (int i = 0; i < 400; ++i) prompt.push_back((i * 17 + i / 7) % sp.vocab);
  const PrefillRun dense = run_prefill(*model, prompt, PrefillMode::dense, 1.0f);
  const PrefillRun s90 = run_prefill(*model, prompt, PrefillMode::unisparse, 0.9f);
  const PrefillRun s50 = run_prefill(*model, prompt, PrefillMode::unisparse, 0.5f);
  EXPECT_LT(s90.gen.prefill_blocks_kept, s90.gen.prefill_blocks_dense);
  EXPECT_LT(s50.gen.prefill_blocks_kept, s90.gen.prefill_blocks_kept);
  const double e90 = max_rel(s90.logits, dense.logits), e50 = max_rel(s50.logits, dense.logits);
  EXPECT_GT(e90, 0.0) << "nothing dropped changed anything: the case tests nothing";
  EXPECT_LT(e90, 5e-2);
  EXPECT_LT(e90, e50);
  // Decode after a sparse prefill runs over the same cache (every K/V was appended).
  EXPECT_EQ(s90.gen.tokens[0].size(), 6u);
}

// The prefill observer sees, for every chunk and layer, the chunk's queries and the layer's
// cache holding every token so far. The queries are the post-RoPE ones at the right
// positions: the last prompt token's equal, layer by layer, those decode computes for the
// same token at the same position (decode observer), and its keys are in the cache.
TEST(EnginePrefill, ObserverSeesPostRopeQueriesAndTheCache) {
  TinySpec sp;
  auto model = load_gqa_tiny("pf_observer", sp);
  std::vector<int> prompt;
  for (int i = 0; i < 100; ++i) prompt.push_back((i * 7 + 1) % sp.vocab);
  EngineOptions eo;
  eo.attention.estimator = Estimator::dense;
  eo.kv_dtype = DType::f32;
  eo.max_context = 128;
  eo.prefill_chunk = 64;
  const int Hq = sp.heads, D = sp.head_dim;
  struct Call {
    int layer;
    int64_t rows, kv_len;
  };
  std::vector<Call> calls;
  std::vector<std::vector<float>> last_q(sp.layers);  // the prompt's last query, per layer
  Engine pre(*model, eo);
  pre.set_prefill_observer([&](int layer, const TensorView& q, const PagedKV& kv) {
    ASSERT_EQ(q.dtype, DType::f32);
    ASSERT_EQ(q.shape[1], Hq);
    ASSERT_EQ(q.shape[2], D);
    ASSERT_EQ(kv.batch, 1);
    calls.push_back({layer, q.shape[0], seq_len(kv, 0)});
    const float* row = q.ptr<float>() + (q.shape[0] - 1) * q.stride[0];
    last_q[layer].assign(row, row + Hq * D);
  });
  pre.prefill(pre.add_sequence(), prompt, nullptr);
  ASSERT_EQ(calls.size(), size_t(2 * sp.layers));
  for (int l = 0; l < sp.layers; ++l) {
    EXPECT_EQ(calls[l].layer, l);
    EXPECT_EQ(calls[l].rows, 64);
    EXPECT_EQ(calls[l].kv_len, 64);
    EXPECT_EQ(calls[sp.layers + l].rows, 36);
    EXPECT_EQ(calls[sp.layers + l].kv_len, 100);
  }
  Engine dec(*model, eo);
  const int seq = dec.add_sequence();
  dec.prefill(seq, std::vector<int>(prompt.begin(), prompt.end() - 1), nullptr);
  std::vector<std::vector<float>> dec_q(sp.layers);
  dec.set_decode_observer([&](int layer, const TensorView& q, const PagedKV&, const TensorView&) {
    dec_q[layer].assign(q.ptr<float>(), q.ptr<float>() + Hq * D);
  });
  std::vector<float> logits(sp.vocab);
  dec.decode({seq}, {prompt.back()}, logits.data());
  for (int l = 0; l < sp.layers; ++l) EXPECT_LT(max_rel(last_q[l], dec_q[l]), 1e-4) << "layer " << l;
  // Position matters: the same token's queries one position later differ (RoPE).
  Engine shifted(*model, eo);
  const int s2 = shifted.add_sequence();
  shifted.prefill(s2, std::vector<int>(prompt.begin(), prompt.end()), nullptr);
  std::vector<float> q_next;
  shifted.set_decode_observer([&](int layer, const TensorView& q, const PagedKV&, const TensorView&) {
    if (layer == 0) q_next.assign(q.ptr<float>(), q.ptr<float>() + Hq * D);
  });
  dec.set_decode_observer(nullptr);
  shifted.decode({s2}, {prompt.back()}, logits.data());
  EXPECT_GT(max_rel(last_q[0], q_next), 1e-3);
}

// Layers kept dense by dense_layers run the dense prefill: all of them dense gives the
// dense logits bit for bit and counts no sparse blocks; one of two dense counts half.
TEST(EnginePrefill, DenseLayersStayDense) {
  TinySpec sp;
  auto model = load_gqa_tiny("pf_dense_layers", sp);
  std::vector<int> prompt;
  for (int i = 0; i < 200; ++i) prompt.push_back((i * 5 + 3) % sp.vocab);
  const PrefillRun dense = run_prefill(*model, prompt, PrefillMode::dense, 1.0f);
  const PrefillRun all = run_prefill(*model, prompt, PrefillMode::unisparse, 0.5f, sp.layers);
  EXPECT_EQ(all.logits, dense.logits);
  EXPECT_EQ(all.gen.prefill_blocks_dense, 0);
  const PrefillRun none = run_prefill(*model, prompt, PrefillMode::unisparse, 0.5f, 0);
  const PrefillRun one = run_prefill(*model, prompt, PrefillMode::unisparse, 0.5f, 1);
  EXPECT_EQ(2 * one.gen.prefill_blocks_dense, none.gen.prefill_blocks_dense);
  EXPECT_NE(one.logits, dense.logits);
}

}  // namespace
