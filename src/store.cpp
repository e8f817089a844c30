// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#include "convstore/store.hpp"

#include <algorithm>
#include <vector>

#include "convstore/version.hpp"
#include "db/schema.hpp"
#include "store_impl.hpp"

namespace convstore {

using detail::Connection;
using detail::Pool;
using detail::Sql;
using detail::Stmt;

namespace {

// The transactions open on this thread, innermost last.
struct ActiveTransaction {
  const Store::Impl* store;
  Connection* conn;
};
thread_local std::vector<ActiveTransaction> t_active;

}  // namespace

Store::Impl::Impl(const detail::Dialect& d, detail::Target target, const Options& options)
    : dialect(d),
      pool(d, std::move(target), options),
      agent_cache(options.agent_cache_ttl),
      gate_writers(d.backend() == detail::Backend::sqlite),
      writer_wait(options.busy_timeout) {}

Store::Impl::~Impl() = default;

std::uint64_t Store::Impl::add_message_listener(std::function<void(ConversationId)> listener) {
  std::lock_guard lock(listeners_mu_);
  listeners_.emplace_back(++next_listener_, std::move(listener));
  has_listeners_.store(true, std::memory_order_release);
  return next_listener_;
}

void Store::Impl::remove_message_listener(std::uint64_t handle) noexcept {
  std::lock_guard lock(listeners_mu_);
  listeners_.erase(std::remove_if(listeners_.begin(), listeners_.end(),
                                  [&](const auto& l) { return l.first == handle; }),
                   listeners_.end());
  has_listeners_.store(!listeners_.empty(), std::memory_order_release);
}

void Store::Impl::messages_changed(ConversationId id) {
  if (!has_listeners_.load(std::memory_order_acquire)) return;
  if (Connection* c = current()) {
    c->after_commit.push_back([this, id] { notify_message_listeners(id); });
  } else {
    notify_message_listeners(id);
  }
}

void Store::Impl::notify_message_listeners(ConversationId id) noexcept {
  std::vector<std::function<void(ConversationId)>> copy;
  {
    std::lock_guard lock(listeners_mu_);
    for (const auto& l : listeners_) copy.push_back(l.second);
  }
  for (const auto& f : copy) {
    try {
      f(id);
    } catch (...) {
      // A listener must not throw; the write it follows has committed.
    }
  }
}

Connection* Store::Impl::current() const noexcept {
  for (auto it = t_active.rbegin(); it != t_active.rend(); ++it) {
    if (it->store == this) return it->conn;
  }
  return nullptr;
}

void Store::Impl::begin(Connection& c, Begin kind) {
  // SQLite: a writer takes the write lock up front (BEGIN IMMEDIATE), so it
  // waits for another writer in the busy handler instead of failing when a
  // read would have to be upgraded; a reader's deferred BEGIN takes a
  // snapshot at its first read. PostgreSQL: a reader gets one snapshot.
  static const Sql begin_write{"BEGIN IMMEDIATE", "BEGIN"};
  static const Sql begin_read{"BEGIN", "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"};
  c.execute(kind == Begin::write ? begin_write : begin_read);
  ++c.depth;
  c.doomed.clear();
}

Pool::Lease Store::Impl::begin_on_lease(const Op& op, Begin kind) {
  // The turn is taken before a connection, so that writers waiting for it
  // leave the pool's connections to readers.
  detail::WriterGate* gate = nullptr;
  if (kind == Begin::write && gate_writers) {
    if (!writer_gate.enter(writer_wait)) {
      throw Error(ErrorCode::unavailable,
                  fmt::format("{}: the database is busy: the writers ahead of this one in this "
                              "process held it longer than the busy timeout ({} ms)",
                              op.describe(), writer_wait.count()));
    }
    gate = &writer_gate;
  }
  try {
    for (int attempt = 0;; ++attempt) {
      auto lease = pool.acquire();
      try {
        begin(*lease, kind);
        lease->gate = gate;
        return lease;
      } catch (const soci::soci_error&) {
        auto e = translated(op, &*lease, std::current_exception());
        // Nothing ran yet: on a connection that turned out dead, try once
        // more on a fresh one (the lease's end drops the stale idle ones).
        if (!lease->broken || attempt > 0) std::rethrow_exception(e);
      } catch (...) {
        fail(op, &*lease, std::current_exception());
      }
    }
  } catch (...) {
    if (gate != nullptr) gate->leave();
    throw;
  }
}

void Store::Impl::leave_gate(Connection& c) noexcept {
  if (c.gate != nullptr && c.depth == 0) {
    c.gate->leave();
    c.gate = nullptr;
  }
}

void Store::Impl::commit(const Op& op, Connection& c) {
  static const Sql commit_sql{"COMMIT"};
  if (!c.doomed.empty()) {
    throw Error(ErrorCode::aborted,
                fmt::format("{}: rolled back, because a statement in the transaction failed on the "
                            "server: {}",
                            op.describe(), c.doomed));
  }
  try {
    c.execute(commit_sql);
  } catch (const soci::soci_error&) {
    auto e = translated(op, &c, std::current_exception());
    if (!c.broken) std::rethrow_exception(e);
    throw Error(ErrorCode::unavailable,
                fmt::format("{}: the connection was lost during COMMIT, so whether the "
                            "transaction was committed is unknown (a message with a client_key "
                            "can be appended again safely)",
                            op.describe()));
  }
  --c.depth;
  leave_gate(c);
}

void Store::Impl::rollback(Connection& c) noexcept {
  static const Sql rollback_sql{"ROLLBACK"};
  if (c.depth == 0) return;
  try {
    if (!c.broken) c.execute(rollback_sql);
    --c.depth;
    c.doomed.clear();
    c.after_commit.clear();
  } catch (...) {
    c.broken = true;  // the pool drops it; the server rolls back on disconnect
    if (c.gate != nullptr) {
      c.gate->leave();  // the transaction ends with the connection
      c.gate = nullptr;
    }
    return;
  }
  leave_gate(c);
}

std::exception_ptr Store::Impl::translated(const Op& op, Connection* c,
                                           std::exception_ptr e) const {
  try {
    std::rethrow_exception(e);
  } catch (const soci::soci_error& se) {
    soci::session* s = c != nullptr ? &c->session() : nullptr;
    if (c != nullptr && dialect.broken(*s)) c->broken = true;
    return std::make_exception_ptr(dialect.translate(se, s, op.describe()));
  } catch (...) {
    return e;  // convstore::Error, or the application's own exception
  }
}

void Store::Impl::run_transaction(const std::function<void()>& body) {
  const Op op{"transaction"};
  // Counted once as "transaction", without hiding the calls made inside
  // it, which are counted as well (so not through counted()).
  detail::OpStats::Slot& slot = op_stats.slot(op.action);
  const auto t0 = std::chrono::steady_clock::now();
  try {
    run_transaction_uncounted(op, body);
  } catch (...) {
    detail::OpStats::record(slot, std::chrono::steady_clock::now() - t0, std::current_exception());
    throw;
  }
  detail::OpStats::record(slot, std::chrono::steady_clock::now() - t0, nullptr);
}

void Store::Impl::run_transaction_uncounted(const Op& op, const std::function<void()>& body) {
  if (Connection* c = current()) {
    // Nested: its own savepoint, so that its failure undoes only its work.
    in_savepoint(op, *c, body);
    return;
  }
  std::vector<std::function<void()>> after_commit;
  {
    auto lease = begin_on_lease(op, Begin::write);
    Connection& c = *lease;
    t_active.push_back({this, &c});
    try {
      body();
    } catch (...) {
      t_active.pop_back();
      rollback(c);
      throw;
    }
    t_active.pop_back();
    try {
      commit(op, c);
    } catch (...) {
      auto e = translated(op, &c, std::current_exception());
      rollback(c);
      std::rethrow_exception(e);
    }
    after_commit = std::move(c.after_commit);
    c.after_commit.clear();
  }
  // After the connection went back to the pool: a hook may need one (a
  // database SessionCache invalidating a context).
  for (auto& hook : after_commit) hook();
}

namespace {

int read_schema_version(Connection& c) {
  static const Sql q{"SELECT COALESCE(MAX(version), 0) FROM convstore_schema"};
  int v = 0;
  Stmt(c, q).out(v).one();
  return v;
}

}  // namespace

void Store::Impl::migrate(Connection& c, bool apply) {
  const auto& migrations = dialect.migrations();
  const int target = static_cast<int>(migrations.size());
  static const Sql unlock{"SELECT 1", "SELECT pg_advisory_unlock_all()"};
  const std::string lock = dialect.lock_migrations();
  const Op op{"migrating the schema"};
  try {
    if (!lock.empty()) c.execute_once(lock);
    try {
      begin(c);
      c.execute_once(
          fmt::format("CREATE TABLE IF NOT EXISTS convstore_schema (version INTEGER PRIMARY KEY, "
                      "description TEXT NOT NULL, applied_at {} NOT NULL)",
                      dialect.backend() == detail::Backend::postgresql ? "TIMESTAMPTZ" : "TEXT"));
      commit(op, c);
      int version = read_schema_version(c);
      if (version > target) {
        throw Error(ErrorCode::failed_precondition,
                    fmt::format("{}: the database schema is version {}, newer than this convstore "
                                "{} understands (version {}); upgrade convstore",
                                pool.target().display, version, CONVSTORE_VERSION_STRING, target));
      }
      if (version < target && !apply) {
        throw Error(ErrorCode::failed_precondition,
                    fmt::format("{}: the database schema is version {}, this convstore needs "
                                "version {} and Options::migrate is false",
                                pool.target().display, version, target));
      }
      static const Sql record{
          "INSERT INTO convstore_schema (version, description, applied_at) VALUES (:v, :d, :t)"};
      while (version < target) {
        begin(c);
        // Another process may have applied it while this one waited for the
        // write lock (SQLite) or the advisory lock (PostgreSQL).
        int now_at = read_schema_version(c);
        if (now_at == version) {
          for (const auto& statement : migrations[static_cast<std::size_t>(version)]) {
            c.execute_once(statement);
          }
          Stmt(c, record)
              .in(version + 1)
              .in(detail::migration_descriptions()[static_cast<std::size_t>(version)])
              .in(convstore::now())
              .one();
          now_at = version + 1;
        }
        commit(op, c);
        version = now_at;
      }
      schema_version = version;
    } catch (...) {
      auto e = translated(op, &c, std::current_exception());
      rollback(c);
      std::rethrow_exception(e);
    }
    if (!lock.empty()) Stmt(c, unlock).one();
  } catch (const Error&) {
    throw;
  } catch (...) {
    fail(op, &c, std::current_exception());
  }
}

Store::Store(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Store::Store(Store&&) noexcept = default;
Store& Store::operator=(Store&&) noexcept = default;
Store::~Store() = default;

Store Store::open(std::string_view url, const Options& options) {
  detail::Target target = detail::parse_url(url);
  const detail::Dialect& dialect = detail::dialect_for(target.backend);
  auto impl = std::make_unique<Impl>(dialect, std::move(target), options);
  {
    auto lease = impl->pool.acquire();
    impl->migrate(*lease, options.migrate);
  }
  return Store(std::move(impl));
}

ConversationStore& Store::conversations() { return impl_->conversations; }
AgentStateStore& Store::agents() { return impl_->agents; }
CalendarStore& Store::calendar() { return impl_->calendar; }
WebSessionStore& Store::web_sessions() { return impl_->web_sessions; }
CredentialStore& Store::credentials() { return impl_->credentials; }
DialogStore& Store::dialogs() { return impl_->dialogs; }
ReviewQueue& Store::reviews() { return impl_->reviews; }
TaskQueue& Store::tasks() { return impl_->tasks; }
Analytics& Store::analytics() { return impl_->analytics; }
OperationTemplates& Store::templates() { return impl_->templates; }

std::vector<OperationStats> Store::operation_stats() const { return impl_->op_stats.read(); }
void Store::reset_operation_stats() noexcept { impl_->op_stats.reset(); }

RetentionStore& Store::retention() { return impl_->retention; }

std::string Store::backend() const { return std::string(impl_->dialect.name()); }

int Store::schema_version() const {
  return impl_->read(Op{"reading the schema version"},
                     [](Connection& c) { return read_schema_version(c); });
}

int Store::library_schema_version() noexcept {
  return static_cast<int>(detail::migration_descriptions().size());
}

std::vector<SchemaMigration> Store::schema_migrations() {
  const auto& descriptions = detail::migration_descriptions();
  std::vector<SchemaMigration> out;
  out.reserve(descriptions.size());
  for (std::size_t i = 0; i < descriptions.size(); ++i) {
    out.push_back({static_cast<int>(i + 1), descriptions[i]});
  }
  return out;
}

SchemaStatus Store::inspect_schema(std::string_view url, const Options& options) {
  detail::Target target = detail::parse_url(url);
  const detail::Dialect& dialect = detail::dialect_for(target.backend);
  Options one = options;
  one.pool_size = 1;
  Impl impl(dialect, std::move(target), one);
  // The bookkeeping table may be missing (a database convstore never
  // opened): look it up in the catalog first instead of failing a query.
  static const Sql has_table{
      "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'convstore_schema'",
      "SELECT COUNT(*) FROM pg_catalog.pg_class c"
      " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
      " WHERE c.relname = 'convstore_schema' AND n.nspname = current_schema()"};
  SchemaStatus status;
  status.backend = std::string(dialect.name());
  status.library_version = library_schema_version();
  status.database_version = impl.read(Op{"inspecting the schema"}, [](Connection& c) {
    int tables = 0;
    Stmt(c, has_table).out(tables).one();
    return tables == 0 ? 0 : read_schema_version(c);
  });
  for (auto& m : schema_migrations()) {
    if (m.version > status.database_version) status.pending.push_back(std::move(m));
  }
  return status;
}

Health Store::health() const noexcept {
  Health h;
  h.backend = std::string(impl_->dialect.name());
  try {
    auto t0 = std::chrono::steady_clock::now();
    h.schema_version = schema_version();
    h.round_trip = std::chrono::duration_cast<std::chrono::microseconds>(
        std::chrono::steady_clock::now() - t0);
    h.ok = h.schema_version == library_schema_version();
    if (!h.ok) {
      h.error = fmt::format("schema version {} (library expects {})", h.schema_version,
                            library_schema_version());
    }
  } catch (const std::exception& e) {
    h.error = e.what();
  }
  return h;
}

Stats Store::stats() const {
  static const Sql q{
      "SELECT (SELECT COUNT(*) FROM users),"
      " (SELECT COUNT(*) FROM conversations WHERE status = 'active'),"
      " (SELECT COUNT(*) FROM conversations WHERE status = 'completed'),"
      " (SELECT COUNT(*) FROM conversations WHERE status = 'abandoned'),"
      " (SELECT COUNT(*) FROM conversations WHERE status = 'archived'),"
      " (SELECT COUNT(*) FROM messages),"
      " (SELECT COUNT(*) FROM agents)"};
  return impl_->read(Op{"reading store statistics"}, [](Connection& c) {
    Stats s;
    Stmt(c, q)
        .out(s.users)
        .out(s.active)
        .out(s.completed)
        .out(s.abandoned)
        .out(s.archived)
        .out(s.messages)
        .out(s.agents)
        .one();
    s.conversations = s.active + s.completed + s.abandoned + s.archived;
    return s;
  });
}

void Store::run_transaction(const std::function<void()>& body) { impl_->run_transaction(body); }

Json to_json(const Stats& s) {
  return Json{{"users", s.users},         {"conversations", s.conversations},
              {"active", s.active},       {"completed", s.completed},
              {"abandoned", s.abandoned}, {"archived", s.archived},
              {"messages", s.messages},   {"agents", s.agents}};
}

Json to_json(const OperationStats& s) {
  return Json{{"action", s.action},
              {"calls", s.calls},
              {"errors", s.errors},
              {"conflicts", s.conflicts},
              {"total_us", s.total_time.count()},
              {"p50_us", s.p50_us},
              {"p99_us", s.p99_us}};
}

}  // namespace convstore
