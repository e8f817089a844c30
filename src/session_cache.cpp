// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT

// SessionCache: the public calls built on a CacheBackend's primitives. Key
// names, JSON encoding, input checks, counters and the failure policy live
// here, once for every backend.

#include "convstore/session_cache.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <set>
#include <thread>

#include "cache/backends.hpp"
#include "convstore/config.hpp"
#include "convstore/conversation_store.hpp"
#include "convstore/error.hpp"
#include "store_helpers.hpp"
#include "store_impl.hpp"

namespace convstore {

using detail::Ms;

namespace detail {
void CacheBackend::lease_wait(const std::string&, Ms pause) { std::this_thread::sleep_for(pause); }

void throw_flag_type_error(std::string_view name, const Json& value) {
  throw Error(ErrorCode::invalid_argument,
              fmt::format("feature flag '{}' holds {} ({}), not the asked type", name, value.dump(),
                          value.type_name()));
}
}  // namespace detail

namespace {

constexpr std::size_t kMaxKey = 1024;
constexpr std::size_t kMaxValue = std::size_t{64} << 20;
// How long a waiter for a turn stays queued between two of its polls.
constexpr Ms kWaiterAlive{2000};
constexpr Ms kMaxPoll{50};

void check_key(std::string_view key, std::string_view what) {
  if (key.size() > kMaxKey) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("{} is {} bytes long (at most {})", what, key.size(), kMaxKey));
  }
  detail::check_id(key, what, kMaxKey);
}

void check_ttl(Ms ttl, std::string_view what) {
  if (ttl.count() < 0) {
    throw Error(ErrorCode::invalid_argument, fmt::format("{} is negative", what));
  }
}

void check_value(std::string_view v) {
  if (v.size() > kMaxValue) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("cache value is {} bytes (at most {})", v.size(), kMaxValue));
  }
}

void check_options(const CacheOptions& o) {
  if (o.key_prefix.size() > 200) {
    throw Error(ErrorCode::invalid_argument, "cache key prefix is longer than 200 bytes");
  }
  if (!o.key_prefix.empty()) detail::check_id(o.key_prefix, "cache key prefix");
  if (o.session_ttl.count() <= 0 || o.context_ttl.count() <= 0 || o.active_retention.count() <= 0) {
    throw Error(ErrorCode::invalid_argument,
                "cache session_ttl, context_ttl and active_retention must be positive");
  }
  if (o.context_size == 0 || o.context_size > 10000) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("cache context_size {} is outside 1..10000", o.context_size));
  }
  if (o.pool_size == 0) throw Error(ErrorCode::invalid_argument, "cache pool_size is 0");
  check_ttl(o.sweep_interval, "cache sweep_interval");
  if (o.connect_timeout.count() <= 0 || o.command_timeout.count() <= 0) {
    throw Error(ErrorCode::invalid_argument, "cache timeouts must be positive");
  }
}

// 64-bit FNV-1a: stable across processes, platforms and releases (unlike
// std::hash), which is what a variant assignment needs.
std::uint64_t stable_hash(std::string_view a, std::string_view b) {
  std::uint64_t h = 14695981039346656037ull;
  auto mix = [&](std::string_view s) {
    for (unsigned char ch : s) {
      h ^= ch;
      h *= 1099511628211ull;
    }
  };
  mix(a);
  mix(std::string_view("\0", 1));
  mix(b);
  return h;
}

// A cached context: the messages, and how many the builder asked for (a
// process with a larger context_size must not take a shorter context for
// the whole conversation).
std::string encode_messages(const std::vector<Message>& messages, std::size_t asked) {
  Json a = Json::array();
  for (const auto& m : messages) a.push_back(to_json(m));
  return Json{{"asked", asked}, {"messages", std::move(a)}}.dump();
}

// The messages, when the context holds at least `n` of them or the whole
// conversation.
std::optional<std::vector<Message>> decode_messages(const std::string& text, std::size_t n) {
  try {
    Json j = Json::parse(text);
    const Json& a = j.at("messages");
    if (j.at("asked").get<std::size_t>() < n && a.size() < n) return std::nullopt;
    std::vector<Message> out;
    out.reserve(a.size());
    for (const auto& m : a) out.push_back(message_from_json(m));
    return out;
  } catch (const std::exception&) {
    return std::nullopt;  // not ours, or from another version: rebuild it
  }
}

Json parse_json_value(const std::string& text, std::string_view what) {
  try {
    return Json::parse(text);
  } catch (const Json::exception& e) {
    throw Error(ErrorCode::internal,
                fmt::format("{} in the cache is not JSON: {}", what, e.what()));
  }
}

std::vector<Message> last_n(std::vector<Message> messages, std::size_t n) {
  if (messages.size() > n) messages.erase(messages.begin(), messages.end() - static_cast<long>(n));
  return messages;
}

}  // namespace

// ================================== Impl ==================================

class SessionCache::Impl : public std::enable_shared_from_this<Impl> {
 public:
  Impl(std::unique_ptr<detail::CacheBackend> b, CacheOptions o)
      : backend(std::move(b)), options(std::move(o)) {}

  ~Impl() {
    {
      std::lock_guard lock(sweep_mu_);
      stopping_ = true;
    }
    sweep_cv_.notify_all();
    if (sweeper_.joinable()) sweeper_.join();
  }

  // Expired entries are swept by a thread of this cache (memory, database).
  void start_sweeper() {
    if (options.sweep_interval.count() <= 0) return;
    sweeper_ = std::thread([this] {
      std::unique_lock lock(sweep_mu_);
      while (!sweep_cv_.wait_for(lock, options.sweep_interval, [this] { return stopping_; })) {
        lock.unlock();
        try {
          backend->sweep();
        } catch (const Error& e) {
          report("sweep", e, false);
        } catch (...) {
        }
        lock.lock();
      }
    });
  }

  std::string key(std::string_view ns, std::string_view k) const {
    std::string out;
    out.reserve(options.key_prefix.size() + ns.size() + k.size());
    out.append(options.key_prefix).append(ns).append(k);
    return out;
  }

  void report(const char* op, const Error& e, bool fell_back) noexcept {
    errors.fetch_add(1, std::memory_order_relaxed);
    if (fell_back) fallbacks.fetch_add(1, std::memory_order_relaxed);
    if (!options.on_failure) return;
    try {
      options.on_failure(CacheFailure{op, e.what(), fell_back});
    } catch (...) {
    }
  }

  // fn() against the backend; a failure is reported and rethrown.
  template <class F>
  auto call(const char* op, F&& fn) -> decltype(fn()) {
    try {
      return fn();
    } catch (const Error& e) {
      if (e.code() == ErrorCode::unavailable || e.code() == ErrorCode::internal) {
        report(op, e, false);
      }
      throw;
    }
  }
  // The same, answering fallback() when the backend is unavailable.
  template <class F, class G>
  auto call_or(const char* op, F&& fn, G&& fallback) -> decltype(fn()) {
    try {
      return fn();
    } catch (const Error& e) {
      if (e.code() != ErrorCode::unavailable) {
        if (e.code() == ErrorCode::internal) report(op, e, false);
        throw;
      }
      report(op, e, true);
      return fallback();
    }
  }

  void counted(bool hit) { (hit ? hits : misses).fetch_add(1, std::memory_order_relaxed); }

  // Context invalidations that failed (backend down) are retried before the
  // next context read; until then those contexts are read from the store.
  void invalidate(ConversationId id) {
    try {
      backend->vbump(context_key(id), options.context_ttl);
    } catch (const Error& e) {
      {
        std::lock_guard lock(pending_mu_);
        pending_.insert(id);
      }
      report("invalidate_context", e, true);
    }
  }
  // Retries the failed invalidations; true when `id` is not pending. An id
  // stays pending until its retry succeeds, so that no other thread reads
  // its context meanwhile.
  bool flush_pending(ConversationId id) {
    std::set<ConversationId> todo;
    {
      std::lock_guard lock(pending_mu_);
      if (pending_.empty()) return true;
      todo = pending_;
    }
    for (ConversationId c : todo) {
      try {
        backend->vbump(context_key(c), options.context_ttl);
        std::lock_guard lock(pending_mu_);
        pending_.erase(c);
      } catch (const Error&) {
        break;  // still failing: the rest waits for the next call
      }
    }
    std::lock_guard lock(pending_mu_);
    return pending_.count(id) == 0;
  }

  // Stores attached to this cache (attach() is idempotent).
  std::mutex attached_mu;
  std::set<const Store::Impl*> attached;
  std::string context_key(ConversationId id) const { return key("ctx:", std::to_string(id)); }

  std::string flag_key(std::string_view channel) const {
    return channel.empty() ? key("flags:", "*global") : key("flags:channel:", channel);
  }

  std::unique_ptr<detail::CacheBackend> backend;
  CacheOptions options;
  std::atomic<std::int64_t> hits{0}, misses{0}, writes{0}, errors{0}, fallbacks{0};

 private:
  std::mutex sweep_mu_;
  std::condition_variable sweep_cv_;
  bool stopping_ = false;
  std::thread sweeper_;
  std::mutex pending_mu_;
  std::set<ConversationId> pending_;
};

// =============================== factories ================================

SessionCache::SessionCache(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}
SessionCache::SessionCache(SessionCache&&) noexcept = default;
SessionCache& SessionCache::operator=(SessionCache&&) noexcept = default;
SessionCache::~SessionCache() = default;

SessionCache SessionCache::in_memory(const CacheOptions& options) {
  check_options(options);
  auto impl = std::make_shared<Impl>(detail::make_memory_backend(options), options);
  impl->start_sweeper();
  return SessionCache(std::move(impl));
}

SessionCache SessionCache::redis([[maybe_unused]] std::string_view url,
                                 [[maybe_unused]] const CacheOptions& options) {
#if CONVSTORE_HAS_REDIS
  check_options(options);
  return SessionCache(std::make_shared<Impl>(detail::make_redis_backend(url, options), options));
#else
  throw Error(ErrorCode::not_supported,
              "this convstore was built without Redis (CMake option CONVSTORE_WITH_REDIS)");
#endif
}

SessionCache SessionCache::database(Store& store, const CacheOptions& options) {
  check_options(options);
  auto impl = std::make_shared<Impl>(detail::make_database_backend(*store.impl_, options), options);
  impl->start_sweeper();
  return SessionCache(std::move(impl));
}

std::string SessionCache::backend() const { return impl_->backend->name(); }

// ============================== plain values ==============================

void SessionCache::set(std::string_view key, std::string_view value,
                       std::chrono::milliseconds ttl) {
  check_key(key, "cache key");
  check_value(value);
  check_ttl(ttl, "cache TTL");
  impl_->call("set", [&] { impl_->backend->set(impl_->key("v:", key), value, ttl); });
  impl_->writes.fetch_add(1, std::memory_order_relaxed);
}

std::optional<std::string> SessionCache::get(std::string_view key) {
  check_key(key, "cache key");
  auto v = impl_->call_or(
      "get", [&] { return impl_->backend->get(impl_->key("v:", key)); },
      [] { return std::optional<std::string>(); });
  impl_->counted(v.has_value());
  return v;
}

bool SessionCache::remove(std::string_view key) {
  check_key(key, "cache key");
  return impl_->call("remove", [&] { return impl_->backend->remove(impl_->key("v:", key)); });
}

std::optional<std::chrono::milliseconds> SessionCache::ttl(std::string_view key) {
  check_key(key, "cache key");
  return impl_->call("ttl", [&] { return impl_->backend->ttl(impl_->key("v:", key)); });
}

std::vector<std::optional<std::string>> SessionCache::get_many(
    const std::vector<std::string>& keys) {
  std::vector<std::string> full;
  full.reserve(keys.size());
  for (const auto& k : keys) {
    check_key(k, "cache key");
    full.push_back(impl_->key("v:", k));
  }
  auto out = impl_->call_or(
      "get_many", [&] { return impl_->backend->get_many(full); },
      [&] { return std::vector<std::optional<std::string>>(keys.size()); });
  for (const auto& v : out) impl_->counted(v.has_value());
  return out;
}

void SessionCache::set_many(const std::vector<std::pair<std::string, std::string>>& items,
                            std::chrono::milliseconds ttl) {
  check_ttl(ttl, "cache TTL");
  detail::Fields full;
  full.reserve(items.size());
  for (const auto& [k, v] : items) {
    check_key(k, "cache key");
    check_value(v);
    full.emplace_back(impl_->key("v:", k), v);
  }
  impl_->call("set_many", [&] { impl_->backend->set_many(full, ttl); });
  impl_->writes.fetch_add(static_cast<std::int64_t>(items.size()), std::memory_order_relaxed);
}

// ================================ sessions ================================

void SessionCache::session_set(std::string_view session, std::string_view field,
                               const Json& value) {
  session_update(session, Json{{std::string(field), value}});
}

void SessionCache::session_update(std::string_view session, const Json& fields) {
  check_key(session, "session key");
  if (!fields.is_object()) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("session fields must be a JSON object, not {}", fields.type_name()));
  }
  detail::Fields encoded;
  for (const auto& [f, v] : fields.items()) {
    check_key(f, "session field");
    encoded.emplace_back(f, detail::json_text(v, "session field value"));
  }
  if (encoded.empty()) return;
  impl_->call("session_set", [&] {
    impl_->backend->hset(impl_->key("session:", session), encoded, impl_->options.session_ttl);
  });
  impl_->writes.fetch_add(1, std::memory_order_relaxed);
}

std::optional<Json> SessionCache::session_get(std::string_view session, std::string_view field) {
  check_key(session, "session key");
  check_key(field, "session field");
  auto v = impl_->call_or(
      "session_get",
      [&] {
        return impl_->backend->hget(impl_->key("session:", session), std::string(field),
                                    impl_->options.session_ttl);
      },
      [] { return std::optional<std::string>(); });
  impl_->counted(v.has_value());
  if (!v) return std::nullopt;
  return parse_json_value(*v, "session field");
}

Json SessionCache::session_get_all(std::string_view session) {
  check_key(session, "session key");
  auto fields = impl_->call_or(
      "session_get_all",
      [&] {
        return impl_->backend->hgetall(impl_->key("session:", session), impl_->options.session_ttl);
      },
      [] { return detail::Fields(); });
  impl_->counted(!fields.empty());
  Json out = Json::object();
  for (const auto& [f, v] : fields) out[f] = parse_json_value(v, "session field");
  return out;
}

bool SessionCache::session_remove_field(std::string_view session, std::string_view field) {
  check_key(session, "session key");
  check_key(field, "session field");
  return impl_->call("session_remove_field", [&] {
    return impl_->backend->hdel(impl_->key("session:", session), std::string(field),
                                impl_->options.session_ttl);
  });
}

bool SessionCache::session_remove(std::string_view session) {
  check_key(session, "session key");
  return impl_->call("session_remove",
                     [&] { return impl_->backend->remove(impl_->key("session:", session)); });
}

// ============================== rate limiting =============================

RateDecision SessionCache::hit(std::string_view key, const RateLimit& limit, std::int64_t cost) {
  check_key(key, "rate limit key");
  if (limit.limit < 1 || limit.limit > 1000000000) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("rate limit {} is outside 1..10^9", limit.limit));
  }
  if (limit.window.count() < 1 || limit.window > std::chrono::hours(24 * 30)) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("rate window {} ms is outside 1 ms..30 days", limit.window.count()));
  }
  if (cost < 1 || cost > limit.limit) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("rate cost {} is outside 1..{} (the limit)", cost, limit.limit));
  }
  return impl_->call_or(
      "hit", [&] { return impl_->backend->rate(impl_->key("rate:", key), limit, cost); },
      [&] {
        RateDecision d;
        d.degraded = true;
        d.allowed = impl_->options.rate_limit_fail_open;
        d.remaining = d.allowed ? limit.limit - cost : 0;
        d.retry_after = d.allowed ? Ms{0} : impl_->options.retry_interval;
        return d;
      });
}

void SessionCache::reset_rate(std::string_view key) {
  check_key(key, "rate limit key");
  impl_->call("reset_rate", [&] { impl_->backend->remove(impl_->key("rate:", key)); });
}

// ============================== active users ==============================

namespace {
void check_within(Ms within, const CacheOptions& o) {
  if (within.count() <= 0 || within > o.active_retention) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("active window {} ms is outside 1..{} ms (CacheOptions::"
                            "active_retention)",
                            within.count(), o.active_retention.count()));
  }
}
}  // namespace

void SessionCache::mark_active(std::string_view channel, std::string_view user) {
  check_key(channel, "channel");
  check_key(user, "user");
  std::int64_t t = detail::wall_ms();
  impl_->call("mark_active", [&] {
    impl_->backend->zadd(impl_->key("active:", channel), std::string(user), t,
                         t - impl_->options.active_retention.count());
  });
  impl_->writes.fetch_add(1, std::memory_order_relaxed);
}

std::int64_t SessionCache::active_count(std::string_view channel,
                                        std::chrono::milliseconds within) {
  check_key(channel, "channel");
  check_within(within, impl_->options);
  std::int64_t since = detail::wall_ms() - within.count();
  return impl_->call("active_count",
                     [&] { return impl_->backend->zcount(impl_->key("active:", channel), since); });
}

std::vector<std::string> SessionCache::active_users(std::string_view channel,
                                                    std::chrono::milliseconds within,
                                                    std::size_t limit) {
  check_key(channel, "channel");
  check_within(within, impl_->options);
  if (limit == 0 || limit > 100000) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("active user limit {} is outside 1..100000", limit));
  }
  std::int64_t since = detail::wall_ms() - within.count();
  return impl_->call("active_users", [&] {
    return impl_->backend->zrange_desc(impl_->key("active:", channel), since, limit);
  });
}

bool SessionCache::is_active(std::string_view channel, std::string_view user,
                             std::chrono::milliseconds within) {
  check_key(channel, "channel");
  check_key(user, "user");
  check_within(within, impl_->options);
  auto score = impl_->call("is_active", [&] {
    return impl_->backend->zscore(impl_->key("active:", channel), std::string(user));
  });
  return score && *score >= detail::wall_ms() - within.count();
}

// ========================== conversation contexts =========================

std::vector<Message> SessionCache::context(Store& store, ConversationId id, std::size_t n) {
  if (n == 0 || n > impl_->options.context_size) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("context size {} is outside 1..{} (CacheOptions::context_size)", n,
                            impl_->options.context_size));
  }
  // Inside a transaction the store shows this thread's uncommitted writes:
  // never cached (a rollback would leave them in the cache).
  if (store.impl_->current() != nullptr) return store.conversations().recent(id, n);
  const std::string k = impl_->context_key(id);
  std::optional<detail::Versioned> cached;
  auto backend_failed = [](const Error& e) {
    return e.code() == ErrorCode::unavailable || e.code() == ErrorCode::internal;
  };
  try {
    if (impl_->flush_pending(id)) {
      cached = impl_->backend->vget(k);
    } else {
      impl_->report("context",
                    Error(ErrorCode::unavailable,
                          fmt::format("the cached context of conversation {} may be stale (its "
                                      "invalidation has not reached the cache yet): read from "
                                      "the store",
                                      id)),
                    true);
    }
  } catch (const Error& e) {
    if (!backend_failed(e)) throw;
    impl_->report("context", e, true);
  }
  if (cached && cached->value) {
    if (auto messages = decode_messages(*cached->value, n)) {
      impl_->counted(true);
      return last_n(std::move(*messages), n);
    }
  }
  if (!cached) return store.conversations().recent(id, n);  // the backend failed
  impl_->counted(false);
  auto messages = store.conversations().recent(id, impl_->options.context_size);
  try {
    // Refused when a change committed since vget: the next call rebuilds.
    impl_->backend->vput(k, cached->version, encode_messages(messages, impl_->options.context_size),
                         impl_->options.context_ttl);
  } catch (const Error& e) {
    if (!backend_failed(e)) throw;
    impl_->report("context", e, true);
  }
  return last_n(std::move(messages), n);
}

void SessionCache::attach(Store& store) {
  {
    std::lock_guard lock(impl_->attached_mu);
    if (!impl_->attached.insert(store.impl_.get()).second) return;
  }
  std::weak_ptr<Impl> weak = impl_;
  store.impl_->add_message_listener([weak](ConversationId id) {
    if (auto impl = weak.lock()) impl->invalidate(id);
  });
}

void SessionCache::invalidate_context(ConversationId id) { impl_->invalidate(id); }

// ========================== flags and variants ============================

void SessionCache::set_flag(std::string_view name, const Json& value, std::string_view channel) {
  check_key(name, "feature flag name");
  if (!channel.empty()) check_key(channel, "channel");
  std::string text = detail::json_text(value, "feature flag value");
  impl_->call("set_flag", [&] {
    impl_->backend->hset(impl_->flag_key(channel), {{std::string(name), text}}, Ms{0});
  });
  impl_->writes.fetch_add(1, std::memory_order_relaxed);
}

std::optional<Json> SessionCache::flag(std::string_view name, std::string_view channel) {
  check_key(name, "feature flag name");
  if (!channel.empty()) check_key(channel, "channel");
  auto text = impl_->call("flag", [&]() -> std::optional<std::string> {
    if (!channel.empty()) {
      if (auto v = impl_->backend->hget(impl_->flag_key(channel), std::string(name), Ms{0})) {
        return v;
      }
    }
    return impl_->backend->hget(impl_->flag_key({}), std::string(name), Ms{0});
  });
  impl_->counted(text.has_value());
  if (!text) return std::nullopt;
  return parse_json_value(*text, "feature flag");
}

bool SessionCache::remove_flag(std::string_view name, std::string_view channel) {
  check_key(name, "feature flag name");
  if (!channel.empty()) check_key(channel, "channel");
  return impl_->call("remove_flag", [&] {
    return impl_->backend->hdel(impl_->flag_key(channel), std::string(name), Ms{0});
  });
}

Json SessionCache::flags(std::string_view channel) {
  if (!channel.empty()) check_key(channel, "channel");
  Json out = Json::object();
  impl_->call("flags", [&] {
    for (const auto& [f, v] : impl_->backend->hgetall(impl_->flag_key({}), Ms{0})) {
      out[f] = parse_json_value(v, "feature flag");
    }
    if (!channel.empty()) {
      for (const auto& [f, v] : impl_->backend->hgetall(impl_->flag_key(channel), Ms{0})) {
        out[f] = parse_json_value(v, "feature flag");
      }
    }
  });
  return out;
}

std::string SessionCache::variant(std::string_view experiment, std::string_view user,
                                  const std::vector<std::string>& variants) {
  check_key(experiment, "experiment");
  check_key(user, "user");
  if (variants.empty()) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("experiment '{}' has no variants to choose from", experiment));
  }
  for (const auto& v : variants) check_key(v, "variant");
  auto assigned = impl_->call_or(
      "variant",
      [&] {
        return impl_->backend->hget(impl_->key("variant:", experiment), std::string(user), Ms{0});
      },
      [] { return std::optional<std::string>(); });
  if (assigned) return *assigned;
  return variants[stable_hash(experiment, user) % variants.size()];
}

void SessionCache::assign_variant(std::string_view experiment, std::string_view user,
                                  std::string_view variant) {
  check_key(experiment, "experiment");
  check_key(user, "user");
  check_key(variant, "variant");
  impl_->call("assign_variant", [&] {
    impl_->backend->hset(impl_->key("variant:", experiment),
                         {{std::string(user), std::string(variant)}}, Ms{0});
  });
}

// ================================= turns ==================================

std::optional<TurnLease> SessionCache::acquire_turn(std::string_view name,
                                                    std::chrono::milliseconds ttl,
                                                    std::chrono::milliseconds wait) {
  check_key(name, "turn name");
  if (ttl.count() <= 0) throw Error(ErrorCode::invalid_argument, "turn lease TTL must be positive");
  check_ttl(wait, "turn wait");
  const std::string k = impl_->key("turn:", name);
  auto& b = *impl_->backend;
  const auto deadline = std::chrono::steady_clock::now() + wait;
  return impl_->call("acquire_turn", [&]() -> std::optional<TurnLease> {
    std::int64_t ticket = b.lease_ticket(k, kWaiterAlive);
    Ms pause{1};
    try {
      for (;;) {
        if (auto lease = b.lease_try(k, ticket, ttl, kWaiterAlive)) {
          lease->name = std::string(name);
          return lease;
        }
        auto left = std::chrono::duration_cast<Ms>(deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) {
          b.lease_leave(k, ticket);
          return std::nullopt;
        }
        b.lease_wait(k, std::min(pause, left));
        pause = std::min(pause * 2, kMaxPoll);
      }
    } catch (const Error&) {
      try {
        b.lease_leave(k, ticket);
      } catch (...) {
        // The ticket drops out by itself after kWaiterAlive.
      }
      throw;
    }
  });
}

std::optional<TurnLease> SessionCache::acquire_turn(ConversationId id,
                                                    std::chrono::milliseconds ttl,
                                                    std::chrono::milliseconds wait) {
  return acquire_turn(fmt::format("conversation:{}", id), ttl, wait);
}

bool SessionCache::renew_turn(TurnLease& lease, std::chrono::milliseconds ttl) {
  check_key(lease.name, "turn name");
  if (ttl.count() <= 0) throw Error(ErrorCode::invalid_argument, "turn lease TTL must be positive");
  auto expires = impl_->call("renew_turn", [&] {
    return impl_->backend->lease_renew(impl_->key("turn:", lease.name), lease.fence, ttl);
  });
  if (!expires) return false;
  lease.expires_at = *expires;
  return true;
}

void SessionCache::release_turn(const TurnLease& lease) {
  check_key(lease.name, "turn name");
  impl_->call("release_turn",
              [&] { impl_->backend->lease_release(impl_->key("turn:", lease.name), lease.fence); });
}

// ============================== observability =============================

CacheStats SessionCache::stats() const {
  CacheStats s;
  s.hits = impl_->hits.load();
  s.misses = impl_->misses.load();
  s.writes = impl_->writes.load();
  s.errors = impl_->errors.load();
  s.fallbacks = impl_->fallbacks.load();
  impl_->backend->add_stats(s);
  return s;
}

CacheHealth SessionCache::health() const noexcept {
  CacheHealth h;
  try {
    h.backend = impl_->backend->name();
    auto t0 = std::chrono::steady_clock::now();
    impl_->backend->ping();
    h.round_trip = std::chrono::duration_cast<std::chrono::microseconds>(
        std::chrono::steady_clock::now() - t0);
    h.ok = true;
  } catch (const std::exception& e) {
    h.error = e.what();
  } catch (...) {
    h.error = "unknown failure";
  }
  return h;
}

}  // namespace convstore
