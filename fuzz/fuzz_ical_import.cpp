// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
//
// CalendarStore::import_ics() on arbitrary bytes, each input into the same empty
// SQLite store (fuzz::ResettableStore). The first byte chooses the options (the zone of
// floating times, replace_existing); the rest is the calendar file. After an
// import that succeeds, the events are listed (recurring series expanded
// over a bounded window), exported with export_ics(), and the export
// imported again with replace_existing: a calendar that convstore wrote must
// read back. A failure there is a finding, like a crash or a sanitizer
// report.

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "fuzz_support.hpp"

using namespace convstore;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  static const char* const kZones[] = {"UTC", "Europe/Berlin", "America/New_York",
                                       "Australia/Lord_Howe"};
  IcsImportOptions options;
  options.default_time_zone = kZones[data[0] & 3];
  options.replace_existing = (data[0] & 4) == 0;
  const std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);

  static fuzz::ResettableStore fixture;
  fixture.reset();
  Store& store = fixture.store();
  CalendarStore& calendar = store.calendar();
  IcsImportResult result;
  try {
    result = calendar.import_ics(text, options);
  } catch (const Error& e) {
    fuzz::expect_codes(e, {ErrorCode::invalid_argument, ErrorCode::already_exists});
    return 0;
  }
  if (result.ids.empty()) return 0;

  // Read back what was stored: a year of occurrences from the first event.
  std::optional<CalendarEvent> first;
  for (EventId id : result.ids) {
    auto e = calendar.get(id);
    if (!e) fuzz::fail("an imported event is missing");
    if (!first) first = std::move(e);
  }
  const Timestamp from =
      std::max(first->start, parse_timestamp("0001-01-02T00:00:00Z")) - std::chrono::hours(24);
  const Timestamp to = std::min(first->start, parse_timestamp("9998-12-31T00:00:00Z")) +
                       std::chrono::hours(24 * 366);
  calendar.range(std::nullopt, from, to, 100);

  const std::string ics = calendar.export_ics(std::nullopt);
  IcsImportOptions again;
  again.default_time_zone = options.default_time_zone;
  try {
    calendar.import_ics(ics, again);
  } catch (const Error& e) {
    fuzz::fail("export_ics wrote a calendar that import_ics refuses",
               std::string(e.what()) + "\n" + ics);
  }
  return 0;
}
