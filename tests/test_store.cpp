// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#include <atomic>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

#include "support.hpp"

using namespace convstore;

TEST_CASE("open rejects unknown schemes and bad URLs with invalid_argument") {
  CHECK_ERROR_CODE(Store::open("mysql://localhost/db"), ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(Store::open("sqlite:"), ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(Store::open("postgresql://host/db?no_such_option=1"),
                   ErrorCode::invalid_argument);
}

TEST_CASE("an unreachable PostgreSQL server is unavailable and the password is never shown") {
  try {
    Options o;
    o.connect_timeout = std::chrono::seconds(2);
    Store::open("postgresql://bot:s3cretpw@127.0.0.1:1/bot", o);
    FAIL("open succeeded");
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::unavailable);
    CHECK(std::string(e.what()).find("s3cretpw") == std::string::npos);
    CHECK(std::string(e.what()).find("127.0.0.1") != std::string::npos);
  }
}

TEST_CASE("a malformed PostgreSQL URL is invalid_argument and never shows its password") {
  try {
    Store::open("postgresql://bob:s3cret@[::1/db");
    FAIL("open succeeded");
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::invalid_argument);
    CHECK(std::string(e.what()).find("s3cret") == std::string::npos);
  }
}

TEST_CASE("postgresql: times stay UTC and ISO whatever the session defaults") {
  testing::TestDb db("postgresql");
  if (!db.ready()) return;
  // The URL asks for another time zone and date style; convstore's own
  // session settings win, so stored times read back exactly.
  std::string url = db.url();
  auto at = url.find("options=");
  REQUIRE(at != std::string::npos);
  url.insert(url.find('&', at) == std::string::npos ? url.size() : url.find('&', at),
             "%20-c%20DateStyle%3DSQL,DMY%20-c%20TimeZone%3DAsia/Tokyo");
  auto store = Store::open(url);
  auto c = store.conversations().start({});
  auto got = store.conversations().get(c.id);
  REQUIRE(got.has_value());
  CHECK(got->created_at == c.created_at);
}

TEST_CASE("sqlite::memory: opens a private migrated database") {
  auto a = Store::open("sqlite::memory:");
  auto b = Store::open("sqlite::memory:");
  CHECK(a.backend() == "sqlite");
  CHECK(a.schema_version() == Store::library_schema_version());
  a.conversations().start({});
  CHECK(a.stats().conversations == 1);
  CHECK(b.stats().conversations == 0);
}

TEST_CASE_TEMPLATE("open migrates a fresh database and reopening keeps the data", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  ConversationId id = 0;
  {
    auto store = db.open();
    CHECK(store.backend() == B::name);
    CHECK(store.schema_version() == Store::library_schema_version());
    id = store.conversations().start({}).id;
  }
  auto again = db.open();
  CHECK(again.schema_version() == Store::library_schema_version());
  CHECK(again.conversations().get(id).has_value());
}

TEST_CASE_TEMPLATE("two processes opening one fresh database at once both succeed", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  std::vector<int> pids;
  for (int i = 0; i < 4; ++i) pids.push_back(testing::spawn_helper("open '" + db.url() + "'"));
  for (int pid : pids) CHECK(testing::wait_helper(pid) == 0);
  CHECK(db.open().schema_version() == Store::library_schema_version());
}

TEST_CASE_TEMPLATE("migrate=false refuses a database that is not current", B, CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  Options o;
  o.migrate = false;
  CHECK_ERROR_CODE(db.open(o), ErrorCode::failed_precondition);
  db.open();  // migrates
  CHECK(db.open(o).schema_version() == Store::library_schema_version());
}

TEST_CASE_TEMPLATE("a database newer than the library is refused with failed_precondition", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  db.open();
  // A later library recorded a migration this one does not know.
  testing::raw_exec(db, "INSERT INTO convstore_schema (version, description, applied_at) VALUES (" +
                            std::to_string(Store::library_schema_version() + 1) +
                            ", 'from the future', '2030-01-01T00:00:00.000000Z')");
  try {
    db.open();
    FAIL("opened a newer database");
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::failed_precondition);
    CHECK(std::string(e.what()).find("newer") != std::string::npos);
  }
}

TEST_CASE_TEMPLATE("health reports reachability, latency and schema version", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  Health h = store.health();
  CHECK(h.ok);
  CHECK(h.backend == B::name);
  CHECK(h.schema_version == Store::library_schema_version());
  CHECK(h.round_trip.count() >= 0);
  CHECK(h.error.empty());
}

TEST_CASE_TEMPLATE("stats counts users, conversations by status, messages and agents", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& cs = store.conversations();
  auto u = cs.upsert_user({"telegram", "42"});
  NewConversation n;
  n.user_id = u.id;
  n.agent = "ExpenseAgent";
  auto a = cs.start(n);
  auto b = cs.start(n);
  auto c = cs.start({});
  cs.set_status(b.id, ConversationStatus::completed);
  cs.set_status(c.id, ConversationStatus::abandoned);
  NewMessage m;
  m.content = "hi";
  m.agent = "IncomeAgent";
  cs.append(a.id, m);
  cs.append(a.id, m);
  NewAgent agent;
  agent.id = "ExpenseAgent";
  store.agents().create_agent(agent);
  agent.id = "IncomeAgent";
  store.agents().create_agent(agent);
  store.agents().deactivate_agent("IncomeAgent");
  Stats s = store.stats();
  CHECK(s.users == 1);
  CHECK(s.conversations == 3);
  CHECK(s.active == 1);
  CHECK(s.completed == 1);
  CHECK(s.abandoned == 1);
  CHECK(s.archived == 0);
  CHECK(s.messages == 2);
  CHECK(s.agents == 2);
}

TEST_CASE_TEMPLATE("transaction commits together and rolls back everything on an exception", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& cs = store.conversations();
  auto conv = store.transaction([&] {
    auto c = cs.start({});
    NewMessage m;
    m.content = "one";
    cs.append(c.id, m);
    cs.save_data(c.id, DataKind::partial, {{"amount", 300}});
    return c;
  });
  CHECK(cs.get(conv.id)->message_count == 1);

  CHECK_THROWS_AS(store.transaction([&] {
    NewMessage m;
    m.content = "two";
    cs.append(conv.id, m);
    cs.start({});
    throw std::runtime_error("app failure");
  }),
                  std::runtime_error);
  CHECK(cs.get(conv.id)->message_count == 1);
  CHECK(store.stats().conversations == 1);
  CHECK(store.stats().messages == 1);
}

TEST_CASE_TEMPLATE("a failed call inside a transaction is undone alone; the rest commits", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& cs = store.conversations();
  NewConversation keyed;
  keyed.key = "k";
  cs.start(keyed);
  store.transaction([&] {
    auto c = cs.start({});
    CHECK_ERROR_CODE(cs.start(keyed), ErrorCode::already_exists);
    NewMessage m;
    m.content = "after the failure";
    cs.append(c.id, m);
  });
  CHECK(store.stats().conversations == 2);
  CHECK(store.stats().messages == 1);
}

TEST_CASE_TEMPLATE("the statement hook sees SQL text and durations, never values", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  std::vector<std::string> seen;
  std::mutex mu;
  Options o;
  o.on_statement = [&](const StatementEvent& e) {
    std::lock_guard<std::mutex> lock(mu);
    seen.emplace_back(e.sql);
    CHECK(e.duration.count() >= 0);
  };
  auto store = db.open(o);
  auto c = store.conversations().start({});
  NewMessage m;
  m.content = "secret-value-123";
  store.conversations().append(c.id, m);
  bool saw_insert = false;
  for (const auto& s : seen) {
    CHECK(s.find("secret-value-123") == std::string::npos);
    if (s.find("INSERT INTO messages") != std::string::npos) saw_insert = true;
  }
  CHECK(saw_insert);
}

TEST_CASE_TEMPLATE("a pool exhausted for longer than acquire_timeout fails with unavailable", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  Options o;
  o.pool_size = 1;
  o.acquire_timeout = std::chrono::milliseconds(200);
  auto store = db.open(o);
  std::atomic<bool> inside{false}, release{false};
  std::thread holder([&] {
    store.transaction([&] {
      store.conversations().start({});
      inside = true;
      while (!release) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    });
  });
  while (!inside) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  CHECK_ERROR_CODE(store.conversations().start({}), ErrorCode::unavailable);
  release = true;
  holder.join();
  CHECK(store.stats().conversations == 1);
}

TEST_CASE_TEMPLATE("a nested transaction that throws is undone alone", B, CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& cs = store.conversations();
  auto c = cs.start({});
  NewMessage a, b;
  a.content = "outer";
  b.content = "inner";
  store.transaction([&] {
    cs.append(c.id, a);
    try {
      store.transaction([&] {
        cs.append(c.id, b);
        throw std::runtime_error("inner failure");
      });
    } catch (const std::runtime_error&) {
    }
  });
  auto msgs = cs.recent(c.id, 10);
  REQUIRE(msgs.size() == 1);
  CHECK(msgs[0].content == "outer");
  CHECK(cs.get(c.id)->message_count == 1);
}

TEST_CASE_TEMPLATE("a server-side failure caught inside a transaction never commits silently", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& cs = store.conversations();
  auto c = cs.start({});
  NewMessage m;
  m.content = "kept or refused, never lost silently";
  // Someone renamed a table behind the store's back: the read fails on the
  // server. On PostgreSQL that aborts the whole transaction.
  testing::raw_exec(db, "ALTER TABLE agent_questions RENAME TO agent_questions_moved");
  bool committed = false;
  try {
    store.transaction([&] {
      cs.append(c.id, m);
      try {
        cs.open_questions(c.id);
      } catch (const Error&) {
        // the application decides to go on
      }
    });
    committed = true;
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::aborted);
    CHECK(std::string(e.what()).find("rolled back") != std::string::npos);
  }
  testing::raw_exec(db, "ALTER TABLE agent_questions_moved RENAME TO agent_questions");
  // Either the transaction committed with the message, or it said it did not.
  CHECK(cs.get(c.id)->message_count == (committed ? 1 : 0));
  if (std::string(B::name) == "postgresql") CHECK_FALSE(committed);
}

TEST_CASE_TEMPLATE("inspect_schema reports the version and pending migrations without applying", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  const int library = Store::library_schema_version();
  auto all = Store::schema_migrations();
  REQUIRE(static_cast<int>(all.size()) == library);
  CHECK(all.front().version == 1);
  CHECK(all.back().version == library);
  CHECK_FALSE(all.front().description.empty());

  SchemaStatus fresh = Store::inspect_schema(db.url());
  CHECK(fresh.backend == B::name);
  CHECK(fresh.database_version == 0);
  CHECK(fresh.library_version == library);
  CHECK(static_cast<int>(fresh.pending.size()) == library);
  // Nothing was applied: a second look still finds version 0.
  CHECK(Store::inspect_schema(db.url()).database_version == 0);

  db.open();  // migrates
  SchemaStatus current = Store::inspect_schema(db.url());
  CHECK(current.database_version == library);
  CHECK(current.pending.empty());

  // A database part-way: the newest migration is "not yet applied".
  testing::raw_exec(db, "DELETE FROM convstore_schema WHERE version = " + std::to_string(library));
  SchemaStatus behind = Store::inspect_schema(db.url());
  CHECK(behind.database_version == library - 1);
  REQUIRE(behind.pending.size() == 1);
  CHECK(behind.pending[0].version == library);
  CHECK(behind.pending[0].description == all.back().description);
}
