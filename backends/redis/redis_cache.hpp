// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#pragma once

// The Redis backend of SessionCache (hiredis). Private: never installed.

#include <memory>
#include <string>
#include <string_view>

#include "cache/cache_backend.hpp"
#include "convstore/session_cache.hpp"

namespace convstore::detail {

// Where a Redis URL points.
struct RedisTarget {
  std::string host;      // TCP: a name, an IPv4 or an IPv6 address (no brackets)
  int port = 6379;       // TCP
  std::string socket;    // a Unix socket path instead of host and port
  int db = 0;            // SELECTed on every new connection when not 0
  std::string user;      // AUTH user (Redis 6 ACL); empty: the default user
  std::string password;  // AUTH password; empty: no AUTH. Never printed.
  std::string display;   // what messages show: the URL without user or password
};

// Parses "redis://[[user]:password@]host[:port][/db]" (IPv6 hosts in
// brackets; user and password percent-decoded) and
// "unix:///path/redis.sock[?db=N][&user=U][&password=P]". Throws
// Error(invalid_argument) naming the URL with its password masked, and
// Error(not_supported) for "rediss://" (TLS), which this build lacks.
RedisTarget parse_redis_url(std::string_view url);

// The backend: a pool of at most options.pool_size connections opened on
// demand (constructing it never connects, so it cannot fail for a server
// that is down), command and connect timeouts, and a circuit breaker that
// fails calls fast for options.retry_interval after the server failed.
// Throws Error(invalid_argument) for a malformed URL or a zero timeout.
std::unique_ptr<CacheBackend> make_redis_backend(std::string_view url, const CacheOptions& options);

}  // namespace convstore::detail
