// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "convstore/export.hpp"
#include "convstore/options.hpp"
#include "convstore/types.hpp"

namespace convstore {

class AgentStateStore;
class Analytics;
class CalendarStore;
class ConversationStore;
class CredentialStore;
class DialogStore;
class OperationTemplates;
class RetentionStore;
class ReviewQueue;
class TaskQueue;
class WebSessionStore;

namespace detail {
struct StoreAccess;  // the library's own free functions (portability)
}  // namespace detail

// What Store::health() found.
struct Health {
  bool ok = false;
  std::string backend;  // "sqlite" or "postgresql"
  std::chrono::microseconds round_trip{};
  int schema_version = 0;
  std::string error;  // why not ok
};

// One schema migration this library knows.
struct SchemaMigration {
  int version = 0;  // 1 .. Store::library_schema_version()
  std::string description;
};

// What Store::inspect_schema found: the database's schema version, this
// library's, and the migrations that opening the database would apply.
struct SchemaStatus {
  std::string backend;       // "sqlite" or "postgresql"
  int database_version = 0;  // 0: convstore never migrated this database
  int library_version = 0;
  std::vector<SchemaMigration> pending;  // oldest first; empty when current or newer
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

// The counters of one operation of a Store (Store::operation_stats): every
// call of the operation since the store was opened (or the counters reset).
struct OperationStats {
  // The latency histogram's buckets, on a log scale: bucket 0 holds calls
  // that took under 1 us, bucket i (1..24) calls of [2^(i-1), 2^i) us, the
  // last one (25) calls of 2^24 us (16.8 s) or more.
  static constexpr std::size_t latency_buckets = 26;
  // The exclusive upper bound of bucket i < 25, in microseconds: 2^i.
  static constexpr std::int64_t bucket_upper_us(std::size_t i) noexcept {
    return std::int64_t{1} << i;
  }

  std::string action;           // what the operation does: "append message", "get task", ...
  std::uint64_t calls = 0;      // always the sum of `latency`
  std::uint64_t errors = 0;     // calls that threw (conflicts included)
  std::uint64_t conflicts = 0;  // calls that threw Error(conflict) or Error(already_exists)
  std::chrono::microseconds total_time{};  // summed over the calls
  std::array<std::uint64_t, latency_buckets> latency{};
  // Estimates from the histogram (linear within a bucket, so within a factor
  // of 2 of the true value); 0 when there were no calls.
  double p50_us = 0;
  double p99_us = 0;
};

// The latency under which a fraction `q` (0..1) of the calls of `s` fell,
// estimated from its histogram, in microseconds (0 without calls).
CONVSTORE_EXPORT double latency_percentile_us(const OperationStats& s, double q) noexcept;

// {"users", "conversations", "active", "completed", "abandoned", "archived",
// "messages", "agents"}.
CONVSTORE_EXPORT Json to_json(const Stats& s);
// {"action", "calls", "errors", "conflicts", "total_us", "p50_us", "p99_us"}
// (the histogram itself is left out).
CONVSTORE_EXPORT Json to_json(const OperationStats& s);

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
  // Usage analytics over messages and conversations, computed in SQL.
  Analytics& analytics();
  // Reusable operation patterns (seed 000 operation_templates).
  OperationTemplates& templates();
  // Retention runs, legal holds, a user's data (export, forget), storage
  // statistics per channel and agent.
  RetentionStore& retention();

  // "sqlite" or "postgresql".
  std::string backend() const;
  // The schema version of the database (the number of applied migrations).
  int schema_version() const;
  // The schema version this library writes.
  static int library_schema_version() noexcept;
  // Every migration this library applies, oldest first.
  static std::vector<SchemaMigration> schema_migrations();
  // Connects to the database named by `url` (as open does) and reports its
  // schema version and the migrations open would apply. Applies none and
  // creates no table; only the connection's own set-up runs (a SQLite file
  // that does not exist is created empty and put in WAL mode, as open
  // would). Throws like open, except that a database newer than the library
  // is reported (pending empty), not refused.
  static SchemaStatus inspect_schema(std::string_view url, const Options& options = {});

  // Reachability, round-trip latency and schema version. Never throws: a
  // failure is reported in Health::error.
  Health health() const noexcept;
  // Counts of users, conversations by status, messages and agents.
  Stats stats() const;

  // The counters of every operation called since the store was opened or
  // the counters were last reset, by action name (calls, errors, conflicts,
  // latency histogram, p50 / p99). An operation is one public call of a
  // store that reaches the database; a call that fails its input checks
  // before that is not counted. A store call made by the implementation of
  // another one (on the same thread) is counted only as that outer call.
  // Each Store::transaction counts once as "transaction" (its body and
  // commit), and every call made inside it counts as well. Calls that run in
  // stages (a claim needing a second statement, a refused heartbeat reading
  // the task to explain itself) count once.
  // Cheap (relaxed atomic increments, no lock) and safe from any thread; a
  // read while calls run is not one instant's snapshot across operations.
  std::vector<OperationStats> operation_stats() const;
  // Sets every counter back to zero.
  void reset_operation_stats() noexcept;

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
  friend struct detail::StoreAccess;
  explicit Store(std::unique_ptr<Impl> impl);
  void run_transaction(const std::function<void()>& body);
  std::unique_ptr<Impl> impl_;
};

}  // namespace convstore
