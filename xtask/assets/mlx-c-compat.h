/*
 * Forge: compatibility header force-included (`-include`) when building mlx-c
 * from the mlx-sys 0.7.0 sources and when generating its Rust bindings on
 * non-Apple targets. Written by `cargo xtask setup`; see docs/mlx-on-linux.md.
 *
 * 1. mlx/c/half.h declares float16_t / bfloat16_t only on aarch64, so the
 *    float16/bfloat16 entry points that mlx-rs calls vanish on x86_64. mlx-c
 *    passes these values only through pointers and MLX reinterprets the bits,
 *    so a 16-bit integer carrier is ABI-safe. Defining the HAS_* macros here,
 *    before half.h is read, turns the functions on.
 * 2. mlx/c/private/io.h formats five error messages with std::format, which
 *    libstdc++ before 13 lacks. A stand-in for "{}" placeholders is enough for
 *    those messages; it is only compiled when <format> is missing.
 */
#ifndef FORGE_MLX_C_COMPAT_H
#define FORGE_MLX_C_COMPAT_H

#if !defined(__aarch64__) && !defined(__ARM_FEATURE_FP16_SCALAR_ARITHMETIC)
#include <stdint.h>
#ifndef HAS_FLOAT16
#define HAS_FLOAT16
typedef uint16_t float16_t;
#endif
#ifndef HAS_BFLOAT16
#define HAS_BFLOAT16
typedef uint16_t bfloat16_t;
#endif
#endif

#if defined(__cplusplus) && defined(__has_include)
#if !__has_include(<format>)
#include <sstream>
#include <string>
#include <string_view>
namespace std {
namespace forge_compat {
inline void format_into(std::ostringstream& out, std::string_view fmt) {
  out << fmt;
}
template <class T, class... Rest>
void format_into(std::ostringstream& out, std::string_view fmt, const T& value,
                 const Rest&... rest) {
  const auto at = fmt.find("{}");
  if (at == std::string_view::npos) {
    out << fmt;
    return;
  }
  out << fmt.substr(0, at) << value;
  format_into(out, fmt.substr(at + 2), rest...);
}
}  // namespace forge_compat
template <class... Args>
std::string format(std::string_view fmt, const Args&... args) {
  std::ostringstream out;
  forge_compat::format_into(out, fmt, args...);
  return out.str();
}
}  // namespace std
#endif
#endif

#endif /* FORGE_MLX_C_COMPAT_H */
