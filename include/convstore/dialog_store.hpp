// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "convstore/export.hpp"
#include "convstore/store.hpp"
#include "convstore/types.hpp"

namespace convstore {

// ============================== dialogs ====================================
//
// Seed 003's dialog (a Telegram chat the bot processes for a user) is a
// convstore conversation: its channel and chat_id name the chat, its
// user_id is the owner. A DialogStore row adds what the processor needs:
// the dialog type, the processing and auto-send flags, and the processing
// cursor (the last processed platform message).

// Seed 003 DialogType. `private` is a C++ keyword: its name is "private".
enum class DialogType { private_chat, group, channel };

CONVSTORE_EXPORT std::string_view to_string(
    DialogType t) noexcept;  // "private", "group", "channel"
// Throws Error(invalid_argument) naming the value.
CONVSTORE_EXPORT DialogType parse_dialog_type(std::string_view s);

struct Dialog {
  ConversationId conversation_id = 0;
  // From the conversation: the owner, and the chat to fetch from / send to.
  std::optional<UserId> user_id;
  std::string channel;
  std::optional<std::string> chat_id;
  DialogType type = DialogType::private_chat;
  bool processing_enabled = true;
  bool auto_send = false;
  // The processing cursor: the last processed platform message and its
  // time (both empty until the first advance_cursor).
  std::optional<std::string> last_message_id;
  std::optional<Timestamp> last_message_at;
  // When a worker last looked at the dialog (advance_cursor or
  // mark_checked); empty: never.
  std::optional<Timestamp> checked_at;
  // The newest user message stored in the conversation (through
  // ConversationStore::append) since that check; empty: none.
  std::optional<Timestamp> new_message_at;
  Timestamp created_at{};
  Timestamp updated_at{};
};

// Input of DialogStore::configure.
struct DialogSettings {
  DialogType type = DialogType::private_chat;
  bool processing_enabled = true;
  bool auto_send = false;
};

// Changes to a dialog: a set field replaces the stored value.
struct DialogUpdate {
  std::optional<DialogType> type;
  std::optional<bool> processing_enabled;
  std::optional<bool> auto_send;
};

// Dialog processing state (seed 003 `dialogs`), reached as store.dialogs().
//
// The processor's loop:
//   for (auto& d : dialogs.due(30min)) {
//     fetch the chat's messages after d.last_message_id from the platform;
//     if none: dialogs.mark_checked(d.conversation_id, started_at); continue;
//     store.transaction([&] {   // both or neither
//       if (!dialogs.advance_cursor(d.conversation_id, d.last_message_id,
//                                   newest.id, newest.at)) return;  // another worker won
//       reviews.suggest(d.conversation_id, {newest.id, newest.at, reply});
//     });
//   }
// due() does not claim anything: two workers may be given the same dialog;
// the compare-and-set of advance_cursor lets exactly one of them advance it
// (and, in one transaction with suggest(), store its reply).
//
// Thread safety: safe to use from many threads and processes at once.
// Errors: throws convstore::Error. A lookup that finds nothing returns
// std::nullopt; removing what is not there returns false. A call about a
// conversation that has no dialog throws Error(not_found) naming it; bad
// input is Error(invalid_argument). A call that throws has written nothing.
class CONVSTORE_EXPORT DialogStore {
 public:
  // Makes the conversation a dialog with these settings, or changes the
  // settings of its dialog (the cursor is kept); returns it. Throws
  // Error(not_found) for an unknown conversation.
  Dialog configure(ConversationId conversation, const DialogSettings& settings = {});
  std::optional<Dialog> get(ConversationId conversation);
  // The dialogs of `user`'s conversations, by conversation id. An unknown
  // user has none.
  std::vector<Dialog> list(UserId user);
  // Applies `update` and returns the dialog.
  Dialog update(ConversationId conversation, const DialogUpdate& update);
  // Removes the dialog state and its suggestions; the conversation stays.
  // (Deleting the conversation, or its user, removes both too.)
  bool remove(ConversationId conversation);

  // Compare-and-set of the processing cursor: when the stored last message
  // id equals `expected_last_message_id` (std::nullopt: nothing processed
  // yet), moves it to (new_message_id, new_message_at), records the check
  // (checked_at; new_message_at stays until mark_checked) and returns true. Returns false, writing
  // nothing, when the cursor is elsewhere: another worker processed those messages first. Throws
  // Error(not_found) for a conversation without a dialog,
  // Error(invalid_argument) for an empty or malformed id, or one equal to
  // the expected one (that would let two workers both "advance").
  bool advance_cursor(ConversationId conversation,
                      const std::optional<std::string>& expected_last_message_id,
                      std::string_view new_message_id, Timestamp new_message_at);

  // Records that a worker looked at the dialog at `as_of` (when it started
  // fetching) and found nothing to process: the dialog is not due again
  // until the interval passes, unless a user message is stored after
  // `as_of`. Throws Error(not_found) for a conversation without a dialog.
  void mark_checked(ConversationId conversation, Timestamp as_of = now());

  // The dialogs due for processing: processing enabled, and either never
  // checked, or checked at or before `at - interval` (the seed's worker runs
  // every 30 minutes), or given a user message through
  // ConversationStore::append since the last check. Never checked first,
  // then the longest unchecked; at most `limit` (1..1000). `interval` is
  // 0 .. 366 days. Served by partial indexes on the enabled dialogs' check
  // time and on their new-message time.
  std::vector<Dialog> due(std::chrono::seconds interval, std::size_t limit = 100,
                          Timestamp at = now());

 private:
  friend class Store;
  explicit DialogStore(Store::Impl* impl) : impl_(impl) {}
  Store::Impl* impl_;
};

// ============================== reviews ====================================

using SuggestionId = std::int64_t;

// Where a suggested reply is (seed 003 ProcessingStatus, plus superseded):
//   pending_approval  stored by suggest(), waiting for the user's review
//   approved          approved as is or edited (or claimed in an auto-send
//                     dialog): ready to send
//   rejected          the user refused it (final)
//   sent              a sender delivered it (final)
//   failed            the send failed; retry() makes it approved again
//   superseded        replaced by a newer suggestion for the dialog, or
//                     invalidated by a newer message in it (final)
// Allowed moves:
//   pending_approval -> approved (approve; or claim_to_send in an auto-send
//                       dialog), rejected (reject),
//                       superseded (suggest, invalidate, a stored user message)
//   approved -> sent / failed (mark_sent / mark_failed, with the claim),
//               superseded (suggest; not once a sender claimed it, until
//               its outcome is recorded)
//   failed   -> approved (retry), superseded (suggest)
// Any other move is Error(conflict) naming the suggestion, its status and
// the move. The open statuses are pending_approval, approved and failed:
// a dialog has at most one open suggestion (a unique index says so).
enum class ReviewStatus { pending_approval, approved, rejected, sent, failed, superseded };

CONVSTORE_EXPORT std::string_view to_string(ReviewStatus s) noexcept;
// Throws Error(invalid_argument) naming the value.
CONVSTORE_EXPORT ReviewStatus parse_review_status(std::string_view s);

// A suggested reply for a dialog (seed 003 `processed_responses`).
struct Suggestion {
  SuggestionId id = 0;
  ConversationId conversation_id = 0;
  std::optional<UserId> user_id;  // the conversation's owner
  // The platform message it answers (the newest one the worker saw).
  std::string answers_message_id;
  Timestamp answers_message_at{};
  std::string suggested_text;
  std::optional<std::string> edited_text;  // set by approve(id, text)
  ReviewStatus status = ReviewStatus::pending_approval;
  // Approved by a sender's claim in an auto-send dialog, not by the user.
  bool auto_approved = false;
  std::optional<std::string> reason;  // why it was rejected or superseded
  std::optional<std::string> error;   // the last send failure (mark_failed)
  // Claims so far. The newest claim's token is this number: mark_sent and
  // mark_failed must present it.
  std::int64_t attempts = 0;
  std::optional<std::string> claimed_by;      // the last sender that claimed it
  std::optional<Timestamp> claim_expires_at;  // set while a claim is held
  Timestamp created_at{};
  Timestamp updated_at{};
  std::optional<Timestamp> decided_at;  // approved or rejected
  std::optional<Timestamp> sent_at;

  // What to send: the edited text if any, else the suggested one.
  const std::string& text() const noexcept { return edited_text ? *edited_text : suggested_text; }
  // The token of the newest claim (see attempts).
  std::int64_t claim() const noexcept { return attempts; }
};

// Input of ReviewQueue::suggest.
struct NewSuggestion {
  std::string answers_message_id;  // 1..200 characters, no control characters
  Timestamp answers_message_at{};
  std::string text;  // 1 .. 65,536 bytes of UTF-8, not only white space
};

// Which pending suggestions ReviewQueue::pending returns, oldest first.
struct PendingQuery {
  std::size_t limit = 50;  // 1 .. 1000
  std::string cursor;      // next_cursor of the previous page
};

// The review queue of suggested replies (seed 003 `processed_responses`),
// reached as store.reviews().
//
// Invalidation: a suggestion waiting for approval is superseded when
//  - suggest() stores a newer one for the dialog (approved and failed ones
//    are replaced too: the newest reply wins, as in seed 003);
//  - invalidate() reports a newer platform message (seed 003 stores no
//    messages: the worker sees one on the platform);
//  - a message with role user is stored in the conversation through
//    ConversationStore::append / append_batch, other than the one it
//    answers (same platform message id): in the same transaction, by a
//    trigger, so any SQL insert counts too. Assistant, system and tool
//    messages do not invalidate. Approved suggestions stay: the user
//    decided to send them. The trigger knows the order in which messages
//    are stored, not their platform times: store the messages a suggestion
//    answers before suggest(), or storing them supersedes it.
//
// Auto-send dialogs: their pending suggestions need no approval.
// ready_to_send() lists them with the approved ones, and claim_to_send()
// claims them, recording them approved (auto_approved, decided at the
// claim). Until a sender claims one, the user may still approve, edit or
// reject it.
//
// Sending: claim_to_send(sender, n, lease) claims up to n ready
// suggestions for `sender` until the lease expires; two senders never claim
// the same one (SKIP LOCKED on PostgreSQL, one writer at a time on SQLite).
// The sender delivers s.text() and records the outcome with the claim's
// token: mark_sent / mark_failed. A sender that crashed leaves its claim to
// expire; the suggestion is then claimed again with a new token, and an
// outcome recorded with the old token is Error(conflict) (a stale claim). A
// late outcome whose claim expired but was not taken over is still
// recorded. suggest() refuses with Error(conflict) while the open
// suggestion is claimed and its outcome not recorded, even past its lease
// (the sender may still be delivering it; a crashed sender's reply is
// claimed again by the next sender): suggest again once it is sent or
// failed.
//
// Thread safety: safe to use from many threads and processes at once.
// Errors: throws convstore::Error. A lookup that finds nothing returns
// std::nullopt. An unknown suggestion, or a conversation without a dialog,
// is Error(not_found); a move the state machine does not allow, or a stale
// claim, is Error(conflict); bad input (empty or oversized text, a bad
// lease, limit or sender) is Error(invalid_argument). A call that throws has
// written nothing.
class CONVSTORE_EXPORT ReviewQueue {
 public:
  // Stores a suggested reply for the dialog of `conversation`, pending
  // approval, superseding the dialog's open suggestion in the same
  // transaction. Throws Error(not_found) when the conversation has no
  // dialog; Error(conflict) when the open suggestion is claimed by a live
  // lease, or answers a message newer than this one (a stale worker).
  Suggestion suggest(ConversationId conversation, const NewSuggestion& suggestion);

  std::optional<Suggestion> get(SuggestionId id);
  // The dialog's open suggestion (pending approval, approved or failed).
  std::optional<Suggestion> current(ConversationId conversation);
  // The dialog's suggestions, newest first, at most `limit` (1..1000).
  std::vector<Suggestion> history(ConversationId conversation, std::size_t limit = 50);
  // `user`'s suggestions pending approval, oldest first, a page at a time
  // (those of auto-send dialogs included). A malformed cursor is
  // Error(invalid_argument).
  Page<Suggestion> pending(UserId user, const PendingQuery& query = {});

  // pending_approval -> approved; with `edited_text` (the same rules as a
  // suggestion's text) the edit is what will be sent.
  Suggestion approve(SuggestionId id, const std::optional<std::string>& edited_text = std::nullopt);
  // pending_approval -> rejected, with an optional reason (at most 4,096
  // bytes).
  Suggestion reject(SuggestionId id, const std::optional<std::string>& reason = std::nullopt);
  // failed -> approved: it can be claimed again.
  Suggestion retry(SuggestionId id);

  // Supersedes the dialog's pending suggestion because the platform has a
  // newer message (`newer_message_id` at `newer_message_at`): unless the
  // suggestion answers that very message, or one newer than
  // `newer_message_at`. Returns whether one was superseded. Throws
  // Error(not_found) when the conversation has no dialog.
  bool invalidate(ConversationId conversation, std::string_view newer_message_id,
                  Timestamp newer_message_at);

  // What a sender may claim now, oldest first, at most `limit` (1..1000):
  // approved suggestions without a live claim, and pending ones of
  // auto-send dialogs.
  std::vector<Suggestion> ready_to_send(std::size_t limit = 100);
  // Claims up to `max` (1..1000) of ready_to_send() for `sender` (an id of
  // 1..200 characters) for `lease` (1 ms .. 1 day); each returned
  // suggestion is approved, claimed_by `sender`, with claim() its token.
  std::vector<Suggestion> claim_to_send(std::string_view sender, std::size_t max,
                                        std::chrono::milliseconds lease);
  // approved (claimed with `claim`) -> sent.
  Suggestion mark_sent(SuggestionId id, std::int64_t claim);
  // approved (claimed with `claim`) -> failed, with the error (1..4,096
  // bytes).
  Suggestion mark_failed(SuggestionId id, std::int64_t claim, std::string_view error);

  // Deletes the final suggestions (rejected, sent, superseded) last changed
  // before `older_than`; returns how many.
  std::int64_t purge(Timestamp older_than);

 private:
  friend class Store;
  explicit ReviewQueue(Store::Impl* impl) : impl_(impl) {}
  Store::Impl* impl_;
};

// JSON forms (timestamps as ISO 8601 strings; a suggestion includes its text()).
CONVSTORE_EXPORT Json to_json(const Dialog& d);
CONVSTORE_EXPORT Json to_json(const Suggestion& s);

}  // namespace convstore
