// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#pragma once

// The arithmetic of the two rate algorithms, for the backends that keep the
// state themselves (in-memory, database). The Redis backend runs the same
// arithmetic in a Lua script on the server.

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>

#include "convstore/session_cache.hpp"

namespace convstore::detail {

// sliding_window: `at` is the start of the current fixed window, `a` its
// count, `b` the previous window's count. token_bucket: `at` is the time of
// the last refill, `a` the tokens left. Fresh state is all zero.
struct RateState {
  std::int64_t at = 0;
  double a = 0;
  double b = 0;
  bool fresh = true;
};

// How long a key's state matters: after this much idle time it equals fresh
// state, so it may expire.
inline std::chrono::milliseconds rate_state_ttl(const RateLimit& l) {
  return l.algorithm == RateAlgorithm::sliding_window ? 2 * l.window : l.window;
}

namespace rate_detail {
inline std::chrono::milliseconds ms_ceil(double v) {
  return std::chrono::milliseconds(static_cast<std::int64_t>(std::ceil(std::max(v, 0.0))));
}
}  // namespace rate_detail

// Counts `cost` at time `now_ms` (ms since the epoch) if the limit allows.
inline RateDecision apply_rate(RateState& s, const RateLimit& l, std::int64_t cost,
                               std::int64_t now_ms) {
  using rate_detail::ms_ceil;
  const double limit = static_cast<double>(l.limit);
  const double w = static_cast<double>(l.window.count());
  const double c = static_cast<double>(cost);
  RateDecision d;
  if (l.algorithm == RateAlgorithm::sliding_window) {
    std::int64_t ws = now_ms - now_ms % l.window.count();
    // A process whose clock is a little behind the one that wrote the state
    // counts in the newer window instead of resetting it.
    if (!s.fresh && s.at > ws) {
      ws = s.at;
      now_ms = std::max(now_ms, ws);
    }
    if (s.fresh || s.at != ws) {
      s.b = (!s.fresh && s.at == ws - l.window.count()) ? s.a : 0;
      s.a = 0;
      s.at = ws;
      s.fresh = false;
    }
    const double elapsed = static_cast<double>(now_ms - ws);
    const double weight = (w - elapsed) / w;
    const double used = s.b * weight + s.a;
    d.allowed = used + c <= limit;
    if (d.allowed) {
      s.a += c;
    } else if (s.a + c > limit) {
      // Wait for the next window, where this window's count weighs less.
      d.retry_after = ms_ceil((w - elapsed) + w * (1 - (limit - c) / s.a));
    } else {
      d.retry_after = ms_ceil(w * (1 - (limit - s.a - c) / s.b) - elapsed);
    }
    const double now_used = s.b * weight + s.a;
    d.remaining = static_cast<std::int64_t>(std::floor(std::max(0.0, limit - now_used)));
    if (s.a > 0) {
      d.reset_after = ms_ceil(2 * w - elapsed);
    } else if (s.b > 0) {
      d.reset_after = ms_ceil(w - elapsed);
    }
  } else {
    if (s.fresh) {
      s.a = limit;
      s.at = now_ms;
      s.fresh = false;
    }
    const double refill = static_cast<double>(std::max<std::int64_t>(0, now_ms - s.at)) * limit / w;
    s.a = std::min(limit, s.a + refill);
    s.at = std::max(s.at, now_ms);
    d.allowed = s.a >= c;
    if (d.allowed) {
      s.a -= c;
    } else {
      d.retry_after = ms_ceil((c - s.a) * w / limit);
    }
    d.remaining = static_cast<std::int64_t>(std::floor(s.a));
    d.reset_after = ms_ceil((limit - s.a) * w / limit);
  }
  return d;
}

}  // namespace convstore::detail
