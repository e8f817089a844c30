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
#include <utility>
#include <vector>

#include "convstore/export.hpp"
#include "convstore/types.hpp"

namespace convstore {

class Store;

namespace detail {
// Throws Error(invalid_argument): flag `name` holds `value`, not the asked type.
[[noreturn]] CONVSTORE_EXPORT void throw_flag_type_error(std::string_view name, const Json& value);
}  // namespace detail

// How SessionCache::hit counts requests.
enum class RateAlgorithm {
  // The count of the current fixed window plus the previous window's count
  // weighted by how much of it still overlaps the sliding window (the
  // approximation Cloudflare and most Redis limiters use: O(1) memory per
  // key, exact at window boundaries, never lets more than `limit` through in
  // any window when requests are evenly spread).
  sliding_window,
  // A bucket of `limit` tokens refilled continuously at limit / window:
  // allows bursts up to `limit`, then a steady rate.
  token_bucket,
};

// A rate limit: at most `limit` requests per `window`.
struct RateLimit {
  std::int64_t limit = 60;                  // 1 .. 10^9
  std::chrono::milliseconds window{60000};  // 1 ms .. 30 days
  RateAlgorithm algorithm = RateAlgorithm::sliding_window;
};

// What SessionCache::hit decided.
struct RateDecision {
  bool allowed = false;
  std::int64_t remaining = 0;               // requests still allowed now
  std::chrono::milliseconds reset_after{};  // until the limit is whole again
  std::chrono::milliseconds retry_after{};  // until the next request may pass (0 when allowed)
  bool degraded = false;  // the backend failed; `allowed` is the fail-open/closed policy
};

// The right to handle one conversation's turn. `fence` grows with every
// grant of the same name (it is at least the grant's time in microseconds
// since the epoch, so it keeps growing across a Redis restart); pass it as
// AppendOptions::fence so that a holder whose lease expired cannot write.
struct TurnLease {
  std::string name;
  std::int64_t fence = 0;
  std::int64_t ticket = 0;  // the holder's place in the queue
  Timestamp expires_at{};
};

// Counters of one SessionCache object (not of the shared backend).
struct CacheStats {
  std::int64_t hits = 0;    // reads that found a value
  std::int64_t misses = 0;  // reads that found nothing
  std::int64_t writes = 0;
  std::int64_t evictions = 0;    // in-memory: entries dropped by the memory bound
  std::int64_t expirations = 0;  // in-memory: entries dropped because their TTL passed
  std::int64_t errors = 0;       // backend failures (reported to on_failure)
  std::int64_t fallbacks = 0;    // calls answered without the backend after a failure
  std::int64_t entries = 0;      // in-memory: entries held now
  std::int64_t bytes = 0;        // in-memory: bytes held now (keys, values, overhead)
};

// What SessionCache::health() found.
struct CacheHealth {
  bool ok = false;
  std::string backend;  // "memory", "redis" or "database"
  std::chrono::microseconds round_trip{};
  std::string error;  // why not ok
};

// A backend failure, as reported to CacheOptions::on_failure.
struct CacheFailure {
  std::string operation;   // "get", "hit", "context", ...
  std::string message;     // what failed (never a password)
  bool fell_back = false;  // the call was answered anyway (policy or database)
};

// Options of the SessionCache factories. Every field has a working default.
struct CacheOptions {
  // Prepended to every key the cache writes, so that several applications
  // can share one Redis (or one database).
  std::string key_prefix = "convstore:";
  // Session hashes expire this long after their last read or write.
  std::chrono::milliseconds session_ttl{std::chrono::hours(1)};
  // Conversation contexts: how many recent messages are cached, and for how
  // long after they were built.
  std::size_t context_size = 20;
  std::chrono::milliseconds context_ttl{std::chrono::hours(2)};
  // Active-user marks older than this are dropped (the longest `within`
  // that active_count / active_users can answer).
  std::chrono::milliseconds active_retention{std::chrono::hours(24)};

  // In-memory: the memory bound (keys, values and bookkeeping); the least
  // recently used entries are evicted beyond it.
  std::size_t max_bytes = std::size_t{256} << 20;
  // In-memory and database: how often expired entries are swept (they are
  // also dropped lazily when read). Zero: only lazily.
  std::chrono::milliseconds sweep_interval{1000};

  // Redis: connections kept, and how long a call waits for one.
  std::size_t pool_size = 4;
  // Redis: connect and command timeouts. A call never blocks longer than
  // about connect_timeout + command_timeout.
  std::chrono::milliseconds connect_timeout{1000};
  std::chrono::milliseconds command_timeout{1000};
  // Redis: after a failure, calls fail fast (or fall back) for this long
  // before the server is tried again.
  std::chrono::milliseconds retry_interval{500};

  // Rate limiting when the backend fails: true lets requests through
  // (availability first), false refuses them.
  bool rate_limit_fail_open = true;
  // Called for every backend failure, from the calling thread (or, for a
  // failed sweep, from the cache's sweeper thread). Must not throw and
  // should return quickly.
  std::function<void(const CacheFailure&)> on_failure;
};

// A fast cache for the hot state of chat bots (seed 002's Redis use cases):
// plain values with TTL, session hashes with a sliding TTL, rate limits,
// active users, conversation contexts rebuilt from the ConversationStore,
// feature flags and A/B variants, and one-turn-at-a-time leases per
// conversation.
//
// Three backends with one behaviour (one test suite runs on each):
//   in_memory()  this process only; thread-safe; TTLs; an LRU memory bound
//   redis(url)   a Redis server shared by several processes (hiredis)
//   database(s)  the SQL store's own tables: several processes, no Redis
//                (TTLs, rate windows and lease expiry use the clocks of the
//                processes: keep them synchronized, as NTP does)
//
// Errors: bad input throws Error(invalid_argument). A backend failure
// (Redis down or slow) is reported to CacheOptions::on_failure; calls that
// can be answered without the backend are (a read misses, context() reads
// the store, hit() follows the fail-open policy); the others throw
// Error(unavailable) within the configured timeouts. The Redis backend
// uses the server again once it answers, without a restart.
//
// Thread safety: safe to share between threads. A SessionCache is a movable
// handle; a database cache must not outlive its Store.
class CONVSTORE_EXPORT SessionCache {
 public:
  // The embedded default: this process only.
  static SessionCache in_memory(const CacheOptions& options = {});
  // A Redis server: "redis://[:password@]host[:port][/db]" or
  // "unix:///path/redis.sock[?db=N]". Connects lazily: an unreachable server
  // does not make this throw (health() and on_failure say so). Throws
  // Error(not_supported) when the build lacks CONVSTORE_WITH_REDIS,
  // Error(invalid_argument) for a malformed URL.
  static SessionCache redis(std::string_view url, const CacheOptions& options = {});
  // Tables of `store` (SQLite or PostgreSQL).
  static SessionCache database(Store& store, const CacheOptions& options = {});

  SessionCache(SessionCache&&) noexcept;
  SessionCache& operator=(SessionCache&&) noexcept;
  ~SessionCache();

  // "memory", "redis" or "database".
  std::string backend() const;

  // ---- plain values ----
  // Keys are 1..1024 bytes of UTF-8 without control characters; values are
  // any bytes up to 64 MiB. A zero TTL keeps the value until removed (or
  // evicted).
  void set(std::string_view key, std::string_view value,
           std::chrono::milliseconds ttl = std::chrono::milliseconds{0});
  std::optional<std::string> get(std::string_view key);
  // True when the key was there.
  bool remove(std::string_view key);
  // The time the key has left; nullopt when it is missing or has no TTL.
  std::optional<std::chrono::milliseconds> ttl(std::string_view key);
  // The same in bulk: one round trip on Redis (a pipeline), one statement
  // per chunk on the database.
  std::vector<std::optional<std::string>> get_many(const std::vector<std::string>& keys);
  void set_many(const std::vector<std::pair<std::string, std::string>>& items,
                std::chrono::milliseconds ttl = std::chrono::milliseconds{0});

  // ---- session data (seed 002 "session:discord:user123") ----
  // A hash of JSON fields per session key. Every call that touches a session
  // (read or write) restarts its TTL (CacheOptions::session_ttl).
  void session_set(std::string_view session, std::string_view field, const Json& value);
  // Sets every member of `fields` (a JSON object) at once.
  void session_update(std::string_view session, const Json& fields);
  std::optional<Json> session_get(std::string_view session, std::string_view field);
  // Every field, as a JSON object ({} when there is no session).
  Json session_get_all(std::string_view session);
  bool session_remove_field(std::string_view session, std::string_view field);
  bool session_remove(std::string_view session);

  // ---- rate limiting ----
  // Counts `cost` requests against `key` (a user, an IP, an endpoint) and
  // says whether they are allowed. A refused request does not count.
  // Atomic across threads and, on Redis and the database, across processes.
  RateDecision hit(std::string_view key, const RateLimit& limit, std::int64_t cost = 1);
  // Forgets the key's count.
  void reset_rate(std::string_view key);

  // ---- active users ----
  void mark_active(std::string_view channel, std::string_view user);
  // Users marked on `channel` within the last `within` (at most
  // CacheOptions::active_retention), most recent first.
  std::int64_t active_count(std::string_view channel, std::chrono::milliseconds within);
  std::vector<std::string> active_users(std::string_view channel, std::chrono::milliseconds within,
                                        std::size_t limit = 1000);
  bool is_active(std::string_view channel, std::string_view user, std::chrono::milliseconds within);

  // ---- conversation contexts ----
  // The last `n` messages of conversation `id`, oldest first (n at most
  // CacheOptions::context_size). Served from the cache; on a miss read from
  // `store` and cached. When the backend fails, read from `store`. Inside a
  // Store::transaction it is read from `store` and not cached (the
  // transaction's own writes may still roll back).
  std::vector<Message> context(Store& store, ConversationId id, std::size_t n);
  // Keeps contexts right when messages change through `store` (append,
  // edit, delete, conversation removal): the cached context is dropped after
  // the change commits, and a context built concurrently from older data is
  // not cached. Changes made by other processes through their own attached
  // Store drop the shared (Redis / database) entry the same way. A drop that
  // cannot reach the backend is retried by this object before its next
  // context(); until then this object reads that context from the store
  // (another process may be served the old entry until the retry lands or
  // context_ttl passes). Attaching the same store twice is a no-op.
  void attach(Store& store);
  void invalidate_context(ConversationId id);

  // ---- feature flags and A/B variants ----
  // A flag is a JSON value, global (empty channel) or per channel; a
  // channel's value wins over the global one.
  void set_flag(std::string_view name, const Json& value, std::string_view channel = {});
  std::optional<Json> flag(std::string_view name, std::string_view channel = {});
  bool remove_flag(std::string_view name, std::string_view channel = {});
  // Every flag that applies to `channel` (global ones overlaid by the
  // channel's), as a JSON object.
  Json flags(std::string_view channel = {});
  // The flag converted to T, or `fallback` when it is not set. Throws
  // Error(invalid_argument) when the stored value is not a T.
  template <class T>
  T flag_or(std::string_view name, T fallback, std::string_view channel = {});
  // The variant of `experiment` for `user`: an assignment made with
  // assign_variant, else one of `variants` chosen by a stable hash of
  // (experiment, user) — the same answer in every process and release.
  std::string variant(std::string_view experiment, std::string_view user,
                      const std::vector<std::string>& variants);
  void assign_variant(std::string_view experiment, std::string_view user, std::string_view variant);

  // ---- one turn at a time ----
  // Waits up to `wait` for the turn of `name`; callers are served in the
  // order they first asked. The lease lasts `ttl` unless renewed; a holder
  // that dies loses it when it expires. Returns nullopt when `wait` passes.
  // The in-memory backend serializes the threads of this process; Redis and
  // the database serialize processes.
  std::optional<TurnLease> acquire_turn(std::string_view name, std::chrono::milliseconds ttl,
                                        std::chrono::milliseconds wait);
  // The turn of a conversation: name "conversation:<id>".
  std::optional<TurnLease> acquire_turn(ConversationId id, std::chrono::milliseconds ttl,
                                        std::chrono::milliseconds wait);
  // Extends the lease by `ttl` from now. False when it was lost (expired
  // and taken, or released).
  bool renew_turn(TurnLease& lease, std::chrono::milliseconds ttl);
  // Gives the turn to the next caller. Releasing a lost lease is a no-op.
  void release_turn(const TurnLease& lease);

  // ---- observability ----
  CacheStats stats() const;
  // Never throws.
  CacheHealth health() const noexcept;

  class Impl;

 private:
  explicit SessionCache(std::shared_ptr<Impl> impl);
  std::shared_ptr<Impl> impl_;
};

// ---- template definitions ----

template <class T>
T SessionCache::flag_or(std::string_view name, T fallback, std::string_view channel) {
  auto v = flag(name, channel);
  if (!v) return fallback;
  try {
    return v->template get<T>();
  } catch (const Json::exception&) {
    detail::throw_flag_type_error(name, *v);
  }
}

}  // namespace convstore
