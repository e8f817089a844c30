// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "support.hpp"

using namespace convstore;
using namespace std::chrono_literals;

namespace {

Timestamp at(const char* iso) { return parse_timestamp(iso); }

NewEvent series(std::optional<UserId> owner, const char* title, const char* start, const char* end,
                const char* rrule, const char* zone = "UTC") {
  NewEvent e;
  e.owner = owner;
  e.title = title;
  e.start = at(start);
  e.end = at(end);
  e.time_zone = zone;
  e.rrule = rrule;
  return e;
}

// "start start ...", which doctest shows when a check fails.
std::string starts(const std::vector<CalendarEvent>& events) {
  std::string out;
  for (const auto& e : events) out += (out.empty() ? "" : " ") + to_iso8601(e.start);
  return out;
}

std::string join(std::initializer_list<const char*> items) {
  std::string out;
  for (const char* i : items) out += (out.empty() ? "" : " ") + to_iso8601(at(i));
  return out;
}

std::string titles_of(const std::vector<CalendarEvent>& events) {
  std::string out;
  for (const auto& e : events) out += (out.empty() ? "" : " ") + e.title;
  return out;
}

}  // namespace

TEST_CASE_TEMPLATE("recurrence: a weekly series keeps its local time across daylight saving", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& cal = store.calendar();
  // Mondays and Wednesdays 09:00-09:30 in Berlin; clocks go forward on
  // Sunday 2026-03-29.
  auto s =
      cal.create(series(std::nullopt, "Standup", "2026-03-23T08:00:00Z", "2026-03-23T08:30:00Z",
                        "FREQ=WEEKLY;BYDAY=MO,WE;COUNT=6", "Europe/Berlin"));
  CHECK(s.rrule == "FREQ=WEEKLY;COUNT=6;BYDAY=MO,WE");
  auto page = cal.range(std::nullopt, at("2026-03-24T00:00:00Z"), at("2026-04-02T00:00:00Z"));
  CHECK(starts(page.items) ==
        join({"2026-03-25T08:00:00Z", "2026-03-30T07:00:00Z", "2026-04-01T07:00:00Z"}));
  for (const auto& o : page.items) {
    CHECK(o.id == s.id);
    CHECK(o.series_id == s.id);
    CHECK(o.recurrence_id == o.start);
    CHECK(o.end - o.start == 30min);
    CHECK(o.title == "Standup");
  }
  // The sixth and last is on 2026-04-08.
  CHECK(starts(cal.occurrences(s.id, at("2026-04-03T00:00:00Z"), at("2027-01-01T00:00:00Z"))) ==
        join({"2026-04-06T07:00:00Z", "2026-04-08T07:00:00Z"}));
  CHECK(cal.range(std::nullopt, at("2026-04-09T00:00:00Z"), at("2030-01-01T00:00:00Z"))
            .items.empty());
  // An occurrence that overlaps the start of the range is in it.
  CHECK(starts(cal.conflicts(std::nullopt, at("2026-03-25T08:29:00Z"),
                             at("2026-03-25T08:31:00Z"))) == join({"2026-03-25T08:00:00Z"}));
  CHECK(
      cal.conflicts(std::nullopt, at("2026-03-25T08:30:00Z"), at("2026-03-25T09:00:00Z")).empty());
}

TEST_CASE_TEMPLATE("recurrence: DAILY, MONTHLY, YEARLY with INTERVAL, UNTIL, BYDAY, BYMONTHDAY", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& cal = store.calendar();
  auto year = [&](const CalendarEvent& e) {
    return starts(cal.occurrences(e.id, at("2024-01-01T00:00:00Z"), at("2033-01-01T00:00:00Z")));
  };
  // UNTIL is inclusive.
  auto daily = cal.create(series(std::nullopt, "d", "2026-01-01T09:00:00Z", "2026-01-01T10:00:00Z",
                                 "FREQ=DAILY;INTERVAL=2;UNTIL=20260109T090000Z"));
  CHECK(year(daily) == join({"2026-01-01T09:00:00Z", "2026-01-03T09:00:00Z", "2026-01-05T09:00:00Z",
                             "2026-01-07T09:00:00Z", "2026-01-09T09:00:00Z"}));
  // Months without a 31st are skipped.
  auto monthly = cal.create(series(std::nullopt, "m", "2026-01-31T12:00:00Z",
                                   "2026-01-31T13:00:00Z", "FREQ=MONTHLY;BYMONTHDAY=31;COUNT=3"));
  CHECK(year(monthly) ==
        join({"2026-01-31T12:00:00Z", "2026-03-31T12:00:00Z", "2026-05-31T12:00:00Z"}));
  auto last_friday = cal.create(series(std::nullopt, "f", "2026-01-30T16:00:00Z",
                                       "2026-01-30T17:00:00Z", "FREQ=MONTHLY;BYDAY=-1FR;COUNT=3"));
  CHECK(year(last_friday) ==
        join({"2026-01-30T16:00:00Z", "2026-02-27T16:00:00Z", "2026-03-27T16:00:00Z"}));
  // An all-day yearly event on 29 February, in New York: leap years only.
  NewEvent leap;
  leap.title = "leap day";
  leap.all_day = true;
  leap.time_zone = "America/New_York";
  leap.start_day = "2024-02-29";
  leap.end_day = "2024-03-01";
  leap.rrule = "RRULE:FREQ=YEARLY;COUNT=3";
  auto leap_event = cal.create(leap);
  CHECK(leap_event.rrule == "FREQ=YEARLY;COUNT=3");
  auto leaps =
      cal.occurrences(leap_event.id, at("2024-01-01T00:00:00Z"), at("2040-01-01T00:00:00Z"));
  CHECK(starts(leaps) ==
        join({"2024-02-29T05:00:00Z", "2028-02-29T05:00:00Z", "2032-02-29T05:00:00Z"}));
  for (const auto& o : leaps) CHECK(o.end - o.start == 24h);
  // An open-ended series found years after it began, every other week.
  auto fortnightly =
      cal.create(series(std::nullopt, "f2", "2020-01-07T08:00:00Z", "2020-01-07T09:00:00Z",
                        "FREQ=WEEKLY;INTERVAL=2;BYDAY=TU", "Europe/London"));
  auto later =
      cal.occurrences(fortnightly.id, at("2031-06-01T00:00:00Z"), at("2031-07-01T00:00:00Z"));
  // 2031-06-03 is a Tuesday 595 weeks after 2020-01-07 (odd: skipped);
  // British summer time: 08:00 local is 07:00 UTC.
  CHECK(starts(later) == join({"2031-06-10T07:00:00Z", "2031-06-24T07:00:00Z"}));
  CHECK(cal.get(fortnightly.id)->rrule == "FREQ=WEEKLY;INTERVAL=2;BYDAY=TU");
}

TEST_CASE_TEMPLATE("recurrence: cancelled and changed occurrences, in ranges and conflicts", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& cal = store.calendar();
  auto user = store.conversations().upsert_user({"web", "ann"});
  auto s = cal.create(series(user.id, "Sync", "2026-01-05T10:00:00Z", "2026-01-05T11:00:00Z",
                             "FREQ=DAILY;COUNT=5"));
  auto week = [&] {
    return cal.range(user.id, at("2026-01-05T00:00:00Z"), at("2026-01-12T00:00:00Z")).items;
  };
  REQUIRE(week().size() == 5);

  CHECK(cal.cancel_occurrence(s.id, at("2026-01-06T10:00:00Z")));
  CHECK_FALSE(cal.cancel_occurrence(s.id, at("2026-01-06T10:00:00Z")));
  CHECK(cal.get(s.id)->exdates == std::vector<Timestamp>{at("2026-01-06T10:00:00Z")});

  EventUpdate move;
  move.start = at("2026-01-07T14:00:00Z");
  move.end = at("2026-01-07T15:00:00Z");
  move.title = "Sync (afternoon)";
  auto moved = cal.modify_occurrence(s.id, at("2026-01-07T10:00:00Z"), move);
  CHECK(moved.id != s.id);
  CHECK(moved.series_id == s.id);
  CHECK(moved.recurrence_id == at("2026-01-07T10:00:00Z"));
  CHECK(moved.uid == s.uid);
  CHECK(moved.rrule.empty());
  CHECK(starts(week()) == join({"2026-01-05T10:00:00Z", "2026-01-07T14:00:00Z",
                                "2026-01-08T10:00:00Z", "2026-01-09T10:00:00Z"}));
  CHECK(week()[1].title == "Sync (afternoon)");
  CHECK(cal.conflicts(user.id, at("2026-01-07T10:00:00Z"), at("2026-01-07T11:00:00Z")).empty());
  CHECK(cal.conflicts(user.id, at("2026-01-07T14:30:00Z"), at("2026-01-07T16:00:00Z"))[0].id ==
        moved.id);
  // Changing it again updates the same event.
  EventUpdate rename;
  rename.title = "Sync (late)";
  auto again = cal.modify_occurrence(s.id, at("2026-01-07T10:00:00Z"), rename);
  CHECK(again.id == moved.id);
  CHECK(again.start == at("2026-01-07T14:00:00Z"));
  CHECK(cal.find_by_uid(s.uid)->id == s.id);

  // No such occurrence, a cancelled one, an event that does not repeat.
  CHECK_ERROR_CODE(cal.modify_occurrence(s.id, at("2026-01-05T10:30:00Z"), rename),
                   ErrorCode::not_found);
  CHECK_ERROR_CODE(cal.modify_occurrence(s.id, at("2026-01-06T10:00:00Z"), rename),
                   ErrorCode::not_found);
  NewEvent single;
  single.owner = user.id;
  single.title = "Lunch";
  single.start = at("2026-01-08T12:00:00Z");
  single.end = at("2026-01-08T13:00:00Z");
  auto lunch = cal.create(single);
  CHECK_ERROR_CODE(cal.cancel_occurrence(lunch.id, lunch.start), ErrorCode::not_found);
  EventUpdate rule_for_occurrence;
  rule_for_occurrence.rrule = "FREQ=DAILY";
  CHECK_ERROR_CODE(cal.update(moved.id, rule_for_occurrence), ErrorCode::invalid_argument);

  // Bookings see occurrences: a single event, and a series against a series.
  BookingOptions refuse;
  refuse.refuse_conflicts = true;
  NewEvent clash = single;
  clash.title = "Call";
  clash.start = at("2026-01-09T10:30:00Z");
  clash.end = at("2026-01-09T10:45:00Z");
  try {
    cal.create(clash, refuse);
    FAIL("the overlapping booking was accepted");
  } catch (const CalendarConflict& c) {
    REQUIRE(c.conflicts().size() == 1);
    CHECK(c.conflicts()[0].series_id == s.id);
    CHECK(c.conflicts()[0].start == at("2026-01-09T10:00:00Z"));
  }
  // The cancelled slot is free; the moved occurrence's old slot too.
  clash.start = at("2026-01-06T10:00:00Z");
  clash.end = at("2026-01-06T11:00:00Z");
  CHECK_NOTHROW(cal.create(clash, refuse));
  clash.uid.clear();
  clash.start = at("2026-01-07T10:00:00Z");
  clash.end = at("2026-01-07T11:00:00Z");
  CHECK_NOTHROW(cal.create(clash, refuse));
  // A new series is checked from now (or its start) for series_horizon.
  NewEvent far_lunch = single;
  far_lunch.title = "Far lunch";
  far_lunch.start = at("2040-01-08T12:00:00Z");
  far_lunch.end = at("2040-01-08T13:00:00Z");
  cal.create(far_lunch);
  auto daily_lunch =
      series(user.id, "Lunch walk", "2039-12-25T12:30:00Z", "2039-12-25T13:00:00Z", "FREQ=DAILY");
  try {
    cal.create(daily_lunch, refuse);
    FAIL("the overlapping series was accepted");
  } catch (const CalendarConflict& c) {
    CHECK(titles_of(c.conflicts()) == "Far lunch");
    CHECK(c.conflicts()[0].start == at("2040-01-08T12:00:00Z"));
  }
  BookingOptions short_horizon = refuse;
  short_horizon.series_horizon = std::chrono::hours(24 * 7);
  CHECK_NOTHROW(cal.create(daily_lunch, short_horizon));
  daily_lunch.uid.clear();
  daily_lunch.start = at("2039-12-25T13:00:00Z");
  daily_lunch.end = at("2039-12-25T13:30:00Z");
  CHECK_NOTHROW(cal.create(daily_lunch, refuse));

  // Removing a changed occurrence cancels it; removing the series removes
  // its changed occurrences.
  CHECK(cal.remove(moved.id));
  CHECK(cal.get(s.id)->exdates ==
        std::vector<Timestamp>{at("2026-01-06T10:00:00Z"), at("2026-01-07T10:00:00Z")});
  auto other = cal.modify_occurrence(s.id, at("2026-01-08T10:00:00Z"), rename);
  CHECK(cal.remove(s.id));
  CHECK_FALSE(cal.get(other.id).has_value());
}

TEST_CASE_TEMPLATE("recurrence: a new rule drops the exceptions it no longer generates", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& cal = store.calendar();
  // Monday 2026-01-05, daily.
  auto s = cal.create(
      series(std::nullopt, "Gym", "2026-01-05T07:00:00Z", "2026-01-05T08:00:00Z", "FREQ=DAILY"));
  cal.cancel_occurrence(s.id, at("2026-01-06T07:00:00Z"));
  cal.cancel_occurrence(s.id, at("2026-01-12T07:00:00Z"));
  EventUpdate later;
  later.title = "Gym (late)";
  auto tuesday = cal.modify_occurrence(s.id, at("2026-01-13T07:00:00Z"), later);
  auto monday = cal.modify_occurrence(s.id, at("2026-01-19T07:00:00Z"), later);
  EventUpdate weekly;
  weekly.rrule = "FREQ=WEEKLY;BYDAY=MO";
  auto updated = cal.update(s.id, weekly);
  CHECK(updated.exdates == std::vector<Timestamp>{at("2026-01-12T07:00:00Z")});
  CHECK_FALSE(cal.get(tuesday.id).has_value());
  CHECK(cal.get(monday.id).has_value());
  CHECK(starts(cal.occurrences(s.id, at("2026-01-05T00:00:00Z"), at("2026-01-27T00:00:00Z"))) ==
        join({"2026-01-05T07:00:00Z", "2026-01-19T07:00:00Z", "2026-01-26T07:00:00Z"}));
  // No rule: a single event again, without exceptions.
  EventUpdate once;
  once.rrule = "";
  auto single = cal.update(s.id, once);
  CHECK(single.rrule.empty());
  CHECK(single.exdates.empty());
  CHECK_FALSE(cal.get(monday.id).has_value());
  CHECK(starts(cal.range(std::nullopt, at("2026-01-01T00:00:00Z"), at("2026-02-01T00:00:00Z"))
                   .items) == join({"2026-01-05T07:00:00Z"}));
}

TEST_CASE_TEMPLATE("recurrence: malformed rules are refused, naming the rule, writing nothing", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& cal = store.calendar();
  for (const char* rule :
       {"FREQ=HOURLY", "FREQ=DAILY;COUNT=2;UNTIL=20260101T000000Z", "FREQ=WEEKLY;BYDAY=XX",
        "nonsense", "FREQ=DAILY;INTERVAL=0", "FREQ=DAILY;FOO=1", "FREQ=DAILY;COUNT=0",
        "FREQ=DAILY;BYHOUR=9,10", "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30", "FREQ=DAILY;BYWEEKNO=1"}) {
    CAPTURE(rule);
    auto n = series(std::nullopt, "x", "2026-01-05T07:00:00Z", "2026-01-05T08:00:00Z", rule);
    try {
      cal.create(n);
      FAIL("accepted");
    } catch (const Error& e) {
      CHECK(e.code() == ErrorCode::invalid_argument);
      CHECK(std::string(e.what()).find(rule) != std::string::npos);
    }
  }
  NewEvent no_rule;
  no_rule.title = "x";
  no_rule.start = at("2026-01-05T07:00:00Z");
  no_rule.end = at("2026-01-05T08:00:00Z");
  no_rule.exdates = {at("2026-01-05T07:00:00Z")};
  CHECK_ERROR_CODE(cal.create(no_rule), ErrorCode::invalid_argument);
  CHECK(cal.range(std::nullopt, at("2020-01-01T00:00:00Z"), at("2030-01-01T00:00:00Z"))
            .items.empty());
}

TEST_CASE_TEMPLATE("recurrence: pages mix occurrences and events in order, none twice", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& cal = store.calendar();
  cal.create(
      series(std::nullopt, "daily", "2026-02-01T09:00:00Z", "2026-02-01T10:00:00Z", "FREQ=DAILY"));
  cal.create(series(std::nullopt, "weekly", "2026-02-02T09:00:00Z", "2026-02-02T09:30:00Z",
                    "FREQ=WEEKLY"));
  for (int day = 1; day <= 20; day += 3) {
    NewEvent e;
    e.title = "single";
    e.start = at("2026-02-01T08:00:00Z") + std::chrono::hours(24 * day);
    e.end = e.start + 2h;
    cal.create(e);
  }
  auto from = at("2026-02-01T00:00:00Z"), to = at("2026-02-21T00:00:00Z");
  auto all = cal.range(std::nullopt, from, to, 1000).items;
  CHECK(all.size() == 20 + 3 + 7);
  std::vector<CalendarEvent> paged;
  std::string cursor;
  do {
    auto page = cal.range(std::nullopt, from, to, 4, cursor);
    paged.insert(paged.end(), page.items.begin(), page.items.end());
    cursor = page.next_cursor;
  } while (!cursor.empty());
  REQUIRE(paged.size() == all.size());
  for (std::size_t i = 0; i < all.size(); ++i) {
    CHECK(paged[i].id == all[i].id);
    CHECK(paged[i].start == all[i].start);
    if (i > 0) CHECK(all[i - 1].start <= all[i].start);
  }
}

TEST_CASE_TEMPLATE("recurrence: zones, gaps and UNTIL as RFC 5545 reads them", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& cal = store.calendar();
  // 02:30 does not exist in New York on 2026-03-08: read with the offset
  // before the gap (EST), 07:30 UTC.
  auto night = cal.create(series(std::nullopt, "night", "2026-03-07T07:30:00Z",
                                 "2026-03-07T08:00:00Z", "FREQ=DAILY;COUNT=3", "America/New_York"));
  CHECK(starts(cal.occurrences(night.id, at("2026-03-01T00:00:00Z"), at("2026-04-01T00:00:00Z"))) ==
        join({"2026-03-07T07:30:00Z", "2026-03-08T07:30:00Z", "2026-03-09T06:30:00Z"}));
  // A floating UNTIL is stored in UTC; an all-day series' UNTIL as a date.
  auto timed = cal.create(series(std::nullopt, "t", "2026-01-05T08:00:00Z", "2026-01-05T09:00:00Z",
                                 "FREQ=DAILY;UNTIL=20260107T090000", "Europe/Berlin"));
  CHECK(timed.rrule == "FREQ=DAILY;UNTIL=20260107T080000Z");
  NewEvent days;
  days.title = "d";
  days.all_day = true;
  days.time_zone = "Europe/London";
  days.start_day = "2026-01-05";
  days.end_day = "2026-01-06";
  days.rrule = "FREQ=DAILY;UNTIL=20260108T000000Z";
  auto all_day = cal.create(days);
  CHECK(all_day.rrule == "FREQ=DAILY;UNTIL=20260108");
  // A new zone keeps an all-day series' exceptions on their local days.
  cal.cancel_occurrence(all_day.id, at("2026-01-06T00:00:00Z"));
  EventUpdate rename;
  rename.title = "changed";
  auto changed = cal.modify_occurrence(all_day.id, at("2026-01-07T00:00:00Z"), rename);
  EventUpdate tokyo;
  tokyo.time_zone = "Asia/Tokyo";
  auto moved = cal.update(all_day.id, tokyo);
  CHECK(moved.exdates == std::vector<Timestamp>{at("2026-01-05T15:00:00Z")});
  auto occurrences =
      cal.occurrences(all_day.id, at("2026-01-01T00:00:00Z"), at("2026-02-01T00:00:00Z"));
  // The changed one keeps its own times.
  CHECK(starts(occurrences) ==
        join({"2026-01-04T15:00:00Z", "2026-01-07T00:00:00Z", "2026-01-07T15:00:00Z"}));
  REQUIRE(cal.get(changed.id).has_value());
  CHECK(cal.get(changed.id)->recurrence_id == at("2026-01-06T15:00:00Z"));
}

TEST_CASE_TEMPLATE("recurrence: removing a series while its occurrences change", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& cal = store.calendar();
  for (int round = 0; round < 10; ++round) {
    auto s = cal.create(series(std::nullopt, "s", "2026-01-05T09:00:00Z", "2026-01-05T10:00:00Z",
                               "FREQ=DAILY;COUNT=30"));
    cal.modify_occurrence(s.id, at("2026-01-06T09:00:00Z"), EventUpdate{});
    std::atomic<int> failures{0};
    std::thread changer([&] {
      try {
        cal.modify_occurrence(s.id, at("2026-01-07T09:00:00Z"), EventUpdate{});
        cal.cancel_occurrence(s.id, at("2026-01-08T09:00:00Z"));
      } catch (const Error& e) {
        if (e.code() != ErrorCode::not_found) ++failures;  // the series went first
      }
    });
    std::thread remover([&] {
      try {
        cal.remove(s.id);
      } catch (const Error&) {
        ++failures;
      }
    });
    changer.join();
    remover.join();
    CHECK(failures == 0);
    CHECK_FALSE(cal.get(s.id).has_value());
    CHECK(cal.range(std::nullopt, at("2026-01-01T00:00:00Z"), at("2026-03-01T00:00:00Z"))
              .items.empty());
  }
}
