// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#include "op_stats.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <string>

#include "convstore/error.hpp"

namespace convstore {

double latency_percentile_us(const OperationStats& s, double q) noexcept {
  std::uint64_t total = 0;
  for (auto n : s.latency) total += n;
  if (total == 0) return 0;
  q = std::clamp(q, 0.0, 1.0);
  // The rank of the call wanted (1-based), and where it falls.
  const auto rank = std::max<std::uint64_t>(
      1, static_cast<std::uint64_t>(std::ceil(q * static_cast<double>(total))));
  std::uint64_t before = 0;
  for (std::size_t i = 0; i < s.latency.size(); ++i) {
    const std::uint64_t n = s.latency[i];
    if (n == 0 || before + n < rank) {
      before += n;
      continue;
    }
    const double lower = i == 0 ? 0.0 : static_cast<double>(OperationStats::bucket_upper_us(i - 1));
    if (i + 1 == s.latency.size()) return lower;  // open-ended: at least this
    const double upper = static_cast<double>(OperationStats::bucket_upper_us(i));
    return lower + (upper - lower) * static_cast<double>(rank - before) / static_cast<double>(n);
  }
  return 0;
}

}  // namespace convstore

namespace convstore::detail {

thread_local const void* t_counting = nullptr;

OpStats::Slot& OpStats::slot(const char* action) noexcept {
  auto h = reinterpret_cast<std::uintptr_t>(action);
  h ^= h >> 17;
  h *= 0x9E3779B97F4A7C15ull;
  std::size_t i = static_cast<std::size_t>(h >> 40) & (kSlots - 1);
  for (std::size_t probe = 0; probe < kSlots; ++probe, i = (i + 1) & (kSlots - 1)) {
    Slot& s = slots_[i];
    const char* key = s.action.load(std::memory_order_acquire);
    if (key == action) return s;
    if (key == nullptr) {
      if (s.action.compare_exchange_strong(key, action, std::memory_order_acq_rel)) return s;
      if (key == action) return s;  // another thread claimed it for the same action
    }
  }
  return other_;
}

void OpStats::record(Slot& s, std::chrono::steady_clock::duration elapsed,
                     const std::exception_ptr& error) noexcept {
  const auto us = static_cast<std::uint64_t>(std::max<long long>(
      0, std::chrono::duration_cast<std::chrono::microseconds>(elapsed).count()));
  // Bucket: the bit width of the microseconds (0 -> 0, [2^(i-1), 2^i) -> i).
  std::size_t b = us == 0 ? 0 : static_cast<std::size_t>(64 - __builtin_clzll(us));
  if (b >= kBuckets) b = kBuckets - 1;
  s.buckets[b].fetch_add(1, std::memory_order_relaxed);
  s.total_us.fetch_add(us, std::memory_order_relaxed);
  if (!error) return;
  s.errors.fetch_add(1, std::memory_order_relaxed);
  try {
    std::rethrow_exception(error);
  } catch (const Error& e) {
    if (e.code() == ErrorCode::conflict || e.code() == ErrorCode::already_exists) {
      s.conflicts.fetch_add(1, std::memory_order_relaxed);
    }
  } catch (...) {
  }
}

std::vector<OperationStats> OpStats::read() const {
  std::map<std::string, OperationStats> by_name;
  auto add = [&](const Slot& s, const char* name) {
    OperationStats o;
    for (std::size_t i = 0; i < kBuckets; ++i) {
      o.latency[i] = s.buckets[i].load(std::memory_order_relaxed);
      o.calls += o.latency[i];
    }
    o.errors = s.errors.load(std::memory_order_relaxed);
    o.conflicts = s.conflicts.load(std::memory_order_relaxed);
    if (o.calls == 0 && o.errors == 0) return;
    o.total_time = std::chrono::microseconds(
        static_cast<long long>(s.total_us.load(std::memory_order_relaxed)));
    auto [it, fresh] = by_name.try_emplace(name);
    OperationStats& m = it->second;
    if (fresh) m.action = name;
    m.calls += o.calls;
    m.errors += o.errors;
    m.conflicts += o.conflicts;
    m.total_time += o.total_time;
    for (std::size_t i = 0; i < kBuckets; ++i) m.latency[i] += o.latency[i];
  };
  for (const Slot& s : slots_) {
    if (const char* name = s.action.load(std::memory_order_acquire)) add(s, name);
  }
  add(other_, "(other operations)");
  std::vector<OperationStats> out;
  out.reserve(by_name.size());
  for (auto& [name, o] : by_name) {
    o.p50_us = latency_percentile_us(o, 0.50);
    o.p99_us = latency_percentile_us(o, 0.99);
    out.push_back(std::move(o));
  }
  return out;
}

void OpStats::reset() noexcept {
  auto clear = [](Slot& s) {
    for (auto& b : s.buckets) b.store(0, std::memory_order_relaxed);
    s.errors.store(0, std::memory_order_relaxed);
    s.conflicts.store(0, std::memory_order_relaxed);
    s.total_us.store(0, std::memory_order_relaxed);
  };
  for (Slot& s : slots_) clear(s);
  clear(other_);
}

}  // namespace convstore::detail
