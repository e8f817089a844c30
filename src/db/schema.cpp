// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#include "db/schema.hpp"

#include <fmt/format.h>

namespace convstore::detail {

namespace {

// Migration 1: users, channels, conversations, messages, snapshots and
// questions. Placeholders: {pk} {big} {ts} {json} {bool} {ctext}.
const char* const kMigration1[] = {
    R"(CREATE TABLE users (
  id {pk},
  channel TEXT NOT NULL,
  external_id TEXT NOT NULL,
  username TEXT,
  display_name TEXT,
  preferred_model TEXT,
  system_prompt TEXT,
  time_zone TEXT NOT NULL DEFAULT 'UTC',
  metadata {json} NOT NULL DEFAULT '{{}}',
  created_at {ts} NOT NULL,
  updated_at {ts} NOT NULL,
  UNIQUE (channel, external_id)
))",
    R"(CREATE TABLE channel_configs (
  channel TEXT PRIMARY KEY,
  default_model TEXT NOT NULL,
  settings {json} NOT NULL DEFAULT '{{}}',
  created_at {ts} NOT NULL,
  updated_at {ts} NOT NULL
))",
    R"(CREATE TABLE conversations (
  id {pk},
  key TEXT UNIQUE,
  user_id {big} REFERENCES users (id) ON DELETE CASCADE,
  channel TEXT NOT NULL DEFAULT '',
  chat_id TEXT,
  agent TEXT,
  kind TEXT,
  title TEXT,
  active_agent TEXT,
  status TEXT NOT NULL DEFAULT 'active'
    CHECK (status IN ('active', 'completed', 'abandoned', 'archived')),
  model_override TEXT,
  external_ref TEXT,
  message_count {big} NOT NULL DEFAULT 0,
  version {big} NOT NULL DEFAULT 0,
  last_message_at {ts},
  metadata {json} NOT NULL DEFAULT '{{}}',
  created_at {ts} NOT NULL,
  updated_at {ts} NOT NULL
))",
    "CREATE INDEX conversations_user_updated ON conversations (user_id, updated_at, id)",
    "CREATE INDEX conversations_chat ON conversations (channel, chat_id, status)",
    "CREATE INDEX conversations_status_updated ON conversations (status, updated_at, id)",
    "CREATE INDEX conversations_updated ON conversations (updated_at, id)",
    R"(CREATE TABLE messages (
  id {pk},
  conversation_id {big} NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
  role TEXT NOT NULL CHECK (role IN ('user', 'assistant', 'system', 'tool')),
  kind TEXT NOT NULL DEFAULT 'text'
    CHECK (kind IN ('text', 'tool_call', 'tool_response', 'thinking', 'error')),
  content TEXT NOT NULL,
  agent TEXT,
  model TEXT,
  token_count {big},
  tool_name TEXT,
  tool_args {json},
  tool_call_id TEXT,
  platform_message_id TEXT,
  reply_to_platform_id TEXT,
  client_key TEXT,
  complete {bool} NOT NULL DEFAULT TRUE,
  metadata {json} NOT NULL DEFAULT '{{}}',
  created_at {ts} NOT NULL,
  updated_at {ts} NOT NULL
))",
    "CREATE INDEX messages_conversation ON messages (conversation_id, id)",
    "CREATE UNIQUE INDEX messages_client_key ON messages (conversation_id, client_key) "
    "WHERE client_key IS NOT NULL",
    "CREATE INDEX messages_platform_id ON messages (platform_message_id) "
    "WHERE platform_message_id IS NOT NULL",
    R"(CREATE TABLE conversation_data (
  id {pk},
  conversation_id {big} NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
  kind TEXT NOT NULL CHECK (kind IN ('partial', 'complete', 'missing_fields')),
  data {json} NOT NULL,
  created_at {ts} NOT NULL
))",
    "CREATE INDEX conversation_data_conversation ON conversation_data (conversation_id, kind, id)",
    R"(CREATE TABLE agent_questions (
  id {pk},
  conversation_id {big} NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
  agent TEXT NOT NULL,
  question TEXT NOT NULL,
  missing_fields {json} NOT NULL DEFAULT '[]',
  platform_message_id TEXT,
  asked_at {ts} NOT NULL,
  answered_at {ts},
  answer TEXT
))",
    "CREATE INDEX agent_questions_conversation ON agent_questions (conversation_id, id)",
};

// Migration 2: the agent registry, agent state and its history.
const char* const kMigration2[] = {
    R"(CREATE TABLE agents (
  id {ctext} PRIMARY KEY,
  name TEXT NOT NULL DEFAULT '',
  description TEXT NOT NULL DEFAULT '',
  type {ctext} NOT NULL DEFAULT 'regular',
  persona {json} NOT NULL DEFAULT '{{}}',
  config {json} NOT NULL DEFAULT '{{}}',
  tools {json} NOT NULL DEFAULT '[]',
  sub_agents {json} NOT NULL DEFAULT '[]',
  planner TEXT,
  version {big} NOT NULL DEFAULT 1,
  active {bool} NOT NULL DEFAULT TRUE,
  usage_count {big} NOT NULL DEFAULT 0,
  last_used_at {ts},
  metadata {json} NOT NULL DEFAULT '{{}}',
  created_at {ts} NOT NULL,
  updated_at {ts} NOT NULL
))",
    "CREATE INDEX agents_type ON agents (type, id)",
    R"(CREATE TABLE agent_states (
  scope_kind {ctext} NOT NULL CHECK (scope_kind IN ('conversation', 'session', 'named')),
  scope_key {ctext} NOT NULL,
  agent {ctext} NOT NULL,
  conversation_id {big} REFERENCES conversations (id) ON DELETE CASCADE,
  state {json} NOT NULL,
  version {big} NOT NULL,
  created_at {ts} NOT NULL,
  updated_at {ts} NOT NULL,
  PRIMARY KEY (scope_kind, scope_key, agent)
))",
    "CREATE INDEX agent_states_agent ON agent_states (agent, updated_at)",
    "CREATE INDEX agent_states_conversation ON agent_states (conversation_id)",
    R"(CREATE TABLE agent_state_history (
  scope_kind {ctext} NOT NULL,
  scope_key {ctext} NOT NULL,
  agent {ctext} NOT NULL,
  version {big} NOT NULL,
  state {json} NOT NULL,
  saved_at {ts} NOT NULL,
  PRIMARY KEY (scope_kind, scope_key, agent, version),
  FOREIGN KEY (scope_kind, scope_key, agent)
    REFERENCES agent_states (scope_kind, scope_key, agent) ON DELETE CASCADE
))",
};

// Migration 3: calendar events, and the longest event of each owner (which
// bounds an overlap query to a short index range).
const char* const kMigration3[] = {
    R"(CREATE TABLE calendar_events (
  id {pk},
  owner_id {big} REFERENCES users (id) ON DELETE CASCADE,
  uid {ctext} NOT NULL UNIQUE,
  title TEXT NOT NULL,
  description TEXT NOT NULL DEFAULT '',
  location TEXT NOT NULL DEFAULT '',
  start_at {ts} NOT NULL,
  end_at {ts} NOT NULL,
  all_day {bool} NOT NULL DEFAULT FALSE,
  time_zone TEXT NOT NULL DEFAULT 'UTC',
  metadata {json} NOT NULL DEFAULT '{{}}',
  search_words TEXT NOT NULL DEFAULT '',
  created_at {ts} NOT NULL,
  updated_at {ts} NOT NULL,
  CHECK (end_at > start_at)
))",
    "CREATE INDEX calendar_events_owner_start ON calendar_events (owner_id, start_at, id)",
    R"(CREATE TABLE calendar_bounds (
  owner_key {big} PRIMARY KEY,
  longest_us {big} NOT NULL
))",
};

// Migration 4: recurring events. A series is one row with its rule, its
// cancelled occurrences (exdates) and the occurrences that were changed
// (moved: each has a row of its own, linked by series_id and recurrence_id,
// the original start), and the end of its last occurrence when it has one.
const char* const kMigration4[] = {
    "ALTER TABLE calendar_events ADD COLUMN rrule TEXT",
    "ALTER TABLE calendar_events ADD COLUMN exdates TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE calendar_events ADD COLUMN moved TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE calendar_events ADD COLUMN series_end {ts}",
    "ALTER TABLE calendar_events ADD COLUMN series_id {big} "
    "REFERENCES calendar_events (id) ON DELETE CASCADE",
    "ALTER TABLE calendar_events ADD COLUMN recurrence_id {ts}",
    "CREATE UNIQUE INDEX calendar_events_occurrence ON calendar_events (series_id, "
    "recurrence_id) WHERE series_id IS NOT NULL",
    "CREATE INDEX calendar_events_series ON calendar_events (owner_id, start_at) "
    "WHERE rrule IS NOT NULL",
};

// Migration 5: SessionCache::database() keeps its entries here, and
// conversations remember the newest turn fence an append carried.
//   cache_entries  one row per key: a plain value, a versioned value, the
//                  head of a hash or scored set, rate state, or a lease
//                  (version = its fence, holder = the holding ticket)
//   cache_fields   the fields of hashes and the members of scored sets
//   cache_waiters  the queue of callers waiting for a lease, by ticket
// Values that are not valid UTF-8 text are stored as hex (hex = 1).
const char* const kMigration5[] = {
    R"(CREATE TABLE cache_entries (
  key TEXT PRIMARY KEY,
  kind TEXT NOT NULL,
  value TEXT,
  hex {big} NOT NULL DEFAULT 0,
  version {big} NOT NULL DEFAULT 0,
  holder {big},
  expires_at {ts}
))",
    "CREATE INDEX cache_entries_expiry ON cache_entries (expires_at) WHERE expires_at IS NOT NULL",
    R"(CREATE TABLE cache_fields (
  key TEXT NOT NULL,
  field TEXT NOT NULL,
  value TEXT,
  hex {big} NOT NULL DEFAULT 0,
  score {big},
  PRIMARY KEY (key, field)
))",
    "CREATE INDEX cache_fields_score ON cache_fields (key, score)",
    R"(CREATE TABLE cache_waiters (
  ticket {pk},
  name TEXT NOT NULL,
  alive_until {ts} NOT NULL
))",
    "CREATE INDEX cache_waiters_name ON cache_waiters (name, ticket)",
    "ALTER TABLE conversations ADD COLUMN fence {big} NOT NULL DEFAULT 0",
};

// Migration 6: web sessions (seed 003). Tokens are stored only as the hex
// SHA-256 of their text, each in a unique index (a token is found by its
// hash). A refresh replaces a session by a new row of the same family
// (family_id: the id of the family's first session; rotated_from: the row it
// replaced), and revokes the old row with reason 'rotated', so that a
// replayed refresh token is recognized and its family revoked.
const char* const kMigration6[] = {
    R"(CREATE TABLE web_sessions (
  id {pk},
  user_id {big} NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  family_id {big} NOT NULL,
  rotated_from {big} REFERENCES web_sessions (id) ON DELETE SET NULL,
  access_hash TEXT NOT NULL UNIQUE,
  refresh_hash TEXT NOT NULL UNIQUE,
  access_expires_at {ts} NOT NULL,
  refresh_expires_at {ts} NOT NULL,
  status TEXT NOT NULL DEFAULT 'pending'
    CHECK (status IN ('pending', 'authenticated', 'error', 'expired')),
  metadata {json} NOT NULL DEFAULT '{{}}',
  device_info {json} NOT NULL DEFAULT '{{}}',
  created_at {ts} NOT NULL,
  updated_at {ts} NOT NULL,
  last_used_at {ts},
  revoked_at {ts},
  revoke_reason TEXT CHECK (revoke_reason IN ('rotated', 'revoked', 'reuse')),
  CHECK ((revoked_at IS NULL) = (revoke_reason IS NULL))
))",
    "CREATE INDEX web_sessions_user ON web_sessions (user_id, created_at, id)",
    "CREATE INDEX web_sessions_family ON web_sessions (family_id)",
    "CREATE INDEX web_sessions_refresh_expiry ON web_sessions (refresh_expires_at)",
    "CREATE INDEX web_sessions_revoked ON web_sessions (revoked_at) WHERE revoked_at IS NOT NULL",
};

// Migration 7: encrypted credentials (seed 003 authentication_data). A
// secret is stored only sealed: XChaCha20-Poly1305 under an application key
// the database never sees (key_id names it), with its nonce; both base64.
// The owner and the name are the associated data of the seal.
const char* const kMigration7[] = {
    R"(CREATE TABLE credentials (
  id {pk},
  user_id {big} NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  name TEXT NOT NULL,
  algorithm TEXT NOT NULL,
  key_id TEXT NOT NULL,
  nonce TEXT NOT NULL,
  ciphertext TEXT NOT NULL,
  active {bool} NOT NULL DEFAULT TRUE,
  metadata {json} NOT NULL DEFAULT '{{}}',
  created_at {ts} NOT NULL,
  updated_at {ts} NOT NULL,
  deactivated_at {ts},
  UNIQUE (user_id, name)
))",
    "CREATE INDEX credentials_key ON credentials (key_id, id)",
};

// Migration 8: dialog processing state and the review queue (seed 003).
//   dialogs       one row per conversation processed as a seed-003 dialog:
//                 type, flags, the processing cursor (last processed platform
//                 message), the last check, and the newest user message
//                 stored since it (new_message_at, kept by a trigger)
//   review_items  suggested replies; at most one open (pending_approval,
//                 approved, failed) per dialog, by a partial unique index.
//                 A claim by a sender: claimed_by, claim_expires_at (NULL
//                 when no claim is held) and attempts (the claim's token).
const char* const kMigration8[] = {
    R"(CREATE TABLE dialogs (
  conversation_id {big} PRIMARY KEY REFERENCES conversations (id) ON DELETE CASCADE,
  type TEXT NOT NULL CHECK (type IN ('private', 'group', 'channel')),
  processing_enabled {bool} NOT NULL DEFAULT TRUE,
  auto_send {bool} NOT NULL DEFAULT FALSE,
  last_message_id TEXT,
  last_message_at {ts},
  checked_at {ts},
  new_message_at {ts},
  created_at {ts} NOT NULL,
  updated_at {ts} NOT NULL,
  CHECK ((last_message_id IS NULL) = (last_message_at IS NULL))
))",
    "CREATE INDEX dialogs_due_check ON dialogs (checked_at) WHERE processing_enabled",
    "CREATE INDEX dialogs_due_new ON dialogs (new_message_at) "
    "WHERE processing_enabled AND new_message_at IS NOT NULL",
    "CREATE INDEX dialogs_auto_send ON dialogs (conversation_id) WHERE auto_send",
    R"(CREATE TABLE review_items (
  id {pk},
  conversation_id {big} NOT NULL REFERENCES dialogs (conversation_id) ON DELETE CASCADE,
  user_id {big} REFERENCES users (id) ON DELETE CASCADE,
  answers_message_id TEXT NOT NULL,
  answers_message_at {ts} NOT NULL,
  suggested_text TEXT NOT NULL,
  edited_text TEXT,
  status TEXT NOT NULL DEFAULT 'pending_approval' CHECK (status IN ('pending_approval',
    'approved', 'rejected', 'sent', 'failed', 'superseded')),
  auto_approved {bool} NOT NULL DEFAULT FALSE,
  reason TEXT,
  error TEXT,
  attempts {big} NOT NULL DEFAULT 0,
  claimed_by TEXT,
  claim_expires_at {ts},
  created_at {ts} NOT NULL,
  updated_at {ts} NOT NULL,
  decided_at {ts},
  sent_at {ts},
  CHECK (claim_expires_at IS NULL OR status = 'approved')
))",
    "CREATE UNIQUE INDEX review_items_open ON review_items (conversation_id) "
    "WHERE status IN ('pending_approval', 'approved', 'failed')",
    "CREATE INDEX review_items_conversation ON review_items (conversation_id, id)",
    "CREATE INDEX review_items_pending ON review_items (user_id, created_at, id) "
    "WHERE status = 'pending_approval'",
    "CREATE INDEX review_items_approved ON review_items (claim_expires_at, id) "
    "WHERE status = 'approved'",
    "CREATE INDEX review_items_final ON review_items (updated_at) "
    "WHERE status IN ('rejected', 'sent', 'superseded')",
};

// A user message stored in a conversation that is a dialog records itself
// in dialogs.new_message_at and supersedes the pending suggestion, unless
// that suggestion answers this very message (the redundant status IN (...)
// lets the planners use review_items_open). Conversations without a dialog
// cost one primary-key probe of dialogs per user message.
const char* const kMigration8Sqlite[] = {
    "CREATE TRIGGER messages_dialog_user AFTER INSERT ON messages "
    "WHEN new.role = 'user' AND EXISTS (SELECT 1 FROM dialogs WHERE conversation_id = "
    "new.conversation_id) BEGIN "
    "UPDATE dialogs SET new_message_at = new.created_at WHERE conversation_id = "
    "new.conversation_id AND (new_message_at IS NULL OR new_message_at < new.created_at); "
    "UPDATE review_items SET status = 'superseded', reason = 'invalidated by new user message ' "
    "|| new.id, updated_at = new.created_at WHERE conversation_id = new.conversation_id AND "
    "status IN ('pending_approval', 'approved', 'failed') AND status = 'pending_approval' AND "
    "answers_message_id IS NOT new.platform_message_id; END",
};
// PostgreSQL: a statement-level trigger over the inserted rows (a transition
// table), so that a batch of messages costs one call, not one per row.
const char* const kMigration8Postgresql[] = {
    "CREATE FUNCTION convstore_messages_dialog_user() RETURNS trigger LANGUAGE plpgsql "
    "SET search_path FROM CURRENT AS $$ "
    "BEGIN "
    "UPDATE dialogs d SET new_message_at = GREATEST(d.new_message_at, n.at) "
    "FROM (SELECT conversation_id, MAX(created_at) AS at FROM new_messages WHERE role = 'user' "
    "GROUP BY conversation_id) n WHERE d.conversation_id = n.conversation_id; "
    "IF FOUND THEN "
    "UPDATE review_items r SET status = 'superseded', reason = 'invalidated by new user "
    "message ' || m.id, updated_at = m.created_at FROM new_messages m "
    "WHERE m.id = (SELECT MIN(x.id) FROM new_messages x WHERE x.conversation_id = "
    "r.conversation_id AND x.role = 'user' AND x.platform_message_id IS DISTINCT FROM "
    "r.answers_message_id) AND r.conversation_id IN (SELECT conversation_id FROM new_messages "
    "WHERE role = 'user') AND r.status IN ('pending_approval', 'approved', 'failed') AND "
    "r.status = 'pending_approval'; "
    "END IF; "
    "RETURN NULL; "
    "END $$",
    "CREATE TRIGGER messages_dialog_user AFTER INSERT ON messages REFERENCING NEW TABLE AS "
    "new_messages FOR EACH STATEMENT EXECUTE FUNCTION convstore_messages_dialog_user()",
};

// Migration 9: the task queue (seed 003's background workers) and its
// periodic schedules. Priority is an integer (low 0, normal 1, high 2) so
// that claims order by it; `lease` is the fencing number every claim bumps.
// Claims scan tasks_due (pending only, in claim order) and sweep expired
// leases through tasks_lease (processing only); a dedupe key is unique
// among unfinished tasks.
const char* const kMigration9[] = {
    R"(CREATE TABLE tasks (
  id {pk},
  type {ctext} NOT NULL,
  priority INTEGER NOT NULL DEFAULT 1 CHECK (priority BETWEEN 0 AND 2),
  status TEXT NOT NULL DEFAULT 'pending'
    CHECK (status IN ('pending', 'processing', 'completed', 'failed', 'cancelled')),
  payload {json} NOT NULL DEFAULT '{{}}',
  result {json},
  run_at {ts} NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  max_attempts INTEGER NOT NULL CHECK (max_attempts >= 1),
  last_error TEXT,
  dedupe_key TEXT,
  schedule TEXT,
  worker TEXT,
  lease {big} NOT NULL DEFAULT 0,
  lease_expires_at {ts},
  created_at {ts} NOT NULL,
  updated_at {ts} NOT NULL,
  started_at {ts},
  finished_at {ts},
  CHECK ((status = 'processing') = (lease_expires_at IS NOT NULL))
))",
    "CREATE INDEX tasks_due ON tasks (priority DESC, run_at, id) WHERE status = 'pending'",
    "CREATE INDEX tasks_lease ON tasks (lease_expires_at) WHERE status = 'processing'",
    ("CREATE UNIQUE INDEX tasks_dedupe ON tasks (dedupe_key) "
     "WHERE dedupe_key IS NOT NULL AND status IN ('pending', 'processing')"),
    "CREATE INDEX tasks_status ON tasks (status, id)",
    "CREATE INDEX tasks_finished ON tasks (finished_at) WHERE finished_at IS NOT NULL",
    R"(CREATE TABLE task_schedules (
  name {ctext} PRIMARY KEY,
  type {ctext} NOT NULL,
  priority INTEGER NOT NULL CHECK (priority BETWEEN 0 AND 2),
  payload {json} NOT NULL,
  max_attempts INTEGER NOT NULL,
  interval_ms {big} NOT NULL CHECK (interval_ms > 0),
  anchor {ts} NOT NULL,
  next_run_at {ts} NOT NULL,
  last_run_at {ts},
  last_task_id {big},
  created_at {ts} NOT NULL,
  updated_at {ts} NOT NULL
))",
    "CREATE INDEX task_schedules_next ON task_schedules (next_run_at)",
};

// Migration 12: operation templates (seed 000 operation_templates), each
// shared (no user) or owned by a user and deleted with them; an
// (owner, kind, name) is unique. And an index of messages by time, which
// the analytics' range scans use.
const char* const kMigration12[] = {
    R"(CREATE TABLE operation_templates (
  id {pk},
  user_id {big} REFERENCES users (id) ON DELETE CASCADE,
  kind {ctext} NOT NULL,
  name TEXT NOT NULL,
  sample_input TEXT NOT NULL,
  expected_output {json} NOT NULL,
  use_count {big} NOT NULL DEFAULT 0,
  last_used_at {ts},
  created_at {ts} NOT NULL,
  updated_at {ts} NOT NULL
))",
    "CREATE UNIQUE INDEX operation_templates_name ON operation_templates "
    "(COALESCE(user_id, 0), kind, name)",
    "CREATE INDEX operation_templates_kind ON operation_templates (kind, use_count)",
    "CREATE INDEX operation_templates_user ON operation_templates (user_id) "
    "WHERE user_id IS NOT NULL",
    "CREATE INDEX messages_created ON messages (created_at)",
};

// Migration 11: retention and legal holds (seeds 000, 001).
//   legal_holds        a hold on one conversation or on every conversation of
//                      one user (at most one of each); retention never
//                      touches what is held, forget_user refuses a held user
//   archived_*         the rows retention moved out of conversations,
//                      messages, conversation_data and agent_questions: the
//                      same columns, plus archived_at; no constraints but
//                      the ids (a row keeps its original id)
//   anonymized_at      when retention blanked a conversation's text
const char* const kMigration11[] = {
    R"(CREATE TABLE legal_holds (
  id {pk},
  conversation_id {big} REFERENCES conversations (id) ON DELETE CASCADE,
  user_id {big} REFERENCES users (id) ON DELETE CASCADE,
  reason TEXT NOT NULL,
  created_at {ts} NOT NULL,
  CHECK ((conversation_id IS NULL) <> (user_id IS NULL))
))",
    "CREATE UNIQUE INDEX legal_holds_conversation ON legal_holds (conversation_id) "
    "WHERE conversation_id IS NOT NULL",
    "CREATE UNIQUE INDEX legal_holds_user ON legal_holds (user_id) WHERE user_id IS NOT NULL",
    "ALTER TABLE conversations ADD COLUMN anonymized_at {ts}",
    R"(CREATE TABLE archived_conversations (
  id {big} NOT NULL,
  key TEXT,
  user_id {big},
  channel TEXT NOT NULL,
  chat_id TEXT,
  agent TEXT,
  kind TEXT,
  title TEXT,
  active_agent TEXT,
  status TEXT NOT NULL,
  model_override TEXT,
  external_ref TEXT,
  message_count {big} NOT NULL,
  version {big} NOT NULL,
  last_message_at {ts},
  metadata {json} NOT NULL,
  created_at {ts} NOT NULL,
  updated_at {ts} NOT NULL,
  fence {big} NOT NULL,
  anonymized_at {ts},
  archived_at {ts} NOT NULL
))",
    "CREATE INDEX archived_conversations_id ON archived_conversations (id)",
    "CREATE INDEX archived_conversations_user ON archived_conversations (user_id, id)",
    R"(CREATE TABLE archived_messages (
  id {big} NOT NULL,
  conversation_id {big} NOT NULL,
  role TEXT NOT NULL,
  kind TEXT NOT NULL,
  content TEXT NOT NULL,
  agent TEXT,
  model TEXT,
  token_count {big},
  tool_name TEXT,
  tool_args {json},
  tool_call_id TEXT,
  platform_message_id TEXT,
  reply_to_platform_id TEXT,
  client_key TEXT,
  complete {bool} NOT NULL,
  metadata {json} NOT NULL,
  created_at {ts} NOT NULL,
  updated_at {ts} NOT NULL,
  archived_at {ts} NOT NULL
))",
    "CREATE INDEX archived_messages_conversation ON archived_messages (conversation_id, id)",
    "CREATE INDEX archived_messages_id ON archived_messages (id)",
    R"(CREATE TABLE archived_conversation_data (
  id {big} NOT NULL,
  conversation_id {big} NOT NULL,
  kind TEXT NOT NULL,
  data {json} NOT NULL,
  created_at {ts} NOT NULL,
  archived_at {ts} NOT NULL
))",
    "CREATE INDEX archived_conversation_data_conversation ON archived_conversation_data "
    "(conversation_id, id)",
    "CREATE INDEX archived_conversation_data_id ON archived_conversation_data (id)",
    R"(CREATE TABLE archived_agent_questions (
  id {big} NOT NULL,
  conversation_id {big} NOT NULL,
  agent TEXT NOT NULL,
  question TEXT NOT NULL,
  missing_fields {json} NOT NULL,
  platform_message_id TEXT,
  asked_at {ts} NOT NULL,
  answered_at {ts},
  answer TEXT,
  archived_at {ts} NOT NULL
))",
    "CREATE INDEX archived_agent_questions_conversation ON archived_agent_questions "
    "(conversation_id, id)",
    "CREATE INDEX archived_agent_questions_id ON archived_agent_questions (id)",
};

// Title and description search, the same words found on both: the library
// normalizes the words into search_words (one tokenizer for documents and
// queries), which an FTS5 index kept by triggers and a generated tsvector
// ('simple': no stemming, no stop words) with a GIN index cover.
const char* const kSearchSqlite[] = {
    "CREATE VIRTUAL TABLE calendar_events_fts USING fts5(search_words, "
    "content='calendar_events', content_rowid='id', tokenize='unicode61 remove_diacritics 0')",
    "CREATE TRIGGER calendar_events_fts_insert AFTER INSERT ON calendar_events BEGIN "
    "INSERT INTO calendar_events_fts (rowid, search_words) VALUES (new.id, new.search_words); "
    "END",
    "CREATE TRIGGER calendar_events_fts_delete AFTER DELETE ON calendar_events BEGIN "
    "INSERT INTO calendar_events_fts (calendar_events_fts, rowid, search_words) "
    "VALUES ('delete', old.id, old.search_words); END",
    "CREATE TRIGGER calendar_events_fts_update AFTER UPDATE OF search_words "
    "ON calendar_events BEGIN "
    "INSERT INTO calendar_events_fts (calendar_events_fts, rowid, search_words) "
    "VALUES ('delete', old.id, old.search_words); "
    "INSERT INTO calendar_events_fts (rowid, search_words) VALUES (new.id, new.search_words); "
    "END",
};
const char* const kSearchPostgresql[] = {
    "ALTER TABLE calendar_events ADD COLUMN search tsvector GENERATED ALWAYS AS "
    "(to_tsvector('simple', search_words)) STORED",
    "CREATE INDEX calendar_events_search ON calendar_events USING GIN (search)",
};

// Migration 10: full-text search over message content, the same words
// found on both backends. At most the first 100,000 characters of a message
// are indexed (PostgreSQL refuses a tsvector over 1 MB). SQLite: an FTS5
// index over messages (external content: the text is not stored twice) kept
// by triggers on insert, delete (a conversation's cascade included) and any
// update of the content, so that every write path, present or future, keeps
// it right; the messages already stored are indexed by the migration.
// PostgreSQL: a generated tsvector ('simple': no stemming, no stop words)
// with a GIN index, and an aggregate that ANDs tsqueries.
const char* const kMigration10Sqlite[] = {
    "CREATE VIRTUAL TABLE messages_fts USING fts5(content, content='messages', "
    "content_rowid='id', tokenize='unicode61 remove_diacritics 0')",
    "CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN "
    "INSERT INTO messages_fts (rowid, content) VALUES (new.id, substr(new.content, 1, 100000)); "
    "END",
    "CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN "
    "INSERT INTO messages_fts (messages_fts, rowid, content) "
    "VALUES ('delete', old.id, substr(old.content, 1, 100000)); END",
    "CREATE TRIGGER messages_fts_update AFTER UPDATE OF content ON messages BEGIN "
    "INSERT INTO messages_fts (messages_fts, rowid, content) "
    "VALUES ('delete', old.id, substr(old.content, 1, 100000)); "
    "INSERT INTO messages_fts (rowid, content) VALUES (new.id, substr(new.content, 1, 100000)); "
    "END",
    "INSERT INTO messages_fts (rowid, content) SELECT id, substr(content, 1, 100000) FROM messages",
};
const char* const kMigration10Postgresql[] = {
    ("ALTER TABLE messages ADD COLUMN search tsvector GENERATED ALWAYS AS "
     "(to_tsvector('simple', left(content, 100000))) STORED"),
    "CREATE INDEX messages_search ON messages USING GIN (search)",
    // ANDs the queries of a search's terms (one statement for any number).
    "CREATE AGGREGATE convstore_tsquery_and(tsquery) (SFUNC = tsquery_and, STYPE = tsquery)",
};

}  // namespace

std::vector<std::vector<std::string>> schema_migrations(const SchemaTypes& t) {
  auto expand = [&](const char* sql) {
    return fmt::format(fmt::runtime(sql), fmt::arg("pk", t.pk), fmt::arg("big", t.bigint),
                       fmt::arg("ts", t.timestamp), fmt::arg("json", t.json),
                       fmt::arg("bool", t.boolean), fmt::arg("ctext", t.sorted_text));
  };
  std::vector<std::vector<std::string>> out(12);
  for (const char* sql : kMigration1) out[0].push_back(expand(sql));
  for (const char* sql : kMigration2) out[1].push_back(expand(sql));
  for (const char* sql : kMigration3) out[2].push_back(expand(sql));
  for (const char* sql : kMigration4) out[3].push_back(expand(sql));
  for (const char* sql : kMigration5) out[4].push_back(expand(sql));
  for (const char* sql : kMigration6) out[5].push_back(expand(sql));
  for (const char* sql : kMigration7) out[6].push_back(expand(sql));
  for (const char* sql : kMigration8) out[7].push_back(expand(sql));
  for (const char* sql : kMigration9) out[8].push_back(expand(sql));
  for (const char* sql : kMigration11) out[10].push_back(expand(sql));
  for (const char* sql : kMigration12) out[11].push_back(expand(sql));
  if (t.postgresql) {
    for (const char* sql : kSearchPostgresql) out[2].push_back(sql);
    for (const char* sql : kMigration8Postgresql) out[7].push_back(sql);
    for (const char* sql : kMigration10Postgresql) out[9].push_back(sql);
  } else {
    for (const char* sql : kSearchSqlite) out[2].push_back(sql);
    for (const char* sql : kMigration8Sqlite) out[7].push_back(sql);
    for (const char* sql : kMigration10Sqlite) out[9].push_back(sql);
  }
  return out;
}

const std::vector<std::string>& migration_descriptions() {
  static const std::vector<std::string> d{
      "users, channel configs, conversations, messages, data snapshots, agent questions",
      "agent registry, agent state and its history",
      "calendar events, their search index, and the longest event of each owner",
      "recurring events: rules, exceptions and changed occurrences",
      "session cache tables, and the turn fence of conversations",
      "web sessions: access and refresh token hashes, expiry, status, rotation families",
      "encrypted credentials: sealed secrets per user and name, with their key id",
      "dialog processing state and the review queue of suggested replies",

      "task queue: tasks with priorities, leases and retries; periodic schedules",
      "full-text search index over message content",
      "retention: legal holds, archive tables, anonymized conversations",
      "operation templates; messages indexed by time for analytics"};
  return d;
}

}  // namespace convstore::detail
