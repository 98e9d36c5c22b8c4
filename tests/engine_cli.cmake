# CLI tests of the engine subcommands (included from tests/CMakeLists.txt).
set(_tiny ${CMAKE_CURRENT_BINARY_DIR}/tiny_model)
add_test(NAME cli_make_tiny_model COMMAND unique make-tiny-model --out ${_tiny})
set_tests_properties(cli_make_tiny_model PROPERTIES FIXTURES_SETUP tiny_model)
add_test(NAME cli_generate_tiny COMMAND unique generate --model ${_tiny} --prompt "The page statistics"
         --max-new-tokens 8 --attention unique --budget 32 --page-size 16)
set_tests_properties(cli_generate_tiny PROPERTIES PASS_REGULAR_EXPRESSION "decode: [0-9]+ tokens in .*tokens/s")
add_test(NAME cli_generate_batch_sampled COMMAND unique generate --model ${_tiny} --prompt "a" --prompt "a longer prompt"
         --max-new-tokens 5 --temperature 0.8 --top-k 20 --top-p 0.9 --seed 3 --attention quest --dense-layers 1)
add_test(NAME cli_generate_ids_dump COMMAND unique generate --model ${_tiny} --prompt-ids "1,2,3" --prompt-ids "4"
         --max-new-tokens 4 --attention dense --dump-logits ${CMAKE_CURRENT_BINARY_DIR}/tiny_logits.json --quiet)
set_tests_properties(cli_generate_ids_dump PROPERTIES FIXTURES_REQUIRED tiny_model LABELS cli)
add_test(NAME cli_tokenize COMMAND unique tokenize --model ${_tiny} --text "hello")
set_tests_properties(cli_tokenize PROPERTIES PASS_REGULAR_EXPRESSION "^\\[[0-9]+,")
unique_add_error_test(cli_tokenize_bad_decode "error: --decode: expected comma-separated ids in 0\\.\\.[0-9]+, got x"
                      $<TARGET_FILE:unique> tokenize --model ${_tiny} --decode "1,x")
unique_add_error_test(cli_generate_empty_prompt "error: prompt 0: expected a non-empty text"
                      $<TARGET_FILE:unique> generate --model ${_tiny} --prompt-file /dev/null)
unique_add_error_test(cli_generate_too_long "error: prompt 0 length \\+ max_new_tokens: expected <= max_context \\(4 tokens"
                      $<TARGET_FILE:unique> generate --model ${_tiny} --prompt "x" --max-new-tokens 10 --max-context 4)
unique_add_error_test(cli_generate_bad_attention "error: estimator: expected one of .*got nope"
                      $<TARGET_FILE:unique> generate --model ${_tiny} --prompt "x" --attention nope)
unique_add_error_test(cli_generate_bad_device "error: --device: expected cpu or cuda, got gpu"
                      $<TARGET_FILE:unique> generate --model ${_tiny} --prompt "x" --device gpu)
# CI has no GPU (or no CUDA build): a clear refusal, not a crash.
unique_add_error_test(cli_generate_cuda_device
                      "error: device: expected (a visible CUDA GPU for --device cuda, got none found|cpu \\(this build has no CUDA)"
                      $<TARGET_FILE:unique> generate --model ${_tiny} --prompt "x" --device cuda)
unique_add_error_test(cli_generate_missing_model "error: model config .*_does_not_exist/config.json: cannot open"
                      $<TARGET_FILE:unique> generate --model ${_tiny}_does_not_exist --prompt "x")
set_tests_properties(cli_generate_tiny cli_generate_batch_sampled cli_tokenize cli_tokenize_bad_decode
                     cli_generate_empty_prompt cli_generate_too_long cli_generate_bad_attention
                     cli_generate_cuda_device cli_generate_bad_device PROPERTIES FIXTURES_REQUIRED tiny_model)
add_test(NAME cli_bench_decode_tiny COMMAND unique bench-decode --shape tiny --context 512 --batch 2 --steps 2
         --bandwidth-gbps 10 --attention dense,unique,quest,mean,oracle)
set_tests_properties(cli_bench_decode_tiny PROPERTIES PASS_REGULAR_EXPRESSION "unique +512")
set_tests_properties(cli_make_tiny_model cli_generate_tiny cli_generate_batch_sampled cli_tokenize
                     cli_generate_empty_prompt cli_generate_too_long cli_generate_bad_attention
                     cli_generate_cuda_device cli_generate_bad_device cli_generate_missing_model cli_bench_decode_tiny
                     PROPERTIES LABELS cli)

# UniSparse prefill flags: a prompt of ~300 tokens (19 blocks of 16) really drops blocks.
string(REPEAT "The page statistics of the key blocks. " 20 _long_prompt)
add_test(NAME cli_generate_unisparse COMMAND unique generate --model ${_tiny} --prompt "${_long_prompt}"
         --max-new-tokens 4 --quiet --prefill unisparse --prefill-top-p 0.8 --prefill-block 16 --pool 4)
set_tests_properties(cli_generate_unisparse PROPERTIES PASS_REGULAR_EXPRESSION
                     "prefill unisparse \\(top-p 0\\.80, block 16, pool 4\\).*key blocks kept [0-9]+\\.[0-9]%")
add_test(NAME cli_bench_decode_prefill_fill COMMAND unique bench-decode --shape tiny --context 300 --steps 1
         --bandwidth-gbps 10 --attention dense,unique --fill prefill --prefill unisparse --prefill-top-p 0.8
         --prefill-block 32 --pool 8)
set_tests_properties(cli_bench_decode_prefill_fill PROPERTIES PASS_REGULAR_EXPRESSION
                     "unisparse prefill of random tokens \\(top-p 0\\.80, block 32, pool 8: key blocks kept")
# The fixed top-k baseline's flag: its settings in the header, and a count below 2 refused.
add_test(NAME cli_generate_prefill_top_k COMMAND unique generate --model ${_tiny} --prompt "${_long_prompt}"
         --max-new-tokens 4 --quiet --prefill unisparse --prefill-top-k 3 --prefill-block 16 --pool 4)
set_tests_properties(cli_generate_prefill_top_k PROPERTIES PASS_REGULAR_EXPRESSION
                     "prefill unisparse \\(top-k 3 blocks, block 16, pool 4\\).*key blocks kept [0-9]+\\.[0-9]%")
unique_add_error_test(cli_generate_bad_prefill_top_k "error: prefill_top_k: expected 0 \\(the top_p rule\\) or >= 2"
                      $<TARGET_FILE:unique> generate --model ${_tiny} --prompt "x" --prefill unisparse --prefill-top-k 1)
unique_add_error_test(cli_generate_bad_prefill "error: prefill: expected one of dense, unisparse, got sparse"
                      $<TARGET_FILE:unique> generate --model ${_tiny} --prompt "x" --prefill sparse)
unique_add_error_test(cli_generate_bad_pool "error: pool: expected a divisor of prefill_block \\(64\\), got 7"
                      $<TARGET_FILE:unique> generate --model ${_tiny} --prompt "x" --prefill unisparse --pool 7)
unique_add_error_test(cli_generate_bad_prefill_top_p "error: top_p: expected in \\(0, 1\\], got 1.5"
                      $<TARGET_FILE:unique> generate --model ${_tiny} --prompt "x" --prefill-top-p 1.5)
unique_add_error_test(cli_generate_bad_prefill_block "error: prefill_block: expected a multiple of 16 in 16..256, got 40"
                      $<TARGET_FILE:unique> generate --model ${_tiny} --prompt "x" --prefill-block 40)
unique_add_error_test(cli_bench_decode_prefill_needs_fill
                      "error: --prefill: expected dense with --fill synthetic .*got unisparse"
                      $<TARGET_FILE:unique> bench-decode --shape tiny --context 64 --prefill unisparse)
unique_add_error_test(cli_bench_decode_bad_fill "error: --fill: expected synthetic or prefill, got model"
                      $<TARGET_FILE:unique> bench-decode --shape tiny --context 64 --fill model)
set_tests_properties(cli_generate_unisparse cli_generate_bad_prefill cli_generate_bad_pool
                     cli_generate_bad_prefill_top_p cli_generate_bad_prefill_block cli_generate_prefill_top_k
                     cli_generate_bad_prefill_top_k PROPERTIES FIXTURES_REQUIRED tiny_model)
set_tests_properties(cli_generate_unisparse cli_bench_decode_prefill_fill cli_generate_prefill_top_k PROPERTIES LABELS cli)
# bench-prefill --model: composite vs exact block mass on a model's own queries and keys, a
# table row per layer (the tiny random model, the source tree's CMakeLists.txt as prompt).
add_test(NAME cli_bench_prefill_model COMMAND unique bench-prefill --model ${_tiny}
         --prompt-file ${PROJECT_SOURCE_DIR}/CMakeLists.txt --context 256 --top-p 0.9 --prefill-block 32 --pool 4
         --rank-blocks 0 --threads 1)
set_tests_properties(cli_bench_prefill_model PROPERTIES FIXTURES_REQUIRED tiny_model LABELS cli
                     PASS_REGULAR_EXPRESSION "\\| 3 \\| [-0-9.]+ \\| [-0-9.]+ \\| [-0-9.]+ \\| [0-9.]+% \\|.*mean over layers: rho [-0-9.]+, pooled")
file(WRITE ${CMAKE_CURRENT_BINARY_DIR}/short_prompt.txt "A prompt far shorter than the context.")
unique_add_error_test(cli_bench_prefill_model_short_prompt
  "error: --prompt-file: expected at least --context \\(256\\) tokens, got .*short_prompt.txt: [0-9]+ tokens"
  $<TARGET_FILE:unique> bench-prefill --model ${_tiny} --prompt-file ${CMAKE_CURRENT_BINARY_DIR}/short_prompt.txt
  --context 256)
set_tests_properties(cli_bench_prefill_model_short_prompt PROPERTIES FIXTURES_REQUIRED tiny_model)
