// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
//
// The finance bot's conversation manager in-process, on each backend: what it
// stores, sends and writes to the sheet.

#include <unistd.h>

#include <filesystem>
#include <stdexcept>

#include "bot.hpp"
#include "support.hpp"

using namespace convstore;
using finance_bot::Bot;
using finance_bot::IncomingMessage;
using finance_bot::Reply;
using finance_bot::Update;

namespace {

// Records what the bot sends; ids 900, 901, ...; throws while `fail`.
class FakeMessenger : public finance_bot::Messenger {
 public:
  std::optional<std::int64_t> send(const Reply& reply, const IncomingMessage&) override {
    if (fail) throw std::runtime_error("network down");
    sent.push_back(reply);
    return next++;
  }
  std::vector<Reply> sent;
  std::int64_t next = 900;
  bool fail = false;
};

Update message(std::int64_t update_id, std::int64_t message_id, const std::string& chat,
               const std::string& text, std::optional<std::int64_t> reply_to = std::nullopt) {
  Update u;
  u.update_id = update_id;
  IncomingMessage m;
  m.message_id = message_id;
  m.chat_id = chat;
  m.user_id = chat;
  m.username = "user" + chat;
  m.text = text;
  m.reply_to = reply_to;
  m.date = 1767258000 + update_id;
  u.message = m;
  return u;
}

// A message of user `user` in the group chat "-100".
Update group_message(std::int64_t update_id, std::int64_t message_id, const std::string& user,
                     const std::string& text, std::optional<std::int64_t> reply_to = std::nullopt) {
  Update u = message(update_id, message_id, "-100", text, reply_to);
  u.message->user_id = user;
  u.message->username = "user" + user;
  return u;
}

// A bot on a fresh database of backend B.
struct BotFixture {
  explicit BotFixture(const testing::TestDb& db)
      : store(db.open()), sheet(dir.file("finance.csv")), bot(store, sheet, messenger) {}
  testing::TempDir dir;
  Store store;
  finance_bot::CsvSheet sheet;
  FakeMessenger messenger;
  Bot bot;
  ConversationStore& cs() { return store.conversations(); }
};

}  // namespace

TEST_CASE_TEMPLATE("finance_bot bot: a question answered by reply completes with its sheet row", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  BotFixture f(db);
  CHECK(f.bot.next_offset() == 0);

  CHECK(f.bot.handle(message(1, 10, "42", "coffee 300")) == Bot::Outcome::processed);
  REQUIRE(f.messenger.sent.size() == 1);
  CHECK(f.messenger.sent[0].text == "Which account did you pay from (cash, card, bank)?");
  CHECK(f.messenger.sent[0].reply_to == std::optional<std::int64_t>(10));
  auto c = f.cs().find("telegram:42:10");
  REQUIRE(c.has_value());
  CHECK(c->status == ConversationStatus::active);
  CHECK(c->kind == std::optional<std::string>("expense"));
  CHECK(c->agent == std::optional<std::string>("finance_bot"));
  CHECK(c->active_agent == std::optional<std::string>("ExpenseAgent"));
  auto open = f.cs().open_questions(c->id);
  REQUIRE(open.size() == 1);
  CHECK(open[0].platform_message_id == std::optional<std::string>("900"));
  CHECK(open[0].missing_fields == Json::array({"account"}));
  CHECK(open[0].agent == "ExpenseAgent");
  auto partial = f.cs().latest_data(c->id, DataKind::partial);
  REQUIRE(partial.has_value());
  CHECK(partial->data["amount"] == 300);
  CHECK(partial->data["description"] == "coffee");
  CHECK(f.cs().latest_data(c->id, DataKind::missing_fields)->data == Json::array({"account"}));
  CHECK(f.sheet.rows().empty());

  CHECK(f.bot.handle(message(2, 11, "42", "cash", 900)) == Bot::Outcome::processed);
  REQUIRE(f.messenger.sent.size() == 2);
  CHECK(f.messenger.sent[1].text == "Recorded expense: coffee 300 from cash (food), row 1.");
  CHECK(f.messenger.sent[1].reply_to == std::optional<std::int64_t>(11));
  c = f.cs().get(c->id);
  CHECK(c->status == ConversationStatus::completed);
  CHECK(c->external_ref == std::optional<std::string>("1"));
  auto complete = f.cs().latest_data(c->id, DataKind::complete);
  REQUIRE(complete.has_value());
  CHECK(complete->data["account"] == "cash");
  CHECK(complete->data["sheet_row"] == 1);
  CHECK(f.cs().data_history(c->id, DataKind::partial).size() == 2);
  CHECK(f.cs().open_questions(c->id).empty());
  auto questions = f.cs().questions(c->id);
  REQUIRE(questions.size() == 1);
  CHECK(questions[0].answer == std::optional<std::string>("cash"));

  auto messages = f.cs().recent(c->id, 10);
  REQUIRE(messages.size() == 4);
  CHECK(testing::contents(messages) ==
        "coffee 300,Which account did you pay from (cash, card, bank)?,cash,"
        "Recorded expense: coffee 300 from cash (food), row 1.");
  CHECK(messages[0].platform_message_id == std::optional<std::string>("10"));
  CHECK(messages[1].role == Role::assistant);
  CHECK(messages[1].platform_message_id == std::optional<std::string>("900"));
  CHECK(messages[1].reply_to_platform_id == std::optional<std::string>("10"));
  CHECK(messages[2].reply_to_platform_id == std::optional<std::string>("900"));
  CHECK(messages[3].platform_message_id == std::optional<std::string>("901"));

  auto rows = f.sheet.rows();
  REQUIRE(rows.size() == 1);
  REQUIRE(rows[0].size() == finance_bot::CsvSheet::header().size());
  CHECK(rows[0][0] == "1");
  CHECK(rows[0][1] == "2026-01-01 09:00:01");  // the first message's time
  CHECK(rows[0][2] == "expense");
  CHECK(rows[0][3] == "300");
  CHECK(rows[0][4] == "coffee");
  CHECK(rows[0][5] == "cash");
  CHECK(rows[0][7] == "food");
  CHECK(rows[0][10] == std::to_string(c->id));
  CHECK(f.bot.next_offset() == 3);
}

TEST_CASE_TEMPLATE("finance_bot bot: an update processed twice is harmless", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  BotFixture f(db);

  // The reply cannot be sent: nothing is committed, the update comes again.
  f.messenger.fail = true;
  CHECK_THROWS(f.bot.handle(message(1, 10, "42", "salary 5000")));
  CHECK(f.bot.next_offset() == 0);
  CHECK(f.sheet.rows().size() == 1);  // written before the send
  f.messenger.fail = false;
  CHECK(f.bot.handle(message(1, 10, "42", "salary 5000")) == Bot::Outcome::processed);
  REQUIRE(f.messenger.sent.size() == 1);
  CHECK(f.messenger.sent[0].text == "Recorded income: salary 5000 to bank, row 1.");
  CHECK(f.sheet.rows().size() == 1);  // not written twice
  auto c = f.cs().find("telegram:42:10");
  REQUIRE(c.has_value());
  CHECK(c->message_count == 2);
  CHECK(c->status == ConversationStatus::completed);
  CHECK(c->external_ref == std::optional<std::string>("1"));

  // The same update again, and the same message in a new update.
  CHECK(f.bot.handle(message(1, 10, "42", "salary 5000")) == Bot::Outcome::skipped);
  CHECK(f.bot.handle(message(2, 10, "42", "salary 5000")) == Bot::Outcome::duplicate);
  CHECK(f.bot.next_offset() == 3);
  CHECK(f.messenger.sent.size() == 1);
  CHECK(f.sheet.rows().size() == 1);
  CHECK(f.cs().get(c->id)->message_count == 2);
  CHECK(f.store.stats().conversations == 1);
}

TEST_CASE_TEMPLATE("finance_bot bot: the next message answers the open question", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  BotFixture f(db);
  f.bot.handle(message(1, 1, "42", "lunch"));
  f.bot.handle(message(2, 2, "42", "650"));            // answers "How much was it?"
  f.bot.handle(message(3, 3, "42", "taxi 300 card"));  // names an amount: a new operation
  f.bot.handle(message(4, 4, "42", "card"));           // answers the lunch's account question
  REQUIRE(f.messenger.sent.size() == 4);
  CHECK(f.messenger.sent[0].text == "How much was it?");
  CHECK(f.messenger.sent[1].text == "Which account did you pay from (cash, card, bank)?");
  CHECK(f.messenger.sent[2].text == "Recorded expense: taxi 300 from card (transport), row 1.");
  CHECK(f.messenger.sent[3].text == "Recorded expense: lunch 650 from card (food), row 2.");
  auto lunch = f.cs().find("telegram:42:1");
  REQUIRE(lunch.has_value());
  CHECK(lunch->status == ConversationStatus::completed);
  CHECK(lunch->external_ref == std::optional<std::string>("2"));
  CHECK(f.cs().questions(lunch->id).size() == 2);

  // Something that is not understood is asked again; /cancel abandons.
  f.bot.handle(message(5, 5, "42", "coffee 300"));
  f.bot.handle(message(6, 6, "42", "??"));  // nothing usable in it
  CHECK(f.messenger.sent.back().text ==
        "Sorry, I did not get that. Which account did you pay from (cash, card, bank)?");
  f.bot.handle(message(7, 7, "42", "/cancel"));
  CHECK(f.messenger.sent.back().text == "Cancelled expense: coffee 300 from ? (food).");
  auto coffee = f.cs().find("telegram:42:5");
  REQUIRE(coffee.has_value());
  CHECK(coffee->status == ConversationStatus::abandoned);
  CHECK(f.cs().open_questions(coffee->id).empty());
  f.bot.handle(message(8, 8, "42", "/help"));
  auto help = f.cs().find("telegram:42:8");
  REQUIRE(help.has_value());
  CHECK(help->kind == std::optional<std::string>("information"));
  CHECK(help->status == ConversationStatus::completed);
  CHECK(f.sheet.rows().size() == 2);
}

TEST_CASE_TEMPLATE("finance_bot bot: retention abandons idle conversations, a reply reopens them",
                   B, CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  BotFixture f(db);
  f.bot.handle(message(1, 10, "42", "coffee 300"));
  f.bot.handle(message(2, 20, "77", "salary 5000"));  // completed: never abandoned
  const auto id = f.cs().find("telegram:42:10")->id;

  CHECK(f.bot.abandon_idle(std::chrono::hours(24)).totals.conversations_abandoned == 0);
  auto later = convstore::now() + std::chrono::hours(25);
  CHECK(f.bot.abandon_idle(std::chrono::hours(24), later).totals.conversations_abandoned == 1);
  CHECK(f.cs().get(id)->status == ConversationStatus::abandoned);
  CHECK(f.cs().find("telegram:77:20")->status == ConversationStatus::completed);

  // The user answers the question after all: the conversation is reopened
  // and completes.
  f.bot.handle(message(3, 11, "42", "card", 900));
  CHECK(f.messenger.sent.back().text == "Recorded expense: coffee 300 from card (food), row 2.");
  CHECK(f.cs().get(id)->status == ConversationStatus::completed);
  CHECK(f.cs().get(id)->external_ref == std::optional<std::string>("2"));
}

TEST_CASE_TEMPLATE("finance_bot bot: a category once given is remembered as the user's template", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  BotFixture f(db);
  f.bot.handle(message(1, 1, "42", "flowers 2000 card"));
  CHECK(f.messenger.sent.back().text ==
        "Which category is it (food, transport, housing, health, entertainment, clothes, "
        "other)?");
  f.bot.handle(message(2, 2, "42", "gifts", 900));
  CHECK(f.messenger.sent.back().text == "Recorded expense: flowers 2000 from card (gifts), row 1.");
  auto user = f.cs().find_user("telegram", "42");
  REQUIRE(user.has_value());
  auto templates = f.store.templates().list("expense", user->id);
  REQUIRE(templates.size() == 1);
  CHECK(templates[0].name == "flowers");
  CHECK(templates[0].sample_input == "flowers 2000 card");
  CHECK(templates[0].expected_output["category"] == "gifts");
  CHECK(templates[0].use_count == 1);

  // The same description again: complete at once, with the learned category.
  f.bot.handle(message(3, 3, "42", "flowers 500 cash"));
  CHECK(f.messenger.sent.back().text == "Recorded expense: flowers 500 from cash (gifts), row 2.");
  templates = f.store.templates().list("expense", user->id);
  REQUIRE(templates.size() == 1);
  CHECK(templates[0].use_count == 2);

  // Another user has not taught the bot anything.
  f.bot.handle(message(4, 1, "77", "flowers 100 cash"));
  CHECK(f.messenger.sent.back().text ==
        "Which category is it (food, transport, housing, health, entertainment, clothes, "
        "other)?");
  // An explicit #category wins, and becomes what is remembered.
  f.bot.handle(message(5, 4, "42", "flowers 300 card #home"));
  CHECK(f.messenger.sent.back().text == "Recorded expense: flowers 300 from card (home), row 3.");
  templates = f.store.templates().list("expense", user->id);
  REQUIRE(templates.size() == 1);
  CHECK(templates[0].expected_output["category"] == "home");
}

TEST_CASE_TEMPLATE("finance_bot bot: /timezone sets the user's zone, the sheet's dates follow", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  BotFixture f(db);
  f.bot.handle(message(1, 1, "42", "/timezone Mars/Olympus"));
  CHECK(f.messenger.sent.back().text ==
        "I do not know the time zone 'Mars/Olympus' (try Europe/Berlin).");
  auto user = f.cs().find_user("telegram", "42");
  REQUIRE(user.has_value());
  CHECK(user->time_zone == "UTC");

  f.bot.handle(message(2, 2, "42", "/timezone Asia/Tokyo"));
  CHECK(f.messenger.sent.back().text ==
        "Time zone set to Asia/Tokyo: the sheet's dates are in it from now on.");
  CHECK(f.cs().get_user(user->id)->time_zone == "Asia/Tokyo");
  f.bot.handle(message(3, 3, "42", "/tz"));
  CHECK(f.messenger.sent.back().text ==
        "Your time zone is Asia/Tokyo. Set it with /timezone Europe/Berlin (an IANA name).");

  f.bot.handle(message(4, 4, "42", "coffee 300 cash"));  // 2026-01-01 09:00:04 UTC
  auto rows = f.sheet.rows();
  REQUIRE(rows.size() == 1);
  CHECK(rows[0][1] == "2026-01-01 18:00:04");  // UTC+9
}

// Titles and learned templates keep the first 200 bytes of a text: cut where
// a UTF-8 character ends, or convstore would refuse the text and the message
// (and the row already written) would be lost.
TEST_CASE_TEMPLATE("finance_bot bot: a long non-ASCII message is recorded whole", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  BotFixture f(db);
  std::string description = "x";
  for (int i = 0; i < 150; ++i) description += "ж";  // byte 200 is inside a character
  CHECK(f.bot.handle(message(1, 10, "42", description + " 300 cash")) == Bot::Outcome::processed);
  REQUIRE(f.messenger.sent.size() == 1);
  auto c = f.cs().find("telegram:42:10");
  REQUIRE(c.has_value());
  REQUIRE(c->title.has_value());
  CHECK(c->title->size() == 199);
  CHECK(description.compare(0, 199, *c->title) == 0);
  // The category is asked, answered, and learned under the description's
  // first 200 bytes; the same description later uses it.
  CHECK(f.bot.handle(message(2, 11, "42", "gifts", 900)) == Bot::Outcome::processed);
  CHECK(f.cs().get(c->id)->status == ConversationStatus::completed);
  CHECK(f.bot.handle(message(3, 12, "42", description + " 500 cash")) == Bot::Outcome::processed);
  auto rows = f.sheet.rows();
  REQUIRE(rows.size() == 2);
  CHECK(rows[0][4] == description);
  CHECK(rows[1][4] == description);
  CHECK(rows[1][7] == "gifts");
}

// The sheet stands in for Google Sheets: a description a spreadsheet would
// run as a formula is written as text.
TEST_CASE_TEMPLATE("finance_bot bot: formula-like text goes into the sheet as text", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  BotFixture f(db);
  CHECK(f.bot.handle(message(1, 10, "42", "@sum coffee 300 cash")) == Bot::Outcome::processed);
  auto rows = f.sheet.rows();
  REQUIRE(rows.size() == 1);
  CHECK(rows[0][3] == "300");
  REQUIRE_FALSE(rows[0][4].empty());
  CHECK(rows[0][4][0] == '\'');
  CHECK(rows[0][4].find("@sum") == 1);
}

TEST_CASE_TEMPLATE("finance_bot bot: a complete operation while a question waits is a new one", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  BotFixture f(db);
  f.bot.handle(message(1, 1, "42", "lunch"));
  REQUIRE(f.messenger.sent.size() == 1);
  CHECK(f.messenger.sent[0].text == "How much was it?");
  // A whole operation by itself, though the bot waits for an amount: it is
  // recorded as it is, and the lunch keeps waiting for its amount.
  f.bot.handle(message(2, 2, "42", "taxi 450 card"));
  CHECK(f.messenger.sent.back().text == "Recorded expense: taxi 450 from card (transport), row 1.");
  auto lunch = f.cs().find("telegram:42:1");
  REQUIRE(lunch.has_value());
  CHECK(lunch->status == ConversationStatus::active);
  CHECK(f.cs().open_questions(lunch->id).size() == 1);
  CHECK_FALSE(f.cs().latest_data(lunch->id, DataKind::partial)->data.contains("amount"));
  auto taxi = f.cs().find("telegram:42:2");
  REQUIRE(taxi.has_value());
  CHECK(taxi->status == ConversationStatus::completed);

  // What is not complete by itself still answers the lunch's question.
  f.bot.handle(message(3, 3, "42", "650"));
  CHECK(f.messenger.sent.back().text == "Which account did you pay from (cash, card, bank)?");
  f.bot.handle(message(4, 4, "42", "cash"));
  CHECK(f.messenger.sent.back().text == "Recorded expense: lunch 650 from cash (food), row 2.");
  CHECK(f.sheet.rows().size() == 2);
}

TEST_CASE_TEMPLATE("finance_bot bot: a cancelled entry stays cancelled when replied to", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  BotFixture f(db);
  f.bot.handle(message(1, 10, "42", "coffee 300"));  // question 900
  f.bot.handle(message(2, 11, "42", "/cancel", 900));
  CHECK(f.messenger.sent.back().text == "Cancelled expense: coffee 300 from ? (food).");
  auto coffee = f.cs().find("telegram:42:10");
  REQUIRE(coffee.has_value());
  CHECK(coffee->status == ConversationStatus::abandoned);
  CHECK(coffee->metadata.value("cancelled", false));
  const auto messages = coffee->message_count;

  // The question answered after all: not reopened, not recorded.
  f.bot.handle(message(3, 12, "42", "cash", 900));
  CHECK(f.messenger.sent.back().text ==
        "That entry was cancelled. Send it again as a new message to record it.");
  coffee = f.cs().get(coffee->id);
  CHECK(coffee->status == ConversationStatus::abandoned);
  CHECK(coffee->message_count == messages);
  CHECK(f.sheet.rows().empty());
  // Retention leaves it as it is.
  CHECK(f.bot.abandon_idle(std::chrono::hours(24), convstore::now() + std::chrono::hours(25))
            .totals.conversations_abandoned == 0);
  CHECK(f.cs().get(coffee->id)->metadata.value("cancelled", false));
  // Cancelled twice: said so.
  f.bot.handle(message(5, 14, "42", "/cancel", 900));
  CHECK(f.messenger.sent.back().text == "That entry is already cancelled.");
  // A complete operation sent as a reply to it is recorded as a new one.
  f.bot.handle(message(6, 15, "42", "coffee 300 cash", 900));
  CHECK(f.messenger.sent.back().text == "Recorded expense: coffee 300 from cash (food), row 1.");
  CHECK(f.cs().get(coffee->id)->status == ConversationStatus::abandoned);

  // An entry retention abandoned (not cancelled) is still reopened by a reply.
  f.bot.handle(message(7, 20, "42", "tea 100"));
  CHECK(f.messenger.sent.back().text == "Which account did you pay from (cash, card, bank)?");
  const std::int64_t question = f.messenger.next - 1;
  CHECK(f.bot.abandon_idle(std::chrono::hours(24), convstore::now() + std::chrono::hours(25))
            .totals.conversations_abandoned == 1);
  f.bot.handle(message(8, 21, "42", "card", question));
  CHECK(f.messenger.sent.back().text == "Recorded expense: tea 100 from card (food), row 2.");
}

TEST_CASE_TEMPLATE("finance_bot bot: in a group, only the one who started an entry answers it", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  BotFixture f(db);
  f.bot.handle(group_message(1, 10, "1", "coffee 300"));  // A's question: 900
  REQUIRE(f.messenger.sent.size() == 1);
  auto coffee = f.cs().find("telegram:-100:10");
  REQUIRE(coffee.has_value());

  // B replies to A's question: A's entry is not touched.
  f.bot.handle(group_message(2, 11, "2", "card", 900));
  CHECK(f.messenger.sent.back().text ==
        "That question is for the person who started that entry. Send your own operation as a "
        "new message.");
  coffee = f.cs().get(coffee->id);
  CHECK(coffee->status == ConversationStatus::active);
  CHECK(coffee->message_count == 2);
  CHECK(f.cs().open_questions(coffee->id).size() == 1);
  CHECK_FALSE(f.cs().latest_data(coffee->id, DataKind::partial)->data.contains("account"));
  // B cannot cancel it either.
  f.bot.handle(group_message(3, 12, "2", "/cancel", 900));
  CHECK(f.messenger.sent.back().text == "You can only cancel your own entries.");
  CHECK(f.cs().get(coffee->id)->status == ConversationStatus::active);
  CHECK_FALSE(f.cs().get(coffee->id)->metadata.contains("cancelled"));
  // B's complete operation sent as a reply is B's own new entry.
  f.bot.handle(group_message(4, 13, "2", "taxi 450 card", 900));
  CHECK(f.messenger.sent.back().text == "Recorded expense: taxi 450 from card (transport), row 1.");
  auto taxi = f.cs().find("telegram:-100:13");
  REQUIRE(taxi.has_value());
  CHECK(taxi->user_id == f.cs().find_user("telegram", "2")->id);
  CHECK(f.sheet.rows().size() == 1);

  // A answers: A's entry completes.
  f.bot.handle(group_message(5, 14, "1", "cash", 900));
  CHECK(f.messenger.sent.back().text == "Recorded expense: coffee 300 from cash (food), row 2.");
  CHECK(f.cs().get(coffee->id)->status == ConversationStatus::completed);
}
