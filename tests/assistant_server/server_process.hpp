// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#pragma once

// Runs the built assistant_server as a child process, as a user would, and
// talks to it over HTTP with httplib::Client. The binary is
// $CONVSTORE_ASSISTANT_SERVER, else the path CMake compiled in. Every wait
// has a deadline; a child that does not stop is killed.

#include <httplib.h>
#include <sys/types.h>

#include <chrono>
#include <convstore/convstore.hpp>
#include <csignal>
#include <string>
#include <vector>

namespace testing {

class ServerProcess {
 public:
  // Starts the server with `args` and "--listen 127.0.0.1:0", reads the
  // port from its first line on stdout and waits until /health answers
  // (20 s at most). Fails the test when it does not come up.
  explicit ServerProcess(std::vector<std::string> args);
  ~ServerProcess();
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  int port() const { return port_; }
  bool running() const { return pid_ > 0; }
  // Sends `signal` and waits (15 s at most, then SIGKILL) for the exit;
  // returns the exit status, or 128 + the signal that killed it.
  int stop(int signal = SIGTERM);
  // What the server printed on stderr so far.
  std::string log() const;

 private:
  pid_t pid_ = -1;
  int out_fd_ = -1;
  int port_ = 0;
  std::string err_file_;
};

// Runs the server with `args` until it exits (10 s at most, then it is
// killed); returns its exit status and what it printed on stderr in `err`.
int run_to_exit(const std::vector<std::string>& args, std::string& err);

// A response: its status, its body and, when it is JSON, the parsed body.
struct Reply {
  int status = 0;
  std::string text;
  std::string content_type;
  convstore::Json json;  // null unless the body is JSON
};

// A JSON client of one server (keep-alive, 10 s timeouts).
class Api {
 public:
  explicit Api(int port);
  Reply get(const std::string& path);
  Reply post(const std::string& path, const convstore::Json& body);
  Reply post_raw(const std::string& path, const std::string& body,
                 const std::string& content_type = "application/json");
  Reply patch(const std::string& path, const convstore::Json& body);
  Reply del(const std::string& path);
  httplib::Client& client() { return client_; }

 private:
  Reply wrap(httplib::Result r, const std::string& what);
  httplib::Client client_;
};

// Checks an error response: its status and {"error": {"category": ...,
// "message": ...}} with the category and a message that mentions `mentions`.
void check_error(const Reply& r, int status, const std::string& category,
                 const std::string& mentions = "");

// One server-sent event.
struct SseEvent {
  std::string event;
  convstore::Json data;
};
// Splits a text/event-stream body into its events (data parsed as JSON).
std::vector<SseEvent> parse_sse(const std::string& text);

// Sends `head` (a request's line and headers, ending with an empty line)
// and `body_start` on a fresh connection without sending the rest of the
// body, and returns what the server answered before the deadline.
std::string raw_exchange(int port, const std::string& head, const std::string& body_start,
                         std::chrono::milliseconds deadline);

}  // namespace testing
