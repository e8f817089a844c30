// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
//
// Time zones, local days and recurrence rules for the calendar: date/tz
// turns local times into instants, libical generates a rule's local times.
#include <fmt/format.h>
#include <libical/ical.h>

#include <cctype>
#include <charconv>
#include <memory>
#include <mutex>
#include <unordered_map>

#include "calendar_detail.hpp"
#include "convstore/error.hpp"
#include "ical_time.hpp"

namespace convstore::detail {

const Timestamp kEarliestTime = parse_timestamp("0001-01-01T00:00:00Z");
const Timestamp kLatestTime = parse_timestamp("9999-12-31T23:59:59.999999Z");

void check_time(Timestamp t, std::string_view what) {
  if (t < kEarliestTime || t > kLatestTime) {
    throw Error(ErrorCode::invalid_argument, fmt::format("{} {} is outside the years 0001..9999",
                                                         what, t.time_since_epoch().count()));
  }
}

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

Timestamp at_local(const date::time_zone* z, LocalTime t) {
  auto info = z->get_info(t);
  switch (info.result) {
    case date::local_info::unique:
    case date::local_info::ambiguous:
      return Timestamp((t - info.first.offset).time_since_epoch());
    case date::local_info::nonexistent:
    default:
      // RFC 5545 3.3.5: read with the offset in force before the gap.
      return Timestamp((t - info.first.offset).time_since_epoch());
  }
}

namespace {

// A parsed rule, its UNTIL taken out: libical compares UNTIL with the local
// times it generates as if both were in one zone, so convstore applies it
// itself, in the series' zone.
struct Rule {
  icalrecurrencetype rule;
  icaltimetype until;
};

std::string strip_prefix(std::string_view text) {
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.front()))) {
    text.remove_prefix(1);
  }
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) {
    text.remove_suffix(1);
  }
  constexpr std::string_view kPrefix = "RRULE:";
  if (text.size() >= kPrefix.size()) {
    bool prefixed = true;
    for (std::size_t i = 0; i < kPrefix.size(); ++i) {
      prefixed = prefixed && std::toupper(static_cast<unsigned char>(text[i])) == kPrefix[i];
    }
    if (prefixed) text.remove_prefix(kPrefix.size());
  }
  return std::string(text);
}

Rule parse_rule(std::string_view text) {
  std::string rule = strip_prefix(text);
  auto malformed = [&](std::string_view why) {
    return Error(ErrorCode::invalid_argument,
                 fmt::format("recurrence rule '{}' {}", std::string(text), why));
  };
  if (rule.empty()) throw malformed("is empty");
  for (char ch : rule) {
    if (static_cast<unsigned char>(ch) < 0x20 || static_cast<unsigned char>(ch) >= 0x7f) {
      throw malformed("has a character that no rule has");
    }
  }
  icalerror_clear_errno();
  Rule r{icalrecurrencetype_from_string(rule.c_str()), icaltime_null_time()};
  if (icalerrno != ICAL_NO_ERROR || r.rule.freq == ICAL_NO_RECURRENCE) {
    icalerror_clear_errno();
    throw malformed(
        "is malformed (expected FREQ=DAILY|WEEKLY|MONTHLY|YEARLY and parts such as "
        "INTERVAL=, COUNT=, UNTIL=, BYDAY=, BYMONTHDAY=, separated by ';')");
  }
  if (r.rule.freq < ICAL_DAILY_RECURRENCE) {
    throw malformed("repeats more often than daily (FREQ is DAILY, WEEKLY, MONTHLY or YEARLY)");
  }
  if (r.rule.count < 0) throw malformed("has a negative COUNT");
  const std::string parts = ";" + rule + ";";
  if (parts.find(";COUNT=0;") != std::string::npos) throw malformed("has COUNT=0");
  for (const char* part : {";BYHOUR=", ";BYMINUTE=", ";BYSECOND="}) {
    if (parts.find(part) != std::string::npos) {
      throw malformed(fmt::format("has {} (a series repeats its start time)", part + 1));
    }
  }
  if (!icaltime_is_null_time(r.rule.until)) {
    if (r.rule.count > 0) throw malformed("has both COUNT and UNTIL");
    r.until = r.rule.until;
    r.rule.until = icaltime_null_time();
  }
  return r;
}

struct IteratorFree {
  void operator()(icalrecur_iterator* it) const { icalrecur_iterator_free(it); }
};

}  // namespace

std::string check_rrule(const CalendarEvent& series) {
  Rule r = parse_rule(series.rrule);
  // UNTIL as RFC 5545 wants it: a date for an all-day series, UTC for a
  // timed one (a floating or date UNTIL read in the series' zone, as
  // expand() reads it).
  if (!icaltime_is_null_time(r.until)) {
    const date::time_zone* z = zone(series.time_zone);
    const LocalTime local = from_ical(r.until);
    if (series.all_day && !r.until.is_date) {
      const LocalTime day = r.until.zone ? z->to_local(Timestamp(local.time_since_epoch())) : local;
      r.until = to_ical(day, true);
    } else if (!series.all_day && (r.until.is_date || !icaltime_is_utc(r.until))) {
      const Timestamp last =
          r.until.is_date ? at_local(z, LocalTime(date::floor<date::days>(local) + date::days(1))) -
                                std::chrono::seconds(1)
                          : at_local(z, local);
      r.until =
          to_ical(LocalTime(date::floor<std::chrono::seconds>(last).time_since_epoch()), false);
      r.until.zone = icaltimezone_get_utc_timezone();
    }
  }
  r.rule.until = r.until;
  char* text = icalrecurrencetype_as_string_r(&r.rule);
  std::string canonical = text ? text : "";
  icalmemory_free_buffer(text);
  // A rule that libical cannot iterate from this start (BYWEEKNO with
  // FREQ=DAILY, a 30 February every year ...) is refused now, not at the
  // first query.
  CalendarEvent checked = series;
  checked.rrule = canonical;
  try {
    expand(checked, checked.start, checked.end, [](const Occurrence&) { return false; });
  } catch (const Error& err) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("recurrence rule '{}' is one libical cannot expand ({})", series.rrule,
                            err.what()));
  }
  return canonical;
}

void expand(const CalendarEvent& series, Timestamp from, Timestamp to,
            const std::function<bool(const Occurrence&)>& fn) {
  Rule r = parse_rule(series.rrule);
  const date::time_zone* z = zone(series.time_zone);
  const LocalTime first = z->to_local(series.start);
  const auto fraction = first - date::floor<std::chrono::seconds>(first);
  const auto length = series.end - series.start;
  const auto days =
      date::floor<date::days>(z->to_local(series.end)) - date::floor<date::days>(first);
  auto end_of = [&](Timestamp start, LocalTime local) {
    return series.all_day ? at_local(z, LocalTime(date::floor<date::days>(local) + days))
                          : start + length;
  };

  std::unique_ptr<icalrecur_iterator, IteratorFree> it(
      icalrecur_iterator_new(r.rule, to_ical(first, series.all_day)));
  if (!it) {
    icalerror_clear_errno();
    throw Error(ErrorCode::invalid_argument, fmt::format("recurrence rule '{}' cannot start at {}",
                                                         series.rrule, to_iso8601(series.start)));
  }
  // Without COUNT the iterator can start near the range instead of at the
  // first occurrence (the slack covers all-day days of 25 hours).
  const auto reach = std::max<std::chrono::microseconds>(length, days + std::chrono::hours(48));
  if (r.rule.count == 0 && from - reach > series.start) {
    icalrecur_iterator_set_start(it.get(), to_ical(z->to_local(from - reach), series.all_day));
  }
  const bool until_utc =
      !icaltime_is_null_time(r.until) && !r.until.is_date && icaltime_is_utc(r.until);
  const LocalTime until_local =
      icaltime_is_null_time(r.until) ? LocalTime::max() : from_ical(r.until);
  const Timestamp until_instant =
      until_utc ? Timestamp(until_local.time_since_epoch()) : Timestamp::max();
  for (icaltimetype t = icalrecur_iterator_next(it.get()); !icaltime_is_null_time(t);
       t = icalrecur_iterator_next(it.get())) {
    const LocalTime local = from_ical(t) + fraction;
    if (r.until.is_date ? date::floor<date::days>(local) > until_local
                        : (!until_utc && local > until_local)) {
      break;
    }
    const Timestamp start = at_local(z, local);
    if (start > until_instant || start >= to || start > kLatestTime) break;
    const Timestamp end = end_of(start, local);
    if (end > from && !fn(Occurrence{start, end})) return;
  }
}

namespace {

// Occurrences are a pure function of a series' rule, start, end, zone and
// all-day flag: they are kept per span of about 407 days (2^45 us), by
// start, so that a query expands an open-ended series once per span instead
// of starting a libical iterator every time.
constexpr long long kSpanUs = 1LL << 45;
constexpr std::size_t kMostSpansKept = 20000;

using Span = std::shared_ptr<const std::vector<Occurrence>>;

std::mutex spans_lock;
std::unordered_map<std::string, Span>& spans() {
  static std::unordered_map<std::string, Span> kept;
  return kept;
}

long long span_of(Timestamp t) {
  long long us = t.time_since_epoch().count();
  return us >= 0 ? us / kSpanUs : -((-us + kSpanUs - 1) / kSpanUs);
}

Span occurrences_in_span(const CalendarEvent& series, long long span) {
  std::string key = fmt::format("{}|{}|{}|{}|{}|{}", series.rrule, series.time_zone, series.all_day,
                                series.start.time_since_epoch().count(),
                                series.end.time_since_epoch().count(), span);
  {
    std::lock_guard<std::mutex> lock(spans_lock);
    auto it = spans().find(key);
    if (it != spans().end()) return it->second;
  }
  const Timestamp begin{std::chrono::microseconds(span * kSpanUs)};
  const Timestamp end{std::chrono::microseconds((span + 1) * kSpanUs)};
  auto found = std::make_shared<std::vector<Occurrence>>();
  if (begin <= kLatestTime && end > series.start) {
    expand(series, std::max(begin, series.start), end, [&](const Occurrence& o) {
      if (o.start >= begin) found->push_back(o);
      return true;
    });
  }
  std::lock_guard<std::mutex> lock(spans_lock);
  if (spans().size() >= kMostSpansKept) spans().clear();
  return spans().emplace(std::move(key), std::move(found)).first->second;
}

}  // namespace

void expand_cached(const CalendarEvent& series, Timestamp from, Timestamp to,
                   const std::function<bool(const Occurrence&)>& fn) {
  // An occurrence lasts as long as the first, or as many local days (one
  // hour longer at most across a daylight-saving change).
  const auto length = series.end - series.start;
  const auto reach = series.all_day ? length + std::chrono::hours(2) : length;
  const Timestamp lo = std::max(from - reach, series.start);
  if (lo >= to) return;
  for (long long span = span_of(lo), last = span_of(to - std::chrono::microseconds(1));
       span <= last; ++span) {
    Span occurrences = occurrences_in_span(series, span);
    auto first = std::lower_bound(occurrences->begin(), occurrences->end(), lo,
                                  [](const Occurrence& o, Timestamp t) { return o.start < t; });
    for (auto it = first; it != occurrences->end(); ++it) {
      if (it->start >= to) return;
      if (it->end > from && !fn(*it)) return;
    }
  }
}

std::optional<Timestamp> series_end(const CalendarEvent& series) {
  Rule r = parse_rule(series.rrule);
  if (r.rule.count == 0 && icaltime_is_null_time(r.until)) return std::nullopt;
  constexpr std::size_t kMostCounted = 100000;
  std::size_t n = 0;
  Timestamp last = series.end;
  expand(series, series.start, kLatestTime, [&](const Occurrence& o) {
    last = std::max(last, o.end);
    return ++n <= kMostCounted;
  });
  if (n > kMostCounted) return std::nullopt;
  return last;
}

std::optional<Occurrence> occurrence_at(const CalendarEvent& series, Timestamp start) {
  std::optional<Occurrence> found;
  expand(series, start, start + std::chrono::microseconds(1), [&](const Occurrence& o) {
    if (o.start == start) found = o;
    return !found && o.start < start;
  });
  return found;
}

}  // namespace convstore::detail
