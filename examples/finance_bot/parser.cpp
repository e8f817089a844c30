// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#include "parser.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <regex>
#include <set>

namespace finance_bot {

namespace {

const std::set<std::string>& accounts() {
  static const std::set<std::string> names = {"cash", "card", "bank", "savings", "wallet"};
  return names;
}

const std::set<std::string>& filler() {
  static const std::set<std::string> words = {
      "a",   "an",     "the", "for", "on",      "at",    "from", "of", "my",   "with", "in",
      "rub", "rubles", "usd", "eur", "dollars", "euros", "via",  "by", "into", "-",    "and"};
  return words;
}

const std::map<std::string, std::string>& type_words() {
  static const std::map<std::string, std::string> words = {
      {"expense", "expense"}, {"spent", "expense"}, {"paid", "expense"},      {"bought", "expense"},
      {"buy", "expense"},     {"pay", "expense"},   {"income", "income"},     {"got", "income"},
      {"received", "income"}, {"earned", "income"}, {"transfer", "transfer"}, {"moved", "transfer"},
      {"move", "transfer"}};
  return words;
}

const std::set<std::string>& income_words() {
  static const std::set<std::string> words = {"salary",   "bonus",     "refund",
                                              "wage",     "wages",     "dividends",
                                              "interest", "freelance", "cashback"};
  return words;
}

const std::map<std::string, std::string>& category_words() {
  static const std::map<std::string, std::string> words = {{"coffee", "food"},
                                                           {"tea", "food"},
                                                           {"lunch", "food"},
                                                           {"dinner", "food"},
                                                           {"breakfast", "food"},
                                                           {"cafe", "food"},
                                                           {"restaurant", "food"},
                                                           {"pizza", "food"},
                                                           {"groceries", "food"},
                                                           {"grocery", "food"},
                                                           {"snack", "food"},
                                                           {"bread", "food"},
                                                           {"taxi", "transport"},
                                                           {"bus", "transport"},
                                                           {"metro", "transport"},
                                                           {"train", "transport"},
                                                           {"fuel", "transport"},
                                                           {"petrol", "transport"},
                                                           {"parking", "transport"},
                                                           {"rent", "housing"},
                                                           {"electricity", "housing"},
                                                           {"internet", "housing"},
                                                           {"phone", "housing"},
                                                           {"pharmacy", "health"},
                                                           {"medicine", "health"},
                                                           {"doctor", "health"},
                                                           {"dentist", "health"},
                                                           {"gym", "health"},
                                                           {"cinema", "entertainment"},
                                                           {"movie", "entertainment"},
                                                           {"concert", "entertainment"},
                                                           {"book", "entertainment"},
                                                           {"books", "entertainment"},
                                                           {"clothes", "clothes"},
                                                           {"shoes", "clothes"},
                                                           {"jacket", "clothes"}};
  return words;
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

std::vector<std::string> split_words(std::string_view text) {
  std::vector<std::string> words;
  std::string current;
  for (char c : text) {
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
      if (!current.empty()) words.push_back(lower(current));
      current.clear();
    } else {
      current += c;
    }
  }
  if (!current.empty()) words.push_back(lower(current));
  return words;
}

// Strips trailing punctuation that is not part of a word ("cash." "coffee,").
std::string trim_punctuation(std::string w) {
  while (!w.empty() && (w.back() == '.' || w.back() == ',' || w.back() == '!' || w.back() == '?' ||
                        w.back() == ';' || w.back() == ':')) {
    w.pop_back();
  }
  return w;
}

const std::set<std::string>& currency_words() {
  static const std::set<std::string> words = {"rub",  "rubles", "ruble",  "usd",     "eur",
                                              "euro", "euros",  "dollar", "dollars", "$",
                                              "€",    "£",      "₽",    "gbp",     "pounds"};
  return words;
}

// Words after a number that make it a count, not an amount ("2 tickets").
const std::set<std::string>& count_words() {
  static const std::set<std::string> words = {
      "x",      "pcs",    "pc",      "pieces",  "piece",  "items", "item",    "tickets",
      "ticket", "times",  "people",  "persons", "person", "kg",    "g",       "l",
      "liters", "litres", "bottles", "bottle",  "cups",   "cup",   "packs",   "pack",
      "boxes",  "box",    "nights",  "night",   "days",   "hours", "coffees", "beers"};
  return words;
}

bool all_digits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// A number with a currency sign or code stuck to it: "$12", "300rub", "12€".
struct MarkedNumber {
  std::string number;
  bool marked = false;
};
MarkedNumber strip_currency(std::string word) {
  MarkedNumber out;
  for (const char* sign : {"$", "€", "£", "₽"}) {
    const std::string_view sv(sign);
    if (word.size() > sv.size() && word.compare(0, sv.size(), sv) == 0) {
      word.erase(0, sv.size());
      out.marked = true;
      break;
    }
  }
  for (const char* suffix : {"$", "€", "£", "₽", "rub", "usd", "eur", "r"}) {
    const std::string_view sv(suffix);
    if (word.size() > sv.size() && word.compare(word.size() - sv.size(), sv.size(), sv) == 0 &&
        word[word.size() - sv.size() - 1] >= '0' && word[word.size() - sv.size() - 1] <= '9') {
      word.erase(word.size() - sv.size());
      out.marked = true;
      break;
    }
  }
  out.number = std::move(word);
  return out;
}

// An amount (see parse_text for the forms). `marked` tells whether a
// currency sign or code was stuck to it.
std::optional<Json> parse_amount(const std::string& word, bool* marked = nullptr) {
  const MarkedNumber n = strip_currency(word);
  if (marked != nullptr) *marked = n.marked;
  std::string s = n.number;
  if (s.empty() || s.size() > 40) return std::nullopt;
  // Decimals: a '.' or ',' followed by one or two digits at the end.
  std::string cents;
  char decimal = 0;
  for (std::size_t len : {std::size_t{2}, std::size_t{1}}) {
    if (s.size() > len + 1 && (s[s.size() - len - 1] == '.' || s[s.size() - len - 1] == ',') &&
        all_digits(std::string_view(s).substr(s.size() - len))) {
      decimal = s[s.size() - len - 1];
      cents = s.substr(s.size() - len);
      s.erase(s.size() - len - 1);
      break;
    }
  }
  // The whole part: plain digits, or groups of three after one to three
  // digits, separated by ',' '.' or a space (one kind, not the decimal mark).
  std::string digits;
  if (all_digits(s)) {
    digits = s;
  } else {
    if (s.size() < 5) return std::nullopt;
    const std::size_t first = s.find_first_not_of("0123456789");
    const char sep = s[first];
    if (first == 0 || first > 3 || sep == decimal || (sep != ',' && sep != '.' && sep != ' ')) {
      return std::nullopt;
    }
    std::size_t groups = 0;
    digits = s.substr(0, first);
    for (std::size_t i = first; i < s.size(); i += 4) {
      if (s[i] != sep || i + 4 > s.size() || !all_digits(std::string_view(s).substr(i + 1, 3))) {
        return std::nullopt;
      }
      digits += s.substr(i + 1, 3);
      ++groups;
    }
    // "12.345" alone may be 12.345 or 12345: not taken as an amount.
    if (sep == '.' && groups == 1 && decimal == 0) return std::nullopt;
  }
  if (digits.size() > 12) return std::nullopt;
  const long long whole = std::stoll(digits);
  if (cents.empty()) {
    if (whole <= 0) return std::nullopt;
    return Json(static_cast<std::int64_t>(whole));
  }
  if (cents.size() == 1) cents += "0";
  const long long c = std::stoll(cents);
  if (whole == 0 && c == 0) return std::nullopt;
  if (c == 0) return Json(static_cast<std::int64_t>(whole));
  return Json(static_cast<double>(whole * 100 + c) / 100.0);
}

// Joins "1 500" (a number written with spaces between its groups of three)
// into one word "1 500".
std::vector<std::string> join_digit_groups(const std::vector<std::string>& words) {
  static const std::regex head(R"(^(?:\$|€|£|₽)?[0-9]{1,3}(?: [0-9]{3})*$)");
  static const std::regex group(
      R"(^[0-9]{3}(?:[.,][0-9]{1,2})?(?:\$|€|£|₽|rub|usd|eur|r)?[.,!?;:]*$)");
  std::vector<std::string> out;
  for (const auto& w : words) {
    if (!out.empty() && std::regex_match(out.back(), head) && std::regex_match(w, group)) {
      out.back() += " " + w;
    } else {
      out.push_back(w);
    }
  }
  return out;
}

std::string join(const std::vector<std::string>& words) {
  std::string out;
  for (const auto& w : words) {
    if (!out.empty()) out += ' ';
    out += w;
  }
  return out;
}

bool has(const Json& op, const char* field) {
  return op.contains(field) && !op[field].is_null() &&
         !(op[field].is_string() && op[field].get<std::string>().empty());
}

}  // namespace

ParsedText parse_text(std::string_view text) {
  ParsedText out;
  std::vector<std::string> words;
  for (auto& w : join_digit_groups(split_words(text))) {
    w = trim_punctuation(w);
    if (!w.empty()) words.push_back(std::move(w));
  }

  // The amount: among the numbers of the message, the first one with a
  // currency marker ("$12", "300rub", "300 rub"); else the largest one that
  // is not a count ("2 tickets", "3 x"); numbers not chosen are free words.
  std::optional<std::size_t> chosen;
  bool chosen_marked = false;
  for (std::size_t i = 0; i < words.size(); ++i) {
    bool marked = false;
    auto amount = parse_amount(words[i], &marked);
    if (!amount) continue;
    const std::string next = i + 1 < words.size() ? words[i + 1] : "";
    const std::string prev = i > 0 ? words[i - 1] : "";
    marked = marked || currency_words().count(next) != 0 || prev == "$" || prev == "€" ||
             prev == "£" || prev == "₽";
    if (marked) {
      if (!chosen_marked) {
        chosen = i;
        chosen_marked = true;
        out.fields["amount"] = *amount;
      }
      continue;
    }
    if (chosen_marked || count_words().count(next) != 0) continue;
    if (!chosen || amount->get<double>() > out.fields["amount"].get<double>()) {
      chosen = i;
      out.fields["amount"] = *amount;
    }
  }

  bool to_next = false;  // the previous word was "to"
  for (std::size_t i = 0; i < words.size(); ++i) {
    const std::string& word = words[i];
    if (chosen && i == *chosen) continue;
    if (word == "to") {
      to_next = true;
      continue;
    }
    const bool after_to = to_next;
    to_next = false;
    if (accounts().count(word) != 0) {
      ++out.accounts_named;
      if (after_to || out.fields.contains("account")) {
        if (!out.fields.contains("to_account")) out.fields["to_account"] = word;
      } else {
        out.fields["account"] = word;
      }
      continue;
    }
    if (word.size() > 1 && word[0] == '#') {
      out.fields["category"] = word.substr(1);
      continue;
    }
    auto type = type_words().find(word);
    if (type != type_words().end()) {
      if (!out.fields.contains("type")) out.fields["type"] = type->second;
      continue;
    }
    if (filler().count(word) != 0 || currency_words().count(word) != 0) continue;
    out.free_words.push_back(word);
  }
  return out;
}

std::optional<std::string> infer_category(std::string_view description) {
  for (const auto& w : split_words(description)) {
    auto it = category_words().find(trim_punctuation(w));
    if (it != category_words().end()) return it->second;
  }
  return std::nullopt;
}

std::optional<Json> parse_operation(std::string_view text) {
  ParsedText p = parse_text(text);
  if (!p.fields.contains("amount") && !p.fields.contains("type") && p.free_words.empty()) {
    return std::nullopt;
  }
  Json op = Json::object();
  std::string type;
  if (p.fields.contains("type")) {
    type = p.fields["type"].get<std::string>();
  } else {
    type = "expense";
    for (const auto& w : p.free_words) {
      if (income_words().count(w) != 0) type = "income";
    }
  }
  op["type"] = type;
  if (p.fields.contains("amount")) op["amount"] = p.fields["amount"];
  if (!p.free_words.empty() && type != "transfer") op["description"] = join(p.free_words);
  if (p.fields.contains("account")) op["account"] = p.fields["account"];
  if (type == "transfer" && p.fields.contains("to_account")) {
    op["to_account"] = p.fields["to_account"];
  }
  if (type == "income" && !op.contains("account")) op["account"] = "bank";
  if (type == "expense") {
    if (p.fields.contains("category")) {
      op["category"] = p.fields["category"];
    } else if (op.contains("description")) {
      if (auto c = infer_category(op["description"].get<std::string>())) op["category"] = *c;
    }
  }
  return op;
}

std::vector<std::string> required_fields(std::string_view type) {
  if (type == "income") return {"amount", "description", "account"};
  if (type == "transfer") return {"amount", "account", "to_account"};
  return {"amount", "description", "account", "category"};
}

Json missing_fields(const Json& op) {
  Json out = Json::array();
  const std::string type = op.value("type", "expense");
  for (const auto& f : required_fields(type)) {
    if (!has(op, f.c_str())) out.push_back(f);
  }
  return out;
}

Filled apply_answer(const Json& op, const Json& missing, std::string_view text) {
  Filled out{op, false};
  std::set<std::string> open;
  for (const auto& f : missing) open.insert(f.get<std::string>());
  auto fill = [&](const std::string& field, const Json& value) {
    if (open.count(field) == 0 || has(out.op, field.c_str())) return false;
    out.op[field] = value;
    open.erase(field);
    out.changed = true;
    return true;
  };

  ParsedText p = parse_text(text);
  if (p.fields.contains("amount")) fill("amount", p.fields["amount"]);
  if (p.fields.contains("category")) fill("category", p.fields["category"]);
  // An account word answers "account" first, then "to_account".
  for (const char* key : {"account", "to_account"}) {
    if (!p.fields.contains(key)) continue;
    const Json value = p.fields[key];
    if (!fill("account", value)) fill("to_account", value);
  }
  // Free text answers only the question that was asked (the first missing
  // field), and only when that field takes free text: an account is never
  // taken from a word that is not an account name.
  if (!p.free_words.empty() && !missing.empty() && missing[0].is_string()) {
    const std::string asked = missing[0].get<std::string>();
    if (asked == "description") {
      fill(asked, join(p.free_words));
    } else if (asked == "category") {
      fill(asked, p.free_words.front());
    }
  }
  if (out.op.value("type", "expense") == "expense" && !has(out.op, "category") &&
      has(out.op, "description")) {
    if (auto c = infer_category(out.op["description"].get<std::string>())) {
      out.op["category"] = *c;
      out.changed = true;
    }
  }
  return out;
}

std::string question_for(const Json& op, std::string_view field) {
  const std::string type = op.value("type", "expense");
  if (field == "amount") {
    if (type == "income") return "How much did you receive?";
    if (type == "transfer") return "How much did you move?";
    return "How much was it?";
  }
  if (field == "description") {
    return type == "income" ? "Where did it come from?" : "What was it for?";
  }
  if (field == "account") {
    if (type == "income") return "Which account did it go to (cash, card, bank)?";
    if (type == "transfer") return "From which account (cash, card, bank, savings)?";
    return "Which account did you pay from (cash, card, bank)?";
  }
  if (field == "to_account") return "To which account (cash, card, bank, savings)?";
  if (field == "category") {
    return "Which category is it (food, transport, housing, health, entertainment, clothes, "
           "other)?";
  }
  return "What is the " + std::string(field) + "?";
}

std::string format_amount(const Json& amount) {
  if (amount.is_number_integer()) return std::to_string(amount.get<std::int64_t>());
  if (amount.is_number()) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.2f", amount.get<double>());
    return buf;
  }
  return "?";
}

std::string describe(const Json& op) {
  const std::string type = op.value("type", "expense");
  const std::string amount = op.contains("amount") ? format_amount(op["amount"]) : "?";
  if (type == "transfer") {
    return "transfer: " + amount + " from " + op.value("account", "?") + " to " +
           op.value("to_account", "?");
  }
  if (type == "income") {
    return "income: " + op.value("description", "?") + " " + amount + " to " +
           op.value("account", "?");
  }
  return "expense: " + op.value("description", "?") + " " + amount + " from " +
         op.value("account", "?") + " (" + op.value("category", "?") + ")";
}

std::string help_text() {
  return "Send me an operation, for example \"coffee 300 cash\", \"salary 5000\" or "
         "\"transfer 100 cash card\". I ask for what is missing; reply to my question to "
         "answer it. /cancel drops the entry I am asking about; /timezone Europe/Berlin sets the "
         "time "
         "zone of the dates in the sheet.";
}

}  // namespace finance_bot
