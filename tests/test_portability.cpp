// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#include <fmt/format.h>

#include <algorithm>
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

  // Operation templates: owned and shared, used a different number of times
  // (the list's order), none used.
  auto& tp = s.templates();
  NewOperationTemplate ot;
  ot.kind = "expense";
  ot.name = "coffee ☕";
  ot.sample_input = "coffee 4.50 \"Zürich\"";
  ot.expected_output = Json{{"amount", 4.5}, {"category", "food"}};
  ot.user_id = alice.id;
  auto owned = tp.add(ot);
  ot.user_id.reset();
  ot.name = "taxi";
  ot.expected_output = Json::array({1, "two", nullptr});
  auto taxi = tp.add(ot);
  ot.name = "never used";
  tp.add(ot);
  tp.record_use(taxi.id);
  tp.record_use(taxi.id);
  tp.record_use(owned.id);

  // Retention: an anonymized conversation, a held one, a held user and an
  // archived conversation (created last: its ids are the largest, which an
  // import must not hand out again). Their last activity is set to a fixed
  // time; the runs' `now` is a month later.
  auto old_completed = [&](const char* channel, std::optional<UserId> user, const char* text) {
    NewConversation n;
    n.channel = channel;
    n.user_id = user;
    n.title = "to be blanked";
    auto c = cs.start(n);
    cs.append(c.id, testing::text(text));
    cs.set_status(c.id, ConversationStatus::completed);
    return c.id;
  };
  const auto anon = old_completed("anon", bob.id, "anonymize me");
  const auto held = old_completed("archive", alice.id, "held back");
  User carol = cs.upsert_user(UserUpsert("web", "carol"));
  s.retention().hold(held, "litigation 12 ⚖");
  s.retention().hold_user(carol.id, "subpoena");
  const auto archived = old_completed("archive", alice.id, "archive me \u00e9");
  NewMessage am2 = testing::text("second archived");
  am2.role = Role::assistant;
  am2.tool_args = Json{{"a", 1}};
  cs.append(archived, am2);
  cs.save_data(archived, DataKind::complete, Json{{"amount", 42}});
  auto aq = cs.ask(archived, NewQuestion("planner", "How much?", Json::array({"amount"})));
  cs.answer(aq.id, std::string("42"));
  cs.ask(archived, NewQuestion("planner", "Unanswered?"));
  for (auto c : {anon, held, archived}) {
    testing::raw_exec(db,
                      "UPDATE conversations SET updated_at = '2029-01-01T00:00:00Z' WHERE id = " +
                          std::to_string(c));
  }
  RetentionPolicy p;
  p.completed_older_than = std::chrono::hours(24 * 7);
  p.completed_action = RetentionAction::anonymize;
  p.channel = "anon";
  RetentionRun run;
  run.now = at("2029-02-01T00:00:00Z");
  REQUIRE(s.retention().run(p, run).totals.conversations_anonymized == 1);
  p.completed_action = RetentionAction::archive;
  p.channel = "archive";
  REQUIRE(s.retention().run(p, run).totals.conversations_archived == 1);
}

// The retention run of the seed (archive, channel "archive").
RetentionReport archive_old(Store& s) {
  RetentionPolicy p;
  p.completed_older_than = std::chrono::hours(24 * 7);
  p.completed_action = RetentionAction::archive;
  p.channel = "archive";
  RetentionRun run;
  run.now = at("2029-02-01T00:00:00Z");
  return s.retention().run(p, run);
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
  CHECK(rows_of(report.rows_by_type, "user") == 3);
  CHECK(rows_of(report.rows_by_type, "message") == 5);
  CHECK(rows_of(report.rows_by_type, "agent_state") == 2);
  CHECK(rows_of(report.rows_by_type, "agent_state_history") == 3);
  CHECK(rows_of(report.rows_by_type, "calendar_event") == 3);
  CHECK(rows_of(report.rows_by_type, "web_session") == 2);
  CHECK(rows_of(report.rows_by_type, "review_item") == 1);
  CHECK(rows_of(report.rows_by_type, "task_schedule") == 1);
  CHECK(rows_of(report.rows_by_type, "legal_hold") == 2);
  CHECK(rows_of(report.rows_by_type, "archived_conversation") == 1);
  CHECK(rows_of(report.rows_by_type, "archived_message") == 2);
  CHECK(rows_of(report.rows_by_type, "archived_data_snapshot") == 1);
  CHECK(rows_of(report.rows_by_type, "archived_question") == 2);
  CHECK(rows_of(report.rows_by_type, "operation_template") == 3);
  CHECK(rows_of(report.rows_by_type, "conversation") == 4);  // c1, c2, anonymized, held
  CHECK(first.find(R"("anonymized_at":"2029-02-01T00:00:00.000000Z")") != std::string::npos);
  CHECK(first.find(R"("archived_at":"2029-02-01T00:00:00.000000Z")") != std::string::npos);
  // The generated search column (PostgreSQL) is no field.
  CHECK(first.find(R"(,"search":)") == std::string::npos);
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
  // ... and after the archived ones, which were the largest.
  auto archived = lines_of(first);
  long long archived_conv = 0, archived_msg = 0, archived_data = 0, archived_question = 0;
  for (const auto& l : archived) {
    auto id_of = [&](const char* type, long long& id) {
      if (l.rfind(fmt::format(R"({{"type":"{}",)", type), 0) == 0) {
        id = std::max(id, Json::parse(l)["id"].get<long long>());
      }
    };
    id_of("archived_conversation", archived_conv);
    id_of("archived_message", archived_msg);
    id_of("archived_data_snapshot", archived_data);
    id_of("archived_question", archived_question);
  }
  REQUIRE(archived_conv > conv->id);
  CHECK(c3.id > archived_conv);
  CHECK(m.id > archived_msg);
  auto d = t.conversations().save_data(c3.id, DataKind::partial, Json{{"x", 1}});
  CHECK(d.id > archived_data);
  CHECK(t.conversations().ask(c3.id, NewQuestion("planner", "new?")).id > archived_question);

  // The imported holds are respected: the held conversation qualifies for
  // the archive but stays, and the held user cannot be forgotten.
  REQUIRE(t.retention().holds().size() == 2);
  const auto held_id = *t.retention().holds().at(0).conversation_id;
  CHECK(t.retention().is_held(held_id));
  auto r2 = archive_old(t);
  CHECK(r2.totals.conversations_archived == 0);
  CHECK(t.conversations().get(held_id).has_value());
  auto carol = t.conversations().find_user("web", "carol");
  REQUIRE(carol.has_value());
  CHECK_ERROR_CODE(t.retention().forget_user(carol->id), ErrorCode::failed_precondition);
  // A new hold gets an id after the imported ones.
  CHECK(t.retention().hold(c3.id, "new").id > t.retention().holds().at(1).id);
  // Released, it is archived like in the source.
  CHECK(t.retention().release(held_id));
  CHECK(archive_old(t).totals.conversations_archived == 1);
  CHECK_FALSE(t.conversations().get(held_id).has_value());

  // The templates list in the same order, with their counts.
  for (std::optional<UserId> who : {std::optional<UserId>(), std::optional<UserId>(user->id)}) {
    auto a = s.templates().list("expense", who);
    auto b = t.templates().list("expense", who);
    REQUIRE(a.size() == 3);
    REQUIRE(b.size() == a.size());
    for (std::size_t i = 0; i < a.size(); ++i) {
      CHECK(b[i].id == a[i].id);
      CHECK(b[i].name == a[i].name);
      CHECK(b[i].use_count == a[i].use_count);
      CHECK(b[i].user_id == a[i].user_id);
      CHECK(b[i].expected_output == a[i].expected_output);
    }
    CHECK(b[0].name == "taxi");
    CHECK(b[0].use_count == 2);
  }
  // A new template gets an id after the imported ones; a name taken stays taken.
  NewOperationTemplate nt;
  nt.kind = "expense";
  nt.name = "new";
  nt.expected_output = Json::object();
  TemplateId largest = 0;
  for (const auto& x : s.templates().list("expense")) largest = std::max(largest, x.id);
  CHECK(t.templates().add(nt).id > largest);
  nt.name = "taxi";
  CHECK_ERROR_CODE(t.templates().add(nt), ErrorCode::already_exists);
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

TEST_CASE_TEMPLATE("Portability: retention and template records: references and conflicts", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto s = db.open();
  // A file of an older library: conversations without anonymized_at.
  auto base = lines_of(small_file());
  REQUIRE(base[2].find("anonymized_at") == std::string::npos);
  const std::string ts = R"("2029-01-01T00:00:00.000000Z")";
  // An archived conversation keeps the id of a user who is gone (999): not a
  // reference. Its rows refer to it.
  base.push_back(
      R"({"type":"legal_hold","id":3,"conversation_id":5,"user_id":null,"reason":"r","created_at":)" +
      ts + "}");
  base.push_back(
      R"({"type":"archived_conversation","id":4,"key":null,"user_id":999,"channel":"c","chat_id":null,"agent":null,"kind":null,"title":"t","active_agent":null,"status":"completed","model_override":null,"external_ref":null,"message_count":1,"version":3,"fence":0,"last_message_at":null,"metadata":{},"created_at":)" +
      ts + R"(,"updated_at":)" + ts + R"(,"anonymized_at":null,"archived_at":)" + ts + "}");
  base.push_back(
      R"({"type":"archived_message","id":9,"conversation_id":4,"role":"user","kind":"text","content":"old","agent":null,"model":null,"token_count":null,"tool_name":null,"tool_args":null,"tool_call_id":null,"platform_message_id":null,"reply_to_platform_id":null,"client_key":null,"complete":true,"metadata":{},"created_at":)" +
      ts + R"(,"updated_at":)" + ts + R"(,"archived_at":)" + ts + "}");
  base.push_back(
      R"({"type":"archived_data_snapshot","id":2,"conversation_id":4,"kind":"complete","data":{"a":1},"created_at":)" +
      ts + R"(,"archived_at":)" + ts + "}");
  base.push_back(
      R"({"type":"archived_question","id":2,"conversation_id":4,"agent":"a","question":"q?","missing_fields":[],"platform_message_id":null,"asked_at":)" +
      ts + R"(,"answered_at":null,"answer":null,"archived_at":)" + ts + "}");
  base.push_back(
      R"({"type":"operation_template","id":6,"user_id":7,"kind":"expense","name":"coffee","sample_input":"coffee 3","expected_output":{"amount":3},"use_count":2,"last_used_at":)" +
      ts + R"(,"created_at":)" + ts + R"(,"updated_at":)" + ts + "}");
  const std::string file = join(base);
  auto r = import_text(s, file);
  CHECK(r.inserted == 10);
  CHECK(rows_of(r.inserted_by_type, "archived_message") == 1);
  CHECK(s.retention().is_held(5));
  REQUIRE(s.templates().get(6).has_value());
  CHECK(s.templates().get(6)->use_count == 2);
  CHECK(count(db, "archived_conversations") == "1");
  // Idempotent, archived rows (no unique key in the database) included.
  auto again = import_text(s, file);
  CHECK(again.inserted == 0);
  CHECK(again.unchanged == 10);
  CHECK(count(db, "archived_messages") == "1");
  const std::string exported = export_text(s);

  // Other content under a stored key: a conflict naming the record.
  struct Case {
    std::size_t line;  // 0-based index into base
    const char* field;
    Json value;
    const char* names;
  };
  for (const Case& c : {Case{5, "reason", "other", "legal_hold 3"},
                        Case{6, "title", "other", "archived_conversation 4"},
                        Case{7, "content", "other", "archived_message 9"},
                        Case{8, "data", Json::object(), "archived_data_snapshot 2"},
                        Case{9, "answer", "late", "archived_question 2"},
                        Case{10, "use_count", 3, "operation_template 6"}}) {
    CAPTURE(c.names);
    auto lines = base;
    auto j = Json::parse(lines[c.line]);
    j[c.field] = c.value;
    lines[c.line] = j.dump();
    try {
      import_text(s, join(lines));
      FAIL("no error");
    } catch (const Error& e) {
      CHECK(e.code() == ErrorCode::conflict);
      std::string what = e.what();
      CHECK_MESSAGE(what.find(fmt::format("line {}: {}", c.line + 1, c.names)) != std::string::npos,
                    what);
    }
    // The same key twice in one file, with different content.
    testing::TestDb fresh(B::name);
    auto f = fresh.open();
    auto twice = base;
    twice.push_back(lines[c.line]);
    CHECK_ERROR_CODE(import_text(f, join(twice)), ErrorCode::conflict);
    CHECK(count(fresh, "archived_messages") == "0");
  }
  CHECK(export_text(s) == exported);

  // References: a hold on a conversation or user that is not there, an
  // archived row without its archived conversation, a template of an
  // unknown user; a hold on neither is refused by the database.
  testing::TestDb db2(B::name);
  auto t = db2.open();
  auto with = [&](std::size_t line, const char* field, Json v) {
    auto lines = base;
    auto j = Json::parse(lines[line]);
    j[field] = v;
    lines[line] = j.dump();
    return join(lines);
  };
  const std::vector<std::pair<std::string, const char*>> bad{
      {with(5, "conversation_id", 998), "refers to conversation 998"},
      {with(5, "user_id", 998), "refers to user 998"},
      {with(7, "conversation_id", 5), "refers to archived_conversation 5"},
      {with(8, "conversation_id", 998), "refers to archived_conversation 998"},
      {with(9, "conversation_id", 998), "refers to archived_conversation 998"},
      {with(10, "user_id", 998), "refers to user 998"},
      {with(5, "conversation_id", nullptr), "refused by the database"},
  };
  for (const auto& [text, reason] : bad) {
    CAPTURE(reason);
    try {
      import_text(t, text);
      FAIL("no error");
    } catch (const Error& e) {
      CHECK_MESSAGE(std::string(e.what()).find(reason) != std::string::npos, e.what());
    }
    CHECK(count(db2, "conversations") == "0");
    CHECK(count(db2, "archived_conversations") == "0");
  }
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
