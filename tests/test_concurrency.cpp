// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#include <unistd.h>

#include <atomic>
#include <set>
#include <thread>
#include <vector>

#include "support.hpp"

using namespace convstore;

TEST_CASE_TEMPLATE("8 threads appending to one conversation: each message once, count exact", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  Options o;
  o.pool_size = 8;
  auto store = db.open(o);
  auto& cs = store.conversations();
  auto c = cs.start({});
  constexpr int kThreads = 8, kEach = 40;
  std::vector<std::thread> threads;
  std::vector<std::vector<MessageId>> ids(kThreads);
  std::atomic<int> errors{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i) {
        NewMessage m;
        m.content = std::to_string(t) + ":" + std::to_string(i);
        try {
          ids[static_cast<std::size_t>(t)].push_back(cs.append(c.id, m).id);
        } catch (const Error& e) {
          ++errors;
          MESSAGE("append failed: " << e.what());
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  CHECK(errors.load() == 0);
  auto conv = cs.get(c.id);
  CHECK(conv->message_count == kThreads * kEach);
  CHECK(conv->version == kThreads * kEach);
  HistoryQuery all;
  all.limit = 10000;
  auto history = cs.history(c.id, all);
  REQUIRE(history.size() == static_cast<std::size_t>(kThreads * kEach));
  std::set<std::string> contents;
  for (auto& m : history) contents.insert(m.content);
  CHECK(contents.size() == history.size());
  // Each thread's own messages appear in the order it appended them.
  for (auto& mine : ids) {
    for (std::size_t i = 1; i < mine.size(); ++i) CHECK(mine[i] > mine[i - 1]);
  }
}

TEST_CASE_TEMPLATE("two processes appending to one database: nothing lost, no lock errors", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto c = store.conversations().start({});
  std::string args = "append '" + db.url() + "' " + std::to_string(c.id) + " 150 ";
  int a = testing::spawn_helper(args + "A");
  int b = testing::spawn_helper(args + "B");
  CHECK(testing::wait_helper(a) == 0);
  CHECK(testing::wait_helper(b) == 0);
  CHECK(store.conversations().get(c.id)->message_count == 300);
  HistoryQuery all;
  all.limit = 1000;
  CHECK(store.conversations().history(c.id, all).size() == 300);
}

TEST_CASE_TEMPLATE("concurrent batches into different conversations get the right ids", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  Options o;
  o.pool_size = 4;
  auto store = db.open(o);
  auto& cs = store.conversations();
  std::vector<ConversationId> convs;
  for (int t = 0; t < 4; ++t) convs.push_back(cs.start({}).id);
  std::vector<std::vector<Message>> results(4);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 5; ++round) {
        std::vector<NewMessage> batch;
        for (int i = 0; i < 70; ++i) {
          NewMessage m;
          m.content = std::to_string(t) + "/" + std::to_string(round) + "/" + std::to_string(i);
          batch.push_back(m);
        }
        auto stored = cs.append_batch(convs[static_cast<std::size_t>(t)], batch);
        auto& mine = results[static_cast<std::size_t>(t)];
        mine.insert(mine.end(), stored.begin(), stored.end());
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < 4; ++t) {
    const auto& mine = results[static_cast<std::size_t>(t)];
    REQUIRE(mine.size() == 350);
    for (const auto& m : mine) {
      auto got = cs.get_message(m.id);
      REQUIRE(got.has_value());
      CHECK(got->content == m.content);
      CHECK(got->conversation_id == convs[static_cast<std::size_t>(t)]);
    }
    CHECK(cs.get(convs[static_cast<std::size_t>(t)])->message_count == 350);
  }
}

TEST_CASE("postgresql: a store recovers when its pooled connections are killed") {
  testing::TestDb db("postgresql");
  if (!db.ready()) return;
  Options o;
  o.pool_size = 4;
  // Its own application name, so that only this store's sessions are ended
  // (other tests run in parallel on the same server).
  const std::string app = "convstore_restart_" + std::to_string(::getpid());
  auto store = Store::open(db.url() + "&application_name=" + app, o);
  auto& cs = store.conversations();
  auto c = cs.start({});
  // Open all four connections.
  std::vector<std::thread> warm;
  for (int i = 0; i < 4; ++i) {
    warm.emplace_back([&] {
      store.transaction([&] {
        cs.get(c.id);
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      });
    });
  }
  for (auto& t : warm) t.join();
  // The server ends every session of this store (as in a restart).
  CHECK(testing::raw_exec(db,
                          "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE "
                          "application_name = '" +
                              app + "'") == "4");
  // Reads are retried on a fresh connection; a write whose BEGIN met a dead
  // connection is retried too (nothing had been sent).
  CHECK(cs.get(c.id).has_value());
  NewMessage m;
  m.content = "after the restart";
  CHECK_NOTHROW(cs.append(c.id, m));
  CHECK_NOTHROW(store.transaction([&] { cs.append(c.id, m); }));
  CHECK(cs.get(c.id)->message_count == 2);
}

// SQLite has one write lock; SQLite's busy handler hands it to whichever
// waiter retries at the right moment, so a writer could lose for seconds
// while others kept committing. The writers of one Store take turns in
// arrival order instead: with 8 threads appending as fast as they can, none
// waits as long as the (short) busy timeout.
TEST_CASE("sqlite: writers of one Store take turns: none starves past the busy timeout") {
  testing::TestDb db("sqlite");
  Options o;
  o.pool_size = 8;
  o.busy_timeout = std::chrono::milliseconds(1000);
  auto store = db.open(o);
  auto& cs = store.conversations();
  constexpr int kThreads = 8, kEach = 60;
  std::vector<ConversationId> conversations;
  for (int t = 0; t < kThreads; ++t) conversations.push_back(cs.start({}).id);
  std::atomic<int> errors{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      NewMessage m;
      m.content = "turn " + std::to_string(t);
      for (int i = 0; i < kEach; ++i) {
        try {
          cs.append(conversations[static_cast<std::size_t>(t)], m);
        } catch (const Error& e) {
          if (errors++ == 0) MESSAGE("append failed: " << std::string(e.what()));
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  CHECK(errors.load() == 0);
  for (auto id : conversations) CHECK(cs.get(id)->message_count == kEach);
}

// A writer that waited its whole busy timeout behind a long transaction
// fails with unavailable, writes nothing, and gives up its place: the
// writer queued behind it gets its turn as soon as the transaction ends.
TEST_CASE("sqlite: a writer that waited out the busy timeout gives up its turn") {
  using std::chrono::milliseconds;
  testing::TestDb db("sqlite");
  Options o;
  o.pool_size = 4;
  o.busy_timeout = milliseconds(1000);
  auto store = db.open(o);
  auto& cs = store.conversations();
  auto c = cs.start({});
  std::atomic<bool> holding{false}, first_failed{false};
  std::thread holder([&] {
    store.transaction([&] {
      NewMessage m;
      m.content = "held";
      cs.append(c.id, m);
      holding = true;
      // Ends once the first writer behind it has given up.
      while (!first_failed) std::this_thread::sleep_for(milliseconds(2));
    });
  });
  while (!holding) std::this_thread::sleep_for(milliseconds(1));
  std::string first_error;
  ErrorCode first_code = ErrorCode::internal;
  std::thread first([&] {
    NewMessage late;
    late.content = "late";
    try {
      cs.append(c.id, late);
    } catch (const Error& e) {
      first_code = e.code();
      first_error = e.what();
    }
    first_failed = true;
  });
  // The second writer queues behind the first, half its timeout later: its
  // own timeout runs out 500 ms after the first one's.
  std::this_thread::sleep_for(milliseconds(500));
  NewMessage next;
  next.content = "next";
  std::string second_error;
  try {
    cs.append(c.id, next);
  } catch (const Error& e) {
    second_error = e.what();
  }
  first.join();
  holder.join();
  CHECK(first_code == ErrorCode::unavailable);
  CHECK(first_error.find("busy") != std::string::npos);
  CHECK(second_error.empty());
  auto history = cs.history(c.id);
  REQUIRE(history.size() == 2);
  CHECK(history[0].content == "held");
  CHECK(history[1].content == "next");
}
