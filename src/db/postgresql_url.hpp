// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#pragma once

#include <string>
#include <string_view>

namespace convstore::detail {

struct ParsedConninfo {
  std::string connect;  // key=value string for libpq, password included
  std::string display;  // the same without the password
};

// Parses a libpq URL or key=value string with libpq's own parser. Throws
// Error(invalid_argument) with libpq's message (which never echoes a
// password). Defined in backends/postgresql.
ParsedConninfo parse_postgresql_conninfo(std::string_view url);

}  // namespace convstore::detail
