// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#include "db/writer_gate.hpp"

#include <algorithm>

namespace convstore::detail {

bool WriterGate::enter(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  const std::uint64_t ticket = next_ticket_++;
  queue_.push_back(ticket);
  const bool turn =
      changed_.wait_for(lock, timeout, [&] { return !held_ && queue_.front() == ticket; });
  if (!turn) {
    queue_.erase(std::find(queue_.begin(), queue_.end(), ticket));
    lock.unlock();
    changed_.notify_all();  // the writer behind may be first now
    return false;
  }
  queue_.pop_front();
  held_ = true;
  return true;
}

void WriterGate::leave() noexcept {
  {
    std::lock_guard lock(mutex_);
    held_ = false;
  }
  changed_.notify_all();
}

}  // namespace convstore::detail
