// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
//
// assistant_server: an HTTP server for an AI assistant (seeds 004, 001, 003)
// on convstore: agents, conversations with streamed replies, calendar
// events, a review queue for replies that wait for approval.
//
//   assistant_server [--db URL] [--listen HOST:PORT] [--redis URL] ...
//
// Prints "listening on http://HOST:PORT" as its first line on stdout once it
// accepts connections; stops cleanly on SIGTERM or SIGINT.
#include <pthread.h>
#include <signal.h>
#include <unistd.h>
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <convstore/convstore.hpp>
#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "responder.hpp"
#include "server.hpp"

namespace {

struct Address {
  std::string host;
  int port = 0;
};

Address parse_listen(const std::string& text) {
  const auto colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == text.size()) {
    throw CLI::ValidationError("--listen", "expected HOST:PORT, not '" + text + "'");
  }
  Address a;
  a.host = text.substr(0, colon);
  try {
    std::size_t used = 0;
    const int port = std::stoi(text.substr(colon + 1), &used);
    if (used != text.size() - colon - 1 || port < 0 || port > 65535) throw std::out_of_range("");
    a.port = port;
  } catch (const std::exception&) {
    throw CLI::ValidationError("--listen", "bad port in '" + text + "'");
  }
  return a;
}

// Seconds given on the command line, as milliseconds (at least 1).
std::chrono::milliseconds seconds_option(double seconds) {
  return std::chrono::milliseconds(std::max<std::int64_t>(1, std::llround(seconds * 1000.0)));
}

// Prints the message (or the help) as CLI11 does; a mistake on the command
// line exits 2, --help 0.
int usage_error(const CLI::App& app, const CLI::Error& e) {
  const int code = app.exit(e);
  return code == 0 ? 0 : 2;
}

}  // namespace

int main(int argc, char** argv) {
  // SIGTERM and SIGINT are taken by one thread (sigwait), so they are blocked
  // here, before any other thread exists, and every thread inherits that.
  // SIGUSR1 wakes that thread when the server stops on its own.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  CLI::App app{"assistant_server: an HTTP assistant server on convstore", "assistant_server"};
  std::string db;
  std::string listen = "127.0.0.1:8080";
  std::string redis;
  std::string cache_prefix = "assistant_server:";
  std::size_t max_body = std::size_t{1} << 20;
  std::size_t threads = 8;
  std::size_t pool = 0;
  std::string now_text;
  bool access_log = false;
  std::int64_t rate_limit = 0;
  double delivery_interval = 5;
  double delivery_lease = 60;
  app.add_option("--db", db, "database URL (default: $CONVSTORE_URL, else sqlite:assistant.db)");
  app.add_option("--listen", listen, "HOST:PORT to listen on; port 0 picks a free one")
      ->capture_default_str();
  app.add_option("--redis", redis,
                 "Redis URL: conversation contexts cached there, shared by every server "
                 "process on the same database");
  app.add_option("--cache-prefix", cache_prefix, "key prefix in Redis")->capture_default_str();
  app.add_option("--max-body", max_body, "largest request body accepted, in bytes")
      ->check(CLI::Range(std::size_t{1}, std::size_t{1} << 30))
      ->capture_default_str();
  app.add_option("--threads", threads, "worker threads (one per open connection)")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  app.add_option("--pool", pool, "database connections (default: max(4, threads))")
      ->check(CLI::Range(0, 1024));
  app.add_option("--now", now_text,
                 "a fixed time (RFC 3339) the assistant takes for now, e.g. for \"tomorrow\" "
                 "(tests, demos)");
  app.add_option("--rate-limit", rate_limit,
                 "messages a user may send per minute (0: no limit); counted in Redis with "
                 "--redis (shared by every process), else in this process")
      ->check(CLI::Range(std::int64_t{0}, std::int64_t{1000000000}));
  app.add_option("--delivery-interval", delivery_interval,
                 "seconds between the background deliveries of approved replies (those not "
                 "delivered yet: approved elsewhere, or whose delivery failed retryably)")
      ->check(CLI::Range(0.001, 86400.0))
      ->capture_default_str();
  app.add_option("--delivery-lease", delivery_lease,
                 "seconds a delivery holds its claim on a reply; one that failed retryably is "
                 "tried again once it has expired")
      ->check(CLI::Range(0.001, 86400.0))
      ->capture_default_str();
  app.add_flag("--access-log", access_log, "print one line per request on stderr");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return usage_error(app, e);
  }

  try {
    Address address;
    try {
      address = parse_listen(listen);
    } catch (const CLI::ParseError& e) {
      return usage_error(app, e);
    }
    if (db.empty()) {
      const char* env = std::getenv("CONVSTORE_URL");
      db = env != nullptr && *env != '\0' ? env : "sqlite:assistant.db";
    }
    assistant_server::Clock clock;
    if (!now_text.empty()) {
      const convstore::Timestamp fixed = convstore::parse_timestamp(now_text);
      clock = [fixed] { return fixed; };
    }

    assistant_server::ServerOptions options;
    options.max_body = max_body;
    options.threads = threads;
    options.access_log = access_log;
    options.sender = "assistant_server:" + std::to_string(getpid());
    options.messages_per_minute = rate_limit;
    options.delivery_interval = seconds_option(delivery_interval);
    options.delivery_lease = seconds_option(delivery_lease);

    convstore::Options store_options;
    store_options.pool_size = pool != 0 ? pool : std::max<std::size_t>(4, threads);
    convstore::Store store = convstore::Store::open(db, store_options);

    std::optional<convstore::SessionCache> cache;
    if (!redis.empty()) {
      convstore::CacheOptions cache_options;
      cache_options.key_prefix = cache_prefix;
      cache_options.context_size = options.context_messages;
      cache_options.on_failure = [](const convstore::CacheFailure& f) {
        std::cerr << "assistant_server: cache " << f.operation << " failed: " << f.message
                  << (f.fell_back ? " (answered from the database)" : "") << "\n";
      };
      cache.emplace(convstore::SessionCache::redis(redis, cache_options));
      cache->attach(store);
    }

    // The rate limiter: Redis when there is one, else this process's memory.
    std::optional<convstore::SessionCache> local_limiter;
    convstore::SessionCache* limiter = cache ? &*cache : nullptr;
    if (rate_limit > 0 && limiter == nullptr) {
      local_limiter.emplace(convstore::SessionCache::in_memory());
      limiter = &*local_limiter;
    }

    assistant_server::AssistantServer server(store, cache ? &*cache : nullptr,
                                             std::make_shared<assistant_server::BuiltinResponder>(),
                                             clock, options, limiter);
    const int port = server.bind(address.host, address.port);
    std::cout << "listening on http://" << address.host << ":" << port << std::endl;
    std::cerr << "assistant_server: " << store.backend()
              << " database, cache: " << (cache ? "redis" : "none") << ", " << threads
              << " threads\n";

    std::thread stopper([&] {
      int sig = 0;
      sigwait(&stop_signals, &sig);
      if (sig != SIGUSR1) std::cerr << "assistant_server: " << strsignal(sig) << ", stopping\n";
      server.stop();
    });
    const bool ok = server.run();
    pthread_kill(stopper.native_handle(), SIGUSR1);
    stopper.join();
    std::cerr << "assistant_server: stopped\n";
    return ok ? 0 : 1;
  } catch (const std::exception& e) {
    std::cerr << "assistant_server: error: " << e.what() << "\n";
    return 1;
  }
}
