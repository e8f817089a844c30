// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "convstore/export.hpp"

namespace convstore {

// The JSON type of the API: metadata, data snapshots, tool arguments.
using Json = nlohmann::json;

// A point in time, UTC, with microsecond precision (what both backends keep).
using Timestamp = std::chrono::time_point<std::chrono::system_clock, std::chrono::microseconds>;

// The current time, truncated to microseconds.
CONVSTORE_EXPORT Timestamp now() noexcept;
// "2026-11-23T13:08:11.123456Z".
CONVSTORE_EXPORT std::string to_iso8601(Timestamp t);
// Parses ISO 8601 / RFC 3339 UTC or offset times ("2026-11-23T13:08:11Z",
// "2026-11-23 13:08:11.5+00", "...+02:00"). Throws Error(invalid_argument).
CONVSTORE_EXPORT Timestamp parse_timestamp(std::string_view text);

using UserId = std::int64_t;
using ConversationId = std::int64_t;
using MessageId = std::int64_t;
using QuestionId = std::int64_t;
using SnapshotId = std::int64_t;

// Who speaks in a message.
enum class Role { user, assistant, system, tool };
// What a message is.
enum class MessageKind { text, tool_call, tool_response, thinking, error };
// Where a conversation is in its life: active -> completed / abandoned -> archived.
// An abandoned conversation may be reopened (back to active).
enum class ConversationStatus { active, completed, abandoned, archived };
// The seed-000 data snapshots of a conversation: newest wins, history is kept.
enum class DataKind { partial, complete, missing_fields };

CONVSTORE_EXPORT std::string_view to_string(Role r) noexcept;
CONVSTORE_EXPORT std::string_view to_string(MessageKind k) noexcept;
CONVSTORE_EXPORT std::string_view to_string(ConversationStatus s) noexcept;
CONVSTORE_EXPORT std::string_view to_string(DataKind k) noexcept;
// Parsers for the names above; throw Error(invalid_argument) naming the value.
CONVSTORE_EXPORT Role parse_role(std::string_view s);
CONVSTORE_EXPORT MessageKind parse_message_kind(std::string_view s);
CONVSTORE_EXPORT ConversationStatus parse_conversation_status(std::string_view s);
CONVSTORE_EXPORT DataKind parse_data_kind(std::string_view s);

// A person on one channel ("telegram", "discord", "web", ...).
struct User {
  UserId id = 0;
  std::string channel;
  std::string external_id;  // the channel's own user id
  std::optional<std::string> username;
  std::optional<std::string> display_name;
  std::optional<std::string> preferred_model;
  std::optional<std::string> system_prompt;
  std::string time_zone = "UTC";  // IANA name
  Json metadata = Json::object();
  Timestamp created_at{};
  Timestamp updated_at{};
};

// Input of ConversationStore::upsert_user. Fields left empty keep what is
// stored (or the default on insert); `metadata` is merged (RFC 7396) into the
// stored metadata.
struct UserUpsert {
  UserUpsert() = default;
  UserUpsert(std::string channel_, std::string external_id_)
      : channel(std::move(channel_)), external_id(std::move(external_id_)) {}

  std::string channel;
  std::string external_id;
  std::optional<std::string> username;
  std::optional<std::string> display_name;
  std::optional<std::string> preferred_model;
  std::optional<std::string> system_prompt;
  std::optional<std::string> time_zone;
  Json metadata = Json::object();
};

// Changes to a user: a field that is set replaces the stored value; an empty
// string clears an optional field.
struct UserUpdate {
  std::optional<std::string> username;
  std::optional<std::string> display_name;
  std::optional<std::string> preferred_model;
  std::optional<std::string> system_prompt;
  std::optional<std::string> time_zone;
  std::optional<Json> metadata_patch;  // RFC 7396 merge patch
};

// Per-channel defaults (seed 002 channel_configs).
struct ChannelConfig {
  std::string channel;
  std::string default_model;
  Json settings = Json::object();
  Timestamp created_at{};
  Timestamp updated_at{};
};

struct Conversation {
  ConversationId id = 0;
  std::optional<std::string> key;  // the app's unique key (session id, thread id)
  std::optional<UserId> user_id;
  std::string channel;
  std::optional<std::string> chat_id;
  std::optional<std::string> agent;  // the agent that owns the conversation
  std::optional<std::string> kind;   // e.g. the seed-000 operation type
  std::optional<std::string> title;
  std::optional<std::string> active_agent;  // the agent handling it now
  ConversationStatus status = ConversationStatus::active;
  std::optional<std::string> model_override;
  std::optional<std::string> external_ref;  // e.g. the spreadsheet row it produced
  std::int64_t message_count = 0;
  std::int64_t version = 0;  // moves with every append and update
  std::optional<Timestamp> last_message_at;
  Json metadata = Json::object();
  Timestamp created_at{};
  Timestamp updated_at{};
};

struct NewConversation {
  std::optional<std::string> key;
  std::optional<UserId> user_id;
  std::string channel;
  std::optional<std::string> chat_id;
  std::optional<std::string> agent;
  std::optional<std::string> kind;
  std::optional<std::string> title;
  std::optional<std::string> model_override;
  Json metadata = Json::object();
};

// Changes to a conversation: a set field replaces the stored value, an empty
// string clears it; `metadata_patch` is merged (RFC 7396).
struct ConversationUpdate {
  std::optional<std::string> active_agent;
  std::optional<std::string> agent;
  std::optional<std::string> kind;
  std::optional<std::string> title;
  std::optional<std::string> model_override;
  std::optional<std::string> external_ref;
  std::optional<Json> metadata_patch;
  // When set, the update fails with Error(conflict) unless the stored version
  // equals it.
  std::optional<std::int64_t> expected_version;
};

// Filters of ConversationStore::list. Results are ordered by last update,
// newest first; pages are joined by an opaque cursor.
struct ConversationFilter {
  std::optional<UserId> user_id;
  std::optional<std::string> channel;
  std::optional<std::string> chat_id;
  std::optional<ConversationStatus> status;
  std::optional<std::string> agent;
  std::optional<std::string> kind;
  std::optional<Timestamp> updated_since;  // inclusive
  std::size_t limit = 50;                  // 1 .. 1000
  std::string cursor;                      // next_cursor of the previous page
};

// One page of a listing; `next_cursor` is empty on the last page.
template <class T>
struct Page {
  std::vector<T> items;
  std::string next_cursor;
};

struct Message {
  MessageId id = 0;  // monotonic: a later append has a larger id
  ConversationId conversation_id = 0;
  Role role = Role::user;
  MessageKind kind = MessageKind::text;
  std::string content;
  std::optional<std::string> agent;
  std::optional<std::string> model;
  std::optional<std::int64_t> token_count;
  std::optional<std::string> tool_name;
  Json tool_args;  // null unless a tool call / result carries arguments
  std::optional<std::string> tool_call_id;
  std::optional<std::string> platform_message_id;  // e.g. the Telegram message id
  std::optional<std::string> reply_to_platform_id;
  std::optional<std::string> client_key;  // idempotency key, unique per conversation
  bool complete = true;                   // false while a streamed message grows
  Json metadata = Json::object();
  Timestamp created_at{};
  Timestamp updated_at{};
};

struct NewMessage {
  Role role = Role::user;
  MessageKind kind = MessageKind::text;
  std::string content;  // valid UTF-8 without NUL
  std::optional<std::string> agent;
  std::optional<std::string> model;
  std::optional<std::int64_t> token_count;
  std::optional<std::string> tool_name;
  Json tool_args;
  std::optional<std::string> tool_call_id;
  std::optional<std::string> platform_message_id;
  std::optional<std::string> reply_to_platform_id;
  // Appending a message whose key is already stored in the conversation
  // returns the stored message and writes nothing (a redelivered webhook, a
  // retry after a timeout). For a bot, the platform message id is a good key.
  std::optional<std::string> client_key;
  bool complete = true;
  Json metadata = Json::object();
};

struct AppendOptions {
  // Compare-and-append: fail with Error(conflict) unless the conversation's
  // version still equals this (the version moves with every append).
  std::optional<std::int64_t> expected_version;
  // Fencing: the TurnLease::fence of the caller's turn. Refused with
  // Error(conflict) when an append already carried a newer fence (this
  // caller's lease expired and another holder took the turn).
  std::optional<std::int64_t> fence;
};

// Changes to a stored message (seed 004 update_message).
struct MessageUpdate {
  std::optional<std::string> content;
  std::optional<bool> complete;
  std::optional<std::int64_t> token_count;
  std::optional<Json> metadata_patch;
};

// Which messages ConversationStore::history returns. `before` / `after` are
// message ids of the same conversation (keyset pagination: pass the last id
// of a page to get the next one).
struct HistoryQuery {
  std::optional<MessageId> before;
  std::optional<MessageId> after;
  std::size_t limit = 50;  // 1 .. 10000
  bool newest_first = false;
  std::optional<Role> role;
  std::optional<std::string> agent;
  std::optional<MessageKind> kind;
};

struct DataSnapshot {
  SnapshotId id = 0;
  ConversationId conversation_id = 0;
  DataKind kind = DataKind::partial;
  Json data;
  Timestamp created_at{};
};

// A question an agent asked to fill missing fields (seed 000 agent_questions).
struct Question {
  QuestionId id = 0;
  ConversationId conversation_id = 0;
  std::string agent;
  std::string question;
  Json missing_fields = Json::array();
  std::optional<std::string> platform_message_id;  // the bot message that asked it
  Timestamp asked_at{};
  std::optional<Timestamp> answered_at;
  std::optional<std::string> answer;
};

struct NewQuestion {
  NewQuestion() = default;
  NewQuestion(std::string agent_, std::string question_, Json missing_fields_ = Json::array(),
              std::optional<std::string> platform_message_id_ = std::nullopt)
      : agent(std::move(agent_)),
        question(std::move(question_)),
        missing_fields(std::move(missing_fields_)),
        platform_message_id(std::move(platform_message_id_)) {}

  std::string agent;
  std::string question;
  Json missing_fields = Json::array();
  std::optional<std::string> platform_message_id;
};

// A message found by its platform id, with its conversation.
struct ThreadHit {
  Conversation conversation;
  Message message;
};

// Everything an agent needs to continue a conversation (seed 000's
// conversation context), loaded in a fixed number of queries.
struct ConversationContext {
  Conversation conversation;
  Json partial_data = Json::object();              // newest partial snapshot, {} if none
  Json missing_fields = Json::array();             // newest missing_fields snapshot, [] if none
  std::vector<Message> messages;                   // the last n, oldest first
  std::vector<Question> questions;                 // oldest first
  std::optional<std::string> last_bot_message_id;  // newest assistant platform id

  // The seed-000 shape: conversation fields, partial_data, missing_fields,
  // message_history, agent_questions, last_bot_message_id.
  CONVSTORE_EXPORT Json to_json() const;
};

// ---- search and context windows ----

// A full-text search over message content (ConversationStore::search).
//
// `text` is what a user typed; it is never a syntax error. It is read as
// terms separated by white space, all of which must match (AND):
//   word        a word; punctuation inside splits it into words that must
//               follow each other ("foo-bar" finds "foo bar" and "foo-bar")
//   "a phrase"  the words in this order, next to each other
//   word*       a word or phrase whose last word starts with this
// Words are runs of letters and digits, matched case-insensitively without
// stemming; AND, OR, NOT, NEAR, quotes that do not pair, parentheses, ':',
// '-' and the like are plain text. Text without any word is
// Error(invalid_argument).
struct SearchQuery {
  std::string text;
  std::optional<UserId> user_id;  // conversations of this user
  std::optional<ConversationId> conversation_id;
  std::optional<Role> role;
  std::optional<std::string> channel;  // the conversation's channel
  std::optional<Timestamp> from;       // message created_at >= from
  std::optional<Timestamp> to;         // message created_at < to
  std::size_t limit = 20;              // 1 .. 1000
  std::string cursor;                  // next_cursor of the previous page
  // The snippet: up to `snippet_words` words (2 .. 64) around the best
  // match, each matched word between the markers; `snippet_ellipsis` where
  // the content was cut.
  std::string highlight_open = "[";
  std::string highlight_close = "]";
  std::string snippet_ellipsis = "...";
  std::size_t snippet_words = 16;
};

// One message found by a search.
struct SearchHit {
  Message message;  // message.conversation_id is its conversation
  // Relevance, higher is better, a function of this message alone: the
  // query's matches in it divided by 1 + ln(its length in words) on SQLite,
  // PostgreSQL's ts_rank_cd (normalized by document length); comparable
  // within one search only, and not across backends. Rounded to 1e-12.
  double rank = 0;
  std::string snippet;
};

// What ConversationStore::context_window may return.
struct ContextBudget {
  std::int64_t max_tokens = 0;  // > 0
  // Keep every system message of the conversation, whatever its age: they
  // count against the budget and take their place in the window's id order
  // (an old one comes before the recent messages).
  bool keep_system = true;
  // At most this many of the recent messages (the kept system messages not
  // counted); unset: no limit but the budget.
  std::optional<std::size_t> max_messages;
  // The token count of a message whose token_count is unset. Default:
  // ceil(UTF-8 bytes of content / 4) + 4.
  std::function<std::int64_t(const Message&)> estimate;
};

// The newest messages of a conversation that fit a budget, in order.
struct ContextWindow {
  std::vector<Message> messages;  // kept system messages and recent ones, in id order
  std::int64_t total_tokens = 0;  // their token counts, estimated ones included; saturates
  std::size_t estimated = 0;      // how many had no token_count
  bool truncated = false;         // older messages were left out
  // The kept system messages and the newest message alone exceed the
  // budget: they are returned anyway (a reply needs the newest turn).
  bool over_budget = false;
};

// The default estimate: ceil(UTF-8 bytes of content / 4) + 4.
CONVSTORE_EXPORT std::int64_t estimate_tokens(const Message& m) noexcept;

// ---- agents (seed 004 registry) and their state (seed 001) ----

// How an agent presents itself (seed 004 persona_* fields).
struct AgentPersona {
  std::string name;
  std::string description;
  std::string personality;
  std::vector<std::string> expertise;
  Json extra = Json::object();  // any further persona fields
};

// A registered agent. `id` is chosen by the app.
struct Agent {
  std::string id;
  std::string name;
  std::string description;
  std::string type = "regular";  // regular, sequential, parallel, or the app's own
  AgentPersona persona;
  Json config = Json::object();
  std::vector<std::string> tools;
  std::vector<std::string> sub_agents;  // ids of registered agents, no cycles
  std::optional<std::string> planner;
  std::int64_t version = 1;  // moves with every update
  bool active = true;        // false after a soft delete
  std::int64_t usage_count = 0;
  std::optional<Timestamp> last_used_at;
  Json metadata = Json::object();
  Timestamp created_at{};
  Timestamp updated_at{};
};

struct NewAgent {
  std::string id;  // 1..200 characters, no control characters
  std::string name;
  std::string description;
  std::string type = "regular";
  AgentPersona persona;
  Json config = Json::object();
  std::vector<std::string> tools;
  std::vector<std::string> sub_agents;
  std::optional<std::string> planner;
  Json metadata = Json::object();
};

// Changes to an agent: a set field replaces the stored value (an empty
// planner clears it); `metadata_patch` is merged (RFC 7396).
struct AgentUpdate {
  std::optional<std::string> name;
  std::optional<std::string> description;
  std::optional<std::string> type;
  std::optional<AgentPersona> persona;
  std::optional<Json> config;
  std::optional<std::vector<std::string>> tools;
  std::optional<std::vector<std::string>> sub_agents;
  std::optional<std::string> planner;
  std::optional<Json> metadata_patch;
  // When set, the update fails with Error(conflict) unless the stored
  // version equals it (someone else changed the agent in between).
  std::optional<std::int64_t> expected_version;
};

// Which agents AgentStateStore::list_agents returns, ordered by id.
struct AgentFilter {
  bool include_inactive = false;
  std::optional<std::string> type;
  std::size_t limit = 50;  // 1 .. 1000
  std::string cursor;      // next_cursor of the previous page
};

// Where an agent's state lives. Build one with the factories:
//   StateScope::conversation(id)  the state of one conversation; deleted with it
//   StateScope::session("abc")    seed 001: the conversation whose key is "abc";
//                                 cleanup_orphaned_states() removes it once
//                                 no conversation has that key
//   StateScope::named("user:42")  any other scope the app chooses (per-user
//                                 memory, a global scope); never cleaned up
struct StateScope {
  enum class Kind { conversation, session, named };
  Kind kind = Kind::named;
  std::string key;  // the conversation id as text for Kind::conversation

  static StateScope conversation(ConversationId id) {
    return {Kind::conversation, std::to_string(id)};
  }
  static StateScope session(std::string key) { return {Kind::session, std::move(key)}; }
  static StateScope named(std::string key) { return {Kind::named, std::move(key)}; }
  bool operator==(const StateScope& o) const { return kind == o.kind && key == o.key; }
};

CONVSTORE_EXPORT std::string_view to_string(StateScope::Kind k) noexcept;
// Throws Error(invalid_argument) naming the value.
CONVSTORE_EXPORT StateScope::Kind parse_state_scope_kind(std::string_view s);

// One agent's state in one scope.
struct AgentState {
  StateScope scope;
  std::string agent;
  Json state = Json::object();
  std::int64_t version = 0;  // 0: nothing stored yet
  Timestamp created_at{};
  Timestamp updated_at{};
};

// An earlier version of a state, kept in its history.
struct AgentStateVersion {
  std::int64_t version = 0;
  Json state = Json::object();
  Timestamp saved_at{};
};

// JSON forms of the value types (timestamps as ISO 8601 strings).
CONVSTORE_EXPORT Json to_json(const User& u);
CONVSTORE_EXPORT Json to_json(const Conversation& c);
CONVSTORE_EXPORT Json to_json(const Message& m);
// The inverse of to_json(const Message&); throws Error(invalid_argument).
CONVSTORE_EXPORT Message message_from_json(const Json& j);
CONVSTORE_EXPORT Json to_json(const Question& q);
CONVSTORE_EXPORT Json to_json(const Agent& a);
CONVSTORE_EXPORT Json to_json(const AgentState& s);

}  // namespace convstore
