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
unique_add_error_test(cli_generate_cuda_device "error: --device: expected cpu"
                      $<TARGET_FILE:unique> generate --model ${_tiny} --prompt "x" --device cuda)
unique_add_error_test(cli_generate_missing_model "error: model config .*_does_not_exist/config.json: cannot open"
                      $<TARGET_FILE:unique> generate --model ${_tiny}_does_not_exist --prompt "x")
set_tests_properties(cli_generate_tiny cli_generate_batch_sampled cli_tokenize cli_tokenize_bad_decode
                     cli_generate_empty_prompt cli_generate_too_long cli_generate_bad_attention
                     cli_generate_cuda_device PROPERTIES FIXTURES_REQUIRED tiny_model)
add_test(NAME cli_bench_decode_tiny COMMAND unique bench-decode --shape tiny --context 512 --batch 2 --steps 2
         --bandwidth-gbps 10 --attention dense,unique,quest,mean,oracle)
set_tests_properties(cli_bench_decode_tiny PROPERTIES PASS_REGULAR_EXPRESSION "unique +512")
set_tests_properties(cli_make_tiny_model cli_generate_tiny cli_generate_batch_sampled cli_tokenize
                     cli_generate_empty_prompt cli_generate_too_long cli_generate_bad_attention
                     cli_generate_cuda_device cli_generate_missing_model cli_bench_decode_tiny PROPERTIES LABELS cli)
