# CLI tests of `unique make-retrieval-model` and `unique eval` (included from tests/CMakeLists.txt).
set(_rm ${CMAKE_CURRENT_BINARY_DIR}/retrieval_model)
set(_ev ${CMAKE_CURRENT_BINARY_DIR}/eval_smoke)
add_test(NAME cli_make_retrieval_model COMMAND unique make-retrieval-model --out ${_rm})
set_tests_properties(cli_make_retrieval_model PROPERTIES FIXTURES_SETUP retrieval_model
                     PASS_REGULAR_EXPRESSION "wrote .*vocab [0-9]+, fp32.*positional gap 0\\.1[0-9]+")
add_test(NAME cli_eval_clean COMMAND ${CMAKE_COMMAND} -E rm -rf ${_ev}.jsonl ${_ev}.csv ${_ev}.md ${_ev}_plots
         ${_ev}_tiny.jsonl)
set_tests_properties(cli_eval_clean PROPERTIES FIXTURES_SETUP eval_clean)
add_test(NAME cli_eval_help COMMAND unique eval --help)
set_tests_properties(cli_eval_help PROPERTIES PASS_REGULAR_EXPRESSION
                     "--model.*--tasks.*--estimators.*--budgets.*--page-sizes.*--contexts.*--depths.*--seeds.*--out.*--csv.*--plot.*--markdown")
# A small sweep: rows are written, then a second run finds them all (resume).
set(_smoke unique eval --model ${_rm} --tasks passkey,recall --contexts 1024 --depths 50 --estimators dense,unique,oracle,random
           --budgets 256 --page-sizes 16 --threads 1 --out ${_ev}.jsonl)
add_test(NAME cli_eval_smoke COMMAND ${_smoke} --csv ${_ev}.csv --markdown ${_ev}.md)
set_tests_properties(cli_eval_smoke PROPERTIES FIXTURES_REQUIRED "retrieval_model;eval_clean" FIXTURES_SETUP eval_rows
                     PASS_REGULAR_EXPRESSION "eval: 36 rows written, 0 already")
add_test(NAME cli_eval_resume COMMAND ${_smoke})
set_tests_properties(cli_eval_resume PROPERTIES FIXTURES_REQUIRED "retrieval_model;eval_rows"
                     PASS_REGULAR_EXPRESSION "eval: 0 rows written, 36 already")
add_test(NAME cli_eval_plot COMMAND ${_smoke} --plot ${_ev}_plots)
set_tests_properties(cli_eval_plot PROPERTIES FIXTURES_REQUIRED "retrieval_model;eval_rows" DEPENDS cli_eval_resume
                     PASS_REGULAR_EXPRESSION "plot_eval: wrote 2 plots .*passkey_1024.png, recall_1024_p16_b256.png")
# Any model directory: the random GQA bf16 tiny model (8 query / 2 KV heads, 4 layers).
add_test(NAME cli_eval_tiny_gqa COMMAND $<TARGET_FILE:unique> eval --model ${CMAKE_CURRENT_BINARY_DIR}/tiny_model --tasks passkey,ppl,recall
         --contexts 512 --depths 50 --ppl-prefix 384 --estimators dense,unique,quest --budgets 64 --page-sizes 16,32 --threads 1
         --out ${_ev}_tiny.jsonl --quiet)
set_tests_properties(cli_eval_tiny_gqa PROPERTIES FIXTURES_REQUIRED "tiny_model;eval_clean" LABELS cli
                     PASS_REGULAR_EXPRESSION "eval: 204 rows written, 0 already")
file(WRITE ${CMAKE_CURRENT_BINARY_DIR}/eval_bad_results.jsonl "{\"task\": \"passkey\", \"estimator\": \"unique\"}\n")
set(_bad unique eval --model ${_rm} --contexts 1024 --threads 1)
unique_add_error_test(cli_eval_bad_task
  "error: --tasks: expected a comma-separated subset of passkey, needle, kv, vartrack, ppl, recall, got foo"
  $<TARGET_FILE:unique> eval --model ${_rm} --tasks passkey,foo)
unique_add_error_test(cli_eval_bad_budget
  "error: --budgets: expected budgets >= the largest --page-sizes value \\(64\\), got 32"
  $<TARGET_FILE:unique> eval --model ${_rm} --budgets 32,256 --page-sizes 16,64)
unique_add_error_test(cli_eval_bad_depth "error: --depths: expected percentages in 0..100, got 120"
  $<TARGET_FILE:unique> eval --model ${_rm} --depths 50,120)
unique_add_error_test(cli_eval_bad_context "error: --contexts: expected comma-separated non-negative integers, got 4k"
  $<TARGET_FILE:unique> eval --model ${_rm} --contexts 4k)
unique_add_error_test(cli_eval_huge_budget "error: --budgets: expected comma-separated non-negative integers, got 1e30"
  $<TARGET_FILE:unique> eval --model ${_rm} --budgets 256,1e30)
unique_add_error_test(cli_eval_bad_page "error: --page-sizes: expected values among 16, 32, 64, got 8"
  $<TARGET_FILE:unique> eval --model ${_rm} --page-sizes 8 --budgets 256)
unique_add_error_test(cli_eval_bad_estimator "error: estimator: expected one of .*got nope"
  $<TARGET_FILE:unique> eval --model ${_rm} --estimators unique,nope)
unique_add_error_test(cli_eval_too_long
  "error: --contexts: expected <= max_position_embeddings - 64 of .* \\(32704\\), got 40000"
  $<TARGET_FILE:unique> eval --model ${_rm} --contexts 40000 --tasks passkey --out ${_ev}_unused.jsonl)
unique_add_error_test(cli_eval_missing_haystack
  "error: --haystack: expected kjv or a readable text file, got /nonexistent/haystack.txt: cannot open"
  $<TARGET_FILE:unique> eval --model ${_rm} --haystack /nonexistent/haystack.txt --tasks passkey --out ${_ev}_unused.jsonl)
unique_add_error_test(cli_eval_corrupt_results
  "error: .*eval_bad_results.jsonl:1: expected field \"model\", got none"
  $<TARGET_FILE:unique> eval --model ${_rm} --out ${CMAKE_CURRENT_BINARY_DIR}/eval_bad_results.jsonl)
unique_add_error_test(cli_eval_missing_model "error: model config .*_does_not_exist/config.json: cannot open"
  $<TARGET_FILE:unique> eval --model ${_rm}_does_not_exist --tasks passkey --out ${_ev}_unused.jsonl)
set_tests_properties(cli_eval_huge_budget cli_eval_bad_task cli_eval_bad_budget cli_eval_bad_depth cli_eval_bad_context cli_eval_bad_page
                     cli_eval_bad_estimator cli_eval_too_long cli_eval_missing_haystack cli_eval_corrupt_results
                     PROPERTIES FIXTURES_REQUIRED retrieval_model)
set_tests_properties(cli_make_retrieval_model cli_eval_clean cli_eval_help cli_eval_smoke cli_eval_resume cli_eval_plot
                     PROPERTIES LABELS cli)
# --prefill: the flag is named in the error; so is --prefill-top-p out of range.
unique_add_error_test(cli_eval_bad_prefill "error: --prefill: expected dense or unisparse, got sparse"
  $<TARGET_FILE:unique> eval --model ${_rm} --prefill sparse --out ${_ev}_unused.jsonl)
unique_add_error_test(cli_eval_bad_prefill_top_p "error: --prefill-top-p: expected in \\(0, 1\\], got 0"
  $<TARGET_FILE:unique> eval --model ${_rm} --prefill unisparse --prefill-top-p 0 --out ${_ev}_unused.jsonl)
unique_add_error_test(cli_eval_bad_prefill_top_k "error: --prefill-top-k: expected 0 \\(use --prefill-top-p\\) or >= 2, got 1"
  $<TARGET_FILE:unique> eval --model ${_rm} --prefill unisparse --prefill-top-k 1 --out ${_ev}_unused.jsonl)
# scripts/compare-eval-devices (gpu-check's CPU vs --device cuda check) on the H100 sweep of
# docs/eval/cuda-2026-11-24, and on a copy whose unique perplexity is 5% off: it must say so.
set(_evd ${CMAKE_SOURCE_DIR}/docs/eval/cuda-2026-11-24)
add_test(NAME compare_eval_devices COMMAND python3 ${CMAKE_SOURCE_DIR}/scripts/compare-eval-devices
         ${_evd}/eval_cpu.jsonl ${_evd}/eval_cuda.jsonl)
set_tests_properties(compare_eval_devices PROPERTIES PASS_REGULAR_EXPRESSION "6 of 6 groups agree")
add_test(NAME compare_eval_devices_detects COMMAND python3 ${CMAKE_SOURCE_DIR}/scripts/compare-eval-devices
         ${_evd}/eval_cpu.jsonl ${CMAKE_CURRENT_SOURCE_DIR}/data/eval_cuda_ppl_off.jsonl)
set_tests_properties(compare_eval_devices_detects PROPERTIES
                     PASS_REGULAR_EXPRESSION "ppl +unique +256 +16 +2048 +2.3020 +2.41[0-9]+ +FAIL \\(ppl\\).*5 of 6 groups agree")
