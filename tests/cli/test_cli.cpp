// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
//
// End-to-end tests of the convstore tool: the built binary is run on each
// backend, its stdout, stderr and exit status checked.

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "../support.hpp"
#include "cli_runner.hpp"

using namespace convstore;
using testing::check_error;
using testing::contains;
using testing::in_order;
using testing::parse_json;
using testing::run_cli;

namespace {

// Each command of the issue, with the arguments and options its --help must
// name.
struct CommandHelp {
  const char* name;
  std::vector<const char*> names;
};

const std::vector<CommandHelp>& command_helps() {
  static const std::vector<CommandHelp> helps = {
      {"migrate", {"URL", "--dry-run", "--json"}},
      {"stats", {"URL", "--json"}},
      {"show", {"URL", "CONVERSATION", "--last", "--json"}},
      {"export", {"URL", "FILE", "--quiet"}},
      {"import", {"URL", "FILE", "--skip-bad-lines"}},
      {"copy", {"FROM_URL", "TO_URL"}},
      {"backup", {"URL", "FILE"}},
      {"prune", {"URL", "--completed-older-than", "--idle-after", "--dry-run"}},
      {"search", {"URL", "TEXT", "--user", "--conversation", "--limit"}},
      {"forget-user", {"URL", "CHANNEL", "EXTERNAL_ID"}},
  };
  return helps;
}

}  // namespace

TEST_CASE("convstore --help lists every command and exits 0") {
  auto r = run_cli({"--help"});
  CHECK(r.status == 0);
  CHECK(r.err.empty());
  for (const auto& c : command_helps()) CHECK_MESSAGE(contains(r.out, c.name), c.name);
  auto none = run_cli({});
  CHECK(none.status == 2);
  CHECK(none.out.empty());
  CHECK(contains(none.err, "convstore: error: "));
}

TEST_CASE("every command's --help exits 0 and names its arguments and options") {
  for (const auto& c : command_helps()) {
    CAPTURE(c.name);
    auto r = run_cli({c.name, "--help"});
    CHECK(r.status == 0);
    CHECK(r.err.empty());
    CHECK(contains(r.out, std::string("convstore ") + c.name));
    for (const char* name : c.names) CHECK_MESSAGE(contains(r.out, name), name << "\n" << r.out);
  }
}

TEST_CASE("command-line mistakes exit 2 with the message on stderr and nothing on stdout") {
  check_error(run_cli({"frobnicate", "sqlite:x.db"}), 2, "unknown command 'frobnicate'");
  check_error(run_cli({"show", "sqlite:x.db"}), 2, "CONVERSATION");
  check_error(run_cli({"stats"}), 2, "URL");
  check_error(run_cli({"stats", "sqlite:x.db", "--no-such-option"}), 2, "--no-such-option");
  // A bad duration names the value.
  check_error(run_cli({"prune", "sqlite:x.db", "--completed-older-than", "30x"}), 2, "'30x'");
  check_error(run_cli({"prune", "sqlite:x.db", "--idle-after", "0h"}), 2, "'0h'");
  check_error(run_cli({"prune", "sqlite:x.db", "--idle-after", "24"}), 2, "'24'");
  check_error(run_cli({"prune", "sqlite:x.db"}), 2, "nothing to do");
  check_error(run_cli({"show", "sqlite:x.db", "1", "--page-size", "0"}), 2, "--page-size");
  check_error(run_cli({"search", "sqlite:x.db", "hi", "--since", "yesterday"}), 2, "yesterday");
  CHECK_FALSE(std::filesystem::exists("x.db"));
}

TEST_CASE_TEMPLATE("migrate brings a fresh database to the library's schema version", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  const int library = Store::library_schema_version();

  // A dry run lists every migration and applies none.
  auto dry = run_cli({"migrate", db.url(), "--dry-run"});
  CHECK(dry.status == 0);
  CHECK(dry.err.empty());
  CHECK(contains(dry.out, "schema version 0"));
  CHECK(contains(dry.out, std::to_string(library) + " migrations would be applied"));
  CHECK(contains(dry.out, Store::schema_migrations().back().description));
  auto dry_json = parse_json(run_cli({"migrate", db.url(), "--dry-run", "--json"}).out);
  CHECK(dry_json["schema_version"] == 0);
  CHECK(dry_json["pending"].size() == static_cast<std::size_t>(library));
  if (std::string(B::name) == "sqlite") {
    CHECK_FALSE(std::filesystem::exists(db.url().substr(7)));  // not even created
  } else {
    CHECK(Store::inspect_schema(db.url()).database_version == 0);
  }

  auto r = run_cli({"migrate", db.url()});
  CHECK(r.status == 0);
  CHECK(r.err.empty());
  CHECK(contains(r.out, "schema version 0 -> " + std::to_string(library)));
  CHECK(Store::inspect_schema(db.url()).database_version == library);
  CHECK(db.open().schema_version() == library);

  // Again: nothing to do, said in JSON too.
  auto again = run_cli({"migrate", db.url(), "--json"});
  CHECK(again.status == 0);
  auto j = parse_json(again.out);
  CHECK(j["backend"] == B::name);
  CHECK(j["schema_version_before"] == library);
  CHECK(j["schema_version"] == library);
  CHECK(j["library_schema_version"] == library);
  CHECK(j["applied"].empty());
  CHECK(contains(run_cli({"migrate", db.url()}).out, "up to date"));
}

TEST_CASE_TEMPLATE("stats prints the counts as text and as JSON", B, CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  {
    auto store = db.open();
    auto& cs = store.conversations();
    auto alice = cs.upsert_user({"telegram", "1001"});
    cs.upsert_user({"web", "bob"});
    NewConversation nc;
    nc.user_id = alice.id;
    nc.channel = "telegram";
    auto a = cs.start(nc);
    auto b = cs.start(nc);
    cs.start(nc);
    for (int i = 0; i < 3; ++i) cs.append(a.id, testing::text("a" + std::to_string(i)));
    cs.append(b.id, testing::text("b0"));
    cs.append(b.id, testing::text("b1"));
    cs.complete(b.id, "row-7");
    NewAgent agent;
    agent.id = "planner";
    agent.name = "Planner";
    store.agents().create_agent(agent);
  }

  auto text = run_cli({"stats", db.url()});
  CHECK(text.status == 0);
  CHECK(text.err.empty());
  CHECK(contains(text.out, "backend:        " + std::string(B::name)));
  CHECK(contains(text.out, "users:          2"));
  CHECK(contains(text.out, "conversations:  3 (active 2, completed 1, abandoned 0, archived 0)"));
  CHECK(contains(text.out, "messages:       5"));
  CHECK(contains(text.out, "agents:         1"));
  CHECK(contains(text.out, "health:         ok"));

  auto r = run_cli({"stats", db.url(), "--json"});
  CHECK(r.status == 0);
  CHECK(r.err.empty());
  auto j = parse_json(r.out);
  CHECK(j["backend"] == B::name);
  CHECK(j["schema_version"] == Store::library_schema_version());
  CHECK(j["health"]["ok"] == true);
  CHECK(j["counts"]["users"] == 2);
  CHECK(j["counts"]["conversations"] == 3);
  CHECK(j["counts"]["active"] == 2);
  CHECK(j["counts"]["completed"] == 1);
  CHECK(j["counts"]["messages"] == 5);
  CHECK(j["counts"]["agents"] == 1);
}

TEST_CASE_TEMPLATE("stats refuses a database that is missing or not migrated", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  if (std::string(B::name) == "sqlite") {
    check_error(run_cli({"stats", db.url()}), 1, "convstore migrate");
    CHECK_FALSE(std::filesystem::exists(db.url().substr(7)));
    return;
  }
  // PostgreSQL: the (empty) schema is there but not migrated; looking at it
  // writes nothing (not even the bookkeeping table).
  check_error(run_cli({"stats", db.url()}), 1, "convstore migrate");
  check_error(run_cli({"show", db.url(), "1"}), 1, "convstore migrate");
  CHECK(testing::raw_exec(db,
                          "SELECT COUNT(*) FROM pg_catalog.pg_tables WHERE schemaname = "
                          "current_schema()") == "0");
}

TEST_CASE_TEMPLATE("show prints a conversation's transcript by id and by key", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  ConversationId id = 0;
  {
    auto store = db.open();
    auto& cs = store.conversations();
    UserUpsert u{"telegram", "1001"};
    u.username = "alice";
    auto alice = cs.upsert_user(u);
    NewConversation nc;
    nc.key = "sess-abc";
    nc.user_id = alice.id;
    nc.channel = "telegram";
    nc.title = "Coffee budget";
    id = cs.start(nc).id;
    NewMessage sys;
    sys.role = Role::system;
    sys.content = "You are a finance bot.";
    cs.append(id, sys);
    cs.append(id, testing::text("coffee 300\nand a croissant"));
    NewMessage reply;
    reply.role = Role::assistant;
    reply.content = "Saved: coffee, 300.";
    reply.agent = "planner";
    reply.model = "gpt-4o";
    reply.token_count = 42;
    cs.append(id, reply);
  }

  auto by_id = run_cli({"show", db.url(), std::to_string(id)});
  CHECK(by_id.status == 0);
  CHECK(by_id.err.empty());
  CHECK(contains(by_id.out, "conversation " + std::to_string(id)));
  CHECK(contains(by_id.out, "key:      sess-abc"));
  CHECK(contains(by_id.out, "telegram:1001, @alice"));
  CHECK(contains(by_id.out, "status:   active"));
  CHECK(contains(by_id.out, "messages: 3"));
  CHECK(contains(by_id.out, "title:    Coffee budget"));
  CHECK(in_order(by_id.out, {"system", "You are a finance bot.", "] #", "user", "    coffee 300\n",
                             "    and a croissant\n", "assistant", "agent: planner",
                             "model: gpt-4o", "tokens: 42", "Saved: coffee, 300."}));

  auto by_key = run_cli({"show", db.url(), "sess-abc"});
  CHECK(by_key.status == 0);
  CHECK(by_key.out == by_id.out);

  auto r = run_cli({"show", db.url(), "sess-abc", "--json"});
  CHECK(r.status == 0);
  auto j = parse_json(r.out);
  CHECK(j["conversation"]["id"] == id);
  CHECK(j["conversation"]["key"] == "sess-abc");
  CHECK(j["user"]["external_id"] == "1001");
  REQUIRE(j["messages"].size() == 3);
  CHECK(j["messages"][0]["role"] == "system");
  CHECK(j["messages"][1]["role"] == "user");
  CHECK(j["messages"][1]["content"] == "coffee 300\nand a croissant");
  CHECK(j["messages"][2]["role"] == "assistant");
  CHECK(j["messages"][2]["token_count"] == 42);

  check_error(run_cli({"show", db.url(), "no-such-key"}), 1, "'no-such-key' not found");
  check_error(run_cli({"show", db.url(), "999999"}), 1, "'999999' not found");
}

TEST_CASE_TEMPLATE("show pages through a long conversation in order, and --last keeps the newest",
                   B, CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  ConversationId id = 0;
  {
    auto store = db.open();
    id = store.conversations().start({}).id;
    std::vector<NewMessage> batch;
    for (int i = 0; i < 25; ++i) batch.push_back(testing::text("line-" + std::to_string(100 + i)));
    store.conversations().append_batch(id, batch);
  }
  std::vector<std::string> all;
  for (int i = 0; i < 25; ++i) all.push_back("line-" + std::to_string(100 + i));

  auto r = run_cli({"show", db.url(), std::to_string(id), "--page-size", "7"});
  CHECK(r.status == 0);
  CHECK(in_order(r.out, all));

  auto j =
      parse_json(run_cli({"show", db.url(), std::to_string(id), "--page-size", "4", "--json"}).out);
  REQUIRE(j["messages"].size() == 25);
  for (std::size_t i = 0; i < 25; ++i) CHECK(j["messages"][i]["content"] == all[i]);

  auto last = parse_json(
      run_cli({"show", db.url(), std::to_string(id), "--last", "6", "--page-size", "4", "--json"})
          .out);
  REQUIRE(last["messages"].size() == 6);
  for (std::size_t i = 0; i < 6; ++i) CHECK(last["messages"][i]["content"] == all[19 + i]);
  auto more =
      parse_json(run_cli({"show", db.url(), std::to_string(id), "--last", "99", "--json"}).out);
  CHECK(more["messages"].size() == 25);
}

TEST_CASE("a bad URL fails with the message on stderr") {
  check_error(run_cli({"stats", "mysql://root@db/app"}), 1, "unsupported database URL scheme");
  check_error(run_cli({"show", "sqlite:", "1"}), 1, "sqlite");
}

TEST_CASE("a password in a URL is never printed") {
  const std::string secret = "Sup3rSecretPw";
  std::vector<std::vector<std::string>> calls = {
      // Nothing listens on port 1: the connection fails and the error names the target.
      {"stats", "postgresql://convstore:" + secret + "@127.0.0.1:1/nodb"},
      {"migrate", "postgresql://convstore:" + secret + "@127.0.0.1:1/nodb", "--dry-run"},
      {"show", "postgres://u:" + secret + "@127.0.0.1:1/db?connect_timeout=2", "key"},
      {"stats", "host=127.0.0.1 port=1 user=u password=" + secret + " dbname=db"},
      {"stats", "mysql://root:" + secret + "@db/app"},
      {"copy", "postgresql://a:" + secret + "@127.0.0.1:1/x", "sqlite:y.db"},
  };
  // Against the real server too: whether it checks passwords or not, the
  // output must not show it.
  if (const char* pg = std::getenv("CONVSTORE_TEST_PG_URL"); pg != nullptr && *pg != '\0') {
    std::string url = pg;
    auto scheme = url.find("://");
    auto at = url.find('@');
    if (scheme != std::string::npos && at != std::string::npos && url.find(':', scheme + 3) > at) {
      url.insert(at, ":" + secret);
      calls.push_back({"stats", url});
      calls.push_back({"migrate", url, "--dry-run", "--json"});
      calls.push_back({"show", url, "no-such-conversation"});
    }
  }
  for (const auto& call : calls) {
    CAPTURE(call[1]);
    auto r = run_cli(call);
    CHECK_FALSE(contains(r.out, secret));
    CHECK_FALSE(contains(r.err, secret));
    CHECK(r.status != -1);
  }
  // Failing ones still say what failed.
  auto r = run_cli(calls[0]);
  CHECK(r.status == 1);
  CHECK(contains(r.err, "convstore: error: "));
}
