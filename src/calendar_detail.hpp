// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
//
// What the calendar store and its iCalendar reader and writer share: time
// zones and local days (Howard Hinnant's date/tz) and the expansion of
// recurrence rules (libical).
#pragma once

#include <date/date.h>
#include <date/tz.h>

#include <algorithm>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "convstore/calendar_store.hpp"

namespace convstore::detail {

class Connection;
class Stmt;

using LocalTime = date::local_time<std::chrono::microseconds>;

// The times convstore stores: years 0001 to 9999 (what both backends and
// ISO 8601 text agree on).
extern const Timestamp kEarliestTime;
extern const Timestamp kLatestTime;

// Throws Error(invalid_argument) naming `what` for a time outside 0001..9999.
void check_time(Timestamp t, std::string_view what);

// The IANA zone `name`; Error(invalid_argument) when the database has none.
const date::time_zone* zone(const std::string& name);

// Exactly YYYY-MM-DD, a real calendar day; Error(invalid_argument) naming
// `what` otherwise.
date::local_days parse_day(const std::string& text, std::string_view what);

// The UTC instant at which local time `t` begins in `z` (the earliest one
// when the clock repeats it, the moment the gap ends when it skips it).
Timestamp at_local(const date::time_zone* z, LocalTime t);

// Puts instants in order, each once (exdates, changed occurrences).
inline void sort_unique(std::vector<Timestamp>& times) {
  std::sort(times.begin(), times.end());
  times.erase(std::unique(times.begin(), times.end()), times.end());
}

// ---- recurrence (RFC 5545 RRULE) ----

// Checks the recurrence rule of `series` (an RRULE value, "RRULE:"
// optional) and returns it in RFC 5545's order of parts, as libical writes
// it, with UNTIL a date for an all-day series and UTC for a timed one.
// Throws Error(invalid_argument) naming what is wrong: a malformed rule, a
// FREQ finer than DAILY, BYHOUR / BYMINUTE / BYSECOND, COUNT=0, COUNT with
// UNTIL, a rule that libical cannot iterate from the series' start.
std::string check_rrule(const CalendarEvent& series);

// One occurrence of a series: its original start (the RECURRENCE-ID) and
// its times, which for a generated occurrence start there.
struct Occurrence {
  Timestamp start{};
  Timestamp end{};
};

// Calls `fn` for each occurrence the rule of `series` generates (exceptions
// not removed) that overlaps [from, to), in order of start, until `fn`
// returns false. Occurrences repeat the series' local start time in its
// zone (a 09:00 meeting stays at 09:00 across daylight-saving changes); a
// timed occurrence lasts as long as the first, an all-day one as many local
// days.
void expand(const CalendarEvent& series, Timestamp from, Timestamp to,
            const std::function<bool(const Occurrence&)>& fn);

// The same, from occurrences kept in memory per span of about a year (a
// pure function of the rule, times and zone): what ranges and conflicts use.
void expand_cached(const CalendarEvent& series, Timestamp from, Timestamp to,
                   const std::function<bool(const Occurrence&)>& fn);

// The end of the last occurrence of a series, or none when it has no end
// (no COUNT or UNTIL) or more occurrences than are worth counting.
std::optional<Timestamp> series_end(const CalendarEvent& series);

// The occurrence the rule of `series` starts at `start`, if it has one.
std::optional<Occurrence> occurrence_at(const CalendarEvent& series, Timestamp start);

// ---- stored events ----

// A row of calendar_events: the event and what only the store sees.
struct StoredEvent {
  CalendarEvent event;
  std::optional<std::string> rrule;
  std::string exdates;
  std::string moved;
  std::optional<Timestamp> series_end;
  std::vector<Timestamp> moved_at;  // starts (by the rule) of changed occurrences
};
void read_row(Stmt& s, StoredEvent& r);

// Checks an event about to be written (text, uid, times, zone, rule) and
// puts its exdates in order.
void check_event(CalendarEvent& e);

// Writes `e` (checked) as a new row, keeping its created / updated times:
// a series with the starts of its changed occurrences, a changed occurrence
// with its series_id and recurrence_id.
CalendarEvent insert_event(Connection& c, const CalendarEvent& e,
                           const std::vector<Timestamp>& moved);
// Writes every field of `e` (checked) over the row `e.id`.
CalendarEvent rewrite_event(Connection& c, const CalendarEvent& e,
                            const std::vector<Timestamp>& moved);
// The series or single event with `uid` (locked for the transaction when
// `lock`).
std::optional<StoredEvent> event_by_uid(Connection& c, std::string_view uid, bool lock);
// Deletes one changed occurrence of a series.
void delete_changed_occurrence(Connection& c, EventId series, Timestamp recurrence_id);
// Gives the changed occurrence of `series` at `from` the recurrence id `to`.
void move_changed_occurrence(Connection& c, const CalendarEvent& series, Timestamp from,
                             Timestamp to);
// Deletes the changed occurrences of a series.
void delete_changed_occurrences(Connection& c, EventId series);
// The stored rows of `owner`, series whole (with their changed occurrences):
// all of them, or those with something in `range`. Ordered by start.
std::vector<StoredEvent> stored_events(Connection& c, std::optional<UserId> owner,
                                       std::optional<TimeSlot> range);

}  // namespace convstore::detail
