// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#pragma once

#include <stdexcept>
#include <string>
#include <string_view>

#include "convstore/export.hpp"

namespace convstore {

// What went wrong, and so what a caller should do about it. The rules follow
// abseil's canonical status codes.
enum class ErrorCode {
  invalid_argument,     // the input is wrong; do not retry it unchanged
  not_found,            // the operation needs an object that does not exist
  already_exists,       // a create found the object already there
  conflict,             // a version check or state transition failed: re-read, then decide
  aborted,              // serialization failure or deadlock: retry the whole unit of work
  unavailable,          // the database cannot be reached now: retry the call later
  failed_precondition,  // the database is in a state this library cannot use (e.g. newer schema)
  not_supported,        // this build or backend cannot do it
  data_loss,            // stored data is damaged or was altered (it fails its integrity check)
  internal,             // a bug or an unexpected database answer
};

// The name of `code`, e.g. "not_found".
CONVSTORE_EXPORT std::string_view to_string(ErrorCode code) noexcept;

// The one exception type convstore throws. what() names the operation and the
// entity involved ("conversation 42 not found"); connection strings in it
// never show a password. sqlstate() carries the backend's SQLSTATE (or the
// SQLite extended result code as text) when the database reported the error.
//
// Thread safety: an Error is an immutable value.
class CONVSTORE_EXPORT Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message, std::string sqlstate = {});

  ErrorCode code() const noexcept { return code_; }
  const std::string& sqlstate() const noexcept { return sqlstate_; }

  // True when retrying the same call later may succeed (unavailable, aborted).
  bool retryable() const noexcept;

 private:
  ErrorCode code_;
  std::string sqlstate_;
};

}  // namespace convstore
