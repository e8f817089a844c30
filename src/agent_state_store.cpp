// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#include "convstore/agent_state_store.hpp"

#include <algorithm>
#include <charconv>
#include <set>

#include "store_helpers.hpp"
#include "store_impl.hpp"

namespace convstore {

using detail::Backend;
using detail::check_id;
using detail::check_opt;
using detail::check_text;
using detail::Connection;
using detail::fetch_all;
using detail::fetch_one;
using detail::json_text;
using detail::Sql;
using detail::Stmt;

namespace detail {

#define CS_AGENT_COLS                                                                   \
  "id, name, description, type, persona, config, tools, sub_agents, planner, version, " \
  "active, usage_count, last_used_at, metadata, created_at, updated_at"

namespace {

Json persona_json(const AgentPersona& p) {
  return Json{{"name", p.name},
              {"description", p.description},
              {"personality", p.personality},
              {"expertise", p.expertise},
              {"extra", p.extra}};
}

AgentPersona persona_of(const Json& j) {
  AgentPersona p;
  if (!j.is_object()) return p;
  p.name = j.value("name", "");
  p.description = j.value("description", "");
  p.personality = j.value("personality", "");
  if (j.contains("expertise") && j["expertise"].is_array()) {
    for (const auto& e : j["expertise"]) {
      if (e.is_string()) p.expertise.push_back(e.get<std::string>());
    }
  }
  p.extra = j.contains("extra") && j["extra"].is_object() ? j["extra"] : Json::object();
  return p;
}

std::vector<std::string> strings_of(const Json& j) {
  std::vector<std::string> out;
  if (!j.is_array()) return out;
  for (const auto& e : j) {
    if (e.is_string()) out.push_back(e.get<std::string>());
  }
  return out;
}

// The JSON columns of an agent are decoded after the row is read.
struct AgentRow {
  Agent agent;
  Json persona, tools, sub_agents;
};

}  // namespace

void read_row(Stmt& s, AgentState& a) {
  s.out(a.scope.kind).out(a.scope.key).out(a.agent).out(a.state).out(a.version);
  s.out(a.created_at).out(a.updated_at);
}

void read_row(Stmt& s, AgentStateVersion& v) { s.out(v.version).out(v.state).out(v.saved_at); }

}  // namespace detail

namespace {

// ---- agents ----

void bind_agent_row(Stmt& s, detail::AgentRow& r) {
  Agent& a = r.agent;
  s.out(a.id).out(a.name).out(a.description).out(a.type).out(r.persona).out(a.config);
  s.out(r.tools).out(r.sub_agents).out(a.planner).out(a.version).out(a.active);
  s.out(a.usage_count).out(a.last_used_at).out(a.metadata).out(a.created_at).out(a.updated_at);
}

Agent decoded(detail::AgentRow& r) {
  r.agent.persona = detail::persona_of(r.persona);
  r.agent.tools = detail::strings_of(r.tools);
  r.agent.sub_agents = detail::strings_of(r.sub_agents);
  return std::move(r.agent);
}

std::optional<Agent> fetch_agent(Stmt& s) {
  return detail::fetch_one_decoded<detail::AgentRow>(s, bind_agent_row, decoded);
}

std::vector<Agent> fetch_agents(Stmt& s) {
  return detail::fetch_all_decoded<detail::AgentRow>(s, bind_agent_row, decoded);
}

const Sql kGetAgent{"SELECT " CS_AGENT_COLS " FROM agents WHERE id = :id"};
const Sql kLockAgent{"SELECT " CS_AGENT_COLS " FROM agents WHERE id = :id",
                     "SELECT " CS_AGENT_COLS " FROM agents WHERE id = :id FOR UPDATE"};
// Registry writes that change sub-agent links are serialized, so that two
// writers cannot close a cycle between them (SQLite: the write lock does it).
const Sql kLockRegistry{"SELECT 1", "SELECT pg_advisory_xact_lock(7262411036729043202)"};

[[noreturn]] void agent_not_found(std::string_view id) {
  throw Error(ErrorCode::not_found, fmt::format("agent '{}' not found", id));
}

void check_agent_fields(const std::string& name, const std::string& description,
                        const std::string& type, const AgentPersona& persona, const Json& config,
                        const std::vector<std::string>& tools,
                        const std::vector<std::string>& sub_agents,
                        const std::optional<std::string>& planner, const Json& metadata) {
  check_text(name, "agent name");
  check_text(description, "agent description");
  check_id(type, "agent type");
  check_text(persona.name, "agent persona name");
  check_text(persona.description, "agent persona description");
  check_text(persona.personality, "agent persona personality");
  for (const auto& e : persona.expertise) check_text(e, "agent persona expertise");
  if (!persona.extra.is_object()) {
    throw Error(ErrorCode::invalid_argument, "agent persona extra fields must be a JSON object");
  }
  if (!config.is_object()) {
    throw Error(ErrorCode::invalid_argument, "agent config must be a JSON object");
  }
  for (const auto& t : tools) check_id(t, "agent tool name");
  for (const auto& s : sub_agents) check_id(s, "sub-agent id");
  if (std::set<std::string>(sub_agents.begin(), sub_agents.end()).size() != sub_agents.size()) {
    throw Error(ErrorCode::invalid_argument, "a sub-agent is listed twice");
  }
  check_opt(planner, "agent planner");
  if (!metadata.is_object()) {
    throw Error(ErrorCode::invalid_argument, "agent metadata must be a JSON object");
  }
}

// Checks that every sub-agent exists and that `id` is not reachable from
// them (no agent is its own sub-agent, directly or through others): a
// breadth-first walk of the stored links, one query per agent reached.
void check_sub_agents(Connection& c, const std::string& id,
                      const std::vector<std::string>& sub_agents) {
  static const Sql links{"SELECT sub_agents FROM agents WHERE id = :id"};
  struct Item {
    std::string agent;
    std::string via;  // the direct sub-agent this one is reached through
  };
  std::vector<Item> todo;
  for (const auto& s : sub_agents) todo.push_back({s, s});
  std::set<std::string> seen;
  for (std::size_t i = 0; i < todo.size(); ++i) {
    const Item item = todo[i];
    if (item.agent == id) {
      throw Error(ErrorCode::invalid_argument,
                  item.via == id
                      ? fmt::format("agent '{}' cannot be its own sub-agent", id)
                      : fmt::format("sub-agent '{}' would make a cycle: it leads back to '{}'",
                                    item.via, id));
    }
    if (!seen.insert(item.agent).second) continue;
    Json next;
    if (!Stmt(c, links).in(item.agent).out(next).one()) {
      if (i < sub_agents.size()) {
        throw Error(ErrorCode::not_found, fmt::format("sub-agent '{}' of agent '{}' is not "
                                                      "registered",
                                                      item.agent, id));
      }
      continue;  // a dangling link further down (left by a forced delete)
    }
    for (auto& child : detail::strings_of(next)) todo.push_back({std::move(child), item.via});
  }
}

Agent write_agent(Connection& c, const Agent& a) {
  static const Sql q{
      "UPDATE agents SET name = :name, description = :d, type = :type, persona = :p, "
      "config = :cfg, tools = :tools, sub_agents = :subs, planner = :planner, "
      "version = version + 1, active = :active, metadata = :md, updated_at = :t WHERE id = :id "
      "RETURNING " CS_AGENT_COLS};
  std::string persona = json_text(detail::persona_json(a.persona), "agent persona");
  std::string config = json_text(a.config, "agent config");
  std::string tools = json_text(a.tools, "agent tools");
  std::string subs = json_text(a.sub_agents, "agent sub-agents");
  std::string md = json_text(a.metadata, "agent metadata");
  Stmt s(c, q);
  s.in(a.name).in(a.description).in(a.type).in(persona).in(config).in(tools).in(subs);
  s.in(a.planner).in(a.active).in(md).in(now()).in(a.id);
  auto out = fetch_agent(s);
  if (!out) agent_not_found(a.id);
  return *out;
}

// ---- state ----

#define CS_STATE_COLS "scope_kind, scope_key, agent, state, version, created_at, updated_at"

std::optional<ConversationId> check_scope(const StateScope& scope) {
  switch (scope.kind) {
    case StateScope::Kind::conversation: {
      ConversationId id = 0;
      auto r = std::from_chars(scope.key.data(), scope.key.data() + scope.key.size(), id);
      if (r.ec != std::errc() || r.ptr != scope.key.data() + scope.key.size() || id <= 0 ||
          std::to_string(id) != scope.key) {
        throw Error(ErrorCode::invalid_argument,
                    fmt::format("conversation scope '{}' is not a conversation id", scope.key));
      }
      return id;
    }
    case StateScope::Kind::session:
    case StateScope::Kind::named:
      check_id(scope.key, "state scope key");
      return std::nullopt;
  }
  throw Error(ErrorCode::invalid_argument, "state scope kind is outside the set");
}

void check_state(const Json& state, std::string_view what) {
  detail::check_json(state, what);
  if (!state.is_object()) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("{} must be a JSON object, not {}", what, state.type_name()));
  }
}

// Stores `state` under (scope, agent) inside the open transaction, honouring
// the expected version, and records it in the history. Returns the stored
// state.
// The three ways to write a state: upsert (no version named), create (the
// caller expects version 0), replace (the caller names the version it read).
#define CS_STATE_UPSERT                                                                       \
  "INSERT INTO agent_states (scope_kind, scope_key, agent, conversation_id, state, version, " \
  "created_at, updated_at) VALUES (:k, :key, :a, :c, :s, 1, :t1, :t2) "                       \
  "ON CONFLICT (scope_kind, scope_key, agent) DO UPDATE SET state = excluded.state, "         \
  "version = agent_states.version + 1, updated_at = excluded.updated_at RETURNING " CS_STATE_COLS
#define CS_STATE_CREATE                                                                       \
  "INSERT INTO agent_states (scope_kind, scope_key, agent, conversation_id, state, version, " \
  "created_at, updated_at) VALUES (:k, :key, :a, :c, :s, 1, :t1, :t2) "                       \
  "ON CONFLICT (scope_kind, scope_key, agent) DO NOTHING RETURNING " CS_STATE_COLS
#define CS_STATE_REPLACE                                                        \
  "UPDATE agent_states SET state = :s, version = version + 1, updated_at = :t " \
  "WHERE scope_kind = :k AND scope_key = :key AND agent = :a AND version = :v " \
  "RETURNING " CS_STATE_COLS
// PostgreSQL keeps the history in the same statement (one round trip): the
// written row feeds the history insert, and older versions are trimmed.
#define CS_STATE_WITH_HISTORY(write)                                                       \
  "WITH s AS (" write                                                                      \
  "), h AS (INSERT INTO agent_state_history (scope_kind, scope_key, "                      \
  "agent, version, state, saved_at) SELECT scope_kind, scope_key, agent, version, state, " \
  "updated_at FROM s), d AS (DELETE FROM agent_state_history WHERE scope_kind = :hk AND "  \
  "scope_key = :hkey AND agent = :ha AND version <= (SELECT version FROM s) - :keep) "     \
  "SELECT " CS_STATE_COLS " FROM s"

// Stores `state` under (scope, agent), honouring the expected version, and
// records it in the history. On PostgreSQL this is one statement; on SQLite
// it needs the caller's transaction when `history` > 0.
AgentState store_state(Connection& c, const StateScope& scope,
                       std::optional<ConversationId> conversation, const std::string& agent,
                       const Json& state, std::optional<std::int64_t> expected,
                       std::size_t history) {
  static const Sql upsert{CS_STATE_UPSERT};
  static const Sql create{CS_STATE_CREATE};
  static const Sql replace{CS_STATE_REPLACE};
  static const Sql upsert_h{"", CS_STATE_WITH_HISTORY(CS_STATE_UPSERT)};
  static const Sql create_h{"", CS_STATE_WITH_HISTORY(CS_STATE_CREATE)};
  static const Sql replace_h{"", CS_STATE_WITH_HISTORY(CS_STATE_REPLACE)};
  static const Sql current{
      "SELECT version FROM agent_states WHERE scope_kind = :k AND scope_key = :key AND agent = :a"};
  static const Sql record{
      "INSERT INTO agent_state_history (scope_kind, scope_key, agent, version, state, saved_at) "
      "VALUES (:k, :key, :a, :v, :s, :t)"};
  static const Sql trim{
      "DELETE FROM agent_state_history WHERE scope_kind = :k AND scope_key = :key AND agent = :a "
      "AND version <= :v"};
  const bool combined = history > 0 && c.backend() == Backend::postgresql;
  std::string text = json_text(state, "agent state");
  Timestamp t = now();
  const Sql& q = !expected        ? (combined ? upsert_h : upsert)
                 : *expected == 0 ? (combined ? create_h : create)
                                  : (combined ? replace_h : replace);
  Stmt s(c, q);
  if (expected && *expected > 0) {
    s.in(text).in(t).in(scope.kind).in(scope.key).in(agent).in(*expected);
  } else {
    s.in(scope.kind).in(scope.key).in(agent).in(conversation).in(text).in(t).in(t);
  }
  if (combined) s.in(scope.kind).in(scope.key).in(agent).in(history);
  std::optional<AgentState> out = fetch_one<AgentState>(s);
  if (!out) {
    long long stored = 0;
    bool exists = Stmt(c, current).in(scope.kind).in(scope.key).in(agent).out(stored).one();
    throw Error(ErrorCode::conflict,
                fmt::format("state of agent '{}' in scope '{}' is at version {}, not the "
                            "expected {}",
                            agent, scope.key, exists ? stored : 0, *expected));
  }
  if (history > 0 && !combined) {
    Stmt(c, record).in(scope.kind).in(scope.key).in(agent).in(out->version).in(text).in(t).one();
    long long oldest_kept = out->version - static_cast<long long>(history);
    if (oldest_kept > 0) {
      Stmt(c, trim).in(scope.kind).in(scope.key).in(agent).in(oldest_kept).one();
    }
  }
  return *out;
}

}  // namespace

AgentStateStore::AgentStateStore(Store::Impl* impl) : impl_(impl) {}

// ================================ registry =================================

namespace {

// Keeps the cache right after a write (`t` was taken before it): at once
// outside a transaction; inside
// one the entry is invalidated now and again at commit (the transaction's
// value must not be served before it commits, nor the old one after).
void cached_write(Store::Impl* impl, const Agent& a, const detail::AgentCache::Ticket& t) {
  if (Connection* c = impl->current()) {
    impl->agent_cache.invalidate(a.id);
    std::string id = a.id;
    c->after_commit.push_back([impl, id] { impl->agent_cache.invalidate(id); });
  } else {
    impl->agent_cache.replace(std::make_shared<const Agent>(a), t);
  }
}

// The same for an agent that is gone (or whose new value is not at hand).
void cached_drop(Store::Impl* impl, const std::string& id) {
  impl->agent_cache.invalidate(id);
  if (Connection* c = impl->current()) {
    c->after_commit.push_back([impl, id] { impl->agent_cache.invalidate(id); });
  }
}

}  // namespace

Agent AgentStateStore::create_agent(const NewAgent& n) {
  check_id(n.id, "agent id");
  detail::check_json(n.persona.extra, "agent persona");
  detail::check_json(n.config, "agent config");
  detail::check_json(n.metadata, "agent metadata");
  check_agent_fields(n.name, n.description, n.type, n.persona, n.config, n.tools, n.sub_agents,
                     n.planner, n.metadata.is_null() ? Json::object() : n.metadata);
  std::string persona = json_text(detail::persona_json(n.persona), "agent persona");
  std::string config = json_text(n.config, "agent config");
  std::string tools = json_text(n.tools, "agent tools");
  std::string subs = json_text(n.sub_agents, "agent sub-agents");
  std::string md = json_text(n.metadata.is_null() ? Json::object() : n.metadata, "agent metadata");
  static const Sql q{
      "INSERT INTO agents (id, name, description, type, persona, config, tools, sub_agents, "
      "planner, metadata, created_at, updated_at) VALUES (:id, :name, :d, :type, :p, :cfg, "
      ":tools, :subs, :planner, :md, :t1, :t2) RETURNING " CS_AGENT_COLS};
  auto ticket = impl_->agent_cache.ticket(n.id);
  try {
    Agent a = impl_->write(Op{"create agent"}, [&](Connection& c) {
      Stmt(c, kLockRegistry).one();
      check_sub_agents(c, n.id, n.sub_agents);
      Timestamp t = now();
      Stmt s(c, q);
      s.in(n.id).in(n.name).in(n.description).in(n.type).in(persona).in(config).in(tools);
      s.in(subs).in(detail::cleared(n.planner.value_or(""))).in(md).in(t).in(t);
      return *fetch_agent(s);
    });
    cached_write(impl_, a, ticket);
    return a;
  } catch (const Error& e) {
    if (e.code() == ErrorCode::already_exists) {
      throw Error(ErrorCode::already_exists,
                  fmt::format("an agent with id '{}' already exists", n.id), e.sqlstate());
    }
    throw;
  }
}

std::shared_ptr<const Agent> AgentStateStore::get_agent(std::string_view id) {
  check_id(id, "agent id");
  bool in_transaction = impl_->current() != nullptr;
  if (!in_transaction) {
    if (auto hit = impl_->agent_cache.get(id)) return hit;
  }
  auto ticket = impl_->agent_cache.ticket(id);
  auto a = impl_->read(Op{"get agent"}, [&](Connection& c) {
    Stmt s(c, kGetAgent);
    s.in(id);
    return fetch_agent(s);
  });
  if (!a) return nullptr;
  auto shared = std::make_shared<const Agent>(std::move(*a));
  if (!in_transaction) impl_->agent_cache.put(shared, ticket);
  return shared;
}

Page<Agent> AgentStateStore::list_agents(const AgentFilter& f) {
  if (f.limit == 0 || f.limit > 1000) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("page size {} is outside 1..1000", f.limit));
  }
  if (f.type) check_id(*f.type, "agent type filter");
  std::optional<std::string> after;
  if (!f.cursor.empty()) {
    if (f.cursor.compare(0, 3, "a1:") != 0 || f.cursor.size() == 3) {
      throw Error(ErrorCode::invalid_argument, fmt::format("malformed page cursor '{}'", f.cursor));
    }
    after = f.cursor.substr(3);
    check_id(*after, "page cursor");
  }
  std::string sql = "SELECT " CS_AGENT_COLS " FROM agents WHERE 1 = 1";
  if (!f.include_inactive) sql += " AND active = :active";
  if (f.type) sql += " AND type = :type";
  if (after) sql += " AND id > :after";
  sql += " ORDER BY id LIMIT :lim";
  return impl_->read(Op{"list agents"}, [&](Connection& c) {
    Stmt s(c, sql);
    if (!f.include_inactive) s.in(true);
    if (f.type) s.in(*f.type);
    if (after) s.in(*after);
    s.in(f.limit + 1);
    Page<Agent> page;
    page.items = fetch_agents(s);
    if (page.items.size() > f.limit) {
      page.items.pop_back();
      page.next_cursor = "a1:" + page.items.back().id;
    }
    return page;
  });
}

Agent AgentStateStore::update_agent(std::string_view id, const AgentUpdate& up) {
  check_id(id, "agent id");
  if (up.persona) detail::check_json(up.persona->extra, "agent persona");
  detail::check_json(up.config, "agent config");
  detail::check_json(up.metadata_patch, "agent metadata patch");
  auto ticket = impl_->agent_cache.ticket(id);
  Agent a = impl_->write(Op{"update agent"}, [&](Connection& c) {
    if (up.sub_agents) Stmt(c, kLockRegistry).one();
    Stmt sel(c, kLockAgent);
    sel.in(id);
    auto a = fetch_agent(sel);
    if (!a) agent_not_found(id);
    if (up.expected_version && *up.expected_version != a->version) {
      throw Error(ErrorCode::conflict,
                  fmt::format("agent '{}' is at version {}, not the expected {}", id, a->version,
                              *up.expected_version));
    }
    if (up.name) a->name = *up.name;
    if (up.description) a->description = *up.description;
    if (up.type) a->type = *up.type;
    if (up.persona) a->persona = *up.persona;
    if (up.config) a->config = *up.config;
    if (up.tools) a->tools = *up.tools;
    if (up.sub_agents) a->sub_agents = *up.sub_agents;
    if (up.planner) a->planner = detail::cleared(*up.planner);
    if (up.metadata_patch) a->metadata.merge_patch(*up.metadata_patch);
    if (up.metadata_patch && !up.metadata_patch->is_object()) {
      throw Error(ErrorCode::invalid_argument, "agent metadata patch must be a JSON object");
    }
    check_agent_fields(a->name, a->description, a->type, a->persona, a->config, a->tools,
                       a->sub_agents, a->planner, a->metadata);
    if (up.sub_agents) check_sub_agents(c, a->id, a->sub_agents);
    return write_agent(c, *a);
  });
  cached_write(impl_, a, ticket);
  return a;
}

namespace {

Agent set_active(Store::Impl* impl, std::string_view id, bool active) {
  auto ticket = impl->agent_cache.ticket(id);
  Agent a = impl->write(Op{active ? "restore agent" : "deactivate agent"}, [&](Connection& c) {
    Stmt sel(c, kLockAgent);
    sel.in(id);
    auto a = fetch_agent(sel);
    if (!a) agent_not_found(id);
    a->active = active;
    return write_agent(c, *a);
  });
  cached_write(impl, a, ticket);
  return a;
}

}  // namespace

bool AgentStateStore::deactivate_agent(std::string_view id) {
  check_id(id, "agent id");
  try {
    set_active(impl_, id, false);
    return true;
  } catch (const Error& e) {
    if (e.code() == ErrorCode::not_found) return false;
    throw;
  }
}

Agent AgentStateStore::restore_agent(std::string_view id) {
  check_id(id, "agent id");
  return set_active(impl_, id, true);
}

bool AgentStateStore::delete_agent(std::string_view id, bool force) {
  check_id(id, "agent id");
  static const Sql used{
      "SELECT COUNT(*) FROM conversations WHERE agent = :a1 OR active_agent = :a2"};
  static const Sql parents{
      "SELECT DISTINCT agents.id FROM agents, json_each(agents.sub_agents) AS s "
      "WHERE s.value = :id ORDER BY agents.id",
      "SELECT id FROM agents WHERE sub_agents @> jsonb_build_array(:id::text) ORDER BY id"};
  static const Sql del{"DELETE FROM agents WHERE id = :id"};
  std::vector<std::string> dropped{std::string(id)};
  bool deleted = impl_->write(Op{"delete agent"}, [&](Connection& c) {
    Stmt(c, kLockRegistry).one();
    Stmt exists(c, kLockAgent);
    exists.in(id);
    if (!fetch_agent(exists)) return false;
    long long conversations = 0;
    Stmt(c, used).in(id).in(id).out(conversations).one();
    std::vector<std::string> referrers;
    {
      std::string p;
      Stmt s(c, parents);
      s.in(id).out(p);
      while (s.next()) referrers.push_back(p);
    }
    if (!force && (conversations > 0 || !referrers.empty())) {
      throw Error(ErrorCode::failed_precondition,
                  fmt::format("agent '{}' is still used by {} conversation(s) and {} agent(s); "
                              "deactivate it, or delete with force",
                              id, conversations, referrers.size()));
    }
    for (const auto& r : referrers) {
      Stmt sel(c, kLockAgent);
      sel.in(r);
      auto parent = fetch_agent(sel);
      if (!parent) continue;
      auto& subs = parent->sub_agents;
      subs.erase(std::remove(subs.begin(), subs.end(), std::string(id)), subs.end());
      write_agent(c, *parent);
      dropped.push_back(r);
    }
    Stmt s(c, del);
    s.in(id).one();
    return s.affected() > 0;
  });
  for (const auto& d : dropped) cached_drop(impl_, d);
  return deleted;
}

Agent AgentStateStore::record_use(std::string_view id) {
  check_id(id, "agent id");
  static const Sql q{
      "UPDATE agents SET usage_count = usage_count + 1, last_used_at = :t WHERE id = :id "
      "RETURNING " CS_AGENT_COLS};
  auto ticket = impl_->agent_cache.ticket(id);
  auto a = impl_->single(Op{"record agent use"}, [&](Connection& c) {
    Stmt s(c, q);
    s.in(now()).in(id);
    return fetch_agent(s);
  });
  if (!a) agent_not_found(id);
  cached_write(impl_, *a, ticket);
  return *a;
}

void AgentStateStore::clear_cache() noexcept { impl_->agent_cache.clear(); }

// ================================== state ==================================

AgentState AgentStateStore::save_state(const StateScope& scope, std::string_view agent,
                                       const Json& state, std::optional<std::int64_t> expected) {
  auto conversation = check_scope(scope);
  check_id(agent, "agent id");
  check_state(state, "agent state");
  if (expected && *expected < 0) {
    throw Error(ErrorCode::invalid_argument, "expected state version is negative");
  }
  const std::string a(agent);
  const std::size_t history = impl_->pool.options().state_history;
  const Op op{"save agent state"};
  auto run = [&](Connection& c) {
    return store_state(c, scope, conversation, a, state, expected, history);
  };
  try {
    // Without a history, or on PostgreSQL, the save is one statement,
    // atomic on its own (the query that explains a conflict only reads): no
    // BEGIN / COMMIT.
    bool one_statement = history == 0 || impl_->backend() == Backend::postgresql;
    return one_statement ? impl_->single(op, run) : impl_->write(op, run);
  } catch (const Error& e) {
    if (e.code() == ErrorCode::not_found && conversation) {
      throw Error(ErrorCode::not_found, fmt::format("conversation {} not found", *conversation),
                  e.sqlstate());
    }
    throw;
  }
}

namespace {

const Sql kGetState{"SELECT " CS_STATE_COLS
                    " FROM agent_states WHERE scope_kind = :k AND scope_key = :key AND agent = :a"};
const Sql kLockState{
    "SELECT " CS_STATE_COLS
    " FROM agent_states WHERE scope_kind = :k AND scope_key = :key AND agent = :a",
    "SELECT " CS_STATE_COLS
    " FROM agent_states WHERE scope_kind = :k AND scope_key = :key AND agent = :a FOR UPDATE"};

std::optional<AgentState> state_row(Connection& c, const Sql& q, const StateScope& scope,
                                    std::string_view agent) {
  Stmt s(c, q);
  s.in(scope.kind).in(scope.key).in(agent);
  return fetch_one<AgentState>(s);
}

}  // namespace

std::optional<AgentState> AgentStateStore::get_state(const StateScope& scope,
                                                     std::string_view agent) {
  check_scope(scope);
  check_id(agent, "agent id");
  return impl_->read(Op{"load agent state"},
                     [&](Connection& c) { return state_row(c, kGetState, scope, agent); });
}

Json AgentStateStore::load_state(const StateScope& scope, std::string_view agent) {
  auto s = get_state(scope, agent);
  return s ? std::move(s->state) : Json::object();
}

AgentState AgentStateStore::patch_state(const StateScope& scope, std::string_view agent,
                                        const Json& patch, std::optional<std::int64_t> expected) {
  auto conversation = check_scope(scope);
  check_id(agent, "agent id");
  check_state(patch, "agent state patch");
  json_text(patch, "agent state patch");
  const std::string a(agent);
  const std::size_t history = impl_->pool.options().state_history;
  auto attempt = [&] {
    return impl_->write(Op{"patch agent state"}, [&](Connection& c) {
      auto stored = state_row(c, kLockState, scope, a);
      std::int64_t version = stored ? stored->version : 0;
      if (expected && *expected != version) {
        throw Error(ErrorCode::conflict,
                    fmt::format("state of agent '{}' in scope '{}' is at version {}, not the "
                                "expected {}",
                                a, scope.key, version, *expected));
      }
      Json state = stored ? std::move(stored->state) : Json::object();
      state.merge_patch(patch);
      // The row is locked (PostgreSQL) or the database is (SQLite), so the
      // version check below fails only when two first patches race to create
      // the row.
      return store_state(c, scope, conversation, a, state, version, history);
    });
  };
  for (int tries = 0;; ++tries) {
    try {
      return attempt();
    } catch (const Error& e) {
      // Lost the race to create the state: the row exists now and the next
      // attempt waits for its lock. A version the caller named is final.
      if (e.code() != ErrorCode::conflict || expected || tries >= 3) throw;
    }
  }
}

std::vector<AgentState> AgentStateStore::load_scope(const StateScope& scope) {
  check_scope(scope);
  static const Sql q{"SELECT " CS_STATE_COLS
                     " FROM agent_states WHERE scope_kind = :k AND scope_key = :key "
                     "ORDER BY agent"};
  return impl_->read(Op{"load scope state"}, [&](Connection& c) {
    Stmt s(c, q);
    s.in(scope.kind).in(scope.key);
    return fetch_all<AgentState>(s);
  });
}

bool AgentStateStore::delete_state(const StateScope& scope, std::string_view agent) {
  check_scope(scope);
  check_id(agent, "agent id");
  static const Sql q{
      "DELETE FROM agent_states WHERE scope_kind = :k AND scope_key = :key AND agent = :a"};
  return impl_->write(Op{"delete agent state"}, [&](Connection& c) {
    Stmt s(c, q);
    s.in(scope.kind).in(scope.key).in(agent).one();
    return s.affected() > 0;
  });
}

std::vector<StateScope> AgentStateStore::scopes_of(std::string_view agent, std::size_t limit) {
  check_id(agent, "agent id");
  if (limit == 0 || limit > 100000) {
    throw Error(ErrorCode::invalid_argument, fmt::format("limit {} is outside 1..100000", limit));
  }
  static const Sql q{
      "SELECT scope_kind, scope_key FROM agent_states WHERE agent = :a "
      "ORDER BY updated_at DESC, scope_kind, scope_key LIMIT :n"};
  return impl_->read(Op{"list scopes of agent"}, [&](Connection& c) {
    std::vector<StateScope> out;
    StateScope scope;
    Stmt s(c, q);
    s.in(agent).in(limit).out(scope.kind).out(scope.key);
    while (s.next()) out.push_back(scope);
    return out;
  });
}

std::vector<AgentStateVersion> AgentStateStore::state_history(const StateScope& scope,
                                                              std::string_view agent) {
  check_scope(scope);
  check_id(agent, "agent id");
  // LIMIT: concurrent saves may leave a few more rows than kept until the
  // next save trims them (a save's trim does not see a concurrent save's
  // row); they are never shown.
  static const Sql q{
      "SELECT version, state, saved_at FROM agent_state_history WHERE scope_kind = :k AND "
      "scope_key = :key AND agent = :a ORDER BY version DESC LIMIT :n"};
  const std::size_t keep = impl_->pool.options().state_history;
  if (keep == 0) return {};
  return impl_->read(Op{"read agent state history"}, [&](Connection& c) {
    Stmt s(c, q);
    s.in(scope.kind).in(scope.key).in(agent).in(keep);
    return fetch_all<AgentStateVersion>(s);
  });
}

namespace {

std::optional<AgentStateVersion> version_row(Connection& c, const StateScope& scope,
                                             std::string_view agent, std::int64_t version) {
  static const Sql q{
      "SELECT version, state, saved_at FROM agent_state_history WHERE scope_kind = :k AND "
      "scope_key = :key AND agent = :a AND version = :v"};
  Stmt s(c, q);
  s.in(scope.kind).in(scope.key).in(agent).in(version);
  if (auto v = fetch_one<AgentStateVersion>(s)) return v;
  // Without a history the current version is still there.
  if (auto current = state_row(c, kGetState, scope, agent);
      current && current->version == version) {
    return AgentStateVersion{current->version, std::move(current->state), current->updated_at};
  }
  return std::nullopt;
}

}  // namespace

std::optional<AgentStateVersion> AgentStateStore::load_state_version(const StateScope& scope,
                                                                     std::string_view agent,
                                                                     std::int64_t version) {
  check_scope(scope);
  check_id(agent, "agent id");
  return impl_->snapshot(Op{"load agent state version"},
                         [&](Connection& c) { return version_row(c, scope, agent, version); });
}

AgentState AgentStateStore::rollback_state(const StateScope& scope, std::string_view agent,
                                           std::int64_t version) {
  auto conversation = check_scope(scope);
  check_id(agent, "agent id");
  const std::string a(agent);
  const std::size_t history = impl_->pool.options().state_history;
  return impl_->write(Op{"roll back agent state"}, [&](Connection& c) {
    auto current = state_row(c, kLockState, scope, a);
    if (!current) {
      throw Error(ErrorCode::not_found,
                  fmt::format("agent '{}' has no state in scope '{}'", a, scope.key));
    }
    auto old = version_row(c, scope, a, version);
    if (!old) {
      throw Error(ErrorCode::not_found,
                  fmt::format("version {} of the state of agent '{}' in scope '{}' is not kept",
                              version, a, scope.key));
    }
    return store_state(c, scope, conversation, a, old->state, current->version, history);
  });
}

std::size_t AgentStateStore::cleanup_orphaned_states() {
  static const Sql q{
      "DELETE FROM agent_states WHERE scope_kind = 'session' AND NOT EXISTS "
      "(SELECT 1 FROM conversations c WHERE c.key = agent_states.scope_key)"};
  return impl_->write(Op{"clean up orphaned agent state"}, [&](Connection& c) {
    Stmt s(c, q);
    s.one();
    return static_cast<std::size_t>(s.affected());
  });
}

}  // namespace convstore
