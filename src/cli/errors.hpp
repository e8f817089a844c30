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
  kExitUsage = 2,    // the command line is wrong, or the command is not in this build
};

// A mistake on the command line (a bad duration, a missing option): exit
// status 2. Errors from the library (convstore::Error) and any other
// std::exception exit with status 1.
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A command registered with its full syntax whose library part is not in
// this build yet (the phase-2 commands): exit status 2.
class NotAvailable : public std::runtime_error {
 public:
  explicit NotAvailable(const std::string& command)
      : std::runtime_error(
            "'" + command +
            "' is not available in this build yet (its library part is still "
            "being written); this convstore can run: migrate, stats, show, export, import, copy, "
            "backup, search") {}
};

}  // namespace convstore::cli
