// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#pragma once

// Shared support of the fault suite (tests/faults).

namespace faults {

// True when CONVSTORE_FAULTS_LONG=1: the long mode for manual runs.
bool long_mode();

// `short_value` in the bounded mode that scripts/test runs, `long_value` in
// the long mode.
template <typename T>
T scaled(T short_value, T long_value) {
  return long_mode() ? long_value : short_value;
}

}  // namespace faults
