// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#include <atomic>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include "support.hpp"

using namespace convstore;

namespace {

// The counters of `action`, or all zeros when it was not called.
OperationStats stats_of(const Store& store, const std::string& action) {
  for (auto& s : store.operation_stats()) {
    if (s.action == action) return s;
  }
  OperationStats none;
  none.action = action;
  return none;
}

std::uint64_t histogram_total(const OperationStats& s) {
  return std::accumulate(s.latency.begin(), s.latency.end(), std::uint64_t{0});
}

}  // namespace

TEST_CASE("OperationStats: percentiles from the histogram") {
  OperationStats s;
  CHECK(latency_percentile_us(s, 0.5) == 0.0);
  s.latency[3] = 10;  // [4, 8) us
  CHECK(latency_percentile_us(s, 0.5) == doctest::Approx(6.0));
  CHECK(latency_percentile_us(s, 0.99) == doctest::Approx(8.0));
  s.latency[0] = 90;  // under 1 us
  CHECK(latency_percentile_us(s, 0.5) == doctest::Approx(50.0 / 90.0));
  CHECK(latency_percentile_us(s, 0.95) == doctest::Approx(6.0));
  OperationStats slow;
  slow.latency[OperationStats::latency_buckets - 1] = 1;  // 2^24 us or more
  CHECK(latency_percentile_us(slow, 0.5) == doctest::Approx(16777216.0));
  CHECK(OperationStats::bucket_upper_us(0) == 1);
  CHECK(OperationStats::bucket_upper_us(10) == 1024);
}

TEST_CASE_TEMPLATE("Store::operation_stats counts calls, errors and conflicts", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  Store store = db.open();
  auto& cs = store.conversations();
  auto conv = cs.start(NewConversation{});
  store.reset_operation_stats();
  CHECK(store.operation_stats().empty());

  SUBCASE("counts move by exactly the calls made") {
    for (int i = 0; i < 3; ++i) cs.append(conv.id, testing::text("m" + std::to_string(i)));
    for (int i = 0; i < 2; ++i) REQUIRE(cs.get(conv.id));
    auto append = stats_of(store, "append message");
    CHECK(append.calls == 3);
    CHECK(append.errors == 0);
    CHECK(histogram_total(append) == 3);
    CHECK(append.p50_us > 0.0);
    CHECK(append.p99_us >= append.p50_us);
    auto get = stats_of(store, "get conversation");
    CHECK(get.calls == 2);
    CHECK(histogram_total(get) == 2);
    // Nothing else was called.
    std::uint64_t total = 0;
    for (const auto& s : store.operation_stats()) total += s.calls;
    CHECK(total == 5);
    auto list = store.operation_stats();
    for (std::size_t i = 1; i < list.size(); ++i) CHECK(list[i - 1].action < list[i].action);
  }
  SUBCASE("a conflict is an error and a conflict; not_found only an error") {
    ConversationUpdate up;
    up.title = "t";
    up.expected_version = conv.version + 100;
    CHECK_ERROR_CODE(cs.update(conv.id, up), ErrorCode::conflict);
    AppendOptions stale;
    stale.expected_version = conv.version + 100;
    CHECK_ERROR_CODE(cs.append(conv.id, testing::text("x"), stale), ErrorCode::conflict);
    CHECK_ERROR_CODE(store.templates().record_use(987654), ErrorCode::not_found);
    auto update = stats_of(store, "update conversation");
    CHECK(update.calls == 1);
    CHECK(update.errors == 1);
    CHECK(update.conflicts == 1);
    // The append's conflict is counted as the append's, whatever it read
    // to explain itself.
    auto append = stats_of(store, "append message");
    CHECK(append.calls == 1);
    CHECK(append.errors == 1);
    CHECK(append.conflicts == 1);
    CHECK(stats_of(store, "get conversation").calls == 0);
    auto use = stats_of(store, "record operation template use");
    CHECK(use.calls == 1);
    CHECK(use.errors == 1);
    CHECK(use.conflicts == 0);
    // Input refused before the database is not a call.
    CHECK_ERROR_CODE(store.templates().list(""), ErrorCode::invalid_argument);
    CHECK(stats_of(store, "list operation templates").calls == 0);
  }
  SUBCASE("a transaction counts once, and the calls inside it too") {
    store.transaction([&] {
      cs.append(conv.id, testing::text("a"));
      cs.append(conv.id, testing::text("b"));
    });
    CHECK_THROWS(store.transaction([&] {
      cs.append(conv.id, testing::text("c"));
      throw std::runtime_error("undo");
    }));
    auto tx = stats_of(store, "transaction");
    CHECK(tx.calls == 2);
    CHECK(tx.errors == 1);
    CHECK(stats_of(store, "append message").calls == 3);
  }
  SUBCASE("reset sets everything back to zero") {
    cs.append(conv.id, testing::text("a"));
    CHECK(stats_of(store, "append message").calls == 1);
    store.reset_operation_stats();
    CHECK(store.operation_stats().empty());
    CHECK(stats_of(store, "append message").calls == 0);
    cs.append(conv.id, testing::text("b"));
    CHECK(stats_of(store, "append message").calls == 1);
  }
}

TEST_CASE_TEMPLATE("Store::operation_stats loses nothing under concurrent calls", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  Store store = db.open();
  auto conv = store.conversations().start(NewConversation{});
  store.reset_operation_stats();
  constexpr int kThreads = 4, kCalls = 250;
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kCalls; ++i) {
        try {
          if (!store.conversations().get(conv.id)) ++failures;
          // A miss: a call all the same.
          if (store.conversations().get(conv.id + 1000000)) ++failures;
        } catch (...) {
          ++failures;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK(failures.load() == 0);
  auto get = stats_of(store, "get conversation");
  CHECK(get.calls == 2u * kThreads * kCalls);
  CHECK(histogram_total(get) == get.calls);
  CHECK(get.errors == 0);
}
