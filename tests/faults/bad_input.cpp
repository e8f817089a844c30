// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#include "faults/bad_input.hpp"

#include <libpq-fe.h>
#include <sqlite3.h>

#include <chrono>
#include <convstore/convstore.hpp>
#include <cstdint>
#include <exception>
#include <memory>
#include <string>
#include <vector>

namespace bad_input {

using namespace convstore;

const std::string& big_text() {
  static const std::string text = [] {
    std::string s;
    const std::size_t size = 10 * 1024 * 1024;
    s.reserve(size + 16);
    std::uint64_t x = 88172645463325252ULL;  // xorshift: words that rarely repeat
    static const char letters[] = "abcdefghijklmnopqrstuvwxyz0123456789";
    while (s.size() < size) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      const std::size_t len = 3 + x % 7;
      for (std::size_t i = 0; i < len; ++i) s += letters[(x >> (6 + 5 * i)) % 36];
      s += ' ';
    }
    s.resize(size);
    s.back() = 'z';
    return s;
  }();
  return text;
}

std::vector<TextValue> text_values(bool with_big) {
  using K = TextKind;
  std::vector<TextValue> v = {
      {"invalid byte 0xff",
       "ab\xff"
       "cd",
       K::bad_utf8, true},
      {"truncated sequence", "abc\xe2\x82", K::bad_utf8, true},
      {"overlong slash", "\xc0\xaf", K::bad_utf8, false},
      {"surrogate", "x\xed\xa0\x80", K::bad_utf8, true},
      {"past U+10FFFF", "\xf4\x90\x80\x80", K::bad_utf8, false},
      {"lone continuation", "\x80y", K::bad_utf8, true},
      {"embedded NUL", std::string("before\0after", 12), K::nul, true},
      {"only NUL", std::string(1, '\0'), K::nul, false},
      {"drop table", "'; DROP TABLE messages; --", K::injection, true},
      {"percent", "%", K::injection, false},
      {"underscore", "_", K::injection, false},
      {"backslash", "\\", K::injection, false},
      {"dollar param", "$1", K::injection, true},
      {"or 1=1", "' OR 1=1 --", K::injection, true},
      {"quotes", "\"a\" AND NOT \"b\" OR c*", K::injection, true},
      {"fts syntax", "NEAR(x y) col:z ^start -minus", K::injection, true},
      {"question mark", "? :name @p", K::injection, true},
      {"format", "%s%n{}{0}", K::injection, true},
      {"escaped nul text", "\\0 \\x00 \\u0000", K::injection, true},
      {"unicode",
       "\xf0\x9f\x98\x80 \xc3\x9cn\xc3\xaf"
       "c\xc3\xb8"
       "d\xc3\xa9 \xd8\xb3\xd9\x84\xd8\xa7\xd9\x85",
       K::injection, true},
      {"newline and tab", "line1\nline2\tcol\r", K::control, true},
      {"empty", "", K::empty, false},
  };
  if (with_big) v.push_back({"10 MB", big_text(), K::big, true});
  return v;
}

Fixture::Fixture(const testing::TestDb& db_) : db(db_), store(db_.open()) {
  auto& cs = store.conversations();
  user = cs.upsert_user(UserUpsert("telegram", "u1")).id;
  NewConversation nc;
  nc.user_id = user;
  nc.channel = "telegram";
  nc.chat_id = "chat-1";
  nc.key = "base";
  conversation = cs.start(nc).id;
  NewMessage m = testing::text("hello world");
  m.platform_message_id = "p1";
  message = cs.append(conversation, m).id;
  question = cs.ask(conversation, NewQuestion("agent-1", "which amount?")).id;

  NewAgent a;
  a.id = agent;
  a.name = "Agent";
  store.agents().create_agent(a);
  store.agents().save_state(StateScope::named("s1"), agent, Json{{"n", 1}});

  NewEvent e;
  e.title = "standup";
  e.start = parse_timestamp("2030-01-07T09:00:00Z");
  e.end = parse_timestamp("2030-01-07T09:30:00Z");
  event = store.calendar().create(e).id;

  task = store.tasks().enqueue(NewTask("base")).task.id;
  ClaimOptions co;
  co.types = {"claimed"};
  store.tasks().enqueue(NewTask("claimed"));
  auto claimed = store.tasks().claim("worker-1", co);
  REQUIRE(claimed.size() == 1);
  claimed_task = claimed[0].id;
  claimed_lease = claimed[0].lease;

  NewOperationTemplate t;
  t.kind = "expense";
  t.name = "lunch";
  t.sample_input = "lunch 12";
  t.expected_output = Json{{"amount", 12}};
  template_id = store.templates().add(t).id;

  store.dialogs().configure(conversation);
  NewSuggestion s;
  s.answers_message_id = "p1";
  s.answers_message_at = parse_timestamp("2030-01-07T08:00:00Z");
  s.text = "sure";
  suggestion = store.reviews().suggest(conversation, s).id;

  key = SecretKey::generate();
  store.credentials().put(user, "telegram", "secret", *key);
  web_session = store.web_sessions().issue(user).session.id;
}

std::string Fixture::fresh(const std::string& prefix) {
  return prefix + "-" + std::to_string(++counter_);
}

std::string same(const std::string& got, const std::string& want, const std::string& what) {
  if (got == want) return ok;
  return "mismatch: " + what + " read back as " + std::to_string(got.size()) + " bytes, not " +
         std::to_string(want.size());
}

namespace {

// One open connection to the test database, for the counts.
class Counter {
 public:
  explicit Counter(const testing::TestDb& db) : url_(db.url()), sqlite_(db.backend() == "sqlite") {
    const std::string names = testing::raw_exec(
        db, sqlite_ ? "SELECT group_concat(name, ',') FROM (SELECT name FROM sqlite_master "
                      "WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND sql NOT LIKE "
                      "'CREATE VIRTUAL%' ORDER BY name)"
                    : "SELECT string_agg(table_name, ',' ORDER BY table_name) FROM "
                      "information_schema.tables WHERE table_schema = current_schema() "
                      "AND table_type = 'BASE TABLE'");
    sql_ = "SELECT ''";
    std::size_t start = 0;
    while (start < names.size()) {
      std::size_t end = names.find(',', start);
      if (end == std::string::npos) end = names.size();
      const std::string t = names.substr(start, end - start);
      sql_ += " || '" + t + "=' || (SELECT COUNT(*) FROM " + t + ") || ','";
      start = end + 1;
    }
    if (sqlite_) {
      REQUIRE(sqlite3_open(url_.substr(7).c_str(), &lite_) == SQLITE_OK);
      sqlite3_busy_timeout(lite_, 10000);
    } else {
      pg_ = PQconnectdb(url_.c_str());
      REQUIRE(PQstatus(pg_) == CONNECTION_OK);
    }
  }
  ~Counter() {
    if (lite_ != nullptr) sqlite3_close(lite_);
    if (pg_ != nullptr) PQfinish(pg_);
  }
  Counter(const Counter&) = delete;
  Counter& operator=(const Counter&) = delete;

  const std::string& url() const { return url_; }

  std::string counts() {
    std::string out;
    if (sqlite_) {
      sqlite3_stmt* st = nullptr;
      int rc = sqlite3_prepare_v2(lite_, sql_.c_str(), -1, &st, nullptr);
      if (rc == SQLITE_OK) rc = sqlite3_step(st);
      if (rc == SQLITE_ROW) out = reinterpret_cast<const char*>(sqlite3_column_text(st, 0));
      sqlite3_finalize(st);
      REQUIRE_MESSAGE(rc == SQLITE_ROW, sqlite3_errmsg(lite_));
      return out;
    }
    PGresult* r = PQexec(pg_, sql_.c_str());
    const bool ok_ = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1;
    if (ok_) out = PQgetvalue(r, 0, 0);
    PQclear(r);
    REQUIRE_MESSAGE(ok_, PQerrorMessage(pg_));
    return out;
  }

 private:
  std::string url_;
  bool sqlite_;
  std::string sql_;
  sqlite3* lite_ = nullptr;
  PGconn* pg_ = nullptr;
};

}  // namespace

thread_local std::unique_ptr<Counter> counter;

void table_counts_close() { counter.reset(); }

std::string table_counts(const testing::TestDb& db) {
  if (!counter || counter->url() != db.url()) {
    counter.reset();
    counter = std::make_unique<Counter>(db);
  }
  return counter->counts();
}

void Fixture::snapshot() { counts_ = table_counts(db); }

std::vector<std::string> run_cases(Fixture& f, const std::vector<Case>& cases) {
  std::vector<std::string> outcomes;
  outcomes.reserve(cases.size());
  bool counted = false;  // f.counts() is still the database's
  for (const auto& c : cases) {
    if (!counted) f.snapshot();
    counted = false;
    std::string got;
    bool threw = false;
    try {
      got = c.call();
    } catch (const Error& e) {
      threw = true;
      got = std::string(to_string(e.code()));
      if (got != c.expected) got += std::string(" (") + e.what() + ")";
    } catch (const std::exception& e) {
      threw = true;
      got = std::string("crash: not a convstore::Error: ") + e.what();
    }
    const std::string label = f.db.backend() + ": " + c.op + " / " + c.value;
    CHECK_MESSAGE(got == c.expected, label << ": expected " << c.expected << ", got " << got);
    if (threw) {
      const std::string after = table_counts(f.db);
      counted = after == f.counts();
      CHECK_MESSAGE(counted, label << ": a call that threw changed row counts\nbefore "
                                   << f.counts() << "\nafter  " << after);
    }
    outcomes.push_back(c.op + " / " + c.value + " -> " +
                       got.substr(0, got.find(" (")));  // the category, not the message
  }
  return outcomes;
}

void on_both_backends(const std::function<std::vector<Case>(Fixture&)>& make_cases) {
  std::vector<std::vector<std::string>> results;
  for (const char* backend : {"sqlite", "postgresql"}) {
    testing::TestDb db(backend);
    if (!db.ready()) continue;
    const auto start = std::chrono::steady_clock::now();
    {
      Fixture f(db);
      results.push_back(run_cases(f, make_cases(f)));
    }
    table_counts_close();
    MESSAGE(std::string(backend) << ": " << results.back().size() << " cases in "
                                 << std::chrono::duration_cast<std::chrono::milliseconds>(
                                        std::chrono::steady_clock::now() - start)
                                        .count()
                                 << " ms");
  }
  if (results.size() < 2) return;
  const auto& a = results[0];
  const auto& b = results[1];
  REQUIRE(a.size() == b.size());
  int differences = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (a[i] != b[i]) {
      ++differences;
      CHECK_MESSAGE(a[i] == b[i], "backends differ: sqlite " << a[i] << " | postgresql " << b[i]);
    }
  }
  CHECK(differences == 0);
}

}  // namespace bad_input
