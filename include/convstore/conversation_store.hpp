// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "convstore/export.hpp"
#include "convstore/store.hpp"
#include "convstore/types.hpp"

namespace convstore {

// Users across channels, their conversations and messages, the data an agent
// has collected (snapshots) and the questions it asked.
//
// Thread safety: safe to use from many threads at once; returned values are
// copies the caller owns.
// Errors: throws convstore::Error. A lookup that finds nothing returns
// std::nullopt; deleting what is not there returns false. An operation that
// needs an object that is missing throws Error(not_found) naming it. A call
// that throws has written nothing, except when the connection is lost during
// the commit: then Error(unavailable) says that the outcome is unknown (a
// message appended with a client_key can be appended again safely).
class CONVSTORE_EXPORT ConversationStore {
 public:
  // ---- Users and channels -------------------------------------------------

  // Inserts the user (channel, external_id) or updates the fields given;
  // returns it as stored. An empty string leaves an optional field empty.
  // Safe against concurrent upserts of the same user.
  User upsert_user(const UserUpsert& user);
  std::optional<User> get_user(UserId id);
  std::optional<User> find_user(std::string_view channel, std::string_view external_id);
  // Applies `update`; throws Error(not_found) for an unknown id.
  User update_user(UserId id, const UserUpdate& update);

  // Sets the default model and settings of a channel (insert or replace).
  ChannelConfig set_channel_config(std::string_view channel, std::string_view default_model,
                                   const Json& settings = Json::object());
  std::optional<ChannelConfig> channel_config(std::string_view channel);

  // ---- Conversations ------------------------------------------------------

  // Starts an active conversation. Throws Error(already_exists) if `key` is
  // taken, Error(not_found) if `user_id` is unknown.
  Conversation start(const NewConversation& conversation);
  std::optional<Conversation> get(ConversationId id);
  std::optional<Conversation> find(std::string_view key);
  // The conversation with this key, started from `init` (with the key set)
  // if there is none. Safe when many threads or processes race on one key:
  // exactly one conversation is created.
  Conversation get_or_create(std::string_view key, const NewConversation& init = {});
  // Applies `update` and bumps the version; returns the result.
  Conversation update(ConversationId id, const ConversationUpdate& update);
  // Conversations matching `filter`, most recently updated first. A
  // malformed cursor throws Error(invalid_argument).
  Page<Conversation> list(const ConversationFilter& filter);

  // Moves the status. Allowed: active -> completed / abandoned / archived,
  // completed / abandoned -> archived, abandoned -> active (reopen). Any
  // other move throws Error(conflict) naming both states.
  Conversation set_status(ConversationId id, ConversationStatus status);
  // In one transaction: stores `final_data` as the complete snapshot (unless
  // null), sets the external reference (unless empty) and marks the
  // conversation completed (seed 000 mark_conversation_complete +
  // store_final_operation_data).
  Conversation complete(ConversationId id, std::string_view external_ref,
                        const Json& final_data = nullptr);
  // Deletes the conversation with its messages, snapshots and questions.
  bool remove(ConversationId id);

  // ---- Messages -----------------------------------------------------------

  // Appends `message` and returns it as stored. In the same transaction the
  // conversation's message count, version and last-message time move.
  // Throws Error(not_found) for an unknown conversation, Error(conflict) when
  // options.expected_version is stale, Error(invalid_argument) for text that
  // is not UTF-8 or holds NUL. With a client_key already stored, returns the
  // stored message and writes nothing.
  Message append(ConversationId id, const NewMessage& message, const AppendOptions& options = {});
  // Appends all of `messages` in one transaction, in order; all or nothing.
  std::vector<Message> append_batch(ConversationId id, const std::vector<NewMessage>& messages);
  std::optional<Message> get_message(MessageId id);
  // A page of the conversation's messages (see HistoryQuery). A `before` or
  // `after` id that is not a message of this conversation throws
  // Error(not_found).
  std::vector<Message> history(ConversationId id, const HistoryQuery& query = {});
  // The newest `n` messages (0 .. 10000), oldest first. Throws
  // Error(not_found) for an unknown conversation.
  std::vector<Message> recent(ConversationId id, std::size_t n);
  // Applies `update` to a stored message.
  Message update_message(MessageId id, const MessageUpdate& update);
  // Streaming: appends `delta` to the message's content in place (one
  // statement, no read-modify-write race); returns the message.
  Message append_content(MessageId id, std::string_view delta);
  // Marks a streamed message complete, optionally with its token count.
  Message finish_message(MessageId id, std::optional<std::int64_t> token_count = std::nullopt);
  // Deletes one message; the conversation's count follows.
  bool remove_message(MessageId id);

  // ---- Threading ----------------------------------------------------------

  // The message with this platform id in (channel, chat), with its
  // conversation (seed 000 find_conversation_by_reply: pass the id the user
  // replied to).
  std::optional<ThreadHit> find_by_platform_id(std::string_view channel, std::string_view chat_id,
                                               std::string_view platform_message_id);
  // The reply chain that ends at `id`: the message, the one it replied to,
  // and so on, oldest first (at most `max_depth` messages).
  std::vector<Message> reply_chain(MessageId id, std::size_t max_depth = 100);

  // ---- Data snapshots and questions (seed 000) ----------------------------

  DataSnapshot save_data(ConversationId id, DataKind kind, const Json& data);
  // The newest snapshot of this kind, or std::nullopt.
  std::optional<DataSnapshot> latest_data(ConversationId id, DataKind kind);
  // Every snapshot of this kind, oldest first.
  std::vector<DataSnapshot> data_history(ConversationId id, DataKind kind);

  Question ask(ConversationId id, const NewQuestion& question);
  // Marks the question answered (now). Throws Error(conflict) if it already
  // was, Error(not_found) if unknown.
  Question answer(QuestionId id, std::optional<std::string> answer = std::nullopt);
  // Questions not yet answered, oldest first.
  std::vector<Question> open_questions(ConversationId id);
  std::vector<Question> questions(ConversationId id);

  // ---- Context ------------------------------------------------------------

  // The conversation, newest partial data, missing fields, last `n`
  // (0 .. 10000) messages, questions and last bot platform message id, in a
  // fixed number of queries. Throws Error(not_found) for an unknown
  // conversation, Error(invalid_argument) for n over 10000.
  ConversationContext context(ConversationId id, std::size_t n = 50);

  // The newest messages of the conversation whose token counts fit
  // budget.max_tokens (see ContextBudget), returned oldest first. The window
  // is a run of the newest messages (never one with a gap), read newest
  // first a page at a time; it always holds the newest message, even when
  // that alone (with the kept system messages) is over the budget
  // (window.over_budget). Throws Error(not_found) for an unknown
  // conversation, Error(invalid_argument) for max_tokens <= 0, max_messages
  // 0, or a negative estimate.
  ContextWindow context_window(ConversationId id, const ContextBudget& budget);

  // ---- Search -------------------------------------------------------------

  // The messages whose content matches query.text (see SearchQuery), best
  // first (rank, then id), with the filters applied; one page. Pages are
  // joined by a keyset cursor on (rank, id): a message written or changed
  // between two pages may be missed or seen twice, nothing else. Throws
  // Error(invalid_argument) for text without a word, a limit outside
  // 1..1000, snippet_words outside 2..64, or a malformed cursor.
  Page<SearchHit> search(const SearchQuery& query);

 private:
  friend class Store;
  explicit ConversationStore(Store::Impl* impl) : impl_(impl) {}
  Store::Impl* impl_;
};

}  // namespace convstore
