// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#include "convstore/calendar_store.hpp"

#include <date/date.h>
#include <date/tz.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <random>

#include "store_helpers.hpp"
#include "store_impl.hpp"

namespace convstore {

using detail::Backend;
using detail::check_id;
using detail::check_text;
using detail::Connection;
using detail::fetch_all;
using detail::fetch_one;
using detail::json_text;
using detail::Sql;
using detail::Stmt;

#define CS_EVENT_COLS                                                                       \
  "id, owner_id, uid, title, description, location, start_at, end_at, all_day, time_zone, " \
  "metadata, created_at, updated_at"

namespace detail {

void read_row(Stmt& s, CalendarEvent& e) {
  s.out(e.id).out(e.owner).out(e.uid).out(e.title).out(e.description).out(e.location);
  s.out(e.start).out(e.end).out(e.all_day).out(e.time_zone).out(e.metadata);
  s.out(e.created_at).out(e.updated_at);
}

}  // namespace detail

namespace {

// The times convstore stores: years 0001 to 9999 (what both backends and
// ISO 8601 text agree on).
const Timestamp kEarliest = parse_timestamp("0001-01-01T00:00:00Z");
const Timestamp kLatest = parse_timestamp("9999-12-31T23:59:59.999999Z");

void check_time(Timestamp t, std::string_view what) {
  if (t < kEarliest || t > kLatest) {
    throw Error(ErrorCode::invalid_argument, fmt::format("{} {} is outside the years 0001..9999",
                                                         what, t.time_since_epoch().count()));
  }
}

// ---- time zones and local days (Howard Hinnant's date/tz) ----

const date::time_zone* zone(const std::string& name) {
  try {
    return date::locate_zone(name);
  } catch (const std::exception&) {
    throw Error(ErrorCode::invalid_argument, fmt::format("unknown time zone '{}'", name));
  }
}

date::local_days parse_day(const std::string& text, std::string_view what) {
  // Exactly YYYY-MM-DD; the calendar check is date's.
  auto field = [&](std::size_t pos, std::size_t len, int& out) {
    auto r = std::from_chars(text.data() + pos, text.data() + pos + len, out);
    return r.ec == std::errc() && r.ptr == text.data() + pos + len;
  };
  int y = 0, m = 0, d = 0;
  bool ok = text.size() == 10 && text[4] == '-' && text[7] == '-' && field(0, 4, y) &&
            field(5, 2, m) && field(8, 2, d) && m > 0 && d > 0;
  date::year_month_day ymd{date::year{y}, date::month{static_cast<unsigned>(m)},
                           date::day{static_cast<unsigned>(d)}};
  if (!ok || !ymd.ok()) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("{} '{}' is not a date (YYYY-MM-DD)", what, text));
  }
  return date::local_days{ymd};
}

// The UTC instant at which local time `t` begins in `z` (the earliest one
// when the clock repeats it, the moment the gap ends when it skips it).
Timestamp at_local(const date::time_zone* z, date::local_time<std::chrono::microseconds> t) {
  auto info = z->get_info(t);
  switch (info.result) {
    case date::local_info::unique:
    case date::local_info::ambiguous:
      return Timestamp((t - info.first.offset).time_since_epoch());
    case date::local_info::nonexistent:
    default:
      return Timestamp(info.second.begin.time_since_epoch());
  }
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
  e.start = at_local(z, date::local_time<std::chrono::microseconds>(first));
  e.end = at_local(z, date::local_time<std::chrono::microseconds>(after));
}

void check_times(const CalendarEvent& e) {
  check_time(e.start, "event start");
  check_time(e.end, "event end");
  if (e.end <= e.start) {
    throw Error(ErrorCode::invalid_argument, fmt::format("event end {} is not after its start {}",
                                                         to_iso8601(e.end), to_iso8601(e.start)));
  }
}

std::string new_uid() {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  return fmt::format("{:016x}{:016x}@convstore", rng(), rng());
}

// The words of a text for search: runs of letters and digits (any byte of a
// multi-byte UTF-8 character counts as a letter), ASCII lower-cased. Events
// store theirs (search_words) and queries use the same function, so both
// indexes see plain words separated by spaces and split them alike.
std::vector<std::string> words_of(std::string_view text) {
  std::vector<std::string> words;
  std::string word;
  for (char ch : text) {
    auto c = static_cast<unsigned char>(ch);
    if (c >= 0x80 || std::isalnum(c)) {
      word += static_cast<char>(std::tolower(c));
    } else if (!word.empty()) {
      words.push_back(std::move(word));
      word.clear();
    }
  }
  if (!word.empty()) words.push_back(std::move(word));
  return words;
}

// The normalized words of an event, capped so that no index refuses them
// (PostgreSQL's tsvector has a 1 MB limit).
std::string search_words(const CalendarEvent& e) {
  constexpr std::size_t kMax = 65536;
  std::string out;
  for (const auto* text : {&e.title, &e.description, &e.location}) {
    for (auto& w : words_of(*text)) {
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
const char* owner_clause(std::optional<UserId> owner) {
  return owner ? "owner_id = :o" : "owner_id IS NULL";
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

// Events of `owner` overlapping [from, to), ordered by (start, id), after the
// cursor position, at most `limit` (0: all). The scan is bounded below by
// `from` minus the owner's longest event, so it reads only events that can
// overlap: a short index range instead of half the table. On PostgreSQL the
// bound is a subquery of the one statement; on SQLite (times are text) it is
// read first, in the same snapshot.
std::vector<CalendarEvent> overlapping(Connection& c, std::optional<UserId> owner, Timestamp from,
                                       Timestamp to, std::optional<EventId> except,
                                       std::optional<std::pair<Timestamp, EventId>> after,
                                       std::size_t limit) {
  const bool pg = c.backend() == Backend::postgresql;
  long long span = 0;
  if (!pg) {
    span = longest(c, owner);
    if (span == 0) return {};
    span = std::min<long long>(span, (from - kEarliest).count());
  }
  std::string sql = fmt::format("SELECT " CS_EVENT_COLS " FROM calendar_events WHERE {} AND {}",
                                owner_clause(owner),
                                pg ? "start_at >= (SELECT CASE WHEN b.longest_us >= :room THEN "
                                     "'-infinity'::timestamptz ELSE :lo::timestamptz - "
                                     "(b.longest_us / 1000000) * interval '1 second' - "
                                     "(b.longest_us % 1000000) * interval '1 microsecond' - "
                                     "interval '1 second' END FROM calendar_bounds b "
                                     "WHERE b.owner_key = :k)"
                                   : "start_at >= :lo");
  sql += " AND start_at < :hi AND end_at > :from";
  if (except) sql += " AND id <> :except";
  if (after) sql += " AND (start_at, id) > (:cs, :cid)";
  sql += " ORDER BY start_at, id";
  if (limit > 0) sql += " LIMIT :n";
  Stmt s(c, sql);
  if (owner) s.in(*owner);
  if (pg) {
    // The bound is clamped to the start of time for an owner whose longest
    // event reaches further back; the extra second covers the rounding of
    // float interval arithmetic for spans of centuries.
    s.in(static_cast<long long>((from - kEarliest).count())).in(from).in(owner_key(owner));
  } else {
    s.in(from - std::chrono::microseconds(span));
  }
  s.in(to).in(from);
  if (except) s.in(*except);
  if (after) s.in(after->first).in(after->second);
  if (limit > 0) s.in(limit);
  return fetch_all<CalendarEvent>(s, limit);
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

void refuse_overlaps(Connection& c, const CalendarEvent& e, std::optional<EventId> except) {
  auto in_the_way = overlapping(c, e.owner, e.start, e.end, except, std::nullopt, 0);
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

void check_event_text(const CalendarEvent& e) {
  check_text(e.title, "event title");
  check_text(e.description, "event description");
  check_text(e.location, "event location");
  check_id(e.uid, "event uid");
  if (!e.metadata.is_object()) {
    throw Error(ErrorCode::invalid_argument, "event metadata must be a JSON object");
  }
}

const Sql kGetEvent{"SELECT " CS_EVENT_COLS " FROM calendar_events WHERE id = :id"};
const Sql kLockEvent{"SELECT " CS_EVENT_COLS " FROM calendar_events WHERE id = :id",
                     "SELECT " CS_EVENT_COLS " FROM calendar_events WHERE id = :id FOR UPDATE"};

}  // namespace

CalendarEvent CalendarStore::create(const NewEvent& n, const BookingOptions& options) {
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
  check_event_text(e);
  place(e, n.start_day, n.end_day);
  check_times(e);
  std::string md = json_text(e.metadata, "event metadata");
  static const Sql insert{
      "INSERT INTO calendar_events (owner_id, uid, title, description, location, start_at, "
      "end_at, all_day, time_zone, metadata, search_words, created_at, updated_at) VALUES (:o, "
      ":uid, :t, :d, :l, :s, :e, :ad, :tz, :md, :w, :c, :u) RETURNING " CS_EVENT_COLS};
  try {
    return impl_->write(Op{"create event"}, [&](Connection& c) {
      if (options.refuse_conflicts) {
        lock_owner(c, e.owner);
        refuse_overlaps(c, e, std::nullopt);
      }
      Timestamp t = now();
      Stmt s(c, insert);
      s.in(e.owner).in(e.uid).in(e.title).in(e.description).in(e.location).in(e.start);
      s.in(e.end).in(e.all_day).in(e.time_zone).in(md).in(search_words(e)).in(t).in(t);
      CalendarEvent stored = *fetch_one<CalendarEvent>(s);
      widen_bounds(c, e.owner, stored);
      return stored;
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
    return fetch_one<CalendarEvent>(s);
  });
}

std::optional<CalendarEvent> CalendarStore::find_by_uid(std::string_view uid) {
  check_id(uid, "event uid");
  static const Sql q{"SELECT " CS_EVENT_COLS " FROM calendar_events WHERE uid = :uid"};
  return impl_->read(Op{"find event"}, [&](Connection& c) {
    Stmt s(c, q);
    s.in(uid);
    return fetch_one<CalendarEvent>(s);
  });
}

CalendarEvent CalendarStore::update(EventId id, const EventUpdate& up,
                                    const BookingOptions& options) {
  static const Sql write{
      "UPDATE calendar_events SET title = :t, description = :d, location = :l, start_at = :s, "
      "end_at = :e, time_zone = :tz, metadata = :md, search_words = :w, updated_at = :u "
      "WHERE id = :id RETURNING " CS_EVENT_COLS};
  return impl_->write(Op{"update event", "event", id}, [&](Connection& c) {
    Stmt sel(c, kLockEvent);
    sel.in(id);
    auto e = fetch_one<CalendarEvent>(sel);
    if (!e) throw Error(ErrorCode::not_found, fmt::format("event {} not found", id));
    if (up.title) e->title = *up.title;
    if (up.description) e->description = *up.description;
    if (up.location) e->location = *up.location;
    // An all-day event keeps its local days when it changes zone: read them
    // in the zone it had.
    std::string first_day, after_day;
    if (e->all_day) {
      const date::time_zone* old_zone = zone(e->time_zone);
      auto day_of = [&](Timestamp t) {
        return date::format("%F", date::floor<date::days>(old_zone->to_local(t)));
      };
      first_day = up.start_day.value_or(day_of(e->start));
      after_day = up.end_day.value_or(day_of(e->end));
    }
    if (up.time_zone) e->time_zone = *up.time_zone;
    if (up.metadata_patch) e->metadata.merge_patch(*up.metadata_patch);
    check_event_text(*e);
    if (e->all_day) {
      if (up.start || up.end) {
        throw Error(ErrorCode::invalid_argument,
                    "an all-day event moves by start_day / end_day, not by start / end");
      }
      if (up.start_day || up.end_day || up.time_zone) place(*e, first_day, after_day);
    } else {
      if (up.start_day || up.end_day) {
        throw Error(ErrorCode::invalid_argument,
                    "a timed event moves by start / end, not by start_day / end_day");
      }
      zone(e->time_zone);
      if (up.start) e->start = *up.start;
      if (up.end) e->end = *up.end;
    }
    check_times(*e);
    if (options.refuse_conflicts) {
      lock_owner(c, e->owner);
      refuse_overlaps(c, *e, id);
    }
    std::string md = json_text(e->metadata, "event metadata");
    Stmt s(c, write);
    s.in(e->title).in(e->description).in(e->location).in(e->start).in(e->end);
    s.in(e->time_zone).in(md).in(search_words(*e)).in(now()).in(id);
    CalendarEvent stored = *fetch_one<CalendarEvent>(s);
    widen_bounds(c, stored.owner, stored);
    return stored;
  });
}

bool CalendarStore::remove(EventId id) {
  static const Sql q{"DELETE FROM calendar_events WHERE id = :id"};
  // The owner's longest-event bound stays as it was: still correct, at worst
  // a little wider than needed.
  return impl_->single(Op{"delete event", "event", id}, [&](Connection& c) {
    Stmt s(c, q);
    s.in(id).one();
    return s.affected() > 0;
  });
}

namespace {

// An overlap query is one statement on PostgreSQL (no transaction needed);
// on SQLite the longest-event bound is read first, in the same snapshot, so
// that the bound and the events agree.
template <class F>
auto overlap_read(Store::Impl* impl, const Op& op, F&& fn) {
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

Page<CalendarEvent> CalendarStore::range(std::optional<UserId> owner, Timestamp from, Timestamp to,
                                         std::size_t limit, const std::string& cursor) {
  check_range(from, to);
  if (limit == 0 || limit > 10000) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("page size {} is outside 1..10000", limit));
  }
  std::optional<std::pair<Timestamp, EventId>> after;
  if (!cursor.empty()) after = detail::parse_time_cursor("e1", cursor);
  return overlap_read(impl_, Op{"list events"}, [&](Connection& c) {
    Page<CalendarEvent> page;
    page.items = overlapping(c, owner, from, to, std::nullopt, after, limit + 1);
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
    return overlapping(c, owner, start, end, std::nullopt, std::nullopt, 0);
  });
}

std::vector<CalendarEvent> CalendarStore::search(std::optional<UserId> owner, std::string_view text,
                                                 std::size_t limit) {
  check_text(text, "search text");
  if (limit == 0 || limit > 10000) {
    throw Error(ErrorCode::invalid_argument, fmt::format("limit {} is outside 1..10000", limit));
  }
  auto words = words_of(text);
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
      owner_clause(owner),
      pg ? "search @@ plainto_tsquery('simple', :q)"
         : "id IN (SELECT rowid FROM calendar_events_fts WHERE calendar_events_fts MATCH :q)");
  return impl_->read(Op{"search events"}, [&](Connection& c) {
    Stmt s(c, sql);
    if (owner) s.in(*owner);
    s.in(query).in(limit);
    return fetch_all<CalendarEvent>(s);
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
