// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#include "convstore/analytics.hpp"

#include <fmt/format.h>

#include "calendar_detail.hpp"
#include "store_helpers.hpp"
#include "store_impl.hpp"

namespace convstore {

using detail::Backend;
using detail::Connection;
using detail::Stmt;

std::string_view to_string(UsageGroup g) noexcept {
  switch (g) {
    case UsageGroup::model:
      return "model";
    case UsageGroup::user:
      return "user";
    case UsageGroup::channel:
      return "channel";
    case UsageGroup::day:
      return "day";
  }
  return "?";
}

namespace {

void check_filter(const AnalyticsFilter& f) {
  detail::check_time(f.from, "analytics range start");
  detail::check_time(f.to, "analytics range end");
  if (f.to <= f.from) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("analytics range end {} is not after its start {}", to_iso8601(f.to),
                            to_iso8601(f.from)));
  }
  if (f.channel) detail::check_text(*f.channel, "analytics channel");
}

// The UTC day of messages.created_at as YYYY-MM-DD. SQLite stores UTC
// ISO 8601 text (to_iso8601), whose first ten characters are the day.
std::string day_of(Backend b, const char* column) {
  if (b == Backend::postgresql) {
    return fmt::format("to_char({} AT TIME ZONE 'UTC', 'YYYY-MM-DD')", column);
  }
  return fmt::format("substr({}, 1, 10)", column);
}

// Text compared by bytes on both backends (SQLite's default).
std::string bytewise(Backend b, const char* column) {
  return b == Backend::postgresql ? fmt::format("{} COLLATE \"C\"", column) : column;
}

Timestamp day_start(const std::string& day) { return parse_timestamp(day + "T00:00:00Z"); }

// " AND c.channel = :ch AND c.user_id = :u" for the filter's conditions
// (bound by bind_scope, in that order).
std::string scope_sql(const AnalyticsFilter& f) {
  std::string s;
  if (f.channel) s += " AND c.channel = :ch";
  if (f.user_id) s += " AND c.user_id = :u";
  return s;
}

void bind_scope(Stmt& st, const AnalyticsFilter& f) {
  if (f.channel) st.in(*f.channel);
  if (f.user_id) st.in(static_cast<long long>(*f.user_id));
}

}  // namespace

std::vector<UsageRow> Analytics::usage(const AnalyticsFilter& f, UsageGroup group) {
  check_filter(f);
  const Backend b = impl_->backend();
  std::string key;
  std::string order;
  switch (group) {
    case UsageGroup::model:
      key = "m.model";
      order = "m.model IS NULL, " + bytewise(b, "m.model");
      break;
    case UsageGroup::user:
      key = "c.user_id";
      order = "c.user_id IS NULL, c.user_id";
      break;
    case UsageGroup::channel:
      key = "c.channel";
      order = bytewise(b, "c.channel");
      break;
    case UsageGroup::day:
      key = day_of(b, "m.created_at");
      order = key;
      break;
    default:
      throw Error(ErrorCode::invalid_argument, "usage group is outside the set");
  }
  const std::string text = fmt::format(
      "SELECT {0}, COUNT(*), CAST(COALESCE(SUM(m.token_count), 0) AS BIGINT), "
      "CAST(SUM(CASE WHEN m.token_count IS NULL THEN 1 ELSE 0 END) AS BIGINT), "
      "COUNT(DISTINCT m.conversation_id) FROM messages m JOIN conversations c ON c.id = "
      "m.conversation_id WHERE m.created_at >= :f AND m.created_at < :t{1} GROUP BY {0} "
      "ORDER BY {2}",
      key, scope_sql(f), order);
  return impl_->read(Op{"usage analytics"}, [&](Connection& c) {
    std::vector<UsageRow> out;
    std::optional<std::string> text_key;
    std::optional<long long> id_key;
    long long messages = 0, tokens = 0, without = 0, conversations = 0;
    Stmt st(c, text);
    st.in(f.from).in(f.to);
    bind_scope(st, f);
    if (group == UsageGroup::user) {
      st.out(id_key);
    } else {
      st.out(text_key);
    }
    st.out(messages).out(tokens).out(without).out(conversations);
    while (st.next()) {
      UsageRow row;
      switch (group) {
        case UsageGroup::model:
          row.model = text_key;
          break;
        case UsageGroup::user:
          if (id_key) row.user_id = static_cast<UserId>(*id_key);
          break;
        case UsageGroup::channel:
          row.channel = text_key.value_or("");
          break;
        case UsageGroup::day:
          row.day = day_start(text_key.value_or(""));
          break;
      }
      row.messages = messages;
      row.tokens = tokens;
      row.messages_without_tokens = without;
      row.conversations = conversations;
      out.push_back(std::move(row));
    }
    return out;
  });
}

std::vector<DailyActiveUsers> Analytics::active_users(const AnalyticsFilter& f,
                                                      bool user_messages_only) {
  check_filter(f);
  const std::string day = day_of(impl_->backend(), "m.created_at");
  const std::string text = fmt::format(
      "SELECT {0}, COUNT(DISTINCT c.user_id) FROM messages m JOIN conversations c ON c.id = "
      "m.conversation_id WHERE m.created_at >= :f AND m.created_at < :t AND c.user_id IS NOT "
      "NULL{1}{2} GROUP BY {0} ORDER BY {0}",
      day, user_messages_only ? " AND m.role = 'user'" : "", scope_sql(f));
  return impl_->read(Op{"active users analytics"}, [&](Connection& c) {
    std::vector<DailyActiveUsers> out;
    std::string d;
    long long n = 0;
    Stmt st(c, text);
    st.in(f.from).in(f.to);
    bind_scope(st, f);
    st.out(d).out(n);
    while (st.next()) out.push_back(DailyActiveUsers{day_start(d), n});
    return out;
  });
}

ConversationCounts Analytics::conversation_counts(const ConversationScope& s) {
  if (s.created_from) detail::check_time(*s.created_from, "conversation scope start");
  if (s.created_to) detail::check_time(*s.created_to, "conversation scope end");
  if (s.created_from && s.created_to && *s.created_to <= *s.created_from) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("conversation scope end {} is not after its start {}",
                            to_iso8601(*s.created_to), to_iso8601(*s.created_from)));
  }
  if (s.channel) detail::check_text(*s.channel, "analytics channel");
  std::string text = "SELECT status, COUNT(*) FROM conversations WHERE 1 = 1";
  if (s.created_from) text += " AND created_at >= :f";
  if (s.created_to) text += " AND created_at < :t";
  if (s.channel) text += " AND channel = :ch";
  if (s.user_id) text += " AND user_id = :u";
  text += " GROUP BY status";
  return impl_->read(Op{"count conversations by status"}, [&](Connection& c) {
    ConversationCounts out;
    ConversationStatus status = ConversationStatus::active;
    long long n = 0;
    Stmt st(c, text);
    if (s.created_from) st.in(*s.created_from);
    if (s.created_to) st.in(*s.created_to);
    if (s.channel) st.in(*s.channel);
    if (s.user_id) st.in(static_cast<long long>(*s.user_id));
    st.out(status).out(n);
    while (st.next()) {
      switch (status) {
        case ConversationStatus::active:
          out.active = n;
          break;
        case ConversationStatus::completed:
          out.completed = n;
          break;
        case ConversationStatus::abandoned:
          out.abandoned = n;
          break;
        case ConversationStatus::archived:
          out.archived = n;
          break;
      }
    }
    return out;
  });
}

ConversationLength Analytics::conversation_length(const AnalyticsFilter& f) {
  check_filter(f);
  const std::string text = fmt::format(
      "SELECT COUNT(*), CAST(COALESCE(SUM(n), 0) AS BIGINT), CAST(COALESCE(SUM(tk), 0) AS "
      "BIGINT) FROM (SELECT c.id, COUNT(m.id) AS n, COALESCE(SUM(m.token_count), 0) AS tk FROM "
      "conversations c LEFT JOIN messages m ON m.conversation_id = c.id WHERE c.created_at >= "
      ":f AND c.created_at < :t{} GROUP BY c.id) x",
      scope_sql(f));
  return impl_->read(Op{"conversation length analytics"}, [&](Connection& c) {
    ConversationLength out;
    long long conversations = 0, messages = 0, tokens = 0;
    Stmt st(c, text);
    st.in(f.from).in(f.to);
    bind_scope(st, f);
    st.out(conversations).out(messages).out(tokens).one();
    out.conversations = conversations;
    out.messages = messages;
    out.tokens = tokens;
    if (conversations > 0) {
      out.avg_messages = static_cast<double>(messages) / static_cast<double>(conversations);
      out.avg_tokens = static_cast<double>(tokens) / static_cast<double>(conversations);
    }
    return out;
  });
}

}  // namespace convstore
