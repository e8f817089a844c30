// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#pragma once

#include <fmt/format.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <mutex>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "agent_cache.hpp"
#include "convstore/agent_state_store.hpp"
#include "convstore/analytics.hpp"
#include "convstore/calendar_store.hpp"
#include "convstore/conversation_store.hpp"
#include "convstore/credential_store.hpp"
#include "convstore/dialog_store.hpp"
#include "convstore/operation_templates.hpp"
#include "convstore/retention.hpp"
#include "convstore/store.hpp"
#include "convstore/task_queue.hpp"
#include "convstore/web_session_store.hpp"
#include "db/connection.hpp"
#include "db/dialect.hpp"
#include "db/statement.hpp"
#include "op_stats.hpp"

namespace convstore {

// What a call is doing, for error messages: "append message (conversation 42)".
struct Op {
  const char* action;
  const char* entity = nullptr;
  long long id = 0;
  // The call carries an idempotency key (a message's client_key): running
  // it again after an unknown outcome cannot apply it twice, so a write
  // whose connection was lost is retried once (see write / single).
  bool idempotent = false;
  std::string describe() const {
    return entity == nullptr ? std::string(action) : fmt::format("{} ({} {})", action, entity, id);
  }
};

// The state behind a Store: the dialect, the pool, the stores, and the
// helpers every store uses to run its statements (read / write / single),
// so that transactions, savepoints, error translation and connection
// replacement live in one place.
class Store::Impl {
 public:
  Impl(const detail::Dialect& dialect, detail::Target target, const Options& options);
  ~Impl();

  const detail::Dialect& dialect;
  detail::Pool pool;
  ConversationStore conversations{this};
  AgentStateStore agents{this};
  CalendarStore calendar{this};
  WebSessionStore web_sessions{this};
  CredentialStore credentials{this};
  DialogStore dialogs{this};
  ReviewQueue reviews{this};
  TaskQueue tasks{this};
  Analytics analytics{this};
  OperationTemplates templates{this};
  RetentionStore retention{this};
  detail::AgentCache agent_cache;
  detail::OpStats op_stats;
  int schema_version = 0;
  // SQLite: the writers of this Store take turns here before BEGIN
  // IMMEDIATE, waiting at most `writer_wait` (the busy timeout).
  detail::WriterGate writer_gate;
  const bool gate_writers;
  const std::chrono::milliseconds writer_wait;

  detail::Backend backend() const noexcept { return dialect.backend(); }

  // The retry rule, the same for the four helpers below: outside a
  // caller's transaction (Store::transaction), a call that fails because its
  // connection was lost (the server restarted, the network cut) is run once
  // more, on a fresh connection, when that is safe: always for a read or a
  // snapshot; for a write or a single statement only when `op.idempotent`
  // (the outcome of a lost write is unknown: it may have committed). A BEGIN
  // that fails on a dead connection is retried for every write (nothing was
  // sent), and the pool replaces an idle connection that the server closed
  // before anything is sent on it (Dialect::stale). An error of the
  // statement itself (a constraint, a conflict) is never retried, and a
  // failure to connect is not either (it fails fast with unavailable).
  //
  // fn may therefore run twice: it must not keep state across runs.

  // Runs fn(Connection&) on a connection without opening a transaction
  // (each statement commits on its own).
  template <class F>
  auto read(const Op& op, F&& fn) -> decltype(fn(std::declval<detail::Connection&>()));

  // The same, inside one read-only transaction, so that several statements
  // see one snapshot (a context never counts messages it does not return).
  template <class F>
  auto snapshot(const Op& op, F&& fn) -> decltype(fn(std::declval<detail::Connection&>()));

  // Runs fn(Connection&) in a write transaction (a savepoint when the
  // calling thread is inside Store::transaction): all or nothing.
  template <class F>
  auto write(const Op& op, F&& fn) -> decltype(fn(std::declval<detail::Connection&>()));

  // Runs fn(Connection&) that issues exactly one writing statement, which is
  // atomic on its own: no BEGIN / COMMIT round trips.
  template <class F>
  auto single(const Op& op, F&& fn) -> decltype(fn(std::declval<detail::Connection&>()));

  void run_transaction(const std::function<void()>& body);

  // Runs fn() as one call of `op` in the operation counters: its latency,
  // and whether it threw. Not counted again when the calling thread is
  // already inside a counted call of this store (one store call built on
  // another). read / snapshot / write / single count through this.
  template <class F>
  auto counted(const Op& op, F&& fn) -> decltype(fn());

  // The connection of the calling thread's open transaction on this store.
  detail::Connection* current() const noexcept;

  // The exception to throw for `e`, caught while running `op` on `c`: a
  // database error becomes a convstore::Error (call it before any further
  // statement on `c`, which would overwrite SQLite's error code); an Error
  // or an application exception passes unchanged.
  std::exception_ptr translated(const Op& op, detail::Connection* c, std::exception_ptr e) const;
  [[noreturn]] void fail(const Op& op, detail::Connection* c, std::exception_ptr e) const {
    std::rethrow_exception(translated(op, c, e));
  }

  void migrate(detail::Connection& c, bool apply);

  // Listeners told when a conversation's messages changed (SessionCache).
  std::uint64_t add_message_listener(std::function<void(ConversationId)> listener);
  void remove_message_listener(std::uint64_t handle) noexcept;
  // Tells the listeners that the messages of `id` changed: at once, or when
  // the calling thread's open transaction commits.
  void messages_changed(ConversationId id);

 private:
  void notify_message_listeners(ConversationId id) noexcept;
  std::atomic<bool> has_listeners_{false};
  std::mutex listeners_mu_;
  std::uint64_t next_listener_ = 0;
  std::vector<std::pair<std::uint64_t, std::function<void(ConversationId)>>> listeners_;

  template <class F>
  auto read_uncounted(const Op& op, F&& fn) -> decltype(fn(std::declval<detail::Connection&>()));
  template <class F>
  auto snapshot_uncounted(const Op& op, F&& fn)
      -> decltype(fn(std::declval<detail::Connection&>()));
  template <class F>
  auto write_uncounted(const Op& op, F&& fn) -> decltype(fn(std::declval<detail::Connection&>()));
  template <class F>
  auto single_uncounted(const Op& op, F&& fn) -> decltype(fn(std::declval<detail::Connection&>()));

  void run_transaction_uncounted(const Op& op, const std::function<void()>& body);

  enum class Begin { write, read };
  // A pooled connection with a transaction begun on it. A BEGIN that fails
  // on a dead connection is retried once on a fresh one (nothing was sent).
  detail::Pool::Lease begin_on_lease(const Op& op, Begin kind);
  void begin(detail::Connection& c, Begin kind = Begin::write);
  // Commits; a connection lost during COMMIT leaves the outcome unknown,
  // which the error says.
  void commit(const Op& op, detail::Connection& c);
  void rollback(detail::Connection& c) noexcept;
  // Lets the next writer of this Store in once `c`'s write transaction has
  // ended (depth 0).
  static void leave_gate(detail::Connection& c) noexcept;
  // Runs fn(Connection&) in a new transaction on a pooled connection. When
  // it fails after BEGIN, *lost tells whether the connection was lost.
  template <class F>
  auto in_transaction(const Op& op, Begin kind, F&& fn, bool* lost = nullptr)
      -> decltype(fn(std::declval<detail::Connection&>()));
  // Runs fn(Connection&) on a pooled connection, outside a transaction;
  // when it fails because the connection was lost and `retry`, once more.
  template <class F>
  auto on_lease(const Op& op, bool retry, F& fn)
      -> decltype(fn(std::declval<detail::Connection&>()));
  // Runs attempt(bool& lost) and, when it throws with `lost` set and
  // `retry`, once more (the retry rule above).
  template <class A>
  auto retried(bool retry, A&& attempt) -> decltype(attempt(std::declval<bool&>()));
  // True when `c` can no longer be used (marks it broken for the pool).
  bool lost(detail::Connection& c) const noexcept {
    if (!c.broken && dialect.broken(c.session())) c.broken = true;
    return c.broken;
  }
  // Runs fn inside a savepoint of the open transaction on `c`; a failure
  // rolls back to it and rethrows, leaving the transaction usable.
  template <class F>
  auto in_savepoint(const Op& op, detail::Connection& c, F&& fn) -> decltype(fn());
  // Runs fn joined to the open transaction on `c` with no savepoint: where
  // a failed statement aborts the transaction (PostgreSQL) the transaction
  // is marked doomed, and ends in an error instead of a silent rollback.
  template <class F>
  auto joined(const Op& op, detail::Connection& c, F&& fn) -> decltype(fn());
};

// ---- template definitions ----

template <class F>
auto Store::Impl::in_savepoint(const Op& op, detail::Connection& c, F&& fn) -> decltype(fn()) {
  static const detail::Sql savepoint{"SAVEPOINT convstore_call"};
  static const detail::Sql release{"RELEASE SAVEPOINT convstore_call"};
  static const detail::Sql rollback_to{"ROLLBACK TO SAVEPOINT convstore_call"};
  try {
    c.execute(savepoint);
  } catch (...) {
    fail(op, &c, std::current_exception());
  }
  try {
    if constexpr (std::is_void_v<decltype(fn())>) {
      fn();
      c.execute(release);
    } else {
      auto r = fn();
      c.execute(release);
      return r;
    }
  } catch (...) {
    auto e = translated(op, &c, std::current_exception());
    try {
      c.execute(rollback_to);
      c.execute(release);
    } catch (...) {
      c.broken = true;
      if (c.doomed.empty()) c.doomed = "a savepoint could not be rolled back";
    }
    std::rethrow_exception(e);
  }
}

template <class F>
auto Store::Impl::joined(const Op& op, detail::Connection& c, F&& fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const soci::soci_error&) {
    auto e = translated(op, &c, std::current_exception());
    if (dialect.errors_abort_transaction() && c.doomed.empty()) {
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& ex) {
        c.doomed = ex.what();
      }
    }
    std::rethrow_exception(e);
  } catch (...) {
    fail(op, &c, std::current_exception());
  }
}

template <class F>
auto Store::Impl::read_uncounted(const Op& op, F&& fn)
    -> decltype(fn(std::declval<detail::Connection&>())) {
  if (detail::Connection* c = current()) return joined(op, *c, [&] { return fn(*c); });
  // Read-only: always safe to run again.
  return on_lease(op, true, fn);
}

template <class A>
auto Store::Impl::retried(bool retry, A&& attempt) -> decltype(attempt(std::declval<bool&>())) {
  for (int n = 0;; ++n) {
    bool was_lost = false;
    try {
      return attempt(was_lost);
    } catch (...) {
      if (!retry || !was_lost || n > 0) throw;
    }
  }
}

template <class F>
auto Store::Impl::on_lease(const Op& op, bool retry, F& fn)
    -> decltype(fn(std::declval<detail::Connection&>())) {
  return retried(retry, [&](bool& was_lost) {
    auto lease = pool.acquire();
    try {
      return fn(*lease);
    } catch (const soci::soci_error&) {
      auto e = translated(op, &*lease, std::current_exception());
      // A dead connection is dropped with the idle ones when the lease
      // ends, so a second attempt runs on a fresh connection.
      was_lost = lost(*lease);
      std::rethrow_exception(e);
    } catch (...) {
      fail(op, &*lease, std::current_exception());
    }
  });
}

template <class F>
auto Store::Impl::in_transaction(const Op& op, Begin kind, F&& fn, bool* was_lost)
    -> decltype(fn(std::declval<detail::Connection&>())) {
  auto lease = begin_on_lease(op, kind);
  detail::Connection& c = *lease;
  try {
    if constexpr (std::is_void_v<decltype(fn(c))>) {
      fn(c);
      commit(op, c);
    } else {
      auto r = fn(c);
      commit(op, c);
      return r;
    }
  } catch (...) {
    auto e = translated(op, &c, std::current_exception());
    if (was_lost != nullptr) *was_lost = lost(c);
    rollback(c);
    std::rethrow_exception(e);
  }
}

template <class F>
auto Store::Impl::snapshot_uncounted(const Op& op, F&& fn)
    -> decltype(fn(std::declval<detail::Connection&>())) {
  if (detail::Connection* c = current()) return joined(op, *c, [&] { return fn(*c); });
  // Read-only: always safe to run again.
  return retried(true,
                 [&](bool& was_lost) { return in_transaction(op, Begin::read, fn, &was_lost); });
}

template <class F>
auto Store::Impl::write_uncounted(const Op& op, F&& fn)
    -> decltype(fn(std::declval<detail::Connection&>())) {
  if (detail::Connection* c = current()) return in_savepoint(op, *c, [&] { return fn(*c); });
  return retried(op.idempotent,
                 [&](bool& was_lost) { return in_transaction(op, Begin::write, fn, &was_lost); });
}

template <class F>
auto Store::Impl::single_uncounted(const Op& op, F&& fn)
    -> decltype(fn(std::declval<detail::Connection&>())) {
  if (detail::Connection* c = current()) return in_savepoint(op, *c, [&] { return fn(*c); });
  // The statement may have committed before the connection was lost: only
  // an idempotent call runs again.
  return on_lease(op, op.idempotent, fn);
}

template <class F>
auto Store::Impl::counted(const Op& op, F&& fn) -> decltype(fn()) {
  if (detail::t_counting == this) return fn();
  struct Scope {
    const void* outer;
    detail::OpStats::Slot& slot;
    std::chrono::steady_clock::time_point t0;
    std::exception_ptr error;
    ~Scope() {
      detail::t_counting = outer;
      detail::OpStats::record(slot, std::chrono::steady_clock::now() - t0, error);
    }
  } scope{detail::t_counting, op_stats.slot(op.action), std::chrono::steady_clock::now(), {}};
  detail::t_counting = this;
  try {
    return fn();
  } catch (...) {
    scope.error = std::current_exception();
    throw;
  }
}

#define CS_COUNTED_HELPER(name)                                                     \
  template <class F>                                                                \
  auto Store::Impl::name(const Op& op, F&& fn)                                      \
      ->decltype(fn(std::declval<detail::Connection&>())) {                         \
    return counted(op, [&]() -> decltype(fn(std::declval<detail::Connection&>())) { \
      return name##_uncounted(op, std::forward<F>(fn));                             \
    });                                                                             \
  }
CS_COUNTED_HELPER(read)
CS_COUNTED_HELPER(snapshot)
CS_COUNTED_HELPER(write)
CS_COUNTED_HELPER(single)
#undef CS_COUNTED_HELPER

}  // namespace convstore
