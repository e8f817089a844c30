// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <vector>

#include "convstore/store.hpp"

namespace convstore::detail {

// The per-operation counters of one Store (Store::operation_stats).
//
// Operations are keyed by the address of their action name (Op::action, a
// string literal). Slots live in a fixed table, claimed lock-free (a
// compare-and-swap of the key) the first time an action is seen; counting
// is relaxed atomic increments, so calls on many threads never wait for
// each other. Two literals with the same text (in two translation units)
// take two slots and are merged by name when read.
class OpStats {
 public:
  static constexpr std::size_t kBuckets = OperationStats::latency_buckets;

  struct Slot {
    std::atomic<const char*> action{nullptr};
    std::atomic<std::uint64_t> errors{0};
    std::atomic<std::uint64_t> conflicts{0};
    std::atomic<std::uint64_t> total_us{0};
    // calls = the sum of the buckets, so that it always equals it.
    std::array<std::atomic<std::uint64_t>, kBuckets> buckets{};
  };

  // The slot of `action`, claimed on first use. When the table is full the
  // action is counted under "(other operations)".
  Slot& slot(const char* action) noexcept;

  // Records one call that took `elapsed` and failed with `error` (null when
  // it succeeded).
  static void record(Slot& s, std::chrono::steady_clock::duration elapsed,
                     const std::exception_ptr& error) noexcept;

  std::vector<OperationStats> read() const;
  void reset() noexcept;

 private:
  static constexpr std::size_t kSlots = 256;  // a power of two, above the ~130 actions
  std::array<Slot, kSlots> slots_{};
  Slot other_{};
};

// The store whose operation the calling thread is running now: a store call
// made while another of the same store runs (one public call implemented on
// top of another) is not counted separately.
extern thread_local const void* t_counting;

}  // namespace convstore::detail
