// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#pragma once

// The finance bot's "agents": rule-based parsers that turn a chat message
// into an operation (expense, income, transfer), tell which fields are still
// missing, ask for them and fill them from the user's answers. No language
// model: words, numbers and a small dictionary.
//
// An operation is a JSON object (what the bot stores as its data snapshots):
//   {"type": "expense", "amount": 300, "description": "coffee",
//    "account": "cash", "category": "food"}
// with "to_account" for a transfer. Amounts are JSON numbers (integers when
// whole, else rounded to cents).

#include <convstore/convstore.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace finance_bot {

using convstore::Json;

// The words of a message sorted out: the fields it names outright and the
// words left over (a description, or a free-text answer).
struct ParsedText {
  Json fields = Json::object();  // type, amount, account, to_account, category
  std::vector<std::string> free_words;
  int accounts_named = 0;  // how many account words it held
};

// Sorts out the words of `text` (ASCII case-insensitive):
//   "300", "12.50", "12,50", "$12", "300rub", "300 rub",
//   "1,500", "1 500", "1.500,50", "1,500.50"   a number (see below)
//   cash, card, bank, savings, wallet          an account ("to X": to_account;
//                                              a second account: to_account)
//   #food                                      a category
//   spent, paid, bought / income, got, earned, received / transfer, moved
//                                              the operation type
//   for, on, from, the, rub, ...               filler, dropped
// Everything else is a free word.
//
// Numbers: digits with up to two decimals after '.' or ','; the whole part
// may be grouped by threes with ',', '.' or a space ("1,500", "1 500",
// "1.500,50"); "12.345" (a '.' and three digits, nothing else) is ambiguous
// and not a number. The amount is the first number with a currency marker
// ($ € £ ₽ stuck to it or before it, rub/usd/eur/... stuck to it or after
// it); without one, the largest number that is not a count (a number
// followed by a count word: "2 tickets", "3 x", "2 pcs"). The numbers not
// taken are free words ("bought 2 tickets 1500 card": amount 1500,
// description "2 tickets").
ParsedText parse_text(std::string_view text);

// A new operation from a message, or std::nullopt when the message names no
// amount, no description and no type (not an operation at all). The type is
// the one named, "income" when the description is an income word (salary,
// bonus, refund, ...), else "expense". Income goes to "bank" unless an account
// is named; an expense's category is inferred from its description (coffee ->
// food, taxi -> transport, ...) when there is no #category.
std::optional<Json> parse_operation(std::string_view text);

// The fields an operation of this type needs, in the order they are asked:
// expense: amount, description, account, category; income: amount,
// description, account; transfer: amount, account, to_account.
std::vector<std::string> required_fields(std::string_view type);
// The required fields `op` lacks (a JSON array of names, in asking order).
Json missing_fields(const Json& op);

// Fills `op` from the user's answer to a question about `missing` (the
// first one is the field that was asked): fields the answer names outright
// (an amount, an account name, a #category) fill missing ones; its other
// words answer only the field that was asked, and only when that field takes
// free text (description, category): an account is never a word that is not
// an account name ("650 yesterday" to "How much was it?" fills the amount
// only). Returns the new operation and whether anything was filled.
struct Filled {
  Json op;
  bool changed = false;
};
Filled apply_answer(const Json& op, const Json& missing, std::string_view text);

// The question that asks for `field` of `op` ("How much was it?").
std::string question_for(const Json& op, std::string_view field);
// One line for a recorded operation: "expense: coffee 300 from cash (food)".
std::string describe(const Json& op);
// The amount as text: "300", "12.50".
std::string format_amount(const Json& amount);
// The category an expense description suggests, or std::nullopt.
std::optional<std::string> infer_category(std::string_view description);
// The bot's help text.
std::string help_text();

}  // namespace finance_bot
