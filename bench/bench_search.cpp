// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
//
// Full-text search over messages, for information (no raw baseline): on
// each backend,
//   load     200,000 messages of Zipf-distributed words from a 5,000-word
//            vocabulary, 5..40 words each, over 2,000 conversations of 200
//            users, appended in batches of 100: messages per second
//   search   one-word queries (limit 20, snippets included) for words of
//            three frequencies: frequent (vocabulary ranks 10..50), middle
//            (200..1,000) and rare (2,000..5,000): p50 / p95 / p99 latency
//            and the average number of matching messages (of 5 of them)
//   writes   what the index costs an append: messages per second of
//            append (one commit each) and append_batch (100 per batch) on
//            a database with the index and on one where it was dropped
//
//   convstore_bench_search [--pg URL] [--no-sqlite] [--dir DIR]
//                          [--messages N] [--queries N] [--quick] [--keep]
// The PostgreSQL URL defaults to $CONVSTORE_TEST_PG_URL; each run uses a
// schema of its own, dropped at the end.
#include <libpq-fe.h>
#include <sqlite3.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <convstore/convstore.hpp>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "harness.hpp"

using namespace convstore;
using bench::Clock;

namespace {

struct Target {
  std::string url;
  std::string schema;  // PostgreSQL
  std::string path;    // SQLite
};

void pg_admin(const std::string& pg, const std::string& sql) {
  PGconn* c = PQconnectdb(pg.c_str());
  PQsetNoticeProcessor(
      c, [](void*, const char*) {}, nullptr);
  PGresult* r = PQexec(c, sql.c_str());
  if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK) {
    std::string e = PQerrorMessage(c);
    PQclear(r);
    PQfinish(c);
    throw std::runtime_error(sql + ": " + e);
  }
  PQclear(r);
  PQfinish(c);
}

Target fresh(bool sqlite, const std::string& dir, const std::string& pg, const std::string& name) {
  if (sqlite) {
    auto path = std::filesystem::path(dir) / (name + ".db");
    for (const char* suffix : {"", "-wal", "-shm"}) std::filesystem::remove(path.string() + suffix);
    return {"sqlite:" + path.string(), "", path.string()};
  }
  std::string schema = "bench_search_" + name;
  pg_admin(pg, "DROP SCHEMA IF EXISTS " + schema + " CASCADE");
  pg_admin(pg, "CREATE SCHEMA " + schema);
  return {
      pg + (pg.find('?') == std::string::npos ? "?" : "&") + "options=-csearch_path%3D" + schema,
      schema, ""};
}

// Removes the search index of a migrated database (for the write-cost
// comparison only).
void drop_index(const Target& t, const std::string& pg) {
  if (!t.path.empty()) {
    sqlite3* db = nullptr;
    sqlite3_open(t.path.c_str(), &db);
    char* err = nullptr;
    int rc = sqlite3_exec(db,
                          "DROP TRIGGER messages_fts_insert; DROP TRIGGER messages_fts_delete; "
                          "DROP TRIGGER messages_fts_update; DROP TABLE messages_fts;",
                          nullptr, nullptr, &err);
    std::string e = err ? err : "";
    sqlite3_free(err);
    sqlite3_close(db);
    if (rc != SQLITE_OK) throw std::runtime_error("dropping the index: " + e);
  } else {
    pg_admin(pg, "ALTER TABLE " + t.schema + ".messages DROP COLUMN search");
  }
}

// A vocabulary of pronounceable made-up words (distinct, 2..4 syllables),
// ranked: word i has Zipf weight 1 / (i + 1).
struct Vocabulary {
  std::vector<std::string> words;
  std::discrete_distribution<int> zipf;

  explicit Vocabulary(int n) {
    static const char* const cons[] = {"b", "c", "d", "f", "g", "k",  "l",  "m",  "n",  "p",
                                       "r", "s", "t", "v", "z", "ch", "sh", "th", "br", "st"};
    static const char* const vows[] = {"a", "e", "i", "o", "u", "ai", "ou", "ea"};
    std::vector<double> weights;
    for (int i = 0; i < n; ++i) {
      std::string w;
      int x = i;
      int syllables = 2 + i % 3;
      for (int s = 0; s < syllables; ++s) {
        w += cons[x % 20];
        x /= 20;
        w += vows[(x + s) % 8];
        x /= 2;
      }
      words.push_back(w);
      weights.push_back(1.0 / (i + 1));
    }
    // Distinct words: suffix the rank where a spelling repeats.
    std::set<std::string> seen;
    for (std::size_t i = 0; i < words.size(); ++i) {
      if (!seen.insert(words[i]).second) {
        words[i] += "x" + std::to_string(i);
        seen.insert(words[i]);
      }
    }
    zipf = std::discrete_distribution<int>(weights.begin(), weights.end());
  }

  std::string sentence(std::mt19937& rng) {
    std::uniform_int_distribution<int> len(5, 40);
    int n = len(rng);
    std::string s;
    for (int i = 0; i < n; ++i) {
      if (i > 0) s += (i % 9 == 0) ? ". " : " ";
      std::string w = words[static_cast<std::size_t>(zipf(rng))];
      if (i == 0) w[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(w[0])));
      s += w;
    }
    return s + ".";
  }
};

struct Loaded {
  double msgs_per_s = 0;
};

Loaded load(Store& store, Vocabulary& vocab, int messages, int conversations, int users) {
  auto& cs = store.conversations();
  std::vector<UserId> user_ids;
  for (int u = 0; u < users; ++u) {
    user_ids.push_back(cs.upsert_user({"telegram", "u" + std::to_string(u)}).id);
  }
  std::mt19937 rng(42);
  const int per_conv = messages / conversations;
  auto t0 = Clock::now();
  for (int c = 0; c < conversations; ++c) {
    NewConversation nc;
    nc.user_id = user_ids[static_cast<std::size_t>(c % users)];
    nc.channel = "telegram";
    ConversationId id = cs.start(nc).id;
    std::vector<NewMessage> batch;
    for (int i = 0; i < per_conv; ++i) {
      NewMessage m;
      m.role = i % 2 ? Role::assistant : Role::user;
      m.content = vocab.sentence(rng);
      batch.push_back(std::move(m));
      if (batch.size() == 100 || i == per_conv - 1) {
        cs.append_batch(id, batch);
        batch.clear();
      }
    }
  }
  return {per_conv * conversations / bench::seconds_since(t0)};
}

struct QueryResult {
  double p50 = 0, p95 = 0, p99 = 0;
  double avg_matches = 0;
};

// `queries` one-word searches for words of ranks [lo, hi).
QueryResult run_queries(Store& store, Vocabulary& vocab, int lo, int hi, int queries,
                        bool count_matches) {
  auto& cs = store.conversations();
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> pick(lo, hi - 1);
  bench::Samples samples;
  double matches = 0;
  for (int i = 0; i < queries + 10; ++i) {
    SearchQuery q;
    q.text = vocab.words[static_cast<std::size_t>(pick(rng))];
    q.limit = 20;
    auto t0 = Clock::now();
    auto page = cs.search(q);
    if (i >= 10) samples.add(t0);  // the first ten warm up
    if (page.items.empty()) throw std::runtime_error("a query found nothing: " + q.text);
    if (count_matches && i >= 10 && i < 15) {
      // How many messages match (paging through them all), for 5 queries.
      q.limit = 1000;
      std::size_t n = 0;
      for (;;) {
        auto p = cs.search(q);
        n += p.items.size();
        if (p.next_cursor.empty()) break;
        q.cursor = p.next_cursor;
      }
      matches += static_cast<double>(n);
    }
  }
  return {samples.percentile(50), samples.percentile(95), samples.percentile(99),
          count_matches ? matches / 5 : 0};
}

// Append throughput, one commit per message and in batches of 100.
std::pair<double, double> append_rate(Store& store, Vocabulary& vocab, int singles, int batched) {
  auto& cs = store.conversations();
  std::mt19937 rng(99);
  std::vector<ConversationId> convs;
  for (int c = 0; c < 20; ++c) convs.push_back(cs.start(NewConversation{}).id);
  std::vector<std::string> texts;
  for (int i = 0; i < std::max(singles, batched); ++i) texts.push_back(vocab.sentence(rng));
  auto t0 = Clock::now();
  for (int i = 0; i < singles; ++i) {
    NewMessage m;
    m.content = texts[static_cast<std::size_t>(i)];
    cs.append(convs[static_cast<std::size_t>(i % 20)], m);
  }
  double single_rate = singles / bench::seconds_since(t0);
  t0 = Clock::now();
  std::vector<NewMessage> batch;
  for (int i = 0; i < batched; ++i) {
    NewMessage m;
    m.content = texts[static_cast<std::size_t>(i)];
    batch.push_back(std::move(m));
    if (batch.size() == 100) {
      cs.append_batch(convs[static_cast<std::size_t>((i / 100) % 20)], batch);
      batch.clear();
    }
  }
  double batch_rate = batched / bench::seconds_since(t0);
  return {single_rate, batch_rate};
}

}  // namespace

int main(int argc, char** argv) {
  std::string pg, dir = std::filesystem::temp_directory_path() / "convstore_bench";
  bool run_sqlite = true, keep = false;
  int messages = 200000, queries = 200, singles = 2000, batched = 20000;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--pg" && i + 1 < argc) {
      pg = argv[++i];
    } else if (a == "--dir" && i + 1 < argc) {
      dir = argv[++i];
    } else if (a == "--no-sqlite") {
      run_sqlite = false;
    } else if (a == "--messages" && i + 1 < argc) {
      messages = std::max(2000, std::atoi(argv[++i]));
    } else if (a == "--queries" && i + 1 < argc) {
      queries = std::max(10, std::atoi(argv[++i]));
    } else if (a == "--keep") {
      keep = true;  // leave the databases (and PostgreSQL schemas) for inspection
    } else if (a == "--quick") {
      messages = 10000;
      queries = 30;
      singles = 200;
      batched = 2000;
    } else {
      std::cerr << "usage: convstore_bench_search [--pg URL] [--no-sqlite] [--dir DIR] "
                   "[--messages N] [--queries N] [--quick] [--keep]\n";
      return 2;
    }
  }
  if (pg.empty()) {
    if (const char* env = std::getenv("CONVSTORE_TEST_PG_URL")) pg = env;
  }
  std::filesystem::create_directories(dir);
  Vocabulary vocab(5000);
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
      {
        Target t = fresh(sqlite, dir, pg, "search");
        if (!t.schema.empty()) schemas.push_back(t.schema);
        auto store = Store::open(t.url);
        auto l = load(store, vocab, messages, 2000, 200);
        std::printf("%-11s load %d messages (batches of 100): %.0f msg/s\n", backend, messages,
                    l.msgs_per_s);
        std::printf("%-11s %-34s %10s %10s %10s %12s\n", backend, "one-word query, limit 20",
                    "p50 us", "p95 us", "p99 us", "avg matches");
        struct Band {
          const char* name;
          int lo, hi;
        };
        for (const Band& b : {Band{"frequent word (ranks 10..50)", 10, 50},
                              Band{"middle word (ranks 200..1000)", 200, 1000},
                              Band{"rare word (ranks 2000..5000)", 2000, 5000}}) {
          auto r = run_queries(store, vocab, b.lo, b.hi, queries, true);
          std::printf("%-11s %-34s %10.0f %10.0f %10.0f %12.0f\n", backend, b.name, r.p50, r.p95,
                      r.p99, r.avg_matches);
          std::fflush(stdout);
        }
      }
      for (bool indexed : {true, false}) {
        Target t = fresh(sqlite, dir, pg, indexed ? "writes_indexed" : "writes_plain");
        if (!t.schema.empty()) schemas.push_back(t.schema);
        { auto migrate = Store::open(t.url); }
        if (!indexed) drop_index(t, pg);
        auto store = Store::open(t.url);
        auto [single, batch] = append_rate(store, vocab, singles, batched);
        std::printf("%-11s appends %-12s  append: %8.0f msg/s   append_batch(100): %8.0f msg/s\n",
                    backend, indexed ? "with index" : "no index", single, batch);
        std::fflush(stdout);
      }
    }
  } catch (const std::exception& e) {
    std::cerr << "convstore_bench_search: " << e.what() << "\n";
    status = 1;
  }
  if (!keep) {
    for (const auto& s : schemas) pg_admin(pg, "DROP SCHEMA IF EXISTS " + s + " CASCADE");
  }
  return status;
}
