// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#pragma once

// The libsodium plumbing the stores share: initialization and base64.

#include <string>
#include <string_view>

namespace convstore::detail {

// Initializes libsodium once per process; Error(internal) if it cannot.
void ensure_sodium();

// Standard base64 with padding.
std::string base64(const unsigned char* bytes, std::size_t size);
// Decodes standard or URL-safe base64, with or without padding, into
// `out`; false when `text` is not base64 (or has characters after it).
bool unbase64(std::string_view text, std::string& out);

}  // namespace convstore::detail
