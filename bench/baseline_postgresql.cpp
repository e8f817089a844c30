// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#include <libpq-fe.h>

#include <algorithm>
#include <stdexcept>

#include "baseline.hpp"
#include "harness.hpp"

namespace bench {

namespace {

class Result {
 public:
  explicit Result(PGresult* r) : r_(r) {}
  ~Result() { PQclear(r_); }
  PGresult* get() const { return r_; }

 private:
  PGresult* r_;
};

std::string col(PGresult* r, int row, int i) {
  return PQgetisnull(r, row, i)
             ? std::string()
             : std::string(PQgetvalue(r, row, i), static_cast<std::size_t>(PQgetlength(r, row, i)));
}

convstore::Json json(PGresult* r, int row, int i) {
  if (PQgetisnull(r, row, i)) return nullptr;
  const char* p = PQgetvalue(r, row, i);
  return convstore::Json::parse(p, p + PQgetlength(r, row, i));
}

long long num(PGresult* r, int row, int i) {
  return PQgetisnull(r, row, i) ? 0 : std::stoll(PQgetvalue(r, row, i));
}

class PostgresqlBaseline final : public Baseline {
 public:
  explicit PostgresqlBaseline(const std::string& conninfo) : c_(PQconnectdb(conninfo.c_str())) {
    if (PQstatus(c_) != CONNECTION_OK) throw std::runtime_error(PQerrorMessage(c_));
    PQsetNoticeProcessor(
        c_, [](void*, const char*) {}, nullptr);
    exec("SET TIME ZONE 'UTC'");
    // The best single-statement append: the UPDATE locks the conversation,
    // the INSERT reads its output; atomic on its own, one round trip.
    prepare("append",
            "WITH c AS (UPDATE conversations SET message_count = message_count + 1, "
            "version = version + 1, last_message_at = $3, updated_at = $3 WHERE id = $1 "
            "RETURNING id) INSERT INTO messages (conversation_id, role, kind, content, metadata, "
            "complete, created_at, updated_at) SELECT c.id, 'user', 'text', $2, $4::jsonb, true, "
            "$3::timestamptz, $3::timestamptz FROM c RETURNING id");
    prepare("count",
            "UPDATE conversations SET message_count = message_count + $2, version = version + 1, "
            "last_message_at = $3, updated_at = $3 WHERE id = $1");
    // A batch as one multi-row INSERT: 4 parameters a row.
    std::string batch =
        "INSERT INTO messages (conversation_id, role, kind, content, metadata, complete, "
        "created_at, updated_at) VALUES ";
    for (int i = 0; i < 100; ++i) {
      int p = i * 3;
      batch += (i ? ", " : "") + std::string("($") + std::to_string(p + 1) + ", 'user', 'text', $" +
               std::to_string(p + 2) + ", $" + std::to_string(p + 3) + "::jsonb, true, $301, $301)";
    }
    prepare("batch100", batch);
    prepare("recent",
            "SELECT id, conversation_id, role, kind, content, agent, model, token_count, "
            "tool_name, tool_args, tool_call_id, platform_message_id, reply_to_platform_id, "
            "client_key, complete, metadata, created_at, updated_at FROM messages WHERE "
            "conversation_id = $1 ORDER BY id DESC LIMIT $2");
    const std::string cols =
        "SELECT id, key, user_id, channel, chat_id, agent, kind, title, active_agent, status, "
        "model_override, external_ref, message_count, version, last_message_at, metadata, "
        "created_at, updated_at FROM conversations WHERE user_id = $1 ";
    prepare("first_page", cols + "ORDER BY updated_at DESC, id DESC LIMIT $2");
    prepare("overlap",
            "SELECT id, owner_id, uid, title, description, location, start_at, end_at, all_day, "
            "time_zone, metadata, created_at, updated_at FROM calendar_events WHERE owner_id = $1 "
            "AND start_at >= $2::timestamptz - COALESCE((SELECT longest_us FROM calendar_bounds "
            "WHERE owner_key = $1), 0) * interval '1 microsecond' AND start_at < $3 AND "
            "end_at > $2 ORDER BY start_at, id");
    prepare("upsert_state",
            "INSERT INTO agent_states (scope_kind, scope_key, agent, state, version, created_at, "
            "updated_at) VALUES ('session', $1, $2, $3, 1, $4, $4) ON CONFLICT (scope_kind, "
            "scope_key, agent) DO UPDATE SET state = excluded.state, version = "
            "agent_states.version + 1, updated_at = excluded.updated_at");
    prepare("load_state",
            "SELECT state FROM agent_states WHERE scope_kind = 'session' AND scope_key = $1 AND "
            "agent = $2");
    prepare("load_agent",
            "SELECT id, name, description, type, persona, config, tools, sub_agents, planner, "
            "version, active, usage_count, last_used_at, metadata, created_at, updated_at FROM "
            "agents WHERE id = $1");
    prepare("next_page",
            cols + "AND (updated_at, id) < ($3, $4) ORDER BY updated_at DESC, id DESC LIMIT $2");
  }
  ~PostgresqlBaseline() override { PQfinish(c_); }

  long long append(long long conversation, const std::string& content,
                   const convstore::Json& metadata) override {
    std::string id = std::to_string(conversation), t = now_text(), md = metadata.dump();
    const char* params[] = {id.c_str(), content.c_str(), t.c_str(), md.c_str()};
    Result r(PQexecPrepared(c_, "append", 4, params, nullptr, nullptr, 0));
    check(r.get(), PGRES_TUPLES_OK);
    return num(r.get(), 0, 0);
  }

  void append_batch(long long conversation, const std::vector<std::string>& contents,
                    const convstore::Json& metadata) override {
    if (contents.size() != 100) throw std::runtime_error("the baseline batch is 100 messages");
    std::string id = std::to_string(conversation), t = now_text(), n = "100";
    std::vector<const char*> params;
    std::vector<std::string> md;
    md.reserve(contents.size());
    for (const auto& c : contents) {
      md.push_back(metadata.dump());
      params.push_back(id.c_str());
      params.push_back(c.c_str());
      params.push_back(md.back().c_str());
    }
    params.push_back(t.c_str());
    exec("BEGIN");
    check(Result(PQexecPrepared(c_, "batch100", 301, params.data(), nullptr, nullptr, 0)).get(),
          PGRES_COMMAND_OK);
    const char* cp[] = {id.c_str(), n.c_str(), t.c_str()};
    check(Result(PQexecPrepared(c_, "count", 3, cp, nullptr, nullptr, 0)).get(), PGRES_COMMAND_OK);
    exec("COMMIT");
  }

  std::vector<RawMessage> recent(long long conversation, int n) override {
    std::string id = std::to_string(conversation), lim = std::to_string(n);
    const char* params[] = {id.c_str(), lim.c_str()};
    Result res(PQexecPrepared(c_, "recent", 2, params, nullptr, nullptr, 0));
    PGresult* r = res.get();
    check(r, PGRES_TUPLES_OK);
    std::vector<RawMessage> out;
    for (int i = 0; i < PQntuples(r); ++i) {
      RawMessage m;
      m.id = num(r, i, 0);
      m.conversation_id = num(r, i, 1);
      m.role = col(r, i, 2);
      m.kind = col(r, i, 3);
      m.content = col(r, i, 4);
      m.agent = col(r, i, 5);
      m.model = col(r, i, 6);
      m.token_count = num(r, i, 7);
      m.tool_name = col(r, i, 8);
      m.tool_args = json(r, i, 9);
      m.tool_call_id = col(r, i, 10);
      m.platform_message_id = col(r, i, 11);
      m.reply_to_platform_id = col(r, i, 12);
      m.client_key = col(r, i, 13);
      m.complete = col(r, i, 14);
      m.metadata = json(r, i, 15);
      m.created_at = convstore::parse_timestamp(col(r, i, 16));
      m.updated_at = convstore::parse_timestamp(col(r, i, 17));
      out.push_back(std::move(m));
    }
    std::reverse(out.begin(), out.end());
    return out;
  }

  std::vector<RawConversation> list(long long user, const std::string& after_time,
                                    long long after_id, int limit) override {
    std::string u = std::to_string(user), lim = std::to_string(limit),
                aid = std::to_string(after_id);
    const char* params[] = {u.c_str(), lim.c_str(), after_time.c_str(), aid.c_str()};
    Result res(after_time.empty()
                   ? PQexecPrepared(c_, "first_page", 2, params, nullptr, nullptr, 0)
                   : PQexecPrepared(c_, "next_page", 4, params, nullptr, nullptr, 0));
    PGresult* r = res.get();
    check(r, PGRES_TUPLES_OK);
    std::vector<RawConversation> out;
    for (int i = 0; i < PQntuples(r); ++i) {
      RawConversation c;
      c.id = num(r, i, 0);
      c.key = col(r, i, 1);
      c.user_id = num(r, i, 2);
      c.channel = col(r, i, 3);
      c.chat_id = col(r, i, 4);
      c.agent = col(r, i, 5);
      c.kind = col(r, i, 6);
      c.title = col(r, i, 7);
      c.active_agent = col(r, i, 8);
      c.status = col(r, i, 9);
      c.model_override = col(r, i, 10);
      c.external_ref = col(r, i, 11);
      c.message_count = num(r, i, 12);
      c.version = num(r, i, 13);
      c.last_message_at = PQgetisnull(r, i, 14) ? convstore::Timestamp{}
                                                : convstore::parse_timestamp(col(r, i, 14));
      c.metadata = json(r, i, 15);
      c.created_at = convstore::parse_timestamp(col(r, i, 16));
      c.updated_at = convstore::parse_timestamp(col(r, i, 17));
      out.push_back(std::move(c));
    }
    return out;
  }

  void upsert_state(const std::string& scope, const std::string& agent,
                    const convstore::Json& state) override {
    std::string text = state.dump(), t = now_text();
    const char* params[] = {scope.c_str(), agent.c_str(), text.c_str(), t.c_str()};
    check(Result(PQexecPrepared(c_, "upsert_state", 4, params, nullptr, nullptr, 0)).get(),
          PGRES_COMMAND_OK);
  }

  convstore::Json load_state(const std::string& scope, const std::string& agent) override {
    const char* params[] = {scope.c_str(), agent.c_str()};
    Result r(PQexecPrepared(c_, "load_state", 2, params, nullptr, nullptr, 0));
    check(r.get(), PGRES_TUPLES_OK);
    return PQntuples(r.get()) > 0 ? json(r.get(), 0, 0) : convstore::Json::object();
  }

  std::size_t overlapping(long long owner, convstore::Timestamp from,
                          convstore::Timestamp to) override {
    std::string o = std::to_string(owner), f = convstore::to_iso8601(from),
                t = convstore::to_iso8601(to);
    const char* params[] = {o.c_str(), f.c_str(), t.c_str()};
    Result res(PQexecPrepared(c_, "overlap", 3, params, nullptr, nullptr, 0));
    PGresult* r = res.get();
    check(r, PGRES_TUPLES_OK);
    std::vector<RawEvent> out;
    for (int i = 0; i < PQntuples(r); ++i) {
      RawEvent e;
      e.id = num(r, i, 0);
      e.owner = num(r, i, 1);
      e.uid = col(r, i, 2);
      e.title = col(r, i, 3);
      e.description = col(r, i, 4);
      e.location = col(r, i, 5);
      e.start = convstore::parse_timestamp(col(r, i, 6));
      e.end = convstore::parse_timestamp(col(r, i, 7));
      e.all_day = col(r, i, 8) == "t";
      e.time_zone = col(r, i, 9);
      e.metadata = json(r, i, 10);
      e.created = convstore::parse_timestamp(col(r, i, 11));
      e.updated = convstore::parse_timestamp(col(r, i, 12));
      out.push_back(std::move(e));
    }
    return out.size();
  }

  convstore::Json load_agent_config(const std::string& id) override {
    const char* params[] = {id.c_str()};
    Result res(PQexecPrepared(c_, "load_agent", 1, params, nullptr, nullptr, 0));
    PGresult* r = res.get();
    check(r, PGRES_TUPLES_OK);
    if (PQntuples(r) == 0) return nullptr;
    return {{"id", col(r, 0, 0)},        {"name", col(r, 0, 1)},   {"persona", json(r, 0, 4)},
            {"config", json(r, 0, 5)},   {"tools", json(r, 0, 6)}, {"sub_agents", json(r, 0, 7)},
            {"metadata", json(r, 0, 13)}};
  }

 private:
  void check(PGresult* r, ExecStatusType want) {
    if (PQresultStatus(r) != want) throw std::runtime_error(PQerrorMessage(c_));
  }
  void exec(const char* sql) { check(Result(PQexec(c_, sql)).get(), PGRES_COMMAND_OK); }
  void prepare(const char* name, const std::string& sql) {
    check(Result(PQprepare(c_, name, sql.c_str(), 0, nullptr)).get(), PGRES_COMMAND_OK);
  }

  PGconn* c_;
};

}  // namespace

std::unique_ptr<Baseline> postgresql_baseline(const std::string& conninfo) {
  return std::make_unique<PostgresqlBaseline>(conninfo);
}

}  // namespace bench
