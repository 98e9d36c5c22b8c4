#pragma once
namespace unique {
inline constexpr const char* kVersion = "0.1.0";
}
