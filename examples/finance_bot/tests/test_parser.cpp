// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
//
// The finance bot's rule-based parser: messages into operations, missing
// fields, answers filling them.

#include <doctest/doctest.h>

#include <sstream>

#include "bot.hpp"
#include "parser.hpp"

using finance_bot::Json;

namespace {

Json parse(const char* text) {
  auto op = finance_bot::parse_operation(text);
  REQUIRE_MESSAGE(op.has_value(), text);
  return *op;
}

std::string missing_text(const Json& op) { return finance_bot::missing_fields(op).dump(); }

}  // namespace

TEST_CASE("finance_bot parser: a complete expense in one message") {
  Json op = parse("coffee 300 cash");
  CHECK(op["type"] == "expense");
  CHECK(op["description"] == "coffee");
  CHECK(op["amount"] == 300);
  CHECK(op["account"] == "cash");
  CHECK(op["category"] == "food");  // inferred from "coffee"
  CHECK(missing_text(op) == "[]");
  CHECK(finance_bot::describe(op) == "expense: coffee 300 from cash (food)");

  // Word order, case, filler words, punctuation and an explicit #category.
  Json other = parse("Paid 12.50 for Team Lunch with card #work.");
  CHECK(other["type"] == "expense");
  CHECK(other["amount"] == 12.5);
  CHECK(other["description"] == "team lunch");
  CHECK(other["account"] == "card");
  CHECK(other["category"] == "work");
  CHECK(missing_text(other) == "[]");
}

TEST_CASE("finance_bot parser: income is recognised by its words and goes to the bank") {
  Json op = parse("salary 5000");
  CHECK(op["type"] == "income");
  CHECK(op["amount"] == 5000);
  CHECK(op["description"] == "salary");
  CHECK(op["account"] == "bank");
  CHECK(missing_text(op) == "[]");
  CHECK(finance_bot::describe(op) == "income: salary 5000 to bank");

  Json named = parse("got 200 from grandma cash");
  CHECK(named["type"] == "income");
  CHECK(named["description"] == "grandma");
  CHECK(named["account"] == "cash");
}

TEST_CASE("finance_bot parser: transfers name two accounts") {
  Json op = parse("transfer 100 cash card");
  CHECK(op["type"] == "transfer");
  CHECK(op["amount"] == 100);
  CHECK(op["account"] == "cash");
  CHECK(op["to_account"] == "card");
  CHECK(missing_text(op) == "[]");
  CHECK(finance_bot::describe(op) == "transfer: 100 from cash to card");

  Json to = parse("moved 250,5 to savings");
  CHECK(to["type"] == "transfer");
  CHECK(to["amount"] == 250.5);
  CHECK(to["to_account"] == "savings");
  CHECK_FALSE(to.contains("account"));
  CHECK(missing_text(to) == "[\"account\"]");
  CHECK(finance_bot::question_for(to, "account") ==
        "From which account (cash, card, bank, savings)?");
}

TEST_CASE("finance_bot parser: missing fields are listed in asking order") {
  CHECK(missing_text(parse("coffee 300")) == "[\"account\"]");
  CHECK(missing_text(parse("flowers 2000 card")) == "[\"category\"]");  // no category known
  CHECK(missing_text(parse("lunch")) == "[\"amount\",\"account\"]");
  CHECK(missing_text(parse("300")) == "[\"description\",\"account\",\"category\"]");
  CHECK(missing_text(parse("income 700")) == "[\"description\"]");
  CHECK(finance_bot::question_for(parse("coffee 300"), "account") ==
        "Which account did you pay from (cash, card, bank)?");
  CHECK(finance_bot::question_for(parse("lunch"), "amount") == "How much was it?");
  CHECK(finance_bot::question_for(parse("income 700"), "description") == "Where did it come from?");
}

TEST_CASE("finance_bot parser: amounts") {
  CHECK(parse("x 12.5")["amount"] == 12.5);
  CHECK(parse("x 12,05")["amount"] == 12.05);
  CHECK(parse("x $12")["amount"] == 12);
  CHECK(parse("x 300rub")["amount"] == 300);
  CHECK(parse("x 7.00")["amount"] == 7);
  CHECK(parse("x 1 2")["amount"] == 2);  // the largest number is the amount
  CHECK_FALSE(parse("x 0 card").contains("amount"));
  CHECK_FALSE(parse("x 12.345 card").contains("amount"));
  CHECK(finance_bot::format_amount(Json(12.5)) == "12.50");
  CHECK(finance_bot::format_amount(Json(300)) == "300");
}

TEST_CASE("finance_bot parser: a message without anything to record is not an operation") {
  CHECK_FALSE(finance_bot::parse_operation("").has_value());
  CHECK_FALSE(finance_bot::parse_operation("   ").has_value());
  CHECK_FALSE(finance_bot::parse_operation("for the").has_value());
}

TEST_CASE("finance_bot parser: answers fill the missing fields") {
  Json coffee = parse("coffee 300");
  auto filled = finance_bot::apply_answer(coffee, Json::array({"account"}), "card");
  CHECK(filled.changed);
  CHECK(filled.op["account"] == "card");
  CHECK(missing_text(filled.op) == "[]");

  // A word that is not an account name does not answer the account
  // question (the bot asks again).
  for (const char* answer : {"Tinkoff", "ok", "yesterday", "thanks!"}) {
    auto other = finance_bot::apply_answer(coffee, Json::array({"account"}), answer);
    CHECK_MESSAGE(!other.changed, answer);
    CHECK_MESSAGE(!other.op.contains("account"), answer);
  }

  // Nothing usable: unchanged.
  auto none = finance_bot::apply_answer(coffee, Json::array({"account"}), "123");
  CHECK_FALSE(none.changed);
  CHECK_FALSE(none.op.contains("account"));

  // The description answered; the category follows from it.
  Json bare = parse("300");
  auto described =
      finance_bot::apply_answer(bare, finance_bot::missing_fields(bare), "taxi to the airport");
  CHECK(described.op["description"] == "taxi airport");
  CHECK(described.op["category"] == "transport");
  CHECK(missing_text(described.op) == "[\"account\"]");

  // Several fields in one answer.
  Json lunch = parse("lunch");
  auto both = finance_bot::apply_answer(lunch, finance_bot::missing_fields(lunch), "650 card");
  CHECK(both.op["amount"] == 650);
  CHECK(both.op["account"] == "card");
  CHECK(missing_text(both.op) == "[]");

  // A category question answered with a word.
  Json flowers = parse("flowers 2000 card");
  auto category = finance_bot::apply_answer(flowers, Json::array({"category"}), "gifts");
  CHECK(category.op["category"] == "gifts");

  // A transfer's destination.
  Json t = parse("transfer 100 cash");
  auto dest = finance_bot::apply_answer(t, Json::array({"to_account"}), "savings");
  CHECK(dest.op["to_account"] == "savings");
  CHECK(dest.op["account"] == "cash");
}

TEST_CASE("finance_bot updates: Bot API JSON is read in its three forms") {
  const std::string one =
      R"({"update_id": 5, "message": {"message_id": 9, "date": 100, "chat": {"id": -42},)"
      R"( "from": {"id": 7, "first_name": "A", "last_name": "B", "username": "ab"},)"
      R"( "text": "cash", "reply_to_message": {"message_id": 8}}})";
  auto u = finance_bot::update_from_json(Json::parse(one));
  CHECK(u.update_id == 5);
  REQUIRE(u.message.has_value());
  CHECK(u.message->message_id == 9);
  CHECK(u.message->chat_id == "-42");
  CHECK(u.message->user_id == "7");
  CHECK(u.message->username == std::optional<std::string>("ab"));
  CHECK(u.message->display_name == std::optional<std::string>("A B"));
  CHECK(u.message->reply_to == std::optional<std::int64_t>(8));
  CHECK(u.message->date == 100);

  // A photo has no text: an update without a message.
  auto photo = finance_bot::update_from_json(
      Json::parse(R"({"update_id": 6, "message": {"message_id": 1, "chat": {"id": 1}}})"));
  CHECK_FALSE(photo.message.has_value());
  CHECK_THROWS_AS(finance_bot::update_from_json(Json::parse(R"({"message": {}})")),
                  std::invalid_argument);

  auto count = [](const std::string& text) {
    std::istringstream in(text);
    std::vector<std::int64_t> ids;
    finance_bot::read_updates(
        in, [&](const Json& j) { ids.push_back(j["update_id"].get<std::int64_t>()); });
    return ids;
  };
  auto lines = count("{\"update_id\": 1}\n\n{\"update_id\": 2}\n");
  REQUIRE(lines.size() == 2);
  CHECK(lines[1] == 2);
  auto array = count("[\n {\"update_id\": 3},\n {\"update_id\": 4}\n]\n");
  REQUIRE(array.size() == 2);
  CHECK(array[0] == 3);
  auto response = count("{\"ok\": true,\n \"result\": [{\"update_id\": 5}]}");
  REQUIRE(response.size() == 1);
  CHECK(response[0] == 5);
  CHECK_THROWS_AS(count("{\"update_id\": 1}\nnot json\n"), std::invalid_argument);
}

TEST_CASE("finance_bot parser: free text answers only the question that was asked") {
  // "How much was it?" answered with "650 yesterday": the amount, and
  // "yesterday" is not taken for the account that is still missing.
  Json lunch = parse("lunch");
  auto amount =
      finance_bot::apply_answer(lunch, finance_bot::missing_fields(lunch), "650 yesterday");
  CHECK(amount.changed);
  CHECK(amount.op["amount"] == 650);
  CHECK_FALSE(amount.op.contains("account"));
  CHECK(missing_text(amount.op) == "[\"account\"]");
  // Words alone to the amount question fill nothing.
  auto words = finance_bot::apply_answer(lunch, finance_bot::missing_fields(lunch), "yesterday");
  CHECK_FALSE(words.changed);
  CHECK(words.op == lunch);

  // Asked for the account (the category is missing too): "gifts" is not an
  // account, and not the answer to the category question, which was not
  // asked yet.
  Json flowers = parse("flowers 2000");
  CHECK(missing_text(flowers) == "[\"account\",\"category\"]");
  auto wrong = finance_bot::apply_answer(flowers, finance_bot::missing_fields(flowers), "gifts");
  CHECK_FALSE(wrong.changed);
  // An account name (and a #category named outright) are taken.
  auto right =
      finance_bot::apply_answer(flowers, finance_bot::missing_fields(flowers), "wallet #gifts");
  CHECK(right.op["account"] == "wallet");
  CHECK(right.op["category"] == "gifts");

  // A transfer's accounts are account names only.
  Json t = parse("transfer 100 cash");
  CHECK_FALSE(finance_bot::apply_answer(t, Json::array({"to_account"}), "mom").changed);
}

TEST_CASE("finance_bot parser: which number is the amount") {
  // A number followed by a count word is a quantity; it stays in the
  // description.
  Json tickets = parse("bought 2 tickets 1500 card");
  CHECK(tickets["amount"] == 1500);
  CHECK(tickets["description"] == "2 tickets");
  CHECK(tickets["account"] == "card");
  CHECK(parse("coffee 2 x 150 cash")["amount"] == 150);
  CHECK(parse("parking 3 hours 12 cash")["amount"] == 12);
  // Without a currency marker, the largest number.
  Json tip = parse("taxi 450 tip 50 card");
  CHECK(tip["amount"] == 450);
  CHECK(tip["description"] == "taxi tip 50");
  // A currency marker wins over a larger number, stuck to it or next to it.
  CHECK(parse("room 1000 €120 card")["amount"] == 120);
  CHECK(parse("room 1000 120 eur card")["amount"] == 120);
  CHECK(parse("tip $ 50 taxi 450 card")["amount"] == 50);
  CHECK(parse("room 1000 120rub card")["amount"] == 120);
  // Only counts: no amount.
  CHECK_FALSE(parse("2 tickets card").contains("amount"));
}

TEST_CASE("finance_bot parser: thousands separators and decimals") {
  CHECK(parse("rent 1,500 card")["amount"] == 1500);
  CHECK(parse("rent 1 500 card")["amount"] == 1500);
  CHECK(parse("rent 1 500 000 card")["amount"] == 1500000);
  CHECK(parse("rent 1,234,567 card")["amount"] == 1234567);
  CHECK(parse("rent 1.500.000 card")["amount"] == 1500000);
  CHECK(parse("rent 1,500.50 card")["amount"] == 1500.5);
  CHECK(parse("rent 1.500,50 card")["amount"] == 1500.5);
  CHECK(parse("rent 1 500,50 card")["amount"] == 1500.5);
  CHECK(parse("rent $1,500 card")["amount"] == 1500);
  CHECK(parse("rent 1 500rub card")["amount"] == 1500);
  CHECK(parse("lunch 12.50 card")["amount"] == 12.5);
  CHECK(parse("lunch 1,5 card")["amount"] == 1.5);
  Json rent = parse("rent 45 000 card");
  CHECK(rent["amount"] == 45000);
  CHECK(rent["description"] == "rent");
  // Not numbers: malformed groups, mixed or repeated marks; "12.345" is
  // ambiguous.
  for (const char* text : {"x 1,5000 card", "x 1,50,000 card", "x 1,500,50 card", "x 12.345 card",
                           "x 1.500.50 card"}) {
    CHECK_MESSAGE(!parse(text).contains("amount"), text);
  }
  // One to three digits then groups of three are one number, whatever was
  // meant ("2 300": 2300).
  CHECK(parse("x 2 300 card")["amount"] == 2300);
  // Groups of three after a number that is not a group head stay apart.
  CHECK(parse("x 1500 000 card")["amount"] == 1500);
  // The answer to "How much was it?" reads them too.
  Json lunch = parse("lunch");
  CHECK(
      finance_bot::apply_answer(lunch, finance_bot::missing_fields(lunch), "1 250").op["amount"] ==
      1250);
}
