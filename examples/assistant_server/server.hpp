// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#pragma once

// The assistant server: the HTTP routes of the API (see the README section
// "Example: the assistant server") over a convstore Store, with replies from
// a pluggable Responder.

#include <chrono>
#include <convstore/convstore.hpp>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "responder.hpp"

namespace assistant_server {

// Where an approved reply goes besides the conversation: the user's channel
// (seed 003 sends it through the Telegram API). The server calls send()
// before it stores the reply as the assistant's message and marks it sent,
// so a reply is sent at least once: after a failure or a crash between the
// two it is sent again. send() throws convstore::Error: a retryable one
// (unavailable, aborted; a timeout is unavailable) leaves the reply approved
// and it is sent again later; any other error marks it failed for good.
// Called from the server's threads, several at once.
class ReplySender {
 public:
  virtual ~ReplySender() = default;
  virtual void send(const convstore::Conversation& conversation,
                    const convstore::Suggestion& reply) = 0;
};

struct ServerOptions {
  // Request bodies larger than this are refused with 413 (before they are
  // read when the request declares its length).
  std::size_t max_body = std::size_t{1} << 20;
  // Worker threads; each serves one connection at a time (keep-alive
  // connections hold theirs while open).
  std::size_t threads = 8;
  // How many recent messages a responder is given (at most 1000; with a
  // cache, at most its context_size).
  std::size_t context_messages = 20;
  // One line per request on stderr.
  bool access_log = false;
  // The name this process claims approved replies under (ReviewQueue
  // senders).
  std::string sender = "assistant_server";
  // Messages a user may send per minute (sliding window), counted in the
  // limiter cache (shared by every process on Redis); 0: no limit. Over the
  // limit: 429 with Retry-After.
  std::int64_t messages_per_minute = 0;
  // Approved replies are delivered when approved, when run() starts and
  // then every delivery_interval by a background thread (at least 1 ms),
  // which takes any approved reply not yet delivered: those of other
  // processes, those approved while no server ran, those whose delivery
  // failed retryably.
  std::chrono::milliseconds delivery_interval{std::chrono::seconds(5)};
  // How long a delivery's claim is held (1 ms .. 1 day). A reply whose
  // delivery failed retryably, or whose sender crashed, is claimed again
  // once the lease has expired; it must exceed the time one delivery takes.
  std::chrono::milliseconds delivery_lease{std::chrono::seconds(60)};
  // The outbound channel; null: an approved reply is delivered by storing
  // it as the conversation's assistant message (what web clients read).
  std::shared_ptr<ReplySender> reply_sender;
};

class AssistantServer {
 public:
  // `cache` (may be null) serves conversation contexts; it must be attached
  // to `store` (SessionCache::attach) so that appends invalidate them. The
  // store, the cache and the responder must outlive the server.
  // `limiter` (may be null) counts options.messages_per_minute.
  AssistantServer(convstore::Store& store, convstore::SessionCache* cache,
                  std::shared_ptr<Responder> responder, Clock clock, ServerOptions options,
                  convstore::SessionCache* limiter = nullptr);
  ~AssistantServer();
  AssistantServer(const AssistantServer&) = delete;
  AssistantServer& operator=(const AssistantServer&) = delete;

  // Binds the listening socket; port 0 picks a free one. Returns the port.
  // Throws std::runtime_error when the address cannot be bound.
  int bind(const std::string& host, int port);
  // Serves until stop(), delivering approved replies in the background
  // meanwhile (ServerOptions::delivery_interval). Returns false when the
  // server could not run.
  bool run();
  // Stops run() (from any thread): no new connection is accepted, requests
  // in progress finish, the background delivery stops after the reply it
  // is delivering.
  void stop();

  class Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace assistant_server
