// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#pragma once

#include <chrono>
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
// with the callers, each valid for `ttl` after it was loaded. A newer
// snapshot (by version, then usage count) never yields to an older one, so
// a slow reader cannot put back what a writer just replaced.
class AgentCache {
 public:
  explicit AgentCache(std::chrono::milliseconds ttl) : ttl_(ttl) {}

  bool enabled() const noexcept { return ttl_.count() > 0; }

  // A fresh snapshot, or nullptr.
  std::shared_ptr<const Agent> get(std::string_view id) const {
    if (!enabled()) return nullptr;
    std::shared_lock<std::shared_mutex> lock(mutex_);
    auto it = entries_.find(id);
    if (it == entries_.end() || std::chrono::steady_clock::now() - it->second.loaded > ttl_) {
      return nullptr;
    }
    return it->second.agent;
  }

  void put(std::shared_ptr<const Agent> agent) {
    if (!enabled()) return;
    std::unique_lock<std::shared_mutex> lock(mutex_);
    auto& e = entries_[agent->id];
    if (e.agent && std::make_pair(e.agent->version, e.agent->usage_count) >
                       std::make_pair(agent->version, agent->usage_count)) {
      return;
    }
    e.agent = std::move(agent);
    e.loaded = std::chrono::steady_clock::now();
  }

  void erase(std::string_view id) {
    std::unique_lock<std::shared_mutex> lock(mutex_);
    auto it = entries_.find(id);
    if (it != entries_.end()) entries_.erase(it);
  }

  void clear() noexcept {
    std::unique_lock<std::shared_mutex> lock(mutex_);
    entries_.clear();
  }

 private:
  struct Entry {
    std::shared_ptr<const Agent> agent;
    std::chrono::steady_clock::time_point loaded;
  };
  std::chrono::milliseconds ttl_;
  mutable std::shared_mutex mutex_;
  std::map<std::string, Entry, std::less<>> entries_;
};

}  // namespace convstore::detail
