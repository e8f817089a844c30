// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#include <algorithm>
#include <sstream>
#include <string>
#include <vector>

#include "support.hpp"

using namespace convstore;
using namespace std::chrono_literals;

namespace {

Timestamp at(const char* iso) { return parse_timestamp(iso); }

// A calendar file as calendar programs write it: CRLF line ends.
std::string crlf(const std::string& text) {
  std::string out;
  for (char c : text) {
    if (c == '\n') out += '\r';
    out += c;
  }
  return out;
}

std::size_t count_of(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (auto pos = text.find(what); pos != std::string::npos; pos = text.find(what, pos + 1)) ++n;
  return n;
}

std::vector<CalendarEvent> everything(Store& store, std::optional<UserId> owner) {
  return store.calendar()
      .range(owner, at("2000-01-01T00:00:00Z"), at("2100-01-01T00:00:00Z"), 10000)
      .items;
}

const char* const kSample = R"(BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//Example Corp//Calendar 1.0//EN
BEGIN:VTIMEZONE
TZID:/mozilla.org/20050126_1/America/New_York
X-LIC-LOCATION:America/New_York
BEGIN:STANDARD
DTSTART:19701101T020000
TZOFFSETFROM:-0400
TZOFFSETTO:-0500
RRULE:FREQ=YEARLY;BYMONTH=11;BYDAY=1SU
END:STANDARD
BEGIN:DAYLIGHT
DTSTART:19700308T020000
TZOFFSETFROM:-0500
TZOFFSETTO:-0400
RRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=2SU
END:DAYLIGHT
END:VTIMEZONE
BEGIN:VEVENT
UID:planning-1@example.com
DTSTAMP:20260101T000000Z
DTSTART;TZID=/mozilla.org/20050126_1/America/New_York:20260310T093000
DTEND;TZID=/mozilla.org/20050126_1/America/New_York:20260310T103000
SUMMARY:Planning\, Q2
DESCRIPTION:Agenda:\n1. budget\; 2. hiring\n3. a long line that a calendar
  program folds because it is longer than seventy-five octets
LOCATION:Room 4
BEGIN:VALARM
ACTION:DISPLAY
DESCRIPTION:Reminder
TRIGGER:-PT15M
END:VALARM
END:VEVENT
BEGIN:VEVENT
UID:call-2@example.com
DTSTAMP:20260101T000000Z
DTSTART:20260311T150000Z
DURATION:PT45M
SUMMARY:Call
END:VEVENT
BEGIN:VEVENT
UID:floating-3@example.com
DTSTAMP:20260101T000000Z
DTSTART:20260312T090000
DTEND:20260312T100000
SUMMARY:Floating breakfast
END:VEVENT
BEGIN:VEVENT
UID:holiday-4@example.com
DTSTAMP:20260101T000000Z
DTSTART;VALUE=DATE:20260317
SUMMARY:Holiday
END:VEVENT
BEGIN:VEVENT
UID:weekly-5@example.com
DTSTAMP:20260101T000000Z
DTSTART;TZID=America/New_York:20260302T090000
DTEND;TZID=America/New_York:20260302T093000
RRULE:FREQ=WEEKLY;BYDAY=MO;COUNT=4
EXDATE;TZID=America/New_York:20260309T090000
SUMMARY:Weekly
END:VEVENT
BEGIN:VEVENT
UID:weekly-5@example.com
DTSTAMP:20260101T000000Z
RECURRENCE-ID;TZID=America/New_York:20260316T090000
DTSTART;TZID=America/New_York:20260316T110000
DTEND;TZID=America/New_York:20260316T113000
SUMMARY:Weekly (late)
END:VEVENT
END:VCALENDAR
)";

}  // namespace

TEST_CASE_TEMPLATE("ical: import reads zones, floating times, dates, escapes, rules", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& cal = store.calendar();
  IcsImportOptions options;
  options.default_time_zone = "Europe/Paris";
  auto result = cal.import_ics(crlf(kSample), options);
  CHECK(result.created == 6);
  CHECK(result.replaced == 0);
  REQUIRE(result.ids.size() == 6);

  auto planning = *cal.find_by_uid("planning-1@example.com");
  CHECK(planning.title == "Planning, Q2");
  CHECK(planning.description ==
        "Agenda:\n1. budget; 2. hiring\n3. a long line that a calendar program folds because it "
        "is longer than seventy-five octets");
  CHECK(planning.location == "Room 4");
  CHECK(planning.time_zone == "America/New_York");
  // 10 March is after New York's spring change (8 March): UTC-4.
  CHECK(planning.start == at("2026-03-10T13:30:00Z"));
  CHECK(planning.end == at("2026-03-10T14:30:00Z"));

  auto call = *cal.find_by_uid("call-2@example.com");
  CHECK(call.time_zone == "UTC");
  CHECK(call.end - call.start == 45min);

  auto floating = *cal.find_by_uid("floating-3@example.com");
  CHECK(floating.time_zone == "Europe/Paris");
  CHECK(floating.start == at("2026-03-12T08:00:00Z"));

  auto holiday = *cal.find_by_uid("holiday-4@example.com");
  CHECK(holiday.all_day);
  CHECK(holiday.time_zone == "Europe/Paris");
  CHECK(holiday.start == at("2026-03-16T23:00:00Z"));
  CHECK(holiday.end == at("2026-03-17T23:00:00Z"));

  auto weekly = *cal.find_by_uid("weekly-5@example.com");
  CHECK(weekly.rrule == "FREQ=WEEKLY;COUNT=4;BYDAY=MO");
  CHECK(weekly.exdates == std::vector<Timestamp>{at("2026-03-09T13:00:00Z")});
  auto occurrences =
      cal.occurrences(weekly.id, at("2026-03-01T00:00:00Z"), at("2026-04-01T00:00:00Z"));
  REQUIRE(occurrences.size() == 3);
  CHECK(occurrences[0].start == at("2026-03-02T14:00:00Z"));  // EST
  CHECK(occurrences[1].start == at("2026-03-16T15:00:00Z"));  // moved to 11:00 EDT
  CHECK(occurrences[1].title == "Weekly (late)");
  CHECK(occurrences[1].recurrence_id == at("2026-03-16T13:00:00Z"));
  CHECK(occurrences[2].start == at("2026-03-23T13:00:00Z"));
}

TEST_CASE_TEMPLATE("ical: export then import keeps every field", B, CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& cal = store.calendar();
  auto user = store.conversations().upsert_user({"web", "ann"});

  NewEvent meeting;
  meeting.owner = user.id;
  meeting.uid = "meeting@convstore.test";
  meeting.title = "Review, \"final\"; with escapes \\ and a newline\nsecond line";
  meeting.description = std::string(300, 'd') + " ünïcödé";
  meeting.location = "Café, 2nd floor";
  meeting.start = at("2026-10-25T00:30:00Z");  // 02:30 CEST, just before clocks go back
  meeting.end = at("2026-10-25T01:30:00Z");    // 02:30 CET: the repeated hour
  meeting.time_zone = "Europe/Berlin";
  meeting.metadata = {{"source", "crm"}, {"tags", {"a,b", "c;d"}}, {"n", 3}};
  cal.create(meeting);

  NewEvent trip;
  trip.owner = user.id;
  trip.uid = "trip@convstore.test";
  trip.title = "Trip";
  trip.all_day = true;
  trip.time_zone = "Asia/Tokyo";
  trip.start_day = "2026-11-02";
  trip.end_day = "2026-11-05";
  cal.create(trip);

  NewEvent standup;
  standup.owner = user.id;
  standup.uid = "standup@convstore.test";
  standup.title = "Standup";
  standup.start = at("2026-03-02T14:00:00Z");
  standup.end = at("2026-03-02T14:15:00Z");
  standup.time_zone = "America/New_York";
  standup.rrule = "FREQ=WEEKLY;BYDAY=MO,WE;UNTIL=20260401T000000Z";
  auto series = cal.create(standup);
  cal.cancel_occurrence(series.id, at("2026-03-04T14:00:00Z"));
  EventUpdate later;
  later.start = at("2026-03-11T17:00:00Z");
  later.end = at("2026-03-11T17:30:00Z");
  later.title = "Standup (afternoon)";
  later.metadata_patch = Json{{"moved", true}};
  cal.modify_occurrence(series.id, at("2026-03-11T13:00:00Z"), later);

  NewEvent yearly;
  yearly.owner = user.id;
  yearly.uid = "birthday@convstore.test";
  yearly.title = "Birthday";
  yearly.all_day = true;
  yearly.time_zone = "Europe/London";
  yearly.start_day = "2026-06-01";
  yearly.end_day = "2026-06-02";
  yearly.rrule = "FREQ=YEARLY";
  auto birthday = cal.create(yearly);
  cal.cancel_occurrence(birthday.id, at("2027-05-31T23:00:00Z"));

  const auto before = everything(store, user.id);
  const std::string ics = cal.export_ics(user.id);
  CHECK(ics.rfind("BEGIN:VCALENDAR\r\n", 0) == 0);
  CHECK(count_of(ics, "BEGIN:VEVENT") == 5);
  CHECK(count_of(ics, "TZID:Europe/Berlin") == 1);
  CHECK(count_of(ics, "TZID:America/New_York") == 1);
  std::istringstream lines(ics);
  for (std::string line; std::getline(lines, line);) {
    CAPTURE(line);
    CHECK(line.size() <= 76);  // 75 octets and the CR
  }

  // Gone, and back from the file.
  for (const auto& uid : {"meeting@convstore.test", "trip@convstore.test", "standup@convstore.test",
                          "birthday@convstore.test"}) {
    cal.remove(cal.find_by_uid(uid)->id);
  }
  REQUIRE(everything(store, user.id).empty());
  IcsImportOptions options;
  options.owner = user.id;
  auto result = cal.import_ics(ics, options);
  CHECK(result.created == 5);
  const auto after = everything(store, user.id);
  REQUIRE(after.size() == before.size());
  for (std::size_t i = 0; i < before.size(); ++i) {
    const auto &a = before[i], &b = after[i];
    CAPTURE(a.title);
    CHECK(b.uid == a.uid);
    CHECK(b.owner == a.owner);
    CHECK(b.title == a.title);
    CHECK(b.description == a.description);
    CHECK(b.location == a.location);
    CHECK(b.start == a.start);
    CHECK(b.end == a.end);
    CHECK(b.all_day == a.all_day);
    CHECK(b.time_zone == a.time_zone);
    CHECK(b.metadata == a.metadata);
    CHECK(b.rrule == a.rrule);
    CHECK(b.exdates == a.exdates);
    CHECK(b.recurrence_id == a.recurrence_id);
    CHECK(b.series_id.has_value() == a.series_id.has_value());
    CHECK(std::chrono::floor<std::chrono::seconds>(b.created_at) ==
          std::chrono::floor<std::chrono::seconds>(a.created_at));
  }
  // And the file it writes again is the same, but for its time stamp.
  auto without_stamps = [](const std::string& text) {
    std::string out;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) {
      if (line.rfind("DTSTAMP:", 0) != 0) out += line + "\n";
    }
    return out;
  };
  CHECK(without_stamps(cal.export_ics(user.id)) == without_stamps(ics));
}

TEST_CASE_TEMPLATE("ical: a broken file names its line and writes nothing", B, CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& cal = store.calendar();
  const std::string good =
      "BEGIN:VEVENT\nUID:good@x\nDTSTART:20260101T090000Z\nDTEND:20260101T100000Z\n"
      "SUMMARY:fine\nEND:VEVENT\n";
  struct Case {
    std::string body;
    std::string says;
  };
  const std::vector<Case> cases = {
      {"BEGIN:VEVENT\nUID:b@x\nthis line is broken\nEND:VEVENT\n", "line 11 is broken"},
      {"BEGIN:VEVENT\nUID:b@x\nSUMMARY:no start\nDTEND:20260101T100000Z\nEND:VEVENT\n",
       "line 9: the event 'b@x' has no DTSTART"},
      {"BEGIN:VEVENT\nUID:b@x\nDTSTART;TZID=Mars/Olympus:20260101T090000\n"
       "DTEND:20260101T100000Z\nEND:VEVENT\n",
       "line 11: unknown time zone 'Mars/Olympus'"},
      {"BEGIN:VEVENT\nUID:b@x\nDTSTART:20260101T090000Z\nDTEND:20260101T100000Z\n"
       "RRULE:FREQ=SOMETIMES\nEND:VEVENT\n",
       "line 13: Can't parse as RECUR value"},
      {"BEGIN:VEVENT\nUID:b@x\nDTSTART:20261345T090000Z\nDTEND:20260101T100000Z\nEND:VEVENT\n",
       "line 11: DTSTART '20261345T090000Z' is not a real time"},
      {"BEGIN:VEVENT\nUID:b@x\nDTSTART:20260101T090000Z\nDTEND:20260101T080000Z\nEND:VEVENT\n",
       "line 9 (event 'b@x'): event end"},
      {"BEGIN:VEVENT\nUID:b@x\nDTSTART:20260101T090000Z\nEND:VTODO\n", "line 12: END:VTODO"},
      {"BEGIN:VEVENT\nUID:b@x\nDTSTART:20260101T090000Z\nDTEND:20260101T100000Z\n"
       "X-CONVSTORE-METADATA:[1\nEND:VEVENT\n",
       "line 13: X-CONVSTORE-METADATA is not JSON"},
      {"BEGIN:VEVENT\nUID:b@x\nRECURRENCE-ID:20260105T090000Z\nDTSTART:20260105T100000Z\n"
       "DTEND:20260105T110000Z\nEND:VEVENT\n",
       "in neither the file nor the calendar"},
  };
  for (const auto& c : cases) {
    const std::string file = "BEGIN:VCALENDAR\nVERSION:2.0\n" + good + c.body + "END:VCALENDAR\n";
    CAPTURE(file);
    try {
      cal.import_ics(file);
      FAIL("imported");
    } catch (const Error& e) {
      CHECK(e.code() == ErrorCode::invalid_argument);
      CHECK_MESSAGE(std::string(e.what()).find(c.says) != std::string::npos, std::string(e.what()));
    }
    CHECK_FALSE(cal.find_by_uid("good@x").has_value());
  }
  CHECK_ERROR_CODE(cal.import_ics("not a calendar"), ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(cal.import_ics(""), ErrorCode::invalid_argument);
}

TEST_CASE_TEMPLATE("ical: importing again replaces, or refuses when asked to", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& cal = store.calendar();
  auto ann = store.conversations().upsert_user({"web", "ann"});
  auto file = [](const char* title) {
    return std::string(
               "BEGIN:VCALENDAR\nVERSION:2.0\nBEGIN:VEVENT\nUID:same@x\n"
               "DTSTART:20260101T090000Z\nDTEND:20260101T100000Z\nSUMMARY:") +
           title + "\nEND:VEVENT\nEND:VCALENDAR\n";
  };
  IcsImportOptions options;
  options.owner = ann.id;
  auto first = cal.import_ics(file("one"), options);
  auto second = cal.import_ics(file("two"), options);
  CHECK(second.replaced == 1);
  CHECK(second.ids == first.ids);
  CHECK(cal.get(first.ids[0])->title == "two");
  options.replace_existing = false;
  CHECK_ERROR_CODE(cal.import_ics(file("three"), options), ErrorCode::already_exists);
  IcsImportOptions shared;  // another calendar: the UID is taken
  CHECK_ERROR_CODE(cal.import_ics(file("four"), shared), ErrorCode::already_exists);
  CHECK(cal.get(first.ids[0])->title == "two");
}

TEST_CASE_TEMPLATE("ical: a range export has what overlaps it, series whole", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& cal = store.calendar();
  auto add = [&](const char* uid, const char* start, const char* end, const char* rule = "") {
    NewEvent e;
    e.uid = uid;
    e.title = uid;
    e.start = at(start);
    e.end = at(end);
    e.rrule = rule;
    return cal.create(e);
  };
  add("before@x", "2026-01-01T09:00:00Z", "2026-01-01T10:00:00Z");
  add("inside@x", "2026-02-10T09:00:00Z", "2026-02-10T10:00:00Z");
  add("after@x", "2026-04-01T09:00:00Z", "2026-04-01T10:00:00Z");
  auto weekly = add("weekly@x", "2026-01-05T09:00:00Z", "2026-01-05T10:00:00Z", "FREQ=WEEKLY");
  EventUpdate move;
  move.start = at("2026-01-13T09:00:00Z");
  move.end = at("2026-01-13T10:00:00Z");
  cal.modify_occurrence(weekly.id, at("2026-01-12T09:00:00Z"), move);
  auto ics = cal.export_ics(std::nullopt,
                            TimeSlot{at("2026-02-01T00:00:00Z"), at("2026-03-01T00:00:00Z")});
  CHECK(count_of(ics, "BEGIN:VEVENT") == 3);  // inside, the series, its changed occurrence
  CHECK(count_of(ics, "UID:inside@x") == 1);
  CHECK(count_of(ics, "UID:weekly@x") == 2);
  CHECK(count_of(ics, "RECURRENCE-ID:20260112T090000Z") == 1);
  CHECK(count_of(ics, "before@x") == 0);
  CHECK(count_of(ics, "after@x") == 0);
}

TEST_CASE_TEMPLATE("ical: cancelled instances, date exceptions, RDATE, a byte order mark", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& cal = store.calendar();
  const std::string file =
      "\xEF\xBB\xBF"
      "BEGIN:VCALENDAR\nVERSION:2.0\nBEGIN:VEVENT\nUID:s@x\nDTSTART:20260105T090000Z\n"
      "DTEND:20260105T100000Z\nRRULE:FREQ=DAILY;COUNT=5\nEXDATE;VALUE=DATE:20260106\n"
      "SUMMARY:daily\nEND:VEVENT\nBEGIN:VEVENT\nUID:s@x\nRECURRENCE-ID:20260107T090000Z\n"
      "DTSTART:20260107T090000Z\nDTEND:20260107T100000Z\nSTATUS:CANCELLED\nSUMMARY:daily\n"
      "END:VEVENT\nEND:VCALENDAR\n";
  auto result = cal.import_ics(file);
  REQUIRE(result.ids.size() == 2);
  auto s = *cal.find_by_uid("s@x");
  CHECK(s.exdates ==
        std::vector<Timestamp>{at("2026-01-06T09:00:00Z"), at("2026-01-07T09:00:00Z")});
  CHECK(cal.occurrences(s.id, at("2026-01-01T00:00:00Z"), at("2026-02-01T00:00:00Z")).size() == 3);
  const std::string rdate =
      "BEGIN:VCALENDAR\nVERSION:2.0\nBEGIN:VEVENT\nUID:r@x\nDTSTART:20260105T090000Z\n"
      "DTEND:20260105T100000Z\nRDATE:20260109T090000Z\nEND:VEVENT\nEND:VCALENDAR\n";
  try {
    cal.import_ics(rdate);
    FAIL("RDATE was dropped silently");
  } catch (const Error& e) {
    CHECK(std::string(e.what()).find("line 7: RDATE is not supported") != std::string::npos);
  }
}
