// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
//
// Writers of one process sharing one Store: N threads append messages (one
// commit each) to conversations of their own as fast as they can for a
// fixed time. Reports throughput, the latency of one append (p50, p99,
// max) and how many calls failed. On SQLite every writer needs the one
// write lock, so this shows how fairly a Store hands it over.
//
//   convstore_bench_writers [--pg URL] [--no-sqlite] [--seconds S] [--threads 1,4,8,16]

#include <convstore/convstore.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

struct Result {
  double per_second = 0;
  double p50_us = 0, p99_us = 0, max_us = 0;
  long failures = 0;
};

double percentile(std::vector<double>& v, double p) {
  if (v.empty()) return 0;
  std::size_t k = static_cast<std::size_t>(p * static_cast<double>(v.size() - 1));
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
  return v[k];
}

Result run(const std::string& url, int threads, double seconds) {
  convstore::Options options;
  options.pool_size = static_cast<std::size_t>(threads);
  auto store = convstore::Store::open(url, options);
  auto& cs = store.conversations();
  std::vector<convstore::ConversationId> ids;
  for (int t = 0; t < threads; ++t) {
    auto user = cs.upsert_user({"bench", "writer-" + std::to_string(t)});
    convstore::NewConversation c;
    c.user_id = user.id;
    ids.push_back(cs.start(c).id);
  }
  std::vector<std::vector<double>> latencies(static_cast<std::size_t>(threads));
  std::atomic<long> failures{0};
  std::atomic<bool> go{false};
  auto deadline = Clock::now() + std::chrono::duration<double>(seconds + 0.2);
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      while (!go.load()) std::this_thread::yield();
      convstore::NewMessage m;
      m.content = "a message of a writer thread, about sixty bytes long......";
      auto& mine = latencies[static_cast<std::size_t>(t)];
      while (Clock::now() < deadline) {
        auto t0 = Clock::now();
        try {
          cs.append(ids[static_cast<std::size_t>(t)], m);
          mine.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
        } catch (const convstore::Error&) {
          ++failures;
        }
      }
    });
  }
  auto start = Clock::now();
  go = true;
  for (auto& w : workers) w.join();
  double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  std::vector<double> all;
  for (auto& v : latencies) all.insert(all.end(), v.begin(), v.end());
  Result r;
  r.per_second = static_cast<double>(all.size()) / elapsed;
  r.max_us = all.empty() ? 0 : *std::max_element(all.begin(), all.end());
  r.p50_us = percentile(all, 0.50);
  r.p99_us = percentile(all, 0.99);
  r.failures = failures.load();
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  std::string pg;
  if (const char* env = std::getenv("CONVSTORE_TEST_PG_URL")) pg = env;
  bool sqlite = true;
  double seconds = 3;
  std::vector<int> thread_counts{1, 4, 8, 16};
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--pg" && i + 1 < argc) {
      pg = argv[++i];
    } else if (a == "--no-sqlite") {
      sqlite = false;
    } else if (a == "--seconds" && i + 1 < argc) {
      seconds = std::atof(argv[++i]);
    } else if (a == "--threads" && i + 1 < argc) {
      thread_counts.clear();
      std::stringstream list(argv[++i]);
      for (std::string n; std::getline(list, n, ',');) thread_counts.push_back(std::stoi(n));
    } else {
      std::cerr << "usage: convstore_bench_writers [--pg URL] [--no-sqlite] [--seconds S] "
                   "[--threads 1,4,8,16]\n";
      return 2;
    }
  }
  std::printf("%-11s %7s %12s %10s %10s %10s %9s\n", "backend", "threads", "appends/s", "p50 us",
              "p99 us", "max us", "failed");
  auto dir = std::filesystem::temp_directory_path() / "convstore_bench_writers";
  for (int threads : thread_counts) {
    if (sqlite) {
      std::filesystem::remove_all(dir);
      std::filesystem::create_directories(dir);
      Result r = run("sqlite:" + (dir / "w.db").string(), threads, seconds);
      std::printf("%-11s %7d %12.0f %10.0f %10.0f %10.0f %9ld\n", "sqlite", threads, r.per_second,
                  r.p50_us, r.p99_us, r.max_us, r.failures);
    }
    if (!pg.empty()) {
      Result r = run(pg, threads, seconds);
      std::printf("%-11s %7d %12.0f %10.0f %10.0f %10.0f %9ld\n", "postgresql", threads,
                  r.per_second, r.p50_us, r.p99_us, r.max_us, r.failures);
    }
  }
  std::filesystem::remove_all(dir);
  return 0;
}
