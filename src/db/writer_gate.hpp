// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#pragma once

// SQLite has one write lock per database. Writers that find it taken wait
// in SQLite's busy handler, which sleeps and retries: whoever retries at
// the right moment wins, so under steady contention one writer can lose
// for seconds (measured: appends from 4 threads of one process, a
// worst case of 3.3 s against 4 ms a commit). The writers of one Store
// therefore queue here first, in arrival order, and meet the busy handler
// only against other processes.

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>

namespace convstore::detail {

class WriterGate {
 public:
  // Waits until every writer that arrived earlier has left, for at most
  // `timeout`. False when the time ran out (the caller's place in the
  // queue is given up).
  bool enter(std::chrono::milliseconds timeout);
  // Lets the next writer in. Only a writer that entered calls it.
  void leave() noexcept;

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<std::uint64_t> queue_;  // tickets of the waiting writers, in order
  std::uint64_t next_ticket_ = 0;
  bool held_ = false;
};

}  // namespace convstore::detail
