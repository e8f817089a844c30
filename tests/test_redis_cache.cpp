// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT

// White-box tests of the Redis backend of SessionCache, against a real
// server: the one named by CONVSTORE_TEST_REDIS_URL (skipped when unset,
// failed under CI=true), and private redis-server processes that the fault
// tests start, stop and restart themselves.

#include <arpa/inet.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

#include "convstore/conversation_store.hpp"
#include "redis_cache.hpp"
#include "support.hpp"

using convstore::CacheOptions;
using convstore::ErrorCode;
using convstore::RateAlgorithm;
using convstore::RateLimit;
using convstore::detail::CacheBackend;
using convstore::detail::make_redis_backend;
using convstore::detail::Ms;
using testing::contents;
using testing::text;
using namespace std::chrono_literals;

namespace {

using Clock = std::chrono::steady_clock;

bool in_ci() {
  const char* ci = std::getenv("CI");
  return ci != nullptr && std::string(ci) == "true";
}

// The shared test server's URL, or "" (the test is then skipped).
std::string test_url() {
  const char* url = std::getenv("CONVSTORE_TEST_REDIS_URL");
  if (url == nullptr || *url == '\0') {
    if (in_ci()) FAIL("CONVSTORE_TEST_REDIS_URL is not set: Redis tests cannot run (CI=true)");
    MESSAGE("Redis not configured (CONVSTORE_TEST_REDIS_URL unset): skipped");
    return {};
  }
  return url;
}

// Keys of their own for each test, so that runs can share a server.
std::string unique_prefix() {
  static std::atomic<int> counter{0};
  return "convstore_test:" + std::to_string(getpid()) + ":" + std::to_string(counter++) + ":" +
         std::to_string(Clock::now().time_since_epoch().count() % 1000000) + ":";
}

Ms elapsed_since(Clock::time_point start) {
  return std::chrono::duration_cast<Ms>(Clock::now() - start);
}

// A command on a connection of our own (administration the backend does
// not offer: CLIENT PAUSE, SCRIPT FLUSH, raw reads).
std::string raw_command(const convstore::detail::RedisTarget& t,
                        const std::vector<std::string>& args) {
  timeval tv{2, 0};
  redisContext* c = t.socket.empty() ? redisConnectWithTimeout(t.host.c_str(), t.port, tv)
                                     : redisConnectUnixWithTimeout(t.socket.c_str(), tv);
  REQUIRE(c != nullptr);
  std::string out;
  auto run = [&](const std::vector<std::string>& a) {
    std::vector<const char*> argv;
    std::vector<size_t> lengths;
    for (const auto& s : a) {
      argv.push_back(s.data());
      lengths.push_back(s.size());
    }
    auto* r = static_cast<redisReply*>(
        redisCommandArgv(c, static_cast<int>(argv.size()), argv.data(), lengths.data()));
    if (r == nullptr) return std::string("I/O error: ") + c->errstr;
    std::string text = r->str != nullptr ? std::string(r->str, r->len) : std::to_string(r->integer);
    freeReplyObject(r);
    return text;
  };
  if (c->err == 0) {
    if (!t.password.empty()) run({"AUTH", t.password});
    if (t.db != 0) run({"SELECT", std::to_string(t.db)});
    out = run(args);
  } else {
    out = std::string("connect error: ") + c->errstr;
  }
  redisFree(c);
  return out;
}

int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  socklen_t len = sizeof a;
  REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0);
  ::close(fd);
  return ntohs(a.sin_port);
}

bool process_gone(int pid) {
  if (::kill(pid, 0) != 0) return errno == ESRCH;
  // A zombie nobody reaps (no init in a container) is gone for our purpose.
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(stat, line);
  auto paren = line.rfind(')');
  return paren != std::string::npos && paren + 2 < line.size() && line[paren + 2] == 'Z';
}

// A redis-server of the test's own, on a free port of 127.0.0.1.
class PrivateRedis {
 public:
  explicit PrivateRedis(std::string extra = {}) : extra_(std::move(extra)), port_(free_port()) {
    dir_ =
        (std::filesystem::temp_directory_path() / ("convstore_redis_" + unique_prefix())).string();
    std::replace(dir_.begin(), dir_.end(), ':', '_');
    std::filesystem::create_directories(dir_);
  }
  ~PrivateRedis() {
    stop();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  PrivateRedis(const PrivateRedis&) = delete;
  PrivateRedis& operator=(const PrivateRedis&) = delete;

  static bool available() { return std::system("command -v redis-server >/dev/null 2>&1") == 0; }

  int port() const { return port_; }
  // Where the server listens when started with "--unixsocket <this>".
  std::string socket_path() const { return dir_ + "/redis.sock"; }
  void add_arguments(const std::string& extra) { extra_ += " " + extra; }

  // Starts the server (again, on the same port) and waits until it answers.
  void start() {
    std::string cmd = "redis-server --port " + std::to_string(port_) +
                      " --bind 127.0.0.1 --save '' --appendonly no --daemonize yes --pidfile '" +
                      pidfile() + "' --dir '" + dir_ + "' --logfile '" + dir_ + "/redis.log' " +
                      extra_;
    REQUIRE(std::system(cmd.c_str()) == 0);
    convstore::detail::RedisTarget t;
    t.host = "127.0.0.1";
    t.port = port_;
    auto deadline = Clock::now() + 10s;
    while (raw_command(t, {"PING"}).rfind("connect error", 0) == 0) {
      REQUIRE(Clock::now() < deadline);
      std::this_thread::sleep_for(20ms);
    }
    std::ifstream in(pidfile());
    in >> pid_;
    REQUIRE(pid_ > 0);
  }

  // SIGTERM, then waits until the process has exited.
  void stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGTERM);
    auto deadline = Clock::now() + 10s;
    while (!process_gone(pid_)) {
      if (Clock::now() > deadline) ::kill(pid_, SIGKILL);
      std::this_thread::sleep_for(10ms);
    }
    pid_ = 0;
  }

 private:
  std::string pidfile() const { return dir_ + "/redis.pid"; }

  std::string extra_;
  int port_;
  std::string dir_;
  int pid_ = 0;
};

// Skips (or, under CI=true, fails) when redis-server cannot be started.
bool can_start_redis() {
  if (PrivateRedis::available()) return true;
  if (in_ci()) FAIL("redis-server is not installed: the Redis fault tests cannot run (CI=true)");
  MESSAGE("redis-server not installed: skipped");
  return false;
}

}  // namespace

// A backend on the test server and a key prefix of its own, or a return
// when Redis is not configured.
#define REDIS_BACKEND(b, prefix)                                              \
  std::string url_ = test_url();                                              \
  if (url_.empty()) return;                                                   \
  std::unique_ptr<CacheBackend> b = make_redis_backend(url_, CacheOptions{}); \
  const std::string prefix = unique_prefix()

// ---- URLs ----------------------------------------------------------------------

TEST_CASE("redis: URLs") {
  using convstore::detail::parse_redis_url;

  auto t = parse_redis_url("redis://cache.example:6380/3");
  CHECK(t.host == "cache.example");
  CHECK(t.port == 6380);
  CHECK(t.db == 3);
  CHECK(t.password.empty());
  CHECK(t.display == "redis://cache.example:6380/3");

  t = parse_redis_url("redis://localhost");
  CHECK(t.host == "localhost");
  CHECK(t.port == 6379);
  CHECK(t.db == 0);

  t = parse_redis_url("REDIS://:p%40ss@10.0.0.1/");
  CHECK(t.user.empty());
  CHECK(t.password == "p@ss");
  CHECK(t.host == "10.0.0.1");
  CHECK(t.display.find("p@ss") == std::string::npos);

  t = parse_redis_url("redis://bot:s/cr@t@[::1]:7000/2");
  CHECK(t.user == "bot");
  CHECK(t.password == "s/cr@t");
  CHECK(t.host == "::1");
  CHECK(t.port == 7000);
  CHECK(t.db == 2);
  CHECK(t.display == "redis://[::1]:7000/2");

  t = parse_redis_url("unix:///run/redis/redis.sock?db=5&password=top%20secret");
  CHECK(t.socket == "/run/redis/redis.sock");
  CHECK(t.db == 5);
  CHECK(t.password == "top secret");
  CHECK(t.display.find("secret") == std::string::npos);

  for (const char* bad :
       {"", "redis://", "redis://:hunter2@", "http://host", "redis://host:0", "redis://host:70000",
        "redis://host:port", "redis://host/x", "redis://host/-1", "redis://host?db=1",
        "redis://hunter2@host", "redis://::1:6379", "redis://[::1", "redis://:hunter2@host:x/0",
        "redis://:hunt%zzer2@host", "unix://relative.sock", "unix:///s.sock?db=x",
        "unix:///s.sock?password=hunter2&colour=blue", "127.0.0.1:6379"}) {
    CAPTURE(bad);
    CHECK_ERROR_CODE(parse_redis_url(bad), ErrorCode::invalid_argument);
    try {
      parse_redis_url(bad);
    } catch (const convstore::Error& e) {
      CHECK(std::string(e.what()).find("hunter2") == std::string::npos);
      CHECK(std::string(e.what()).find("hunt%zzer2") == std::string::npos);
    }
  }
  CHECK_ERROR_CODE(parse_redis_url("rediss://host"), ErrorCode::not_supported);

  CacheOptions zero;
  zero.command_timeout = 0ms;
  CHECK_ERROR_CODE(make_redis_backend("redis://localhost", zero), ErrorCode::invalid_argument);
}

// ---- primitives against the test server ----------------------------------------

TEST_CASE("redis: plain values, TTLs, bytes, bulk") {
  REDIS_BACKEND(b, p);
  CHECK(std::string(b->name()) == "redis");
  b->ping();

  CHECK_FALSE(b->get(p + "a").has_value());
  b->set(p + "a", "one", Ms{0});
  CHECK(b->get(p + "a") == std::optional<std::string>("one"));
  CHECK_FALSE(b->ttl(p + "a").has_value());  // no TTL
  CHECK_FALSE(b->ttl(p + "missing").has_value());

  // Any bytes, in keys and values; an empty value is a value.
  const std::string bytes("a\0b\r\n\xff\0", 7);
  const std::string key = p + std::string("k\0ey", 4);
  b->set(key, bytes, Ms{0});
  CHECK(b->get(key) == std::optional<std::string>(bytes));
  CHECK(b->get(p + "k").has_value() == false);
  b->set(p + "empty", "", Ms{0});
  CHECK(b->get(p + "empty") == std::optional<std::string>(""));
  const std::string big(3 << 20, 'x');
  b->set(p + "big", big, Ms{0});
  CHECK(b->get(p + "big") == std::optional<std::string>(big));

  // TTL: reported, then the value expires; set without TTL clears it.
  b->set(p + "t", "v", 150ms);
  auto left = b->ttl(p + "t");
  REQUIRE(left.has_value());
  CHECK(*left > 0ms);
  CHECK(*left <= 150ms);
  std::this_thread::sleep_for(250ms);
  CHECK_FALSE(b->get(p + "t").has_value());
  b->set(p + "t2", "v", 150ms);
  b->set(p + "t2", "w", Ms{0});
  CHECK_FALSE(b->ttl(p + "t2").has_value());

  CHECK(b->remove(p + "a"));
  CHECK_FALSE(b->remove(p + "a"));
  CHECK_FALSE(b->get(p + "a").has_value());

  // Bulk, NULs included; missing keys read as nullopt, in order.
  b->set_many({{p + "m1", "1"}, {p + "m2", std::string("\0two", 4)}, {p + "m3", ""}}, 5000ms);
  auto got = b->get_many({p + "m1", p + "nope", p + "m2", p + "m3"});
  REQUIRE(got.size() == 4);
  CHECK(got[0] == std::optional<std::string>("1"));
  CHECK_FALSE(got[1].has_value());
  CHECK(got[2] == std::optional<std::string>(std::string("\0two", 4)));
  CHECK(got[3] == std::optional<std::string>(""));
  CHECK(b->ttl(p + "m2").has_value());
  CHECK(b->get_many({}).empty());
  b->set_many({}, Ms{0});

  // Many at once (one pipeline / one MGET).
  convstore::detail::Fields many;
  std::vector<std::string> keys;
  for (int i = 0; i < 2000; ++i) {
    many.emplace_back(p + "bulk" + std::to_string(i), std::to_string(i * 7));
    keys.push_back(many.back().first);
  }
  b->set_many(many, Ms{0});
  auto all = b->get_many(keys);
  REQUIRE(all.size() == keys.size());
  for (int i = 0; i < 2000; ++i) CHECK(all[i] == std::optional<std::string>(std::to_string(i * 7)));
}

TEST_CASE("redis: hashes with a sliding TTL") {
  REDIS_BACKEND(b, p);
  const std::string h = p + "session";
  CHECK(b->hgetall(h, 300ms).empty());
  CHECK_FALSE(b->hget(h, "f", 300ms).has_value());
  CHECK_FALSE(b->ttl(h).has_value());  // reads do not create it

  b->hset(h, {{"a", "1"}, {"b", std::string("\0x", 2)}}, 300ms);
  CHECK(b->hget(h, "b", 300ms) == std::optional<std::string>(std::string("\0x", 2)));
  // Each touch restarts the TTL: alive after 3 x 200 ms of touches.
  for (int i = 0; i < 3; ++i) {
    std::this_thread::sleep_for(200ms);
    CHECK(b->hget(h, "a", 300ms) == std::optional<std::string>("1"));
  }
  b->hset(h, {{"a", "2"}}, 300ms);
  auto all = b->hgetall(h, 300ms);
  std::sort(all.begin(), all.end());
  REQUIRE(all.size() == 2);
  CHECK(all[0] == std::make_pair(std::string("a"), std::string("2")));
  CHECK(b->hdel(h, "a", 300ms));
  CHECK_FALSE(b->hdel(h, "a", 300ms));
  // Untouched, it expires.
  std::this_thread::sleep_for(450ms);
  CHECK(b->hgetall(h, 300ms).empty());

  // ttl == 0: no expiry.
  b->hset(p + "forever", {{"x", "y"}}, Ms{0});
  CHECK_FALSE(b->ttl(p + "forever").has_value());
  CHECK(b->hget(p + "forever", "x", Ms{0}) == std::optional<std::string>("y"));
  CHECK(b->remove(p + "forever"));
}

TEST_CASE("redis: scored sets") {
  REDIS_BACKEND(b, p);
  const std::string z = p + "active";
  const std::int64_t now = 1'700'000'000'000;
  b->zadd(z, "ann", now - 5000, now - 60000);
  b->zadd(z, "bob", now - 1000, now - 60000);
  b->zadd(z, "cy", now - 30000, now - 60000);
  b->zadd(z, "ann", now - 500, now - 60000);  // moves ann up
  CHECK(b->zcount(z, now - 60000) == 3);
  CHECK(b->zcount(z, now - 2000) == 2);
  CHECK(b->zrange_desc(z, now - 60000, 10) == std::vector<std::string>{"ann", "bob", "cy"});
  CHECK(b->zrange_desc(z, now - 60000, 2) == std::vector<std::string>{"ann", "bob"});
  CHECK(b->zrange_desc(z, now - 60000, 0).empty());
  CHECK(b->zscore(z, "ann") == std::optional<std::int64_t>(now - 500));
  CHECK_FALSE(b->zscore(z, "dan").has_value());
  // A later mark drops those below its bound.
  b->zadd(z, "dan", now + 20000, now - 10000);
  CHECK(b->zcount(z, 0) == 3);
  CHECK_FALSE(b->zscore(z, "cy").has_value());
  // The set expires when its newest member would be dropped.
  auto left = b->ttl(z);
  REQUIRE(left.has_value());
  CHECK(*left > 29000ms);
  CHECK(*left <= 30000ms);
  CHECK(b->remove(z));
  CHECK(b->zcount(z, 0) == 0);
}

TEST_CASE("redis: versioned values") {
  REDIS_BACKEND(b, p);
  const std::string k = p + "ctx";
  auto v = b->vget(k);
  CHECK(v.version == 0);
  CHECK_FALSE(v.value.has_value());

  CHECK(b->vput(k, 0, std::string("m\0sg", 4), 5000ms));
  v = b->vget(k);
  CHECK(v.version == 0);
  CHECK(v.value == std::optional<std::string>(std::string("m\0sg", 4)));
  CHECK(b->ttl(k).has_value());

  // A change bumps the version: a refill built from older data is refused.
  // Versions grow from the server's clock (µs), so that a key that expired
  // never comes back at a version a slow reader holds.
  b->vbump(k, 5000ms);
  v = b->vget(k);
  const std::int64_t v1 = v.version;
  CHECK(v1 > 1000000000000000);
  CHECK_FALSE(v.value.has_value());
  CHECK_FALSE(b->vput(k, 0, "stale", 5000ms));
  CHECK(b->vput(k, v1, "fresh", 5000ms));
  CHECK(b->vget(k).value == std::optional<std::string>("fresh"));
  b->vbump(k, 5000ms);
  CHECK_FALSE(b->vput(k, v1, "stale", 5000ms));
  CHECK(b->vget(k).version > v1);

  // A bump of a missing key remembers the version for its TTL.
  b->vbump(p + "new", 150ms);
  CHECK_FALSE(b->vput(p + "new", 0, "stale", 5000ms));
  std::this_thread::sleep_for(250ms);
  CHECK(b->vget(p + "new").version == 0);
  CHECK(b->vput(p + "new", 0, "ok", Ms{0}));
  CHECK_FALSE(b->ttl(p + "new").has_value());
  CHECK(b->remove(k));
  CHECK(b->vget(k).version == 0);
}

TEST_CASE("redis: sliding window rate limit") {
  REDIS_BACKEND(b, p);
  RateLimit hour{3, std::chrono::hours(1), RateAlgorithm::sliding_window};
  const std::string k = p + "rate";
  for (int i = 0; i < 3; ++i) {
    auto d = b->rate(k, hour, 1);
    CHECK(d.allowed);
    CHECK(d.remaining == 2 - i);
    CHECK(d.retry_after == 0ms);
    CHECK(d.reset_after > 3600000ms);  // the rest of this window and the next
    CHECK(d.reset_after <= 7200000ms);
  }
  auto refused = b->rate(k, hour, 1);
  CHECK_FALSE(refused.allowed);
  CHECK(refused.remaining == 0);
  CHECK(refused.retry_after > 0ms);
  CHECK(refused.retry_after <= refused.reset_after);
  // remove() resets.
  CHECK(b->remove(k));
  CHECK(b->rate(k, hour, 1).remaining == 2);

  // A refused request does not count.
  RateLimit five{5, std::chrono::hours(1), RateAlgorithm::sliding_window};
  const std::string c = p + "cost";
  CHECK(b->rate(c, five, 3).allowed);
  CHECK_FALSE(b->rate(c, five, 3).allowed);
  auto d = b->rate(c, five, 2);
  CHECK(d.allowed);
  CHECK(d.remaining == 0);
  CHECK_FALSE(b->rate(c, five, 6).allowed);  // more than the limit: never
  CHECK(b->rate(c, five, 0).allowed);

  // retry_after is enough, and not much more than enough.
  RateLimit fast{2, 300ms, RateAlgorithm::sliding_window};
  const std::string f = p + "fast";
  CHECK(b->rate(f, fast, 1).allowed);
  CHECK(b->rate(f, fast, 1).allowed);
  auto no = b->rate(f, fast, 1);
  REQUIRE_FALSE(no.allowed);
  CHECK(no.retry_after <= 600ms);
  std::this_thread::sleep_for(no.retry_after + 10ms);
  CHECK(b->rate(f, fast, 1).allowed);
}

TEST_CASE("redis: token bucket rate limit") {
  REDIS_BACKEND(b, p);
  RateLimit bucket{3, 3000ms, RateAlgorithm::token_bucket};
  const std::string k = p + "bucket";
  auto first = b->rate(k, bucket, 1);
  CHECK(first.allowed);
  CHECK(first.remaining == 2);
  CHECK(first.reset_after > 900ms);
  CHECK(first.reset_after <= 1000ms);
  CHECK(b->rate(k, bucket, 1).remaining == 1);
  CHECK(b->rate(k, bucket, 1).remaining == 0);
  auto no = b->rate(k, bucket, 1);
  CHECK_FALSE(no.allowed);
  CHECK(no.retry_after > 800ms);  // one token per second
  CHECK(no.retry_after <= 1000ms);
  CHECK(no.reset_after > 2500ms);
  CHECK(no.reset_after <= 3000ms);
  std::this_thread::sleep_for(no.retry_after + 20ms);
  CHECK(b->rate(k, bucket, 1).allowed);
  CHECK_FALSE(b->rate(k, bucket, 1).allowed);
  CHECK(b->remove(k));
  CHECK(b->rate(k, bucket, 3).allowed);  // whole again

  // A refused request does not count.
  RateLimit five{5, std::chrono::hours(1), RateAlgorithm::token_bucket};
  const std::string c = p + "cost";
  CHECK(b->rate(c, five, 3).allowed);
  CHECK_FALSE(b->rate(c, five, 3).allowed);
  auto d = b->rate(c, five, 2);
  CHECK(d.allowed);
  CHECK(d.remaining == 0);
  CHECK_FALSE(b->rate(c, five, 6).allowed);
}

TEST_CASE("redis: rate limits are atomic across threads") {
  REDIS_BACKEND(b, p);
  for (auto algorithm : {RateAlgorithm::sliding_window, RateAlgorithm::token_bucket}) {
    RateLimit limit{100, std::chrono::hours(1), algorithm};
    const std::string k = p + (algorithm == RateAlgorithm::token_bucket ? "tb" : "sw");
    std::atomic<int> allowed{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 6; ++t) {
      threads.emplace_back([&] {
        for (int i = 0; i < 30; ++i) allowed += b->rate(k, limit, 1).allowed ? 1 : 0;
      });
    }
    for (auto& t : threads) t.join();
    CHECK(allowed == 100);
  }
}

// ---- leases --------------------------------------------------------------------

TEST_CASE("redis: leases are granted in ticket order") {
  REDIS_BACKEND(b, p);
  const std::string name = p + "turn";
  auto t0 = b->lease_ticket(name, 2000ms);
  auto held = b->lease_try(name, t0, 5000ms, 2000ms);
  REQUIRE(held.has_value());
  CHECK(held->ticket == t0);
  CHECK(held->name == name);
  CHECK(held->expires_at > convstore::now());

  std::vector<std::int64_t> tickets;
  for (int i = 0; i < 3; ++i) tickets.push_back(b->lease_ticket(name, 2000ms));
  CHECK(std::is_sorted(tickets.begin(), tickets.end()));
  CHECK(tickets.front() > t0);

  std::mutex mutex;
  std::vector<std::int64_t> order;
  std::vector<std::int64_t> fences;
  std::vector<std::thread> threads;
  // Started last ticket first: the order comes from the tickets.
  for (int i = 2; i >= 0; --i) {
    threads.emplace_back([&, ticket = tickets[i]] {
      auto deadline = Clock::now() + 10s;
      while (Clock::now() < deadline) {
        if (auto lease = b->lease_try(name, ticket, 5000ms, 2000ms)) {
          {
            std::lock_guard<std::mutex> lock(mutex);
            order.push_back(ticket);
            fences.push_back(lease->fence);
          }
          std::this_thread::sleep_for(30ms);
          b->lease_release(name, lease->fence);
          return;
        }
        b->lease_wait(name, 10ms);
      }
    });
    std::this_thread::sleep_for(20ms);
  }
  std::this_thread::sleep_for(100ms);
  b->lease_release(name, held->fence);
  for (auto& t : threads) t.join();
  CHECK(order == tickets);
  REQUIRE(fences.size() == 3);
  CHECK(fences[0] > held->fence);
  CHECK(std::is_sorted(fences.begin(), fences.end()));
  CHECK(std::adjacent_find(fences.begin(), fences.end()) == fences.end());
}

TEST_CASE("redis: a waiter that stops trying drops out of the queue") {
  REDIS_BACKEND(b, p);
  const std::string name = p + "turn";
  auto holder = b->lease_try(name, b->lease_ticket(name, 2000ms), 5000ms, 2000ms);
  REQUIRE(holder.has_value());
  auto quitter = b->lease_ticket(name, 150ms);
  auto patient = b->lease_ticket(name, 2000ms);
  CHECK_FALSE(b->lease_try(name, quitter, 5000ms, 150ms).has_value());
  CHECK_FALSE(b->lease_try(name, patient, 5000ms, 2000ms).has_value());
  std::this_thread::sleep_for(300ms);  // the quitter stopped asking
  b->lease_release(name, holder->fence);
  auto lease = b->lease_try(name, patient, 5000ms, 2000ms);
  REQUIRE(lease.has_value());
  CHECK(lease->fence > holder->fence);
  b->lease_release(name, lease->fence);

  // A waiter that leaves is not waited for either.
  auto first = b->lease_ticket(name, 2000ms);
  auto second = b->lease_ticket(name, 2000ms);
  b->lease_leave(name, first);
  CHECK(b->lease_try(name, second, 5000ms, 2000ms).has_value());
}

TEST_CASE("redis: an expired lease goes to the next ticket with a larger fence") {
  REDIS_BACKEND(b, p);
  const std::string name = p + "turn";
  auto t1 = b->lease_ticket(name, 2000ms);
  auto first = b->lease_try(name, t1, 200ms, 2000ms);
  REQUIRE(first.has_value());
  auto t2 = b->lease_ticket(name, 2000ms);
  CHECK_FALSE(b->lease_try(name, t2, 5000ms, 2000ms).has_value());  // held
  std::this_thread::sleep_for(300ms);                               // the holder died
  auto second = b->lease_try(name, t2, 5000ms, 2000ms);
  REQUIRE(second.has_value());
  CHECK(second->fence > first->fence);
  CHECK(second->ticket == t2);

  // The old holder's fence is stale: renew fails, release does nothing.
  CHECK_FALSE(b->lease_renew(name, first->fence, 5000ms).has_value());
  b->lease_release(name, first->fence);
  auto t3 = b->lease_ticket(name, 2000ms);
  CHECK_FALSE(b->lease_try(name, t3, 5000ms, 2000ms).has_value());

  // The holder renews.
  auto renewed = b->lease_renew(name, second->fence, 10000ms);
  REQUIRE(renewed.has_value());
  CHECK(*renewed > second->expires_at);
  auto left = b->ttl(name);
  REQUIRE(left.has_value());
  CHECK(*left > 9000ms);

  b->lease_release(name, second->fence);
  auto third = b->lease_try(name, t3, 5000ms, 2000ms);
  REQUIRE(third.has_value());
  CHECK(third->fence > second->fence);

  // Every key of the lease expires some day (-1: no TTL; -2: gone, as an
  // empty queue is).
  b->lease_ticket(name, 2000ms);
  auto target = convstore::detail::parse_redis_url(url_);
  for (std::string suffix : {"", "seq", "q", "alive", "fence"}) {
    if (!suffix.empty()) suffix.insert(0, "\x1f");
    CAPTURE(suffix);
    auto pttl = std::stoll(raw_command(target, {"PTTL", name + suffix}));
    CHECK(pttl > 0);
  }
}

TEST_CASE("redis: scripts come back after SCRIPT FLUSH") {
  REDIS_BACKEND(b, p);
  RateLimit limit{2, std::chrono::hours(1), RateAlgorithm::sliding_window};
  CHECK(b->rate(p + "r", limit, 1).allowed);
  CHECK(raw_command(convstore::detail::parse_redis_url(url_), {"SCRIPT", "FLUSH"}) == "OK");
  auto d = b->rate(p + "r", limit, 1);  // NOSCRIPT, then EVAL
  CHECK(d.allowed);
  CHECK(d.remaining == 0);
  CHECK_FALSE(b->rate(p + "r", limit, 1).allowed);
}

TEST_CASE("redis: an error reply is Error(internal)") {
  REDIS_BACKEND(b, p);
  b->set(p + "plain", "v", Ms{0});
  CHECK_ERROR_CODE(b->hget(p + "plain", "f", Ms{0}), ErrorCode::internal);  // WRONGTYPE
  CHECK_ERROR_CODE(b->rate(p + "plain", RateLimit{}, 1), ErrorCode::internal);
  // The connection is still good.
  CHECK(b->get(p + "plain") == std::optional<std::string>("v"));
}

// ---- failures ------------------------------------------------------------------

namespace {

CacheOptions fast_options() {
  CacheOptions o;
  o.connect_timeout = 200ms;
  o.command_timeout = 200ms;
  o.retry_interval = 300ms;
  o.pool_size = 2;
  return o;
}

// A call that fails does so within connect + command timeout (and a margin
// for slow, instrumented builds).
constexpr Ms failure_bound = 200ms + 200ms + 300ms;

}  // namespace

TEST_CASE("redis: a server that is down, restarted, or too slow") {
  if (!can_start_redis()) return;
  PrivateRedis server("--requirepass s3cret");
  server.start();
  const std::string url = "redis://:s3cret@127.0.0.1:" + std::to_string(server.port()) + "/1";
  auto b = make_redis_backend(url, fast_options());
  const std::string p = unique_prefix();
  RateLimit limit{10, std::chrono::hours(1), RateAlgorithm::token_bucket};

  b->set(p + "k", "v", Ms{0});
  CHECK(b->get(p + "k") == std::optional<std::string>("v"));
  CHECK(b->rate(p + "r", limit, 1).allowed);  // its script is now cached

  SUBCASE("killed, then restarted on the same port") {
    server.stop();
    auto start = Clock::now();
    CHECK_ERROR_CODE(b->get(p + "k"), ErrorCode::unavailable);
    CHECK(elapsed_since(start) < failure_bound);
    // The breaker is open: the next calls fail at once.
    start = Clock::now();
    CHECK_ERROR_CODE(b->ping(), ErrorCode::unavailable);
    CHECK_ERROR_CODE(b->set(p + "k", "w", Ms{0}), ErrorCode::unavailable);
    CHECK(elapsed_since(start) < 100ms);

    server.start();
    // Works again once retry_interval has passed, with the same backend.
    auto deadline = Clock::now() + 3s;
    bool back = false;
    while (!back && Clock::now() < deadline) {
      try {
        b->ping();
        back = true;
      } catch (const convstore::Error& e) {
        CHECK(e.code() == ErrorCode::unavailable);
        std::this_thread::sleep_for(50ms);
      }
    }
    REQUIRE(back);
    CHECK_FALSE(b->get(p + "k").has_value());  // --save '': the data went with the server
    b->set(p + "k", "again", Ms{0});
    CHECK(b->get(p + "k") == std::optional<std::string>("again"));
    // The restarted server lost its scripts: NOSCRIPT, then EVAL.
    CHECK(b->rate(p + "r", limit, 1).remaining == 9);
  }

  SUBCASE("a command that times out closes its connection") {
    convstore::detail::RedisTarget admin;
    admin.host = "127.0.0.1";
    admin.port = server.port();
    admin.password = "s3cret";
    REQUIRE(raw_command(admin, {"CLIENT", "PAUSE", "600"}) == "OK");
    auto start = Clock::now();
    CHECK_ERROR_CODE(b->set(p + "k", "late", Ms{0}), ErrorCode::unavailable);
    CHECK(elapsed_since(start) < failure_bound);
    start = Clock::now();
    CHECK_ERROR_CODE(b->get(p + "k"), ErrorCode::unavailable);  // fails fast
    CHECK(elapsed_since(start) < 100ms);
    std::this_thread::sleep_for(900ms);  // the pause and retry_interval are over
    // The late reply to the timed-out SET is never read as the answer to
    // another command.
    b->set(p + "x", "1", Ms{0});
    CHECK(b->get(p + "x") == std::optional<std::string>("1"));
    // Whether the paused SET ran once its client had gone is Redis's
    // business; either way the value is one of the two written.
    auto k = b->get(p + "k");
    REQUIRE(k.has_value());
    CHECK((*k == "v" || *k == "late"));
    CHECK(b->rate(p + "r", limit, 1).remaining == 8);
  }

  SUBCASE("a wrong password") {
    auto wrong = make_redis_backend(
        "redis://:hunter2@127.0.0.1:" + std::to_string(server.port()) + "/0", fast_options());
    auto start = Clock::now();
    try {
      wrong->ping();
      FAIL("ping with a wrong password succeeded");
    } catch (const convstore::Error& e) {
      CHECK(e.code() == ErrorCode::unavailable);
      CHECK(std::string(e.what()).find("hunter2") == std::string::npos);
    }
    CHECK(elapsed_since(start) < failure_bound);
    CHECK_ERROR_CODE(wrong->get(p + "k"), ErrorCode::unavailable);
  }
}

TEST_CASE("redis: a Unix socket, with a password and a database") {
  if (!can_start_redis()) return;
  PrivateRedis server;
  server.add_arguments("--requirepass 'p&ss w' --unixsocket '" + server.socket_path() +
                       "' --unixsocketperm 700");
  server.start();
  auto b = make_redis_backend("unix://" + server.socket_path() + "?db=3&password=p%26ss%20w",
                              fast_options());
  b->set("k", "v", Ms{0});
  CHECK(b->get("k") == std::optional<std::string>("v"));
  convstore::detail::RedisTarget admin;
  admin.socket = server.socket_path();
  admin.password = "p&ss w";
  admin.db = 3;
  CHECK(raw_command(admin, {"GET", "k"}) == "v");
  admin.db = 0;
  CHECK(raw_command(admin, {"EXISTS", "k"}) == "0");  // SELECT 3 happened

  server.stop();
  CHECK_ERROR_CODE(b->get("k"), ErrorCode::unavailable);
  server.start();
  std::this_thread::sleep_for(350ms);  // retry_interval
  CHECK_FALSE(b->get("k").has_value());
}

// A server that closes the connection while a command is being sent: the
// write fails with EPIPE, which must be Error(unavailable), never SIGPIPE
// (whose default action ends the whole process). The command is larger
// than the socket's buffer, so the write is still going on when the server
// closes, whatever the scheduling.
TEST_CASE("redis: a server that hangs up during a write is an error, not SIGPIPE") {
  auto dir = std::filesystem::temp_directory_path() / ("convstore_hangup_" + unique_prefix());
  std::string name = dir.string();
  std::replace(name.begin(), name.end(), ':', '_');
  std::filesystem::create_directories(name);
  std::string path = name + "/hangup.sock";
  int listener = ::socket(AF_UNIX, SOCK_STREAM, 0);
  REQUIRE(listener >= 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  REQUIRE(path.size() < sizeof address.sun_path);
  std::copy(path.begin(), path.end(), address.sun_path);
  REQUIRE(::bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
  REQUIRE(::listen(listener, 4) == 0);
  // Accepts each connection, reads a little of what comes, and hangs up.
  std::atomic<int> hung_up{0};
  std::thread server([&] {
    for (int i = 0; i < 2; ++i) {
      int fd = ::accept(listener, nullptr, nullptr);
      if (fd < 0) return;
      char some[4096];
      (void)::read(fd, some, sizeof some);
      ::close(fd);
      ++hung_up;
    }
  });
  CacheOptions o = fast_options();
  o.command_timeout = 2s;  // the hang-up, not a timeout, must end the write
  auto b = make_redis_backend("unix://" + path, o);
  std::string big(8 * 1024 * 1024, 'x');
  try {
    b->set("k", big, Ms{0});
    FAIL("a SET the server hung up on succeeded");
  } catch (const convstore::Error& e) {
    CHECK(e.code() == ErrorCode::unavailable);
    CHECK(std::string(e.what()).find("Broken pipe") != std::string::npos);
  }
  // The process is alive, and SIGPIPE is neither blocked nor pending after
  // the call: the caller's signal state is as it was.
  sigset_t mask;
  sigemptyset(&mask);
  REQUIRE(pthread_sigmask(SIG_BLOCK, nullptr, &mask) == 0);
  CHECK(sigismember(&mask, SIGPIPE) == 0);
  sigset_t pending;
  sigemptyset(&pending);
  REQUIRE(sigpending(&pending) == 0);
  CHECK(sigismember(&pending, SIGPIPE) == 0);
  // Once the breaker lets it, the next call connects again and meets the
  // same fate, with the same error.
  std::this_thread::sleep_for(350ms);
  CHECK_ERROR_CODE(b->set("k", big, Ms{0}), ErrorCode::unavailable);
  ::shutdown(listener, SHUT_RDWR);
  ::close(listener);
  server.join();
  CHECK(hung_up.load() == 2);
  std::filesystem::remove_all(name);
}

TEST_CASE("redis: an unreachable server fails within the timeouts") {
  // Nothing listens on a fresh free port; 192.0.2.1 (TEST-NET-1) is never
  // routed, so connecting there times out (or fails at once without a route).
  for (const std::string& url :
       {"redis://127.0.0.1:" + std::to_string(free_port()) + "/0",
        std::string("redis://192.0.2.1:6379/0"), std::string("unix:///nonexistent/redis.sock")}) {
    CAPTURE(url);
    std::unique_ptr<CacheBackend> b;
    auto start = Clock::now();
    REQUIRE_NOTHROW(b = make_redis_backend(url, fast_options()));  // lazy: no connection yet
    CHECK(elapsed_since(start) < 50ms);
    start = Clock::now();
    CHECK_ERROR_CODE(b->ping(), ErrorCode::unavailable);
    CHECK(elapsed_since(start) < failure_bound);
    start = Clock::now();
    CHECK_ERROR_CODE(b->get("k"), ErrorCode::unavailable);
    CHECK(elapsed_since(start) < 50ms);
  }
}

// Seed 002: "continue with degraded performance if Redis fails" — through
// the public SessionCache, with the server paused, stopped and restarted in
// the middle of the test.
TEST_CASE("SessionCache on Redis: degraded while the server fails, itself again after") {
  if (!can_start_redis()) return;
  PrivateRedis server;
  server.start();
  testing::TestDb db("sqlite");
  auto store = db.open();
  std::mutex mu;
  std::vector<convstore::CacheFailure> failures;
  CacheOptions o;
  o.key_prefix = unique_prefix();
  o.connect_timeout = 200ms;
  o.command_timeout = 200ms;
  o.retry_interval = 300ms;
  o.on_failure = [&](const convstore::CacheFailure& f) {
    std::lock_guard lock(mu);
    failures.push_back(f);
  };
  const std::string url = "redis://127.0.0.1:" + std::to_string(server.port()) + "/0";
  auto cache = convstore::SessionCache::redis(url, o);
  CacheOptions closed = o;
  closed.rate_limit_fail_open = false;
  auto strict = convstore::SessionCache::redis(url, closed);
  cache.attach(store);
  auto& conv = store.conversations();
  auto id = conv.start({}).id;
  conv.append(id, text("m1"));
  conv.append(id, text("m2"));
  CHECK(contents(cache.context(store, id, 5)) == "m1,m2");
  cache.set("k", "v");
  REQUIRE(cache.health().ok);

  // Paused (every command times out): a change made meanwhile must not leave
  // a stale context behind once the server answers again.
  convstore::detail::RedisTarget target;
  target.host = "127.0.0.1";
  target.port = server.port();
  raw_command(target, {"CLIENT", "PAUSE", "1200"});
  auto t0 = Clock::now();
  conv.append(id, text("m3"));  // its invalidation cannot reach the server
  CHECK(contents(cache.context(store, id, 5)) == "m1,m2,m3");  // from the store
  CHECK(elapsed_since(t0) < 3s);
  std::this_thread::sleep_for(1500ms);
  CHECK(contents(cache.context(store, id, 5)) == "m1,m2,m3");
  CHECK(contents(cache.context(store, id, 5)) == "m1,m2,m3");

  // Stopped: reads miss, context comes from the store, rate limits follow
  // the policy, writes fail fast; every failure is reported.
  server.stop();
  failures.clear();
  t0 = Clock::now();
  CHECK_FALSE(cache.get("k").has_value());
  conv.append(id, text("m4"));
  CHECK(contents(cache.context(store, id, 2)) == "m3,m4");
  auto open = cache.hit("user:1", RateLimit{1, 60s});
  CHECK(open.allowed);
  CHECK(open.degraded);
  auto refused = strict.hit("user:1", RateLimit{1, 60s});
  CHECK_FALSE(refused.allowed);
  CHECK(refused.degraded);
  CHECK_ERROR_CODE(cache.set("k", "v2"), ErrorCode::unavailable);
  CHECK_ERROR_CODE(cache.acquire_turn("t", 1s, 1s), ErrorCode::unavailable);
  CHECK(cache.variant("exp", "user", {"a", "b"}) == strict.variant("exp", "user", {"a", "b"}));
  CHECK(elapsed_since(t0) < 3s);
  auto h = cache.health();
  CHECK_FALSE(h.ok);
  CHECK_FALSE(h.error.empty());
  {
    std::lock_guard lock(mu);
    CHECK(failures.size() >= 5);
    CHECK(std::any_of(failures.begin(), failures.end(),
                      [](const auto& f) { return f.fell_back && f.operation == "context"; }));
    for (const auto& f : failures) CHECK(f.message.find("password") == std::string::npos);
  }
  CHECK(cache.stats().errors >= 5);
  CHECK(cache.stats().fallbacks >= 3);

  // Back (empty, as a restarted cache server is): used again, no restart.
  server.start();
  auto deadline = Clock::now() + 5s;
  while (!cache.health().ok && Clock::now() < deadline) std::this_thread::sleep_for(50ms);
  REQUIRE(cache.health().ok);
  cache.set("k", "v3");
  CHECK(cache.get("k") == std::optional<std::string>("v3"));
  auto before = cache.stats();
  CHECK(contents(cache.context(store, id, 2)) == "m3,m4");  // rebuilt
  CHECK(contents(cache.context(store, id, 2)) == "m3,m4");  // cached again
  CHECK(cache.stats().misses == before.misses + 1);
  CHECK(cache.stats().hits == before.hits + 1);
  CHECK(cache.hit("user:2", RateLimit{1, 60s}).allowed);
  CHECK_FALSE(cache.hit("user:2", RateLimit{1, 60s}).allowed);
}
