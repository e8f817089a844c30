// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "convstore/export.hpp"
#include "convstore/store.hpp"
#include "convstore/types.hpp"

namespace convstore {

// What retention does with a completed conversation past its age:
//   remove     delete it with its messages, snapshots, questions, dialog,
//              review items and conversation-scoped agent state
//   archive    move it, its messages, snapshots and questions into the
//              archived_* tables (same columns, plus archived_at), then
//              delete it as `remove` does
//   anonymize  keep every row, count and token count, but blank the text:
//              message content (''), tool arguments (NULL) and metadata
//              ({}), snapshot data ({}), question and answer text; the
//              conversation records anonymized_at and is not touched again
enum class RetentionAction { remove, archive, anonymize };

CONVSTORE_EXPORT std::string_view to_string(RetentionAction a) noexcept;
// "remove" (or "delete"), "archive", "anonymize"; else Error(invalid_argument).
CONVSTORE_EXPORT RetentionAction parse_retention_action(std::string_view s);

// What a retention run does. Every part is optional; an empty policy does
// nothing. A conversation's last activity is its updated_at (every append
// and update moves it). Conversations under a legal hold, and those of a
// user under one, are never touched by any part.
struct RetentionPolicy {
  // Completed conversations last active before now - completed_older_than
  // get completed_action.
  std::optional<std::chrono::milliseconds> completed_older_than;
  RetentionAction completed_action = RetentionAction::remove;
  // Active conversations last active before now - abandon_idle_after become
  // abandoned (version + 1, updated_at = now).
  std::optional<std::chrono::milliseconds> abandon_idle_after;
  // Active conversations keep only their newest N messages (N >= 1), never
  // losing a system message nor any message of the newest turn (from the
  // newest user message on; the newest message when there is no user
  // message). message_count is set to what is left; version + 1.
  std::optional<std::size_t> keep_last_messages;
  // Only conversations of this channel / agent (the conversation's agent).
  std::optional<std::string> channel;
  std::optional<std::string> agent;
  // Session-scoped agent state whose conversation (by key) no longer exists,
  // counting the conversations this run deletes or archives (as
  // AgentStateStore::cleanup_orphaned_states). Conversation-scoped state
  // goes with its conversation by itself; named scopes are never orphans.
  bool remove_orphans = false;
  // Expired rows of the database SessionCache (entries and their fields,
  // dead waiters; lease rows are kept, they carry the fence), and web
  // sessions past their refresh expiry or revoked (WebSessionStore::
  // purge_expired at now).
  bool remove_expired_cache = false;
  // Tasks that finished before now - this (TaskQueue::purge_finished).
  std::optional<std::chrono::milliseconds> finished_tasks_older_than;
};

// How many of each the run touched (or, in a dry run, would touch).
struct RetentionCounts {
  std::int64_t conversations_deleted = 0;
  std::int64_t conversations_archived = 0;
  std::int64_t conversations_anonymized = 0;
  std::int64_t conversations_abandoned = 0;
  std::int64_t conversations_trimmed = 0;  // that lost messages to keep_last
  std::int64_t messages_deleted = 0;       // with deleted conversations
  std::int64_t messages_archived = 0;      // moved with archived conversations
  std::int64_t messages_anonymized = 0;
  std::int64_t messages_trimmed = 0;  // by keep_last_messages
  std::int64_t bytes_removed = 0;     // message content bytes deleted, archived, blanked or trimmed
  bool operator==(const RetentionCounts& o) const;
  bool operator!=(const RetentionCounts& o) const { return !(*this == o); }
};

struct RetentionReport {
  bool dry_run = false;
  Timestamp now{};
  RetentionCounts totals;
  // By the conversation's channel, and by its agent ("" for none).
  std::map<std::string, RetentionCounts> by_channel;
  std::map<std::string, RetentionCounts> by_agent;
  std::int64_t orphaned_states = 0;
  std::int64_t cache_entries = 0;
  std::int64_t cache_fields = 0;
  std::int64_t cache_waiters = 0;
  std::int64_t web_sessions = 0;
  std::int64_t tasks = 0;
  std::int64_t batches = 0;  // transactions committed (dry run: batches read)
};

// Told after every batch.
struct RetentionProgress {
  std::string phase;               // "completed", "keep_last", "abandon", "orphans", "cache"
  std::int64_t batch = 0;          // 1, 2, ... over the whole run
  std::int64_t conversations = 0;  // conversations in this batch
  RetentionCounts totals;          // so far
};

struct RetentionRun {
  // Count everything, write nothing: the report is what a real run at the
  // same `now` would report.
  bool dry_run = false;
  // Conversations per transaction (1 .. 100,000).
  std::size_t batch_size = 500;
  // The time the policy's ages count from (default: now()).
  std::optional<Timestamp> now;
  // Called after every batch (from the calling thread); an exception it
  // throws stops the run (finished batches stay done).
  std::function<void(const RetentionProgress&)> progress;
};

struct LegalHold {
  std::int64_t id = 0;
  std::optional<ConversationId> conversation_id;  // exactly one of the two is set
  std::optional<UserId> user_id;
  std::string reason;
  Timestamp created_at{};
};

// What forget_user removed: rows per table (tables with none omitted), and
// what it could not link to the user and left alone.
struct ForgetReceipt {
  UserId user_id = 0;
  std::map<std::string, std::int64_t> rows;
  std::int64_t total = 0;
  std::vector<std::string> notes;
};

// What is stored per channel or per agent, and what retention would remove.
enum class StatsGroup { channel, agent };

struct StorageStats {
  std::string group;  // the channel or agent ("" for none)
  std::int64_t conversations = 0;
  std::int64_t active = 0;
  std::int64_t completed = 0;
  std::int64_t abandoned = 0;
  std::int64_t archived = 0;  // conversations with status archived (not the archive tables)
  std::int64_t messages = 0;
  std::int64_t content_bytes = 0;   // bytes of message content
  std::optional<Timestamp> oldest;  // the oldest conversation's created_at
  // Given a policy: what a run at this moment would do to this group.
  std::optional<RetentionCounts> would_remove;
};

// Retention, legal holds, a user's data (export, forget) and storage
// statistics. Reached through Store::retention().
//
// Errors: throws convstore::Error. A bad argument (negative age, zero
// batch, keep_last 0, empty reason) is Error(invalid_argument) and writes
// nothing; an unknown user or conversation is Error(not_found).
class CONVSTORE_EXPORT RetentionStore {
 public:
  // Applies the policy in batches of run.batch_size conversations, each its
  // own transaction: a failure leaves the finished batches done and the
  // failing one rolled back; running again continues. Order: completed
  // conversations, keep_last, abandon, orphans, cache / sessions / tasks.
  RetentionReport run(const RetentionPolicy& policy, const RetentionRun& run = {});

  // Legal holds. Holding again replaces the reason (1..1,000 bytes).
  LegalHold hold(ConversationId id, std::string_view reason);
  LegalHold hold_user(UserId id, std::string_view reason);
  // False when there was no hold; Error(not_found) when the conversation
  // (the user) does not exist.
  bool release(ConversationId id);
  bool release_user(UserId id);
  // Every hold, oldest first.
  std::vector<LegalHold> holds();
  // Whether the conversation is held (itself or through its user).
  bool is_held(ConversationId id);

  // Everything stored for the user as one JSON object: user, conversations
  // (each with messages, snapshots, questions, dialog, review items),
  // agent state (conversation-scoped, session-scoped by the keys of their
  // conversations, live or archived, and named "user:<id>") with history,
  // web sessions (no token hashes), credentials (name and metadata, no
  // secret), calendar events, operation templates they own, legal holds,
  // archived conversations with their rows. Error(not_found) for an unknown
  // user.
  Json export_user(UserId id);

  // Deletes every row of the user in one transaction (see export_user for
  // what belongs to them) and returns the counts. Error(not_found) for an
  // unknown user, Error(failed_precondition) naming the hold when the user
  // or one of their conversations is under a legal hold (nothing removed).
  // Tasks and cache rows name no user: they are left alone (see notes).
  ForgetReceipt forget_user(UserId id);
  ForgetReceipt forget_user(std::string_view channel, std::string_view external_id);

  // Per channel or agent, ordered by group. With a policy: would_remove is
  // what run(*policy, {dry_run, now}) would do to each group.
  std::vector<StorageStats> storage_stats(StatsGroup group,
                                          const std::optional<RetentionPolicy>& policy = {},
                                          std::optional<Timestamp> at = std::nullopt);

 private:
  friend class Store;
  explicit RetentionStore(Store::Impl* impl) : impl_(impl) {}
  Store::Impl* impl_;
};

// JSON forms.
CONVSTORE_EXPORT Json to_json(const RetentionCounts& c);
CONVSTORE_EXPORT Json to_json(const RetentionReport& r);
CONVSTORE_EXPORT Json to_json(const ForgetReceipt& r);
CONVSTORE_EXPORT Json to_json(const StorageStats& s);

}  // namespace convstore
