// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#pragma once

// Shared test support: every store test runs on each backend through
// TEST_CASE_TEMPLATE(..., B, CONVSTORE_BACKENDS), on a database of its own.

#include <doctest/doctest.h>

#include <convstore/convstore.hpp>
#include <string>

namespace testing {

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

// Runs a program from the build directory (tests/helpers) with arguments and
// returns its exit status.
int run_helper(const std::string& args);
// Starts it in the background; returns its pid.
int spawn_helper(const std::string& args);
int wait_helper(int pid);

}  // namespace testing

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
