// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#pragma once

// Where the assistant's replies come from. The server hands a Responder the
// conversation and its recent messages; the responder produces the reply as
// chunks (the server streams each one, persisted, as it comes). Plug in a
// language model by implementing Responder; the built-in one needs none.

#include <convstore/convstore.hpp>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace assistant_server {

// The server's clock: "tomorrow" in a message is relative to it. Tests fix
// it (--now) so that they never depend on today's date.
using Clock = std::function<convstore::Timestamp()>;

// What a responder is given for one turn.
struct Turn {
  convstore::Store& store;
  const convstore::Conversation& conversation;
  // The conversation's agent, or null (none, or not registered).
  std::shared_ptr<const convstore::Agent> agent;
  // The conversation's recent messages, oldest first; the last one is the
  // user's message being answered.
  const std::vector<convstore::Message>& history;
  convstore::Timestamp now;
};

// Produces the assistant's reply to one turn.
class Responder {
 public:
  virtual ~Responder() = default;
  // Calls `emit` once per chunk, in order; the reply is their concatenation
  // (at least one non-empty chunk). May act on turn.store (the built-in
  // responder books calendar events). Runs on the server's worker thread;
  // must be safe to call from several threads at once. A convstore::Error
  // it throws is reported with its category; anything else as a 500.
  virtual void respond(const Turn& turn, const std::function<void(std::string_view)>& emit) = 0;
};

// A request to book an event, read from a message.
struct ScheduleRequest {
  std::string title;
  convstore::Timestamp start{};
  convstore::Timestamp end{};
};

// Reads the phrases the built-in responder understands (times are UTC):
//   [schedule|book|add|plan] TITLE (today|tomorrow|on YYYY-MM-DD) [at] HH:MM [for
//   N(h|m|min|hours|minutes)]
// e.g. "schedule lunch tomorrow at 12:00 for 1h", "meeting on 2026-12-07 10:00".
// Without "for ..." an event lasts one hour. Returns nullopt when the text
// is not such a phrase; throws Error(invalid_argument) when it is one with an
// impossible date or time, or a duration outside 1 minute .. 24 hours.
std::optional<ScheduleRequest> parse_schedule(std::string_view text, convstore::Timestamp now);

// The reply cut into chunks for streaming: each word with the white space
// after it. Concatenated, they are `text`.
std::vector<std::string> split_chunks(std::string_view text);

// The built-in responder:
//  - a scheduling phrase (parse_schedule) books the event in the calendar
//    of the conversation's user, refusing overlaps, and says what it did;
//  - "what did I say" lists the user's earlier messages in the context;
//  - anything else is echoed: "You said: ...".
// Replies are prefixed with the agent's name when the conversation has one.
class BuiltinResponder : public Responder {
 public:
  void respond(const Turn& turn, const std::function<void(std::string_view)>& emit) override;
  // The whole reply as one string (respond() emits its chunks).
  std::string reply(const Turn& turn);
};

}  // namespace assistant_server
