// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#include <algorithm>
#include <atomic>
#include <set>
#include <thread>
#include <vector>

#include "support.hpp"

using namespace convstore;

namespace {

NewMessage text(std::string content, Role role = Role::user) {
  NewMessage m;
  m.role = role;
  m.content = std::move(content);
  return m;
}

}  // namespace

// ================================ users ===================================

TEST_CASE_TEMPLATE("users: upsert inserts once per (channel, external id) and updates fields", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& cs = store.conversations();
  UserUpsert u{"telegram", "1001"};
  u.username = "alice";
  u.metadata = {{"lang", "ru"}, {"plan", {{"tier", "free"}}}};
  User a = cs.upsert_user(u);
  CHECK(a.id > 0);
  CHECK(a.username == "alice");
  CHECK(a.time_zone == "UTC");
  CHECK(a.metadata["lang"] == "ru");

  UserUpsert again{"telegram", "1001"};
  again.preferred_model = "gpt-4o";
  again.metadata = {{"plan", {{"tier", "pro"}}}, {"lang", nullptr}};
  User b = cs.upsert_user(again);
  CHECK(b.id == a.id);
  CHECK(b.username == "alice");  // kept
  CHECK(b.preferred_model == "gpt-4o");
  CHECK(b.metadata == Json{{"plan", {{"tier", "pro"}}}});  // RFC 7396 merge
  CHECK(b.updated_at >= a.updated_at);

  User other = cs.upsert_user({"discord", "1001"});
  CHECK(other.id != a.id);

  CHECK(cs.get_user(a.id)->preferred_model == "gpt-4o");
  CHECK(cs.find_user("telegram", "1001")->id == a.id);
  CHECK_FALSE(cs.find_user("telegram", "nobody").has_value());
  CHECK_FALSE(cs.get_user(999999).has_value());
}

TEST_CASE_TEMPLATE("users: update sets, clears and validates fields", B, CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& cs = store.conversations();
  UserUpsert in{"web", "u1"};
  in.system_prompt = "be brief";
  User u = cs.upsert_user(in);
  UserUpdate up;
  up.time_zone = "Europe/Moscow";
  up.system_prompt = "";  // clears
  up.preferred_model = "claude";
  up.metadata_patch = Json{{"k", 1}};
  User v = cs.update_user(u.id, up);
  CHECK(v.time_zone == "Europe/Moscow");
  CHECK_FALSE(v.system_prompt.has_value());
  CHECK(v.preferred_model == "claude");
  CHECK(v.metadata == Json{{"k", 1}});
  CHECK_ERROR_CODE(cs.update_user(424242, up), ErrorCode::not_found);
  UserUpdate bad;
  bad.time_zone = "";
  CHECK_ERROR_CODE(cs.update_user(u.id, bad), ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(cs.upsert_user({"", "x"}), ErrorCode::invalid_argument);
}

TEST_CASE_TEMPLATE("users: concurrent upserts of one new user create exactly one", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  std::vector<std::thread> threads;
  std::vector<UserId> ids(8);
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&, i] {
      UserUpsert u{"slack", "U123"};
      u.metadata = {{"t" + std::to_string(i), i}};
      ids[static_cast<std::size_t>(i)] = store.conversations().upsert_user(u).id;
    });
  }
  for (auto& t : threads) t.join();
  CHECK(std::set<UserId>(ids.begin(), ids.end()).size() == 1);
  CHECK(store.stats().users == 1);
  CHECK(store.conversations().get_user(ids[0])->metadata.size() == 8);
}

TEST_CASE_TEMPLATE("channel configs: set, replace and read", B, CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& cs = store.conversations();
  CHECK_FALSE(cs.channel_config("telegram").has_value());
  auto c1 = cs.set_channel_config("telegram", "gpt-4o", {{"rate_limit", 20}});
  auto c2 = cs.set_channel_config("telegram", "gpt-4o-mini", {{"rate_limit", 5}});
  CHECK(c2.created_at == c1.created_at);
  auto got = cs.channel_config("telegram");
  REQUIRE(got.has_value());
  CHECK(got->default_model == "gpt-4o-mini");
  CHECK(got->settings == Json{{"rate_limit", 5}});
}

// ============================= conversations ==============================

TEST_CASE_TEMPLATE("conversations: start, get, find by key; duplicate key and unknown user", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& cs = store.conversations();
  User u = cs.upsert_user({"telegram", "7"});
  NewConversation n;
  n.key = "session-abc";
  n.user_id = u.id;
  n.channel = "telegram";
  n.chat_id = "-100500";
  n.agent = "ExpenseAgent";
  n.kind = "expense";
  n.title = "Coffee";
  n.metadata = {{"source", "test"}};
  Conversation c = cs.start(n);
  CHECK(c.id > 0);
  CHECK(c.status == ConversationStatus::active);
  CHECK(c.message_count == 0);
  CHECK(c.key == "session-abc");
  CHECK(c.user_id == u.id);
  CHECK(c.chat_id == "-100500");
  CHECK(c.kind == "expense");
  CHECK(c.metadata["source"] == "test");
  CHECK_FALSE(c.last_message_at.has_value());

  auto g = cs.get(c.id);
  REQUIRE(g.has_value());
  CHECK(g->title == "Coffee");
  CHECK(g->created_at == c.created_at);
  CHECK(cs.find("session-abc")->id == c.id);
  CHECK_FALSE(cs.find("nope").has_value());
  CHECK_FALSE(cs.get(987654).has_value());

  try {
    cs.start(n);
    FAIL("duplicate key accepted");
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::already_exists);
    CHECK(std::string(e.what()).find("session-abc") != std::string::npos);
  }
  NewConversation orphan;
  orphan.user_id = 55555;
  CHECK_ERROR_CODE(cs.start(orphan), ErrorCode::not_found);
  CHECK(store.stats().conversations == 1);
}

TEST_CASE_TEMPLATE("conversations: get_or_create under a race creates exactly one", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  std::vector<ConversationId> ids(8);
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&, i] {
      NewConversation init;
      init.channel = "web";
      ids[static_cast<std::size_t>(i)] = store.conversations().get_or_create("race", init).id;
    });
  }
  for (auto& t : threads) t.join();
  CHECK(std::set<ConversationId>(ids.begin(), ids.end()).size() == 1);
  CHECK(store.stats().conversations == 1);
  CHECK(store.conversations().get_or_create("race").channel == "web");
}

TEST_CASE_TEMPLATE("conversations: update changes fields, merges metadata, checks versions", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& cs = store.conversations();
  NewConversation n;
  n.title = "t";
  n.metadata = {{"a", 1}, {"b", 2}};
  Conversation c = cs.start(n);
  ConversationUpdate up;
  up.active_agent = "CategoryAgent";
  up.model_override = "gpt-4o";
  up.title = "";  // clears
  up.metadata_patch = Json{{"b", nullptr}, {"c", 3}};
  Conversation d = cs.update(c.id, up);
  CHECK(d.active_agent == "CategoryAgent");
  CHECK(d.model_override == "gpt-4o");
  CHECK_FALSE(d.title.has_value());
  CHECK(d.metadata == Json{{"a", 1}, {"c", 3}});
  CHECK(d.version == c.version + 1);

  ConversationUpdate stale;
  stale.expected_version = c.version;
  stale.kind = "income";
  CHECK_ERROR_CODE(cs.update(c.id, stale), ErrorCode::conflict);
  CHECK_FALSE(cs.get(c.id)->kind.has_value());
  stale.expected_version = d.version;
  CHECK(cs.update(c.id, stale).kind == "income");
  CHECK_ERROR_CODE(cs.update(31337, up), ErrorCode::not_found);
}

TEST_CASE_TEMPLATE("conversations: status lifecycle and invalid transitions", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& cs = store.conversations();
  auto a = cs.start({});
  CHECK(cs.set_status(a.id, ConversationStatus::abandoned).status == ConversationStatus::abandoned);
  CHECK(cs.set_status(a.id, ConversationStatus::active).status == ConversationStatus::active);
  CHECK(cs.set_status(a.id, ConversationStatus::completed).status == ConversationStatus::completed);
  CHECK_ERROR_CODE(cs.set_status(a.id, ConversationStatus::active), ErrorCode::conflict);
  CHECK_ERROR_CODE(cs.set_status(a.id, ConversationStatus::abandoned), ErrorCode::conflict);
  CHECK(cs.set_status(a.id, ConversationStatus::archived).status == ConversationStatus::archived);
  CHECK_ERROR_CODE(cs.set_status(a.id, ConversationStatus::completed), ErrorCode::conflict);
  CHECK_ERROR_CODE(cs.set_status(777777, ConversationStatus::completed), ErrorCode::not_found);
}

TEST_CASE_TEMPLATE("conversations: complete stores data, reference and status together", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& cs = store.conversations();
  auto c = cs.start({});
  Json final_data = {{"amount", 300}, {"item", "coffee"}, {"google_sheets_row", 7}};
  Conversation done = cs.complete(c.id, "7", final_data);
  CHECK(done.status == ConversationStatus::completed);
  CHECK(done.external_ref == "7");
  CHECK(cs.latest_data(c.id, DataKind::complete)->data == final_data);
  // A second completion is refused and writes no second snapshot.
  CHECK_ERROR_CODE(cs.complete(c.id, "8", final_data), ErrorCode::conflict);
  CHECK(cs.data_history(c.id, DataKind::complete).size() == 1);
  CHECK(cs.get(c.id)->external_ref == "7");
}

TEST_CASE_TEMPLATE("conversations: delete cascades to messages, data and questions", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& cs = store.conversations();
  auto c = cs.start({});
  auto m = cs.append(c.id, text("x"));
  cs.save_data(c.id, DataKind::partial, {{"a", 1}});
  auto q = cs.ask(c.id, {"ExpenseAgent", "Which account?", {"account"}});
  CHECK(cs.remove(c.id));
  CHECK_FALSE(cs.remove(c.id));
  CHECK_FALSE(cs.get(c.id).has_value());
  CHECK_FALSE(cs.get_message(m.id).has_value());
  CHECK(testing::raw_exec(db, "SELECT COUNT(*) FROM conversation_data") == "0");
  CHECK(testing::raw_exec(db, "SELECT COUNT(*) FROM agent_questions") == "0");
  CHECK_ERROR_CODE(cs.answer(q.id), ErrorCode::not_found);
}

TEST_CASE_TEMPLATE("conversations: list filters and pages by cursor without gaps", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& cs = store.conversations();
  User alice = cs.upsert_user({"telegram", "alice"});
  User bob = cs.upsert_user({"telegram", "bob"});
  std::vector<ConversationId> alices;
  for (int i = 0; i < 25; ++i) {
    NewConversation n;
    n.user_id = alice.id;
    n.chat_id = i % 2 == 0 ? "even" : "odd";
    n.kind = i % 5 == 0 ? "income" : "expense";
    alices.push_back(cs.start(n).id);
  }
  NewConversation nb;
  nb.user_id = bob.id;
  cs.start(nb);
  cs.set_status(alices[3], ConversationStatus::completed);

  ConversationFilter f;
  f.user_id = alice.id;
  f.limit = 10;
  std::vector<ConversationId> seen;
  int pages = 0;
  for (;;) {
    auto page = cs.list(f);
    ++pages;
    for (auto& c : page.items) {
      CHECK(c.user_id == alice.id);
      seen.push_back(c.id);
    }
    if (page.next_cursor.empty()) break;
    f.cursor = page.next_cursor;
  }
  CHECK(pages == 3);
  CHECK(seen.size() == 25);
  CHECK(std::set<ConversationId>(seen.begin(), seen.end()).size() == 25);
  CHECK(seen.front() == alices[3]);  // the most recently updated comes first

  ConversationFilter g;
  g.user_id = alice.id;
  g.chat_id = "even";
  g.kind = "income";
  g.status = ConversationStatus::active;
  auto page = cs.list(g);
  CHECK(page.items.size() == 3);  // i = 0, 10, 20
  for (auto& c : page.items) CHECK(c.kind == "income");

  ConversationFilter since;
  since.updated_since = cs.get(alices[3])->updated_at;
  CHECK(cs.list(since).items.size() == 1);

  ConversationFilter bad;
  bad.cursor = "garbage";
  CHECK_ERROR_CODE(cs.list(bad), ErrorCode::invalid_argument);
  bad.cursor = "v1.12x.3";
  CHECK_ERROR_CODE(cs.list(bad), ErrorCode::invalid_argument);
  // Times outside the years 0001..9999, which no listing writes (found by
  // fuzz/fuzz_cursor: the extremes overflowed while the time was bound).
  for (const char* outside : {"v1.-9223372036854775808.1", "v1.9223372036854775807.1",
                              "v1.-62135596800000001.1", "v1.253402300800000000.1"}) {
    bad.cursor = outside;
    CHECK_ERROR_CODE(cs.list(bad), ErrorCode::invalid_argument);
  }
  bad.cursor = "v1.-62135596800000000.1";  // 0001-01-01T00:00:00Z: well-formed
  CHECK(cs.list(bad).items.empty());
  bad.cursor.clear();
  bad.limit = 0;
  CHECK_ERROR_CODE(cs.list(bad), ErrorCode::invalid_argument);
}

// ================================ messages ================================

TEST_CASE_TEMPLATE("messages: append stores every field and moves count, version and time", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& cs = store.conversations();
  auto c = cs.start({});
  NewMessage m;
  m.role = Role::assistant;
  m.kind = MessageKind::tool_call;
  m.content = "Кофе 300 рублей ☕";
  m.agent = "ExpenseAgent";
  m.model = "gpt-4o";
  m.token_count = 42;
  m.tool_name = "add_row";
  m.tool_args = {{"sheet", "expenses"}, {"values", {300, "coffee"}}};
  m.tool_call_id = "call_1";
  m.platform_message_id = "102";
  m.reply_to_platform_id = "101";
  m.metadata = {{"tokens", 42}, {"model", "gpt-4o"}};
  Message stored = cs.append(c.id, m);
  CHECK(stored.id > 0);
  auto got = cs.get_message(stored.id);
  REQUIRE(got.has_value());
  CHECK(got->conversation_id == c.id);
  CHECK(got->role == Role::assistant);
  CHECK(got->kind == MessageKind::tool_call);
  CHECK(got->content == m.content);
  CHECK(got->agent == "ExpenseAgent");
  CHECK(got->model == "gpt-4o");
  CHECK(got->token_count == 42);
  CHECK(got->tool_name == "add_row");
  CHECK(got->tool_args == m.tool_args);
  CHECK(got->tool_call_id == "call_1");
  CHECK(got->platform_message_id == "102");
  CHECK(got->reply_to_platform_id == "101");
  CHECK(got->complete);
  CHECK(got->metadata == m.metadata);
  CHECK(got->created_at == stored.created_at);  // microseconds survive the round trip

  auto after = cs.get(c.id);
  CHECK(after->message_count == 1);
  CHECK(after->version == c.version + 1);
  CHECK(after->last_message_at == stored.created_at);

  Message plain = cs.append(c.id, text("no extras"));
  auto p = cs.get_message(plain.id);
  CHECK(p->tool_args.is_null());
  CHECK_FALSE(p->token_count.has_value());
  CHECK(p->metadata == Json::object());
  CHECK(plain.id > stored.id);
  CHECK_ERROR_CODE(cs.append(123456, text("x")), ErrorCode::not_found);
}

TEST_CASE_TEMPLATE("messages: a repeated client key returns the stored message, writes nothing", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& cs = store.conversations();
  auto c = cs.start({});
  NewMessage m = text("redelivered webhook");
  m.client_key = "tg:555";
  Message first = cs.append(c.id, m);
  m.content = "a retry with other text";
  Message second = cs.append(c.id, m);
  CHECK(second.id == first.id);
  CHECK(second.content == "redelivered webhook");
  CHECK(cs.get(c.id)->message_count == 1);
  // The same key in another conversation is another message.
  auto other = cs.start({});
  CHECK(cs.append(other.id, m).id != first.id);
  // A retry whose expected version went stale through its own first attempt
  // still gets its message back.
  AppendOptions o;
  o.expected_version = c.version;
  CHECK(cs.append(c.id, m, o).id == first.id);
  CHECK(cs.append_batch(c.id, {m, text("new")}).front().id == first.id);
  CHECK(cs.get(c.id)->message_count == 2);
}

TEST_CASE_TEMPLATE("messages: compare-and-append fails with conflict when the version moved", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& cs = store.conversations();
  auto c = cs.start({});
  AppendOptions o;
  o.expected_version = c.version;
  cs.append(c.id, text("first"), o);
  CHECK_ERROR_CODE(cs.append(c.id, text("stale"), o), ErrorCode::conflict);
  o.expected_version = cs.get(c.id)->version;
  cs.append(c.id, text("fresh"), o);
  CHECK(cs.get(c.id)->message_count == 2);
  CHECK_ERROR_CODE(cs.append(999, text("x"), o), ErrorCode::not_found);
}

TEST_CASE_TEMPLATE("messages: a batch is all or nothing and keeps its order", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& cs = store.conversations();
  auto c = cs.start({});
  std::vector<NewMessage> batch;
  for (int i = 0; i < 50; ++i) batch.push_back(text("m" + std::to_string(i)));
  auto stored = cs.append_batch(c.id, batch);
  REQUIRE(stored.size() == 50);
  for (std::size_t i = 1; i < stored.size(); ++i) CHECK(stored[i].id > stored[i - 1].id);
  CHECK(cs.get(c.id)->message_count == 50);
  batch[20].content = std::string("bad \xff byte");
  CHECK_ERROR_CODE(cs.append_batch(c.id, batch), ErrorCode::invalid_argument);
  CHECK(cs.get(c.id)->message_count == 50);
  CHECK_ERROR_CODE(cs.append_batch(4242, {text("x")}), ErrorCode::not_found);
}

TEST_CASE_TEMPLATE("messages: history pages before/after, both orders, with filters", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& cs = store.conversations();
  auto c = cs.start({});
  std::vector<MessageId> ids;
  for (int i = 0; i < 30; ++i) {
    NewMessage m = text("m" + std::to_string(i), i % 3 == 0 ? Role::assistant : Role::user);
    m.agent = i % 2 == 0 ? "A" : "B";
    if (i == 29) m.kind = MessageKind::thinking;
    ids.push_back(cs.append(c.id, m).id);
  }
  HistoryQuery q;
  q.limit = 12;
  auto p1 = cs.history(c.id, q);
  REQUIRE(p1.size() == 12);
  CHECK(p1.front().id == ids[0]);
  q.after = p1.back().id;
  auto p2 = cs.history(c.id, q);
  CHECK(p2.front().id == ids[12]);
  q.after = p2.back().id;
  auto p3 = cs.history(c.id, q);
  CHECK(p3.size() == 6);

  HistoryQuery back;
  back.newest_first = true;
  back.limit = 5;
  auto n1 = cs.history(c.id, back);
  CHECK(n1.front().id == ids[29]);
  back.before = n1.back().id;
  CHECK(cs.history(c.id, back).front().id == ids[24]);

  HistoryQuery by_role;
  by_role.role = Role::assistant;
  by_role.limit = 100;
  CHECK(cs.history(c.id, by_role).size() == 10);
  HistoryQuery by_agent;
  by_agent.agent = "A";
  by_agent.limit = 100;
  auto as = cs.history(c.id, by_agent);
  CHECK(as.size() == 15);
  for (auto& m : as) CHECK(m.agent == "A");
  HistoryQuery by_kind;
  by_kind.kind = MessageKind::thinking;
  CHECK(cs.history(c.id, by_kind).size() == 1);

  auto last = cs.recent(c.id, 5);
  REQUIRE(last.size() == 5);
  CHECK(last.front().id == ids[25]);
  CHECK(last.back().id == ids[29]);
  CHECK(cs.recent(c.id, 100).size() == 30);

  // Cursors must point at a message of this conversation.
  auto other = cs.start({});
  auto foreign = cs.append(other.id, text("elsewhere"));
  HistoryQuery wrong;
  wrong.before = foreign.id;
  CHECK_ERROR_CODE(cs.history(c.id, wrong), ErrorCode::not_found);
  wrong.before = 99999999;
  CHECK_ERROR_CODE(cs.history(c.id, wrong), ErrorCode::not_found);
  CHECK_ERROR_CODE(cs.history(5555555, {}), ErrorCode::not_found);
  HistoryQuery zero;
  zero.limit = 0;
  CHECK_ERROR_CODE(cs.history(c.id, zero), ErrorCode::invalid_argument);
  // An existing conversation without messages is an empty history.
  CHECK(cs.history(cs.start({}).id, {}).empty());
}

TEST_CASE_TEMPLATE("messages: streaming grows content in place, then completes", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& cs = store.conversations();
  auto c = cs.start({});
  NewMessage m = text("", Role::assistant);
  m.complete = false;
  auto s = cs.append(c.id, m);
  CHECK_FALSE(cs.get_message(s.id)->complete);
  for (const char* piece : {"Hel", "lo, ", "мир"}) cs.append_content(s.id, piece);
  auto done = cs.finish_message(s.id, 17);
  CHECK(done.content == "Hello, мир");
  CHECK(done.complete);
  CHECK(done.token_count == 17);
  CHECK(cs.get(c.id)->message_count == 1);
  CHECK_ERROR_CODE(cs.append_content(987654, "x"), ErrorCode::not_found);
  CHECK_ERROR_CODE(cs.finish_message(987654), ErrorCode::not_found);

  MessageUpdate up;
  up.content = "edited";
  up.metadata_patch = Json{{"edited", true}};
  auto e = cs.update_message(s.id, up);
  CHECK(e.content == "edited");
  CHECK(e.metadata["edited"] == true);
  CHECK(e.token_count == 17);
  CHECK_ERROR_CODE(cs.update_message(987654, up), ErrorCode::not_found);
}

TEST_CASE_TEMPLATE("messages: remove deletes one message and the count follows", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& cs = store.conversations();
  auto c = cs.start({});
  auto a = cs.append(c.id, text("a"));
  cs.append(c.id, text("b"));
  CHECK(cs.remove_message(a.id));
  CHECK_FALSE(cs.remove_message(a.id));
  CHECK(cs.get(c.id)->message_count == 1);
  CHECK(cs.recent(c.id, 10).front().content == "b");
}

// =============================== threading ================================

TEST_CASE_TEMPLATE("threading: find a message by platform id in a chat; follow reply chains", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& cs = store.conversations();
  NewConversation n;
  n.channel = "telegram";
  n.chat_id = "chat-1";
  auto c = cs.start(n);
  NewConversation n2 = n;
  n2.chat_id = "chat-2";
  auto other_chat = cs.start(n2);

  NewMessage u1 = text("coffee 300");
  u1.platform_message_id = "101";
  cs.append(c.id, u1);
  NewMessage b1 = text("Which account?", Role::assistant);
  b1.platform_message_id = "102";
  cs.append(c.id, b1);
  NewMessage same_id_elsewhere = text("other chat");
  same_id_elsewhere.platform_message_id = "102";
  cs.append(other_chat.id, same_id_elsewhere);
  NewMessage u2 = text("cash");
  u2.platform_message_id = "103";
  u2.reply_to_platform_id = "102";
  auto reply = cs.append(c.id, u2);
  NewMessage b2 = text("Category?", Role::assistant);
  b2.platform_message_id = "104";
  b2.reply_to_platform_id = "103";
  auto tail = cs.append(c.id, b2);

  auto hit = cs.find_by_platform_id("telegram", "chat-1", "102");
  REQUIRE(hit.has_value());
  CHECK(hit->conversation.id == c.id);
  CHECK(hit->message.content == "Which account?");
  CHECK(cs.find_by_platform_id("telegram", "chat-2", "102")->conversation.id == other_chat.id);
  CHECK_FALSE(cs.find_by_platform_id("telegram", "chat-1", "999").has_value());
  CHECK_FALSE(cs.find_by_platform_id("discord", "chat-1", "102").has_value());

  auto chain = cs.reply_chain(tail.id);
  REQUIRE(chain.size() == 3);
  CHECK(chain[0].platform_message_id == "102");
  CHECK(chain[0].conversation_id == c.id);
  CHECK(chain[1].id == reply.id);
  CHECK(chain[2].id == tail.id);
  CHECK(cs.reply_chain(tail.id, 2).size() == 2);
  CHECK_ERROR_CODE(cs.reply_chain(8888888), ErrorCode::not_found);
}

// ========================= snapshots and questions ========================

TEST_CASE_TEMPLATE("snapshots: newest wins per kind, history is kept in order", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& cs = store.conversations();
  auto c = cs.start({});
  CHECK_FALSE(cs.latest_data(c.id, DataKind::partial).has_value());
  cs.save_data(c.id, DataKind::partial, {{"amount", 300}});
  cs.save_data(c.id, DataKind::missing_fields, Json::array({"account", "category"}));
  cs.save_data(c.id, DataKind::partial, {{"amount", 300}, {"account", "cash"}});
  CHECK(cs.latest_data(c.id, DataKind::partial)->data["account"] == "cash");
  auto h = cs.data_history(c.id, DataKind::partial);
  REQUIRE(h.size() == 2);
  CHECK(h[0].data == Json{{"amount", 300}});
  CHECK(h[1].id > h[0].id);
  CHECK_ERROR_CODE(cs.save_data(4040404, DataKind::partial, {}), ErrorCode::not_found);
}

TEST_CASE_TEMPLATE("questions: ask, answer once, list the open ones", B, CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& cs = store.conversations();
  auto c = cs.start({});
  auto q1 = cs.ask(c.id, {"ExpenseAgent", "Which account?", {"account", "category"}, "102"});
  auto q2 = cs.ask(c.id, {"ExpenseAgent", "Which category?", {"category"}});
  CHECK(q1.missing_fields == Json::array({"account", "category"}));
  CHECK(q1.platform_message_id == "102");
  CHECK(cs.open_questions(c.id).size() == 2);
  auto a = cs.answer(q1.id, "cash");
  CHECK(a.answered_at.has_value());
  CHECK(a.answer == "cash");
  CHECK_ERROR_CODE(cs.answer(q1.id, "again"), ErrorCode::conflict);
  CHECK_ERROR_CODE(cs.answer(5050505), ErrorCode::not_found);
  auto open = cs.open_questions(c.id);
  REQUIRE(open.size() == 1);
  CHECK(open[0].id == q2.id);
  CHECK(cs.questions(c.id).size() == 2);
  CHECK_ERROR_CODE(cs.ask(6060606, {"A", "?", {}}), ErrorCode::not_found);
}

TEST_CASE_TEMPLATE("context: the seed-000 conversation context in one call", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& cs = store.conversations();
  NewConversation n;
  n.channel = "telegram";
  n.chat_id = "c1";
  n.kind = "expense";
  n.agent = "ExpenseAgent";
  auto c = cs.start(n);
  NewMessage u = text("coffee 300");
  u.platform_message_id = "101";
  cs.append(c.id, u);
  cs.save_data(c.id, DataKind::partial, {{"amount", 300}, {"item", "coffee"}});
  cs.save_data(c.id, DataKind::missing_fields, Json::array({"account"}));
  cs.ask(c.id, {"ExpenseAgent", "Which account?", {"account"}, "102"});
  NewMessage b = text("Which account?", Role::assistant);
  b.platform_message_id = "102";
  cs.append(c.id, b);
  NewMessage r = text("cash");
  r.platform_message_id = "103";
  r.reply_to_platform_id = "102";
  cs.append(c.id, r);

  auto ctx = cs.context(c.id, 2);
  CHECK(ctx.conversation.id == c.id);
  CHECK(ctx.partial_data == Json{{"amount", 300}, {"item", "coffee"}});
  CHECK(ctx.missing_fields == Json::array({"account"}));
  REQUIRE(ctx.messages.size() == 2);
  CHECK(ctx.messages[0].content == "Which account?");
  CHECK(ctx.messages[1].content == "cash");
  REQUIRE(ctx.questions.size() == 1);
  CHECK(ctx.last_bot_message_id == "102");

  Json j = ctx.to_json();
  CHECK(j["conversation_id"] == c.id);
  CHECK(j["kind"] == "expense");
  CHECK(j["status"] == "active");
  CHECK(j["message_history"].size() == 2);
  CHECK(j["message_history"][1]["reply_to_platform_id"] == "102");
  CHECK(j["agent_questions"][0]["missing_fields"] == Json::array({"account"}));
  CHECK(j["last_bot_message_id"] == "102");

  auto empty = cs.context(cs.start({}).id);
  CHECK(empty.partial_data == Json::object());
  CHECK(empty.missing_fields == Json::array());
  CHECK_FALSE(empty.last_bot_message_id.has_value());
  CHECK_ERROR_CODE(cs.context(7070707), ErrorCode::not_found);
}

TEST_CASE_TEMPLATE("context: a fixed number of statements, whatever the message count", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  std::atomic<int> statements{0};
  Options o;
  o.on_statement = [&](const StatementEvent&) { ++statements; };
  auto store = db.open(o);
  auto& cs = store.conversations();
  auto c = cs.start({});
  std::vector<NewMessage> batch(200, text("x"));
  cs.append_batch(c.id, batch);
  statements = 0;
  cs.context(c.id, 10);
  int small = statements.exchange(0);
  cs.context(c.id, 200);
  CHECK(statements.load() == small);
  CHECK(small <= 7);  // five queries in one read transaction (BEGIN, COMMIT)
}

// =============================== bad input ================================

TEST_CASE_TEMPLATE("bad input: invalid UTF-8, NUL, roles outside the set; nothing written", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& cs = store.conversations();
  auto c = cs.start({});
  CHECK_ERROR_CODE(cs.append(c.id, text(std::string("bad \xc3\x28"))), ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(cs.append(c.id, text(std::string("nul\0inside", 10))),
                   ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(cs.append(c.id, text("\xed\xa0\x80 surrogate")), ErrorCode::invalid_argument);
  NewMessage role = text("x");
  role.role = static_cast<Role>(9);
  CHECK_ERROR_CODE(cs.append(c.id, role), ErrorCode::invalid_argument);
  NewMessage json_nul = text("x");
  json_nul.metadata = {{"k", std::string("a\0b", 3)}};
  CHECK_ERROR_CODE(cs.append(c.id, json_nul), ErrorCode::invalid_argument);
  NewMessage bad_json = text("x");
  bad_json.metadata = {{"k", std::string("\xff")}};
  CHECK_ERROR_CODE(cs.append(c.id, bad_json), ErrorCode::invalid_argument);
  NewConversation bad_title;
  bad_title.title = std::string("\xfe");
  CHECK_ERROR_CODE(cs.start(bad_title), ErrorCode::invalid_argument);
  CHECK(cs.get(c.id)->message_count == 0);
  CHECK(store.stats().messages == 0);
  CHECK(store.stats().conversations == 1);
  CHECK_ERROR_CODE(parse_role("robot"), ErrorCode::invalid_argument);
}

TEST_CASE_TEMPLATE("a 10 MB message round-trips", B, CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& cs = store.conversations();
  auto c = cs.start({});
  std::string big;
  big.reserve(10 * 1024 * 1024);
  while (big.size() < 10 * 1024 * 1024 - 16) big += "Привет, world! ";
  auto m = cs.append(c.id, text(big));
  auto got = cs.get_message(m.id);
  REQUIRE(got.has_value());
  CHECK(got->content.size() == big.size());
  CHECK(got->content == big);
}

TEST_CASE_TEMPLATE("timestamps are UTC with microseconds and readable in SQL tools", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto c = store.conversations().start({});
  auto got = store.conversations().get(c.id);
  CHECK(got->created_at == c.created_at);
  std::string raw = testing::raw_exec(
      db, "SELECT created_at FROM conversations WHERE id = " + std::to_string(c.id));
  if (db.backend() == "sqlite") {
    CHECK(raw == to_iso8601(c.created_at));
  } else {
    CHECK(parse_timestamp(raw) == c.created_at);
    CHECK(testing::raw_exec(db, "SELECT pg_typeof(metadata)::text FROM conversations") == "jsonb");
  }
}

TEST_CASE_TEMPLATE("messages: a batch stores every field of every message under its own id", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& cs = store.conversations();
  auto c = cs.start({});
  std::vector<NewMessage> batch;
  for (int i = 0; i < 90; ++i) {  // cut into chunks of 64, 16, 4, 4, 1, 1
    NewMessage m;
    m.role = i % 2 == 0 ? Role::tool : Role::assistant;
    m.kind = i % 2 == 0 ? MessageKind::tool_response : MessageKind::text;
    // Quotes, escapes and control characters: on PostgreSQL a batch travels
    // as JSON text, which must carry them exactly.
    m.content = "message \"" + std::to_string(i) + "\"\n\t\\ ✓ \x01\x1f\x7f\r\b\f /";
    if (i % 3 == 0) m.agent = "agent-" + std::to_string(i);
    if (i % 4 == 0) m.model = "gpt-4o";
    if (i % 5 == 0) m.token_count = i;
    if (i % 2 == 0) {
      m.tool_name = "lookup";
      m.tool_args = {{"q", i}, {"nested", {{"a", Json::array({1, "two"})}}}};
      m.tool_call_id = "call-" + std::to_string(i);
    }
    if (i % 7 == 0) m.platform_message_id = std::to_string(1000 + i);
    if (i % 7 == 1) m.reply_to_platform_id = std::to_string(1000 + i - 1);
    m.complete = i % 11 != 0;
    m.metadata = {{"i", i}, {"s", "ü"}};
    batch.push_back(m);
  }
  auto stored = cs.append_batch(c.id, batch);
  REQUIRE(stored.size() == batch.size());
  for (std::size_t i = 0; i < batch.size(); ++i) {
    auto got = cs.get_message(stored[i].id);
    REQUIRE(got.has_value());
    const NewMessage& m = batch[i];
    CHECK(got->content == m.content);
    CHECK(got->role == m.role);
    CHECK(got->kind == m.kind);
    CHECK(got->agent == m.agent);
    CHECK(got->model == m.model);
    CHECK(got->token_count == m.token_count);
    CHECK(got->tool_name == m.tool_name);
    CHECK(got->tool_args == m.tool_args);
    CHECK(got->tool_call_id == m.tool_call_id);
    CHECK(got->platform_message_id == m.platform_message_id);
    CHECK(got->reply_to_platform_id == m.reply_to_platform_id);
    CHECK(got->complete == m.complete);
    CHECK(got->metadata == m.metadata);
    CHECK(got->created_at == stored[i].created_at);
  }
  CHECK(cs.get(c.id)->message_count == 90);
  CHECK(cs.get(c.id)->last_message_at == stored.back().created_at);
}

TEST_CASE_TEMPLATE("a call that fails half-way through binding leaves its statement usable", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  Options o;
  o.pool_size = 1;  // the same connection, and so the same prepared statements
  auto store = db.open(o);
  auto& cs = store.conversations();
  auto u = cs.upsert_user({"telegram", "1"});
  NewConversation n;
  n.key = "abc";
  auto c = cs.start(n);
  for (int i = 0; i < 3; ++i) {
    CHECK_ERROR_CODE(cs.find_user("telegram", std::string("1\0x", 3)), ErrorCode::invalid_argument);
    CHECK_ERROR_CODE(cs.find(std::string("abc\0zzz", 7)), ErrorCode::invalid_argument);
    CHECK_ERROR_CODE(cs.get_or_create(std::string("abc\0zzz", 7)), ErrorCode::invalid_argument);
    CHECK_ERROR_CODE(cs.find_user("telegram", "\xff"), ErrorCode::invalid_argument);
    CHECK(cs.find_user("telegram", "1")->id == u.id);
    CHECK(cs.find("abc")->id == c.id);
    CHECK(cs.get(c.id).has_value());
  }
  CHECK(store.stats().conversations == 1);
}

TEST_CASE("sqlite: a stored row that does not decode fails the call and holds no lock") {
  testing::TestDb db("sqlite");
  Options o;
  o.pool_size = 1;
  auto store = db.open(o);
  auto& cs = store.conversations();
  auto c = cs.start({});
  auto m = cs.append(c.id, text("hello"));
  testing::raw_exec(db,
                    "UPDATE messages SET tool_args = '{bad' WHERE id = " + std::to_string(m.id));
  CHECK_ERROR_CODE(cs.append_content(m.id, " world"), ErrorCode::internal);
  CHECK_ERROR_CODE(cs.get_message(m.id), ErrorCode::internal);
  // Another connection can write at once: no statement was left open.
  testing::raw_exec(db,
                    "UPDATE conversations SET title = 'raw' WHERE id = " + std::to_string(c.id));
  CHECK(cs.get(c.id)->title == "raw");
  CHECK(cs.set_channel_config("web", "m").default_model == "m");
}

TEST_CASE_TEMPLATE("JSON text that merely spells \\u0000 is accepted; a real NUL is not", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& cs = store.conversations();
  auto c = cs.start({});
  NewMessage m = text("x");
  m.metadata = {{"re", "\\u0000"}};
  auto stored = cs.append(c.id, m);
  CHECK(cs.get_message(stored.id)->metadata["re"] == "\\u0000");
  m.metadata = {{std::string("k\0ey", 4), 1}};
  CHECK_ERROR_CODE(cs.append(c.id, m), ErrorCode::invalid_argument);
  m.metadata = Json::array({Json::object({{"deep", std::string("a\0b", 3)}})});
  CHECK_ERROR_CODE(cs.append(c.id, m), ErrorCode::invalid_argument);
}

TEST_CASE_TEMPLATE("users: an empty string means no value on insert as on update", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  UserUpsert u{"web", "e"};
  u.username = "";
  CHECK_FALSE(store.conversations().upsert_user(u).username.has_value());
}
