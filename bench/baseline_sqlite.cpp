// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#include <sqlite3.h>

#include <algorithm>
#include <stdexcept>

#include "baseline.hpp"
#include "harness.hpp"

namespace bench {

namespace {

std::string col(sqlite3_stmt* st, int i) {
  const unsigned char* p = sqlite3_column_text(st, i);
  return p != nullptr ? std::string(reinterpret_cast<const char*>(p),
                                    static_cast<std::size_t>(sqlite3_column_bytes(st, i)))
                      : std::string();
}

convstore::Json json(sqlite3_stmt* st, int i) {
  if (sqlite3_column_type(st, i) == SQLITE_NULL) return nullptr;
  auto* p = reinterpret_cast<const char*>(sqlite3_column_text(st, i));
  return convstore::Json::parse(p, p + sqlite3_column_bytes(st, i));
}

convstore::Timestamp time_or_zero(sqlite3_stmt* st, int i) {
  if (sqlite3_column_type(st, i) == SQLITE_NULL) return {};
  return convstore::parse_timestamp(col(st, i));
}

class SqliteBaseline final : public Baseline {
 public:
  SqliteBaseline(const std::string& path, bool full_sync) {
    if (sqlite3_open(path.c_str(), &db_) != SQLITE_OK) throw std::runtime_error("open");
    sqlite3_busy_timeout(db_, 10000);
    exec("PRAGMA journal_mode=WAL");
    exec(full_sync ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL");
    exec("PRAGMA foreign_keys=ON");
    begin_ = prepare("BEGIN IMMEDIATE");
    commit_ = prepare("COMMIT");
    insert_ = prepare(
        "INSERT INTO messages (conversation_id, role, kind, content, metadata, complete, "
        "created_at, updated_at) VALUES (?, 'user', 'text', ?, ?, 1, ?, ?)");
    count_ = prepare(
        "UPDATE conversations SET message_count = message_count + ?, version = version + 1, "
        "last_message_at = ?, updated_at = ? WHERE id = ?");
    recent_ = prepare(
        "SELECT id, conversation_id, role, kind, content, agent, model, token_count, tool_name, "
        "tool_args, tool_call_id, platform_message_id, reply_to_platform_id, client_key, "
        "complete, metadata, created_at, updated_at FROM messages WHERE conversation_id = ? "
        "ORDER BY id DESC LIMIT ?");
    const char* cols =
        "SELECT id, key, user_id, channel, chat_id, agent, kind, title, active_agent, status, "
        "model_override, external_ref, message_count, version, last_message_at, metadata, "
        "created_at, updated_at FROM conversations WHERE user_id = ? ";
    first_page_ = prepare(std::string(cols) + "ORDER BY updated_at DESC, id DESC LIMIT ?");
    upsert_state_ = prepare(
        "INSERT INTO agent_states (scope_kind, scope_key, agent, state, version, created_at, "
        "updated_at) VALUES ('session', ?, ?, ?, 1, ?, ?) ON CONFLICT (scope_kind, scope_key, "
        "agent) DO UPDATE SET state = excluded.state, version = agent_states.version + 1, "
        "updated_at = excluded.updated_at");
    load_state_ = prepare(
        "SELECT state FROM agent_states WHERE scope_kind = 'session' AND scope_key = ? AND "
        "agent = ?");
    load_agent_ = prepare(
        "SELECT id, name, description, type, persona, config, tools, sub_agents, planner, "
        "version, active, usage_count, last_used_at, metadata, created_at, updated_at FROM "
        "agents WHERE id = ?");
    bound_ = prepare("SELECT longest_us FROM calendar_bounds WHERE owner_key = ?");
    overlap_ = prepare(
        "SELECT id, owner_id, uid, title, description, location, start_at, end_at, all_day, "
        "time_zone, metadata, created_at, updated_at FROM calendar_events WHERE owner_id = ? "
        "AND start_at >= ? AND start_at < ? AND end_at > ? ORDER BY start_at, id");
    next_page_ = prepare(std::string(cols) +
                         "AND (updated_at, id) < (?, ?) ORDER BY updated_at DESC, id DESC LIMIT ?");
  }
  ~SqliteBaseline() override {
    for (auto* st : {begin_, commit_, insert_, count_, recent_, first_page_, next_page_,
                     upsert_state_, load_state_, load_agent_, bound_, overlap_}) {
      sqlite3_finalize(st);
    }
    sqlite3_close(db_);
  }

  long long append(long long conversation, const std::string& content,
                   const convstore::Json& metadata) override {
    std::string t = now_text(), md = metadata.dump();
    step(begin_);
    long long id = insert(conversation, content, md, t);
    count(conversation, 1, t);
    step(commit_);
    return id;
  }

  void append_batch(long long conversation, const std::vector<std::string>& contents,
                    const convstore::Json& metadata) override {
    std::string t = now_text();
    step(begin_);
    for (const auto& c : contents) insert(conversation, c, metadata.dump(), t);
    count(conversation, static_cast<long long>(contents.size()), t);
    step(commit_);
  }

  std::vector<RawMessage> recent(long long conversation, int n) override {
    std::vector<RawMessage> out;
    sqlite3_bind_int64(recent_, 1, conversation);
    sqlite3_bind_int(recent_, 2, n);
    while (sqlite3_step(recent_) == SQLITE_ROW) {
      RawMessage m;
      m.id = sqlite3_column_int64(recent_, 0);
      m.conversation_id = sqlite3_column_int64(recent_, 1);
      m.role = col(recent_, 2);
      m.kind = col(recent_, 3);
      m.content = col(recent_, 4);
      m.agent = col(recent_, 5);
      m.model = col(recent_, 6);
      m.token_count = sqlite3_column_int64(recent_, 7);
      m.tool_name = col(recent_, 8);
      m.tool_args = json(recent_, 9);
      m.tool_call_id = col(recent_, 10);
      m.platform_message_id = col(recent_, 11);
      m.reply_to_platform_id = col(recent_, 12);
      m.client_key = col(recent_, 13);
      m.complete = col(recent_, 14);
      m.metadata = json(recent_, 15);
      m.created_at = convstore::parse_timestamp(col(recent_, 16));
      m.updated_at = convstore::parse_timestamp(col(recent_, 17));
      out.push_back(std::move(m));
    }
    sqlite3_reset(recent_);
    std::reverse(out.begin(), out.end());
    return out;
  }

  std::vector<RawConversation> list(long long user, const std::string& after_time,
                                    long long after_id, int limit) override {
    sqlite3_stmt* st = after_time.empty() ? first_page_ : next_page_;
    int i = 1;
    sqlite3_bind_int64(st, i++, user);
    if (!after_time.empty()) {
      sqlite3_bind_text(st, i++, after_time.c_str(), -1, SQLITE_TRANSIENT);
      sqlite3_bind_int64(st, i++, after_id);
    }
    sqlite3_bind_int(st, i, limit);
    std::vector<RawConversation> out;
    while (sqlite3_step(st) == SQLITE_ROW) {
      RawConversation c;
      c.id = sqlite3_column_int64(st, 0);
      c.key = col(st, 1);
      c.user_id = sqlite3_column_int64(st, 2);
      c.channel = col(st, 3);
      c.chat_id = col(st, 4);
      c.agent = col(st, 5);
      c.kind = col(st, 6);
      c.title = col(st, 7);
      c.active_agent = col(st, 8);
      c.status = col(st, 9);
      c.model_override = col(st, 10);
      c.external_ref = col(st, 11);
      c.message_count = sqlite3_column_int64(st, 12);
      c.version = sqlite3_column_int64(st, 13);
      c.last_message_at = time_or_zero(st, 14);
      c.metadata = json(st, 15);
      c.created_at = convstore::parse_timestamp(col(st, 16));
      c.updated_at = convstore::parse_timestamp(col(st, 17));
      out.push_back(std::move(c));
    }
    sqlite3_reset(st);
    return out;
  }

  void upsert_state(const std::string& scope, const std::string& agent,
                    const convstore::Json& state) override {
    std::string text = state.dump(), t = now_text();
    sqlite3_bind_text(upsert_state_, 1, scope.c_str(), -1, SQLITE_STATIC);
    sqlite3_bind_text(upsert_state_, 2, agent.c_str(), -1, SQLITE_STATIC);
    sqlite3_bind_text(upsert_state_, 3, text.c_str(), static_cast<int>(text.size()), SQLITE_STATIC);
    sqlite3_bind_text(upsert_state_, 4, t.c_str(), -1, SQLITE_STATIC);
    sqlite3_bind_text(upsert_state_, 5, t.c_str(), -1, SQLITE_STATIC);
    step(upsert_state_);
  }

  convstore::Json load_state(const std::string& scope, const std::string& agent) override {
    sqlite3_bind_text(load_state_, 1, scope.c_str(), -1, SQLITE_STATIC);
    sqlite3_bind_text(load_state_, 2, agent.c_str(), -1, SQLITE_STATIC);
    convstore::Json out = convstore::Json::object();
    if (sqlite3_step(load_state_) == SQLITE_ROW) out = json(load_state_, 0);
    sqlite3_reset(load_state_);
    return out;
  }

  std::size_t overlapping(long long owner, convstore::Timestamp from,
                          convstore::Timestamp to) override {
    sqlite3_bind_int64(bound_, 1, owner);
    long long span = 0;
    if (sqlite3_step(bound_) == SQLITE_ROW) span = sqlite3_column_int64(bound_, 0);
    sqlite3_reset(bound_);
    std::string lo = convstore::to_iso8601(from - std::chrono::microseconds(span));
    std::string hi = convstore::to_iso8601(to), f = convstore::to_iso8601(from);
    sqlite3_bind_int64(overlap_, 1, owner);
    sqlite3_bind_text(overlap_, 2, lo.c_str(), -1, SQLITE_STATIC);
    sqlite3_bind_text(overlap_, 3, hi.c_str(), -1, SQLITE_STATIC);
    sqlite3_bind_text(overlap_, 4, f.c_str(), -1, SQLITE_STATIC);
    std::vector<RawEvent> out;
    while (sqlite3_step(overlap_) == SQLITE_ROW) {
      RawEvent e;
      e.id = sqlite3_column_int64(overlap_, 0);
      e.owner = sqlite3_column_int64(overlap_, 1);
      e.uid = col(overlap_, 2);
      e.title = col(overlap_, 3);
      e.description = col(overlap_, 4);
      e.location = col(overlap_, 5);
      e.start = convstore::parse_timestamp(col(overlap_, 6));
      e.end = convstore::parse_timestamp(col(overlap_, 7));
      e.all_day = sqlite3_column_int(overlap_, 8) != 0;
      e.time_zone = col(overlap_, 9);
      e.metadata = json(overlap_, 10);
      e.created = convstore::parse_timestamp(col(overlap_, 11));
      e.updated = convstore::parse_timestamp(col(overlap_, 12));
      out.push_back(std::move(e));
    }
    sqlite3_reset(overlap_);
    return out.size();
  }

  convstore::Json load_agent_config(const std::string& id) override {
    sqlite3_bind_text(load_agent_, 1, id.c_str(), -1, SQLITE_STATIC);
    convstore::Json out;
    if (sqlite3_step(load_agent_) == SQLITE_ROW) {
      out = {{"id", col(load_agent_, 0)},        {"name", col(load_agent_, 1)},
             {"persona", json(load_agent_, 4)},  {"config", json(load_agent_, 5)},
             {"tools", json(load_agent_, 6)},    {"sub_agents", json(load_agent_, 7)},
             {"metadata", json(load_agent_, 13)}};
    }
    sqlite3_reset(load_agent_);
    return out;
  }

 private:
  void exec(const char* sql) {
    if (sqlite3_exec(db_, sql, nullptr, nullptr, nullptr) != SQLITE_OK) {
      throw std::runtime_error(sqlite3_errmsg(db_));
    }
  }
  sqlite3_stmt* prepare(const std::string& sql) {
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &st, nullptr) != SQLITE_OK) {
      throw std::runtime_error(sqlite3_errmsg(db_));
    }
    return st;
  }
  void step(sqlite3_stmt* st) {
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) throw std::runtime_error(sqlite3_errmsg(db_));
  }
  long long insert(long long conversation, const std::string& content, const std::string& md,
                   const std::string& t) {
    sqlite3_bind_int64(insert_, 1, conversation);
    sqlite3_bind_text(insert_, 2, content.data(), static_cast<int>(content.size()), SQLITE_STATIC);
    sqlite3_bind_text(insert_, 3, md.c_str(), static_cast<int>(md.size()), SQLITE_STATIC);
    sqlite3_bind_text(insert_, 4, t.c_str(), -1, SQLITE_STATIC);
    sqlite3_bind_text(insert_, 5, t.c_str(), -1, SQLITE_STATIC);
    step(insert_);
    return sqlite3_last_insert_rowid(db_);
  }
  void count(long long conversation, long long n, const std::string& t) {
    sqlite3_bind_int64(count_, 1, n);
    sqlite3_bind_text(count_, 2, t.c_str(), -1, SQLITE_STATIC);
    sqlite3_bind_text(count_, 3, t.c_str(), -1, SQLITE_STATIC);
    sqlite3_bind_int64(count_, 4, conversation);
    step(count_);
  }

  sqlite3* db_ = nullptr;
  sqlite3_stmt *begin_, *commit_, *insert_, *count_, *recent_, *first_page_, *next_page_,
      *upsert_state_, *load_state_, *load_agent_, *bound_, *overlap_;
};

}  // namespace

std::unique_ptr<Baseline> sqlite_baseline(const std::string& path, bool full_sync) {
  return std::make_unique<SqliteBaseline>(path, full_sync);
}

}  // namespace bench
