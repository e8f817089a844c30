// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#include <atomic>
#include <functional>
#include <future>
#include <set>
#include <thread>
#include <vector>

#include "support.hpp"

using namespace convstore;

namespace {

NewAgent agent(std::string id, std::vector<std::string> subs = {}) {
  NewAgent a;
  a.id = std::move(id);
  a.name = "Agent " + a.id;
  a.sub_agents = std::move(subs);
  return a;
}

std::string fmt_id(int i) {
  std::string s = std::to_string(i);
  return "agent-" + std::string(3 - s.size(), '0') + s;
}

}  // namespace

// ================================ registry =================================

TEST_CASE_TEMPLATE("agents: create stores every field and get returns it", B, CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& ag = store.agents();
  ag.create_agent(agent("search"));
  NewAgent n = agent("support", {"search"});
  n.description = "Helps customers";
  n.type = "sequential";
  n.persona.name = "Ana";
  n.persona.description = "support persona";
  n.persona.personality = "friendly and helpful";
  n.persona.expertise = {"customer service", "product knowledge"};
  n.persona.extra = {{"tone", "warm"}};
  n.config = {{"temperature", 0.2}, {"max_tokens", 512}};
  n.tools = {"google_search", "calculator"};
  n.planner = "react";
  n.metadata = {{"team", "cx"}};
  Agent a = ag.create_agent(n);
  CHECK(a.version == 1);
  CHECK(a.active);
  CHECK(a.usage_count == 0);
  CHECK_FALSE(a.last_used_at.has_value());

  ag.clear_cache();  // read it from the database
  auto got = ag.get_agent("support");
  REQUIRE(got != nullptr);
  CHECK(got->name == "Agent support");
  CHECK(got->description == "Helps customers");
  CHECK(got->type == "sequential");
  CHECK(got->persona.name == "Ana");
  CHECK(got->persona.personality == "friendly and helpful");
  CHECK(got->persona.expertise ==
        std::vector<std::string>{"customer service", "product knowledge"});
  CHECK(got->persona.extra == Json{{"tone", "warm"}});
  CHECK(got->config == n.config);
  CHECK(got->tools == n.tools);
  CHECK(got->sub_agents == std::vector<std::string>{"search"});
  CHECK(got->planner == "react");
  CHECK(got->metadata == n.metadata);
  CHECK(got->created_at == a.created_at);
  CHECK(ag.get_agent("nobody") == nullptr);
  CHECK(to_json(*got)["persona"]["expertise"].size() == 2);

  CHECK_ERROR_CODE(ag.create_agent(agent("support")), ErrorCode::already_exists);
  CHECK(store.stats().agents == 2);
}

TEST_CASE_TEMPLATE("agents: bad ids and fields are refused and nothing is written", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& ag = store.agents();
  CHECK_ERROR_CODE(ag.create_agent(agent("")), ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(ag.create_agent(agent(std::string(201, 'x'))), ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(ag.create_agent(agent("tab\tid")), ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(ag.create_agent(agent("bad\xff")), ErrorCode::invalid_argument);
  NewAgent cfg = agent("cfg");
  cfg.config = Json::array();
  CHECK_ERROR_CODE(ag.create_agent(cfg), ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(ag.get_agent(""), ErrorCode::invalid_argument);
  CHECK(ag.create_agent(agent(std::string(200, 'y'))).id.size() == 200);
  CHECK(store.stats().agents == 1);
}

TEST_CASE_TEMPLATE("agents: sub-agents must exist and must not form a cycle", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& ag = store.agents();
  CHECK_ERROR_CODE(ag.create_agent(agent("a", {"ghost"})), ErrorCode::not_found);
  CHECK_ERROR_CODE(ag.create_agent(agent("self", {"self"})), ErrorCode::invalid_argument);
  ag.create_agent(agent("c"));
  ag.create_agent(agent("b", {"c"}));
  ag.create_agent(agent("a", {"b"}));
  AgentUpdate loop;
  loop.sub_agents = std::vector<std::string>{"a"};
  CHECK_ERROR_CODE(ag.update_agent("c", loop), ErrorCode::invalid_argument);  // c -> a -> b -> c
  CHECK(ag.get_agent("c")->sub_agents.empty());
  AgentUpdate self;
  self.sub_agents = std::vector<std::string>{"b"};
  CHECK_ERROR_CODE(ag.update_agent("b", self), ErrorCode::invalid_argument);
  AgentUpdate fine;
  fine.sub_agents = std::vector<std::string>{"c", "b"};
  CHECK(ag.update_agent("a", fine).sub_agents.size() == 2);  // a diamond is no cycle
  CHECK(store.stats().agents == 3);
}

TEST_CASE_TEMPLATE("agents: updates bump the version; a stale version is a conflict", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& ag = store.agents();
  ag.create_agent(agent("x"));
  AgentUpdate up;
  up.description = "v2";
  up.tools = std::vector<std::string>{"calc"};
  up.metadata_patch = Json{{"k", 1}};
  up.expected_version = 1;
  Agent v2 = ag.update_agent("x", up);
  CHECK(v2.version == 2);
  CHECK(v2.description == "v2");
  CHECK(v2.metadata == Json{{"k", 1}});
  AgentUpdate stale;
  stale.description = "lost";
  stale.expected_version = 1;
  CHECK_ERROR_CODE(ag.update_agent("x", stale), ErrorCode::conflict);
  CHECK(ag.get_agent("x")->description == "v2");
  CHECK_ERROR_CODE(ag.update_agent("nobody", up), ErrorCode::not_found);
  AgentUpdate clear;
  clear.planner = "";
  CHECK_FALSE(ag.update_agent("x", clear).planner.has_value());
}

TEST_CASE_TEMPLATE("agents: list pages by id, hides inactive ones, filters by type", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& ag = store.agents();
  for (int i = 0; i < 25; ++i) {
    NewAgent n = agent(fmt_id(i));
    n.type = i % 5 == 0 ? "parallel" : "regular";
    ag.create_agent(n);
  }
  CHECK(ag.deactivate_agent(fmt_id(3)));
  CHECK_FALSE(ag.deactivate_agent("nobody"));
  AgentFilter f;
  f.limit = 10;
  std::vector<std::string> ids;
  for (;;) {
    auto page = ag.list_agents(f);
    for (auto& a : page.items) ids.push_back(a.id);
    if (page.next_cursor.empty()) break;
    f.cursor = page.next_cursor;
  }
  CHECK(ids.size() == 24);
  CHECK(std::is_sorted(ids.begin(), ids.end()));
  AgentFilter all;
  all.include_inactive = true;
  all.limit = 100;
  CHECK(ag.list_agents(all).items.size() == 25);
  AgentFilter parallel;
  parallel.type = "parallel";
  CHECK(ag.list_agents(parallel).items.size() == 5);
  AgentFilter bad;
  bad.cursor = "nonsense";
  CHECK_ERROR_CODE(ag.list_agents(bad), ErrorCode::invalid_argument);

  CHECK_FALSE(ag.get_agent(fmt_id(3))->active);
  CHECK(ag.restore_agent(fmt_id(3)).active);
  CHECK(ag.list_agents(AgentFilter{false, std::nullopt, 100, ""}).items.size() == 25);
  CHECK_ERROR_CODE(ag.restore_agent("nobody"), ErrorCode::not_found);
}

TEST_CASE_TEMPLATE("agents: hard delete is refused while used, unless forced", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& ag = store.agents();
  ag.create_agent(agent("worker"));
  ag.create_agent(agent("boss", {"worker"}));
  ag.create_agent(agent("helper"));
  NewConversation n;
  n.agent = "helper";
  store.conversations().start(n);
  CHECK_ERROR_CODE(ag.delete_agent("worker"), ErrorCode::failed_precondition);  // a sub-agent
  CHECK_ERROR_CODE(ag.delete_agent("helper"), ErrorCode::failed_precondition);  // a conversation
  CHECK(ag.get_agent("worker") != nullptr);
  CHECK(ag.delete_agent("worker", true));
  CHECK(ag.get_agent("worker") == nullptr);
  CHECK(ag.get_agent("boss")->sub_agents.empty());  // the reference went with it
  CHECK(ag.delete_agent("helper", true));
  CHECK_FALSE(ag.delete_agent("helper"));
  CHECK(ag.delete_agent("boss"));
  CHECK(store.stats().agents == 0);
}

TEST_CASE_TEMPLATE("agents: 8 threads recording uses of one agent count exactly", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  Options o;
  o.pool_size = 8;
  auto store = db.open(o);
  auto& ag = store.agents();
  ag.create_agent(agent("busy"));
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 50; ++i) ag.record_use("busy");
    });
  }
  for (auto& th : threads) th.join();
  ag.clear_cache();
  auto a = ag.get_agent("busy");
  CHECK(a->usage_count == 400);
  CHECK(a->last_used_at.has_value());
  CHECK(a->version == 1);  // a use is not a change
  CHECK_ERROR_CODE(ag.record_use("nobody"), ErrorCode::not_found);
}

TEST_CASE_TEMPLATE("agents: two processes recording uses count exactly", B, CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  store.agents().create_agent(agent("shared"));
  int a = testing::spawn_helper("use '" + db.url() + "' shared 100");
  int b = testing::spawn_helper("use '" + db.url() + "' shared 100");
  CHECK(testing::wait_helper(a) == 0);
  CHECK(testing::wait_helper(b) == 0);
  store.agents().clear_cache();
  CHECK(store.agents().get_agent("shared")->usage_count == 200);
}

TEST_CASE_TEMPLATE("agents: the cache serves reads, writes keep it right, others are seen in time",
                   B, CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  std::atomic<int> statements{0};
  Options o;
  o.agent_cache_ttl = std::chrono::milliseconds(300);
  o.on_statement = [&](const StatementEvent&) { ++statements; };
  auto store = db.open(o);
  auto& ag = store.agents();
  ag.create_agent(agent("cached"));
  statements = 0;
  for (int i = 0; i < 100; ++i) CHECK(ag.get_agent("cached")->id == "cached");
  CHECK(statements.load() == 0);  // memory first

  AgentUpdate up;
  up.description = "through the store";
  ag.update_agent("cached", up);
  CHECK(ag.get_agent("cached")->description == "through the store");

  // Another process (a second store) changes it: seen within the TTL.
  auto other = db.open();
  AgentUpdate elsewhere;
  elsewhere.description = "from elsewhere";
  other.agents().update_agent("cached", elsewhere);
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  CHECK(ag.get_agent("cached")->description == "from elsewhere");

  // A write inside a transaction that rolls back never reaches the cache.
  try {
    store.transaction([&] {
      AgentUpdate doomed;
      doomed.description = "rolled back";
      ag.update_agent("cached", doomed);
      CHECK(ag.get_agent("cached")->description == "rolled back");  // its own write
      throw std::runtime_error("abort");
    });
  } catch (const std::runtime_error&) {
  }
  CHECK(ag.get_agent("cached")->description == "from elsewhere");

  // Turned off, every read goes to the database.
  Options off;
  off.agent_cache_ttl = std::chrono::milliseconds(0);
  std::atomic<int> uncached{0};
  off.on_statement = [&](const StatementEvent&) { ++uncached; };
  auto direct = db.open(off);
  uncached = 0;
  for (int i = 0; i < 5; ++i) direct.agents().get_agent("cached");
  CHECK(uncached.load() == 5);
}

// ================================== state ==================================

TEST_CASE_TEMPLATE("state: save, load, versions; load of nothing is an empty object", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& ag = store.agents();
  auto scope = StateScope::named("user:42");
  CHECK(ag.load_state(scope, "memory") == Json::object());
  CHECK_FALSE(ag.get_state(scope, "memory").has_value());
  auto v1 = ag.save_state(scope, "memory", {{"name", "Ann"}});
  CHECK(v1.version == 1);
  auto v2 = ag.save_state(scope, "memory", {{"name", "Ann"}, {"city", "Oslo"}});
  CHECK(v2.version == 2);
  CHECK(v2.created_at == v1.created_at);
  CHECK(ag.load_state(scope, "memory")["city"] == "Oslo");
  auto got = ag.get_state(scope, "memory");
  CHECK(got->version == 2);
  CHECK(got->scope == scope);
  CHECK(got->agent == "memory");
  // Scopes of different kinds with the same key are different scopes.
  CHECK(ag.load_state(StateScope::session("user:42"), "memory") == Json::object());

  CHECK_ERROR_CODE(ag.save_state(scope, "memory", Json::array({1})), ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(ag.save_state(scope, "memory", 42), ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(ag.save_state(StateScope::named(""), "memory", Json::object()),
                   ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(ag.save_state(scope, "bad\nagent", Json::object()), ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(
      ag.save_state(StateScope{StateScope::Kind::conversation, "x"}, "a", Json::object()),
      ErrorCode::invalid_argument);
  CHECK(ag.get_state(scope, "memory")->version == 2);
}

TEST_CASE_TEMPLATE("state: a save naming a stale version is a conflict", B, CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& ag = store.agents();
  auto scope = StateScope::session("s1");
  CHECK(ag.save_state(scope, "planner", {{"step", 1}}, 0).version == 1);  // create only
  CHECK_ERROR_CODE(ag.save_state(scope, "planner", {{"step", 9}}, 0), ErrorCode::conflict);
  CHECK(ag.save_state(scope, "planner", {{"step", 2}}, 1).version == 2);
  CHECK_ERROR_CODE(ag.save_state(scope, "planner", {{"step", 3}}, 1), ErrorCode::conflict);
  CHECK_ERROR_CODE(ag.save_state(scope, "other", {{"step", 3}}, 4), ErrorCode::conflict);
  CHECK(ag.load_state(scope, "planner")["step"] == 2);
  CHECK_FALSE(ag.get_state(scope, "other").has_value());
}

TEST_CASE_TEMPLATE("state: two processes racing with version checks: one wins, one conflicts", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& ag = store.agents();
  auto scope = StateScope::named("race");
  for (int round = 0; round < 5; ++round) {
    auto before = ag.get_state(scope, "a");
    std::int64_t v = before ? before->version : 0;
    std::string args = "save '" + db.url() + "' race a " + std::to_string(v) + " ";
    int p1 = testing::spawn_helper(args + "one");
    int p2 = testing::spawn_helper(args + "two");
    int r1 = testing::wait_helper(p1), r2 = testing::wait_helper(p2);
    // Exit 0: saved; exit 3: conflict.
    CHECK(std::multiset<int>{r1, r2} == std::multiset<int>{0, 3});
    auto after = ag.get_state(scope, "a");
    REQUIRE(after.has_value());
    CHECK(after->version == v + 1);
    CHECK((after->state["writer"] == (r1 == 0 ? "one" : "two")));
  }
}

TEST_CASE_TEMPLATE("state: concurrent merge patches never lose a key", B, CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  Options o;
  o.pool_size = 8;
  auto store = db.open(o);
  auto& ag = store.agents();
  auto scope = StateScope::named("shared");
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 10; ++i) {
        ag.patch_state(scope, "notes", {{"k" + std::to_string(t) + "_" + std::to_string(i), i}});
      }
    });
  }
  for (auto& th : threads) th.join();
  auto s = ag.get_state(scope, "notes");
  CHECK(s->state.size() == 80);
  CHECK(s->version == 80);
  auto patched = ag.patch_state(scope, "notes", {{"k0_0", nullptr}, {"nested", {{"a", 1}}}});
  CHECK_FALSE(patched.state.contains("k0_0"));
  CHECK(patched.state["nested"]["a"] == 1);
  CHECK_ERROR_CODE(ag.patch_state(scope, "notes", {{"x", 1}}, 5), ErrorCode::conflict);
  CHECK_ERROR_CODE(ag.patch_state(scope, "notes", Json::array()), ErrorCode::invalid_argument);
}

TEST_CASE_TEMPLATE("state: a scope's agents, an agent's scopes, delete", B, CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& ag = store.agents();
  auto s1 = StateScope::session("s1");
  auto s2 = StateScope::named("global");
  ag.save_state(s1, "calendar", {{"tz", "UTC"}});
  ag.save_state(s1, "router", {{"last", "calendar"}});
  ag.save_state(s2, "calendar", {{"holidays", true}});
  auto all = ag.load_scope(s1);
  REQUIRE(all.size() == 2);
  CHECK(all[0].agent == "calendar");
  CHECK(all[1].agent == "router");
  auto scopes = ag.scopes_of("calendar");
  REQUIRE(scopes.size() == 2);
  CHECK(scopes[0] == s2);  // most recently updated first
  CHECK(scopes[1] == s1);
  CHECK(ag.delete_state(s1, "calendar"));
  CHECK_FALSE(ag.delete_state(s1, "calendar"));
  CHECK(ag.load_scope(s1).size() == 1);
  CHECK(ag.state_history(s1, "calendar").empty());  // the history went with it
}

TEST_CASE_TEMPLATE("state: history keeps the last K versions; load and roll back", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  Options o;
  o.state_history = 3;
  auto store = db.open(o);
  auto& ag = store.agents();
  auto scope = StateScope::named("h");
  for (int i = 1; i <= 5; ++i) ag.save_state(scope, "a", {{"n", i}});
  auto history = ag.state_history(scope, "a");
  REQUIRE(history.size() == 3);
  CHECK(history[0].version == 5);
  CHECK(history[2].version == 3);
  CHECK(history[2].state["n"] == 3);
  CHECK(ag.load_state_version(scope, "a", 4)->state["n"] == 4);
  CHECK_FALSE(ag.load_state_version(scope, "a", 1).has_value());
  auto rolled = ag.rollback_state(scope, "a", 3);
  CHECK(rolled.version == 6);
  CHECK(rolled.state["n"] == 3);
  CHECK(ag.load_state(scope, "a")["n"] == 3);
  CHECK_ERROR_CODE(ag.rollback_state(scope, "a", 1), ErrorCode::not_found);

  Options none;
  none.state_history = 0;
  auto plain = db.open(none);
  plain.agents().save_state(StateScope::named("p"), "a", {{"n", 1}});
  plain.agents().save_state(StateScope::named("p"), "a", {{"n", 2}});
  CHECK(plain.agents().state_history(StateScope::named("p"), "a").empty());
  CHECK(plain.agents().load_state_version(StateScope::named("p"), "a", 2)->state["n"] == 2);
}

TEST_CASE_TEMPLATE("state: conversation state goes with its conversation; orphans are cleaned", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& ag = store.agents();
  auto& cs = store.conversations();
  auto c = cs.start({});
  ag.save_state(StateScope::conversation(c.id), "a", {{"x", 1}});
  CHECK_ERROR_CODE(ag.save_state(StateScope::conversation(987654), "a", Json::object()),
                   ErrorCode::not_found);

  NewConversation keyed;
  keyed.key = "session-1";
  auto s = cs.start(keyed);
  ag.save_state(StateScope::session("session-1"), "a", {{"y", 1}});
  ag.save_state(StateScope::session("never-existed"), "a", {{"z", 1}});
  ag.save_state(StateScope::named("global"), "a", {{"g", 1}});

  CHECK(cs.remove(c.id));
  CHECK_FALSE(ag.get_state(StateScope::conversation(c.id), "a").has_value());
  CHECK(ag.cleanup_orphaned_states() == 1);  // "never-existed"
  CHECK(cs.remove(s.id));
  CHECK(ag.cleanup_orphaned_states() == 1);  // "session-1"
  CHECK(ag.cleanup_orphaned_states() == 0);
  CHECK(ag.load_state(StateScope::named("global"), "a")["g"] == 1);
}

// ===================== cache races (regressions) ===========================
// A thread is paused inside the statement hook right after its statement ran,
// while another thread writes; the paused thread then tries to cache what it
// read.

namespace {

struct Gate {
  std::promise<void> reached, go;
  std::shared_future<void> go_future = go.get_future().share();
};
thread_local const char* t_pause_on = nullptr;
Gate* g_gate = nullptr;

void pausing_hook(const StatementEvent& e) {
  if (t_pause_on != nullptr && e.sql.rfind(t_pause_on, 0) == 0) {
    t_pause_on = nullptr;
    g_gate->reached.set_value();
    g_gate->go_future.wait();
  }
}

Options pausing_options() {
  Options o;
  o.pool_size = 4;
  o.agent_cache_ttl = std::chrono::milliseconds(60000);
  o.on_statement = pausing_hook;
  return o;
}

}  // namespace

namespace {

// Pauses `action` on another thread inside the statement that starts with
// `pause_on`, deletes the agent meanwhile, lets the action finish, and
// checks that the cache does not bring the agent back.
void check_delete_wins(Store& store, const char* pause_on, const std::function<void()>& action) {
  auto& ag = store.agents();
  Gate gate;
  g_gate = &gate;
  std::thread racer([&] {
    t_pause_on = pause_on;
    action();
  });
  gate.reached.get_future().wait();
  CHECK(ag.delete_agent("x"));
  gate.go.set_value();
  racer.join();
  CHECK(ag.get_agent("x") == nullptr);
}

}  // namespace

TEST_CASE_TEMPLATE("cache: a read racing a delete never brings the deleted agent back", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open(pausing_options());
  store.agents().create_agent(agent("x"));
  store.agents().clear_cache();
  check_delete_wins(store, "SELECT id, name", [&] { store.agents().get_agent("x"); });
}

// PostgreSQL only: on SQLite the paused use holds the write lock, so the
// delete cannot run in between.
TEST_CASE("cache: a use racing a delete never brings the deleted agent back") {
  using B = testing::Postgresql;
  CONVSTORE_TEST_DB(db);
  auto store = db.open(pausing_options());
  store.agents().create_agent(agent("x"));
  check_delete_wins(store, "UPDATE agents SET usage_count",
                    [&] { store.agents().record_use("x"); });
}

TEST_CASE_TEMPLATE("cache: a read racing a transaction's write never serves the old value after", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open(pausing_options());
  auto& ag = store.agents();
  ag.create_agent(agent("x"));
  ag.clear_cache();
  Gate gate;
  g_gate = &gate;
  std::promise<void> in_transaction;
  std::thread reader([&] {
    in_transaction.get_future().wait();
    t_pause_on = "SELECT id, name";
    ag.get_agent("x");
  });
  store.transaction([&] {
    AgentUpdate up;
    up.description = "new";
    ag.update_agent("x", up);
    in_transaction.set_value();
    gate.reached.get_future().wait();
  });
  gate.go.set_value();
  reader.join();
  CHECK(ag.get_agent("x")->description == "new");
}

TEST_CASE_TEMPLATE("cache: an agent deleted and created again elsewhere is cached again", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  std::atomic<int> statements{0};
  Options o;
  o.agent_cache_ttl = std::chrono::milliseconds(200);
  o.on_statement = [&](const StatementEvent&) { ++statements; };
  auto store = db.open(o);
  auto& ag = store.agents();
  ag.create_agent(agent("x"));
  for (int i = 0; i < 3; ++i) {
    AgentUpdate up;
    up.description = "d" + std::to_string(i);
    ag.update_agent("x", up);
  }
  CHECK(ag.get_agent("x")->version == 4);
  auto other = db.open();
  other.agents().delete_agent("x");
  other.agents().create_agent(agent("x"));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  CHECK(ag.get_agent("x")->version == 1);
  statements = 0;
  for (int i = 0; i < 10; ++i) ag.get_agent("x");
  CHECK(statements.load() == 0);
}

// ======================= input rules (regressions) =========================

TEST_CASE_TEMPLATE("state: a conversation scope is named by the id's one spelling", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& ag = store.agents();
  auto c = store.conversations().start({});
  ag.save_state(StateScope::conversation(c.id), "a", {{"x", 1}});
  StateScope padded{StateScope::Kind::conversation, "0" + std::to_string(c.id)};
  CHECK_ERROR_CODE(ag.save_state(padded, "a", {{"x", 2}}), ErrorCode::invalid_argument);
  CHECK(ag.load_state(StateScope::conversation(c.id), "a")["x"] == 1);
}

TEST_CASE_TEMPLATE("agents: duplicates, bad cursors, non-object metadata; ids count characters", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& ag = store.agents();
  ag.create_agent(agent("w"));
  CHECK_ERROR_CODE(ag.create_agent(agent("p", {"w", "w"})), ErrorCode::invalid_argument);
  AgentFilter f;
  f.cursor = std::string("a1:\xff\x01");
  CHECK_ERROR_CODE(ag.list_agents(f), ErrorCode::invalid_argument);
  NewAgent m = agent("m");
  m.metadata = Json::array({1, 2});
  CHECK_ERROR_CODE(ag.create_agent(m), ErrorCode::invalid_argument);
  AgentUpdate up;
  up.metadata_patch = Json(5);
  CHECK_ERROR_CODE(ag.update_agent("w", up), ErrorCode::invalid_argument);
  std::string cyrillic;
  for (int i = 0; i < 150; ++i) cyrillic += "ж";  // 150 characters, 300 bytes
  CHECK(ag.create_agent(agent(cyrillic)).id == cyrillic);
  std::string long_key(201, 'k');
  NewConversation n;
  n.key = long_key;
  CHECK_ERROR_CODE(store.conversations().start(n), ErrorCode::invalid_argument);
}

TEST_CASE_TEMPLATE("state: the history never shows more than it keeps, under concurrent saves", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  Options o;
  o.pool_size = 8;
  o.state_history = 2;
  auto store = db.open(o);
  auto& ag = store.agents();
  auto scope = StateScope::named("h");
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 20; ++i) ag.save_state(scope, "a", {{"t", t}, {"i", i}});
    });
  }
  for (auto& th : threads) th.join();
  auto h = ag.state_history(scope, "a");
  REQUIRE(h.size() == 2);
  CHECK(h[0].version == 160);
  CHECK(h[1].version == 159);
}

TEST_CASE_TEMPLATE("state: roll back needs the state and keeps its version order", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& ag = store.agents();
  auto scope = StateScope::named("r");
  CHECK_ERROR_CODE(ag.rollback_state(scope, "a", 1), ErrorCode::not_found);
  ag.save_state(scope, "a", {{"n", 1}});
  ag.save_state(scope, "a", {{"n", 2}});
  CHECK(ag.delete_state(scope, "a"));
  CHECK_ERROR_CODE(ag.rollback_state(scope, "a", 1), ErrorCode::not_found);
  CHECK_FALSE(ag.get_state(scope, "a").has_value());
}
