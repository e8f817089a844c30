// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
//
// convstore_fault_worker: the child process of the crash and disk-full
// tests (tests/faults/test_crash.cpp, test_disk_full.cpp). It writes through
// the public API and acknowledges every call that returned with one line on
// stdout, written with one write(2) as soon as the call returns, so that the
// test, which kills it with SIGKILL at any moment, knows what was
// acknowledged. Usage:
//
//   append <url> <conversation> <first>      appends messages first, first+1, ...
//                                            ("<id> <i>" per message) forever
//   state <url> <scope> <agent>              saves versions of an agent state
//                                            ("<version>" per save) forever
//   tasks <url> <worker> <lease_ms> [drain]  claims and completes tasks
//                                            ("claimed <id> <lease>", "done <id>");
//                                            with drain, exits once none is left
//   fill <url> <conversation> <first> <bytes> <pre_bytes> <margin>
//        appends <pre_bytes> of messages of <bytes> each, then limits the size
//        of the files it writes (RLIMIT_FSIZE, SIGXFSZ ignored) to the size of
//        the database files + <margin> and appends until a call fails
//        ("ok <id> <i>" per message, "error <code> <message>"), reads, fails
//        a second write, lifts the limit ("space freed") and appends again.
//   fill-dir <url> <conversation> <first> <bytes>
//        the same without a limit: for a small file system, full for real;
//        after the error it waits for a line on stdin ("space freed") first.
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <convstore/convstore.hpp>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <random>
#include <string>
#include <thread>

#include "faults/fault_content.hpp"

namespace {

// One line to stdout in one write(2): complete in the file or not there.
void say(const std::string& line) {
  std::string s = line + "\n";
  const char* p = s.data();
  std::size_t left = s.size();
  while (left > 0) {
    ssize_t n = ::write(1, p, left);
    if (n <= 0) std::_Exit(3);
    p += n;
    left -= static_cast<std::size_t>(n);
  }
}

long long file_size(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? static_cast<long long>(st.st_size) : 0;
}

convstore::NewMessage message(long long i, std::size_t bytes) {
  convstore::NewMessage m;
  m.content = bytes == 0 ? faults::message_content(i) : faults::sized_content(i, bytes);
  return m;
}

int append(const std::string& url, convstore::ConversationId conversation, long long first) {
  auto store = convstore::Store::open(url);
  for (long long i = first;; ++i) {
    auto m = store.conversations().append(conversation, message(i, 0));
    say(std::to_string(m.id) + " " + std::to_string(i));
  }
}

int state(const std::string& url, const std::string& scope, const std::string& agent) {
  auto store = convstore::Store::open(url);
  auto& agents = store.agents();
  auto current = agents.get_state(convstore::StateScope::named(scope), agent);
  std::int64_t v = current ? current->version : 0;
  for (;;) {
    auto saved = agents.save_state(convstore::StateScope::named(scope), agent,
                                   faults::state_content(v + 1), v);
    v = saved.version;
    say(std::to_string(v));
  }
}

int tasks(const std::string& url, const std::string& worker, long long lease_ms, bool drain) {
  auto store = convstore::Store::open(url);
  auto& q = store.tasks();
  std::mt19937 rng(static_cast<unsigned>(getpid()));
  convstore::ClaimOptions options;
  options.lease = std::chrono::milliseconds(lease_ms);
  for (;;) {
    auto claimed = q.claim(worker, options);
    if (claimed.empty()) {
      if (drain) {
        auto c = q.counts();
        if (c.pending == 0 && c.processing == 0) return 0;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      continue;
    }
    const auto& t = claimed.front();
    say("claimed " + std::to_string(t.id) + " " + std::to_string(t.lease));
    // The work: a short while, during which a kill leaves the task claimed.
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 3000));
    try {
      q.complete(t, convstore::Json{{"by", worker}, {"lease", t.lease}});
      say("done " + std::to_string(t.id));
    } catch (const convstore::Error& e) {
      // The lease expired and another worker took the task (a stall on a
      // loaded machine): fencing refused this completion.
      if (e.code() != convstore::ErrorCode::conflict) throw;
      say("lost " + std::to_string(t.id));
    }
  }
}

void limit_file_size(rlim_t soft) {
  struct rlimit r {};
  r.rlim_cur = soft;
  r.rlim_max = RLIM_INFINITY;
  if (setrlimit(RLIMIT_FSIZE, &r) != 0) {
    std::perror("setrlimit");
    std::_Exit(4);
  }
}

std::string error_line(const char* tag, const convstore::Error& e) {
  std::string msg = e.what();
  for (char& c : msg) {
    if (c == '\n') c = ' ';
  }
  return std::string(tag) + " " + std::string(convstore::to_string(e.code())) + " " + msg + " [" +
         e.sqlstate() + "]";
}

// Appends messages of `bytes` until a call fails; returns the next index.
long long append_until_error(convstore::Store& store, convstore::ConversationId conversation,
                             long long i, std::size_t bytes, long long max_messages) {
  for (long long n = 0; n < max_messages; ++n, ++i) {
    try {
      auto m = store.conversations().append(conversation, message(i, bytes));
      say("ok " + std::to_string(m.id) + " " + std::to_string(i));
    } catch (const convstore::Error& e) {
      say(error_line("error", e));
      return i + 1;
    }
  }
  say("never-full");
  return i;
}

// After the error: reads work, a second write fails the same way.
long long while_full(convstore::Store& store, convstore::ConversationId conversation, long long i,
                     std::size_t bytes) {
  try {
    auto recent = store.conversations().recent(conversation, 5);
    auto c = store.conversations().get(conversation);
    say("read " + std::to_string(recent.size()) + " " + std::to_string(c ? c->message_count : -1));
  } catch (const convstore::Error& e) {
    say(error_line("read-error", e));
  }
  try {
    auto m = store.conversations().append(conversation, message(i, bytes));
    say("ok " + std::to_string(m.id) + " " + std::to_string(i));
  } catch (const convstore::Error& e) {
    say(error_line("error2", e));
  }
  return i + 1;
}

// Space is back: a few writes on the same store.
void after_space_freed(convstore::Store& store, convstore::ConversationId conversation, long long i,
                       std::size_t bytes) {
  for (int n = 0; n < 3; ++n, ++i) {
    try {
      auto m = store.conversations().append(conversation, message(i, bytes));
      say("ok " + std::to_string(m.id) + " " + std::to_string(i));
    } catch (const convstore::Error& e) {
      say(error_line("after-error", e));
    }
  }
  say("finished");
}

int fill(const std::string& url, const std::string& path, convstore::ConversationId conversation,
         long long first, std::size_t bytes, long long pre_bytes, long long margin) {
  signal(SIGXFSZ, SIG_IGN);
  auto store = convstore::Store::open(url);
  long long i = first;
  for (long long written = 0; written < pre_bytes; written += static_cast<long long>(bytes), ++i) {
    auto m = store.conversations().append(conversation, message(i, bytes));
    say("ok " + std::to_string(m.id) + " " + std::to_string(i));
  }
  long long biggest = std::max(file_size(path), file_size(path + "-wal"));
  limit_file_size(static_cast<rlim_t>(biggest + margin));
  say("limit " + std::to_string(biggest + margin) + " (database " +
      std::to_string(file_size(path)) + ", WAL " + std::to_string(file_size(path + "-wal")) + ")");
  i = append_until_error(store, conversation, i, bytes, 100000);
  say("files: database " + std::to_string(file_size(path)) + ", WAL " +
      std::to_string(file_size(path + "-wal")));
  i = while_full(store, conversation, i, bytes);
  limit_file_size(RLIM_INFINITY);
  say("space-freed");
  after_space_freed(store, conversation, i, bytes);
  return 0;
}

int fill_dir(const std::string& url, convstore::ConversationId conversation, long long first,
             std::size_t bytes) {
  auto store = convstore::Store::open(url);
  long long i = append_until_error(store, conversation, first, bytes, 1000000);
  i = while_full(store, conversation, i, bytes);
  say("waiting");
  std::string line;
  std::getline(std::cin, line);
  say("space-freed");
  after_space_freed(store, conversation, i, bytes);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string mode = argc > 1 ? argv[1] : "";
  try {
    if (mode == "append" && argc == 5) {
      return append(argv[2], std::stoll(argv[3]), std::stoll(argv[4]));
    }
    if (mode == "state" && argc == 5) return state(argv[2], argv[3], argv[4]);
    if (mode == "tasks" && (argc == 5 || argc == 6)) {
      return tasks(argv[2], argv[3], std::stoll(argv[4]), argc == 6);
    }
    if (mode == "fill" && argc == 8) {
      std::string url = argv[2];
      return fill(url, url.substr(7), std::stoll(argv[3]), std::stoll(argv[4]),
                  static_cast<std::size_t>(std::stoll(argv[5])), std::stoll(argv[6]),
                  std::stoll(argv[7]));
    }
    if (mode == "fill-dir" && argc == 6) {
      return fill_dir(argv[2], std::stoll(argv[3]), std::stoll(argv[4]),
                      static_cast<std::size_t>(std::stoll(argv[5])));
    }
  } catch (const convstore::Error& e) {
    say(error_line("fatal", e));
    std::cerr << "convstore_fault_worker: " << e.what() << "\n";
    return 1;
  }
  std::cerr << "usage: convstore_fault_worker append|state|tasks|fill|fill-dir ...\n";
  return 2;
}
