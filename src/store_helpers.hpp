// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#pragma once

// What every store uses to read rows and check its input, so that the stores
// answer alike on both backends.

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "convstore/calendar_store.hpp"
#include "convstore/types.hpp"
#include "db/codec.hpp"
#include "db/statement.hpp"

// The columns of messages, in the order read_row(Stmt&, Message&) reads them.
#define CS_MSG_COLS                                                                  \
  "id, conversation_id, role, kind, content, agent, model, token_count, tool_name, " \
  "tool_args, tool_call_id, platform_message_id, reply_to_platform_id, client_key, " \
  "complete, metadata, created_at, updated_at"

namespace convstore::detail {

// Row readers: bind the columns of a table's column list, in order, to the
// fields of a value. Each store defines those of its tables.
void read_row(Stmt& s, User& u);
void read_row(Stmt& s, ChannelConfig& c);
void read_row(Stmt& s, Conversation& c);
void read_row(Stmt& s, Message& m);
void read_row(Stmt& s, Question& q);
void read_row(Stmt& s, DataSnapshot& d);
void read_row(Stmt& s, AgentState& a);
void read_row(Stmt& s, AgentStateVersion& v);

// Runs `s` (parameters bound) and reads its one row, if any.
template <class T>
std::optional<T> fetch_one(Stmt& s) {
  T row;
  read_row(s, row);
  if (!s.one()) return std::nullopt;
  return row;
}

// Runs `s` and reads every row (`expected` sizes the result up front).
template <class T>
std::vector<T> fetch_all(Stmt& s, std::size_t expected = 0) {
  std::vector<T> rows;
  rows.reserve(expected);
  T row;
  read_row(s, row);
  while (s.next()) rows.push_back(std::move(row));
  return rows;
}

// For values read through a row type of their own (columns kept as text
// until they are decoded): `bind(s, row)` binds the columns to a Row,
// `decode(row)` turns a fetched row into the value.
template <class Row, class Bind, class Decode>
auto fetch_one_decoded(Stmt& s, Bind bind, Decode decode)
    -> std::optional<decltype(decode(std::declval<Row&>()))> {
  Row row;
  bind(s, row);
  if (!s.one()) return std::nullopt;
  return decode(row);
}

template <class Row, class Bind, class Decode>
auto fetch_all_decoded(Stmt& s, Bind bind, Decode decode, std::size_t expected = 0)
    -> std::vector<decltype(decode(std::declval<Row&>()))> {
  std::vector<decltype(decode(std::declval<Row&>()))> out;
  out.reserve(expected);
  Row row;
  bind(s, row);
  while (s.next()) out.push_back(decode(row));
  return out;
}

inline void check_opt(const std::optional<std::string>& v, std::string_view what) {
  if (v) check_text(*v, what);
}

// The longest text, in bytes, of a field that a B-tree index holds (a
// channel, an external user id, a chat id, a platform message id, a client
// key). PostgreSQL refuses an index entry over about 2.7 kB where SQLite
// takes any length: the library refuses more than this on both.
constexpr std::size_t kMaxKeyBytes = 1024;

// Text that an index holds: valid UTF-8 without NUL (check_text) and at
// most kMaxKeyBytes bytes; else Error(invalid_argument) naming `what`.
void check_key_text(std::string_view text, std::string_view what);
inline void check_key_opt(const std::optional<std::string>& v, std::string_view what) {
  if (v) check_key_text(*v, what);
}

// An empty string clears an optional field.
inline std::optional<std::string> cleared(const std::string& v) {
  if (v.empty()) return std::nullopt;
  return v;
}

// The deepest nesting of arrays and objects a JSON value given to the
// library may have (a scalar is depth 0, {} or [] depth 1). nlohmann's copy,
// comparison, merge_patch and dump recurse once per level, so an unbounded
// depth is a stack overflow waiting for its input.
constexpr std::size_t kMaxJsonDepth = 256;

// Throws Error(invalid_argument) naming `what` when `j` nests deeper than
// kMaxJsonDepth. Walks without recursion and stops at the first level too
// deep. Every public call taking JSON runs it before the value is copied,
// merged or dumped (json_text runs it too).
void check_json(const Json& j, std::string_view what);
inline void check_json(const std::optional<Json>& j, std::string_view what) {
  if (j) check_json(*j, what);
}

// JSON as stored text. Nested deeper than kMaxJsonDepth, invalid UTF-8
// inside, or a NUL character (which PostgreSQL's JSONB refuses), is
// invalid_argument on both backends.
std::string json_text(const Json& j, std::string_view what);
// The text of a JSON object field (metadata, device info): null is {};
// anything but an object is invalid_argument naming `what`.
std::string object_text(const Json& j, std::string_view what);

// A count the caller chose (a page size, a batch): 1..max, else
// Error(invalid_argument) naming `what`.
void check_count(std::size_t n, std::size_t max, std::string_view what);

// Keyset cursors over (time, id): "<prefix>.<microseconds>.<id>". The prefix
// names the listing (and its version), so a cursor from another listing is
// malformed; parse throws Error(invalid_argument) for anything malformed.
std::string time_cursor(std::string_view prefix, Timestamp t, long long id);
std::pair<Timestamp, long long> parse_time_cursor(std::string_view prefix,
                                                  const std::string& cursor);

// An identifier chosen by the app (agent id, scope key): 1..max_chars
// characters of valid UTF-8 without control characters; else
// Error(invalid_argument) naming `what`.
void check_id(std::string_view id, std::string_view what, std::size_t max_chars = 200);

}  // namespace convstore::detail
