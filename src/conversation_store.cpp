// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#include "convstore/conversation_store.hpp"

#include <algorithm>
#include <charconv>

#include "db/codec.hpp"
#include "store_helpers.hpp"
#include "store_impl.hpp"

namespace convstore {

using detail::Backend;
using detail::check_text;
using detail::Connection;
using detail::Sql;
using detail::Stmt;

namespace detail {

// ---- columns and row readers, shared by every query of a table ----

#define CS_USER_COLS                                                                   \
  "id, channel, external_id, username, display_name, preferred_model, system_prompt, " \
  "time_zone, metadata, created_at, updated_at"

void read_row(Stmt& s, User& u) {
  s.out(u.id).out(u.channel).out(u.external_id).out(u.username).out(u.display_name);
  s.out(u.preferred_model).out(u.system_prompt).out(u.time_zone).out(u.metadata);
  s.out(u.created_at).out(u.updated_at);
}

#define CS_CONV_COLS                                                                  \
  "id, key, user_id, channel, chat_id, agent, kind, title, active_agent, status, "    \
  "model_override, external_ref, message_count, version, last_message_at, metadata, " \
  "created_at, updated_at"

void read_row(Stmt& s, Conversation& c) {
  s.out(c.id).out(c.key).out(c.user_id).out(c.channel).out(c.chat_id).out(c.agent);
  s.out(c.kind).out(c.title).out(c.active_agent).out(c.status).out(c.model_override);
  s.out(c.external_ref).out(c.message_count).out(c.version).out(c.last_message_at);
  s.out(c.metadata).out(c.created_at).out(c.updated_at);
}

void read_row(Stmt& s, Message& m) {
  s.out(m.id).out(m.conversation_id).out(m.role).out(m.kind).out(m.content).out(m.agent);
  s.out(m.model).out(m.token_count).out(m.tool_name).out(m.tool_args).out(m.tool_call_id);
  s.out(m.platform_message_id).out(m.reply_to_platform_id).out(m.client_key).out(m.complete);
  s.out(m.metadata).out(m.created_at).out(m.updated_at);
}

#define CS_QUESTION_COLS                                                                  \
  "id, conversation_id, agent, question, missing_fields, platform_message_id, asked_at, " \
  "answered_at, answer"

void read_row(Stmt& s, Question& q) {
  s.out(q.id).out(q.conversation_id).out(q.agent).out(q.question).out(q.missing_fields);
  s.out(q.platform_message_id).out(q.asked_at).out(q.answered_at).out(q.answer);
}

#define CS_DATA_COLS "id, conversation_id, kind, data, created_at"

void read_row(Stmt& s, DataSnapshot& d) {
  s.out(d.id).out(d.conversation_id).out(d.kind).out(d.data).out(d.created_at);
}

#define CS_CHANNEL_COLS "channel, default_model, settings, created_at, updated_at"

void read_row(Stmt& s, ChannelConfig& c) {
  s.out(c.channel).out(c.default_model).out(c.settings).out(c.created_at).out(c.updated_at);
}

}  // namespace detail

namespace {

using detail::check_json;
using detail::check_key_opt;
using detail::check_key_text;
using detail::check_opt;
using detail::cleared;
using detail::fetch_all;
using detail::fetch_one;
using detail::json_text;

void check_message(const NewMessage& m) {
  check_text(m.content, "message content");
  check_opt(m.agent, "message agent");
  check_opt(m.model, "message model");
  check_opt(m.tool_name, "message tool name");
  check_opt(m.tool_call_id, "message tool call id");
  check_key_opt(m.platform_message_id, "platform message id");
  check_key_opt(m.reply_to_platform_id, "reply-to platform id");
  check_key_opt(m.client_key, "message client key");
  if (m.client_key && m.client_key->empty()) {
    throw Error(ErrorCode::invalid_argument, "message client key is empty");
  }
  if (m.token_count && *m.token_count < 0) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("message token count {} is negative", *m.token_count));
  }
  if (static_cast<int>(m.role) < 0 || static_cast<int>(m.role) > 3) {
    throw Error(ErrorCode::invalid_argument, "message role is outside the set");
  }
  if (static_cast<int>(m.kind) < 0 || static_cast<int>(m.kind) > 4) {
    throw Error(ErrorCode::invalid_argument, "message kind is outside the set");
  }
}

// A message's parameters in column order, shared by every insert.
#define CS_MSG_INSERT_COLS                                                                  \
  "conversation_id, role, kind, content, agent, model, token_count, tool_name, tool_args, " \
  "tool_call_id, platform_message_id, reply_to_platform_id, client_key, complete, "         \
  "metadata, created_at, updated_at"

struct EncodedMessage {
  std::string tool_args;
  std::string metadata;
  bool has_tool_args;
};

EncodedMessage encode(const NewMessage& m) {
  check_message(m);
  check_json(m.tool_args, "message tool arguments");
  check_json(m.metadata, "message metadata");
  return {m.tool_args.is_null() ? std::string() : json_text(m.tool_args, "message tool arguments"),
          json_text(m.metadata.is_null() ? Json::object() : m.metadata, "message metadata"),
          !m.tool_args.is_null()};
}

void bind_message(Stmt& s, ConversationId id, const NewMessage& m, const EncodedMessage& e,
                  const std::string& t) {
  s.in(id).in(m.role).in(m.kind).in(m.content).in(m.agent).in(m.model).in(m.token_count);
  s.in(m.tool_name);
  if (e.has_tool_args) {
    s.in(e.tool_args);
  } else {
    s.in_null();
  }
  s.in(m.tool_call_id).in(m.platform_message_id).in(m.reply_to_platform_id).in(m.client_key);
  s.in(m.complete).in(e.metadata).in(t).in(t);
}

Message stored_message(MessageId mid, ConversationId cid, const NewMessage& m, Timestamp t) {
  Message out;
  out.id = mid;
  out.conversation_id = cid;
  out.role = m.role;
  out.kind = m.kind;
  out.content = m.content;
  out.agent = m.agent;
  out.model = m.model;
  out.token_count = m.token_count;
  out.tool_name = m.tool_name;
  out.tool_args = m.tool_args;
  out.tool_call_id = m.tool_call_id;
  out.platform_message_id = m.platform_message_id;
  out.reply_to_platform_id = m.reply_to_platform_id;
  out.client_key = m.client_key;
  out.complete = m.complete;
  out.metadata = m.metadata.is_null() ? Json::object() : m.metadata;
  out.created_at = t;
  out.updated_at = t;
  return out;
}

[[noreturn]] void conversation_not_found(ConversationId id) {
  throw Error(ErrorCode::not_found, fmt::format("conversation {} not found", id));
}

// ---- shared statements ----

const Sql kGetConversation{"SELECT " CS_CONV_COLS " FROM conversations WHERE id = :id"};
const Sql kLockConversation{"SELECT " CS_CONV_COLS " FROM conversations WHERE id = :id",
                            "SELECT " CS_CONV_COLS " FROM conversations WHERE id = :id FOR UPDATE"};
const Sql kFindConversation{"SELECT " CS_CONV_COLS " FROM conversations WHERE key = :key"};
const Sql kGetMessage{"SELECT " CS_MSG_COLS " FROM messages WHERE id = :id"};
const Sql kLockMessage{"SELECT " CS_MSG_COLS " FROM messages WHERE id = :id",
                       "SELECT " CS_MSG_COLS " FROM messages WHERE id = :id FOR UPDATE"};

Conversation lock_conversation(Connection& c, ConversationId id) {
  Stmt s(c, kLockConversation);
  s.in(id);
  auto conv = fetch_one<Conversation>(s);
  if (!conv) conversation_not_found(id);
  return *conv;
}

// Writes every mutable column of `conv`, bumping its version.
Conversation write_conversation(Connection& c, const Conversation& conv) {
  static const Sql q{
      "UPDATE conversations SET agent = :agent, kind = :kind, title = :title, "
      "active_agent = :aa, status = :status, model_override = :mo, external_ref = :er, "
      "metadata = :md, version = version + 1, updated_at = :t WHERE id = :id "
      "RETURNING " CS_CONV_COLS};
  std::string md = json_text(conv.metadata, "conversation metadata");
  Stmt s(c, q);
  s.in(conv.agent).in(conv.kind).in(conv.title).in(conv.active_agent).in(conv.status);
  s.in(conv.model_override).in(conv.external_ref).in(md).in(now()).in(conv.id);
  auto out = fetch_one<Conversation>(s);
  if (!out) conversation_not_found(conv.id);
  return *out;
}

bool transition_allowed(ConversationStatus from, ConversationStatus to) {
  using S = ConversationStatus;
  switch (from) {
    case S::active:
      return to == S::completed || to == S::abandoned || to == S::archived;
    case S::completed:
      return to == S::archived;
    case S::abandoned:
      return to == S::archived || to == S::active;
    case S::archived:
      return false;
  }
  return false;
}

Conversation move_status(Connection& c, ConversationId id, ConversationStatus to,
                         const std::optional<std::string>& external_ref) {
  Conversation conv = lock_conversation(c, id);
  if (!transition_allowed(conv.status, to)) {
    throw Error(ErrorCode::conflict, fmt::format("conversation {} cannot move from {} to {}", id,
                                                 to_string(conv.status), to_string(to)));
  }
  conv.status = to;
  if (external_ref) conv.external_ref = external_ref;
  return write_conversation(c, conv);
}

DataSnapshot insert_data(Connection& c, ConversationId id, DataKind kind, const Json& data) {
  static const Sql q{
      "INSERT INTO conversation_data (conversation_id, kind, data, created_at) "
      "VALUES (:c, :k, :d, :t) RETURNING id"};
  std::string text = json_text(data, "conversation data");
  DataSnapshot d{0, id, kind, data, now()};
  Stmt s(c, q);
  s.in(id).in(kind).in(text).in(d.created_at).out(d.id);
  s.one();
  return d;
}

// The stored message with this client key in conversation `id`, if any.
std::optional<Message> find_by_client_key(Connection& c, ConversationId id,
                                          const std::string& key) {
  static const Sql q{"SELECT " CS_MSG_COLS
                     " FROM messages WHERE conversation_id = :c AND client_key = :k"};
  Stmt s(c, q);
  s.in(id).in(key);
  return fetch_one<Message>(s);
}

// The INSERT of `rows` messages in one statement (multi-row VALUES).
// PostgreSQL returns the ids; SQLite's are consecutive under the write lock
// and end at the connection's last rowid, which costs less than RETURNING
// (SQLite buffers RETURNING rows in a temporary table).
const std::string& insert_text(Backend backend, std::size_t rows) {
  static const auto build = [](Backend b, std::size_t n) {
    std::string sql = "INSERT INTO messages (" CS_MSG_INSERT_COLS ") VALUES ";
    for (std::size_t i = 0; i < n; ++i) {
      sql += i == 0 ? "(" : ", (";
      for (int p = 0; p < 17; ++p) sql += fmt::format("{}:p{}_{}", p == 0 ? "" : ", ", i, p);
      sql += ")";
    }
    if (b == Backend::postgresql) sql += " RETURNING id";
    return sql;
  };
  // The chunk sizes a batch is cut into; each text is prepared once per
  // connection.
  static const std::string texts[2][4] = {
      {build(Backend::sqlite, 1), build(Backend::sqlite, 4), build(Backend::sqlite, 16),
       build(Backend::sqlite, 64)},
      {build(Backend::postgresql, 1), build(Backend::postgresql, 4), build(Backend::postgresql, 16),
       build(Backend::postgresql, 64)}};
  std::size_t i = rows == 1 ? 0 : rows == 4 ? 1 : rows == 16 ? 2 : 3;
  return texts[backend == Backend::postgresql ? 1 : 0][i];
}

// Inserts messages [0, n) with as few statements as the chunk sizes allow;
// returns their ids in order.
std::vector<MessageId> insert_messages(Connection& c, ConversationId id, const NewMessage* ms,
                                       const EncodedMessage* es, std::size_t n, Timestamp t) {
  const std::string ts = to_iso8601(t);
  std::vector<MessageId> ids;
  ids.reserve(n);
  std::size_t done = 0;
  while (done < n) {
    std::size_t left = n - done;
    std::size_t chunk = left >= 64 ? 64 : left >= 16 ? 16 : left >= 4 ? 4 : 1;
    Stmt s(c, insert_text(c.backend(), chunk));
    for (std::size_t i = done; i < done + chunk; ++i) bind_message(s, id, ms[i], es[i], ts);
    if (c.backend() == Backend::postgresql) {
      long long mid = 0;
      s.out(mid);
      auto first = ids.size();
      while (s.next()) ids.push_back(mid);
      // The ids were drawn in VALUES order.
      std::sort(ids.begin() + static_cast<std::ptrdiff_t>(first), ids.end());
    } else {
      s.one();
      long long last = 0;
      c.session().get_last_insert_id("messages", last);
      for (std::size_t i = 0; i < chunk; ++i) {
        ids.push_back(last - static_cast<long long>(chunk - 1 - i));
      }
    }
    done += chunk;
  }
  return ids;
}

// PostgreSQL: a whole batch as one statement, atomic on its own (one round
// trip instead of one a chunk, plus BEGIN / lock / count / COMMIT): the
// UPDATE locks the conversation and moves its count, the rows travel as one
// JSON array that the server unpacks. Returns no ids when the conversation
// does not exist.
std::vector<MessageId> insert_batch_json(Connection& c, ConversationId id,
                                         const std::vector<NewMessage>& messages,
                                         const std::vector<EncodedMessage>& encoded, Timestamp t) {
  static const Sql q{
      "",
      "WITH c AS (UPDATE conversations SET message_count = message_count + :n, "
      "version = version + 1, last_message_at = :t0::timestamptz, "
      "updated_at = :t00::timestamptz WHERE id = :c RETURNING id), ins AS ("
      "INSERT INTO messages (" CS_MSG_INSERT_COLS
      ") SELECT c.id, r.role, r.kind, r.content, r.agent, r.model, r.token_count, r.tool_name, "
      "r.tool_args, r.tool_call_id, r.platform_message_id, r.reply_to_platform_id, NULL, "
      "r.complete, r.metadata, :t1::timestamptz, :t2::timestamptz "
      "FROM c, ROWS FROM (json_to_recordset(:rows::json) AS (role text, kind text, "
      "content text, agent text, model text, token_count bigint, tool_name text, "
      "tool_args jsonb, tool_call_id text, platform_message_id text, "
      "reply_to_platform_id text, complete boolean, metadata jsonb)) WITH ORDINALITY "
      "AS r(role, kind, content, agent, model, token_count, tool_name, tool_args, "
      "tool_call_id, platform_message_id, reply_to_platform_id, complete, metadata, ord) "
      "ORDER BY r.ord RETURNING id) "
      // One row with every id, instead of a row each.
      "SELECT string_agg(id::text, ',' ORDER BY id) FROM ins"};
  // The array is written directly (absent keys are NULL columns): strings,
  // validated by encode(), are only escaped; the JSON fields are the text
  // encode() already produced.
  std::size_t size = 2;
  for (std::size_t i = 0; i < messages.size(); ++i) {
    size += messages[i].content.size() + encoded[i].metadata.size() + 96;
  }
  std::string rows;
  rows.reserve(size);
  rows += '[';
  auto field = [&rows](const char* key, const std::optional<std::string>& v) {
    if (!v) return;
    rows += ",\"";
    rows += key;
    rows += "\":";
    detail::append_json_string(rows, *v);
  };
  for (std::size_t i = 0; i < messages.size(); ++i) {
    const NewMessage& m = messages[i];
    rows += i == 0 ? "{\"role\":\"" : ",{\"role\":\"";
    rows += to_string(m.role);
    rows += "\",\"kind\":\"";
    rows += to_string(m.kind);
    rows += "\",\"content\":";
    detail::append_json_string(rows, m.content);
    rows += m.complete ? ",\"complete\":true,\"metadata\":" : ",\"complete\":false,\"metadata\":";
    rows += encoded[i].metadata;
    if (encoded[i].has_tool_args) {
      rows += ",\"tool_args\":";
      rows += encoded[i].tool_args;
    }
    if (m.token_count) rows += fmt::format(",\"token_count\":{}", *m.token_count);
    field("agent", m.agent);
    field("model", m.model);
    field("tool_name", m.tool_name);
    field("tool_call_id", m.tool_call_id);
    field("platform_message_id", m.platform_message_id);
    field("reply_to_platform_id", m.reply_to_platform_id);
    rows += '}';
  }
  rows += ']';
  std::optional<std::string> list;
  Stmt s(c, q);
  s.in(messages.size()).in(t).in(t).in(id).in(t).in(t).in(rows).out(list).one();
  // The ids were drawn in ORDER BY order under the conversation's lock, and
  // come sorted; there are none when the conversation does not exist.
  std::vector<MessageId> ids;
  ids.reserve(messages.size());
  if (!list) return ids;
  const char* p = list->data();
  const char* end = p + list->size();
  while (p < end) {
    long long v = 0;
    auto r = std::from_chars(p, end, v);
    if (r.ec != std::errc()) throw Error(ErrorCode::internal, "unreadable id list from the server");
    ids.push_back(v);
    p = r.ptr + 1;  // past the comma
  }
  return ids;
}

void count_messages(Connection& c, ConversationId id, long long added, Timestamp t) {
  static const Sql q{
      "UPDATE conversations SET message_count = message_count + :n, version = version + 1, "
      "last_message_at = :t1, updated_at = :t2 WHERE id = :id"};
  Stmt(c, q).in(added).in(t).in(t).in(id).one();
}

// Appends inside an open transaction: lock the conversation, honour the
// client key and the expected version, insert, count.
// A writer holding a turn lease (SessionCache::acquire_turn) passes its
// fence: an older fence than the newest one seen is a holder whose lease
// expired, and is refused; a newer one becomes the newest.
void check_fence(Connection& c, ConversationId id, std::int64_t fence) {
  static const Sql raise{"UPDATE conversations SET fence = :f WHERE id = :id AND fence <= :f2"};
  static const Sql current{"SELECT fence FROM conversations WHERE id = :id"};
  Stmt s(c, raise);
  s.in(static_cast<long long>(fence)).in(id).in(static_cast<long long>(fence)).one();
  if (s.affected() > 0) return;
  long long seen = 0;
  Stmt(c, current).in(id).out(seen).one();
  throw Error(ErrorCode::conflict,
              fmt::format("conversation {}: fence {} is older than the newest turn's fence {} "
                          "(the turn lease was lost)",
                          id, fence, seen));
}

Message append_locked(Connection& c, ConversationId id, const NewMessage& m,
                      const EncodedMessage& e, const AppendOptions& opts) {
  Conversation conv = lock_conversation(c, id);
  if (m.client_key) {
    if (auto existing = find_by_client_key(c, id, *m.client_key)) return *existing;
  }
  if (opts.expected_version && *opts.expected_version != conv.version) {
    throw Error(ErrorCode::conflict,
                fmt::format("conversation {} is at version {}, not the expected {}", id,
                            conv.version, *opts.expected_version));
  }
  if (opts.fence) check_fence(c, id, *opts.fence);
  Timestamp t = now();
  MessageId mid = insert_messages(c, id, &m, &e, 1, t).front();
  count_messages(c, id, 1, t);
  return stored_message(mid, id, m, t);
}

// PostgreSQL: the whole append as one statement (one round trip, atomic on
// its own): the UPDATE locks the conversation and checks the version, the
// INSERT reads its output.
const Sql kAppendOneStatement{
    "",
    "WITH c AS (UPDATE conversations SET message_count = message_count + 1, "
    "version = version + 1, last_message_at = :t1::timestamptz, updated_at = :t2::timestamptz "
    "WHERE id = :id AND (:v1::bigint IS NULL OR version = :v2::bigint) RETURNING id) "
    "INSERT INTO messages (" CS_MSG_INSERT_COLS
    ") SELECT c.id, :r, :k, :content, :agent, :model, :tc::bigint, :tn, :ta::jsonb, :tci, "
    ":pid, :rpid, :ck, :done::int::boolean, :md::jsonb, :t3::timestamptz, :t4::timestamptz "
    "FROM c RETURNING id"};

}  // namespace

// ============================ users and channels ============================

namespace {

void check_user_update(const UserUpdate& up) {
  check_opt(up.username, "username");
  check_opt(up.display_name, "user display name");
  check_opt(up.preferred_model, "user preferred model");
  check_opt(up.system_prompt, "user system prompt");
  check_opt(up.time_zone, "user time zone");
  if (up.time_zone && up.time_zone->empty()) {
    throw Error(ErrorCode::invalid_argument, "user time zone is empty");
  }
  if (up.metadata_patch) json_text(*up.metadata_patch, "user metadata patch");
}

// Applies `up` to the locked row `user` and writes it back.
User write_user(Connection& c, User user, const UserUpdate& up) {
  static const Sql write{
      "UPDATE users SET username = :un, display_name = :dn, preferred_model = :pm, "
      "system_prompt = :sp, time_zone = :tz, metadata = :md, updated_at = :t WHERE id = :id "
      "RETURNING " CS_USER_COLS};
  if (up.username) user.username = cleared(*up.username);
  if (up.display_name) user.display_name = cleared(*up.display_name);
  if (up.preferred_model) user.preferred_model = cleared(*up.preferred_model);
  if (up.system_prompt) user.system_prompt = cleared(*up.system_prompt);
  if (up.time_zone) user.time_zone = *up.time_zone;
  if (up.metadata_patch) user.metadata.merge_patch(*up.metadata_patch);
  std::string md = json_text(user.metadata, "user metadata");
  Stmt s(c, write);
  s.in(user.username).in(user.display_name).in(user.preferred_model);
  s.in(user.system_prompt).in(user.time_zone).in(md).in(now()).in(user.id);
  return *fetch_one<User>(s);
}

}  // namespace

User ConversationStore::upsert_user(const UserUpsert& u) {
  if (u.channel.empty() || u.external_id.empty()) {
    throw Error(ErrorCode::invalid_argument, "a user needs a channel and an external id");
  }
  check_key_text(u.channel, "user channel");
  check_key_text(u.external_id, "user external id");
  check_json(u.metadata, "user metadata");
  const Json patch = u.metadata.is_null() ? Json::object() : u.metadata;
  UserUpdate up;
  up.username = u.username;
  up.display_name = u.display_name;
  up.preferred_model = u.preferred_model;
  up.system_prompt = u.system_prompt;
  up.time_zone = u.time_zone;
  if (!patch.empty()) up.metadata_patch = patch;
  check_user_update(up);
  static const Sql insert{
      "INSERT INTO users (channel, external_id, username, display_name, preferred_model, "
      "system_prompt, time_zone, metadata, created_at, updated_at) "
      "VALUES (:ch, :ext, :un, :dn, :pm, :sp, :tz, :md, :t1, :t2) "
      "ON CONFLICT (channel, external_id) DO NOTHING RETURNING " CS_USER_COLS};
  static const Sql lock{
      "SELECT " CS_USER_COLS " FROM users WHERE channel = :ch AND external_id = :ext",
      "SELECT " CS_USER_COLS " FROM users WHERE channel = :ch AND external_id = :ext FOR UPDATE"};
  return impl_->write(Op{"upsert user"}, [&](Connection& c) {
    Timestamp t = now();
    Json fresh = Json::object();
    fresh.merge_patch(patch);
    std::string md = json_text(fresh, "user metadata");
    Stmt ins(c, insert);
    auto field = [](const std::optional<std::string>& v) {
      return v ? cleared(*v) : std::nullopt;  // "" is no value, as in an update
    };
    ins.in(u.channel).in(u.external_id).in(field(u.username)).in(field(u.display_name));
    ins.in(field(u.preferred_model)).in(field(u.system_prompt));
    ins.in(u.time_zone.value_or("UTC")).in(md).in(t).in(t);
    if (auto created = fetch_one<User>(ins)) return *created;
    Stmt sel(c, lock);
    sel.in(u.channel).in(u.external_id);
    auto existing = fetch_one<User>(sel);
    if (!existing) throw Error(ErrorCode::internal, "upserted user vanished");
    return write_user(c, std::move(*existing), up);
  });
}

std::optional<User> ConversationStore::get_user(UserId id) {
  static const Sql q{"SELECT " CS_USER_COLS " FROM users WHERE id = :id"};
  return impl_->read(Op{"get user", "user", id}, [&](Connection& c) {
    Stmt s(c, q);
    s.in(id);
    return fetch_one<User>(s);
  });
}

std::optional<User> ConversationStore::find_user(std::string_view channel,
                                                 std::string_view external_id) {
  check_key_text(channel, "user channel");
  check_key_text(external_id, "user external id");
  static const Sql q{"SELECT " CS_USER_COLS
                     " FROM users WHERE channel = :ch AND external_id = :ext"};
  return impl_->read(Op{"find user"}, [&](Connection& c) {
    Stmt s(c, q);
    s.in(channel).in(external_id);
    return fetch_one<User>(s);
  });
}

User ConversationStore::update_user(UserId id, const UserUpdate& up) {
  check_user_update(up);
  static const Sql lock{"SELECT " CS_USER_COLS " FROM users WHERE id = :id",
                        "SELECT " CS_USER_COLS " FROM users WHERE id = :id FOR UPDATE"};
  return impl_->write(Op{"update user", "user", id}, [&](Connection& c) {
    Stmt sel(c, lock);
    sel.in(id);
    auto user = fetch_one<User>(sel);
    if (!user) throw Error(ErrorCode::not_found, fmt::format("user {} not found", id));
    return write_user(c, std::move(*user), up);
  });
}

ChannelConfig ConversationStore::set_channel_config(std::string_view channel,
                                                    std::string_view default_model,
                                                    const Json& settings) {
  if (channel.empty()) throw Error(ErrorCode::invalid_argument, "channel name is empty");
  check_key_text(channel, "channel name");
  check_text(default_model, "channel default model");
  check_json(settings, "channel settings");
  std::string st = json_text(settings.is_null() ? Json::object() : settings, "channel settings");
  static const Sql q{
      "INSERT INTO channel_configs (channel, default_model, settings, created_at, updated_at) "
      "VALUES (:ch, :dm, :st, :t1, :t2) ON CONFLICT (channel) DO UPDATE SET "
      "default_model = excluded.default_model, settings = excluded.settings, "
      "updated_at = excluded.updated_at RETURNING " CS_CHANNEL_COLS};
  return impl_->single(Op{"set channel config"}, [&](Connection& c) {
    Timestamp t = now();
    Stmt s(c, q);
    s.in(channel).in(default_model).in(st).in(t).in(t);
    return *fetch_one<ChannelConfig>(s);
  });
}

std::optional<ChannelConfig> ConversationStore::channel_config(std::string_view channel) {
  check_key_text(channel, "channel name");
  static const Sql q{"SELECT " CS_CHANNEL_COLS " FROM channel_configs WHERE channel = :ch"};
  return impl_->read(Op{"get channel config"}, [&](Connection& c) {
    Stmt s(c, q);
    s.in(channel);
    return fetch_one<ChannelConfig>(s);
  });
}

// ============================== conversations ==============================

namespace {

const Sql kInsertConversation{
    "INSERT INTO conversations (key, user_id, channel, chat_id, agent, kind, title, "
    "model_override, metadata, created_at, updated_at) "
    "VALUES (:key, :uid, :ch, :chat, :agent, :kind, :title, :mo, :md, :t1, :t2) "
    "RETURNING " CS_CONV_COLS};
const Sql kInsertConversationIfAbsent{
    "INSERT INTO conversations (key, user_id, channel, chat_id, agent, kind, title, "
    "model_override, metadata, created_at, updated_at) "
    "VALUES (:key, :uid, :ch, :chat, :agent, :kind, :title, :mo, :md, :t1, :t2) "
    "ON CONFLICT (key) DO NOTHING RETURNING " CS_CONV_COLS};

std::optional<Conversation> insert_conversation(Connection& c, const Sql& q,
                                                const NewConversation& n) {
  // Keys follow the rules of every app-chosen id, so that a conversation's
  // key can always name its agent-state scope (StateScope::session).
  if (n.key) detail::check_id(*n.key, "conversation key");
  check_key_text(n.channel, "conversation channel");
  check_key_opt(n.chat_id, "conversation chat id");
  check_opt(n.agent, "conversation agent");
  check_opt(n.kind, "conversation kind");
  check_opt(n.title, "conversation title");
  check_opt(n.model_override, "conversation model override");
  std::string md =
      json_text(n.metadata.is_null() ? Json::object() : n.metadata, "conversation metadata");
  Timestamp t = now();
  Stmt s(c, q);
  s.in(n.key).in(n.user_id).in(n.channel).in(n.chat_id).in(n.agent).in(n.kind).in(n.title);
  s.in(n.model_override).in(md).in(t).in(t);
  return fetch_one<Conversation>(s);
}

// Turns a database-level failure of a conversation insert into a message
// that names the key or the user.
[[noreturn]] void explain_insert_failure(const Error& e, const NewConversation& n) {
  if (e.code() == ErrorCode::already_exists && n.key) {
    throw Error(ErrorCode::already_exists,
                fmt::format("a conversation with key '{}' already exists", *n.key), e.sqlstate());
  }
  if (e.code() == ErrorCode::not_found && n.user_id) {
    throw Error(ErrorCode::not_found, fmt::format("user {} not found", *n.user_id), e.sqlstate());
  }
  throw e;
}

}  // namespace

Conversation ConversationStore::start(const NewConversation& n) {
  check_json(n.metadata, "conversation metadata");
  try {
    return impl_->single(Op{"start conversation"}, [&](Connection& c) {
      return *insert_conversation(c, kInsertConversation, n);
    });
  } catch (const Error& e) {
    explain_insert_failure(e, n);
  }
}

std::optional<Conversation> ConversationStore::get(ConversationId id) {
  return impl_->read(Op{"get conversation", "conversation", id}, [&](Connection& c) {
    Stmt s(c, kGetConversation);
    s.in(id);
    return fetch_one<Conversation>(s);
  });
}

std::optional<Conversation> ConversationStore::find(std::string_view key) {
  detail::check_id(key, "conversation key");
  return impl_->read(Op{"find conversation"}, [&](Connection& c) {
    Stmt s(c, kFindConversation);
    s.in(key);
    return fetch_one<Conversation>(s);
  });
}

Conversation ConversationStore::get_or_create(std::string_view key, const NewConversation& init) {
  detail::check_id(key, "conversation key");
  check_json(init.metadata, "conversation metadata");
  if (auto found = find(key)) return *found;
  NewConversation n = init;
  n.key = std::string(key);
  try {
    auto created = impl_->single(Op{"get or create conversation"}, [&](Connection& c) {
      return insert_conversation(c, kInsertConversationIfAbsent, n);
    });
    if (created) return *created;
  } catch (const Error& e) {
    explain_insert_failure(e, n);
  }
  // Another writer created it between the lookup and the insert.
  if (auto found = find(key)) return *found;
  throw Error(ErrorCode::aborted,
              fmt::format("conversation '{}' was created and deleted concurrently", key));
}

Conversation ConversationStore::update(ConversationId id, const ConversationUpdate& up) {
  check_opt(up.active_agent, "conversation active agent");
  check_opt(up.agent, "conversation agent");
  check_opt(up.kind, "conversation kind");
  check_opt(up.title, "conversation title");
  check_opt(up.model_override, "conversation model override");
  check_opt(up.external_ref, "conversation external reference");
  if (up.metadata_patch) json_text(*up.metadata_patch, "conversation metadata patch");
  return impl_->write(Op{"update conversation", "conversation", id}, [&](Connection& c) {
    Conversation conv = lock_conversation(c, id);
    if (up.expected_version && *up.expected_version != conv.version) {
      throw Error(ErrorCode::conflict,
                  fmt::format("conversation {} is at version {}, not the expected {}", id,
                              conv.version, *up.expected_version));
    }
    if (up.active_agent) conv.active_agent = cleared(*up.active_agent);
    if (up.agent) conv.agent = cleared(*up.agent);
    if (up.kind) conv.kind = cleared(*up.kind);
    if (up.title) conv.title = cleared(*up.title);
    if (up.model_override) conv.model_override = cleared(*up.model_override);
    if (up.external_ref) conv.external_ref = cleared(*up.external_ref);
    if (up.metadata_patch) conv.metadata.merge_patch(*up.metadata_patch);
    return write_conversation(c, conv);
  });
}

Page<Conversation> ConversationStore::list(const ConversationFilter& f) {
  if (f.limit == 0 || f.limit > 1000) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("page size {} is outside 1..1000", f.limit));
  }
  check_opt(f.channel, "channel filter");
  check_opt(f.chat_id, "chat id filter");
  check_opt(f.agent, "agent filter");
  check_opt(f.kind, "kind filter");
  std::optional<std::pair<Timestamp, ConversationId>> after;
  if (!f.cursor.empty()) after = detail::parse_time_cursor("v1", f.cursor);
  // The text depends only on which filters are set (at most 2^8 variants),
  // so each variant is prepared once per connection.
  std::string sql = "SELECT " CS_CONV_COLS " FROM conversations WHERE 1 = 1";
  if (f.user_id) sql += " AND user_id = :uid";
  if (f.channel) sql += " AND channel = :ch";
  if (f.chat_id) sql += " AND chat_id = :chat";
  if (f.status) sql += " AND status = :st";
  if (f.agent) sql += " AND agent = :agent";
  if (f.kind) sql += " AND kind = :kind";
  if (f.updated_since) sql += " AND updated_at >= :since";
  if (after) sql += " AND (updated_at, id) < (:ct, :cid)";
  sql += " ORDER BY updated_at DESC, id DESC LIMIT :lim";
  return impl_->read(Op{"list conversations"}, [&](Connection& c) {
    Stmt s(c, sql);
    if (f.user_id) s.in(*f.user_id);
    if (f.channel) s.in(*f.channel);
    if (f.chat_id) s.in(*f.chat_id);
    if (f.status) s.in(*f.status);
    if (f.agent) s.in(*f.agent);
    if (f.kind) s.in(*f.kind);
    if (f.updated_since) s.in(*f.updated_since);
    if (after) s.in(after->first).in(after->second);
    s.in(f.limit + 1);
    Page<Conversation> page;
    page.items = fetch_all<Conversation>(s);
    if (page.items.size() > f.limit) {
      page.items.pop_back();
      page.next_cursor =
          detail::time_cursor("v1", page.items.back().updated_at, page.items.back().id);
    }
    return page;
  });
}

Conversation ConversationStore::set_status(ConversationId id, ConversationStatus status) {
  return impl_->write(Op{"set conversation status", "conversation", id},
                      [&](Connection& c) { return move_status(c, id, status, std::nullopt); });
}

Conversation ConversationStore::complete(ConversationId id, std::string_view external_ref,
                                         const Json& final_data) {
  check_text(external_ref, "conversation external reference");
  check_json(final_data, "conversation data");
  std::optional<std::string> ref;
  if (!external_ref.empty()) ref = std::string(external_ref);
  return impl_->write(Op{"complete conversation", "conversation", id}, [&](Connection& c) {
    Conversation conv = move_status(c, id, ConversationStatus::completed, ref);
    if (!final_data.is_null()) insert_data(c, id, DataKind::complete, final_data);
    return conv;
  });
}

bool ConversationStore::remove(ConversationId id) {
  static const Sql q{"DELETE FROM conversations WHERE id = :id"};
  bool removed = impl_->single(Op{"delete conversation", "conversation", id}, [&](Connection& c) {
    Stmt s(c, q);
    s.in(id).one();
    return s.affected() > 0;
  });
  if (removed) impl_->messages_changed(id);
  return removed;
}

// ================================ messages =================================

Message ConversationStore::append(ConversationId id, const NewMessage& m,
                                  const AppendOptions& opts) {
  EncodedMessage e = encode(m);
  Op op{"append message", "conversation", id};
  // Appending the same client_key again returns the stored message.
  op.idempotent = m.client_key.has_value();
  // Counted once, as the append, whatever else it reads to explain a refusal.
  return impl_->counted(op, [&]() -> Message {
    if (impl_->backend() == Backend::postgresql && !m.client_key && !opts.fence) {
      auto mid = impl_->single(op, [&](Connection& c) {
        Timestamp t = now();
        MessageId out = 0;
        Stmt s(c, kAppendOneStatement);
        s.in(t).in(t).in(id).in(opts.expected_version).in(opts.expected_version);
        s.in(m.role).in(m.kind).in(m.content).in(m.agent).in(m.model).in(m.token_count);
        s.in(m.tool_name);
        if (e.has_tool_args) {
          s.in(e.tool_args);
        } else {
          s.in_null();
        }
        s.in(m.tool_call_id).in(m.platform_message_id).in(m.reply_to_platform_id).in(m.client_key);
        s.in(m.complete).in(e.metadata).in(t).in(t).out(out);
        if (!s.one()) return std::pair<MessageId, Timestamp>{0, t};
        return std::pair<MessageId, Timestamp>{out, t};
      });
      if (mid.first != 0) {
        impl_->messages_changed(id);
        return stored_message(mid.first, id, m, mid.second);
      }
      // Nothing written: say why.
      auto conv = get(id);
      if (!conv) conversation_not_found(id);
      throw Error(ErrorCode::conflict,
                  fmt::format("conversation {} is at version {}, not the expected {}", id,
                              conv->version, opts.expected_version.value_or(-1)));
    }
    Message out = impl_->write(op, [&](Connection& c) { return append_locked(c, id, m, e, opts); });
    impl_->messages_changed(id);
    return out;
  });
}

std::vector<Message> ConversationStore::append_batch(ConversationId id,
                                                     const std::vector<NewMessage>& messages) {
  std::vector<EncodedMessage> encoded;
  encoded.reserve(messages.size());
  for (const auto& m : messages) encoded.push_back(encode(m));
  Op op{"append messages", "conversation", id};
  bool keyed = std::any_of(messages.begin(), messages.end(),
                           [](const NewMessage& m) { return m.client_key.has_value(); });
  // Only a batch whose every message has a key can run again safely.
  op.idempotent = !messages.empty() &&
                  std::all_of(messages.begin(), messages.end(),
                              [](const NewMessage& m) { return m.client_key.has_value(); });
  if (impl_->backend() == Backend::postgresql && !keyed && !messages.empty()) {
    Timestamp t = now();
    auto ids = impl_->single(
        op, [&](Connection& c) { return insert_batch_json(c, id, messages, encoded, t); });
    if (ids.empty()) conversation_not_found(id);
    std::vector<Message> out;
    out.reserve(messages.size());
    for (std::size_t i = 0; i < messages.size(); ++i) {
      out.push_back(stored_message(ids[i], id, messages[i], t));
    }
    impl_->messages_changed(id);
    return out;
  }
  auto stored = impl_->write(op, [&](Connection& c) {
    lock_conversation(c, id);
    std::vector<Message> out;
    out.reserve(messages.size());
    Timestamp t = now();
    long long added = 0;
    if (!keyed) {
      auto ids = insert_messages(c, id, messages.data(), encoded.data(), messages.size(), t);
      for (std::size_t i = 0; i < messages.size(); ++i) {
        out.push_back(stored_message(ids[i], id, messages[i], t));
      }
      added = static_cast<long long>(messages.size());
    } else {
      // One at a time: a key may repeat one stored earlier, or in this batch.
      for (std::size_t i = 0; i < messages.size(); ++i) {
        const NewMessage& m = messages[i];
        if (m.client_key) {
          if (auto existing = find_by_client_key(c, id, *m.client_key)) {
            out.push_back(std::move(*existing));
            continue;
          }
        }
        MessageId mid = insert_messages(c, id, &m, &encoded[i], 1, t).front();
        out.push_back(stored_message(mid, id, m, t));
        ++added;
      }
    }
    if (added > 0) count_messages(c, id, added, t);
    return out;
  });
  impl_->messages_changed(id);
  return stored;
}

std::optional<Message> ConversationStore::get_message(MessageId id) {
  return impl_->read(Op{"get message", "message", id}, [&](Connection& c) {
    Stmt s(c, kGetMessage);
    s.in(id);
    return fetch_one<Message>(s);
  });
}

std::vector<Message> ConversationStore::history(ConversationId id, const HistoryQuery& q) {
  if (q.limit == 0 || q.limit > 10000) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("history limit {} is outside 1..10000", q.limit));
  }
  check_opt(q.agent, "agent filter");
  std::string sql = "SELECT " CS_MSG_COLS " FROM messages WHERE conversation_id = :c";
  if (q.before) sql += " AND id < :before";
  if (q.after) sql += " AND id > :after";
  if (q.role) sql += " AND role = :role";
  if (q.agent) sql += " AND agent = :agent";
  if (q.kind) sql += " AND kind = :kind";
  sql += q.newest_first ? " ORDER BY id DESC" : " ORDER BY id";
  sql += " LIMIT :lim";
  static const Sql cursor_check{"SELECT id FROM messages WHERE id = :id AND conversation_id = :c"};
  return impl_->read(Op{"read history", "conversation", id}, [&](Connection& c) {
    for (const auto& cursor : {q.before, q.after}) {
      if (!cursor) continue;
      long long found = 0;
      if (!Stmt(c, cursor_check).in(*cursor).in(id).out(found).one()) {
        throw Error(ErrorCode::not_found,
                    fmt::format("message {} is not in conversation {}", *cursor, id));
      }
    }
    Stmt s(c, sql);
    s.in(id);
    if (q.before) s.in(*q.before);
    if (q.after) s.in(*q.after);
    if (q.role) s.in(*q.role);
    if (q.agent) s.in(*q.agent);
    if (q.kind) s.in(*q.kind);
    s.in(q.limit);
    auto rows = fetch_all<Message>(s, q.limit);
    if (rows.empty()) {
      Stmt g(c, kGetConversation);
      g.in(id);
      if (!fetch_one<Conversation>(g)) conversation_not_found(id);
    }
    return rows;
  });
}

std::vector<Message> ConversationStore::recent(ConversationId id, std::size_t n) {
  HistoryQuery q;
  q.limit = std::max<std::size_t>(1, n);
  q.newest_first = true;
  if (n == 0) return {};
  auto rows = history(id, q);
  std::reverse(rows.begin(), rows.end());
  return rows;
}

Message ConversationStore::update_message(MessageId id, const MessageUpdate& up) {
  if (up.content) check_text(*up.content, "message content");
  if (up.token_count && *up.token_count < 0) {
    throw Error(ErrorCode::invalid_argument, "message token count is negative");
  }
  if (up.metadata_patch) json_text(*up.metadata_patch, "message metadata patch");
  static const Sql write{
      "UPDATE messages SET content = :content, complete = :done, token_count = :tc, "
      "metadata = :md, updated_at = :t WHERE id = :id RETURNING " CS_MSG_COLS};
  Message updated = impl_->write(Op{"update message", "message", id}, [&](Connection& c) {
    Stmt sel(c, kLockMessage);
    sel.in(id);
    auto m = fetch_one<Message>(sel);
    if (!m) throw Error(ErrorCode::not_found, fmt::format("message {} not found", id));
    if (up.content) m->content = *up.content;
    if (up.complete) m->complete = *up.complete;
    if (up.token_count) m->token_count = up.token_count;
    if (up.metadata_patch) m->metadata.merge_patch(*up.metadata_patch);
    std::string md = json_text(m->metadata, "message metadata");
    Stmt s(c, write);
    s.in(m->content).in(m->complete).in(m->token_count).in(md).in(now()).in(id);
    return *fetch_one<Message>(s);
  });
  impl_->messages_changed(updated.conversation_id);
  return updated;
}

Message ConversationStore::append_content(MessageId id, std::string_view delta) {
  check_text(delta, "message content");
  static const Sql q{
      "UPDATE messages SET content = content || :d, updated_at = :t WHERE id = :id "
      "RETURNING " CS_MSG_COLS};
  auto m = impl_->single(Op{"append to message", "message", id}, [&](Connection& c) {
    Stmt s(c, q);
    s.in(delta).in(now()).in(id);
    return fetch_one<Message>(s);
  });
  if (!m) throw Error(ErrorCode::not_found, fmt::format("message {} not found", id));
  impl_->messages_changed(m->conversation_id);
  return *m;
}

Message ConversationStore::finish_message(MessageId id, std::optional<std::int64_t> token_count) {
  if (token_count && *token_count < 0) {
    throw Error(ErrorCode::invalid_argument, "message token count is negative");
  }
  static const Sql q{
      "UPDATE messages SET complete = :done, token_count = COALESCE(:tc, token_count), "
      "updated_at = :t WHERE id = :id RETURNING " CS_MSG_COLS};
  auto m = impl_->single(Op{"finish message", "message", id}, [&](Connection& c) {
    Stmt s(c, q);
    s.in(true).in(token_count).in(now()).in(id);
    return fetch_one<Message>(s);
  });
  if (!m) throw Error(ErrorCode::not_found, fmt::format("message {} not found", id));
  impl_->messages_changed(m->conversation_id);
  return *m;
}

bool ConversationStore::remove_message(MessageId id) {
  static const Sql del{"DELETE FROM messages WHERE id = :id RETURNING conversation_id"};
  static const Sql uncount{
      "UPDATE conversations SET message_count = message_count - 1, version = version + 1, "
      "updated_at = :t WHERE id = :id"};
  long long conv = impl_->write(Op{"delete message", "message", id}, [&](Connection& c) {
    long long conv = 0;
    if (!Stmt(c, del).in(id).out(conv).one()) return 0LL;
    Stmt(c, uncount).in(now()).in(conv).one();
    return conv;
  });
  if (conv == 0) return false;
  impl_->messages_changed(conv);
  return true;
}

// ================================ threading ================================

std::optional<ThreadHit> ConversationStore::find_by_platform_id(std::string_view channel,
                                                                std::string_view chat_id,
                                                                std::string_view platform_id) {
  check_key_text(channel, "channel");
  check_key_text(chat_id, "chat id");
  check_key_text(platform_id, "platform message id");
  static const Sql q{
      "SELECT m.id, m.conversation_id FROM messages m JOIN conversations c "
      "ON c.id = m.conversation_id WHERE m.platform_message_id = :pid AND c.channel = :ch "
      "AND c.chat_id = :chat ORDER BY m.id DESC LIMIT 1"};
  return impl_->snapshot(Op{"find message by platform id"}, [&](Connection& c) {
    long long mid = 0, cid = 0;
    std::optional<ThreadHit> hit;
    if (!Stmt(c, q).in(platform_id).in(channel).in(chat_id).out(mid).out(cid).one()) return hit;
    Stmt sm(c, kGetMessage);
    sm.in(mid);
    Stmt sc(c, kGetConversation);
    sc.in(cid);
    auto m = fetch_one<Message>(sm);
    auto conv = fetch_one<Conversation>(sc);
    if (m && conv) hit = ThreadHit{std::move(*conv), std::move(*m)};
    return hit;
  });
}

std::vector<Message> ConversationStore::reply_chain(MessageId id, std::size_t max_depth) {
  static const Sql parent{
      "SELECT m.id FROM messages m JOIN conversations c ON c.id = m.conversation_id "
      "JOIN conversations o ON o.id = :conv AND o.channel = c.channel "
      "AND o.chat_id = c.chat_id WHERE m.platform_message_id = :pid "
      "AND m.id < :below ORDER BY m.id DESC LIMIT 1"};
  return impl_->snapshot(Op{"follow reply chain", "message", id}, [&](Connection& c) {
    std::vector<Message> chain;
    Stmt s(c, kGetMessage);
    s.in(id);
    auto m = fetch_one<Message>(s);
    if (!m) throw Error(ErrorCode::not_found, fmt::format("message {} not found", id));
    chain.push_back(std::move(*m));
    while (chain.size() < max_depth && chain.back().reply_to_platform_id) {
      const Message& last = chain.back();
      long long pid = 0;
      if (!Stmt(c, parent)
               .in(last.conversation_id)
               .in(*last.reply_to_platform_id)
               .in(last.id)
               .out(pid)
               .one()) {
        break;
      }
      Stmt g(c, kGetMessage);
      g.in(pid);
      auto p = fetch_one<Message>(g);
      if (!p) break;
      chain.push_back(std::move(*p));
    }
    std::reverse(chain.begin(), chain.end());
    return chain;
  });
}

// ======================= data snapshots and questions ======================

DataSnapshot ConversationStore::save_data(ConversationId id, DataKind kind, const Json& data) {
  json_text(data, "conversation data");
  try {
    return impl_->single(Op{"save data", "conversation", id},
                         [&](Connection& c) { return insert_data(c, id, kind, data); });
  } catch (const Error& e) {
    if (e.code() == ErrorCode::not_found) conversation_not_found(id);
    throw;
  }
}

std::optional<DataSnapshot> ConversationStore::latest_data(ConversationId id, DataKind kind) {
  static const Sql q{"SELECT " CS_DATA_COLS
                     " FROM conversation_data WHERE conversation_id = :c AND kind = :k "
                     "ORDER BY id DESC LIMIT 1"};
  return impl_->read(Op{"read data", "conversation", id}, [&](Connection& c) {
    Stmt s(c, q);
    s.in(id).in(kind);
    return fetch_one<DataSnapshot>(s);
  });
}

std::vector<DataSnapshot> ConversationStore::data_history(ConversationId id, DataKind kind) {
  static const Sql q{"SELECT " CS_DATA_COLS
                     " FROM conversation_data WHERE conversation_id = :c AND kind = :k "
                     "ORDER BY id"};
  return impl_->read(Op{"read data history", "conversation", id}, [&](Connection& c) {
    Stmt s(c, q);
    s.in(id).in(kind);
    return fetch_all<DataSnapshot>(s);
  });
}

Question ConversationStore::ask(ConversationId id, const NewQuestion& nq) {
  check_text(nq.agent, "question agent");
  check_text(nq.question, "question text");
  check_opt(nq.platform_message_id, "question platform message id");
  check_json(nq.missing_fields, "question missing fields");
  std::string fields = json_text(nq.missing_fields.is_null() ? Json::array() : nq.missing_fields,
                                 "question missing fields");
  static const Sql q{
      "INSERT INTO agent_questions (conversation_id, agent, question, missing_fields, "
      "platform_message_id, asked_at) VALUES (:c, :a, :q, :mf, :pid, :t) "
      "RETURNING " CS_QUESTION_COLS};
  try {
    return impl_->single(Op{"ask question", "conversation", id}, [&](Connection& c) {
      Stmt s(c, q);
      s.in(id).in(nq.agent).in(nq.question).in(fields).in(nq.platform_message_id).in(now());
      return *fetch_one<Question>(s);
    });
  } catch (const Error& e) {
    if (e.code() == ErrorCode::not_found) conversation_not_found(id);
    throw;
  }
}

Question ConversationStore::answer(QuestionId id, std::optional<std::string> answer) {
  check_opt(answer, "answer");
  static const Sql q{
      "UPDATE agent_questions SET answered_at = :t, answer = :a "
      "WHERE id = :id AND answered_at IS NULL RETURNING " CS_QUESTION_COLS};
  static const Sql exists{"SELECT id FROM agent_questions WHERE id = :id"};
  return impl_->write(Op{"answer question", "question", id}, [&](Connection& c) {
    Stmt s(c, q);
    s.in(now()).in(answer).in(id);
    if (auto out = fetch_one<Question>(s)) return *out;
    long long found = 0;
    if (Stmt(c, exists).in(id).out(found).one()) {
      throw Error(ErrorCode::conflict, fmt::format("question {} is already answered", id));
    }
    throw Error(ErrorCode::not_found, fmt::format("question {} not found", id));
  });
}

std::vector<Question> ConversationStore::open_questions(ConversationId id) {
  static const Sql q{"SELECT " CS_QUESTION_COLS
                     " FROM agent_questions WHERE conversation_id = :c AND answered_at IS NULL "
                     "ORDER BY id"};
  return impl_->read(Op{"list open questions", "conversation", id}, [&](Connection& c) {
    Stmt s(c, q);
    s.in(id);
    return fetch_all<Question>(s);
  });
}

std::vector<Question> ConversationStore::questions(ConversationId id) {
  static const Sql q{"SELECT " CS_QUESTION_COLS
                     " FROM agent_questions WHERE conversation_id = :c ORDER BY id"};
  return impl_->read(Op{"list questions", "conversation", id}, [&](Connection& c) {
    Stmt s(c, q);
    s.in(id);
    return fetch_all<Question>(s);
  });
}

// ================================= context =================================

ConversationContext ConversationStore::context(ConversationId id, std::size_t n) {
  constexpr std::size_t kMaxRecent = 10000;  // recent()'s and history()'s limit
  // As recent(): a count past this asked the vector below for more memory
  // than there is (std::bad_alloc / std::length_error, not an Error).
  if (n > kMaxRecent) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("context message count {} is outside 0 .. {}", n, kMaxRecent));
  }
  static const Sql newest_data{
      "SELECT kind, data FROM conversation_data WHERE id IN (SELECT MAX(id) FROM "
      "conversation_data WHERE conversation_id = :c AND kind IN ('partial', 'missing_fields') "
      "GROUP BY kind)"};
  static const Sql last_n{"SELECT " CS_MSG_COLS
                          " FROM messages WHERE conversation_id = :c ORDER BY id DESC LIMIT :n"};
  static const Sql all_questions{"SELECT " CS_QUESTION_COLS
                                 " FROM agent_questions WHERE conversation_id = :c ORDER BY id"};
  static const Sql last_bot{
      "SELECT platform_message_id FROM messages WHERE conversation_id = :c AND role = "
      "'assistant' AND platform_message_id IS NOT NULL ORDER BY id DESC LIMIT 1"};
  return impl_->snapshot(Op{"load context", "conversation", id}, [&](Connection& c) {
    ConversationContext ctx;
    Stmt sc(c, kGetConversation);
    sc.in(id);
    auto conv = fetch_one<Conversation>(sc);
    if (!conv) conversation_not_found(id);
    ctx.conversation = std::move(*conv);
    {
      Stmt s(c, newest_data);
      DataKind kind{};
      Json data;
      s.in(id).out(kind).out(data);
      while (s.next()) {
        (kind == DataKind::partial ? ctx.partial_data : ctx.missing_fields) = std::move(data);
      }
    }
    if (n > 0) {
      Stmt s(c, last_n);
      s.in(id).in(n);
      ctx.messages = fetch_all<Message>(s, n);
      std::reverse(ctx.messages.begin(), ctx.messages.end());
    }
    {
      Stmt s(c, all_questions);
      s.in(id);
      ctx.questions = fetch_all<Question>(s);
    }
    std::optional<std::string> bot;
    if (Stmt(c, last_bot).in(id).out(bot).one()) ctx.last_bot_message_id = std::move(bot);
    return ctx;
  });
}

}  // namespace convstore
