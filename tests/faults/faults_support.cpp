// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#include "faults/faults_support.hpp"

#include <cstdlib>
#include <cstring>

namespace faults {

bool long_mode() {
  const char* v = std::getenv("CONVSTORE_FAULTS_LONG");
  return v != nullptr && std::strcmp(v, "1") == 0;
}

}  // namespace faults
