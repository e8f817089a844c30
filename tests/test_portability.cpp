// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#include <fmt/format.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <sqlite3.h>

#include "support.hpp"

using namespace convstore;
using namespace std::chrono_literals;

namespace {

Timestamp at(const char* iso) { return parse_timestamp(iso); }

// Rows in every exported type, with edge values: unicode, escapes, JSON
// metadata, NULL and non-NULL optional fields, a recurring event with a
// cancelled and a moved occurrence.
void seed(Store& s, const testing::TestDb& db) {
  auto& cs = s.conversations();
  UserUpsert u("telegram", "42");
  u.username = "ünïcødé 🙂";
  u.display_name = "Quote \" backslash \\ tab \t newline \n end";
  u.metadata = Json{{"tier", "gold"}, {"nested", {{"a", Json::array({1, 2.5, nullptr})}}}};
  User alice = cs.upsert_user(u);
  User bob = cs.upsert_user(UserUpsert("web", "bob"));  // optional fields NULL
  cs.set_channel_config("telegram", "gpt-4o", Json{{"max_tokens", 1024}});

  NewConversation nc;
  nc.user_id = alice.id;
  nc.channel = "telegram";
  nc.key = "tg:42";
  nc.title = "日本語のタイトル";
  nc.metadata = Json{{"source", "test"}};
  Conversation c1 = cs.start(nc);
  NewConversation nc2;
  nc2.channel = "web";  // no user, no key
  Conversation c2 = cs.start(nc2);

  NewMessage m1 = testing::text("hello \u00e9\u4e16\u754c \U0001F600");
  m1.platform_message_id = "p1";
  m1.client_key = "ck1";
  cs.append(c1.id, m1);
  NewMessage m2;
  m2.role = Role::assistant;
  m2.kind = MessageKind::tool_call;
  m2.content = "";
  m2.tool_name = "search";
  m2.tool_args = Json{{"q", "x\"y"}, {"n", 3}};
  m2.tool_call_id = "call-1";
  m2.token_count = 17;
  m2.model = "gpt-4o";
  m2.metadata = Json{{"latency_ms", 12.5}};
  cs.append(c1.id, m2);
  NewMessage m3 = testing::text("streaming...");
  m3.complete = false;
  m3.role = Role::assistant;
  cs.append(c2.id, m3);
  cs.save_data(c1.id, DataKind::partial, Json{{"city", "Zürich"}});
  auto q = cs.ask(c1.id, NewQuestion("planner", "Which date?", Json::array({"date"})));
  cs.answer(q.id, std::string("tomorrow"));
  cs.ask(c2.id, NewQuestion("planner", "Open question?"));

  NewAgent a;
  a.id = "planner";
  a.name = "Planner";
  a.tools = {"search", "calendar"};
  a.config = Json{{"temperature", 0.2}};
  s.agents().create_agent(a);
  s.agents().save_state(StateScope::conversation(c1.id), "planner", Json{{"step", 1}});
  s.agents().save_state(StateScope::conversation(c1.id), "planner", Json{{"step", 2}});
  s.agents().save_state(StateScope::named("global"), "planner", Json{{"k", "v"}});

  NewEvent e;
  e.owner = alice.id;
  e.title = "Weekly sync";
  e.description = "Room \"A\"";
  e.start = at("2030-01-07T09:00:00Z");
  e.end = at("2030-01-07T10:00:00Z");
  e.time_zone = "Europe/Berlin";
  e.rrule = "FREQ=WEEKLY;COUNT=10";
  e.exdates = {at("2030-01-14T09:00:00Z")};
  auto series = s.calendar().create(e);
  EventUpdate move;
  move.start = at("2030-01-21T11:00:00Z");
  move.end = at("2030-01-21T13:00:00Z");
  move.title = "Weekly sync (moved)";
  s.calendar().modify_occurrence(series.id, at("2030-01-21T09:00:00Z"), move);
  NewEvent shared;
  shared.title = "Shared all-day";
  shared.all_day = true;
  shared.start_day = "2030-02-01";
  shared.end_day = "2030-02-03";
  s.calendar().create(shared);

  // The newer tables, written as an SQL tool would.
  const auto id = [](long long v) { return std::to_string(v); };
  testing::raw_exec(
      db,
      "INSERT INTO web_sessions (id, user_id, family_id, rotated_from, access_hash, "
      "refresh_hash, access_expires_at, refresh_expires_at, status, metadata, device_info, "
      "created_at, updated_at, revoked_at, revoke_reason) VALUES (1, " +
          id(alice.id) +
          ", 1, NULL, 'a1', 'r1', '2030-01-01T00:00:00.000000Z', "
          "'2030-02-01T00:00:00.000000Z', 'authenticated', '{\"ip\":\"::1\"}', '{}', "
          "'2029-12-01T00:00:00.000001Z', '2029-12-01T00:00:00.000001Z', "
          "'2029-12-02T00:00:00Z', 'rotated')");
  testing::raw_exec(
      db,
      "INSERT INTO web_sessions (id, user_id, family_id, rotated_from, access_hash, "
      "refresh_hash, access_expires_at, refresh_expires_at, status, created_at, updated_at) "
      "VALUES (2, " +
          id(alice.id) +
          ", 1, 1, 'a2', 'r2', '2030-01-01T00:00:00Z', '2030-02-01T00:00:00Z', 'pending', "
          "'2029-12-02T00:00:00Z', '2029-12-02T00:00:00Z')");
  testing::raw_exec(db,
                    "INSERT INTO credentials (user_id, name, algorithm, key_id, nonce, ciphertext, "
                    "created_at, updated_at) VALUES (" +
                        id(bob.id) +
                        ", 'api', 'xchacha20poly1305', 'k1', 'bm9uY2U=', 'c2VhbGVk', "
                        "'2029-12-01T00:00:00Z', '2029-12-01T00:00:00Z')");
  testing::raw_exec(db,
                    "INSERT INTO dialogs (conversation_id, type, last_message_id, last_message_at, "
                    "created_at, updated_at) VALUES (" +
                        id(c1.id) +
                        ", 'private', 'p1', '2029-12-01T00:00:00Z', '2029-12-01T00:00:00Z', "
                        "'2029-12-01T00:00:00Z')");
  testing::raw_exec(db,
                    "INSERT INTO review_items (conversation_id, user_id, answers_message_id, "
                    "answers_message_at, suggested_text, status, created_at, updated_at) VALUES (" +
                        id(c1.id) + ", " + id(alice.id) +
                        ", 'p1', '2029-12-01T00:00:00Z', 'Sure — see you ✓', "
                        "'pending_approval', '2029-12-01T00:00:00Z', '2029-12-01T00:00:00Z')");
  testing::raw_exec(db,
                    "INSERT INTO tasks (type, priority, status, payload, result, run_at, "
                    "max_attempts, created_at, updated_at) VALUES ('email', 2, 'completed', "
                    "'{\"to\":\"a@b\"}', '[1,2]', '2029-12-01T00:00:00Z', 3, "
                    "'2029-12-01T00:00:00Z', '2029-12-01T00:00:00Z')");
  testing::raw_exec(db,
                    "INSERT INTO task_schedules (name, type, priority, payload, max_attempts, "
                    "interval_ms, anchor, next_run_at, created_at, updated_at) VALUES ('nightly', "
                    "'cleanup', 1, '{}', 3, 86400000, '2029-12-01T00:00:00Z', "
                    "'2029-12-02T00:00:00Z', '2029-12-01T00:00:00Z', '2029-12-01T00:00:00Z')");
}

std::string export_text(Store& s, ExportReport* report = nullptr) {
  std::ostringstream out;
  auto r = export_jsonl(s, out);
  if (report != nullptr) *report = r;
  return out.str();
}

ImportReport import_text(Store& s, const std::string& text, ImportOptions o = {}) {
  std::istringstream in(text);
  return import_jsonl(s, in, o);
}

std::int64_t rows_of(const std::vector<TypeCount>& counts, const std::string& type) {
  for (const auto& c : counts) {
    if (c.type == type) return c.rows;
  }
  return -1;
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  std::string l;
  while (std::getline(in, l)) out.push_back(l);
  return out;
}

std::string join(const std::vector<std::string>& lines) {
  std::string s;
  for (const auto& l : lines) s += l + "\n";
  return s;
}

// A small valid file: a user, a conversation, two messages.
std::string small_file() {
  return join({
      R"({"format":"convstore","version":1,"schema_version":9})",
      R"({"type":"user","id":7,"channel":"c","external_id":"x","username":null,"display_name":null,"preferred_model":null,"system_prompt":null,"time_zone":"UTC","metadata":{},"created_at":"2029-01-01T00:00:00.000000Z","updated_at":"2029-01-01T00:00:00.000000Z"})",
      R"({"type":"conversation","id":5,"key":null,"user_id":7,"channel":"c","chat_id":null,"agent":null,"kind":null,"title":null,"active_agent":null,"status":"active","model_override":null,"external_ref":null,"message_count":2,"version":2,"fence":0,"last_message_at":null,"metadata":{},"created_at":"2029-01-01T00:00:00.000000Z","updated_at":"2029-01-01T00:00:00.000000Z"})",
      R"({"type":"message","id":10,"conversation_id":5,"role":"user","kind":"text","content":"one","agent":null,"model":null,"token_count":null,"tool_name":null,"tool_args":null,"tool_call_id":null,"platform_message_id":null,"reply_to_platform_id":null,"client_key":null,"complete":true,"metadata":{},"created_at":"2029-01-01T00:00:00.000000Z","updated_at":"2029-01-01T00:00:00.000000Z"})",
      R"({"type":"message","id":11,"conversation_id":5,"role":"assistant","kind":"text","content":"two","agent":null,"model":null,"token_count":3,"tool_name":null,"tool_args":null,"tool_call_id":null,"platform_message_id":null,"reply_to_platform_id":null,"client_key":null,"complete":true,"metadata":{"k":1},"created_at":"2029-01-01T00:00:01.000000Z","updated_at":"2029-01-01T00:00:01.000000Z"})",
  });
}

std::string count(const testing::TestDb& db, const std::string& table) {
  return testing::raw_exec(db, "SELECT COUNT(*) FROM " + table);
}

}  // namespace

TEST_CASE_TEMPLATE("Portability: export then import into an empty store gives the same file", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto s = db.open();
  seed(s, db);
  ExportReport report;
  std::string first = export_text(s, &report);
  auto lines = lines_of(first);
  REQUIRE(lines.size() > 1);
  CHECK(lines[0] == fmt::format(R"({{"format":"convstore","version":1,"schema_version":{}}})",
                                s.schema_version()));
  CHECK(report.rows == static_cast<std::int64_t>(lines.size()) - 1);
  CHECK(rows_of(report.rows_by_type, "user") == 2);
  CHECK(rows_of(report.rows_by_type, "message") == 3);
  CHECK(rows_of(report.rows_by_type, "agent_state") == 2);
  CHECK(rows_of(report.rows_by_type, "agent_state_history") == 3);
  CHECK(rows_of(report.rows_by_type, "calendar_event") == 3);
  CHECK(rows_of(report.rows_by_type, "web_session") == 2);
  CHECK(rows_of(report.rows_by_type, "review_item") == 1);
  CHECK(rows_of(report.rows_by_type, "task_schedule") == 1);
  // Every line is JSON with its type first; times are precise.
  for (std::size_t i = 1; i < lines.size(); ++i) {
    auto j = Json::parse(lines[i]);
    CHECK(j.is_object());
    CHECK(lines[i].rfind("{\"type\":", 0) == 0);
  }
  CHECK(first.find(R"("created_at":"2029-12-01T00:00:00.000001Z")") != std::string::npos);
  CHECK(first.find("\"rrule\":\"FREQ=WEEKLY;COUNT=10\"") != std::string::npos);

  testing::TestDb db2(B::name);
  auto t = db2.open();
  auto imported = import_text(t, first);
  CHECK(imported.inserted == report.rows);
  CHECK(imported.unchanged == 0);
  CHECK(imported.skipped.empty());
  CHECK(export_text(t) == first);

  // The imported data works through the stores.
  auto user = t.conversations().find_user("telegram", "42");
  REQUIRE(user.has_value());
  CHECK(*user->username == "ünïcødé 🙂");
  CHECK(user->metadata["nested"]["a"][1] == 2.5);
  auto conv = t.conversations().find("tg:42");
  REQUIRE(conv.has_value());
  auto history = t.conversations().history(conv->id);
  REQUIRE(history.size() == 2);
  CHECK(history[1].tool_args["q"] == "x\"y");
  CHECK(t.agents().load_state(StateScope::conversation(conv->id), "planner")["step"] == 2);
  CHECK(t.agents().state_history(StateScope::conversation(conv->id), "planner").size() == 2);
  // The series keeps its rule, its cancelled and its moved occurrence.
  auto series = t.calendar().find_by_uid(
      s.calendar()
          .range(user->id, at("2030-01-01T00:00:00Z"), at("2030-01-08T00:00:00Z"))
          .items.at(0)
          .uid);
  REQUIRE(series.has_value());
  auto occ =
      t.calendar().occurrences(series->id, at("2030-01-01T00:00:00Z"), at("2030-02-01T00:00:00Z"));
  REQUIRE(occ.size() == 3);  // 7th, (14th cancelled), 21st moved, 28th
  CHECK(occ[1].title == "Weekly sync (moved)");
  CHECK(occ[1].start == at("2030-01-21T11:00:00Z"));
  // The overlap index knows the imported events (the moved one is 2 h long).
  auto r = t.calendar().range(user->id, at("2030-01-21T12:30:00Z"), at("2030-01-21T12:45:00Z"));
  REQUIRE(r.items.size() == 1);
  CHECK(r.items[0].title == "Weekly sync (moved)");
  // New rows get ids after the imported ones (identity sequences moved).
  auto c3 = t.conversations().start(NewConversation{});
  CHECK(c3.id > conv->id);
  auto m = t.conversations().append(c3.id, testing::text("after import"));
  CHECK(m.id > history[1].id);
}

TEST_CASE_TEMPLATE("Portability: importing the same file twice changes nothing", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto s = db.open();
  seed(s, db);
  std::string file = export_text(s);
  testing::TestDb db2(B::name);
  auto t = db2.open();
  auto first = import_text(t, file);
  auto second = import_text(t, file);
  CHECK(second.inserted == 0);
  CHECK(second.unchanged == first.inserted);
  CHECK(export_text(t) == file);
  // Into the store it came from: everything is there already.
  auto again = import_text(s, file);
  CHECK(again.inserted == 0);
  CHECK(export_text(s) == file);

  // A stored row with the same key but other content is a conflict naming
  // the line and the key; nothing is written.
  auto lines = lines_of(file);
  std::size_t msg = 0;
  for (std::size_t i = 0; i < lines.size(); ++i) {
    if (lines[i].rfind(R"({"type":"message")", 0) == 0) {
      msg = i;
      break;
    }
  }
  REQUIRE(msg > 0);
  auto j = Json::parse(lines[msg]);
  j["content"] = "changed";
  lines[msg] = j.dump();
  try {
    import_text(t, join(lines));
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::conflict);
    CHECK(std::string(e.what()).find(fmt::format("line {}", msg + 1)) != std::string::npos);
    CHECK(std::string(e.what()).find(fmt::format("message {}", j["id"].get<long long>())) !=
          std::string::npos);
  }
  CHECK(export_text(t) == file);
}

TEST_CASE_TEMPLATE("Portability: a bad line imports nothing and is named; skip imports the rest", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto s = db.open();
  auto base = lines_of(small_file());
  REQUIRE(base.size() == 5);
  struct Case {
    const char* what;
    std::string line;
    const char* reason;
  };
  auto msg = Json::parse(base[3]);
  auto with = [&](const char* field, Json v) {
    Json j = msg;
    j["id"] = 12;
    if (v.is_discarded()) {
      j.erase(field);
    } else {
      j[field] = v;
    }
    return j.dump();
  };
  std::vector<Case> cases{
      {"bad JSON", R"({"type":"message","id":12,)", "invalid JSON"},
      {"unknown type", R"({"type":"gizmo","id":1})", "unknown type 'gizmo'"},
      {"missing field", with("content", Json(Json::value_t::discarded)), "missing field 'content'"},
      {"wrong type", with("token_count", "three"), "field 'token_count' must be an integer"},
      {"bad timestamp", with("created_at", "yesterday"), "invalid timestamp"},
      {"null in a required field", with("role", nullptr), "must not be null"},
      {"dangling parent", with("conversation_id", 999),
       "refers to conversation 999, which is neither earlier in the file nor stored"},
      {"unknown field", with("colour", "red"), "unknown field 'colour'"},
      {"refused by the database", with("role", "robot"), "refused by the database"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.what);
    auto lines = base;
    lines.insert(lines.begin() + 3, c.line);  // line 4, between the parents and a message
    std::string file = join(lines);
    try {
      import_text(s, file);
      FAIL("no error");
    } catch (const Error& e) {
      std::string what = e.what();
      CHECK_MESSAGE(what.find("line 4:") != std::string::npos, what);
      CHECK_MESSAGE(what.find(c.reason) != std::string::npos, what);
    }
    CHECK(count(db, "users") == "0");
    CHECK(count(db, "messages") == "0");

    ImportOptions skip;
    skip.skip_bad_lines = true;
    auto r = import_text(s, file, skip);
    REQUIRE(r.skipped.size() == 1);
    CHECK(r.skipped[0].line == 4);
    CHECK(r.skipped[0].reason.find(c.reason) != std::string::npos);
    CHECK(r.inserted == 4);
    CHECK(count(db, "messages") == "2");
    testing::raw_exec(db, "DELETE FROM messages");
    testing::raw_exec(db, "DELETE FROM conversations");
    testing::raw_exec(db, "DELETE FROM users");
  }

  // A skipped parent takes its children along; the header is checked.
  ImportOptions skip;
  skip.skip_bad_lines = true;
  auto lines = base;
  lines[2] = lines[2].substr(0, 20);  // the conversation line is broken
  auto r = import_text(s, join(lines), skip);
  CHECK(r.skipped.size() == 3);
  CHECK(r.inserted == 1);
  CHECK_ERROR_CODE(import_text(s, join({R"({"format":"other"})"})), ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(import_text(s, join({R"({"format":"convstore","version":2})"})),
                   ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(import_text(s, ""), ErrorCode::invalid_argument);
}

TEST_CASE_TEMPLATE("Portability: copy between backends, verified", B, CONVSTORE_BACKENDS) {
  // B is the source; the target is the other backend.
  CONVSTORE_TEST_DB(db);
  const char* other = std::string(B::name) == "sqlite" ? "postgresql" : "sqlite";
  testing::TestDb db2(other);
  if (!db2.ready()) return;
  auto from = db.open();
  seed(from, db);
  auto to = db2.open();
  std::vector<Progress> progress;
  CopyOptions o;
  o.batch_size = 2;  // several batches per table
  o.on_progress = [&](const Progress& p) { progress.push_back(p); };
  o.progress_every = 5;
  auto r = copy_store(from, to, o);
  CHECK(r.verification.match);
  std::int64_t total = 0;
  for (const auto& t : r.rows_by_type) total += t.rows;
  CHECK(r.inserted == total);
  for (const auto& t : r.verification.tables) {
    CAPTURE(t.type);
    CHECK(t.source_rows == t.target_rows);
    CHECK(t.source_sha256 == t.target_sha256);
    CHECK(t.source_sha256.size() == 64);
  }
  REQUIRE(!progress.empty());
  CHECK(progress.front().total == total);
  CHECK(export_text(to) == export_text(from));

  // Copying again writes nothing and still verifies.
  auto again = copy_store(from, to);
  CHECK(again.inserted == 0);
  CHECK(again.unchanged == total);

  // A target altered afterwards is reported as a mismatch of that table.
  testing::raw_exec(db2,
                    "UPDATE messages SET content = 'tampered' WHERE id = (SELECT MIN(id) "
                    "FROM messages)");
  auto v = verify_stores(from, to);
  CHECK_FALSE(v.match);
  for (const auto& t : v.tables) {
    CAPTURE(t.type);
    CHECK(t.match() == (t.type != "message"));
    if (t.type == "message") CHECK(t.source_rows == t.target_rows);
  }
  // A copy refuses to overwrite it, naming the row.
  try {
    copy_store(from, to);
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::conflict);
    CHECK(std::string(e.what()).find("message") != std::string::npos);
  }
  // A row only in the target is a mismatch: Error(data_loss).
  testing::raw_exec(db2,
                    "UPDATE messages SET content = 'hello \u00e9\u4e16\u754c \U0001F600' "
                    "WHERE content = 'tampered'");
  CHECK(verify_stores(from, to).match);
  testing::raw_exec(db2,
                    "INSERT INTO channel_configs (channel, default_model, created_at, "
                    "updated_at) VALUES ('extra', 'm', '2029-01-01T00:00:00Z', "
                    "'2029-01-01T00:00:00Z')");
  CHECK_ERROR_CODE(copy_store(from, to), ErrorCode::data_loss);
}

TEST_CASE_TEMPLATE("Portability: export streams in pages and reports progress", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto s = db.open();
  auto c = s.conversations().start(NewConversation{});
  std::vector<NewMessage> batch;
  for (int i = 0; i < 250; ++i) batch.push_back(testing::text("m" + std::to_string(i)));
  s.conversations().append_batch(c.id, batch);
  std::string whole = export_text(s);
  std::ostringstream paged;
  ExportOptions o;
  o.page_size = 7;  // many pages, the last one short
  std::vector<Progress> progress;
  o.on_progress = [&](const Progress& p) { progress.push_back(p); };
  o.progress_every = 100;
  auto r = export_jsonl(s, paged, o);
  CHECK(paged.str() == whole);
  CHECK(r.rows == 251);
  REQUIRE(progress.size() >= 3);
  CHECK(progress.back().done == 251);
  CHECK(progress.back().total == 251);
  // Messages in id order.
  auto lines = lines_of(whole);
  long long last = 0;
  for (const auto& l : lines) {
    auto j = Json::parse(l);
    if (j.value("type", "") != "message") continue;
    CHECK(j["id"].get<long long>() > last);
    last = j["id"].get<long long>();
  }
  ExportOptions zero;
  zero.page_size = 0;
  CHECK_ERROR_CODE(export_jsonl(s, paged, zero), ErrorCode::invalid_argument);
}

TEST_CASE_TEMPLATE("Portability: online backup of a live store", B, CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto s = db.open();
  if (s.backend() == "postgresql") {
    auto dir = std::filesystem::temp_directory_path() / "convstore-pg-backup.db";
    try {
      backup(s, dir.string());
      FAIL("no error");
    } catch (const Error& e) {
      CHECK(e.code() == ErrorCode::not_supported);
      CHECK(std::string(e.what()).find("pg_dump") != std::string::npos);
    }
    CHECK_FALSE(std::filesystem::exists(dir));
    return;
  }
  auto c = s.conversations().start(NewConversation{});
  std::vector<NewMessage> batch;
  for (int i = 0; i < 2000; ++i) {
    batch.push_back(testing::text(std::string(200, 'a' + static_cast<char>(i % 26))));
  }
  s.conversations().append_batch(c.id, batch);  // enough pages for many steps

  std::atomic<bool> stop{false};
  std::atomic<long long> acknowledged{0};  // the newest message id the writer was told about
  std::thread writer([&] {
    while (!stop) {
      auto m = s.conversations().append(c.id, testing::text("live"));
      acknowledged = m.id;
      std::this_thread::sleep_for(200us);
    }
  });
  while (acknowledged == 0) std::this_thread::sleep_for(1ms);
  long long before = acknowledged;
  auto path = std::filesystem::path(db.url().substr(7)).parent_path() / "backup.db";
  BackupOptions o;
  o.pages_per_step = 8;
  int steps = 0;
  o.on_progress = [&](const Progress& p) {
    ++steps;
    CHECK(p.done <= p.total);
    std::this_thread::sleep_for(1ms);  // let the writer write between steps
  };
  backup(s, path.string(), o);
  stop = true;
  writer.join();
  CHECK(steps > 5);
  CHECK_FALSE(std::filesystem::exists(path.string() + ".part"));

  auto b = Store::open("sqlite:" + path.string());
  long long after_backup = 0;
  {
    auto newest = b.conversations().recent(c.id, 1);
    REQUIRE(newest.size() == 1);
    after_backup = newest[0].id;
  }
  CHECK(after_backup >= before);
  // Every message the writer had acknowledged before the backup started.
  for (long long id = 1; id <= before; ++id) {
    if (!b.conversations().get_message(id).has_value()) {
      FAIL("message " << id << " missing from the backup");
      break;
    }
  }
  // Consistent: the file passes integrity_check, and the conversation's
  // counter matches its messages (both written by one transaction).
  sqlite3* raw = nullptr;
  REQUIRE(sqlite3_open_v2(path.string().c_str(), &raw, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK);
  auto first_value = [&](const std::string& sql) {
    std::string v;
    sqlite3_exec(
        raw, sql.c_str(),
        [](void* out, int, char** cols, char**) {
          if (static_cast<std::string*>(out)->empty() && cols[0] != nullptr) {
            *static_cast<std::string*>(out) = cols[0];
          }
          return 0;
        },
        &v, nullptr);
    return v;
  };
  CHECK(first_value("PRAGMA integrity_check") == "ok");
  CHECK(first_value(fmt::format("SELECT (SELECT message_count FROM conversations WHERE id = {0}) "
                                "= (SELECT COUNT(*) FROM messages WHERE conversation_id = {0})",
                                c.id)) == "1");
  sqlite3_close(raw);
}
