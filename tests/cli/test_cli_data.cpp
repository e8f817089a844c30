// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
//
// End-to-end tests of the convstore tool's data commands (export, import,
// copy, backup, search, prune, forget-user): the built binary is run on each
// backend, its stdout, stderr and exit status checked.

#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "../support.hpp"
#include "cli_runner.hpp"

using namespace convstore;
using testing::check_error;
using testing::contains;
using testing::in_order;
using testing::parse_json;
using testing::read_file;
using testing::run_cli;
using testing::TempDir;

namespace {

void spit(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (start < text.size()) {
    auto end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    out.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

std::string join_lines(const std::vector<std::string>& lines) {
  std::string out;
  for (const auto& l : lines) out += l + "\n";
  return out;
}

// The other backend's name.
const char* other_backend(const char* backend) {
  return std::string(backend) == "sqlite" ? "postgresql" : "sqlite";
}

// A small database: two users, three conversations (one completed), seven
// messages of several roles, an agent. Returns the conversation "sess-abc".
ConversationId seed(Store& store) {
  auto& cs = store.conversations();
  UserUpsert u{"telegram", "1001"};
  u.username = "alice";
  auto alice = cs.upsert_user(u);
  auto bob = cs.upsert_user({"web", "bob"});
  NewConversation nc;
  nc.key = "sess-abc";
  nc.user_id = alice.id;
  nc.channel = "telegram";
  nc.title = "Coffee budget";
  auto a = cs.start(nc);
  NewMessage sys;
  sys.role = Role::system;
  sys.content = "You are a finance bot.";
  cs.append(a.id, sys);
  cs.append(a.id, testing::text("coffee 300\nand a croissant"));
  NewMessage reply;
  reply.role = Role::assistant;
  reply.content = "Saved: coffee, 300.";
  reply.agent = "planner";
  reply.model = "gpt-4o";
  reply.token_count = 42;
  cs.append(a.id, reply);

  NewConversation nb;
  nb.user_id = bob.id;
  nb.channel = "web";
  auto b = cs.start(nb);
  cs.append(b.id, testing::text("train tickets to Lyon"));
  cs.append(b.id, testing::text("and a hotel"));
  cs.complete(b.id, "row-7");

  auto c = cs.start(nb);
  cs.append(c.id, testing::text("tea 120"));
  cs.append(c.id, testing::text("biscuits 80"));

  NewAgent agent;
  agent.id = "planner";
  agent.name = "Planner";
  store.agents().create_agent(agent);
  return a.id;
}

Json counts(const std::string& url) {
  auto r = run_cli({"stats", url, "--json"});
  REQUIRE(r.status == 0);
  return parse_json(r.out)["counts"];
}

}  // namespace

TEST_CASE_TEMPLATE("export, then import into the other backend, gives the same transcripts", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  testing::TestDb other(other_backend(B::name));
  if (!other.ready()) return;
  TempDir dir;
  ConversationId id = 0;
  {
    auto store = db.open();
    id = seed(store);
  }
  const std::string file = dir.file("bot.jsonl");

  auto e = run_cli({"export", db.url(), file});
  CHECK(e.status == 0);
  CHECK(contains(e.out, "exported "));
  CHECK(contains(e.out, "message 7"));
  CHECK(contains(e.out, "conversation 3"));
  // Without a terminal the progress is plain lines on stderr, ending with the total.
  CHECK(in_order(e.err, {"exported ", "rows (100%)\n"}));
  auto lines = lines_of(read_file(file));
  REQUIRE(lines.size() > 10);
  CHECK(contains(lines[0], "\"format\":\"convstore\""));

  // The JSON summary, and nothing on stderr with --quiet.
  auto ej = run_cli({"export", db.url(), dir.file("again.jsonl"), "--quiet", "--json"});
  CHECK(ej.status == 0);
  CHECK(ej.err.empty());
  auto summary = parse_json(ej.out);
  CHECK(summary["rows"] == static_cast<std::int64_t>(lines.size() - 1));
  CHECK(summary["rows_by_type"]["message"] == 7);
  CHECK(summary["rows_by_type"]["user"] == 2);
  CHECK(read_file(dir.file("again.jsonl")) == read_file(file));

  REQUIRE(run_cli({"migrate", other.url()}).status == 0);
  auto i = run_cli({"import", other.url(), file});
  CHECK(i.status == 0);
  CHECK(contains(i.out, std::to_string(lines.size() - 1) + " rows inserted, 0 unchanged"));
  CHECK(contains(i.err, "imported "));

  // The same data: same counts, same transcript (ids and times kept).
  CHECK(counts(other.url()) == counts(db.url()));
  auto original = run_cli({"show", db.url(), std::to_string(id)});
  auto imported = run_cli({"show", other.url(), std::to_string(id)});
  CHECK(original.status == 0);
  CHECK(imported.status == 0);
  CHECK(contains(imported.out, "Saved: coffee, 300."));
  CHECK(imported.out == original.out);
  CHECK(run_cli({"show", other.url(), "sess-abc", "--json"}).out ==
        run_cli({"show", db.url(), "sess-abc", "--json"}).out);

  // Importing again changes nothing: every row is unchanged.
  auto again = run_cli({"import", other.url(), file, "--json", "--quiet"});
  CHECK(again.status == 0);
  CHECK(again.err.empty());
  auto j = parse_json(again.out);
  CHECK(j["inserted"] == 0);
  CHECK(j["unchanged"] == static_cast<std::int64_t>(lines.size() - 1));
  CHECK(j["skipped"].empty());
  CHECK(counts(other.url()) == counts(db.url()));
}

TEST_CASE_TEMPLATE("export to stdout and import from stdin", B, CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  TempDir dir;
  {
    auto store = db.open();
    seed(store);
  }
  auto e = run_cli({"export", db.url(), "-"});
  CHECK(e.status == 0);
  // stdout holds the file only; the summary and the progress go to stderr.
  CHECK(e.out.rfind("{\"format\":\"convstore\"", 0) == 0);
  CHECK(contains(e.err, "to stdout"));
  CHECK_FALSE(contains(e.out, "exported"));
  check_error(run_cli({"export", db.url(), "-", "--json"}), 2, "--json");

  const std::string file = dir.file("stdin.jsonl");
  spit(file, e.out);
  testing::TestDb target(B::name);
  REQUIRE(target.ready());
  REQUIRE(run_cli({"migrate", target.url()}).status == 0);
  auto i = run_cli({"import", target.url(), "-", "--quiet"}, file);
  CHECK(i.status == 0);
  CHECK(i.err.empty());
  CHECK(contains(i.out, "imported stdin"));
  CHECK(counts(target.url()) == counts(db.url()));
}

TEST_CASE_TEMPLATE("import of a broken file names the line and imports nothing", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  TempDir dir;
  {
    auto store = db.open();
    seed(store);
  }
  const std::string good = dir.file("good.jsonl");
  REQUIRE(run_cli({"export", db.url(), good, "--quiet"}).status == 0);
  auto lines = lines_of(read_file(good));
  const std::size_t records = lines.size() - 1;
  // Line 3 is not JSON; the last line is a message of an unknown conversation.
  lines.insert(lines.begin() + 2, "{\"type\":\"user\",\"id\":");
  lines.push_back(
      "{\"type\":\"message\",\"id\":999,\"conversation_id\":424242,\"role\":\"user\","
      "\"kind\":\"text\",\"content\":\"x\",\"complete\":true,\"metadata\":{},"
      "\"created_at\":\"2026-01-01T00:00:00.000000Z\",\"updated_at\":\"2026-01-01T00:00:00."
      "000000Z\"}");
  const std::string bad = dir.file("bad.jsonl");
  spit(bad, join_lines(lines));
  const std::string last_line = std::to_string(lines.size());

  testing::TestDb target(B::name);
  REQUIRE(target.ready());
  REQUIRE(run_cli({"migrate", target.url()}).status == 0);
  const Json empty = counts(target.url());
  CHECK(empty["messages"] == 0);

  auto r = run_cli({"import", target.url(), bad});
  check_error(r, 1, "line 3");
  CHECK(counts(target.url()) == empty);

  // Into a database that has data: it stays as it was.
  auto again = run_cli({"import", db.url(), bad, "--quiet"});
  check_error(again, 1, "line 3");
  auto before = counts(db.url());
  CHECK(before["messages"] == 7);

  // --skip-bad-lines imports the rest and lists the skipped lines.
  auto s = run_cli({"import", target.url(), bad, "--skip-bad-lines"});
  CHECK(s.status == 0);
  CHECK(contains(s.out, std::to_string(records) + " rows inserted"));
  CHECK(contains(s.out, "2 lines skipped"));
  CHECK(contains(s.out, "skipped line 3: "));
  CHECK(contains(s.out, "skipped line " + last_line + ": "));
  CHECK(counts(target.url()) == counts(db.url()));

  auto sj = parse_json(run_cli({"import", target.url(), bad, "--skip-bad-lines", "--json"}).out);
  CHECK(sj["inserted"] == 0);
  CHECK(sj["unchanged"] == static_cast<std::int64_t>(records));
  REQUIRE(sj["skipped"].size() == 2);
  CHECK(sj["skipped"][0]["line"] == 3);
  CHECK(sj["skipped"][1]["line"] == static_cast<std::int64_t>(lines.size()));
  CHECK(sj["skipped"][1]["reason"].get<std::string>().size() > 0);

  check_error(run_cli({"import", target.url(), dir.file("missing.jsonl")}), 1, "missing.jsonl");
}

TEST_CASE_TEMPLATE("copy to the other backend, verified; a differing target exits 1", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  testing::TestDb other(other_backend(B::name));
  if (!other.ready()) return;
  ConversationId id = 0;
  {
    auto store = db.open();
    id = seed(store);
  }
  // The target is not migrated yet: copy migrates it.
  auto r = run_cli({"copy", db.url(), other.url()});
  CHECK(r.status == 0);
  CHECK(contains(r.out, "rows inserted, 0 already there"));
  CHECK(in_order(r.out, {"user", "2", "2", "match", "message", "7", "7", "match"}));
  CHECK(contains(r.out, "verified: source and target match"));
  CHECK(contains(r.err, "copied "));
  CHECK(counts(other.url()) == counts(db.url()));
  CHECK(run_cli({"show", other.url(), std::to_string(id)}).out ==
        run_cli({"show", db.url(), std::to_string(id)}).out);

  // Again: nothing new, still verified.
  auto j = parse_json(run_cli({"copy", db.url(), other.url(), "--json", "--quiet"}).out);
  CHECK(j["match"] == true);
  CHECK(j["inserted"] == 0);
  CHECK(j["rows_by_type"]["message"] == 7);
  bool saw_message = false;
  for (const auto& t : j["tables"]) {
    CHECK(t["match"] == true);
    if (t["type"] == "message") {
      saw_message = true;
      CHECK(t["source_rows"] == 7);
      CHECK(t["target_rows"] == 7);
      CHECK(t["source_sha256"] == t["target_sha256"]);
    }
  }
  CHECK(saw_message);

  // A target with a row the source lacks: the check fails, exit 1.
  {
    auto store = other.open();
    store.conversations().upsert_user({"web", "carol"});
  }
  auto bad = run_cli({"copy", db.url(), other.url(), "--quiet"});
  CHECK(bad.status == 1);
  CHECK(in_order(bad.out, {"user", "2", "3", "DIFFERS"}));
  CHECK(contains(bad.out, "NOT verified"));
  CHECK(bad.err.rfind("convstore: error: ", 0) == 0);
  CHECK(contains(bad.err, "users differ"));
  auto bad_json = run_cli({"copy", db.url(), other.url(), "--quiet", "--json"});
  CHECK(bad_json.status == 1);
  CHECK(parse_json(bad_json.out)["match"] == false);
}

TEST_CASE_TEMPLATE("backup writes a SQLite file that opens; PostgreSQL points to pg_dump", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  TempDir dir;
  {
    auto store = db.open();
    seed(store);
  }
  const std::string file = dir.file("backup.db");
  auto r = run_cli({"backup", db.url(), file});
  if (std::string(B::name) == "postgresql") {
    check_error(r, 1, "pg_dump");
    CHECK_FALSE(std::filesystem::exists(file));
    return;
  }
  CHECK(r.status == 0);
  CHECK(contains(r.out, "backed up"));
  CHECK(contains(r.err, "pages"));
  REQUIRE(std::filesystem::exists(file));
  CHECK(counts("sqlite:" + file) == counts(db.url()));
  auto show = run_cli({"show", "sqlite:" + file, "sess-abc"});
  CHECK(show.status == 0);
  CHECK(contains(show.out, "Saved: coffee, 300."));

  auto j = parse_json(run_cli({"backup", db.url(), dir.file("b2.db"), "--json", "--quiet"}).out);
  CHECK(j["bytes"].get<std::int64_t>() > 0);
  CHECK(counts("sqlite:" + dir.file("b2.db")) == counts(db.url()));
}

TEST_CASE_TEMPLATE("search prints ranked hits with highlighted snippets, filtered", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  ConversationId id = 0;
  UserId alice = 0;
  {
    auto store = db.open();
    id = seed(store);
    alice = store.conversations().find_user("telegram", "1001")->id;
  }
  auto r = run_cli({"search", db.url(), "coffee"});
  CHECK(r.status == 0);
  CHECK(r.err.empty());
  CHECK(contains(r.out, "conversation " + std::to_string(id) + "  #"));
  CHECK(contains(r.out, "] user\n"));
  CHECK(contains(r.out, "] assistant\n"));
  CHECK(contains(r.out, "[coffee] 300"));
  CHECK(contains(r.out, "Saved: [coffee], 300."));
  CHECK_FALSE(contains(r.out, "\033["));  // no terminal: no escape codes
  CHECK(contains(r.out, "\n2 hits\n"));
  CHECK_FALSE(contains(r.out, "croissant\n    "));  // the snippet is one line

  auto j = parse_json(run_cli({"search", db.url(), "coffee", "--json"}).out);
  REQUIRE(j["hits"].size() == 2);
  CHECK(j["more"] == false);
  for (const auto& h : j["hits"]) {
    CHECK(h["conversation_id"] == id);
    CHECK(contains(h["snippet"].get<std::string>(), "[coffee]"));
    CHECK(h["message_id"].get<std::int64_t>() > 0);
    CHECK(parse_timestamp(h["created_at"].get<std::string>()) > Timestamp{});
  }

  auto hits = [&](std::vector<std::string> extra) {
    std::vector<std::string> args = {"search", db.url(), "coffee", "--json"};
    args.insert(args.end(), extra.begin(), extra.end());
    auto out = run_cli(args);
    CHECK(out.status == 0);
    return parse_json(out.out)["hits"];
  };
  auto assistant = hits({"--role", "assistant"});
  REQUIRE(assistant.size() == 1);
  CHECK(assistant[0]["role"] == "assistant");
  CHECK(assistant[0]["snippet"] == "Saved: [coffee], 300.");
  CHECK(hits({"--user", "telegram:1001"}).size() == 2);
  CHECK(hits({"--user", std::to_string(alice)}).size() == 2);
  CHECK(hits({"--user", "web:bob"}).empty());
  CHECK(hits({"--conversation", "sess-abc"}).size() == 2);
  CHECK(hits({"--conversation", std::to_string(id + 1)}).empty());
  CHECK(hits({"--since", "2000-01-01T00:00:00Z"}).size() == 2);
  CHECK(hits({"--until", "2000-01-01T00:00:00Z"}).empty());
  auto one = run_cli({"search", db.url(), "coffee", "--limit", "1"});
  CHECK(one.status == 0);
  CHECK(contains(one.out, "1 hit (more: raise --limit)"));
  CHECK(parse_json(run_cli({"search", db.url(), "coffee", "--limit", "1", "--json"}).out)["more"] ==
        true);

  auto none = run_cli({"search", db.url(), "lemonade"});
  CHECK(none.status == 0);
  CHECK(none.out == "no hits\n");
  auto lyon = parse_json(run_cli({"search", db.url(), "lyon", "--json"}).out)["hits"];
  REQUIRE(lyon.size() == 1);
  CHECK(lyon[0]["snippet"] == "train tickets to [Lyon]");

  check_error(run_cli({"search", db.url(), "coffee", "--user", "telegram:9999"}), 1,
              "'telegram:9999' not found");
  check_error(run_cli({"search", db.url(), "coffee", "--user", "alice"}), 2, "CHANNEL:EXTERNAL_ID");
  check_error(run_cli({"search", db.url(), "coffee", "--conversation", "nope"}), 1,
              "'nope' not found");
  check_error(run_cli({"search", db.url(), "!!!"}), 1, "word");
}

TEST_CASE_TEMPLATE("stats --operations prints the counters of its own calls", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  {
    auto store = db.open();
    seed(store);
  }
  auto plain = run_cli({"stats", db.url()});
  CHECK(plain.status == 0);
  CHECK_FALSE(contains(plain.out, "operations"));
  CHECK_FALSE(parse_json(run_cli({"stats", db.url(), "--json"}).out).contains("operations"));

  auto r = run_cli({"stats", db.url(), "--operations"});
  CHECK(r.status == 0);
  CHECK(in_order(r.out, {"messages:       7", "operations (the calls of this stats command only",
                         "action", "calls", "p99 us", "reading store statistics"}));

  auto j = parse_json(run_cli({"stats", db.url(), "--operations", "--json"}).out);
  REQUIRE(j["operations"].is_array());
  bool saw_stats = false;
  for (const auto& o : j["operations"]) {
    CHECK(o["calls"].get<std::int64_t>() > 0);  // operations never called are left out
    if (o["action"] == "reading store statistics") {
      saw_stats = true;
      CHECK(o["calls"] == 1);
      CHECK(o["errors"] == 0);
    }
  }
  CHECK(saw_stats);
  // The seeding program's calls are not the CLI's: no append is counted.
  for (const auto& o : j["operations"])
    CHECK_FALSE(contains(o["action"].get<std::string>(), "append"));
}

namespace {

// The time the prune tests count ages from (never the wall clock).
const char* const kNow = "2031-03-01T12:00:00Z";

void set_updated(const testing::TestDb& db, ConversationId id, const std::string& iso) {
  testing::raw_exec(db, "UPDATE conversations SET updated_at = '" +
                            to_iso8601(parse_timestamp(iso)) +
                            "' WHERE id = " + std::to_string(id));
}

}  // namespace

TEST_CASE_TEMPLATE("prune: a dry run changes nothing and reports what the real run does", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  ConversationId a = 0, long_one = 0, held = 0;
  {
    auto store = db.open();
    a = seed(store);
    auto& cs = store.conversations();
    auto alice = cs.find_user("telegram", "1001")->id;
    NewConversation nc;
    nc.user_id = alice;
    nc.channel = "telegram";
    nc.agent = "planner";
    long_one = cs.start(nc).id;
    for (int i = 0; i < 3; ++i) {
      cs.append(long_one, testing::text("question " + std::to_string(i)));
      NewMessage r;
      r.role = Role::assistant;
      r.content = "answer " + std::to_string(i);
      cs.append(long_one, r);
    }
    held = cs.start(nc).id;
    cs.append(held, testing::text("keep me"));
    cs.complete(held, "row-9");
    store.retention().hold(held, "litigation 42");
  }
  // seed(): a (active, telegram), b = a + 1 (completed, web), c = a + 2 (active, web).
  const ConversationId b = a + 1, c = a + 2;
  set_updated(db, a, "2031-03-01T11:00:00Z");         // active, an hour ago: kept
  set_updated(db, b, "2031-01-01T00:00:00Z");         // completed, two months ago: removed
  set_updated(db, c, "2031-02-26T12:00:00Z");         // active, idle 3 days: abandoned
  set_updated(db, long_one, "2031-03-01T11:30:00Z");  // 6 messages, trimmed to the last turn
  set_updated(db, held, "2031-01-01T00:00:00Z");      // completed and old, but held

  const std::vector<std::string> policy = {"--completed-older-than", "30d", "--idle-after", "24h",
                                           "--keep-last-messages",   "2",   "--now",        kNow,
                                           "--batch-size",           "1"};
  auto with = [&](std::vector<std::string> args) {
    args.insert(args.end(), policy.begin(), policy.end());
    return args;
  };
  const Json before = counts(db.url());
  CHECK(before["conversations"] == 5);
  CHECK(before["messages"] == 14);

  auto dry = run_cli(with({"prune", db.url(), "--dry-run"}));
  CHECK(dry.status == 0);
  CHECK(contains(dry.out, "retention dry run as of 2031-03-01 12:00:00Z (nothing was changed)"));
  CHECK(in_order(dry.out, {"would be deleted", "1", "2", "would be trimmed", "1", "4",
                           "would be abandoned", "1"}));
  CHECK(contains(dry.err, "checked (dry run) "));
  CHECK(counts(db.url()) == before);
  CHECK(run_cli({"show", db.url(), std::to_string(b)}).status == 0);

  auto dry_json = parse_json(run_cli(with({"prune", db.url(), "--dry-run", "--json"})).out);
  CHECK(dry_json["dry_run"] == true);
  CHECK(dry_json["totals"]["conversations_deleted"] == 1);
  CHECK(dry_json["totals"]["messages_deleted"] == 2);
  CHECK(dry_json["totals"]["conversations_trimmed"] == 1);
  CHECK(dry_json["totals"]["messages_trimmed"] == 4);
  CHECK(dry_json["totals"]["conversations_abandoned"] == 1);
  CHECK(dry_json["by_channel"]["web"]["conversations_deleted"] == 1);
  CHECK(counts(db.url()) == before);

  auto real = run_cli(with({"prune", db.url(), "--json"}));
  CHECK(real.status == 0);
  // One batch per conversation (--batch-size 1): progress lines on stderr.
  CHECK(in_order(real.err, {"pruned ", "conversations (batch "}));
  auto real_json = parse_json(real.out);
  CHECK(real_json["dry_run"] == false);
  CHECK(real_json["totals"] == dry_json["totals"]);
  CHECK(real_json["by_channel"] == dry_json["by_channel"]);
  CHECK(real_json["by_agent"] == dry_json["by_agent"]);

  auto after = counts(db.url());
  CHECK(after["conversations"] == 4);
  CHECK(after["messages"] == 14 - 2 - 4);
  CHECK(after["abandoned"] == 1);
  CHECK(after["completed"] == 1);  // the held one
  check_error(run_cli({"show", db.url(), std::to_string(b)}), 1, "not found");
  auto trimmed = parse_json(run_cli({"show", db.url(), std::to_string(long_one), "--json"}).out);
  REQUIRE(trimmed["messages"].size() == 2);
  CHECK(trimmed["messages"][0]["content"] == "question 2");
  CHECK(trimmed["messages"][1]["content"] == "answer 2");
  CHECK(contains(run_cli({"show", db.url(), std::to_string(held)}).out, "keep me"));

  // Nothing left to do.
  auto again = run_cli(with({"prune", db.url()}));
  CHECK(again.status == 0);
  CHECK(in_order(again.out, {"deleted", "0", "0", "trimmed", "0", "0", "abandoned", "0"}));
  check_error(run_cli({"prune", db.url(), "--idle-after", "1h", "--now", "soon"}), 2, "soon");
  check_error(run_cli({"prune", db.url(), "--archive", "--idle-after", "1h"}), 2,
              "--completed-older-than");
}

TEST_CASE_TEMPLATE("prune --archive moves old completed conversations out", B, CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  ConversationId a = 0;
  {
    auto store = db.open();
    a = seed(store);
  }
  set_updated(db, a + 1, "2031-01-01T00:00:00Z");
  auto r = run_cli(
      {"prune", db.url(), "--completed-older-than", "30d", "--archive", "--now", kNow, "--quiet"});
  CHECK(r.status == 0);
  CHECK(r.err.empty());
  CHECK(in_order(r.out, {"archived", "1", "2"}));
  CHECK(testing::raw_exec(db, "SELECT COUNT(*) FROM archived_messages") == "2");
  check_error(run_cli({"show", db.url(), std::to_string(a + 1)}), 1, "not found");
}

TEST_CASE_TEMPLATE("forget-user removes the user and prints the receipt", B, CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  {
    auto store = db.open();
    seed(store);
  }
  auto r = run_cli({"forget-user", db.url(), "telegram", "1001"});
  CHECK(r.status == 0);
  CHECK(r.err.empty());
  CHECK(contains(r.out, "forgot user "));
  CHECK(contains(r.out, "(telegram:1001): 5 rows removed"));  // 1 user, 1 conversation, 3 messages
  CHECK(in_order(r.out, {"conversations", "1", "messages", "3", "users", "1"}));

  auto after = counts(db.url());
  CHECK(after["users"] == 1);
  CHECK(after["conversations"] == 2);
  CHECK(after["messages"] == 4);
  check_error(run_cli({"show", db.url(), "sess-abc"}), 1, "'sess-abc' not found");
  CHECK(parse_json(run_cli({"search", db.url(), "coffee", "--json"}).out)["hits"].empty());

  // Again: the user is gone.
  check_error(run_cli({"forget-user", db.url(), "telegram", "1001"}), 1,
              "no user '1001' on channel 'telegram'");

  // A user under a legal hold is refused; nothing removed.
  {
    auto store = db.open();
    auto bob = store.conversations().find_user("web", "bob")->id;
    store.retention().hold_user(bob, "audit 7");
  }
  check_error(run_cli({"forget-user", db.url(), "web", "bob"}), 1, "hold");
  CHECK(counts(db.url()) == after);
  {
    auto store = db.open();
    store.retention().release_user(store.conversations().find_user("web", "bob")->id);
  }
  auto j = parse_json(run_cli({"forget-user", db.url(), "web", "bob", "--json"}).out);
  CHECK(j["channel"] == "web");
  CHECK(j["rows"]["users"] == 1);
  CHECK(j["rows"]["conversations"] == 2);
  CHECK(j["rows"]["messages"] == 4);
  CHECK(j["total"].get<std::int64_t>() >= 7);
  CHECK(counts(db.url())["users"] == 0);
}

TEST_CASE_TEMPLATE("stats prints storage per channel and per agent", B, CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  {
    auto store = db.open();
    seed(store);
  }
  auto r = run_cli({"stats", db.url()});
  CHECK(r.status == 0);
  CHECK(in_order(r.out, {"per channel:", "conversations", "content bytes", "telegram", "1", "1",
                         "0", "3", "per agent:", "(none)", "3"}));
  auto j = parse_json(run_cli({"stats", db.url(), "--json"}).out);
  REQUIRE(j["by_channel"].size() == 2);
  CHECK(j["by_channel"][0]["group"] == "telegram");
  CHECK(j["by_channel"][0]["messages"] == 3);
  CHECK(j["by_channel"][1]["group"] == "web");
  CHECK(j["by_channel"][1]["conversations"] == 2);
  CHECK(j["by_channel"][1]["completed"] == 1);
  CHECK(j["by_channel"][1]["messages"] == 4);
  // "train tickets to Lyon", "and a hotel", "tea 120", "biscuits 80"
  CHECK(j["by_channel"][1]["content_bytes"] == 21 + 11 + 7 + 11);
  REQUIRE(j["by_agent"].size() == 1);
  CHECK(j["by_agent"][0]["group"] == "");
  CHECK(j["by_agent"][0]["conversations"] == 3);
}
