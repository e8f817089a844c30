// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT

// SessionCache::database(): the cache primitives on the store's own tables
// (migration 5), so that several processes share one cache without Redis.
// Every read-modify-write runs in one transaction that locks the key's row
// (FOR UPDATE on PostgreSQL; SQLite's writer lock), which makes rate limits
// and leases atomic across processes.

#include <fmt/format.h>
#include <sodium.h>

#include <cstdlib>
#include <map>

#include "cache/backends.hpp"
#include "cache/rate_math.hpp"
#include "store_helpers.hpp"
#include "store_impl.hpp"

namespace convstore::detail {
namespace {

using Clock = std::chrono::steady_clock;

// ---- values as stored: UTF-8 text as is, anything else as hex ----

struct Stored {
  std::string text;
  bool hex = false;
};

Stored store_value(std::string_view v) {
  try {
    check_text(v, "cache value");
    return {std::string(v), false};
  } catch (const Error&) {
    std::string hex(v.size() * 2 + 1, '\0');
    sodium_bin2hex(hex.data(), hex.size(), reinterpret_cast<const unsigned char*>(v.data()),
                   v.size());
    hex.pop_back();
    return {std::move(hex), true};
  }
}

std::string load_value(const std::string& text, long long hex) {
  if (hex == 0) return text;
  std::string out(text.size() / 2, '\0');
  std::size_t n = 0;
  if (sodium_hex2bin(reinterpret_cast<unsigned char*>(out.data()), out.size(), text.data(),
                     text.size(), nullptr, &n, nullptr) != 0) {
    throw Error(ErrorCode::internal, "a cache value stored as hex is not hex");
  }
  out.resize(n);
  return out;
}

std::optional<Timestamp> expiry(Timestamp now, Ms ttl) {
  if (ttl.count() <= 0) return std::nullopt;
  return now + std::chrono::duration_cast<std::chrono::microseconds>(ttl);
}

bool live(const std::optional<Timestamp>& expires, Timestamp now) {
  return !expires || *expires > now;
}

// ---- statements ----

#define CS_LIVE "(expires_at IS NULL OR expires_at > :now)"

const Sql kGet{
    "SELECT value, hex FROM cache_entries WHERE key = :k AND kind = 'value' AND " CS_LIVE};
const Sql kUpsert{
    "INSERT INTO cache_entries (key, kind, value, hex, version, holder, expires_at) "
    "VALUES (:k, :kind, :v, :h, 0, NULL, :e) ON CONFLICT (key) DO UPDATE SET kind = excluded.kind, "
    "value = excluded.value, hex = excluded.hex, version = 0, holder = NULL, "
    "expires_at = excluded.expires_at"};
const Sql kRemoveFields{"DELETE FROM cache_fields WHERE key = :k"};
const Sql kRemove{"DELETE FROM cache_entries WHERE key = :k RETURNING expires_at"};
const Sql kTtl{"SELECT expires_at FROM cache_entries WHERE key = :k AND " CS_LIVE};
// Marks a live head of `kind` as used: its TTL restarts (NULL: none).
const Sql kTouch{
    "UPDATE cache_entries SET expires_at = :e WHERE key = :k AND kind = :kind AND " CS_LIVE};
const Sql kIsLive{"SELECT 1 FROM cache_entries WHERE key = :k AND kind = :kind AND " CS_LIVE};
const Sql kField{"SELECT value, hex FROM cache_fields WHERE key = :k AND field = :f"};
const Sql kFields{"SELECT field, value, hex FROM cache_fields WHERE key = :k ORDER BY field"};
// Fields left from a hash that expired (or a key of another kind) go
// before the hash is written again.
const Sql kDropStaleFields{
    "DELETE FROM cache_fields WHERE key = :k AND EXISTS (SELECT 1 FROM cache_entries e WHERE "
    "e.key = :k2 AND (e.kind <> :kind OR e.expires_at <= :now))"};
const Sql kUpsertField{
    "INSERT INTO cache_fields (key, field, value, hex, score) VALUES (:k, :f, :v, :h, NULL) "
    "ON CONFLICT (key, field) DO UPDATE SET value = excluded.value, hex = excluded.hex"};
const Sql kDeleteField{"DELETE FROM cache_fields WHERE key = :k AND field = :f"};
const Sql kCountFields{"SELECT COUNT(*) FROM cache_fields WHERE key = :k"};
const Sql kDeleteHead{"DELETE FROM cache_entries WHERE key = :k"};
const Sql kUpsertMember{
    "INSERT INTO cache_fields (key, field, value, hex, score) VALUES (:k, :f, NULL, 0, :s) "
    "ON CONFLICT (key, field) DO UPDATE SET score = excluded.score"};
const Sql kTrimMembers{"DELETE FROM cache_fields WHERE key = :k AND score < :d"};
const Sql kCountMembers{"SELECT COUNT(*) FROM cache_fields WHERE key = :k AND score >= :m"};
const Sql kRangeMembers{
    "SELECT field FROM cache_fields WHERE key = :k AND score >= :m ORDER BY score DESC, field "
    "LIMIT :l"};
const Sql kScore{
    "SELECT score FROM cache_fields WHERE key = :k AND field = :f AND score IS NOT NULL"};
const Sql kVget{
    "SELECT version, value, hex, expires_at FROM cache_entries WHERE key = :k AND kind = "
    "'versioned'"};
const Sql kLockVersion{
    "SELECT version FROM cache_entries WHERE key = :k AND kind = 'versioned'",
    "SELECT version FROM cache_entries WHERE key = :k AND kind = 'versioned' FOR UPDATE"};
const Sql kInsertVersioned{
    "INSERT INTO cache_entries (key, kind, value, hex, version, expires_at) "
    "VALUES (:k, 'versioned', :v, :h, 0, :e) ON CONFLICT (key) DO NOTHING"};
const Sql kUpdateVersioned{
    "UPDATE cache_entries SET value = :v, hex = :h, expires_at = :e WHERE key = :k"};
// Versions grow from the clock too (:v is now in µs), so that a swept key
// does not start again at a version a slow reader still holds.
const Sql kBump{
    "INSERT INTO cache_entries (key, kind, value, hex, version, expires_at) "
    "VALUES (:k, 'versioned', NULL, 0, :v, :e) ON CONFLICT (key) DO UPDATE SET "
    "kind = 'versioned', version = CASE WHEN cache_entries.version + 1 > excluded.version "
    "THEN cache_entries.version + 1 ELSE excluded.version END, value = NULL, "
    "expires_at = excluded.expires_at"};
// Rate state and leases: the row is created first, then locked.
const Sql kEnsure{
    "INSERT INTO cache_entries (key, kind, version, expires_at) VALUES (:k, :kind, 0, :e) "
    "ON CONFLICT (key) DO NOTHING"};
const Sql kLockState{
    "SELECT kind, value, version, holder, expires_at FROM cache_entries WHERE key = :k",
    "SELECT kind, value, version, holder, expires_at FROM cache_entries WHERE key = :k FOR UPDATE"};
const Sql kSaveState{
    "UPDATE cache_entries SET kind = :kind, value = :v, hex = 0, version = :ver, holder = :hold, "
    "expires_at = :e WHERE key = :k"};
const Sql kNewTicket{
    "INSERT INTO cache_waiters (name, alive_until) VALUES (:n, :a) RETURNING ticket"};
const Sql kKeepTicket{"UPDATE cache_waiters SET alive_until = :a WHERE ticket = :t"};
const Sql kRequeue{"INSERT INTO cache_waiters (ticket, name, alive_until) VALUES (:t, :n, :a)"};
const Sql kDropDeadWaiters{"DELETE FROM cache_waiters WHERE name = :n AND alive_until <= :now"};
const Sql kFirstWaiter{"SELECT MIN(ticket) FROM cache_waiters WHERE name = :n"};
const Sql kLeave{"DELETE FROM cache_waiters WHERE ticket = :t"};
const Sql kRenew{
    "UPDATE cache_entries SET expires_at = :e WHERE key = :k AND kind = 'lease' AND version = :f "
    "AND holder IS NOT NULL AND expires_at > :now"};
const Sql kRelease{
    "UPDATE cache_entries SET holder = NULL WHERE key = :k AND kind = 'lease' "
    "AND version = :f AND holder IS NOT NULL"};
const Sql kSweepFields{
    "DELETE FROM cache_fields WHERE key IN (SELECT key FROM cache_entries WHERE expires_at <= "
    ":now AND kind <> 'lease')"};
// Lease rows stay: they hold the last fence, which must keep growing even
// when the processes' clocks differ.
const Sql kSweepEntries{"DELETE FROM cache_entries WHERE expires_at <= :now AND kind <> 'lease'"};
const Sql kSweepWaiters{"DELETE FROM cache_waiters WHERE alive_until <= :now"};
// What the sweep would delete (RetentionStore's dry run).
const Sql kCountSweepFields{
    "SELECT COUNT(*) FROM cache_fields WHERE key IN (SELECT key FROM cache_entries WHERE "
    "expires_at <= :now AND kind <> 'lease')"};
const Sql kCountSweepEntries{
    "SELECT COUNT(*) FROM cache_entries WHERE expires_at <= :now AND kind <> 'lease'"};
const Sql kCountSweepWaiters{"SELECT COUNT(*) FROM cache_waiters WHERE alive_until <= :now"};
const Sql kPing{"SELECT 1"};

#undef CS_LIVE

// A row of kLockState.
struct StateRow {
  std::string kind;
  std::optional<std::string> value;
  long long version = 0;
  std::optional<long long> holder;
  std::optional<Timestamp> expires;
};

std::optional<StateRow> lock_state(Connection& c, const std::string& key, std::string_view kind,
                                   std::optional<Timestamp> fresh_expiry) {
  Stmt(c, kEnsure).in(key).in(kind).in(fresh_expiry).one();
  StateRow r;
  Stmt s(c, kLockState);
  s.in(key).out(r.kind).out(r.value).out(r.version).out(r.holder).out(r.expires);
  if (!s.one()) return std::nullopt;
  return r;
}

std::string rate_text(const RateState& s) {
  return fmt::format("{} {:.17g} {:.17g}", s.at, s.a, s.b);
}

RateState parse_rate(const std::string& text) {
  RateState s;
  const char* p = text.c_str();
  char* end = nullptr;
  s.at = std::strtoll(p, &end, 10);
  s.a = std::strtod(end, &end);
  s.b = std::strtod(end, &end);
  s.fresh = false;
  return s;
}

class DatabaseBackend final : public CacheBackend {
 public:
  explicit DatabaseBackend(Store::Impl& store) : store_(store) {}

  const char* name() const noexcept override { return "database"; }

  void ping() override {
    store_.read(Op{"cache ping"}, [&](Connection& c) {
      long long one = 0;
      Stmt(c, kPing).out(one).one();
    });
  }

  std::optional<std::string> get(const std::string& key) override {
    return store_.read(Op{"cache get"}, [&](Connection& c) -> std::optional<std::string> {
      std::string v;
      long long hex = 0;
      Stmt s(c, kGet);
      s.in(key).in(now()).out(v).out(hex);
      if (!s.one()) return std::nullopt;
      return load_value(v, hex);
    });
  }

  void set(const std::string& key, std::string_view value, Ms ttl) override {
    Stored v = store_value(value);
    Timestamp t = now();
    store_.single(Op{"cache set"}, [&](Connection& c) {
      Stmt(c, kUpsert).in(key).in("value").in(v.text).in(v.hex).in(expiry(t, ttl)).one();
    });
  }

  bool remove(const std::string& key) override {
    Timestamp t = now();
    return store_.write(Op{"cache remove"}, [&](Connection& c) {
      Stmt(c, kRemoveFields).in(key).one();
      std::optional<Timestamp> expires;
      Stmt s(c, kRemove);
      s.in(key).out(expires);
      return s.one() && live(expires, t);
    });
  }

  std::optional<Ms> ttl(const std::string& key) override {
    Timestamp t = now();
    return store_.read(Op{"cache ttl"}, [&](Connection& c) -> std::optional<Ms> {
      std::optional<Timestamp> expires;
      Stmt s(c, kTtl);
      s.in(key).in(t).out(expires);
      if (!s.one() || !expires) return std::nullopt;
      return std::chrono::ceil<Ms>(*expires - t);
    });
  }

  std::vector<std::optional<std::string>> get_many(const std::vector<std::string>& keys) override {
    constexpr std::size_t kChunk = 100;
    std::vector<std::optional<std::string>> out(keys.size());
    if (keys.empty()) return out;
    std::multimap<std::string, std::size_t> where;
    for (std::size_t i = 0; i < keys.size(); ++i) where.emplace(keys[i], i);
    Timestamp t = now();
    store_.read(Op{"cache get_many"}, [&](Connection& c) {
      for (std::size_t from = 0; from < keys.size(); from += kChunk) {
        std::size_t n = std::min(kChunk, keys.size() - from);
        std::string sql =
            "SELECT key, value, hex FROM cache_entries WHERE kind = 'value' AND (expires_at IS "
            "NULL OR expires_at > :now) AND key IN (";
        for (std::size_t i = 0; i < n; ++i) sql += fmt::format("{}:k{}", i == 0 ? "" : ", ", i);
        sql += ")";
        Stmt s(c, sql);
        s.in(t);
        for (std::size_t i = 0; i < n; ++i) s.in(keys[from + i]);
        std::string k, v;
        long long hex = 0;
        s.out(k).out(v).out(hex);
        while (s.next()) {
          auto [lo, hi] = where.equal_range(k);
          for (auto it = lo; it != hi; ++it) out[it->second] = load_value(v, hex);
        }
      }
    });
    return out;
  }

  void set_many(const Fields& items, Ms ttl) override {
    Timestamp t = now();
    store_.write(Op{"cache set_many"}, [&](Connection& c) {
      for (const auto& [k, value] : items) {
        Stored v = store_value(value);
        Stmt(c, kUpsert).in(k).in("value").in(v.text).in(v.hex).in(expiry(t, ttl)).one();
      }
    });
  }

  std::optional<std::string> hget(const std::string& key, const std::string& field,
                                  Ms ttl) override {
    return with_hash(key, ttl, "cache hget", [&](Connection& c) -> std::optional<std::string> {
      std::string v;
      long long hex = 0;
      Stmt s(c, kField);
      s.in(key).in(field).out(v).out(hex);
      if (!s.one()) return std::nullopt;
      return load_value(v, hex);
    });
  }

  Fields hgetall(const std::string& key, Ms ttl) override {
    auto fields = with_hash(key, ttl, "cache hgetall", [&](Connection& c) -> std::optional<Fields> {
      Fields out;
      std::string f, v;
      long long hex = 0;
      Stmt s(c, kFields);
      s.in(key).out(f).out(v).out(hex);
      while (s.next()) out.emplace_back(f, load_value(v, hex));
      return out;
    });
    return fields ? std::move(*fields) : Fields();
  }

  void hset(const std::string& key, const Fields& fields, Ms ttl) override {
    Timestamp t = now();
    store_.write(Op{"cache hset"}, [&](Connection& c) {
      Stmt(c, kDropStaleFields).in(key).in(key).in("hash").in(t).one();
      Stmt(c, kUpsert).in(key).in("hash").in_null().in(0).in(expiry(t, ttl)).one();
      for (const auto& [f, value] : fields) {
        Stored v = store_value(value);
        Stmt(c, kUpsertField).in(key).in(f).in(v.text).in(v.hex).one();
      }
    });
  }

  bool hdel(const std::string& key, const std::string& field, Ms ttl) override {
    Timestamp t = now();
    return store_.write(Op{"cache hdel"}, [&](Connection& c) {
      long long one = 0;
      if (!Stmt(c, kIsLive).in(key).in("hash").in(t).out(one).one()) return false;
      Stmt del(c, kDeleteField);
      del.in(key).in(field).one();
      bool removed = del.affected() > 0;
      long long left = 0;
      Stmt(c, kCountFields).in(key).out(left).one();
      if (left == 0) {
        Stmt(c, kDeleteHead).in(key).one();
      } else {
        Stmt(c, kTouch).in(expiry(t, ttl)).in(key).in("hash").in(t).one();
      }
      return removed;
    });
  }

  void zadd(const std::string& key, const std::string& member, std::int64_t score,
            std::int64_t drop_below) override {
    Timestamp t = now();
    // The set lives as long as its newest member matters.
    Ms keep{score - drop_below};
    store_.write(Op{"cache zadd"}, [&](Connection& c) {
      Stmt(c, kDropStaleFields).in(key).in(key).in("zset").in(t).one();
      Stmt(c, kUpsert).in(key).in("zset").in_null().in(0).in(expiry(t, keep)).one();
      Stmt(c, kUpsertMember).in(key).in(member).in(static_cast<long long>(score)).one();
      Stmt(c, kTrimMembers).in(key).in(static_cast<long long>(drop_below)).one();
    });
  }

  std::int64_t zcount(const std::string& key, std::int64_t min_score) override {
    return store_.read(Op{"cache zcount"}, [&](Connection& c) {
      long long n = 0;
      Stmt(c, kCountMembers).in(key).in(static_cast<long long>(min_score)).out(n).one();
      return static_cast<std::int64_t>(n);
    });
  }

  std::vector<std::string> zrange_desc(const std::string& key, std::int64_t min_score,
                                       std::size_t limit) override {
    return store_.read(Op{"cache zrange"}, [&](Connection& c) {
      std::vector<std::string> out;
      std::string m;
      Stmt s(c, kRangeMembers);
      s.in(key).in(static_cast<long long>(min_score)).in(limit).out(m);
      while (s.next()) out.push_back(m);
      return out;
    });
  }

  std::optional<std::int64_t> zscore(const std::string& key, const std::string& member) override {
    return store_.read(Op{"cache zscore"}, [&](Connection& c) -> std::optional<std::int64_t> {
      long long score = 0;
      if (!Stmt(c, kScore).in(key).in(member).out(score).one()) return std::nullopt;
      return score;
    });
  }

  Versioned vget(const std::string& key) override {
    Timestamp t = now();
    return store_.read(Op{"cache vget"}, [&](Connection& c) {
      Versioned out;
      long long version = 0, hex = 0;
      std::optional<std::string> v;
      std::optional<Timestamp> expires;
      Stmt s(c, kVget);
      s.in(key).out(version).out(v).out(hex).out(expires);
      if (!s.one()) return out;
      out.version = version;
      if (v && live(expires, t)) out.value = load_value(*v, hex);
      return out;
    });
  }

  bool vput(const std::string& key, std::int64_t version, std::string_view value, Ms ttl) override {
    Stored v = store_value(value);
    Timestamp t = now();
    return store_.write(Op{"cache vput"}, [&](Connection& c) {
      long long current = 0;
      bool exists = Stmt(c, kLockVersion).in(key).out(current).one();
      if ((exists ? current : 0) != version) return false;
      if (!exists) {
        Stmt ins(c, kInsertVersioned);
        ins.in(key).in(v.text).in(v.hex).in(expiry(t, ttl)).one();
        return ins.affected() > 0;
      }
      Stmt(c, kUpdateVersioned).in(v.text).in(v.hex).in(expiry(t, ttl)).in(key).one();
      return true;
    });
  }

  void vbump(const std::string& key, Ms ttl) override {
    store_.single(Op{"cache vbump"}, [&](Connection& c) {
      Stmt(c, kBump).in(key).in(static_cast<long long>(wall_us())).in(expiry(now(), ttl)).one();
    });
  }

  RateDecision rate(const std::string& key, const RateLimit& limit, std::int64_t cost) override {
    Timestamp t = now();
    std::int64_t ms = wall_ms();
    auto keep = expiry(t, rate_state_ttl(limit));
    return store_.write(Op{"cache rate"}, [&](Connection& c) {
      auto row = lock_state(c, key, "rate", keep);
      RateState s;
      if (row && row->kind == "rate" && row->value && live(row->expires, t)) {
        s = parse_rate(*row->value);
      }
      RateDecision d = apply_rate(s, limit, cost, ms);
      Stmt(c, kSaveState)
          .in("rate")
          .in(rate_text(s))
          .in(0)
          .in(std::optional<long long>())
          .in(keep)
          .in(key)
          .one();
      return d;
    });
  }

  std::int64_t lease_ticket(const std::string& name, Ms alive_for) override {
    Timestamp until = now() + std::chrono::duration_cast<std::chrono::microseconds>(alive_for);
    return store_.single(Op{"cache lease ticket"}, [&](Connection& c) {
      long long ticket = 0;
      Stmt(c, kNewTicket).in(name).in(until).out(ticket).one();
      return static_cast<std::int64_t>(ticket);
    });
  }

  std::optional<TurnLease> lease_try(const std::string& name, std::int64_t ticket, Ms ttl,
                                     Ms alive_for) override {
    Timestamp t = now();
    Timestamp until = t + std::chrono::duration_cast<std::chrono::microseconds>(alive_for);
    const auto tk = static_cast<long long>(ticket);
    return store_.write(Op{"cache lease"}, [&](Connection& c) -> std::optional<TurnLease> {
      auto row = lock_state(c, name, "lease", std::nullopt);
      Stmt keep(c, kKeepTicket);
      keep.in(until).in(tk).one();
      if (keep.affected() == 0) Stmt(c, kRequeue).in(tk).in(name).in(until).one();
      Stmt(c, kDropDeadWaiters).in(name).in(t).one();
      if (row && row->kind == "lease" && row->holder && live(row->expires, t)) return std::nullopt;
      std::optional<long long> first;
      Stmt(c, kFirstWaiter).in(name).out(first).one();
      if (first != tk) return std::nullopt;
      Stmt(c, kLeave).in(tk).one();
      long long previous = row && row->kind == "lease" ? row->version : 0;
      long long fence = std::max<long long>(previous + 1, wall_us());
      Timestamp expires = t + std::chrono::duration_cast<std::chrono::microseconds>(ttl);
      Stmt(c, kSaveState)
          .in("lease")
          .in_null()
          .in(fence)
          .in(std::optional<long long>(tk))
          .in(expires)
          .in(name)
          .one();
      return TurnLease{name, fence, ticket, expires};
    });
  }

  void lease_leave(const std::string&, std::int64_t ticket) override {
    store_.single(Op{"cache lease leave"},
                  [&](Connection& c) { Stmt(c, kLeave).in(static_cast<long long>(ticket)).one(); });
  }

  std::optional<Timestamp> lease_renew(const std::string& name, std::int64_t fence,
                                       Ms ttl) override {
    Timestamp t = now();
    Timestamp expires = t + std::chrono::duration_cast<std::chrono::microseconds>(ttl);
    return store_.single(Op{"cache lease renew"}, [&](Connection& c) -> std::optional<Timestamp> {
      Stmt s(c, kRenew);
      s.in(expires).in(name).in(static_cast<long long>(fence)).in(t).one();
      if (s.affected() == 0) return std::nullopt;
      return expires;
    });
  }

  void lease_release(const std::string& name, std::int64_t fence) override {
    store_.single(Op{"cache lease release"}, [&](Connection& c) {
      Stmt(c, kRelease).in(name).in(static_cast<long long>(fence)).one();
    });
  }

  void sweep() override {
    Timestamp t = now();
    store_.write(Op{"cache sweep"}, [&](Connection& c) { sweep_database_cache(c, t, false); });
  }

 private:
  // fn(c) on a live hash `key`, whose TTL restarts when ttl > 0 (a write);
  // nullopt when there is no live hash.
  template <class F>
  auto with_hash(const std::string& key, Ms ttl, const char* what, F&& fn)
      -> decltype(fn(std::declval<Connection&>())) {
    Timestamp t = now();
    if (ttl.count() > 0) {
      return store_.write(Op{what}, [&](Connection& c) -> decltype(fn(c)) {
        Stmt touch(c, kTouch);
        touch.in(expiry(t, ttl)).in(key).in("hash").in(t).one();
        if (touch.affected() == 0) return std::nullopt;
        return fn(c);
      });
    }
    return store_.snapshot(Op{what}, [&](Connection& c) -> decltype(fn(c)) {
      long long one = 0;
      if (!Stmt(c, kIsLive).in(key).in("hash").in(t).out(one).one()) return std::nullopt;
      return fn(c);
    });
  }

  Store::Impl& store_;
};

}  // namespace

std::unique_ptr<CacheBackend> make_database_backend(Store::Impl& store, const CacheOptions&) {
  return std::make_unique<DatabaseBackend>(store);
}

CacheSweep sweep_database_cache(Connection& c, Timestamp at, bool count_only) {
  CacheSweep r;
  if (count_only) {
    Stmt(c, kCountSweepFields).in(at).out(r.fields).one();
    Stmt(c, kCountSweepEntries).in(at).out(r.entries).one();
    Stmt(c, kCountSweepWaiters).in(at).out(r.waiters).one();
    return r;
  }
  Stmt f(c, kSweepFields);
  f.in(at).one();
  r.fields = f.affected();
  Stmt e(c, kSweepEntries);
  e.in(at).one();
  r.entries = e.affected();
  Stmt w(c, kSweepWaiters);
  w.in(at).one();
  r.waiters = w.affected();
  return r;
}

}  // namespace convstore::detail
