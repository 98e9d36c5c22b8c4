// The eval harness on the hand-set retrieval model: it retrieves through our engine,
// estimators rank as they must on its real KV cache, sparse decode with a budget >= the
// context answers exactly as dense, and the results file is validated and resumed.
// The haystack is the King James Bible of Debian's bible-kjv-text (scripts/install-deps).
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <map>

#include "engine_test_util.h"
#include "test_util.h"
#include "unique/engine/engine.h"
#include "unique/engine/model.h"
#include "unique/engine/retrieval_model.h"
#include "unique/error.h"
#include "unique/stream.h"
#include "unique/eval/eval.h"
#include "unique/eval/haystack.h"
#include "unique/eval/results.h"
#include "unique/eval/tasks.h"

using namespace unique;
using namespace unique::eval;

namespace {

class EvalHarness : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(enginetest::temp_dir("retrieval_model"));
    engine::write_retrieval_model(*dir_, engine::RetrievalModelOptions{});
  }
  static void TearDownTestSuite() { delete dir_; }
  static const std::string& dir() { return *dir_; }

  EvalOptions options(const std::string& tasks, int64_t context) const {
    EvalOptions o;
    o.model_dir = dir();
    o.tasks = {tasks};
    o.contexts = {context};
    o.page_sizes = {16};
    o.depths = {50};
    o.seeds = {0};
    return o;
  }
  std::string results_path(const std::string& name) const {
    const std::string p = dir() + "/" + name + ".jsonl";
    std::remove(p.c_str());
    return p;
  }

 private:
  static std::string* dir_;
};
std::string* EvalHarness::dir_ = nullptr;

bool have_kjv() {
  std::ifstream f(kKjvPath);
  return static_cast<bool>(f);
}
#define REQUIRE_KJV() \
  ASSERT_TRUE(have_kjv()) << kKjvPath << " missing: install Debian package bible-kjv-text (scripts/install-deps)"

TEST_F(EvalHarness, DensePasskeyExactAtThreeDepthsOf2KTokens) {
  REQUIRE_KJV();
  EvalOptions o = options("passkey", 2048);
  o.estimators = {Estimator::dense};
  o.depths = {10, 50, 90};
  ResultsFile out(results_path("dense_passkey"));
  run_eval(o, out, nullptr);
  ASSERT_EQ(out.rows().size(), 3u);
  for (const Row& r : out.rows()) {
    EXPECT_EQ(r["tokens"], 2048);
    EXPECT_TRUE(r["copyable"].get<bool>());
    EXPECT_TRUE(r["correct"].get<bool>()) << "depth " << r["depth"] << ": expected " << r["expected"] << ", got "
                                          << r["output"];
  }
}

TEST_F(EvalHarness, RecallOrderOracleUniqueRandom) {
  REQUIRE_KJV();
  EvalOptions o = options("recall", 2048);
  o.estimators = {Estimator::oracle, Estimator::unique, Estimator::random};
  o.budgets = {256};
  ResultsFile out(results_path("recall"));
  run_eval(o, out, nullptr);
  std::map<std::string, double> mean;
  std::map<std::string, int> n;
  for (const Row& r : out.rows()) {
    mean[r["estimator"]] += r["recall"].get<double>();
    n[r["estimator"]] += 1;
  }
  ASSERT_EQ(n["oracle"], 8);  // 2 layers x 4 heads
  for (auto& [e, m] : mean) m /= n[e];
  EXPECT_GE(mean["oracle"], mean["unique"]);
  EXPECT_GE(mean["unique"], mean["random"]);
  // Not a tie: at 256 of 2048 tokens a random selection misses most of the needle mass.
  EXPECT_GT(mean["unique"], mean["random"] + 0.05);
}

TEST_F(EvalHarness, BudgetAtLeastContextAnswersAsDense) {
  REQUIRE_KJV();
  for (const char* task : {"passkey", "vartrack"}) {
    EvalOptions o = options(task, 1024);
    o.budgets = {2048};
    ResultsFile out(results_path(std::string("full_budget_") + task));
    run_eval(o, out, nullptr);
    ASSERT_EQ(out.rows().size(), 6u) << task;
    std::string dense;
    for (const Row& r : out.rows())
      if (r["estimator"] == "dense") dense = r["output"];
    ASSERT_FALSE(dense.empty());
    for (const Row& r : out.rows()) {
      EXPECT_EQ(r["output"], dense) << task << " " << r["estimator"];
      EXPECT_TRUE(r["correct"].get<bool>()) << task << " " << r["estimator"];
    }
  }
}

TEST_F(EvalHarness, ResultsFileIsValidatedAndResumed) {
  REQUIRE_KJV();
  EvalOptions o = options("passkey", 512);
  o.estimators = {Estimator::dense, Estimator::mean};
  o.budgets = {256};
  const std::string path = results_path("resume");
  {
    ResultsFile out(path);
    const EvalSummary s = run_eval(o, out, nullptr);
    EXPECT_EQ(s.written, 2);
  }
  ResultsFile again(path);  // re-read: every line passes the schema
  ASSERT_EQ(again.rows().size(), 2u);
  EXPECT_EQ(run_eval(o, again, nullptr).written, 0);
  o.seeds = {0, 1};
  EXPECT_EQ(run_eval(o, again, nullptr).written, 2);
  EXPECT_NE(to_csv(again.rows()).find("task,variant,model,context"), std::string::npos);
  EXPECT_NE(to_markdown(again.rows()).find("| mean |"), std::string::npos);

  // A row missing a metric, a wrong type, a broken line: errors name file:line and field.
  Row bad = again.rows()[0];
  bad.erase("score");
  enginetest::write_text(path, again.rows()[0].dump() + "\n" + bad.dump() + "\n");
  try {
    ResultsFile f(path);
    FAIL() << "accepted a row without score";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(path + ":2: expected field \"score\""), std::string::npos) << e.what();
  }
  Row wrong = again.rows()[0];
  wrong["budget"] = "many";
  EXPECT_THROW(validate_row(wrong, "x"), Error);
  enginetest::write_text(path, "{\"task\": \"passkey\"\n");
  try {
    ResultsFile f(path);
    FAIL() << "accepted broken JSON";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(":1: expected one JSON object per line"), std::string::npos) << e.what();
  }
}

TEST_F(EvalHarness, TasksBuildCopyablePromptsOfTheAskedLength) {
  REQUIRE_KJV();
  const engine::Tokenizer tok = engine::Tokenizer::from_file(dir() + "/tokenizer.json");
  const Haystack hay(load_haystack_text("kjv"), tok);
  const SampleSpec s{1024, 0.3, 7};
  for (const Sample& x : {make_passkey(hay, tok, s), make_needle(hay, tok, s), make_kv(hay, tok, s, false),
                          make_vartrack(hay, tok, s, 3)}) {
    EXPECT_EQ(x.prompt.size(), 1024u) << x.task;
    EXPECT_TRUE(x.copyable) << x.task;
    EXPECT_FALSE(x.hops.empty());
  }
  EXPECT_EQ(make_vartrack(hay, tok, s, 3).hops.size(), 3u);
  EXPECT_THROW(make_passkey(hay, tok, SampleSpec{40, 0.5, 0}), Error);
}

TEST(EvalScoring, Hops) {
  Hop num{{}, "58213", AnswerKind::number, 8};
  EXPECT_EQ(score_hop(num, " 58213. Remember"), 1.0);
  EXPECT_EQ(score_hop(num, " 582130"), 0.0);
  EXPECT_EQ(score_hop(num, " the 58213"), 1.0);  // the first number counts
  EXPECT_EQ(score_hop(num, ""), 0.0);
  Hop words{{}, "violin pepper kettle", AnswerKind::words, 8};
  EXPECT_EQ(score_hop(words, " Violin pepper kettle."), 1.0);
  EXPECT_EQ(score_hop(words, " violin pepper"), 0.0);
  Hop all{{}, "111 222 333 444", AnswerKind::all_numbers, 8};
  EXPECT_DOUBLE_EQ(score_hop(all, "222, 444 and 999"), 0.5);
}

TEST(EvalHaystack, CleanTextDropsReferencesAndDigits) {
  EXPECT_EQ(clean_text("Ge1:1 In the beginning 12 God\nGe1:2 And  the earth.\n"),
            "In the beginning God And the earth.");
  EXPECT_EQ(clean_text("time: 10:30 is   late"), "time: : is late");
}

TEST(EvalHaystack, BibleDataReaderRejectsCorruptFiles) {
  const std::string d = enginetest::temp_dir("bible");
  auto expect_error = [&](const std::string& bytes, const std::string& what) {
    enginetest::write_text(d + "/b.data", bytes);
    try {
      read_bible_data(d + "/b.data");
      FAIL() << "accepted: " << what;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
    }
  };
  expect_error("EC02", "expected a file starting with \"EC02\"");
  std::string h = "EC02" + std::string(80, '\0');
  auto be = [](uint32_t v) {
    return std::string{char(v >> 24), char((v >> 16) & 255), char((v >> 8) & 255), char(v & 255)};
  };
  expect_error(h + be(65536) + be(1000000), "window count: expected a table that fits the file");
  expect_error(h + be(0) + be(1) + be(0) + be(0), "window size: expected 64..16777216");
  const std::string hdr = h + be(64) + be(1) + be(99) + be(200) + "\x1f\x9d\x90";
  expect_error(hdr, "offsets: expected increasing and inside the file");
  // Codes that refer past the table.
  expect_error(h + be(64) + be(1) + be(103) + be(107) + "\x1f\x9d\x90" + std::string("\x41\xfe\x03\x00", 4),
               "expected a code <=");
  expect_error(h + be(64) + be(1) + be(96) + be(96), "expected a compress(1) header");
  EXPECT_THROW(load_haystack_text(d + "/nope.txt"), Error);
  if (have_kjv()) {
    const std::string kjv = read_bible_data(kKjvPath);
    EXPECT_EQ(kjv.size(), 4404475u);
    EXPECT_EQ(kjv.rfind("Holy Bible, Authorized (King James) Version.", 0), 0u);
    EXPECT_NE(kjv.find("Rev22:21 The grace of our Lord Jesus Christ be with you all. Amen."), std::string::npos);
  }
}

TEST_F(EvalHarness, ForkedSequenceDecodesAsTheOriginal) {
  auto model = engine::Model::load(dir());
  engine::EngineOptions eo;
  eo.attention.estimator = Estimator::unique;
  eo.attention.budget_tokens = 32;
  eo.kv_dtype = DType::f32;
  eo.max_context = 200;
  eo.max_batch = 2;
  engine::Engine eng(*model, eo);
  const int a = eng.add_sequence();
  std::vector<int> toks;
  for (int i = 0; i < 150; ++i) toks.push_back((i * 37 + 11) % 600);
  eng.prefill(a, toks, nullptr);
  const int b = eng.fork_sequence(a);
  EXPECT_EQ(eng.length(b), 150);
  const int V = model->config().vocab_size;
  std::vector<float> la(V), lb(V);
  for (int t : {5, 6, 7}) {
    eng.decode({a}, {t}, la.data());
    eng.decode({b}, {t}, lb.data());
    EXPECT_EQ(la, lb);
  }
  EXPECT_THROW(eng.fork_sequence(a), Error);  // the pool holds two sequences of 200 tokens
}

TEST(RetrievalModel, RefusesAConstructionItCannotCheck) {
  const std::string d = enginetest::temp_dir("bad_retrieval");
  engine::RetrievalModelOptions o;
  o.rope_theta = 1e4;  // content pairs rotate over the context
  EXPECT_THROW(engine::write_retrieval_model(d, o), Error);
  o = {};
  o.position_logit = 50;  // 50 x 0.185 < 20 nats
  EXPECT_THROW(engine::write_retrieval_model(d, o), Error);
  o = {};
  o.code_dim = 100;  // 3 x 100 > head_dim 256
  EXPECT_THROW(engine::write_retrieval_model(d, o), Error);
}

}  // namespace

namespace unique::eval::detail {
std::string utf8_or_marks(const std::string& s);
}

TEST(EvalText, GeneratedBytesBecomeValidUtf8) {
  using unique::eval::detail::utf8_or_marks;
  EXPECT_EQ(utf8_or_marks("caf\xc3\xa9 ok"), "caf\xc3\xa9 ok");
  EXPECT_EQ(utf8_or_marks("a\xc3 b"), "a? b");     // a lead byte before a space
  EXPECT_EQ(utf8_or_marks("\x80x\xe2\x82"), "?x??");  // stray continuation, cut sequence
}

// --prefill unisparse: top_p 1 keeps every key block, so every row (answers, scores,
// perplexity) equals the dense-prefill row; the rows carry the prefill mode and get keys of
// their own (both live in one results file); a lower top_p keeps fewer blocks.
TEST_F(EvalHarness, UnisparsePrefillTopPOneWritesTheDenseRows) {
  REQUIRE_KJV();
  EvalOptions o = options("passkey", 1024);
  o.tasks = {"passkey", "ppl"};
  o.estimators = {Estimator::dense, Estimator::unique};
  o.budgets = {256};
  o.ppl_prefix = 700;  // the prefill covers 11 blocks of 64: something to select
  const std::string path = results_path("prefill_modes");
  ResultsFile out(path);
  EXPECT_EQ(run_eval(o, out, nullptr).written, 4);
  o.prefill = PrefillMode::unisparse;
  o.prefill_top_p = 1.0f;
  EXPECT_EQ(run_eval(o, out, nullptr).written, 4);  // not taken for the dense rows
  EXPECT_EQ(run_eval(o, out, nullptr).written, 0);  // resumed
  ASSERT_EQ(out.rows().size(), 8u);
  for (int i = 0; i < 4; ++i) {
    Row d = out.rows()[i], s = out.rows()[4 + i];
    EXPECT_EQ(d["prefill"], "dense");
    EXPECT_EQ(s["prefill"], "unisparse");
    EXPECT_EQ(s["prefill_top_p"], 1.0);
    EXPECT_EQ(s["prefill_kept"], 1.0);
    EXPECT_NE(d["key"], s["key"]);
    for (const char* f : {"key", "time_s", "prefill_s", "prefill", "prefill_top_p", "prefill_block", "pool",
                          "prefill_kept"}) {
      d.erase(f);
      s.erase(f);
    }
    EXPECT_EQ(d, s) << "row " << i;
  }
  o.prefill_top_p = 0.5f;
  ResultsFile half(results_path("prefill_half"));
  EXPECT_EQ(run_eval(o, half, nullptr).written, 4);
  for (const Row& r : half.rows()) {
    EXPECT_EQ(r["prefill_top_p"], 0.5);
    EXPECT_LT(r["prefill_kept"].get<double>(), 1.0) << r.dump();
  }
  EXPECT_NE(to_markdown(half.rows()).find("passkey, prefill unisparse top-p 0.5"), std::string::npos);
  // The fixed top-k baseline: rows carry prefill_top_k, keys and tables of their own, and 2
  // blocks per query block keep less than top-p 0.5 does here.
  o.prefill_top_k = 2;
  ResultsFile topk(results_path("prefill_topk"));
  EXPECT_EQ(run_eval(o, topk, nullptr).written, 4);
  for (size_t i = 0; i < topk.rows().size(); ++i) {
    const Row& r = topk.rows()[i];
    EXPECT_EQ(r["prefill_top_k"], 2);
    EXPECT_NE(r["key"], half.rows()[i]["key"]);
    EXPECT_LT(r["prefill_kept"].get<double>(), half.rows()[i]["prefill_kept"].get<double>()) << r.dump();
  }
  EXPECT_NE(to_markdown(topk.rows()).find("passkey, prefill unisparse top-k 2 blocks"), std::string::npos);
  o.prefill_top_k = 1;
  EXPECT_ERROR_MSG(o.validate(), "--prefill-top-k");
}

// Rows written before the prefill field existed read as dense-prefill rows: same key.
// A bad prefill field is refused naming it.
TEST_F(EvalHarness, CudaDeviceOptionsAreCheckedAndKeyed) {
  EvalOptions o = options("passkey", 1024);
  o.device = Device::cuda;
  o.tasks = {"passkey", "recall"};
  EXPECT_ERROR_MSG(o.validate(), "no `recall` with --device cuda");
  o.tasks = {"passkey"};
  o.kv_dtype = "fp32";
  EXPECT_ERROR_MSG(o.validate(), "--kv-dtype");
  o.kv_dtype = "auto";
  EXPECT_NO_THROW(o.validate());
  // A CUDA row is keyed apart from the CPU row of the same sweep point; a bad device is refused.
  Row cpu = {{"task", "passkey"}, {"variant", ""}, {"model", "m"}, {"context", 1024}, {"tokens", 1000},
             {"depth", 50.0}, {"seed", 0}, {"estimator", "unique"}, {"budget", 256}, {"page_size", 16},
             {"dense_layers", 0}, {"sink", 1}, {"recent", 1}, {"kv_dtype", "bf16"}, {"time_s", 0.5},
             {"score", 1.0}, {"correct", true}, {"expected", "1"}, {"output", "1"}, {"copyable", true}};
  Row cuda = cpu;
  cuda["device"] = "cuda";
  EXPECT_NE(row_key(cpu), row_key(cuda));
  Row cpu2 = cpu;
  cpu2["device"] = "cpu";
  EXPECT_EQ(row_key(cpu), row_key(cpu2));
  cuda["key"] = row_key(cuda);
  EXPECT_NO_THROW(validate_row(cuda, "x"));
  Row bad = cuda;
  bad["device"] = "tpu";
  EXPECT_ERROR_MSG(validate_row(bad, "x"), "device");
  // Without a GPU (or a build without CUDA) the sweep stops at its first engine with the
  // engine's message naming the device (with one, gpu-check's eval_cuda step runs the CUDA
  // sweep against the CPU one).
  if (!cuda_available()) {
    ResultsFile out(results_path("cuda_no_gpu"));
    EXPECT_ERROR_MSG(run_eval(o, out, nullptr), "device: expected");
  }
}

TEST(EvalResults, PrefillFieldIsOptionalAndChecked) {
  Row r = parse_row(R"({"budget":256,"context":4096,"copyable":true,"correct":true,"dense_layers":0,"depth":10.0,)"
                    R"("estimator":"unique","expected":"93326","key":"passkey||m|4096|10.0|0|unique|256|16|0|1|1|fp32|-|-",)"
                    R"("kv_dtype":"fp32","model":"m","output":" 93326","page_size":16,"recent":1,"score":1.0,"seed":0,)"
                    R"("sink":1,"task":"passkey","time_s":0.07,"tokens":4096,"variant":""})",
                    "old");
  Row dense = r;
  dense["prefill"] = "dense";
  EXPECT_EQ(row_key(dense), row_key(r));
  EXPECT_NO_THROW(validate_row(dense, "x"));
  Row bad = r;
  bad["prefill"] = "sparse";
  try {
    validate_row(bad, "x");
    FAIL() << "accepted prefill sparse";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("field prefill: expected dense or unisparse"), std::string::npos) << e.what();
  }
  Row sp = r;
  sp.erase("key");
  sp["prefill"] = "unisparse";
  EXPECT_THROW(validate_row(sp, "x"), Error);  // no prefill_top_p
  sp["prefill_top_p"] = 0.9;
  sp["prefill_block"] = 64;
  sp["pool"] = 8;
  EXPECT_NO_THROW(validate_row(sp, "x"));
  EXPECT_NE(row_key(sp), row_key(r));
  Row tk = sp;
  tk["prefill_top_k"] = 1;
  EXPECT_THROW(validate_row(tk, "x"), Error);  // >= 2
  tk["prefill_top_k"] = 12;
  EXPECT_NO_THROW(validate_row(tk, "x"));
  EXPECT_NE(row_key(tk), row_key(sp));
}

// Composite-estimator rows carry their block (--pool) and are keyed by it; one without it is
// refused naming the field.
TEST(EvalResults, CompositeRowsAreKeyedByPool) {
  Row r = parse_row(R"({"budget":256,"context":4096,"copyable":true,"correct":true,"dense_layers":0,"depth":10.0,)"
                    R"("estimator":"composite","expected":"93326","kv_dtype":"fp32","model":"m","output":" 93326",)"
                    R"("page_size":16,"pool":8,"recent":1,"score":1.0,"seed":0,"sink":1,"task":"passkey",)"
                    R"("time_s":0.07,"tokens":4096,"variant":""})",
                    "composite");
  EXPECT_NO_THROW(validate_row(r, "x"));
  Row r4 = r;
  r4["pool"] = 4;
  EXPECT_NE(row_key(r4), row_key(r));
  Row u = r;
  u["estimator"] = "unique";
  u.erase("pool");
  EXPECT_NE(row_key(u), row_key(r));
  Row bad = r;
  bad.erase("pool");
  EXPECT_ERROR_MSG(validate_row(bad, "x"), "pool");
  // A unisparse-prefill row already carries the pool once (its prefill settings): the key of a
  // composite row written before prefill_top_k existed stays what it was.
  Row sp = r;
  sp["prefill"] = "unisparse";
  sp["prefill_top_p"] = 0.9;
  sp["prefill_block"] = 64;
  const std::string dense_key = row_key(r);  // ends with the composite's "|8"
  EXPECT_EQ(row_key(sp), dense_key.substr(0, dense_key.size() - 2) + "|unisparse|0.9|64|8");
}
