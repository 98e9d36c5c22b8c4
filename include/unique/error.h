// Errors: every public entry point validates its arguments and throws unique::Error
// naming the argument and the expected vs actual value.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace unique {

class Error : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

// Runtime failure that is not the caller's fault (CUDA error, allocation failure).
class RuntimeError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {
template <class... Args>
std::string concat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
}  // namespace detail

// Throws Error("<arg>: expected <expected>, got <actual>").
template <class E, class A>
[[noreturn]] void throw_arg(const std::string& arg, const E& expected, const A& actual) {
  throw Error(detail::concat(arg, ": expected ", expected, ", got ", actual));
}

// Checks `cond`; the message arguments are evaluated only on failure, so checks inside
// per-page loops cost a compare, not a string build.
#define UNIQUE_CHECK_ARG(cond, arg, expected, actual)               \
  do {                                                              \
    if (!(cond)) ::unique::throw_arg((arg), (expected), (actual));  \
  } while (0)

}  // namespace unique
