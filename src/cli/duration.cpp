// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#include "duration.hpp"

#include <fmt/format.h>

#include <cstdint>

#include "errors.hpp"

namespace convstore::cli {

namespace {

constexpr std::int64_t kMaxSeconds = 100LL * 366 * 86400;

[[noreturn]] void bad(std::string_view text, std::string_view why) {
  throw UsageError(fmt::format(
      "invalid duration '{}': {} (expected e.g. 30d, 24h, 90m, 45s, 1h30m)", text, why));
}

}  // namespace

std::chrono::seconds parse_duration(std::string_view text) {
  if (text.empty()) bad(text, "it is empty");
  std::int64_t total = 0;
  std::size_t i = 0;
  while (i < text.size()) {
    std::int64_t n = 0;
    std::size_t digits = 0;
    while (i < text.size() && text[i] >= '0' && text[i] <= '9') {
      n = n * 10 + (text[i] - '0');
      if (n > kMaxSeconds) bad(text, "it is longer than 100 years");
      ++i;
      ++digits;
    }
    if (digits == 0) bad(text, "a number must come before each unit");
    if (i == text.size()) bad(text, "the unit is missing after the number");
    std::int64_t unit = 0;
    switch (text[i]) {
      case 's':
        unit = 1;
        break;
      case 'm':
        unit = 60;
        break;
      case 'h':
        unit = 3600;
        break;
      case 'd':
        unit = 86400;
        break;
      case 'w':
        unit = 7 * 86400;
        break;
      default:
        bad(text, fmt::format("unknown unit '{}' (s, m, h, d or w)", text[i]));
    }
    ++i;
    if (n > kMaxSeconds / unit || total + n * unit > kMaxSeconds) {
      bad(text, "it is longer than 100 years");
    }
    total += n * unit;
  }
  if (total == 0) bad(text, "it must be greater than zero");
  return std::chrono::seconds(total);
}

std::string format_duration(std::chrono::seconds d) {
  std::int64_t s = d.count();
  if (s <= 0) return "0s";
  std::string out;
  const std::pair<std::int64_t, char> units[] = {{86400, 'd'}, {3600, 'h'}, {60, 'm'}, {1, 's'}};
  for (const auto& [size, name] : units) {
    if (s >= size) {
      out += fmt::format("{}{}", s / size, name);
      s %= size;
    }
  }
  return out;
}

}  // namespace convstore::cli
