// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#include "convstore/portability.hpp"

#include <fmt/format.h>
#include <sodium.h>

#include <cstdio>
#include <istream>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "crypto.hpp"
#include "db/codec.hpp"
#include "store_helpers.hpp"
#include "store_impl.hpp"

namespace convstore {

namespace detail {
struct StoreAccess {
  static Store::Impl& impl(Store& s) { return *s.impl_; }
};
}  // namespace detail

namespace {

using detail::Backend;
using detail::Connection;
using detail::Stmt;

constexpr int kFormatVersion = 1;

// ---- the exported tables ----

// How a column travels in the file: integer (JSON number), text and time
// (JSON string; times as "YYYY-MM-DDTHH:MM:SS.ffffffZ"), json (any JSON
// value), object (a JSON object), boolean.
enum class Kind { integer, text, time, json, object, boolean };

struct Column {
  const char* name;  // in SQL
  Kind kind;
  bool nullable;
  // In the file, when it differs from `name`: a column called "type" is
  // renamed, since "type" names the record's type.
  const char* field = nullptr;
  // Text an index holds (a key, a channel, an id): at most kMaxKeyBytes, as
  // the stores check (PostgreSQL refuses a B-tree entry over ~2.7 kB, SQLite
  // stores any length: without the check the backends would differ).
  bool indexed = false;
  const char* key() const { return field != nullptr ? field : name; }
};

// A reference to another exported type, by the columns that hold its key.
struct Ref {
  std::vector<const char*> columns;
  const char* parent;
};

struct Table {
  Table(const char* type_, const char* table_, std::vector<Column> columns_,
        std::vector<const char*> key_, std::vector<Ref> refs_, bool identity_ = false,
        const char* archive_of_ = nullptr)
      : type(type_),
        table(table_),
        columns(std::move(columns_)),
        key(std::move(key_)),
        refs(std::move(refs_)),
        identity(identity_),
        archive_of(archive_of_) {}
  const char* type;
  const char* table;
  std::vector<Column> columns;
  std::vector<const char*> key;
  std::vector<Ref> refs;
  bool identity;  // the key is an identity id (a sequence on PostgreSQL)
  // An archive table (retention): its rows keep the ids of `archive_of`'s
  // rows, and its key (the id) has no unique constraint: the importer's
  // check of stored keys keeps it unique (a plain INSERT, no ON CONFLICT),
  // and `archive_of`'s identity is moved past the archived ids.
  const char* archive_of;
  // Derived.
  std::vector<std::size_t> key_index;
  std::vector<std::vector<std::size_t>> ref_index;
  std::vector<const Table*> ref_table;
  bool is_parent = false;
  std::size_t order = 0;
};

Column I(const char* n) { return {n, Kind::integer, false}; }
Column In(const char* n) { return {n, Kind::integer, true}; }
Column T(const char* n) { return {n, Kind::text, false}; }
Column Tn(const char* n) { return {n, Kind::text, true}; }
Column K(const char* n) { return {n, Kind::text, false, nullptr, true}; }
Column Kn(const char* n) { return {n, Kind::text, true, nullptr, true}; }
Column Ts(const char* n) { return {n, Kind::time, false}; }
Column Tsn(const char* n) { return {n, Kind::time, true}; }
Column J(const char* n) { return {n, Kind::json, false}; }
Column Jn(const char* n) { return {n, Kind::json, true}; }
Column O(const char* n) { return {n, Kind::object, false}; }
Column B(const char* n) { return {n, Kind::boolean, false}; }
Column Renamed(Column c, const char* field) {
  c.field = field;
  return c;
}

std::size_t index_of(const Table& t, const char* name) {
  for (std::size_t i = 0; i < t.columns.size(); ++i) {
    if (std::string_view(t.columns[i].name) == name) return i;
  }
  throw Error(ErrorCode::internal, fmt::format("no column {} in {}", name, t.table));
}

// Parents before children; within a type, key order. Messages come before
// dialogs and review items: a stored user message updates its dialog and
// supersedes a pending suggestion (a trigger), which an import must not do.
std::vector<Table> make_tables() {
  std::vector<Table> v{
      {"user",
       "users",
       {I("id"), K("channel"), K("external_id"), Tn("username"), Tn("display_name"),
        Tn("preferred_model"), Tn("system_prompt"), T("time_zone"), O("metadata"), Ts("created_at"),
        Ts("updated_at")},
       {"id"},
       {},
       true},
      {"channel_config",
       "channel_configs",
       {K("channel"), T("default_model"), O("settings"), Ts("created_at"), Ts("updated_at")},
       {"channel"},
       {}},
      {"conversation",
       "conversations",
       {I("id"),
        Kn("key"),
        In("user_id"),
        K("channel"),
        Kn("chat_id"),
        Tn("agent"),
        Tn("kind"),
        Tn("title"),
        Tn("active_agent"),
        K("status"),
        Tn("model_override"),
        Tn("external_ref"),
        I("message_count"),
        I("version"),
        I("fence"),
        Tsn("last_message_at"),
        O("metadata"),
        Ts("created_at"),
        Ts("updated_at"),
        Tsn("anonymized_at")},
       {"id"},
       {{{"user_id"}, "user"}},
       true},
      {"message",
       "messages",
       {I("id"), I("conversation_id"), T("role"), T("kind"), T("content"), Tn("agent"), Tn("model"),
        In("token_count"), Tn("tool_name"), Jn("tool_args"), Tn("tool_call_id"),
        Kn("platform_message_id"), Tn("reply_to_platform_id"), Kn("client_key"), B("complete"),
        O("metadata"), Ts("created_at"), Ts("updated_at")},
       {"id"},
       {{{"conversation_id"}, "conversation"}},
       true},
      {"data_snapshot",
       "conversation_data",
       {I("id"), I("conversation_id"), T("kind"), J("data"), Ts("created_at")},
       {"id"},
       {{{"conversation_id"}, "conversation"}},
       true},
      {"question",
       "agent_questions",
       {I("id"), I("conversation_id"), T("agent"), T("question"), J("missing_fields"),
        Tn("platform_message_id"), Ts("asked_at"), Tsn("answered_at"), Tn("answer")},
       {"id"},
       {{{"conversation_id"}, "conversation"}},
       true},
      // A hold on one conversation or on one user (exactly one of the two).
      {"legal_hold",
       "legal_holds",
       {I("id"), In("conversation_id"), In("user_id"), T("reason"), Ts("created_at")},
       {"id"},
       {{{"conversation_id"}, "conversation"}, {{"user_id"}, "user"}},
       true},
      // Retention's archive: the archived conversation keeps its user_id,
      // whose user may be gone (not a reference); its archived rows refer to
      // it (retention archives them together, forget_user removes them
      // together).
      {"archived_conversation",
       "archived_conversations",
       {I("id"),
        Tn("key"),
        In("user_id"),
        T("channel"),
        Tn("chat_id"),
        Tn("agent"),
        Tn("kind"),
        Tn("title"),
        Tn("active_agent"),
        T("status"),
        Tn("model_override"),
        Tn("external_ref"),
        I("message_count"),
        I("version"),
        I("fence"),
        Tsn("last_message_at"),
        O("metadata"),
        Ts("created_at"),
        Ts("updated_at"),
        Tsn("anonymized_at"),
        Ts("archived_at")},
       {"id"},
       {},
       false,
       "conversations"},
      {"archived_message",
       "archived_messages",
       {I("id"), I("conversation_id"), T("role"), T("kind"), T("content"), Tn("agent"), Tn("model"),
        In("token_count"), Tn("tool_name"), Jn("tool_args"), Tn("tool_call_id"),
        Tn("platform_message_id"), Tn("reply_to_platform_id"), Tn("client_key"), B("complete"),
        O("metadata"), Ts("created_at"), Ts("updated_at"), Ts("archived_at")},
       {"id"},
       {{{"conversation_id"}, "archived_conversation"}},
       false,
       "messages"},
      {"archived_data_snapshot",
       "archived_conversation_data",
       {I("id"), I("conversation_id"), T("kind"), J("data"), Ts("created_at"), Ts("archived_at")},
       {"id"},
       {{{"conversation_id"}, "archived_conversation"}},
       false,
       "conversation_data"},
      {"archived_question",
       "archived_agent_questions",
       {I("id"), I("conversation_id"), T("agent"), T("question"), J("missing_fields"),
        Tn("platform_message_id"), Ts("asked_at"), Tsn("answered_at"), Tn("answer"),
        Ts("archived_at")},
       {"id"},
       {{{"conversation_id"}, "archived_conversation"}},
       false,
       "agent_questions"},
      {"agent",
       "agents",
       {K("id"), T("name"), T("description"), Renamed(K("type"), "agent_type"), O("persona"),
        O("config"), J("tools"), J("sub_agents"), Tn("planner"), I("version"), B("active"),
        I("usage_count"), Tsn("last_used_at"), O("metadata"), Ts("created_at"), Ts("updated_at")},
       {"id"},
       {}},
      {"agent_state",
       "agent_states",
       {K("scope_kind"), K("scope_key"), K("agent"), In("conversation_id"), J("state"),
        I("version"), Ts("created_at"), Ts("updated_at")},
       {"scope_kind", "scope_key", "agent"},
       {{{"conversation_id"}, "conversation"}}},
      {"agent_state_history",
       "agent_state_history",
       {K("scope_kind"), K("scope_key"), K("agent"), I("version"), J("state"), Ts("saved_at")},
       {"scope_kind", "scope_key", "agent", "version"},
       {{{"scope_kind", "scope_key", "agent"}, "agent_state"}}},
      {"calendar_event",
       "calendar_events",
       {I("id"),          In("owner_id"),       K("uid"),         T("title"),
        T("description"), T("location"),        Ts("start_at"),   Ts("end_at"),
        B("all_day"),     T("time_zone"),       O("metadata"),    T("search_words"),
        Tn("rrule"),      T("exdates"),         T("moved"),       Tsn("series_end"),
        In("series_id"),  Tsn("recurrence_id"), Ts("created_at"), Ts("updated_at")},
       {"id"},
       {{{"owner_id"}, "user"}, {{"series_id"}, "calendar_event"}},
       true},
      {"web_session",
       "web_sessions",
       {I("id"), I("user_id"), I("family_id"), In("rotated_from"), K("access_hash"),
        K("refresh_hash"), Ts("access_expires_at"), Ts("refresh_expires_at"), T("status"),
        O("metadata"), O("device_info"), Ts("created_at"), Ts("updated_at"), Tsn("last_used_at"),
        Tsn("revoked_at"), Tn("revoke_reason")},
       {"id"},
       {{{"user_id"}, "user"}, {{"rotated_from"}, "web_session"}},
       true},
      {"credential",
       "credentials",
       {I("id"), I("user_id"), K("name"), T("algorithm"), K("key_id"), T("nonce"), T("ciphertext"),
        B("active"), O("metadata"), Ts("created_at"), Ts("updated_at"), Tsn("deactivated_at")},
       {"id"},
       {{{"user_id"}, "user"}},
       true},
      {"dialog",
       "dialogs",
       {I("conversation_id"), Renamed(T("type"), "dialog_type"), B("processing_enabled"),
        B("auto_send"), Tn("last_message_id"), Tsn("last_message_at"), Tsn("checked_at"),
        Tsn("new_message_at"), Ts("created_at"), Ts("updated_at")},
       {"conversation_id"},
       {{{"conversation_id"}, "conversation"}}},
      {"review_item",
       "review_items",
       {I("id"), I("conversation_id"), In("user_id"), T("answers_message_id"),
        Ts("answers_message_at"), T("suggested_text"), Tn("edited_text"), T("status"),
        B("auto_approved"), Tn("reason"), Tn("error"), I("attempts"), Tn("claimed_by"),
        Tsn("claim_expires_at"), Ts("created_at"), Ts("updated_at"), Tsn("decided_at"),
        Tsn("sent_at")},
       {"id"},
       {{{"conversation_id"}, "dialog"}, {{"user_id"}, "user"}},
       true},
      {"task",
       "tasks",
       {I("id"), Renamed(T("type"), "task_type"), I("priority"), K("status"), J("payload"),
        Jn("result"), Ts("run_at"), I("attempts"), I("max_attempts"), Tn("last_error"),
        Kn("dedupe_key"), Tn("schedule"), Tn("worker"), I("lease"), Tsn("lease_expires_at"),
        Ts("created_at"), Ts("updated_at"), Tsn("started_at"), Tsn("finished_at")},
       {"id"},
       {},
       true},
      {"task_schedule",
       "task_schedules",
       {K("name"), Renamed(T("type"), "task_type"), I("priority"), J("payload"), I("max_attempts"),
        I("interval_ms"), Ts("anchor"), Ts("next_run_at"), Tsn("last_run_at"), In("last_task_id"),
        Ts("created_at"), Ts("updated_at")},
       {"name"},
       {}},
      {"operation_template",
       "operation_templates",
       {I("id"), In("user_id"), K("kind"), K("name"), T("sample_input"), J("expected_output"),
        I("use_count"), Tsn("last_used_at"), Ts("created_at"), Ts("updated_at")},
       {"id"},
       {{{"user_id"}, "user"}},
       true},
  };
  for (std::size_t n = 0; n < v.size(); ++n) {
    Table& t = v[n];
    t.order = n;
    for (const char* k : t.key) t.key_index.push_back(index_of(t, k));
    for (const Ref& r : t.refs) {
      std::vector<std::size_t> idx;
      for (const char* c : r.columns) idx.push_back(index_of(t, c));
      t.ref_index.push_back(std::move(idx));
    }
  }
  for (Table& t : v) {
    for (const Ref& r : t.refs) {
      for (Table& p : v) {
        if (std::string_view(p.type) == r.parent) {
          p.is_parent = true;
          t.ref_table.push_back(&p);
        }
      }
    }
  }
  return v;
}

const std::vector<Table>& tables() {
  static const std::vector<Table> t = make_tables();
  return t;
}

const Table* find_table(std::string_view type) {
  for (const Table& t : tables()) {
    if (type == t.type) return &t;
  }
  return nullptr;
}

// ---- values ----

// One column's value: integers and booleans in `i`, everything else in `s`
// (times canonical, JSON as its canonical text: keys sorted, no spaces).
struct Value {
  bool null = true;
  long long i = 0;
  std::string s;
};
using Row = std::vector<Value>;

bool is_number_kind(Kind k) { return k == Kind::integer || k == Kind::boolean; }

// Stored JSON text in the file's canonical form.
std::string canonical_json(const std::string& text, const Table& t) {
  if (text == "{}" || text == "[]") return text;
  try {
    return Json::parse(text).dump();
  } catch (const Json::exception& e) {
    throw Error(ErrorCode::data_loss,
                fmt::format("a stored JSON value of {} is not valid JSON: {}", t.table, e.what()));
  }
}

// The export line of a row, with its newline.
void append_line(std::string& out, const Table& t, const Row& r) {
  out += "{\"type\":\"";
  out += t.type;
  out += '"';
  for (std::size_t i = 0; i < t.columns.size(); ++i) {
    const Column& c = t.columns[i];
    const Value& v = r[i];
    out += ",\"";
    out += c.key();
    out += "\":";
    if (v.null) {
      out += "null";
      continue;
    }
    switch (c.kind) {
      case Kind::integer:
        out += fmt::format_int(v.i).str();
        break;
      case Kind::boolean:
        out += v.i != 0 ? "true" : "false";
        break;
      case Kind::text:
      case Kind::time:
        detail::append_json_string(out, v.s);
        break;
      case Kind::json:
      case Kind::object:
        out += v.s;
        break;
    }
  }
  out += "}\n";
}

std::string line_of(const Table& t, const Row& r) {
  std::string s;
  append_line(s, t, r);
  return s;
}

// A key (or a reference) as one string, for sets and maps.
std::string key_string(const Table& t, const Row& r, const std::vector<std::size_t>& idx) {
  std::string k;
  for (std::size_t n = 0; n < idx.size(); ++n) {
    if (n > 0) k += '\x1f';
    const Value& v = r[idx[n]];
    if (is_number_kind(t.columns[idx[n]].kind)) {
      k += fmt::format_int(v.i).str();
    } else {
      k += v.s;
    }
  }
  return k;
}

// For messages: "42", or "conversation/42/planner".
std::string key_display(const Table& t, const Row& r, const std::vector<std::size_t>& idx) {
  std::string k = key_string(t, r, idx);
  for (char& c : k) {
    if (c == '\x1f') c = '/';
  }
  return k;
}

void bind_value(Stmt& s, Kind k, const Value& v) {
  if (is_number_kind(k)) {
    if (v.null) {
      s.in(std::optional<long long>());
    } else {
      s.in(v.i);
    }
  } else if (v.null) {
    s.in_null();
  } else {
    s.in(v.s);
  }
}

// Reads the columns of a table, in order, into a Row.
class Reader {
 public:
  explicit Reader(const Table& t)
      : t_(t),
        ints_(t.columns.size()),
        texts_(t.columns.size()),
        times_(t.columns.size()),
        bools_(new bool[t.columns.size()]()) {}

  void bind(Stmt& s) {
    for (std::size_t i = 0; i < t_.columns.size(); ++i) {
      switch (t_.columns[i].kind) {
        case Kind::integer:
          s.out(ints_[i]);
          break;
        case Kind::boolean:
          s.out(bools_[i]);
          break;
        case Kind::time:
          s.out(times_[i]);
          break;
        default:
          s.out(texts_[i]);
      }
    }
  }

  void take(Row& row) {
    row.resize(t_.columns.size());
    for (std::size_t i = 0; i < t_.columns.size(); ++i) {
      Value& v = row[i];
      switch (t_.columns[i].kind) {
        case Kind::integer:
          v.null = !ints_[i].has_value();
          v.i = v.null ? 0 : *ints_[i];
          break;
        case Kind::boolean:
          v.null = false;
          v.i = bools_[i] ? 1 : 0;
          break;
        case Kind::time:
          v.null = !times_[i].has_value();
          v.s = v.null ? std::string() : to_iso8601(*times_[i]);
          break;
        case Kind::text:
          v.null = !texts_[i].has_value();
          v.s = v.null ? std::string() : std::move(*texts_[i]);
          break;
        case Kind::json:
        case Kind::object:
          v.null = !texts_[i].has_value();
          v.s = v.null ? std::string() : canonical_json(*texts_[i], t_);
          break;
      }
    }
  }

 private:
  const Table& t_;
  std::vector<std::optional<long long>> ints_;
  std::vector<std::optional<std::string>> texts_;
  std::vector<std::optional<Timestamp>> times_;
  std::unique_ptr<bool[]> bools_;
};

// ---- SQL ----

std::string column_list(const Table& t) {
  std::string s;
  for (const Column& c : t.columns) {
    if (!s.empty()) s += ", ";
    s += c.name;
  }
  return s;
}

// A key column as sorted: by bytes on both backends.
std::string sort_term(Backend b, const Table& t, std::size_t key_pos) {
  const Column& c = t.columns[t.key_index[key_pos]];
  if (b == Backend::postgresql && c.kind == Kind::text)
    return fmt::format("{} COLLATE \"C\"", c.name);
  return c.name;
}

std::string page_sql(Backend b, const Table& t, bool first, std::size_t page) {
  std::string order, terms, params;
  for (std::size_t n = 0; n < t.key.size(); ++n) {
    if (n > 0) {
      order += ", ";
      terms += ", ";
      params += ", ";
    }
    order += sort_term(b, t, n);
    terms += sort_term(b, t, n);
    params += fmt::format(":k{}", n);
  }
  std::string where;
  if (!first) {
    where = t.key.size() == 1 ? fmt::format(" WHERE {} > {}", terms, params)
                              : fmt::format(" WHERE ({}) > ({})", terms, params);
  }
  return fmt::format("SELECT {} FROM {}{} ORDER BY {} LIMIT {}", column_list(t), t.table, where,
                     order, page);
}

// A placeholder of a statement with many parameters: positional on SQLite,
// whose named parameters are found by a linear search of the statement's
// names (quadratic in their number); named on PostgreSQL (SOCI turns them
// into $n).
std::string placeholder(Backend b, char prefix, std::size_t n) {
  if (b == Backend::sqlite) return "?";
  return fmt::format(":{}{}", prefix, n);
}

// The condition "key is one of n keys" (in key order per row).
std::string keys_condition(Backend b, const Table& t, std::size_t n) {
  std::string s;
  std::size_t p = 0;
  if (t.key.size() == 1) {
    s = fmt::format("{} IN (", t.key[0]);
    for (std::size_t r = 0; r < n; ++r) {
      s += fmt::format("{}{}", r > 0 ? ", " : "", placeholder(b, 'e', p++));
    }
    return s + ")";
  }
  for (std::size_t r = 0; r < n; ++r) {
    s += r > 0 ? " OR (" : "(";
    for (std::size_t k = 0; k < t.key.size(); ++k) {
      s += fmt::format("{}{} = {}", k > 0 ? " AND " : "", t.key[k], placeholder(b, 'e', p++));
    }
    s += ")";
  }
  return s;
}

std::string insert_sql(Backend b, const Table& t, std::size_t rows) {
  std::string s = fmt::format("INSERT INTO {} ({}) VALUES ", t.table, column_list(t));
  std::size_t p = 0;
  for (std::size_t r = 0; r < rows; ++r) {
    s += r > 0 ? ", (" : "(";
    for (std::size_t c = 0; c < t.columns.size(); ++c) {
      s += fmt::format("{}{}", c > 0 ? ", " : "", placeholder(b, 'v', p++));
    }
    s += ")";
  }
  // An archive table has no unique key to conflict on: the writer inserts
  // only keys it found neither stored nor earlier in the transaction.
  if (t.archive_of != nullptr) return s;
  std::string key;
  for (const char* k : t.key) key += (key.empty() ? "" : ", ") + std::string(k);
  return s + fmt::format(" ON CONFLICT ({}) DO NOTHING", key);
}

// ---- progress ----

class Ticker {
 public:
  Ticker(const ProgressFn& fn, std::int64_t every, std::int64_t total)
      : fn_(fn), every_(every < 1 ? 1 : every), total_(total), next_(every_) {}
  void tick(const char* stage) {
    ++done_;
    if (fn_ && done_ >= next_) {
      next_ = done_ + every_;
      fn_(Progress{stage, done_, total_});
    }
  }
  void report(const char* stage) {
    if (fn_) fn_(Progress{stage, done_, total_});
  }
  void add_total(std::int64_t n) { total_ += n; }

 private:
  const ProgressFn& fn_;
  std::int64_t every_;
  std::int64_t total_;
  std::int64_t next_;
  std::int64_t done_ = 0;
};

// ---- reading ----

std::int64_t count_rows(Connection& c, const Table& t) {
  long long n = 0;
  Stmt(c, fmt::format("SELECT COUNT(*) FROM {}", t.table)).out(n).one();
  return n;
}

// Calls f(row) for every row of `t`, in key order, reading `page` rows per
// query (keyset pagination: memory does not grow with the table).
template <class F>
void scan(Connection& c, const Table& t, std::size_t page, F&& f) {
  const std::string first_sql = page_sql(c.backend(), t, true, page);
  const std::string next_sql = page_sql(c.backend(), t, false, page);
  Reader reader(t);
  Row row;
  Row last(t.columns.size());
  bool first = true;
  for (;;) {
    Stmt s(c, first ? first_sql : next_sql);
    if (!first) {
      for (std::size_t k : t.key_index) bind_value(s, t.columns[k].kind, last[k]);
    }
    reader.bind(s);
    std::size_t n = 0;
    while (s.next()) {
      reader.take(row);
      ++n;
      f(row);
      for (std::size_t k : t.key_index) last[k] = row[k];
    }
    if (n < page) break;
    first = false;
  }
}

std::string sha256_hex(crypto_hash_sha256_state& st) {
  unsigned char digest[crypto_hash_sha256_BYTES];
  crypto_hash_sha256_final(&st, digest);
  char hex[crypto_hash_sha256_BYTES * 2 + 1];
  sodium_bin2hex(hex, sizeof hex, digest, sizeof digest);
  return hex;
}

struct Sum {
  std::int64_t rows = 0;
  std::string sha256;
};

std::vector<Sum> checksums(Store::Impl& impl, Ticker& ticker) {
  detail::ensure_sodium();
  return impl.snapshot(Op{"checksum"}, [&](Connection& c) {
    std::vector<Sum> out;
    std::string line;
    for (const Table& t : tables()) {
      crypto_hash_sha256_state st;
      crypto_hash_sha256_init(&st);
      Sum s;
      scan(c, t, 1000, [&](const Row& row) {
        line.clear();
        append_line(line, t, row);
        crypto_hash_sha256_update(&st, reinterpret_cast<const unsigned char*>(line.data()),
                                  line.size());
        ++s.rows;
        ticker.tick("verify");
      });
      s.sha256 = sha256_hex(st);
      out.push_back(std::move(s));
    }
    return out;
  });
}

// ---- writing ----

// A record that was not written: the line (0 for a copy), why, and the code
// the error carries when it is not skipped.
struct Bad {
  ErrorCode code;
  std::string reason;
};

// Writes rows, batched per type, into an open transaction on `c`. A row
// whose key is stored already is compared with the stored one: identical is
// counted unchanged, different is a bad row. A batch the database refuses
// is retried row by row (each in a savepoint) to name the rows it refuses.
class Writer {
 public:
  using OnBad = std::function<void(std::int64_t line, const Bad& bad)>;

  Writer(Store::Impl& impl, Connection& c, std::size_t batch, OnBad on_bad)
      : impl_(impl),
        c_(c),
        batch_(batch),
        on_bad_(std::move(on_bad)),
        inserted_by_(tables().size(), 0) {}

  void add(const Table& t, Row row, std::int64_t line) {
    if (cur_ != &t) {
      flush();
      cur_ = &t;
    }
    pending_.push_back(Pending{std::move(row), line});
    if (pending_.size() >= batch_for(t)) flush();
  }

  void finish() {
    flush();
    widen_calendar_bounds();
    if (c_.backend() == Backend::postgresql) move_sequences();
    move_past_archived_ids();
  }

  std::int64_t inserted = 0;
  std::int64_t unchanged = 0;
  const std::vector<std::int64_t>& inserted_by_type() const { return inserted_by_; }

 private:
  struct Pending {
    Row row;
    std::int64_t line;
  };

  std::size_t batch_for(const Table& t) const {
    // SQLite allows 32766 parameters per statement.
    std::size_t max = 30000 / t.columns.size();
    return batch_ < max ? batch_ : max;
  }

  void bad(const Table& t, const Pending& p, ErrorCode code, const std::string& why) {
    on_bad_(p.line,
            Bad{code, fmt::format("{} {}: {}", t.type, key_display(t, p.row, t.key_index), why)});
  }

  void flush() {
    if (pending_.empty()) return;
    const Table& t = *cur_;
    const std::size_t size = batch_for(t);
    // The stored rows with the keys of the batch (the key list padded with
    // the last key, so that every batch uses one statement).
    std::unordered_map<std::string, std::string> stored;
    {
      Stmt s(c_, fmt::format("SELECT {} FROM {} WHERE {}", column_list(t), t.table,
                             keys_condition(c_.backend(), t, size)));
      for (std::size_t r = 0; r < size; ++r) {
        const Row& row = pending_[r < pending_.size() ? r : pending_.size() - 1].row;
        for (std::size_t k : t.key_index) bind_value(s, t.columns[k].kind, row[k]);
      }
      Reader reader(t);
      reader.bind(s);
      Row got;
      while (s.next()) {
        reader.take(got);
        stored.emplace(key_string(t, got, t.key_index), line_of(t, got));
      }
    }
    std::vector<const Pending*> fresh;
    std::unordered_map<std::string, const Pending*> in_batch;
    for (const Pending& p : pending_) {
      std::string key = key_string(t, p.row, t.key_index);
      auto st = stored.find(key);
      if (st != stored.end()) {
        if (st->second == line_of(t, p.row)) {
          ++unchanged;
        } else {
          bad(t, p, ErrorCode::conflict, "already stored with other content");
        }
        continue;
      }
      auto dup = in_batch.find(key);
      if (dup != in_batch.end()) {
        if (line_of(t, dup->second->row) == line_of(t, p.row)) {
          ++unchanged;
        } else {
          bad(t, p, ErrorCode::conflict, "appears twice with different content");
        }
        continue;
      }
      in_batch.emplace(std::move(key), &p);
      fresh.push_back(&p);
    }
    // The insert is padded with copies of the last row, which ON CONFLICT
    // drops; an archive table has no conflict to drop them: exact size.
    if (!fresh.empty()) write(t, fresh, t.archive_of != nullptr ? fresh.size() : size);
    pending_.clear();
  }

  void insert(const Table& t, const std::vector<const Pending*>& rows, std::size_t size) {
    Stmt s(c_, insert_sql(c_.backend(), t, size));
    for (std::size_t r = 0; r < size; ++r) {
      const Row& row = rows[r < rows.size() ? r : rows.size() - 1]->row;
      for (std::size_t i = 0; i < t.columns.size(); ++i) bind_value(s, t.columns[i].kind, row[i]);
    }
    s.one();
  }

  void write(const Table& t, const std::vector<const Pending*>& rows, std::size_t size) {
    static const detail::Sql savepoint{"SAVEPOINT convstore_import"};
    static const detail::Sql release{"RELEASE SAVEPOINT convstore_import"};
    static const detail::Sql rollback_to{"ROLLBACK TO SAVEPOINT convstore_import"};
    const Op op{"import"};
    c_.execute(savepoint);
    try {
      insert(t, rows, size);
      c_.execute(release);
      for (const Pending* p : rows) written(t, *p);
      return;
    } catch (const soci::soci_error&) {
      c_.execute(rollback_to);
      c_.execute(release);
    }
    // One by one, to name the rows the database refuses.
    for (const Pending* p : rows) {
      c_.execute(savepoint);
      try {
        insert(t, {p}, 1);
        c_.execute(release);
        written(t, *p);
      } catch (const soci::soci_error&) {
        std::string why;
        ErrorCode code = ErrorCode::invalid_argument;
        try {
          std::rethrow_exception(impl_.translated(op, &c_, std::current_exception()));
        } catch (const Error& e) {
          why = e.what();
          code = e.code();
        }
        c_.execute(rollback_to);
        c_.execute(release);
        bad(t, *p, code, fmt::format("refused by the database: {}", why));
      }
    }
  }

  void written(const Table& t, const Pending& p) {
    ++inserted;
    ++inserted_by_[t.order];
    if (std::string_view(t.table) == "calendar_events") {
      // The longest event of each owner bounds the calendar's overlap
      // queries (calendar_bounds): kept as the calendar store keeps it.
      const Row& r = p.row;
      static const std::size_t owner = index_of(t, "owner_id");
      static const std::size_t start = index_of(t, "start_at");
      static const std::size_t end = index_of(t, "end_at");
      long long key = r[owner].null ? 0 : r[owner].i;
      long long span = (parse_timestamp(r[end].s) - parse_timestamp(r[start].s)).count();
      long long& longest = longest_[key];
      if (span > longest) longest = span;
    }
  }

  void widen_calendar_bounds() {
    static const detail::Sql q{
        "INSERT INTO calendar_bounds (owner_key, longest_us) VALUES (:k, :d) ON CONFLICT "
        "(owner_key) DO UPDATE SET longest_us = max(longest_us, excluded.longest_us)",
        "INSERT INTO calendar_bounds (owner_key, longest_us) VALUES (:k, :d) ON CONFLICT "
        "(owner_key) DO UPDATE SET longest_us = GREATEST(calendar_bounds.longest_us, "
        "excluded.longest_us)"};
    for (const auto& [owner, span] : longest_) Stmt(c_, q).in(owner).in(span).one();
  }

  // Identity sequences after explicit ids: moved past the largest id, never
  // back (an id is never reused).
  void move_sequences() {
    for (const Table& t : tables()) {
      if (!t.identity || inserted_by_[t.order] == 0) continue;
      const char* id = t.key[0];
      long long v = 0;
      Stmt(c_, fmt::format("SELECT setval(s, m) FROM (SELECT pg_get_serial_sequence('{0}', "
                           "'{1}')::regclass AS s, (SELECT MAX({1}) FROM {0}) AS m) x WHERE m IS "
                           "NOT NULL AND m > COALESCE(pg_sequence_last_value(s), 0)",
                           t.table, id))
          .out(v)
          .one();
    }
  }

  // Archived rows keep the ids of the rows they were: the identity of the
  // live table is moved past them, so that a new conversation (message,
  // ...) never takes an archived id. Never moved back.
  void move_past_archived_ids() {
    for (const Table& t : tables()) {
      if (t.archive_of == nullptr || inserted_by_[t.order] == 0) continue;
      long long v = 0;
      if (c_.backend() == Backend::postgresql) {
        Stmt(c_, fmt::format("SELECT setval(s, m) FROM (SELECT pg_get_serial_sequence('{0}', "
                             "'id')::regclass AS s, (SELECT MAX(id) FROM {1}) AS m) x WHERE m IS "
                             "NOT NULL AND m > COALESCE(pg_sequence_last_value(s), 0)",
                             t.archive_of, t.table))
            .out(v)
            .one();
        continue;
      }
      // SQLite AUTOINCREMENT: sqlite_sequence holds the largest id used.
      Stmt(c_, fmt::format("UPDATE sqlite_sequence SET seq = (SELECT MAX(id) FROM {1}) WHERE "
                           "name = '{0}' AND seq < (SELECT MAX(id) FROM {1})",
                           t.archive_of, t.table))
          .one();
      Stmt(c_, fmt::format("INSERT INTO sqlite_sequence (name, seq) SELECT '{0}', m FROM (SELECT "
                           "MAX(id) AS m FROM {1}) x WHERE m IS NOT NULL AND NOT EXISTS (SELECT 1 "
                           "FROM sqlite_sequence WHERE name = '{0}')",
                           t.archive_of, t.table))
          .one();
    }
  }

  Store::Impl& impl_;
  Connection& c_;
  std::size_t batch_;
  OnBad on_bad_;
  const Table* cur_ = nullptr;
  std::vector<Pending> pending_;
  std::vector<std::int64_t> inserted_by_;
  std::map<long long, long long> longest_;
};

// ---- reading a file ----

// Checks one line and turns it into a row: JSON syntax, a known type, every
// column present with its type, references to parents seen earlier in the
// file or stored. Remembers the keys of parent types.
class Validator {
 public:
  explicit Validator(Connection& c) : c_(c), seen_(tables().size()) {}

  // Throws Bad.
  const Table& parse(const std::string& line, Row& row) {
    Json j;
    try {
      j = Json::parse(line);
    } catch (const Json::parse_error& e) {
      throw Bad{ErrorCode::invalid_argument, fmt::format("invalid JSON: {}", e.what())};
    }
    if (!j.is_object()) throw Bad{ErrorCode::invalid_argument, "not a JSON object"};
    auto type = j.find("type");
    if (type == j.end()) throw Bad{ErrorCode::invalid_argument, "missing field 'type'"};
    if (!type->is_string()) {
      throw Bad{ErrorCode::invalid_argument, "field 'type' must be a string"};
    }
    const Table* tp = find_table(type->get_ref<const std::string&>());
    if (tp == nullptr) {
      throw Bad{ErrorCode::invalid_argument,
                fmt::format("unknown type '{}'", type->get_ref<const std::string&>())};
    }
    const Table& t = *tp;
    row.assign(t.columns.size(), Value{});
    std::size_t present = 1;
    for (std::size_t i = 0; i < t.columns.size(); ++i) {
      const Column& c = t.columns[i];
      auto f = j.find(c.key());
      if (f != j.end()) ++present;
      if (f == j.end() || f->is_null()) {
        if (!c.nullable) {
          throw Bad{ErrorCode::invalid_argument,
                    f == j.end() ? fmt::format("{}: missing field '{}'", t.type, c.key())
                                 : fmt::format("{}: field '{}' must not be null", t.type, c.key())};
        }
        continue;
      }
      row[i] = value(t, c, *f);
    }
    if (present != j.size()) {
      for (auto it = j.begin(); it != j.end(); ++it) {
        bool known = it.key() == "type";
        for (const Column& c : t.columns) known = known || it.key() == c.key();
        if (!known) {
          throw Bad{ErrorCode::invalid_argument,
                    fmt::format("{}: unknown field '{}'", t.type, it.key())};
        }
      }
    }
    for (std::size_t n = 0; n < t.refs.size(); ++n) check_ref(t, n, row);
    if (t.is_parent) seen_[t.order].insert(key_string(t, row, t.key_index));
    return t;
  }

 private:
  static Value value(const Table& t, const Column& c, const Json& j) {
    auto wrong = [&](const char* what) {
      return Bad{ErrorCode::invalid_argument, fmt::format("{}: field '{}' must be {}, not {}",
                                                          t.type, c.key(), what, j.type_name())};
    };
    Value v;
    v.null = false;
    switch (c.kind) {
      case Kind::integer:
        if (!j.is_number_integer()) throw wrong("an integer");
        if (j.is_number_unsigned() &&
            j.get<std::uint64_t>() >
                static_cast<std::uint64_t>(std::numeric_limits<long long>::max())) {
          throw Bad{ErrorCode::invalid_argument,
                    fmt::format("{}: field '{}' is out of range", t.type, c.key())};
        }
        v.i = j.get<long long>();
        break;
      case Kind::boolean:
        if (!j.is_boolean()) throw wrong("true or false");
        v.i = j.get<bool>() ? 1 : 0;
        break;
      case Kind::text:
        if (!j.is_string()) throw wrong("a string");
        v.s = j.get<std::string>();
        try {
          if (c.indexed) {
            detail::check_key_text(v.s, c.key());
          } else {
            detail::check_text(v.s, c.key());
          }
        } catch (const Error& e) {
          throw Bad{ErrorCode::invalid_argument, fmt::format("{}: {}", t.type, e.what())};
        }
        break;
      case Kind::time:
        if (!j.is_string()) throw wrong("a timestamp string");
        try {
          v.s = to_iso8601(parse_timestamp(j.get_ref<const std::string&>()));
        } catch (const Error& e) {
          throw Bad{ErrorCode::invalid_argument,
                    fmt::format("{}: field '{}': {}", t.type, c.key(), e.what())};
        }
        break;
      case Kind::object:
        if (!j.is_object()) throw wrong("a JSON object");
        [[fallthrough]];
      case Kind::json:
        try {
          v.s = detail::json_text(j, c.key());
        } catch (const Error& e) {
          throw Bad{ErrorCode::invalid_argument, fmt::format("{}: {}", t.type, e.what())};
        }
        break;
    }
    return v;
  }

  void check_ref(const Table& t, std::size_t n, const Row& row) {
    const auto& idx = t.ref_index[n];
    for (std::size_t i : idx) {
      if (row[i].null) return;
    }
    const Table& p = *t.ref_table[n];
    std::string key = key_string(t, row, idx);
    auto& seen = seen_[p.order];
    if (seen.count(key) != 0) return;
    std::string where;
    for (std::size_t k = 0; k < p.key.size(); ++k) {
      where += fmt::format("{}{} = :r{}", k > 0 ? " AND " : "", p.key[k], k);
    }
    Stmt s(c_, fmt::format("SELECT 1 FROM {} WHERE {}", p.table, where));
    for (std::size_t k = 0; k < idx.size(); ++k) bind_value(s, t.columns[idx[k]].kind, row[idx[k]]);
    long long one = 0;
    s.out(one);
    if (!s.one()) {
      std::string cols;
      for (const char* c : t.refs[n].columns) cols += (cols.empty() ? "" : ", ") + std::string(c);
      throw Bad{ErrorCode::invalid_argument,
                fmt::format("{}: {} refers to {} {}, which is neither earlier in the file nor "
                            "stored",
                            t.type, cols, p.type, key_display(t, row, idx))};
    }
    seen.insert(std::move(key));
  }

  Connection& c_;
  std::vector<std::unordered_set<std::string>> seen_;
};

std::string header_line(int schema_version) {
  return fmt::format("{{\"format\":\"convstore\",\"version\":{},\"schema_version\":{}}}\n",
                     kFormatVersion, schema_version);
}

void check_header(const std::string& line) {
  Json j;
  try {
    j = Json::parse(line);
  } catch (const Json::parse_error& e) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("line 1: not a convstore export header: invalid JSON: {}", e.what()));
  }
  if (!j.is_object() || j.value("format", Json()) != "convstore") {
    throw Error(ErrorCode::invalid_argument,
                "line 1: not a convstore export header (expected {\"format\":\"convstore\",...})");
  }
  auto v = j.find("version");
  if (v == j.end() || !v->is_number_integer() || v->get<long long>() != kFormatVersion) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("line 1: unsupported export format version {} (this library reads "
                            "version {})",
                            v == j.end() ? std::string("(none)") : v->dump(), kFormatVersion));
  }
}

std::vector<TypeCount> by_type(const std::vector<std::int64_t>& counts) {
  std::vector<TypeCount> out;
  for (const Table& t : tables()) out.push_back(TypeCount{t.type, counts[t.order]});
  return out;
}

}  // namespace

// ---- public API ----

ExportReport export_jsonl(Store& store, std::ostream& out, const ExportOptions& options) {
  detail::check_count(options.page_size, 100000, "export page size");
  Store::Impl& impl = detail::StoreAccess::impl(store);
  return impl.snapshot(Op{"export"}, [&](Connection& c) {
    ExportReport report;
    report.schema_version = impl.schema_version;
    std::int64_t total = 0;
    for (const Table& t : tables()) total += count_rows(c, t);
    Ticker ticker(options.on_progress, options.progress_every, total);
    std::string line = header_line(report.schema_version);
    auto put = [&] {
      out.write(line.data(), static_cast<std::streamsize>(line.size()));
      if (!out) throw Error(ErrorCode::unavailable, "export: writing the output failed");
    };
    put();
    std::vector<std::int64_t> counts(tables().size(), 0);
    for (const Table& t : tables()) {
      scan(c, t, options.page_size, [&](const Row& row) {
        line.clear();
        append_line(line, t, row);
        put();
        ++counts[t.order];
        ++report.rows;
        ticker.tick(t.type);
      });
    }
    out.flush();
    if (!out) throw Error(ErrorCode::unavailable, "export: writing the output failed");
    ticker.report("done");
    report.rows_by_type = by_type(counts);
    return report;
  });
}

ImportReport import_jsonl(Store& store, std::istream& in, const ImportOptions& options) {
  detail::check_count(options.batch_size, 10000, "import batch size");
  Store::Impl& impl = detail::StoreAccess::impl(store);
  return impl.write(Op{"import"}, [&](Connection& c) {
    ImportReport report;
    std::int64_t line_no = 0;
    auto on_bad = [&](std::int64_t line, const Bad& bad) {
      if (!options.skip_bad_lines) {
        throw Error(bad.code, fmt::format("import: line {}: {}", line, bad.reason));
      }
      report.skipped.push_back(BadLine{line, bad.reason});
    };
    Writer writer(impl, c, options.batch_size, on_bad);
    Validator validator(c);
    Ticker ticker(options.on_progress, options.progress_every, 0);
    std::string line;
    Row row;
    bool header = false;
    while (std::getline(in, line)) {
      ++line_no;
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.find_first_not_of(" \t") == std::string::npos) continue;
      if (!header) {
        if (line_no != 1) {
          throw Error(ErrorCode::invalid_argument,
                      fmt::format("import: line {}: the header must be the first line", line_no));
        }
        check_header(line);
        header = true;
        continue;
      }
      const Table* t = nullptr;
      try {
        t = &validator.parse(line, row);
      } catch (const Bad& bad) {
        on_bad(line_no, bad);
      }
      if (t != nullptr) writer.add(*t, std::move(row), line_no);
      ticker.tick(t != nullptr ? t->type : "skipped");
    }
    if (in.bad()) throw Error(ErrorCode::unavailable, "import: reading the input failed");
    if (!header) {
      throw Error(ErrorCode::invalid_argument, "import: the input is empty (no header line)");
    }
    writer.finish();
    ticker.report("done");
    report.lines = line_no;
    report.inserted = writer.inserted;
    report.unchanged = writer.unchanged;
    report.inserted_by_type = by_type(writer.inserted_by_type());
    return report;
  });
}

VerifyReport verify_stores(Store& source, Store& target, const ProgressFn& on_progress) {
  Ticker ticker(on_progress, 10000, 0);
  auto a = checksums(detail::StoreAccess::impl(source), ticker);
  auto b = checksums(detail::StoreAccess::impl(target), ticker);
  VerifyReport r;
  r.match = true;
  for (const Table& t : tables()) {
    TableCheck check;
    check.type = t.type;
    check.table = t.table;
    check.source_rows = a[t.order].rows;
    check.source_sha256 = a[t.order].sha256;
    check.target_rows = b[t.order].rows;
    check.target_sha256 = b[t.order].sha256;
    r.match = r.match && check.match();
    r.tables.push_back(std::move(check));
  }
  ticker.report("verify");
  return r;
}

CopyReport copy_store(Store& from, Store& to, const CopyOptions& options) {
  detail::check_count(options.batch_size, 10000, "copy batch size");
  Store::Impl& src = detail::StoreAccess::impl(from);
  Store::Impl& dst = detail::StoreAccess::impl(to);
  CopyReport report;
  src.snapshot(Op{"copy (reading the source)"}, [&](Connection& sc) {
    std::int64_t total = 0;
    std::vector<std::int64_t> counts(tables().size(), 0);
    for (const Table& t : tables()) total += count_rows(sc, t);
    Ticker ticker(options.on_progress, options.progress_every, total);
    dst.write(Op{"copy (writing the target)"}, [&](Connection& dc) {
      auto on_bad = [&](std::int64_t, const Bad& bad) {
        throw Error(bad.code, fmt::format("copy: the target has {}", bad.reason));
      };
      Writer writer(dst, dc, options.batch_size, on_bad);
      for (const Table& t : tables()) {
        scan(sc, t, 1000, [&](const Row& row) {
          writer.add(t, row, 0);
          ++counts[t.order];
          ticker.tick(t.type);
        });
      }
      writer.finish();
      report.inserted = writer.inserted;
      report.unchanged = writer.unchanged;
    });
    ticker.report("copied");
    report.rows_by_type = by_type(counts);
  });
  report.verification = verify_stores(from, to, options.on_progress);
  if (!report.verification.match) {
    for (const TableCheck& t : report.verification.tables) {
      if (t.match()) continue;
      throw Error(
          ErrorCode::data_loss,
          fmt::format("copy: {} differ after the copy: {} rows (sha256 {}) in the source, "
                      "{} rows (sha256 {}) in the target",
                      t.table, t.source_rows, t.source_sha256, t.target_rows, t.target_sha256));
    }
  }
  return report;
}

void backup(Store& store, std::string_view path, const BackupOptions& options) {
  if (path.empty()) throw Error(ErrorCode::invalid_argument, "backup: empty file path");
  if (options.pages_per_step < 1) {
    throw Error(ErrorCode::invalid_argument, "backup: pages_per_step must be at least 1");
  }
  Store::Impl& impl = detail::StoreAccess::impl(store);
  if (impl.backend() != Backend::sqlite) {
    impl.read(Op{"backup"}, [&](Connection& c) {
      c.dialect().backup(c.session(), std::string(path), options.pages_per_step, {});
    });
  }
  const std::string target(path);
  const std::string part = target + ".part";
  std::remove(part.c_str());
  try {
    // One read snapshot for every step: the backup copies one consistent
    // state while other connections write (WAL).
    impl.snapshot(Op{"backup"}, [&](Connection& c) {
      static const detail::Sql start{"SELECT COUNT(*) FROM sqlite_master"};
      long long n = 0;
      Stmt(c, start).out(n).one();
      c.dialect().backup(c.session(), part, options.pages_per_step,
                         [&](long long done, long long total) {
                           if (options.on_progress) {
                             options.on_progress(Progress{"pages", done, total});
                           }
                         });
    });
  } catch (...) {
    std::remove(part.c_str());
    throw;
  }
  if (std::rename(part.c_str(), target.c_str()) != 0) {
    std::remove(part.c_str());
    throw Error(ErrorCode::unavailable,
                fmt::format("backup: cannot rename {} to {}", part, target));
  }
}

}  // namespace convstore
