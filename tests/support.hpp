// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#pragma once

// Shared test support: every store test runs on each backend through
// TEST_CASE_TEMPLATE(..., B, CONVSTORE_BACKENDS), on a database of its own.

#include <doctest/doctest.h>

#include <convstore/convstore.hpp>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace testing {

// A temporary directory for the files a test writes, removed at the end.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

// The whole content of a file ("" when it cannot be read).
std::string read_file(const std::string& path);

bool contains(const std::string& s, const std::string& part);
// True when `parts` appear in `text` in this order, without overlapping.
bool in_order(const std::string& text, const std::vector<std::string>& parts);

// A program the tests run: $`env_var` when set, else `built` (its path in
// the build tree, compiled in).
std::string program_path(const char* env_var, const std::string& built);

// Starts argv[0] with `argv` and the environment `envp` (NAME=value),
// stdin read from `in`, stdout and stderr written to the files `out` and
// `err`; returns its pid. Everything the child needs is built before fork,
// so it is safe while other threads of the test run.
int spawn(const std::vector<std::string>& argv, const std::vector<std::string>& envp,
          const std::string& in, const std::string& out, const std::string& err);
// This process's environment, NAME=value each.
std::vector<std::string> environment();

struct Sqlite {
  static constexpr const char* name = "sqlite";
};
struct Postgresql {
  static constexpr const char* name = "postgresql";
};

// A fresh, empty database for one test: a temporary SQLite file, or a new
// PostgreSQL schema in the database named by CONVSTORE_TEST_PG_URL. Dropped
// at the end. When the backend is not configured the database is not
// `ready()`: the test is skipped with a message, except under CI=true where
// that is a failure.
class TestDb {
 public:
  explicit TestDb(const char* backend);
  ~TestDb();
  TestDb(const TestDb&) = delete;
  TestDb& operator=(const TestDb&) = delete;

  bool ready() const { return !url_.empty(); }
  const std::string& url() const { return url_; }
  const std::string& backend() const { return backend_; }
  convstore::Store open(convstore::Options options = {}) const;

 private:
  std::string backend_;
  std::string url_;
  std::string dir_;     // SQLite: temporary directory
  std::string schema_;  // PostgreSQL: schema name
};

// Runs SQL on the test database with the backend's own client library
// (sqlite3 C API / libpq), as any SQL tool would; returns the first column
// of the first row, or "" when there is none. Fails the test on an error.
std::string raw_exec(const TestDb& db, const std::string& sql);

// True when `text` appears anywhere in what the database stores: in the
// database files for SQLite (the WAL included), in any column of `table` for
// PostgreSQL.
bool stored_anywhere(const TestDb& db, const std::string& table, const std::string& text);

// Deletes a user the way an SQL tool would (convstore itself never deletes
// users): the rows that reference it go by ON DELETE CASCADE.
void delete_user_by_sql(const TestDb& db, convstore::UserId id);

// Runs a program from the build directory (tests/helpers) with arguments and
// returns its exit status.
int run_helper(const std::string& args);
// Starts it in the background; returns its pid.
int spawn_helper(const std::string& args);
int wait_helper(int pid);

// The contents of messages, joined with commas ("m1,m2").
std::string contents(const std::vector<convstore::Message>& messages);
// A user message with this text.
convstore::NewMessage text(std::string content);

// SessionCache backends for TEST_CASE_TEMPLATE(..., B, CONVSTORE_CACHES).
struct MemoryCache {
  static constexpr const char* name = "memory";
};
struct SqliteCache {
  static constexpr const char* name = "sqlite";
};
struct PostgresqlCache {
  static constexpr const char* name = "postgresql";
};
struct RedisCache {
  static constexpr const char* name = "redis";
};

// A SessionCache of one backend for one test, with a Store beside it (the
// cache's own store for the database backends, a SQLite one otherwise) and
// a key prefix of its own. Not ready() when the backend is not configured:
// skipped with a message, except under CI=true where that is a failure.
class CacheFixture {
 public:
  explicit CacheFixture(const char* kind, convstore::CacheOptions options = {});
  bool ready() const { return cache_.has_value(); }
  const std::string& kind() const { return kind_; }
  convstore::Store& store() { return *store_; }
  convstore::SessionCache& cache() { return *cache_; }
  // Another SessionCache on the same backend and key prefix (what a second
  // process would open).
  convstore::SessionCache open(convstore::CacheOptions options = {});
  // A second handle sharing this cache's data: open() once, or cache()
  // itself for the in-memory backend (whose data is its own).
  convstore::SessionCache& peer();
  const TestDb& db() const { return *db_; }
  // For helper processes: "memory", "database" or "redis", the URL of the
  // cache (Redis) and the prefix.
  std::string helper_args() const;

 private:
  std::string kind_;
  std::unique_ptr<TestDb> db_;
  std::optional<convstore::Store> store_;
  std::optional<convstore::SessionCache> cache_;
  std::optional<convstore::SessionCache> peer_;
  std::string prefix_;
  std::string redis_url_;
};

}  // namespace testing

#define CONVSTORE_CACHES \
  testing::MemoryCache, testing::SqliteCache, testing::PostgresqlCache, testing::RedisCache

// A fresh cache of backend B (with options) or skip the test.
#define CONVSTORE_TEST_CACHE(f, ...)               \
  testing::CacheFixture f(B::name, ##__VA_ARGS__); \
  if (!f.ready()) return

#define CONVSTORE_BACKENDS testing::Sqlite, testing::Postgresql

// Opens a fresh database of backend B or skips the test.
#define CONVSTORE_TEST_DB(db)  \
  testing::TestDb db(B::name); \
  if (!db.ready()) return

// Checks that `expr` throws convstore::Error with `code`.
#define CHECK_ERROR_CODE(expr, expected_code)                                                     \
  do {                                                                                            \
    bool thrown_ = false;                                                                         \
    try {                                                                                         \
      (void)(expr);                                                                               \
    } catch (const convstore::Error& e_) {                                                        \
      thrown_ = true;                                                                             \
      CHECK_MESSAGE(e_.code() == (expected_code),                                                 \
                    "got " << convstore::to_string(e_.code()) << ": " << std::string(e_.what())); \
    }                                                                                             \
    CHECK_MESSAGE(thrown_, #expr " did not throw");                                               \
  } while (false)
