// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#include "convstore/retention.hpp"

#include <fmt/format.h>

#include <map>
#include <set>

#include "cache/backends.hpp"
#include "calendar_detail.hpp"
#include "store_helpers.hpp"
#include "store_impl.hpp"

namespace convstore {

using detail::Backend;
using detail::check_count;
using detail::Connection;
using detail::Sql;
using detail::Stmt;

std::string_view to_string(RetentionAction a) noexcept {
  switch (a) {
    case RetentionAction::remove:
      return "remove";
    case RetentionAction::archive:
      return "archive";
    case RetentionAction::anonymize:
      return "anonymize";
  }
  return "?";
}

RetentionAction parse_retention_action(std::string_view s) {
  if (s == "remove" || s == "delete") return RetentionAction::remove;
  if (s == "archive") return RetentionAction::archive;
  if (s == "anonymize") return RetentionAction::anonymize;
  throw Error(ErrorCode::invalid_argument, fmt::format("unknown retention action '{}'", s));
}

bool RetentionCounts::operator==(const RetentionCounts& o) const {
  return conversations_deleted == o.conversations_deleted &&
         conversations_archived == o.conversations_archived &&
         conversations_anonymized == o.conversations_anonymized &&
         conversations_abandoned == o.conversations_abandoned &&
         conversations_trimmed == o.conversations_trimmed &&
         messages_deleted == o.messages_deleted && messages_archived == o.messages_archived &&
         messages_anonymized == o.messages_anonymized && messages_trimmed == o.messages_trimmed &&
         bytes_removed == o.bytes_removed;
}

Json to_json(const RetentionCounts& c) {
  return Json{{"conversations_deleted", c.conversations_deleted},
              {"conversations_archived", c.conversations_archived},
              {"conversations_anonymized", c.conversations_anonymized},
              {"conversations_abandoned", c.conversations_abandoned},
              {"conversations_trimmed", c.conversations_trimmed},
              {"messages_deleted", c.messages_deleted},
              {"messages_archived", c.messages_archived},
              {"messages_anonymized", c.messages_anonymized},
              {"messages_trimmed", c.messages_trimmed},
              {"bytes_removed", c.bytes_removed}};
}

Json to_json(const RetentionReport& r) {
  Json by_channel = Json::object(), by_agent = Json::object();
  for (const auto& [k, v] : r.by_channel) by_channel[k] = to_json(v);
  for (const auto& [k, v] : r.by_agent) by_agent[k] = to_json(v);
  return Json{{"dry_run", r.dry_run},
              {"now", to_iso8601(r.now)},
              {"totals", to_json(r.totals)},
              {"by_channel", by_channel},
              {"by_agent", by_agent},
              {"orphaned_states", r.orphaned_states},
              {"cache_entries", r.cache_entries},
              {"cache_fields", r.cache_fields},
              {"cache_waiters", r.cache_waiters},
              {"web_sessions", r.web_sessions},
              {"tasks", r.tasks},
              {"batches", r.batches}};
}

Json to_json(const ForgetReceipt& r) {
  Json rows = Json::object();
  for (const auto& [k, v] : r.rows) rows[k] = v;
  return Json{{"user_id", r.user_id}, {"rows", rows}, {"total", r.total}, {"notes", r.notes}};
}

Json to_json(const StorageStats& s) {
  Json j{{"group", s.group},
         {"conversations", s.conversations},
         {"active", s.active},
         {"completed", s.completed},
         {"abandoned", s.abandoned},
         {"archived", s.archived},
         {"messages", s.messages},
         {"content_bytes", s.content_bytes},
         {"oldest", s.oldest ? Json(to_iso8601(*s.oldest)) : Json(nullptr)}};
  j["would_remove"] = s.would_remove ? to_json(*s.would_remove) : Json(nullptr);
  return j;
}

namespace {

constexpr auto kMaxAge = std::chrono::hours(24 * 366 * 100);
constexpr std::size_t kMaxReason = 1000;

std::chrono::milliseconds check_age(std::optional<std::chrono::milliseconds> d,
                                    std::string_view what) {
  if (d && (d->count() < 0 || *d > kMaxAge)) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("{} of {} ms is outside 0 .. 100 years", what, d->count()));
  }
  return d.value_or(std::chrono::milliseconds(0));
}

void check_reason(std::string_view reason) {
  if (reason.empty() || reason.size() > kMaxReason) {
    throw Error(
        ErrorCode::invalid_argument,
        fmt::format("legal hold reason of {} bytes is outside 1 .. {}", reason.size(), kMaxReason));
  }
  detail::check_text(reason, "legal hold reason");
}

// A batch's ids are bound as one parameter, whatever their number (one
// parameter per id would stop at PostgreSQL's 65,535 and SQLite's 32,766):
// a PostgreSQL array literal '{1,2}' or a JSON array '[1,2]' for SQLite's
// json_each. `in_ids` tests a column's membership ("id" + in_ids).
const char* in_ids(Backend b) {
  return b == Backend::postgresql ? " = ANY(CAST(:ids AS BIGINT[]))"
                                  : " IN (SELECT value FROM json_each(:ids))";
}

void bind_ids(Stmt& s, Backend b, const std::vector<long long>& ids) {
  std::string list = b == Backend::postgresql ? "{" : "[";
  for (std::size_t i = 0; i < ids.size(); ++i) {
    if (i > 0) list += ',';
    list += std::to_string(ids[i]);
  }
  list += b == Backend::postgresql ? "}" : "]";
  s.in(list);
}

// Bytes of message content, per backend.
const char* content_bytes(Backend b) {
  return b == Backend::postgresql ? "OCTET_LENGTH(content)" : "LENGTH(CAST(content AS BLOB))";
}

// A conversation of a batch.
struct Candidate {
  long long id = 0;
  std::string channel;
  std::string agent;
};

// The conversations a phase looks at (alias c). Held conversations, and
// those of held users, never qualify.
const char* const kNotHeld =
    " AND NOT EXISTS (SELECT 1 FROM legal_holds h WHERE h.conversation_id = c.id)"
    " AND NOT EXISTS (SELECT 1 FROM legal_holds h WHERE h.user_id = c.user_id)";

enum class Phase { completed, keep_last, abandon };

// ----------------------------------------------------------------------------
// Generic rows as JSON (export_user): columns with a type each.
//   i integer, t text, j JSON, b boolean, d timestamp
struct Column {
  const char* name;
  char type;
};

struct Table {
  const char* name;
  std::vector<Column> columns;
};

const std::vector<Column> kConversationCols{{"id", 'i'},
                                            {"key", 't'},
                                            {"user_id", 'i'},
                                            {"channel", 't'},
                                            {"chat_id", 't'},
                                            {"agent", 't'},
                                            {"kind", 't'},
                                            {"title", 't'},
                                            {"active_agent", 't'},
                                            {"status", 't'},
                                            {"model_override", 't'},
                                            {"external_ref", 't'},
                                            {"message_count", 'i'},
                                            {"version", 'i'},
                                            {"last_message_at", 'd'},
                                            {"metadata", 'j'},
                                            {"created_at", 'd'},
                                            {"updated_at", 'd'},
                                            {"fence", 'i'},
                                            {"anonymized_at", 'd'}};
const std::vector<Column> kMessageCols{{"id", 'i'},
                                       {"conversation_id", 'i'},
                                       {"role", 't'},
                                       {"kind", 't'},
                                       {"content", 't'},
                                       {"agent", 't'},
                                       {"model", 't'},
                                       {"token_count", 'i'},
                                       {"tool_name", 't'},
                                       {"tool_args", 'j'},
                                       {"tool_call_id", 't'},
                                       {"platform_message_id", 't'},
                                       {"reply_to_platform_id", 't'},
                                       {"client_key", 't'},
                                       {"complete", 'b'},
                                       {"metadata", 'j'},
                                       {"created_at", 'd'},
                                       {"updated_at", 'd'}};
const std::vector<Column> kDataCols{
    {"id", 'i'}, {"conversation_id", 'i'}, {"kind", 't'}, {"data", 'j'}, {"created_at", 'd'}};
const std::vector<Column> kQuestionCols{
    {"id", 'i'},       {"conversation_id", 'i'}, {"agent", 't'},
    {"question", 't'}, {"missing_fields", 'j'},  {"platform_message_id", 't'},
    {"asked_at", 'd'}, {"answered_at", 'd'},     {"answer", 't'}};

std::vector<Column> with_archived_at(std::vector<Column> cols) {
  cols.push_back({"archived_at", 'd'});
  return cols;
}

std::string column_list(const std::vector<Column>& cols, const char* prefix = "") {
  std::string out;
  for (const auto& col : cols) {
    if (!out.empty()) out += ", ";
    out += prefix;
    out += col.name;
  }
  return out;
}

// Which rows of a table belong to the user: a WHERE clause whose
// parameters are all the user id (:u...) except :n, the named scope.
struct Owned {
  Table table;
  std::string where;
};

// The user's conversations, by id and by key. Session state goes by the
// key of a live or an archived conversation of the user (the state of a
// conversation deleted earlier names no user any more).
#define CS_USER_CONVS "(SELECT id FROM conversations WHERE user_id = :u)"
#define CS_USER_ARCHIVED "(SELECT id FROM archived_conversations WHERE user_id = :u)"
#define CS_STATE_WHERE(p)                                                                     \
  "(" p "conversation_id IN " CS_USER_CONVS " OR (" p "scope_kind = 'session' AND " p         \
  "scope_key IN (SELECT key FROM conversations WHERE user_id = :u AND key IS NOT NULL UNION " \
  "SELECT key FROM archived_conversations WHERE user_id = :u AND key IS NOT NULL)) "          \
  "OR (" p "scope_kind = 'named' AND " p "scope_key = :n))"

// Every table with a user link, children before their parents (the order
// forget_user deletes in).
const std::vector<Owned>& owned_tables() {
  // Built call by call: one braced initializer of the whole list makes
  // GCC 12 at -O3 warn (wrongly) of uninitialized vectors.
  static const std::vector<Owned> t = [] {
    std::vector<Owned> v;
    auto add = [&v](const char* name, std::vector<Column> columns, std::string where) {
      v.push_back(Owned{Table{name, std::move(columns)}, std::move(where)});
    };
    add("agent_state_history",
        {{"scope_kind", 't'},
         {"scope_key", 't'},
         {"agent", 't'},
         {"version", 'i'},
         {"state", 'j'},
         {"saved_at", 'd'}},
        "EXISTS (SELECT 1 FROM agent_states s WHERE s.scope_kind = "
        "agent_state_history.scope_kind AND s.scope_key = agent_state_history.scope_key AND "
        "s.agent = agent_state_history.agent AND " CS_STATE_WHERE("s.") ")");
    add("agent_states",
        {{"scope_kind", 't'},
         {"scope_key", 't'},
         {"agent", 't'},
         {"conversation_id", 'i'},
         {"state", 'j'},
         {"version", 'i'},
         {"created_at", 'd'},
         {"updated_at", 'd'}},
        CS_STATE_WHERE(""));
    add("review_items",
        {{"id", 'i'},
         {"conversation_id", 'i'},
         {"user_id", 'i'},
         {"answers_message_id", 't'},
         {"answers_message_at", 'd'},
         {"suggested_text", 't'},
         {"edited_text", 't'},
         {"status", 't'},
         {"auto_approved", 'b'},
         {"reason", 't'},
         {"error", 't'},
         {"attempts", 'i'},
         {"claimed_by", 't'},
         {"claim_expires_at", 'd'},
         {"created_at", 'd'},
         {"updated_at", 'd'},
         {"decided_at", 'd'},
         {"sent_at", 'd'}},
        "user_id = :u OR conversation_id IN " CS_USER_CONVS);
    add("dialogs",
        {{"conversation_id", 'i'},
         {"type", 't'},
         {"processing_enabled", 'b'},
         {"auto_send", 'b'},
         {"last_message_id", 't'},
         {"last_message_at", 'd'},
         {"checked_at", 'd'},
         {"new_message_at", 'd'},
         {"created_at", 'd'},
         {"updated_at", 'd'}},
        "conversation_id IN " CS_USER_CONVS);
    add("agent_questions", kQuestionCols, "conversation_id IN " CS_USER_CONVS);
    add("conversation_data", kDataCols, "conversation_id IN " CS_USER_CONVS);
    add("messages", kMessageCols, "conversation_id IN " CS_USER_CONVS);
    add("legal_holds",
        {{"id", 'i'},
         {"conversation_id", 'i'},
         {"user_id", 'i'},
         {"reason", 't'},
         {"created_at", 'd'}},
        "user_id = :u OR conversation_id IN " CS_USER_CONVS);
    add("conversations", kConversationCols, "user_id = :u");
    add("archived_agent_questions", with_archived_at(kQuestionCols),
        "conversation_id IN " CS_USER_ARCHIVED);
    add("archived_conversation_data", with_archived_at(kDataCols),
        "conversation_id IN " CS_USER_ARCHIVED);
    add("archived_messages", with_archived_at(kMessageCols),
        "conversation_id IN " CS_USER_ARCHIVED);
    add("archived_conversations", with_archived_at(kConversationCols), "user_id = :u");
    add("web_sessions",
        {{"id", 'i'},
         {"user_id", 'i'},
         {"family_id", 'i'},
         {"rotated_from", 'i'},
         {"access_expires_at", 'd'},
         {"refresh_expires_at", 'd'},
         {"status", 't'},
         {"metadata", 'j'},
         {"device_info", 'j'},
         {"created_at", 'd'},
         {"updated_at", 'd'},
         {"last_used_at", 'd'},
         {"revoked_at", 'd'},
         {"revoke_reason", 't'}},
        "user_id = :u");
    add("credentials",
        {{"id", 'i'},
         {"user_id", 'i'},
         {"name", 't'},
         {"algorithm", 't'},
         {"key_id", 't'},
         {"active", 'b'},
         {"metadata", 'j'},
         {"created_at", 'd'},
         {"updated_at", 'd'},
         {"deactivated_at", 'd'}},
        "user_id = :u");
    add("calendar_events",
        {{"id", 'i'},
         {"owner_id", 'i'},
         {"uid", 't'},
         {"title", 't'},
         {"description", 't'},
         {"location", 't'},
         {"start_at", 'd'},
         {"end_at", 'd'},
         {"all_day", 'b'},
         {"time_zone", 't'},
         {"metadata", 'j'},
         {"rrule", 't'},
         {"exdates", 't'},
         {"moved", 't'},
         {"series_end", 'd'},
         {"series_id", 'i'},
         {"recurrence_id", 'd'},
         {"created_at", 'd'},
         {"updated_at", 'd'}},
        "owner_id = :u");
    add("calendar_bounds", {{"owner_key", 'i'}, {"longest_us", 'i'}}, "owner_key = :u");
    add("operation_templates",
        {{"id", 'i'},
         {"user_id", 'i'},
         {"kind", 't'},
         {"name", 't'},
         {"sample_input", 't'},
         {"expected_output", 'j'},
         {"use_count", 'i'},
         {"last_used_at", 'd'},
         {"created_at", 'd'},
         {"updated_at", 'd'}},
        "user_id = :u");
    add("users",
        {{"id", 'i'},
         {"channel", 't'},
         {"external_id", 't'},
         {"username", 't'},
         {"display_name", 't'},
         {"preferred_model", 't'},
         {"system_prompt", 't'},
         {"time_zone", 't'},
         {"metadata", 'j'},
         {"created_at", 'd'},
         {"updated_at", 'd'}},
        "id = :u");
    return v;
  }();
  return t;
}

#undef CS_USER_CONVS
#undef CS_USER_ARCHIVED
#undef CS_STATE_WHERE

std::string named_scope(UserId id) { return fmt::format("user:{}", id); }

// Binds the parameters of an Owned::where: :n is the named scope, every
// other one the user id.
void bind_owned(Stmt& s, const std::string& where, UserId user) {
  for (std::size_t at = where.find(':'); at != std::string::npos; at = where.find(':', at + 1)) {
    if (at + 1 < where.size() && where[at + 1] == 'n') {
      s.in(named_scope(user));
    } else if (at + 1 < where.size() && where[at + 1] == 'u') {
      s.in(static_cast<long long>(user));
    }
  }
}

// The where clause with its placeholders numbered (:u0, :u1, ...): SQLite
// takes two placeholders of the same name for one parameter.
std::string numbered(const std::string& where) {
  std::string out;
  int k = 0;
  for (std::size_t i = 0; i < where.size(); ++i) {
    out += where[i];
    if (where[i] == ':' && i + 1 < where.size() && (where[i + 1] == 'u' || where[i + 1] == 'n')) {
      out += where[i + 1];
      out += std::to_string(k++);
      ++i;
    }
  }
  return out;
}

Json read_rows(Connection& c, const Table& t, const std::string& where, UserId user) {
  Stmt s(c, fmt::format("SELECT {} FROM {} WHERE {} ORDER BY 1", column_list(t.columns), t.name,
                        numbered(where)));
  bind_owned(s, where, user);
  const std::size_t n = t.columns.size();
  // Fixed-size holders: Stmt keeps pointers to them.
  std::vector<std::optional<std::string>> text(n);
  std::vector<std::optional<long long>> number(n);
  std::vector<std::optional<Timestamp>> time(n);
  std::unique_ptr<bool[]> flag(new bool[n]());
  for (std::size_t i = 0; i < n; ++i) {
    switch (t.columns[i].type) {
      case 'i':
        s.out(number[i]);
        break;
      case 'd':
        s.out(time[i]);
        break;
      case 'b':
        s.out(flag[i]);
        break;
      default:
        s.out(text[i]);
    }
  }
  Json rows = Json::array();
  while (s.next()) {
    Json row = Json::object();
    for (std::size_t i = 0; i < n; ++i) {
      const Column& col = t.columns[i];
      switch (col.type) {
        case 'i':
          row[col.name] = number[i] ? Json(*number[i]) : Json(nullptr);
          break;
        case 'd':
          row[col.name] = time[i] ? Json(to_iso8601(*time[i])) : Json(nullptr);
          break;
        case 'b':
          row[col.name] = flag[i];
          break;
        case 'j':
          row[col.name] = text[i] ? Json::parse(*text[i], nullptr, false) : Json(nullptr);
          break;
        default:
          row[col.name] = text[i] ? Json(*text[i]) : Json(nullptr);
      }
    }
    rows.push_back(std::move(row));
  }
  return rows;
}

void add(RetentionCounts& to, const RetentionCounts& d) {
  to.conversations_deleted += d.conversations_deleted;
  to.conversations_archived += d.conversations_archived;
  to.conversations_anonymized += d.conversations_anonymized;
  to.conversations_abandoned += d.conversations_abandoned;
  to.conversations_trimmed += d.conversations_trimmed;
  to.messages_deleted += d.messages_deleted;
  to.messages_archived += d.messages_archived;
  to.messages_anonymized += d.messages_anonymized;
  to.messages_trimmed += d.messages_trimmed;
  to.bytes_removed += d.bytes_removed;
}

}  // namespace

// ============================== retention run ===============================

RetentionReport RetentionStore::run(const RetentionPolicy& policy, const RetentionRun& options) {
  const auto completed_age = check_age(policy.completed_older_than, "completed_older_than");
  const auto idle_age = check_age(policy.abandon_idle_after, "abandon_idle_after");
  const auto task_age = check_age(policy.finished_tasks_older_than, "finished_tasks_older_than");
  check_count(options.batch_size, 100000, "retention batch size");
  if (policy.keep_last_messages) {
    check_count(*policy.keep_last_messages, 1000000000, "keep_last_messages");
  }
  if (policy.channel) detail::check_text(*policy.channel, "retention channel filter");
  if (policy.agent) detail::check_text(*policy.agent, "retention agent filter");
  const Timestamp at = options.now.value_or(now());
  detail::check_time(at, "retention time");

  const bool dry = options.dry_run;
  const Backend backend = impl_->backend();
  RetentionReport report;
  report.dry_run = dry;
  report.now = at;

  auto progress = [&](const char* phase, std::int64_t conversations) {
    ++report.batches;
    if (options.progress) {
      options.progress(RetentionProgress{phase, report.batches, conversations, report.totals});
    }
  };
  // Records the counts of one conversation.
  auto record = [&](const Candidate& cand, const RetentionCounts& d) {
    add(report.totals, d);
    add(report.by_channel[cand.channel], d);
    add(report.by_agent[cand.agent], d);
  };

  // Runs one phase over its candidates, batch by batch (keyset over ids, so
  // that a dry run, which changes nothing, still moves on).
  auto phase = [&](Phase which, const char* name, const std::string& predicate,
                   const std::function<void(Stmt&)>& bind_predicate,
                   const std::function<void(Connection&, const std::vector<Candidate>&,
                                            const std::vector<long long>&)>& act) {
    const std::string filters = fmt::format("{}{}{}", policy.channel ? " AND c.channel = :ch" : "",
                                            policy.agent ? " AND c.agent = :ag" : "", kNotHeld);
    const std::string select = fmt::format(
        "SELECT c.id, c.channel, COALESCE(c.agent, '') FROM conversations c WHERE c.id > :after "
        "AND {}{} ORDER BY c.id LIMIT :n",
        predicate, filters);
    // PostgreSQL (READ COMMITTED): the statement above does not see a hold
    // committed while it runs, and a row lock that had to wait does not
    // re-evaluate it either. So the batch is locked (its users FOR SHARE
    // first, as hold_user and forget_user lock them FOR UPDATE, then its
    // conversations FOR UPDATE, as hold does) and selected again by a
    // statement that starts after the locks: it sees every hold committed
    // before, and no hold can be added until the batch commits. SQLite's
    // single writer already serializes.
    const bool lock = !dry && backend == Backend::postgresql;
    struct Seen {
      std::size_t rows = 0;  // what the keyset select returned
      long long last = 0;
      std::vector<Candidate> acted;
    };
    auto fetch = [&](Stmt& s, std::vector<Candidate>& out) {
      Candidate row;
      s.out(row.id).out(row.channel).out(row.agent);
      while (s.next()) out.push_back(row);
    };
    auto bind_filters = [&](Stmt& s) {
      bind_predicate(s);
      if (policy.channel) s.in(*policy.channel);
      if (policy.agent) s.in(*policy.agent);
    };
    long long after = 0;
    for (;;) {
      auto batch = [&](Connection& c) {
        Seen seen;
        std::vector<Candidate> cands;
        {
          Stmt s(c, select);
          s.in(after);
          bind_filters(s);
          s.in(options.batch_size);
          fetch(s, cands);
        }
        seen.rows = cands.size();
        if (cands.empty()) return seen;
        seen.last = cands.back().id;
        std::vector<long long> ids;
        ids.reserve(cands.size());
        for (const auto& cand : cands) ids.push_back(cand.id);
        if (lock) {
          const std::string in = in_ids(backend);
          long long n = 0;
          {
            Stmt s(c, fmt::format("SELECT COUNT(*) FROM (SELECT u.id FROM users u WHERE u.id IN "
                                  "(SELECT user_id FROM conversations WHERE id{}) ORDER BY "
                                  "u.id FOR SHARE) x",
                                  in));
            bind_ids(s, backend, ids);
            s.out(n).one();
          }
          {
            Stmt s(c, fmt::format("SELECT COUNT(*) FROM (SELECT c.id FROM conversations c WHERE "
                                  "c.id{} ORDER BY c.id FOR UPDATE) x",
                                  in));
            bind_ids(s, backend, ids);
            s.out(n).one();
          }
          cands.clear();
          {
            Stmt s(c, fmt::format("SELECT c.id, c.channel, COALESCE(c.agent, '') FROM "
                                  "conversations c WHERE c.id{} AND {}{} ORDER BY c.id",
                                  in, predicate, filters));
            bind_ids(s, backend, ids);
            bind_filters(s);
            fetch(s, cands);
          }
          if (cands.empty()) return seen;
          ids.clear();
          for (const auto& cand : cands) ids.push_back(cand.id);
        }
        act(c, cands, ids);
        seen.acted = std::move(cands);
        return seen;
      };
      Seen seen = dry ? impl_->snapshot(Op{"retention dry run"}, batch)
                      : impl_->write(Op{"retention batch"}, batch);
      if (seen.rows == 0) break;
      after = seen.last;
      if (!dry && which != Phase::abandon) {
        for (const auto& cand : seen.acted) impl_->messages_changed(cand.id);
      }
      progress(name, static_cast<std::int64_t>(seen.acted.size()));
      if (seen.rows < options.batch_size) break;
    }
  };

  // Message counts and content bytes per conversation of a batch.
  auto message_counts = [&](Connection& c, const std::vector<long long>& ids) {
    std::map<long long, std::pair<long long, long long>> out;
    Stmt s(c, fmt::format("SELECT conversation_id, COUNT(*), COALESCE(SUM({}), 0) FROM messages "
                          "WHERE conversation_id{} GROUP BY conversation_id",
                          content_bytes(backend), in_ids(backend)));
    bind_ids(s, backend, ids);
    long long id = 0, n = 0, bytes = 0;
    s.out(id).out(n).out(bytes);
    while (s.next()) out[id] = {n, bytes};
    return out;
  };
  auto exec_ids = [&](Connection& c, const std::string& sql, const std::vector<long long>& ids,
                      std::optional<Timestamp> first = std::nullopt) {
    Stmt s(c, sql);
    if (first) s.in(*first);
    bind_ids(s, backend, ids);
    s.one();
  };

  // ---- completed conversations ----
  if (policy.completed_older_than) {
    const Timestamp cutoff = at - completed_age;
    const RetentionAction action = policy.completed_action;
    std::string predicate = "c.status = 'completed' AND c.updated_at < :cut";
    if (action == RetentionAction::anonymize) {
      // Not yet anonymized, or text came back since: appends and edits
      // (append_content and update_message touch only the message).
      predicate +=
          " AND (c.anonymized_at IS NULL OR c.updated_at > c.anonymized_at OR EXISTS (SELECT 1 "
          "FROM messages m WHERE m.conversation_id = c.id AND (m.content <> '' OR m.updated_at > "
          "c.anonymized_at)) OR EXISTS (SELECT 1 FROM conversation_data d WHERE "
          "d.conversation_id = c.id AND d.created_at > c.anonymized_at) OR EXISTS (SELECT 1 FROM "
          "agent_questions q WHERE q.conversation_id = c.id AND (q.question <> '' OR q.answer <> "
          "'')) OR EXISTS (SELECT 1 FROM review_items r WHERE r.conversation_id = c.id AND "
          "(r.suggested_text <> '' OR r.edited_text <> '')))";
    }
    phase(
        Phase::completed, "completed", predicate, [&](Stmt& s) { s.in(cutoff); },
        [&](Connection& c, const std::vector<Candidate>& cands, const std::vector<long long>& ids) {
          if (!dry && action == RetentionAction::archive && backend == Backend::postgresql) {
            // An edit (append_content, update_message, answer) locks only
            // its row: wait for those in flight before copying, so that the
            // copy is what is deleted. New rows wait for the conversation's
            // lock (their foreign key).
            for (const char* table : {"messages", "conversation_data", "agent_questions"}) {
              Stmt s(c, fmt::format("SELECT COUNT(*) FROM (SELECT id FROM {} WHERE "
                                    "conversation_id{} ORDER BY id FOR UPDATE) x",
                                    table, in_ids(backend)));
              bind_ids(s, backend, ids);
              long long n = 0;
              s.out(n).one();
            }
          }
          auto counts = message_counts(c, ids);
          for (const auto& cand : cands) {
            RetentionCounts d;
            auto it = counts.find(cand.id);
            const long long n = it == counts.end() ? 0 : it->second.first;
            const long long bytes = it == counts.end() ? 0 : it->second.second;
            d.bytes_removed = bytes;
            switch (action) {
              case RetentionAction::remove:
                d.conversations_deleted = 1;
                d.messages_deleted = n;
                break;
              case RetentionAction::archive:
                d.conversations_archived = 1;
                d.messages_archived = n;
                break;
              case RetentionAction::anonymize:
                d.conversations_anonymized = 1;
                d.messages_anonymized = n;
                break;
            }
            record(cand, d);
          }
          const std::string in = in_ids(backend);
          if (action != RetentionAction::anonymize && policy.remove_orphans && dry) {
            // Session state of these conversations becomes orphaned.
            Stmt s(c, fmt::format("SELECT COUNT(*) FROM agent_states WHERE scope_kind = "
                                  "'session' AND scope_key IN (SELECT key FROM conversations "
                                  "WHERE id{} AND key IS NOT NULL)",
                                  in));
            bind_ids(s, backend, ids);
            long long n = 0;
            s.out(n).one();
            report.orphaned_states += n;
          }
          if (dry) return;
          if (action == RetentionAction::archive) {
            auto move = [&](const char* table, const std::vector<Column>& cols, const char* key) {
              const std::string list = column_list(cols);
              exec_ids(
                  c,
                  fmt::format("INSERT INTO archived_{} ({}, archived_at) SELECT {}, {} FROM "
                              "{} WHERE {}{}",
                              table, list, list,
                              backend == Backend::postgresql ? "CAST(:at AS TIMESTAMPTZ)" : ":at",
                              table, key, in),
                  ids, at);
            };
            move("conversations", kConversationCols, "id");
            move("messages", kMessageCols, "conversation_id");
            move("conversation_data", kDataCols, "conversation_id");
            move("agent_questions", kQuestionCols, "conversation_id");
          }
          if (action == RetentionAction::anonymize) {
            exec_ids(c,
                     fmt::format("UPDATE messages SET content = '', tool_args = NULL, metadata = "
                                 "'{{}}' WHERE conversation_id{}",
                                 in),
                     ids);
            exec_ids(c,
                     fmt::format("UPDATE conversation_data SET data = '{{}}' WHERE "
                                 "conversation_id{}",
                                 in),
                     ids);
            exec_ids(c,
                     fmt::format("UPDATE agent_questions SET question = '', answer = CASE WHEN "
                                 "answer IS NULL THEN NULL ELSE '' END WHERE conversation_id{}",
                                 in),
                     ids);
            exec_ids(c,
                     fmt::format("UPDATE review_items SET suggested_text = '', edited_text = "
                                 "CASE WHEN edited_text IS NULL THEN NULL ELSE '' END WHERE "
                                 "conversation_id{}",
                                 in),
                     ids);
            exec_ids(c,
                     fmt::format("UPDATE conversations SET anonymized_at = :at, title = NULL "
                                 "WHERE id{}",
                                 in),
                     ids, at);
            return;
          }
          exec_ids(c, fmt::format("DELETE FROM conversations WHERE id{}", in), ids);
        });
  }

  // ---- keep the last N messages of active conversations ----
  if (policy.keep_last_messages) {
    const long long keep = static_cast<long long>(*policy.keep_last_messages);
    phase(
        Phase::keep_last, "keep_last", "c.status = 'active' AND c.message_count > :keep",
        [&](Stmt& s) { s.in(keep); },
        [&](Connection& c, const std::vector<Candidate>& cands, const std::vector<long long>& ids) {
          // Older than the newest `keep` messages and than the newest turn
          // (from the newest user message on), and not a system message.
          const std::string trimmed = fmt::format(
              "m.conversation_id{} AND m.role <> 'system' AND m.id < COALESCE((SELECT "
              "MAX(x.id) FROM messages x WHERE x.conversation_id = m.conversation_id AND x.role "
              "= 'user'), (SELECT MAX(x.id) FROM messages x WHERE x.conversation_id = "
              "m.conversation_id)) AND m.id < (SELECT x.id FROM messages x WHERE "
              "x.conversation_id = m.conversation_id ORDER BY x.id DESC LIMIT 1 OFFSET :skip)",
              in_ids(backend));
          std::map<long long, std::pair<long long, long long>> counts;
          {
            Stmt s(c, fmt::format("SELECT m.conversation_id, COUNT(*), COALESCE(SUM({}), 0) "
                                  "FROM messages m WHERE {} GROUP BY m.conversation_id",
                                  content_bytes(backend), trimmed));
            bind_ids(s, backend, ids);
            s.in(keep - 1);
            long long id = 0, n = 0, bytes = 0;
            s.out(id).out(n).out(bytes);
            while (s.next()) counts[id] = {n, bytes};
          }
          std::vector<long long> touched;
          for (const auto& cand : cands) {
            auto it = counts.find(cand.id);
            if (it == counts.end() || it->second.first == 0) continue;
            RetentionCounts d;
            d.conversations_trimmed = 1;
            d.messages_trimmed = it->second.first;
            d.bytes_removed = it->second.second;
            record(cand, d);
            touched.push_back(cand.id);
          }
          if (dry || touched.empty()) return;
          {
            Stmt s(c, fmt::format("DELETE FROM messages WHERE id IN (SELECT m.id FROM messages m "
                                  "WHERE {})",
                                  trimmed));
            bind_ids(s, backend, ids);
            s.in(keep - 1);
            s.one();
          }
          exec_ids(c,
                   fmt::format("UPDATE conversations SET message_count = (SELECT COUNT(*) FROM "
                               "messages m WHERE m.conversation_id = conversations.id), version = "
                               "version + 1 WHERE id{}",
                               in_ids(backend)),
                   touched);
        });
  }

  // ---- abandon idle active conversations ----
  if (policy.abandon_idle_after) {
    const Timestamp cutoff = at - idle_age;
    phase(
        Phase::abandon, "abandon", "c.status = 'active' AND c.updated_at < :cut",
        [&](Stmt& s) { s.in(cutoff); },
        [&](Connection& c, const std::vector<Candidate>& cands, const std::vector<long long>& ids) {
          for (const auto& cand : cands) {
            RetentionCounts d;
            d.conversations_abandoned = 1;
            record(cand, d);
          }
          if (dry) return;
          exec_ids(c,
                   fmt::format("UPDATE conversations SET status = 'abandoned', version = version "
                               "+ 1, updated_at = :at WHERE id{}",
                               in_ids(backend)),
                   ids, at);
        });
  }

  // ---- orphaned agent state ----
  if (policy.remove_orphans) {
    if (dry) {
      static const Sql q{
          "SELECT COUNT(*) FROM agent_states WHERE scope_kind = 'session' AND NOT EXISTS "
          "(SELECT 1 FROM conversations c WHERE c.key = agent_states.scope_key)"};
      long long n = 0;
      impl_->read(Op{"retention dry run"}, [&](Connection& c) { Stmt(c, q).out(n).one(); });
      report.orphaned_states += n;
    } else {
      report.orphaned_states += static_cast<std::int64_t>(impl_->agents.cleanup_orphaned_states());
    }
    progress("orphans", 0);
  }

  // ---- expired cache rows and web sessions ----
  if (policy.remove_expired_cache) {
    auto sweep = [&](Connection& c) { return detail::sweep_database_cache(c, at, dry); };
    auto swept = dry ? impl_->read(Op{"retention dry run"}, sweep)
                     : impl_->write(Op{"retention cache sweep"}, sweep);
    report.cache_entries = swept.entries;
    report.cache_fields = swept.fields;
    report.cache_waiters = swept.waiters;
    if (dry) {
      // What WebSessionStore::purge_expired(at) deletes.
      static const Sql q{
          "SELECT COUNT(*) FROM web_sessions WHERE refresh_expires_at < :c1 OR "
          "(revoked_at < :c2 AND revoke_reason <> 'rotated')"};
      impl_->read(Op{"retention dry run"},
                  [&](Connection& c) { Stmt(c, q).in(at).in(at).out(report.web_sessions).one(); });
    } else {
      report.web_sessions = impl_->web_sessions.purge_expired(at);
    }
    progress("cache", 0);
  }

  // ---- finished tasks ----
  if (policy.finished_tasks_older_than) {
    const Timestamp cutoff = at - task_age;
    if (dry) {
      // What TaskQueue::purge_finished(cutoff) deletes.
      static const Sql q{
          "SELECT COUNT(*) FROM tasks WHERE finished_at < :t AND status IN ('completed', "
          "'failed', 'cancelled')"};
      impl_->read(Op{"retention dry run"},
                  [&](Connection& c) { Stmt(c, q).in(cutoff).out(report.tasks).one(); });
    } else {
      report.tasks = impl_->tasks.purge_finished(cutoff);
    }
    progress("tasks", 0);
  }
  return report;
}

// ================================ legal holds ===============================

namespace {

#define CS_HOLD_COLS "id, conversation_id, user_id, reason, created_at"

struct HoldRow {
  long long id = 0;
  std::optional<long long> conversation_id;
  std::optional<long long> user_id;
  std::string reason;
  Timestamp created_at{};
};

void bind_hold(Stmt& s, HoldRow& r) {
  s.out(r.id).out(r.conversation_id).out(r.user_id).out(r.reason).out(r.created_at);
}

LegalHold decode_hold(const HoldRow& r) {
  LegalHold h;
  h.id = r.id;
  h.conversation_id = r.conversation_id;
  h.user_id = r.user_id;
  h.reason = r.reason;
  h.created_at = r.created_at;
  return h;
}

}  // namespace

LegalHold RetentionStore::hold(ConversationId id, std::string_view reason) {
  check_reason(reason);
  // FOR UPDATE: a retention batch or forget_user that locks the
  // conversation waits for the hold to commit and then sees it.
  static const Sql exists{"SELECT 1 FROM conversations WHERE id = :id",
                          "SELECT 1 FROM conversations WHERE id = :id FOR UPDATE"};
  static const Sql q{
      "INSERT INTO legal_holds (conversation_id, reason, created_at) VALUES (:c, :r, :t) "
      "ON CONFLICT (conversation_id) WHERE conversation_id IS NOT NULL DO UPDATE SET reason = "
      "excluded.reason RETURNING " CS_HOLD_COLS};
  return impl_->write(Op{"hold", "conversation", id}, [&](Connection& c) {
    int one = 0;
    if (!Stmt(c, exists).in(static_cast<long long>(id)).out(one).one()) {
      throw Error(ErrorCode::not_found, fmt::format("conversation {} not found", id));
    }
    Stmt s(c, q);
    s.in(static_cast<long long>(id)).in(reason).in(now());
    return *detail::fetch_one_decoded<HoldRow>(s, bind_hold, decode_hold);
  });
}

LegalHold RetentionStore::hold_user(UserId id, std::string_view reason) {
  check_reason(reason);
  // FOR UPDATE: see hold().
  static const Sql exists{"SELECT 1 FROM users WHERE id = :id",
                          "SELECT 1 FROM users WHERE id = :id FOR UPDATE"};
  static const Sql q{
      "INSERT INTO legal_holds (user_id, reason, created_at) VALUES (:u, :r, :t) "
      "ON CONFLICT (user_id) WHERE user_id IS NOT NULL DO UPDATE SET reason = "
      "excluded.reason RETURNING " CS_HOLD_COLS};
  return impl_->write(Op{"hold", "user", id}, [&](Connection& c) {
    int one = 0;
    if (!Stmt(c, exists).in(static_cast<long long>(id)).out(one).one()) {
      throw Error(ErrorCode::not_found, fmt::format("user {} not found", id));
    }
    Stmt s(c, q);
    s.in(static_cast<long long>(id)).in(reason).in(now());
    return *detail::fetch_one_decoded<HoldRow>(s, bind_hold, decode_hold);
  });
}

// False when there was no hold; an unknown conversation or user is
// Error(not_found), as the class comment says.
bool RetentionStore::release(ConversationId id) {
  static const Sql q{"DELETE FROM legal_holds WHERE conversation_id = :c"};
  static const Sql exists{"SELECT 1 FROM conversations WHERE id = :id"};
  return impl_->write(Op{"release hold", "conversation", id}, [&](Connection& c) {
    Stmt s(c, q);
    s.in(static_cast<long long>(id)).one();
    if (s.affected() > 0) return true;
    int one = 0;
    if (!Stmt(c, exists).in(static_cast<long long>(id)).out(one).one()) {
      throw Error(ErrorCode::not_found, fmt::format("conversation {} not found", id));
    }
    return false;
  });
}

bool RetentionStore::release_user(UserId id) {
  static const Sql q{"DELETE FROM legal_holds WHERE user_id = :u"};
  static const Sql exists{"SELECT 1 FROM users WHERE id = :id"};
  return impl_->write(Op{"release hold", "user", id}, [&](Connection& c) {
    Stmt s(c, q);
    s.in(static_cast<long long>(id)).one();
    if (s.affected() > 0) return true;
    int one = 0;
    if (!Stmt(c, exists).in(static_cast<long long>(id)).out(one).one()) {
      throw Error(ErrorCode::not_found, fmt::format("user {} not found", id));
    }
    return false;
  });
}

std::vector<LegalHold> RetentionStore::holds() {
  static const Sql q{"SELECT " CS_HOLD_COLS " FROM legal_holds ORDER BY id"};
  return impl_->read(Op{"list legal holds"}, [&](Connection& c) {
    Stmt s(c, q);
    return detail::fetch_all_decoded<HoldRow>(s, bind_hold, decode_hold);
  });
}

bool RetentionStore::is_held(ConversationId id) {
  // NULL for an unknown conversation, else 0 or 1.
  static const Sql q{
      "SELECT (SELECT CASE WHEN EXISTS (SELECT 1 FROM legal_holds h WHERE h.conversation_id = "
      "c.id) OR EXISTS (SELECT 1 FROM legal_holds h WHERE h.user_id = c.user_id) THEN 1 ELSE 0 "
      "END FROM conversations c WHERE c.id = :id)"};
  return impl_->read(Op{"is held", "conversation", id}, [&](Connection& c) {
    std::optional<long long> held;
    Stmt(c, q).in(static_cast<long long>(id)).out(held).one();
    if (!held) throw Error(ErrorCode::not_found, fmt::format("conversation {} not found", id));
    return *held != 0;
  });
}

#undef CS_HOLD_COLS

// ============================== a user's data ===============================

Json RetentionStore::export_user(UserId id) {
  return impl_->snapshot(Op{"export user", "user", id}, [&](Connection& c) {
    Json doc = Json::object();
    doc["format"] = "convstore.user_export.v1";
    doc["exported_at"] = to_iso8601(now());
    for (const auto& owned : owned_tables()) {
      doc[owned.table.name] = read_rows(c, owned.table, owned.where, id);
    }
    if (doc["users"].empty()) {
      throw Error(ErrorCode::not_found, fmt::format("user {} not found", id));
    }
    doc["user"] = doc["users"][0];
    doc.erase("users");
    return doc;
  });
}

namespace {
const char* const kWalNote =
    "the SQLite WAL could not be checkpointed now (a reader was in the way): earlier page "
    "images of the deleted rows stay in it until the next checkpoint";
}  // namespace

ForgetReceipt RetentionStore::forget_user(UserId id) {
  const bool sqlite = impl_->backend() == Backend::sqlite;
  ForgetReceipt receipt = impl_->write(Op{"forget user", "user", id}, [&](Connection& c) {
    // PostgreSQL: the user and its conversations are locked before the
    // holds are checked (hold and hold_user lock the row they attach to), so
    // a hold committed meanwhile is seen and none can be added until this
    // commits; no conversation can be added either.
    static const Sql user{"SELECT 1 FROM users WHERE id = :u",
                          "SELECT 1 FROM users WHERE id = :u FOR UPDATE"};
    int one = 0;
    if (!Stmt(c, user).in(static_cast<long long>(id)).out(one).one()) {
      throw Error(ErrorCode::not_found, fmt::format("user {} not found", id));
    }
    if (!sqlite) {
      static const Sql lock{
          "SELECT COUNT(*) FROM (SELECT id FROM conversations WHERE user_id = :u ORDER BY id FOR "
          "UPDATE) x"};
      long long n = 0;
      Stmt(c, lock).in(static_cast<long long>(id)).out(n).one();
    }
    static const Sql held{
        "SELECT reason, conversation_id FROM legal_holds WHERE user_id = :u OR conversation_id "
        "IN (SELECT id FROM conversations WHERE user_id = :u2) ORDER BY id LIMIT 1"};
    std::string reason;
    std::optional<long long> conversation;
    if (Stmt(c, held)
            .in(static_cast<long long>(id))
            .in(static_cast<long long>(id))
            .out(reason)
            .out(conversation)
            .one()) {
      throw Error(ErrorCode::failed_precondition,
                  conversation ? fmt::format("user {}: conversation {} is under legal hold ({})",
                                             id, *conversation, reason)
                               : fmt::format("user {} is under legal hold ({})", id, reason));
    }
    // Deleted content is overwritten, not left in free pages; switched off
    // again however this ends (the connection is reused).
    struct SecureDelete {
      Connection& c;
      bool on;
      ~SecureDelete() {
        if (!on) return;
        try {
          c.execute_once("PRAGMA secure_delete = OFF");
        } catch (...) {
          // the connection is broken: it is not reused either
        }
      }
    } secure{c, sqlite};
    if (sqlite) c.execute_once("PRAGMA secure_delete = ON");
    ForgetReceipt r;
    r.user_id = id;
    for (const auto& owned : owned_tables()) {
      // Never deleted here: there is none (refused above), and a hold is
      // only ever removed by release.
      if (std::string_view(owned.table.name) == "legal_holds") continue;
      Stmt del(c, fmt::format("DELETE FROM {} WHERE {}", owned.table.name, numbered(owned.where)));
      bind_owned(del, owned.where, id);
      del.one();
      const long long n = del.affected();
      if (n == 0) continue;
      r.rows[owned.table.name] = n;
      r.total += n;
    }
    if (sqlite) {
      // Full-text indexes keep the words of deleted rows in their older
      // segments until those are merged: merge them now.
      std::vector<std::string> fts;
      {
        Stmt s(c, std::string("SELECT name FROM sqlite_master WHERE type = 'table' AND sql LIKE "
                              "'CREATE VIRTUAL TABLE%USING fts5%' ORDER BY name"));
        std::string name;
        s.out(name);
        while (s.next()) fts.push_back(name);
      }
      for (const auto& name : fts) {
        c.execute_once(fmt::format("INSERT INTO \"{0}\" (\"{0}\") VALUES ('optimize')", name));
      }
    }
    r.notes.push_back(
        "tasks name no user (payloads and dedupe keys are the application's): none removed");
    r.notes.push_back(
        "session cache keys are the application's and name no user: none removed (they expire)");
    r.notes.push_back(
        "session agent state is found by the keys of the user's live and archived "
        "conversations: the state of a conversation deleted earlier names no user and is not "
        "removed (a retention run with remove_orphans removes it)");
    return r;
  });
  if (sqlite && impl_->current() == nullptr) {
    // The WAL keeps earlier page images until it is checkpointed and reset
    // (inside Store::transaction nothing is committed yet: not now).
    try {
      // A reader in the way leaves part of the WAL in place (busy = 1).
      const int busy = impl_->read(Op{"forget user"}, [&](Connection& c) {
        int b = 0;
        long long log = 0, done = 0;
        Stmt(c, std::string("PRAGMA wal_checkpoint(TRUNCATE)")).out(b).out(log).out(done).one();
        return b;
      });
      if (busy != 0) receipt.notes.push_back(kWalNote);
    } catch (const Error&) {
      receipt.notes.push_back(kWalNote);
    }
  }
  return receipt;
}

ForgetReceipt RetentionStore::forget_user(std::string_view channel, std::string_view external_id) {
  auto user = impl_->conversations.find_user(channel, external_id);
  if (!user) {
    throw Error(ErrorCode::not_found,
                fmt::format("no user '{}' on channel '{}'", external_id, channel));
  }
  return forget_user(user->id);
}

// ============================== storage stats ===============================

std::vector<StorageStats> RetentionStore::storage_stats(
    StatsGroup group, const std::optional<RetentionPolicy>& policy, std::optional<Timestamp> at) {
  std::optional<RetentionReport> dry;
  if (policy) {
    RetentionRun r;
    r.dry_run = true;
    r.now = at;
    dry = run(*policy, r);
  }
  const char* g = group == StatsGroup::channel ? "c.channel" : "COALESCE(c.agent, '')";
  const Backend backend = impl_->backend();
  std::vector<StorageStats> out = impl_->snapshot(Op{"storage stats"}, [&](Connection& c) {
    std::vector<StorageStats> rows;
    std::map<std::string, std::size_t> index;
    {
      Stmt s(c, fmt::format(
                    "SELECT {0}, COUNT(*), SUM(CASE WHEN c.status = 'active' THEN 1 ELSE 0 END), "
                    "SUM(CASE WHEN c.status = 'completed' THEN 1 ELSE 0 END), SUM(CASE WHEN "
                    "c.status = 'abandoned' THEN 1 ELSE 0 END), SUM(CASE WHEN c.status = "
                    "'archived' THEN 1 ELSE 0 END), MIN(c.created_at) FROM conversations c "
                    "GROUP BY {0} ORDER BY {0}",
                    g));
      StorageStats row;
      long long n = 0, a = 0, co = 0, ab = 0, ar = 0;
      s.out(row.group).out(n).out(a).out(co).out(ab).out(ar).out(row.oldest);
      while (s.next()) {
        row.conversations = n;
        row.active = a;
        row.completed = co;
        row.abandoned = ab;
        row.archived = ar;
        index[row.group] = rows.size();
        rows.push_back(row);
      }
    }
    {
      Stmt s(c, fmt::format("SELECT {0}, COUNT(*), COALESCE(SUM({1}), 0) FROM messages m JOIN "
                            "conversations c ON c.id = m.conversation_id GROUP BY {0}",
                            g,
                            backend == Backend::postgresql ? "OCTET_LENGTH(m.content)"
                                                           : "LENGTH(CAST(m.content AS BLOB))"));
      std::string key;
      long long n = 0, bytes = 0;
      s.out(key).out(n).out(bytes);
      while (s.next()) {
        auto it = index.find(key);
        if (it == index.end()) continue;
        rows[it->second].messages = n;
        rows[it->second].content_bytes = bytes;
      }
    }
    return rows;
  });
  if (dry) {
    const auto& by = group == StatsGroup::channel ? dry->by_channel : dry->by_agent;
    for (auto& row : out) {
      auto it = by.find(row.group);
      row.would_remove = it == by.end() ? RetentionCounts{} : it->second;
    }
  }
  return out;
}

}  // namespace convstore
