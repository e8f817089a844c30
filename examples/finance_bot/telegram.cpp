// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#include "telegram.hpp"

#include <httplib.h>

#include <iostream>
#include <utility>

namespace finance_bot {

using convstore::Json;

std::string mask_secret(std::string text, const std::string& secret) {
  if (secret.empty()) return text;
  std::size_t at = 0;
  while ((at = text.find(secret, at)) != std::string::npos) {
    text.replace(at, secret.size(), "***");
    at += 3;
  }
  return text;
}

TelegramApi::TelegramApi(const std::string& base_url, std::string token)
    : token_(std::move(token)) {
  if (token_.empty()) throw std::invalid_argument("the bot token is empty");
  const auto scheme_end = base_url.find("://");
  if (scheme_end == std::string::npos || (base_url.compare(0, scheme_end, "http") != 0 &&
                                          base_url.compare(0, scheme_end, "https") != 0)) {
    throw std::invalid_argument("the Bot API base URL must start with http:// or https:// (got '" +
                                mask_secret(base_url, token_) + "')");
  }
  const auto path = base_url.find('/', scheme_end + 3);
  std::string host = base_url.substr(0, path);
  if (path != std::string::npos) {
    prefix_ = base_url.substr(path);
    while (!prefix_.empty() && prefix_.back() == '/') prefix_.pop_back();
  }
  client_ = std::make_unique<httplib::Client>(host);
  client_->set_connection_timeout(std::chrono::seconds(10));
  client_->set_write_timeout(std::chrono::seconds(10));
  // A connection per call: a long poll every `timeout` seconds and replies at
  // a human pace do not need keep-alive, and a stale kept-alive socket would
  // turn into a failed call.
  client_->set_keep_alive(false);
}

TelegramApi::~TelegramApi() = default;

Json TelegramApi::call(const std::string& method, const Json& body,
                       std::chrono::seconds read_timeout) {
  client_->set_read_timeout(read_timeout);
  // The token is in the path only: nothing below prints the path.
  auto res =
      client_->Post(prefix_ + "/bot" + token_ + "/" + method, body.dump(), "application/json");
  if (!res) {
    throw TelegramError(method + " failed: " + httplib::to_string(res.error()), false);
  }
  Json answer = Json::parse(res->body, nullptr, false);
  if (answer.is_discarded() || !answer.is_object()) {
    throw TelegramError(
        method + " failed: HTTP " + std::to_string(res->status) + " with a body that is not JSON",
        res->status >= 400 && res->status < 500 && res->status != 429);
  }
  if (res->status == 200 && answer.value("ok", false)) return answer.value("result", Json());
  std::optional<std::chrono::seconds> retry_after;
  if (answer.contains("parameters") && answer["parameters"].is_object() &&
      answer["parameters"].contains("retry_after") &&
      answer["parameters"]["retry_after"].is_number_integer()) {
    retry_after = std::chrono::seconds(answer["parameters"]["retry_after"].get<std::int64_t>());
  }
  const std::string description =
      answer.contains("description") && answer["description"].is_string()
          ? answer["description"].get<std::string>()
          : std::string("no description");
  const bool permanent = res->status >= 400 && res->status < 500 && res->status != 429;
  throw TelegramError(
      mask_secret(method + " failed: HTTP " + std::to_string(res->status) + ": " + description,
                  token_),
      permanent, retry_after);
}

std::vector<Json> TelegramApi::get_updates(std::int64_t offset, std::chrono::seconds timeout) {
  Json body{{"offset", offset},
            {"timeout", timeout.count()},
            {"allowed_updates", Json::array({"message"})}};
  Json result = call("getUpdates", body, timeout + std::chrono::seconds(10));
  if (!result.is_array()) throw TelegramError("getUpdates returned no array", false);
  return std::vector<Json>(result.begin(), result.end());
}

std::int64_t TelegramApi::send_message(const std::string& chat_id, const std::string& text,
                                       std::optional<std::int64_t> reply_to) {
  Json body{{"chat_id", chat_id}, {"text", text}};
  if (reply_to) {
    body["reply_to_message_id"] = *reply_to;
    body["allow_sending_without_reply"] = true;
  }
  Json result = call("sendMessage", body, std::chrono::seconds(30));
  if (!result.is_object() || !result.contains("message_id") ||
      !result["message_id"].is_number_integer()) {
    throw TelegramError("sendMessage returned no message_id", false);
  }
  return result["message_id"].get<std::int64_t>();
}

std::optional<std::int64_t> TelegramMessenger::send(const Reply& reply,
                                                    const IncomingMessage& /*cause*/) {
  try {
    return api_.send_message(reply.chat_id, reply.text, reply.reply_to);
  } catch (const TelegramError& e) {
    if (e.permanent()) {  // refused for good: stored without an id, not retried
      std::cerr << "finance_bot: " << e.what() << " (chat " << reply.chat_id << ")\n";
      return std::nullopt;
    }
    throw;
  }
}

}  // namespace finance_bot
