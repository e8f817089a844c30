// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
//
// iCalendar (RFC 5545) import and export of calendar events. libical reads
// and writes the files (unfolding, escapes, values); a first pass over the
// lines only notes where each event and property starts, so that an error
// can name its line, and refuses lines that are not NAME[;PARAMS]:VALUE,
// which libical would otherwise skip.
#include <fmt/format.h>
#include <libical/ical.h>

#include <algorithm>
#include <cctype>
#include <map>
#include <memory>
#include <mutex>
#include <set>

#include "calendar_detail.hpp"
#include "convstore/version.hpp"
#include "ical_time.hpp"
#include "store_helpers.hpp"
#include "store_impl.hpp"

namespace convstore {

using detail::at_local;
using detail::LocalTime;
using detail::StoredEvent;

namespace {

Error bad_file(const std::string& message) {
  return Error(ErrorCode::invalid_argument, "calendar file: " + message);
}

// ---- where things are: the first pass ----

struct Line {
  std::size_t number = 0;  // of its first physical line
  std::string text;        // unfolded
};

// The lines of one VEVENT, at its own level (not those of its alarms).
struct EventLines {
  std::size_t begin = 0;
  std::vector<Line> lines;

  // "line N", of the first property `name`, or of BEGIN:VEVENT.
  std::string where(std::string_view name = {}) const {
    for (const auto& l : lines) {
      if (!name.empty() && l.text.size() > name.size() &&
          (l.text[name.size()] == ':' || l.text[name.size()] == ';')) {
        bool same = true;
        for (std::size_t i = 0; i < name.size() && same; ++i) {
          same = std::toupper(static_cast<unsigned char>(l.text[i])) == name[i];
        }
        if (same) return fmt::format("line {}", l.number);
      }
    }
    return fmt::format("line {}", begin);
  }
};

std::string upper(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

// The property name of a content line, or "" when the line is not
// NAME[;PARAM=VALUE...]:VALUE.
std::string name_of(const std::string& line) {
  std::size_t i = 0;
  while (i < line.size() && (std::isalnum(static_cast<unsigned char>(line[i])) || line[i] == '-')) {
    ++i;
  }
  if (i == 0 || i == line.size() || (line[i] != ':' && line[i] != ';')) return "";
  // Parameters may quote a colon.
  bool quoted = false;
  for (std::size_t j = i; j < line.size(); ++j) {
    if (line[j] == '"') quoted = !quoted;
    if (line[j] == ':' && !quoted) return upper(std::string_view(line).substr(0, i));
  }
  return "";
}

std::vector<EventLines> scan(std::string_view text) {
  std::vector<Line> lines;
  std::size_t number = 0, pos = 0;
  while (pos < text.size()) {
    std::size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    std::string_view raw = text.substr(pos, end - pos);
    pos = end + 1;
    ++number;
    if (!raw.empty() && raw.back() == '\r') raw.remove_suffix(1);
    if (raw.empty()) continue;
    if (raw.front() == ' ' || raw.front() == '\t') {
      if (lines.empty()) throw bad_file(fmt::format("line {} continues no line", number));
      lines.back().text.append(raw.substr(1));
    } else {
      lines.push_back(Line{number, std::string(raw)});
    }
  }
  if (lines.empty()) throw bad_file("it is empty");
  std::vector<EventLines> events;
  std::vector<std::pair<std::string, std::size_t>> open;  // component, line
  for (const auto& l : lines) {
    std::string name = name_of(l.text);
    if (name.empty()) {
      std::string shown = l.text.substr(0, 60);
      throw bad_file(fmt::format("line {} is broken: '{}' is not NAME:VALUE", l.number, shown));
    }
    std::string value = upper(l.text.substr(l.text.find(':') + 1));
    if (open.empty() && !(name == "BEGIN" && value == "VCALENDAR")) {
      throw bad_file(fmt::format("line {}: expected BEGIN:VCALENDAR", l.number));
    }
    if (name == "BEGIN") {
      open.emplace_back(value, l.number);
      if (value == "VEVENT" && open.size() == 2) events.push_back(EventLines{l.number, {}});
      continue;
    }
    if (name == "END") {
      if (open.back().first != value) {
        throw bad_file(fmt::format("line {}: END:{} where BEGIN:{} of line {} ends", l.number,
                                   value, open.back().first, open.back().second));
      }
      open.pop_back();
      continue;
    }
    if (open.size() == 2 && open.back().first == "VEVENT") events.back().lines.push_back(l);
  }
  if (!open.empty()) {
    throw bad_file(
        fmt::format("BEGIN:{} of line {} never ends", open.back().first, open.back().second));
  }
  return events;
}

// ---- libical values ----

struct ComponentFree {
  void operator()(icalcomponent* c) const { icalcomponent_free(c); }
};
using Component = std::unique_ptr<icalcomponent, ComponentFree>;

// libical sets up its UTC zone on first use: once, before any thread needs
// it. Its built-in zones (read from the system's zoneinfo for VTIMEZONE
// export) are loaded under a lock.
icaltimezone* utc_zone() {
  static icaltimezone* const utc = icaltimezone_get_utc_timezone();
  return utc;
}
std::mutex builtin_zones_lock;

std::vector<icalproperty*> properties(icalcomponent* c, icalproperty_kind kind) {
  std::vector<icalproperty*> out;
  for (icalproperty* p = icalcomponent_get_first_property(c, kind); p;
       p = icalcomponent_get_next_property(c, kind)) {
    out.push_back(p);
  }
  return out;
}

icalproperty* property(icalcomponent* c, icalproperty_kind kind) {
  return icalcomponent_get_first_property(c, kind);
}

std::string text_of(icalcomponent* c, icalproperty_kind kind) {
  icalproperty* p = property(c, kind);
  if (!p) return "";
  const char* v = icalvalue_get_text(icalproperty_get_value(p));
  return v ? v : "";
}

// A time value as read: a date, a UTC time, a local time in a zone (TZID)
// or a floating local time.
struct TimeValue {
  bool is_date = false;
  bool utc = false;
  LocalTime local{};  // the date's midnight, or the time (UTC when `utc`)
  std::string tzid;   // empty: floating or UTC
};

TimeValue time_of(icalproperty* p, const std::string& where) {
  icalvalue* v = icalproperty_get_value(p);
  icalvalue_kind kind = v ? icalvalue_isa(v) : ICAL_NO_VALUE;
  if (kind != ICAL_DATETIME_VALUE && kind != ICAL_DATE_VALUE) {
    throw bad_file(fmt::format("{}: {} is not a date or a date-time", where,
                               icalproperty_get_property_name(p)));
  }
  icaltimetype t = kind == ICAL_DATE_VALUE ? icalvalue_get_date(v) : icalvalue_get_datetime(v);
  date::year_month_day ymd{date::year{t.year}, date::month{static_cast<unsigned>(t.month)},
                           date::day{static_cast<unsigned>(t.day)}};
  if (!ymd.ok() || t.year < 1 || t.year > 9999 || t.hour < 0 || t.hour > 23 || t.minute < 0 ||
      t.minute > 59 || t.second < 0 || t.second > 60) {
    throw bad_file(fmt::format("{}: {} '{}' is not a real time", where,
                               icalproperty_get_property_name(p),
                               icalproperty_get_value_as_string(p)));
  }
  TimeValue out;
  out.is_date = t.is_date != 0;
  out.utc = !out.is_date && icaltime_is_utc(t);
  out.local = detail::from_ical(t);
  if (icalparameter* tz = icalproperty_get_first_parameter(p, ICAL_TZID_PARAMETER)) {
    if (const char* id = icalparameter_get_tzid(tz)) out.tzid = id;
  }
  return out;
}

// The IANA name for a TZID: itself, the X-LIC-LOCATION of the file's
// VTIMEZONE with that TZID, or its tail after a vendor prefix
// ("/mozilla.org/20050126_1/America/New_York").
std::string iana_zone(const std::string& tzid, const std::map<std::string, std::string>& locations,
                      const std::string& where) {
  auto known = [](const std::string& name) {
    try {
      date::locate_zone(name);
      return true;
    } catch (const std::exception&) {
      return false;
    }
  };
  if (known(tzid)) return tzid;
  auto loc = locations.find(tzid);
  if (loc != locations.end() && known(loc->second)) return loc->second;
  for (std::size_t slash = tzid.find('/'); slash != std::string::npos;
       slash = tzid.find('/', slash + 1)) {
    std::string tail = tzid.substr(slash + 1);
    if (!tail.empty() && known(tail)) return tail;
  }
  throw bad_file(fmt::format("{}: unknown time zone '{}'", where, tzid));
}

// What one file says: its events in order, each with where it is.
struct Imported {
  CalendarEvent event;
  std::string where;
  bool cancelled = false;  // STATUS:CANCELLED
};

class Reader {
 public:
  Reader(const IcsImportOptions& options, std::map<std::string, std::string> locations)
      : options_(options), locations_(std::move(locations)) {}

  Imported read(icalcomponent* ev, const EventLines& at) {
    Imported out;
    CalendarEvent& e = out.event;
    out.where = at.where();
    start_of_day_ = std::chrono::microseconds(0);
    e.owner = options_.owner;
    for (icalproperty* err : properties(ev, ICAL_XLICERROR_PROPERTY)) {
      const char* what = icalproperty_get_xlicerror(err);
      throw bad_file(fmt::format("{}: {}", line_of_error(at, what ? what : ""), what ? what : ""));
    }
    e.uid = text_of(ev, ICAL_UID_PROPERTY);
    if (e.uid.empty()) {
      throw bad_file(fmt::format("{}: the event has no UID", at.where()));
    }
    e.title = text_of(ev, ICAL_SUMMARY_PROPERTY);
    e.description = text_of(ev, ICAL_DESCRIPTION_PROPERTY);
    e.location = text_of(ev, ICAL_LOCATION_PROPERTY);
    std::string zone_name;
    for (icalproperty* x : properties(ev, ICAL_X_PROPERTY)) {
      std::string name = upper(icalproperty_get_x_name(x));
      const char* value = icalproperty_get_x(x);
      if (name == "X-CONVSTORE-METADATA" && value) {
        try {
          e.metadata = Json::parse(value);
        } catch (const std::exception& err) {
          throw bad_file(
              fmt::format("{}: X-CONVSTORE-METADATA is not JSON ({})", at.where(name), err.what()));
        }
        if (!e.metadata.is_object()) {
          throw bad_file(
              fmt::format("{}: X-CONVSTORE-METADATA is not a JSON object", at.where(name)));
        }
      } else if (name == "X-CONVSTORE-TIME-ZONE" && value) {
        zone_name = value;
        try {
          detail::zone(zone_name);
        } catch (const Error& err) {
          throw bad_file(fmt::format("{}: {}", at.where(name), err.what()));
        }
      }
    }

    icalproperty* start_prop = property(ev, ICAL_DTSTART_PROPERTY);
    if (!start_prop) {
      throw bad_file(fmt::format("{}: the event '{}' has no DTSTART", at.where(), e.uid));
    }
    const std::string start_at = at.where("DTSTART");
    TimeValue start = time_of(start_prop, start_at);
    e.all_day = start.is_date;
    if (zone_name.empty()) {
      zone_name = start.utc            ? "UTC"
                  : start.tzid.empty() ? options_.default_time_zone
                                       : iana_zone(start.tzid, locations_, start_at);
    }
    e.time_zone = zone_name;
    zone_ = zone_name;
    e.start = instant(start, start_at);

    if (icalproperty* end_prop = property(ev, ICAL_DTEND_PROPERTY)) {
      const std::string end_at = at.where("DTEND");
      TimeValue end = time_of(end_prop, end_at);
      if (end.is_date != start.is_date) {
        throw bad_file(fmt::format("{}: DTEND and DTSTART are not both dates", end_at));
      }
      e.end = instant(end, end_at);
    } else if (icalproperty* dur = property(ev, ICAL_DURATION_PROPERTY)) {
      icaldurationtype d = icalproperty_get_duration(dur);
      const int seconds = icaldurationtype_as_int(d);
      if (e.all_day) {
        if (seconds % 86400 != 0) {
          throw bad_file(
              fmt::format("{}: an all-day event lasts whole days", at.where("DURATION")));
        }
        e.end = at_local(detail::zone(e.time_zone), start.local + date::days(seconds / 86400));
      } else {
        e.end = e.start + std::chrono::seconds(seconds);
      }
    } else if (e.all_day) {
      e.end = at_local(detail::zone(e.time_zone), start.local + date::days(1));
    } else {
      throw bad_file(fmt::format(
          "{}: the event '{}' has neither DTEND nor DURATION (convstore stores no event "
          "without length)",
          at.where(), e.uid));
    }

    if (property(ev, ICAL_RDATE_PROPERTY)) {
      throw bad_file(
          fmt::format("{}: RDATE is not supported (a series has one RRULE)", at.where("RDATE")));
    }
    const auto rules = properties(ev, ICAL_RRULE_PROPERTY);
    if (rules.size() > 1) {
      throw bad_file(fmt::format("{}: an event with more than one RRULE", at.where("RRULE")));
    }
    if (!rules.empty()) e.rrule = icalproperty_get_value_as_string(rules[0]);
    start_of_day_ = start.is_date ? std::chrono::microseconds(0)
                                  : start.local - date::floor<date::days>(start.local);
    if (icalproperty* status = property(ev, ICAL_STATUS_PROPERTY)) {
      out.cancelled = icalproperty_get_status(status) == ICAL_STATUS_CANCELLED;
    }
    for (icalproperty* ex : properties(ev, ICAL_EXDATE_PROPERTY)) {
      e.exdates.push_back(instant(time_of(ex, at.where("EXDATE")), at.where("EXDATE")));
    }
    if (e.rrule.empty()) e.exdates.clear();  // EXDATE belongs to a rule
    if (icalproperty* rid = property(ev, ICAL_RECURRENCEID_PROPERTY)) {
      e.recurrence_id = instant(time_of(rid, at.where("RECURRENCE-ID")), at.where("RECURRENCE-ID"));
    }
    const Timestamp now = convstore::now();
    e.created_at = e.updated_at = now;
    if (icalproperty* p = property(ev, ICAL_CREATED_PROPERTY)) {
      e.created_at = instant(time_of(p, at.where("CREATED")), at.where("CREATED"));
    }
    if (icalproperty* p = property(ev, ICAL_LASTMODIFIED_PROPERTY)) {
      e.updated_at = instant(time_of(p, at.where("LAST-MODIFIED")), at.where("LAST-MODIFIED"));
    }
    if (out.cancelled && !e.recurrence_id) {
      throw bad_file(fmt::format("{}: the event '{}' is cancelled (STATUS:CANCELLED)",
                                 at.where("STATUS"), e.uid));
    }
    try {
      if (e.recurrence_id && !e.rrule.empty()) {
        throw Error(ErrorCode::invalid_argument,
                    "a changed occurrence (RECURRENCE-ID) has no RRULE of its own");
      }
      if (e.recurrence_id) e.series_id = 0;  // set when its series is known
      detail::check_event(e);
    } catch (const Error& err) {
      const bool rule = std::string(err.what()).find("recurrence rule") != std::string::npos;
      throw bad_file(
          fmt::format("{} (event '{}'): {}", at.where(rule ? "RRULE" : ""), e.uid, err.what()));
    }
    return out;
  }

 private:
  // The instant of a time value: UTC as is, a TZID's local time in that zone,
  // a floating one (and a date) in the event's zone.
  Timestamp instant(const TimeValue& t, const std::string& where) {
    if (t.utc) return Timestamp(t.local.time_since_epoch());
    // A date where a time is due (EXDATE;VALUE=DATE of a timed series): that
    // day at the event's time of day.
    if (t.is_date && start_of_day_.count() > 0) {
      return at_local(detail::zone(zone_), t.local + start_of_day_);
    }
    const std::string zone_name =
        t.tzid.empty() || t.is_date ? zone_ : iana_zone(t.tzid, locations_, where);
    return at_local(detail::zone(zone_name), t.local);
  }

  // The line libical's message quotes: the one whose whole text, or else
  // the longest value, it contains.
  static std::string line_of_error(const EventLines& at, const std::string& what) {
    const Line* best = nullptr;
    std::size_t best_length = 0;
    for (const auto& l : at.lines) {
      if (what.find(l.text) != std::string::npos) return fmt::format("line {}", l.number);
      std::string value = l.text.substr(l.text.find(':') + 1);
      if (value.size() > best_length && what.find(value) != std::string::npos) {
        best = &l;
        best_length = value.size();
      }
    }
    return best ? fmt::format("line {}", best->number) : at.where();
  }

  const IcsImportOptions& options_;
  std::string zone_;                           // of the event being read
  std::chrono::microseconds start_of_day_{0};  // its local time of day
  std::map<std::string, std::string> locations_;
};

// ---- writing ----

icaltimetype ical_time(LocalTime t, bool is_date, bool utc) {
  icaltimetype r = detail::to_ical(t, is_date);
  if (utc && !is_date) r.zone = utc_zone();
  return r;
}

icalproperty* time_property(icalproperty_kind kind, icaltimetype t, const std::string& tzid = {}) {
  icalproperty* p = icalproperty_new(kind);
  icalproperty_set_value(p, t.is_date ? icalvalue_new_date(t) : icalvalue_new_datetime(t));
  if (!tzid.empty()) icalproperty_add_parameter(p, icalparameter_new_tzid(tzid.c_str()));
  return p;
}

icalproperty* utc_property(icalproperty_kind kind, Timestamp t) {
  return time_property(kind, ical_time(LocalTime(t.time_since_epoch()), false, true));
}

// A start or end: a date for an all-day event; the local time with TZID in
// the event's zone (UTC for the UTC zone, a zone libical has no VTIMEZONE
// for, and a single event's local time that the zone's clocks show twice).
icalproperty* event_time(icalproperty_kind kind, const CalendarEvent& e, Timestamp t,
                         bool with_vtimezone) {
  const date::time_zone* z = detail::zone(e.time_zone);
  LocalTime local = z->to_local(t);
  if (e.all_day) return time_property(kind, ical_time(local, true, false));
  // A series keeps its TZID (other programs expand its rule in that zone;
  // an ambiguous first start reads as the earlier of the two).
  if (!with_vtimezone || e.time_zone == "UTC" ||
      (e.rrule.empty() && z->get_info(local).result != date::local_info::unique)) {
    return utc_property(kind, t);
  }
  return time_property(kind, ical_time(local, false, false), e.time_zone);
}

// An exception's time (EXDATE, RECURRENCE-ID): a date, or UTC.
icalproperty* exception_time(icalproperty_kind kind, const CalendarEvent& e, Timestamp t) {
  if (!e.all_day) return utc_property(kind, t);
  LocalTime local = detail::zone(e.time_zone)->to_local(t);
  return time_property(kind, ical_time(local, true, false));
}

icalcomponent* vevent(const CalendarEvent& e, Timestamp stamp, bool with_vtimezone) {
  icalcomponent* ev = icalcomponent_new_vevent();
  icalcomponent_add_property(ev, icalproperty_new_uid(e.uid.c_str()));
  icalcomponent_add_property(ev, utc_property(ICAL_DTSTAMP_PROPERTY, stamp));
  icalcomponent_add_property(ev, utc_property(ICAL_CREATED_PROPERTY, e.created_at));
  icalcomponent_add_property(ev, utc_property(ICAL_LASTMODIFIED_PROPERTY, e.updated_at));
  if (e.recurrence_id) {
    icalcomponent_add_property(ev, exception_time(ICAL_RECURRENCEID_PROPERTY, e, *e.recurrence_id));
  }
  icalcomponent_add_property(ev, event_time(ICAL_DTSTART_PROPERTY, e, e.start, with_vtimezone));
  icalcomponent_add_property(ev, event_time(ICAL_DTEND_PROPERTY, e, e.end, with_vtimezone));
  icalcomponent_add_property(ev, icalproperty_new_summary(e.title.c_str()));
  if (!e.description.empty()) {
    icalcomponent_add_property(ev, icalproperty_new_description(e.description.c_str()));
  }
  if (!e.location.empty()) {
    icalcomponent_add_property(ev, icalproperty_new_location(e.location.c_str()));
  }
  if (!e.rrule.empty()) {
    icalcomponent_add_property(
        ev, icalproperty_new_rrule(icalrecurrencetype_from_string(e.rrule.c_str())));
  }
  for (Timestamp t : e.exdates) {
    icalcomponent_add_property(ev, exception_time(ICAL_EXDATE_PROPERTY, e, t));
  }
  auto x = [&](const char* name, const std::string& value) {
    icalproperty* p = icalproperty_new_x(value.c_str());
    icalproperty_set_x_name(p, name);
    icalcomponent_add_property(ev, p);
  };
  if (e.time_zone != "UTC") x("X-CONVSTORE-TIME-ZONE", e.time_zone);
  if (!e.metadata.empty()) x("X-CONVSTORE-METADATA", e.metadata.dump());
  return ev;
}

// The zone's VTIMEZONE as libical writes it from the system's zoneinfo,
// with the IANA name as its TZID; none when libical does not know it.
icalcomponent* vtimezone(const std::string& name) {
  std::lock_guard<std::mutex> lock(builtin_zones_lock);
  icaltimezone* z = icaltimezone_get_builtin_timezone(name.c_str());
  icalcomponent* source = z ? icaltimezone_get_component(z) : nullptr;
  if (!source) return nullptr;
  icalcomponent* vtz = icalcomponent_new_clone(source);
  if (icalproperty* tzid = property(vtz, ICAL_TZID_PROPERTY)) {
    icalproperty_set_tzid(tzid, name.c_str());
  }
  return vtz;
}

}  // namespace

IcsImportResult CalendarStore::import_ics(std::string_view ics, const IcsImportOptions& options) {
  detail::check_text(ics, "calendar file");
  constexpr std::string_view kBom = "\xEF\xBB\xBF";  // some Windows programs start with it
  if (ics.substr(0, kBom.size()) == kBom) ics.remove_prefix(kBom.size());
  detail::zone(options.default_time_zone);
  utc_zone();
  std::vector<EventLines> where = scan(ics);
  Component root(icalparser_parse_string(std::string(ics).c_str()));
  if (!root) throw bad_file("libical could not read it");
  std::vector<icalcomponent*> calendars;
  if (icalcomponent_isa(root.get()) == ICAL_VCALENDAR_COMPONENT) {
    calendars.push_back(root.get());
  } else {
    for (icalcomponent* c = icalcomponent_get_first_component(root.get(), ICAL_VCALENDAR_COMPONENT);
         c; c = icalcomponent_get_next_component(root.get(), ICAL_VCALENDAR_COMPONENT)) {
      calendars.push_back(c);
    }
  }
  std::map<std::string, std::string> locations;  // VTIMEZONE TZID -> X-LIC-LOCATION
  std::vector<icalcomponent*> vevents;
  for (icalcomponent* cal : calendars) {
    for (icalcomponent* tz = icalcomponent_get_first_component(cal, ICAL_VTIMEZONE_COMPONENT); tz;
         tz = icalcomponent_get_next_component(cal, ICAL_VTIMEZONE_COMPONENT)) {
      icalproperty* id = property(tz, ICAL_TZID_PROPERTY);
      for (icalproperty* x : properties(tz, ICAL_X_PROPERTY)) {
        const char* loc = icalproperty_get_x(x);
        if (id && icalproperty_get_tzid(id) && loc &&
            upper(icalproperty_get_x_name(x)) == "X-LIC-LOCATION") {
          locations[icalproperty_get_tzid(id)] = loc;
        }
      }
    }
    for (icalcomponent* ev = icalcomponent_get_first_component(cal, ICAL_VEVENT_COMPONENT); ev;
         ev = icalcomponent_get_next_component(cal, ICAL_VEVENT_COMPONENT)) {
      vevents.push_back(ev);
    }
  }
  if (vevents.size() != where.size()) {
    throw bad_file(
        fmt::format("libical read {} events where the file has {}", vevents.size(), where.size()));
  }

  // Read everything before writing anything.
  Reader reader(options, std::move(locations));
  std::vector<Imported> events;
  for (std::size_t i = 0; i < vevents.size(); ++i) {
    events.push_back(reader.read(vevents[i], where[i]));
  }
  std::map<std::string, std::size_t> series_in_file;
  std::map<std::string, std::vector<Timestamp>> changed;    // uid -> recurrence ids
  std::map<std::string, std::vector<Timestamp>> cancelled;  // the same, STATUS:CANCELLED
  for (std::size_t i = 0; i < events.size(); ++i) {
    const CalendarEvent& e = events[i].event;
    if (e.recurrence_id) {
      auto& ids = (events[i].cancelled ? cancelled : changed)[e.uid];
      if (std::find(ids.begin(), ids.end(), *e.recurrence_id) != ids.end()) {
        throw bad_file(fmt::format("{}: event '{}' changes the occurrence {} twice",
                                   events[i].where, e.uid, to_iso8601(*e.recurrence_id)));
      }
      ids.push_back(*e.recurrence_id);
    } else if (!series_in_file.emplace(e.uid, i).second) {
      throw bad_file(fmt::format("{}: a second event with UID '{}'", events[i].where, e.uid));
    }
  }
  for (auto& [uid, ids] : changed) std::sort(ids.begin(), ids.end());

  return impl_->write(Op{"import calendar"}, [&](detail::Connection& c) {
    IcsImportResult result;
    result.ids.resize(events.size());
    std::map<std::string, CalendarEvent> stored_series;
    std::map<std::string, StoredEvent> existing_series;  // series not in the file
    for (std::size_t i = 0; i < events.size(); ++i) {
      CalendarEvent& e = events[i].event;
      if (e.recurrence_id) continue;
      const auto moved_it = changed.find(e.uid);
      const std::vector<Timestamp> moved =
          moved_it == changed.end() ? std::vector<Timestamp>{} : moved_it->second;
      if (auto gone = cancelled.find(e.uid); gone != cancelled.end() && !e.rrule.empty()) {
        e.exdates.insert(e.exdates.end(), gone->second.begin(), gone->second.end());
        detail::sort_unique(e.exdates);
      }
      CalendarEvent stored;
      if (auto old = detail::event_by_uid(c, e.uid, true)) {
        if (old->event.owner != e.owner || !options.replace_existing) {
          throw Error(ErrorCode::already_exists,
                      fmt::format("calendar file: {}: an event with UID '{}' already exists{}",
                                  events[i].where, e.uid,
                                  old->event.owner != e.owner ? " in another calendar" : ""));
        }
        e.id = old->event.id;
        detail::delete_changed_occurrences(c, e.id);
        stored = detail::rewrite_event(c, e, moved);
        ++result.replaced;
      } else {
        stored = detail::insert_event(c, e, moved);
        ++result.created;
      }
      result.ids[i] = stored.id;
      stored_series[e.uid] = stored;
    }
    for (std::size_t i = 0; i < events.size(); ++i) {
      CalendarEvent& e = events[i].event;
      if (!e.recurrence_id) continue;
      auto in_file = stored_series.find(e.uid);
      const CalendarEvent* series = nullptr;
      if (in_file != stored_series.end()) {
        series = &in_file->second;
      } else {
        auto known = existing_series.find(e.uid);
        if (known == existing_series.end()) {
          auto old = detail::event_by_uid(c, e.uid, true);
          if (!old || old->event.owner != e.owner) {
            throw bad_file(
                fmt::format("{}: the series '{}' of this changed occurrence is in "
                            "neither the file nor the calendar",
                            events[i].where, e.uid));
          }
          known = existing_series.emplace(e.uid, std::move(*old)).first;
        }
        series = &known->second.event;
        auto& moved = known->second.moved_at;
        auto was_moved = std::find(moved.begin(), moved.end(), *e.recurrence_id);
        if (was_moved != moved.end()) {
          detail::delete_changed_occurrence(c, series->id, *e.recurrence_id);
          moved.erase(was_moved);
        }
        if (events[i].cancelled) {
          auto& exdates = known->second.event.exdates;
          exdates.push_back(*e.recurrence_id);
          detail::sort_unique(exdates);
        } else {
          moved.push_back(*e.recurrence_id);
        }
      }
      if (series->rrule.empty() || !detail::occurrence_at(*series, *e.recurrence_id)) {
        throw bad_file(fmt::format("{}: RECURRENCE-ID {} is not an occurrence of '{}'",
                                   events[i].where, to_iso8601(*e.recurrence_id), e.uid));
      }
      if (events[i].cancelled) {  // an EXDATE of its series
        result.ids[i] = series->id;
        continue;
      }
      e.series_id = series->id;
      CalendarEvent stored = detail::insert_event(c, e, {});
      result.ids[i] = stored.id;
      ++result.created;
    }
    for (auto& [uid, old] : existing_series) {
      std::sort(old.moved_at.begin(), old.moved_at.end());
      detail::rewrite_event(c, old.event, old.moved_at);
    }
    return result;
  });
}

std::string CalendarStore::export_ics(std::optional<UserId> owner, std::optional<TimeSlot> range) {
  if (range) {
    detail::check_time(range->start, "range start");
    detail::check_time(range->end, "range end");
    if (range->end <= range->start) {
      throw Error(ErrorCode::invalid_argument, "the export range ends before it starts");
    }
  }
  auto rows = impl_->snapshot(Op{"export calendar"}, [&](detail::Connection& c) {
    return detail::stored_events(c, owner, range);
  });
  utc_zone();
  Component cal(icalcomponent_new_vcalendar());
  icalcomponent_add_property(cal.get(), icalproperty_new_version("2.0"));
  icalcomponent_add_property(
      cal.get(),
      icalproperty_new_prodid("-//convstore//convstore " CONVSTORE_VERSION_STRING "//EN"));
  icalcomponent_add_property(cal.get(), icalproperty_new_calscale("GREGORIAN"));
  std::set<std::string> zones;
  for (const auto& r : rows) {
    if (r.event.time_zone != "UTC" && !r.event.all_day) zones.insert(r.event.time_zone);
  }
  std::set<std::string> described;  // zones with a VTIMEZONE; others are written in UTC
  for (const auto& z : zones) {
    if (icalcomponent* vtz = vtimezone(z)) {
      icalcomponent_add_component(cal.get(), vtz);
      described.insert(z);
    }
  }
  const Timestamp stamp = now();
  for (const auto& r : rows) {
    icalcomponent_add_component(cal.get(),
                                vevent(r.event, stamp, described.count(r.event.time_zone) > 0));
  }
  char* text = icalcomponent_as_ical_string_r(cal.get());
  std::string out = text ? text : "";
  icalmemory_free_buffer(text);
  return out;
}

}  // namespace convstore
