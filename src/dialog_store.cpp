// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#include "convstore/dialog_store.hpp"

#include <algorithm>

#include "store_helpers.hpp"
#include "store_impl.hpp"

namespace convstore {

using detail::check_text;
using detail::Connection;
using detail::Sql;
using detail::Stmt;

// ================================ names ====================================

std::string_view to_string(DialogType t) noexcept {
  switch (t) {
    case DialogType::private_chat:
      return "private";
    case DialogType::group:
      return "group";
    case DialogType::channel:
      return "channel";
  }
  return "?";
}

DialogType parse_dialog_type(std::string_view s) {
  for (auto v : {DialogType::private_chat, DialogType::group, DialogType::channel}) {
    if (to_string(v) == s) return v;
  }
  throw Error(ErrorCode::invalid_argument, fmt::format("unknown dialog type '{}'", s));
}

std::string_view to_string(ReviewStatus s) noexcept {
  switch (s) {
    case ReviewStatus::pending_approval:
      return "pending_approval";
    case ReviewStatus::approved:
      return "approved";
    case ReviewStatus::rejected:
      return "rejected";
    case ReviewStatus::sent:
      return "sent";
    case ReviewStatus::failed:
      return "failed";
    case ReviewStatus::superseded:
      return "superseded";
  }
  return "?";
}

ReviewStatus parse_review_status(std::string_view s) {
  for (auto v : {ReviewStatus::pending_approval, ReviewStatus::approved, ReviewStatus::rejected,
                 ReviewStatus::sent, ReviewStatus::failed, ReviewStatus::superseded}) {
    if (to_string(v) == s) return v;
  }
  throw Error(ErrorCode::invalid_argument, fmt::format("unknown review status '{}'", s));
}

namespace {

Json opt_time(const std::optional<Timestamp>& t) {
  return t ? Json(to_iso8601(*t)) : Json(nullptr);
}

template <class T>
Json opt(const std::optional<T>& v) {
  return v ? Json(*v) : Json(nullptr);
}

}  // namespace

Json to_json(const Dialog& d) {
  return Json{{"conversation_id", d.conversation_id},
              {"user_id", opt(d.user_id)},
              {"channel", d.channel},
              {"chat_id", opt(d.chat_id)},
              {"type", to_string(d.type)},
              {"processing_enabled", d.processing_enabled},
              {"auto_send", d.auto_send},
              {"last_message_id", opt(d.last_message_id)},
              {"last_message_at", opt_time(d.last_message_at)},
              {"checked_at", opt_time(d.checked_at)},
              {"new_message_at", opt_time(d.new_message_at)},
              {"created_at", to_iso8601(d.created_at)},
              {"updated_at", to_iso8601(d.updated_at)}};
}

Json to_json(const Suggestion& s) {
  return Json{{"id", s.id},
              {"conversation_id", s.conversation_id},
              {"user_id", opt(s.user_id)},
              {"answers_message_id", s.answers_message_id},
              {"answers_message_at", to_iso8601(s.answers_message_at)},
              {"suggested_text", s.suggested_text},
              {"edited_text", opt(s.edited_text)},
              {"text", s.text()},
              {"status", to_string(s.status)},
              {"auto_approved", s.auto_approved},
              {"reason", opt(s.reason)},
              {"error", opt(s.error)},
              {"attempts", s.attempts},
              {"claimed_by", opt(s.claimed_by)},
              {"claim_expires_at", opt_time(s.claim_expires_at)},
              {"created_at", to_iso8601(s.created_at)},
              {"updated_at", to_iso8601(s.updated_at)},
              {"decided_at", opt_time(s.decided_at)},
              {"sent_at", opt_time(s.sent_at)}};
}

namespace {

// ================================ checks ===================================

constexpr std::size_t kMaxTextBytes = 65536;
constexpr std::size_t kMaxNoteBytes = 4096;
constexpr std::size_t kMaxLimit = 1000;
constexpr std::chrono::seconds kMaxInterval = std::chrono::hours(24 * 366);
constexpr std::chrono::milliseconds kMaxLease = std::chrono::hours(24);

void check_reply_text(std::string_view text, std::string_view what) {
  check_text(text, what);
  if (text.size() > kMaxTextBytes) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("{} is {} bytes long (at most {})", what, text.size(), kMaxTextBytes));
  }
  bool blank = std::all_of(text.begin(), text.end(), [](char ch) {
    return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' || ch == '\v' || ch == '\f';
  });
  if (blank) throw Error(ErrorCode::invalid_argument, fmt::format("{} is empty", what));
}

void check_note(std::string_view text, std::string_view what) {
  check_text(text, what);
  if (text.size() > kMaxNoteBytes) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("{} is {} bytes long (at most {})", what, text.size(), kMaxNoteBytes));
  }
}

void check_dialog_type(DialogType t) {
  if (to_string(t) == "?")
    throw Error(ErrorCode::invalid_argument, "dialog type is outside the set");
}

[[noreturn]] void no_dialog(ConversationId id) {
  throw Error(ErrorCode::not_found, fmt::format("conversation {} has no dialog", id));
}

[[noreturn]] void no_suggestion(SuggestionId id) {
  throw Error(ErrorCode::not_found, fmt::format("suggestion {} not found", id));
}

// ============================== dialog rows ================================

#define CS_DIALOG_COLS                                                                  \
  "d.conversation_id, c.user_id, c.channel, c.chat_id, d.type, d.processing_enabled, "  \
  "d.auto_send, d.last_message_id, d.last_message_at, d.checked_at, d.new_message_at, " \
  "d.created_at, d.updated_at"
#define CS_DIALOG_FROM " FROM dialogs d JOIN conversations c ON c.id = d.conversation_id"

struct DialogRow {
  Dialog d;
  std::string type;
};

void bind_dialog(Stmt& st, DialogRow& r) {
  Dialog& d = r.d;
  st.out(d.conversation_id).out(d.user_id).out(d.channel).out(d.chat_id).out(r.type);
  st.out(d.processing_enabled).out(d.auto_send).out(d.last_message_id).out(d.last_message_at);
  st.out(d.checked_at).out(d.new_message_at).out(d.created_at).out(d.updated_at);
}

Dialog decoded(DialogRow& r) {
  r.d.type = parse_dialog_type(r.type);
  return std::move(r.d);
}

Dialog decode_dialog(DialogRow& r) { return decoded(r); }

std::optional<Dialog> fetch_dialog(Stmt& st) {
  return detail::fetch_one_decoded<DialogRow>(st, bind_dialog, decode_dialog);
}

std::vector<Dialog> fetch_dialogs(Stmt& st) {
  return detail::fetch_all_decoded<DialogRow>(st, bind_dialog, decode_dialog);
}

const Sql kGetDialog{"SELECT " CS_DIALOG_COLS CS_DIALOG_FROM " WHERE d.conversation_id = :id"};

Dialog read_dialog(Connection& c, ConversationId id) {
  Stmt st(c, kGetDialog);
  st.in(id);
  auto d = fetch_dialog(st);
  if (!d) no_dialog(id);
  return *d;
}

// ============================ suggestion rows ==============================

#define CS_SUGGESTION_COLS                                                                      \
  "id, conversation_id, user_id, answers_message_id, answers_message_at, suggested_text, "      \
  "edited_text, status, auto_approved, reason, error, attempts, claimed_by, claim_expires_at, " \
  "created_at, updated_at, decided_at, sent_at"

struct SuggestionRow {
  Suggestion s;
  std::string status;
};

void bind_suggestion(Stmt& st, SuggestionRow& r) {
  Suggestion& s = r.s;
  st.out(s.id).out(s.conversation_id).out(s.user_id).out(s.answers_message_id);
  st.out(s.answers_message_at).out(s.suggested_text).out(s.edited_text).out(r.status);
  st.out(s.auto_approved).out(s.reason).out(s.error).out(s.attempts).out(s.claimed_by);
  st.out(s.claim_expires_at).out(s.created_at).out(s.updated_at).out(s.decided_at).out(s.sent_at);
}

Suggestion decoded(SuggestionRow& r) {
  r.s.status = parse_review_status(r.status);
  return std::move(r.s);
}

Suggestion decode_suggestion(SuggestionRow& r) { return decoded(r); }

std::optional<Suggestion> fetch_suggestion(Stmt& st) {
  return detail::fetch_one_decoded<SuggestionRow>(st, bind_suggestion, decode_suggestion);
}

std::vector<Suggestion> fetch_suggestions(Stmt& st, std::size_t expected = 0) {
  return detail::fetch_all_decoded<SuggestionRow>(st, bind_suggestion, decode_suggestion, expected);
}

const Sql kGetSuggestion{"SELECT " CS_SUGGESTION_COLS " FROM review_items WHERE id = :id"};
const Sql kLockSuggestion{"SELECT " CS_SUGGESTION_COLS " FROM review_items WHERE id = :id",
                          "SELECT " CS_SUGGESTION_COLS
                          " FROM review_items WHERE id = :id FOR UPDATE"};
// The open suggestion of a dialog, through the partial unique index.
const Sql kOpenSuggestion{
    "SELECT " CS_SUGGESTION_COLS
    " FROM review_items WHERE conversation_id = :c AND status IN ('pending_approval', "
    "'approved', 'failed')"};
const Sql kLockOpenSuggestion{
    "SELECT " CS_SUGGESTION_COLS
    " FROM review_items WHERE conversation_id = :c AND status IN ('pending_approval', "
    "'approved', 'failed')",
    "SELECT " CS_SUGGESTION_COLS
    " FROM review_items WHERE conversation_id = :c AND status IN ('pending_approval', "
    "'approved', 'failed') FOR UPDATE"};

Suggestion lock_suggestion(Connection& c, SuggestionId id) {
  Stmt st(c, kLockSuggestion);
  st.in(id);
  auto s = fetch_suggestion(st);
  if (!s) no_suggestion(id);
  return *s;
}

// `done` says what the move would have done: "approved", "marked sent".
[[noreturn]] void refused(const Suggestion& s, std::string_view done, ReviewStatus to) {
  throw Error(ErrorCode::conflict,
              fmt::format("suggestion {} is {}, so it cannot be {} ({} -> {})", s.id,
                          to_string(s.status), done, to_string(s.status), to_string(to)));
}

// Every write to a dialog first locks its conversation's row (PostgreSQL),
// in the order appends take them: an append locks the conversation, then
// its trigger the dialog. A transaction that writes a dialog and then
// appends to it therefore cannot deadlock with a concurrent append. SQLite
// runs one writer at a time. Returns false when there is no conversation.
bool lock_conversation_first(Connection& c, ConversationId conversation) {
  static const Sql q{"SELECT 1", "SELECT id FROM conversations WHERE id = :c FOR NO KEY UPDATE"};
  if (c.backend() != detail::Backend::postgresql) return true;
  long long found = 0;
  return Stmt(c, q).in(conversation).out(found).one();
}

// Locks the dialog row of `conversation` (PostgreSQL; its conversation
// first), so that suggest, invalidate and the append trigger of one dialog
// take turns. Throws Error(not_found) when there is no dialog.
void lock_dialog(Connection& c, ConversationId conversation) {
  static const Sql q{"SELECT conversation_id FROM dialogs WHERE conversation_id = :c",
                     "SELECT conversation_id FROM dialogs WHERE conversation_id = :c FOR UPDATE"};
  long long found = 0;
  if (!lock_conversation_first(c, conversation) || !Stmt(c, q).in(conversation).out(found).one()) {
    no_dialog(conversation);
  }
}

}  // namespace

// =============================== dialogs ===================================

Dialog DialogStore::configure(ConversationId conversation, const DialogSettings& s) {
  check_dialog_type(s.type);
  static const Sql q{
      "INSERT INTO dialogs (conversation_id, type, processing_enabled, auto_send, created_at, "
      "updated_at) VALUES (:c, :ty, :pe, :as, :t1, :t2) ON CONFLICT (conversation_id) DO UPDATE "
      "SET type = excluded.type, processing_enabled = excluded.processing_enabled, "
      "auto_send = excluded.auto_send, updated_at = excluded.updated_at"};
  try {
    return impl_->write(Op{"configure dialog", "conversation", conversation}, [&](Connection& c) {
      lock_conversation_first(c, conversation);
      const Timestamp t = now();
      Stmt(c, q)
          .in(conversation)
          .in(s.type)
          .in(s.processing_enabled)
          .in(s.auto_send)
          .in(t)
          .in(t)
          .one();
      return read_dialog(c, conversation);
    });
  } catch (const Error& e) {
    if (e.code() == ErrorCode::not_found) {
      throw Error(ErrorCode::not_found, fmt::format("conversation {} not found", conversation),
                  e.sqlstate());
    }
    throw;
  }
}

std::optional<Dialog> DialogStore::get(ConversationId conversation) {
  return impl_->read(Op{"get dialog", "conversation", conversation}, [&](Connection& c) {
    Stmt st(c, kGetDialog);
    st.in(conversation);
    return fetch_dialog(st);
  });
}

std::vector<Dialog> DialogStore::list(UserId user) {
  static const Sql q{"SELECT " CS_DIALOG_COLS CS_DIALOG_FROM
                     " WHERE c.user_id = :u ORDER BY d.conversation_id"};
  return impl_->read(Op{"list dialogs", "user", user}, [&](Connection& c) {
    Stmt st(c, q);
    st.in(user);
    return fetch_dialogs(st);
  });
}

Dialog DialogStore::update(ConversationId conversation, const DialogUpdate& up) {
  if (up.type) check_dialog_type(*up.type);
  static const Sql q{
      "UPDATE dialogs SET type = :ty, processing_enabled = :pe, auto_send = :as, "
      "updated_at = :t WHERE conversation_id = :c"};
  return impl_->write(Op{"update dialog", "conversation", conversation}, [&](Connection& c) {
    lock_dialog(c, conversation);
    Dialog d = read_dialog(c, conversation);
    if (up.type) d.type = *up.type;
    if (up.processing_enabled) d.processing_enabled = *up.processing_enabled;
    if (up.auto_send) d.auto_send = *up.auto_send;
    Stmt(c, q).in(d.type).in(d.processing_enabled).in(d.auto_send).in(now()).in(conversation).one();
    return read_dialog(c, conversation);
  });
}

bool DialogStore::remove(ConversationId conversation) {
  static const Sql q{"DELETE FROM dialogs WHERE conversation_id = :c"};
  return impl_->write(Op{"remove dialog", "conversation", conversation}, [&](Connection& c) {
    lock_conversation_first(c, conversation);
    Stmt st(c, q);
    st.in(conversation).one();
    return st.affected() > 0;
  });
}

bool DialogStore::advance_cursor(ConversationId conversation,
                                 const std::optional<std::string>& expected,
                                 std::string_view new_message_id, Timestamp new_message_at) {
  if (expected) detail::check_id(*expected, "expected last message id");
  detail::check_id(new_message_id, "new last message id");
  if (expected && *expected == new_message_id) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("the cursor of conversation {} would not move: the new last message "
                            "id '{}' is the expected one",
                            conversation, new_message_id));
  }
  // One statement: on PostgreSQL a second worker's UPDATE waits for the
  // first one's row lock, then re-reads the row and finds the cursor moved.
  static const Sql exists{"SELECT conversation_id FROM dialogs WHERE conversation_id = :c"};
  static const Sql pg{
      "",
      "UPDATE dialogs SET last_message_id = :id, last_message_at = :at, checked_at = :t1, "
      "updated_at = :t2 WHERE conversation_id = :c AND last_message_id IS NOT DISTINCT FROM "
      ":e::text"};
  static const Sql lite{
      "UPDATE dialogs SET last_message_id = :id, last_message_at = :at, checked_at = :t1, "
      "updated_at = :t2 WHERE conversation_id = :c AND last_message_id IS :e"};
  const std::string id(new_message_id);
  return impl_->write(Op{"advance dialog cursor", "conversation", conversation},
                      [&](Connection& c) {
                        if (!lock_conversation_first(c, conversation)) no_dialog(conversation);
                        const Timestamp t = now();
                        Stmt st(c, c.backend() == detail::Backend::postgresql ? pg : lite);
                        st.in(id).in(new_message_at).in(t).in(t).in(conversation).in(expected);
                        st.one();
                        if (st.affected() > 0) return true;
                        long long found = 0;
                        if (!Stmt(c, exists).in(conversation).out(found).one()) {
                          no_dialog(conversation);
                        }
                        return false;
                      });
}

void DialogStore::mark_checked(ConversationId conversation, Timestamp as_of) {
  // The check time only moves forward; a user message stored after `as_of`
  // keeps the dialog due.
  static const Sql q{
      "UPDATE dialogs SET checked_at = CASE WHEN checked_at IS NULL OR checked_at < :a1 "
      "THEN :a2 ELSE checked_at END, new_message_at = CASE WHEN new_message_at <= :a3 THEN NULL "
      "ELSE new_message_at END WHERE conversation_id = :c"};
  bool found =
      impl_->write(Op{"mark dialog checked", "conversation", conversation}, [&](Connection& c) {
        if (!lock_conversation_first(c, conversation)) return false;
        Stmt st(c, q);
        st.in(as_of).in(as_of).in(as_of).in(conversation).one();
        return st.affected() > 0;
      });
  if (!found) no_dialog(conversation);
}

std::vector<Dialog> DialogStore::due(std::chrono::seconds interval, std::size_t limit,
                                     Timestamp at) {
  if (interval.count() < 0 || interval > kMaxInterval) {
    throw Error(
        ErrorCode::invalid_argument,
        fmt::format("dialog check interval of {} s is outside 0 .. 366 days", interval.count()));
  }
  detail::check_count(limit, kMaxLimit, "due dialogs limit");
  // Two index ranges of the enabled dialogs: not checked since the cut
  // (dialogs_due_check), and given a user message since their check
  // (dialogs_due_new).
  static const Sql q{
      "SELECT " CS_DIALOG_COLS CS_DIALOG_FROM
      " WHERE d.conversation_id IN (SELECT conversation_id FROM dialogs WHERE "
      "processing_enabled AND checked_at IS NULL UNION ALL SELECT conversation_id FROM dialogs "
      "WHERE processing_enabled AND checked_at <= :cut UNION ALL SELECT conversation_id FROM "
      "dialogs WHERE processing_enabled AND new_message_at IS NOT NULL) "
      "ORDER BY d.checked_at IS NOT NULL, d.checked_at, d.conversation_id LIMIT :n"};
  const Timestamp cut = at - interval;
  return impl_->read(Op{"list due dialogs"}, [&](Connection& c) {
    Stmt st(c, q);
    st.in(cut).in(limit);
    return fetch_dialogs(st);
  });
}

// ============================== suggestions ================================

Suggestion ReviewQueue::suggest(ConversationId conversation, const NewSuggestion& n) {
  detail::check_id(n.answers_message_id, "answered message id");
  check_reply_text(n.text, "suggestion text");
  static const Sql supersede{
      "UPDATE review_items SET status = 'superseded', reason = :r, claim_expires_at = NULL, "
      "updated_at = :t WHERE id = :id"};
  static const Sql insert{
      "INSERT INTO review_items (conversation_id, user_id, answers_message_id, "
      "answers_message_at, suggested_text, status, created_at, updated_at) SELECT "
      "d.conversation_id, c.user_id, :m, :ma, :tx, 'pending_approval', :t1, :t2 FROM dialogs d "
      "JOIN conversations c ON c.id = d.conversation_id WHERE d.conversation_id = :c "
      "RETURNING " CS_SUGGESTION_COLS};
  static const Sql set_reason{"UPDATE review_items SET reason = :r WHERE id = :id"};
  return impl_->write(Op{"suggest reply", "conversation", conversation}, [&](Connection& c) {
    lock_dialog(c, conversation);
    const Timestamp t = now();
    Stmt open(c, kLockOpenSuggestion);
    open.in(conversation);
    auto old = fetch_suggestion(open);
    if (old) {
      // Claimed and no outcome yet: the sender may be delivering it right
      // now (even past its lease), and a reply that went out must be
      // recorded as sent, not lost under a successor.
      if (old->status == ReviewStatus::approved && old->claim_expires_at) {
        throw Error(ErrorCode::conflict,
                    fmt::format("suggestion {} of conversation {} is being sent by '{}' (claim "
                                "{}, lease until {}): cannot supersede it (approved -> superseded)",
                                old->id, conversation, old->claimed_by.value_or(""), old->claim(),
                                to_iso8601(*old->claim_expires_at)));
      }
      if (old->answers_message_at > n.answers_message_at) {
        throw Error(ErrorCode::conflict,
                    fmt::format("suggestion {} of conversation {} answers a newer message ('{}' "
                                "at {}) than this one ('{}' at {})",
                                old->id, conversation, old->answers_message_id,
                                to_iso8601(old->answers_message_at), n.answers_message_id,
                                to_iso8601(n.answers_message_at)));
      }
      // Out of the unique index first; the reason names the successor below.
      Stmt(c, supersede).in(std::string("replaced by a newer suggestion")).in(t).in(old->id).one();
    }
    Stmt ins(c, insert);
    ins.in(n.answers_message_id).in(n.answers_message_at).in(n.text).in(t).in(t).in(conversation);
    auto s = fetch_suggestion(ins);
    if (!s) no_dialog(conversation);
    if (old) {
      Stmt(c, set_reason).in(fmt::format("replaced by suggestion {}", s->id)).in(old->id).one();
    }
    return *s;
  });
}

std::optional<Suggestion> ReviewQueue::get(SuggestionId id) {
  return impl_->read(Op{"get suggestion", "suggestion", id}, [&](Connection& c) {
    Stmt st(c, kGetSuggestion);
    st.in(id);
    return fetch_suggestion(st);
  });
}

std::optional<Suggestion> ReviewQueue::current(ConversationId conversation) {
  return impl_->read(Op{"get open suggestion", "conversation", conversation}, [&](Connection& c) {
    Stmt st(c, kOpenSuggestion);
    st.in(conversation);
    return fetch_suggestion(st);
  });
}

std::vector<Suggestion> ReviewQueue::history(ConversationId conversation, std::size_t limit) {
  detail::check_count(limit, kMaxLimit, "suggestion history limit");
  static const Sql q{"SELECT " CS_SUGGESTION_COLS
                     " FROM review_items WHERE conversation_id = :c ORDER BY id DESC LIMIT :n"};
  return impl_->read(Op{"list suggestions", "conversation", conversation}, [&](Connection& c) {
    Stmt st(c, q);
    st.in(conversation).in(limit);
    return fetch_suggestions(st, limit);
  });
}

Page<Suggestion> ReviewQueue::pending(UserId user, const PendingQuery& pq) {
  detail::check_count(pq.limit, kMaxLimit, "pending suggestions page size");
  std::optional<std::pair<Timestamp, long long>> after;
  if (!pq.cursor.empty()) after = detail::parse_time_cursor("p1", pq.cursor);
  // review_items_pending: (user_id, created_at, id) of the pending ones.
  static const Sql first{"SELECT " CS_SUGGESTION_COLS
                         " FROM review_items WHERE user_id = :u AND status = 'pending_approval' "
                         "ORDER BY created_at, id LIMIT :n"};
  static const Sql next{"SELECT " CS_SUGGESTION_COLS
                        " FROM review_items WHERE user_id = :u AND status = 'pending_approval' "
                        "AND (created_at > :t1 OR (created_at = :t2 AND id > :id)) "
                        "ORDER BY created_at, id LIMIT :n"};
  return impl_->read(Op{"list pending suggestions", "user", user}, [&](Connection& c) {
    Stmt st(c, after ? next : first);
    st.in(user);
    if (after) st.in(after->first).in(after->first).in(after->second);
    st.in(pq.limit + 1);
    Page<Suggestion> page;
    page.items = fetch_suggestions(st, pq.limit + 1);
    if (page.items.size() > pq.limit) {
      page.items.pop_back();
      page.next_cursor =
          detail::time_cursor("p1", page.items.back().created_at, page.items.back().id);
    }
    return page;
  });
}

Suggestion ReviewQueue::approve(SuggestionId id, const std::optional<std::string>& edited) {
  if (edited) check_reply_text(*edited, "edited suggestion text");
  static const Sql q{
      "UPDATE review_items SET status = 'approved', edited_text = :e, decided_at = :t1, "
      "updated_at = :t2 WHERE id = :id RETURNING " CS_SUGGESTION_COLS};
  return impl_->write(Op{"approve suggestion", "suggestion", id}, [&](Connection& c) {
    Suggestion s = lock_suggestion(c, id);
    if (s.status != ReviewStatus::pending_approval) refused(s, "approved", ReviewStatus::approved);
    const Timestamp t = now();
    Stmt st(c, q);
    st.in(edited).in(t).in(t).in(id);
    return *fetch_suggestion(st);
  });
}

Suggestion ReviewQueue::reject(SuggestionId id, const std::optional<std::string>& reason) {
  if (reason) check_note(*reason, "rejection reason");
  static const Sql q{
      "UPDATE review_items SET status = 'rejected', reason = :r, decided_at = :t1, "
      "updated_at = :t2 WHERE id = :id RETURNING " CS_SUGGESTION_COLS};
  return impl_->write(Op{"reject suggestion", "suggestion", id}, [&](Connection& c) {
    Suggestion s = lock_suggestion(c, id);
    if (s.status != ReviewStatus::pending_approval) refused(s, "rejected", ReviewStatus::rejected);
    const Timestamp t = now();
    Stmt st(c, q);
    st.in(reason).in(t).in(t).in(id);
    return *fetch_suggestion(st);
  });
}

Suggestion ReviewQueue::retry(SuggestionId id) {
  static const Sql q{
      "UPDATE review_items SET status = 'approved', updated_at = :t WHERE id = :id "
      "RETURNING " CS_SUGGESTION_COLS};
  return impl_->write(Op{"retry suggestion", "suggestion", id}, [&](Connection& c) {
    Suggestion s = lock_suggestion(c, id);
    if (s.status != ReviewStatus::failed) refused(s, "retried", ReviewStatus::approved);
    Stmt st(c, q);
    st.in(now()).in(id);
    return *fetch_suggestion(st);
  });
}

bool ReviewQueue::invalidate(ConversationId conversation, std::string_view newer_message_id,
                             Timestamp newer_message_at) {
  detail::check_id(newer_message_id, "newer message id");
  static const Sql q{
      "UPDATE review_items SET status = 'superseded', reason = :r, updated_at = :t "
      "WHERE conversation_id = :c AND status IN ('pending_approval', 'approved', 'failed') AND "
      "status = 'pending_approval' AND answers_message_id <> :m AND answers_message_at <= :ma"};
  const std::string reason = fmt::format("invalidated by newer message '{}'", newer_message_id);
  return impl_->write(Op{"invalidate suggestion", "conversation", conversation},
                      [&](Connection& c) {
                        lock_dialog(c, conversation);
                        Stmt st(c, q);
                        st.in(reason).in(now()).in(conversation).in(newer_message_id);
                        st.in(newer_message_at).one();
                        return st.affected() > 0;
                      });
}

// ================================ sending ==================================

namespace {

// What a sender may claim at :t0: approved without a live claim, and
// pending ones of auto-send dialogs. The conditions on the row itself are
// in this WHERE, not in a subquery: PostgreSQL re-checks them on the newest
// version of a row it locks (FOR UPDATE), so a row another sender claimed
// and committed meanwhile is passed over, not claimed twice.
// The leading status IN (...) repeats the condition of the partial index
// review_items_open word for word, so that SQLite can use it.
#define CS_READY_WHERE                                                                        \
  "status IN ('pending_approval', 'approved', 'failed') AND ("                                \
  "(status = 'approved' AND (claim_expires_at IS NULL OR claim_expires_at <= :t0)) OR "       \
  "(status = 'pending_approval' AND conversation_id IN (SELECT conversation_id FROM dialogs " \
  "WHERE auto_send)))"

}  // namespace

std::vector<Suggestion> ReviewQueue::ready_to_send(std::size_t limit) {
  detail::check_count(limit, kMaxLimit, "ready suggestions limit");
  static const Sql q{"SELECT " CS_SUGGESTION_COLS " FROM review_items WHERE " CS_READY_WHERE
                     " ORDER BY id LIMIT :n"};
  return impl_->read(Op{"list suggestions ready to send"}, [&](Connection& c) {
    Stmt st(c, q);
    st.in(now()).in(limit);
    return fetch_suggestions(st, limit);
  });
}

std::vector<Suggestion> ReviewQueue::claim_to_send(std::string_view sender, std::size_t max,
                                                   std::chrono::milliseconds lease) {
  detail::check_id(sender, "sender");
  detail::check_count(max, kMaxLimit, "claim batch size");
  if (lease.count() <= 0 || lease > kMaxLease) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("claim lease of {} ms is outside 1 ms .. 1 day", lease.count()));
  }
  // PostgreSQL: SKIP LOCKED, so that concurrent senders take different
  // rows instead of waiting for each other; the claim is the UPDATE of the
  // locked rows. SQLite: one writer at a time.
  static const Sql q{
      "UPDATE review_items SET auto_approved = (status = 'pending_approval' OR auto_approved), "
      "decided_at = COALESCE(decided_at, :t1), status = 'approved', claimed_by = :s, "
      "claim_expires_at = :x, attempts = attempts + 1, updated_at = :t2 WHERE id IN (SELECT id "
      "FROM review_items WHERE " CS_READY_WHERE
      " ORDER BY id LIMIT :n) RETURNING " CS_SUGGESTION_COLS,
      "UPDATE review_items SET auto_approved = (status = 'pending_approval' OR auto_approved), "
      "decided_at = COALESCE(decided_at, :t1::timestamptz), status = 'approved', "
      "claimed_by = :s, claim_expires_at = :x, attempts = attempts + 1, updated_at = :t2 "
      "WHERE id IN (SELECT id FROM review_items WHERE " CS_READY_WHERE
      " ORDER BY id LIMIT :n FOR UPDATE SKIP LOCKED) RETURNING " CS_SUGGESTION_COLS};
  const std::string who(sender);
  auto claimed = impl_->write(Op{"claim suggestions to send"}, [&](Connection& c) {
    const Timestamp t = now();
    Stmt st(c, q);
    st.in(t).in(who).in(t + std::chrono::duration_cast<std::chrono::microseconds>(lease)).in(t);
    st.in(t).in(max);
    return fetch_suggestions(st, max);
  });
  std::sort(claimed.begin(), claimed.end(),
            [](const Suggestion& a, const Suggestion& b) { return a.id < b.id; });
  return claimed;
}

namespace {

// Records a send outcome: the suggestion must be approved and claimed with
// this token.
// `bind` binds the parameters of `q` given the time.
template <class Bind>
Suggestion record_outcome(Store::Impl* impl, const char* action, SuggestionId id,
                          std::int64_t claim, ReviewStatus to, const Sql& q, Bind bind) {
  if (claim <= 0) {
    throw Error(
        ErrorCode::invalid_argument,
        fmt::format("claim token {} of suggestion {} is not one claim_to_send gives", claim, id));
  }
  return impl->write(Op{action, "suggestion", id}, [&](Connection& c) {
    Suggestion s = lock_suggestion(c, id);
    if (s.status != ReviewStatus::approved) {
      refused(s, to == ReviewStatus::sent ? "marked sent" : "marked failed", to);
    }
    if (!s.claim_expires_at || s.attempts != claim) {
      throw Error(
          ErrorCode::conflict,
          fmt::format("claim {} of suggestion {} is stale: {}; cannot mark it {}", claim, id,
                      s.claim_expires_at ? fmt::format("it was claimed again (claim {} by '{}')",
                                                       s.attempts, s.claimed_by.value_or(""))
                                         : std::string("no sender holds it"),
                      to_string(to)));
    }
    Stmt st(c, q);
    bind(st, now());
    return *fetch_suggestion(st);
  });
}

}  // namespace

Suggestion ReviewQueue::mark_sent(SuggestionId id, std::int64_t claim) {
  static const Sql q{
      "UPDATE review_items SET status = 'sent', claim_expires_at = NULL, sent_at = :t1, "
      "updated_at = :t2 WHERE id = :id RETURNING " CS_SUGGESTION_COLS};
  return record_outcome(impl_, "mark suggestion sent", id, claim, ReviewStatus::sent, q,
                        [&](Stmt& st, Timestamp t) { st.in(t).in(t).in(id); });
}

Suggestion ReviewQueue::mark_failed(SuggestionId id, std::int64_t claim, std::string_view error) {
  check_note(error, "send error");
  if (error.empty()) throw Error(ErrorCode::invalid_argument, "send error is empty");
  static const Sql q{
      "UPDATE review_items SET status = 'failed', error = :e, claim_expires_at = NULL, "
      "updated_at = :t WHERE id = :id RETURNING " CS_SUGGESTION_COLS};
  return record_outcome(impl_, "mark suggestion failed", id, claim, ReviewStatus::failed, q,
                        [&](Stmt& st, Timestamp t) { st.in(error).in(t).in(id); });
}

std::int64_t ReviewQueue::purge(Timestamp older_than) {
  static const Sql q{
      "DELETE FROM review_items WHERE status IN ('rejected', 'sent', 'superseded') AND "
      "updated_at < :t"};
  return impl_->single(Op{"purge suggestions"}, [&](Connection& c) {
    Stmt st(c, q);
    st.in(older_than).one();
    return static_cast<std::int64_t>(st.affected());
  });
}

}  // namespace convstore
