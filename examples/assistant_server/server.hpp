// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#pragma once

// The assistant server: the HTTP routes of the API (see the README section
// "Example: the assistant server") over a convstore Store, with replies from
// a pluggable Responder.

#include <convstore/convstore.hpp>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "responder.hpp"

namespace assistant_server {

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
  // Serves until stop(). Returns false when the server could not run.
  bool run();
  // Stops run() (from any thread): no new connection is accepted, requests
  // in progress finish.
  void stop();

  class Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace assistant_server
