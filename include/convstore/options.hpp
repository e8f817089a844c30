// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <string_view>

namespace convstore {

// How hard SQLite works to keep a committed transaction across a power loss.
enum class Durability {
  full,    // fsync on every commit (synchronous=FULL): nothing acknowledged is lost
  normal,  // WAL with synchronous=NORMAL: safe against crashes of the process,
           // the last commits may be lost on power loss
};

// What the statement hook sees: the SQL text (never parameter values) and
// how long the statement took.
struct StatementEvent {
  std::string_view sql;
  std::chrono::microseconds duration{};
  bool ok = true;
};

// Options of Store::open. Every field has a default that suits a bot on one
// machine.
struct Options {
  // Connections kept open. SQLite ":memory:" databases always use 1.
  std::size_t pool_size = 4;
  // How long a call waits for a free pooled connection before failing with
  // Error(unavailable).
  std::chrono::milliseconds acquire_timeout{10000};
  // How long a connection attempt may take before Error(unavailable).
  std::chrono::seconds connect_timeout{5};
  // SQLite: how long a writer waits for another writer (busy timeout).
  // Contention shorter than this never reaches the caller.
  std::chrono::milliseconds busy_timeout{10000};
  // SQLite: durability of commits.
  Durability durability = Durability::full;
  // Apply the missing schema migrations on open. When false, open fails with
  // Error(failed_precondition) if the schema is not current.
  bool migrate = true;
  // How long an agent read through AgentStateStore may be served from the
  // in-process cache: writes through this store keep the cache right at
  // once; a change made by another process is seen within this time.
  // Zero turns the cache off.
  std::chrono::milliseconds agent_cache_ttl{2000};
  // How many versions of each agent state its history keeps, the current
  // one included (0: no history).
  std::size_t state_history = 10;
  // Called after every statement with its SQL text and duration, from the
  // calling thread. Must not throw, must not call back into the store, and
  // should return quickly: the statement's locks may still be held.
  std::function<void(const StatementEvent&)> on_statement;
};

}  // namespace convstore
