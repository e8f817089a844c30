// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#include "convstore/calendar_store.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <random>
#include <set>

#include "calendar_detail.hpp"
#include "store_helpers.hpp"
#include "store_impl.hpp"
#include "text_words.hpp"

namespace convstore {

using detail::at_local;
using detail::Backend;
using detail::check_event;
using detail::check_id;
using detail::check_text;
using detail::check_time;
using detail::Connection;
using detail::fetch_all;
using detail::fetch_one;
using detail::json_text;
using detail::kEarliestTime;
using detail::kLatestTime;
using detail::LocalTime;
using detail::Occurrence;
using detail::parse_day;
using detail::sort_unique;
using detail::Sql;
using detail::Stmt;
using detail::StoredEvent;
using detail::zone;

#define CS_EVENT_COLS                                                                       \
  "id, owner_id, uid, title, description, location, start_at, end_at, all_day, time_zone, " \
  "metadata, created_at, updated_at, rrule, exdates, moved, series_end, series_id, "        \
  "recurrence_id"

namespace {

// Lists of instants (exdates, changed occurrences) are stored as ISO 8601
// UTC times separated by spaces, in order.
std::string times_text(const std::vector<Timestamp>& times) {
  std::string out;
  for (Timestamp t : times) {
    if (!out.empty()) out += ' ';
    out += to_iso8601(t);
  }
  return out;
}

std::vector<Timestamp> parse_times(const std::string& text) {
  std::vector<Timestamp> out;
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t end = text.find(' ', pos);
    if (end == std::string::npos) end = text.size();
    if (end > pos) out.push_back(parse_timestamp(std::string_view(text).substr(pos, end - pos)));
    pos = end + 1;
  }
  return out;
}

bool contains(const std::vector<Timestamp>& sorted, Timestamp t) {
  return std::binary_search(sorted.begin(), sorted.end(), t);
}

// A changed occurrence is a row of its own; its uid column holds the
// series' uid and its recurrence id after a tab, which no uid has, so that
// the column stays unique.
constexpr char kOccurrenceUidSeparator = '\t';

std::string stored_uid(const CalendarEvent& e) {
  if (!e.series_id || !e.recurrence_id) return e.uid;
  return e.uid + kOccurrenceUidSeparator + to_iso8601(*e.recurrence_id);
}

}  // namespace

namespace detail {

void read_row(Stmt& s, StoredEvent& r) {
  CalendarEvent& e = r.event;
  s.out(e.id).out(e.owner).out(e.uid).out(e.title).out(e.description).out(e.location);
  s.out(e.start).out(e.end).out(e.all_day).out(e.time_zone).out(e.metadata);
  s.out(e.created_at).out(e.updated_at).out(r.rrule).out(r.exdates).out(r.moved);
  s.out(r.series_end).out(e.series_id).out(e.recurrence_id);
}

}  // namespace detail

namespace {

// Decodes what read_row reads as text.
void finish(StoredEvent& r) {
  CalendarEvent& e = r.event;
  e.rrule = r.rrule.value_or("");
  e.exdates = parse_times(r.exdates);
  r.moved_at = parse_times(r.moved);
  if (e.series_id) e.uid = e.uid.substr(0, e.uid.find(kOccurrenceUidSeparator));
}

std::optional<StoredEvent> fetch_event(Stmt& s) {
  auto r = fetch_one<StoredEvent>(s);
  if (r) finish(*r);
  return r;
}

std::vector<StoredEvent> fetch_events(Stmt& s, std::size_t expected = 0) {
  auto rows = fetch_all<StoredEvent>(s, expected);
  for (auto& r : rows) finish(r);
  return rows;
}

// Fills an event's start and end from its local days when it is all-day.
void place(CalendarEvent& e, const std::string& start_day, const std::string& end_day) {
  const date::time_zone* z = zone(e.time_zone);
  if (!e.all_day) return;
  auto first = parse_day(start_day, "start day");
  auto after = parse_day(end_day, "end day");
  if (after <= first) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("end day {} is not after start day {}", end_day, start_day));
  }
  e.start = at_local(z, LocalTime(first));
  e.end = at_local(z, LocalTime(after));
}

std::string new_uid() {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  return fmt::format("{:016x}{:016x}@convstore", rng(), rng());
}

// The normalized words of an event, capped so that no index refuses them
// (PostgreSQL's tsvector has a 1 MB limit).
std::string search_words(const CalendarEvent& e) {
  constexpr std::size_t kMax = 65536;
  std::string out;
  for (const auto* text : {&e.title, &e.description, &e.location}) {
    for (auto& w : detail::words_of(*text)) {
      if (w.size() > 200) continue;  // no word that long is searched for
      if (out.size() + w.size() + 1 > kMax) return out;
      if (!out.empty()) out += ' ';
      out += w;
    }
  }
  return out;
}

// ---- queries ----

long long owner_key(std::optional<UserId> owner) { return owner ? *owner : 0; }

// The owner condition, index-friendly on both backends.
std::string owner_clause(std::optional<UserId> owner, const char* placeholder) {
  return owner ? fmt::format("owner_id = :{}", placeholder) : "owner_id IS NULL";
}

// The longest event of an owner, in microseconds (0 when it has none).
long long longest(Connection& c, std::optional<UserId> owner) {
  static const Sql q{"SELECT longest_us FROM calendar_bounds WHERE owner_key = :k"};
  long long us = 0;
  Stmt(c, q).in(owner_key(owner)).out(us).one();
  return us;
}

// Raises the owner's bound to this event's length when it is longer. Read
// first: the bound row is written (and so locked until commit) only when it
// grows, so writers of one owner do not queue on it, nor deadlock when two
// transactions write events of several owners in opposite orders.
void widen_bounds(Connection& c, std::optional<UserId> owner, const CalendarEvent& e) {
  const long long span = (e.end - e.start).count();
  if (longest(c, owner) >= span) return;
  static const Sql q{
      "INSERT INTO calendar_bounds (owner_key, longest_us) VALUES (:k, :d) ON CONFLICT "
      "(owner_key) DO UPDATE SET longest_us = max(longest_us, excluded.longest_us)",
      "INSERT INTO calendar_bounds (owner_key, longest_us) VALUES (:k, :d) ON CONFLICT "
      "(owner_key) DO UPDATE SET longest_us = GREATEST(calendar_bounds.longest_us, "
      "excluded.longest_us)"};
  Stmt(c, q).in(owner_key(owner)).in(span).one();
}

// What an overlap query leaves out.
struct Exclude {
  std::optional<EventId> event;  // this event, and when a series its changed occurrences
  std::optional<std::pair<EventId, Timestamp>> occurrence;  // one generated occurrence
};

using Cursor = std::optional<std::pair<Timestamp, EventId>>;

bool by_start(const CalendarEvent& a, const CalendarEvent& b) {
  return std::tie(a.start, a.id) < std::tie(b.start, b.id);
}

CalendarEvent occurrence_of(const CalendarEvent& series, const Occurrence& o) {
  CalendarEvent e = series;
  e.start = o.start;
  e.end = o.end;
  e.series_id = series.id;
  e.recurrence_id = o.start;
  return e;
}

// Appends the generated occurrences of a series (neither cancelled nor
// changed) that overlap [from, to), after the cursor, at most `limit` (0:
// all).
void add_occurrences(std::vector<CalendarEvent>& out, const StoredEvent& r, Timestamp from,
                     Timestamp to, const Exclude& ex, const Cursor& after, std::size_t limit) {
  const CalendarEvent& series = r.event;
  const Timestamp lo = after ? std::max(from, after->first) : from;
  if (lo >= to) return;
  std::size_t n = 0;
  detail::expand_cached(series, lo, to, [&](const Occurrence& o) {
    if ((after && std::make_pair(o.start, series.id) <= *after) ||
        contains(series.exdates, o.start) || contains(r.moved_at, o.start) ||
        (ex.occurrence && *ex.occurrence == std::make_pair(series.id, o.start))) {
      return true;
    }
    out.push_back(occurrence_of(series, o));
    return limit == 0 || ++n < limit;
  });
}

// The rows that can overlap [from, to): single events and changed
// occurrences that do (ordered by start and id, after the cursor, at most
// `limit`; 0: all), and every series with occurrences between its start and
// its end. Single events are found by a short index range: starts from
// `from` minus the owner's longest event. On PostgreSQL that bound is a
// subquery of the statement; on SQLite (times are text) it is read first,
// in the same snapshot.
std::vector<StoredEvent> overlapping_rows(Connection& c, std::optional<UserId> owner,
                                          Timestamp from, Timestamp to, const Exclude& ex,
                                          const Cursor& after, std::size_t limit) {
  const bool pg = c.backend() == Backend::postgresql;
  long long span = 0;
  if (!pg) span = std::min<long long>(longest(c, owner), (from - kEarliestTime).count());
  std::string single =
      fmt::format("SELECT " CS_EVENT_COLS " FROM calendar_events WHERE {} AND rrule IS NULL AND {}",
                  owner_clause(owner, "o"),
                  pg ? "start_at >= (SELECT CASE WHEN b.longest_us >= :room THEN "
                       "'-infinity'::timestamptz ELSE :lo::timestamptz - "
                       "(b.longest_us / 1000000) * interval '1 second' - "
                       "(b.longest_us % 1000000) * interval '1 microsecond' - "
                       "interval '1 second' END FROM calendar_bounds b "
                       "WHERE b.owner_key = :k)"
                     : "start_at >= :lo");
  single += " AND start_at < :hi AND end_at > :from";
  if (ex.event) single += " AND id <> :x AND (series_id IS NULL OR series_id <> :xs)";
  if (after) single += " AND (start_at, id) > (:cs, :cid)";
  single += " ORDER BY start_at, id";
  if (limit > 0) single += " LIMIT :n";
  std::string sql =
      fmt::format("SELECT * FROM ({}) AS single UNION ALL SELECT " CS_EVENT_COLS
                  " FROM calendar_events WHERE {} AND rrule IS NOT NULL AND start_at < :hi2 AND "
                  "(series_end IS NULL OR series_end > :from2){}",
                  single, owner_clause(owner, "o2"), ex.event ? " AND id <> :x2" : "");
  Stmt s(c, sql);
  if (owner) s.in(*owner);
  if (pg) {
    // The bound is clamped to the start of time for an owner whose longest
    // event reaches further back; the extra second covers the rounding of
    // float interval arithmetic for spans of centuries.
    s.in(static_cast<long long>((from - kEarliestTime).count())).in(from).in(owner_key(owner));
  } else {
    s.in(from - std::chrono::microseconds(span));
  }
  s.in(to).in(from);
  if (ex.event) s.in(*ex.event).in(*ex.event);
  if (after) s.in(after->first).in(after->second);
  if (limit > 0) s.in(limit);
  if (owner) s.in(*owner);
  s.in(to).in(from);
  if (ex.event) s.in(*ex.event);
  return fetch_events(s, limit);
}

// Events and occurrences of `owner` overlapping [from, to), ordered by
// (start, id), after the cursor position, at most `limit` (0: all).
std::vector<CalendarEvent> events_in(Connection& c, std::optional<UserId> owner, Timestamp from,
                                     Timestamp to, const Exclude& ex, const Cursor& after,
                                     std::size_t limit) {
  auto rows = overlapping_rows(c, owner, from, to, ex, after, limit);
  std::vector<CalendarEvent> out;
  out.reserve(rows.size());
  bool series = false;
  for (auto& r : rows) {
    if (r.rrule) {
      add_occurrences(out, r, from, to, ex, after, limit);
      series = true;
    } else {
      out.push_back(std::move(r.event));
    }
  }
  if (series) std::sort(out.begin(), out.end(), by_start);
  if (limit > 0 && out.size() > limit) out.resize(limit);
  return out;
}

// PostgreSQL: bookings of one owner wait for each other (SQLite: the write
// lock does it), so that a conflict check and the write are one atomic step.
void lock_owner(Connection& c, std::optional<UserId> owner) {
  static const Sql q{"SELECT 1", "SELECT pg_advisory_xact_lock(:k)"};
  constexpr long long kCalendarLocks = 0x43414c0000000000LL;  // "CAL"
  Stmt s(c, q);
  if (c.backend() == Backend::postgresql) s.in(kCalendarLocks + owner_key(owner));
  s.one();
}

// Throws CalendarConflict when `e` (a single event, or each occurrence of a
// series up to the horizon) overlaps other events of its owner.
void refuse_overlaps(Connection& c, const CalendarEvent& e, const std::vector<Timestamp>& moved,
                     const Exclude& ex, const BookingOptions& options) {
  std::vector<CalendarEvent> in_the_way;
  if (e.rrule.empty()) {
    in_the_way = events_in(c, e.owner, e.start, e.end, ex, std::nullopt, 0);
  } else {
    std::vector<Occurrence> mine;
    // Conflicts in the past do not matter: from now (or the series' start).
    const Timestamp from = std::max(e.start, now());
    const Timestamp horizon = std::min(kLatestTime, from + options.series_horizon);
    if (horizon <= from) return;
    detail::expand(e, from, horizon, [&](const Occurrence& o) {
      if (!contains(e.exdates, o.start) && !contains(moved, o.start)) mine.push_back(o);
      return true;
    });
    if (mine.empty()) return;
    for (auto& other :
         events_in(c, e.owner, mine.front().start, mine.back().end, ex, std::nullopt, 0)) {
      // The first occurrence that ends after the other event starts.
      auto it = std::upper_bound(mine.begin(), mine.end(), other.start,
                                 [](Timestamp t, const Occurrence& o) { return t < o.end; });
      if (it != mine.end() && it->start < other.end) in_the_way.push_back(std::move(other));
    }
  }
  if (in_the_way.empty()) return;
  std::string titles;
  for (const auto& o : in_the_way) {
    titles += titles.empty() ? "" : ", ";
    titles += fmt::format("'{}' ({} .. {})", o.title, to_iso8601(o.start), to_iso8601(o.end));
  }
  std::string message =
      fmt::format("the event overlaps {} other event(s): {}", in_the_way.size(), titles);
  throw CalendarConflict(message, std::move(in_the_way));
}

const Sql kGetEvent{"SELECT " CS_EVENT_COLS " FROM calendar_events WHERE id = :id"};
const Sql kLockEvent{"SELECT " CS_EVENT_COLS " FROM calendar_events WHERE id = :id",
                     "SELECT " CS_EVENT_COLS " FROM calendar_events WHERE id = :id FOR UPDATE"};

std::optional<StoredEvent> lock_event(Connection& c, EventId id) {
  Stmt s(c, kLockEvent);
  s.in(id);
  return fetch_event(s);
}

// The series `id`, locked: Error(not_found) when there is none.
StoredEvent lock_series(Connection& c, EventId id) {
  auto row = lock_event(c, id);
  if (!row) throw Error(ErrorCode::not_found, fmt::format("event {} not found", id));
  if (row->event.rrule.empty()) {
    throw Error(ErrorCode::not_found, fmt::format("event {} is not a recurring event", id));
  }
  return std::move(*row);
}

void write_exceptions(Connection& c, EventId series, const std::vector<Timestamp>& exdates,
                      const std::vector<Timestamp>& moved) {
  static const Sql q{
      "UPDATE calendar_events SET exdates = :x, moved = :m, updated_at = :u WHERE id = :id"};
  Stmt(c, q).in(times_text(exdates)).in(times_text(moved)).in(now()).in(series).one();
}

// Applies the fields of `up` to `e` and checks the result.
void apply_change(CalendarEvent& e, const EventUpdate& up) {
  if (up.title) e.title = *up.title;
  if (up.description) e.description = *up.description;
  if (up.location) e.location = *up.location;
  // An all-day event keeps its local days when it changes zone: read them
  // in the zone it had.
  std::string first_day, after_day;
  if (e.all_day) {
    const date::time_zone* old_zone = zone(e.time_zone);
    auto day_of = [&](Timestamp t) {
      return date::format("%F", date::floor<date::days>(old_zone->to_local(t)));
    };
    first_day = up.start_day.value_or(day_of(e.start));
    after_day = up.end_day.value_or(day_of(e.end));
  }
  if (up.time_zone) e.time_zone = *up.time_zone;
  if (up.metadata_patch) e.metadata.merge_patch(*up.metadata_patch);
  if (up.rrule) {
    e.rrule = *up.rrule;
    if (e.rrule.empty() && !up.exdates) e.exdates.clear();
  }
  if (up.exdates) e.exdates = *up.exdates;
  if (e.all_day) {
    if (up.start || up.end) {
      throw Error(ErrorCode::invalid_argument,
                  "an all-day event moves by start_day / end_day, not by start / end");
    }
    if (up.start_day || up.end_day || up.time_zone) place(e, first_day, after_day);
  } else {
    if (up.start_day || up.end_day) {
      throw Error(ErrorCode::invalid_argument,
                  "a timed event moves by start / end, not by start_day / end_day");
    }
    if (up.start) e.start = *up.start;
    if (up.end) e.end = *up.end;
  }
  check_event(e);
}

// Updates the locked row `row` (an event, a series or a changed occurrence).
CalendarEvent update_locked(Connection& c, StoredEvent row, const EventUpdate& up,
                            const BookingOptions& options) {
  CalendarEvent& e = row.event;
  const bool was_series = !e.rrule.empty();
  const std::string old_zone = e.time_zone;
  apply_change(e, up);
  if (was_series && e.all_day && e.time_zone != old_zone) {
    // Exceptions stay on their local days, like the series: the same days'
    // midnights in the new zone.
    const date::time_zone* from_zone = zone(old_zone);
    const date::time_zone* to_zone = zone(e.time_zone);
    auto same_day = [&](Timestamp t) {
      return at_local(to_zone, LocalTime(date::floor<date::days>(from_zone->to_local(t))));
    };
    if (!up.exdates) {
      for (auto& t : e.exdates) t = same_day(t);
    }
    for (auto& t : row.moved_at) {
      detail::move_changed_occurrence(c, e, t, same_day(t));
      t = same_day(t);
    }
  }
  const bool timing = up.start || up.end || up.start_day || up.end_day || up.time_zone || up.rrule;
  if (was_series && timing) {
    // Exceptions of occurrences that the rule no longer generates go.
    auto gone = [&](Timestamp t) { return e.rrule.empty() || !detail::occurrence_at(e, t); };
    if (!up.exdates)
      e.exdates.erase(std::remove_if(e.exdates.begin(), e.exdates.end(), gone), e.exdates.end());
    std::vector<Timestamp> kept;
    for (Timestamp t : row.moved_at) {
      if (gone(t)) {
        detail::delete_changed_occurrence(c, e.id, t);
      } else {
        kept.push_back(t);
      }
    }
    row.moved_at = std::move(kept);
  }
  if (options.refuse_conflicts) {
    lock_owner(c, e.owner);
    refuse_overlaps(c, e, row.moved_at, Exclude{e.id, std::nullopt}, options);
  }
  e.updated_at = now();
  return detail::rewrite_event(c, e, row.moved_at);
}

template <class F>
auto overlap_read(Store::Impl* impl, const Op& op, F&& fn) {
  // One statement on PostgreSQL (no transaction needed); on SQLite the
  // longest-event bound is read first, in the same snapshot.
  return impl->backend() == Backend::postgresql ? impl->read(op, std::forward<F>(fn))
                                                : impl->snapshot(op, std::forward<F>(fn));
}

void check_range(Timestamp from, Timestamp to) {
  check_time(from, "range start");
  check_time(to, "range end");
  if (to <= from) {
    throw Error(ErrorCode::invalid_argument, fmt::format("range end {} is not after its start {}",
                                                         to_iso8601(to), to_iso8601(from)));
  }
}

}  // namespace

// ---- writing rows (shared with the iCalendar reader) ----

namespace detail {

void check_event(CalendarEvent& e) {
  check_text(e.title, "event title");
  check_text(e.description, "event description");
  check_text(e.location, "event location");
  check_id(e.uid, "event uid");
  if (!e.metadata.is_object()) {
    throw Error(ErrorCode::invalid_argument, "event metadata must be a JSON object");
  }
  zone(e.time_zone);
  check_time(e.start, "event start");
  check_time(e.end, "event end");
  if (e.end <= e.start) {
    throw Error(ErrorCode::invalid_argument, fmt::format("event end {} is not after its start {}",
                                                         to_iso8601(e.end), to_iso8601(e.start)));
  }
  if (!e.rrule.empty()) {
    if (e.series_id) {
      throw Error(ErrorCode::invalid_argument,
                  "a changed occurrence of a series has no recurrence rule of its own");
    }
    e.rrule = check_rrule(e);
  }
  for (Timestamp t : e.exdates) check_time(t, "exdate");
  sort_unique(e.exdates);
  if (e.rrule.empty() && !e.exdates.empty()) {
    throw Error(ErrorCode::invalid_argument, "exdates belong to an event with a recurrence rule");
  }
}

CalendarEvent insert_event(Connection& c, const CalendarEvent& e,
                           const std::vector<Timestamp>& moved) {
  static const Sql insert{
      "INSERT INTO calendar_events (owner_id, uid, title, description, location, start_at, "
      "end_at, all_day, time_zone, metadata, search_words, created_at, updated_at, rrule, "
      "exdates, moved, series_end, series_id, recurrence_id) VALUES (:o, :uid, :t, :d, :l, :s, "
      ":e, :ad, :tz, :md, :w, :c, :u, :r, :x, :m, :se, :sid, :rid) RETURNING " CS_EVENT_COLS};
  std::string md = json_text(e.metadata, "event metadata");
  Stmt s(c, insert);
  s.in(e.owner).in(stored_uid(e)).in(e.title).in(e.description).in(e.location).in(e.start);
  s.in(e.end).in(e.all_day).in(e.time_zone).in(md).in(search_words(e)).in(e.created_at);
  s.in(e.updated_at).in(cleared(e.rrule)).in(times_text(e.exdates)).in(times_text(moved));
  s.in(e.rrule.empty() ? std::nullopt : series_end(e)).in(e.series_id).in(e.recurrence_id);
  StoredEvent stored = *fetch_event(s);
  if (stored.event.rrule.empty()) widen_bounds(c, stored.event.owner, stored.event);
  return std::move(stored.event);
}

CalendarEvent rewrite_event(Connection& c, const CalendarEvent& e,
                            const std::vector<Timestamp>& moved) {
  static const Sql write{
      "UPDATE calendar_events SET title = :t, description = :d, location = :l, start_at = :s, "
      "end_at = :e, all_day = :ad, time_zone = :tz, metadata = :md, search_words = :w, "
      "created_at = :c, updated_at = :u, rrule = :r, exdates = :x, moved = :m, "
      "series_end = :se WHERE id = :id RETURNING " CS_EVENT_COLS};
  std::string md = json_text(e.metadata, "event metadata");
  Stmt s(c, write);
  s.in(e.title).in(e.description).in(e.location).in(e.start).in(e.end).in(e.all_day);
  s.in(e.time_zone).in(md).in(search_words(e)).in(e.created_at).in(e.updated_at);
  s.in(cleared(e.rrule)).in(times_text(e.exdates)).in(times_text(moved));
  s.in(e.rrule.empty() ? std::nullopt : series_end(e)).in(e.id);
  StoredEvent stored = *fetch_event(s);
  if (stored.event.rrule.empty()) widen_bounds(c, stored.event.owner, stored.event);
  return std::move(stored.event);
}

std::optional<StoredEvent> event_by_uid(Connection& c, std::string_view uid, bool lock) {
  static const Sql find{"SELECT " CS_EVENT_COLS " FROM calendar_events WHERE uid = :uid"};
  static const Sql find_locked{"SELECT " CS_EVENT_COLS " FROM calendar_events WHERE uid = :uid",
                               "SELECT " CS_EVENT_COLS
                               " FROM calendar_events WHERE uid = :uid FOR UPDATE"};
  Stmt s(c, lock ? find_locked : find);
  s.in(uid);
  return fetch_event(s);
}

void delete_changed_occurrence(Connection& c, EventId series, Timestamp recurrence_id) {
  static const Sql q{"DELETE FROM calendar_events WHERE series_id = :s AND recurrence_id = :r"};
  Stmt(c, q).in(series).in(recurrence_id).one();
}

void move_changed_occurrence(Connection& c, const CalendarEvent& series, Timestamp from,
                             Timestamp to) {
  static const Sql q{
      "UPDATE calendar_events SET recurrence_id = :to, uid = :uid WHERE series_id = :s AND "
      "recurrence_id = :from"};
  CalendarEvent occurrence;
  occurrence.uid = series.uid;
  occurrence.series_id = series.id;
  occurrence.recurrence_id = to;
  Stmt(c, q).in(to).in(stored_uid(occurrence)).in(series.id).in(from).one();
}

void delete_changed_occurrences(Connection& c, EventId series) {
  static const Sql q{"DELETE FROM calendar_events WHERE series_id = :s"};
  Stmt(c, q).in(series).one();
}

std::vector<StoredEvent> stored_events(Connection& c, std::optional<UserId> owner,
                                       std::optional<TimeSlot> range) {
  if (!range) {
    Stmt s(c, fmt::format("SELECT " CS_EVENT_COLS
                          " FROM calendar_events WHERE {} ORDER BY start_at, id",
                          owner_clause(owner, "o")));
    if (owner) s.in(*owner);
    return fetch_events(s);
  }
  auto rows = overlapping_rows(c, owner, range->start, range->end, {}, std::nullopt, 0);
  // Series whole: with every changed occurrence, and with the series of a
  // changed occurrence moved into the range.
  std::set<EventId> have, series;
  for (const auto& r : rows) {
    have.insert(r.event.id);
    if (r.rrule) series.insert(r.event.id);
    if (r.event.series_id) series.insert(*r.event.series_id);
  }
  static const Sql changed{"SELECT " CS_EVENT_COLS
                           " FROM calendar_events WHERE series_id = :s ORDER BY start_at, id"};
  for (EventId id : series) {
    if (!have.count(id)) {
      Stmt s(c, kGetEvent);
      s.in(id);
      if (auto r = fetch_event(s)) {
        have.insert(id);
        rows.push_back(std::move(*r));
      }
    }
    Stmt s(c, changed);
    s.in(id);
    for (auto& r : fetch_events(s)) {
      if (have.insert(r.event.id).second) rows.push_back(std::move(r));
    }
  }
  std::sort(rows.begin(), rows.end(),
            [](const StoredEvent& a, const StoredEvent& b) { return by_start(a.event, b.event); });
  return rows;
}

}  // namespace detail

// ---- CalendarStore ----

CalendarEvent CalendarStore::create(const NewEvent& n, const BookingOptions& options) {
  detail::check_json(n.metadata, "event metadata");
  CalendarEvent e;
  e.owner = n.owner;
  e.uid = n.uid.empty() ? new_uid() : n.uid;
  e.title = n.title;
  e.description = n.description;
  e.location = n.location;
  e.start = n.start;
  e.end = n.end;
  e.all_day = n.all_day;
  e.time_zone = n.time_zone.empty() ? "UTC" : n.time_zone;
  e.metadata = n.metadata.is_null() ? Json::object() : n.metadata;
  e.rrule = n.rrule;
  e.exdates = n.exdates;
  place(e, n.start_day, n.end_day);
  check_event(e);
  try {
    return impl_->write(Op{"create event"}, [&](Connection& c) {
      if (options.refuse_conflicts) {
        lock_owner(c, e.owner);
        refuse_overlaps(c, e, {}, Exclude{}, options);
      }
      e.created_at = e.updated_at = now();
      return detail::insert_event(c, e, {});
    });
  } catch (const CalendarConflict&) {
    throw;
  } catch (const Error& err) {
    if (err.code() == ErrorCode::already_exists) {
      throw Error(ErrorCode::already_exists,
                  fmt::format("an event with uid '{}' already exists", e.uid), err.sqlstate());
    }
    if (err.code() == ErrorCode::not_found && e.owner) {
      throw Error(ErrorCode::not_found, fmt::format("user {} not found", *e.owner), err.sqlstate());
    }
    throw;
  }
}

std::optional<CalendarEvent> CalendarStore::get(EventId id) {
  return impl_->read(Op{"get event", "event", id}, [&](Connection& c) {
    Stmt s(c, kGetEvent);
    s.in(id);
    auto r = fetch_event(s);
    return r ? std::optional<CalendarEvent>(std::move(r->event)) : std::nullopt;
  });
}

std::optional<CalendarEvent> CalendarStore::find_by_uid(std::string_view uid) {
  check_id(uid, "event uid");
  return impl_->read(Op{"find event"}, [&](Connection& c) {
    auto r = detail::event_by_uid(c, uid, false);
    return r ? std::optional<CalendarEvent>(std::move(r->event)) : std::nullopt;
  });
}

CalendarEvent CalendarStore::update(EventId id, const EventUpdate& up,
                                    const BookingOptions& options) {
  detail::check_json(up.metadata_patch, "event metadata patch");
  return impl_->write(Op{"update event", "event", id}, [&](Connection& c) {
    auto row = lock_event(c, id);
    if (!row) throw Error(ErrorCode::not_found, fmt::format("event {} not found", id));
    return update_locked(c, std::move(*row), up, options);
  });
}

bool CalendarStore::remove(EventId id) {
  static const Sql q{"DELETE FROM calendar_events WHERE id = :id OR series_id = :s"};
  // The owner's longest-event bound stays as it was: still correct, at worst
  // a little wider than needed.
  return impl_->write(Op{"delete event", "event", id}, [&](Connection& c) {
    Stmt get(c, kGetEvent);
    get.in(id);
    auto row = fetch_event(get);
    if (!row) return false;
    if (row->event.series_id && row->event.recurrence_id) {
      // A changed occurrence: cancelled in its series (locked first, as
      // modify_occurrence locks it).
      if (auto series = lock_event(c, *row->event.series_id)) {
        auto& moved = series->moved_at;
        moved.erase(std::remove(moved.begin(), moved.end(), *row->event.recurrence_id),
                    moved.end());
        auto exdates = series->event.exdates;
        exdates.push_back(*row->event.recurrence_id);
        sort_unique(exdates);
        write_exceptions(c, series->event.id, exdates, moved);
      }
    }
    // A series is locked before its changed occurrences are deleted with
    // it, in the order of modify_occurrence and cancel_occurrence.
    if (row->rrule && !lock_event(c, id)) return false;
    Stmt del(c, q);
    del.in(id).in(id).one();
    return del.affected() > 0;
  });
}

CalendarEvent CalendarStore::modify_occurrence(EventId series_id, Timestamp recurrence_id,
                                               const EventUpdate& change,
                                               const BookingOptions& options) {
  detail::check_json(change.metadata_patch, "event metadata patch");
  static const Sql find_changed{
      "SELECT " CS_EVENT_COLS " FROM calendar_events WHERE series_id = :s AND recurrence_id = :r",
      "SELECT " CS_EVENT_COLS
      " FROM calendar_events WHERE series_id = :s AND recurrence_id = :r FOR UPDATE"};
  return impl_->write(Op{"change occurrence", "event", series_id}, [&](Connection& c) {
    StoredEvent series = lock_series(c, series_id);
    if (contains(series.moved_at, recurrence_id)) {
      Stmt s(c, find_changed);
      s.in(series_id).in(recurrence_id);
      auto row = fetch_event(s);
      if (!row) {
        throw Error(ErrorCode::internal,
                    fmt::format("the changed occurrence {} of event {} is missing",
                                to_iso8601(recurrence_id), series_id));
      }
      return update_locked(c, std::move(*row), change, options);
    }
    if (contains(series.event.exdates, recurrence_id)) {
      throw Error(ErrorCode::not_found, fmt::format("the occurrence {} of event {} is cancelled",
                                                    to_iso8601(recurrence_id), series_id));
    }
    auto occurrence = detail::occurrence_at(series.event, recurrence_id);
    if (!occurrence) {
      throw Error(ErrorCode::not_found, fmt::format("event {} has no occurrence starting at {}",
                                                    series_id, to_iso8601(recurrence_id)));
    }
    CalendarEvent e = occurrence_of(series.event, *occurrence);
    e.id = 0;
    e.rrule.clear();
    e.exdates.clear();
    apply_change(e, change);
    if (options.refuse_conflicts) {
      lock_owner(c, e.owner);
      refuse_overlaps(c, e, {}, Exclude{std::nullopt, std::make_pair(series_id, recurrence_id)},
                      options);
    }
    e.created_at = e.updated_at = now();
    CalendarEvent stored = detail::insert_event(c, e, {});
    series.moved_at.push_back(recurrence_id);
    sort_unique(series.moved_at);
    write_exceptions(c, series_id, series.event.exdates, series.moved_at);
    return stored;
  });
}

bool CalendarStore::cancel_occurrence(EventId series_id, Timestamp recurrence_id) {
  return impl_->write(Op{"cancel occurrence", "event", series_id}, [&](Connection& c) {
    StoredEvent series = lock_series(c, series_id);
    auto& exdates = series.event.exdates;
    if (contains(exdates, recurrence_id)) return false;
    auto& moved = series.moved_at;
    if (contains(moved, recurrence_id)) {
      detail::delete_changed_occurrence(c, series_id, recurrence_id);
      moved.erase(std::remove(moved.begin(), moved.end(), recurrence_id), moved.end());
    } else if (!detail::occurrence_at(series.event, recurrence_id)) {
      throw Error(ErrorCode::not_found, fmt::format("event {} has no occurrence starting at {}",
                                                    series_id, to_iso8601(recurrence_id)));
    }
    exdates.push_back(recurrence_id);
    sort_unique(exdates);
    write_exceptions(c, series_id, exdates, moved);
    return true;
  });
}

std::vector<CalendarEvent> CalendarStore::occurrences(EventId series_id, Timestamp from,
                                                      Timestamp to) {
  check_range(from, to);
  static const Sql changed{
      "SELECT " CS_EVENT_COLS
      " FROM calendar_events WHERE series_id = :s AND start_at < :hi AND end_at > :lo"};
  return impl_->snapshot(Op{"list occurrences", "event", series_id}, [&](Connection& c) {
    Stmt get(c, kGetEvent);
    get.in(series_id);
    auto row = fetch_event(get);
    if (!row) throw Error(ErrorCode::not_found, fmt::format("event {} not found", series_id));
    std::vector<CalendarEvent> out;
    if (!row->rrule) {
      if (row->event.start < to && row->event.end > from) out.push_back(std::move(row->event));
      return out;
    }
    add_occurrences(out, *row, from, to, {}, std::nullopt, 0);
    Stmt s(c, changed);
    s.in(series_id).in(to).in(from);
    for (auto& r : fetch_events(s)) out.push_back(std::move(r.event));
    std::sort(out.begin(), out.end(), by_start);
    return out;
  });
}

Page<CalendarEvent> CalendarStore::range(std::optional<UserId> owner, Timestamp from, Timestamp to,
                                         std::size_t limit, const std::string& cursor) {
  check_range(from, to);
  if (limit == 0 || limit > 10000) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("page size {} is outside 1..10000", limit));
  }
  Cursor after;
  if (!cursor.empty()) after = detail::parse_time_cursor("e1", cursor);
  return overlap_read(impl_, Op{"list events"}, [&](Connection& c) {
    Page<CalendarEvent> page;
    page.items = events_in(c, owner, from, to, {}, after, limit + 1);
    if (page.items.size() > limit) {
      page.items.pop_back();
      page.next_cursor = detail::time_cursor("e1", page.items.back().start, page.items.back().id);
    }
    return page;
  });
}

std::vector<CalendarEvent> CalendarStore::conflicts(std::optional<UserId> owner, Timestamp start,
                                                    Timestamp end) {
  check_range(start, end);
  return overlap_read(impl_, Op{"find conflicts"}, [&](Connection& c) {
    return events_in(c, owner, start, end, {}, std::nullopt, 0);
  });
}

std::vector<CalendarEvent> CalendarStore::search(std::optional<UserId> owner, std::string_view text,
                                                 std::size_t limit) {
  check_text(text, "search text");
  if (limit == 0 || limit > 10000) {
    throw Error(ErrorCode::invalid_argument, fmt::format("limit {} is outside 1..10000", limit));
  }
  auto words = detail::words_of(text);
  if (words.empty()) {
    throw Error(ErrorCode::invalid_argument, fmt::format("search text '{}' has no word", text));
  }
  const bool pg = impl_->backend() == Backend::postgresql;
  // SQLite: every word quoted (an FTS5 phrase of one word), all required.
  // PostgreSQL: the words joined for plainto_tsquery, which ANDs them.
  std::string query;
  for (const auto& w : words) {
    if (!query.empty()) query += ' ';
    query += pg ? w : "\"" + w + "\"";
  }
  std::string sql = fmt::format(
      "SELECT " CS_EVENT_COLS
      " FROM calendar_events WHERE {} AND {} ORDER BY start_at, id "
      "LIMIT :n",
      owner_clause(owner, "o"),
      pg ? "search @@ plainto_tsquery('simple', :q)"
         : "id IN (SELECT rowid FROM calendar_events_fts WHERE calendar_events_fts MATCH :q)");
  return impl_->read(Op{"search events"}, [&](Connection& c) {
    Stmt s(c, sql);
    if (owner) s.in(*owner);
    s.in(query).in(limit);
    std::vector<CalendarEvent> out;
    for (auto& r : fetch_events(s)) out.push_back(std::move(r.event));
    return out;
  });
}

std::vector<TimeSlot> CalendarStore::free_slots(std::optional<UserId> owner, Timestamp from,
                                                Timestamp to, const WorkingHours& hours,
                                                std::chrono::minutes min_length) {
  check_range(from, to);
  if (hours.day_end <= hours.day_start || hours.day_start.count() < 0 ||
      hours.day_end > std::chrono::hours(24)) {
    throw Error(ErrorCode::invalid_argument, "working hours must lie within a day, start < end");
  }
  if (min_length.count() <= 0) {
    throw Error(ErrorCode::invalid_argument, "the minimum slot length must be positive");
  }
  const date::time_zone* z = zone(hours.time_zone);
  // Busy time, merged.
  std::vector<TimeSlot> busy;
  for (const auto& e : conflicts(owner, from, to)) {
    if (!busy.empty() && e.start <= busy.back().end) {
      busy.back().end = std::max(busy.back().end, e.end);
    } else {
      busy.push_back({e.start, e.end});
    }
  }
  std::vector<TimeSlot> free;
  auto offer = [&](Timestamp a, Timestamp b) {
    a = std::max(a, from);
    b = std::min(b, to);
    if (b - a >= min_length) free.push_back({a, b});
  };
  auto first_day = date::floor<date::days>(z->to_local(from));
  auto last_day = date::floor<date::days>(z->to_local(to));
  std::size_t next_busy = 0;
  for (auto day = first_day; day <= last_day; day += date::days(1)) {
    unsigned weekday = date::weekday(day).c_encoding();
    if ((hours.weekdays & (1u << weekday)) == 0) continue;
    using Local = date::local_time<std::chrono::microseconds>;
    Timestamp open = at_local(z, Local(day) + hours.day_start);
    Timestamp close = at_local(z, Local(day) + hours.day_end);
    Timestamp cursor_at = open;
    while (next_busy < busy.size() && busy[next_busy].end <= open) ++next_busy;
    for (std::size_t i = next_busy; i < busy.size() && busy[i].start < close; ++i) {
      if (busy[i].start > cursor_at) offer(cursor_at, busy[i].start);
      cursor_at = std::max(cursor_at, busy[i].end);
    }
    if (cursor_at < close) offer(cursor_at, close);
  }
  return free;
}

}  // namespace convstore
