# CLI tests of the in-house demo model (models/unique-demo), the default --model, and
# `unique make-prompt` (included from tests/CMakeLists.txt).
set(_dm ${PROJECT_SOURCE_DIR}/models/unique-demo)
set(_pk ${CMAKE_CURRENT_BINARY_DIR}/demo_passkey.txt)
add_test(NAME cli_make_prompt COMMAND unique make-prompt --model ${_dm} --context 1024 --depth 30 --out ${_pk})
set_tests_properties(cli_make_prompt PROPERTIES LABELS cli FIXTURES_SETUP demo_prompt
                     PASS_REGULAR_EXPRESSION "passkey, 1024 tokens, depth 30%, seed 0 -> .*; expected answer: [0-9][0-9][0-9][0-9][0-9]\n")
# No --model: the demo model of the source tree, said on stderr; it decodes the prompt file.
add_test(NAME cli_generate_default_model
         COMMAND unique generate --prompt-file ${_pk} --max-new-tokens 4 --budget 256 --threads 1)
set_tests_properties(cli_generate_default_model PROPERTIES LABELS cli FIXTURES_REQUIRED demo_prompt
                     PASS_REGULAR_EXPRESSION "using the in-house demo model .*models/unique-demo.*decode: [0-9]+ tokens")
unique_add_error_test(cli_default_model_env "error: model config /nonexistent_model/config.json: cannot open"
  ${CMAKE_COMMAND} -E env UNIQUE_MODEL=/nonexistent_model $<TARGET_FILE:unique> generate --prompt x)
unique_add_error_test(cli_make_prompt_bad_task "error: --task: expected passkey, needle, kv or vartrack, got pass"
  $<TARGET_FILE:unique> make-prompt --model ${_dm} --task pass)
unique_add_error_test(cli_make_prompt_bad_depth "error: --depth: expected a percentage in 0..100, got 101"
  $<TARGET_FILE:unique> make-prompt --model ${_dm} --depth 101)
# The trained model really retrieves: pass keys at three depths of 2K tokens of KJV text,
# dense and through UNIQUE sparse decode at 1/8 of the context. Any wrong answer (=0) fails.
set(_dpk ${CMAKE_CURRENT_BINARY_DIR}/demo_passkey_eval.jsonl)
add_test(NAME cli_demo_model_passkey_clean COMMAND ${CMAKE_COMMAND} -E rm -f ${_dpk})
set_tests_properties(cli_demo_model_passkey_clean PROPERTIES FIXTURES_SETUP demo_passkey_clean)
add_test(NAME cli_demo_model_passkey
         COMMAND unique eval --model ${_dm} --tasks passkey --contexts 2048 --depths 10,50,90 --seeds 0
                 --estimators dense,unique --budgets 256 --page-sizes 16 --threads 2
                 --out ${_dpk})
set_tests_properties(cli_demo_model_passkey PROPERTIES LABELS cli FIXTURES_REQUIRED demo_passkey_clean
                     PASS_REGULAR_EXPRESSION "eval: 6 rows written, 0 already"
                     FAIL_REGULAR_EXPRESSION "=0( |\n|$)")
