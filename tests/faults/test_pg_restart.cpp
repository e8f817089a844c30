// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
//
// PostgreSQL restarts: the server is stopped (pg_ctl -m fast, -m immediate)
// and started again while several threads use one Store. Calls during the
// outage fail fast with Error(unavailable); afterwards the same Store works
// again (its dead pooled connections are replaced); reads and appends with a
// client_key are retried once when their connection is lost; no
// acknowledged message is lost.
//
// Each test starts its own throwaway server (tests/faults/pg_server.sh),
// never the shared one. Without one it is skipped, except under CI=true.

#include <fcntl.h>
#include <fmt/format.h>
#include <libpq-fe.h>
#include <signal.h>
#include <spawn.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "faults/faults_support.hpp"
#include "support.hpp"

using namespace convstore;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

bool in_ci() {
  const char* ci = std::getenv("CI");
  return ci != nullptr && std::string(ci) == "true";
}

// A throwaway PostgreSQL server under a temporary directory, shared by the
// tests of this file (see shared_server()).
class PgServer {
 public:
  PgServer() {
    auto r = run({"start", dir_.file("pg")}, 120s);
    if (r.first == 0) {
      url_ = r.second;
      while (!url_.empty() && (url_.back() == '\n' || url_.back() == ' ')) url_.pop_back();
    } else {
      error_ = testing::read_file(dir_.file("script.err"));
    }
  }
  ~PgServer() {
    if (!url_.empty()) run({"destroy", dir_.file("pg")}, 60s);
  }
  bool running() const { return running_; }
  PgServer(const PgServer&) = delete;
  PgServer& operator=(const PgServer&) = delete;

  // False when no server could be started: the caller returns (skipped),
  // and under CI=true the test has failed.
  bool ready() const {
    if (!url_.empty()) return true;
    if (in_ci()) {
      FAIL_CHECK("cannot start a throwaway PostgreSQL server (CI=true): " << error_);
    } else {
      MESSAGE("cannot start a throwaway PostgreSQL server: skipped: " << error_);
    }
    return false;
  }
  const std::string& url() const { return url_; }

  // pg_ctl stop -m `mode` (fast: clients are told and disconnected;
  // immediate: the server processes quit at once, recovery at the next start).
  void stop(const char* mode) {
    auto r = run({"stop", dir_.file("pg"), mode}, 60s);
    running_ = r.first != 0;
    REQUIRE_MESSAGE(r.first == 0,
                    "pg_ctl stop failed: " << testing::read_file(dir_.file("script.err")));
  }
  void start() {
    auto r = run({"restart", dir_.file("pg")}, 120s);
    running_ = r.first == 0;
    REQUIRE_MESSAGE(r.first == 0,
                    "pg_ctl start failed: " << testing::read_file(dir_.file("script.err")));
  }

 private:
  // Runs the script with `args`, killed after `limit`; its exit status and
  // standard output. No doctest assertion here: the destructor of the
  // shared server runs after doctest has finished.
  std::pair<int, std::string> run(const std::vector<std::string>& args,
                                  std::chrono::seconds limit) {
    std::vector<std::string> argv{"/bin/bash", CONVSTORE_PG_SERVER_SCRIPT};
    argv.insert(argv.end(), args.begin(), args.end());
    std::vector<char*> cargv;
    for (auto& a : argv) cargv.push_back(a.data());
    cargv.push_back(nullptr);
    std::lock_guard<std::mutex> lock(mu_);
    const std::string out = dir_.file("script.out");
    const std::string err = dir_.file("script.err");
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&actions, 1, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_addopen(&actions, 2, err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    pid_t pid = -1;
    int rc = posix_spawn(&pid, cargv[0], &actions, nullptr, cargv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) return {-1, ""};
    auto deadline = Clock::now() + limit;
    int status = 0;
    for (;;) {
      pid_t done = waitpid(pid, &status, WNOHANG);
      if (done == pid) break;
      if (done < 0) return {-1, ""};
      if (Clock::now() > deadline) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        return {-1, ""};
      }
      std::this_thread::sleep_for(20ms);
    }
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return {code, testing::read_file(dir_.file("script.out"))};
  }

  testing::TempDir dir_;
  std::mutex mu_;
  std::string url_;
  std::string error_;
  bool running_ = true;
};

// The server of these tests, started on first use (one initdb for all),
// running; nullptr when there is none (the test is then skipped, or has
// failed under CI=true).
PgServer* shared_server() {
  static PgServer s;
  if (!s.ready()) return nullptr;
  if (!s.running()) s.start();  // a test that failed left it stopped
  return &s;
}

// The first column of the first row of `sql`, run with libpq ("" for none).
std::string pg_value(PGconn* c, const std::string& sql) {
  PGresult* r = PQexec(c, sql.c_str());
  auto st = PQresultStatus(r);
  std::string out;
  bool ok = st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK;
  if (st == PGRES_TUPLES_OK && PQntuples(r) > 0) out = PQgetvalue(r, 0, 0);
  std::string err = PQerrorMessage(c);
  PQclear(r);
  REQUIRE_MESSAGE(ok, "'" << sql << "' failed: " << err);
  return out;
}

struct Admin {
  explicit Admin(const std::string& url) : c(PQconnectdb(url.c_str())) {
    REQUIRE_MESSAGE(PQstatus(c) == CONNECTION_OK, "admin connection: " << PQerrorMessage(c));
    PQsetNoticeProcessor(
        c, [](void*, const char*) {}, nullptr);
  }
  ~Admin() { PQfinish(c); }
  Admin(const Admin&) = delete;
  Admin& operator=(const Admin&) = delete;
  std::string value(const std::string& sql) { return pg_value(c, sql); }
  PGconn* c;
};

Options restart_options() {
  Options o;
  o.pool_size = 4;
  o.connect_timeout = 2s;
  o.acquire_timeout = 2s;
  return o;
}

// What one worker thread saw.
struct Worker {
  ConversationId conversation = 0;
  std::vector<std::pair<MessageId, std::string>> acked;  // acknowledged appends
  std::vector<std::string> wrong;                        // errors other than unavailable
  long ok_calls = 0;
  long failed_calls = 0;
  Clock::duration max_failed_call{};  // the longest call that failed
  std::atomic<long> ok_epoch{-1};     // the last outage number after which a call succeeded
};

}  // namespace

// Threads share one Store while the server restarts: nothing acknowledged is
// lost.
static void threads_ride_through(PgServer& server) {
  const Options options = restart_options();
  Store store = Store::open(server.url(), options);

  const int threads = 4;
  const int outages = faults::scaled(2, 40);
  std::vector<Worker> workers(threads);
  auto user = store.conversations().upsert_user({"faults", "pg-restart"});
  for (auto& w : workers) {
    NewConversation n;
    n.user_id = user.id;
    n.channel = "faults";
    w.conversation = store.conversations().start(n).id;
  }

  std::atomic<bool> stop{false};
  std::atomic<long> epoch{0};
  auto work = [&](int i) {
    Worker& w = workers[static_cast<std::size_t>(i)];
    long seq = 0;
    // Appends message `seq` (the same client_key until acknowledged).
    auto append = [&]() -> bool {
      NewMessage m = testing::text(fmt::format("thread {} message {} — ünïcode", i, seq));
      m.client_key = fmt::format("t{}-{}", i, seq);
      auto t0 = Clock::now();
      try {
        Message got = store.conversations().append(w.conversation, m);
        w.acked.emplace_back(got.id, m.content);
        ++seq;
        ++w.ok_calls;
        return true;
      } catch (const Error& e) {
        ++w.failed_calls;
        w.max_failed_call = std::max(w.max_failed_call, Clock::now() - t0);
        if (e.code() != ErrorCode::unavailable) w.wrong.push_back(e.what());
        return false;
      }
    };
    while (!stop.load()) {
      long now_epoch = epoch.load();
      bool ok = append();
      auto t0 = Clock::now();
      try {
        if (seq % 2 == 0) {
          store.conversations().recent(w.conversation, 3);
        } else {
          store.conversations().context(w.conversation, 3);  // a snapshot read
        }
        ++w.ok_calls;
      } catch (const Error& e) {
        ok = false;
        ++w.failed_calls;
        w.max_failed_call = std::max(w.max_failed_call, Clock::now() - t0);
        if (e.code() != ErrorCode::unavailable) w.wrong.push_back(e.what());
      }
      if (ok) w.ok_epoch.store(now_epoch);
      std::this_thread::sleep_for(3ms);
    }
    // The pending append (its outcome unknown) is sent again until it is
    // acknowledged: its key makes that safe.
    auto deadline = Clock::now() + 30s;
    while (!append() && Clock::now() < deadline) std::this_thread::sleep_for(50ms);
  };

  // Waits until every worker had a successful call after outage `e`.
  auto all_recovered = [&](long e) {
    auto deadline = Clock::now() + 30s;
    while (Clock::now() < deadline) {
      if (std::all_of(workers.begin(), workers.end(),
                      [&](const Worker& w) { return w.ok_epoch.load() >= e; })) {
        return true;
      }
      std::this_thread::sleep_for(10ms);
    }
    return false;
  };

  std::vector<std::thread> pool;
  for (int i = 0; i < threads; ++i) pool.emplace_back(work, i);
  int ridden = 0;
  for (int o = 0; o < outages; ++o) {
    const char* mode = o % 2 == 0 ? "fast" : "immediate";
    CAPTURE(o);
    CAPTURE(mode);
    if (!all_recovered(o)) break;
    std::this_thread::sleep_for(100ms);  // work with the server up
    server.stop(mode);
    std::this_thread::sleep_for(300ms);  // work with the server down
    server.start();
    epoch.store(o + 1);
    if (!all_recovered(o + 1)) {
      FAIL_CHECK("the Store did not work again within 30 s after restart " << o + 1);
      break;
    }
    ++ridden;
  }
  stop.store(true);
  for (auto& t : pool) t.join();

  long ok_calls = 0;
  long failed_calls = 0;
  Clock::duration max_stall{};
  for (auto& w : workers) {
    ok_calls += w.ok_calls;
    failed_calls += w.failed_calls;
    max_stall = std::max(max_stall, w.max_failed_call);
    for (std::size_t k = 0; k < std::min<std::size_t>(w.wrong.size(), 3); ++k) {
      FAIL_CHECK("an error other than unavailable: " << w.wrong[k]);
    }
  }
  const auto stall_ms = std::chrono::duration_cast<std::chrono::milliseconds>(max_stall).count();
  MESSAGE("pg restart: " << ridden << " of " << outages << " outages ridden through; " << ok_calls
                         << " calls succeeded, " << failed_calls
                         << " failed with unavailable; the longest failed call took " << stall_ms
                         << " ms");
  CHECK(ridden == outages);
  // The outages were seen: calls did fail while the server was down.
  CHECK(failed_calls > 0);
  // No call hung: a failure comes within the connect timeout (a retry may
  // connect twice) plus the wait for a pooled connection, with a margin
  // for a loaded machine.
  CHECK(max_stall < 2 * options.connect_timeout + options.acquire_timeout + 5s);

  // Every acknowledged message is there, once, with its content; the
  // conversation's count agrees with its rows.
  Admin admin(server.url());
  for (std::size_t i = 0; i < workers.size(); ++i) {
    const Worker& w = workers[i];
    CAPTURE(i);
    long missing = 0;
    for (const auto& [id, content] : w.acked) {
      auto m = store.conversations().get_message(id);
      if (!m || m->content != content || m->conversation_id != w.conversation) ++missing;
    }
    CHECK(missing == 0);
    auto conv = store.conversations().get(w.conversation);
    REQUIRE(conv.has_value());
    const std::string rows = admin.value(
        fmt::format("SELECT count(*) FROM messages WHERE conversation_id = {}", w.conversation));
    CHECK(rows == std::to_string(w.acked.size()));
    CHECK(conv->message_count == static_cast<std::int64_t>(w.acked.size()));
  }
}

namespace {

// Runs `call` on a Store whose only connection is named `victim`, and kills
// that connection while the call waits for a lock that an admin connection
// holds on the messages table (so the call is certainly in flight: its
// statement was sent); then releases the lock. The call's exception, if any.
std::exception_ptr killed_in_flight(const std::string& url, const std::string& victim,
                                    const std::function<void()>& call) {
  Admin holder(url);
  Admin killer(url);
  holder.value("BEGIN");
  holder.value("LOCK TABLE messages IN ACCESS EXCLUSIVE MODE");
  std::exception_ptr error;
  std::thread t([&] {
    try {
      call();
    } catch (...) {
      error = std::current_exception();
    }
  });
  const std::string waiting = fmt::format(
      "SELECT pid FROM pg_stat_activity WHERE application_name = '{}' AND wait_event_type = "
      "'Lock'",
      victim);
  std::string pid;
  auto deadline = Clock::now() + 20s;
  while ((pid = killer.value(waiting)).empty() && Clock::now() < deadline) {
    std::this_thread::sleep_for(10ms);
  }
  CHECK_MESSAGE(!pid.empty(), "the call never waited for the lock");
  if (!pid.empty()) {
    killer.value("SELECT pg_terminate_backend(" + pid + ")");
    while (!killer.value("SELECT pid FROM pg_stat_activity WHERE pid = " + pid).empty() &&
           Clock::now() < deadline) {
      std::this_thread::sleep_for(10ms);
    }
  }
  holder.value("ROLLBACK");
  t.join();
  return error;
}

ErrorCode code_of(const std::exception_ptr& e) {
  try {
    std::rethrow_exception(e);
  } catch (const Error& err) {
    return err.code();
  } catch (...) {
    return ErrorCode::internal;
  }
}

}  // namespace

// The retry rule, one call at a time.
static void retry_rule(PgServer& server) {
  const std::string victim = "convstore_fault_victim";
  std::atomic<int> begins{0};
  Options options = restart_options();
  options.pool_size = 1;
  options.on_statement = [&](const StatementEvent& e) {
    if (e.sql.substr(0, 5) == "BEGIN") ++begins;
  };
  const std::string url = server.url() + "?application_name=" + victim;
  Store store = Store::open(url, options);
  auto user = store.conversations().upsert_user({"faults", "retry"});
  NewConversation n;
  n.user_id = user.id;
  n.channel = "faults";
  const ConversationId conv = store.conversations().start(n).id;
  store.conversations().append(conv, testing::text("m1"));
  store.conversations().append(conv, testing::text("m2"));
  Admin admin(server.url());
  auto rows = [&] {
    return admin.value(
        fmt::format("SELECT count(*) FROM messages WHERE conversation_id = {}", conv));
  };

  SUBCASE("a read is retried on a fresh connection") {
    std::vector<Message> got;
    auto e = killed_in_flight(server.url(), victim,
                              [&] { got = store.conversations().recent(conv, 10); });
    CHECK(e == nullptr);
    CHECK(testing::contents(got) == "m1,m2");
  }
  SUBCASE("a snapshot read is retried on a fresh connection") {
    ConversationContext ctx;
    auto e = killed_in_flight(server.url(), victim,
                              [&] { ctx = store.conversations().context(conv, 10); });
    CHECK(e == nullptr);
    CHECK(testing::contents(ctx.messages) == "m1,m2");
  }
  SUBCASE("an append with a client_key is retried, and stored once") {
    NewMessage m = testing::text("keyed");
    m.client_key = "key-1";
    const int before = begins.load();
    auto e = killed_in_flight(server.url(), victim, [&] { store.conversations().append(conv, m); });
    CHECK(e == nullptr);
    CHECK(begins.load() - before == 2);  // the lost attempt and the retry
    CHECK(admin.value(fmt::format(
              "SELECT count(*) FROM messages WHERE conversation_id = {} AND client_key = 'key-1'",
              conv)) == "1");
    CHECK(rows() == "3");
  }
  SUBCASE("an append without a key is not retried: unavailable, nothing written") {
    auto e = killed_in_flight(server.url(), victim, [&] {
      store.conversations().append(conv, testing::text("unkeyed"));
    });
    REQUIRE(e != nullptr);
    CHECK(code_of(e) == ErrorCode::unavailable);
    CHECK(rows() == "2");
    // The same Store goes on with a fresh connection.
    store.conversations().append(conv, testing::text("m3"));
    CHECK(rows() == "3");
  }
  SUBCASE("a keyed append inside a caller's transaction is not retried") {
    NewMessage m = testing::text("in a transaction");
    m.client_key = "key-2";
    auto e = killed_in_flight(server.url(), victim, [&] {
      store.transaction([&] { store.conversations().append(conv, m); });
    });
    REQUIRE(e != nullptr);
    CHECK(code_of(e) == ErrorCode::unavailable);
    CHECK(rows() == "2");
  }
  SUBCASE("a refused keyed append (a stale version) is not retried") {
    NewMessage m = testing::text("stale");
    m.client_key = "key-3";
    AppendOptions stale;
    stale.expected_version = 0;
    const int before = begins.load();
    CHECK_ERROR_CODE(store.conversations().append(conv, m, stale), ErrorCode::conflict);
    CHECK(begins.load() - before == 1);
    CHECK(rows() == "2");
  }
}

// The first calls after a restart, and calls during the outage.
static void first_calls(PgServer& server) {
  Options options = restart_options();
  options.pool_size = 1;
  // `store` is idle during the outage; `other` is used during it.
  Store store = Store::open(server.url(), options);
  Store other = Store::open(server.url(), options);
  auto user = store.conversations().upsert_user({"faults", "first-call"});
  NewConversation n;
  n.user_id = user.id;
  n.channel = "faults";
  const ConversationId conv = store.conversations().start(n).id;
  int appended = 0;
  for (const char* mode : {"fast", "immediate"}) {
    CAPTURE(mode);
    store.conversations().append(conv, testing::text("before"));
    other.conversations().append(conv, testing::text("before"));
    appended += 2;
    server.stop(mode);
    // While the server is down, calls fail with unavailable.
    CHECK_ERROR_CODE(other.conversations().recent(conv, 1), ErrorCode::unavailable);
    CHECK_ERROR_CODE(other.conversations().append(conv, testing::text("down")),
                     ErrorCode::unavailable);
    server.start();
    // The pooled connection of `store`, idle, was killed by the restart. The
    // first call after it, a write without a key (never retried), does not
    // fail: the pool replaces a connection that the server closed before
    // anything is sent on it.
    CHECK_NOTHROW(store.conversations().append(conv, testing::text("after")));
    CHECK_NOTHROW(other.conversations().append(conv, testing::text("after")));
    appended += 2;
    CHECK(store.conversations().recent(conv, 1).size() == 1);
    CHECK(store.conversations().get(conv)->message_count == appended);
  }
}

// One test case, so that the three parts share one throwaway server (one
// initdb) also when ctest runs each test case in a process of its own.
TEST_CASE("pg restart: a Store rides through restarts of its PostgreSQL server") {
  PgServer* server = shared_server();
  if (server == nullptr) return;
  SUBCASE("threads share one Store while the server restarts: nothing acknowledged is lost") {
    threads_ride_through(*server);
  }
  SUBCASE("a lost connection is retried once for reads and keyed appends only") {
    retry_rule(*server);
  }
  SUBCASE("after a restart the first calls succeed on the same Store") { first_calls(*server); }
}
