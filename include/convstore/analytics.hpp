// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "convstore/export.hpp"
#include "convstore/store.hpp"
#include "convstore/types.hpp"

namespace convstore {

// What the usage figures are grouped by.
//   model    the message's model (Message::model; messages without one form
//            one group with no model)
//   user     the user of the message's conversation (conversations without a
//            user form one group with no user)
//   channel  the channel of the message's conversation
//   day      the UTC calendar day of the message's created_at
enum class UsageGroup { model, user, channel, day };

// The scope of an analytics query: the half-open time range [from, to)
// (from < to, years 0001..9999), and optionally one channel and / or one
// user (of the conversation).
struct AnalyticsFilter {
  Timestamp from{};
  Timestamp to{};
  std::optional<std::string> channel;
  std::optional<UserId> user_id;
};

// The usage of one group: messages created in the range, their tokens.
struct UsageRow {
  // The group, one of these set by the grouping (a model or user group may
  // also be the one "none" group, with the field empty):
  std::optional<std::string> model;    // UsageGroup::model
  std::optional<UserId> user_id;       // UsageGroup::user
  std::optional<std::string> channel;  // UsageGroup::channel
  std::optional<Timestamp> day;        // UsageGroup::day: 00:00 UTC of the day

  std::int64_t messages = 0;
  std::int64_t tokens = 0;  // the sum of the messages' token counts
  // Messages without a token count (not in `tokens`): how far `tokens`
  // undercounts.
  std::int64_t messages_without_tokens = 0;
  std::int64_t conversations = 0;  // distinct conversations these messages are in
};

// Distinct active users on one UTC day.
struct DailyActiveUsers {
  Timestamp day{};  // 00:00 UTC of the day
  std::int64_t users = 0;
};

// Conversations by status.
struct ConversationCounts {
  std::int64_t active = 0;
  std::int64_t completed = 0;
  std::int64_t abandoned = 0;
  std::int64_t archived = 0;
  std::int64_t total() const noexcept { return active + completed + abandoned + archived; }
};

// Which conversations ConversationCounts counts: all conditions given hold.
struct ConversationScope {
  std::optional<Timestamp> created_from;  // created_at >= this
  std::optional<Timestamp> created_to;    // created_at < this
  std::optional<std::string> channel;
  std::optional<UserId> user_id;
};

// How long conversations are: over the conversations created in a range,
// all their messages (whenever written).
struct ConversationLength {
  std::int64_t conversations = 0;
  std::int64_t messages = 0;
  std::int64_t tokens = 0;  // the sum of the token counts (messages without one add 0)
  double avg_messages = 0;  // messages / conversations (0 without conversations)
  double avg_tokens = 0;    // tokens / conversations
};

// Usage analytics (seed 002's analytics and reporting), reached as
// store.analytics(). Every figure is computed by the database (GROUP BY
// over messages joined to their conversations); no rows are loaded into
// the application.
//
// Time: ranges are half-open [from, to) on a message's created_at (usage,
// active users) or a conversation's created_at (lengths, counts). Days are
// UTC calendar days on both backends (SQLite: the date part of the stored
// UTC text; PostgreSQL: the date of created_at at time zone UTC).
//
// Thread safety: safe from any thread. Errors: Error(invalid_argument) for
// a bad filter (to <= from, a time outside years 0001..9999, a channel that
// is not valid UTF-8), before anything is read.
class CONVSTORE_EXPORT Analytics {
 public:
  // Messages, tokens and conversations touched per group, over the messages
  // created in the filter's range, ordered by the group (model, channel:
  // by text, the "none" group last; user: by id, "none" last; day:
  // chronological). Groups without messages are absent.
  std::vector<UsageRow> usage(const AnalyticsFilter& filter, UsageGroup group);

  // Distinct users with a message on each UTC day of the range, days
  // without any left out, chronological. A user is the user of the
  // message's conversation (conversations without a user are not counted).
  // By default only the messages the users wrote themselves count
  // (Role::user): an assistant answer or a scheduled system message sent to
  // a user does not make them active. `user_messages_only` false counts
  // messages of any role.
  std::vector<DailyActiveUsers> active_users(const AnalyticsFilter& filter,
                                             bool user_messages_only = true);

  // Conversations by status among those in `scope` (all by default).
  ConversationCounts conversation_counts(const ConversationScope& scope = {});

  // Average length of the conversations created in the filter's range (and
  // channel / user): their message count and tokens, averaged.
  ConversationLength conversation_length(const AnalyticsFilter& filter);

 private:
  friend class Store;
  explicit Analytics(Store::Impl* impl) : impl_(impl) {}
  Store::Impl* impl_;
};

CONVSTORE_EXPORT std::string_view to_string(UsageGroup g) noexcept;

}  // namespace convstore
