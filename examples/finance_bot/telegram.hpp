// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#pragma once

// A small Telegram Bot API client on cpp-httplib: long polling getUpdates
// and sendMessage. The token is part of every request path
// (/bot<token>/method) and never appears in an error message or a log line.

#include <chrono>
#include <convstore/convstore.hpp>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "bot.hpp"

namespace httplib {
class Client;
}

namespace finance_bot {

// A failed Bot API call. `permanent` when retrying the same call cannot help
// (a 4xx answer other than 429); `retry_after` when Telegram said how long to
// wait (429).
class TelegramError : public std::runtime_error {
 public:
  TelegramError(const std::string& what, bool permanent,
                std::optional<std::chrono::seconds> retry_after = std::nullopt)
      : std::runtime_error(what), permanent_(permanent), retry_after_(retry_after) {}
  bool permanent() const noexcept { return permanent_; }
  std::optional<std::chrono::seconds> retry_after() const noexcept { return retry_after_; }

 private:
  bool permanent_;
  std::optional<std::chrono::seconds> retry_after_;
};

// `text` with every occurrence of `secret` replaced by "***".
std::string mask_secret(std::string text, const std::string& secret);

class TelegramApi {
 public:
  // `base_url`: "https://api.telegram.org" or e.g. "http://127.0.0.1:8081"
  // (a path after the host is kept as a prefix). Throws std::invalid_argument
  // for a URL that is not http(s) or an empty token.
  TelegramApi(const std::string& base_url, std::string token);
  ~TelegramApi();
  TelegramApi(const TelegramApi&) = delete;
  TelegramApi& operator=(const TelegramApi&) = delete;

  // getUpdates with this offset, waiting up to `timeout` for one: the raw
  // Update objects. Throws TelegramError.
  std::vector<convstore::Json> get_updates(std::int64_t offset, std::chrono::seconds timeout);
  // sendMessage; returns the sent message's id. Throws TelegramError.
  std::int64_t send_message(const std::string& chat_id, const std::string& text,
                            std::optional<std::int64_t> reply_to);

 private:
  convstore::Json call(const std::string& method, const convstore::Json& body,
                       std::chrono::seconds read_timeout);

  std::unique_ptr<httplib::Client> client_;
  std::string prefix_;
  std::string token_;
};

// Sends the bot's replies through the Bot API (with reply_to_message_id and
// allow_sending_without_reply, so that a deleted question does not block).
class TelegramMessenger : public Messenger {
 public:
  explicit TelegramMessenger(TelegramApi& api) : api_(api) {}
  std::optional<std::int64_t> send(const Reply& reply, const IncomingMessage& cause) override;

 private:
  TelegramApi& api_;
};

}  // namespace finance_bot
