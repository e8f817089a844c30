// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#pragma once

// Runs the built convstore binary, as a user would, and captures what it
// printed. The binary is $CONVSTORE_CLI, else the path CMake compiled in.

#include <string>
#include <vector>

namespace testing {

struct CliResult {
  int status = -1;  // exit status; -1 if it did not exit normally
  std::string out;  // stdout
  std::string err;  // stderr
};

CliResult run_cli(const std::vector<std::string>& args);

}  // namespace testing
