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
#include <convstore/convstore.hpp>
#include <cstdlib>
#include <iostream>
#include <string>

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
    return 2;
  } catch (const convstore::Error& e) {
    std::cerr << "helper: " << convstore::to_string(e.code()) << ": " << e.what() << "\n";
    return 1;
  }
}
