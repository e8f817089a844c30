// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_map>
#include <vector>

#include "convstore/options.hpp"
#include "db/dialect.hpp"
#include "db/soci.hpp"
#include "db/writer_gate.hpp"

namespace convstore::detail {

// One SQL text, shared by both backends unless `postgresql` is given. The
// address of a Sql object is its identity in the per-connection statement
// cache, so Sql objects are static constants.
struct Sql {
  const char* sqlite;
  const char* postgresql = nullptr;
  const char* text(Backend b) const noexcept {
    return b == Backend::postgresql && postgresql != nullptr ? postgresql : sqlite;
  }
};

// The holders a prepared statement is bound to (see Stmt): SOCI keeps
// pointers into them, so they live as long as the statement.
struct Binding {
  // Copies a result holder into its target after each row: `text` for
  // columns read as text, `number` for integer columns.
  using Apply = void (*)(void* target, std::string* text, long long number, bool null);
  struct Slot {
    char kind;  // 't' text parameter, 'i' integer parameter, 'T' text result, 'I' integer result
    std::string* text;
    long long* number;
    soci::indicator* ind;
  };
  struct Fix {
    Apply apply;
    void* target;
    Slot* slot;
  };
  std::deque<std::string> texts;
  std::deque<long long> numbers;
  std::deque<soci::indicator> inds;
  std::deque<Slot> slots;  // in the order of the in() / out() calls
  std::vector<Fix> fixes;  // results, in order
  bool bound = false;      // define_and_bind() has run
};

// A statement prepared on a connection, with its binding.
struct Prepared {
  std::unique_ptr<soci::statement> statement;
  Binding binding;
  std::string text;  // for the statement hook and error messages
};

// One pooled database session with the statements prepared on it. Prepared
// statements are kept for the life of the connection and re-bound per call,
// so no statement is parsed twice.
class Connection {
 public:
  Connection(const Dialect& dialect, std::unique_ptr<soci::session> session, const Options& opts);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  soci::session& session() noexcept { return *session_; }
  const Dialect& dialect() const noexcept { return dialect_; }
  Backend backend() const noexcept { return dialect_.backend(); }
  const Options& options() const noexcept { return options_; }

  // The statement for `sql`, prepared on first use.
  Prepared& prepared(const Sql& sql);
  // The same for SQL text built at run time (a listing's filter
  // combination); the number of distinct texts must be bounded.
  Prepared& prepared(const std::string& text);
  // Runs a statement without parameters or results (BEGIN, COMMIT, ...).
  void execute(const Sql& sql);
  // Runs a one-off statement (DDL), not kept prepared.
  void execute_once(const std::string& text);

  // Runs `fn` and reports `text` with its duration to the statement hook.
  template <class F>
  auto timed(std::string_view text, F&& fn) -> decltype(fn()) {
    if (!options_.on_statement) return fn();
    auto t0 = std::chrono::steady_clock::now();
    auto report = [&](bool ok) {
      options_.on_statement({text,
                             std::chrono::duration_cast<std::chrono::microseconds>(
                                 std::chrono::steady_clock::now() - t0),
                             ok});
    };
    try {
      if constexpr (std::is_void_v<decltype(fn())>) {
        fn();
        report(true);
      } else {
        auto r = fn();
        report(true);
        return r;
      }
    } catch (...) {
      report(false);
      throw;
    }
  }

  // Transaction nesting on this connection: 0 outside a transaction.
  int depth = 0;
  // Set when the session was found unusable; the pool drops it.
  bool broken = false;
  // Run after the open transaction commits (cache invalidation); dropped
  // when it rolls back.
  std::vector<std::function<void()>> after_commit;
  // PostgreSQL: a statement failed inside the open transaction, which the
  // server has therefore aborted; why, for the error that ends it.
  std::string doomed;
  // SQLite: the writer gate this connection's open write transaction
  // entered (left when it commits or rolls back).
  WriterGate* gate = nullptr;

 private:
  const Dialect& dialect_;
  std::unique_ptr<soci::session> session_;
  const Options& options_;
  std::unordered_map<const Sql*, Prepared> statements_;
  std::unordered_map<std::string, Prepared> text_statements_;
};

// A fixed-size pool of connections, opened lazily and replaced when broken.
class Pool {
 public:
  Pool(const Dialect& dialect, Target target, Options options);
  ~Pool();

  class Lease {
   public:
    Lease(Pool* pool, std::unique_ptr<Connection> c) : pool_(pool), conn_(std::move(c)) {}
    Lease(Lease&& o) noexcept = default;
    Lease& operator=(Lease&&) = delete;
    ~Lease() {
      if (conn_) pool_->release(std::move(conn_));
    }
    Connection& operator*() const noexcept { return *conn_; }
    Connection* operator->() const noexcept { return conn_.get(); }

   private:
    Pool* pool_;
    std::unique_ptr<Connection> conn_;
  };

  // A connection for the caller's exclusive use. Throws Error(unavailable)
  // when none frees up within options.acquire_timeout or a new one cannot
  // be opened.
  Lease acquire();
  // Opens a connection outside the pool (used by open() and health()).
  std::unique_ptr<Connection> open_connection();

  const Dialect& dialect() const noexcept { return dialect_; }
  const Target& target() const noexcept { return target_; }
  const Options& options() const noexcept { return options_; }

 private:
  void release(std::unique_ptr<Connection> c);

  const Dialect& dialect_;
  Target target_;
  Options options_;
  std::size_t capacity_;
  std::mutex mutex_;
  std::condition_variable freed_;
  std::vector<std::unique_ptr<Connection>> idle_;
  std::size_t open_ = 0;  // connections leased out or idle
};

}  // namespace convstore::detail
