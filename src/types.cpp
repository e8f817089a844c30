// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#include "convstore/types.hpp"

#include <date/date.h>
#include <fmt/format.h>

#include <array>
#include <cctype>

#include "convstore/error.hpp"
#include "db/codec.hpp"

namespace convstore {

Timestamp now() noexcept {
  return std::chrono::time_point_cast<std::chrono::microseconds>(std::chrono::system_clock::now());
}

std::string to_iso8601(Timestamp t) {
  // Always 27 characters, so that stored text sorts like the time it names.
  // (date::format would do, through an ostream, ten times slower; this runs
  // for every timestamp bound.)
  auto day = date::floor<date::days>(t);
  date::year_month_day ymd{day};
  auto micros = (t - day).count();
  long long secs = micros / 1000000;
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z", static_cast<int>(ymd.year()),
                     static_cast<unsigned>(ymd.month()), static_cast<unsigned>(ymd.day()),
                     secs / 3600, secs / 60 % 60, secs % 60, micros % 1000000);
}

namespace {

[[noreturn]] void bad_time(std::string_view text) {
  throw Error(ErrorCode::invalid_argument, fmt::format("invalid timestamp '{}'", text));
}

int digits(std::string_view s, std::size_t pos, std::size_t n, std::string_view whole) {
  if (pos + n > s.size()) bad_time(whole);
  int v = 0;
  for (std::size_t i = pos; i < pos + n; ++i) {
    if (!std::isdigit(static_cast<unsigned char>(s[i]))) bad_time(whole);
    v = v * 10 + (s[i] - '0');
  }
  return v;
}

}  // namespace

Timestamp parse_timestamp(std::string_view s) {
  // YYYY-MM-DD[T ]HH:MM:SS[.f{1,9}][Z|+HH[:MM]|-HH[:MM]]; both backends
  // write the first forms, users may pass any of them.
  if (s.size() < 19 || s[4] != '-' || s[7] != '-' || (s[10] != 'T' && s[10] != ' ') ||
      s[13] != ':' || s[16] != ':') {
    bad_time(s);
  }
  date::year_month_day ymd{date::year{digits(s, 0, 4, s)},
                           date::month{static_cast<unsigned>(digits(s, 5, 2, s))},
                           date::day{static_cast<unsigned>(digits(s, 8, 2, s))}};
  if (!ymd.ok()) bad_time(s);
  int hh = digits(s, 11, 2, s), mi = digits(s, 14, 2, s), ss = digits(s, 17, 2, s);
  if (hh > 23 || mi > 59 || ss > 60) bad_time(s);
  std::size_t pos = 19;
  long long micros = 0;
  if (pos < s.size() && s[pos] == '.') {
    ++pos;
    int n = 0;
    while (pos < s.size() && std::isdigit(static_cast<unsigned char>(s[pos]))) {
      if (n < 6) micros = micros * 10 + (s[pos] - '0');
      ++n;
      ++pos;
    }
    if (n == 0) bad_time(s);
    for (int i = n; i < 6; ++i) micros *= 10;
  }
  std::chrono::minutes offset{0};
  if (pos < s.size()) {
    if (s[pos] == 'Z' || s[pos] == 'z') {
      ++pos;
    } else if (s[pos] == '+' || s[pos] == '-') {
      int sign = s[pos] == '-' ? -1 : 1;
      int oh = digits(s, pos + 1, 2, s);
      pos += 3;
      int om = 0;
      if (pos < s.size() && s[pos] == ':') ++pos;
      if (pos < s.size()) {
        om = digits(s, pos, 2, s);
        pos += 2;
      }
      offset = std::chrono::minutes(sign * (oh * 60 + om));
    }
    if (pos != s.size()) bad_time(s);
  }
  auto t = date::sys_days(ymd) + std::chrono::hours(hh) + std::chrono::minutes(mi) +
           std::chrono::seconds(ss) + std::chrono::microseconds(micros) - offset;
  return std::chrono::time_point_cast<std::chrono::microseconds>(t);
}

namespace {

template <class E, std::size_t N>
E parse_name(std::string_view s, const std::array<std::string_view, N>& names,
             std::string_view what) {
  for (std::size_t i = 0; i < N; ++i) {
    if (names[i] == s) return static_cast<E>(i);
  }
  throw Error(ErrorCode::invalid_argument, fmt::format("unknown {} '{}'", what, s));
}

constexpr std::array<std::string_view, 4> kRoles{"user", "assistant", "system", "tool"};
constexpr std::array<std::string_view, 5> kKinds{"text", "tool_call", "tool_response", "thinking",
                                                 "error"};
constexpr std::array<std::string_view, 4> kStatuses{"active", "completed", "abandoned", "archived"};
constexpr std::array<std::string_view, 3> kDataKinds{"partial", "complete", "missing_fields"};
constexpr std::array<std::string_view, 3> kScopeKinds{"conversation", "session", "named"};

template <std::size_t N>
std::string_view name_of(const std::array<std::string_view, N>& names, int i) noexcept {
  return i >= 0 && static_cast<std::size_t>(i) < N ? names[static_cast<std::size_t>(i)] : "?";
}

}  // namespace

std::string_view to_string(Role r) noexcept { return name_of(kRoles, static_cast<int>(r)); }
std::string_view to_string(MessageKind k) noexcept { return name_of(kKinds, static_cast<int>(k)); }
std::string_view to_string(ConversationStatus s) noexcept {
  return name_of(kStatuses, static_cast<int>(s));
}
std::string_view to_string(DataKind k) noexcept { return name_of(kDataKinds, static_cast<int>(k)); }

std::string_view to_string(StateScope::Kind k) noexcept {
  return name_of(kScopeKinds, static_cast<int>(k));
}
StateScope::Kind parse_state_scope_kind(std::string_view s) {
  return parse_name<StateScope::Kind>(s, kScopeKinds, "state scope kind");
}

Role parse_role(std::string_view s) { return parse_name<Role>(s, kRoles, "message role"); }
MessageKind parse_message_kind(std::string_view s) {
  return parse_name<MessageKind>(s, kKinds, "message kind");
}
ConversationStatus parse_conversation_status(std::string_view s) {
  return parse_name<ConversationStatus>(s, kStatuses, "conversation status");
}
DataKind parse_data_kind(std::string_view s) {
  return parse_name<DataKind>(s, kDataKinds, "data kind");
}

namespace {
template <class T>
Json opt(const std::optional<T>& v) {
  return v ? Json(*v) : Json(nullptr);
}
Json opt(const std::optional<Timestamp>& v) { return v ? Json(to_iso8601(*v)) : Json(nullptr); }
}  // namespace

Json to_json(const User& u) {
  return Json{{"id", u.id},
              {"channel", u.channel},
              {"external_id", u.external_id},
              {"username", opt(u.username)},
              {"display_name", opt(u.display_name)},
              {"preferred_model", opt(u.preferred_model)},
              {"system_prompt", opt(u.system_prompt)},
              {"time_zone", u.time_zone},
              {"metadata", u.metadata},
              {"created_at", to_iso8601(u.created_at)},
              {"updated_at", to_iso8601(u.updated_at)}};
}

Json to_json(const Conversation& c) {
  return Json{{"id", c.id},
              {"key", opt(c.key)},
              {"user_id", opt(c.user_id)},
              {"channel", c.channel},
              {"chat_id", opt(c.chat_id)},
              {"agent", opt(c.agent)},
              {"kind", opt(c.kind)},
              {"title", opt(c.title)},
              {"active_agent", opt(c.active_agent)},
              {"status", to_string(c.status)},
              {"model_override", opt(c.model_override)},
              {"external_ref", opt(c.external_ref)},
              {"message_count", c.message_count},
              {"version", c.version},
              {"last_message_at", opt(c.last_message_at)},
              {"metadata", c.metadata},
              {"created_at", to_iso8601(c.created_at)},
              {"updated_at", to_iso8601(c.updated_at)}};
}

Json to_json(const Message& m) {
  return Json{{"id", m.id},
              {"conversation_id", m.conversation_id},
              {"role", to_string(m.role)},
              {"kind", to_string(m.kind)},
              {"content", m.content},
              {"agent", opt(m.agent)},
              {"model", opt(m.model)},
              {"token_count", opt(m.token_count)},
              {"tool_name", opt(m.tool_name)},
              {"tool_args", m.tool_args},
              {"tool_call_id", opt(m.tool_call_id)},
              {"platform_message_id", opt(m.platform_message_id)},
              {"reply_to_platform_id", opt(m.reply_to_platform_id)},
              {"client_key", opt(m.client_key)},
              {"complete", m.complete},
              {"metadata", m.metadata},
              {"created_at", to_iso8601(m.created_at)},
              {"updated_at", to_iso8601(m.updated_at)}};
}

Message message_from_json(const Json& j) {
  auto opt_text = [&](const char* k) -> std::optional<std::string> {
    const Json& v = j.at(k);
    if (v.is_null()) return std::nullopt;
    return v.get<std::string>();
  };
  try {
    Message m;
    m.id = j.at("id").get<MessageId>();
    m.conversation_id = j.at("conversation_id").get<ConversationId>();
    m.role = parse_role(j.at("role").get<std::string>());
    m.kind = parse_message_kind(j.at("kind").get<std::string>());
    m.content = j.at("content").get<std::string>();
    m.agent = opt_text("agent");
    m.model = opt_text("model");
    if (!j.at("token_count").is_null()) m.token_count = j.at("token_count").get<std::int64_t>();
    m.tool_name = opt_text("tool_name");
    m.tool_args = j.at("tool_args");
    m.tool_call_id = opt_text("tool_call_id");
    m.platform_message_id = opt_text("platform_message_id");
    m.reply_to_platform_id = opt_text("reply_to_platform_id");
    m.client_key = opt_text("client_key");
    m.complete = j.at("complete").get<bool>();
    m.metadata = j.at("metadata");
    m.created_at = parse_timestamp(j.at("created_at").get<std::string>());
    m.updated_at = parse_timestamp(j.at("updated_at").get<std::string>());
    return m;
  } catch (const Json::exception& e) {
    throw Error(ErrorCode::invalid_argument, fmt::format("not a message object: {}", e.what()));
  }
}

Json to_json(const Question& q) {
  return Json{{"id", q.id},
              {"conversation_id", q.conversation_id},
              {"agent", q.agent},
              {"question", q.question},
              {"missing_fields", q.missing_fields},
              {"platform_message_id", opt(q.platform_message_id)},
              {"asked_at", to_iso8601(q.asked_at)},
              {"answered_at", opt(q.answered_at)},
              {"answer", opt(q.answer)}};
}

Json to_json(const Agent& a) {
  return Json{{"id", a.id},
              {"name", a.name},
              {"description", a.description},
              {"type", a.type},
              {"persona",
               {{"name", a.persona.name},
                {"description", a.persona.description},
                {"personality", a.persona.personality},
                {"expertise", a.persona.expertise},
                {"extra", a.persona.extra}}},
              {"config", a.config},
              {"tools", a.tools},
              {"sub_agents", a.sub_agents},
              {"planner", opt(a.planner)},
              {"version", a.version},
              {"active", a.active},
              {"usage_count", a.usage_count},
              {"last_used_at", opt(a.last_used_at)},
              {"metadata", a.metadata},
              {"created_at", to_iso8601(a.created_at)},
              {"updated_at", to_iso8601(a.updated_at)}};
}

Json to_json(const AgentState& s) {
  return Json{{"scope", {{"kind", to_string(s.scope.kind)}, {"key", s.scope.key}}},
              {"agent", s.agent},
              {"state", s.state},
              {"version", s.version},
              {"created_at", to_iso8601(s.created_at)},
              {"updated_at", to_iso8601(s.updated_at)}};
}

Json ConversationContext::to_json() const {
  Json j = convstore::to_json(conversation);
  j["conversation_id"] = conversation.id;
  j["partial_data"] = partial_data;
  j["missing_fields"] = missing_fields;
  Json history = Json::array();
  for (const auto& m : messages) history.push_back(convstore::to_json(m));
  j["message_history"] = std::move(history);
  Json qs = Json::array();
  for (const auto& q : questions) qs.push_back(convstore::to_json(q));
  j["agent_questions"] = std::move(qs);
  j["last_bot_message_id"] = opt(last_bot_message_id);
  return j;
}

namespace detail {

Json parse_json(const std::string& text, const Json& fallback) {
  if (text.empty()) return fallback;
  if (text == "{}") return Json::object();  // the common metadata, without a parse
  try {
    // A contiguous-buffer input adapter: faster than the string one.
    return Json::parse(text.data(), text.data() + text.size());
  } catch (const Json::exception& e) {
    throw Error(ErrorCode::internal, fmt::format("stored JSON does not parse: {}", e.what()));
  }
}

void append_json_string(std::string& out, std::string_view s) {
  static constexpr char hex[] = "0123456789abcdef";
  out += '"';
  std::size_t run = 0;  // start of the bytes not yet copied
  for (std::size_t i = 0; i < s.size(); ++i) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c != '"' && c != '\\') continue;
    out.append(s.data() + run, i - run);
    run = i + 1;
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        out += "\\u00";
        out += hex[c >> 4];
        out += hex[c & 0xF];
    }
  }
  out.append(s.data() + run, s.size() - run);
  out += '"';
}

void check_text(std::string_view text, std::string_view what) {
  std::size_t i = 0, n = text.size();
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  while (i < n) {
    unsigned char c = p[i];
    std::size_t len;
    std::uint32_t cp;
    if (c == 0) {
      throw Error(ErrorCode::invalid_argument,
                  fmt::format("{} contains a NUL byte at offset {}", what, i));
    } else if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      len = 2, cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3, cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4, cp = c & 0x07;
    } else {
      len = 0, cp = 0;
    }
    bool ok = len != 0 && i + len <= n;
    for (std::size_t k = 1; ok && k < len; ++k) {
      ok = (p[i + k] & 0xC0) == 0x80;
      cp = (cp << 6) | (p[i + k] & 0x3F);
    }
    // Overlong forms, surrogates and code points past U+10FFFF are invalid.
    ok = ok && !(len == 2 && cp < 0x80) && !(len == 3 && cp < 0x800) &&
         !(len == 4 && cp < 0x10000) && cp <= 0x10FFFF && !(cp >= 0xD800 && cp <= 0xDFFF);
    if (!ok) {
      throw Error(ErrorCode::invalid_argument,
                  fmt::format("{} is not valid UTF-8 (byte offset {})", what, i));
    }
    i += len;
  }
}

}  // namespace detail
}  // namespace convstore
