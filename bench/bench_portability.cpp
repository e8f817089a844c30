// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
//
// Export / import / copy throughput and the peak resident memory of export
// and import (issue 7):
//   export  N messages (default 1,000,000) of a SQLite store to JSON Lines
//   import  that file into an empty SQLite store
//   copy    M messages (default 200,000) from SQLite into PostgreSQL, verified
// Each measured phase runs in a child process of its own (this program with
// --phase), which reports its time and its peak RSS (VmHWM) after the phase,
// so that seeding and the other phases do not count.
//
//   convstore_bench_portability [--dir DIR] [--messages N] [--copy-messages M]
//                               [--pg URL] [--no-copy]
#include <libpq-fe.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <convstore/convstore.hpp>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "harness.hpp"

using namespace convstore;
using bench::Clock;

namespace {

long peak_rss_kb() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::strtol(line.c_str() + 6, nullptr, 10);
  }
  return -1;
}

// CPU seconds of this process so far (user + system): the machine is
// shared, so wall time is also printed against it.
double cpu_seconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

void remove_db(const std::string& path) {
  for (const char* suffix : {"", "-wal", "-shm"}) std::filesystem::remove(path + suffix);
}

// N messages in conversations of 1,000, written in batches.
void seed(const std::string& url, long long n) {
  auto s = Store::open(url);
  auto& cs = s.conversations();
  long long done = 0;
  int conv = 0;
  while (done < n) {
    NewConversation nc;
    nc.channel = "bench";
    nc.title = "conversation " + std::to_string(conv++);
    auto c = cs.start(nc);
    std::vector<NewMessage> batch;
    for (int i = 0; i < 1000 && done < n; ++i, ++done) {
      NewMessage m;
      m.role = i % 2 == 0 ? Role::user : Role::assistant;
      m.content = bench::message_content(static_cast<int>(done));
      m.token_count = 42;
      m.metadata = Json::parse(bench::kMetadata);
      batch.push_back(std::move(m));
    }
    cs.append_batch(c.id, batch);
  }
}

int run_child(const std::string& self, const std::vector<std::string>& args) {
  std::string cmd = self;
  for (const auto& a : args) cmd += " '" + a + "'";
  int rc = std::system(cmd.c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : 1;
}

void pg_admin(const std::string& pg, const std::string& sql) {
  PGconn* c = PQconnectdb(pg.c_str());
  PQsetNoticeProcessor(
      c, [](void*, const char*) {}, nullptr);
  PQclear(PQexec(c, sql.c_str()));
  PQfinish(c);
}

// ---- phases (child processes) ----

int phase_export(const std::string& db, const std::string& file, long long n) {
  auto s = Store::open("sqlite:" + db);
  std::ofstream out(file, std::ios::binary);
  auto t0 = Clock::now();
  double c0 = cpu_seconds();
  auto r = export_jsonl(s, out);
  out.close();
  double secs = bench::seconds_since(t0), cpu = cpu_seconds() - c0;
  std::printf(
      "export  %lld messages (%lld records, %.0f MB file): %.1f s wall, %.0f messages/s; "
      "%.1f s CPU, %.0f messages/CPU-s; peak RSS %.1f MB\n",
      n, static_cast<long long>(r.rows),
      static_cast<double>(std::filesystem::file_size(file)) / 1e6, secs,
      static_cast<double>(n) / secs, cpu, static_cast<double>(n) / cpu,
      static_cast<double>(peak_rss_kb()) / 1024.0);
  return 0;
}

int phase_import(const std::string& db, const std::string& file, long long n) {
  remove_db(db);
  auto s = Store::open("sqlite:" + db);
  std::ifstream in(file, std::ios::binary);
  auto t0 = Clock::now();
  double c0 = cpu_seconds();
  auto r = import_jsonl(s, in);
  double secs = bench::seconds_since(t0), cpu = cpu_seconds() - c0;
  std::printf(
      "import  %lld messages (%lld records): %.1f s wall, %.0f messages/s; %.1f s CPU, "
      "%.0f messages/CPU-s; peak RSS %.1f MB\n",
      n, static_cast<long long>(r.inserted), secs, static_cast<double>(n) / secs, cpu,
      static_cast<double>(n) / cpu, static_cast<double>(peak_rss_kb()) / 1024.0);
  return r.inserted > 0 ? 0 : 1;
}

int phase_copy(const std::string& db, const std::string& pg_url, long long n) {
  auto from = Store::open("sqlite:" + db);
  auto to = Store::open(pg_url);
  auto t0 = Clock::now();
  double c0 = cpu_seconds();
  auto r = copy_store(from, to);
  double secs = bench::seconds_since(t0), cpu = cpu_seconds() - c0;
  std::printf(
      "copy    %lld messages SQLite -> PostgreSQL (%lld records, verified: %s): %.1f s, "
      "%.0f messages/s (verification included); %.1f s CPU here; peak RSS %.1f MB\n",
      n, static_cast<long long>(r.inserted), r.verification.match ? "yes" : "no", secs,
      static_cast<double>(n) / secs, cpu, static_cast<double>(peak_rss_kb()) / 1024.0);
  return r.verification.match ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir = std::filesystem::temp_directory_path().string();
  long long messages = 1000000, copy_messages = 200000;
  std::string pg;
  if (const char* e = std::getenv("CONVSTORE_TEST_PG_URL")) pg = e;
  bool copy = true;
  std::string phase, db, file;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
    if (a == "--dir") {
      dir = next();
    } else if (a == "--messages") {
      messages = std::atoll(next().c_str());
    } else if (a == "--copy-messages") {
      copy_messages = std::atoll(next().c_str());
    } else if (a == "--pg") {
      pg = next();
    } else if (a == "--no-copy") {
      copy = false;
    } else if (a == "--phase") {
      phase = next();
    } else if (a == "--db") {
      db = next();
    } else if (a == "--file") {
      file = next();
    } else {
      std::cerr << "usage: convstore_bench_portability [--dir DIR] [--messages N] "
                   "[--copy-messages M] [--pg URL] [--no-copy]\n";
      return 2;
    }
  }
  try {
    if (phase == "seed") {
      seed("sqlite:" + db, messages);
      return 0;
    }
    if (phase == "export") return phase_export(db, file, messages);
    if (phase == "import") return phase_import(db, file, messages);
    if (phase == "copy") return phase_copy(db, file, copy_messages);

    std::string self = std::filesystem::canonical("/proc/self/exe").string();
    std::string src = dir + "/portability_source.db";
    std::string dst = dir + "/portability_imported.db";
    std::string jsonl = dir + "/portability.jsonl";
    remove_db(src);
    std::printf("seeding %lld messages ...\n", messages);
    std::fflush(stdout);
    seed("sqlite:" + src, messages);
    std::string n = std::to_string(messages);
    int rc = run_child(self, {"--phase", "export", "--db", src, "--file", jsonl, "--messages", n});
    if (rc == 0) {
      rc = run_child(self, {"--phase", "import", "--db", dst, "--file", jsonl, "--messages", n});
    }
    std::filesystem::remove(jsonl);
    remove_db(src);
    remove_db(dst);
    if (rc != 0) return rc;
    if (!copy) return 0;
    if (pg.empty()) {
      std::printf("copy: skipped (no --pg URL and no CONVSTORE_TEST_PG_URL)\n");
      return 0;
    }
    std::string schema = "bench_portability_copy";
    pg_admin(pg, "DROP SCHEMA IF EXISTS " + schema + " CASCADE");
    pg_admin(pg, "CREATE SCHEMA " + schema);
    std::string url =
        pg + (pg.find('?') == std::string::npos ? "?" : "&") + "options=-csearch_path%3D" + schema;
    std::printf("seeding %lld messages ...\n", copy_messages);
    std::fflush(stdout);
    seed("sqlite:" + src, copy_messages);
    rc = run_child(
        self, {"--phase", "copy", "--db", src, "--file", url, "--messages",
               std::to_string(copy_messages), "--copy-messages", std::to_string(copy_messages)});
    remove_db(src);
    pg_admin(pg, "DROP SCHEMA IF EXISTS " + schema + " CASCADE");
    return rc;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
}
