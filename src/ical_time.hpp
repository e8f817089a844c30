// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
//
// Local times between date/tz and libical, for the recurrence expansion and
// the iCalendar reader and writer.
#pragma once

#include <libical/ical.h>

#include <algorithm>

#include "calendar_detail.hpp"

namespace convstore::detail {

// A local time (to the second) or a local date as libical's floating time.
inline icaltimetype to_ical(LocalTime t, bool is_date) {
  auto day = date::floor<date::days>(t);
  date::year_month_day ymd{day};
  date::hh_mm_ss<std::chrono::seconds> hms{date::floor<std::chrono::seconds>(t - day)};
  icaltimetype r = icaltime_null_time();
  r.year = static_cast<int>(ymd.year());
  r.month = static_cast<int>(static_cast<unsigned>(ymd.month()));
  r.day = static_cast<int>(static_cast<unsigned>(ymd.day()));
  if (is_date) {
    r.is_date = 1;
  } else {
    r.hour = static_cast<int>(hms.hours().count());
    r.minute = static_cast<int>(hms.minutes().count());
    r.second = static_cast<int>(hms.seconds().count());
  }
  return r;
}

// The local time of a libical time's fields (its zone aside); a leap
// second reads as the second before it.
inline LocalTime from_ical(const icaltimetype& t) {
  date::year_month_day ymd{date::year{t.year}, date::month{static_cast<unsigned>(t.month)},
                           date::day{static_cast<unsigned>(t.day)}};
  LocalTime out{date::local_days(ymd)};
  if (!t.is_date) {
    out += std::chrono::hours(t.hour) + std::chrono::minutes(t.minute) +
           std::chrono::seconds(std::min(t.second, 59));
  }
  return out;
}

}  // namespace convstore::detail
