// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#pragma once

#include <stdexcept>
#include <string>

namespace convstore::cli {

// Exit statuses of the convstore tool.
enum ExitStatus : int {
  kExitOk = 0,
  kExitFailure = 1,  // the command ran and failed (database, file, not found, ...)
  kExitUsage = 2,    // the command line is wrong
};

// A mistake on the command line (a bad duration, a missing option): exit
// status 2. Errors from the library (convstore::Error) and any other
// std::exception exit with status 1.
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace convstore::cli
