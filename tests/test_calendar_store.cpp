// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#include <atomic>
#include <thread>
#include <vector>

#include "support.hpp"

using namespace convstore;
using namespace std::chrono_literals;

namespace {

Timestamp at(const char* iso) { return parse_timestamp(iso); }

NewEvent timed(std::optional<UserId> owner, const char* title, const char* start, const char* end) {
  NewEvent e;
  e.owner = owner;
  e.title = title;
  e.start = at(start);
  e.end = at(end);
  return e;
}

NewEvent all_day(const char* title, const char* zone, const char* first, const char* after) {
  NewEvent e;
  e.title = title;
  e.all_day = true;
  e.time_zone = zone;
  e.start_day = first;
  e.end_day = after;
  return e;
}

std::vector<std::string> titles(const std::vector<CalendarEvent>& events) {
  std::vector<std::string> out;
  for (const auto& e : events) out.push_back(e.title);
  return out;
}

}  // namespace

TEST_CASE_TEMPLATE("calendar: create, get, find by uid, update, remove", B, CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& cal = store.calendar();
  auto user = store.conversations().upsert_user({"web", "ann"});
  NewEvent n = timed(user.id, "Standup", "2026-11-24T09:00:00Z", "2026-11-24T09:15:00Z");
  n.description = "daily";
  n.location = "Room 1";
  n.time_zone = "Europe/Berlin";
  n.metadata = {{"color", "blue"}};
  auto e = cal.create(n);
  CHECK(e.id > 0);
  CHECK_FALSE(e.uid.empty());
  auto got = cal.get(e.id);
  REQUIRE(got.has_value());
  CHECK(got->owner == user.id);
  CHECK(got->title == "Standup");
  CHECK(got->description == "daily");
  CHECK(got->location == "Room 1");
  CHECK(got->start == at("2026-11-24T09:00:00Z"));
  CHECK(got->end == at("2026-11-24T09:15:00Z"));
  CHECK_FALSE(got->all_day);
  CHECK(got->time_zone == "Europe/Berlin");
  CHECK(got->metadata == Json{{"color", "blue"}});
  CHECK(cal.find_by_uid(e.uid)->id == e.id);

  EventUpdate up;
  up.start = at("2026-11-24T10:00:00Z");
  up.end = at("2026-11-24T10:30:00Z");
  up.title = "Standup (moved)";
  auto moved = cal.update(e.id, up);
  CHECK(moved.start == at("2026-11-24T10:00:00Z"));
  CHECK(moved.title == "Standup (moved)");
  CHECK(cal.remove(e.id));
  CHECK_FALSE(cal.remove(e.id));
  CHECK_FALSE(cal.get(e.id).has_value());
  CHECK_ERROR_CODE(cal.update(e.id, up), ErrorCode::not_found);
}

TEST_CASE_TEMPLATE("calendar: bad input names what is wrong and writes nothing", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& cal = store.calendar();
  CHECK_ERROR_CODE(
      cal.create(timed(std::nullopt, "x", "2026-01-01T10:00:00Z", "2026-01-01T09:00:00Z")),
      ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(
      cal.create(timed(std::nullopt, "x", "2026-01-01T10:00:00Z", "2026-01-01T10:00:00Z")),
      ErrorCode::invalid_argument);
  NewEvent tz = timed(std::nullopt, "x", "2026-01-01T09:00:00Z", "2026-01-01T10:00:00Z");
  tz.time_zone = "Mars/Olympus_Mons";
  try {
    cal.create(tz);
    FAIL("unknown zone accepted");
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::invalid_argument);
    CHECK(std::string(e.what()).find("Mars/Olympus_Mons") != std::string::npos);
  }
  NewEvent day = all_day("holiday", "UTC", "2026-02-30", "2026-03-01");
  CHECK_ERROR_CODE(cal.create(day), ErrorCode::invalid_argument);
  day.start_day = "2026-03-02";
  day.end_day = "2026-03-02";
  CHECK_ERROR_CODE(cal.create(day), ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(cal.create(timed(424242, "x", "2026-01-01T09:00:00Z", "2026-01-01T10:00:00Z")),
                   ErrorCode::not_found);
  auto e = cal.create(timed(std::nullopt, "x", "2026-01-01T09:00:00Z", "2026-01-01T10:00:00Z"));
  NewEvent dup = timed(std::nullopt, "y", "2026-01-02T09:00:00Z", "2026-01-02T10:00:00Z");
  dup.uid = e.uid;
  CHECK_ERROR_CODE(cal.create(dup), ErrorCode::already_exists);
  CHECK_ERROR_CODE(cal.range(std::nullopt, at("2026-01-02T00:00:00Z"), at("2026-01-01T00:00:00Z")),
                   ErrorCode::invalid_argument);
  CHECK(cal.range(std::nullopt, at("2025-01-01T00:00:00Z"), at("2027-01-01T00:00:00Z"))
            .items.size() == 1);
}

TEST_CASE_TEMPLATE("calendar: all-day events cover whole local days, across daylight saving", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& cal = store.calendar();
  // Clocks go from 02:00 to 03:00 on 2026-03-29.
  NewEvent spring = all_day("spring forward", "Europe/Berlin", "2026-03-29", "2026-03-30");
  auto s = cal.create(spring);
  CHECK(s.start == at("2026-03-28T23:00:00Z"));  // local midnight, UTC+1
  CHECK(s.end == at("2026-03-29T22:00:00Z"));    // next local midnight, UTC+2
  CHECK(s.end - s.start == 23h);
  NewEvent autumn = spring;
  autumn.title = "fall back";
  autumn.start_day = "2026-10-25";
  autumn.end_day = "2026-10-26";
  auto a = cal.create(autumn);
  CHECK(a.end - a.start == 25h);
  // An all-day event in New York is not a UTC day.
  NewEvent ny = spring;
  ny.title = "new york day";
  ny.time_zone = "America/New_York";
  ny.start_day = "2026-07-04";
  ny.end_day = "2026-07-05";
  auto n = cal.create(ny);
  CHECK(n.start == at("2026-07-04T04:00:00Z"));
  // A range that touches only the UTC day before sees nothing of it.
  CHECK(
      cal.conflicts(std::nullopt, at("2026-07-03T12:00:00Z"), at("2026-07-04T04:00:00Z")).empty());
  CHECK(
      cal.conflicts(std::nullopt, at("2026-07-05T03:00:00Z"), at("2026-07-05T05:00:00Z")).size() ==
      1);
  // Moving it by days keeps it whole local days.
  EventUpdate up;
  up.start_day = "2026-03-28";
  auto longer = cal.update(s.id, up);
  CHECK(longer.start == at("2026-03-27T23:00:00Z"));
  CHECK(longer.end == s.end);
  EventUpdate wrong;
  wrong.start = at("2026-03-28T10:00:00Z");
  CHECK_ERROR_CODE(cal.update(s.id, wrong), ErrorCode::invalid_argument);
}

TEST_CASE_TEMPLATE("calendar: ranges are half-open, ordered, paged, and see long events", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& cal = store.calendar();
  auto u = store.conversations().upsert_user({"web", "u"}).id;
  auto other = store.conversations().upsert_user({"web", "v"}).id;
  cal.create(timed(u, "a", "2026-05-01T09:00:00Z", "2026-05-01T10:00:00Z"));
  cal.create(timed(u, "b", "2026-05-01T10:00:00Z", "2026-05-01T11:00:00Z"));
  cal.create(timed(u, "conference", "2026-04-28T00:00:00Z", "2026-05-03T00:00:00Z"));
  cal.create(timed(u, "c", "2026-05-01T11:00:00Z", "2026-05-01T11:30:00Z"));
  cal.create(timed(other, "not mine", "2026-05-01T09:00:00Z", "2026-05-01T12:00:00Z"));
  cal.create(timed(std::nullopt, "shared", "2026-05-01T09:00:00Z", "2026-05-01T12:00:00Z"));

  auto r = cal.range(u, at("2026-05-01T10:00:00Z"), at("2026-05-01T11:00:00Z")).items;
  CHECK(titles(r) ==
        std::vector<std::string>{"conference", "b"});  // a ends at 10:00, c starts at 11:00
  CHECK(titles(cal.conflicts(u, at("2026-05-01T09:30:00Z"), at("2026-05-01T10:30:00Z"))) ==
        std::vector<std::string>{"conference", "a", "b"});
  CHECK(titles(cal.conflicts(std::nullopt, at("2026-05-01T00:00:00Z"),
                             at("2026-05-02T00:00:00Z"))) == std::vector<std::string>{"shared"});

  std::vector<std::string> paged;
  std::string cursor;
  int pages = 0;
  do {
    auto page = cal.range(u, at("2026-04-01T00:00:00Z"), at("2026-06-01T00:00:00Z"), 2, cursor);
    for (auto& e : page.items) paged.push_back(e.title);
    cursor = page.next_cursor;
    ++pages;
  } while (!cursor.empty());
  CHECK(pages == 2);
  CHECK(paged == std::vector<std::string>{"conference", "a", "b", "c"});
  CHECK_ERROR_CODE(cal.range(u, at("2026-04-01T00:00:00Z"), at("2026-06-01T00:00:00Z"), 2, "bad"),
                   ErrorCode::invalid_argument);
  // A time before the year 0001 (fuzz/fuzz_cursor).
  CHECK_ERROR_CODE(cal.range(u, at("2026-04-01T00:00:00Z"), at("2026-06-01T00:00:00Z"), 2,
                             "e1.-9223372036854775808.1"),
                   ErrorCode::invalid_argument);
}

TEST_CASE_TEMPLATE("calendar: a booking that overlaps is refused with the events in the way", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& cal = store.calendar();
  BookingOptions strict;
  strict.refuse_conflicts = true;
  auto first = cal.create(
      timed(std::nullopt, "dentist", "2026-06-01T14:00:00Z", "2026-06-01T15:00:00Z"), strict);
  try {
    cal.create(timed(std::nullopt, "call", "2026-06-01T14:30:00Z", "2026-06-01T15:30:00Z"), strict);
    FAIL("overlap accepted");
  } catch (const CalendarConflict& c) {
    CHECK(c.code() == ErrorCode::conflict);
    REQUIRE(c.conflicts().size() == 1);
    CHECK(c.conflicts()[0].id == first.id);
    CHECK(std::string(c.what()).find("dentist") != std::string::npos);
  }
  // Back to back is fine.
  cal.create(timed(std::nullopt, "after", "2026-06-01T15:00:00Z", "2026-06-01T16:00:00Z"), strict);
  // An update is checked against the others, not against itself.
  EventUpdate longer;
  longer.start = at("2026-06-01T13:30:00Z");
  CHECK_NOTHROW(cal.update(first.id, longer, strict));
  longer.end = at("2026-06-01T15:30:00Z");
  CHECK_THROWS_AS(cal.update(first.id, longer, strict), CalendarConflict);
  CHECK(cal.get(first.id)->end == at("2026-06-01T15:00:00Z"));
  // Without the option an overlap is stored.
  cal.create(timed(std::nullopt, "double", "2026-06-01T14:30:00Z", "2026-06-01T14:45:00Z"));
  CHECK(
      cal.conflicts(std::nullopt, at("2026-06-01T00:00:00Z"), at("2026-06-02T00:00:00Z")).size() ==
      3);
}

TEST_CASE_TEMPLATE("calendar: 8 threads booking one slot: exactly one wins", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  Options o;
  o.pool_size = 8;
  auto store = db.open(o);
  auto& cal = store.calendar();
  auto u = store.conversations().upsert_user({"web", "booker"}).id;
  for (int round = 0; round < 5; ++round) {
    std::string day = "2026-09-1" + std::to_string(round);
    std::string start = day + "T10:00:00Z", end = day + "T11:00:00Z";
    std::atomic<int> won{0}, refused{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; ++t) {
      threads.emplace_back([&, t] {
        BookingOptions strict;
        strict.refuse_conflicts = true;
        try {
          cal.create(timed(u, ("t" + std::to_string(t)).c_str(), start.c_str(), end.c_str()),
                     strict);
          ++won;
        } catch (const CalendarConflict&) {
          ++refused;
        }
      });
    }
    for (auto& th : threads) th.join();
    CHECK(won.load() == 1);
    CHECK(refused.load() == 7);
  }
}

TEST_CASE_TEMPLATE("calendar: two processes booking one slot: exactly one wins", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  for (int round = 0; round < 3; ++round) {
    std::string start = "2026-10-0" + std::to_string(round + 1) + "T08:00:00Z";
    std::string args = "book '" + db.url() + "' " + start + " ";
    int a = testing::spawn_helper(args + "one");
    int b = testing::spawn_helper(args + "two");
    int ra = testing::wait_helper(a), rb = testing::wait_helper(b);
    // Exit 0: booked; exit 3: refused as a conflict.
    CHECK(((ra == 0 && rb == 3) || (ra == 3 && rb == 0)));
  }
  CHECK(store.calendar()
            .conflicts(std::nullopt, at("2026-10-01T00:00:00Z"), at("2026-10-05T00:00:00Z"))
            .size() == 3);
}

TEST_CASE_TEMPLATE("calendar: free slots inside working hours, at least the minimum long", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& cal = store.calendar();
  auto u = store.conversations().upsert_user({"web", "f"}).id;
  // Friday 2026-11-27 and Monday 2026-11-30, Berlin (UTC+1).
  cal.create(timed(u, "a", "2026-11-27T09:00:00Z", "2026-11-27T10:00:00Z"));  // 10-11 local
  cal.create(timed(u, "b", "2026-11-27T09:30:00Z", "2026-11-27T11:00:00Z"));  // overlaps a
  cal.create(timed(u, "c", "2026-11-27T11:10:00Z", "2026-11-27T12:00:00Z"));  // leaves 10 min
  WorkingHours hours;
  hours.time_zone = "Europe/Berlin";
  auto slots =
      cal.free_slots(u, at("2026-11-27T00:00:00Z"), at("2026-12-01T00:00:00Z"), hours, 30min);
  REQUIRE(slots.size() == 3);
  CHECK(slots[0].start == at("2026-11-27T08:00:00Z"));  // 9:00 local
  CHECK(slots[0].end == at("2026-11-27T09:00:00Z"));
  CHECK(slots[1].start == at("2026-11-27T12:00:00Z"));
  CHECK(slots[1].end == at("2026-11-27T16:00:00Z"));    // 17:00 local
  CHECK(slots[2].start == at("2026-11-30T08:00:00Z"));  // Monday; the weekend is skipped
  CHECK(slots[2].end == at("2026-11-30T16:00:00Z"));
  WorkingHours bad;
  bad.day_start = 18h;
  bad.day_end = 9h;
  CHECK_ERROR_CODE(
      cal.free_slots(u, at("2026-11-27T00:00:00Z"), at("2026-11-28T00:00:00Z"), bad, 30min),
      ErrorCode::invalid_argument);
}

TEST_CASE_TEMPLATE("calendar: search finds every word in title or description, alike on both", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& cal = store.calendar();
  auto u = store.conversations().upsert_user({"web", "s"}).id;
  auto dentist = timed(u, "Dentist appointment", "2026-03-01T09:00:00Z", "2026-03-01T10:00:00Z");
  dentist.description = "Bring the insurance card";
  auto d = cal.create(dentist);
  auto review = timed(u, "Quarterly review", "2026-02-01T09:00:00Z", "2026-02-01T10:00:00Z");
  review.description = "Budget, hiring; dentist plan?";
  cal.create(review);
  cal.create(timed(u, "Café with Ana", "2026-01-01T09:00:00Z", "2026-01-01T10:00:00Z"));
  cal.create(
      timed(std::nullopt, "Dentist (shared)", "2026-03-02T09:00:00Z", "2026-03-02T10:00:00Z"));

  CHECK(titles(cal.search(u, "dentist")) ==
        std::vector<std::string>{"Quarterly review", "Dentist appointment"});  // by start
  CHECK(titles(cal.search(u, "DENTIST insurance")) ==
        std::vector<std::string>{"Dentist appointment"});
  CHECK(titles(cal.search(u, "café")) == std::vector<std::string>{"Café with Ana"});
  CHECK(cal.search(u, "cafe").empty());         // no accent folding, on either
  CHECK(cal.search(u, "dent").empty());         // whole words
  CHECK(cal.search(u, "dentist ana").empty());  // every word
  CHECK(titles(cal.search(std::nullopt, "dentist")) ==
        std::vector<std::string>{"Dentist (shared)"});
  CHECK(cal.search(u, "dentist", 1).size() == 1);

  // The index follows edits and deletes.
  EventUpdate up;
  up.title = "Orthodontist appointment";
  cal.update(d.id, up);
  CHECK(titles(cal.search(u, "dentist")) == std::vector<std::string>{"Quarterly review"});
  CHECK(titles(cal.search(u, "orthodontist")) ==
        std::vector<std::string>{"Orthodontist appointment"});
  CHECK(cal.remove(d.id));
  CHECK(cal.search(u, "orthodontist").empty());

  CHECK_ERROR_CODE(cal.search(u, "  ;; "), ErrorCode::invalid_argument);
  // Search syntax is not interpreted: quotes and operators are just words.
  CHECK(cal.search(u, "\"review\" OR NOT").empty());
  CHECK(titles(cal.search(u, "review: \"quarterly*")) ==
        std::vector<std::string>{"Quarterly review"});
}

// ======================= review regressions =======================

TEST_CASE_TEMPLATE("calendar: an event that overlaps before and after a move is never missed", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  Options o;
  o.pool_size = 4;
  auto store = db.open(o);
  auto& cal = store.calendar();
  auto u = store.conversations().upsert_user({"web", "m"}).id;
  auto e = cal.create(timed(u, "moving", "2026-04-01T10:00:00Z", "2026-04-01T11:00:00Z"));
  std::atomic<bool> done{false};
  std::atomic<int> misses{0};
  std::thread reader([&] {
    while (!done) {
      if (cal.conflicts(u, at("2026-04-01T10:30:00Z"), at("2026-04-01T10:45:00Z")).empty()) {
        ++misses;
      }
    }
  });
  for (int i = 0; i < 40; ++i) {
    EventUpdate up;  // always covers 10:30-10:45, first short, then long
    up.start = at(i % 2 == 0 ? "2026-04-01T00:00:00Z" : "2026-04-01T10:00:00Z");
    cal.update(e.id, up);
  }
  done = true;
  reader.join();
  CHECK(misses.load() == 0);
}

TEST_CASE_TEMPLATE("calendar: an event of centuries does not break its owner's queries", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& cal = store.calendar();
  auto u = store.conversations().upsert_user({"web", "long"}).id;
  cal.create(timed(u, "forever", "2000-01-01T00:00:00Z", "9999-12-31T00:00:00Z"));
  cal.create(timed(u, "lunch", "2026-04-01T12:00:00Z", "2026-04-01T13:00:00Z"));
  CHECK(titles(cal.conflicts(u, at("2026-04-01T12:30:00Z"), at("2026-04-01T12:45:00Z"))) ==
        std::vector<std::string>{"forever", "lunch"});
  CHECK(cal.range(u, at("0001-01-01T00:00:00Z"), at("0002-01-01T00:00:00Z")).items.empty());
  CHECK_ERROR_CODE(cal.create(timed(u, "x", "2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z")),
                   ErrorCode::invalid_argument);
  NewEvent far = timed(u, "too far", "2026-01-01T00:00:00Z", "2026-01-01T01:00:00Z");
  far.end = at("9999-12-31T23:59:59Z") + std::chrono::hours(48);
  CHECK_ERROR_CODE(cal.create(far), ErrorCode::invalid_argument);
}

TEST_CASE_TEMPLATE("calendar: transactions writing several owners in opposite orders", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  Options o;
  o.pool_size = 4;
  auto store = db.open(o);
  auto& cal = store.calendar();
  auto u1 = store.conversations().upsert_user({"web", "o1"}).id;
  auto u2 = store.conversations().upsert_user({"web", "o2"}).id;
  cal.create(timed(u1, "long", "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z"));
  cal.create(timed(u2, "long", "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z"));
  std::atomic<int> errors{0};
  auto writer = [&](UserId first, UserId second) {
    for (int i = 0; i < 20; ++i) {
      try {
        store.transaction([&] {
          cal.create(timed(first, "a", "2026-02-01T09:00:00Z", "2026-02-01T10:00:00Z"));
          cal.create(timed(second, "b", "2026-02-01T09:00:00Z", "2026-02-01T10:00:00Z"));
        });
      } catch (const Error& e) {
        ++errors;
        MESSAGE(e.what());
      }
    }
  };
  std::thread a(writer, u1, u2), b(writer, u2, u1);
  a.join();
  b.join();
  CHECK(errors.load() == 0);
  CHECK(cal.conflicts(u1, at("2026-02-01T09:00:00Z"), at("2026-02-01T10:00:00Z")).size() == 40);
}

TEST_CASE_TEMPLATE("calendar: an all-day event keeps its local days when it changes zone", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& cal = store.calendar();
  auto e = cal.create(all_day("holiday", "Asia/Tokyo", "2026-07-04", "2026-07-05"));
  CHECK(e.start == at("2026-07-03T15:00:00Z"));
  EventUpdate up;
  up.time_zone = "America/New_York";
  auto moved = cal.update(e.id, up);
  CHECK(moved.start == at("2026-07-04T04:00:00Z"));
  CHECK(moved.end == at("2026-07-05T04:00:00Z"));
}

TEST_CASE_TEMPLATE("calendar: search splits versions, addresses, dates and tags alike", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& cal = store.calendar();
  auto add = [&](const char* title, const char* description) {
    auto e = timed(std::nullopt, title, "2026-03-01T09:00:00Z", "2026-03-01T10:00:00Z");
    e.description = description;
    cal.create(e);
  };
  add("Release v1.2 planning", "");
  add("Mail", "write to bob@example.com about example.org/docs");
  add("Due 2026-03-01", "Meeting <agenda> http://wiki.local/page");
  CHECK(titles(cal.search(std::nullopt, "v1 2")) ==
        std::vector<std::string>{"Release v1.2 planning"});
  CHECK(titles(cal.search(std::nullopt, "bob example com")) == std::vector<std::string>{"Mail"});
  CHECK(titles(cal.search(std::nullopt, "docs")) == std::vector<std::string>{"Mail"});
  CHECK(titles(cal.search(std::nullopt, "03 01")) == std::vector<std::string>{"Due 2026-03-01"});
  CHECK(titles(cal.search(std::nullopt, "agenda wiki page")) ==
        std::vector<std::string>{"Due 2026-03-01"});
  CHECK_ERROR_CODE(cal.free_slots(std::nullopt, at("2026-03-01T00:00:00Z"),
                                  at("2026-03-02T00:00:00Z"), WorkingHours{}, 0min),
                   ErrorCode::invalid_argument);
}
