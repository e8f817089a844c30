// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
//
// The URL parsers, on arbitrary bytes: Store::open's (sqlite:, postgresql://,
// postgres://, libpq key=value strings; nothing is opened) and the Redis
// session cache's (redis://, unix://). Each either refuses the text with
// Error(invalid_argument) (or not_supported for rediss://) or returns a
// target whose display form carries no password; anything else is a finding.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include <libpq-fe.h>

#include <memory>

#include "backends/redis/redis_cache.hpp"
#include "db/dialect.hpp"
#include "fuzz_support.hpp"

using namespace convstore;

namespace {

// True when `display` shows the password libpq reads from `url` (one of at
// least 4 bytes that no other value holds: a host may well contain it).
bool shows_pg_password(std::string_view url, const std::string& display) {
  const std::string text(url);
  std::unique_ptr<PQconninfoOption, void (*)(PQconninfoOption*)> opts(
      PQconninfoParse(text.c_str(), nullptr), PQconninfoFree);
  if (!opts) return false;
  std::string password;
  for (PQconninfoOption* o = opts.get(); o->keyword != nullptr; ++o) {
    if (o->val != nullptr && std::string_view(o->keyword) == "password") password = o->val;
  }
  if (password.size() < 4 || display.find(password) == std::string::npos) return false;
  for (PQconninfoOption* o = opts.get(); o->keyword != nullptr; ++o) {
    if (o->val != nullptr && std::string_view(o->keyword) != "password" &&
        std::string_view(o->val).find(password) != std::string_view::npos) {
      return false;
    }
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view url(reinterpret_cast<const char*>(data), size);

  try {
    detail::Target t = detail::parse_url(url);
    if (t.backend == detail::Backend::postgresql && shows_pg_password(url, t.display)) {
      fuzz::fail("a PostgreSQL display string shows the password", t.display);
    }
    if (t.backend == detail::Backend::sqlite && t.connect.empty()) {
      fuzz::fail("a SQLite URL without a path was accepted");
    }
  } catch (const Error& e) {
    fuzz::expect_codes(e, {ErrorCode::invalid_argument});
  }

  try {
    detail::RedisTarget t = detail::parse_redis_url(url);
    if (t.host.empty() == t.socket.empty()) fuzz::fail("a Redis target needs a host or a socket");
    if (t.socket.empty() && (t.port < 1 || t.port > 65535)) fuzz::fail("a Redis port out of range");
    if (t.db < 0) fuzz::fail("a negative Redis database");
    if (t.password.size() >= 4 && t.display.find(t.password) != std::string::npos &&
        t.host.find(t.password) == std::string::npos &&
        t.socket.find(t.password) == std::string::npos) {
      fuzz::fail("a Redis display string shows the password", t.display);
    }
  } catch (const Error& e) {
    fuzz::expect_codes(e, {ErrorCode::invalid_argument, ErrorCode::not_supported});
  }
  return 0;
}
