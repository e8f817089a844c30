// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#include "db/dialect.hpp"

#include <fmt/format.h>

#include "convstore/config.hpp"
#include "db/postgresql_url.hpp"

namespace convstore::detail {

const Dialect& sqlite_dialect();
#if CONVSTORE_HAS_POSTGRESQL
const Dialect& postgresql_dialect();
#endif

const Dialect& dialect_for(Backend backend) {
  switch (backend) {
    case Backend::sqlite:
      return sqlite_dialect();
    case Backend::postgresql:
#if CONVSTORE_HAS_POSTGRESQL
      return postgresql_dialect();
#else
      break;
#endif
  }
  throw Error(ErrorCode::not_supported,
              "this convstore was built without PostgreSQL support "
              "(configure with -DCONVSTORE_WITH_POSTGRESQL=ON)");
}

void Dialect::backup(soci::session&, const std::string&, int,
                     const std::function<void(long long, long long)>&) const {
  throw Error(ErrorCode::not_supported,
              fmt::format("backup is not supported on {}: back up a PostgreSQL database with "
                          "pg_dump -Fc and restore it with pg_restore (see the README)",
                          name()));
}

namespace {

bool starts_with(std::string_view s, std::string_view p) {
  return s.size() >= p.size() && s.substr(0, p.size()) == p;
}

}  // namespace

Target parse_url(std::string_view url) {
  Target t;
  if (url == "sqlite::memory:" || url == "sqlite://:memory:") {
    t.backend = Backend::sqlite;
    t.connect = ":memory:";
    t.display = "sqlite::memory:";
    t.memory = true;
    return t;
  }
  if (starts_with(url, "sqlite:")) {
    std::string_view path = url.substr(7);
    if (starts_with(path, "//")) path = path.substr(2);
    if (path.empty()) {
      throw Error(ErrorCode::invalid_argument, "sqlite URL without a file path: 'sqlite:'");
    }
    t.backend = Backend::sqlite;
    t.connect = std::string(path);
    t.display = fmt::format("sqlite:{}", path);
    return t;
  }
  bool pg_url = starts_with(url, "postgresql://") || starts_with(url, "postgres://");
  bool pg_keywords = !pg_url && url.find("://") == std::string_view::npos &&
                     url.find('=') != std::string_view::npos;
  if (pg_url || pg_keywords) {
    t.backend = Backend::postgresql;
    dialect_for(Backend::postgresql);  // throws not_supported when not built in
    auto parsed = parse_postgresql_conninfo(url);
    t.connect = std::move(parsed.connect);
    t.display = std::move(parsed.display);
    return t;
  }
  auto colon = url.find(':');
  throw Error(
      ErrorCode::invalid_argument,
      fmt::format("unsupported database URL scheme '{}' (use sqlite:PATH, sqlite::memory: "
                  "or postgresql://...)",
                  colon == std::string_view::npos ? std::string_view("") : url.substr(0, colon)));
}

}  // namespace convstore::detail
