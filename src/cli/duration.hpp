// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#pragma once

#include <chrono>
#include <string>
#include <string_view>

namespace convstore::cli {

// Parses a duration written as one or more <number><unit> groups, unit one
// of s (seconds), m (minutes), h (hours), d (days), w (weeks): "30d", "24h",
// "90m", "45s", "1h30m". It must be greater than zero and at most 100 years.
// Throws UsageError naming the value and the expected form.
std::chrono::seconds parse_duration(std::string_view text);

// "30d", "1h30m": the shortest form parse_duration reads back as `d`.
std::string format_duration(std::chrono::seconds d);

}  // namespace convstore::cli
