// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#pragma once

// Runs the built convstore binary, as a user would, and captures what it
// printed. The binary is $CONVSTORE_CLI, else the path CMake compiled in.

#include <convstore/convstore.hpp>
#include <string>
#include <vector>

#include "../support.hpp"

namespace testing {

struct CliResult {
  int status = -1;  // exit status; -1 if it did not exit normally
  std::string out;  // stdout
  std::string err;  // stderr
};

// Runs the binary with `args`, stdin read from `stdin_file`.
CliResult run_cli(const std::vector<std::string>& args,
                  const std::string& stdin_file = "/dev/null");

// The error convention: nothing on stdout, one "convstore: error: ..." on
// stderr naming `mentions`, exit status `status`.
void check_error(const CliResult& r, int status, const std::string& mentions);

// `text` parsed as JSON; fails the test when it is not JSON.
convstore::Json parse_json(const std::string& text);

}  // namespace testing
