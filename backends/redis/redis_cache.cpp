// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#include "redis_cache.hpp"

#include <fmt/format.h>
#include <hiredis/hiredis.h>
#include <poll.h>
#include <pthread.h>
#include <sys/time.h>

#include <csignal>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <condition_variable>
#include <deque>
#include <limits>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <utility>

#include "convstore/error.hpp"

namespace convstore::detail {

namespace {

using Clock = std::chrono::steady_clock;

// ---- URLs -------------------------------------------------------------------

// `url` for a message: the password (or a user info without ':', which may
// be one) replaced by "***", and so is a "password=" query value.
std::string mask_url(std::string_view url) {
  std::string s(url);
  std::size_t scheme_end = s.find("://");
  std::size_t start = scheme_end == std::string::npos ? 0 : scheme_end + 3;
  std::size_t at = s.rfind('@');
  if (at != std::string::npos && at >= start) {
    std::size_t colon = s.find(':', start);
    if (colon != std::string::npos && colon < at) {
      s.replace(colon + 1, at - colon - 1, "***");
    } else {
      s.replace(start, at - start, "***");
    }
  }
  for (std::size_t pos = s.find("password="); pos != std::string::npos;
       pos = s.find("password=", pos + 1)) {
    std::size_t value = pos + 9;
    std::size_t end = s.find_first_of("&#", value);
    s.replace(value, (end == std::string::npos ? s.size() : end) - value, "***");
  }
  return s;
}

bool starts_with(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}

std::optional<int> parse_int(std::string_view s, int min, int max) {
  int v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size() || v < min || v > max) {
    return std::nullopt;
  }
  return v;
}

class UrlParser {
 public:
  explicit UrlParser(std::string_view url) : url_(url) {}

  RedisTarget parse() {
    std::string scheme;
    std::size_t colon = url_.find("://");
    if (colon != std::string_view::npos) {
      for (char c : url_.substr(0, colon)) {
        scheme += static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
      }
    }
    if (scheme == "rediss") {
      throw Error(ErrorCode::not_supported,
                  fmt::format("Redis URL '{}': TLS (rediss://) is not supported by this build",
                              mask_url(url_)));
    }
    if (scheme == "redis") return parse_tcp(url_.substr(colon + 3));
    if (scheme == "unix") return parse_unix(url_.substr(colon + 3));
    throw bad(
        "expected redis://[[user]:password@]host[:port][/db] or "
        "unix:///path/redis.sock[?db=N]");
  }

 private:
  Error bad(std::string_view why) const {
    return Error(ErrorCode::invalid_argument,
                 fmt::format("invalid Redis URL '{}': {}", mask_url(url_), why));
  }

  std::string decode(std::string_view s) const {
    auto hex = [](char c) {
      if (c >= '0' && c <= '9') return c - '0';
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      if (c >= 'A' && c <= 'F') return c - 'A' + 10;
      return -1;
    };
    std::string out;
    for (std::size_t i = 0; i < s.size(); ++i) {
      if (s[i] != '%') {
        out += s[i];
        continue;
      }
      int hi = i + 2 < s.size() ? hex(s[i + 1]) : -1;
      int lo = i + 2 < s.size() ? hex(s[i + 2]) : -1;
      if (hi < 0 || lo < 0) throw bad("malformed percent-encoding");
      out += static_cast<char>(hi * 16 + lo);
      i += 2;
    }
    return out;
  }

  // "[[user]:password@]host[:port][/db]"
  RedisTarget parse_tcp(std::string_view rest) {
    RedisTarget t;
    if (rest.find_first_of("?#") != std::string_view::npos) {
      throw bad("redis:// URLs take no query options");
    }
    // The last '@' ends the user info, so that a password with an unencoded
    // '@' or '/' still works.
    std::size_t at = rest.rfind('@');
    if (at != std::string_view::npos) {
      std::string_view info = rest.substr(0, at);
      std::size_t colon = info.find(':');
      if (colon == std::string_view::npos) {
        throw bad(
            "a user info without ':' (write redis://:password@host or "
            "redis://user:password@host)");
      }
      t.user = decode(info.substr(0, colon));
      t.password = decode(info.substr(colon + 1));
      rest = rest.substr(at + 1);
    }
    std::size_t slash = rest.find('/');
    std::string_view hostport = rest.substr(0, slash);
    std::string_view port;
    bool ipv6 = !hostport.empty() && hostport.front() == '[';
    if (ipv6) {
      std::size_t close = hostport.find(']');
      if (close == std::string_view::npos) throw bad("an IPv6 address without ']'");
      t.host = std::string(hostport.substr(1, close - 1));
      std::string_view after = hostport.substr(close + 1);
      if (!after.empty()) {
        if (after.front() != ':') throw bad("unexpected text after the IPv6 address");
        port = after.substr(1);
        if (port.empty()) throw bad("an empty port");
      }
    } else {
      std::size_t colon = hostport.find(':');
      t.host = std::string(hostport.substr(0, colon));
      if (colon != std::string_view::npos) {
        port = hostport.substr(colon + 1);
        if (port.find(':') != std::string_view::npos) {
          throw bad("IPv6 addresses must be written in brackets");
        }
        if (port.empty()) throw bad("an empty port");
      }
    }
    if (t.host.empty()) throw bad("no host");
    if (!port.empty()) {
      auto p = parse_int(port, 1, 65535);
      if (!p) throw bad("the port is not a number from 1 to 65535");
      t.port = *p;
    }
    if (slash != std::string_view::npos) {
      std::string_view db = rest.substr(slash + 1);
      if (!db.empty()) {
        auto d = parse_int(db, 0, std::numeric_limits<int>::max());
        if (!d) throw bad("the database is not a number");
        t.db = *d;
      }
    }
    t.display =
        fmt::format("redis://{}{}{}:{}/{}", ipv6 ? "[" : "", t.host, ipv6 ? "]" : "", t.port, t.db);
    return t;
  }

  // "/path/redis.sock[?db=N][&user=U][&password=P]"
  RedisTarget parse_unix(std::string_view rest) {
    RedisTarget t;
    if (rest.find('#') != std::string_view::npos) throw bad("unexpected '#'");
    std::size_t q = rest.find('?');
    t.socket = std::string(rest.substr(0, q));
    if (t.socket.size() < 2 || t.socket.front() != '/') {
      throw bad("unix:// needs an absolute socket path (unix:///path/redis.sock)");
    }
    if (q != std::string_view::npos) {
      std::string_view query = rest.substr(q + 1);
      while (!query.empty()) {
        std::size_t amp = query.find('&');
        std::string_view option = query.substr(0, amp);
        query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
        std::size_t eq = option.find('=');
        std::string_view name = option.substr(0, eq);
        std::string_view value =
            eq == std::string_view::npos ? std::string_view{} : option.substr(eq + 1);
        if (name == "db") {
          auto d = parse_int(value, 0, std::numeric_limits<int>::max());
          if (!d) throw bad("the database is not a number");
          t.db = *d;
        } else if (name == "password") {
          t.password = decode(value);
        } else if (name == "user") {
          t.user = decode(value);
        } else {
          throw bad(fmt::format("unknown option '{}' (db, user and password are known)", name));
        }
      }
    }
    t.display = fmt::format("unix://{}?db={}", t.socket, t.db);
    return t;
  }

  std::string_view url_;
};

// ---- hiredis handles and commands ---------------------------------------------

struct ReplyDeleter {
  void operator()(redisReply* r) const noexcept { freeReplyObject(r); }
};
using Reply = std::unique_ptr<redisReply, ReplyDeleter>;

struct ContextDeleter {
  void operator()(redisContext* c) const noexcept { redisFree(c); }
};
using Context = std::unique_ptr<redisContext, ContextDeleter>;

// One command as an argument vector: every argument is sent as counted
// bytes (never interpolated into a command string), so keys and values may
// hold any byte. Views must outlive the command; numbers are owned (in a
// deque, whose elements stay in place when it grows or moves).
class Command {
 public:
  Command() = default;
  explicit Command(std::string_view verb) { arg(verb); }
  Command(Command&&) = default;
  Command& operator=(Command&&) = default;
  Command(const Command&) = delete;
  Command& operator=(const Command&) = delete;

  Command& arg(std::string_view a) {
    argv_.push_back(a.empty() ? "" : a.data());
    lengths_.push_back(a.size());
    return *this;
  }
  Command& arg(std::int64_t n) {
    owned_.push_back(std::to_string(n));
    return arg(std::string_view(owned_.back()));
  }
  Command& arg(Ms ms) { return arg(static_cast<std::int64_t>(ms.count())); }
  // The arguments of `other`, which must outlive this.
  Command& append(const Command& other) {
    argv_.insert(argv_.end(), other.argv_.begin(), other.argv_.end());
    lengths_.insert(lengths_.end(), other.lengths_.begin(), other.lengths_.end());
    return *this;
  }

  int argc() const { return static_cast<int>(argv_.size()); }
  const char** argv() const { return const_cast<const char**>(argv_.data()); }
  const std::size_t* lengths() const { return lengths_.data(); }

 private:
  std::deque<std::string> owned_;
  std::vector<const char*> argv_;
  std::vector<std::size_t> lengths_;
};

timeval to_timeval(Ms ms) {
  timeval tv{};
  tv.tv_sec = static_cast<decltype(tv.tv_sec)>(ms.count() / 1000);
  tv.tv_usec = static_cast<decltype(tv.tv_usec)>((ms.count() % 1000) * 1000);
  return tv;
}

// True when an idle connection cannot be used: the server closed it (a
// restart) or sent something unasked. Redis sends nothing to an idle
// client, so anything readable means the connection is done.
bool unusable(redisContext* c) {
  if (c->err != 0 || c->fd < 0) return true;
  pollfd p{};
  p.fd = c->fd;
  p.events = POLLIN;
  return ::poll(&p, 1, 0) != 0;
}

std::string_view text(const redisReply& r) { return {r.str, r.len}; }

// hiredis sends with write(2). A write to a connection the server has closed
// (a restart, a Unix socket whose server is gone) raises SIGPIPE, whose
// default action ends the process. A library must not change the process's
// signal handling, so every call that may write runs with SIGPIPE blocked in
// the calling thread, and a SIGPIPE the write raised is taken off the
// thread's pending set before the old mask comes back (libpq's technique
// where MSG_NOSIGNAL cannot be used). The write itself fails with EPIPE,
// which the caller turns into Error(unavailable). errno is left as it was.
class SigpipeBlocked {
 public:
  SigpipeBlocked() {
    sigemptyset(&pipe_);
    sigaddset(&pipe_, SIGPIPE);
    sigset_t pending;
    sigemptyset(&pending);
    sigpending(&pending);
    was_pending_ = sigismember(&pending, SIGPIPE) == 1;
    pthread_sigmask(SIG_BLOCK, &pipe_, &old_);
  }
  ~SigpipeBlocked() {
    int saved = errno;
    sigset_t pending;
    sigemptyset(&pending);
    if (!was_pending_ && sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE) == 1) {
      timespec zero{};
      while (sigtimedwait(&pipe_, nullptr, &zero) < 0 && errno == EINTR) {
      }
    }
    pthread_sigmask(SIG_SETMASK, &old_, nullptr);
    errno = saved;
  }
  SigpipeBlocked(const SigpipeBlocked&) = delete;
  SigpipeBlocked& operator=(const SigpipeBlocked&) = delete;

 private:
  sigset_t pipe_{};
  sigset_t old_{};
  bool was_pending_ = false;
};

// ---- the connection pool and the circuit breaker ----------------------------------

// At most `pool_size` connections, opened on demand. A connection that saw
// an I/O error or a timeout is closed, never reused (a late reply would be
// read by the next command), and opens the breaker: for `retry_interval`
// calls fail at once with Error(unavailable), then the server is tried
// again. Connections opened before the breaker last opened are closed when
// they come back, as a restarted server has dropped them.
class ConnectionPool {
 public:
  ConnectionPool(RedisTarget target, const CacheOptions& options)
      : target_(std::move(target)),
        connect_timeout_(options.connect_timeout),
        command_timeout_(options.command_timeout),
        retry_interval_(options.retry_interval),
        capacity_(std::max<std::size_t>(1, options.pool_size)) {}

  const RedisTarget& target() const { return target_; }

  struct Connection {
    Context context;
    std::uint64_t generation = 0;
  };

  // A connection for the length of one call.
  class Lease {
   public:
    Lease(ConnectionPool* pool, Connection c) : pool_(pool), connection_(std::move(c)) {}
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    ~Lease() {
      if (connection_.context) pool_->give_back(std::move(connection_));
    }

    redisContext* get() const { return connection_.context.get(); }

    // The connection failed with an I/O error or a timeout (errno as
    // hiredis left it is `error_number`): closes it, opens the breaker,
    // throws Error(unavailable).
    [[noreturn]] void fail(int error_number) {
      std::string why = (error_number == EAGAIN || error_number == EWOULDBLOCK)
                            ? fmt::format("no answer within {} ms", pool_->command_timeout_.count())
                            : std::string(connection_.context->errstr);
      connection_.context.reset();
      std::string message = fmt::format("Redis at {} failed: {}", pool_->target_.display, why);
      pool_->trip(message);
      throw Error(ErrorCode::unavailable, message);
    }

   private:
    ConnectionPool* pool_;
    Connection connection_;
  };

  // Waits at most command_timeout for a free connection. Throws
  // Error(unavailable) while the breaker is open, when none frees up, or
  // when a new connection cannot be opened.
  Lease acquire() {
    std::unique_lock<std::mutex> lock(mutex_);
    auto deadline = Clock::now() + command_timeout_;
    for (;;) {
      throw_if_open();
      while (!idle_.empty()) {
        Connection c = std::move(idle_.back());
        idle_.pop_back();
        if (c.generation == generation_ && !unusable(c.context.get())) {
          return Lease(this, std::move(c));
        }
        --open_;  // closed here: closing a socket does not wait for the server
      }
      if (open_ < capacity_) {
        ++open_;
        std::uint64_t generation = generation_;
        lock.unlock();
        try {
          return Lease(this, Connection{connect(), generation});
        } catch (const Error& e) {
          lock.lock();
          --open_;
          trip_locked(e.what());
          throw;
        } catch (...) {
          lock.lock();
          --open_;
          freed_.notify_one();
          throw;
        }
      }
      if (freed_.wait_until(lock, deadline) == std::cv_status::timeout) {
        throw_if_open();
        if (idle_.empty() && open_ >= capacity_) {
          throw Error(ErrorCode::unavailable,
                      fmt::format("no free connection to Redis at {} within {} ms (pool size {})",
                                  target_.display, command_timeout_.count(), capacity_));
        }
      }
    }
  }

 private:
  // Opens, authenticates and selects the database. Throws Error(unavailable).
  Context connect() {
    Context c(target_.socket.empty() ? redisConnectWithTimeout(target_.host.c_str(), target_.port,
                                                               to_timeval(connect_timeout_))
                                     : redisConnectUnixWithTimeout(target_.socket.c_str(),
                                                                   to_timeval(connect_timeout_)));
    auto failed = [&](std::string_view why) {
      return Error(ErrorCode::unavailable,
                   fmt::format("cannot connect to Redis at {}: {}", target_.display, why));
    };
    if (!c) throw failed("out of memory");
    if (c->err != 0) throw failed(c->errstr);
    if (redisSetTimeout(c.get(), to_timeval(command_timeout_)) != REDIS_OK ||
        (target_.socket.empty() && redisEnableKeepAlive(c.get()) != REDIS_OK)) {
      throw failed(c->errstr);
    }
    // AUTH and SELECT in one round trip.
    std::vector<Command> setup;
    if (!target_.password.empty() || !target_.user.empty()) {
      Command& auth = setup.emplace_back("AUTH");
      if (!target_.user.empty()) auth.arg(target_.user);
      auth.arg(target_.password);
    }
    if (target_.db != 0) setup.emplace_back("SELECT").arg(std::int64_t{target_.db});
    SigpipeBlocked no_sigpipe;
    for (const Command& cmd : setup) {
      if (redisAppendCommandArgv(c.get(), cmd.argc(), cmd.argv(), cmd.lengths()) != REDIS_OK) {
        throw failed(c->errstr);
      }
    }
    std::string refused;
    for (std::size_t i = 0; i < setup.size(); ++i) {
      void* raw = nullptr;
      if (redisGetReply(c.get(), &raw) != REDIS_OK) {
        throw failed(errno == EAGAIN || errno == EWOULDBLOCK
                         ? fmt::format("no answer within {} ms", command_timeout_.count())
                         : std::string(c->errstr));
      }
      Reply r(static_cast<redisReply*>(raw));
      if (r->type == REDIS_REPLY_ERROR && refused.empty()) {
        // Redis's answer never repeats the password.
        bool auth = i == 0 && (!target_.password.empty() || !target_.user.empty());
        refused = fmt::format("{} refused: {}", auth ? "AUTH" : "SELECT", text(*r));
      }
    }
    if (!refused.empty()) throw failed(refused);
    return c;
  }

  void give_back(Connection c) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (c.generation == generation_) {
        idle_.push_back(std::move(c));
      } else {
        --open_;
      }
    }
    freed_.notify_one();
    c.context.reset();
  }

  // A leased connection failed.
  void trip(const std::string& message) {
    std::lock_guard<std::mutex> lock(mutex_);
    --open_;
    trip_locked(message);
  }

  // Opens the breaker and closes the idle connections. Wakes the waiters,
  // which then fail fast with `message`.
  void trip_locked(std::string message) {
    down_until_ = Clock::now() + retry_interval_;
    last_error_ = std::move(message);
    ++generation_;
    open_ -= idle_.size();
    idle_.clear();
    freed_.notify_all();
  }

  void throw_if_open() const {
    auto now = Clock::now();
    if (now >= down_until_) return;
    auto left = std::chrono::duration_cast<Ms>(down_until_ - now);
    throw Error(ErrorCode::unavailable,
                fmt::format("{} (failing fast for {} ms more)", last_error_, left.count()));
  }

  const RedisTarget target_;
  const Ms connect_timeout_;
  const Ms command_timeout_;
  const Ms retry_interval_;
  const std::size_t capacity_;

  std::mutex mutex_;
  std::condition_variable freed_;
  std::vector<Connection> idle_;
  std::size_t open_ = 0;            // idle and leased
  std::uint64_t generation_ = 0;    // grows each time the breaker opens
  Clock::time_point down_until_{};  // the breaker is open until then
  std::string last_error_;          // why it opened
};

// ---- Lua scripts ----------------------------------------------------------------
// Run with EVALSHA (loaded once with SCRIPT LOAD; EVAL when the server lost
// its script cache, e.g. after a restart). Times come from the server's
// clock (TIME), so that every process agrees. Numbers go back to Redis
// formatted with '%.0f': Lua's own conversion would round large ones.
// `redis.replicate_commands()` lets Redis < 5 write after TIME.

struct Script {
  const char* name;
  const char* body;
};

// KEYS: the rate key. ARGV: limit, window ms, cost.
// Returns {allowed, remaining, reset_after ms, retry_after ms}.
constexpr Script rate_sliding_window{"rate (sliding window)", R"lua(
if redis.replicate_commands then redis.replicate_commands() end
local limit, window, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local index = math.floor(now / window)
local elapsed = now - index * window
-- w: the index of the window counted in c; p: the window before it.
local state = redis.call('HMGET', KEYS[1], 'w', 'c', 'p')
local cur, prev = 0, 0
local w = tonumber(state[1])
if w == index then
  cur, prev = tonumber(state[2]) or 0, tonumber(state[3]) or 0
elseif w == index - 1 then
  prev = tonumber(state[2]) or 0
end
local weight = (window - elapsed) / window
local allowed = prev * weight + cur + cost <= limit
if allowed then
  cur = cur + cost
  redis.call('HSET', KEYS[1], 'w', string.format('%.0f', index), 'c', string.format('%.0f', cur),
             'p', string.format('%.0f', prev))
  redis.call('PEXPIRE', KEYS[1], string.format('%.0f', 2 * window - elapsed))
end
local remaining = math.max(0, math.floor(limit - prev * weight - cur))
local reset = 0
if cur > 0 then reset = 2 * window - elapsed elseif prev > 0 then reset = window - elapsed end
local retry = 0
if not allowed then
  if cost > limit then
    retry = reset
  elseif cur + cost <= limit then
    -- The previous window's share must shrink enough.
    retry = math.ceil(window - (limit - cur - cost) * window / prev - elapsed)
  else
    -- Next window, where this window's count is the previous one.
    retry = window - elapsed + math.ceil(math.max(0, window - (limit - cost) * window / cur))
  end
  retry = math.max(1, retry)
end
return {allowed and 1 or 0, remaining, reset, retry}
)lua"};

// KEYS: the rate key. ARGV: limit, window ms, cost. Same answer.
constexpr Script rate_token_bucket{"rate (token bucket)", R"lua(
if redis.replicate_commands then redis.replicate_commands() end
local limit, window, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- t: tokens left at ts (ms); a missing key is a full bucket.
local state = redis.call('HMGET', KEYS[1], 't', 'ts')
local tokens, last = tonumber(state[1]), tonumber(state[2])
if tokens == nil or last == nil then
  tokens = limit
elseif now > last then
  tokens = math.min(limit, tokens + (now - last) * limit / window)
end
local allowed = tokens >= cost
if allowed then
  tokens = tokens - cost
  local full = math.ceil((limit - tokens) * window / limit)
  if full > 0 then
    redis.call('HSET', KEYS[1], 't', string.format('%.17g', tokens), 'ts', string.format('%.0f', now))
    redis.call('PEXPIRE', KEYS[1], string.format('%.0f', full))
  else
    redis.call('DEL', KEYS[1])
  end
end
local reset = math.ceil((limit - tokens) * window / limit)
local retry = 0
if not allowed then
  if cost > limit then retry = reset else retry = math.ceil((cost - tokens) * window / limit) end
  retry = math.max(1, retry)
end
return {allowed and 1 or 0, math.floor(tokens), reset, retry}
)lua"};

// KEYS: the versioned hash. ARGV: expected version, value, ttl ms.
constexpr Script versioned_put{"vput", R"lua(
local v = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
if v ~= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'v', string.format('%.0f', v), 'd', ARGV[2])
if tonumber(ARGV[3]) > 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
else
  redis.call('PERSIST', KEYS[1])
end
return 1
)lua"};

// KEYS: the versioned hash. ARGV: ttl ms.
constexpr Script versioned_bump{"vbump", R"lua(
-- Versions grow from the clock too, so that a key that was evicted or
-- expired does not start again at a version a slow reader still holds.
local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local v = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
redis.call('HSET', KEYS[1], 'v', string.format('%d', math.max(v + 1, now_us)))
redis.call('HDEL', KEYS[1], 'd')
if tonumber(ARGV[1]) > 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
else
  redis.call('PERSIST', KEYS[1])
end
return 1
)lua"};

// KEYS: the scored set. ARGV: score, member, drop_below. The set expires
// when its newest member would be dropped.
constexpr Script scored_add{"zadd", R"lua(
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[3])
local top = redis.call('ZREVRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if top[2] then
  local keep = tonumber(top[2]) - tonumber(ARGV[3])
  if keep > 0 then redis.call('PEXPIRE', KEYS[1], string.format('%.0f', keep)) end
end
return 1
)lua"};

// Leases. KEYS[1] the lease hash (fence, ticket; expires with the lease),
// KEYS[2] name:seq (the ticket counter), KEYS[3] name:q (waiting tickets,
// scored by ticket), KEYS[4] name:alive (the same tickets scored by the
// server time in ms until which each waiter counts as alive), KEYS[5]
// name:fence (the last fence, outliving the lease). The auxiliary keys live
// `keep` ms after their last use.

// ARGV: alive_for ms, keep ms. Returns the ticket.
constexpr Script lease_ticket_script{"lease_ticket", R"lua(
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ticket = redis.call('INCR', KEYS[2])
redis.call('ZADD', KEYS[3], ticket, ticket)
redis.call('ZADD', KEYS[4], string.format('%.0f', now + tonumber(ARGV[1])), ticket)
for i = 2, 4 do redis.call('PEXPIRE', KEYS[i], ARGV[2]) end
return ticket
)lua"};

// ARGV: ticket, ttl ms, alive_for ms, keep ms. Returns {fence, expires at
// in µs since the epoch} when granted, else nil.
constexpr Script lease_try_script{"lease_try", R"lua(
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local now = math.floor(now_us / 1000)
local ticket = ARGV[1]
-- Waiters that stopped trying leave the queue.
local before = '(' .. string.format('%.0f', now)
local dead = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', before)
if #dead > 0 then
  for _, d in ipairs(dead) do redis.call('ZREM', KEYS[3], d) end
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', before)
end
-- This one is alive for alive_for more, at its place (again, if it had
-- been too slow and dropped out).
redis.call('ZADD', KEYS[3], ticket, ticket)
redis.call('ZADD', KEYS[4], string.format('%.0f', now + tonumber(ARGV[3])), ticket)
for i = 2, 4 do redis.call('PEXPIRE', KEYS[i], ARGV[4]) end
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local head = redis.call('ZRANGE', KEYS[3], 0, 0)
if tonumber(head[1]) ~= tonumber(ticket) then return false end
local fence = math.max((tonumber(redis.call('GET', KEYS[5])) or 0) + 1, now_us)
local f = string.format('%.0f', fence)
redis.call('SET', KEYS[5], f, 'PX', ARGV[4])
redis.call('HSET', KEYS[1], 'fence', f, 'ticket', ticket)
local ttl = tonumber(ARGV[2])
if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
redis.call('ZREM', KEYS[3], ticket)
redis.call('ZREM', KEYS[4], ticket)
return {f, string.format('%.0f', now_us + ttl * 1000)}
)lua"};

// KEYS[1]: the lease hash. ARGV: fence, ttl ms. Returns the new expiry in
// µs since the epoch, or nil when the lease is not held with that fence.
constexpr Script lease_renew_script{"lease_renew", R"lua(
if redis.replicate_commands then redis.replicate_commands() end
if redis.call('HGET', KEYS[1], 'fence') ~= ARGV[1] then return false end
local ttl = tonumber(ARGV[2])
if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) else redis.call('PERSIST', KEYS[1]) end
local t = redis.call('TIME')
return string.format('%.0f', tonumber(t[1]) * 1000000 + tonumber(t[2]) + ttl * 1000)
)lua"};

// KEYS[1]: the lease hash. ARGV: fence.
constexpr Script lease_release_script{"lease_release", R"lua(
if redis.call('HGET', KEYS[1], 'fence') == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
)lua"};

// ---- the backend -----------------------------------------------------------------

std::int64_t parse_int64(std::string_view s, const char* what) {
  std::int64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size()) {
    throw Error(ErrorCode::internal, fmt::format("Redis {}: '{}' is not an integer", what, s));
  }
  return v;
}

// How long the auxiliary keys of leases outlive their last use: a day, or
// longer for very long leases and waits.
Ms aux_keep(Ms a, Ms b = Ms{0}) { return std::max({Ms{std::chrono::hours(24)}, 2 * a, 2 * b}); }

class RedisBackend final : public CacheBackend {
 public:
  RedisBackend(RedisTarget target, const CacheOptions& options)
      : pool_(std::move(target), options) {}

  const char* name() const noexcept override { return "redis"; }

  void ping() override {
    Reply r = run("ping", Command("PING"));
    if (r->type != REDIS_REPLY_STATUS || text(*r) != "PONG") unexpected("ping", *r);
  }

  // ---- plain values ----

  std::optional<std::string> get(const std::string& key) override {
    return as_optional_string("get", *run("get", Command("GET").arg(key)));
  }

  void set(const std::string& key, std::string_view value, Ms ttl) override {
    Command c("SET");
    c.arg(key).arg(value);
    if (ttl.count() > 0) c.arg("PX").arg(ttl);
    expect_ok("set", *run("set", c));
  }

  bool remove(const std::string& key) override {
    // Every kind of entry is one key (rates and versioned values are
    // hashes), so there is nothing else to remove.
    return as_integer("remove", *run("remove", Command("DEL").arg(key))) > 0;
  }

  std::optional<Ms> ttl(const std::string& key) override {
    std::int64_t ms = as_integer("ttl", *run("ttl", Command("PTTL").arg(key)));
    if (ms < 0) return std::nullopt;  // -2: missing, -1: no TTL
    return Ms{ms};
  }

  std::vector<std::optional<std::string>> get_many(const std::vector<std::string>& keys) override {
    std::vector<std::optional<std::string>> out;
    if (keys.empty()) return out;
    // One command, one round trip.
    Command c("MGET");
    for (const auto& k : keys) c.arg(k);
    Reply r = run("get_many", c);
    if (r->type != REDIS_REPLY_ARRAY || r->elements != keys.size()) unexpected("get_many", *r);
    out.reserve(keys.size());
    for (std::size_t i = 0; i < r->elements; ++i) {
      out.push_back(as_optional_string("get_many", *r->element[i]));
    }
    return out;
  }

  void set_many(const Fields& items, Ms ttl) override {
    if (items.empty()) return;
    std::vector<Command> commands;
    commands.reserve(items.size());
    for (const auto& [key, value] : items) {
      Command& c = commands.emplace_back("SET");
      c.arg(key).arg(value);
      if (ttl.count() > 0) c.arg("PX").arg(ttl);
    }
    for (const Reply& r : pipeline("set_many", commands)) expect_ok("set_many", *r);
  }

  // ---- hashes: each command is followed, in the same round trip, by a
  // PEXPIRE that restarts the TTL (a no-op when the hash is gone) ----

  std::optional<std::string> hget(const std::string& key, const std::string& field,
                                  Ms ttl) override {
    Command c("HGET");
    c.arg(key).arg(field);
    auto replies = with_ttl("hget", key, ttl, std::move(c));
    return as_optional_string("hget", *replies.front());
  }

  Fields hgetall(const std::string& key, Ms ttl) override {
    Command c("HGETALL");
    c.arg(key);
    auto replies = with_ttl("hgetall", key, ttl, std::move(c));
    const redisReply& r = *replies.front();
    if (r.type != REDIS_REPLY_ARRAY || r.elements % 2 != 0) unexpected("hgetall", r);
    Fields out;
    out.reserve(r.elements / 2);
    for (std::size_t i = 0; i < r.elements; i += 2) {
      out.emplace_back(as_string("hgetall", *r.element[i]),
                       as_string("hgetall", *r.element[i + 1]));
    }
    return out;
  }

  void hset(const std::string& key, const Fields& fields, Ms ttl) override {
    if (fields.empty()) {
      if (ttl.count() > 0) run("hset", Command("PEXPIRE").arg(key).arg(ttl));
      return;
    }
    Command c("HSET");
    c.arg(key);
    for (const auto& [field, value] : fields) c.arg(field).arg(value);
    as_integer("hset", *with_ttl("hset", key, ttl, std::move(c)).front());
  }

  bool hdel(const std::string& key, const std::string& field, Ms ttl) override {
    Command c("HDEL");
    c.arg(key).arg(field);
    auto replies = with_ttl("hdel", key, ttl, std::move(c));
    return as_integer("hdel", *replies.front()) > 0;
  }

  // ---- scored sets ----

  void zadd(const std::string& key, const std::string& member, std::int64_t score,
            std::int64_t drop_below) override {
    Command args;
    args.arg(score).arg(member).arg(drop_below);
    eval(scored_add, {key}, args);
  }

  std::int64_t zcount(const std::string& key, std::int64_t min_score) override {
    return as_integer("zcount",
                      *run("zcount", Command("ZCOUNT").arg(key).arg(min_score).arg("+inf")));
  }

  std::vector<std::string> zrange_desc(const std::string& key, std::int64_t min_score,
                                       std::size_t limit) override {
    std::vector<std::string> out;
    if (limit == 0) return out;
    auto count = static_cast<std::int64_t>(
        std::min<std::size_t>(limit, std::numeric_limits<std::int64_t>::max()));
    Reply r = run("zrange_desc", Command("ZREVRANGEBYSCORE")
                                     .arg(key)
                                     .arg("+inf")
                                     .arg(min_score)
                                     .arg("LIMIT")
                                     .arg(std::int64_t{0})
                                     .arg(count));
    if (r->type != REDIS_REPLY_ARRAY) unexpected("zrange_desc", *r);
    out.reserve(r->elements);
    for (std::size_t i = 0; i < r->elements; ++i)
      out.push_back(as_string("zrange_desc", *r->element[i]));
    return out;
  }

  std::optional<std::int64_t> zscore(const std::string& key, const std::string& member) override {
    auto s = as_optional_string("zscore", *run("zscore", Command("ZSCORE").arg(key).arg(member)));
    if (!s) return std::nullopt;
    double d = 0;
    auto [end, ec] = std::from_chars(s->data(), s->data() + s->size(), d);
    if (ec != std::errc() || end != s->data() + s->size()) {
      throw Error(ErrorCode::internal, fmt::format("Redis zscore: '{}' is not a number", *s));
    }
    return static_cast<std::int64_t>(std::llround(d));
  }

  // ---- versioned values: a hash with the version in v, the value in d ----

  Versioned vget(const std::string& key) override {
    Reply r = run("vget", Command("HMGET").arg(key).arg("v").arg("d"));
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2) unexpected("vget", *r);
    Versioned out;
    if (auto v = as_optional_string("vget", *r->element[0])) out.version = parse_int64(*v, "vget");
    out.value = as_optional_string("vget", *r->element[1]);
    return out;
  }

  bool vput(const std::string& key, std::int64_t version, std::string_view value, Ms ttl) override {
    Command args;
    args.arg(version).arg(value).arg(ttl);
    return as_integer("vput", *eval(versioned_put, {key}, args)) == 1;
  }

  void vbump(const std::string& key, Ms ttl) override {
    Command args;
    args.arg(ttl);
    eval(versioned_bump, {key}, args);
  }

  // ---- rate limiting ----

  RateDecision rate(const std::string& key, const RateLimit& limit, std::int64_t cost) override {
    Command args;
    args.arg(limit.limit).arg(limit.window).arg(cost);
    const Script& script =
        limit.algorithm == RateAlgorithm::token_bucket ? rate_token_bucket : rate_sliding_window;
    Reply r = eval(script, {key}, args);
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 4) unexpected("rate", *r);
    RateDecision d;
    d.allowed = as_integer("rate", *r->element[0]) == 1;
    d.remaining = as_integer("rate", *r->element[1]);
    d.reset_after = Ms{as_integer("rate", *r->element[2])};
    d.retry_after = Ms{as_integer("rate", *r->element[3])};
    return d;
  }

  // ---- leases ----

  std::int64_t lease_ticket(const std::string& name, Ms alive_for) override {
    LeaseKeys k(name);
    Command args;
    args.arg(alive_for).arg(aux_keep(alive_for));
    return as_integer("lease_ticket", *eval(lease_ticket_script, k.all(), args));
  }

  std::optional<TurnLease> lease_try(const std::string& name, std::int64_t ticket, Ms ttl,
                                     Ms alive_for) override {
    LeaseKeys k(name);
    Command args;
    args.arg(ticket).arg(ttl).arg(alive_for).arg(aux_keep(ttl, alive_for));
    Reply r = eval(lease_try_script, k.all(), args);
    if (r->type == REDIS_REPLY_NIL) return std::nullopt;
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2) unexpected("lease_try", *r);
    TurnLease lease;
    lease.name = name;
    lease.ticket = ticket;
    lease.fence = parse_int64(as_string("lease_try", *r->element[0]), "lease_try");
    lease.expires_at = Timestamp{std::chrono::microseconds{
        parse_int64(as_string("lease_try", *r->element[1]), "lease_try")}};
    return lease;
  }

  void lease_leave(const std::string& name, std::int64_t ticket) override {
    LeaseKeys k(name);
    std::vector<Command> commands;
    commands.emplace_back("ZREM").arg(k.queue).arg(ticket);
    commands.emplace_back("ZREM").arg(k.alive).arg(ticket);
    for (const Reply& r : pipeline("lease_leave", commands)) as_integer("lease_leave", *r);
  }

  std::optional<Timestamp> lease_renew(const std::string& name, std::int64_t fence,
                                       Ms ttl) override {
    Command args;
    args.arg(fence).arg(ttl);
    Reply r = eval(lease_renew_script, {name}, args);
    if (r->type == REDIS_REPLY_NIL) return std::nullopt;
    return Timestamp{
        std::chrono::microseconds{parse_int64(as_string("lease_renew", *r), "lease_renew")}};
  }

  void lease_release(const std::string& name, std::int64_t fence) override {
    Command args;
    args.arg(fence);
    eval(lease_release_script, {name}, args);
  }

  // Polls: nothing tells this process when another one releases.
  void lease_wait(const std::string&, Ms pause) override { std::this_thread::sleep_for(pause); }

 private:
  struct LeaseKeys {
    explicit LeaseKeys(const std::string& name)
        : lease(name),
          seq(name + kAux + "seq"),
          queue(name + kAux + "q"),
          alive(name + kAux + "alive"),
          fence(name + kAux + "fence") {}
    // A separator no turn name contains (names have no control characters),
    // so that no lease key is another lease's helper key.
    static constexpr const char* kAux = "\x1f";
    std::vector<std::string_view> all() const { return {lease, seq, queue, alive, fence}; }
    const std::string& lease;
    std::string seq, queue, alive, fence;
  };

  // ---- round trips ----

  // Sends one command on `lease` and reads its reply (an error reply is
  // returned, not thrown).
  Reply exchange(ConnectionPool::Lease& lease, const Command& c) {
    SigpipeBlocked no_sigpipe;
    void* raw = redisCommandArgv(lease.get(), c.argc(), c.argv(), c.lengths());
    if (raw == nullptr) lease.fail(errno);
    return Reply(static_cast<redisReply*>(raw));
  }

  // One command on a pooled connection; throws for an error reply.
  Reply run(const char* op, const Command& c) {
    auto lease = pool_.acquire();
    Reply r = exchange(lease, c);
    check(op, *r);
    return r;
  }

  // Several commands in one round trip; throws for the first error reply
  // once every reply has been read.
  std::vector<Reply> pipeline(const char* op, const std::vector<Command>& commands) {
    auto lease = pool_.acquire();
    SigpipeBlocked no_sigpipe;
    for (const Command& c : commands) {
      if (redisAppendCommandArgv(lease.get(), c.argc(), c.argv(), c.lengths()) != REDIS_OK) {
        lease.fail(errno);
      }
    }
    std::vector<Reply> replies;
    replies.reserve(commands.size());
    for (std::size_t i = 0; i < commands.size(); ++i) {
      void* raw = nullptr;
      if (redisGetReply(lease.get(), &raw) != REDIS_OK) lease.fail(errno);
      replies.emplace_back(static_cast<redisReply*>(raw));
    }
    for (const Reply& r : replies) check(op, *r);
    return replies;
  }

  // `c`, then PEXPIRE key ttl when ttl > 0, in one round trip.
  std::vector<Reply> with_ttl(const char* op, const std::string& key, Ms ttl, Command c) {
    std::vector<Command> commands;
    commands.push_back(std::move(c));
    if (ttl.count() > 0) commands.emplace_back("PEXPIRE").arg(key).arg(ttl);
    return pipeline(op, commands);
  }

  // Runs `script` with `keys` and the arguments `args`.
  Reply eval(const Script& script, const std::vector<std::string_view>& keys, const Command& args) {
    auto build = [&](const char* verb, std::string_view sha_or_body) {
      Command c(verb);
      c.arg(sha_or_body).arg(static_cast<std::int64_t>(keys.size()));
      for (auto k : keys) c.arg(k);
      c.append(args);
      return c;
    };
    auto lease = pool_.acquire();
    std::string sha = cached_sha(script);
    if (sha.empty()) {
      Reply r = exchange(lease, Command("SCRIPT").arg("LOAD").arg(script.body));
      check(script.name, *r);
      sha = as_string(script.name, *r);
      std::lock_guard<std::mutex> lock(scripts_mutex_);
      shas_[&script] = sha;
    }
    Reply r = exchange(lease, build("EVALSHA", sha));
    if (r->type == REDIS_REPLY_ERROR && starts_with(text(*r), "NOSCRIPT")) {
      // The server lost its scripts (a restart, SCRIPT FLUSH): EVAL runs the
      // script and caches it again under the same SHA.
      r = exchange(lease, build("EVAL", script.body));
    }
    check(script.name, *r);
    return r;
  }

  std::string cached_sha(const Script& script) {
    std::lock_guard<std::mutex> lock(scripts_mutex_);
    auto it = shas_.find(&script);
    return it == shas_.end() ? std::string() : it->second;
  }

  // ---- replies ----

  // Throws for an error reply: Error(unavailable) for the states a server
  // recovers from by itself, Error(internal) for the others.
  void check(const char* op, const redisReply& r) const {
    if (r.type != REDIS_REPLY_ERROR) return;
    std::string_view msg = text(r);
    bool transient = false;
    for (std::string_view prefix :
         {"LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN", "READONLY", "OOM"}) {
      transient = transient || starts_with(msg, prefix);
    }
    throw Error(transient ? ErrorCode::unavailable : ErrorCode::internal,
                fmt::format("Redis at {} refused {}: {}", pool_.target().display, op, msg));
  }

  [[noreturn]] void unexpected(const char* op, const redisReply& r) const {
    throw Error(ErrorCode::internal, fmt::format("Redis at {}: unexpected reply of type {} to {}",
                                                 pool_.target().display, r.type, op));
  }

  std::optional<std::string> as_optional_string(const char* op, const redisReply& r) const {
    if (r.type == REDIS_REPLY_NIL) return std::nullopt;
    return as_string(op, r);
  }

  std::string as_string(const char* op, const redisReply& r) const {
    if (r.type != REDIS_REPLY_STRING && r.type != REDIS_REPLY_STATUS) unexpected(op, r);
    return std::string(text(r));
  }

  std::int64_t as_integer(const char* op, const redisReply& r) const {
    if (r.type != REDIS_REPLY_INTEGER) unexpected(op, r);
    return r.integer;
  }

  void expect_ok(const char* op, const redisReply& r) const {
    if (r.type != REDIS_REPLY_STATUS || text(r) != "OK") unexpected(op, r);
  }

  ConnectionPool pool_;
  std::mutex scripts_mutex_;
  std::unordered_map<const Script*, std::string> shas_;
};

}  // namespace

RedisTarget parse_redis_url(std::string_view url) { return UrlParser(url).parse(); }

std::unique_ptr<CacheBackend> make_redis_backend(std::string_view url,
                                                 const CacheOptions& options) {
  RedisTarget target = parse_redis_url(url);
  if (options.connect_timeout.count() <= 0 || options.command_timeout.count() <= 0 ||
      options.retry_interval.count() < 0) {
    throw Error(ErrorCode::invalid_argument,
                "Redis cache: connect_timeout and command_timeout must be positive, "
                "retry_interval not negative");
  }
  return std::make_unique<RedisBackend>(std::move(target), options);
}

}  // namespace convstore::detail
