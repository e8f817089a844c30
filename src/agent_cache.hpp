// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <string_view>

#include "convstore/types.hpp"

namespace convstore::detail {

// The in-process agent cache of AgentStateStore: immutable snapshots shared
// with the callers, each served for `ttl` after the read that produced it
// began.
//
// Every id has a stamp that moves whenever the agent is written or deleted
// through this process. A reader takes a ticket (the stamp and the time)
// before it reads the database and may only put its result while the stamp
// is unchanged, so a slow reader can never put back what a writer replaced
// or deleted in the meantime.
class AgentCache {
 public:
  explicit AgentCache(std::chrono::milliseconds ttl) : ttl_(ttl) {}

  struct Ticket {
    std::uint64_t stamp = 0;
    std::chrono::steady_clock::time_point started;
  };

  bool enabled() const noexcept { return ttl_.count() > 0; }

  // A fresh snapshot, or nullptr.
  std::shared_ptr<const Agent> get(std::string_view id) const {
    if (!enabled()) return nullptr;
    std::shared_lock<std::shared_mutex> lock(mutex_);
    auto it = entries_.find(id);
    if (it == entries_.end() || !it->second.agent ||
        std::chrono::steady_clock::now() - it->second.loaded > ttl_) {
      return nullptr;
    }
    return it->second.agent;
  }

  // Taken before reading `id` from the database.
  Ticket ticket(std::string_view id) const {
    Ticket t;
    t.started = std::chrono::steady_clock::now();
    std::shared_lock<std::shared_mutex> lock(mutex_);
    auto it = entries_.find(id);
    if (it != entries_.end()) t.stamp = it->second.stamp;
    return t;
  }

  // Puts what a read holding `t` found, unless `id` was written since.
  void put(std::shared_ptr<const Agent> agent, const Ticket& t) {
    if (!enabled()) return;
    std::unique_lock<std::shared_mutex> lock(mutex_);
    auto& e = entries_[agent->id];
    if (e.stamp != t.stamp) return;
    e.agent = std::move(agent);
    e.loaded = t.started;
  }

  // A write through this process, which took `t` before writing: its value
  // replaces whatever is cached or being read. If another write or delete
  // came in between, which of the two the database kept is not known here:
  // nothing is cached.
  void replace(std::shared_ptr<const Agent> agent, const Ticket& t) {
    std::unique_lock<std::shared_mutex> lock(mutex_);
    auto& e = entries_[agent->id];
    bool raced = e.stamp != t.stamp;
    ++e.stamp;
    if (raced || !enabled()) {
      e.agent.reset();
      return;
    }
    e.agent = std::move(agent);
    e.loaded = std::chrono::steady_clock::now();
  }

  // A write whose value must not be served (uncommitted, or deleted).
  void invalidate(std::string_view id) {
    std::unique_lock<std::shared_mutex> lock(mutex_);
    auto it = entries_.find(id);
    if (it == entries_.end()) it = entries_.emplace(std::string(id), Entry{}).first;
    ++it->second.stamp;
    it->second.agent.reset();
  }

  void clear() noexcept {
    std::unique_lock<std::shared_mutex> lock(mutex_);
    for (auto& [id, e] : entries_) {
      ++e.stamp;
      e.agent.reset();
    }
  }

 private:
  struct Entry {
    std::shared_ptr<const Agent> agent;  // null: nothing cached
    std::chrono::steady_clock::time_point loaded;
    std::uint64_t stamp = 0;
  };
  std::chrono::milliseconds ttl_;
  mutable std::shared_mutex mutex_;
  std::map<std::string, Entry, std::less<>> entries_;
};

}  // namespace convstore::detail
