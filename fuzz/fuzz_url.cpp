// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
//
// The URL parsers, on arbitrary bytes: Store::open's (sqlite:, postgresql://,
// postgres://, libpq key=value strings; nothing is opened) and the Redis
// session cache's (redis://, unix://). Each either refuses the text with
// Error(invalid_argument) (or not_supported for rediss://) or returns a
// target whose display form carries no password (for Redis: exactly
// host, port and database); anything else is a finding.

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

// True when `display` ("postgresql: " and libpq key='value' items) holds a
// password item; libpq's parser reads it, as a user would.
bool shows_pg_password(const std::string& display) {
  constexpr std::string_view kPrefix = "postgresql: ";
  if (display.compare(0, kPrefix.size(), kPrefix) != 0) return true;  // not the documented form
  const std::string items = display.substr(kPrefix.size());
  std::unique_ptr<PQconninfoOption, void (*)(PQconninfoOption*)> opts(
      PQconninfoParse(items.c_str(), nullptr), PQconninfoFree);
  if (!opts) fuzz::fail("libpq cannot read a display string", display);
  for (PQconninfoOption* o = opts.get(); o->keyword != nullptr; ++o) {
    if (o->val != nullptr && o->val[0] != '\0' && std::string_view(o->keyword) == "password") {
      return true;
    }
  }
  return false;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view url(reinterpret_cast<const char*>(data), size);

  try {
    detail::Target t = detail::parse_url(url);
    if (t.backend == detail::Backend::postgresql && shows_pg_password(t.display)) {
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
    // The display form is made of the host (or socket), port and database
    // only: never the user or the password.
    const std::string tail = ":" + std::to_string(t.port) + "/" + std::to_string(t.db);
    if (t.socket.empty() ? t.display != "redis://" + t.host + tail &&
                               t.display != "redis://[" + t.host + "]" + tail
                         : t.display != "unix://" + t.socket + "?db=" + std::to_string(t.db)) {
      fuzz::fail("a Redis display string holds more than the host, port and database", t.display);
    }
  } catch (const Error& e) {
    fuzz::expect_codes(e, {ErrorCode::invalid_argument, ErrorCode::not_supported});
  }
  return 0;
}
