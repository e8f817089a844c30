// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#include <algorithm>
#include <atomic>
#include <chrono>
#include <future>
#include <map>
#include <set>
#include <thread>
#include <vector>

#include "support.hpp"

using namespace convstore;
using namespace std::chrono_literals;

namespace {

UserId new_user(Store& store, const std::string& id = "alice") {
  return store.conversations().upsert_user(UserUpsert("telegram", id)).id;
}

// A conversation of `user` for the chat `chat`, made a dialog.
ConversationId new_dialog(Store& store, UserId user, const std::string& chat,
                          DialogSettings settings = {}) {
  NewConversation n;
  n.user_id = user;
  n.channel = "telegram";
  n.chat_id = chat;
  ConversationId id = store.conversations().start(n).id;
  store.dialogs().configure(id, settings);
  return id;
}

// A platform message time: a fixed day, plus `minutes`.
Timestamp at_minute(int minutes) {
  return parse_timestamp("2024-03-01T10:00:00Z") + std::chrono::minutes(minutes);
}

NewSuggestion reply(const std::string& answers, int minute, const std::string& text) {
  return NewSuggestion{answers, at_minute(minute), text};
}

NewMessage message(Role role, const std::string& content,
                   std::optional<std::string> platform_id = std::nullopt) {
  NewMessage m;
  m.role = role;
  m.content = content;
  m.platform_message_id = std::move(platform_id);
  return m;
}

std::string count(const testing::TestDb& db, const std::string& table) {
  return testing::raw_exec(db, "SELECT COUNT(*) FROM " + table);
}

// Every row of both tables as text, to compare before and after a refused call.
std::string dump(const testing::TestDb& db) {
  const bool pg = db.backend() == "postgresql";
  const std::string agg = pg ? "string_agg(x, '|' ORDER BY x)" : "group_concat(x, '|')";
  const std::string cat = pg ? "concat_ws(',', " : "(";
  const std::string sep = pg ? ", " : " || ',' || ";
  auto row = [&](std::initializer_list<const char*> cols) {
    std::string s = cat;
    bool first = true;
    for (const char* c : cols) {
      if (!first) s += sep;
      s += pg ? std::string(c) : "COALESCE(" + std::string(c) + ", '')";
      first = false;
    }
    return s + ")";
  };
  return testing::raw_exec(db,
                           "SELECT " + agg + " FROM (SELECT " +
                               row({"conversation_id", "type", "processing_enabled", "auto_send",
                                    "last_message_id", "checked_at", "updated_at"}) +
                               " AS x FROM dialogs) t") +
         "#" +
         testing::raw_exec(db,
                           "SELECT " + agg + " FROM (SELECT " +
                               row({"id", "status", "edited_text", "reason", "error", "attempts",
                                    "claimed_by", "claim_expires_at", "updated_at"}) +
                               " AS x FROM review_items) t");
}

// Claims exactly the suggestion `id` (the only ready one in the test).
Suggestion claim_one(Store& store, SuggestionId id, const std::string& sender = "sender-1",
                     std::chrono::milliseconds lease = 60s) {
  auto claimed = store.reviews().claim_to_send(sender, 10, lease);
  REQUIRE(claimed.size() == 1);
  REQUIRE(claimed.front().id == id);
  return claimed.front();
}

}  // namespace

TEST_CASE("dialogs: type and review status names") {
  CHECK(to_string(DialogType::private_chat) == "private");
  CHECK(parse_dialog_type("group") == DialogType::group);
  CHECK(parse_dialog_type("private") == DialogType::private_chat);
  CHECK_ERROR_CODE(parse_dialog_type("PRIVATE"), ErrorCode::invalid_argument);
  CHECK(to_string(ReviewStatus::pending_approval) == "pending_approval");
  CHECK(parse_review_status("superseded") == ReviewStatus::superseded);
  CHECK_ERROR_CODE(parse_review_status("pending"), ErrorCode::invalid_argument);
  Suggestion s;
  s.suggested_text = "a";
  CHECK(s.text() == "a");
  s.edited_text = "b";
  CHECK(s.text() == "b");
  CHECK(to_json(s)["text"] == "b");
}

TEST_CASE_TEMPLATE("dialogs: configure, get, list, update, remove", B, CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& dialogs = store.dialogs();
  UserId alice = new_user(store);
  UserId bob = new_user(store, "bob");
  ConversationId a1 = new_dialog(store, alice, "chat-1");
  ConversationId a2 = new_dialog(store, alice, "chat-2", {DialogType::group, false, true});
  ConversationId b1 = new_dialog(store, bob, "chat-3", {DialogType::channel, true, false});

  auto d = dialogs.get(a2);
  REQUIRE(d.has_value());
  CHECK(d->conversation_id == a2);
  CHECK(d->user_id == alice);
  CHECK(d->channel == "telegram");
  CHECK(d->chat_id == "chat-2");
  CHECK(d->type == DialogType::group);
  CHECK_FALSE(d->processing_enabled);
  CHECK(d->auto_send);
  CHECK_FALSE(d->last_message_id.has_value());
  CHECK_FALSE(d->checked_at.has_value());
  CHECK(to_json(*d)["type"] == "group");

  auto mine = dialogs.list(alice);
  REQUIRE(mine.size() == 2);
  CHECK(mine[0].conversation_id == a1);
  CHECK(mine[1].conversation_id == a2);
  CHECK(dialogs.list(bob).size() == 1);
  CHECK(dialogs.list(bob + 100).empty());

  DialogUpdate up;
  up.processing_enabled = true;
  auto u = dialogs.update(a2, up);
  CHECK(u.processing_enabled);
  CHECK(u.auto_send);
  CHECK(u.type == DialogType::group);

  // configure again keeps the cursor and changes the settings.
  REQUIRE(dialogs.advance_cursor(b1, std::nullopt, "10", at_minute(1)));
  auto again = dialogs.configure(b1, {DialogType::private_chat, false, true});
  CHECK(again.type == DialogType::private_chat);
  CHECK(again.auto_send);
  CHECK(again.last_message_id == "10");
  CHECK(again.last_message_at == at_minute(1));

  // A conversation that is not a dialog, or none at all.
  ConversationId plain = store.conversations().start({}).id;
  CHECK_FALSE(dialogs.get(plain).has_value());
  CHECK_ERROR_CODE(dialogs.update(plain, up), ErrorCode::not_found);
  CHECK_ERROR_CODE(dialogs.configure(plain + 100), ErrorCode::not_found);
  CHECK_ERROR_CODE(dialogs.mark_checked(plain), ErrorCode::not_found);
  CHECK_ERROR_CODE(dialogs.advance_cursor(plain, std::nullopt, "1", at_minute(0)),
                   ErrorCode::not_found);
  CHECK_ERROR_CODE(store.reviews().suggest(plain, reply("1", 0, "hi")), ErrorCode::not_found);
  CHECK_ERROR_CODE(store.reviews().invalidate(plain, "2", at_minute(1)), ErrorCode::not_found);
  try {
    dialogs.configure(plain + 100);
  } catch (const Error& e) {
    CHECK(std::string(e.what()).find(std::to_string(plain + 100)) != std::string::npos);
  }

  CHECK(dialogs.remove(a1));
  CHECK_FALSE(dialogs.remove(a1));
  CHECK_FALSE(dialogs.get(a1).has_value());
  CHECK(store.conversations().get(a1).has_value());
}

TEST_CASE_TEMPLATE("dialogs: the cursor moves by compare-and-set", B, CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& dialogs = store.dialogs();
  ConversationId d = new_dialog(store, new_user(store), "chat");
  CHECK_FALSE(dialogs.advance_cursor(d, std::string("5"), "6", at_minute(6)));
  CHECK(dialogs.advance_cursor(d, std::nullopt, "5", at_minute(5)));
  CHECK_FALSE(dialogs.advance_cursor(d, std::nullopt, "6", at_minute(6)));
  CHECK_FALSE(dialogs.advance_cursor(d, std::string("4"), "6", at_minute(6)));
  CHECK(dialogs.advance_cursor(d, std::string("5"), "7", at_minute(7)));
  auto got = dialogs.get(d);
  CHECK(got->last_message_id == "7");
  CHECK(got->last_message_at == at_minute(7));
  CHECK(got->checked_at.has_value());
  CHECK_ERROR_CODE(dialogs.advance_cursor(d, std::string("7"), "7", at_minute(7)),
                   ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(dialogs.advance_cursor(d, std::string("7"), "", at_minute(8)),
                   ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(dialogs.advance_cursor(d, std::string("7"), "a\nb", at_minute(8)),
                   ErrorCode::invalid_argument);
  CHECK(dialogs.get(d)->last_message_id == "7");
}

TEST_CASE_TEMPLATE("dialogs: two workers racing on the cursor, exactly one wins each step", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  ConversationId d = 0;
  {
    auto store = db.open();
    d = new_dialog(store, new_user(store), "chat");
  }
  constexpr int kSteps = 30;
  std::promise<void> go;
  std::shared_future<void> gate = go.get_future().share();
  auto worker = [&](std::vector<int>* wins) {
    auto store = db.open();
    gate.wait();
    for (int k = 1; k <= kSteps; ++k) {
      std::optional<std::string> expected;
      if (k > 1) expected = std::to_string(k - 1);
      // Both workers process the same messages; store.transaction pairs
      // the advance with the suggestion, as the header's loop does.
      store.transaction([&] {
        if (store.dialogs().advance_cursor(d, expected, std::to_string(k), at_minute(k))) {
          store.reviews().suggest(d, reply(std::to_string(k), k, "reply " + std::to_string(k)));
          wins->push_back(k);
        }
      });
    }
  };
  std::vector<int> w1, w2;
  std::thread t1(worker, &w1);
  std::thread t2(worker, &w2);
  go.set_value();
  t1.join();
  t2.join();
  std::vector<int> all = w1;
  all.insert(all.end(), w2.begin(), w2.end());
  std::sort(all.begin(), all.end());
  std::vector<int> expected(kSteps);
  for (int k = 0; k < kSteps; ++k) expected[static_cast<std::size_t>(k)] = k + 1;
  CHECK(all == expected);
  auto store = db.open();
  CHECK(store.dialogs().get(d)->last_message_id == std::to_string(kSteps));
  CHECK(count(db, "review_items") == std::to_string(kSteps));
  CHECK(store.reviews().current(d)->answers_message_id == std::to_string(kSteps));
}

TEST_CASE_TEMPLATE("dialogs: due listing", B, CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& dialogs = store.dialogs();
  UserId user = new_user(store);
  ConversationId a = new_dialog(store, user, "a");
  ConversationId b = new_dialog(store, user, "b");
  ConversationId off = new_dialog(store, user, "off", {DialogType::group, false, false});
  auto ids = [](const std::vector<Dialog>& ds) {
    std::vector<ConversationId> out;
    for (const auto& d : ds) out.push_back(d.conversation_id);
    return out;
  };
  // Never checked: due at once; disabled ones never.
  CHECK(ids(dialogs.due(30min)) == std::vector<ConversationId>{a, b});
  CHECK(ids(dialogs.due(30min, 1)) == std::vector<ConversationId>{a});

  const Timestamp t0 = now();
  dialogs.mark_checked(a, t0);
  CHECK(dialogs.get(a)->checked_at == t0);
  CHECK(ids(dialogs.due(30min, 100, t0 + 10min)) == std::vector<ConversationId>{b});
  CHECK(ids(dialogs.due(30min, 100, t0 + 30min)) == std::vector<ConversationId>{b, a});
  CHECK(ids(dialogs.due(0s, 100, t0)) == std::vector<ConversationId>{b, a});
  dialogs.mark_checked(b, t0 - 1min);
  // The longest unchecked first.
  CHECK(ids(dialogs.due(30min, 100, t0 + 40min)) == std::vector<ConversationId>{b, a});
  CHECK(dialogs.due(30min, 100, t0 + 10min).empty());
  // An earlier check does not move the check time back.
  dialogs.mark_checked(a, t0 - 1h);
  CHECK(dialogs.get(a)->checked_at == t0);

  // A user message stored in the conversation makes it due before the
  // interval; an assistant message does not; the next check clears it.
  store.conversations().append(a, message(Role::assistant, "sent reply"));
  CHECK(dialogs.due(30min, 100, t0 + 10min).empty());
  store.conversations().append(a, message(Role::user, "hello?"));
  auto due = dialogs.due(30min, 100, t0 + 10min);
  REQUIRE(due.size() == 1);
  CHECK(due[0].conversation_id == a);
  REQUIRE(due[0].new_message_at.has_value());
  dialogs.mark_checked(a, *due[0].new_message_at - 1us);  // a check that began before it
  CHECK(dialogs.due(30min, 100, t0 + 10min).size() == 1);
  dialogs.mark_checked(a);
  CHECK(dialogs.due(30min, 100, t0 + 10min).empty());
  CHECK_FALSE(dialogs.get(a)->new_message_at.has_value());
  // A disabled dialog with a new message is not due.
  store.conversations().append(off, message(Role::user, "anyone?"));
  CHECK(dialogs.due(30min, 100, t0 + 10min).empty());
  DialogUpdate on;
  on.processing_enabled = true;
  dialogs.update(off, on);
  CHECK(ids(dialogs.due(30min, 100, t0 + 10min)) == std::vector<ConversationId>{off});

  CHECK_ERROR_CODE(dialogs.due(-1s), ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(dialogs.due(24h * 400), ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(dialogs.due(30min, 0), ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(dialogs.due(30min, 1001), ErrorCode::invalid_argument);
}

TEST_CASE_TEMPLATE("reviews: every allowed move of the state machine", B, CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& reviews = store.reviews();
  UserId user = new_user(store);
  ConversationId d = new_dialog(store, user, "chat");

  // pending -> approved -> (claimed) -> sent
  const Timestamp before = now();
  Suggestion s = reviews.suggest(d, reply("100", 0, "Sure, see you at 5."));
  CHECK(s.id > 0);
  CHECK(s.conversation_id == d);
  CHECK(s.user_id == user);
  CHECK(s.answers_message_id == "100");
  CHECK(s.answers_message_at == at_minute(0));
  CHECK(s.status == ReviewStatus::pending_approval);
  CHECK(s.text() == "Sure, see you at 5.");
  CHECK(s.created_at >= before);
  CHECK_FALSE(s.decided_at.has_value());
  CHECK(reviews.current(d)->id == s.id);
  auto a = reviews.approve(s.id);
  CHECK(a.status == ReviewStatus::approved);
  CHECK(a.decided_at.has_value());
  CHECK_FALSE(a.auto_approved);
  CHECK_FALSE(a.edited_text.has_value());
  auto c = claim_one(store, s.id);
  CHECK(c.claimed_by == "sender-1");
  CHECK(c.claim() == 1);
  CHECK(c.claim_expires_at.has_value());
  auto sent = reviews.mark_sent(s.id, c.claim());
  CHECK(sent.status == ReviewStatus::sent);
  CHECK(sent.sent_at.has_value());
  CHECK_FALSE(sent.claim_expires_at.has_value());
  CHECK_FALSE(reviews.current(d).has_value());

  // pending -> rejected, with a reason
  auto r = reviews.suggest(d, reply("101", 1, "No."));
  auto rejected = reviews.reject(r.id, std::string("too curt"));
  CHECK(rejected.status == ReviewStatus::rejected);
  CHECK(rejected.reason == "too curt");
  CHECK(rejected.decided_at.has_value());

  // approved -> failed -> approved (retry) -> sent
  auto f = reviews.suggest(d, reply("102", 2, "Hello!"));
  reviews.approve(f.id);
  auto c1 = claim_one(store, f.id);
  auto failed = reviews.mark_failed(f.id, c1.claim(), "429 Too Many Requests");
  CHECK(failed.status == ReviewStatus::failed);
  CHECK(failed.error == "429 Too Many Requests");
  CHECK(reviews.current(d)->id == f.id);  // failed is still open
  CHECK(reviews.ready_to_send().empty());
  auto retried = reviews.retry(f.id);
  CHECK(retried.status == ReviewStatus::approved);
  auto c2 = claim_one(store, f.id, "sender-2");
  CHECK(c2.claim() == 2);
  CHECK(c2.attempts == 2);
  CHECK(reviews.mark_sent(f.id, c2.claim()).status == ReviewStatus::sent);

  // pending -> superseded (by a newer suggestion)
  auto p1 = reviews.suggest(d, reply("103", 3, "first"));
  auto p2 = reviews.suggest(d, reply("104", 4, "second"));
  auto old = reviews.get(p1.id);
  CHECK(old->status == ReviewStatus::superseded);
  CHECK(old->reason == "replaced by suggestion " + std::to_string(p2.id));
  CHECK(reviews.current(d)->id == p2.id);

  auto h = reviews.history(d);
  REQUIRE(h.size() == 5);
  CHECK(h.front().id == p2.id);
  CHECK(h.back().id == s.id);
  CHECK(to_json(h.front())["status"] == "pending_approval");
}

TEST_CASE_TEMPLATE("reviews: refused moves are conflicts naming the suggestion and the move", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& reviews = store.reviews();
  UserId user = new_user(store);
  // One dialog per starting status.
  std::map<ReviewStatus, Suggestion> in;
  int chat = 0;
  // The approved one last: the others are claimed one at a time on the way.
  for (auto st : {ReviewStatus::pending_approval, ReviewStatus::rejected, ReviewStatus::sent,
                  ReviewStatus::failed, ReviewStatus::superseded, ReviewStatus::approved}) {
    ConversationId d = new_dialog(store, user, "chat-" + std::to_string(++chat));
    Suggestion s = reviews.suggest(d, reply("1", 0, "text"));
    switch (st) {
      case ReviewStatus::pending_approval:
        break;
      case ReviewStatus::approved:
        s = reviews.approve(s.id);
        break;
      case ReviewStatus::rejected:
        s = reviews.reject(s.id);
        break;
      case ReviewStatus::sent:
      case ReviewStatus::failed: {
        reviews.approve(s.id);
        auto c = claim_one(store, s.id);
        s = st == ReviewStatus::sent ? reviews.mark_sent(s.id, c.claim())
                                     : reviews.mark_failed(s.id, c.claim(), "boom");
        break;
      }
      case ReviewStatus::superseded:
        reviews.suggest(d, reply("2", 1, "newer"));
        s = *reviews.get(s.id);
        break;
    }
    REQUIRE(s.status == st);
    in[st] = s;
  }
  // The approved one is claimed: a claim token exists for the outcomes.
  auto held = claim_one(store, in[ReviewStatus::approved].id);

  enum class Move { approve, reject, retry, sent, failed };
  struct Refused {
    ReviewStatus from;
    Move move;
    const char* expected;  // in the message
  };
  const Refused table[] = {
      {ReviewStatus::pending_approval, Move::retry, "pending_approval -> approved"},
      {ReviewStatus::pending_approval, Move::sent, "pending_approval -> sent"},
      {ReviewStatus::pending_approval, Move::failed, "pending_approval -> failed"},
      {ReviewStatus::approved, Move::approve, "approved -> approved"},
      {ReviewStatus::approved, Move::reject, "approved -> rejected"},
      {ReviewStatus::approved, Move::retry, "approved -> approved"},
      {ReviewStatus::rejected, Move::approve, "rejected -> approved"},
      {ReviewStatus::rejected, Move::reject, "rejected -> rejected"},
      {ReviewStatus::rejected, Move::retry, "rejected -> approved"},
      {ReviewStatus::rejected, Move::sent, "rejected -> sent"},
      {ReviewStatus::rejected, Move::failed, "rejected -> failed"},
      {ReviewStatus::sent, Move::approve, "sent -> approved"},
      {ReviewStatus::sent, Move::reject, "sent -> rejected"},
      {ReviewStatus::sent, Move::retry, "sent -> approved"},
      {ReviewStatus::sent, Move::sent, "sent -> sent"},
      {ReviewStatus::sent, Move::failed, "sent -> failed"},
      {ReviewStatus::failed, Move::approve, "failed -> approved"},
      {ReviewStatus::failed, Move::reject, "failed -> rejected"},
      {ReviewStatus::failed, Move::sent, "failed -> sent"},
      {ReviewStatus::failed, Move::failed, "failed -> failed"},
      {ReviewStatus::superseded, Move::approve, "superseded -> approved"},
      {ReviewStatus::superseded, Move::reject, "superseded -> rejected"},
      {ReviewStatus::superseded, Move::retry, "superseded -> approved"},
      {ReviewStatus::superseded, Move::sent, "superseded -> sent"},
      {ReviewStatus::superseded, Move::failed, "superseded -> failed"},
  };
  const std::string before = dump(db);
  for (const auto& row : table) {
    const Suggestion& s = in[row.from];
    // A token that would be valid if the status allowed it.
    const std::int64_t token = std::max<std::int64_t>(1, s.attempts);
    CAPTURE(to_string(row.from));
    CAPTURE(row.expected);
    try {
      switch (row.move) {
        case Move::approve:
          reviews.approve(s.id, std::string("edited"));
          break;
        case Move::reject:
          reviews.reject(s.id);
          break;
        case Move::retry:
          reviews.retry(s.id);
          break;
        case Move::sent:
          reviews.mark_sent(s.id, token);
          break;
        case Move::failed:
          reviews.mark_failed(s.id, token, "x");
          break;
      }
      FAIL("the move was allowed");
    } catch (const Error& e) {
      CHECK(e.code() == ErrorCode::conflict);
      const std::string what = e.what();
      CHECK(what.find("suggestion " + std::to_string(s.id)) != std::string::npos);
      CHECK(what.find(row.expected) != std::string::npos);
    }
  }
  CHECK(dump(db) == before);
  // Unknown suggestions are not found.
  CHECK_ERROR_CODE(reviews.approve(999999), ErrorCode::not_found);
  CHECK_ERROR_CODE(reviews.mark_sent(999999, 1), ErrorCode::not_found);
  CHECK_FALSE(reviews.get(999999).has_value());
  // The held claim still works.
  CHECK(reviews.mark_sent(held.id, held.claim()).status == ReviewStatus::sent);
}

TEST_CASE_TEMPLATE("reviews: edit, then approve: the edit is what is sent", B, CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& reviews = store.reviews();
  ConversationId d = new_dialog(store, new_user(store), "chat");
  auto s = reviews.suggest(d, reply("7", 0, "Sure thing!!"));
  auto a = reviews.approve(s.id, std::string("Sure thing. Привет 👋"));
  CHECK(a.status == ReviewStatus::approved);
  CHECK(a.suggested_text == "Sure thing!!");
  CHECK(a.edited_text == "Sure thing. Привет 👋");
  CHECK(a.text() == "Sure thing. Привет 👋");
  auto c = claim_one(store, s.id);
  CHECK(c.text() == "Sure thing. Привет 👋");
  CHECK(reviews.get(s.id)->text() == "Sure thing. Привет 👋");
}

TEST_CASE_TEMPLATE("reviews: a new suggestion supersedes the open one", B, CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& reviews = store.reviews();
  ConversationId d = new_dialog(store, new_user(store), "chat");
  ConversationId other = new_dialog(store, new_user(store, "bob"), "other");
  auto o = reviews.suggest(other, reply("1", 0, "other dialog"));

  // An approved one (not being sent) is replaced too: the newest reply wins.
  auto s1 = reviews.suggest(d, reply("1", 0, "one"));
  reviews.approve(s1.id);
  auto s2 = reviews.suggest(d, reply("2", 1, "two"));
  CHECK(reviews.get(s1.id)->status == ReviewStatus::superseded);
  // So is a failed one.
  reviews.approve(s2.id);
  auto c = claim_one(store, s2.id);
  reviews.mark_failed(s2.id, c.claim(), "network");
  auto s3 = reviews.suggest(d, reply("3", 2, "three"));
  CHECK(reviews.get(s2.id)->status == ReviewStatus::superseded);
  CHECK(reviews.current(d)->id == s3.id);
  // Another dialog's suggestion is untouched.
  CHECK(reviews.get(o.id)->status == ReviewStatus::pending_approval);

  // A suggestion answering an older message than the open one is stale.
  const std::string before = dump(db);
  CHECK_ERROR_CODE(reviews.suggest(d, reply("2", 1, "late worker")), ErrorCode::conflict);
  CHECK(dump(db) == before);
  // The same message may be answered again (a regenerated reply).
  auto s4 = reviews.suggest(d, reply("3", 2, "three, again"));
  CHECK(reviews.get(s3.id)->status == ReviewStatus::superseded);

  // While a sender holds a live claim, the open one cannot be replaced.
  reviews.approve(s4.id);
  auto held = claim_one(store, s4.id);
  const std::string held_state = dump(db);
  try {
    reviews.suggest(d, reply("4", 3, "four"));
    FAIL("superseded a suggestion being sent");
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::conflict);
    CHECK(std::string(e.what()).find("suggestion " + std::to_string(s4.id)) != std::string::npos);
    CHECK(std::string(e.what()).find("being sent") != std::string::npos);
  }
  CHECK(dump(db) == held_state);
  reviews.mark_sent(s4.id, held.claim());
  auto s5 = reviews.suggest(d, reply("4", 3, "four"));
  CHECK(reviews.current(d)->id == s5.id);
  CHECK(count(db, "review_items WHERE status IN ('pending_approval', 'approved', 'failed')") ==
        "2");
}

TEST_CASE_TEMPLATE("reviews: a stored user message invalidates the pending suggestion", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& reviews = store.reviews();
  auto& conv = store.conversations();
  ConversationId d = new_dialog(store, new_user(store), "chat");
  ConversationId other = new_dialog(store, new_user(store, "bob"), "other");
  auto o = reviews.suggest(other, reply("50", 0, "other"));

  auto s = reviews.suggest(d, reply("100", 0, "reply to 100"));
  // The message it answers, stored after the suggestion: not newer.
  conv.append(d, message(Role::user, "question", std::string("100")));
  // Messages of other roles do not invalidate.
  conv.append(d, message(Role::assistant, "typing...", std::string("101")));
  conv.append(d, message(Role::system, "note"));
  conv.append(d, message(Role::tool, "tool output"));
  CHECK(reviews.get(s.id)->status == ReviewStatus::pending_approval);
  // A newer user message does, in the same append.
  auto m = conv.append(d, message(Role::user, "and another thing", std::string("102")));
  auto got = reviews.get(s.id);
  CHECK(got->status == ReviewStatus::superseded);
  REQUIRE(got->reason.has_value());
  CHECK(got->reason->find(std::to_string(m.id)) != std::string::npos);
  CHECK_FALSE(reviews.current(d).has_value());
  CHECK(reviews.get(o.id)->status == ReviewStatus::pending_approval);

  // A user message without a platform id counts too; so does a batch, and
  // a keyed append.
  auto s2 = reviews.suggest(d, reply("102", 1, "reply to 102"));
  conv.append(d, message(Role::user, "no platform id"));
  CHECK(reviews.get(s2.id)->status == ReviewStatus::superseded);
  auto s3 = reviews.suggest(d, reply("103", 2, "reply to 103"));
  conv.append_batch(d,
                    {message(Role::assistant, "a"), message(Role::user, "b", std::string("104"))});
  CHECK(reviews.get(s3.id)->status == ReviewStatus::superseded);
  auto s4 = reviews.suggest(d, reply("104", 3, "reply to 104"));
  conv.append_batch(d, {message(Role::user, "again", std::string("104"))});
  CHECK(reviews.get(s4.id)->status == ReviewStatus::pending_approval);
  NewMessage keyed = message(Role::user, "keyed", std::string("105"));
  keyed.client_key = "105";
  conv.append(d, keyed);
  CHECK(reviews.get(s4.id)->status == ReviewStatus::superseded);

  // An approved suggestion stays: the user decided to send it.
  auto s5 = reviews.suggest(d, reply("105", 4, "reply to 105"));
  reviews.approve(s5.id);
  conv.append(d, message(Role::user, "more", std::string("106")));
  CHECK(reviews.get(s5.id)->status == ReviewStatus::approved);

  // A rolled-back append invalidates nothing.
  auto s6 = reviews.suggest(other, reply("51", 1, "other again"));
  CHECK_THROWS_AS(store.transaction([&] {
    conv.append(other, message(Role::user, "rolled back", std::string("52")));
    throw std::runtime_error("abort");
  }),
                  std::runtime_error);
  CHECK(reviews.get(s6.id)->status == ReviewStatus::pending_approval);
}

TEST_CASE_TEMPLATE("reviews: explicit invalidation by a newer platform message", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& reviews = store.reviews();
  ConversationId d = new_dialog(store, new_user(store), "chat");
  CHECK_FALSE(reviews.invalidate(d, "9", at_minute(9)));  // nothing open
  auto s = reviews.suggest(d, reply("10", 10, "reply"));
  CHECK_FALSE(reviews.invalidate(d, "10", at_minute(10)));  // the message it answers
  CHECK_FALSE(reviews.invalidate(d, "9", at_minute(9)));    // an older one
  CHECK(reviews.get(s.id)->status == ReviewStatus::pending_approval);
  CHECK(reviews.invalidate(d, "11", at_minute(11)));
  auto got = reviews.get(s.id);
  CHECK(got->status == ReviewStatus::superseded);
  CHECK(got->reason->find("'11'") != std::string::npos);
  CHECK_FALSE(reviews.invalidate(d, "12", at_minute(12)));
  // Approved ones stay.
  auto a = reviews.suggest(d, reply("12", 12, "reply"));
  reviews.approve(a.id);
  CHECK_FALSE(reviews.invalidate(d, "13", at_minute(13)));
  CHECK(reviews.get(a.id)->status == ReviewStatus::approved);
  CHECK_ERROR_CODE(reviews.invalidate(d, "", at_minute(13)), ErrorCode::invalid_argument);
}

TEST_CASE_TEMPLATE("reviews: auto-send dialogs need no approval", B, CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& reviews = store.reviews();
  UserId user = new_user(store);
  ConversationId manual = new_dialog(store, user, "manual");
  ConversationId autod = new_dialog(store, user, "auto", {DialogType::private_chat, true, true});
  auto m = reviews.suggest(manual, reply("1", 0, "manual"));
  auto a = reviews.suggest(autod, reply("1", 0, "auto"));
  auto ready = reviews.ready_to_send();
  REQUIRE(ready.size() == 1);
  CHECK(ready[0].id == a.id);
  // Still pending for the user until a sender claims it.
  CHECK(reviews.pending(user).items.size() == 2);
  auto c = claim_one(store, a.id);
  CHECK(c.status == ReviewStatus::approved);
  CHECK(c.auto_approved);
  CHECK(c.decided_at.has_value());
  CHECK(reviews.mark_sent(a.id, c.claim()).status == ReviewStatus::sent);
  CHECK(reviews.get(m.id)->status == ReviewStatus::pending_approval);

  // An auto-send dialog's suggestion can still be edited and approved by
  // the user first; turning auto-send off takes it out of the ready list.
  auto a2 = reviews.suggest(autod, reply("2", 1, "auto two"));
  DialogUpdate off;
  off.auto_send = false;
  store.dialogs().update(autod, off);
  CHECK(reviews.ready_to_send().empty());
  CHECK(reviews.claim_to_send("s", 10, 60s).empty());
  auto approved = reviews.approve(a2.id, std::string("edited"));
  CHECK_FALSE(approved.auto_approved);
  auto c2 = claim_one(store, a2.id);
  CHECK_FALSE(c2.auto_approved);
  CHECK(c2.text() == "edited");
}

TEST_CASE_TEMPLATE("reviews: pending suggestions of a user, a page at a time", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& reviews = store.reviews();
  UserId alice = new_user(store);
  UserId bob = new_user(store, "bob");
  std::vector<SuggestionId> expected;
  for (int i = 0; i < 7; ++i) {
    ConversationId d = new_dialog(store, alice, "a" + std::to_string(i));
    auto s = reviews.suggest(d, reply("1", i, "for alice " + std::to_string(i)));
    if (i == 3) {
      reviews.approve(s.id);  // no longer pending
    } else if (i == 5) {
      reviews.reject(s.id);
    } else {
      expected.push_back(s.id);
    }
  }
  ConversationId bd = new_dialog(store, bob, "b");
  auto bs = reviews.suggest(bd, reply("1", 0, "for bob"));
  std::vector<SuggestionId> seen;
  PendingQuery q;
  q.limit = 2;
  int pages = 0;
  do {
    auto page = reviews.pending(alice, q);
    for (const auto& s : page.items) {
      CHECK(s.user_id == alice);
      CHECK(s.status == ReviewStatus::pending_approval);
      seen.push_back(s.id);
    }
    q.cursor = page.next_cursor;
    ++pages;
  } while (!q.cursor.empty() && pages < 10);
  CHECK(seen == expected);
  CHECK(pages == 3);
  auto b = reviews.pending(bob);
  REQUIRE(b.items.size() == 1);
  CHECK(b.items[0].id == bs.id);
  CHECK(b.next_cursor.empty());
  CHECK(reviews.pending(bob + 100).items.empty());
  PendingQuery bad;
  bad.cursor = "garbage";
  CHECK_ERROR_CODE(reviews.pending(alice, bad), ErrorCode::invalid_argument);
  bad.cursor = "p1.-9223372036854775808.1";  // before the year 0001 (fuzz/fuzz_cursor)
  CHECK_ERROR_CODE(reviews.pending(alice, bad), ErrorCode::invalid_argument);
  bad.cursor.clear();
  bad.limit = 0;
  CHECK_ERROR_CODE(reviews.pending(alice, bad), ErrorCode::invalid_argument);
}

TEST_CASE_TEMPLATE("reviews: concurrent senders never claim the same reply", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  constexpr int kReplies = 60;
  constexpr int kSenders = 4;
  {
    auto store = db.open();
    UserId user = new_user(store);
    for (int i = 0; i < kReplies; ++i) {
      // Half approved by the user, half in auto-send dialogs.
      bool autosend = i % 2 == 0;
      ConversationId d = new_dialog(store, user, "c" + std::to_string(i),
                                    {DialogType::private_chat, true, autosend});
      auto s = store.reviews().suggest(d, reply("1", 0, "reply " + std::to_string(i)));
      if (!autosend) store.reviews().approve(s.id);
    }
  }
  std::promise<void> go;
  std::shared_future<void> gate = go.get_future().share();
  std::vector<std::vector<SuggestionId>> sent(kSenders);
  std::atomic<int> errors{0};
  auto sender = [&](int i) {
    auto store = db.open();
    const std::string name = "sender-" + std::to_string(i);
    gate.wait();
    for (;;) {
      auto batch = store.reviews().claim_to_send(name, 3, 60s);
      if (batch.empty()) break;
      for (const auto& s : batch) {
        if (s.claimed_by != name || s.status != ReviewStatus::approved) ++errors;
        try {
          store.reviews().mark_sent(s.id, s.claim());
          sent[static_cast<std::size_t>(i)].push_back(s.id);
        } catch (const Error&) {
          ++errors;
        }
      }
    }
  };
  std::vector<std::thread> threads;
  for (int i = 0; i < kSenders; ++i) threads.emplace_back(sender, i);
  go.set_value();
  for (auto& t : threads) t.join();
  CHECK(errors.load() == 0);
  std::vector<SuggestionId> all;
  for (const auto& v : sent) all.insert(all.end(), v.begin(), v.end());
  std::set<SuggestionId> unique(all.begin(), all.end());
  CHECK(all.size() == static_cast<std::size_t>(kReplies));
  CHECK(unique.size() == static_cast<std::size_t>(kReplies));
  CHECK(count(db, "review_items WHERE status = 'sent' AND attempts = 1") ==
        std::to_string(kReplies));
}

TEST_CASE_TEMPLATE("reviews: an expired claim is claimed again; the stale claim is refused", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& reviews = store.reviews();
  ConversationId d = new_dialog(store, new_user(store), "chat");
  auto s = reviews.suggest(d, reply("1", 0, "hello"));
  reviews.approve(s.id);
  auto first = claim_one(store, s.id, "crashed", 1ms);
  // A live claim is not ready; wait until this one's lease has surely
  // expired (no assertion on how long that took).
  while (now() <= *first.claim_expires_at) std::this_thread::sleep_for(2ms);
  std::this_thread::sleep_for(2ms);
  auto ready = reviews.ready_to_send();
  REQUIRE(ready.size() == 1);
  auto second = claim_one(store, s.id, "healthy");
  CHECK(second.claim() == first.claim() + 1);
  CHECK(second.claimed_by == "healthy");
  CHECK(reviews.claim_to_send("third", 10, 60s).empty());
  const std::string before = dump(db);
  try {
    reviews.mark_sent(s.id, first.claim());
    FAIL("a stale claim recorded an outcome");
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::conflict);
    CHECK(std::string(e.what()).find("stale") != std::string::npos);
    CHECK(std::string(e.what()).find("suggestion " + std::to_string(s.id)) != std::string::npos);
  }
  CHECK_ERROR_CODE(reviews.mark_failed(s.id, first.claim(), "late"), ErrorCode::conflict);
  CHECK(dump(db) == before);
  CHECK(reviews.mark_sent(s.id, second.claim()).status == ReviewStatus::sent);

  // An expired claim nobody took over still records its outcome.
  auto t = reviews.suggest(d, reply("2", 1, "again"));
  reviews.approve(t.id);
  auto slow = claim_one(store, t.id, "slow", 1ms);
  while (now() <= *slow.claim_expires_at) std::this_thread::sleep_for(2ms);
  // Past its lease, the claimed reply may still be on its way: a newer
  // suggestion does not replace it until the outcome is recorded.
  const std::string in_flight = dump(db);
  CHECK_ERROR_CODE(reviews.suggest(d, reply("3", 2, "newer")), ErrorCode::conflict);
  CHECK(dump(db) == in_flight);
  auto done = reviews.mark_failed(t.id, slow.claim(), "timeout");
  CHECK(done.status == ReviewStatus::failed);
  // After a retry the old token is stale too.
  reviews.retry(t.id);
  CHECK_ERROR_CODE(reviews.mark_sent(t.id, slow.claim()), ErrorCode::conflict);
}

TEST_CASE_TEMPLATE("reviews: bad input is refused and writes nothing", B, CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& reviews = store.reviews();
  auto& dialogs = store.dialogs();
  UserId user = new_user(store);
  ConversationId d = new_dialog(store, user, "chat");
  ConversationId plain = store.conversations().start({}).id;
  auto s = reviews.suggest(d, reply("1", 0, "hello"));
  const std::string before = dump(db);
  const std::string rows = count(db, "review_items") + "/" + count(db, "dialogs");

  auto expect = [&](auto&& call, ErrorCode code, const std::string& names) {
    try {
      call();
      FAIL("accepted: " << names);
    } catch (const Error& e) {
      CHECK_MESSAGE(e.code() == code, e.what());
      CHECK_MESSAGE(std::string(e.what()).find(names) != std::string::npos, e.what());
    }
  };
  const auto inv = ErrorCode::invalid_argument;
  expect([&] { reviews.suggest(d, reply("2", 1, "")); }, inv, "suggestion text is empty");
  expect([&] { reviews.suggest(d, reply("2", 1, " \n\t ")); }, inv, "suggestion text is empty");
  expect([&] { reviews.suggest(d, reply("2", 1, std::string(65537, 'x'))); }, inv,
         "suggestion text is 65537 bytes");
  expect([&] { reviews.suggest(d, reply("2", 1, "bad \xff utf-8")); }, inv, "suggestion text");
  expect([&] { reviews.suggest(d, reply("", 1, "text")); }, inv, "answered message id");
  expect([&] { reviews.suggest(plain, reply("2", 1, "text")); }, ErrorCode::not_found,
         "conversation " + std::to_string(plain) + " has no dialog");
  expect([&] { reviews.suggest(plain + 1000, reply("2", 1, "text")); }, ErrorCode::not_found,
         "has no dialog");
  expect([&] { reviews.approve(s.id, std::string()); }, inv, "edited suggestion text is empty");
  expect([&] { reviews.approve(s.id, std::string(70000, 'y')); }, inv, "edited suggestion text");
  expect([&] { reviews.reject(s.id, std::string(5000, 'r')); }, inv, "rejection reason");
  expect([&] { reviews.claim_to_send("s", 10, 0ms); }, inv, "claim lease of 0 ms");
  expect([&] { reviews.claim_to_send("s", 10, -5ms); }, inv, "claim lease");
  expect([&] { reviews.claim_to_send("s", 10, 25h); }, inv, "claim lease");
  expect([&] { reviews.claim_to_send("", 10, 1s); }, inv, "sender is empty");
  expect([&] { reviews.claim_to_send("s", 0, 1s); }, inv, "claim batch size 0");
  expect([&] { reviews.claim_to_send("s", 1001, 1s); }, inv, "claim batch size");
  expect([&] { reviews.mark_sent(s.id, 0); }, inv, "claim token 0");
  expect([&] { reviews.mark_failed(s.id, 1, ""); }, inv, "send error is empty");
  expect([&] { reviews.mark_failed(s.id, 1, std::string(5000, 'e')); }, inv, "send error");
  expect([&] { reviews.ready_to_send(0); }, inv, "limit");
  expect([&] { reviews.history(d, 0); }, inv, "limit");
  expect([&] { dialogs.configure(plain + 1000); }, ErrorCode::not_found,
         "conversation " + std::to_string(plain + 1000) + " not found");
  expect(
      [&] {
        dialogs.configure(d, {static_cast<DialogType>(7), true, false});
      },
      inv, "dialog type");
  expect([&] { dialogs.advance_cursor(d, std::nullopt, "", at_minute(1)); }, inv,
         "new last message id is empty");
  expect([&] { dialogs.advance_cursor(d, std::string(""), "1", at_minute(1)); }, inv,
         "expected last message id is empty");
  // A conflict writes nothing either.
  expect([&] { reviews.retry(s.id); }, ErrorCode::conflict,
         "suggestion " + std::to_string(s.id) + " is pending_approval");
  CHECK(dump(db) == before);
  CHECK(count(db, "review_items") + "/" + count(db, "dialogs") == rows);
}

TEST_CASE_TEMPLATE("reviews: deleting a conversation or its user removes dialog and suggestions", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& reviews = store.reviews();
  UserId alice = new_user(store);
  UserId bob = new_user(store, "bob");
  ConversationId a = new_dialog(store, alice, "a");
  ConversationId b = new_dialog(store, bob, "b");
  ConversationId keep = new_dialog(store, bob, "keep");
  reviews.suggest(a, reply("1", 0, "x"));
  reviews.suggest(a, reply("2", 1, "y"));
  reviews.suggest(b, reply("1", 0, "z"));
  auto k = reviews.suggest(keep, reply("1", 0, "kept"));
  CHECK(count(db, "review_items") == "4");

  REQUIRE(store.conversations().remove(a));
  CHECK(count(db, "dialogs") == "2");
  CHECK(count(db, "review_items") == "2");
  CHECK_FALSE(store.dialogs().get(a).has_value());

  // Removing only the dialog state takes its suggestions with it.
  REQUIRE(store.dialogs().remove(b));
  CHECK(count(db, "review_items") == "1");
  testing::delete_user_by_sql(db, bob);
  CHECK(count(db, "dialogs") == "0");
  CHECK(count(db, "review_items") == "0");
  CHECK_FALSE(reviews.get(k.id).has_value());

  // Purging final suggestions.
  ConversationId c = new_dialog(store, alice, "c");
  auto s1 = reviews.suggest(c, reply("1", 0, "one"));
  reviews.reject(s1.id);
  reviews.suggest(c, reply("2", 1, "two"));
  CHECK(reviews.purge(now() - 1h) == 0);
  CHECK(reviews.purge(now() + 1s) == 1);
  CHECK(count(db, "review_items") == "1");
}

TEST_CASE_TEMPLATE(
    "dialogs: a transaction that advances the cursor and appends never deadlocks "
    "with concurrent appends",
    B, CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  ConversationId d = new_dialog(store, new_user(store), "chat");
  std::atomic<bool> stop{false};
  std::atomic<int> appended{0};
  std::string appender_error;  // written by the appender before it stops
  std::atomic<bool> appender_failed{false};
  std::thread appender([&] {
    auto other = db.open();
    try {
      for (int i = 0; !stop; ++i) {
        other.conversations().append(d, message(Role::user, "incoming " + std::to_string(i)));
        ++appended;
        // Concurrent, not a hammer: SQLite's busy handler is not fair, and
        // a writer that never pauses can starve the other past its timeout.
        std::this_thread::sleep_for(200us);
      }
    } catch (const std::exception& e) {
      appender_error = e.what();
      appender_failed = true;
    }
  });
  std::optional<std::string> last;
  std::string worker_error;
  try {
    // 40 rounds; before each, the appender has appended once more (SQLite's
    // one writer would otherwise let this loop starve it).
    for (int i = 1; i <= 40; ++i) {
      const int seen = appended;
      const auto give_up = std::chrono::steady_clock::now() + 20s;
      while (appended == seen && !appender_failed && std::chrono::steady_clock::now() < give_up) {
        std::this_thread::sleep_for(1ms);
      }
      const std::string id = std::to_string(i);
      store.transaction([&] {
        CHECK(store.dialogs().advance_cursor(d, last, id, at_minute(i)));
        store.conversations().append(d, message(Role::assistant, "processed " + id));
        store.dialogs().mark_checked(d);
        store.reviews().suggest(d, reply(id, i, "reply " + id));
      });
      last = id;
    }
  } catch (const std::exception& e) {
    worker_error = e.what();  // the thread must be joined before failing
  }
  stop = true;
  appender.join();
  CHECK_MESSAGE(appender_error.empty(), appender_error);
  CHECK_MESSAGE(worker_error.empty(), worker_error);
  CHECK(appended.load() >= 40);
  CHECK(store.dialogs().get(d)->last_message_id == "40");
}

TEST_CASE("reviews: the PostgreSQL trigger finds its tables from any search_path") {
  testing::TestDb db("postgresql");
  if (!db.ready()) return;
  auto store = db.open();
  ConversationId d = new_dialog(store, new_user(store), "chat");
  auto s = store.reviews().suggest(d, reply("1", 0, "hello"));
  const std::string url = db.url();
  const std::string schema = url.substr(url.find("search_path%3D") + 14);
  // A session whose search_path does not name the schema, as a SQL tool's.
  testing::raw_exec(db, "SET search_path TO public; INSERT INTO " + schema +
                            ".messages (conversation_id, role, content, created_at, updated_at) "
                            "VALUES (" +
                            std::to_string(d) + ", 'user', 'hi', now(), now())");
  CHECK(store.reviews().get(s.id)->status == ReviewStatus::superseded);
}
