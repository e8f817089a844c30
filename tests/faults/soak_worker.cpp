// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
//
// One process of the concurrency soak (tests/faults/test_soak.cpp):
//
//   convstore_soak_worker URL PROCESS THREADS DURATION_MS PAUSE_US
//
// Opens the database that the test set up (users "soak"/"owner-0..1",
// conversations "soak-conv-0..3", dialogs on "soak-dialog-0..3", the agent
// "soak-agent", tasks of type "soak") and runs THREADS threads that mix
// every store's operations for DURATION_MS, pausing PAUSE_US between
// operations. Each thread writes one line per outcome to stdout when it
// ends (acknowledged: after the call returned; refused; failed with an
// error), and "violation ..." for anything it saw go wrong on the spot.
// The test checks the database against these lines. Exit 0 unless the
// worker itself could not run.
#include <atomic>
#include <chrono>
#include <convstore/convstore.hpp>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <map>
#include <mutex>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

using namespace convstore;
using Clock = std::chrono::steady_clock;

namespace {

constexpr int kConversations = 4;
constexpr int kDialogs = 4;
constexpr int kScopes = 3;
constexpr int kSlots = 32;  // quarter hours from kDay
const Timestamp kDay = parse_timestamp("2031-03-03T08:00:00Z");
constexpr std::chrono::minutes kSlot{15};
constexpr std::int64_t kRateLimit = 200;

// The fixture the test created, found by name.
struct Fixture {
  std::vector<UserId> owners;
  std::vector<ConversationId> conversations;
  std::vector<ConversationId> dialogs;
};

Fixture find_fixture(Store& store) {
  Fixture f;
  auto& cs = store.conversations();
  for (int i = 0; i < 2; ++i) {
    auto u = cs.find_user("soak", "owner-" + std::to_string(i));
    if (!u) throw std::runtime_error("the soak fixture is missing");
    f.owners.push_back(u->id);
  }
  for (int i = 0; i < kConversations; ++i) {
    f.conversations.push_back(cs.find("soak-conv-" + std::to_string(i)).value().id);
  }
  for (int i = 0; i < kDialogs; ++i) {
    f.dialogs.push_back(cs.find("soak-dialog-" + std::to_string(i)).value().id);
  }
  return f;
}

std::string content_of(const std::string& tag) {
  return "soak " + tag + " a message of the concurrency soak";
}

std::string scope_name(int s) { return "soak-scope-" + std::to_string(s); }

class Worker {
 public:
  Worker(Store& store, SessionCache& cache, const Fixture& f, int process, int thread,
         Clock::time_point until, std::chrono::microseconds pause)
      : store_(store),
        cache_(cache),
        f_(f),
        tag_("p" + std::to_string(process) + "t" + std::to_string(thread)),
        until_(until),
        pause_(pause),
        rng_(static_cast<unsigned>(process * 1000 + thread + 1)) {}

  void run() {
    static const char* const kinds[] = {"append", "read",   "state", "task",  "calendar",
                                        "cursor", "review", "cache", "search"};
    std::size_t step = 0;
    while (Clock::now() < until_) {
      const char* kind = kinds[step % std::size(kinds)];
      ++step;
      try {
        one(kind);
      } catch (const Error& e) {
        error(kind, e, attempt_);
      } catch (const std::exception& e) {
        out_ << "violation " << kind << " threw a non-convstore exception: " << e.what() << "\n";
      }
      attempt_.clear();
      if (pause_.count() > 0) std::this_thread::sleep_for(pause_);
    }
    out_ << "end " << tag_ << " " << step << "\n";
  }

  std::string output() const { return out_.str(); }

 private:
  std::size_t pick(std::size_t n) {
    return std::uniform_int_distribution<std::size_t>(0, n - 1)(rng_);
  }
  bool one_in(std::size_t n) { return pick(n) == 0; }

  // What a failed call was attempting, so that the test can tell an
  // unknown outcome from a lost acknowledgement.
  void error(const std::string& kind, const Error& e, const std::string& attempt) {
    std::string what = e.what();
    for (auto& ch : what) {
      if (ch == '\n') ch = ' ';
    }
    out_ << "err " << kind << " " << to_string(e.code()) << " " << (attempt.empty() ? "-" : attempt)
         << " | " << what << "\n";
  }

  void one(const std::string& kind) {
    if (kind == "append") return append();
    if (kind == "read") return read();
    if (kind == "state") return state();
    if (kind == "task") return task();
    if (kind == "calendar") return calendar();
    if (kind == "cursor") return cursor();
    if (kind == "review") return review();
    if (kind == "cache") return cache();
    search();
  }

  // ---- messages ----

  void append() {
    std::size_t c = pick(kConversations);
    std::string tag = tag_ + "n" + std::to_string(next_message_++);
    attempt_ = "append " + std::to_string(c) + " " + tag;
    NewMessage m;
    m.role = one_in(2) ? Role::user : Role::assistant;
    m.content = content_of(tag);
    m.client_key = tag;
    auto stored = store_.conversations().append(f_.conversations[c], m);
    if (stored.content != m.content || stored.conversation_id != f_.conversations[c]) {
      out_ << "violation append returned another message for " << tag << "\n";
    }
    out_ << "msg " << c << " " << stored.id << " " << tag << "\n";
    acked_.push_back({c, stored.id, tag});
  }

  void read() {
    auto& cs = store_.conversations();
    std::size_t c = pick(kConversations);
    ConversationId id = f_.conversations[c];
    HistoryQuery q;
    q.limit = 20;
    q.newest_first = true;
    MessageId last = 0;
    for (int page = 0; page < 3; ++page) {
      auto items = cs.history(id, q);
      for (const auto& m : items) {
        if (m.conversation_id != id || (last != 0 && m.id >= last)) {
          out_ << "violation history page of conversation " << c << " out of order at " << m.id
               << "\n";
        }
        last = m.id;
      }
      if (items.size() < q.limit) break;
      q.before = last;
    }
    auto recent = cs.recent(id, 10);
    for (std::size_t i = 1; i < recent.size(); ++i) {
      if (recent[i].id <= recent[i - 1].id) out_ << "violation recent() out of order\n";
    }
    if (!acked_.empty()) {
      const auto& a = acked_[pick(acked_.size())];
      auto m = cs.get_message(a.id);
      if (!m || m->content != content_of(a.tag)) {
        out_ << "violation acknowledged message " << a.tag << " (" << a.id << ") is "
             << (m ? "changed" : "missing") << "\n";
      }
    }
    out_ << "read\n";
  }

  void search() {
    auto& cs = store_.conversations();
    SearchQuery q;
    q.limit = 5;
    if (acked_.empty()) {
      q.text = "soak";
      cs.search(q);
      out_ << "search\n";
      return;
    }
    const auto& a = acked_[pick(acked_.size())];
    q.text = a.tag;
    q.conversation_id = f_.conversations[a.conversation];
    auto hits = cs.search(q);
    bool found = false;
    for (const auto& h : hits.items) found = found || h.message.id == a.id;
    if (!found) out_ << "violation search does not find acknowledged message " << a.tag << "\n";
    out_ << "search\n";
  }

  // ---- agent state ----

  void seen(int s, std::int64_t version, const char* how) {
    auto& last = seen_[s];
    if (version < last) {
      out_ << "violation " << how << " of " << scope_name(s) << " went back from version " << last
           << " to " << version << "\n";
    }
    if (version > last) last = version;
  }

  void state() {
    auto& agents = store_.agents();
    int s = static_cast<int>(pick(kScopes));
    auto scope = StateScope::named(scope_name(s));
    std::size_t r = pick(4);
    if (r < 2) {
      auto current = agents.get_state(scope, "soak-agent");
      std::int64_t v = current ? current->version : 0;
      seen(s, v, "a read");
      std::string tag = tag_ + "v" + std::to_string(next_state_++);
      attempt_ = "save " + std::to_string(s);
      try {
        auto saved = agents.save_state(scope, "soak-agent", Json{{"v", v + 1}, {"by", tag}}, v);
        if (saved.version != v + 1) {
          out_ << "violation save expecting " << v << " stored version " << saved.version << "\n";
        }
        seen(s, saved.version, "a save");
        out_ << "state " << s << " " << saved.version << " " << tag << "\n";
      } catch (const Error& e) {
        if (e.code() != ErrorCode::conflict) throw;
        out_ << "refused state\n";
      }
    } else if (r == 2) {
      attempt_ = "patch " + std::to_string(s);
      auto patched = agents.patch_state(scope, "soak-agent", Json{{"p", tag_}});
      seen(s, patched.version, "a patch");
      out_ << "patch " << s << " " << patched.version << "\n";
    } else {
      attempt_ = "use";
      auto a = agents.record_use("soak-agent");
      out_ << "use " << a.usage_count << "\n";
    }
  }

  // ---- tasks ----

  void task() {
    auto& tq = store_.tasks();
    if (one_in(3)) {
      attempt_ = "enqueue";
      NewTask t("soak", Json{{"by", tag_}});
      t.max_attempts = 1000;
      auto e = tq.enqueue(t);
      out_ << "tenq " << e.task.id << "\n";
      return;
    }
    ClaimOptions o;
    o.types = {"soak"};
    // Now and then a lease too short for the work: another worker takes the
    // task over, and this one's outcome must be refused (fencing).
    bool stall = one_in(6);
    o.lease = stall ? std::chrono::milliseconds(30) : std::chrono::milliseconds(10000);
    auto claimed = tq.claim(tag_, o);
    if (claimed.empty()) {
      out_ << "tnone\n";
      return;
    }
    const Task& t = claimed.front();
    out_ << "tclaim " << t.id << " " << t.lease << "\n";
    if (stall) std::this_thread::sleep_for(std::chrono::milliseconds(60));
    attempt_ = "complete " + std::to_string(t.id) + " " + std::to_string(t.lease);
    try {
      if (one_in(8)) {
        RetryPolicy p;
        p.base = std::chrono::milliseconds(0);
        tq.fail(t, "soak: a failed attempt", p);
        out_ << "tfail " << t.id << " " << t.lease << "\n";
      } else {
        tq.complete(t, Json{{"by", tag_}, {"lease", t.lease}});
        out_ << "tdone " << t.id << " " << t.lease << "\n";
      }
    } catch (const Error& e) {
      if (e.code() != ErrorCode::conflict) throw;
      out_ << "tstale " << t.id << " " << t.lease << "\n";
    }
  }

  // ---- calendar ----

  void calendar() {
    auto& cal = store_.calendar();
    if (!booked_.empty() && one_in(3)) {
      std::size_t i = pick(booked_.size());
      EventId id = booked_[i];
      booked_.erase(booked_.begin() + static_cast<std::ptrdiff_t>(i));
      attempt_ = "unbook " + std::to_string(id);
      if (!cal.remove(id)) {
        out_ << "violation acknowledged booking " << id << " was gone before its removal\n";
      }
      out_ << "unbook " << id << "\n";
      return;
    }
    std::size_t owner = pick(2);
    std::size_t first = pick(kSlots);
    std::size_t length = 1 + pick(3);
    if (first + length > kSlots) length = kSlots - first;
    NewEvent e;
    e.owner = f_.owners[owner];
    e.title = "soak " + tag_;
    e.start = kDay + kSlot * static_cast<int>(first);
    e.end = e.start + kSlot * static_cast<int>(length);
    BookingOptions b;
    b.refuse_conflicts = true;
    std::string span = std::to_string(owner) + " " +
                       std::to_string(e.start.time_since_epoch().count()) + " " +
                       std::to_string(e.end.time_since_epoch().count());
    attempt_ = "book " + span;
    try {
      auto stored = cal.create(e, b);
      booked_.push_back(stored.id);
      out_ << "book " << stored.id << " " << span << "\n";
    } catch (const CalendarConflict& c) {
      bool overlaps = !c.conflicts().empty();
      for (const auto& other : c.conflicts()) {
        overlaps = overlaps && other.start < e.end && e.start < other.end;
      }
      if (!overlaps) out_ << "violation a booking was refused without an overlapping event\n";
      out_ << "refused book\n";
    }
  }

  // ---- dialogs and reviews ----

  void cursor() {
    std::size_t d = pick(kDialogs);
    ConversationId conv = f_.dialogs[d];
    auto dialog = store_.dialogs().get(conv).value();
    std::int64_t n = dialog.last_message_id ? std::stoll(dialog.last_message_id->substr(1)) : 0;
    std::string next = "c" + std::to_string(n + 1);
    attempt_ = "cursor " + std::to_string(d) + " " + std::to_string(n + 1);
    // The dialog processor's step: advance the cursor and store the reply
    // in one transaction, both or neither.
    SuggestionId sid = 0;
    try {
      bool advanced = store_.transaction([&] {
        if (!store_.dialogs().advance_cursor(conv, dialog.last_message_id, next, now())) {
          return false;
        }
        NewSuggestion s;
        s.answers_message_id = next;
        s.answers_message_at = now();
        s.text = "reply " + tag_ + " to " + next;
        sid = store_.reviews().suggest(conv, s).id;
        return true;
      });
      if (!advanced) {
        out_ << "refused cursor\n";
        return;
      }
    } catch (const Error& e) {
      // The open suggestion is being sent: the whole step rolled back.
      if (e.code() != ErrorCode::conflict) throw;
      out_ << "refused cursor\n";
      return;
    }
    out_ << "cursor " << d << " " << (n + 1) << " " << sid << "\n";
  }

  void review() {
    auto& rq = store_.reviews();
    if (one_in(2)) {
      PendingQuery q;
      q.limit = 5;
      auto page = rq.pending(f_.owners[pick(2)], q);
      if (page.items.empty()) {
        out_ << "rnone\n";
        return;
      }
      SuggestionId sid = page.items[pick(page.items.size())].id;
      attempt_ = "approve " + std::to_string(sid);
      try {
        rq.approve(sid);
        out_ << "approve " << sid << "\n";
      } catch (const Error& e) {
        if (e.code() != ErrorCode::conflict) throw;
        out_ << "refused approve\n";
      }
      return;
    }
    bool stall = one_in(6);
    auto lease = stall ? std::chrono::milliseconds(30) : std::chrono::milliseconds(10000);
    auto claimed = rq.claim_to_send(tag_, 2, lease);
    if (claimed.empty()) {
      out_ << "rnone\n";
      return;
    }
    for (const auto& s : claimed) out_ << "rclaim " << s.id << " " << s.claim() << "\n";
    if (stall) std::this_thread::sleep_for(std::chrono::milliseconds(60));
    for (const auto& s : claimed) {
      attempt_ = "send " + std::to_string(s.id) + " " + std::to_string(s.claim());
      try {
        rq.mark_sent(s.id, s.claim());
        out_ << "sent " << s.id << " " << s.claim() << "\n";
      } catch (const Error& e) {
        if (e.code() != ErrorCode::conflict) throw;
        out_ << "rstale " << s.id << " " << s.claim() << "\n";
      }
      attempt_.clear();
    }
  }

  // ---- session cache (database backend) ----

  void cache() {
    std::size_t r = pick(3);
    if (r == 0) {
      RateLimit l;
      l.limit = kRateLimit;
      l.window = std::chrono::hours(24 * 30);
      l.algorithm = RateAlgorithm::token_bucket;
      auto d = cache_.hit("soak-rate", l);
      out_ << "rate " << (d.degraded ? "degraded" : d.allowed ? "allowed" : "refused") << "\n";
    } else if (r == 1) {
      std::string session = "soak-" + tag_;
      std::int64_t n = next_session_++;
      cache_.session_update(session, Json{{"n", n}, {"by", tag_}});
      auto all = cache_.session_get_all(session);
      if (!all.contains("n") || all["n"] != n) {
        out_ << "violation session " << session << " reads " << all.dump() << " after writing n "
             << n << "\n";
      }
      out_ << "session\n";
    } else {
      std::size_t c = pick(kConversations);
      auto messages = cache_.context(store_, f_.conversations[c], 10);
      for (std::size_t i = 0; i < messages.size(); ++i) {
        if (messages[i].conversation_id != f_.conversations[c] ||
            (i > 0 && messages[i].id <= messages[i - 1].id)) {
          out_ << "violation cached context of conversation " << c << " is out of order\n";
        }
      }
      out_ << "context\n";
    }
  }

  struct Acked {
    std::size_t conversation;
    MessageId id;
    std::string tag;
  };

  Store& store_;
  SessionCache& cache_;
  const Fixture& f_;
  std::string tag_;
  Clock::time_point until_;
  std::chrono::microseconds pause_;
  std::mt19937 rng_;
  std::ostringstream out_;
  std::string attempt_;
  std::vector<Acked> acked_;
  std::vector<EventId> booked_;
  std::map<int, std::int64_t> seen_;
  int next_message_ = 0;
  int next_state_ = 0;
  std::int64_t next_session_ = 0;
};

}  // namespace

int main(int argc, char** argv) {
  if (argc != 6) {
    std::cerr << "usage: convstore_soak_worker URL PROCESS THREADS DURATION_MS PAUSE_US\n";
    return 2;
  }
  try {
    const int process = std::atoi(argv[2]);
    const int threads = std::atoi(argv[3]);
    const auto duration = std::chrono::milliseconds(std::atoll(argv[4]));
    const auto pause = std::chrono::microseconds(std::atoll(argv[5]));
    Options o;
    o.pool_size = static_cast<std::size_t>(threads) + 1;
    auto store = Store::open(argv[1], o);
    CacheOptions co;
    co.key_prefix = "soak:";
    auto cache = SessionCache::database(store, co);
    cache.attach(store);
    const Fixture f = find_fixture(store);
    const auto until = Clock::now() + duration;
    std::vector<std::unique_ptr<Worker>> workers;
    for (int t = 0; t < threads; ++t) {
      workers.push_back(std::make_unique<Worker>(store, cache, f, process, t, until, pause));
    }
    std::vector<std::thread> running;
    for (auto& w : workers) running.emplace_back([&w] { w->run(); });
    for (auto& t : running) t.join();
    for (auto& w : workers) std::cout << w->output();
    std::cout.flush();
    return std::cout ? 0 : 1;
  } catch (const std::exception& e) {
    std::cerr << "soak worker: " << e.what() << "\n";
    return 1;
  }
}
