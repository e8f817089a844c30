// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#pragma once

// The JSON side of the assistant server's HTTP API: request validation,
// the JSON forms of the values it returns, and the mapping of convstore's
// error categories to HTTP statuses. No HTTP library type appears here, so
// these pieces are unit-tested on their own.

#include <convstore/convstore.hpp>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace assistant_server {

using convstore::Json;

// An error that is not a convstore::Error: a status and a category of its
// own (a body that is not JSON: 400; a body over the limit: 413; no route:
// 404).
class HttpError : public std::runtime_error {
 public:
  HttpError(int status, std::string category, const std::string& message)
      : std::runtime_error(message), status_(status), category_(std::move(category)) {}
  int status() const noexcept { return status_; }
  const std::string& category() const noexcept { return category_; }

 private:
  int status_;
  std::string category_;
};

// The HTTP status of a convstore error category: invalid_argument 422,
// not_found 404, already_exists / conflict / failed_precondition 409,
// unavailable / aborted 503, anything else 500.
int http_status(convstore::ErrorCode code) noexcept;

// {"error": {"category": ..., "message": ...}}
Json error_body(std::string_view category, std::string_view message);

// How deeply a request body's objects and arrays may nest.
constexpr int kMaxBodyDepth = 64;
// Parses a request body. Not JSON (or empty): HttpError 400
// "invalid_argument"; nested deeper than kMaxBodyDepth: HttpError 422.
// Whether it is an object is checked by Fields.
Json parse_body(const std::string& body);

// Reads the members of a JSON object, checking their types. A member that
// is null counts as absent. A member of the wrong type, or a required one
// that is missing or empty, throws Error(invalid_argument) naming it;
// finish() refuses the members no one asked for (unknown fields are
// refused, so that a typo is not silently ignored).
class Fields {
 public:
  // `where` prefixes the field names in messages ("user." for a nested
  // object). Throws Error(invalid_argument) when `value` is not an object.
  explicit Fields(const Json& value, std::string where = "");

  std::optional<std::string> string(const char* key);
  std::string required_string(const char* key);
  std::optional<bool> boolean(const char* key);
  std::optional<std::int64_t> integer(const char* key);
  std::optional<Json> object(const char* key);
  std::optional<std::vector<std::string>> strings(const char* key);
  std::optional<Json> any(const char* key);
  // Throws Error(invalid_argument) naming the first member not read.
  void finish() const;
  bool empty() const { return value_.empty(); }

 private:
  const Json* get(const char* key);
  [[noreturn]] void wrong(const char* key, const char* expected) const;

  Json value_;  // a copy: callers pass temporaries
  std::string where_;
  std::set<std::string> seen_;
};

// ---- query parameters ------------------------------------------------------

// A decimal integer in [min, max]; Error(invalid_argument) naming `name`.
std::int64_t parse_integer(std::string_view name, std::string_view text, std::int64_t min,
                           std::int64_t max);
// "true"/"1"/"yes" or "false"/"0"/"no".
bool parse_flag(std::string_view name, std::string_view text);
// An RFC 3339 time, naming `name` when it is not one.
convstore::Timestamp parse_time(std::string_view name, std::string_view text);

// ---- request bodies ---------------------------------------------------------

// POST /api/v1/agents. The fields of convstore::NewAgent (id, name,
// description, type, persona, config, tools, sub_agents, planner,
// metadata), plus "model" and "system_prompt", stored in config. Without an
// id, one is generated ("agent-" and 12 hex digits).
convstore::NewAgent new_agent_from_json(const Json& body);
// PATCH /api/v1/agents/{id}. The fields of convstore::AgentUpdate (metadata
// is a merge patch: "metadata"), plus "model" and "system_prompt", merged
// into `current_config` (or into "config" when the body has one).
convstore::AgentUpdate agent_update_from_json(const Json& body, const Json& current_config);

// POST /api/v1/conversations.
struct NewConversationRequest {
  convstore::UserUpsert user;
  std::optional<std::string> agent_id;
  std::optional<std::string> title;
  bool review = false;
  Json metadata = Json::object();
};
NewConversationRequest conversation_request_from_json(const Json& body);

// POST /api/v1/calendar/events.
struct NewEventRequest {
  convstore::NewEvent event;
  bool refuse_conflicts = false;
};
NewEventRequest event_request_from_json(const Json& body);

// ---- responses ----------------------------------------------------------------

// The conversation, with "review": true when its replies go to the review
// queue.
Json conversation_json(const convstore::Conversation& c);
bool is_review(const convstore::Conversation& c);
Json event_json(const convstore::CalendarEvent& e);
// {"items": [...], "next_cursor": "..." | null}
Json page_json(Json items, const std::string& next_cursor);

}  // namespace assistant_server
