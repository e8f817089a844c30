// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
//
// A second process for the tests that need several: it opens a store and
// does one job, so that the test can check what two processes do to one
// database.
//   convstore_test_helper open URL
//   convstore_test_helper append URL CONVERSATION_ID COUNT TAG
//   convstore_test_helper use URL AGENT COUNT          (record uses)
//   convstore_test_helper save URL SCOPE AGENT VERSION WRITER
//       (save {"writer": WRITER} expecting VERSION; exit 3 on conflict)
//   convstore_test_helper book URL START TITLE
//       (book [START, START + 1h) on the shared calendar; exit 3 on conflict)
//   convstore_test_helper turn URL KIND CACHE_URL PREFIX CONVERSATION HOLD_MS OUT
//       (take the conversation's turn on a "database" or "redis" cache, append
//       "<pid> start" with its fence, append "<pid> line" to the file OUT,
//       hold the turn HOLD_MS, append "<pid> end", release; exit 3 when the
//       fence is refused)
//   convstore_test_helper hit URL KIND CACHE_URL PREFIX KEY COUNT OUT
//       (COUNT hits on KEY, limit 50 per 10 minutes; appends how many were
//       allowed to the file OUT)
//   convstore_test_helper work URL NAME THREADS OUT
//       (THREADS workers named NAME/i claim tasks with a 30 s lease, work
//       1 ms on each and complete them with {"worker": NAME/i} until none is pending;
//       appends "ready NAME" to the file OUT when it starts, then "claim ID
//       LEASE WORKER" and "done ID WORKER" lines when it ends; gives up with
//       exit 1 after 120 s, so that it never outlives a failed test for long)
//   convstore_test_helper periodic URL AT_US COUNT OUT
//       (COUNT calls of run_periodic(AT_US); appends how many tasks they
//       created to the file OUT)
#include <unistd.h>

#include <chrono>
#include <convstore/convstore.hpp>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

int main(int argc, char** argv) {
  try {
    if (argc < 3) return 2;
    std::string job = argv[1];
    auto store = convstore::Store::open(argv[2]);
    if (job == "open") {
      std::cout << store.schema_version() << "\n";
      return 0;
    }
    if (job == "append" && argc == 6) {
      convstore::ConversationId id = std::stoll(argv[3]);
      int count = std::stoi(argv[4]);
      for (int i = 0; i < count; ++i) {
        convstore::NewMessage m;
        m.content = std::string(argv[5]) + " " + std::to_string(i);
        store.conversations().append(id, m);
      }
      return 0;
    }
    if (job == "use" && argc == 5) {
      int count = std::stoi(argv[4]);
      for (int i = 0; i < count; ++i) store.agents().record_use(argv[3]);
      return 0;
    }
    if (job == "save" && argc == 7) {
      try {
        store.agents().save_state(convstore::StateScope::named(argv[3]), argv[4],
                                  {{"writer", argv[6]}}, std::stoll(argv[5]));
        return 0;
      } catch (const convstore::Error& e) {
        if (e.code() == convstore::ErrorCode::conflict) return 3;
        throw;
      }
    }
    if (job == "book" && argc == 5) {
      convstore::NewEvent e;
      e.title = argv[4];
      e.start = convstore::parse_timestamp(argv[3]);
      e.end = e.start + std::chrono::hours(1);
      convstore::BookingOptions strict;
      strict.refuse_conflicts = true;
      try {
        store.calendar().create(e, strict);
        return 0;
      } catch (const convstore::CalendarConflict&) {
        return 3;
      }
    }
    if (job == "work" && argc == 6) {
      const std::string name = argv[3];
      std::ofstream(argv[5], std::ios::app) << "ready " << name << std::endl;
      std::mutex mu;
      std::ostringstream log;
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
      auto work = [&](const std::string& worker) {
        auto& q = store.tasks();
        convstore::ClaimOptions o;
        o.max = 2;
        o.lease = std::chrono::seconds(30);
        for (;;) {
          auto claimed = q.claim(worker, o);
          if (claimed.empty()) {
            if (q.counts().pending == 0) return;
            if (std::chrono::steady_clock::now() > deadline) {
              throw std::runtime_error("gave up after 120 s with tasks still pending");
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
            continue;
          }
          for (const auto& t : claimed) {
            {
              std::lock_guard lock(mu);
              log << "claim " << t.id << " " << t.lease << " " << worker << "\n";
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(1));  // the work
            q.complete(t, {{"worker", worker}});
            std::lock_guard lock(mu);
            log << "done " << t.id << " " << worker << "\n";
          }
        }
      };
      std::vector<std::thread> threads;
      std::vector<std::string> failures;
      for (int i = 0; i < std::stoi(argv[4]); ++i) {
        threads.emplace_back([&, i] {
          try {
            work(name + "/" + std::to_string(i));
          } catch (const std::exception& e) {
            std::lock_guard lock(mu);
            failures.push_back(e.what());
          }
        });
      }
      for (auto& t : threads) t.join();
      std::ofstream(argv[5], std::ios::app) << log.str() << std::flush;
      for (const auto& f : failures) std::cerr << "helper: " << f << "\n";
      return failures.empty() ? 0 : 1;
    }
    if (job == "periodic" && argc == 6) {
      convstore::Timestamp at{std::chrono::microseconds(std::stoll(argv[3]))};
      long long created = 0;
      for (int i = 0; i < std::stoi(argv[4]); ++i) created += store.tasks().run_periodic(at);
      std::ofstream(argv[5], std::ios::app) << created << std::endl;
      return 0;
    }
    // KIND CACHE_URL PREFIX, as CacheFixture::helper_args() gives them.
    auto open_cache = [&] {
      convstore::CacheOptions o;
      o.key_prefix = argv[5];
      return std::string(argv[3]) == "redis" ? convstore::SessionCache::redis(argv[4], o)
                                             : convstore::SessionCache::database(store, o);
    };
    if (job == "hit" && argc == 9) {
      auto cache = open_cache();
      convstore::RateLimit limit{50, std::chrono::minutes(10)};
      int allowed = 0;
      for (int i = 0; i < std::stoi(argv[7]); ++i) allowed += cache.hit(argv[6], limit).allowed;
      std::ofstream(argv[8], std::ios::app) << allowed << std::endl;
      return 0;
    }
    if (job == "turn" && argc == 9) {
      auto cache = open_cache();
      convstore::ConversationId id = std::stoll(argv[6]);
      auto lease = cache.acquire_turn(id, std::chrono::milliseconds(500), std::chrono::seconds(60));
      if (!lease) return 4;
      std::string me = std::to_string(getpid());
      convstore::AppendOptions fenced;
      fenced.fence = lease->fence;
      convstore::NewMessage m;
      try {
        m.content = me + " start";
        store.conversations().append(id, m, fenced);
        std::ofstream(argv[8], std::ios::app) << me << " " << lease->fence << std::endl;
        auto until =
            std::chrono::steady_clock::now() + std::chrono::milliseconds(std::stoll(argv[7]));
        while (std::chrono::steady_clock::now() < until) {
          std::this_thread::sleep_for(std::chrono::milliseconds(100));
          if (!cache.renew_turn(*lease, std::chrono::milliseconds(500))) return 5;
        }
        m.content = me + " end";
        store.conversations().append(id, m, fenced);
      } catch (const convstore::Error& e) {
        if (e.code() == convstore::ErrorCode::conflict) return 3;
        throw;
      }
      cache.release_turn(*lease);
      return 0;
    }
    return 2;
  } catch (const convstore::Error& e) {
    std::cerr << "helper: " << convstore::to_string(e.code()) << ": " << e.what() << "\n";
    return 1;
  }
}
