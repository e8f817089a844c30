// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#include "bot.hpp"

#include <date/tz.h>
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <fstream>
#include <istream>
#include <iterator>
#include <regex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

#include "parser.hpp"

namespace finance_bot {

using convstore::Conversation;
using convstore::ConversationStatus;
using convstore::DataKind;
using convstore::StateScope;

// ---- updates ---------------------------------------------------------------

namespace {

// The longest prefix of `s` of at most `max_bytes` bytes that does not cut
// a UTF-8 character in two (convstore refuses invalid UTF-8).
std::string utf8_prefix(const std::string& s, std::size_t max_bytes) {
  if (s.size() <= max_bytes) return s;
  std::size_t end = max_bytes;
  while (end > 0 && (static_cast<unsigned char>(s[end]) & 0xC0) == 0x80) --end;
  return s.substr(0, end);
}

// A conversation's title, and the name of a learned template: the text's
// first 200 bytes.
std::string short_text(const std::string& s) { return utf8_prefix(s, 200); }

std::string id_text(const Json& v, const char* what) {
  if (v.is_number_integer()) return std::to_string(v.get<std::int64_t>());
  if (v.is_string() && !v.get<std::string>().empty()) return v.get<std::string>();
  throw std::invalid_argument(std::string(what) + " is not an id");
}

}  // namespace

Update update_from_json(const Json& j) {
  if (!j.is_object() || !j.contains("update_id") || !j["update_id"].is_number_integer()) {
    throw std::invalid_argument("an update needs an integer \"update_id\"");
  }
  Update u;
  u.update_id = j["update_id"].get<std::int64_t>();
  if (u.update_id < 0) throw std::invalid_argument("\"update_id\" is negative");
  auto msg = j.find("message");
  if (msg == j.end() || !msg->is_object()) return u;
  auto text = msg->find("text");
  if (text == msg->end() || !text->is_string()) return u;  // a photo, a sticker, ...
  IncomingMessage m;
  if (!msg->contains("message_id") || !(*msg)["message_id"].is_number_integer()) {
    throw std::invalid_argument("update " + std::to_string(u.update_id) +
                                ": message needs an integer \"message_id\"");
  }
  m.message_id = (*msg)["message_id"].get<std::int64_t>();
  if (!msg->contains("chat") || !(*msg)["chat"].is_object() || !(*msg)["chat"].contains("id")) {
    throw std::invalid_argument("update " + std::to_string(u.update_id) +
                                ": message needs \"chat\": {\"id\": ...}");
  }
  m.chat_id = id_text((*msg)["chat"]["id"], "chat.id");
  m.user_id = m.chat_id;
  auto from = msg->find("from");
  if (from != msg->end() && from->is_object() && from->contains("id")) {
    m.user_id = id_text((*from)["id"], "from.id");
    if (from->contains("username") && (*from)["username"].is_string()) {
      m.username = (*from)["username"].get<std::string>();
    }
    std::string name = from->value("first_name", "");
    const std::string last = from->value("last_name", "");
    if (!last.empty()) name += (name.empty() ? "" : " ") + last;
    if (!name.empty()) m.display_name = name;
  }
  m.text = text->get<std::string>();
  if (msg->contains("date") && (*msg)["date"].is_number_integer()) {
    m.date = (*msg)["date"].get<std::int64_t>();
  }
  auto reply = msg->find("reply_to_message");
  if (reply != msg->end() && reply->is_object() && reply->contains("message_id") &&
      (*reply)["message_id"].is_number_integer()) {
    m.reply_to = (*reply)["message_id"].get<std::int64_t>();
  }
  u.message = std::move(m);
  return u;
}

namespace {

void each_of_document(const Json& doc, const std::function<void(const Json&)>& each) {
  if (doc.is_array()) {
    for (const auto& u : doc) each(u);
  } else if (doc.is_object() && doc.contains("result") && doc["result"].is_array()) {
    if (!doc.value("ok", true)) throw std::invalid_argument("a getUpdates response with ok false");
    for (const auto& u : doc["result"]) each(u);
  } else {
    each(doc);
  }
}

std::string trimmed(const std::string& s) {
  auto b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return {};
  auto e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

}  // namespace

void read_updates(std::istream& in, const std::function<void(const Json&)>& each) {
  std::string line;
  std::size_t number = 0;
  bool first = true;
  while (std::getline(in, line)) {
    ++number;
    const std::string t = trimmed(line);
    if (t.empty()) continue;
    Json doc = Json::parse(t, nullptr, false);
    if (doc.is_discarded()) {
      if (!first) {
        throw std::invalid_argument("line " + std::to_string(number) + " is not a JSON object");
      }
      // One JSON document over several lines (a pretty-printed array or
      // getUpdates response): read it whole.
      std::string rest(std::istreambuf_iterator<char>(in), {});
      doc = Json::parse(line + "\n" + rest, nullptr, false);
      if (doc.is_discarded()) {
        throw std::invalid_argument(
            "the input is neither JSON Lines, a JSON array of updates nor a getUpdates "
            "response");
      }
      each_of_document(doc, each);
      return;
    }
    first = false;
    each_of_document(doc, each);
  }
}

// ---- the sheet -------------------------------------------------------------

namespace {

// A text that a spreadsheet would take for a formula: it starts with = + -
// @, a tab or a carriage return and is not a plain number.
bool formula_like(const std::string& s) {
  if (s.empty() || std::string_view("=+-@\t\r").find(s[0]) == std::string_view::npos) {
    return false;
  }
  static const std::regex number(R"(-?[0-9]+(\.[0-9]+)?)");
  return !std::regex_match(s, number);
}

// A field of a CSV line: RFC 4180 quoting, and a formula-like text made
// plain text with a leading ' (OWASP's rule against CSV injection: the sheet
// stands in for Google Sheets, which would run it).
std::string csv_field(const std::string& text) {
  const std::string s = formula_like(text) ? "'" + text : text;
  if (s.find_first_of(",\"\n\r") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

// The records of a CSV text (RFC 4180 quoting).
std::vector<std::vector<std::string>> csv_records(const std::string& text) {
  std::vector<std::vector<std::string>> records;
  std::vector<std::string> record;
  std::string field;
  bool quoted = false;
  bool any = false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (quoted) {
      if (c == '"' && i + 1 < text.size() && text[i + 1] == '"') {
        field += '"';
        ++i;
      } else if (c == '"') {
        quoted = false;
      } else {
        field += c;
      }
      continue;
    }
    if (c == '"') {
      quoted = true;
      any = true;
    } else if (c == ',') {
      record.push_back(std::move(field));
      field.clear();
      any = true;
    } else if (c == '\n') {
      record.push_back(std::move(field));
      field.clear();
      records.push_back(std::move(record));
      record.clear();
      any = false;
    } else if (c != '\r') {
      field += c;
      any = true;
    }
  }
  if (any) {
    record.push_back(std::move(field));
    records.push_back(std::move(record));
  }
  return records;
}

std::string utc_time(std::int64_t unix_seconds) {
  std::time_t t = static_cast<std::time_t>(unix_seconds);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm);
  return buf;
}

// The time in the IANA zone `zone` (UTC when the zone is unknown).
std::string local_time(std::int64_t unix_seconds, const std::string& zone) {
  const date::time_zone* z = nullptr;
  try {
    z = date::locate_zone(zone);
  } catch (const std::exception&) {
    return utc_time(unix_seconds);
  }
  const date::sys_seconds at{std::chrono::seconds(unix_seconds)};
  return date::format("%Y-%m-%d %H:%M:%S", date::make_zoned(z, at));
}

bool known_zone(const std::string& zone) {
  try {
    date::locate_zone(zone);
    return true;
  } catch (const std::exception&) {
    return false;
  }
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

}  // namespace

CsvSheet::CsvSheet(std::string path) : path_(std::move(path)) {}

const std::vector<std::string>& CsvSheet::header() {
  static const std::vector<std::string> h = {"row",         "date",    "type",        "amount",
                                             "description", "account", "to_account",  "category",
                                             "user",        "chat",    "conversation"};
  return h;
}

std::vector<std::vector<std::string>> CsvSheet::rows() const {
  auto records = csv_records(slurp(path_));
  if (!records.empty()) records.erase(records.begin());  // the header
  return records;
}

std::int64_t CsvSheet::append(const Json& op, convstore::ConversationId conversation,
                              const IncomingMessage& from) {
  const auto existing = rows();
  const std::string conv = std::to_string(conversation);
  for (std::size_t i = 0; i < existing.size(); ++i) {
    if (!existing[i].empty() && existing[i].back() == conv) {
      return static_cast<std::int64_t>(i + 1);  // written before a crash: not again
    }
  }
  const std::int64_t row = static_cast<std::int64_t>(existing.size()) + 1;
  std::string text;
  const std::string current = slurp(path_);
  if (current.empty()) {
    std::string h;
    for (const auto& f : header()) h += (h.empty() ? "" : ",") + f;
    text += h + "\n";
  } else if (current.back() != '\n') {
    text += "\n";
  }
  const std::vector<std::string> fields = {std::to_string(row),
                                           op.value("date", utc_time(from.date)),
                                           op.value("type", ""),
                                           op.contains("amount") ? format_amount(op["amount"]) : "",
                                           op.value("description", ""),
                                           op.value("account", ""),
                                           op.value("to_account", ""),
                                           op.value("category", ""),
                                           from.user_id,
                                           from.chat_id,
                                           conv};
  std::string line;
  for (const auto& f : fields) line += (line.empty() ? "" : ",") + csv_field(f);
  text += line + "\n";

  int fd = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) throw std::runtime_error("cannot open " + path_ + ": " + std::strerror(errno));
  const char* p = text.data();
  std::size_t left = text.size();
  while (left > 0) {
    ssize_t n = ::write(fd, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int e = errno;
      ::close(fd);
      throw std::runtime_error("cannot write " + path_ + ": " + std::strerror(e));
    }
    p += n;
    left -= static_cast<std::size_t>(n);
  }
  ::fsync(fd);
  ::close(fd);
  return row;
}

// ---- the bot ---------------------------------------------------------------

namespace {

const char* const kStateAgent = "telegram_updates";
// The conversation metadata key /cancel sets.
const char* const kCancelled = "cancelled";

std::string first_word(const std::string& text) {
  const std::string t = trimmed(text);
  auto end = t.find_first_of(" \t\n@");
  return t.substr(0, end);
}

}  // namespace

Bot::Bot(convstore::Store& store, CsvSheet& sheet, Messenger& messenger, BotOptions options)
    : store_(store), sheet_(sheet), messenger_(messenger), options_(std::move(options)) {}

std::string Bot::agent_for(const std::string& type) {
  if (type == "expense") return "ExpenseAgent";
  if (type == "income") return "IncomeAgent";
  if (type == "transfer") return "TransferAgent";
  return "InformationAgent";
}

std::int64_t Bot::next_offset() {
  Json state = store_.agents().load_state(StateScope::named(options_.agent), kStateAgent);
  return state.value("offset", std::int64_t{0});
}

void Bot::save_offset(std::int64_t update_id) {
  store_.agents().save_state(StateScope::named(options_.agent), kStateAgent,
                             Json{{"offset", update_id + 1}});
}

convstore::NewMessage Bot::user_message(const IncomingMessage& m) const {
  convstore::NewMessage n;
  n.role = convstore::Role::user;
  n.content = m.text;
  n.platform_message_id = std::to_string(m.message_id);
  if (m.reply_to) n.reply_to_platform_id = std::to_string(*m.reply_to);
  n.client_key = "tg:" + std::to_string(m.message_id);
  n.metadata = Json{{"date", m.date}, {"from", m.user_id}};
  return n;
}

convstore::NewMessage Bot::bot_message(const Reply& reply, std::optional<std::int64_t> sent) const {
  convstore::NewMessage n;
  n.role = convstore::Role::assistant;
  n.agent = options_.agent;
  n.content = reply.text;
  if (sent) {
    n.platform_message_id = std::to_string(*sent);
    n.client_key = "tg:" + std::to_string(*sent);
  }
  if (reply.reply_to) n.reply_to_platform_id = std::to_string(*reply.reply_to);
  return n;
}

Bot::Outcome Bot::handle(const Update& update) {
  if (update.update_id < next_offset()) return Outcome::skipped;
  if (!update.message) {
    store_.transaction([&] { save_offset(update.update_id); });
    return Outcome::skipped;
  }
  const IncomingMessage& m = *update.message;
  auto& cs = store_.conversations();
  auto seen = cs.find_by_platform_id(options_.channel, m.chat_id, std::to_string(m.message_id));
  if (seen && seen->message.role == convstore::Role::user) {
    store_.transaction([&] { save_offset(update.update_id); });
    return Outcome::duplicate;
  }

  convstore::UserUpsert who(options_.channel, m.user_id);
  who.username = m.username;
  who.display_name = m.display_name;
  const convstore::UserId user = cs.upsert_user(who).id;

  const std::string command = first_word(m.text);
  if (!command.empty() && command[0] == '/') {
    if (command == "/cancel") {
      cancel(update, m, user);
    } else if (command == "/timezone" || command == "/tz") {
      const std::string t = trimmed(m.text);
      const auto space = t.find_first_of(" \t");
      const std::string zone = space == std::string::npos ? "" : trimmed(t.substr(space));
      if (zone.empty()) {
        plain_reply(update, m, user,
                    "Your time zone is " + cs.get_user(user)->time_zone +
                        ". Set it with /timezone Europe/Berlin (an IANA name).");
      } else if (!known_zone(zone)) {
        plain_reply(update, m, user,
                    "I do not know the time zone '" + zone + "' (try Europe/Berlin).");
      } else {
        convstore::UserUpdate change;
        change.time_zone = zone;
        cs.update_user(user, change);
        plain_reply(update, m, user,
                    "Time zone set to " + zone + ": the sheet's dates are in it from now on.");
      }
    } else {
      plain_reply(update, m, user, help_text());
    }
    return Outcome::processed;
  }

  // A reply to one of the bot's messages continues that message's
  // conversation (reopening it when retention abandoned it), if it is the
  // sender's own and was not cancelled.
  if (m.reply_to) {
    auto hit = cs.find_by_platform_id(options_.channel, m.chat_id, std::to_string(*m.reply_to));
    if (hit && hit->conversation.agent == options_.agent) {
      const Conversation& c = hit->conversation;
      if (c.status == ConversationStatus::active || c.status == ConversationStatus::abandoned) {
        if (c.kind && *c.kind != "information") {
          const bool own = c.user_id == std::optional<convstore::UserId>(user);
          if (own && !cancelled(c)) {
            continue_operation(update, m, c);
          } else if (complete_by_itself(m.text, user)) {
            new_operation(update, m, user);
          } else if (!own) {
            plain_reply(update, m, user,
                        "That question is for the person who started that entry. Send your own "
                        "operation as a new message.");
          } else {
            plain_reply(update, m, user,
                        "That entry was cancelled. Send it again as a new message to record it.");
          }
          return Outcome::processed;
        }
      }
    }
    // A reply to a finished conversation is read like any other message.
  }
  if (auto waiting = waiting_conversation(m, user)) {
    continue_operation(update, m, *waiting);
    return Outcome::processed;
  }
  new_operation(update, m, user);
  return Outcome::processed;
}

bool Bot::cancelled(const Conversation& c) {
  auto it = c.metadata.find(kCancelled);
  return it != c.metadata.end() && it->is_boolean() && it->get<bool>();
}

bool Bot::complete_by_itself(const std::string& text, convstore::UserId user) {
  auto op = parse_operation(text);
  if (!op) return false;
  apply_learned(*op, user);
  return missing_fields(*op).empty();
}

std::vector<Conversation> Bot::active_in_chat(const IncomingMessage& m, convstore::UserId user) {
  convstore::ConversationFilter f;
  f.user_id = user;
  f.channel = options_.channel;
  f.chat_id = m.chat_id;
  f.agent = options_.agent;
  f.status = ConversationStatus::active;
  f.limit = 20;
  return store_.conversations().list(f).items;
}

std::optional<Conversation> Bot::waiting_conversation(const IncomingMessage& m,
                                                      convstore::UserId user) {
  auto& cs = store_.conversations();
  // "taxi 450 card" is an operation by itself: a new one, even while the bot
  // waits for an answer (the entry asked about keeps waiting).
  if (complete_by_itself(m.text, user)) return std::nullopt;
  const bool names_amount = parse_text(m.text).fields.contains("amount");
  // Newest first: the most recently asked question wins.
  for (const auto& c : active_in_chat(m, user)) {
    if (cs.open_questions(c.id).empty()) continue;
    auto missing = cs.latest_data(c.id, DataKind::missing_fields);
    bool wants_amount = false;
    if (missing) {
      for (const auto& field : missing->data) wants_amount = wants_amount || field == "amount";
    }
    // "taxi 450" while the bot waits for an account is a new operation.
    if (names_amount && !wants_amount) return std::nullopt;
    return c;
  }
  return std::nullopt;
}

Conversation Bot::conversation_of(const IncomingMessage& m, convstore::UserId user,
                                  const std::string& kind) {
  convstore::NewConversation init;
  init.user_id = user;
  init.channel = options_.channel;
  init.chat_id = m.chat_id;
  init.agent = options_.agent;
  init.kind = kind;
  init.title = short_text(m.text);
  // Keyed by the message: processing it again after a crash finds the same
  // conversation.
  return store_.conversations().get_or_create(
      options_.channel + ":" + m.chat_id + ":" + std::to_string(m.message_id), init);
}

void Bot::new_operation(const Update& update, const IncomingMessage& m, convstore::UserId user) {
  auto op = parse_operation(m.text);
  if (!op) {
    plain_reply(update, m, user, "I did not understand that. " + help_text());
    return;
  }
  auto& cs = store_.conversations();
  // When it happened (the first message's time), in the user's time zone.
  auto who = cs.get_user(user);
  (*op)["date"] = local_time(m.date, who ? who->time_zone : "UTC");
  apply_learned(*op, user);
  const std::string type = (*op)["type"].get<std::string>();
  const Conversation c = conversation_of(m, user, type);

  const Json missing = missing_fields(*op);
  Reply reply{m.chat_id, "", m.message_id};
  std::optional<std::int64_t> row;
  if (missing.empty()) {
    row = sheet_.append(*op, c.id, m);
    reply.text = "Recorded " + describe(*op) + ", row " + std::to_string(*row) + ".";
  } else {
    reply.text = question_for(*op, missing[0].get<std::string>());
  }
  const auto sent = messenger_.send(reply, m);

  store_.transaction([&] {
    convstore::ConversationUpdate u;
    u.active_agent = agent_for(type);
    cs.update(c.id, u);
    cs.append(c.id, user_message(m));
    cs.save_data(c.id, DataKind::partial, *op);
    cs.save_data(c.id, DataKind::missing_fields, missing);
    cs.append(c.id, bot_message(reply, sent));
    if (row) {
      Json final_data = *op;
      final_data["sheet_row"] = *row;
      cs.complete(c.id, std::to_string(*row), final_data);
      remember(user, *op, m.text);
    } else {
      cs.ask(c.id, convstore::NewQuestion(
                       agent_for(type), reply.text, missing,
                       sent ? std::optional<std::string>(std::to_string(*sent)) : std::nullopt));
    }
    save_offset(update.update_id);
  });
}

void Bot::continue_operation(const Update& update, const IncomingMessage& m,
                             const Conversation& c) {
  auto& cs = store_.conversations();
  auto partial = cs.latest_data(c.id, DataKind::partial);
  Json op = partial ? partial->data : Json::object();
  if (!op.contains("type")) op["type"] = c.kind.value_or("expense");
  auto stored_missing = cs.latest_data(c.id, DataKind::missing_fields);
  const Json missing = stored_missing ? stored_missing->data : missing_fields(op);
  const auto open = cs.open_questions(c.id);

  Filled filled = apply_answer(op, missing, m.text);
  if (apply_learned(filled.op, c.user_id)) filled.changed = true;
  const Json now_missing = missing_fields(filled.op);
  const std::string type = filled.op["type"].get<std::string>();
  Reply reply{m.chat_id, "", m.message_id};
  std::optional<std::int64_t> row;
  if (now_missing.empty()) {
    row = sheet_.append(filled.op, c.id, m);
    reply.text = "Recorded " + describe(filled.op) + ", row " + std::to_string(*row) + ".";
  } else {
    reply.text = (filled.changed ? "" : "Sorry, I did not get that. ") +
                 question_for(filled.op, now_missing[0].get<std::string>());
  }
  const auto sent = messenger_.send(reply, m);

  store_.transaction([&] {
    if (c.status == ConversationStatus::abandoned) {
      cs.set_status(c.id, ConversationStatus::active);  // the user came back
    }
    cs.append(c.id, user_message(m));
    for (const auto& q : open) cs.answer(q.id, m.text);
    if (filled.changed) cs.save_data(c.id, DataKind::partial, filled.op);
    cs.save_data(c.id, DataKind::missing_fields, now_missing);
    cs.append(c.id, bot_message(reply, sent));
    if (row) {
      Json final_data = filled.op;
      final_data["sheet_row"] = *row;
      cs.complete(c.id, std::to_string(*row), final_data);
      remember(c.user_id, filled.op, c.title.value_or(m.text));
    } else {
      cs.ask(c.id, convstore::NewQuestion(
                       agent_for(type), reply.text, now_missing,
                       sent ? std::optional<std::string>(std::to_string(*sent)) : std::nullopt));
    }
    save_offset(update.update_id);
  });
}

namespace {

// The name of the template an operation is learned under: its description's
// first 200 bytes, when that is a valid template name (not empty, no control
// characters).
std::optional<std::string> template_name(const Json& op) {
  if (!op.contains("description") || !op["description"].is_string()) return std::nullopt;
  std::string name = short_text(op["description"].get<std::string>());
  if (name.empty()) return std::nullopt;
  for (char ch : name) {
    const auto c = static_cast<unsigned char>(ch);
    if (c < 0x20 || c == 0x7f) return std::nullopt;
  }
  return name;
}

}  // namespace

std::optional<convstore::OperationTemplate> Bot::learned(convstore::UserId user, const Json& op) {
  const auto name = template_name(op);
  if (!name) return std::nullopt;
  return store_.templates().find(user, op.value("type", "expense"), *name);
}

bool Bot::apply_learned(Json& op, std::optional<convstore::UserId> user) {
  if (!user || op.value("type", "expense") != "expense" || op.contains("category")) return false;
  auto t = learned(*user, op);
  if (!t || !t->expected_output.contains("category") ||
      !t->expected_output["category"].is_string()) {
    return false;
  }
  op["category"] = t->expected_output["category"];
  return true;
}

void Bot::remember(std::optional<convstore::UserId> user, const Json& op,
                   const std::string& sample) {
  const auto name = template_name(op);
  if (!user || !name) return;
  Json output = Json::object();
  for (const char* field : {"type", "description", "category"}) {
    if (op.contains(field)) output[field] = op[field];
  }
  auto existing = learned(*user, op);
  if (existing && existing->expected_output == output) {
    store_.templates().record_use(existing->id);
    return;
  }
  if (existing) store_.templates().remove(existing->id);  // the user changed their mind
  convstore::NewOperationTemplate t;
  t.user_id = *user;
  t.kind = op.value("type", "expense");
  t.name = *name;
  t.sample_input = sample;
  t.expected_output = output;
  store_.templates().record_use(store_.templates().add(t).id);
}

void Bot::cancel(const Update& update, const IncomingMessage& m, convstore::UserId user) {
  auto& cs = store_.conversations();
  std::optional<Conversation> target;
  if (m.reply_to) {
    // The entry replied to: only the sender's own, and not twice.
    auto hit = cs.find_by_platform_id(options_.channel, m.chat_id, std::to_string(*m.reply_to));
    if (hit && hit->conversation.agent == options_.agent && hit->conversation.kind &&
        *hit->conversation.kind != "information" &&
        (hit->conversation.status == ConversationStatus::active ||
         hit->conversation.status == ConversationStatus::abandoned)) {
      if (hit->conversation.user_id != std::optional<convstore::UserId>(user)) {
        plain_reply(update, m, user, "You can only cancel your own entries.");
        return;
      }
      if (cancelled(hit->conversation)) {
        plain_reply(update, m, user, "That entry is already cancelled.");
        return;
      }
      target = hit->conversation;
    }
  }
  if (!target) {
    for (const auto& c : active_in_chat(m, user)) {
      if (!cs.open_questions(c.id).empty()) {
        target = c;
        break;
      }
    }
  }
  if (!target) {
    plain_reply(update, m, user, "There is nothing to cancel.");
    return;
  }
  auto partial = cs.latest_data(target->id, DataKind::partial);
  Reply reply{m.chat_id,
              "Cancelled " + (partial ? describe(partial->data) : std::string("the entry")) + ".",
              m.message_id};
  const auto sent = messenger_.send(reply, m);
  const auto open = cs.open_questions(target->id);
  store_.transaction([&] {
    cs.append(target->id, user_message(m));
    for (const auto& q : open) cs.answer(q.id, m.text);
    cs.append(target->id, bot_message(reply, sent));
    // Abandoned, and marked cancelled: unlike an entry retention abandoned,
    // a later reply does not reopen it.
    convstore::ConversationUpdate u;
    u.metadata_patch = Json{{kCancelled, true}};
    cs.update(target->id, u);
    if (target->status == ConversationStatus::active) {
      cs.set_status(target->id, ConversationStatus::abandoned);
    }
    save_offset(update.update_id);
  });
}

void Bot::plain_reply(const Update& update, const IncomingMessage& m, convstore::UserId user,
                      const std::string& text) {
  // Not an operation: kept as an "information" conversation of its own
  // (seed 000's operation type), completed at once.
  auto& cs = store_.conversations();
  const Conversation c = conversation_of(m, user, "information");
  Reply reply{m.chat_id, text, m.message_id};
  const auto sent = messenger_.send(reply, m);
  store_.transaction([&] {
    convstore::ConversationUpdate u;
    u.active_agent = agent_for("information");
    cs.update(c.id, u);
    cs.append(c.id, user_message(m));
    cs.append(c.id, bot_message(reply, sent));
    cs.set_status(c.id, ConversationStatus::completed);
    save_offset(update.update_id);
  });
}

convstore::RetentionReport Bot::abandon_idle(std::chrono::milliseconds idle,
                                             std::optional<convstore::Timestamp> now) {
  convstore::RetentionPolicy policy;
  policy.abandon_idle_after = idle;
  policy.channel = options_.channel;
  policy.agent = options_.agent;
  convstore::RetentionRun run;
  run.now = now;
  return store_.retention().run(policy, run);
}

}  // namespace finance_bot
