// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#include "convstore/task_queue.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <random>

#include "calendar_detail.hpp"
#include "store_helpers.hpp"
#include "store_impl.hpp"

namespace convstore {

using detail::Backend;
using detail::check_id;
using detail::check_time;
using detail::Connection;
using detail::json_text;
using detail::Sql;
using detail::Stmt;

// ================================ names ====================================

std::string_view to_string(TaskPriority p) noexcept {
  switch (p) {
    case TaskPriority::low:
      return "low";
    case TaskPriority::normal:
      return "normal";
    case TaskPriority::high:
      return "high";
  }
  return "?";
}

std::string_view to_string(TaskStatus s) noexcept {
  switch (s) {
    case TaskStatus::pending:
      return "pending";
    case TaskStatus::processing:
      return "processing";
    case TaskStatus::completed:
      return "completed";
    case TaskStatus::failed:
      return "failed";
    case TaskStatus::cancelled:
      return "cancelled";
  }
  return "?";
}

TaskPriority parse_task_priority(std::string_view s) {
  for (auto v : {TaskPriority::low, TaskPriority::normal, TaskPriority::high}) {
    if (to_string(v) == s) return v;
  }
  throw Error(ErrorCode::invalid_argument, fmt::format("unknown task priority '{}'", s));
}

TaskStatus parse_task_status(std::string_view s) {
  for (auto v : {TaskStatus::pending, TaskStatus::processing, TaskStatus::completed,
                 TaskStatus::failed, TaskStatus::cancelled}) {
    if (to_string(v) == s) return v;
  }
  throw Error(ErrorCode::invalid_argument, fmt::format("unknown task status '{}'", s));
}

Json to_json(const Task& t) {
  auto opt_time = [](const std::optional<Timestamp>& v) {
    return v ? Json(to_iso8601(*v)) : Json(nullptr);
  };
  auto opt_text = [](const std::optional<std::string>& v) { return v ? Json(*v) : Json(nullptr); };
  return Json{{"id", t.id},
              {"type", t.type},
              {"priority", to_string(t.priority)},
              {"status", to_string(t.status)},
              {"payload", t.payload},
              {"result", t.result},
              {"run_at", to_iso8601(t.run_at)},
              {"attempts", t.attempts},
              {"max_attempts", t.max_attempts},
              {"last_error", opt_text(t.last_error)},
              {"dedupe_key", opt_text(t.dedupe_key)},
              {"schedule", opt_text(t.schedule)},
              {"worker", opt_text(t.worker)},
              {"lease", t.lease},
              {"lease_expires_at", opt_time(t.lease_expires_at)},
              {"created_at", to_iso8601(t.created_at)},
              {"updated_at", to_iso8601(t.updated_at)},
              {"started_at", opt_time(t.started_at)},
              {"finished_at", opt_time(t.finished_at)}};
}

namespace {

// ================================ checks ===================================

constexpr std::chrono::milliseconds kMinLease{10};
constexpr std::chrono::milliseconds kMaxLease = std::chrono::hours(24);
constexpr std::chrono::milliseconds kMinInterval = std::chrono::seconds(1);
constexpr std::chrono::milliseconds kMaxInterval = std::chrono::hours(24 * 366);
constexpr std::chrono::milliseconds kMaxBackoff = std::chrono::hours(24 * 365);
// A dedupe key or a task of a schedule carries this prefix.
constexpr std::string_view kSchedulePrefix = "schedule:";

int priority_number(TaskPriority p) {
  const int n = static_cast<int>(p);
  if (n < 0 || n > 2) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("task priority {} is outside low (0) .. high (2)", n));
  }
  return n;
}

void check_lease(std::chrono::milliseconds lease) {
  if (lease < kMinLease || lease > kMaxLease) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("task lease of {} ms is outside 10 ms .. 24 h", lease.count()));
  }
}

void check_lease_number(TaskId id, std::int64_t lease) {
  if (lease <= 0) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("lease number {} of task {} is not one a claim returned (they are "
                            "positive)",
                            lease, id));
  }
}

// JSON text of a payload or result, within the size limit.
std::string limited_json(const Json& j, std::string_view what) {
  std::string text = json_text(j, what);
  if (text.size() > TaskLimits::max_json_bytes) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("{} is {} bytes of JSON (at most {} bytes, 1 MiB)", what, text.size(),
                            TaskLimits::max_json_bytes));
  }
  return text;
}

// A NewTask, checked and converted for binding.
struct Checked {
  std::string type;
  int priority = 1;
  std::string payload;
  std::optional<Timestamp> run_at;
  int max_attempts = 5;
  std::optional<std::string> dedupe_key;
  std::optional<std::string> schedule;
};

Checked checked(const NewTask& n) {
  Checked c;
  check_id(n.type, "task type", 100);
  detail::check_json(n.payload, "task payload");
  c.type = n.type;
  c.priority = priority_number(n.priority);
  c.payload = limited_json(n.payload.is_null() ? Json::object() : n.payload, "task payload");
  if (n.max_attempts < 1 || n.max_attempts > TaskLimits::max_attempts) {
    throw Error(ErrorCode::invalid_argument, fmt::format("task max_attempts {} is outside 1 .. {}",
                                                         n.max_attempts, TaskLimits::max_attempts));
  }
  c.max_attempts = n.max_attempts;
  if (n.run_at) check_time(*n.run_at, "task run_at");
  c.run_at = n.run_at;
  if (n.dedupe_key) {
    check_id(*n.dedupe_key, "task dedupe key");
    if (n.dedupe_key->compare(0, kSchedulePrefix.size(), kSchedulePrefix) == 0) {
      throw Error(ErrorCode::invalid_argument,
                  fmt::format("task dedupe key '{}': keys starting with '{}' are reserved for "
                              "periodic schedules",
                              *n.dedupe_key, kSchedulePrefix));
    }
  }
  c.dedupe_key = n.dedupe_key;
  return c;
}

// The error text as stored: valid UTF-8, at most max_error_bytes; a longer
// one is cut at a character boundary and ends in "...".
std::string error_text(std::string_view error) {
  detail::check_text(error, "task error");
  if (error.size() <= TaskLimits::max_error_bytes) return std::string(error);
  // Room for the "..." that marks the cut.
  std::size_t cut = TaskLimits::max_error_bytes - 3;
  while (cut > 0 && (static_cast<unsigned char>(error[cut]) & 0xC0) == 0x80) --cut;
  return std::string(error.substr(0, cut)) + "...";
}

// ================================= rows ====================================

// The end of the last_error a sweep writes.
#define CS_SWEEP_ERROR " did not finish within its lease"

#define CS_TASK_COLS                                                                            \
  "id, type, priority, status, payload, result, run_at, attempts, max_attempts, last_error, "   \
  "dedupe_key, schedule, worker, lease, lease_expires_at, created_at, updated_at, started_at, " \
  "finished_at"

struct Row {
  Task t;
  int priority = 1;
  std::string status;
};

void bind_row(Stmt& st, Row& r) {
  Task& t = r.t;
  st.out(t.id).out(t.type).out(r.priority).out(r.status).out(t.payload).out(t.result);
  st.out(t.run_at).out(t.attempts).out(t.max_attempts).out(t.last_error).out(t.dedupe_key);
  st.out(t.schedule).out(t.worker).out(t.lease).out(t.lease_expires_at).out(t.created_at);
  st.out(t.updated_at).out(t.started_at).out(t.finished_at);
}

Task decoded(Row& r) {
  if (r.priority < 0 || r.priority > 2) {
    throw Error(ErrorCode::internal,
                fmt::format("task {} has priority {} in the database", r.t.id, r.priority));
  }
  r.t.priority = static_cast<TaskPriority>(r.priority);
  r.t.status = parse_task_status(r.status);
  return std::move(r.t);
}

Task decode_task(Row& r) { return decoded(r); }

std::optional<Task> fetch_task(Stmt& st) {
  return detail::fetch_one_decoded<Row>(st, bind_row, decode_task);
}

std::vector<Task> fetch_tasks(Stmt& st) {
  return detail::fetch_all_decoded<Row>(st, bind_row, decode_task);
}

const Sql kGet{"SELECT " CS_TASK_COLS " FROM tasks WHERE id = :id"};
const Sql kLock{"SELECT " CS_TASK_COLS " FROM tasks WHERE id = :id",
                "SELECT " CS_TASK_COLS " FROM tasks WHERE id = :id FOR UPDATE"};

std::optional<Task> get_task(Connection& c, TaskId id) {
  Stmt st(c, kGet);
  st.in(id);
  return fetch_task(st);
}

bool ends_with(std::string_view s, std::string_view end) {
  return s.size() >= end.size() && s.compare(s.size() - end.size(), end.size(), end) == 0;
}

// Why `lease` no longer holds task `id` (as found in `t`): not_found or
// conflict, naming what happened to it.
[[noreturn]] void refuse(const std::optional<Task>& t, TaskId id, std::int64_t lease,
                         std::string_view action) {
  if (!t) throw Error(ErrorCode::not_found, fmt::format("task {} not found", id));
  const std::string prefix = fmt::format("cannot {} task {} with lease {}", action, id, lease);
  if (lease > t->lease) {
    throw Error(ErrorCode::conflict,
                fmt::format("{}: no such lease was issued (the latest is {})", prefix, t->lease));
  }
  switch (t->status) {
    case TaskStatus::cancelled:
      throw Error(ErrorCode::conflict, fmt::format("{}: the task was cancelled", prefix));
    case TaskStatus::completed:
    case TaskStatus::failed:
      if (lease == t->lease && t->status == TaskStatus::failed && t->last_error &&
          ends_with(*t->last_error, CS_SWEEP_ERROR)) {
        throw Error(ErrorCode::conflict,
                    fmt::format("{}: the lease expired and, as that was attempt {} of {}, the "
                                "task was failed for good ({})",
                                prefix, t->attempts, t->max_attempts, *t->last_error));
      }
      if (lease == t->lease) {
        throw Error(ErrorCode::conflict,
                    fmt::format("{}: the task is already {}", prefix, to_string(t->status)));
      }
      break;
    case TaskStatus::pending:
      if (lease == t->lease) {
        throw Error(ErrorCode::conflict,
                    fmt::format("{}: the task is pending again (the lease expired, or the "
                                "attempt was already failed)",
                                prefix));
      }
      break;
    case TaskStatus::processing:
      break;
  }
  throw Error(ErrorCode::conflict,
              fmt::format("{}: the lease expired and the task was claimed again (lease {}, "
                          "worker '{}', now {})",
                          prefix, t->lease, t->worker.value_or("?"), to_string(t->status)));
}

// ============================== statements =================================

const Sql kInsert{
    "INSERT INTO tasks (type, priority, status, payload, run_at, max_attempts, dedupe_key, "
    "schedule, created_at, updated_at) VALUES (:ty, :p, 'pending', :pl, :r, :m, :k, :s, :t1, "
    ":t2) ON CONFLICT (dedupe_key) WHERE dedupe_key IS NOT NULL AND status IN ('pending', "
    "'processing') DO NOTHING RETURNING " CS_TASK_COLS};
const Sql kByKey{"SELECT " CS_TASK_COLS
                 " FROM tasks WHERE dedupe_key = :k AND status IN ('pending', 'processing')"};

// Inserts a task, or finds the unfinished one with its dedupe key. A
// statement each: the key's holder may finish between the two, then the
// insert is tried again.
Enqueued insert_task(Connection& c, const Checked& n, Timestamp t) {
  for (int round = 0; round < 16; ++round) {
    Stmt ins(c, kInsert);
    ins.in(n.type).in(n.priority).in(n.payload).in(n.run_at.value_or(t)).in(n.max_attempts);
    ins.in(n.dedupe_key).in(n.schedule).in(t).in(t);
    if (auto task = fetch_task(ins)) return Enqueued{std::move(*task), true};
    if (!n.dedupe_key) break;
    Stmt find(c, kByKey);
    find.in(*n.dedupe_key);
    if (auto task = fetch_task(find)) return Enqueued{std::move(*task), false};
  }
  throw Error(ErrorCode::aborted,
              fmt::format("enqueue task: the task with dedupe key '{}' kept changing; retry",
                          n.dedupe_key.value_or("")));
}

// Expired leases: back to pending (run_at kept), or failed for good when
// the attempts are used up. PostgreSQL skips rows another transaction is
// finishing right now; SQLite is told to use the index of lease expiries.
// Parameters: finished_at, updated_at, expired before.
#define CS_SWEEP_SET                                                                   \
  "SET status = CASE WHEN attempts >= max_attempts THEN 'failed' ELSE 'pending' END, " \
  "last_error = 'attempt ' || attempts || ' by worker ' || COALESCE(worker, '?') || "  \
  "'" CS_SWEEP_ERROR "', lease_expires_at = NULL, "
#define CS_SWEEP_PG                                                                      \
  "UPDATE tasks " CS_SWEEP_SET                                                           \
  "finished_at = CASE WHEN attempts >= max_attempts THEN CAST(:t1 AS TIMESTAMPTZ) END, " \
  "updated_at = :t2 WHERE id IN (SELECT id FROM tasks WHERE status = 'processing' AND "  \
  "lease_expires_at <= :t3 FOR UPDATE SKIP LOCKED)"
const Sql kSweep{"UPDATE tasks INDEXED BY tasks_lease " CS_SWEEP_SET
                 "finished_at = CASE WHEN attempts >= max_attempts THEN :t1 END, updated_at = "
                 ":t2 WHERE status = 'processing' AND lease_expires_at <= :t3",
                 CS_SWEEP_PG};

// The claim for `types` type filters, run after kSweep (PostgreSQL: with
// kSweep folded in front when `sweep`). The tasks to claim are picked
// once, in a MATERIALIZED CTE on PostgreSQL, so that the planner can never
// run the LIMIT ... FOR UPDATE SKIP LOCKED subquery twice.
// Parameters: [PostgreSQL: the sweep's if `sweep`, then due by, the types,
// the limit, then] worker, lease expiry, started_at, updated_at [SQLite:
// then due by, the types, the limit].
const std::string& claim_text(Backend b, std::size_t types, bool sweep) {
  static const auto texts = [] {
    std::array<std::vector<std::string>, 3> out;
    for (std::size_t n = 0; n <= TaskLimits::max_claim_types; ++n) {
      std::string filter;
      for (std::size_t i = 0; i < n; ++i) {
        filter += fmt::format("{}:y{}", i == 0 ? " AND type IN (" : ", ", i);
      }
      if (n > 0) filter += ")";
      const std::string set =
          "UPDATE tasks SET status = 'processing', attempts = attempts + 1, lease = lease + 1, "
          "worker = :w, lease_expires_at = :e, started_at = :t4, updated_at = :t5 WHERE id IN ";
      const std::string pick = fmt::format(
          "SELECT id FROM tasks{{}} WHERE status = 'pending' AND run_at <= :t6{} ORDER BY "
          "priority DESC, run_at, id LIMIT :n",
          filter);
      // SQLite, without statistics, would rather read every pending task
      // through tasks_status and sort them.
      out[0].push_back(set + "(" + fmt::format(fmt::runtime(pick), " INDEXED BY tasks_due") +
                       ") RETURNING " CS_TASK_COLS);
      const std::string pg = "picked AS MATERIALIZED (" + fmt::format(fmt::runtime(pick), "") +
                             " FOR UPDATE SKIP LOCKED) " + set +
                             "(SELECT id FROM picked) RETURNING " CS_TASK_COLS;
      out[1].push_back("WITH " + pg);
      out[2].push_back("WITH swept AS (" CS_SWEEP_PG " RETURNING id), " + pg);
    }
    return out;
  }();
  if (b != Backend::postgresql) return texts[0][types];
  return texts[sweep ? 2 : 1][types];
}

// ============================== schedules ==================================

using Micros = std::chrono::microseconds;

// The start of the slot holding `at` (at >= anchor).
Timestamp slot_start(Timestamp anchor, Micros interval, Timestamp at) {
  const auto k = (at - anchor).count() / interval.count();
  return anchor + Micros(k * interval.count());
}

// The first slot to run of a schedule created now: the current one (due at
// once), or the anchor when it is still ahead.
Timestamp first_slot(Timestamp anchor, Micros interval, Timestamp t) {
  return t < anchor ? anchor : slot_start(anchor, interval, t);
}

// The slot after the one holding `last`.
Timestamp slot_after(Timestamp anchor, Micros interval, Timestamp last) {
  return last < anchor ? anchor : slot_start(anchor, interval, last) + interval;
}

#define CS_SCHED_COLS                                                                            \
  "name, type, priority, payload, max_attempts, interval_ms, anchor, next_run_at, last_run_at, " \
  "last_task_id, created_at, updated_at"

struct ScheduleRow {
  TaskSchedule s;
  int priority = 1;
  long long interval_ms = 0;
};

void bind_schedule(Stmt& st, ScheduleRow& r) {
  TaskSchedule& s = r.s;
  st.out(s.name).out(s.task.type).out(r.priority).out(s.task.payload).out(s.task.max_attempts);
  st.out(r.interval_ms).out(s.anchor).out(s.next_run_at).out(s.last_run_at).out(s.last_task_id);
  st.out(s.created_at).out(s.updated_at);
}

TaskSchedule decoded(ScheduleRow& r) {
  if (r.priority < 0 || r.priority > 2) {
    throw Error(ErrorCode::internal,
                fmt::format("schedule '{}' has priority {} in the database", r.s.name, r.priority));
  }
  r.s.task.priority = static_cast<TaskPriority>(r.priority);
  r.s.task.run_at = r.s.anchor;
  r.s.interval = std::chrono::milliseconds(r.interval_ms);
  return std::move(r.s);
}

TaskSchedule decode_schedule(ScheduleRow& r) { return decoded(r); }

std::optional<TaskSchedule> fetch_schedule(Stmt& st) {
  return detail::fetch_one_decoded<ScheduleRow>(st, bind_schedule, decode_schedule);
}

std::string schedule_key(std::string_view name) {
  return std::string(kSchedulePrefix) + std::string(name);
}

std::mt19937_64& rng() {
  thread_local std::mt19937_64 engine{std::random_device{}()};
  return engine;
}

// How long the `attempts`-th failed attempt waits.
Micros backoff(const RetryPolicy& p, int attempts) {
  Micros delay = p.base;
  for (int i = 1; i < attempts && delay < p.cap; ++i) delay *= 2;
  delay = std::min<Micros>(delay, p.cap);
  if (p.jitter > 0) {
    std::uniform_real_distribution<double> u(0.0, 1.0);
    const double keep = 1.0 - p.jitter * u(rng());
    delay = Micros(static_cast<long long>(static_cast<double>(delay.count()) * keep));
  }
  return delay;
}

void check_policy(const RetryPolicy& p) {
  if (p.base.count() < 0 || p.cap < p.base || p.cap > kMaxBackoff) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("retry backoff base {} ms / cap {} ms: need 0 <= base <= cap <= "
                            "365 days",
                            p.base.count(), p.cap.count()));
  }
  if (!(p.jitter >= 0.0 && p.jitter <= 1.0)) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("retry jitter {} is outside 0 .. 1", p.jitter));
  }
}

}  // namespace

TaskQueue::TaskQueue(Store::Impl* impl) : impl_(impl) {}

// =============================== enqueueing ================================

Enqueued TaskQueue::enqueue(const NewTask& task) {
  const Checked n = checked(task);
  // One INSERT, atomic on its own; with a dedupe key that is taken, a
  // SELECT of the holder follows.
  return impl_->single(Op{"enqueue task"}, [&](Connection& c) { return insert_task(c, n, now()); });
}

std::vector<Enqueued> TaskQueue::enqueue_many(const std::vector<NewTask>& tasks) {
  std::vector<Checked> all;
  all.reserve(tasks.size());
  for (const auto& t : tasks) all.push_back(checked(t));
  if (all.empty()) return {};
  return impl_->write(Op{"enqueue tasks"}, [&](Connection& c) {
    std::vector<Enqueued> out;
    out.reserve(all.size());
    const Timestamp t = now();
    for (const auto& n : all) out.push_back(insert_task(c, n, t));
    return out;
  });
}

// ================================ claiming =================================

std::vector<Task> TaskQueue::claim(std::string_view worker, const ClaimOptions& o) {
  check_id(worker, "worker name");
  detail::check_count(o.max, TaskLimits::max_claim, "claim batch size");
  check_lease(o.lease);
  if (o.types.size() > TaskLimits::max_claim_types) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("claim filters on {} task types (at most {})", o.types.size(),
                            TaskLimits::max_claim_types));
  }
  for (const auto& type : o.types) check_id(type, "task type", 100);
  const Backend backend = impl_->backend();

  // Claims up to `max` tasks due at `t`; on PostgreSQL, with `sweep`, in the
  // statement that sweeps expired leases first.
  auto run = [&](Connection& c, Timestamp t, std::size_t max, bool sweep) {
    Stmt st(c, claim_text(backend, o.types.size(), sweep));
    auto filter = [&] {
      st.in(t);
      for (const auto& type : o.types) st.in(type);
      st.in(max);
    };
    if (backend == Backend::postgresql) {
      if (sweep) st.in(t).in(t).in(t);
      filter();
    }
    st.in(worker).in(t + o.lease).in(t).in(t);
    if (backend != Backend::postgresql) filter();
    return fetch_tasks(st);
  };
  // RETURNING keeps no order.
  auto in_order = [](std::vector<Task> tasks) {
    std::sort(tasks.begin(), tasks.end(), [](const Task& a, const Task& b) {
      if (a.priority != b.priority) return a.priority > b.priority;
      if (a.run_at != b.run_at) return a.run_at < b.run_at;
      return a.id < b.id;
    });
    return tasks;
  };
  const Op op{"claim tasks"};
  if (backend == Backend::postgresql) {
    // Sweep and claim in one statement, atomic on its own. Both parts see
    // one snapshot, so the claim cannot take the tasks the sweep put back:
    // when it found fewer than `max`, a second statement (a new snapshot)
    // claims from what is pending now, those included.
    // Counted once, as one claim.
    return impl_->counted(op, [&] {
      auto tasks = impl_->single(op, [&](Connection& c) { return run(c, now(), o.max, true); });
      if (tasks.size() >= o.max) return in_order(std::move(tasks));
      auto more = impl_->single(
          op, [&](Connection& c) { return run(c, now(), o.max - tasks.size(), false); });
      tasks.insert(tasks.end(), more.begin(), more.end());
      return in_order(std::move(tasks));
    });
  }
  // A write transaction: the sweep, then the claim (which sees what the
  // sweep put back). On SQLite BEGIN IMMEDIATE makes this process the only
  // writer, so no other claim can pick the same rows; on PostgreSQL the
  // claim skips rows other claims have locked.
  return impl_->write(op, [&](Connection& c) {
    const Timestamp t = now();
    Stmt(c, kSweep).in(t).in(t).in(t).one();
    return in_order(run(c, t, o.max, false));
  });
}

std::int64_t TaskQueue::requeue_expired(Timestamp at) {
  check_time(at, "requeue_expired time");
  return impl_->single(Op{"requeue expired tasks"}, [&](Connection& c) {
    const Timestamp t = now();
    Stmt st(c, kSweep);
    st.in(t).in(t).in(at).one();
    return static_cast<std::int64_t>(st.affected());
  });
}

// ================================ finishing ================================

Task TaskQueue::heartbeat(TaskId id, std::int64_t lease_number, std::chrono::milliseconds lease) {
  check_lease_number(id, lease_number);
  check_lease(lease);
  static const Sql q{
      "UPDATE tasks SET lease_expires_at = :e, updated_at = :t WHERE id = :id AND "
      "lease = :l AND status = 'processing' RETURNING " CS_TASK_COLS};
  const Op op{"task heartbeat", "task", id};
  // Counted once, refusals included (they read the task to explain).
  return impl_->counted(op, [&]() -> Task {
    auto task = impl_->single(op, [&](Connection& c) {
      const Timestamp t = now();
      Stmt st(c, q);
      st.in(t + lease).in(t).in(id).in(lease_number);
      return fetch_task(st);
    });
    if (task) return *task;
    refuse(get(id), id, lease_number, "extend the lease of");
  });
}

Task TaskQueue::complete(TaskId id, std::int64_t lease_number, const Json& result) {
  check_lease_number(id, lease_number);
  std::optional<std::string> text;
  if (!result.is_null()) text = limited_json(result, "task result");
  static const Sql q{
      "UPDATE tasks SET status = 'completed', result = :r, lease_expires_at = NULL, "
      "finished_at = :t1, updated_at = :t2 WHERE id = :id AND lease = :l AND status = "
      "'processing' RETURNING " CS_TASK_COLS};
  const Op op{"complete task", "task", id};
  // Counted once, refusals included (they read the task to explain).
  return impl_->counted(op, [&]() -> Task {
    auto task = impl_->single(op, [&](Connection& c) {
      const Timestamp t = now();
      Stmt st(c, q);
      st.in(text).in(t).in(t).in(id).in(lease_number);
      return fetch_task(st);
    });
    if (task) return *task;
    refuse(get(id), id, lease_number, "complete");
  });
}

Task TaskQueue::fail(TaskId id, std::int64_t lease_number, std::string_view error,
                     const RetryPolicy& policy) {
  check_lease_number(id, lease_number);
  check_policy(policy);
  const std::string text = error_text(error);
  static const Sql q{
      "UPDATE tasks SET status = :s, run_at = :r, last_error = :e, lease_expires_at = NULL, "
      "finished_at = :f, updated_at = :t WHERE id = :id RETURNING " CS_TASK_COLS};
  return impl_->write(Op{"fail task", "task", id}, [&](Connection& c) {
    Stmt sel(c, kLock);
    sel.in(id);
    auto cur = fetch_task(sel);
    if (!cur || cur->status != TaskStatus::processing || cur->lease != lease_number) {
      refuse(cur, id, lease_number, "fail");
    }
    const Timestamp t = now();
    const bool retry = policy.retry && cur->attempts < cur->max_attempts;
    Stmt up(c, q);
    up.in(retry ? TaskStatus::pending : TaskStatus::failed);
    up.in(retry ? t + backoff(policy, cur->attempts) : cur->run_at).in(text);
    up.in(retry ? std::nullopt : std::optional<Timestamp>(t)).in(t).in(id);
    return *fetch_task(up);
  });
}

Task TaskQueue::cancel(TaskId id) {
  static const Sql q{
      "UPDATE tasks SET status = 'cancelled', lease_expires_at = NULL, finished_at = :f, "
      "updated_at = :t WHERE id = :id RETURNING " CS_TASK_COLS};
  return impl_->write(Op{"cancel task", "task", id}, [&](Connection& c) {
    Stmt sel(c, kLock);
    sel.in(id);
    auto cur = fetch_task(sel);
    if (!cur) throw Error(ErrorCode::not_found, fmt::format("task {} not found", id));
    if (cur->status == TaskStatus::cancelled) return *cur;
    if (cur->status == TaskStatus::completed || cur->status == TaskStatus::failed) {
      throw Error(ErrorCode::conflict, fmt::format("cannot cancel task {}: it is already {}", id,
                                                   to_string(cur->status)));
    }
    const Timestamp t = now();
    Stmt up(c, q);
    up.in(t).in(t).in(id);
    return *fetch_task(up);
  });
}

// ================================ reading ==================================

std::optional<Task> TaskQueue::get(TaskId id) {
  return impl_->read(Op{"get task", "task", id}, [&](Connection& c) { return get_task(c, id); });
}

std::vector<Task> TaskQueue::list(const TaskFilter& f, std::size_t limit) {
  detail::check_count(limit, 1000, "task list limit");
  if (f.type) check_id(*f.type, "task type", 100);
  if (f.status && to_string(*f.status) == "?") {
    throw Error(ErrorCode::invalid_argument, "task status is outside the set");
  }
  std::string text = "SELECT " CS_TASK_COLS " FROM tasks WHERE 1 = 1";
  if (f.status) text += " AND status = :s";
  if (f.type) text += " AND type = :ty";
  if (f.before) text += " AND id < :b";
  text += " ORDER BY id DESC LIMIT :n";
  return impl_->read(Op{"list tasks"}, [&](Connection& c) {
    Stmt st(c, text);
    if (f.status) st.in(*f.status);
    if (f.type) st.in(*f.type);
    if (f.before) st.in(*f.before);
    st.in(limit);
    return fetch_tasks(st);
  });
}

TaskCounts TaskQueue::counts() {
  static const Sql q{"SELECT status, COUNT(*) FROM tasks GROUP BY status"};
  return impl_->read(Op{"count tasks"}, [&](Connection& c) {
    TaskCounts out;
    std::string status;
    long long n = 0;
    Stmt st(c, q);
    st.out(status).out(n);
    while (st.next()) {
      switch (parse_task_status(status)) {
        case TaskStatus::pending:
          out.pending = n;
          break;
        case TaskStatus::processing:
          out.processing = n;
          break;
        case TaskStatus::completed:
          out.completed = n;
          break;
        case TaskStatus::failed:
          out.failed = n;
          break;
        case TaskStatus::cancelled:
          out.cancelled = n;
          break;
      }
    }
    return out;
  });
}

std::int64_t TaskQueue::purge_finished(Timestamp older_than) {
  check_time(older_than, "purge_finished time");
  static const Sql q{
      "DELETE FROM tasks WHERE finished_at < :t AND status IN ('completed', 'failed', "
      "'cancelled')"};
  return impl_->single(Op{"purge finished tasks"}, [&](Connection& c) {
    Stmt st(c, q);
    st.in(older_than).one();
    return static_cast<std::int64_t>(st.affected());
  });
}

// ================================ periodic =================================

TaskSchedule TaskQueue::schedule(std::string_view name, const NewTask& task,
                                 std::chrono::milliseconds interval) {
  check_id(name, "schedule name");
  if (task.dedupe_key) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("the task of schedule '{}' has a dedupe key: a schedule's tasks use "
                            "'{}'",
                            name, schedule_key(name)));
  }
  if (interval < kMinInterval || interval > kMaxInterval) {
    throw Error(
        ErrorCode::invalid_argument,
        fmt::format("schedule interval of {} ms is outside 1 s .. 366 days", interval.count()));
  }
  const Checked n = checked(task);
  const Timestamp anchor = task.run_at.value_or(Timestamp{});
  const Micros iv = interval;
  static const Sql insert{
      "INSERT INTO task_schedules (name, type, priority, payload, max_attempts, interval_ms, "
      "anchor, next_run_at, created_at, updated_at) VALUES (:n, :ty, :p, :pl, :m, :i, :a, :nx, "
      ":t1, :t2) ON CONFLICT (name) DO NOTHING RETURNING " CS_SCHED_COLS};
  static const Sql last{"SELECT last_run_at FROM task_schedules WHERE name = :n",
                        "SELECT last_run_at FROM task_schedules WHERE name = :n FOR UPDATE"};
  static const Sql update{
      "UPDATE task_schedules SET type = :ty, priority = :p, payload = :pl, max_attempts = :m, "
      "interval_ms = :i, anchor = :a, next_run_at = :nx, updated_at = :t WHERE name = :n "
      "RETURNING " CS_SCHED_COLS};
  return impl_->write(Op{"schedule task"}, [&](Connection& c) {
    const Timestamp t = now();
    // Insert, or lock and replace the existing row. On PostgreSQL that row
    // may be deleted between the two (unschedule() committing while the
    // SELECT waited for its lock): then the insert is tried again.
    for (int round = 0; round < 16; ++round) {
      Stmt ins(c, insert);
      ins.in(name).in(n.type).in(n.priority).in(n.payload).in(n.max_attempts);
      ins.in(static_cast<long long>(interval.count())).in(anchor).in(first_slot(anchor, iv, t));
      ins.in(t).in(t);
      if (auto s = fetch_schedule(ins)) return *s;
      std::optional<Timestamp> last_run;
      if (!Stmt(c, last).in(name).out(last_run).one()) continue;
      const Timestamp next =
          last_run ? slot_after(anchor, iv, *last_run) : first_slot(anchor, iv, t);
      Stmt up(c, update);
      up.in(n.type).in(n.priority).in(n.payload).in(n.max_attempts);
      up.in(static_cast<long long>(interval.count())).in(anchor).in(next).in(t).in(name);
      if (auto s = fetch_schedule(up)) return *s;
    }
    throw Error(
        ErrorCode::aborted,
        fmt::format("schedule '{}' kept being created and removed concurrently; retry", name));
  });
}

bool TaskQueue::unschedule(std::string_view name) {
  check_id(name, "schedule name");
  static const Sql q{"DELETE FROM task_schedules WHERE name = :n"};
  return impl_->single(Op{"unschedule task"}, [&](Connection& c) {
    Stmt st(c, q);
    st.in(name).one();
    return st.affected() > 0;
  });
}

std::vector<TaskSchedule> TaskQueue::schedules() {
  static const Sql q{"SELECT " CS_SCHED_COLS " FROM task_schedules ORDER BY name"};
  return impl_->read(Op{"list schedules"}, [&](Connection& c) {
    Stmt st(c, q);
    return detail::fetch_all_decoded<ScheduleRow>(st, bind_schedule, decode_schedule);
  });
}

std::int64_t TaskQueue::run_periodic(Timestamp at) {
  check_time(at, "run_periodic time");
  // Counted once: the check and, when something is due, the write.
  const Op op{"run periodic tasks"};
  return impl_->counted(op, [&]() -> std::int64_t { return run_periodic_counted(at); });
}

std::int64_t TaskQueue::run_periodic_counted(Timestamp at) {
  // Most calls find nothing due: a plain read, no write transaction.
  static const Sql any{"SELECT COUNT(*) FROM task_schedules WHERE next_run_at <= :a"};
  const bool due = impl_->read(Op{"run periodic tasks"}, [&](Connection& c) {
    long long n = 0;
    Stmt(c, any).in(at).out(n).one();
    return n > 0;
  });
  if (!due) return 0;
  // PostgreSQL: each schedule row is locked by the one caller that runs its
  // slot (others skip it, and see it advanced once that caller commits);
  // SQLite: one writer at a time.
  static const Sql due_rows{
      "SELECT " CS_SCHED_COLS " FROM task_schedules WHERE next_run_at <= :a ORDER BY name",
      "SELECT " CS_SCHED_COLS
      " FROM task_schedules WHERE next_run_at <= :a ORDER BY name FOR UPDATE SKIP LOCKED"};
  static const Sql advance{
      "UPDATE task_schedules SET next_run_at = :nx, last_run_at = :l, last_task_id = :id, "
      "updated_at = :t WHERE name = :n"};
  return impl_->write(Op{"run periodic tasks"}, [&](Connection& c) {
    std::vector<TaskSchedule> list;
    {
      ScheduleRow r;
      Stmt st(c, due_rows);
      st.in(at);
      bind_schedule(st, r);
      while (st.next()) list.push_back(decoded(r));
    }
    std::int64_t created = 0;
    const Timestamp t = now();
    for (const auto& s : list) {
      const Micros iv = s.interval;
      const Timestamp slot = slot_start(s.anchor, iv, std::max(at, s.next_run_at));
      Checked n;
      n.type = s.task.type;
      n.priority = priority_number(s.task.priority);
      n.payload = json_text(s.task.payload, "task payload");
      n.max_attempts = s.task.max_attempts;
      n.run_at = slot;
      n.dedupe_key = schedule_key(s.name);
      n.schedule = s.name;
      Enqueued e = insert_task(c, n, t);
      created += e.created ? 1 : 0;
      Stmt(c, advance).in(slot + iv).in(slot).in(e.task.id).in(t).in(s.name).one();
    }
    return created;
  });
}

}  // namespace convstore
