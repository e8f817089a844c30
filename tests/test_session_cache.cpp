// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
//
// The SessionCache suite: every test runs on each backend (in-memory, the
// database on SQLite and on PostgreSQL, Redis).

#include <fmt/format.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>

#include "support.hpp"

using convstore::CacheOptions;
using convstore::ErrorCode;
using convstore::Json;
using convstore::RateAlgorithm;
using convstore::RateLimit;
using std::chrono::milliseconds;
using testing::contents;
using testing::text;

namespace {

std::string joined(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : ",") + s;
  return out;
}

}  // namespace

TEST_CASE_TEMPLATE("cache: plain values, TTL, bulk", B, CONVSTORE_CACHES) {
  CONVSTORE_TEST_CACHE(f);
  auto& c = f.cache();
  CHECK_FALSE(c.get("a").has_value());
  c.set("a", "one");
  CHECK(c.get("a") == std::optional<std::string>("one"));
  CHECK_FALSE(c.ttl("a").has_value());
  c.set("a", "two", milliseconds(60000));
  CHECK(c.get("a") == std::optional<std::string>("two"));
  auto left = c.ttl("a");
  REQUIRE(left.has_value());
  CHECK(left->count() > 50000);
  CHECK(left->count() <= 60000);

  // Any bytes: NUL and invalid UTF-8 come back unchanged.
  std::string bytes("\0\xff\xfe x\n\0", 7);
  c.set("bin", bytes);
  CHECK(c.get("bin") == std::optional<std::string>(bytes));

  CHECK(c.remove("a"));
  CHECK_FALSE(c.remove("a"));
  CHECK_FALSE(c.get("a").has_value());

  c.set("short", "x", milliseconds(80));
  std::this_thread::sleep_for(milliseconds(200));
  CHECK_FALSE(c.get("short").has_value());
  CHECK_FALSE(c.remove("short"));

  c.set_many({{"k1", "v1"}, {"k2", "v2"}, {"k3", bytes}}, milliseconds(60000));
  auto got = c.get_many({"k2", "missing", "k1", "k3", "k2"});
  REQUIRE(got.size() == 5);
  CHECK(got[0] == std::optional<std::string>("v2"));
  CHECK_FALSE(got[1].has_value());
  CHECK(got[2] == std::optional<std::string>("v1"));
  CHECK(got[3] == std::optional<std::string>(bytes));
  CHECK(got[4] == std::optional<std::string>("v2"));
  CHECK(c.ttl("k3").has_value());

  auto s = c.stats();
  CHECK(s.hits >= 6);
  CHECK(s.misses >= 3);
}

TEST_CASE_TEMPLATE("cache: bad input is refused and writes nothing", B, CONVSTORE_CACHES) {
  CONVSTORE_TEST_CACHE(f);
  auto& c = f.cache();
  CHECK_ERROR_CODE(c.set("", "x"), ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(c.set("a\nb", "x"), ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(c.set(std::string(1025, 'k'), "x"), ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(c.set("k", "x", milliseconds(-1)), ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(c.set_many({{"ok", "1"}, {"", "2"}}), ErrorCode::invalid_argument);
  CHECK_FALSE(c.get("ok").has_value());
  CHECK_ERROR_CODE(c.session_update("s", Json::array({1})), ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(c.session_update("s", Json{{"ok", 1}, {"", 2}}), ErrorCode::invalid_argument);
  CHECK(c.session_get_all("s") == Json::object());
  CHECK_ERROR_CODE(c.hit("r", RateLimit{0, milliseconds(1000)}), ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(c.hit("r", RateLimit{5, milliseconds(0)}), ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(c.hit("r", RateLimit{5, milliseconds(1000)}, 6), ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(c.active_count("web", std::chrono::hours(25)), ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(c.variant("exp", "u", {}), ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(c.acquire_turn("t", milliseconds(0), milliseconds(0)),
                   ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(c.context(f.store(), 1, 0), ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(c.context(f.store(), 1, 21), ErrorCode::invalid_argument);
  CacheOptions bad;
  bad.context_size = 0;
  CHECK_ERROR_CODE(convstore::SessionCache::in_memory(bad), ErrorCode::invalid_argument);
}

TEST_CASE_TEMPLATE("cache: session hashes with a sliding TTL", B, CONVSTORE_CACHES) {
  CacheOptions o;
  o.session_ttl = milliseconds(600);
  CONVSTORE_TEST_CACHE(f, o);
  auto& c = f.cache();
  c.session_set("discord:user123", "user_id", "abc-def-123");
  c.session_update("discord:user123", Json{{"conversation_id", 789}, {"model", "gpt-4"}});
  CHECK(c.session_get("discord:user123", "model") == std::optional<Json>("gpt-4"));
  CHECK(c.session_get("discord:user123", "conversation_id") == std::optional<Json>(789));
  CHECK_FALSE(c.session_get("discord:user123", "nope").has_value());
  CHECK(c.session_get_all("discord:user123") ==
        Json{{"user_id", "abc-def-123"}, {"conversation_id", 789}, {"model", "gpt-4"}});
  CHECK(c.session_remove_field("discord:user123", "model"));
  CHECK_FALSE(c.session_remove_field("discord:user123", "model"));
  CHECK(c.session_get_all("discord:user123").size() == 2);

  // Each read restarts the TTL: three reads 350 ms apart outlive one TTL.
  for (int i = 0; i < 3; ++i) {
    std::this_thread::sleep_for(milliseconds(350));
    CHECK(c.session_get("discord:user123", "user_id") == std::optional<Json>("abc-def-123"));
  }
  std::this_thread::sleep_for(milliseconds(900));
  CHECK(c.session_get_all("discord:user123") == Json::object());
  CHECK_FALSE(c.session_remove("discord:user123"));

  // An expired session starts again empty: no field of the old one returns.
  c.session_set("discord:user123", "fresh", true);
  CHECK(c.session_get_all("discord:user123") == Json{{"fresh", true}});
  CHECK(c.session_remove("discord:user123"));
  CHECK(c.session_get_all("discord:user123") == Json::object());
}

TEST_CASE_TEMPLATE("cache: sliding-window rate limits", B, CONVSTORE_CACHES) {
  CONVSTORE_TEST_CACHE(f);
  auto& c = f.cache();
  RateLimit per_minute{5, milliseconds(60000), RateAlgorithm::sliding_window};
  for (int i = 0; i < 5; ++i) {
    auto d = c.hit("user:123", per_minute);
    CHECK(d.allowed);
    CHECK(d.remaining == 4 - i);
    CHECK(d.reset_after.count() > 0);
    CHECK_FALSE(d.degraded);
  }
  auto refused = c.hit("user:123", per_minute);
  CHECK_FALSE(refused.allowed);
  CHECK(refused.remaining == 0);
  CHECK(refused.retry_after.count() > 0);
  CHECK(refused.retry_after.count() <= 120000);
  // Other keys have their own count; a reset forgets the count.
  CHECK(c.hit("ip:192.168.1.1", per_minute).allowed);
  c.reset_rate("user:123");
  CHECK(c.hit("user:123", per_minute).remaining == 4);

  // A short window: requests are allowed again once it has slid by.
  RateLimit burst{2, milliseconds(200), RateAlgorithm::sliding_window};
  CHECK(c.hit("endpoint:/chat", burst).allowed);
  CHECK(c.hit("endpoint:/chat", burst).allowed);
  CHECK_FALSE(c.hit("endpoint:/chat", burst).allowed);
  std::this_thread::sleep_for(milliseconds(450));
  CHECK(c.hit("endpoint:/chat", burst).allowed);
}

TEST_CASE_TEMPLATE("cache: token-bucket rate limits", B, CONVSTORE_CACHES) {
  CONVSTORE_TEST_CACHE(f);
  auto& c = f.cache();
  RateLimit bucket{4, milliseconds(400), RateAlgorithm::token_bucket};
  CHECK(c.hit("b", bucket, 3).allowed);
  auto d = c.hit("b", bucket);
  CHECK(d.allowed);
  CHECK(d.remaining == 0);
  auto refused = c.hit("b", bucket, 2);
  CHECK_FALSE(refused.allowed);
  // Refill is one token per 100 ms: two tokens take about 200 ms.
  CHECK(refused.retry_after.count() > 100);
  CHECK(refused.retry_after.count() <= 200);
  std::this_thread::sleep_for(milliseconds(250));
  CHECK(c.hit("b", bucket, 2).allowed);
  CHECK_FALSE(c.hit("b", bucket, 2).allowed);
}

TEST_CASE_TEMPLATE("cache: rate limits are atomic across threads and handles", B,
                   CONVSTORE_CACHES) {
  CONVSTORE_TEST_CACHE(f);
  auto& other = f.peer();
  RateLimit limit{100, milliseconds(600000), RateAlgorithm::sliding_window};
  RateLimit bucket{100, milliseconds(600000), RateAlgorithm::token_bucket};
  std::atomic<int> allowed{0}, bucket_allowed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 6; ++t) {
    threads.emplace_back([&, t] {
      auto& c = t % 2 == 0 ? f.cache() : other;
      for (int i = 0; i < 30; ++i) {
        if (c.hit("shared", limit).allowed) ++allowed;
        if (c.hit("bucket", bucket).allowed) ++bucket_allowed;
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK(allowed.load() == 100);
  CHECK(bucket_allowed.load() == 100);
}

TEST_CASE_TEMPLATE("cache: active users per channel", B, CONVSTORE_CACHES) {
  CONVSTORE_TEST_CACHE(f);
  auto& c = f.cache();
  c.mark_active("discord", "user123");
  c.mark_active("discord", "user456");
  c.mark_active("telegram", "user789");
  std::this_thread::sleep_for(milliseconds(150));
  c.mark_active("discord", "user789");
  CHECK(c.active_count("discord", milliseconds(60000)) == 3);
  CHECK(c.active_count("discord", milliseconds(100)) == 1);
  CHECK(c.active_count("slack", milliseconds(60000)) == 0);
  auto users = c.active_users("discord", milliseconds(60000));
  REQUIRE(users.size() == 3);
  CHECK(users[0] == "user789");
  CHECK(c.active_users("discord", milliseconds(60000), 1) == std::vector<std::string>{"user789"});
  CHECK(c.is_active("discord", "user123", milliseconds(60000)));
  CHECK_FALSE(c.is_active("discord", "user123", milliseconds(100)));
  CHECK_FALSE(c.is_active("discord", "nobody", milliseconds(60000)));
  // Marking again moves a user to the front, without counting twice.
  std::this_thread::sleep_for(milliseconds(5));
  c.mark_active("discord", "user123");
  CHECK(c.active_users("discord", milliseconds(60000))[0] == "user123");
  CHECK(c.active_count("discord", milliseconds(60000)) == 3);
}

TEST_CASE_TEMPLATE("cache: feature flags and A/B variants", B, CONVSTORE_CACHES) {
  CONVSTORE_TEST_CACHE(f);
  auto& c = f.cache();
  CHECK_FALSE(c.flag("enable_mcp_security").has_value());
  CHECK(c.flag_or("max_conversation_length", 50) == 50);
  c.set_flag("enable_mcp_security", true);
  c.set_flag("max_conversation_length", 100);
  c.set_flag("enable_slash_commands", false);
  c.set_flag("enable_slash_commands", true, "discord");
  CHECK(c.flag_or("enable_mcp_security", false));
  CHECK(c.flag_or<std::int64_t>("max_conversation_length", 0) == 100);
  CHECK_FALSE(c.flag_or("enable_slash_commands", true, "telegram"));
  CHECK(c.flag_or("enable_slash_commands", false, "discord"));
  CHECK(c.flag("enable_mcp_security", "discord") == std::optional<Json>(true));
  CHECK_ERROR_CODE(c.flag_or<std::string>("max_conversation_length", ""),
                   ErrorCode::invalid_argument);
  CHECK(c.flags("discord") == Json{{"enable_mcp_security", true},
                                   {"max_conversation_length", 100},
                                   {"enable_slash_commands", true}});
  CHECK(c.flags()["enable_slash_commands"] == false);
  CHECK(c.remove_flag("enable_slash_commands", "discord"));
  CHECK_FALSE(c.remove_flag("enable_slash_commands", "discord"));
  CHECK_FALSE(c.flag_or("enable_slash_commands", true, "discord"));
  // Flags do not expire and are seen by every handle on the backend.
  CHECK(f.peer().flag_or("max_conversation_length", 0) == 100);

  std::vector<std::string> variants{"variant_a", "variant_b"};
  std::map<std::string, int> counts;
  for (int i = 0; i < 400; ++i) {
    std::string user = "user" + std::to_string(i);
    std::string v = c.variant("model_selection", user, variants);
    CHECK(v == c.variant("model_selection", user, variants));
    ++counts[v];
  }
  CHECK(counts["variant_a"] > 120);
  CHECK(counts["variant_b"] > 120);
  // The assignment is a pure function of (experiment, user): pinned.
  CHECK(c.variant("model_selection", "user123", {"a", "b", "c"}) ==
        f.open().variant("model_selection", "user123", {"a", "b", "c"}));
  c.assign_variant("model_selection", "user123", "variant_b");
  CHECK(c.variant("model_selection", "user123", variants) == "variant_b");
}

TEST_CASE_TEMPLATE("cache: conversation contexts rebuilt from the store and kept right", B,
                   CONVSTORE_CACHES) {
  CacheOptions o;
  o.context_size = 5;
  CONVSTORE_TEST_CACHE(f, o);
  auto& c = f.cache();
  auto& conv = f.store().conversations();
  auto id = conv.start({}).id;
  for (int i = 1; i <= 7; ++i) conv.append(id, text("m" + std::to_string(i)));
  c.attach(f.store());

  auto before = c.stats();
  CHECK(contents(c.context(f.store(), id, 3)) == "m5,m6,m7");
  CHECK(contents(c.context(f.store(), id, 5)) == "m3,m4,m5,m6,m7");
  auto after = c.stats();
  CHECK(after.misses == before.misses + 1);
  CHECK(after.hits == before.hits + 1);

  // Changes through the attached store drop the cached context.
  auto m8 = conv.append(id, text("m8"));
  CHECK(contents(c.context(f.store(), id, 3)) == "m6,m7,m8");
  convstore::MessageUpdate edit;
  edit.content = "m8 edited";
  conv.update_message(m8.id, edit);
  CHECK(contents(c.context(f.store(), id, 2)) == "m7,m8 edited");
  conv.remove_message(m8.id);
  CHECK(contents(c.context(f.store(), id, 2)) == "m6,m7");
  conv.append_batch(id, {text("b1"), text("b2")});
  CHECK(contents(c.context(f.store(), id, 3)) == "m7,b1,b2");
  // Inside a transaction: dropped when it commits, not before.
  f.store().transaction([&] { conv.append(id, text("t1")); });
  CHECK(contents(c.context(f.store(), id, 1)) == "t1");
  try {
    f.store().transaction([&] {
      conv.append(id, text("rolled back"));
      throw std::runtime_error("abort");
    });
  } catch (const std::runtime_error&) {
  }
  CHECK(contents(c.context(f.store(), id, 1)) == "t1");

  // A cache that is not attached keeps what it has until invalidated; the
  // shared backends are kept right by the attached cache's invalidations.
  auto detached = f.open(o);
  auto other_conv = conv.start({}).id;
  conv.append(other_conv, text("x1"));
  CHECK(contents(detached.context(f.store(), other_conv, 2)) == "x1");
  conv.append(other_conv, text("x2"));
  CHECK(contents(detached.context(f.store(), other_conv, 2)) ==
        (f.kind() == "memory" ? "x1" : "x1,x2"));
  detached.invalidate_context(other_conv);
  CHECK(contents(detached.context(f.store(), other_conv, 2)) == "x1,x2");
  CHECK(contents(c.context(f.store(), other_conv, 2)) == "x1,x2");

  // A removed conversation's context goes with it.
  conv.remove(other_conv);
  CHECK_ERROR_CODE(c.context(f.store(), other_conv, 1), ErrorCode::not_found);
}

TEST_CASE_TEMPLATE("cache: turns are granted one at a time, in arrival order", B,
                   CONVSTORE_CACHES) {
  CONVSTORE_TEST_CACHE(f);
  auto& c = f.cache();
  auto first = c.acquire_turn("chat:42", milliseconds(10000), milliseconds(0));
  REQUIRE(first.has_value());
  CHECK(first->name == "chat:42");
  CHECK(first->expires_at > convstore::now());
  CHECK_FALSE(c.acquire_turn("chat:42", milliseconds(10000), milliseconds(50)).has_value());
  CHECK(c.acquire_turn("chat:43", milliseconds(10000), milliseconds(0)).has_value());

  // Three waiters arrive in order; each records when it got the turn.
  std::mutex mu;
  std::vector<std::string> order;
  std::vector<std::thread> waiters;
  auto& other = f.peer();
  for (int i = 0; i < 3; ++i) {
    waiters.emplace_back([&, i] {
      auto& cache = i == 1 ? other : c;
      auto lease = cache.acquire_turn("chat:42", milliseconds(10000), milliseconds(20000));
      REQUIRE(lease.has_value());
      {
        std::lock_guard lock(mu);
        order.push_back(std::to_string(i));
      }
      std::this_thread::sleep_for(milliseconds(20));
      cache.release_turn(*lease);
    });
    std::this_thread::sleep_for(milliseconds(150));
  }
  c.release_turn(*first);
  for (auto& t : waiters) t.join();
  CHECK(joined(order) == "0,1,2");

  // Each grant has a larger fence; a released lease cannot be renewed.
  auto next = c.acquire_turn("chat:42", milliseconds(10000), milliseconds(1000));
  REQUIRE(next.has_value());
  CHECK(next->fence > first->fence);
  CHECK_FALSE(c.renew_turn(*first, milliseconds(1000)));
  CHECK(c.renew_turn(*next, milliseconds(20000)));
  CHECK(next->expires_at > convstore::now() + std::chrono::seconds(15));
  c.release_turn(*first);  // a lost lease: no-op
  CHECK_FALSE(c.acquire_turn("chat:42", milliseconds(1000), milliseconds(0)).has_value());
  c.release_turn(*next);
  CHECK(c.acquire_turn("chat:42", milliseconds(1000), milliseconds(0)).has_value());
}

TEST_CASE_TEMPLATE("cache: an expired turn passes on, and its fence is refused by the store", B,
                   CONVSTORE_CACHES) {
  CONVSTORE_TEST_CACHE(f);
  auto& c = f.cache();
  auto& conv = f.store().conversations();
  auto id = conv.start({}).id;
  auto stale = c.acquire_turn(id, milliseconds(150), milliseconds(0));
  REQUIRE(stale.has_value());
  CHECK(stale->name == "conversation:" + std::to_string(id));
  convstore::AppendOptions with_stale;
  with_stale.fence = stale->fence;
  conv.append(id, text("first turn"), with_stale);

  // The holder stalls past its TTL: the next caller gets the turn.
  auto fresh = c.acquire_turn(id, milliseconds(10000), milliseconds(5000));
  REQUIRE(fresh.has_value());
  CHECK(fresh->fence > stale->fence);
  CHECK_FALSE(c.renew_turn(*stale, milliseconds(1000)));
  convstore::AppendOptions with_fresh;
  with_fresh.fence = fresh->fence;
  conv.append(id, text("second turn"), with_fresh);
  // The stalled holder wakes up and writes: refused, nothing written.
  CHECK_ERROR_CODE(conv.append(id, text("late write"), with_stale), ErrorCode::conflict);
  CHECK(contents(conv.recent(id, 10)) == "first turn,second turn");
  conv.append(id, text("still the second turn"), with_fresh);
  CHECK(conv.get(id)->message_count == 3);
}

TEST_CASE_TEMPLATE("cache: health and counters", B, CONVSTORE_CACHES) {
  CONVSTORE_TEST_CACHE(f);
  auto h = f.cache().health();
  CHECK(h.ok);
  CHECK(h.error.empty());
  CHECK(h.backend == f.cache().backend());
  f.cache().set("k", "v");
  CHECK(f.cache().get("k").has_value());
  CHECK_FALSE(f.cache().get("nope").has_value());
  auto s = f.cache().stats();
  CHECK(s.writes == 1);
  CHECK(s.hits == 1);
  CHECK(s.misses == 1);
  CHECK(s.errors == 0);
}

TEST_CASE("cache: the in-memory bound evicts the least recently used") {
  CacheOptions o;
  o.max_bytes = 16 * 64 * 1024;  // 64 KiB per shard
  o.sweep_interval = milliseconds(20);
  auto c = convstore::SessionCache::in_memory(o);
  std::string value(1000, 'x');
  c.set("hot", value);
  for (int i = 0; i < 5000; ++i) {
    c.set("k" + std::to_string(i), value);
    if (i % 50 == 0) CHECK(c.get("hot").has_value());  // kept in use
  }
  auto s = c.stats();
  CHECK(s.evictions > 3000);
  CHECK(s.bytes <= static_cast<std::int64_t>(o.max_bytes));
  CHECK(c.get("hot").has_value());
  CHECK_FALSE(c.get("k0").has_value());
  CHECK(c.get("k4999").has_value());
  // The sweeper drops expired entries nobody reads.
  c.set("ttl", "v", milliseconds(30));
  auto entries = c.stats().entries;
  std::this_thread::sleep_for(milliseconds(200));
  CHECK(c.stats().entries == entries - 1);
  CHECK(c.stats().expirations >= 1);
}

namespace {

std::vector<std::string> lines_of(const std::string& path) {
  std::vector<std::string> out;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

// Waits until `path` has `n` lines (a helper process got its turn).
bool wait_lines(const std::string& path, std::size_t n, std::chrono::seconds limit) {
  auto until = std::chrono::steady_clock::now() + limit;
  while (lines_of(path).size() < n) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(milliseconds(20));
  }
  return true;
}

}  // namespace

TEST_CASE_TEMPLATE("cache: processes take turns in arrival order; a killed holder's turn passes", B,
                   testing::SqliteCache, testing::PostgresqlCache, testing::RedisCache) {
  CONVSTORE_TEST_CACHE(f);
  auto& conv = f.store().conversations();
  auto id = conv.start({}).id;
  std::string out = "/tmp/convstore_turns_" + std::to_string(getpid()) + "_" + B::name;
  std::remove(out.c_str());
  auto args = [&](int hold_ms) {
    return fmt::format("turn '{}' {} {} {} {}", f.db().url(), f.helper_args(), id, hold_ms, out);
  };

  // Three processes arrive 300 ms apart while the first holds for 900 ms:
  // they run one after the other, in that order, and their messages never
  // interleave.
  std::vector<int> pids;
  for (int i = 0; i < 3; ++i) {
    pids.push_back(testing::spawn_helper(args(i == 0 ? 900 : 100)));
    if (i == 0) REQUIRE(wait_lines(out, 1, std::chrono::seconds(30)));
    std::this_thread::sleep_for(milliseconds(300));
  }
  for (int pid : pids) CHECK(testing::wait_helper(pid) == 0);
  auto turns = lines_of(out);
  REQUIRE(turns.size() == 3);
  std::vector<std::string> expected;
  long long last_fence = 0;
  for (std::size_t i = 0; i < turns.size(); ++i) {
    std::istringstream in(turns[i]);
    std::string pid;
    long long fence = 0;
    in >> pid >> fence;
    CHECK(std::to_string(pids[i]) == pid);  // arrival order
    CHECK(fence > last_fence);
    last_fence = fence;
    expected.push_back(pid + " start");
    expected.push_back(pid + " end");
  }
  std::vector<std::string> got;
  for (const auto& m : conv.recent(id, 100)) got.push_back(m.content);
  CHECK(joined(got) == joined(expected));

  // A holder killed mid-turn: its lease expires, the next caller gets the
  // turn with a newer fence, and the dead holder's fence is refused.
  std::remove(out.c_str());
  int victim = testing::spawn_helper(args(60000));
  REQUIRE(wait_lines(out, 1, std::chrono::seconds(30)));
  std::istringstream in(lines_of(out)[0]);
  int victim_pid = 0;
  long long victim_fence = 0;
  in >> victim_pid >> victim_fence;
  ::kill(victim_pid, SIGKILL);
  testing::wait_helper(victim);
  auto lease = f.cache().acquire_turn(id, milliseconds(5000), milliseconds(10000));
  REQUIRE(lease.has_value());
  CHECK(lease->fence > victim_fence);
  convstore::AppendOptions fresh, stale;
  fresh.fence = lease->fence;
  stale.fence = victim_fence;
  conv.append(id, text("after the crash"), fresh);
  CHECK_ERROR_CODE(conv.append(id, text("zombie"), stale), ErrorCode::conflict);
  f.cache().release_turn(*lease);
  std::remove(out.c_str());
}

TEST_CASE_TEMPLATE("cache: a context read inside a rolled-back transaction is not cached", B,
                   CONVSTORE_CACHES) {
  CONVSTORE_TEST_CACHE(f);
  auto& c = f.cache();
  auto& conv = f.store().conversations();
  c.attach(f.store());
  c.attach(f.store());  // a no-op
  auto id = conv.start({}).id;
  conv.append(id, text("m1"));
  try {
    f.store().transaction([&] {
      conv.append(id, text("phantom"));
      CHECK(contents(c.context(f.store(), id, 5)) == "m1,phantom");  // its own write
      throw std::runtime_error("the model call failed");
    });
  } catch (const std::runtime_error&) {
  }
  CHECK(contents(c.context(f.store(), id, 5)) == "m1");
  CHECK(contents(c.context(f.store(), id, 5)) == "m1");
  // Turn names never collide with another turn's bookkeeping.
  auto a = c.acquire_turn("job", milliseconds(5000), milliseconds(0));
  auto b = c.acquire_turn("job:seq", milliseconds(5000), milliseconds(0));
  auto q = c.acquire_turn("job:q", milliseconds(5000), milliseconds(0));
  CHECK(a.has_value());
  CHECK(b.has_value());
  CHECK(q.has_value());
}

TEST_CASE_TEMPLATE("cache: a database cache attached to its own one-connection store", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  convstore::Options o;
  o.pool_size = 1;
  o.acquire_timeout = milliseconds(3000);
  auto store = db.open(o);
  auto cache = convstore::SessionCache::database(store);
  cache.attach(store);
  auto& conv = store.conversations();
  auto id = conv.start({}).id;
  conv.append(id, text("m1"));
  CHECK(contents(cache.context(store, id, 5)) == "m1");
  // The invalidation after COMMIT needs the one connection: it runs once the
  // transaction has given it back, instead of waiting acquire_timeout.
  auto t0 = std::chrono::steady_clock::now();
  store.transaction([&] { conv.append(id, text("m2")); });
  CHECK(std::chrono::steady_clock::now() - t0 < milliseconds(2000));
  CHECK(cache.stats().errors == 0);
  CHECK(contents(cache.context(store, id, 5)) == "m1,m2");
}

TEST_CASE_TEMPLATE("cache: rate limits are atomic across processes", B, testing::SqliteCache,
                   testing::PostgresqlCache, testing::RedisCache) {
  CONVSTORE_TEST_CACHE(f);
  std::string out = "/tmp/convstore_hits_" + std::to_string(getpid()) + "_" + B::name;
  std::remove(out.c_str());
  std::vector<int> pids;
  for (int i = 0; i < 3; ++i) {
    pids.push_back(testing::spawn_helper(
        fmt::format("hit '{}' {} user:1 40 {}", f.db().url(), f.helper_args(), out)));
  }
  for (int pid : pids) CHECK(testing::wait_helper(pid) == 0);
  int total = 0;
  for (const auto& line : lines_of(out)) total += std::stoi(line);
  CHECK(lines_of(out).size() == 3);
  CHECK(total == 50);  // 120 requests, limit 50
  CHECK_FALSE(f.cache().hit("user:1", RateLimit{50, std::chrono::minutes(10)}).allowed);
  std::remove(out.c_str());
}
