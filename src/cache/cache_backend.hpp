// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#pragma once

// The private interface behind SessionCache: the few primitives every
// backend (in-memory, Redis, database) implements. SessionCache::Impl builds
// the public calls on them (JSON encoding, key names, failure policy), so a
// backend never sees a session, a flag or a message.

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "convstore/session_cache.hpp"

namespace convstore::detail {

using Ms = std::chrono::milliseconds;
using Fields = std::vector<std::pair<std::string, std::string>>;

// A value with a version that only grows (a conversation context).
struct Versioned {
  std::int64_t version = 0;  // 0 when the key is missing
  std::optional<std::string> value;
};

// Keys reach a backend already prefixed and checked. A TTL of zero means no
// expiry. Backends throw Error(unavailable) when their server fails (after
// at most about connect_timeout + command_timeout), Error(internal) for an
// answer they do not understand; never anything else for a failure.
//
// Thread safety: every member may be called from several threads at once.
class CacheBackend {
 public:
  virtual ~CacheBackend() = default;

  // "memory", "redis" or "database".
  virtual const char* name() const noexcept = 0;
  // One round trip; throws on failure.
  virtual void ping() = 0;

  // ---- plain values ----
  virtual std::optional<std::string> get(const std::string& key) = 0;
  virtual void set(const std::string& key, std::string_view value, Ms ttl) = 0;
  // Removes a key of any kind (value, hash, scored set, versioned, rate).
  virtual bool remove(const std::string& key) = 0;
  // Time left; nullopt when the key is missing or has no TTL.
  virtual std::optional<Ms> ttl(const std::string& key) = 0;
  virtual std::vector<std::optional<std::string>> get_many(
      const std::vector<std::string>& keys) = 0;
  virtual void set_many(const Fields& items, Ms ttl) = 0;

  // ---- hashes ----
  // Each call with ttl > 0 restarts the hash's TTL (a sliding expiry) when
  // the hash exists after the call; ttl == 0 leaves the hash without expiry.
  virtual std::optional<std::string> hget(const std::string& key, const std::string& field,
                                          Ms ttl) = 0;
  virtual Fields hgetall(const std::string& key, Ms ttl) = 0;
  virtual void hset(const std::string& key, const Fields& fields, Ms ttl) = 0;
  virtual bool hdel(const std::string& key, const std::string& field, Ms ttl) = 0;

  // ---- scored sets (active users; scores are ms since the epoch) ----
  // Sets `member`'s score and drops the members scored below `drop_below`.
  virtual void zadd(const std::string& key, const std::string& member, std::int64_t score,
                    std::int64_t drop_below) = 0;
  // Members scored at least `min_score`.
  virtual std::int64_t zcount(const std::string& key, std::int64_t min_score) = 0;
  // The same, highest score first, at most `limit`.
  virtual std::vector<std::string> zrange_desc(const std::string& key, std::int64_t min_score,
                                               std::size_t limit) = 0;
  virtual std::optional<std::int64_t> zscore(const std::string& key, const std::string& member) = 0;

  // ---- versioned values (cache-aside without stale refills) ----
  virtual Versioned vget(const std::string& key) = 0;
  // Stores `value` only if the key's version still equals `version`
  // (0: the key is missing); true when stored. The TTL applies to the key.
  virtual bool vput(const std::string& key, std::int64_t version, std::string_view value,
                    Ms ttl) = 0;
  // Drops the value and increments the version (the key then lives `ttl`,
  // so that a refill that read older data is refused for that long).
  virtual void vbump(const std::string& key, Ms ttl) = 0;

  // ---- rate limiting (see RateAlgorithm); remove(key) resets ----
  virtual RateDecision rate(const std::string& key, const RateLimit& limit, std::int64_t cost) = 0;

  // ---- leases, granted in ticket order ----
  // A place in `name`'s queue: tickets only grow.
  virtual std::int64_t lease_ticket(const std::string& name, Ms alive_for) = 0;
  // Grants the lease to `ticket` when it is free (or expired) and `ticket`
  // is the lowest live ticket; the fence is max(previous fence + 1, now in
  // µs). Otherwise keeps the ticket queued for `alive_for` more (a waiter
  // that stops trying drops out) and returns nullopt.
  virtual std::optional<TurnLease> lease_try(const std::string& name, std::int64_t ticket, Ms ttl,
                                             Ms alive_for) = 0;
  // Leaves the queue without the lease.
  virtual void lease_leave(const std::string& name, std::int64_t ticket) = 0;
  // Extends the lease held with `fence` to now + ttl; nullopt when lost.
  virtual std::optional<Timestamp> lease_renew(const std::string& name, std::int64_t fence,
                                               Ms ttl) = 0;
  // Frees the lease held with `fence`; no-op when lost.
  virtual void lease_release(const std::string& name, std::int64_t fence) = 0;
  // Blocks until `name`'s lease may have changed hands, or `pause` passes.
  // The default sleeps; the in-memory backend waits on a condition.
  virtual void lease_wait(const std::string& name, Ms pause);

  // ---- upkeep ----
  // Drops expired entries (called every CacheOptions::sweep_interval).
  virtual void sweep() {}
  // Entries, bytes, evictions and expirations where the backend counts them.
  virtual void add_stats(CacheStats&) const {}
};

}  // namespace convstore::detail
