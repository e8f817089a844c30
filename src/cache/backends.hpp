// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#pragma once

#include <memory>

#include "cache/cache_backend.hpp"
#include "convstore/store.hpp"
#include "db/connection.hpp"

namespace convstore::detail {

// This process only: sharded maps with LRU lists and TTLs.
std::unique_ptr<CacheBackend> make_memory_backend(const CacheOptions& options);
// A Redis server (backends/redis; only in builds with CONVSTORE_WITH_REDIS).
std::unique_ptr<CacheBackend> make_redis_backend(std::string_view url, const CacheOptions& options);
// The cache tables of `store`.
std::unique_ptr<CacheBackend> make_database_backend(Store::Impl& store,
                                                    const CacheOptions& options);

// The expired rows of the cache tables: entries (lease rows excepted: they
// carry the fence), the fields of those entries, dead waiters. Deletes
// them, or only counts them when `count_only`. Runs on `c` as it is (the
// caller opens the transaction).
struct CacheSweep {
  long long entries = 0;
  long long fields = 0;
  long long waiters = 0;
};
CacheSweep sweep_database_cache(Connection& c, Timestamp at, bool count_only);

// The wall clock in ms since the epoch (what scores and rate windows use).
inline std::int64_t wall_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}
inline std::int64_t wall_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace convstore::detail
