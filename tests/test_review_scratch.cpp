#include <atomic>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "support.hpp"

using namespace convstore;
using namespace std::chrono_literals;

namespace {
Timestamp at(const char* iso) { return parse_timestamp(iso); }
std::string starts(const std::vector<CalendarEvent>& events) {
  std::string out;
  for (const auto& e : events) out += (out.empty() ? "" : " ") + to_iso8601(e.start);
  return out;
}
NewEvent series(const char* start, const char* end, const char* rrule, const char* zone = "UTC") {
  NewEvent e;
  e.title = "s";
  e.start = at(start);
  e.end = at(end);
  e.time_zone = zone;
  e.rrule = rrule;
  return e;
}
}  // namespace

TEST_CASE_TEMPLATE("review: skip-ahead keeps the INTERVAL phase", B, testing::Sqlite) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& cal = store.calendar();
  for (const char* rule :
       {"FREQ=WEEKLY;INTERVAL=2;BYDAY=MO", "FREQ=DAILY;INTERVAL=3", "FREQ=MONTHLY;INTERVAL=2",
        "FREQ=YEARLY;INTERVAL=2", "FREQ=WEEKLY;INTERVAL=3", "FREQ=MONTHLY;INTERVAL=5;BYDAY=1MO",
        "FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1"}) {
    auto s = cal.create(series("2024-01-01T09:00:00Z", "2024-01-01T10:00:00Z", rule));
    // Full expansion from the start (no skip) vs a window far later (skip).
    auto full = cal.occurrences(s.id, at("2024-01-01T00:00:00Z"), at("2030-01-01T00:00:00Z"));
    std::vector<CalendarEvent> want;
    for (auto& o : full)
      if (o.start >= at("2027-03-01T00:00:00Z") && o.start < at("2029-01-01T00:00:00Z"))
        want.push_back(o);
    auto got = cal.occurrences(s.id, at("2027-03-01T00:00:00Z"), at("2029-01-01T00:00:00Z"));
    CHECK_MESSAGE(starts(got) == starts(want), rule);
    cal.remove(s.id);
  }
}

TEST_CASE_TEMPLATE("review: DST gap start", B, testing::Sqlite) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& cal = store.calendar();
  // 02:30 New York daily; 2026-03-08 02:30 does not exist. RFC 5545: use the
  // offset before the gap -> 03:30 EDT = 07:30Z.
  auto s = cal.create(series("2026-03-06T07:30:00Z", "2026-03-06T08:00:00Z", "FREQ=DAILY;COUNT=4",
                             "America/New_York"));
  auto got = cal.occurrences(s.id, at("2026-03-01T00:00:00Z"), at("2026-03-20T00:00:00Z"));
  MESSAGE(starts(got));
}

namespace {
std::string try_import(CalendarStore& cal, const std::string& file, IcsImportOptions o = {}) {
  try {
    auto r = cal.import_ics(file, o);
    return "OK created=" + std::to_string(r.created);
  } catch (const std::exception& e) {
    return std::string("ERR ") + e.what();
  }
}
}  // namespace

TEST_CASE_TEMPLATE("review: ical export zones", B, testing::Sqlite) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& cal = store.calendar();
  int i = 0;
  for (const char* z : {"US/Eastern", "Asia/Calcutta", "Europe/Kyiv", "Etc/GMT-3",
                        "America/Ciudad_Juarez", "Etc/UTC", "GMT"}) {
    NewEvent e;
    e.uid = "z" + std::to_string(i++) + "@x";
    e.title = z;
    e.start = at("2026-05-01T09:00:00Z");
    e.end = at("2026-05-01T10:00:00Z");
    e.time_zone = z;
    cal.create(e);
  }
  auto ics = cal.export_ics(std::nullopt);
  MESSAGE(ics);
}

TEST_CASE_TEMPLATE("review: ical error lines", B, testing::Sqlite) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& cal = store.calendar();
  auto wrap = [](const std::string& body) {
    return "BEGIN:VCALENDAR\nVERSION:2.0\nBEGIN:VEVENT\n" + body + "END:VEVENT\nEND:VCALENDAR\n";
  };
  // line numbers: body starts at line 4
  MESSAGE(
      "rrule invalid (line 7): " << try_import(
          cal,
          wrap("UID:a@x\nDTSTART:20260101T090000Z\nDTEND:20260101T100000Z\nRRULE:FREQ=HOURLY\n")));
  MESSAGE("rrule count+until (line 7): " << try_import(
              cal, wrap("UID:a@x\nDTSTART:20260101T090000Z\nDTEND:20260101T100000Z\nRRULE:FREQ="
                        "DAILY;COUNT=3;UNTIL=20260301T000000Z\n")));
  MESSAGE("2nd exdate broken (line 9): " << try_import(
              cal, wrap("UID:a@x\nDTSTART:20260101T090000Z\nDTEND:20260101T100000Z\nRRULE:FREQ="
                        "DAILY\nEXDATE:20260102T090000Z\nEXDATE;TZID=Mars/X:20260103T090000\n")));
  MESSAGE("bad dtend after SEQUENCE:0 (line 8): " << try_import(
              cal, wrap("UID:a@x\nSEQUENCE:0\nDTSTART:20260101T090000Z\nSTATUS:CONFIRMED\nDTEND:"
                        "2026010ZT100000Z\n")));
  MESSAGE("bad dtend after PRIORITY:1 (line 7): " << try_import(
              cal, wrap("UID:a@x\nPRIORITY:1\nDTSTART:20260101T090000Z\nDTEND:garbage1\n")));
  MESSAGE("bad param (line 6): " << try_import(
              cal, wrap("UID:a@x\nDTSTART:20260101T090000Z\nDTEND;VALUE=FOO:20260101T100000Z\n")));
  MESSAGE("unknown prop (line 7): " << try_import(
              cal, wrap("UID:a@x\nDTSTART:20260101T090000Z\nDTEND:20260101T100000Z\nFOOBAR:1\n")));
  MESSAGE("outlook zone: " << try_import(
              cal,
              "BEGIN:VCALENDAR\nVERSION:2.0\nBEGIN:VTIMEZONE\nTZID:W. Europe Standard "
              "Time\nBEGIN:STANDARD\nDTSTART:16010101T030000\nTZOFFSETFROM:+0200\nTZOFFSETTO:+"
              "0100\nRRULE:FREQ=YEARLY;BYDAY=-1SU;BYMONTH=10\nEND:STANDARD\nBEGIN:"
              "DAYLIGHT\nDTSTART:16010101T020000\nTZOFFSETFROM:+0100\nTZOFFSETTO:+0200\nRRULE:FREQ="
              "YEARLY;BYDAY=-1SU;BYMONTH=3\nEND:DAYLIGHT\nEND:VTIMEZONE\nBEGIN:VEVENT\nUID:o@"
              "x\nDTSTART;TZID=W. Europe Standard Time:20260101T090000\nDTEND;TZID=W. Europe "
              "Standard Time:20260101T100000\nEND:VEVENT\nEND:VCALENDAR\n"));
  MESSAGE("rdate: " << try_import(
              cal, wrap("UID:rd@x\nDTSTART:20260101T090000Z\nDTEND:20260101T100000Z\nRRULE:FREQ="
                        "WEEKLY;COUNT=2\nRDATE:20260105T090000Z\n")));
  MESSAGE("two rrules: " << try_import(
              cal, wrap("UID:rr@x\nDTSTART:20260101T090000Z\nDTEND:20260101T100000Z\nRRULE:FREQ="
                        "WEEKLY;COUNT=2\nRRULE:FREQ=MONTHLY;COUNT=2\n")));
  MESSAGE("utf8 bom: " << try_import(
              cal,
              "\xEF\xBB\xBF"
              "BEGIN:VCALENDAR\nVERSION:2.0\nBEGIN:VEVENT\nUID:bom@x\nDTSTART:"
              "20260101T090000Z\nDTEND:20260101T100000Z\nEND:VEVENT\nEND:VCALENDAR\n"));
}

TEST_CASE_TEMPLATE("review: far future and impossible rules", B, testing::Sqlite) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& cal = store.calendar();
  auto s = cal.create(series("2037-12-30T09:00:00Z", "2037-12-30T10:00:00Z", "FREQ=DAILY"));
  MESSAGE("2038: " << starts(
              cal.occurrences(s.id, at("2038-01-17T00:00:00Z"), at("2038-01-21T00:00:00Z"))));
  MESSAGE("2100: " << starts(
              cal.occurrences(s.id, at("2100-01-01T00:00:00Z"), at("2100-01-03T00:00:00Z"))));
  auto s2 =
      cal.create(series("2040-01-01T09:00:00Z", "2040-01-01T10:00:00Z", "FREQ=WEEKLY;COUNT=3"));
  MESSAGE("2040: " << starts(
              cal.occurrences(s2.id, at("2039-01-01T00:00:00Z"), at("2041-01-01T00:00:00Z"))));
  NewEvent one;
  one.title = "plain";
  one.start = at("2024-03-01T09:00:00Z");
  one.end = at("2024-03-01T10:00:00Z");
  cal.create(one);
  for (const char* rule :
       {"FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30", "FREQ=DAILY;BYWEEKNO=1", "FREQ=WEEKLY;BYMONTHDAY=1",
        "FREQ=MONTHLY;BYYEARDAY=1", "FREQ=MONTHLY;BYWEEKNO=2", "FREQ=YEARLY;BYDAY=1MO;BYWEEKNO=3",
        "FREQ=DAILY;BYDAY=1MO"}) {
    std::string r;
    try {
      auto y = cal.create(series("2024-01-01T09:00:00Z", "2024-01-01T10:00:00Z", rule));
      r = "created";
      try {
        auto p = cal.range(std::nullopt, at("2024-02-01T00:00:00Z"), at("2024-12-01T00:00:00Z"));
        r += "; range ok n=" + std::to_string(p.items.size());
      } catch (const std::exception& e) {
        r += std::string("; range THROWS: ") + e.what();
      }
      cal.remove(y.id);
    } catch (const std::exception& e) {
      r = std::string("create refused: ") + e.what();
    }
    MESSAGE(rule << " -> " << r);
  }
}

TEST_CASE_TEMPLATE("review: remove(series) vs modify_occurrence deadlock", B, testing::Postgresql) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& cal = store.calendar();
  // Deterministic: T1 holds the series (a transaction of two calls), T2 removes it.
  {
    auto s =
        cal.create(series("2026-01-05T09:00:00Z", "2026-01-05T10:00:00Z", "FREQ=DAILY;COUNT=30"));
    EventUpdate ch;
    ch.title = "changed";
    cal.modify_occurrence(s.id, at("2026-01-06T09:00:00Z"), ch);
    std::string e1, e2;
    std::thread t1([&] {
      try {
        store.transaction([&] {
          cal.cancel_occurrence(s.id, at("2026-01-07T09:00:00Z"));
          std::this_thread::sleep_for(500ms);
          cal.modify_occurrence(s.id, at("2026-01-06T09:00:00Z"), ch);
        });
      } catch (const std::exception& e) {
        e1 = e.what();
      }
    });
    std::this_thread::sleep_for(150ms);
    std::thread t2([&] {
      try {
        cal.remove(s.id);
      } catch (const std::exception& e) {
        e2 = e.what();
      }
    });
    t1.join();
    t2.join();
    MESSAGE("deterministic: t1=[" << e1 << "] t2=[" << e2 << "]");
  }
  // Plain calls, no user transaction.
  int deadlocks = 0, rounds = 0;
  for (int round = 0; round < 20; ++round, ++rounds) {
    auto s =
        cal.create(series("2026-01-05T09:00:00Z", "2026-01-05T10:00:00Z", "FREQ=DAILY;COUNT=300"));
    EventUpdate ch;
    ch.title = "changed";
    for (int d = 0; d < 100; ++d)
      cal.modify_occurrence(s.id, s.start + std::chrono::hours(24 * (d + 1)), ch);
    std::atomic<bool> go{false};
    std::string e1, e2;
    std::thread a([&] {
      while (!go) {
      }
      try {
        for (int k = 0; k < 20; ++k) cal.modify_occurrence(s.id, s.start + 24h, ch);
      } catch (const std::exception& e) {
        e1 = e.what();
      }
    });
    std::thread b([&] {
      while (!go) {
      }
      std::this_thread::sleep_for(std::chrono::microseconds(200 * (round % 10)));
      try {
        cal.remove(s.id);
      } catch (const std::exception& e) {
        e2 = e.what();
      }
    });
    go = true;
    a.join();
    b.join();
    if (e1.find("deadlock") != std::string::npos || e2.find("deadlock") != std::string::npos) {
      ++deadlocks;
      if (deadlocks == 1) MESSAGE("stress: a=[" << e1 << "] b=[" << e2 << "]");
    }
  }
  MESSAGE("deadlocks " << deadlocks << " / " << rounds);
}

#include <random>
TEST_CASE_TEMPLATE("review: paging with occurrences", B, CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& cal = store.calendar();
  std::mt19937 rng(7);
  auto base = at("2026-03-01T00:00:00Z");
  auto hours = [&](int lo, int hi) {
    return std::chrono::hours(std::uniform_int_distribution<int>(lo, hi)(rng));
  };
  for (int i = 0; i < 25; ++i) {
    NewEvent e;
    e.title = "single" + std::to_string(i);
    e.start = base + hours(0, 24 * 20);
    e.end = e.start + hours(1, 30);
    cal.create(e);
  }
  const char* rules[] = {"FREQ=DAILY", "FREQ=DAILY;INTERVAL=2;COUNT=10", "FREQ=WEEKLY;BYDAY=MO,TH",
                         "FREQ=DAILY;BYHOUR=9,13"};
  for (int i = 0; i < 6; ++i) {
    NewEvent e;
    e.title = "series" + std::to_string(i);
    e.start = base + hours(0, 48) - hours(0, 0);
    if (i == 3) e.start = base + 9h;  // equal starts
    if (i == 4) e.start = base + 9h;
    e.end = e.start + hours(1, 3);
    e.rrule = rules[i % 4];
    e.time_zone = i % 2 ? "Europe/Berlin" : "UTC";
    auto s = cal.create(e);
    auto occ = cal.occurrences(s.id, base, base + 24h * 20);
    if (occ.size() > 4) {
      cal.cancel_occurrence(s.id, *occ[1].recurrence_id);
      EventUpdate u;
      u.start = occ[2].start + 2h;
      u.end = occ[2].end + 2h;
      cal.modify_occurrence(s.id, *occ[2].recurrence_id, u);
      EventUpdate u2;
      u2.start = occ[4].start;  // same start
      u2.end = occ[4].end + 1h;
      cal.modify_occurrence(s.id, *occ[3].recurrence_id, u2);
    }
  }
  auto from = base + 24h * 3, to = base + 24h * 12;
  auto all = cal.range(std::nullopt, from, to, 10000).items;
  auto key = [](const std::vector<CalendarEvent>& v) {
    std::string out;
    for (auto& e : v) out += to_iso8601(e.start) + "/" + std::to_string(e.id) + " ";
    return out;
  };
  for (std::size_t limit : {1, 2, 3, 5, 7, 13}) {
    std::vector<CalendarEvent> got;
    std::string cursor;
    for (int n = 0; n < 10000; ++n) {
      auto p = cal.range(std::nullopt, from, to, limit, cursor);
      got.insert(got.end(), p.items.begin(), p.items.end());
      if (p.next_cursor.empty()) break;
      cursor = p.next_cursor;
    }
    CHECK_MESSAGE(key(got) == key(all), "limit " << limit);
  }
  // conflicts == range
  CHECK(key(cal.conflicts(std::nullopt, from, to)) == key(all));
  MESSAGE("events " << all.size());
}
