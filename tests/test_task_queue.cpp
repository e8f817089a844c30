// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <libpq-fe.h>
#include <signal.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>
#include <vector>

#include "support.hpp"

using namespace convstore;
using namespace std::chrono_literals;

namespace {

NewTask task_of(const std::string& type, TaskPriority p = TaskPriority::normal,
                Json payload = Json::object()) {
  NewTask n(type, std::move(payload));
  n.priority = p;
  return n;
}

ClaimOptions up_to(std::size_t max, std::chrono::milliseconds lease = 30s) {
  ClaimOptions o;
  o.max = max;
  o.lease = lease;
  return o;
}

std::vector<TaskId> ids_of(const std::vector<Task>& tasks) {
  std::vector<TaskId> out;
  for (const auto& t : tasks) out.push_back(t.id);
  return out;
}

std::string count_rows(const testing::TestDb& db, const std::string& table = "tasks") {
  return testing::raw_exec(db, "SELECT COUNT(*) FROM " + table);
}

// Moves a task's run_at into the past the way an SQL tool would, so that a
// retry waiting for its backoff is due now.
void make_due(const testing::TestDb& db, TaskId id) {
  testing::raw_exec(db, "UPDATE tasks SET run_at = '2000-01-01T00:00:00.000000Z' WHERE id = " +
                            std::to_string(id));
}

// Claims until `pred` holds for what was claimed, or `limit` passes.
std::vector<Task> claim_until(TaskQueue& q, const std::string& worker, const ClaimOptions& o,
                              std::chrono::seconds limit = 20s) {
  auto until = std::chrono::steady_clock::now() + limit;
  for (;;) {
    auto got = q.claim(worker, o);
    if (!got.empty() || std::chrono::steady_clock::now() > until) return got;
    std::this_thread::sleep_for(20ms);
  }
}

std::vector<std::string> lines_of(const std::string& path) {
  std::vector<std::string> out;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

// Helper processes that are always reaped: those still running when the
// scope ends (a REQUIRE failed before wait()) are killed, never left behind.
class Helpers {
 public:
  Helpers() = default;
  Helpers(const Helpers&) = delete;
  Helpers& operator=(const Helpers&) = delete;
  ~Helpers() {
    for (int pid : pids_) {
      ::kill(pid, SIGKILL);
      testing::wait_helper(pid);
    }
  }
  void spawn(const std::string& args) {
    const int pid = testing::spawn_helper(args);
    REQUIRE(pid > 0);
    pids_.push_back(pid);
  }
  // Waits for every helper; their exit codes.
  std::vector<int> wait() {
    std::vector<int> codes;
    for (int pid : pids_) codes.push_back(testing::wait_helper(pid));
    pids_.clear();
    return codes;
  }

 private:
  std::vector<int> pids_;
};

}  // namespace

TEST_CASE("tasks: priority and status names") {
  for (auto p : {TaskPriority::low, TaskPriority::normal, TaskPriority::high}) {
    CHECK(parse_task_priority(to_string(p)) == p);
  }
  for (auto s : {TaskStatus::pending, TaskStatus::processing, TaskStatus::completed,
                 TaskStatus::failed, TaskStatus::cancelled}) {
    CHECK(parse_task_status(to_string(s)) == s);
  }
  CHECK_ERROR_CODE(parse_task_status("PENDING"), ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(parse_task_priority("urgent"), ErrorCode::invalid_argument);
}

TEST_CASE_TEMPLATE("tasks: claim takes due tasks by priority, then age, with a lease", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& q = store.tasks();
  const Timestamp t0 = now();
  auto with_run_at = [](NewTask n, Timestamp at) {
    n.run_at = at;
    return n;
  };
  TaskId low = q.enqueue(task_of("system", TaskPriority::low)).task.id;
  TaskId older = q.enqueue(with_run_at(task_of("dialog"), t0 - 1h)).task.id;
  TaskId newer = q.enqueue(task_of("dialog", TaskPriority::normal, {{"dialog_id", 7}})).task.id;
  TaskId high = q.enqueue(task_of("user", TaskPriority::high)).task.id;
  TaskId later = q.enqueue(with_run_at(task_of("dialog", TaskPriority::high), t0 + 1h)).task.id;

  Enqueued e = q.enqueue(task_of("app.sync"));
  CHECK(e.created);
  CHECK(e.task.status == TaskStatus::pending);
  CHECK(e.task.attempts == 0);
  CHECK(e.task.max_attempts == 5);
  CHECK(e.task.lease == 0);
  CHECK_FALSE(e.task.lease_expires_at);
  CHECK(e.task.run_at >= t0);
  q.cancel(e.task.id);

  auto first = q.claim("w1", up_to(2));
  CHECK(ids_of(first) == std::vector<TaskId>{high, older});
  for (const auto& t : first) {
    CHECK(t.status == TaskStatus::processing);
    CHECK(t.attempts == 1);
    CHECK(t.lease >= 1);
    CHECK(t.worker == "w1");
    REQUIRE(t.lease_expires_at);
    REQUIRE(t.started_at);
    CHECK(*t.lease_expires_at >= *t.started_at + 30s);
  }
  auto rest = q.claim("w2", up_to(10));
  CHECK(ids_of(rest) == std::vector<TaskId>{newer, low});
  CHECK(rest[0].payload == Json{{"dialog_id", 7}});
  CHECK(q.claim("w3", up_to(10)).empty());  // `later` is not due
  CHECK(q.get(later)->status == TaskStatus::pending);

  TaskCounts c = q.counts();
  CHECK(c.pending == 1);
  CHECK(c.processing == 4);
  CHECK(c.cancelled == 1);
  CHECK(c.completed == 0);

  // A type filter.
  TaskId sys = q.enqueue(task_of("system")).task.id;
  q.enqueue(task_of("user"));
  ClaimOptions only;
  only.max = 5;
  only.types = {"system", "report"};
  CHECK(ids_of(q.claim("w4", only)) == std::vector<TaskId>{sys});
}

TEST_CASE_TEMPLATE("tasks: a dedupe key keeps one unfinished task", B, CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& q = store.tasks();
  NewTask n = task_of("dialog", TaskPriority::normal, {{"dialog", 1}});
  n.dedupe_key = "process-dialog:1";
  Enqueued a = q.enqueue(n);
  CHECK(a.created);
  n.payload = {{"dialog", 2}};
  Enqueued b = q.enqueue(n);
  CHECK_FALSE(b.created);
  CHECK(b.task.id == a.task.id);
  CHECK(b.task.payload == Json{{"dialog", 1}});  // the existing one, unchanged

  // Still one while it is processing; a new one once it is finished.
  auto claimed = q.claim("w", up_to(1));
  REQUIRE(claimed.size() == 1);
  CHECK_FALSE(q.enqueue(n).created);
  q.complete(claimed[0]);
  Enqueued c = q.enqueue(n);
  CHECK(c.created);
  CHECK(c.task.id != a.task.id);

  // In one batch, the second of two with one key is the first.
  NewTask other = task_of("user");
  other.dedupe_key = "k2";
  auto many = q.enqueue_many({other, other, task_of("system")});
  REQUIRE(many.size() == 3);
  CHECK(many[0].created);
  CHECK_FALSE(many[1].created);
  CHECK(many[1].task.id == many[0].task.id);
  CHECK(many[2].created);
  CHECK(count_rows(db) == "4");

  // Concurrent enqueues with one key create one task.
  NewTask racing = task_of("user");
  racing.dedupe_key = "race";
  std::atomic<int> created{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 6; ++i) {
    threads.emplace_back([&] { created += q.enqueue(racing).created ? 1 : 0; });
  }
  for (auto& t : threads) t.join();
  CHECK(created == 1);
  CHECK(count_rows(db) == "5");
}

TEST_CASE_TEMPLATE("tasks: complete and heartbeat need the current lease", B, CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& q = store.tasks();
  TaskId id = q.enqueue(task_of("dialog")).task.id;
  auto claimed = q.claim("w1", up_to(1, 60s));
  REQUIRE(claimed.size() == 1);
  const Task t = claimed[0];

  Task beat = q.heartbeat(t, 10min);
  CHECK(beat.lease == t.lease);
  CHECK(*beat.lease_expires_at >= *t.lease_expires_at + 9min);
  CHECK_ERROR_CODE(q.heartbeat(id, t.lease + 1, 10s), ErrorCode::conflict);
  CHECK_ERROR_CODE(q.complete(id, t.lease + 1), ErrorCode::conflict);
  CHECK_ERROR_CODE(q.complete(id + 100, t.lease), ErrorCode::not_found);

  Task done = q.complete(t, {{"reply", "sent"}});
  CHECK(done.status == TaskStatus::completed);
  CHECK(done.result == Json{{"reply", "sent"}});
  CHECK(done.finished_at);
  CHECK_FALSE(done.lease_expires_at);
  CHECK(q.get(id)->status == TaskStatus::completed);
  // Finished: no second completion, no failure, no heartbeat.
  try {
    q.complete(t);
    FAIL("completed twice");
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::conflict);
    CHECK(std::string(e.what()).find("already completed") != std::string::npos);
  }
  CHECK_ERROR_CODE(q.fail(t, "late"), ErrorCode::conflict);
  CHECK_ERROR_CODE(q.heartbeat(t, 10s), ErrorCode::conflict);
  CHECK(q.get(id)->result == Json{{"reply", "sent"}});
}

TEST_CASE_TEMPLATE("tasks: an expired lease is taken over and the old holder is fenced off", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& q = store.tasks();
  NewTask n = task_of("dialog");
  n.max_attempts = 2;
  TaskId id = q.enqueue(n).task.id;
  auto first = q.claim("dead-worker", up_to(1, 50ms));
  REQUIRE(first.size() == 1);

  // The lease expires; a later claim sweeps it and takes the task over.
  std::vector<Task> second = claim_until(q, "w2", up_to(1, 60s));
  REQUIRE(second.size() == 1);
  CHECK(second[0].id == id);
  CHECK(second[0].attempts == 2);
  CHECK(second[0].lease > first[0].lease);
  CHECK(second[0].worker == "w2");
  REQUIRE(second[0].last_error);
  CHECK(second[0].last_error->find("dead-worker") != std::string::npos);

  // The first worker wakes up: everything it tries is refused.
  try {
    q.complete(first[0], {{"by", "zombie"}});
    FAIL("a stale lease completed the task");
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::conflict);
    CHECK(std::string(e.what()).find("claimed again") != std::string::npos);
  }
  CHECK_ERROR_CODE(q.heartbeat(first[0], 10s), ErrorCode::conflict);
  CHECK_ERROR_CODE(q.fail(first[0], "zombie"), ErrorCode::conflict);
  CHECK(q.get(id)->status == TaskStatus::processing);
  CHECK(q.complete(second[0], {{"by", "w2"}}).result == Json{{"by", "w2"}});

  // A task whose every attempt's lease expires fails for good.
  TaskId poison = q.enqueue(n).task.id;
  REQUIRE(q.claim("a", up_to(1, 10ms)).size() == 1);
  std::this_thread::sleep_for(30ms);
  CHECK(q.requeue_expired() == 1);  // attempt 1 of 2: back to pending
  CHECK(q.get(poison)->status == TaskStatus::pending);
  REQUIRE(q.claim("b", up_to(1, 10ms)).size() == 1);
  CHECK(q.requeue_expired(now() + 1h) == 1);
  Task p = *q.get(poison);
  CHECK(p.status == TaskStatus::failed);
  CHECK(p.attempts == 2);
  CHECK(p.finished_at);
  CHECK_FALSE(p.lease_expires_at);
  CHECK(q.requeue_expired(now() + 1h) == 0);
}

TEST_CASE_TEMPLATE("tasks: the very next claim takes a task whose lease expired", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& q = store.tasks();
  TaskId id = q.enqueue(task_of("dialog")).task.id;
  auto first = q.claim("dead-worker", up_to(1, 10ms));
  REQUIRE(first.size() == 1);
  // Wait on the clock the lease is measured by; then one claim must do.
  while (now() <= *first[0].lease_expires_at) std::this_thread::sleep_for(5ms);
  auto second = q.claim("w2", up_to(1));
  REQUIRE(second.size() == 1);
  CHECK(second[0].id == id);
  CHECK(second[0].attempts == 2);
  CHECK(second[0].worker == "w2");

  // With more room than tasks: the expired one and the pending one.
  auto third = q.claim("w3", up_to(1, 10ms));  // nothing left to claim
  CHECK(third.empty());
  TaskId pending = q.enqueue(task_of("user")).task.id;
  TaskId again = q.enqueue(task_of("dialog", TaskPriority::high)).task.id;
  auto held = q.claim("dead-worker", up_to(1, 10ms));
  REQUIRE(ids_of(held) == std::vector<TaskId>{again});
  while (now() <= *held[0].lease_expires_at) std::this_thread::sleep_for(5ms);
  auto both = q.claim("w4", up_to(5));
  CHECK(ids_of(both) == std::vector<TaskId>{again, pending});

  // requeue_expired takes the leases that expired at or before its time.
  q.complete(second[0]);
  for (const auto& t : both) q.complete(t);
  TaskId last = q.enqueue(task_of("user")).task.id;
  auto mine = q.claim("w5", up_to(1, 1h));
  REQUIRE(ids_of(mine) == std::vector<TaskId>{last});
  CHECK(q.requeue_expired(*mine[0].lease_expires_at - 1us) == 0);
  CHECK(q.requeue_expired(*mine[0].lease_expires_at) == 1);
  CHECK(q.get(last)->status == TaskStatus::pending);
}

TEST_CASE_TEMPLATE("tasks: a lease that expired on the last attempt is refused saying so", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& q = store.tasks();
  NewTask n = task_of("dialog");
  n.max_attempts = 1;
  TaskId id = q.enqueue(n).task.id;
  auto claimed = q.claim("slow-worker", up_to(1, 1h));
  REQUIRE(claimed.size() == 1);
  CHECK(q.requeue_expired(now() + 2h) == 1);
  CHECK(q.get(id)->status == TaskStatus::failed);
  try {
    q.complete(claimed[0]);
    FAIL("completed a task that failed for good");
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::conflict);
    const std::string what = e.what();
    CHECK_MESSAGE(what.find("lease expired") != std::string::npos, what);
    CHECK_MESSAGE(what.find("attempt 1 of 1") != std::string::npos, what);
  }
  // A failure the worker itself reported still says "already failed".
  TaskId other = q.enqueue(n).task.id;
  auto c = q.claim("w", up_to(1));
  REQUIRE(ids_of(c) == std::vector<TaskId>{other});
  q.fail(c[0], "boom");
  try {
    q.complete(c[0]);
    FAIL("completed a failed task");
  } catch (const Error& e) {
    CHECK(std::string(e.what()).find("already failed") != std::string::npos);
  }
}

TEST_CASE_TEMPLATE("tasks: a priority outside the enum in the database is an internal error", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& q = store.tasks();
  TaskId id = q.enqueue(task_of("dialog")).task.id;
  q.schedule("s", NewTask("system"), 1h);
  // The tables' CHECK constraints keep such values out; only an SQL tool
  // that dropped them could store one (SQLite cannot drop a CHECK).
  if (db.backend() != "postgresql") return;
  testing::raw_exec(db, "ALTER TABLE tasks DROP CONSTRAINT tasks_priority_check");
  testing::raw_exec(db, "ALTER TABLE task_schedules DROP CONSTRAINT task_schedules_priority_check");
  testing::raw_exec(db, "UPDATE tasks SET priority = 7");
  testing::raw_exec(db, "UPDATE task_schedules SET priority = 7");
  CHECK_ERROR_CODE(q.get(id), ErrorCode::internal);
  CHECK_ERROR_CODE(q.schedules(), ErrorCode::internal);
}

TEST_CASE_TEMPLATE("tasks: fail retries with exponential backoff, then fails for good", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& q = store.tasks();
  NewTask n = task_of("user");
  n.max_attempts = 4;
  TaskId id = q.enqueue(n).task.id;
  RetryPolicy policy;
  policy.base = 10min;
  policy.cap = 25min;
  // 10, 20, 25 (capped) minutes; the fourth failure is final.
  const std::vector<std::chrono::minutes> waits{10min, 20min, 25min};
  for (int attempt = 1; attempt <= 4; ++attempt) {
    CAPTURE(attempt);
    auto claimed = q.claim("w", up_to(1));
    REQUIRE(claimed.size() == 1);
    CHECK(claimed[0].attempts == attempt);
    const Timestamp before = now();
    Task f = q.fail(claimed[0], "telegram: 429 Too Many Requests", policy);
    const Timestamp after = now();
    CHECK(f.last_error == "telegram: 429 Too Many Requests");
    CHECK_FALSE(f.lease_expires_at);
    if (attempt < 4) {
      const auto wait = waits[static_cast<std::size_t>(attempt - 1)];
      CHECK(f.status == TaskStatus::pending);
      CHECK(f.run_at >= before + wait);
      CHECK(f.run_at <= after + wait);
      CHECK_FALSE(f.finished_at);
      CHECK(q.claim("w", up_to(1)).empty());  // waiting for its backoff
      make_due(db, id);
    } else {
      CHECK(f.status == TaskStatus::failed);
      CHECK(f.finished_at);
    }
  }
  CHECK(q.claim("w", up_to(1)).empty());

  // Jitter shortens the wait by up to its share; retry = false is final.
  RetryPolicy jittery;
  jittery.base = 1h;
  jittery.jitter = 0.5;
  RetryPolicy permanent;
  permanent.retry = false;
  for (int i = 0; i < 5; ++i) {
    TaskId j = q.enqueue(task_of("user")).task.id;
    auto c = q.claim("w", up_to(1));
    REQUIRE(c.size() == 1);
    const Timestamp before = now();
    Task f = q.fail(c[0], "flaky", i < 4 ? jittery : permanent);
    if (i < 4) {
      CHECK(f.run_at >= before + 30min);
      CHECK(f.run_at <= now() + 1h);
      q.cancel(j);
    } else {
      CHECK(f.status == TaskStatus::failed);
      CHECK(f.attempts == 1);
    }
  }

  // A long error is cut at a character boundary.
  q.enqueue(task_of("user"));
  auto c = q.claim("w", up_to(1));
  REQUIRE(c.size() == 1);
  std::string huge;
  while (huge.size() < 20000) huge += "ошибка ";
  Task f = q.fail(c[0], huge, permanent);
  REQUIRE(f.last_error);
  CHECK(f.last_error->size() <= TaskLimits::max_error_bytes);
  CHECK(f.last_error->size() > TaskLimits::max_error_bytes - 8);
  CHECK(f.last_error->compare(f.last_error->size() - 3, 3, "...") == 0);
  CHECK(huge.compare(0, f.last_error->size() - 3, *f.last_error, 0, f.last_error->size() - 3) == 0);
}

TEST_CASE_TEMPLATE("tasks: cancel", B, CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& q = store.tasks();
  TaskId pending = q.enqueue(task_of("dialog")).task.id;
  Task c = q.cancel(pending);
  CHECK(c.status == TaskStatus::cancelled);
  CHECK(c.finished_at);
  CHECK(q.cancel(pending).status == TaskStatus::cancelled);  // again: a no-op
  CHECK(q.claim("w", up_to(5)).empty());

  // A processing task: its worker is told at its next call.
  TaskId running = q.enqueue(task_of("dialog")).task.id;
  auto claimed = q.claim("w", up_to(1));
  REQUIRE(claimed.size() == 1);
  q.cancel(running);
  try {
    q.heartbeat(claimed[0], 10s);
    FAIL("heartbeat of a cancelled task");
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::conflict);
    CHECK(std::string(e.what()).find("cancelled") != std::string::npos);
  }
  CHECK_ERROR_CODE(q.complete(claimed[0]), ErrorCode::conflict);
  CHECK(q.get(running)->status == TaskStatus::cancelled);

  // A finished task cannot be cancelled; an unknown one is not found.
  q.enqueue(task_of("dialog"));
  auto done = q.claim("w", up_to(1));
  REQUIRE(done.size() == 1);
  q.complete(done[0]);
  CHECK_ERROR_CODE(q.cancel(done[0].id), ErrorCode::conflict);
  CHECK(q.get(done[0].id)->status == TaskStatus::completed);
  CHECK_ERROR_CODE(q.cancel(done[0].id + 100), ErrorCode::not_found);

  // A cancelled dedupe key is free again.
  NewTask keyed = task_of("dialog");
  keyed.dedupe_key = "k";
  TaskId first = q.enqueue(keyed).task.id;
  q.cancel(first);
  CHECK(q.enqueue(keyed).task.id != first);
}

TEST_CASE_TEMPLATE("tasks: bad input is refused and nothing is written", B, CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& q = store.tasks();
  auto with = [](auto change) {
    NewTask n("dialog");
    change(n);
    return n;
  };
  auto message_of = [](auto&& call) {
    try {
      call();
    } catch (const Error& e) {
      return std::string(to_string(e.code())) + ": " + e.what();
    }
    return std::string("no error");
  };
  CHECK_ERROR_CODE(q.enqueue(with([](NewTask& n) { n.type = ""; })), ErrorCode::invalid_argument);
  CHECK(message_of([&] { q.enqueue(with([](NewTask& n) { n.type = ""; })); }) ==
        "invalid_argument: task type is empty");
  CHECK_ERROR_CODE(q.enqueue(with([](NewTask& n) { n.type = std::string(101, 't'); })),
                   ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(q.enqueue(with([](NewTask& n) { n.type = "a\nb"; })),
                   ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(q.enqueue(with([](NewTask& n) { n.priority = static_cast<TaskPriority>(-1); })),
                   ErrorCode::invalid_argument);
  CHECK(message_of([&] {
          q.enqueue(with([](NewTask& n) { n.priority = static_cast<TaskPriority>(3); }));
        }).find("task priority 3 is outside") != std::string::npos);
  CHECK_ERROR_CODE(q.enqueue(with([](NewTask& n) { n.max_attempts = 0; })),
                   ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(q.enqueue(with([](NewTask& n) { n.max_attempts = 1001; })),
                   ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(q.enqueue(with([](NewTask& n) { n.dedupe_key = ""; })),
                   ErrorCode::invalid_argument);
  // The prefix of the schedules' keys is theirs alone.
  CHECK(message_of([&] {
          q.enqueue(with([](NewTask& n) { n.dedupe_key = "schedule:process_dialogs"; }));
        }).find("reserved for periodic schedules") != std::string::npos);
  CHECK_ERROR_CODE(q.enqueue(with([](NewTask& n) {
    n.payload = {{"k", std::string("a\0b", 3)}};
  })),
                   ErrorCode::invalid_argument);
  const std::string mib(TaskLimits::max_json_bytes, 'x');
  CHECK(message_of([&] {
          q.enqueue(with([&](NewTask& n) { n.payload = mib; }));
        }).find("task payload is 1048578 bytes of JSON (at most 1048576") != std::string::npos);
  // One bad task in a batch: none of it is written.
  CHECK_ERROR_CODE(q.enqueue_many({NewTask("ok"), with([](NewTask& n) { n.type = ""; })}),
                   ErrorCode::invalid_argument);
  CHECK(count_rows(db) == "0");

  // Within the limit is fine.
  Enqueued big = q.enqueue(with([&](NewTask& n) { n.payload = mib.substr(0, mib.size() - 2); }));
  CHECK(big.task.payload.get<std::string>().size() == mib.size() - 2);
  q.cancel(big.task.id);

  TaskId id = q.enqueue(NewTask("dialog")).task.id;
  CHECK_ERROR_CODE(q.claim("", up_to(1)), ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(q.claim("w", up_to(0)), ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(q.claim("w", up_to(1001)), ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(q.claim("w", up_to(1, 0ms)), ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(q.claim("w", up_to(1, -5s)), ErrorCode::invalid_argument);
  CHECK(message_of([&] { q.claim("w", up_to(1, 25h)); }) ==
        "invalid_argument: task lease of 90000000 ms is outside 10 ms .. 24 h");
  ClaimOptions bad_type;
  bad_type.types = {""};
  CHECK_ERROR_CODE(q.claim("w", bad_type), ErrorCode::invalid_argument);
  CHECK(q.get(id)->status == TaskStatus::pending);  // nothing was claimed

  auto claimed = q.claim("w", up_to(1));
  REQUIRE(claimed.size() == 1);
  const Task t = claimed[0];
  CHECK_ERROR_CODE(q.heartbeat(t, 0ms), ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(q.complete(t.id, 0), ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(q.complete(t.id, -1), ErrorCode::invalid_argument);
  CHECK(message_of([&] { q.complete(t.id + 100, 1); }) ==
        "not_found: task " + std::to_string(t.id + 100) + " not found");
  CHECK_ERROR_CODE(q.fail(t.id + 100, 1, "x"), ErrorCode::not_found);
  CHECK_ERROR_CODE(q.heartbeat(t.id + 100, 1, 10s), ErrorCode::not_found);
  CHECK_ERROR_CODE(q.complete(t, Json(mib)), ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(q.fail(t, std::string("bad \xff utf-8")), ErrorCode::invalid_argument);
  RetryPolicy p;
  p.base = -1s;
  CHECK_ERROR_CODE(q.fail(t, "x", p), ErrorCode::invalid_argument);
  p.base = 2h;
  p.cap = 1h;
  CHECK_ERROR_CODE(q.fail(t, "x", p), ErrorCode::invalid_argument);
  p = RetryPolicy{};
  p.jitter = 1.5;
  CHECK_ERROR_CODE(q.fail(t, "x", p), ErrorCode::invalid_argument);
  // The task is untouched by all of that.
  Task still = *q.get(t.id);
  CHECK(still.status == TaskStatus::processing);
  CHECK(still.lease == t.lease);
  CHECK(still.lease_expires_at == t.lease_expires_at);
  CHECK_FALSE(still.last_error);
  CHECK(still.result.is_null());

  CHECK_ERROR_CODE(q.list({}, 0), ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(q.schedule("", NewTask("x"), 1h), ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(q.schedule("s", NewTask("x"), 999ms), ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(q.schedule("s", NewTask("x"), 24h * 367), ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(q.schedule("s", with([](NewTask& n) { n.dedupe_key = "k"; }), 1h),
                   ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(q.schedule("s", with([](NewTask& n) { n.type = ""; }), 1h),
                   ErrorCode::invalid_argument);
  CHECK(count_rows(db, "task_schedules") == "0");

  // A task enqueued inside a failed transaction is gone with it.
  CHECK_THROWS_AS(store.transaction([&] {
    q.enqueue(NewTask("dialog"));
    throw std::runtime_error("the app changed its mind");
  }),
                  std::runtime_error);
  CHECK(count_rows(db) == "2");
}

TEST_CASE_TEMPLATE("tasks: times outside the years 0001..9999 are refused and write nothing", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& q = store.tasks();
  const Timestamp last = parse_timestamp("9999-12-31T23:59:59.999999Z");
  const Timestamp first = parse_timestamp("0001-01-01T00:00:00Z");
  const Timestamp too_late = last + 1us;
  const Timestamp far_too_late = last + 24h * 365 * 44;  // the year 10043
  const Timestamp too_early = first - 1us;
  TaskId ok = q.enqueue(NewTask("dialog")).task.id;
  for (Timestamp bad : {too_late, far_too_late, too_early}) {
    CAPTURE(bad.time_since_epoch().count());
    NewTask n("dialog");
    n.run_at = bad;
    CHECK_ERROR_CODE(q.enqueue(n), ErrorCode::invalid_argument);
    CHECK_ERROR_CODE(q.enqueue_many({NewTask("dialog"), n}), ErrorCode::invalid_argument);
    CHECK_ERROR_CODE(q.schedule("s", n, 1h), ErrorCode::invalid_argument);
    CHECK_ERROR_CODE(q.requeue_expired(bad), ErrorCode::invalid_argument);
    CHECK_ERROR_CODE(q.purge_finished(bad), ErrorCode::invalid_argument);
    CHECK_ERROR_CODE(q.run_periodic(bad), ErrorCode::invalid_argument);
  }
  CHECK(count_rows(db) == "1");
  CHECK(count_rows(db, "task_schedules") == "0");
  // The edges themselves are fine.
  NewTask edge("dialog");
  edge.run_at = last;
  TaskId late = q.enqueue(edge).task.id;
  CHECK(q.get(late)->run_at == last);
  edge.run_at = first;
  TaskId early = q.enqueue(edge).task.id;
  // Claims and listings still work: the earliest first, the latest not due.
  auto claimed = q.claim("w", up_to(5));
  CHECK(ids_of(claimed) == std::vector<TaskId>{early, ok});
  CHECK(ids_of(q.list()) == std::vector<TaskId>{early, late, ok});
  CHECK(q.requeue_expired(last) == 2);
  CHECK(q.purge_finished(last) == 0);
}

TEST_CASE_TEMPLATE("tasks: list, get, counts and purge", B, CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& q = store.tasks();
  std::vector<TaskId> ids;
  for (int i = 0; i < 5; ++i) {
    ids.push_back(q.enqueue(NewTask(i % 2 == 0 ? "dialog" : "user", {{"i", i}})).task.id);
  }
  CHECK_FALSE(q.get(ids.back() + 1));
  auto all = q.list();
  CHECK(ids_of(all) == std::vector<TaskId>{ids[4], ids[3], ids[2], ids[1], ids[0]});
  TaskFilter dialogs;
  dialogs.type = "dialog";
  CHECK(ids_of(q.list(dialogs)) == std::vector<TaskId>{ids[4], ids[2], ids[0]});
  dialogs.before = ids[4];
  CHECK(ids_of(q.list(dialogs, 1)) == std::vector<TaskId>{ids[2]});

  auto claimed = q.claim("w", up_to(2));
  REQUIRE(claimed.size() == 2);
  q.complete(claimed[0], {{"ok", true}});
  q.fail(claimed[1], "no", RetryPolicy{1s, 1s, 0, false});
  q.cancel(ids[4]);
  TaskFilter finished;
  finished.status = TaskStatus::completed;
  CHECK(ids_of(q.list(finished)) == std::vector<TaskId>{claimed[0].id});
  TaskCounts c = q.counts();
  CHECK(c.pending == 2);
  CHECK(c.processing == 0);
  CHECK(c.completed == 1);
  CHECK(c.failed == 1);
  CHECK(c.cancelled == 1);
  CHECK(to_json(*q.get(claimed[0].id))["result"] == Json{{"ok", true}});
  CHECK(to_json(*q.get(claimed[0].id))["status"] == "completed");

  CHECK(q.purge_finished(now() - 1h) == 0);
  CHECK(q.purge_finished(now() + 1s) == 3);
  CHECK(q.counts().pending == 2);
  CHECK(count_rows(db) == "2");
}

TEST_CASE_TEMPLATE("tasks: periodic schedules enqueue each slot once", B, CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& q = store.tasks();
  // Slots of an hour, anchored five hours ago: the current slot starts at t0.
  const Timestamp t0 = now();
  NewTask tmpl("system", {{"job", "process_dialogs"}});
  tmpl.run_at = t0 - 5h;
  tmpl.priority = TaskPriority::high;
  TaskSchedule s = q.schedule("process_dialogs", tmpl, 1h);
  CHECK(s.next_run_at == t0);
  CHECK(s.interval == 1h);
  CHECK(s.anchor == t0 - 5h);
  CHECK_FALSE(s.last_run_at);

  CHECK(q.run_periodic(t0 - 1s) == 0);  // not started yet
  CHECK(q.run_periodic(t0 + 1min) == 1);
  CHECK(q.run_periodic(t0 + 2min) == 0);  // that slot ran
  auto tasks = q.list();
  REQUIRE(tasks.size() == 1);
  CHECK(tasks[0].type == "system");
  CHECK(tasks[0].priority == TaskPriority::high);
  CHECK(tasks[0].payload == Json{{"job", "process_dialogs"}});
  CHECK(tasks[0].schedule == "process_dialogs");
  CHECK(tasks[0].dedupe_key == "schedule:process_dialogs");
  CHECK(tasks[0].run_at == t0);

  // The next slot while the previous task is still pending: nothing more.
  CHECK(q.run_periodic(t0 + 1h + 1min) == 0);
  CHECK(q.list().size() == 1);
  auto claimed = q.claim("w", up_to(1));
  REQUIRE(claimed.size() == 1);
  q.complete(claimed[0]);
  CHECK(q.run_periodic(t0 + 1h + 2min) == 0);  // that slot was covered
  // Slots missed while nobody called run as one, the latest.
  CHECK(q.run_periodic(t0 + 5h + 30min) == 1);
  CHECK(q.list()[0].run_at == t0 + 5h);
  s = q.schedules().at(0);
  CHECK(s.last_run_at == t0 + 5h);
  CHECK(s.next_run_at == t0 + 6h);
  CHECK(s.last_task_id == q.list()[0].id);

  // Replacing the schedule keeps its place; unscheduling keeps its tasks.
  tmpl.payload = {{"job", "v2"}};
  s = q.schedule("process_dialogs", tmpl, 2h);
  CHECK(s.next_run_at == t0 + 7h);  // slots of 2 h from t0 - 5h: the one after t0 + 5h
  CHECK(s.task.payload == Json{{"job", "v2"}});
  q.cancel(q.list()[0].id);
  CHECK(q.run_periodic(t0 + 7h) == 1);
  CHECK(q.list()[0].payload == Json{{"job", "v2"}});
  NewTask epoch("system");
  q.schedule("every_30_min", epoch, 30min);
  auto names = q.schedules();
  REQUIRE(names.size() == 2);
  CHECK(names[0].name == "every_30_min");
  CHECK(names[0].anchor == Timestamp{});
  CHECK(names[0].next_run_at <= now());
  CHECK((names[0].next_run_at.time_since_epoch() % 30min).count() == 0);
  CHECK(q.unschedule("process_dialogs"));
  CHECK_FALSE(q.unschedule("process_dialogs"));
  CHECK(q.schedules().size() == 1);
  CHECK(count_rows(db) == "3");
}

TEST_CASE_TEMPLATE("tasks: schedule() inserts again when the row it waited for is deleted", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& q = store.tasks();
  NewTask tmpl("system", {{"v", 1}});
  q.schedule("s", tmpl, 1h);
  tmpl.payload = {{"v", 2}};
  if (db.backend() == "postgresql") {
    // Another session holds the schedule row, so that schedule()'s INSERT
    // finds it (DO NOTHING) and its SELECT ... FOR UPDATE waits; then that
    // session deletes the row and commits: the SELECT finds nothing.
    PGconn* other = PQconnectdb(db.url().c_str());
    REQUIRE(PQstatus(other) == CONNECTION_OK);
    auto exec = [&](const char* sql) {
      PGresult* r = PQexec(other, sql);
      const auto status = PQresultStatus(r);
      PQclear(r);
      return status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK;
    };
    REQUIRE(exec("BEGIN"));
    REQUIRE(exec("SELECT name FROM task_schedules WHERE name = 's' FOR UPDATE"));
    std::optional<TaskSchedule> replaced;
    std::string error;
    std::thread t([&] {
      try {
        replaced = q.schedule("s", tmpl, 2h);
      } catch (const std::exception& e) {
        error = e.what();
      }
    });
    const std::string waiting =
        fmt::format("SELECT COUNT(*) FROM pg_stat_activity WHERE {} = ANY(pg_blocking_pids(pid))",
                    PQbackendPID(other));
    auto until = std::chrono::steady_clock::now() + 30s;
    while (testing::raw_exec(db, waiting) == "0" && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(5ms);
    }
    const bool blocked = testing::raw_exec(db, waiting) != "0";
    CHECK(exec("DELETE FROM task_schedules WHERE name = 's'"));
    CHECK(exec("COMMIT"));
    PQfinish(other);
    t.join();
    REQUIRE(blocked);
    CHECK(error.empty());
    REQUIRE(replaced);
    CHECK(replaced->name == "s");
    CHECK(replaced->interval == 2h);
    CHECK(replaced->task.payload == Json{{"v", 2}});
    CHECK_FALSE(replaced->last_run_at);
  } else {
    // One writer at a time: the row cannot vanish in between.
    CHECK(q.unschedule("s"));
    CHECK(q.schedule("s", tmpl, 2h).interval == 2h);
  }
  auto all = q.schedules();
  REQUIRE(all.size() == 1);
  CHECK(all[0].interval == 2h);
  CHECK(all[0].task.payload == Json{{"v", 2}});
}

TEST_CASE_TEMPLATE("tasks: schedulers in several threads and two processes enqueue a slot once", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& q = store.tasks();
  const Timestamp t0 = now();
  NewTask tmpl("system");
  tmpl.run_at = t0 - 10h;
  q.schedule("a", tmpl, 1h);
  q.schedule("b", tmpl, 30min);
  // Every time a caller advances a schedule, as an SQL tool would see it:
  // a slot must be advanced once, whoever runs it. (Without the lock two
  // callers can both run a slot: the second finds the first's task by its
  // dedupe key and creates nothing, so only this shows it.)
  testing::raw_exec(db, "CREATE TABLE advances (name TEXT NOT NULL, slot TEXT)");
  if (db.backend() == "postgresql") {
    testing::raw_exec(db,
                      "CREATE FUNCTION note_advance() RETURNS trigger LANGUAGE plpgsql AS $$ "
                      "BEGIN INSERT INTO advances VALUES (NEW.name, NEW.last_run_at::text); "
                      "RETURN NEW; END $$");
    testing::raw_exec(db,
                      "CREATE TRIGGER note_advance AFTER UPDATE ON task_schedules FOR EACH ROW "
                      "EXECUTE FUNCTION note_advance()");
  } else {
    testing::raw_exec(db,
                      "CREATE TRIGGER note_advance AFTER UPDATE ON task_schedules BEGIN INSERT "
                      "INTO advances VALUES (NEW.name, NEW.last_run_at); END");
  }
  const std::string out = "/tmp/convstore_periodic_" + std::to_string(getpid()) + "_" + B::name;
  std::remove(out.c_str());
  for (int round = 0; round < 3; ++round) {
    CAPTURE(round);
    const Timestamp at = t0 + round * 1h + 1min;
    Helpers helpers;
    for (int i = 0; i < 2; ++i) {
      helpers.spawn(
          fmt::format("periodic '{}' {} 20 {}", db.url(), at.time_since_epoch().count(), out));
    }
    std::atomic<std::int64_t> created{0};
    std::mutex mu;
    std::vector<std::string> errors;
    std::vector<std::thread> threads;
    for (int i = 0; i < 3; ++i) {
      threads.emplace_back([&] {
        try {
          for (int k = 0; k < 20; ++k) created += q.run_periodic(at);
        } catch (const std::exception& e) {
          std::lock_guard lock(mu);
          errors.push_back(e.what());
        }
      });
    }
    for (auto& t : threads) t.join();
    for (int code : helpers.wait()) CHECK(code == 0);
    CHECK(errors.empty());
    for (const auto& e : errors) MESSAGE(e);
    for (const auto& line : lines_of(out)) created += std::stoll(line);
    std::remove(out.c_str());
    CHECK(created == 2);  // one task per schedule
    CHECK(q.counts().pending == 2);
    // Each schedule advanced once in this round, each slot once in all.
    CHECK(testing::raw_exec(db, "SELECT COUNT(*) FROM advances") ==
          std::to_string(2 * (round + 1)));
    CHECK(testing::raw_exec(db,
                            "SELECT COUNT(*) FROM (SELECT name, slot FROM advances GROUP BY "
                            "name, slot HAVING COUNT(*) > 1) twice") == "0");
    // Finish them so that the next slot may enqueue again.
    for (const auto& t : q.list()) {
      if (t.status == TaskStatus::pending) q.cancel(t.id);
    }
  }
  CHECK(count_rows(db) == "6");
}

TEST_CASE_TEMPLATE("tasks: worker threads with expiring leases: each task done once", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  Options o;
  o.pool_size = 6;
  auto store = db.open(o);
  auto& q = store.tasks();
  constexpr int kTasks = 120;
  std::vector<NewTask> batch;
  for (int i = 0; i < kTasks; ++i) {
    NewTask n("dialog", {{"i", i}});
    n.priority = static_cast<TaskPriority>(i % 3);
    batch.push_back(n);
  }
  q.enqueue_many(batch);

  // Every claim and every completion, from every thread. Instants are the
  // workers' own steady clock, so that the checks depend on the order of
  // events only, never on how fast a loaded machine runs them.
  using Steady = std::chrono::steady_clock;
  struct Claim {
    std::int64_t lease;
    std::string worker;
    Steady::time_point claimed;  // when claim() returned it
    // When the holder sent its last heartbeat or completion that succeeded.
    std::optional<Steady::time_point> last_ok;
  };
  std::mutex mu;
  std::map<TaskId, std::vector<Claim>> claims;
  std::map<TaskId, int> completions;
  std::atomic<int> refused{0};
  std::vector<std::string> errors;
  auto succeeded = [&](TaskId id, std::int64_t lease, Steady::time_point sent) {
    std::lock_guard lock(mu);
    for (auto& c : claims[id]) {
      if (c.lease == lease) c.last_ok = sent;
    }
  };
  // Worker 0 abandons every third task it claims (its lease of 150 ms runs
  // out); the others heartbeat and complete.
  auto work = [&](int me) {
    const std::string name = "w" + std::to_string(me);
    std::vector<Task> abandoned;
    auto until = std::chrono::steady_clock::now() + 60s;
    int n = 0;
    while (std::chrono::steady_clock::now() < until) {
      auto got = q.claim(name, up_to(2, me == 0 ? 150ms : 20s));
      const auto claimed_at = Steady::now();
      if (got.empty()) {
        TaskCounts c = q.counts();
        if (c.pending == 0 && c.processing == 0) break;
        std::this_thread::sleep_for(10ms);
        continue;
      }
      for (const Task& t : got) {
        {
          std::lock_guard lock(mu);
          claims[t.id].push_back({t.lease, name, claimed_at, std::nullopt});
        }
        if (me == 0 && n++ % 3 == 0) {
          abandoned.push_back(t);
          continue;
        }
        try {
          // On a slow machine worker 0's lease may run out first: then
          // this is refused like an abandoned task's completion.
          auto sent = Steady::now();
          q.heartbeat(t, 20s);
          succeeded(t.id, t.lease, sent);
          sent = Steady::now();
          q.complete(t, {{"worker", name}});
          succeeded(t.id, t.lease, sent);
          std::lock_guard lock(mu);
          ++completions[t.id];
        } catch (const Error& e) {
          if (e.code() != ErrorCode::conflict) throw;
          ++refused;
        }
      }
    }
    // The abandoned ones were taken over: too late to finish them.
    for (const Task& t : abandoned) {
      try {
        const auto sent = Steady::now();
        q.complete(t, {{"worker", name}});
        succeeded(t.id, t.lease, sent);
        std::lock_guard lock(mu);
        ++completions[t.id];
      } catch (const Error& e) {
        if (e.code() != ErrorCode::conflict) throw;
        ++refused;
      }
    }
  };
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&, i] {
      try {
        work(i);
      } catch (const std::exception& e) {
        std::lock_guard lock(mu);
        errors.push_back(e.what());
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK(errors.empty());
  for (const auto& e : errors) MESSAGE(e);

  CHECK(q.counts().completed == kTasks);
  CHECK(completions.size() == static_cast<std::size_t>(kTasks));
  for (const auto& [id, count] : completions) CHECK_MESSAGE(count == 1, "task " << id);
  int taken_over = 0;
  for (auto& [id, list] : claims) {
    std::sort(list.begin(), list.end(),
              [](const Claim& a, const Claim& b) { return a.lease < b.lease; });
    Task t = *q.get(id);
    CHECK(t.status == TaskStatus::completed);
    CHECK(t.attempts == static_cast<int>(list.size()));
    CHECK(t.lease == list.back().lease);
    CHECK(t.result["worker"] == list.back().worker);
    // No two holders at once: once a claim had taken the task over, nothing
    // the previous holder sent succeeded (fencing). Whatever of its calls
    // succeeded was sent before the new claim returned.
    for (std::size_t k = 1; k < list.size(); ++k) {
      if (list[k - 1].last_ok) {
        CHECK_MESSAGE(*list[k - 1].last_ok < list[k].claimed,
                      "task " << id << ": lease " << list[k - 1].lease
                              << " still succeeded after lease " << list[k].lease
                              << " was claimed");
      }
      ++taken_over;
    }
  }
  CHECK(taken_over == refused);
}

TEST_CASE_TEMPLATE("tasks: threads and two processes complete every task exactly once", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  Options o;
  o.pool_size = 4;
  auto store = db.open(o);
  auto& q = store.tasks();
  constexpr int kTasks = 300;
  std::vector<NewTask> batch;
  for (int i = 0; i < kTasks; ++i) {
    NewTask n(i % 2 == 0 ? "dialog" : "user", {{"i", i}});
    n.priority = static_cast<TaskPriority>(i % 3);
    batch.push_back(n);
  }
  // Not due until both helper processes are up, so that all three
  // processes start claiming together.
  for (auto& n : batch) n.run_at = now() + 1h;
  q.enqueue_many(batch);
  const std::string out = "/tmp/convstore_work_" + std::to_string(getpid()) + "_" + B::name;
  std::remove(out.c_str());
  Helpers helpers;  // killed if a REQUIRE below fails
  for (const char* name : {"p1", "p2"}) {
    helpers.spawn(fmt::format("work '{}' {} 2 {}", db.url(), name, out));
  }
  auto until = std::chrono::steady_clock::now() + 30s;
  while (lines_of(out).size() < 2 && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(20ms);
  }
  REQUIRE(lines_of(out).size() == 2);
  testing::raw_exec(db, "UPDATE tasks SET run_at = '2000-01-01T00:00:00.000000Z'");
  // Two workers in this process as well.
  std::mutex mu;
  std::vector<std::string> lines;
  std::vector<std::string> errors;
  auto work = [&](const std::string& worker) {
    for (;;) {
      auto claimed = q.claim(worker, up_to(2));
      if (claimed.empty()) {
        if (q.counts().pending == 0) return;
        std::this_thread::sleep_for(5ms);
        continue;
      }
      for (const auto& t : claimed) {
        {
          std::lock_guard lock(mu);
          lines.push_back(fmt::format("claim {} {} {}", t.id, t.lease, worker));
        }
        std::this_thread::sleep_for(1ms);  // the work
        q.complete(t, {{"worker", worker}});
        std::lock_guard lock(mu);
        lines.push_back(fmt::format("done {} {}", t.id, worker));
      }
    }
  };
  std::vector<std::thread> threads;
  for (int i = 0; i < 2; ++i) {
    threads.emplace_back([&, i] {
      // An exception must not escape a thread (std::terminate): recorded,
      // checked below.
      try {
        work("t/" + std::to_string(i));
      } catch (const std::exception& e) {
        std::lock_guard lock(mu);
        errors.push_back(e.what());
      }
    });
  }
  for (auto& t : threads) t.join();
  for (int code : helpers.wait()) CHECK(code == 0);
  CHECK(errors.empty());
  for (const auto& e : errors) MESSAGE(e);
  for (const auto& line : lines_of(out)) lines.push_back(line);
  std::remove(out.c_str());

  std::map<TaskId, int> claimed, done;
  std::map<TaskId, std::string> done_by;
  std::set<std::string> workers;
  for (const auto& line : lines) {
    std::istringstream in(line);
    std::string what, worker;
    TaskId id = 0;
    in >> what;
    if (what == "ready") continue;
    in >> id;
    if (what == "claim") {
      ++claimed[id];
    } else {
      in >> worker;
      ++done[id];
      done_by[id] = worker;
      workers.insert(worker.substr(0, worker.find('/')));
    }
  }
  CHECK(claimed.size() == static_cast<std::size_t>(kTasks));
  CHECK(done.size() == static_cast<std::size_t>(kTasks));
  for (const auto& [id, n] : claimed) CHECK_MESSAGE(n == 1, "task " << id << " claimed " << n);
  for (const auto& [id, n] : done) CHECK_MESSAGE(n == 1, "task " << id << " done " << n);
  // The store agrees: each completed once, by the worker that said so.
  TaskCounts c = q.counts();
  CHECK(c.completed == kTasks);
  CHECK(c.pending + c.processing + c.failed + c.cancelled == 0);
  for (const auto& [id, worker] : done_by) {
    Task t = *q.get(id);
    CHECK(t.attempts == 1);
    CHECK(t.result["worker"] == worker);
  }
  // Several processes took part (usually all three; SQLite's busy handler
  // does not promise a writer its turn, so one may find every task taken).
  CHECK_MESSAGE(workers.size() >= 2, fmt::format("{}", fmt::join(workers, ",")));
}
