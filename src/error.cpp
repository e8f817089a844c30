// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#include "convstore/error.hpp"

#include <utility>

namespace convstore {

std::string_view to_string(ErrorCode code) noexcept {
  switch (code) {
    case ErrorCode::invalid_argument:
      return "invalid_argument";
    case ErrorCode::not_found:
      return "not_found";
    case ErrorCode::already_exists:
      return "already_exists";
    case ErrorCode::conflict:
      return "conflict";
    case ErrorCode::aborted:
      return "aborted";
    case ErrorCode::unavailable:
      return "unavailable";
    case ErrorCode::failed_precondition:
      return "failed_precondition";
    case ErrorCode::not_supported:
      return "not_supported";
    case ErrorCode::data_loss:
      return "data_loss";
    case ErrorCode::internal:
      return "internal";
  }
  return "internal";
}

Error::Error(ErrorCode code, const std::string& message, std::string sqlstate)
    : std::runtime_error(message), code_(code), sqlstate_(std::move(sqlstate)) {}

bool Error::retryable() const noexcept {
  return code_ == ErrorCode::unavailable || code_ == ErrorCode::aborted;
}

}  // namespace convstore
