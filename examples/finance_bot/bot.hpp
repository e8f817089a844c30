// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#pragma once

// The finance bot's conversation manager: every Telegram update goes through
// Bot::handle, which routes the message (a reply to one of the bot's
// questions, the answer to the one open question of the chat, or a new
// operation), keeps everything in a convstore Store and sends the replies
// through a Messenger. All state is in the store: a new Bot on the same
// database carries on where the last one stopped.

#include <chrono>
#include <convstore/convstore.hpp>
#include <cstdint>
#include <functional>
#include <iosfwd>
#include <optional>
#include <string>
#include <vector>

namespace finance_bot {

using convstore::Json;

// The part of a Telegram message the bot uses.
struct IncomingMessage {
  std::int64_t message_id = 0;
  std::string chat_id;
  std::string user_id;
  std::optional<std::string> username;
  std::optional<std::string> display_name;
  std::string text;
  std::optional<std::int64_t> reply_to;  // reply_to_message.message_id
  std::int64_t date = 0;                 // Unix time
};

// One Bot API Update. Updates without a text message (edits, photos, ...)
// have no `message`: they are skipped (but their id is consumed).
struct Update {
  std::int64_t update_id = 0;
  std::optional<IncomingMessage> message;
};

// Reads a Bot API Update object. Throws std::invalid_argument naming what is
// wrong.
Update update_from_json(const Json& j);

// Reads Bot API updates from `in`: JSON Lines (one Update per line, read
// line by line so that a pipe is processed as it arrives), a JSON array of
// Updates, or a getUpdates response {"ok": true, "result": [...]}. Calls
// `each` with every update object. Throws std::invalid_argument for input
// that is none of these (naming the line).
void read_updates(std::istream& in, const std::function<void(const Json&)>& each);

// A message the bot sends.
struct Reply {
  std::string chat_id;
  std::string text;
  std::optional<std::int64_t> reply_to;
};

// Where replies go (Telegram, or stdout in offline mode).
class Messenger {
 public:
  virtual ~Messenger() = default;
  // Sends `reply` (caused by the user message `cause`) and returns the
  // platform message id of what was sent, or std::nullopt when the platform
  // refused it for good (it is stored without an id). Throws when it could
  // not be sent now (the update is processed again later).
  virtual std::optional<std::int64_t> send(const Reply& reply, const IncomingMessage& cause) = 0;
};

// The spreadsheet the operations go to: a CSV file with a header line,
// standing in for Google Sheets. Row numbers count data rows from 1.
class CsvSheet {
 public:
  explicit CsvSheet(std::string path);
  // Appends the operation of `conversation` (unless that conversation's row
  // is already there: then its row number is returned and nothing written)
  // and returns the row number. The file is flushed and fsynced.
  std::int64_t append(const Json& op, convstore::ConversationId conversation,
                      const IncomingMessage& from);
  // The data rows, each as its fields (header excluded).
  std::vector<std::vector<std::string>> rows() const;
  const std::string& path() const { return path_; }

  static const std::vector<std::string>& header();

 private:
  std::string path_;
};

struct BotOptions {
  std::string channel = "telegram";
  std::string agent = "finance_bot";
};

class Bot {
 public:
  Bot(convstore::Store& store, CsvSheet& sheet, Messenger& messenger, BotOptions options = {});

  // The next update id to ask Telegram for (the getUpdates offset): one past
  // the last update whose processing was committed; 0 before any.
  std::int64_t next_offset();

  enum class Outcome {
    processed,  // handled and committed
    duplicate,  // its message was already handled: only the offset moved
    skipped,    // before the stored offset, or no text message
  };
  // Handles one update. The store's writes for it (messages, snapshots,
  // questions, completion, the new offset) commit in one transaction after
  // the reply was sent: a crash before that commit processes the update again
  // on restart (the reply may be sent twice, the sheet row is not written
  // twice); after it, the update is never processed again.
  Outcome handle(const Update& update);

  // Abandons the bot's active conversations idle for longer than `idle`
  // (store.retention().run with abandon_idle_after).
  convstore::RetentionReport abandon_idle(std::chrono::milliseconds idle,
                                          std::optional<convstore::Timestamp> now = std::nullopt);

  // Agent names recorded as the conversation's active agent, by type.
  static std::string agent_for(const std::string& type);

 private:
  // The conversation that message `m` starts, of `kind` (created once: it is
  // keyed by the message).
  convstore::Conversation conversation_of(const IncomingMessage& m, convstore::UserId user,
                                          const std::string& kind);
  void new_operation(const Update& update, const IncomingMessage& m, convstore::UserId user);
  void continue_operation(const Update& update, const IncomingMessage& m,
                          const convstore::Conversation& conversation);
  void cancel(const Update& update, const IncomingMessage& m, convstore::UserId user);
  void plain_reply(const Update& update, const IncomingMessage& m, convstore::UserId user,
                   const std::string& text);
  // The user's 20 newest active conversations in the chat of `m`.
  std::vector<convstore::Conversation> active_in_chat(const IncomingMessage& m,
                                                      convstore::UserId user);
  // True when `text` is a complete operation by itself ("taxi 450 card"),
  // with what the user taught the bot.
  bool complete_by_itself(const std::string& text, convstore::UserId user);
  // Whether /cancel ended `c` (metadata "cancelled": true).
  static bool cancelled(const convstore::Conversation& c);
  std::optional<convstore::Conversation> waiting_conversation(const IncomingMessage& m,
                                                              convstore::UserId user);
  convstore::NewMessage user_message(const IncomingMessage& m) const;
  convstore::NewMessage bot_message(const Reply& reply, std::optional<std::int64_t> sent) const;
  void save_offset(std::int64_t update_id);
  // The user's operation template for this description (seed 000's
  // operation_templates: what a completed operation taught the bot).
  std::optional<convstore::OperationTemplate> learned(convstore::UserId user, const Json& op);
  // An expense without a category takes the one the user gave the same
  // description before. True when it did.
  bool apply_learned(Json& op, std::optional<convstore::UserId> user);
  // Records a completed operation as the user's template (or one more use).
  void remember(std::optional<convstore::UserId> user, const Json& op, const std::string& sample);

  convstore::Store& store_;
  CsvSheet& sheet_;
  Messenger& messenger_;
  BotOptions options_;
};

}  // namespace finance_bot
