// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#include "crypto.hpp"

#include <sodium.h>

#include "convstore/error.hpp"

namespace convstore::detail {

void ensure_sodium() {
  // sodium_init is thread-safe and idempotent; the static runs it once.
  static const int status = sodium_init();
  if (status < 0) throw Error(ErrorCode::internal, "libsodium could not be initialized");
}

std::string base64(const unsigned char* bytes, std::size_t size) {
  const std::size_t len = sodium_base64_ENCODED_LEN(size, sodium_base64_VARIANT_ORIGINAL);
  std::string out(len, '\0');
  sodium_bin2base64(out.data(), out.size(), bytes, size, sodium_base64_VARIANT_ORIGINAL);
  out.resize(len - 1);  // the terminating NUL
  return out;
}

bool unbase64(std::string_view text, std::string& out) {
  const bool url = text.find_first_of("-_") != std::string_view::npos;
  const std::size_t last = text.find_last_not_of(" \t\r\n");
  const bool padded = last != std::string_view::npos && text[last] == '=';
  int variant =
      url ? (padded ? sodium_base64_VARIANT_URLSAFE : sodium_base64_VARIANT_URLSAFE_NO_PADDING)
          : (padded ? sodium_base64_VARIANT_ORIGINAL : sodium_base64_VARIANT_ORIGINAL_NO_PADDING);
  out.assign(text.size() / 4 * 3 + 3, '\0');
  std::size_t written = 0;
  const char* end = nullptr;
  // White space around and inside the text (a key read from a file with
  // its newline) is skipped.
  if (sodium_base642bin(reinterpret_cast<unsigned char*>(out.data()), out.size(), text.data(),
                        text.size(), " \t\r\n", &written, &end, variant) != 0 ||
      end != text.data() + text.size()) {
    sodium_memzero(out.data(), out.size());  // it may hold part of a key
    out.clear();
    return false;
  }
  out.resize(written);
  return true;
}

}  // namespace convstore::detail
