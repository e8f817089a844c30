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
};

// What to do about overlapping events of the same owner.
struct BookingOptions {
  // Refuse, with CalendarConflict, an event that overlaps another of the same
  // owner. Checked and written atomically: of two writers booking the same
  // slot at once, exactly one succeeds.
  bool refuse_conflicts = false;
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
  bool remove(EventId id);

  // The events of `owner` that overlap [from, to), ordered by start, a page
  // at a time (`cursor` from the previous page's next_cursor).
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

 private:
  friend class Store;
  explicit CalendarStore(Store::Impl* impl) : impl_(impl) {}
  Store::Impl* impl_;
};

}  // namespace convstore
