// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#include "api.hpp"

#include <charconv>
#include <random>
#include <sstream>
#include <utility>

namespace assistant_server {

using convstore::Error;
using convstore::ErrorCode;

int http_status(ErrorCode code) noexcept {
  switch (code) {
    case ErrorCode::invalid_argument:
      return 422;
    case ErrorCode::not_found:
      return 404;
    case ErrorCode::already_exists:
    case ErrorCode::conflict:
    case ErrorCode::failed_precondition:
      return 409;
    case ErrorCode::unavailable:
    case ErrorCode::aborted:
      return 503;
    case ErrorCode::not_supported:
    case ErrorCode::data_loss:
    case ErrorCode::internal:
      break;
  }
  return 500;
}

Json error_body(std::string_view category, std::string_view message) {
  return Json{{"error", {{"category", std::string(category)}, {"message", std::string(message)}}}};
}

Json parse_body(const std::string& body) {
  if (body.empty()) throw HttpError(400, "invalid_argument", "the request body is empty");
  // Parsing does not recurse, but copying and printing a JSON value do: a
  // body of a few hundred thousand nested brackets would overflow a worker
  // thread's stack later. Nothing the API takes nests that deep.
  const auto limit_depth = [](int depth, Json::parse_event_t event, Json&) {
    if ((event == Json::parse_event_t::object_start || event == Json::parse_event_t::array_start) &&
        depth >= kMaxBodyDepth) {
      throw HttpError(
          422, "invalid_argument",
          "the request body nests deeper than " + std::to_string(kMaxBodyDepth) + " levels");
    }
    return true;
  };
  try {
    return Json::parse(body, limit_depth);
  } catch (const Json::parse_error& e) {
    throw HttpError(400, "invalid_argument",
                    std::string("the request body is not JSON: ") + e.what());
  }
}

// ---- Fields -------------------------------------------------------------------

Fields::Fields(const Json& value, std::string where) : value_(value), where_(std::move(where)) {
  if (!value_.is_object()) {
    throw Error(ErrorCode::invalid_argument,
                where_.empty()
                    ? std::string("the request body must be a JSON object")
                    : "field '" + where_.substr(0, where_.size() - 1) + "' must be a JSON object");
  }
}

const Json* Fields::get(const char* key) {
  seen_.insert(key);
  auto it = value_.find(key);
  if (it == value_.end() || it->is_null()) return nullptr;
  return &*it;
}

void Fields::wrong(const char* key, const char* expected) const {
  throw Error(ErrorCode::invalid_argument,
              "field '" + where_ + key + "' must be " + std::string(expected));
}

std::optional<std::string> Fields::string(const char* key) {
  const Json* v = get(key);
  if (v == nullptr) return std::nullopt;
  if (!v->is_string()) wrong(key, "a string");
  return v->get<std::string>();
}

std::string Fields::required_string(const char* key) {
  auto v = string(key);
  if (!v || v->empty()) {
    throw Error(ErrorCode::invalid_argument,
                "field '" + where_ + key + "' is required (a non-empty string)");
  }
  return *v;
}

std::optional<bool> Fields::boolean(const char* key) {
  const Json* v = get(key);
  if (v == nullptr) return std::nullopt;
  if (!v->is_boolean()) wrong(key, "true or false");
  return v->get<bool>();
}

std::optional<std::int64_t> Fields::integer(const char* key) {
  const Json* v = get(key);
  if (v == nullptr) return std::nullopt;
  if (v->is_number_unsigned()) {
    if (v->get<std::uint64_t>() > static_cast<std::uint64_t>(INT64_MAX)) wrong(key, "an integer");
    return static_cast<std::int64_t>(v->get<std::uint64_t>());
  }
  if (!v->is_number_integer()) wrong(key, "an integer");
  return v->get<std::int64_t>();
}

std::optional<Json> Fields::object(const char* key) {
  const Json* v = get(key);
  if (v == nullptr) return std::nullopt;
  if (!v->is_object()) wrong(key, "a JSON object");
  return *v;
}

std::optional<std::vector<std::string>> Fields::strings(const char* key) {
  const Json* v = get(key);
  if (v == nullptr) return std::nullopt;
  if (!v->is_array()) wrong(key, "an array of strings");
  std::vector<std::string> out;
  for (const auto& item : *v) {
    if (!item.is_string()) wrong(key, "an array of strings");
    out.push_back(item.get<std::string>());
  }
  return out;
}

std::optional<Json> Fields::any(const char* key) {
  const Json* v = get(key);
  if (v == nullptr) return std::nullopt;
  return *v;
}

void Fields::finish() const {
  for (auto it = value_.begin(); it != value_.end(); ++it) {
    if (seen_.count(it.key()) == 0) {
      throw Error(ErrorCode::invalid_argument, "unknown field '" + where_ + it.key() + "'");
    }
  }
}

// ---- query parameters -------------------------------------------------------

std::int64_t parse_integer(std::string_view name, std::string_view text, std::int64_t min,
                           std::int64_t max) {
  std::int64_t v = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size() || v < min || v > max) {
    throw Error(ErrorCode::invalid_argument, "parameter '" + std::string(name) + "' must be an " +
                                                 "integer in " + std::to_string(min) + ".." +
                                                 std::to_string(max) + ", not '" +
                                                 std::string(text) + "'");
  }
  return v;
}

bool parse_flag(std::string_view name, std::string_view text) {
  if (text == "true" || text == "1" || text == "yes") return true;
  if (text == "false" || text == "0" || text == "no") return false;
  throw Error(ErrorCode::invalid_argument, "parameter '" + std::string(name) +
                                               "' must be true or false, not '" +
                                               std::string(text) + "'");
}

convstore::Timestamp parse_time(std::string_view name, std::string_view text) {
  try {
    return convstore::parse_timestamp(text);
  } catch (const Error&) {
    throw Error(ErrorCode::invalid_argument,
                "'" + std::string(name) +
                    "' must be an RFC 3339 time (2026-12-07T10:00:00Z), not '" + std::string(text) +
                    "'");
  }
}

// ---- request bodies -----------------------------------------------------------

namespace {

std::string generated_agent_id() {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  std::ostringstream os;
  os << "agent-" << std::hex;
  os.width(12);
  os.fill('0');
  os << (rng() & 0xffffffffffffULL);
  return os.str();
}

convstore::AgentPersona persona_from_json(const Json& value) {
  Fields f(value, "persona.");
  convstore::AgentPersona p;
  p.name = f.string("name").value_or("");
  p.description = f.string("description").value_or("");
  p.personality = f.string("personality").value_or("");
  if (auto e = f.strings("expertise")) p.expertise = std::move(*e);
  if (auto x = f.object("extra")) p.extra = std::move(*x);
  f.finish();
  return p;
}

}  // namespace

convstore::NewAgent new_agent_from_json(const Json& body) {
  Fields f(body);
  convstore::NewAgent a;
  auto id = f.string("id");
  // The id is a path segment of /api/v1/agents/{id}: an id with a '/'
  // could be created but never reached again.
  if (id && id->find('/') != std::string::npos) {
    throw Error(ErrorCode::invalid_argument,
                "field 'id' must not contain '/' (it is a path segment of /api/v1/agents/{id})");
  }
  a.id = id ? *id : generated_agent_id();
  a.name = f.required_string("name");
  a.description = f.string("description").value_or("");
  if (auto t = f.string("type")) a.type = *t;
  if (auto p = f.object("persona")) a.persona = persona_from_json(*p);
  if (auto c = f.object("config")) a.config = std::move(*c);
  if (auto m = f.string("model")) a.config["model"] = *m;
  if (auto s = f.string("system_prompt")) a.config["system_prompt"] = *s;
  if (auto t = f.strings("tools")) a.tools = std::move(*t);
  if (auto s = f.strings("sub_agents")) a.sub_agents = std::move(*s);
  a.planner = f.string("planner");
  if (auto m = f.object("metadata")) a.metadata = std::move(*m);
  f.finish();
  return a;
}

convstore::AgentUpdate agent_update_from_json(const Json& body, const Json& current_config) {
  Fields f(body);
  if (f.empty())
    throw Error(ErrorCode::invalid_argument, "the request body has no field to update");
  convstore::AgentUpdate u;
  u.name = f.string("name");
  if (u.name && u.name->empty()) {
    throw Error(ErrorCode::invalid_argument, "field 'name' must not be empty");
  }
  u.description = f.string("description");
  u.type = f.string("type");
  if (auto p = f.object("persona")) u.persona = persona_from_json(*p);
  u.config = f.object("config");
  auto model = f.string("model");
  auto prompt = f.string("system_prompt");
  if (model || prompt) {
    Json config = u.config ? *u.config : current_config;
    if (model) config["model"] = *model;
    if (prompt) config["system_prompt"] = *prompt;
    u.config = std::move(config);
  }
  u.tools = f.strings("tools");
  u.sub_agents = f.strings("sub_agents");
  u.planner = f.string("planner");
  u.metadata_patch = f.object("metadata");
  u.expected_version = f.integer("expected_version");
  f.finish();
  return u;
}

NewConversationRequest conversation_request_from_json(const Json& body) {
  Fields f(body);
  NewConversationRequest r;
  auto user = f.object("user");
  if (!user) throw Error(ErrorCode::invalid_argument, "field 'user' is required (an object)");
  Fields u(*user, "user.");
  r.user.channel = u.required_string("channel");
  r.user.external_id = u.required_string("external_id");
  r.user.display_name = u.string("display_name");
  r.user.username = u.string("username");
  r.user.time_zone = u.string("time_zone");
  u.finish();
  r.agent_id = f.string("agent_id");
  if (r.agent_id && r.agent_id->empty()) {
    throw Error(ErrorCode::invalid_argument, "field 'agent_id' must not be empty");
  }
  r.title = f.string("title");
  r.review = f.boolean("review").value_or(false);
  if (auto m = f.object("metadata")) r.metadata = std::move(*m);
  f.finish();
  return r;
}

NewEventRequest event_request_from_json(const Json& body) {
  Fields f(body);
  NewEventRequest r;
  if (auto owner = f.integer("owner_id")) r.event.owner = *owner;
  r.event.title = f.required_string("title");
  r.event.start = parse_time("start", f.required_string("start"));
  r.event.end = parse_time("end", f.required_string("end"));
  if (auto tz = f.string("time_zone")) r.event.time_zone = *tz;
  if (auto rr = f.string("rrule")) r.event.rrule = *rr;
  r.event.description = f.string("description").value_or("");
  r.event.location = f.string("location").value_or("");
  if (auto m = f.object("metadata")) r.event.metadata = std::move(*m);
  r.refuse_conflicts = f.boolean("refuse_conflicts").value_or(false);
  f.finish();
  return r;
}

// ---- responses ----------------------------------------------------------------

bool is_review(const convstore::Conversation& c) {
  auto it = c.metadata.find("review");
  return it != c.metadata.end() && it->is_boolean() && it->get<bool>();
}

Json conversation_json(const convstore::Conversation& c) {
  Json j = convstore::to_json(c);
  j["review"] = is_review(c);
  return j;
}

Json event_json(const convstore::CalendarEvent& e) {
  Json exdates = Json::array();
  for (auto t : e.exdates) exdates.push_back(convstore::to_iso8601(t));
  return Json{{"id", e.id},
              {"owner_id", e.owner ? Json(*e.owner) : Json(nullptr)},
              {"uid", e.uid},
              {"title", e.title},
              {"description", e.description},
              {"location", e.location},
              {"start", convstore::to_iso8601(e.start)},
              {"end", convstore::to_iso8601(e.end)},
              {"all_day", e.all_day},
              {"time_zone", e.time_zone},
              {"rrule", e.rrule},
              {"exdates", std::move(exdates)},
              {"series_id", e.series_id ? Json(*e.series_id) : Json(nullptr)},
              {"recurrence_id",
               e.recurrence_id ? Json(convstore::to_iso8601(*e.recurrence_id)) : Json(nullptr)},
              {"metadata", e.metadata},
              {"created_at", convstore::to_iso8601(e.created_at)},
              {"updated_at", convstore::to_iso8601(e.updated_at)}};
}

Json page_json(Json items, const std::string& next_cursor) {
  return Json{{"items", std::move(items)},
              {"next_cursor", next_cursor.empty() ? Json(nullptr) : Json(next_cursor)}};
}

}  // namespace assistant_server
