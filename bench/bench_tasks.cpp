// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
//
// The TaskQueue, for information (no raw baseline): on each backend, with 1
// and 4 worker threads sharing one Store,
//   cycle    each worker enqueues a task, claims one and completes it, N
//            times in all: tasks per second (three commits each), claim
//            latency p50 / p99
//   backlog  5,000 tasks already queued (three priorities); the workers
//            claim one at a time and complete it until the queue is empty:
//            tasks per second (two commits each), claim latency p50 / p99
//
//   convstore_bench_tasks [--pg URL] [--no-sqlite] [--dir DIR] [--n N]
//                         [--backlog N] [--quick]
// The PostgreSQL URL defaults to $CONVSTORE_TEST_PG_URL; each run uses a
// schema of its own, dropped at the end.
#include <libpq-fe.h>

#include <atomic>
#include <convstore/convstore.hpp>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "harness.hpp"

using namespace convstore;
using bench::Clock;

namespace {

struct Target {
  std::string url;
  std::string schema;  // PostgreSQL
};

void pg_admin(const std::string& pg, const std::string& sql) {
  PGconn* c = PQconnectdb(pg.c_str());
  PQsetNoticeProcessor(
      c, [](void*, const char*) {}, nullptr);
  PQclear(PQexec(c, sql.c_str()));
  PQfinish(c);
}

Target fresh(bool sqlite, const std::string& dir, const std::string& pg, const std::string& name) {
  if (sqlite) {
    auto path = std::filesystem::path(dir) / (name + ".db");
    for (const char* suffix : {"", "-wal", "-shm"}) std::filesystem::remove(path.string() + suffix);
    return {"sqlite:" + path.string(), ""};
  }
  std::string schema = "bench_tasks_" + name;
  pg_admin(pg, "DROP SCHEMA IF EXISTS " + schema + " CASCADE");
  pg_admin(pg, "CREATE SCHEMA " + schema);
  return {
      pg + (pg.find('?') == std::string::npos ? "?" : "&") + "options=-csearch_path%3D" + schema,
      schema};
}

struct Result {
  double tasks_per_s = 0;
  double claim_p50 = 0;
  double claim_p99 = 0;
};

NewTask new_task(int i) {
  NewTask n("dialog", {{"dialog_id", i}, {"chat", "telegram"}, {"reason", "new messages"}});
  n.priority = static_cast<TaskPriority>(i % 3);
  return n;
}

// Runs `workers` threads of `body(worker name, samples)` and returns the
// elapsed seconds and the merged claim latencies.
template <class F>
double run_workers(int workers, bench::Samples& claims, F body) {
  std::mutex mu;
  std::vector<std::thread> threads;
  std::atomic<bool> failed{false};
  auto t0 = Clock::now();
  for (int w = 0; w < workers; ++w) {
    threads.emplace_back([&, w] {
      bench::Samples mine;
      try {
        body("worker-" + std::to_string(w), mine);
      } catch (const std::exception& e) {
        std::cerr << "worker " << w << ": " << e.what() << "\n";
        failed = true;
      }
      std::lock_guard lock(mu);
      claims.us.insert(claims.us.end(), mine.us.begin(), mine.us.end());
    });
  }
  for (auto& t : threads) t.join();
  double s = bench::seconds_since(t0);
  if (failed) throw std::runtime_error("a worker failed");
  return s;
}

Options pool_for(int workers) {
  Options o;
  o.pool_size = static_cast<std::size_t>(workers) + 1;
  return o;
}

// Enqueue, claim one, complete it; `n` times in all across the workers.
Result cycle(const Target& t, int workers, int n) {
  auto store = Store::open(t.url, pool_for(workers));
  auto& q = store.tasks();
  ClaimOptions one;
  bench::Samples claims;
  std::atomic<int> next{0};
  double s = run_workers(workers, claims, [&](const std::string& name, bench::Samples& mine) {
    for (int i = next++; i < n; i = next++) {
      q.enqueue(new_task(i));
      auto t0 = Clock::now();
      auto got = q.claim(name, one);
      mine.add(t0);
      // Another worker may have taken this one's task: complete what came.
      for (const auto& task : got) q.complete(task, {{"ok", true}});
    }
  });
  // Tasks another worker's claim left behind (none, or a few).
  for (;;) {
    auto got = q.claim("sweeper", ClaimOptions{100, std::chrono::seconds(30), {}});
    if (got.empty()) break;
    for (const auto& task : got) q.complete(task);
  }
  if (q.counts().completed != n) throw std::runtime_error("cycle: not every task was completed");
  return {n / s, claims.percentile(50), claims.percentile(99)};
}

// A queue of `n` tasks emptied by claim(1) + complete.
Result backlog(const Target& t, int workers, int n) {
  auto store = Store::open(t.url, pool_for(workers));
  auto& q = store.tasks();
  std::vector<NewTask> batch;
  for (int i = 0; i < n; ++i) {
    batch.push_back(new_task(i));
    if (batch.size() == 500 || i == n - 1) {
      q.enqueue_many(batch);
      batch.clear();
    }
  }
  ClaimOptions one;
  bench::Samples claims;
  double s = run_workers(workers, claims, [&](const std::string& name, bench::Samples& mine) {
    for (;;) {
      auto t0 = Clock::now();
      auto got = q.claim(name, one);
      mine.add(t0);
      if (got.empty()) return;
      q.complete(got[0], {{"ok", true}});
    }
  });
  if (q.counts().completed != n) throw std::runtime_error("backlog: not every task was completed");
  return {n / s, claims.percentile(50), claims.percentile(99)};
}

void print(const char* backend, const char* workload, int workers, const Result& r) {
  std::printf("%-11s %-34s %7d %12.0f %12.1f %12.1f\n", backend, workload, workers, r.tasks_per_s,
              r.claim_p50, r.claim_p99);
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  std::string pg, dir = std::filesystem::temp_directory_path() / "convstore_bench";
  bool run_sqlite = true;
  int n = 2000, backlog_n = 5000;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--pg" && i + 1 < argc) {
      pg = argv[++i];
    } else if (a == "--dir" && i + 1 < argc) {
      dir = argv[++i];
    } else if (a == "--no-sqlite") {
      run_sqlite = false;
    } else if (a == "--n" && i + 1 < argc) {
      n = std::max(1, std::atoi(argv[++i]));
    } else if (a == "--backlog" && i + 1 < argc) {
      backlog_n = std::max(1, std::atoi(argv[++i]));
    } else if (a == "--quick") {
      n = 200;
      backlog_n = 500;
    } else {
      std::cerr << "usage: convstore_bench_tasks [--pg URL] [--no-sqlite] [--dir DIR] [--n N] "
                   "[--backlog N] [--quick]\n";
      return 2;
    }
  }
  if (pg.empty()) {
    if (const char* env = std::getenv("CONVSTORE_TEST_PG_URL")) pg = env;
  }
  std::filesystem::create_directories(dir);
  std::printf("%-11s %-34s %7s %12s %12s %12s\n", "backend", "workload", "workers", "tasks/s",
              "claim p50 us", "claim p99 us");
  std::vector<std::string> schemas;
  int status = 0;
  try {
    for (bool sqlite : {true, false}) {
      if (sqlite && !run_sqlite) continue;
      if (!sqlite && pg.empty()) {
        std::cout << "postgresql: skipped (no --pg URL and no CONVSTORE_TEST_PG_URL)\n";
        continue;
      }
      const char* backend = sqlite ? "sqlite" : "postgresql";
      for (int workers : {1, 4}) {
        const std::string suffix = std::to_string(workers);
        Target c = fresh(sqlite, dir, pg, "cycle" + suffix);
        if (!c.schema.empty()) schemas.push_back(c.schema);
        print(backend, "enqueue + claim + complete", workers, cycle(c, workers, n));
        Target b = fresh(sqlite, dir, pg, "backlog" + suffix);
        if (!b.schema.empty()) schemas.push_back(b.schema);
        print(backend, ("claim + complete, backlog " + std::to_string(backlog_n)).c_str(), workers,
              backlog(b, workers, backlog_n));
      }
    }
  } catch (const std::exception& e) {
    std::cerr << "convstore_bench_tasks: " << e.what() << "\n";
    status = 1;
  }
  for (const auto& s : schemas) pg_admin(pg, "DROP SCHEMA IF EXISTS " + s + " CASCADE");
  return status;
}
