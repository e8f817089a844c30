// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#pragma once

#include <chrono>
#include <exception>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "convstore/error.hpp"
#include "convstore/options.hpp"
#include "db/soci.hpp"

namespace convstore::detail {

enum class Backend { sqlite, postgresql };

// A parsed Store::open URL.
struct Target {
  Backend backend = Backend::sqlite;
  std::string connect;  // what the SOCI backend receives (never printed)
  std::string display;  // what error messages show: no password
  bool memory = false;  // SQLite in-memory database
};

// What differs between SQLite and PostgreSQL: connecting, session set-up,
// error classification, transaction verbs, and the few SQL spellings that
// cannot be shared. The stores are written once against this.
class Dialect {
 public:
  virtual ~Dialect() = default;

  virtual Backend backend() const noexcept = 0;
  virtual std::string_view name() const noexcept = 0;

  // Opens one SOCI session, set up for convstore (pragmas, time zone, ...).
  // Throws Error(unavailable) when the database cannot be reached.
  virtual std::unique_ptr<soci::session> connect(const Target& target,
                                                 const Options& options) const = 0;
  // True when the session can no longer be used (server gone).
  virtual bool broken(soci::session& s) const noexcept = 0;
  // True when an idle session was closed by the server while it sat in the
  // pool (a restart): checked before anything is sent on it, so the pool
  // replaces it instead of failing the call.
  virtual bool stale(soci::session&) const noexcept { return false; }

  // Classifies a database error; the sqlstate (or SQLite extended code) goes
  // into the returned Error, `what` is prefixed to the message.
  virtual Error translate(const soci::soci_error& e, soci::session* s,
                          std::string_view what) const = 0;

  // True when a failed statement aborts the whole open transaction
  // (PostgreSQL), so that only a savepoint can contain it.
  virtual bool errors_abort_transaction() const noexcept = 0;
  // SQL for an advisory lock that serializes migrations across processes
  // (empty when a write transaction already does that).
  virtual std::string lock_migrations() const = 0;

  // The migrations of the schema, in order; migration i (0-based) takes the
  // database from version i to i + 1. Each element is one statement.
  virtual const std::vector<std::vector<std::string>>& migrations() const = 0;

  // Copies the database of `s` into the file `path` with SQLite's online
  // backup API, `pages_per_step` pages at a time, calling
  // progress(pages done, page count) after each step. The caller holds a
  // read transaction on `s`, so every step copies the same snapshot while
  // other connections write. Throws Error(not_supported) on PostgreSQL.
  virtual void backup(soci::session& s, const std::string& path, int pages_per_step,
                      const std::function<void(long long, long long)>& progress) const;
};

// The dialect for `target.backend`. Throws Error(not_supported) naming the
// CMake option when the backend is not built in.
const Dialect& dialect_for(Backend backend);

// Parses a Store::open URL. Throws Error(invalid_argument).
Target parse_url(std::string_view url);

}  // namespace convstore::detail
