// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include "convstore/export.hpp"
#include "convstore/options.hpp"
#include "convstore/types.hpp"

namespace convstore {

class AgentStateStore;
class CalendarStore;
class ConversationStore;
class CredentialStore;
class DialogStore;
class RetentionStore;
class ReviewQueue;
class TaskQueue;
class WebSessionStore;

// What Store::health() found.
struct Health {
  bool ok = false;
  std::string backend;  // "sqlite" or "postgresql"
  std::chrono::microseconds round_trip{};
  int schema_version = 0;
  std::string error;  // why not ok
};

// Row counts of a store.
struct Stats {
  std::int64_t users = 0;
  std::int64_t conversations = 0;
  std::int64_t active = 0;
  std::int64_t completed = 0;
  std::int64_t abandoned = 0;
  std::int64_t archived = 0;
  std::int64_t messages = 0;
  std::int64_t agents = 0;  // registered agents, active or not
};

// An open database: the connection pool, the schema, and the stores reached
// through it (conversations(), ...).
//
// Store::open either returns a working store or throws: there is no half-open
// store. A Store is a movable handle; the stores it hands out stay valid as
// long as the Store (or what it was moved into) lives.
//
// Thread safety: safe to share between threads; each call borrows a pooled
// connection for its duration.
// Errors: every call throws convstore::Error.
class CONVSTORE_EXPORT Store {
 public:
  // Opens the database named by `url`:
  //   "sqlite:PATH" or "sqlite://PATH"   a file (created if missing)
  //   "sqlite::memory:"                  a private in-memory database
  //   "postgresql://user:pw@host:port/db?..." or "postgres://..."
  //   "host=... dbname=..."              a libpq key=value string
  // Applies missing migrations (unless options.migrate is false). Throws
  // Error(invalid_argument) for an unknown scheme, Error(not_supported) for a
  // backend this build lacks (naming the CMake option), Error(unavailable)
  // when the server cannot be reached, Error(failed_precondition) when the
  // database's schema is newer than this library.
  static Store open(std::string_view url, const Options& options = {});

  Store(Store&&) noexcept;
  Store& operator=(Store&&) noexcept;
  ~Store();

  // The conversations, users, messages, snapshots and questions.
  ConversationStore& conversations();
  // The agent registry and the agents' state.
  AgentStateStore& agents();
  // Calendar events, ranges, conflicts and free time.
  CalendarStore& calendar();
  // Web sessions: access and refresh tokens, rotation, revocation.
  WebSessionStore& web_sessions();
  // Encrypted credentials (secrets sealed under an application key).
  CredentialStore& credentials();
  // Seed-003 dialogs: processing flags and cursor.
  DialogStore& dialogs();
  // Suggested replies waiting for approval and sending.
  ReviewQueue& reviews();
  // Background tasks: claims with leases, retries, periodic schedules.
  TaskQueue& tasks();
  // Retention runs, legal holds, a user's data (export, forget), storage
  // statistics per channel and agent.
  RetentionStore& retention();

  // "sqlite" or "postgresql".
  std::string backend() const;
  // The schema version of the database (the number of applied migrations).
  int schema_version() const;
  // The schema version this library writes.
  static int library_schema_version() noexcept;

  // Reachability, round-trip latency and schema version. Never throws: a
  // failure is reported in Health::error.
  Health health() const noexcept;
  // Counts of users, conversations by status, messages and agents.
  Stats stats() const;

  // Runs `body` in one transaction: every store call made by this thread
  // inside `body` joins it. Commits when `body` returns; rolls everything
  // back and rethrows when it throws. A nested call joins the outer
  // transaction. Returns what `body` returns.
  template <class F>
  auto transaction(F&& body) -> std::invoke_result_t<F&> {
    using R = std::invoke_result_t<F&>;
    if constexpr (std::is_void_v<R>) {
      run_transaction([&] { body(); });
    } else {
      std::optional<R> result;
      run_transaction([&] { result.emplace(body()); });
      return std::move(*result);
    }
  }

  // Private implementation, shared with the stores.
  class Impl;

 private:
  friend class SessionCache;
  explicit Store(std::unique_ptr<Impl> impl);
  void run_transaction(const std::function<void()>& body);
  std::unique_ptr<Impl> impl_;
};

}  // namespace convstore
