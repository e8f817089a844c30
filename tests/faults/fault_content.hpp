// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#pragma once

// What the fault worker writes, derived from a number so that the test can
// check every stored byte: message i's content, an agent state's version v.

#include <convstore/convstore.hpp>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

namespace faults {

// Message i: 10 bytes to about 6 KB (some span several database pages),
// with multi-byte UTF-8, ending in a marker that a cut would lose.
inline std::string message_content(long long i) {
  std::string s = "m" + std::to_string(i) + " ";
  const long long units = (i * 7919) % 1200;
  for (long long k = 0; k < units; ++k) s += (k % 3 == 0) ? "ä€" : "x";
  return s + " #end" + std::to_string(i);
}

// Message i of `bytes` bytes (at least the marker's), ASCII.
inline std::string sized_content(long long i, std::size_t bytes) {
  std::string head = "m" + std::to_string(i) + " ";
  std::string tail = " #end" + std::to_string(i);
  std::string s = head;
  while (s.size() + tail.size() < bytes) s += static_cast<char>('a' + (s.size() * 31 + i) % 26);
  return s + tail;
}

// The index a stored message's content names ("m<i> ..."), or -1.
inline long long content_index(const std::string& content) {
  if (content.size() < 2 || content[0] != 'm') return -1;
  std::size_t end = content.find(' ');
  if (end == std::string::npos || end == 1) return -1;
  try {
    return std::stoll(content.substr(1, end - 1));
  } catch (...) {
    return -1;
  }
}

// The state saved as version v (a few hundred bytes to a few KB).
inline convstore::Json state_content(long long v) {
  convstore::Json items = convstore::Json::array();
  for (long long k = 0; k < v % 40; ++k) items.push_back({{"k", k}, {"v", v * k}});
  return convstore::Json{
      {"version", v}, {"items", items}, {"pad", std::string((v * 37) % 3000, 'p')}};
}

// The complete lines the worker wrote to `path` (a line that a kill cut
// short is not an acknowledgement).
inline std::vector<std::string> ack_lines(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::string> out;
  std::size_t at = 0;
  for (std::size_t nl = all.find('\n'); nl != std::string::npos; nl = all.find('\n', at)) {
    out.push_back(all.substr(at, nl - at));
    at = nl + 1;
  }
  return out;
}

}  // namespace faults
