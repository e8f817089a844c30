// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "convstore/error.hpp"
#include "convstore/export.hpp"
#include "convstore/store.hpp"
#include "convstore/types.hpp"

namespace convstore {

using EventId = std::int64_t;

// One calendar event. Times are UTC instants, microseconds: an all-day
// event's start and end are the local midnights (in `time_zone`) that begin
// its first day and the day after its last, so a day with a daylight-saving
// change lasts 23 or 25 hours.
//
// A recurring event (a series) has a recurrence rule: its start and end are
// those of its first occurrence. Ranges and conflicts return its
// occurrences: copies of the series with their own start and end,
// `series_id` (the series' id) and `recurrence_id` (the start the rule gave
// the occurrence). A generated occurrence has the series' id; a changed one
// (CalendarStore::modify_occurrence) is stored as an event of its own, with
// its own id.
struct CalendarEvent {
  EventId id = 0;
  std::optional<UserId> owner;  // none: the shared calendar
  std::string uid;              // stable across exports and imports
  std::string title;
  std::string description;
  std::string location;
  Timestamp start{};
  Timestamp end{};
  bool all_day = false;
  std::string time_zone = "UTC";  // IANA name
  Json metadata = Json::object();
  // RFC 5545 RRULE value, e.g. "FREQ=WEEKLY;BYDAY=MO,WE;COUNT=10"; empty:
  // the event does not repeat. FREQ is DAILY, WEEKLY, MONTHLY or YEARLY;
  // INTERVAL, COUNT, UNTIL, BYDAY, BYMONTHDAY and the other BY parts of
  // RFC 5545 apply. The rule repeats the local start time in `time_zone`.
  // Stored with its parts in RFC 5545's order, as libical writes them
  // ("FREQ=WEEKLY;COUNT=10;BYDAY=MO,WE").
  std::string rrule;
  // Cancelled occurrences of a series (EXDATE): the starts the rule gave
  // them, in order.
  std::vector<Timestamp> exdates;
  std::optional<EventId> series_id;        // an occurrence: its series
  std::optional<Timestamp> recurrence_id;  // an occurrence: its start by the rule
  Timestamp created_at{};
  Timestamp updated_at{};
};

// Input of CalendarStore::create. A timed event uses `start` / `end`
// (end > start). An all-day event sets `all_day` and the local dates
// `start_day` (first day) and `end_day` (the day after the last, as in
// iCalendar's DTEND;VALUE=DATE), "YYYY-MM-DD", read in `time_zone`.
struct NewEvent {
  std::optional<UserId> owner;
  std::string uid;  // empty: one is generated
  std::string title;
  std::string description;
  std::string location;
  Timestamp start{};
  Timestamp end{};
  bool all_day = false;
  std::string start_day;
  std::string end_day;
  std::string time_zone = "UTC";
  Json metadata = Json::object();
  std::string rrule;               // empty: not recurring
  std::vector<Timestamp> exdates;  // starts of cancelled occurrences
};

// Changes to an event: a set field replaces the stored value. Timed events
// move with start/end; all-day ones with start_day/end_day.
struct EventUpdate {
  std::optional<std::string> title;
  std::optional<std::string> description;
  std::optional<std::string> location;
  std::optional<Timestamp> start;
  std::optional<Timestamp> end;
  std::optional<std::string> start_day;
  std::optional<std::string> end_day;
  std::optional<std::string> time_zone;
  std::optional<Json> metadata_patch;
  // A series' rule ("" stops the repetition) and cancelled occurrences.
  // When a series' times, zone or rule change, cancelled and changed
  // occurrences that the new rule no longer generates are dropped.
  std::optional<std::string> rrule;
  std::optional<std::vector<Timestamp>> exdates;
};

// What to do about overlapping events of the same owner.
struct BookingOptions {
  // Refuse, with CalendarConflict, an event that overlaps another of the same
  // owner (or an occurrence of one). Checked and written atomically: of two
  // writers booking the same slot at once, exactly one succeeds. A series is
  // checked occurrence by occurrence from now (or its start, when later) up
  // to its end, at most `series_horizon` ahead.
  bool refuse_conflicts = false;
  std::chrono::hours series_horizon{24 * 366};
};

// What import_ics does with the events of a calendar file.
struct IcsImportOptions {
  std::optional<UserId> owner;  // whose calendar receives them (none: shared)
  // The zone of floating times (no TZID, no trailing Z), which are also the
  // zone of the events that have them.
  std::string default_time_zone = "UTC";
  // An event whose UID is already stored (with the same owner) replaces it;
  // false: Error(already_exists).
  bool replace_existing = true;
};

struct IcsImportResult {
  std::size_t created = 0;
  std::size_t replaced = 0;
  std::vector<EventId> ids;  // of the events (series and changed occurrences), in file order
};

// Thrown (as Error(conflict)) when a booking overlaps: the events in the way.
class CONVSTORE_EXPORT CalendarConflict : public Error {
 public:
  CalendarConflict(const std::string& message, std::vector<CalendarEvent> conflicts)
      : Error(ErrorCode::conflict, message), conflicts_(std::move(conflicts)) {}
  const std::vector<CalendarEvent>& conflicts() const noexcept { return conflicts_; }

 private:
  std::vector<CalendarEvent> conflicts_;
};

// The hours in which free slots are offered, in `time_zone`, on the days of
// the week in `weekdays` (bit 0 = Sunday ... bit 6 = Saturday).
struct WorkingHours {
  std::chrono::minutes day_start{9 * 60};
  std::chrono::minutes day_end{17 * 60};
  unsigned weekdays = 0b0111110;  // Monday to Friday
  std::string time_zone = "UTC";
};

// A half-open interval [start, end).
struct TimeSlot {
  Timestamp start{};
  Timestamp end{};
};

// The calendar: events of a user (or of the shared calendar), their ranges,
// conflicts and free time (seed 001's CalendarManager).
//
// Intervals are half-open: an event ending at 10:00 and one starting at
// 10:00 do not overlap.
//
// Thread safety: safe to use from many threads at once; values are copies.
// Errors: throws convstore::Error; end before start, an unknown time zone or
// a malformed date is invalid_argument naming the field. A call that throws
// has written nothing.
class CONVSTORE_EXPORT CalendarStore {
 public:
  // Stores the event. Throws CalendarConflict when `options` refuse
  // conflicts and it overlaps another event of its owner,
  // Error(already_exists) for a taken uid, Error(not_found) for an unknown
  // owner.
  CalendarEvent create(const NewEvent& event, const BookingOptions& options = {});
  std::optional<CalendarEvent> get(EventId id);
  std::optional<CalendarEvent> find_by_uid(std::string_view uid);
  // Applies `update` (with the same conflict rule as create). Throws
  // Error(not_found) for an unknown event.
  CalendarEvent update(EventId id, const EventUpdate& update, const BookingOptions& options = {});
  // Deletes an event; a series goes with its changed occurrences. Removing
  // a changed occurrence cancels it (its series stays).
  bool remove(EventId id);

  // Recurring events. Changes one occurrence of `series` (the one the rule
  // starts at `recurrence_id`): moves it, renames it, ... (an all-day series'
  // occurrence moves by start_day / end_day). The occurrence becomes an event
  // of its own, linked to the series; changing it again updates that event.
  // Throws Error(not_found) when the series has no such occurrence.
  CalendarEvent modify_occurrence(EventId series, Timestamp recurrence_id,
                                  const EventUpdate& change, const BookingOptions& options = {});
  // Cancels one occurrence (adds an EXDATE); false when it was cancelled
  // already. Throws Error(not_found) when the series has no such occurrence.
  bool cancel_occurrence(EventId series, Timestamp recurrence_id);
  // The occurrences of one series (changed ones included, cancelled ones
  // not) that overlap [from, to), ordered by start.
  std::vector<CalendarEvent> occurrences(EventId series, Timestamp from, Timestamp to);

  // The events of `owner` that overlap [from, to), occurrences of series
  // included, ordered by start, a page at a time (`cursor` from the previous
  // page's next_cursor).
  Page<CalendarEvent> range(std::optional<UserId> owner, Timestamp from, Timestamp to,
                            std::size_t limit = 100, const std::string& cursor = {});
  // Every event of `owner` that overlaps [start, end) (seed 001
  // find_conflicts), ordered by start.
  std::vector<CalendarEvent> conflicts(std::optional<UserId> owner, Timestamp start, Timestamp end);
  // Events of `owner` whose title, description or location contains every
  // word of `text`, ordered by start, at most `limit`. Words are runs of
  // ASCII letters and digits and non-ASCII characters, found whole, ASCII
  // case-insensitively, without
  // stemming; documents and queries are split by the same code, so SQLite's
  // FTS5 and PostgreSQL's tsvector find the same events (case folding of
  // non-ASCII letters follows the index: FTS5 folds it, PostgreSQL as its
  // database locale does). Throws Error(invalid_argument) when `text` has
  // no word.
  std::vector<CalendarEvent> search(std::optional<UserId> owner, std::string_view text,
                                    std::size_t limit = 50);
  // The free intervals of `owner` between `from` and `to` inside working
  // hours, each at least `min_length` (> 0) long, in order.
  std::vector<TimeSlot> free_slots(std::optional<UserId> owner, Timestamp from, Timestamp to,
                                   const WorkingHours& hours, std::chrono::minutes min_length);

  // iCalendar (RFC 5545). Reads the VEVENTs of a calendar file: SUMMARY,
  // DESCRIPTION, LOCATION, DTSTART / DTEND or DURATION (UTC, floating, with
  // TZID, or all-day dates), RRULE, EXDATE, RECURRENCE-ID (a changed
  // occurrence of a series), UID, CREATED, LAST-MODIFIED and convstore's
  // X-CONVSTORE-METADATA. All or nothing: a file with a broken line, an event
  // without DTSTART, an unknown zone ... writes nothing and throws
  // Error(invalid_argument) naming the line.
  IcsImportResult import_ics(std::string_view ics, const IcsImportOptions& options = {});
  // Writes the events of `owner` (all of them, or those overlapping `range`:
  // series whole) as a calendar file, with a VTIMEZONE for each zone used.
  std::string export_ics(std::optional<UserId> owner, std::optional<TimeSlot> range = std::nullopt);

 private:
  friend class Store;
  explicit CalendarStore(Store::Impl* impl) : impl_(impl) {}
  Store::Impl* impl_;
};

}  // namespace convstore
