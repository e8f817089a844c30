// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
//
// W5, the session cache: 100,000 set-with-TTL, then 100,000 get, ~500-byte
// values, one thread.
//   in-memory  vs a bare std::mutex + std::unordered_map (value and expiry)
//   Redis      vs raw hiredis doing the same requests one at a time, and the
//              bulk calls (set_many / get_many, one pipeline per 100 keys)
//              vs a raw hiredis pipeline of the same batches
//   database   for information (SQLite, PostgreSQL): no baseline row
//
//   convstore_bench_cache [--redis URL] [--pg URL] [--n N] [--repeat R]

#include <convstore/convstore.hpp>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "harness.hpp"
#if CONVSTORE_HAS_REDIS
#include <hiredis/hiredis.h>
#endif

namespace {

using bench::Clock;
using bench::seconds_since;
using std::chrono::milliseconds;

constexpr milliseconds kTtl{3600 * 1000};
constexpr std::size_t kBatch = 100;

std::string value_of(int i) {
  std::string v = "session " + std::to_string(i) + " ";
  while (v.size() < 500) v += "user_id=abc-def-123;model=gpt-4;";
  v.resize(500);
  return v;
}

std::vector<std::string> keys_of(int n, const std::string& tag) {
  std::vector<std::string> k;
  k.reserve(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) k.push_back("session:" + tag + ":" + std::to_string(i));
  return k;
}

struct Rates {
  double set_per_s = 0;
  double get_per_s = 0;
};

// The best of `repeat` runs of fn() (fn returns its rates).
template <class F>
Rates best(int repeat, F&& fn) {
  Rates out;
  for (int r = 0; r < repeat; ++r) {
    Rates x = fn(r);
    out.set_per_s = std::max(out.set_per_s, x.set_per_s);
    out.get_per_s = std::max(out.get_per_s, x.get_per_s);
  }
  return out;
}

Rates run_cache(convstore::SessionCache& cache, const std::vector<std::string>& keys,
                const std::vector<std::string>& values) {
  Rates r;
  auto t0 = Clock::now();
  for (std::size_t i = 0; i < keys.size(); ++i) cache.set(keys[i], values[i % values.size()], kTtl);
  r.set_per_s = static_cast<double>(keys.size()) / seconds_since(t0);
  std::size_t found = 0;
  t0 = Clock::now();
  for (const auto& k : keys) found += cache.get(k).has_value() ? 1 : 0;
  r.get_per_s = static_cast<double>(keys.size()) / seconds_since(t0);
  if (found != keys.size()) std::cerr << "warning: " << keys.size() - found << " misses\n";
  return r;
}

Rates run_cache_bulk(convstore::SessionCache& cache, const std::vector<std::string>& keys,
                     const std::vector<std::string>& values) {
  Rates r;
  auto t0 = Clock::now();
  for (std::size_t from = 0; from < keys.size(); from += kBatch) {
    std::vector<std::pair<std::string, std::string>> items;
    for (std::size_t i = from; i < std::min(keys.size(), from + kBatch); ++i) {
      items.emplace_back(keys[i], values[i % values.size()]);
    }
    cache.set_many(items, kTtl);
  }
  r.set_per_s = static_cast<double>(keys.size()) / seconds_since(t0);
  t0 = Clock::now();
  for (std::size_t from = 0; from < keys.size(); from += kBatch) {
    std::vector<std::string> batch(
        keys.begin() + static_cast<long>(from),
        keys.begin() + static_cast<long>(std::min(keys.size(), from + kBatch)));
    cache.get_many(batch);
  }
  r.get_per_s = static_cast<double>(keys.size()) / seconds_since(t0);
  return r;
}

// The baseline of the in-process cache: what one writes with no library.
Rates run_map(const std::vector<std::string>& keys, const std::vector<std::string>& values) {
  struct Item {
    std::string value;
    std::chrono::steady_clock::time_point expires;
  };
  std::mutex mu;
  std::unordered_map<std::string, Item> map;
  Rates r;
  auto t0 = Clock::now();
  for (std::size_t i = 0; i < keys.size(); ++i) {
    auto expires = std::chrono::steady_clock::now() + kTtl;
    std::lock_guard lock(mu);
    map[keys[i]] = Item{values[i % values.size()], expires};
  }
  r.set_per_s = static_cast<double>(keys.size()) / seconds_since(t0);
  std::size_t found = 0;
  t0 = Clock::now();
  for (const auto& k : keys) {
    std::optional<std::string> v;
    {
      auto now = std::chrono::steady_clock::now();
      std::lock_guard lock(mu);
      auto it = map.find(k);
      if (it != map.end() && it->second.expires > now) v = it->second.value;
    }
    found += v ? 1 : 0;
  }
  r.get_per_s = static_cast<double>(keys.size()) / seconds_since(t0);
  if (found != keys.size()) std::cerr << "warning: baseline misses\n";
  return r;
}

#if CONVSTORE_HAS_REDIS
struct RawRedis {
  redisContext* c = nullptr;
  explicit RawRedis(const std::string& host, int port, int db) {
    c = redisConnect(host.c_str(), port);
    if (c == nullptr || c->err) throw std::runtime_error("hiredis: cannot connect");
    redisReply* r = static_cast<redisReply*>(redisCommand(c, "SELECT %d", db));
    freeReplyObject(r);
  }
  ~RawRedis() { redisFree(c); }
};

// Raw hiredis, one request at a time, as an engineer writes it by hand.
Rates run_hiredis(RawRedis& raw, const std::vector<std::string>& keys,
                  const std::vector<std::string>& values) {
  Rates r;
  auto t0 = Clock::now();
  for (std::size_t i = 0; i < keys.size(); ++i) {
    const std::string& v = values[i % values.size()];
    auto* reply = static_cast<redisReply*>(redisCommand(raw.c, "SET %b %b PX %lld", keys[i].data(),
                                                        keys[i].size(), v.data(), v.size(),
                                                        static_cast<long long>(kTtl.count())));
    if (reply == nullptr) throw std::runtime_error("hiredis SET failed");
    freeReplyObject(reply);
  }
  r.set_per_s = static_cast<double>(keys.size()) / seconds_since(t0);
  t0 = Clock::now();
  std::size_t found = 0;
  for (const auto& k : keys) {
    auto* reply = static_cast<redisReply*>(redisCommand(raw.c, "GET %b", k.data(), k.size()));
    if (reply == nullptr) throw std::runtime_error("hiredis GET failed");
    std::optional<std::string> v;
    if (reply->type == REDIS_REPLY_STRING) v.emplace(reply->str, reply->len);
    found += v ? 1 : 0;
    freeReplyObject(reply);
  }
  r.get_per_s = static_cast<double>(keys.size()) / seconds_since(t0);
  return r;
}

// Raw hiredis: pipelines of kBatch SETs, one MGET per kBatch keys.
Rates run_hiredis_bulk(RawRedis& raw, const std::vector<std::string>& keys,
                       const std::vector<std::string>& values) {
  Rates r;
  auto drain = [&](std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) {
      void* reply = nullptr;
      if (redisGetReply(raw.c, &reply) != REDIS_OK) throw std::runtime_error("hiredis failed");
      freeReplyObject(reply);
    }
  };
  auto t0 = Clock::now();
  for (std::size_t from = 0; from < keys.size(); from += kBatch) {
    std::size_t to = std::min(keys.size(), from + kBatch);
    for (std::size_t i = from; i < to; ++i) {
      const std::string& v = values[i % values.size()];
      redisAppendCommand(raw.c, "SET %b %b PX %lld", keys[i].data(), keys[i].size(), v.data(),
                         v.size(), static_cast<long long>(kTtl.count()));
    }
    drain(to - from);
  }
  r.set_per_s = static_cast<double>(keys.size()) / seconds_since(t0);
  t0 = Clock::now();
  for (std::size_t from = 0; from < keys.size(); from += kBatch) {
    std::size_t to = std::min(keys.size(), from + kBatch);
    // One MGET per batch: the best raw form of a bulk read.
    std::vector<const char*> argv{"MGET"};
    std::vector<std::size_t> lens{4};
    for (std::size_t i = from; i < to; ++i) {
      argv.push_back(keys[i].data());
      lens.push_back(keys[i].size());
    }
    redisAppendCommandArgv(raw.c, static_cast<int>(argv.size()), argv.data(), lens.data());
    drain(1);
  }
  r.get_per_s = static_cast<double>(keys.size()) / seconds_since(t0);
  return r;
}
#endif

void print(const std::string& backend, const std::string& what, const Rates& cs,
           const Rates& base) {
  bench::print_rows(backend, {{what + " set", "ops/s", cs.set_per_s, base.set_per_s},
                              {what + " get", "ops/s", cs.get_per_s, base.get_per_s}});
}

}  // namespace

int main(int argc, char** argv) {
  std::string redis_url, pg;
  int n = 100000, repeat = 3;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--redis" && i + 1 < argc) {
      redis_url = argv[++i];
    } else if (a == "--pg" && i + 1 < argc) {
      pg = argv[++i];
    } else if (a == "--n" && i + 1 < argc) {
      n = std::max(100, std::atoi(argv[++i]));
    } else if (a == "--repeat" && i + 1 < argc) {
      repeat = std::max(1, std::atoi(argv[++i]));
    } else {
      std::cerr << "usage: convstore_bench_cache [--redis URL] [--pg URL] [--n N] [--repeat R]\n";
      return 2;
    }
  }
  if (redis_url.empty()) {
    if (const char* env = std::getenv("CONVSTORE_TEST_REDIS_URL")) redis_url = env;
  }
  if (pg.empty()) {
    if (const char* env = std::getenv("CONVSTORE_TEST_PG_URL")) pg = env;
  }
  std::vector<std::string> values;
  for (int i = 0; i < 16; ++i) values.push_back(value_of(i));
  try {
    {
      auto cache = convstore::SessionCache::in_memory();
      Rates cs = best(repeat, [&](int r) {
        return run_cache(cache, keys_of(n, "m" + std::to_string(r)), values);
      });
      Rates base =
          best(repeat, [&](int r) { return run_map(keys_of(n, "b" + std::to_string(r)), values); });
      print("memory", "W5 100k x 500 B", cs, base);
    }
#if CONVSTORE_HAS_REDIS
    if (!redis_url.empty()) {
      convstore::CacheOptions o;
      o.key_prefix = "bench:";
      auto cache = convstore::SessionCache::redis(redis_url, o);
      // redis://host:port/db
      std::string rest = redis_url.substr(8);
      std::string hostport = rest.substr(0, rest.find('/'));
      int db = rest.find('/') == std::string::npos
                   ? 0
                   : std::atoi(rest.substr(rest.find('/') + 1).c_str());
      RawRedis raw(hostport.substr(0, hostport.find(':')),
                   std::atoi(hostport.substr(hostport.find(':') + 1).c_str()), db);
      Rates cs{}, base{};
      for (int r = 0; r < repeat; ++r) {
        auto ks = keys_of(n, "r" + std::to_string(r));
        bench::in_turns(
            r,
            [&] {
              Rates x = run_cache(cache, ks, values);
              cs.set_per_s = std::max(cs.set_per_s, x.set_per_s);
              cs.get_per_s = std::max(cs.get_per_s, x.get_per_s);
            },
            [&] {
              Rates x = run_hiredis(raw, keys_of(n, "bench:v:h" + std::to_string(r)), values);
              base.set_per_s = std::max(base.set_per_s, x.set_per_s);
              base.get_per_s = std::max(base.get_per_s, x.get_per_s);
            });
      }
      print("redis", "W5 one at a time", cs, base);
      Rates bcs = best(repeat, [&](int r) {
        return run_cache_bulk(cache, keys_of(n, "rb" + std::to_string(r)), values);
      });
      Rates bbase = best(repeat, [&](int r) {
        return run_hiredis_bulk(raw, keys_of(n, "bench:v:hb" + std::to_string(r)), values);
      });
      print("redis", "W5 batches of 100", bcs, bbase);
      redisReply* fl = static_cast<redisReply*>(redisCommand(raw.c, "FLUSHDB"));
      freeReplyObject(fl);
    } else {
      std::cout << "\nredis: skipped (no --redis URL and no CONVSTORE_TEST_REDIS_URL)\n";
    }
#endif
    auto dir = std::filesystem::temp_directory_path() / "convstore_bench_cache";
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    std::vector<std::pair<std::string, std::string>> dbs{
        {"sqlite", "sqlite:" + (dir / "c.db").string()}};
    if (!pg.empty()) dbs.emplace_back("postgresql", pg);
    for (const auto& [name, url] : dbs) {
      auto store = convstore::Store::open(url);
      auto cache = convstore::SessionCache::database(store);
      int m = std::min(n, 10000);
      Rates cs = run_cache(cache, keys_of(m, "d"), values);
      Rates bulk = run_cache_bulk(cache, keys_of(m, "db"), values);
      std::printf(
          "\n%-12s W5 database cache, %d keys (no baseline): set %.0f ops/s, get %.0f ops/s; "
          "batches of 100: set %.0f ops/s, get %.0f ops/s\n",
          name.c_str(), m, cs.set_per_s, cs.get_per_s, bulk.set_per_s, bulk.get_per_s);
    }
    std::filesystem::remove_all(dir);
  } catch (const std::exception& e) {
    std::cerr << "convstore_bench_cache: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
