// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
//
// Process crashes: a worker process (convstore_fault_worker) appends
// messages, saves agent-state versions or claims and completes tasks, and
// acknowledges each call on stdout as soon as it returns; the test kills it
// with SIGKILL after a random delay (seeded, the seed printed; set
// CONVSTORE_FAULTS_SEED to replay a run), again and again, and after every
// kill checks that nothing acknowledged is lost and nothing is half-written.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <map>
#include <random>
#include <set>
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

// The random delays of a run: seeded from CONVSTORE_FAULTS_SEED when set,
// else at random; the seed is printed so that a failure can be replayed.
std::mt19937 seeded_rng(const char* what) {
  const char* env = std::getenv("CONVSTORE_FAULTS_SEED");
  unsigned seed = env != nullptr && *env != '\0' ? static_cast<unsigned>(std::stoul(env))
                                                 : std::random_device{}();
  MESSAGE(what << ": seed " << seed << " (CONVSTORE_FAULTS_SEED=" << seed << " replays it)");
  return std::mt19937(seed);
}

int kills() { return faults::scaled(30, 300); }

// The application name of the worker of one cycle on PostgreSQL.
std::string app_name(int cycle) {
  return "cfw_" + std::to_string(::getpid()) + "_" + std::to_string(cycle);
}

// The URL the worker of one cycle opens.
std::string worker_url(const testing::TestDb& db, int cycle) {
  if (db.backend() == "sqlite") return db.url();
  return db.url() + (db.url().find('?') == std::string::npos ? "?" : "&") +
         "application_name=" + app_name(cycle);
}

// On PostgreSQL a COMMIT that the killed worker had sent still completes on
// the server after the kill: wait until the server has ended the worker's
// sessions, so that the database no longer changes under the checks.
void settle(const testing::TestDb& db, int cycle) {
  if (db.backend() == "sqlite") return;
  const std::string sql =
      "SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = '" + app_name(cycle) + "'";
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (testing::raw_exec(db, sql) != "0") {
    REQUIRE_MESSAGE(std::chrono::steady_clock::now() < until,
                    "the killed worker's sessions are still on the server after 30 s");
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

// Starts the worker with `args`, waits for its first acknowledgement (it
// has opened the store: on a loaded machine that alone may take longer than
// the delays below), lets it run for a random 0..250 ms more and kills it
// with SIGKILL. Returns the lines it acknowledged. A worker that ended by
// itself (an error) fails the test with its stderr.
std::vector<std::string> run_and_kill(const testing::TestDb& db, const testing::TempDir& dir,
                                      int cycle, const std::string& mode,
                                      const std::vector<std::string>& args, std::mt19937& rng) {
  std::vector<std::string> argv{worker_path(), mode, worker_url(db, cycle)};
  argv.insert(argv.end(), args.begin(), args.end());
  const std::string out = dir.file("out" + std::to_string(cycle));
  const std::string err = dir.file("err" + std::to_string(cycle));
  int pid = testing::spawn(argv, testing::environment(), "/dev/null", out, err);
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  int status = 0;
  while (testing::read_file(out).find('\n') == std::string::npos) {
    if (::waitpid(pid, &status, WNOHANG) == pid) {
      FAIL("the worker ended by itself (status " << status << "): " << testing::read_file(err));
    }
    if (std::chrono::steady_clock::now() > until) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      FAIL("the worker acknowledged nothing within 60 s: " << testing::read_file(err));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  std::uniform_int_distribution<int> delay_ms(0, 250);
  std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms(rng)));
  ::kill(pid, SIGKILL);
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  settle(db, cycle);
  REQUIRE_MESSAGE(WIFSIGNALED(status), "the worker ended by itself (status "
                                           << status << "): " << testing::read_file(err)
                                           << testing::read_file(out));
  return faults::ack_lines(out);
}

// Runs the worker to its end (at most `deadline`); returns its lines.
std::vector<std::string> run_to_end(const testing::TempDir& dir, const std::string& name,
                                    const std::vector<std::string>& args,
                                    std::chrono::seconds deadline) {
  std::vector<std::string> argv{worker_path()};
  argv.insert(argv.end(), args.begin(), args.end());
  const std::string out = dir.file(name + ".out");
  const std::string err = dir.file(name + ".err");
  int pid = testing::spawn(argv, testing::environment(), "/dev/null", out, err);
  const auto until = std::chrono::steady_clock::now() + deadline;
  int status = 0;
  while (::waitpid(pid, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > until) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      FAIL("the worker did not finish within " << deadline.count() << " s");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  REQUIRE_MESSAGE((WIFEXITED(status) && WEXITSTATUS(status) == 0),
                  "the worker failed: " << testing::read_file(err));
  return faults::ack_lines(out);
}

void check_sqlite_intact(const testing::TestDb& db) {
  if (db.backend() == "sqlite") {
    CHECK(testing::raw_exec(db, "PRAGMA integrity_check") == "ok");
    CHECK(testing::raw_exec(db, "PRAGMA foreign_key_check") == "");
  }
}

// Every stored message of the conversation is whole (its content is exactly
// what the worker wrote for its index), the count agrees with the rows, and
// every acknowledged id is among them. Returns the number of messages.
std::size_t check_all_messages(ConversationStore& conversations, ConversationId id,
                               const std::map<MessageId, long long>& acked) {
  std::set<MessageId> seen;
  HistoryQuery q;
  q.limit = 10000;
  for (;;) {
    auto page = conversations.history(id, q);
    for (const auto& m : page) {
      long long i = faults::content_index(m.content);
      CHECK_MESSAGE(m.content == faults::message_content(i), "message " << m.id << " is cut");
      seen.insert(m.id);
    }
    if (page.size() < q.limit) break;
    q.after = page.back().id;
  }
  for (const auto& [mid, i] : acked) {
    CHECK_MESSAGE(seen.count(mid) == 1, "acknowledged message " << mid << " (" << i << ") lost");
  }
  auto c = conversations.get(id);
  REQUIRE(c.has_value());
  CHECK(c->message_count == static_cast<std::int64_t>(seen.size()));
  return seen.size();
}

}  // namespace

TEST_CASE_TEMPLATE("crash: a writer killed at random moments loses no acknowledged message", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& conversations = store.conversations();
  NewConversation nc;
  nc.channel = "faults";
  const ConversationId conversation = conversations.start(nc).id;
  const std::string cid = std::to_string(conversation);
  testing::TempDir dir;
  auto rng = seeded_rng("crash/append");

  std::map<MessageId, long long> acked;
  MessageId last = 0;
  const int n = kills();
  for (int cycle = 0; cycle < n; ++cycle) {
    const long long first = static_cast<long long>(cycle) * 1000000;
    auto lines = run_and_kill(db, dir, cycle, "append", {cid, std::to_string(first)}, rng);
    for (const auto& line : lines) {
      auto sp = line.find(' ');
      REQUIRE(sp != std::string::npos);
      MessageId id = std::stoll(line.substr(0, sp));
      long long i = std::stoll(line.substr(sp + 1));
      CHECK_MESSAGE(id > last, "message ids go back: " << id << " after " << last);
      last = id;
      acked[id] = i;
      // Present right after the kill, whole, in its conversation.
      auto m = conversations.get_message(id);
      REQUIRE_MESSAGE(m.has_value(), "acknowledged message " << id << " lost after kill " << cycle);
      CHECK(m->conversation_id == conversation);
      CHECK(m->content == faults::message_content(i));
    }
    // The count the append moves agrees with the rows.
    CHECK(testing::raw_exec(db, "SELECT COUNT(*) FROM messages WHERE conversation_id = " + cid) ==
          testing::raw_exec(db, "SELECT message_count FROM conversations WHERE id = " + cid));
    check_sqlite_intact(db);
  }
  std::size_t stored = check_all_messages(conversations, conversation, acked);
  MESSAGE(db.backend() << ": " << n << " kills survived, " << acked.size()
                       << " acknowledged messages, " << stored << " stored");
  CHECK(stored >= acked.size());
  // Every run acknowledged at least one message before its kill.
  CHECK(acked.size() >= static_cast<std::size_t>(n));
  // Still writable after the last kill.
  auto m = conversations.append(conversation, testing::text("after the kills"));
  CHECK(conversations.get(conversation)->message_count == static_cast<std::int64_t>(stored + 1));
  CHECK(m.id > last);
}

TEST_CASE_TEMPLATE("crash: an agent state saved by a killed process is never older after restart",
                   B, CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& agents = store.agents();
  const auto scope = StateScope::named("faults");
  const std::string agent = "crash-agent";
  testing::TempDir dir;
  auto rng = seeded_rng("crash/state");

  std::int64_t acked = 0;
  std::int64_t saves = 0;
  const int n = kills();
  for (int cycle = 0; cycle < n; ++cycle) {
    auto lines = run_and_kill(db, dir, cycle, "state", {scope.key, agent}, rng);
    for (const auto& line : lines) {
      std::int64_t v = std::stoll(line);
      CHECK_MESSAGE(v > acked, "version " << v << " acknowledged after " << acked);
      acked = v;
      ++saves;
    }
    auto current = agents.get_state(scope, agent);
    if (acked == 0 && !current) continue;  // killed before its first save
    REQUIRE_MESSAGE(current.has_value(), "the state acknowledged at version " << acked << " lost");
    // Never older than what was acknowledged (at most one save later: the
    // one that committed just before the kill, unacknowledged).
    CHECK(current->version >= acked);
    CHECK(current->version <= acked + 1);
    CHECK(current->state == faults::state_content(current->version));
    CHECK(agents.load_state(scope, agent) == faults::state_content(current->version));
    if (acked > 0) {
      auto v = agents.load_state_version(scope, agent, acked);
      REQUIRE(v.has_value());
      CHECK(v->state == faults::state_content(acked));
    }
    // The kept history is whole: consecutive versions, each exactly saved.
    auto history = agents.state_history(scope, agent);
    REQUIRE(!history.empty());
    CHECK(history.front().version == current->version);
    for (std::size_t k = 0; k < history.size(); ++k) {
      CHECK(history[k].version == current->version - static_cast<std::int64_t>(k));
      CHECK(history[k].state == faults::state_content(history[k].version));
    }
    check_sqlite_intact(db);
  }
  MESSAGE(db.backend() << ": " << n << " kills survived, " << saves
                       << " acknowledged saves, last version " << acked);
  CHECK(saves >= n);
  // The next save, from this process, continues the versions.
  auto current = agents.get_state(scope, agent);
  REQUIRE(current.has_value());
  auto next = agents.save_state(scope, agent, faults::state_content(current->version + 1),
                                current->version);
  CHECK(next.version == current->version + 1);
}

TEST_CASE_TEMPLATE("crash: a task whose worker was killed is claimed again after its lease", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& q = store.tasks();
  // The queue is topped up before a cycle that could empty it: a worker
  // with nothing to claim would acknowledge nothing (on a fast machine a
  // cycle completes a few hundred tasks).
  const int batch_size = faults::scaled(400, 4000);
  int total = 0;
  std::set<TaskId> all;
  auto top_up = [&] {
    if (q.counts().pending >= batch_size / 2) return;
    std::vector<NewTask> batch;
    for (int k = 0; k < batch_size; ++k) batch.emplace_back("fault", Json{{"n", total + k}});
    for (const auto& e : q.enqueue_many(batch)) all.insert(e.task.id);
    total += batch_size;
    REQUIRE(all.size() == static_cast<std::size_t>(total));
  };
  testing::TempDir dir;
  auto rng = seeded_rng("crash/tasks");
  const std::string lease_ms = "400";

  std::map<TaskId, std::string> done;     // acknowledged completion -> its worker
  std::map<TaskId, std::string> orphans;  // claimed by a killed worker, not acknowledged
  const int n = kills();
  for (int cycle = 0; cycle < n; ++cycle) {
    const std::string worker = "w" + std::to_string(cycle);
    top_up();
    auto lines = run_and_kill(db, dir, cycle, "tasks", {worker, lease_ms}, rng);
    std::set<TaskId> claimed;
    for (const auto& line : lines) {
      auto sp = line.find(' ');
      REQUIRE(sp != std::string::npos);
      const std::string tag = line.substr(0, sp);
      const TaskId id = std::stoll(line.substr(sp + 1));
      if (tag == "claimed") {
        claimed.insert(id);
        CHECK_MESSAGE(done.count(id) == 0, "task " << id << " claimed after its completion");
      } else if (tag == "done") {
        claimed.erase(id);
        done[id] = worker;
      } else {
        claimed.erase(id);  // "lost": refused by fencing, someone else has it
      }
    }
    for (TaskId id : claimed) orphans[id] = worker;
    // Every acknowledged completion is stored, with the result of the
    // worker that acknowledged it.
    for (const auto& [id, by] : done) {
      auto t = q.get(id);
      REQUIRE(t.has_value());
      CHECK(t->status == TaskStatus::completed);
      CHECK(t->result["by"] == by);
    }
    auto c = q.counts();
    CHECK(c.pending + c.processing + c.completed == total);
    CHECK(c.failed + c.cancelled == 0);
    check_sqlite_intact(db);
  }
  REQUIRE_MESSAGE((!orphans.empty() || done.size() == all.size()),
                  "no kill left a task claimed (a run too short to test the lease)");
  // A worker that is not killed finishes the queue: it claims the orphans
  // once their leases expire.
  run_to_end(dir, "drain", {"tasks", db.url(), "drain", lease_ms, "drain"},
             std::chrono::seconds(120));
  auto c = q.counts();
  CHECK(c.completed == total);
  int reclaimed = 0;
  for (const auto& [id, killed] : orphans) {
    auto t = q.get(id);
    REQUIRE(t.has_value());
    CHECK(t->status == TaskStatus::completed);
    // Either the killed worker's completion committed just before the kill
    // (unacknowledged), or another worker claimed it again.
    if (*t->worker != killed) {
      CHECK(t->attempts >= 2);
      CHECK(t->result["by"] == *t->worker);
      ++reclaimed;
    }
  }
  for (const auto& [id, by] : done) CHECK(q.get(id)->result["by"] == by);
  MESSAGE(db.backend() << ": " << n << " kills survived, " << done.size()
                       << " acknowledged completions, " << orphans.size()
                       << " tasks claimed by a killed worker, " << reclaimed
                       << " of them claimed again after their lease");
  CHECK(reclaimed > 0);
}
