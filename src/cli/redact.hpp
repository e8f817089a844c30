// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace convstore::cli {

// `url` without its password, for printing: "postgresql://bot:***@db/bot",
// "host=db password=*** dbname=bot". A user info without ':' is kept (it is
// a user name); a "password=" value (libpq key=value string or URL query
// parameter) becomes "***".
std::string redact_url(std::string_view url);

// Hides secrets in any text the tool prints. Knows the passwords of the URLs
// given on the command line (remember()), as written and percent-decoded,
// and also applies redact_url's rules to every URL-like part of the text.
class Redactor {
 public:
  // Remembers the password in `url`, if any.
  void remember(std::string_view url);
  std::string operator()(std::string_view text) const;

 private:
  std::vector<std::string> secrets_;
};

// The process-wide redactor: the one every error and output line passes.
Redactor& redactor();

}  // namespace convstore::cli
