// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#include "redact.hpp"

#include <algorithm>
#include <cctype>

namespace convstore::cli {

namespace {

constexpr std::string_view kMask = "***";

std::string percent_decode(std::string_view s) {
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && hex(s[i + 1]) >= 0 && hex(s[i + 2]) >= 0) {
      out += static_cast<char>(hex(s[i + 1]) * 16 + hex(s[i + 2]));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

// Replaces the user-info password of every "scheme://user:password@" in `s`.
// The user info ends at the last '@' before the next white space (a
// password may hold an unencoded '@' or '/').
void mask_userinfo(std::string& s) {
  std::size_t from = 0;
  while (true) {
    std::size_t scheme = s.find("://", from);
    if (scheme == std::string::npos) return;
    std::size_t start = scheme + 3;
    std::size_t end = start;
    while (end < s.size() && !is_space(s[end]) && s[end] != '\'' && s[end] != '"') ++end;
    std::size_t at = s.rfind('@', end == 0 ? 0 : end - 1);
    if (at == std::string::npos || at < start) {
      from = start;
      continue;
    }
    std::size_t colon = s.find(':', start);
    if (colon != std::string::npos && colon < at) {
      s.replace(colon + 1, at - colon - 1, kMask);
      from = colon + 1 + kMask.size() + 1;
    } else {
      from = at + 1;
    }
  }
}

// Replaces the value of every "password=" (key=value strings, URL query).
void mask_password_values(std::string& s) {
  std::size_t from = 0;
  while (true) {
    auto it = std::search(s.begin() + static_cast<std::ptrdiff_t>(from), s.end(),
                          std::begin("password="), std::end("password=") - 1, [](char a, char b) {
                            return std::tolower(static_cast<unsigned char>(a)) == b;
                          });
    if (it == s.end()) return;
    std::size_t value = static_cast<std::size_t>(it - s.begin()) + 9;
    std::size_t end = value;
    if (value < s.size() && s[value] == '\'') {
      end = value + 1;
      while (end < s.size() && s[end] != '\'') end += s[end] == '\\' ? 2 : 1;
      end = std::min(end + 1, s.size());
    } else {
      while (end < s.size() && !is_space(s[end]) && s[end] != '&' && s[end] != '\'' &&
             s[end] != '"') {
        ++end;
      }
    }
    s.replace(value, end - value, kMask);
    from = value + kMask.size();
  }
}

}  // namespace

std::string redact_url(std::string_view url) {
  std::string s(url);
  mask_userinfo(s);
  mask_password_values(s);
  return s;
}

void Redactor::remember(std::string_view url) {
  auto add = [this](std::string secret) {
    // Too short to hide without mangling ordinary text.
    if (secret.size() < 3 || secret == kMask) return;
    if (std::find(secrets_.begin(), secrets_.end(), secret) == secrets_.end()) {
      secrets_.push_back(std::move(secret));
    }
  };
  std::string s(url);
  std::size_t scheme = s.find("://");
  if (scheme != std::string::npos) {
    std::size_t start = scheme + 3;
    std::size_t end = s.find_first_of(" \t", start);
    if (end == std::string::npos) end = s.size();
    std::size_t at = s.rfind('@', end - 1);
    std::size_t colon = s.find(':', start);
    if (at != std::string::npos && at >= start && colon != std::string::npos && colon < at) {
      std::string raw = s.substr(colon + 1, at - colon - 1);
      add(raw);
      add(percent_decode(raw));
    }
  }
  // "password=" values.
  std::string lower = s;
  std::transform(lower.begin(), lower.end(), lower.begin(), [](char c) {
    return static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  });
  for (std::size_t p = lower.find("password="); p != std::string::npos;
       p = lower.find("password=", p + 1)) {
    std::size_t value = p + 9;
    std::size_t end = value;
    if (value < s.size() && s[value] == '\'') {
      ++value;
      end = s.find('\'', value);
      if (end == std::string::npos) end = s.size();
    } else {
      while (end < s.size() && !is_space(s[end]) && s[end] != '&') ++end;
    }
    std::string raw = s.substr(value, end - value);
    add(raw);
    add(percent_decode(raw));
  }
  // Longest first, so that a secret containing another is hidden whole.
  std::sort(secrets_.begin(), secrets_.end(),
            [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
}

std::string Redactor::operator()(std::string_view text) const {
  std::string s(text);
  for (const auto& secret : secrets_) {
    for (std::size_t p = s.find(secret); p != std::string::npos; p = s.find(secret, p)) {
      s.replace(p, secret.size(), kMask);
      p += kMask.size();
    }
  }
  mask_userinfo(s);
  mask_password_values(s);
  return s;
}

Redactor& redactor() {
  static Redactor r;
  return r;
}

}  // namespace convstore::cli
