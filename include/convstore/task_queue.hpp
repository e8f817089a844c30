// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "convstore/export.hpp"
#include "convstore/store.hpp"
#include "convstore/types.hpp"

namespace convstore {

using TaskId = std::int64_t;

// The order in which due tasks are claimed: high before normal before low
// (stored as 2, 1, 0).
enum class TaskPriority { low, normal, high };

// Where a task is in its life (seed 003 TaskStatus):
//   pending     waiting for its run_at, then for a worker
//   processing  claimed by a worker, which holds a lease on it
//   completed   done (final)
//   failed      failed for good: a permanent failure, or max_attempts used up (final)
//   cancelled   cancelled by cancel() (final)
// A failure with attempts left, or an expired lease, puts a task back to
// pending.
enum class TaskStatus { pending, processing, completed, failed, cancelled };

CONVSTORE_EXPORT std::string_view to_string(TaskPriority p) noexcept;
CONVSTORE_EXPORT std::string_view to_string(TaskStatus s) noexcept;
// Parsers for the names above; throw Error(invalid_argument) naming the value.
CONVSTORE_EXPORT TaskPriority parse_task_priority(std::string_view s);
CONVSTORE_EXPORT TaskStatus parse_task_status(std::string_view s);

// Limits of the queue.
struct TaskLimits {
  // A payload or a result, as JSON text.
  static constexpr std::size_t max_json_bytes = 1024 * 1024;
  // A last error longer than this is cut at a character boundary to at
  // most this many bytes, the last three of them "...".
  static constexpr std::size_t max_error_bytes = 8 * 1024;
  static constexpr int max_attempts = 1000;
  static constexpr std::size_t max_claim = 1000;
  static constexpr std::size_t max_claim_types = 16;
};

// A task as stored.
struct Task {
  TaskId id = 0;
  std::string type;  // "dialog", "user", "system" (seed 003) or the app's own
  TaskPriority priority = TaskPriority::normal;
  TaskStatus status = TaskStatus::pending;
  Json payload = Json::object();
  Json result = nullptr;  // what complete() stored; null before
  Timestamp run_at{};     // not claimed before this time
  int attempts = 0;       // claims so far (each claim is an attempt)
  int max_attempts = 5;
  std::optional<std::string> last_error;  // of the latest failed attempt
  std::optional<std::string> dedupe_key;
  std::optional<std::string> schedule;  // the periodic schedule that enqueued it
  std::optional<std::string> worker;    // who claimed it last
  // The fencing token of the latest claim: heartbeat, complete and fail
  // must present it. Every claim of the task increments it, so a worker
  // whose lease expired and was taken over is refused.
  std::int64_t lease = 0;
  std::optional<Timestamp> lease_expires_at;  // while processing
  Timestamp created_at{};
  Timestamp updated_at{};
  std::optional<Timestamp> started_at;   // the latest claim
  std::optional<Timestamp> finished_at;  // completed, failed or cancelled
};

// Input of TaskQueue::enqueue, and the template of a periodic schedule.
struct NewTask {
  NewTask() = default;
  explicit NewTask(std::string type_, Json payload_ = Json::object())
      : type(std::move(type_)), payload(std::move(payload_)) {}
  // 1..100 characters, no control characters.
  std::string type;
  TaskPriority priority = TaskPriority::normal;
  // Any JSON value up to TaskLimits::max_json_bytes as text (null: {}).
  Json payload = Json::object();
  // Not claimed before this time (years 0001..9999); default: due now.
  std::optional<Timestamp> run_at;
  // Claims before the task fails for good: 1..1000.
  int max_attempts = 5;
  // While a pending or processing task has this key, enqueueing another
  // with it returns that task instead (Enqueued::created false). Free again
  // once it is finished. 1..200 characters; keys starting with "schedule:"
  // are reserved for periodic schedules (Error(invalid_argument)).
  std::optional<std::string> dedupe_key;
};

// What enqueue did: the new task, or the unfinished one with the same
// dedupe key (created false).
struct Enqueued {
  Task task;
  bool created = true;
};

// How TaskQueue::claim picks tasks.
struct ClaimOptions {
  // At most this many tasks: 1..1000.
  std::size_t max = 1;
  // How long the worker holds them unless it sends a heartbeat: 10 ms .. 24 h.
  std::chrono::milliseconds lease = std::chrono::seconds(30);
  // Only tasks of these types (at most 16); empty: any type.
  std::vector<std::string> types;
};

// How TaskQueue::fail retries: the n-th failed attempt waits
// min(base * 2^(n-1), cap), shortened by up to `jitter` of itself at random
// (0: exactly that; 0.5: between half and all of it), so that tasks that
// failed together do not retry together.
struct RetryPolicy {
  std::chrono::milliseconds base = std::chrono::seconds(1);  // >= 0
  std::chrono::milliseconds cap = std::chrono::hours(1);     // >= base, <= 365 days
  double jitter = 0.0;                                       // 0..1
  // False: a permanent failure, no retry whatever the attempts left.
  bool retry = true;
};

// What TaskQueue::list shows: all conditions given must hold.
struct TaskFilter {
  std::optional<TaskStatus> status;
  std::optional<std::string> type;
  std::optional<TaskId> before;  // ids below this (paging: the last id of a page)
};

// Tasks by status.
struct TaskCounts {
  std::int64_t pending = 0;
  std::int64_t processing = 0;
  std::int64_t completed = 0;
  std::int64_t failed = 0;
  std::int64_t cancelled = 0;
};

// A periodic schedule: one task from `task` per slot. Slots are
// [anchor + k * interval, anchor + (k + 1) * interval).
struct TaskSchedule {
  std::string name;
  NewTask task;  // the template (its run_at is the anchor)
  std::chrono::milliseconds interval{};
  Timestamp anchor{};
  Timestamp next_run_at{};  // the start of the next slot to run
  // The start of the last slot that ran: run_periodic() handled it, whether
  // it enqueued a task or found the schedule's previous task still pending
  // or processing and enqueued nothing.
  std::optional<Timestamp> last_run_at;
  // The task that slot enqueued, or the unfinished one it found.
  std::optional<TaskId> last_task_id;
  Timestamp created_at{};
  Timestamp updated_at{};
};

// A durable background task queue (seed 003's worker system), reached as
// store.tasks().
//
// Workers claim due tasks, high priority first, then oldest run_at, then
// oldest id, and hold a lease on each: it must be completed, failed or
// extended by heartbeat() before the lease expires, or another claim takes
// the task over (and counts a new attempt). Every claim bumps the task's
// lease number; heartbeat/complete/fail with an older one throw
// Error(conflict), so a worker that stalled past its lease can never
// overwrite the work of the one that took over.
//
// Claims are exclusive on both backends, across threads and processes:
// PostgreSQL selects with FOR UPDATE SKIP LOCKED (concurrent workers skip
// each other's rows instead of waiting), SQLite claims inside a write
// transaction (one writer at a time).
//
// Clocks: a lease expires by the clock of the caller that checks it (the
// claim or requeue_expired() that sweeps it), against a lease_expires_at set
// by the clock of the worker that claimed or extended it. Workers on several
// hosts need synchronized clocks (NTP): fencing still keeps a worker whose
// clock runs ahead from overwriting anyone's work, but it may take over a
// lease that is still live by the holder's clock, so both then work on the
// task until the old holder's next heartbeat, complete or fail is refused.
//
// Thread safety: safe to use from many threads and processes at once;
// returned values are copies the caller owns.
// Errors: throws convstore::Error. Bad input is Error(invalid_argument) and
// writes nothing; an unknown task id is Error(not_found); a lease that no
// longer holds the task is Error(conflict), with a message saying what
// happened to it (taken over, cancelled, finished).
class CONVSTORE_EXPORT TaskQueue {
 public:
  // Adds a task. With a dedupe_key that a pending or processing task has,
  // returns that task with created false and adds nothing.
  Enqueued enqueue(const NewTask& task);
  // The same for several, in one transaction (all or nothing).
  std::vector<Enqueued> enqueue_many(const std::vector<NewTask>& tasks);

  // Claims up to options.max due tasks for `worker` (a name for
  // monitoring, 1..200 characters): each moves to processing with
  // attempts + 1, a new lease number and a lease until now + options.lease.
  // First re-queues the tasks whose lease expired (see requeue_expired),
  // and takes those too: a task whose lease expired is claimed by the very
  // next claim, on both backends. Returns them by priority, then run_at,
  // then id; empty when none is due.
  std::vector<Task> claim(std::string_view worker, const ClaimOptions& options = {});

  // Extends the lease to now + `lease` (10 ms .. 24 h) and returns the task.
  // Throws Error(conflict) when `lease_number` no longer holds the task
  // (it expired and a claim or requeue_expired() swept it, or the task was
  // cancelled: stop working on it). An expired lease holds until swept.
  Task heartbeat(TaskId id, std::int64_t lease_number, std::chrono::milliseconds lease);
  // Marks the task completed with `result` (any JSON up to 1 MiB as text;
  // null: none). Throws Error(conflict) like heartbeat.
  Task complete(TaskId id, std::int64_t lease_number, const Json& result = nullptr);
  // Records a failed attempt with `error` (valid UTF-8; cut to at most
  // TaskLimits::max_error_bytes, 8 KiB, ending in "..."). With
  // attempts left and policy.retry the task goes back to pending, due after
  // the policy's backoff; otherwise it fails for good. Returns the task.
  // Throws Error(conflict) like heartbeat.
  Task fail(TaskId id, std::int64_t lease_number, std::string_view error,
            const RetryPolicy& policy = {});
  // The same, for the task as claim() returned it.
  Task heartbeat(const Task& claimed, std::chrono::milliseconds lease) {
    return heartbeat(claimed.id, claimed.lease, lease);
  }
  Task complete(const Task& claimed, const Json& result = nullptr) {
    return complete(claimed.id, claimed.lease, result);
  }
  Task fail(const Task& claimed, std::string_view error, const RetryPolicy& policy = {}) {
    return fail(claimed.id, claimed.lease, error, policy);
  }

  // Cancels a pending or processing task and returns it. A processing
  // task's worker learns it at its next heartbeat, complete or fail
  // (Error(conflict) "... was cancelled"); what it already did is not
  // undone. Cancelling a cancelled task is a no-op; a completed or failed
  // one is Error(conflict).
  Task cancel(TaskId id);

  // Puts the processing tasks whose lease expired at or before `at`
  // (lease_expires_at <= at; years 0001..9999) back to pending (keeping their run_at, so they come
  // first among their priority), or fails them for good when they have used all their attempts
  // (their worker probably died on them); returns how many. claim() does this itself; call it from
  // a monitor to recover without claiming.
  std::int64_t requeue_expired(Timestamp at = now());

  // The task, or std::nullopt.
  std::optional<Task> get(TaskId id);
  // Tasks matching `filter`, newest (highest id) first, at most `limit`
  // (1..1000).
  std::vector<Task> list(const TaskFilter& filter = {}, std::size_t limit = 100);
  // How many tasks are in each status.
  TaskCounts counts();
  // Deletes completed, failed and cancelled tasks that finished before
  // `older_than` (years 0001..9999); returns how many.
  std::int64_t purge_finished(Timestamp older_than);

  // ---- periodic tasks ----

  // Creates or replaces the schedule `name` (1..200 characters): one task
  // like `task` every `interval` (1 s .. 366 days). task.run_at anchors the
  // slots (years 0001..9999; default: the Unix epoch, so every 30 minutes
  // means at :00 and :30 UTC); task.dedupe_key must be empty: the tasks of
  // the schedule use "schedule:<name>" (up to 209 characters, the one key
  // allowed past 200). A new schedule's current slot
  // is due at once; a replaced one continues after the last slot it ran.
  TaskSchedule schedule(std::string_view name, const NewTask& task,
                        std::chrono::milliseconds interval);
  // Removes the schedule; its tasks stay. Returns false when there was none.
  bool unschedule(std::string_view name);
  // The schedules, by name.
  std::vector<TaskSchedule> schedules();
  // Enqueues one task for each schedule whose next slot has started by
  // `at` (years 0001..9999), and returns how many it created. Call it from every worker loop:
  // however many threads and processes call it at once, a slot is enqueued
  // once. Slots missed while nobody called run as one (the latest); a slot
  // whose schedule still has a pending or processing task enqueues nothing
  // (at most one unfinished task per schedule, dedupe key
  // "schedule:<name>"). The task's run_at is its slot's start.
  std::int64_t run_periodic(Timestamp at = now());

 private:
  friend class Store;
  explicit TaskQueue(Store::Impl* impl);
  std::int64_t run_periodic_counted(Timestamp at);
  Store::Impl* impl_;
};

// JSON form of a task (timestamps as ISO 8601 strings).
CONVSTORE_EXPORT Json to_json(const Task& t);

}  // namespace convstore
