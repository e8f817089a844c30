// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#include "store_helpers.hpp"

#include "calendar_detail.hpp"
#include "text_words.hpp"

#include <fmt/format.h>

#include <cctype>
#include <charconv>

namespace convstore::detail {

namespace {

// True when a string or key anywhere in `j` holds a NUL character.
bool has_nul(const Json& j) {
  if (j.is_string()) return j.get_ref<const std::string&>().find('\0') != std::string::npos;
  if (j.is_object()) {
    for (const auto& item : j.items()) {
      if (item.key().find('\0') != std::string::npos || has_nul(item.value())) return true;
    }
  } else if (j.is_array()) {
    for (const auto& v : j) {
      if (has_nul(v)) return true;
    }
  }
  return false;
}

}  // namespace

std::string object_text(const Json& j, std::string_view what) {
  if (j.is_null()) return "{}";
  if (!j.is_object()) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("{} must be a JSON object, not {}", what, j.type_name()));
  }
  return json_text(j, what);
}

void check_count(std::size_t n, std::size_t max, std::string_view what) {
  if (n < 1 || n > max) {
    throw Error(ErrorCode::invalid_argument, fmt::format("{} {} is outside 1 .. {}", what, n, max));
  }
}

void check_json(const Json& j, std::string_view what) {
  if (!j.is_structured()) return;
  // Depth-first with an explicit stack of (container, depth).
  std::vector<std::pair<const Json*, std::size_t>> todo{{&j, 1}};
  while (!todo.empty()) {
    auto [node, depth] = todo.back();
    todo.pop_back();
    if (depth > kMaxJsonDepth) {
      throw Error(
          ErrorCode::invalid_argument,
          fmt::format("{} nests deeper than {} levels of arrays and objects", what, kMaxJsonDepth));
    }
    for (const auto& child : *node) {
      if (child.is_structured()) todo.emplace_back(&child, depth + 1);
    }
  }
}

std::string json_text(const Json& j, std::string_view what) {
  check_json(j, what);
  std::string text;
  try {
    text = j.dump();
  } catch (const Json::exception& e) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("{} is not valid JSON text: {}", what, e.what()));
  }
  // Only a dump with an escaped NUL can hold one: walk the tree only then
  // (the text "\\u0000" itself is fine).
  if (text.find("\\u0000") != std::string::npos && has_nul(j)) {
    throw Error(ErrorCode::invalid_argument, fmt::format("{} contains a NUL character", what));
  }
  return text;
}

std::string time_cursor(std::string_view prefix, Timestamp t, long long id) {
  return fmt::format("{}.{}.{}", prefix, t.time_since_epoch().count(), id);
}

std::pair<Timestamp, long long> parse_time_cursor(std::string_view prefix,
                                                  const std::string& cursor) {
  auto bad = [&] {
    return Error(ErrorCode::invalid_argument, fmt::format("malformed page cursor '{}'", cursor));
  };
  const std::size_t start = prefix.size() + 1;
  if (cursor.size() <= start || cursor.compare(0, prefix.size(), prefix) != 0 ||
      cursor[prefix.size()] != '.') {
    throw bad();
  }
  auto dot = cursor.find('.', start);
  if (dot == std::string::npos) throw bad();
  long long micros = 0, id = 0;
  const char* b = cursor.data();
  auto r1 = std::from_chars(b + start, b + dot, micros);
  auto r2 = std::from_chars(b + dot + 1, b + cursor.size(), id);
  if (r1.ec != std::errc() || r1.ptr != b + dot || r2.ec != std::errc() ||
      r2.ptr != b + cursor.size() || id <= 0) {
    throw bad();
  }
  // Every stored time is in the years 0001..9999; one outside them comes
  // from no listing (and overflows the arithmetic of its ISO 8601 text).
  const Timestamp t{std::chrono::microseconds(micros)};
  if (t < kEarliestTime || t > kLatestTime) throw bad();
  return {t, id};
}

void check_key_text(std::string_view text, std::string_view what) {
  check_text(text, what);
  if (text.size() > kMaxKeyBytes) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("{} is {} bytes long (at most {})", what, text.size(), kMaxKeyBytes));
  }
}

void check_id(std::string_view id, std::string_view what, std::size_t max_chars) {
  if (id.empty()) throw Error(ErrorCode::invalid_argument, fmt::format("{} is empty", what));
  check_text(id, what);
  // Characters, not bytes: count the bytes that start a UTF-8 sequence.
  std::size_t chars = 0;
  for (char ch : id) chars += (static_cast<unsigned char>(ch) & 0xC0) != 0x80 ? 1 : 0;
  if (chars > max_chars) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("{} is {} characters long (at most {})", what, chars, max_chars));
  }
  for (char ch : id) {
    auto c = static_cast<unsigned char>(ch);
    if (c < 0x20 || c == 0x7f) {
      throw Error(ErrorCode::invalid_argument,
                  fmt::format("{} contains a control character (0x{:02x})", what, c));
    }
  }
}

std::vector<std::string> words_of(std::string_view text) {
  std::vector<std::string> words;
  std::string word;
  for (char ch : text) {
    auto c = static_cast<unsigned char>(ch);
    if (c >= 0x80 || std::isalnum(c)) {
      word += static_cast<char>(std::tolower(c));
    } else if (!word.empty()) {
      words.push_back(std::move(word));
      word.clear();
    }
  }
  if (!word.empty()) words.push_back(std::move(word));
  return words;
}

}  // namespace convstore::detail
