// Subcommands of the `unique` CLI. Each registers its flags on a CLI11 subcommand and
// returns the process exit code when run.
#pragma once
#include <CLI/CLI.hpp>
#include <functional>

namespace unique::cli {

using Runner = std::function<int()>;
// Registers `bench-attention`; the returned runner executes it with the parsed flags.
Runner add_bench_attention(CLI::App& app);

}  // namespace unique::cli
