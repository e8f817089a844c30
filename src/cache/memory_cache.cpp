// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT

// The in-process cache backend: 16 shards, each a hash map over an LRU list
// under its own mutex, with TTLs checked on access and by sweep(). The memory
// bound is split evenly between the shards.

#include <algorithm>
#include <condition_variable>
#include <list>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>

#include "cache/backends.hpp"
#include "cache/rate_math.hpp"

namespace convstore::detail {
namespace {

using Clock = std::chrono::steady_clock;
constexpr std::size_t kShards = 16;
// Bookkeeping per entry, field and member (list node, map slot, headers).
constexpr std::size_t kEntryOverhead = 128;
constexpr std::size_t kItemOverhead = 64;

enum class Kind { value, hash, zset, versioned, rate };

struct ZSet {
  std::unordered_map<std::string, std::int64_t> score;
  std::set<std::pair<std::int64_t, std::string>> by_score;
};

struct Entry {
  std::string key;
  Kind kind = Kind::value;
  std::string value;  // value; versioned payload
  bool has_value = false;
  std::int64_t version = 0;
  std::unique_ptr<std::unordered_map<std::string, std::string>> hash;
  std::unique_ptr<ZSet> zset;
  RateState rate;
  Clock::time_point expires = Clock::time_point::max();
  std::size_t bytes = 0;

  std::size_t measure() const {
    std::size_t n = kEntryOverhead + key.size() + value.size();
    if (hash) {
      for (const auto& [f, v] : *hash) n += kItemOverhead + f.size() + v.size();
    }
    if (zset) {
      for (const auto& [m, s] : zset->score) n += 2 * (kItemOverhead + m.size());
    }
    return n;
  }
};

Clock::time_point deadline(Clock::time_point now, Ms ttl) {
  return ttl.count() > 0 ? now + ttl : Clock::time_point::max();
}

class Shard {
 public:
  std::mutex mu;

  // The live entry of `key` (touched as most recently used), or null; an
  // expired one is dropped.
  Entry* find(std::string_view key, Clock::time_point now) {
    auto it = index_.find(key);
    if (it == index_.end()) return nullptr;
    if (it->second->expires <= now) {
      ++expirations;
      erase(it->second);
      return nullptr;
    }
    lru_.splice(lru_.begin(), lru_, it->second);
    return &*it->second;
  }
  // A live entry of `kind`, or null (an entry of another kind is not seen).
  Entry* find(std::string_view key, Kind kind, Clock::time_point now) {
    Entry* e = find(key, now);
    return e != nullptr && e->kind == kind ? e : nullptr;
  }
  // The entry of `key` as `kind`, created (or replaced, when of another
  // kind) as needed. Call account() after changing it.
  Entry& upsert(const std::string& key, Kind kind, Clock::time_point now) {
    if (Entry* e = find(key, now)) {
      if (e->kind == kind) return *e;
      erase(index_.find(key)->second);
    }
    lru_.emplace_front();
    Entry& e = lru_.front();
    e.key = key;
    e.kind = kind;
    index_.emplace(std::string_view(e.key), lru_.begin());
    return e;
  }
  // Re-measures `e` and evicts least recently used entries beyond the bound.
  void account(Entry& e, std::size_t cap) {
    bytes_ -= e.bytes;
    e.bytes = e.measure();
    bytes_ += e.bytes;
    while (bytes_ > cap && lru_.size() > 1) {
      ++evictions;
      erase(std::prev(lru_.end()));
    }
  }
  bool remove(std::string_view key, Clock::time_point now) {
    if (find(key, now) == nullptr) return false;
    erase(index_.find(key)->second);
    return true;
  }
  void sweep(Clock::time_point now) {
    for (auto it = lru_.begin(); it != lru_.end();) {
      auto next = std::next(it);
      if (it->expires <= now) {
        ++expirations;
        erase(it);
      }
      it = next;
    }
  }
  std::size_t size() const { return lru_.size(); }
  std::size_t bytes() const { return bytes_; }

  std::int64_t evictions = 0;
  std::int64_t expirations = 0;

 private:
  void erase(std::list<Entry>::iterator it) {
    bytes_ -= it->bytes;
    index_.erase(std::string_view(it->key));
    lru_.erase(it);
  }
  std::list<Entry> lru_;  // most recently used first
  std::unordered_map<std::string_view, std::list<Entry>::iterator> index_;
  std::size_t bytes_ = 0;
};

struct LeaseState {
  std::int64_t next_ticket = 0;
  std::map<std::int64_t, Clock::time_point> waiters;  // ticket -> alive until
  bool held = false;
  std::int64_t fence = 0;
  Timestamp expires{};
};

class MemoryBackend final : public CacheBackend {
 public:
  explicit MemoryBackend(const CacheOptions& o)
      : cap_(std::max<std::size_t>(o.max_bytes / kShards, 1)) {}

  const char* name() const noexcept override { return "memory"; }
  void ping() override {}

  std::optional<std::string> get(const std::string& key) override {
    Shard& s = shard(key);
    std::lock_guard lock(s.mu);
    Entry* e = s.find(key, Kind::value, Clock::now());
    if (e == nullptr) return std::nullopt;
    return e->value;
  }
  void set(const std::string& key, std::string_view value, Ms ttl) override {
    Shard& s = shard(key);
    auto now = Clock::now();
    std::lock_guard lock(s.mu);
    Entry& e = s.upsert(key, Kind::value, now);
    e.value.assign(value);
    e.expires = deadline(now, ttl);
    s.account(e, cap_);
  }
  bool remove(const std::string& key) override {
    Shard& s = shard(key);
    std::lock_guard lock(s.mu);
    return s.remove(key, Clock::now());
  }
  std::optional<Ms> ttl(const std::string& key) override {
    Shard& s = shard(key);
    auto now = Clock::now();
    std::lock_guard lock(s.mu);
    Entry* e = s.find(key, now);
    if (e == nullptr || e->expires == Clock::time_point::max()) return std::nullopt;
    return std::chrono::ceil<Ms>(e->expires - now);
  }
  std::vector<std::optional<std::string>> get_many(const std::vector<std::string>& keys) override {
    std::vector<std::optional<std::string>> out;
    out.reserve(keys.size());
    for (const auto& k : keys) out.push_back(get(k));
    return out;
  }
  void set_many(const Fields& items, Ms ttl) override {
    for (const auto& [k, v] : items) set(k, v, ttl);
  }

  std::optional<std::string> hget(const std::string& key, const std::string& field,
                                  Ms ttl) override {
    Shard& s = shard(key);
    auto now = Clock::now();
    std::lock_guard lock(s.mu);
    Entry* e = s.find(key, Kind::hash, now);
    if (e == nullptr) return std::nullopt;
    slide(*e, now, ttl);
    auto it = e->hash->find(field);
    if (it == e->hash->end()) return std::nullopt;
    return it->second;
  }
  Fields hgetall(const std::string& key, Ms ttl) override {
    Shard& s = shard(key);
    auto now = Clock::now();
    std::lock_guard lock(s.mu);
    Entry* e = s.find(key, Kind::hash, now);
    if (e == nullptr) return {};
    slide(*e, now, ttl);
    return Fields(e->hash->begin(), e->hash->end());
  }
  void hset(const std::string& key, const Fields& fields, Ms ttl) override {
    Shard& s = shard(key);
    auto now = Clock::now();
    std::lock_guard lock(s.mu);
    Entry& e = s.upsert(key, Kind::hash, now);
    if (!e.hash) e.hash = std::make_unique<std::unordered_map<std::string, std::string>>();
    for (const auto& [f, v] : fields) (*e.hash)[f] = v;
    slide(e, now, ttl);
    s.account(e, cap_);
  }
  bool hdel(const std::string& key, const std::string& field, Ms ttl) override {
    Shard& s = shard(key);
    auto now = Clock::now();
    std::lock_guard lock(s.mu);
    Entry* e = s.find(key, Kind::hash, now);
    if (e == nullptr) return false;
    bool removed = e->hash->erase(field) > 0;
    if (e->hash->empty()) {
      s.remove(key, now);
    } else {
      slide(*e, now, ttl);
      s.account(*e, cap_);
    }
    return removed;
  }

  void zadd(const std::string& key, const std::string& member, std::int64_t score,
            std::int64_t drop_below) override {
    Shard& s = shard(key);
    auto now = Clock::now();
    std::lock_guard lock(s.mu);
    Entry& e = s.upsert(key, Kind::zset, now);
    if (!e.zset) e.zset = std::make_unique<ZSet>();
    ZSet& z = *e.zset;
    auto [it, fresh] = z.score.try_emplace(member, score);
    if (!fresh) {
      z.by_score.erase({it->second, member});
      it->second = score;
    }
    z.by_score.emplace(score, member);
    while (!z.by_score.empty() && z.by_score.begin()->first < drop_below) {
      z.score.erase(z.by_score.begin()->second);
      z.by_score.erase(z.by_score.begin());
    }
    // The set lives as long as its newest member matters.
    e.expires = deadline(now, Ms{score - drop_below});
    s.account(e, cap_);
  }
  std::int64_t zcount(const std::string& key, std::int64_t min_score) override {
    Shard& s = shard(key);
    std::lock_guard lock(s.mu);
    Entry* e = s.find(key, Kind::zset, Clock::now());
    if (e == nullptr) return 0;
    auto& by = e->zset->by_score;
    return static_cast<std::int64_t>(
        std::distance(by.lower_bound({min_score, std::string()}), by.end()));
  }
  std::vector<std::string> zrange_desc(const std::string& key, std::int64_t min_score,
                                       std::size_t limit) override {
    Shard& s = shard(key);
    std::lock_guard lock(s.mu);
    std::vector<std::string> out;
    Entry* e = s.find(key, Kind::zset, Clock::now());
    if (e == nullptr) return out;
    auto& by = e->zset->by_score;
    for (auto it = by.rbegin(); it != by.rend() && it->first >= min_score && out.size() < limit;
         ++it) {
      out.push_back(it->second);
    }
    return out;
  }
  std::optional<std::int64_t> zscore(const std::string& key, const std::string& member) override {
    Shard& s = shard(key);
    std::lock_guard lock(s.mu);
    Entry* e = s.find(key, Kind::zset, Clock::now());
    if (e == nullptr) return std::nullopt;
    auto it = e->zset->score.find(member);
    if (it == e->zset->score.end()) return std::nullopt;
    return it->second;
  }

  Versioned vget(const std::string& key) override {
    Shard& s = shard(key);
    std::lock_guard lock(s.mu);
    Entry* e = s.find(key, Kind::versioned, Clock::now());
    if (e == nullptr) return {};
    Versioned v{e->version, std::nullopt};
    if (e->has_value) v.value = e->value;
    return v;
  }
  bool vput(const std::string& key, std::int64_t version, std::string_view value, Ms ttl) override {
    Shard& s = shard(key);
    auto now = Clock::now();
    std::lock_guard lock(s.mu);
    Entry* found = s.find(key, Kind::versioned, now);
    if ((found == nullptr ? 0 : found->version) != version) return false;
    Entry& e = s.upsert(key, Kind::versioned, now);
    e.version = version;
    e.value.assign(value);
    e.has_value = true;
    e.expires = deadline(now, ttl);
    s.account(e, cap_);
    return true;
  }
  void vbump(const std::string& key, Ms ttl) override {
    Shard& s = shard(key);
    auto now = Clock::now();
    std::lock_guard lock(s.mu);
    Entry& e = s.upsert(key, Kind::versioned, now);
    // From the clock too: an evicted key must not start again at a version
    // a slow reader still holds.
    e.version = std::max(e.version + 1, wall_us());
    e.value.clear();
    e.value.shrink_to_fit();
    e.has_value = false;
    e.expires = deadline(now, ttl);
    s.account(e, cap_);
  }

  RateDecision rate(const std::string& key, const RateLimit& limit, std::int64_t cost) override {
    Shard& s = shard(key);
    auto now = Clock::now();
    std::lock_guard lock(s.mu);
    Entry& e = s.upsert(key, Kind::rate, now);
    RateDecision d = apply_rate(e.rate, limit, cost, wall_ms());
    e.expires = deadline(now, rate_state_ttl(limit));
    s.account(e, cap_);
    return d;
  }

  std::int64_t lease_ticket(const std::string& name, Ms alive_for) override {
    std::lock_guard lock(lease_mu_);
    LeaseState& l = leases_[name];
    std::int64_t t = ++l.next_ticket;
    l.waiters[t] = Clock::now() + alive_for;
    return t;
  }
  std::optional<TurnLease> lease_try(const std::string& name, std::int64_t ticket, Ms ttl,
                                     Ms alive_for) override {
    std::lock_guard lock(lease_mu_);
    LeaseState& l = leases_[name];
    auto steady = Clock::now();
    Timestamp t = now();
    l.waiters[ticket] = steady + alive_for;
    for (auto it = l.waiters.begin(); it != l.waiters.end();) {
      it = it->second <= steady ? l.waiters.erase(it) : std::next(it);
    }
    if (l.held && l.expires > t) return std::nullopt;
    if (l.waiters.begin()->first != ticket) {
      if (l.held) lease_cv_.notify_all();  // an expired holder: let the first waiter in
      return std::nullopt;
    }
    l.waiters.erase(l.waiters.begin());
    l.held = true;
    l.fence = std::max(l.fence + 1, wall_us());
    l.expires = t + std::chrono::duration_cast<std::chrono::microseconds>(ttl);
    return TurnLease{name, l.fence, ticket, l.expires};
  }
  void lease_leave(const std::string& name, std::int64_t ticket) override {
    std::lock_guard lock(lease_mu_);
    auto it = leases_.find(name);
    if (it == leases_.end()) return;
    it->second.waiters.erase(ticket);
    forget_if_idle(it);
    lease_cv_.notify_all();
  }
  std::optional<Timestamp> lease_renew(const std::string& name, std::int64_t fence,
                                       Ms ttl) override {
    std::lock_guard lock(lease_mu_);
    auto it = leases_.find(name);
    Timestamp t = now();
    if (it == leases_.end()) return std::nullopt;
    LeaseState& l = it->second;
    if (!l.held || l.fence != fence || l.expires <= t) return std::nullopt;
    l.expires = t + std::chrono::duration_cast<std::chrono::microseconds>(ttl);
    return l.expires;
  }
  void lease_release(const std::string& name, std::int64_t fence) override {
    std::lock_guard lock(lease_mu_);
    auto it = leases_.find(name);
    if (it == leases_.end() || !it->second.held || it->second.fence != fence) return;
    it->second.held = false;
    forget_if_idle(it);
    lease_cv_.notify_all();
  }
  void lease_wait(const std::string&, Ms pause) override {
    std::unique_lock lock(lease_mu_);
    lease_cv_.wait_for(lock, pause);
  }

  void sweep() override {
    auto now = Clock::now();
    for (auto& s : shards_) {
      std::lock_guard lock(s.mu);
      s.sweep(now);
    }
    std::lock_guard lock(lease_mu_);
    Timestamp t = convstore::now();
    for (auto it = leases_.begin(); it != leases_.end();) {
      auto next = std::next(it);
      LeaseState& l = it->second;
      for (auto w = l.waiters.begin(); w != l.waiters.end();) {
        w = w->second <= now ? l.waiters.erase(w) : std::next(w);
      }
      if (l.held && l.expires <= t) l.held = false;
      forget_if_idle(it);
      it = next;
    }
  }
  void add_stats(CacheStats& st) const override {
    for (auto& s : shards_) {
      std::lock_guard lock(s.mu);
      st.entries += static_cast<std::int64_t>(s.size());
      st.bytes += static_cast<std::int64_t>(s.bytes());
      st.evictions += s.evictions;
      st.expirations += s.expirations;
    }
  }

 private:
  Shard& shard(const std::string& key) { return shards_[std::hash<std::string>{}(key) % kShards]; }
  static void slide(Entry& e, Clock::time_point now, Ms ttl) {
    if (ttl.count() > 0) e.expires = now + ttl;
  }
  // Drops a lease nobody holds or waits for (fences stay monotonic: they
  // start from the clock).
  void forget_if_idle(std::unordered_map<std::string, LeaseState>::iterator it) {
    if (!it->second.held && it->second.waiters.empty()) leases_.erase(it);
  }

  const std::size_t cap_;
  mutable Shard shards_[kShards];
  std::mutex lease_mu_;
  std::condition_variable lease_cv_;
  std::unordered_map<std::string, LeaseState> leases_;
};

}  // namespace

std::unique_ptr<CacheBackend> make_memory_backend(const CacheOptions& options) {
  return std::make_unique<MemoryBackend>(options);
}

}  // namespace convstore::detail
