// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#pragma once

// The baselines: the same work written directly on the sqlite3 C API and on
// libpq, the way a careful engineer would (statements prepared once, the
// same durability, one round trip where one suffices), against the same
// schema (the database is created by convstore first).
//
// "The same work" includes what an application needs from a message: the
// metadata is serialized from / parsed into JSON (nlohmann, as convstore
// does) and the times are parsed, so the ratio is the cost of convstore's
// layers (SOCI, pooling, validation), not of decoding.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <convstore/types.hpp>

namespace bench {

// A message row as a raw client would hand it on: every column copied out,
// JSON and times decoded.
struct RawMessage {
  long long id = 0, conversation_id = 0, token_count = 0;
  std::string role, kind, content, agent, model, tool_name, tool_call_id, platform_message_id,
      reply_to_platform_id, client_key, complete;
  convstore::Json tool_args, metadata;
  convstore::Timestamp created_at, updated_at;
};

struct RawConversation {
  long long id = 0, user_id = 0, message_count = 0, version = 0;
  std::string key, channel, chat_id, agent, kind, title, active_agent, status, model_override,
      external_ref;
  convstore::Json metadata;
  convstore::Timestamp last_message_at, created_at, updated_at;
};

// A calendar event row, decoded.
struct RawEvent {
  long long id = 0, owner = 0;
  std::string uid, title, description, location, time_zone;
  convstore::Timestamp start, end, created, updated;
  bool all_day = false;
  convstore::Json metadata;
};

class Baseline {
 public:
  virtual ~Baseline() = default;
  // One committed transaction: the message, and the conversation's count,
  // version and last-message time.
  virtual long long append(long long conversation, const std::string& content,
                           const convstore::Json& metadata) = 0;
  // One committed transaction for all of `contents`.
  virtual void append_batch(long long conversation, const std::vector<std::string>& contents,
                            const convstore::Json& metadata) = 0;
  // The newest n messages, oldest first.
  virtual std::vector<RawMessage> recent(long long conversation, int n) = 0;
  // A page of a user's conversations, newest update first; `after_*` empty
  // for the first page.
  virtual std::vector<RawConversation> list(long long user, const std::string& after_time,
                                            long long after_id, int limit) = 0;
  // W3: upsert a session-scoped agent state (one committed statement), and
  // load it (JSON parsed).
  virtual void upsert_state(const std::string& scope, const std::string& agent,
                            const convstore::Json& state) = 0;
  virtual convstore::Json load_state(const std::string& scope, const std::string& agent) = 0;
  // W4: the events of `owner` overlapping [from, to), bounded below by the
  // owner's longest event (kept in calendar_bounds), rows decoded.
  virtual std::size_t overlapping(long long owner, convstore::Timestamp from,
                                  convstore::Timestamp to) = 0;
  // The raw read a cached agent saves: the registry row, JSON decoded.
  virtual convstore::Json load_agent_config(const std::string& id) = 0;
};

std::unique_ptr<Baseline> sqlite_baseline(const std::string& path, bool full_sync);
std::unique_ptr<Baseline> postgresql_baseline(const std::string& conninfo);

}  // namespace bench
