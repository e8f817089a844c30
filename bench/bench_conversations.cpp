// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
//
// The standard workloads of DESIGN.md for the ConversationStore, each on
// convstore and on a baseline written directly on sqlite3 / libpq:
//   W1    100 conversations x 100 messages, round-robin, one commit per message
//   W1b   the same in batches of 100 (one commit per batch)
//   W2    2,000 x 100 messages prefilled; 5,000 loads of the last 50 messages
//   list  a user with 10,000 conversations: first page, and page 50 by cursor
//
//   W3    1,000 agent-state keys: 10,000 upserts of ~1 KB, 10,000 reads;
//         cached agent reads
//   W4    100,000 calendar events over a year; 5,000 "what overlaps [t, t+1h)"
//   W4r   W4 plus 500 open-ended recurring events
//
//   convstore_bench [--pg URL] [--no-sqlite] [--dir DIR] [--only w1|w2|list|w3|w4|w4r]
//                   [--repeat N] [--quick]
#include <libpq-fe.h>

#include <algorithm>
#include <convstore/convstore.hpp>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <random>

#include "baseline.hpp"
#include "harness.hpp"

using namespace convstore;
using bench::Clock;

namespace {

struct Scale {
  int w1_conversations = 100, w1_messages = 100;
  int w2_conversations = 2000, w2_messages = 100, w2_loads = 5000;
  int list_conversations = 10000, list_runs = 500;
  int w3_keys = 1000, w3_ops = 10000;
  int w4_events = 100000, w4_queries = 5000;
};

// A fresh database for one workload and how to reach it from both sides.
struct Target {
  std::string url;  // for Store::open
  std::string raw;  // sqlite path or libpq conninfo
  bool sqlite = true;
};

class Databases {
 public:
  Databases(std::string dir, std::string pg) : dir_(std::move(dir)), pg_(std::move(pg)) {}
  ~Databases() {
    for (const auto& s : schemas_) admin("DROP SCHEMA IF EXISTS " + s + " CASCADE");
  }
  Target fresh(bool sqlite, const std::string& name) {
    if (sqlite) {
      auto path = std::filesystem::path(dir_) / (name + ".db");
      for (const char* suffix : {"", "-wal", "-shm"}) {
        std::filesystem::remove(path.string() + suffix);
      }
      return {"sqlite:" + path.string(), path.string(), true};
    }
    std::string schema = "bench_" + name;
    admin("DROP SCHEMA IF EXISTS " + schema + " CASCADE");
    admin("CREATE SCHEMA " + schema);
    schemas_.push_back(schema);
    std::string url = pg_ + (pg_.find('?') == std::string::npos ? "?" : "&") +
                      "options=-csearch_path%3D" + schema;
    return {url, url, false};
  }

 private:
  void admin(const std::string& sql) {
    PGconn* c = PQconnectdb(pg_.c_str());
    PQsetNoticeProcessor(
        c, [](void*, const char*) {}, nullptr);
    PQclear(PQexec(c, sql.c_str()));
    PQfinish(c);
  }
  std::string dir_, pg_;
  std::vector<std::string> schemas_;
};

std::unique_ptr<bench::Baseline> baseline(const Target& t) {
  return t.sqlite ? bench::sqlite_baseline(t.raw, true) : bench::postgresql_baseline(t.raw);
}

std::vector<ConversationId> start_conversations(Store& store, int n, std::optional<UserId> user) {
  std::vector<ConversationId> ids;
  store.transaction([&] {
    for (int i = 0; i < n; ++i) {
      NewConversation c;
      c.user_id = user;
      c.channel = "bench";
      ids.push_back(store.conversations().start(c).id);
    }
  });
  return ids;
}

const Json metadata = Json::parse(bench::kMetadata);

NewMessage w1_message(int i) {
  NewMessage m;
  m.content = bench::message_content(i);
  m.metadata = Json::parse(bench::kMetadata);
  return m;
}

// W1 / W1b: messages per second. convstore and the baseline write to two
// databases of their own, interleaved call by call, so that drift in the
// machine (disk, other load) reaches both alike.
std::vector<bench::Row> run_w1(Databases& dbs, bool sqlite, const Scale& s) {
  const int total = s.w1_conversations * s.w1_messages;
  auto setup = [&](const std::string& name) {
    auto t = dbs.fresh(sqlite, name);
    auto store = Store::open(t.url);
    return std::make_pair(t, start_conversations(store, s.w1_conversations, std::nullopt));
  };
  double cs_single = 0, raw_single = 0, cs_batch = 0, raw_batch = 0;
  {
    auto [cs_db, cs_ids] = setup("w1_convstore");
    auto [raw_db, raw_ids] = setup("w1_raw");
    auto store = Store::open(cs_db.url);
    auto raw = baseline(raw_db);
    for (int i = 0; i < s.w1_messages; ++i) {
      for (std::size_t c = 0; c < cs_ids.size(); ++c) {
        NewMessage m = w1_message(i);
        auto t0 = Clock::now();
        store.conversations().append(cs_ids[c], m);
        cs_single += bench::seconds_since(t0);
        std::string content = bench::message_content(i);
        t0 = Clock::now();
        raw->append(raw_ids[c], content, metadata);
        raw_single += bench::seconds_since(t0);
      }
    }
  }
  {
    auto [cs_db, cs_ids] = setup("w1b_convstore");
    auto [raw_db, raw_ids] = setup("w1b_raw");
    auto store = Store::open(cs_db.url);
    auto raw = baseline(raw_db);
    std::vector<NewMessage> batch;
    std::vector<std::string> contents;
    for (int i = 0; i < s.w1_messages; ++i) {
      batch.push_back(w1_message(i));
      contents.push_back(bench::message_content(i));
    }
    for (std::size_t c = 0; c < cs_ids.size(); ++c) {
      auto t0 = Clock::now();
      store.conversations().append_batch(cs_ids[c], batch);
      cs_batch += bench::seconds_since(t0);
      t0 = Clock::now();
      raw->append_batch(raw_ids[c], contents, metadata);
      raw_batch += bench::seconds_since(t0);
    }
  }
  return {{"W1 append", "(msg/s)", total / cs_single, total / raw_single},
          {"W1b append, batches of 100", "(msg/s)", total / cs_batch, total / raw_batch}};
}

// W1 and W1b depend on the disk's fsync, which varies from run to run: the
// workload runs `repeat` times on fresh databases and each figure is the
// median.
std::vector<bench::Row> run_w1_median(Databases& dbs, bool sqlite, const Scale& s, int repeat) {
  std::vector<std::vector<bench::Row>> runs;
  for (int i = 0; i < repeat; ++i) runs.push_back(run_w1(dbs, sqlite, s));
  std::vector<bench::Row> out = runs.front();
  for (std::size_t r = 0; r < out.size(); ++r) {
    std::vector<double> cs, raw;
    for (const auto& run : runs) {
      cs.push_back(run[r].convstore);
      raw.push_back(run[r].baseline);
    }
    std::sort(cs.begin(), cs.end());
    std::sort(raw.begin(), raw.end());
    out[r].convstore = cs[cs.size() / 2];
    out[r].baseline = raw[raw.size() / 2];
    out[r].metric += " median of " + std::to_string(repeat);
  }
  return out;
}

// W2: latency of loading the last 50 messages of a random conversation.
std::vector<bench::Row> run_w2(Databases& dbs, bool sqlite, const Scale& s) {
  auto t = dbs.fresh(sqlite, "w2");
  auto store = Store::open(t.url);
  auto ids = start_conversations(store, s.w2_conversations, std::nullopt);
  std::vector<NewMessage> batch;
  for (int i = 0; i < s.w2_messages; ++i) batch.push_back(w1_message(i));
  for (auto id : ids) store.conversations().append_batch(id, batch);
  auto raw = baseline(t);
  std::mt19937 rng(42);
  std::uniform_int_distribution<std::size_t> pick(0, ids.size() - 1);
  bench::Samples cs, base;
  std::size_t got = 0;
  for (int i = 0; i < s.w2_loads; ++i) {
    auto id = ids[pick(rng)];
    auto run_cs = [&] {
      auto t0 = Clock::now();
      got += store.conversations().recent(id, 50).size();
      cs.add(t0);
    };
    auto run_raw = [&] {
      auto t0 = Clock::now();
      got += raw->recent(id, 50).size();
      base.add(t0);
    };
    bench::in_turns(i, run_cs, run_raw);
  }
  if (got != static_cast<std::size_t>(s.w2_loads) * 100) std::cerr << "W2: short reads\n";
  return {{"W2 last 50 messages", "p50 (us)", cs.percentile(50), base.percentile(50)},
          {"W2 last 50 messages", "p99 (us)", cs.percentile(99), base.percentile(99)}};
}

// Listing at scale: first page and page 50 of a user's 10,000 conversations.
std::vector<bench::Row> run_list(Databases& dbs, bool sqlite, const Scale& s) {
  auto t = dbs.fresh(sqlite, "list");
  auto store = Store::open(t.url);
  auto& cs = store.conversations();
  auto user = cs.upsert_user({"bench", "heavy"});
  start_conversations(store, s.list_conversations, user.id);
  start_conversations(store, s.list_conversations / 10, cs.upsert_user({"bench", "other"}).id);
  auto raw = baseline(t);
  ConversationFilter f;
  f.user_id = user.id;
  f.limit = 20;
  // The cursor of page 50.
  ConversationFilter f50 = f;
  Conversation last_of_49;
  for (int page = 1; page < 50; ++page) {
    auto p = cs.list(f50);
    last_of_49 = p.items.back();
    f50.cursor = p.next_cursor;
  }
  std::string after_time = to_iso8601(last_of_49.updated_at);
  bench::Samples first, first_raw, fifty, fifty_raw;
  for (int i = 0; i < s.list_runs; ++i) {
    auto t0 = Clock::now();
    auto a = cs.list(f);
    first.add(t0);
    t0 = Clock::now();
    auto b = raw->list(user.id, "", 0, 21);
    first_raw.add(t0);
    t0 = Clock::now();
    auto c = cs.list(f50);
    fifty.add(t0);
    t0 = Clock::now();
    auto d = raw->list(user.id, after_time, last_of_49.id, 21);
    fifty_raw.add(t0);
    if (a.items.size() != 20 || c.items.size() != 20 || b.size() != 21 || d.size() != 21 ||
        c.items.front().id != d.front().id) {
      std::cerr << "list: pages disagree\n";
    }
  }
  return {{"list first page of 10k", "p50 (us)", first.percentile(50), first_raw.percentile(50)},
          {"list page 50 by cursor", "p50 (us)", fifty.percentile(50), fifty_raw.percentile(50)}};
}

// W3: 1,000 (session, agent) keys; 10,000 upserts of a ~1 KB state, each
// committed; 10,000 reads. convstore keeps no history here (the baseline
// keeps none); cached agent reads against the raw row read they save.
Json w3_state(int i) {
  Json s = Json::object();
  s["turn"] = i;
  s["intent"] = "schedule_meeting";
  s["slots"] = {{"date", "2026-11-24"}, {"time", "15:00"}, {"duration", 45}};
  for (int k = 0; s.dump().size() < 1000; ++k) {
    s["note_" + std::to_string(k)] = "remember what the user said about it, " + std::to_string(k);
  }
  return s;
}

std::vector<bench::Row> run_w3(Databases& dbs, bool sqlite, const Scale& s) {
  const int keys = s.w3_keys, ops = s.w3_ops;
  auto cs_db = dbs.fresh(sqlite, "w3_convstore");
  auto raw_db = dbs.fresh(sqlite, "w3_raw");
  Options o;
  o.state_history = 0;
  auto store = Store::open(cs_db.url, o);
  Store::open(raw_db.url).agents();  // creates the schema for the baseline
  auto raw = baseline(raw_db);
  auto& ag = store.agents();
  std::vector<Json> states;
  for (int i = 0; i < 16; ++i) states.push_back(w3_state(i));
  double cs_w = 0, raw_w = 0, cs_r = 0, raw_r = 0;
  for (int i = 0; i < ops; ++i) {
    std::string key = "session-" + std::to_string(i % keys);
    const Json& state = states[static_cast<std::size_t>(i) % states.size()];
    auto t0 = Clock::now();
    ag.save_state(StateScope::session(key), "planner", state);
    cs_w += bench::seconds_since(t0);
    t0 = Clock::now();
    raw->upsert_state(key, "planner", state);
    raw_w += bench::seconds_since(t0);
  }
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> pick(0, keys - 1);
  std::size_t sizes = 0;
  for (int i = 0; i < ops; ++i) {
    std::string key = "session-" + std::to_string(pick(rng));
    auto run_cs = [&] {
      auto t0 = Clock::now();
      sizes += ag.load_state(StateScope::session(key), "planner").size();
      cs_r += bench::seconds_since(t0);
    };
    auto run_raw = [&] {
      auto t0 = Clock::now();
      sizes += raw->load_state(key, "planner").size();
      raw_r += bench::seconds_since(t0);
    };
    bench::in_turns(i, run_cs, run_raw);
  }
  if (sizes == 0) std::cerr << "W3: empty reads\n";
  // Cached agent reads.
  NewAgent n;
  n.id = "planner";
  n.persona.personality = "careful";
  n.config = {{"model", "gpt-4o"}, {"temperature", 0.1}};
  n.tools = {"calendar", "search"};
  ag.create_agent(n);
  Store::open(raw_db.url).agents().create_agent(n);
  bench::Samples cached, direct;
  for (int i = 0; i < 20000; ++i) {
    auto t0 = Clock::now();
    auto a = ag.get_agent("planner");
    cached.add(t0);
    if (!a) std::cerr << "W3: agent missing\n";
  }
  for (int i = 0; i < 2000; ++i) {
    auto t0 = Clock::now();
    raw->load_agent_config("planner");
    direct.add(t0);
  }
  // The same upserts with the default history (10 versions kept), against
  // the baseline's figure above (which keeps none).
  auto hist_db = dbs.fresh(sqlite, "w3_history");
  auto with_history = Store::open(hist_db.url);
  double cs_h = 0;
  for (int i = 0; i < ops; ++i) {
    std::string key = "session-" + std::to_string(i % keys);
    auto t0 = Clock::now();
    with_history.agents().save_state(StateScope::session(key), "planner",
                                     states[static_cast<std::size_t>(i) % states.size()]);
    cs_h += bench::seconds_since(t0);
  }
  return {{"W3 state upsert", "(ops/s)", ops / cs_w, ops / raw_w},
          {"W3 state upsert, keeping 10 versions", "(ops/s)", ops / cs_h, ops / raw_w},
          {"W3 state read", "(ops/s)", ops / cs_r, ops / raw_r},
          {"cached get_agent vs raw row read", "p50 (us)", cached.percentile(50),
           direct.percentile(50)}};
}

// W4: 100,000 events over one year, 15-120 minutes each; 5,000 queries
// "what overlaps [t, t+1h)" at random t. With `series` > 0 (W4r), as many
// open-ended recurring events (daily, weekdays, weekly, monthly) as well,
// in Europe/Berlin, whose occurrences the queries also see; the raw
// baseline then still reads only the single events (the raw client has no
// recurrence), so its figure is the floor, not the same work.
std::vector<bench::Row> run_w4(Databases& dbs, bool sqlite, const Scale& s, int series = 0) {
  auto t = dbs.fresh(sqlite, series > 0 ? "w4r" : "w4");
  auto store = Store::open(t.url);
  auto& cal = store.calendar();
  UserId owner = store.conversations().upsert_user({"bench", "calendar"}).id;
  const Timestamp year = parse_timestamp("2026-01-01T00:00:00Z");
  const auto year_us = std::chrono::microseconds(std::chrono::hours(24 * 365));
  std::mt19937_64 rng(11);
  std::uniform_int_distribution<long long> when(0, year_us.count());
  std::uniform_int_distribution<int> minutes(15, 120);
  for (int done = 0; done < s.w4_events;) {
    store.transaction([&] {
      for (int i = 0; i < 1000 && done < s.w4_events; ++i, ++done) {
        NewEvent e;
        e.owner = owner;
        e.title = "event " + std::to_string(done);
        e.start = year + std::chrono::microseconds(when(rng));
        e.end = e.start + std::chrono::minutes(minutes(rng));
        cal.create(e);
      }
    });
  }
  const char* const rules[] = {"FREQ=DAILY", "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR", "FREQ=WEEKLY",
                               "FREQ=MONTHLY;BYMONTHDAY=15", "FREQ=WEEKLY;INTERVAL=2;BYDAY=TU"};
  store.transaction([&] {
    for (int i = 0; i < series; ++i) {
      NewEvent e;
      e.owner = owner;
      e.title = "series " + std::to_string(i);
      e.start = year - std::chrono::hours(24 * 30) + std::chrono::microseconds(when(rng) / 12);
      e.end = e.start + std::chrono::minutes(minutes(rng));
      e.time_zone = "Europe/Berlin";
      e.rrule = rules[i % 5];
      cal.create(e);
    }
  });
  auto raw = baseline(t);
  bench::Samples cs, base;
  long long seen = 0;
  for (int i = 0; i < s.w4_queries; ++i) {
    Timestamp from = year + std::chrono::microseconds(when(rng));
    Timestamp to = from + std::chrono::hours(1);
    auto run_cs = [&] {
      auto t0 = Clock::now();
      seen += static_cast<long long>(cal.conflicts(owner, from, to).size());
      cs.add(t0);
    };
    auto run_raw = [&] {
      auto t0 = Clock::now();
      seen -= static_cast<long long>(raw->overlapping(owner, from, to));
      base.add(t0);
    };
    bench::in_turns(i, run_cs, run_raw);
  }
  if (series == 0) {
    if (seen != 0) std::cerr << "W4: convstore and the baseline disagree\n";
    return {{"W4 what overlaps [t, t+1h), 100k events", "p50 (us)", cs.percentile(50),
             base.percentile(50)},
            {"W4 the same", "p99 (us)", cs.percentile(99), base.percentile(99)}};
  }
  std::cerr << "W4r: occurrences of series per query: " << static_cast<double>(seen) / s.w4_queries
            << "\n";
  return {{"W4r the same, + 500 open-ended series (baseline: singles only)", "p50 (us)",
           cs.percentile(50), base.percentile(50)},
          {"W4r the same", "p99 (us)", cs.percentile(99), base.percentile(99)}};
}

}  // namespace

int main(int argc, char** argv) {
  std::string pg, dir = std::filesystem::temp_directory_path() / "convstore_bench";
  bool run_sqlite = true;
  Scale scale;
  std::string only;
  int repeat = 3;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--pg" && i + 1 < argc) {
      pg = argv[++i];
    } else if (a == "--dir" && i + 1 < argc) {
      dir = argv[++i];
    } else if (a == "--no-sqlite") {
      run_sqlite = false;
    } else if (a == "--only" && i + 1 < argc) {
      only = argv[++i];
    } else if (a == "--repeat" && i + 1 < argc) {
      repeat = std::max(1, std::atoi(argv[++i]));
    } else if (a == "--quick") {
      scale = Scale{10, 100, 200, 100, 500, 2000, 100, 100, 1000, 10000, 500};
    } else {
      std::cerr << "usage: convstore_bench [--pg URL] [--no-sqlite] [--dir DIR] [--only "
                   "w1|w2|list|w3|w4|w4r] [--repeat N] [--quick]\n";
      return 2;
    }
  }
  if (pg.empty()) {
    if (const char* env = std::getenv("CONVSTORE_TEST_PG_URL")) pg = env;
  }
  std::filesystem::create_directories(dir);
  try {
    Databases dbs(dir, pg);
    for (bool sqlite : {true, false}) {
      if (sqlite && !run_sqlite) continue;
      if (!sqlite && pg.empty()) {
        std::cout << "\npostgresql: skipped (no --pg URL and no CONVSTORE_TEST_PG_URL)\n";
        continue;
      }
      std::vector<bench::Row> rows;
      auto add = [&](std::vector<bench::Row> r) { rows.insert(rows.end(), r.begin(), r.end()); };
      if (only.empty() || only == "w1") add(run_w1_median(dbs, sqlite, scale, repeat));
      if (only.empty() || only == "w2") add(run_w2(dbs, sqlite, scale));
      if (only.empty() || only == "list") add(run_list(dbs, sqlite, scale));
      if (only.empty() || only == "w3") add(run_w3(dbs, sqlite, scale));
      if (only.empty() || only == "w4") add(run_w4(dbs, sqlite, scale));
      if (only.empty() || only == "w4r") add(run_w4(dbs, sqlite, scale, 500));
      bench::print_rows(sqlite ? "sqlite" : "postgresql", rows);
    }
  } catch (const std::exception& e) {
    std::cerr << "convstore_bench: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
