// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
// Retention runs, legal holds, a user's data (export, forget), storage stats.
#include <fmt/format.h>

#include <exception>
#include <functional>
#include <future>
#include <set>
#include <sstream>
#include <thread>

#include "support.hpp"

using namespace convstore;
using namespace std::chrono_literals;

namespace {

using Days = std::chrono::duration<long long, std::ratio<86400>>;
std::chrono::milliseconds days(long long n) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Days(n));
}

// The time every test runs at (never the wall clock).
const Timestamp T0 = parse_timestamp("2031-03-01T12:00:00Z");

std::string q(const std::string& s) { return "'" + s + "'"; }

// Sets a conversation's last activity.
void set_updated(const testing::TestDb& db, ConversationId id, Timestamp t) {
  testing::raw_exec(db, "UPDATE conversations SET updated_at = " + q(to_iso8601(t)) +
                            " WHERE id = " + std::to_string(id));
}

long long count(const testing::TestDb& db, const std::string& table,
                const std::string& where = "1 = 1") {
  return std::stoll(testing::raw_exec(db, "SELECT COUNT(*) FROM " + table + " WHERE " + where));
}

NewMessage msg(Role role, std::string content, std::optional<std::int64_t> tokens = std::nullopt) {
  NewMessage m;
  m.role = role;
  m.content = std::move(content);
  m.token_count = tokens;
  return m;
}

struct Fixture {
  const testing::TestDb& db;
  Store store;
  explicit Fixture(const testing::TestDb& d) : db(d), store(d.open()) {}

  UserId user(const std::string& ext, const std::string& channel = "telegram") {
    return store.conversations().upsert_user(UserUpsert(channel, ext)).id;
  }
  // A conversation with `n` user/assistant messages, in `status`, last
  // active at `updated`.
  ConversationId conv(std::optional<UserId> user, ConversationStatus status, Timestamp updated,
                      int n = 2, const std::string& channel = "telegram",
                      std::optional<std::string> agent = std::nullopt,
                      std::optional<std::string> key = std::nullopt) {
    NewConversation nc;
    nc.user_id = user;
    nc.channel = channel;
    nc.agent = agent;
    nc.key = key;
    auto c = store.conversations().start(nc);
    for (int i = 0; i < n; ++i) {
      store.conversations().append(c.id, msg(i % 2 == 0 ? Role::user : Role::assistant,
                                             "text " + std::to_string(i), 10 + i));
    }
    if (status != ConversationStatus::active) store.conversations().set_status(c.id, status);
    set_updated(db, c.id, updated);
    return c.id;
  }
  bool exists(ConversationId id) { return store.conversations().get(id).has_value(); }
  ConversationStatus status(ConversationId id) { return store.conversations().get(id)->status; }
};

RetentionRun at(Timestamp t, bool dry = false) {
  RetentionRun r;
  r.now = t;
  r.dry_run = dry;
  return r;
}

// True when `text` is stored in any table (PostgreSQL) or anywhere in the
// database files (SQLite).
bool stored_in_any_table(const testing::TestDb& db, const std::string& text) {
  if (db.backend() == "sqlite") return testing::stored_anywhere(db, "users", text);
  std::string tables = testing::raw_exec(
      db,
      "SELECT string_agg(table_name, ',') FROM information_schema.tables WHERE table_schema = "
      "current_schema()");
  std::stringstream ss(tables);
  std::string t;
  while (std::getline(ss, t, ',')) {
    if (testing::stored_anywhere(db, t, text)) return true;
  }
  return false;
}

// Runs `body` in a Store::transaction of `store` on a thread of its own and
// keeps the transaction open (body done, nothing committed) until commit().
class OpenTransaction {
 public:
  OpenTransaction(Store& store, std::function<void()> body) {
    auto done = body_done_.get_future();
    auto go = go_.get_future();
    thread_ = std::thread([this, &store, body = std::move(body), go = std::move(go)]() mutable {
      bool signalled = false;
      try {
        store.transaction([&] {
          body();
          signalled = true;
          body_done_.set_value();
          go.wait();
        });
      } catch (...) {
        if (signalled) {
          error_ = std::current_exception();
        } else {
          body_done_.set_exception(std::current_exception());
        }
      }
    });
    try {
      done.get();
    } catch (...) {
      thread_.join();
      throw;
    }
  }
  ~OpenTransaction() {
    if (thread_.joinable()) commit();
  }
  void commit() {
    go_.set_value();
    thread_.join();
    if (error_) std::rethrow_exception(error_);
  }

 private:
  std::promise<void> body_done_, go_;
  std::thread thread_;
  std::exception_ptr error_;
};

// Runs `f` on a thread of its own; get() joins and returns what it threw.
class Background {
 public:
  explicit Background(std::function<void()> f)
      : thread_([this, f = std::move(f)] {
          try {
            f();
          } catch (...) {
            error_ = std::current_exception();
          }
        }) {}
  ~Background() {
    if (thread_.joinable()) thread_.join();
  }
  std::exception_ptr get() {
    thread_.join();
    return error_;
  }

 private:
  std::exception_ptr error_;
  std::thread thread_;
};

// PostgreSQL: returns once a session that uses this test's conversations
// table waits for a lock (another statement is blocked behind an open
// transaction). SQLite: returns at once (the blocked writer waits in its busy
// handler, whatever the order).
void wait_for_a_lock_wait(const testing::TestDb& db) {
  if (db.backend() == "sqlite") return;
  for (int i = 0; i < 3000; ++i) {
    if (testing::raw_exec(db,
                          "SELECT COUNT(*) FROM pg_locks w WHERE NOT w.granted AND w.pid IN "
                          "(SELECT pid FROM pg_locks WHERE locktype = 'relation' AND relation = "
                          "'conversations'::regclass)") != "0") {
      return;
    }
    std::this_thread::sleep_for(10ms);
  }
  FAIL("no session waited for a lock");
}

}  // namespace

TEST_CASE_TEMPLATE("Retention deletes completed conversations past the cutoff only", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  Fixture f(db);
  const auto u = f.user("u1");
  const auto held_user = f.user("u2");
  const auto old = f.conv(u, ConversationStatus::completed, T0 - days(31), 3);
  const auto boundary = f.conv(u, ConversationStatus::completed, T0 - days(30));  // not older
  const auto young = f.conv(u, ConversationStatus::completed, T0 - days(29));
  const auto active = f.conv(u, ConversationStatus::active, T0 - days(40));
  const auto abandoned = f.conv(u, ConversationStatus::abandoned, T0 - days(40));
  const auto held = f.conv(u, ConversationStatus::completed, T0 - days(31));
  const auto of_held_user = f.conv(held_user, ConversationStatus::completed, T0 - days(31));
  f.store.retention().hold(held, "litigation 12");
  f.store.retention().hold_user(held_user, "subpoena");

  RetentionPolicy p;
  p.completed_older_than = days(30);
  auto r = f.store.retention().run(p, at(T0));
  CHECK(r.totals.conversations_deleted == 1);
  CHECK(r.totals.messages_deleted == 3);
  CHECK(r.totals.bytes_removed == 18);  // "text 0" .. "text 2"
  CHECK(r.by_channel["telegram"].conversations_deleted == 1);
  CHECK(r.by_agent[""].conversations_deleted == 1);
  CHECK_FALSE(f.exists(old));
  CHECK(count(db, "messages", "conversation_id = " + std::to_string(old)) == 0);
  for (auto id : {boundary, young, active, abandoned, held, of_held_user}) CHECK(f.exists(id));

  // Released holds no longer protect.
  CHECK(f.store.retention().holds().size() == 2);
  CHECK(f.store.retention().release(held));
  CHECK(f.store.retention().release_user(held_user));
  CHECK_FALSE(f.store.retention().release(held));
  r = f.store.retention().run(p, at(T0));
  CHECK(r.totals.conversations_deleted == 2);
  CHECK_FALSE(f.exists(held));
  CHECK_FALSE(f.exists(of_held_user));
}

TEST_CASE_TEMPLATE("Retention archives: rows move to the archive tables unchanged", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  Fixture f(db);
  const auto u = f.user("u1");
  const auto old = f.conv(u, ConversationStatus::completed, T0 - days(8), 4);
  const auto young = f.conv(u, ConversationStatus::completed, T0 - days(6), 1);
  f.store.conversations().save_data(old, DataKind::complete, Json{{"amount", 42}});
  f.store.conversations().ask(old, NewQuestion("ExpenseAgent", "How much?"));
  const auto before = f.store.conversations().history(old);
  REQUIRE(before.size() == 4);

  RetentionPolicy p;
  p.completed_older_than = days(7);
  p.completed_action = RetentionAction::archive;
  auto r = f.store.retention().run(p, at(T0));
  CHECK(r.totals.conversations_archived == 1);
  CHECK(r.totals.messages_archived == 4);
  CHECK_FALSE(f.exists(old));
  CHECK(f.exists(young));
  CHECK(count(db, "messages", "conversation_id = " + std::to_string(old)) == 0);
  CHECK(count(db, "archived_conversations", "id = " + std::to_string(old)) == 1);
  CHECK(count(db, "archived_conversations", "id = " + std::to_string(young)) == 0);
  CHECK(count(db, "archived_conversation_data") == 1);
  CHECK(count(db, "archived_agent_questions") == 1);

  auto doc = f.store.retention().export_user(u);
  const auto& archived = doc["archived_messages"];
  REQUIRE(archived.size() == 4);
  for (std::size_t i = 0; i < 4; ++i) {
    CHECK(archived[i]["id"] == before[i].id);
    CHECK(archived[i]["content"] == before[i].content);
    CHECK(archived[i]["token_count"] == *before[i].token_count);
    CHECK(archived[i]["role"] == std::string(to_string(before[i].role)));
    CHECK(archived[i]["created_at"] == to_iso8601(before[i].created_at));
  }
  CHECK(doc["archived_conversations"][0]["message_count"] == 4);
  CHECK(doc["archived_conversation_data"][0]["data"] == Json{{"amount", 42}});
  CHECK(doc["archived_agent_questions"][0]["question"] == "How much?");
}

TEST_CASE_TEMPLATE("Retention anonymizes: text blanked, rows, counts and tokens kept", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  Fixture f(db);
  const auto u = f.user("u1");
  const auto old = f.conv(u, ConversationStatus::completed, T0 - days(31), 4);
  const auto young = f.conv(u, ConversationStatus::completed, T0 - days(29), 2);
  f.store.conversations().save_data(old, DataKind::partial, Json{{"secret", "card 4242"}});
  auto question = f.store.conversations().ask(old, NewQuestion("A", "Which card?"));
  f.store.conversations().answer(question.id, std::string("the blue one"));
  set_updated(db, old, T0 - days(31));

  RetentionPolicy p;
  p.completed_older_than = days(30);
  p.completed_action = RetentionAction::anonymize;
  auto r = f.store.retention().run(p, at(T0));
  CHECK(r.totals.conversations_anonymized == 1);
  CHECK(r.totals.messages_anonymized == 4);
  auto conv = f.store.conversations().get(old);
  REQUIRE(conv);
  CHECK(conv->message_count == 4);
  auto history = f.store.conversations().history(old);
  REQUIRE(history.size() == 4);
  for (std::size_t i = 0; i < history.size(); ++i) {
    CHECK(history[i].content.empty());
    CHECK(history[i].token_count == std::optional<std::int64_t>(10 + static_cast<int>(i)));
  }
  CHECK(f.store.conversations().latest_data(old, DataKind::partial)->data == Json::object());
  auto qs = f.store.conversations().questions(old);
  REQUIRE(qs.size() == 1);
  CHECK(qs[0].question.empty());
  CHECK(qs[0].answered_at.has_value());
  CHECK(f.store.conversations().history(young)[0].content == "text 0");
  if (db.backend() == "postgresql") {
    CHECK_FALSE(testing::stored_anywhere(db, "agent_questions", "the blue one"));
    CHECK_FALSE(testing::stored_anywhere(db, "conversation_data", "card 4242"));
    CHECK_FALSE(testing::stored_anywhere(db, "messages", "text 3"));
  }

  // Anonymized once: a second run finds nothing to do.
  r = f.store.retention().run(p, at(T0));
  CHECK(r.totals.conversations_anonymized == 0);
}

TEST_CASE_TEMPLATE("Retention abandons idle active conversations", B, CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  Fixture f(db);
  const auto u = f.user("u1");
  const auto idle = f.conv(u, ConversationStatus::active, T0 - 25h);
  const auto busy = f.conv(u, ConversationStatus::active, T0 - 23h);
  const auto completed = f.conv(u, ConversationStatus::completed, T0 - 48h);
  const auto held = f.conv(u, ConversationStatus::active, T0 - 48h);
  f.store.retention().hold(held, "audit");
  const auto version = f.store.conversations().get(idle)->version;

  RetentionPolicy p;
  p.abandon_idle_after = 24h;
  auto r = f.store.retention().run(p, at(T0));
  CHECK(r.totals.conversations_abandoned == 1);
  CHECK(f.status(idle) == ConversationStatus::abandoned);
  CHECK(f.store.conversations().get(idle)->version == version + 1);
  CHECK(f.status(busy) == ConversationStatus::active);
  CHECK(f.status(completed) == ConversationStatus::completed);
  CHECK(f.status(held) == ConversationStatus::active);
  CHECK(f.store.retention().is_held(held));
  CHECK_FALSE(f.store.retention().is_held(idle));
}

TEST_CASE_TEMPLATE("Every retention action leaves held conversations and held users alone", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  Fixture f(db);
  const auto u = f.user("free");
  const auto h = f.user("held");
  auto& r = f.store.retention();
  r.hold_user(h, "case 1");
  struct Kind {
    ConversationStatus status;
    Timestamp updated;
  };
  std::vector<ConversationId> held_ids, free_ids;
  for (auto k : {Kind{ConversationStatus::completed, T0 - days(40)},
                 Kind{ConversationStatus::active, T0 - days(40)}}) {
    held_ids.push_back(f.conv(h, k.status, k.updated, 6));  // by its user
    const auto c = f.conv(u, k.status, k.updated, 6);       // by itself
    r.hold(c, "case 2");
    held_ids.push_back(c);
    free_ids.push_back(f.conv(u, k.status, k.updated, 6));
  }
  auto state = [&](ConversationId id) {
    auto c = f.store.conversations().get(id);
    REQUIRE(c);
    return fmt::format("{}/{}/{}/{}", to_string(c->status), c->message_count, c->version,
                       testing::contents(f.store.conversations().history(id)));
  };
  std::vector<std::string> before;
  for (auto id : held_ids) before.push_back(state(id));
  for (auto action :
       {RetentionAction::anonymize, RetentionAction::archive, RetentionAction::remove}) {
    RetentionPolicy p;
    p.completed_older_than = days(30);
    p.completed_action = action;
    p.abandon_idle_after = 24h;
    p.keep_last_messages = 2;
    r.run(p, at(T0));
    for (std::size_t i = 0; i < held_ids.size(); ++i) CHECK(state(held_ids[i]) == before[i]);
  }
  CHECK_FALSE(f.exists(free_ids[0]));  // the completed one: anonymized, then archived
  CHECK(f.status(free_ids[1]) == ConversationStatus::abandoned);
  CHECK(f.store.conversations().history(free_ids[1]).size() == 2);  // trimmed first
  CHECK(count(db, "archived_conversations") == 1);
  CHECK(r.holds().size() == 3);
}

TEST_CASE_TEMPLATE("Retention keeps the last messages, system messages and the newest turn", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  Fixture f(db);
  const auto u = f.user("u1");
  auto& cs = f.store.conversations();
  // sys u1 a1 u2 a2 u3 a3 u4 a4: keep 3 -> sys a3 u4 a4.
  const auto a = f.conv(u, ConversationStatus::active, T0, 0);
  cs.append(a, msg(Role::system, "sys", 5));
  for (int i = 1; i <= 4; ++i) {
    cs.append(a, msg(Role::user, "u" + std::to_string(i), 1));
    cs.append(a, msg(Role::assistant, "a" + std::to_string(i), 1));
  }
  // A newest turn longer than N: u1 a1 u2 t t t a2, keep 2 -> u2 t t t a2.
  const auto b = f.conv(u, ConversationStatus::active, T0, 0);
  cs.append(b, msg(Role::user, "u1"));
  cs.append(b, msg(Role::assistant, "a1"));
  cs.append(b, msg(Role::user, "u2"));
  for (int i = 0; i < 3; ++i) cs.append(b, msg(Role::tool, "t"));
  cs.append(b, msg(Role::assistant, "a2"));
  // Held, and completed: untouched.
  const auto held = f.conv(u, ConversationStatus::active, T0, 6);
  f.store.retention().hold(held, "kept");
  const auto completed = f.conv(u, ConversationStatus::completed, T0, 6);
  const auto va = cs.get(a)->version;

  RetentionPolicy p;
  p.keep_last_messages = 3;
  auto r = f.store.retention().run(p, at(T0));
  CHECK(testing::contents(cs.history(a)) == "sys,a3,u4,a4");
  CHECK(cs.get(a)->message_count == 4);
  CHECK(cs.get(a)->version == va + 1);
  CHECK(testing::contents(cs.history(b)) == "u2,t,t,t,a2");
  CHECK(cs.get(b)->message_count == 5);
  CHECK(cs.history(held).size() == 6);
  CHECK(cs.history(completed).size() == 6);
  CHECK(r.totals.conversations_trimmed == 2);
  CHECK(r.totals.messages_trimmed == 5 + 2);
  CHECK(r.totals.bytes_removed == 2 * 5 + 2 * 2);

  // Nothing more to trim.
  r = f.store.retention().run(p, at(T0));
  CHECK(r.totals.messages_trimmed == 0);
}

namespace {

// A database with something for every part of a policy.
struct Mixed {
  Fixture& f;
  RetentionPolicy policy;
  explicit Mixed(Fixture& fx) : f(fx) {
    const auto u = f.user("m1");
    const auto v = f.user("m2", "discord");
    f.conv(u, ConversationStatus::completed, T0 - days(40), 3, "telegram", "ExpenseAgent", "k1");
    f.conv(v, ConversationStatus::completed, T0 - days(40), 2, "discord", "IncomeAgent");
    f.conv(v, ConversationStatus::completed, T0 - days(10), 2, "discord", "IncomeAgent");
    f.conv(u, ConversationStatus::active, T0 - days(3), 8, "telegram", "ExpenseAgent", "k4");
    f.conv(v, ConversationStatus::active, T0 - 1h, 9, "discord");
    f.conv(std::nullopt, ConversationStatus::active, T0 - 1h, 1, "web");
    auto& agents = f.store.agents();
    agents.save_state(StateScope::session("k1"), "ExpenseAgent", Json{{"step", 1}});  // orphaned
    agents.save_state(StateScope::session("gone"), "ExpenseAgent", Json{{"step", 2}});
    agents.save_state(StateScope::session("k4"), "ExpenseAgent", Json{{"step", 3}});    // live
    agents.save_state(StateScope::named("global"), "ExpenseAgent", Json{{"step", 4}});  // kept
    testing::raw_exec(f.db,
                      "INSERT INTO cache_entries (key, kind, value, expires_at) VALUES ('old', "
                      "'hash', NULL, " +
                          q(to_iso8601(T0 - 1s)) + "), ('live', 'value', 'x', " +
                          q(to_iso8601(T0 + 1h)) + "), ('forever', 'value', 'y', NULL), " +
                          "('lock', 'lease', NULL, " + q(to_iso8601(T0 - 1h)) + ")");
    testing::raw_exec(f.db,
                      "INSERT INTO cache_fields (key, field, value) VALUES ('old', 'a', '1'), "
                      "('old', 'b', '2'), ('live', 'c', '3')");
    testing::raw_exec(f.db, "INSERT INTO cache_waiters (name, alive_until) VALUES ('lock', " +
                                q(to_iso8601(T0 - 1s)) + "), ('lock', " + q(to_iso8601(T0 + 1s)) +
                                ")");
    auto s1 = f.store.web_sessions().issue(u);
    auto s2 = f.store.web_sessions().issue(u);
    auto expire = [&](const IssuedSession& s, Timestamp t) {
      testing::raw_exec(f.db, "UPDATE web_sessions SET refresh_expires_at = " + q(to_iso8601(t)) +
                                  ", access_expires_at = " + q(to_iso8601(t - 1h)) +
                                  " WHERE id = " + std::to_string(s.session.id));
    };
    expire(s1, T0 - 1s);
    expire(s2, T0 + 1s);
    policy.completed_older_than = days(30);
    policy.abandon_idle_after = 48h;
    policy.keep_last_messages = 4;
    policy.remove_orphans = true;
    policy.remove_expired_cache = true;
  }
};

}  // namespace

TEST_CASE_TEMPLATE("A dry run reports what the real run does, and writes nothing", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  Fixture f(db);
  Mixed m(f);
  auto snapshot = [&] {
    std::string s;
    for (const char* t : {"conversations", "messages", "agent_states", "cache_entries",
                          "cache_fields", "cache_waiters", "web_sessions"}) {
      s += std::to_string(count(db, t)) + ",";
    }
    s += testing::raw_exec(db, "SELECT SUM(version) FROM conversations");
    return s;
  };
  const auto before = snapshot();
  auto dry = f.store.retention().run(m.policy, at(T0, true));
  CHECK(snapshot() == before);
  CHECK(dry.dry_run);
  CHECK(dry.totals.conversations_deleted == 2);
  CHECK(dry.totals.conversations_abandoned == 1);
  CHECK(dry.totals.conversations_trimmed == 2);
  CHECK(dry.orphaned_states == 2);
  CHECK(dry.cache_entries == 1);
  CHECK(dry.cache_fields == 2);
  CHECK(dry.cache_waiters == 1);
  CHECK(dry.web_sessions == 1);

  auto real = f.store.retention().run(m.policy, at(T0));
  CHECK_FALSE(real.dry_run);
  CHECK(real.totals == dry.totals);
  CHECK(real.by_channel.size() == dry.by_channel.size());
  for (const auto& [k, v] : dry.by_channel) CHECK(real.by_channel[k] == v);
  CHECK(real.by_agent.size() == dry.by_agent.size());
  for (const auto& [k, v] : dry.by_agent) CHECK(real.by_agent[k] == v);
  CHECK(real.by_channel["discord"].conversations_deleted == 1);
  CHECK(real.by_agent["ExpenseAgent"].conversations_trimmed == 1);
  CHECK(real.orphaned_states == dry.orphaned_states);
  CHECK(real.cache_entries == dry.cache_entries);
  CHECK(real.cache_fields == dry.cache_fields);
  CHECK(real.cache_waiters == dry.cache_waiters);
  CHECK(real.web_sessions == dry.web_sessions);
  CHECK(snapshot() != before);

  // Live cache rows, the lease row and live sessions are kept.
  CHECK(count(db, "cache_entries") == 3);  // live, forever, lock
  CHECK(count(db, "cache_entries", "key = 'lock'") == 1);
  CHECK(count(db, "cache_fields") == 1);
  CHECK(count(db, "cache_waiters") == 1);
  CHECK(count(db, "web_sessions") == 1);
  CHECK(count(db, "agent_states") == 2);
  CHECK(f.store.agents().get_state(StateScope::session("k4"), "ExpenseAgent").has_value());
  CHECK(f.store.agents().get_state(StateScope::named("global"), "ExpenseAgent").has_value());
  CHECK_FALSE(f.store.agents().get_state(StateScope::session("k1"), "ExpenseAgent"));

  // Everything done: a second dry run finds nothing.
  auto again = f.store.retention().run(m.policy, at(T0, true));
  CHECK(again.totals == RetentionCounts{});
  CHECK(again.orphaned_states == 0);
}

TEST_CASE_TEMPLATE("Retention works in batches, each its own transaction", B, CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  Fixture f(db);
  const auto u = f.user("u1");
  std::vector<ConversationId> ids;
  for (int i = 0; i < 7; ++i) {
    ids.push_back(f.conv(u, ConversationStatus::completed, T0 - days(31), 1));
  }
  RetentionPolicy p;
  p.completed_older_than = days(30);

  SUBCASE("the progress callback sees every batch") {
    std::vector<std::int64_t> sizes;
    RetentionRun run = at(T0);
    run.batch_size = 2;
    run.progress = [&](const RetentionProgress& pr) {
      CHECK(pr.phase == "completed");
      CHECK(pr.batch == static_cast<std::int64_t>(sizes.size()) + 1);
      sizes.push_back(pr.conversations);
      CHECK(pr.totals.conversations_deleted ==
            2 * static_cast<std::int64_t>(sizes.size() - 1) + pr.conversations);
    };
    auto r = f.store.retention().run(p, run);
    REQUIRE(sizes.size() == 4);
    CHECK(sizes[0] == 2);
    CHECK(sizes[1] == 2);
    CHECK(sizes[2] == 2);
    CHECK(sizes[3] == 1);
    CHECK(r.batches == 4);
    CHECK(r.totals.conversations_deleted == 7);
    CHECK(count(db, "conversations") == 0);
  }

  SUBCASE("a failing batch is rolled back, finished ones stay; a re-run continues") {
    // A trigger fails the delete of the fifth conversation (third batch).
    const std::string id5 = std::to_string(ids[4]);
    if (db.backend() == "sqlite") {
      testing::raw_exec(db, "CREATE TRIGGER boom BEFORE DELETE ON conversations WHEN old.id = " +
                                id5 + " BEGIN SELECT RAISE(ABORT, 'boom'); END");
    } else {
      testing::raw_exec(db,
                        "CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN IF "
                        "old.id = " +
                            id5 + " THEN RAISE EXCEPTION 'boom'; END IF; RETURN old; END $$");
      testing::raw_exec(db,
                        "CREATE TRIGGER boom BEFORE DELETE ON conversations FOR EACH ROW "
                        "EXECUTE FUNCTION boom()");
    }
    RetentionRun run = at(T0);
    run.batch_size = 2;
    int batches = 0;
    run.progress = [&](const RetentionProgress&) { ++batches; };
    CHECK_THROWS(f.store.retention().run(p, run));
    CHECK(batches == 2);
    CHECK(count(db, "conversations") == 3);  // 5, 6 (rolled back) and 7
    CHECK(f.exists(ids[4]));
    CHECK(f.exists(ids[5]));
    CHECK(count(db, "messages") == 3);
    testing::raw_exec(
        db, db.backend() == "sqlite" ? "DROP TRIGGER boom" : "DROP TRIGGER boom ON conversations");
    auto r = f.store.retention().run(p, run);
    CHECK(r.totals.conversations_deleted == 3);
    CHECK(count(db, "conversations") == 0);
  }

  SUBCASE("a callback that throws stops the run after its batch") {
    RetentionRun run = at(T0);
    run.batch_size = 3;
    run.progress = [&](const RetentionProgress&) { throw std::runtime_error("stop"); };
    CHECK_THROWS_AS(f.store.retention().run(p, run), std::runtime_error);
    CHECK(count(db, "conversations") == 4);
  }
}

TEST_CASE_TEMPLATE("A hold committed while a retention batch waits for it is kept, with its data",
                   B, CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  Fixture f(db);
  Store other = db.open();
  const auto u = f.user("u1");
  const auto u2 = f.user("u2");
  const auto c = f.conv(u, ConversationStatus::completed, T0 - days(31), 2);
  const auto unheld = f.conv(u2, ConversationStatus::completed, T0 - days(31), 2);
  RetentionPolicy p;
  p.completed_older_than = days(30);
  bool user_hold = false;
  SUBCASE("a conversation hold") {}
  SUBCASE("a user hold") { user_hold = true; }
  RetentionReport report;
  {
    OpenTransaction hold(other, [&] {
      if (user_hold) {
        other.retention().hold_user(u, "late subpoena");
      } else {
        other.retention().hold(c, "late subpoena");
      }
    });
    Background run([&] { report = f.store.retention().run(p, at(T0)); });
    wait_for_a_lock_wait(db);  // the batch waits for the hold's transaction
    hold.commit();
    auto error = run.get();
    if (error) std::rethrow_exception(error);
  }
  CHECK(f.exists(c));
  CHECK(count(db, "messages", "conversation_id = " + std::to_string(c)) == 2);
  REQUIRE(f.store.retention().holds().size() == 1);
  CHECK(f.store.retention().holds()[0].reason == "late subpoena");
  CHECK(f.store.retention().is_held(c));
  CHECK_FALSE(f.exists(unheld));
  CHECK(report.totals.conversations_deleted == 1);
}

TEST_CASE_TEMPLATE("forget_user refuses a hold committed while it waits, and keeps the hold", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  Fixture f(db);
  Store other = db.open();
  const auto u = f.user("u1");
  const auto c = f.conv(u, ConversationStatus::completed, T0 - days(31), 2);
  std::exception_ptr error;
  {
    OpenTransaction hold(other, [&] { other.retention().hold(c, "late subpoena"); });
    Background forget([&] { f.store.retention().forget_user(u); });
    wait_for_a_lock_wait(db);  // forget waits for the hold's transaction
    hold.commit();
    error = forget.get();
  }
  REQUIRE(error);
  CHECK_ERROR_CODE(std::rethrow_exception(error), ErrorCode::failed_precondition);
  CHECK(f.exists(c));
  CHECK(f.store.conversations().get_user(u));
  CHECK(count(db, "messages", "conversation_id = " + std::to_string(c)) == 2);
  REQUIRE(f.store.retention().holds().size() == 1);
  CHECK(f.store.retention().holds()[0].conversation_id == std::optional<ConversationId>(c));
}

TEST_CASE_TEMPLATE("Text added to an anonymized conversation is blanked by the next run", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  Fixture f(db);
  const auto u = f.user("u1");
  const auto c = f.conv(u, ConversationStatus::completed, T0 - days(31), 2);
  RetentionPolicy p;
  p.completed_older_than = days(30);
  p.completed_action = RetentionAction::anonymize;
  CHECK(f.store.retention().run(p, at(T0)).totals.conversations_anonymized == 1);
  CHECK(f.store.retention().run(p, at(T0)).totals.conversations_anonymized == 0);  // nothing new

  // Text comes back: an appended message, and a delta on an earlier one
  // (which touches only the message).
  const auto first = f.store.conversations().history(c)[0];
  f.store.conversations().append(c, msg(Role::user, "zqx second secret"));
  f.store.conversations().append_content(first.id, "zqx late secret");
  set_updated(db, c, T0 - days(31));
  CHECK(count(db, "messages", "content <> ''") == 2);

  auto dry = f.store.retention().run(p, at(T0, true));
  CHECK(dry.totals.conversations_anonymized == 1);
  CHECK(dry.totals.messages_anonymized == 3);
  auto r = f.store.retention().run(p, at(T0));
  CHECK(r.totals == dry.totals);
  CHECK(count(db, "messages", "content <> ''") == 0);
  for (const auto& m : f.store.conversations().history(c)) CHECK(m.content.empty());
  CHECK(f.store.retention().run(p, at(T0)).totals.conversations_anonymized == 0);
}

TEST_CASE_TEMPLATE("A retention batch of more ids than the backends bind parameters works", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  Fixture f(db);
  const long long n = 70000;  // over PostgreSQL's 65,535 and SQLite's 32,766 parameters
  const std::string old = q(to_iso8601(T0 - days(31)));
  const std::string rows = "SELECT 'bulk', 'completed', " + old + ", " + old;
  if (db.backend() == "sqlite") {
    testing::raw_exec(db,
                      "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE "
                      "i < " +
                          std::to_string(n) +
                          ") INSERT INTO conversations (channel, status, created_at, "
                          "updated_at) " +
                          rows + " FROM n");
  } else {
    testing::raw_exec(db, "INSERT INTO conversations (channel, status, created_at, updated_at) " +
                              rows + " FROM generate_series(1, " + std::to_string(n) + ")");
  }
  REQUIRE(count(db, "conversations") == n);
  RetentionPolicy p;
  p.completed_older_than = days(30);
  RetentionRun run = at(T0, true);
  run.batch_size = 100000;
  auto dry = f.store.retention().run(p, run);
  CHECK(dry.totals.conversations_deleted == n);
  run.dry_run = false;
  auto r = f.store.retention().run(p, run);
  CHECK(r.totals.conversations_deleted == n);
  CHECK(r.batches == 1);
  CHECK(count(db, "conversations") == 0);
}

TEST_CASE_TEMPLATE("Archiving waits for an edit in flight and archives the edited text", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  Fixture f(db);
  Store other = db.open();
  const auto u = f.user("u1");
  const auto c = f.conv(u, ConversationStatus::completed, T0 - days(8), 2);
  const auto first = f.store.conversations().history(c)[0];
  RetentionPolicy p;
  p.completed_older_than = days(7);
  p.completed_action = RetentionAction::archive;
  {
    OpenTransaction edit(other,
                         [&] { other.conversations().append_content(first.id, " and more"); });
    Background run([&] { f.store.retention().run(p, at(T0)); });
    wait_for_a_lock_wait(db);  // archiving waits for the edit's transaction
    edit.commit();
    auto error = run.get();
    if (error) std::rethrow_exception(error);
  }
  CHECK_FALSE(f.exists(c));
  CHECK(count(db, "messages") == 0);
  CHECK(testing::raw_exec(db, "SELECT content FROM archived_messages WHERE id = " +
                                  std::to_string(first.id)) == first.content + " and more");
}

TEST_CASE_TEMPLATE("Retention refuses bad input and writes nothing", B, CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  Fixture f(db);
  const auto u = f.user("u1");
  const auto c = f.conv(u, ConversationStatus::completed, T0 - days(31));
  auto& r = f.store.retention();
  {
    RetentionPolicy p;
    p.completed_older_than = -days(1);
    CHECK_ERROR_CODE(r.run(p, at(T0)), ErrorCode::invalid_argument);
  }
  {
    RetentionPolicy p;
    p.completed_older_than = days(30);
    p.abandon_idle_after = -1ms;
    CHECK_ERROR_CODE(r.run(p, at(T0)), ErrorCode::invalid_argument);
    RetentionRun run = at(T0);
    run.batch_size = 0;
    p.abandon_idle_after.reset();
    CHECK_ERROR_CODE(r.run(p, run), ErrorCode::invalid_argument);
    p.keep_last_messages = 0;
    CHECK_ERROR_CODE(r.run(p, at(T0)), ErrorCode::invalid_argument);
  }
  CHECK(f.exists(c));
  CHECK_ERROR_CODE(r.hold(c, ""), ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(r.hold(c + 100, "x"), ErrorCode::not_found);
  CHECK_ERROR_CODE(r.hold_user(u + 100, "x"), ErrorCode::not_found);
  CHECK_ERROR_CODE(r.release(c + 100), ErrorCode::not_found);
  CHECK_ERROR_CODE(r.release_user(u + 100), ErrorCode::not_found);
  CHECK_ERROR_CODE(r.is_held(c + 100), ErrorCode::not_found);
  CHECK_FALSE(r.release(c));  // known, not held
  CHECK_FALSE(r.release_user(u));
  CHECK_FALSE(r.is_held(c));
  CHECK(r.holds().empty());
  CHECK_ERROR_CODE(r.export_user(u + 100), ErrorCode::not_found);
  CHECK_ERROR_CODE(r.forget_user(u + 100), ErrorCode::not_found);
  CHECK_ERROR_CODE(r.forget_user("telegram", "nobody"), ErrorCode::not_found);
  CHECK(count(db, "users") == 1);

  // Holding again replaces the reason.
  r.hold(c, "first");
  auto h = r.hold(c, "second");
  CHECK(h.reason == "second");
  CHECK(h.conversation_id == std::optional<ConversationId>(c));
  REQUIRE(r.holds().size() == 1);
  CHECK(r.holds()[0].reason == "second");
  CHECK(parse_retention_action("delete") == RetentionAction::remove);
  CHECK_ERROR_CODE(parse_retention_action("shred"), ErrorCode::invalid_argument);
}

namespace {

// Puts `marker` into every kind of data of user `u` (conversation `c`).
void fill_user(Fixture& f, UserId u, const std::string& marker, const std::string& key) {
  auto& cs = f.store.conversations();
  UserUpdate upd;
  upd.display_name = marker + " name";
  cs.update_user(u, upd);
  NewConversation nc;
  nc.user_id = u;
  nc.channel = "telegram";
  nc.key = key;
  nc.title = marker + " title";
  auto c = cs.start(nc);
  auto m = msg(Role::user, marker + " message");
  m.platform_message_id = "p-" + key;
  cs.append(c.id, m);
  cs.save_data(c.id, DataKind::partial, Json{{"note", marker + " data"}});
  cs.ask(c.id, NewQuestion("A", marker + " question"));
  f.store.agents().save_state(StateScope::conversation(c.id), "A", Json{{"x", marker + " cs"}});
  f.store.agents().save_state(StateScope::conversation(c.id), "A", Json{{"x", marker + " cs2"}});
  f.store.agents().save_state(StateScope::session(key), "A", Json{{"x", marker + " ss"}});
  f.store.agents().save_state(StateScope::named("user:" + std::to_string(u)), "A",
                              Json{{"x", marker + " named"}});
  NewWebSession ws;
  ws.device_info = Json{{"ua", marker + " browser"}};
  f.store.web_sessions().issue(u, ws);
  f.store.credentials().put(u, marker + "-cred", "s3cr3t", SecretKey::generate(),
                            Json{{"label", marker + " label"}});
  f.store.dialogs().configure(c.id);
  NewSuggestion sug;
  sug.answers_message_id = "p-" + key;
  sug.answers_message_at = T0;
  sug.text = marker + " suggestion";
  f.store.reviews().suggest(c.id, sug);
  NewEvent ev;
  ev.owner = u;
  ev.title = marker + " meeting";
  ev.start = T0;
  ev.end = T0 + 1h;
  f.store.calendar().create(ev);
  NewOperationTemplate tpl;
  tpl.user_id = u;
  tpl.kind = "expense";
  tpl.name = marker + " template";
  tpl.sample_input = marker + " sample";
  tpl.expected_output = Json{{"x", marker + " output"}};
  f.store.templates().add(tpl);
  // A second conversation (archived by the test), with session state.
  nc.key = key + "-old";
  nc.title = marker + " old title";
  cs.start(nc);
  f.store.agents().save_state(StateScope::session(key + "-old"), "A",
                              Json{{"x", marker + " old ss"}});
}

}  // namespace

TEST_CASE_TEMPLATE("export_user and forget_user cover every row of the user", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  Fixture f(db);
  const auto alice = f.user("alice");
  const auto bob = f.user("bob");
  fill_user(f, alice, "zqxalicemark", "ka");
  fill_user(f, bob, "zqxbobmark", "kb");
  // Archive one completed conversation of each.
  auto& cs = f.store.conversations();
  for (auto u : {alice, bob}) {
    ConversationFilter flt;
    flt.user_id = u;
    auto convs = cs.list(flt).items;
    REQUIRE(convs.size() == 2);
    for (const auto& c : convs) {
      if (c.key && c.key->find("-old") != std::string::npos) {
        cs.append(c.id, msg(Role::user, u == alice ? "zqxalicemark archived" : "zqxbobmark a"));
        cs.set_status(c.id, ConversationStatus::completed);
        set_updated(db, c.id, T0 - days(100));
      }
    }
  }
  RetentionPolicy p;
  p.completed_older_than = days(30);
  p.completed_action = RetentionAction::archive;
  CHECK(f.store.retention().run(p, at(T0)).totals.conversations_archived == 2);

  // ---- export ----
  auto doc = f.store.retention().export_user(alice);
  CHECK(doc["user"]["display_name"] == "zqxalicemark name");
  CHECK(doc["conversations"].size() == 1);
  CHECK(doc["messages"].size() == 1);
  CHECK(doc["messages"][0]["content"] == "zqxalicemark message");
  CHECK(doc["conversation_data"][0]["data"]["note"] == "zqxalicemark data");
  CHECK(doc["agent_questions"][0]["question"] == "zqxalicemark question");
  // conversation, session, named, and the archived conversation's session
  CHECK(doc["agent_states"].size() == 2 + 1 + 1);
  CHECK(doc["agent_state_history"].size() >= 4);
  REQUIRE(doc["web_sessions"].size() == 1);
  CHECK(doc["web_sessions"][0]["device_info"]["ua"] == "zqxalicemark browser");
  CHECK_FALSE(doc["web_sessions"][0].contains("access_hash"));
  REQUIRE(doc["credentials"].size() == 1);
  CHECK(doc["credentials"][0]["name"] == "zqxalicemark-cred");
  CHECK_FALSE(doc["credentials"][0].contains("ciphertext"));
  CHECK(doc["dialogs"].size() == 1);
  CHECK(doc["review_items"][0]["suggested_text"] == "zqxalicemark suggestion");
  CHECK(doc["calendar_events"][0]["title"] == "zqxalicemark meeting");
  CHECK(doc["archived_conversations"].size() == 1);
  CHECK(doc["archived_messages"][0]["content"] == "zqxalicemark archived");
  REQUIRE(doc["operation_templates"].size() == 1);
  CHECK(doc["operation_templates"][0]["name"] == "zqxalicemark template");
  CHECK(doc["operation_templates"][0]["expected_output"]["x"] == "zqxalicemark output");
  const std::string text = doc.dump();
  CHECK(text.find("zqxbobmark") == std::string::npos);
  CHECK(text.find("s3cr3t") == std::string::npos);

  // ---- forget, refused while held ----
  f.store.retention().hold_user(alice, "case 7");
  CHECK_ERROR_CODE(f.store.retention().forget_user(alice), ErrorCode::failed_precondition);
  f.store.retention().release_user(alice);
  const auto conv_id = doc["conversations"][0]["id"].get<long long>();
  f.store.retention().hold(conv_id, "case 8");
  try {
    f.store.retention().forget_user("telegram", "alice");
    FAIL("forget_user of a held conversation's user did not throw");
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::failed_precondition);
    CHECK(std::string(e.what()).find("case 8") != std::string::npos);
  }
  f.store.retention().release(conv_id);
  CHECK(stored_in_any_table(db, "zqxalicemark"));

  auto receipt = f.store.retention().forget_user("telegram", "alice");
  CHECK(receipt.user_id == alice);
  CHECK(receipt.rows["users"] == 1);
  CHECK(receipt.rows["conversations"] == 1);
  CHECK(receipt.rows["messages"] == 1);
  CHECK(receipt.rows["conversation_data"] == 1);
  CHECK(receipt.rows["agent_questions"] == 1);
  CHECK(receipt.rows["agent_states"] == 4);
  CHECK(receipt.rows["agent_state_history"] ==
        static_cast<long long>(doc["agent_state_history"].size()));
  CHECK(receipt.rows["web_sessions"] == 1);
  CHECK(receipt.rows["credentials"] == 1);
  CHECK(receipt.rows["dialogs"] == 1);
  CHECK(receipt.rows["review_items"] == 1);
  CHECK(receipt.rows["calendar_events"] == 1);
  CHECK(receipt.rows["archived_conversations"] == 1);
  CHECK(receipt.rows["archived_messages"] == 1);
  CHECK(receipt.rows["operation_templates"] == 1);
  CHECK(receipt.rows.count("legal_holds") == 0);
  CHECK_FALSE(receipt.notes.empty());
  long long total = 0;
  for (const auto& [t, n] : receipt.rows) total += n;
  CHECK(receipt.total == total);

  CHECK_FALSE(f.store.conversations().get_user(alice));
  CHECK_FALSE(stored_in_any_table(db, "zqxalicemark"));
  // Bob is untouched.
  CHECK(stored_in_any_table(db, "zqxbobmark"));
  auto bobs = f.store.retention().export_user(bob);
  CHECK(bobs["messages"].size() == 1);
  CHECK(bobs["agent_states"].size() == 4);
  CHECK(bobs["operation_templates"].size() == 1);
  CHECK(bobs["archived_messages"].size() == 1);
  CHECK(bobs["calendar_events"].size() == 1);
  CHECK_ERROR_CODE(f.store.retention().export_user(alice), ErrorCode::not_found);
}

TEST_CASE_TEMPLATE("Storage stats per channel and agent, with what retention would remove", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  Fixture f(db);
  Mixed m(f);
  auto by_channel = f.store.retention().storage_stats(StatsGroup::channel);
  REQUIRE(by_channel.size() == 3);
  CHECK(by_channel[0].group == "discord");
  CHECK(by_channel[0].conversations == 3);
  CHECK(by_channel[0].completed == 2);
  CHECK(by_channel[0].active == 1);
  CHECK(by_channel[0].messages == 13);
  CHECK(by_channel[0].content_bytes == 13 * 6);
  CHECK(by_channel[0].oldest.has_value());
  CHECK_FALSE(by_channel[0].would_remove.has_value());
  CHECK(by_channel[1].group == "telegram");
  CHECK(by_channel[1].messages == 11);
  CHECK(by_channel[2].group == "web");

  auto with_policy = f.store.retention().storage_stats(StatsGroup::agent, m.policy, T0);
  auto dry = f.store.retention().run(m.policy, at(T0, true));
  REQUIRE(with_policy.size() == 3);  // "", ExpenseAgent, IncomeAgent
  CHECK(with_policy[0].group.empty());
  CHECK(with_policy[1].group == "ExpenseAgent");
  CHECK(with_policy[2].group == "IncomeAgent");
  for (const auto& s : with_policy) {
    REQUIRE(s.would_remove.has_value());
    CHECK(*s.would_remove == dry.by_agent[s.group]);
  }
  CHECK(with_policy[2].would_remove->conversations_deleted == 1);
  CHECK(to_json(with_policy[2])["would_remove"]["conversations_deleted"] == 1);
}
