// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
//
// A full disk under SQLite. The bounded tests need no mount: the worker
// process (convstore_fault_worker fill) limits the size of the files it may
// write (RLIMIT_FSIZE just above the database files' size, SIGXFSZ
// ignored), so that its writes fail with EFBIG the way they fail with
// ENOSPC on a full disk, then lifts the limit ("space freed"). In the long
// mode a small tmpfs is also filled for real, where mounting is allowed.
#include <sqlite3.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "faults/fault_content.hpp"
#include "faults/faults_support.hpp"
#include "support.hpp"

using namespace convstore;

namespace {

std::string worker_path() {
  return testing::program_path("CONVSTORE_FAULT_WORKER", CONVSTORE_FAULT_WORKER_PATH);
}

bool starts_with(const std::string& s, const std::string& prefix) {
  return s.compare(0, prefix.size(), prefix) == 0;
}

// Runs the worker to its end (bounded); returns its lines.
std::vector<std::string> run_worker(const testing::TempDir& dir,
                                    const std::vector<std::string>& args,
                                    const std::string& in = "/dev/null") {
  std::vector<std::string> argv{worker_path()};
  argv.insert(argv.end(), args.begin(), args.end());
  const std::string out = dir.file("fill.out");
  const std::string err = dir.file("fill.err");
  int pid = testing::spawn(argv, testing::environment(), in, out, err);
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  int status = 0;
  while (::waitpid(pid, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > until) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      FAIL("the worker did not finish: " << testing::read_file(out));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  INFO("worker output:\n" << testing::read_file(out) << testing::read_file(err));
  REQUIRE((WIFEXITED(status) && WEXITSTATUS(status) == 0));
  return faults::ack_lines(out);
}

// `PRAGMA integrity_check` of the SQLite file at `path` ("ok" when intact).
std::string integrity(const std::string& path) {
  sqlite3* h = nullptr;
  std::string out = "cannot open";
  if (sqlite3_open(path.c_str(), &h) == SQLITE_OK) {
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(h, "PRAGMA integrity_check", -1, &st, nullptr) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW) {
      out = reinterpret_cast<const char*>(sqlite3_column_text(st, 0));
    } else {
      out = sqlite3_errmsg(h);
    }
    sqlite3_finalize(st);
  }
  sqlite3_close(h);
  return out;
}

struct FillRun {
  std::map<MessageId, long long> acked;  // before and after the error
  std::vector<std::string> errors;       // "error ..." and "error2 ..." lines
  std::string read;                      // the "read ..." line
  std::size_t acked_before = 0;          // acknowledged before the first error
  int acked_after = 0;                   // acknowledged after space was freed
};

FillRun parse(const std::vector<std::string>& lines) {
  FillRun r;
  bool freed = false;
  for (const auto& line : lines) {
    if (starts_with(line, "ok ")) {
      auto sp = line.find(' ', 3);
      r.acked[std::stoll(line.substr(3, sp - 3))] = std::stoll(line.substr(sp + 1));
      if (freed) ++r.acked_after;
      if (r.errors.empty()) ++r.acked_before;
    } else if (starts_with(line, "error")) {
      r.errors.push_back(line);
    } else if (starts_with(line, "read")) {
      r.read = line;
    } else if (line == "space-freed") {
      freed = true;
    } else {
      CHECK_MESSAGE((starts_with(line, "limit ") || starts_with(line, "files: ") ||
                     line == "waiting" || line == "finished"),
                    "unexpected: " << line);
    }
  }
  return r;
}

// After the run: the error was clear, the database is intact, everything
// acknowledged is there, whole, and the store writes again.
void check_after_fill(const std::string& url, ConversationId conversation, const FillRun& run,
                      std::size_t bytes) {
  // The first write over the limit failed; the second may fit in what the
  // first one left, or fail the same way.
  REQUIRE_MESSAGE(!run.errors.empty(), "the writes never failed");
  CHECK(starts_with(run.errors.front(), "error "));
  for (const auto& e : run.errors) {
    // "error unavailable <what>: the database or disk is full ..."
    CHECK_MESSAGE((starts_with(e, "error unavailable ") || starts_with(e, "error2 unavailable ")),
                  e);
    CHECK_MESSAGE(testing::contains(e, "full"), e);
  }
  // Reads worked while the disk was full.
  CHECK(run.read == "read " + std::to_string(std::min<std::size_t>(run.acked_before, 5)) + " " +
                        std::to_string(run.acked_before));
  CHECK(run.acked_after == 3);
  CHECK(integrity(url.substr(7)) == "ok");
  auto store = Store::open(url);
  auto& conversations = store.conversations();
  for (const auto& [id, i] : run.acked) {
    auto m = conversations.get_message(id);
    REQUIRE_MESSAGE(m.has_value(), "acknowledged message " << id << " lost");
    CHECK(m->content == faults::sized_content(i, bytes));
  }
  // No half-written message: every stored one is whole and counted.
  HistoryQuery q;
  q.limit = 10000;
  auto all = conversations.history(conversation, q);
  REQUIRE(all.size() < q.limit);
  for (const auto& m : all) {
    CHECK(m.content == faults::sized_content(faults::content_index(m.content), bytes));
  }
  CHECK(all.size() == run.acked.size());
  CHECK(conversations.get(conversation)->message_count == static_cast<std::int64_t>(all.size()));
  // Writable from a new store too.
  conversations.append(conversation, testing::text("after the disk was full"));
  CHECK(integrity(url.substr(7)) == "ok");
}

void fill_test(std::size_t bytes, long long pre_bytes, long long margin) {
  testing::TestDb db("sqlite");
  ConversationId conversation = 0;
  {
    auto store = db.open();
    NewConversation nc;
    nc.channel = "faults";
    conversation = store.conversations().start(nc).id;
  }
  testing::TempDir dir;
  auto lines =
      run_worker(dir, {"fill", db.url(), std::to_string(conversation), "1", std::to_string(bytes),
                       std::to_string(pre_bytes), std::to_string(margin)});
  auto run = parse(lines);
  INFO("worker output:\n" << testing::read_file(dir.file("fill.out")));
  check_after_fill(db.url(), conversation, run, bytes);
  std::string sizes;
  for (const auto& line : lines) {
    if (starts_with(line, "limit ") || starts_with(line, "files: ")) sizes += line + "; ";
  }
  MESSAGE("messages of " << bytes << " bytes: " << run.acked.size() << " acknowledged; " << sizes
                         << run.errors.front());
}

}  // namespace

TEST_CASE("disk full: small messages fill the WAL; a clear error, intact, writable again") {
  fill_test(2000, 0, 64 * 1024);
}

TEST_CASE("disk full: a large message hits the limit in the middle of its transaction") {
  // Two fit first; the limit is set 256 KB above the files' size.
  fill_test(1536 * 1024, 3 * 1024 * 1024, 256 * 1024);
}

TEST_CASE("disk full: the WAL checkpoint cannot grow the database file") {
  // 5 MB first: the WAL passes its 1000-page checkpoint (4 MB) once, so the
  // database file and the WAL are both about 4 MB when the limit is set.
  // The next checkpoint must grow the database file past the limit.
  fill_test(64 * 1024, 5 * 1024 * 1024, 512 * 1024);
}

TEST_CASE("disk full: a small tmpfs filled for real (long mode)") {
  if (!faults::long_mode()) {  // needs mount: only in the long mode
    MESSAGE("skipped: the tmpfs case runs in the long mode (CONVSTORE_FAULTS_LONG=1)");
    return;
  }
  testing::TempDir dir;
  testing::TempDir work;
  const std::string mnt = dir.file("mnt");
  ::mkdir(mnt.c_str(), 0700);
  if (::mount("tmpfs", mnt.c_str(), "tmpfs", 0, "size=3m") != 0) {
    MESSAGE("tmpfs not mountable here (" << std::strerror(errno) << "): skipped");
    return;
  }
  struct Unmount {
    std::string path;
    ~Unmount() { ::umount2(path.c_str(), MNT_DETACH); }
  } unmount{mnt};
  const std::string url = "sqlite:" + mnt + "/full.db";
  ConversationId conversation = 0;
  {
    auto store = Store::open(url);
    NewConversation nc;
    nc.channel = "faults";
    conversation = store.conversations().start(nc).id;
  }
  // Space to free later.
  const std::string filler = mnt + "/filler";
  {
    std::ofstream f(filler, std::ios::binary);
    f << std::string(512 * 1024, 'f');
  }
  const std::string fifo = work.file("in");
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  const std::size_t bytes = 2000;
  std::vector<std::string> argv{
      worker_path(), "fill-dir", url, std::to_string(conversation), "1", std::to_string(bytes)};
  const std::string out = work.file("fill.out");
  int pid = testing::spawn(argv, testing::environment(), fifo, out, work.file("fill.err"));
  std::ofstream to_worker(fifo);  // opens once the worker has opened its end
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (!testing::contains(testing::read_file(out), "waiting")) {
    REQUIRE_MESSAGE(std::chrono::steady_clock::now() < until,
                    "the worker did not fill the disk: " << testing::read_file(out));
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  std::remove(filler.c_str());
  to_worker << "go\n";
  to_worker.close();
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  INFO("worker output:\n" << testing::read_file(out));
  REQUIRE((WIFEXITED(status) && WEXITSTATUS(status) == 0));
  auto run = parse(faults::ack_lines(out));
  check_after_fill(url, conversation, run, bytes);
  MESSAGE("tmpfs of 3 MB: " << run.acked.size() << " acknowledged; " << run.errors.front());
}
