// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
//
// The concurrency soak: several processes (tests/faults/soak_worker.cpp),
// each with several threads, mix every store's operations against one
// database for a bounded time; then the database is checked against what
// each of them was acknowledged.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "faults/faults_support.hpp"
#include "support.hpp"

using namespace convstore;

namespace {

constexpr int kProcesses = 3;
constexpr int kThreads = 3;
constexpr int kConversations = 4;
constexpr int kDialogs = 4;
constexpr int kScopes = 3;
constexpr std::int64_t kRateLimit = 200;

std::string worker_path() {
  return testing::program_path("CONVSTORE_SOAK_WORKER", CONVSTORE_SOAK_WORKER_PATH);
}

std::string content_of(const std::string& tag) {
  return "soak " + tag + " a message of the concurrency soak";
}

// Creates what the workers find by name (see soak_worker.cpp).
void create_fixture(Store& store) {
  auto& cs = store.conversations();
  std::vector<UserId> owners;
  for (int i = 0; i < 2; ++i) {
    owners.push_back(cs.upsert_user({"soak", "owner-" + std::to_string(i)}).id);
  }
  for (int i = 0; i < kConversations; ++i) {
    NewConversation c;
    c.key = "soak-conv-" + std::to_string(i);
    c.user_id = owners[0];
    c.channel = "soak";
    cs.start(c);
  }
  for (int i = 0; i < kDialogs; ++i) {
    NewConversation c;
    c.key = "soak-dialog-" + std::to_string(i);
    c.user_id = owners[static_cast<std::size_t>(i % 2)];
    c.channel = "telegram";
    c.chat_id = "chat-" + std::to_string(i);
    auto conv = cs.start(c);
    DialogSettings s;
    s.auto_send = i >= 2;  // two need approval, two are sent without it
    store.dialogs().configure(conv.id, s);
  }
  NewAgent a;
  a.id = "soak-agent";
  a.name = "Soak";
  store.agents().create_agent(a);
  std::vector<NewTask> tasks;
  for (int i = 0; i < 30; ++i) {
    NewTask t("soak", Json{{"by", "fixture"}});
    t.max_attempts = 1000;
    tasks.push_back(t);
  }
  store.tasks().enqueue_many(tasks);
}

// Every line the workers wrote, split in words, with its process.
struct Line {
  int process = 0;
  std::vector<std::string> words;
  std::string text;
};

std::vector<Line> parse(int process, const std::string& output) {
  std::vector<Line> lines;
  std::istringstream in(output);
  std::string text;
  while (std::getline(in, text)) {
    Line l;
    l.process = process;
    l.text = text;
    std::istringstream words(text.substr(0, text.find(" | ")));
    std::string w;
    while (words >> w) l.words.push_back(w);
    if (!l.words.empty()) lines.push_back(std::move(l));
  }
  return lines;
}

std::int64_t num(const std::string& s) { return std::stoll(s); }

// Which error codes an operation may meet. unavailable and aborted are the
// contention outcomes (SQLite's busy timeout across processes, PostgreSQL's
// serialization failures): allowed, counted, their writes of unknown
// outcome. Refusals (conflicts) are logged as "refused" by the worker.
bool allowed_error(const std::string& code) { return code == "unavailable" || code == "aborted"; }

// Waits for the workers, killing them all past `deadline`.
std::vector<int> wait_all(const std::vector<int>& pids,
                          std::chrono::steady_clock::time_point deadline) {
  std::vector<int> status(pids.size(), -1);
  std::size_t left = pids.size();
  while (left > 0) {
    for (std::size_t i = 0; i < pids.size(); ++i) {
      if (status[i] != -1) continue;
      int st = 0;
      if (waitpid(pids[i], &st, WNOHANG) == pids[i]) {
        status[i] = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        --left;
      }
    }
    if (left > 0 && std::chrono::steady_clock::now() > deadline) {
      for (std::size_t i = 0; i < pids.size(); ++i) {
        if (status[i] == -1) {
          kill(pids[i], SIGKILL);
          int st = 0;
          waitpid(pids[i], &st, 0);
          status[i] = 999;
        }
      }
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return status;
}

std::vector<Message> all_messages(ConversationStore& cs, ConversationId id) {
  std::vector<Message> out;
  HistoryQuery q;
  q.limit = 10000;
  for (;;) {
    auto page = cs.history(id, q);
    out.insert(out.end(), page.begin(), page.end());
    if (page.size() < q.limit) return out;
    q.after = page.back().id;
  }
}

std::vector<Task> all_tasks(TaskQueue& tq) {
  std::vector<Task> out;
  TaskFilter f;
  f.type = "soak";
  for (;;) {
    auto page = tq.list(f, 1000);
    out.insert(out.end(), page.begin(), page.end());
    if (page.size() < 1000) return out;
    f.before = page.back().id;
  }
}

std::vector<CalendarEvent> all_events(CalendarStore& cal, UserId owner) {
  std::vector<CalendarEvent> out;
  const Timestamp from = parse_timestamp("2031-03-03T00:00:00Z");
  const Timestamp to = parse_timestamp("2031-03-04T00:00:00Z");
  std::string cursor;
  do {
    auto page = cal.range(owner, from, to, 1000, cursor);
    out.insert(out.end(), page.items.begin(), page.items.end());
    cursor = page.next_cursor;
  } while (!cursor.empty());
  return out;
}

}  // namespace

TEST_CASE_TEMPLATE(
    "concurrency soak: processes and threads mixing every store lose no acknowledged write, run "
    "no task twice, book no overlap",
    B, CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  create_fixture(store);
  auto& cs = store.conversations();

  // ---- run the workers ----
  const auto duration = std::chrono::seconds(faults::scaled(20, 300));
  // SQLite: a pause between operations, so that the busy handler (unfair
  // across processes) rarely lets one process starve another.
  // $CONVSTORE_SOAK_PAUSE_US overrides it (e.g. 0, to see the unfairness).
  const char* pause_env = std::getenv("CONVSTORE_SOAK_PAUSE_US");
  const std::string pause_us = pause_env != nullptr && *pause_env != '\0' ? pause_env
                               : db.backend() == "sqlite"                 ? "200"
                                                                          : "0";
  testing::TempDir dir;
  std::vector<int> pids;
  const auto started = std::chrono::steady_clock::now();
  for (int p = 0; p < kProcesses; ++p) {
    std::string ps = std::to_string(p);
    pids.push_back(testing::spawn(
        {worker_path(), db.url(), ps, std::to_string(kThreads),
         std::to_string(std::chrono::milliseconds(duration).count()), pause_us},
        testing::environment(), "/dev/null", dir.file("out" + ps), dir.file("err" + ps)));
  }
  // A call may wait out a busy timeout (10 s) after the end; far past that
  // the workers are hung.
  auto status = wait_all(pids, started + duration + std::chrono::seconds(90));
  const auto elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - started);
  std::vector<Line> lines;
  for (int p = 0; p < kProcesses; ++p) {
    std::string ps = std::to_string(p);
    INFO("worker " << p << " stderr: " << testing::read_file(dir.file("err" + ps)));
    REQUIRE_MESSAGE(status[static_cast<std::size_t>(p)] == 0,
                    "worker " << p << " ended with " << status[static_cast<std::size_t>(p)]);
    auto mine = parse(p, testing::read_file(dir.file("out" + ps)));
    lines.insert(lines.end(), mine.begin(), mine.end());
  }

  // ---- what the workers saw ----
  std::map<std::string, std::int64_t> ops;                       // acknowledged, by kind
  std::map<std::string, std::int64_t> refused;                   // refused (conflicts), by kind
  std::map<std::string, std::int64_t> errors;                    // "kind code"
  std::map<std::pair<int, std::string>, std::int64_t> progress;  // (process, kind)
  std::set<std::string> unknown;  // attempts whose outcome an error left unknown
  std::int64_t unknown_uses = 0;
  std::map<int, std::int64_t> unknown_state;  // by scope
  int violations = 0;
  for (const auto& l : lines) {
    const auto& w = l.words;
    if (w[0] == "violation") {
      ++violations;
      FAIL_CHECK("worker " << l.process << ": " << l.text);
    } else if (w[0] == "err") {
      REQUIRE(w.size() >= 4);
      errors[w[1] + " " + w[2]]++;
      CHECK_MESSAGE(allowed_error(w[2]), "worker " << l.process << ": " << l.text);
      std::string attempt;
      for (std::size_t i = 3; i < w.size(); ++i) attempt += (i > 3 ? " " : "") + w[i];
      unknown.insert(attempt);
      if (w[3] == "use") ++unknown_uses;
      if (w[3] == "save" || w[3] == "patch") unknown_state[static_cast<int>(num(w[4]))]++;
    } else if (w[0] == "refused") {
      refused[w[1]]++;
    } else if (w[0] != "end") {
      ops[w[0]]++;
      progress[{l.process, w[0]}]++;
    }
  }
  CHECK(violations == 0);

  // Every process made progress in every kind of operation.
  for (int p = 0; p < kProcesses; ++p) {
    for (const char* kind : {"msg", "read", "state", "patch", "use", "tenq", "tdone", "book",
                             "cursor", "rclaim", "sent", "session", "context", "search"}) {
      const std::int64_t n = progress[std::make_pair(p, std::string(kind))];
      CHECK_MESSAGE(n > 0, "worker " << p << " never acknowledged " << kind);
    }
  }

  // ---- messages: every acknowledged one stored exactly, counts agree ----
  {
    std::map<MessageId, Message> rows;
    for (int c = 0; c < kConversations; ++c) {
      auto conv = cs.find("soak-conv-" + std::to_string(c)).value();
      auto messages = all_messages(cs, conv.id);
      CHECK(conv.message_count == static_cast<std::int64_t>(messages.size()));
      CHECK(testing::raw_exec(db, "SELECT COUNT(*) FROM messages WHERE conversation_id = " +
                                      std::to_string(conv.id)) == std::to_string(messages.size()));
      for (auto& m : messages) rows.emplace(m.id, m);
    }
    std::map<std::string, std::vector<MessageId>> by_thread;  // "p0t1": ids in append order
    std::set<std::string> acked;
    for (const auto& l : lines) {
      if (l.words[0] != "msg") continue;
      const std::string& tag = l.words[3];
      MessageId id = num(l.words[2]);
      CHECK_MESSAGE(acked.insert(tag).second, "acknowledged twice: " << tag);
      auto it = rows.find(id);
      if (it == rows.end()) {
        FAIL_CHECK("acknowledged message lost: " << l.text);
        continue;
      }
      CHECK(it->second.content == content_of(tag));
      by_thread[tag.substr(0, tag.find('n'))].push_back(id);
    }
    for (const auto& [id, m] : rows) {
      std::string tag = m.content.substr(5, m.content.find(' ', 5) - 5);
      std::string c = std::to_string(m.conversation_id);
      bool known = acked.count(tag) > 0;
      if (!known) {
        for (int i = 0; i < kConversations; ++i) {
          known = known || unknown.count("append " + std::to_string(i) + " " + tag) > 0;
        }
      }
      CHECK_MESSAGE(known, "a message nobody appended or tried to: " << m.content);
    }
    for (const auto& [thread, ids] : by_thread) {
      for (std::size_t i = 1; i < ids.size(); ++i) {
        CHECK_MESSAGE(ids[i] > ids[i - 1], thread << "'s messages are stored out of order");
      }
    }
  }

  // ---- agent state: versions never lost, never reused, never back ----
  {
    auto& agents = store.agents();
    for (int s = 0; s < kScopes; ++s) {
      auto scope = StateScope::named("soak-scope-" + std::to_string(s));
      std::map<std::int64_t, std::string> versions;  // version -> tag ("" for a patch)
      for (const auto& l : lines) {
        const auto& w = l.words;
        if ((w[0] == "state" || w[0] == "patch") && num(w[1]) == s) {
          bool fresh = versions.emplace(num(w[2]), w[0] == "state" ? w[3] : "").second;
          CHECK_MESSAGE(fresh, "version " << w[2] << " of scope " << s << " acknowledged twice");
        }
      }
      auto current = agents.get_state(scope, "soak-agent");
      std::int64_t final_version = current ? current->version : 0;
      auto acked = static_cast<std::int64_t>(versions.size());
      CHECK(final_version >= acked);
      CHECK(final_version <= acked + unknown_state[s]);
      if (!versions.empty()) CHECK(versions.rbegin()->first <= final_version);
      for (const auto& h : agents.state_history(scope, "soak-agent")) {
        auto it = versions.find(h.version);
        if (it == versions.end() || it->second.empty()) continue;
        CHECK(h.state.value("by", "") == it->second);
        CHECK(h.state.value("v", std::int64_t{0}) == h.version);
      }
    }
    auto agent = agents.get_agent("soak-agent");
    REQUIRE(agent != nullptr);
    agents.clear_cache();
    agent = agents.get_agent("soak-agent");
    CHECK(agent->usage_count >= ops["use"]);
    CHECK(agent->usage_count <= ops["use"] + unknown_uses);
  }

  // ---- tasks: each completed once, by the holder of its last claim ----
  {
    std::map<TaskId, Task> tasks;
    for (auto& t : all_tasks(store.tasks())) tasks.emplace(t.id, t);
    std::set<std::pair<TaskId, std::int64_t>> claims;
    std::map<TaskId, std::int64_t> done;  // id -> lease
    for (const auto& l : lines) {
      const auto& w = l.words;
      if (w[0] == "tenq")
        CHECK_MESSAGE(tasks.count(num(w[1])) == 1, "enqueued task lost: " << l.text);
      if (w[0] == "tclaim") {
        CHECK_MESSAGE(claims.insert({num(w[1]), num(w[2])}).second,
                      "one lease handed to two claims: " << l.text);
      }
      if (w[0] == "tdone") {
        CHECK_MESSAGE(done.emplace(num(w[1]), num(w[2])).second, "task run twice: " << l.text);
      }
    }
    for (const auto& [id, lease] : done) {
      auto it = tasks.find(id);
      REQUIRE(it != tasks.end());
      CHECK(it->second.status == TaskStatus::completed);
      CHECK_MESSAGE(it->second.lease == lease, "task " << id << " completed by a stale lease");
      const Json& result = it->second.result;
      CHECK((result.is_object() && result.value("lease", std::int64_t{0}) == lease));
    }
    for (const auto& [id, t] : tasks) {
      if (t.status != TaskStatus::completed) continue;
      bool known = done.count(id) > 0 || unknown.count("complete " + std::to_string(id) + " " +
                                                       std::to_string(t.lease)) > 0;
      CHECK_MESSAGE(known, "task " << id << " completed without an acknowledged completion");
    }
  }

  // ---- calendar: no overlap, every acknowledged booking kept ----
  {
    std::map<EventId, std::string> booked;  // id -> "owner start end"
    std::set<EventId> unbooked;
    for (const auto& l : lines) {
      const auto& w = l.words;
      if (w[0] == "book") booked[num(w[1])] = w[2] + " " + w[3] + " " + w[4];
      if (w[0] == "unbook") unbooked.insert(num(w[1]));
    }
    for (int o = 0; o < 2; ++o) {
      auto owner = cs.find_user("soak", "owner-" + std::to_string(o)).value().id;
      auto events = all_events(store.calendar(), owner);
      for (std::size_t i = 1; i < events.size(); ++i) {
        CHECK_MESSAGE(events[i].start >= events[i - 1].end,
                      "bookings " << events[i - 1].id << " and " << events[i].id << " overlap");
      }
      for (const auto& e : events) {
        std::string span = std::to_string(o) + " " +
                           std::to_string(e.start.time_since_epoch().count()) + " " +
                           std::to_string(e.end.time_since_epoch().count());
        auto it = booked.find(e.id);
        bool known =
            (it != booked.end() && it->second == span) || unknown.count("book " + span) > 0;
        CHECK_MESSAGE(known, "event " << e.id << " (" << span << ") was never acknowledged");
      }
    }
    for (const auto& [id, span] : booked) {
      auto e = store.calendar().get(id);
      if (unbooked.count(id) > 0) {
        CHECK_MESSAGE(!e, "removed booking " << id << " is back");
      } else if (unknown.count("unbook " + std::to_string(id)) == 0) {
        CHECK_MESSAGE(e.has_value(), "acknowledged booking " << id << " lost");
      }
    }
  }

  // ---- dialogs and reviews ----
  {
    auto& rq = store.reviews();
    std::map<SuggestionId, std::int64_t> sent;
    std::set<SuggestionId> approved;
    std::set<std::pair<SuggestionId, std::int64_t>> claims;
    std::map<int, std::set<std::int64_t>> cursors;  // dialog -> acknowledged advances
    for (const auto& l : lines) {
      const auto& w = l.words;
      if (w[0] == "sent") {
        CHECK_MESSAGE(sent.emplace(num(w[1]), num(w[2])).second, "reply sent twice: " << l.text);
      }
      if (w[0] == "approve") {
        CHECK_MESSAGE(approved.insert(num(w[1])).second, "approved twice: " << l.text);
      }
      if (w[0] == "rclaim") {
        CHECK_MESSAGE(claims.insert({num(w[1]), num(w[2])}).second,
                      "one claim handed to two senders: " << l.text);
      }
      if (w[0] == "cursor") {
        int d = static_cast<int>(num(w[1]));
        CHECK_MESSAGE(cursors[d].insert(num(w[2])).second, "cursor advanced twice: " << l.text);
        auto s = rq.get(num(w[3]));
        REQUIRE_MESSAGE(s.has_value(), "the reply stored with the cursor is lost: " << l.text);
        CHECK(s->answers_message_id == "c" + w[2]);
      }
    }
    for (int d = 0; d < kDialogs; ++d) {
      auto conv = cs.find("soak-dialog-" + std::to_string(d)).value();
      auto dialog = store.dialogs().get(conv.id).value();
      std::int64_t final_cursor =
          dialog.last_message_id ? num(dialog.last_message_id->substr(1)) : 0;
      const auto& acked = cursors[d];
      std::int64_t unknown_here = 0;
      for (std::int64_t n = 1; n <= final_cursor; ++n) {
        if (acked.count(n) > 0) continue;
        CHECK_MESSAGE(unknown.count("cursor " + std::to_string(d) + " " + std::to_string(n)) > 0,
                      "dialog " << d << " advanced to c" << n << " without an acknowledgement");
        ++unknown_here;
      }
      if (!acked.empty()) CHECK(*acked.rbegin() <= final_cursor);
      int open = 0;
      for (const auto& s : rq.history(conv.id, 1000)) {
        if (s.status == ReviewStatus::pending_approval || s.status == ReviewStatus::approved ||
            s.status == ReviewStatus::failed) {
          ++open;
        }
        if (s.status == ReviewStatus::sent) {
          bool known = sent.count(s.id) > 0;
          for (const auto& [sid, claim] : claims) {
            known = known || (sid == s.id && unknown.count("send " + std::to_string(sid) + " " +
                                                           std::to_string(claim)) > 0);
          }
          CHECK_MESSAGE(known, "suggestion " << s.id << " sent without an acknowledgement");
        }
      }
      CHECK(open <= 1);
    }
    for (const auto& [sid, claim] : sent) {
      auto s = rq.get(sid);
      REQUIRE(s.has_value());
      CHECK_MESSAGE(s->status == ReviewStatus::sent, "acknowledged send of " << sid << " lost");
      CHECK(s->claim() == claim);
    }
  }

  // ---- the rate limit, counted across processes ----
  {
    std::int64_t allowed = 0, refused_hits = 0, degraded = 0;
    for (const auto& l : lines) {
      if (l.words[0] != "rate") continue;
      if (l.words[1] == "allowed") ++allowed;
      if (l.words[1] == "refused") ++refused_hits;
      if (l.words[1] == "degraded") ++degraded;
    }
    CHECK(allowed <= kRateLimit);
    if (refused_hits > 0) CHECK(allowed + degraded >= kRateLimit);
  }

  // ---- figures ----
  std::ostringstream figures;
  figures << db.backend() << ": " << kProcesses << " processes x " << kThreads << " threads, "
          << elapsed.count() / 1000.0 << " s; acknowledged:";
  for (const auto& [kind, n] : ops) figures << " " << kind << "=" << n;
  figures << "; refused:";
  for (const auto& [kind, n] : refused) figures << " " << kind << "=" << n;
  figures << "; errors:";
  for (const auto& [kind, n] : errors) figures << " " << kind << "=" << n;
  MESSAGE(figures.str());
}
