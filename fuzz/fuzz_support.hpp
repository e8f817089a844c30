// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#pragma once

// Shared by the libFuzzer targets of fuzz/ (see fuzz/README.md).

#include <sqlite3.h>
#include <unistd.h>
#include <convstore/convstore.hpp>

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>

namespace fuzz {

[[noreturn]] void fail(std::string_view what, std::string_view detail = {});

inline convstore::Options store_options() {
  convstore::Options o;
  o.pool_size = 1;
  o.durability = convstore::Durability::normal;
  o.agent_cache_ttl = std::chrono::milliseconds(0);  // every read goes to the database
  return o;
}

// A SQLite store in a temporary file, opened (and migrated) once per
// process, that reset() brings back to the state it had when opened: an
// image of the freshly migrated database is kept in memory and copied back
// with SQLite's backup API (a copy of the empty schema's pages). Opening a
// store migrates every schema version: 0.4 s for an in-memory store and
// 0.8 s for a file under the sanitizers on the development machine. Every
// input of an import target starts from the same empty store, so a finding
// replays from its input alone.
class ResettableStore {
 public:
  ResettableStore() {
    // In memory (tmpfs) where there is one: commits do not wait for a disk.
    std::error_code ec;
    const std::filesystem::path base = std::filesystem::is_directory("/dev/shm", ec)
                                           ? std::filesystem::path("/dev/shm")
                                           : std::filesystem::temp_directory_path();
    std::string dir_template = (base / "convstore-fuzz-XXXXXX").string();
    if (mkdtemp(dir_template.data()) == nullptr) fail("mkdtemp failed");
    dir_ = dir_template;
    const std::string path = dir_ + "/fuzz.db";
    store_ = std::make_unique<convstore::Store>(
        convstore::Store::open("sqlite:" + path, store_options()));
    if (sqlite3_open(path.c_str(), &db_) != SQLITE_OK) fail("sqlite3_open failed", path);
    sqlite3_busy_timeout(db_, 10000);
    sqlite3_exec(db_, "PRAGMA synchronous=OFF", nullptr, nullptr, nullptr);
    if (sqlite3_open(":memory:", &image_) != SQLITE_OK) fail("sqlite3_open(:memory:) failed");
    copy(db_, image_);
  }
  ResettableStore(const ResettableStore&) = delete;
  ResettableStore& operator=(const ResettableStore&) = delete;
  ~ResettableStore() {
    store_.reset();
    sqlite3_close(db_);
    sqlite3_close(image_);
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }

  convstore::Store& store() { return *store_; }

  // Back to the freshly migrated database. The store must be idle.
  void reset() {
    copy(image_, db_);
    sqlite3_exec(db_, "PRAGMA wal_checkpoint(TRUNCATE)", nullptr, nullptr, nullptr);
  }

 private:
  static void copy(sqlite3* from, sqlite3* to) {
    sqlite3_backup* b = sqlite3_backup_init(to, "main", from, "main");
    if (b == nullptr) fail("sqlite3_backup_init failed", sqlite3_errmsg(to));
    const int rc = sqlite3_backup_step(b, -1);
    sqlite3_backup_finish(b);
    if (rc != SQLITE_DONE) fail("sqlite3_backup_step failed", sqlite3_errstr(rc));
  }

  std::string dir_;
  std::unique_ptr<convstore::Store> store_;
  sqlite3* db_ = nullptr;
  sqlite3* image_ = nullptr;
};

// A finding that is not a sanitizer report: prints it and aborts, so that
// libFuzzer stops and keeps the input.
[[noreturn]] inline void fail(std::string_view what, std::string_view detail) {
  std::fprintf(stderr, "fuzz: %.*s%s%.*s\n", static_cast<int>(what.size()), what.data(),
               detail.empty() ? "" : ": ", static_cast<int>(detail.size()), detail.data());
  std::abort();
}

// The error codes a call may throw for bad input; anything else (an
// internal error, a std::exception that is no convstore::Error) is a
// finding.
inline void expect_codes(const convstore::Error& e,
                         std::initializer_list<convstore::ErrorCode> allowed) {
  for (auto code : allowed) {
    if (e.code() == code) return;
  }
  fail("unexpected error code", e.what());
}

}  // namespace fuzz
