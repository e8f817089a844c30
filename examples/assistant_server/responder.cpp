// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#include "responder.hpp"

#include <cctype>
#include <chrono>
#include <regex>
#include <string>

namespace assistant_server {

using convstore::Error;
using convstore::ErrorCode;

namespace {

// "2026-12-07T12:00:00.000000Z" -> "2026-12-07", "12:00".
std::string day_of(convstore::Timestamp t) { return convstore::to_iso8601(t).substr(0, 10); }
std::string clock_of(convstore::Timestamp t) { return convstore::to_iso8601(t).substr(11, 5); }

std::string trim(std::string_view s) {
  std::size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  return std::string(s.substr(b, e - b));
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

}  // namespace

std::optional<ScheduleRequest> parse_schedule(std::string_view text, convstore::Timestamp now) {
  // Groups: 1 title, 2 day word, 3 explicit date, 4 hour, 5 minute, 6 amount, 7 unit.
  static const std::regex phrase(
      R"(^\s*(?:(?:please\s+)?(?:schedule|book|add|plan)\s+)?(.+?)\s+(today|tomorrow|on\s+(\d{4}-\d{2}-\d{2}))\s+(?:at\s+)?(\d{1,2}):(\d{2})(?:\s+for\s+(\d{1,4})\s*(h|hr|hrs|hour|hours|m|min|mins|minute|minutes))?\s*[.!]?\s*$)",
      std::regex::ECMAScript | std::regex::icase);
  const std::string s(text);
  if (s.size() > 500) return std::nullopt;
  std::smatch m;
  if (!std::regex_match(s, m, phrase)) return std::nullopt;

  ScheduleRequest r;
  r.title = trim(m[1].str());
  if (r.title.empty()) return std::nullopt;
  std::string day;
  const std::string word = lower(m[2].str());
  if (word == "today") {
    day = day_of(now);
  } else if (word == "tomorrow") {
    day = day_of(now + std::chrono::hours(24));
  } else {
    day = m[3].str();
  }
  std::string hour = m[4].str();
  if (hour.size() == 1) hour = "0" + hour;
  try {
    r.start = convstore::parse_timestamp(day + "T" + hour + ":" + m[5].str() + ":00Z");
  } catch (const Error&) {
    throw Error(ErrorCode::invalid_argument,
                "'" + day + " " + hour + ":" + m[5].str() + "' is not a date and time");
  }
  std::chrono::minutes length{60};
  if (m[6].matched) {
    const long amount = std::stol(m[6].str());
    const std::string unit = lower(m[7].str());
    length = unit[0] == 'h' ? std::chrono::minutes(amount * 60) : std::chrono::minutes(amount);
    if (length < std::chrono::minutes(1) || length > std::chrono::hours(24)) {
      throw Error(
          ErrorCode::invalid_argument,
          "an event lasts between 1 minute and 24 hours, not " + std::to_string(amount) + unit);
    }
  }
  r.end = r.start + length;
  return r;
}

std::vector<std::string> split_chunks(std::string_view text) {
  std::vector<std::string> out;
  std::size_t i = 0;
  while (i < text.size()) {
    std::size_t j = i;
    while (j < text.size() && !std::isspace(static_cast<unsigned char>(text[j]))) ++j;
    while (j < text.size() && std::isspace(static_cast<unsigned char>(text[j]))) ++j;
    out.emplace_back(text.substr(i, j - i));
    i = j;
  }
  return out;
}

namespace {

std::string book(const Turn& turn, const ScheduleRequest& req) {
  if (!turn.conversation.user_id) {
    return "I can only book events in a conversation that has a user.";
  }
  convstore::NewEvent e;
  e.owner = *turn.conversation.user_id;
  e.title = req.title;
  e.start = req.start;
  e.end = req.end;
  e.metadata = {{"conversation_id", turn.conversation.id}};
  convstore::BookingOptions options;
  options.refuse_conflicts = true;
  const std::string when = "on " + day_of(req.start) + " from " + clock_of(req.start) + " to " +
                           clock_of(req.end) + " UTC";
  try {
    auto booked = turn.store.calendar().create(e, options);
    return "Booked \"" + booked.title + "\" " + when + " (event " + std::to_string(booked.id) +
           ").";
  } catch (const convstore::CalendarConflict& c) {
    std::string reply = "Sorry, \"" + req.title + "\" " + when + " overlaps";
    bool first = true;
    for (const auto& other : c.conflicts()) {
      reply += (first ? " \"" : ", \"") + other.title + "\" (" + day_of(other.start) + " " +
               clock_of(other.start) + "-" + clock_of(other.end) + ")";
      first = false;
    }
    return reply + ": nothing was booked.";
  }
}

std::string recall(const Turn& turn) {
  std::string said;
  // Every user message in the context but the question itself.
  for (std::size_t i = 0; i + 1 < turn.history.size(); ++i) {
    const auto& m = turn.history[i];
    if (m.role != convstore::Role::user) continue;
    said += (said.empty() ? "\"" : "; \"") + m.content + "\"";
  }
  if (said.empty()) return "You have not said anything else yet.";
  return "Earlier you said: " + said + ".";
}

}  // namespace

std::string BuiltinResponder::reply(const Turn& turn) {
  const std::string text = turn.history.empty() ? std::string() : turn.history.back().content;
  std::string body;
  try {
    if (auto req = parse_schedule(text, turn.now)) {
      body = book(turn, *req);
    } else if (lower(text).find("what did i say") != std::string::npos) {
      body = recall(turn);
    } else {
      body = "You said: " + text;
    }
  } catch (const Error& e) {
    if (e.code() != ErrorCode::invalid_argument) throw;
    body = std::string("I could not book that: ") + e.what() + ".";
  }
  if (turn.agent) return turn.agent->name + ": " + body;
  return body;
}

void BuiltinResponder::respond(const Turn& turn,
                               const std::function<void(std::string_view)>& emit) {
  for (const auto& chunk : split_chunks(reply(turn))) emit(chunk);
}

}  // namespace assistant_server
