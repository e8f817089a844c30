// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
//
// Unit tests of the convstore tool's parts: durations, password redaction,
// the progress reporter.

#include <doctest/doctest.h>

#include <chrono>
#include <sstream>
#include <string>

#include "common.hpp"
#include "duration.hpp"
#include "errors.hpp"
#include "progress.hpp"
#include "redact.hpp"

using namespace convstore::cli;
using std::chrono::seconds;

TEST_CASE("durations: 30d, 24h, 90m, 45s and combinations") {
  CHECK(parse_duration("30d") == seconds(30 * 86400));
  CHECK(parse_duration("24h") == seconds(24 * 3600));
  CHECK(parse_duration("90m") == seconds(90 * 60));
  CHECK(parse_duration("45s") == seconds(45));
  CHECK(parse_duration("2w") == seconds(14 * 86400));
  CHECK(parse_duration("1h30m") == seconds(5400));
  CHECK(parse_duration("1d12h") == seconds(36 * 3600));
  CHECK(format_duration(seconds(5400)) == "1h30m");
  CHECK(format_duration(parse_duration("30d")) == "30d");
}

TEST_CASE("durations: a bad one is a usage error naming the value") {
  for (const char* bad : {"", "30", "d", "30x", "0d", "0s", "-5m", "1.5h", "30 d", "h30",
                          "99999999999d", "36600d1s", "30D"}) {
    CAPTURE(bad);
    try {
      parse_duration(bad);
      FAIL("accepted");
    } catch (const UsageError& e) {
      CHECK(std::string(e.what()).find(std::string("'") + bad + "'") != std::string::npos);
    }
  }
}

TEST_CASE("redact_url hides passwords and keeps the rest") {
  CHECK(redact_url("postgresql://bot:s3cret@db:5432/bot") == "postgresql://bot:***@db:5432/bot");
  CHECK(redact_url("postgres://bot@db/bot") == "postgres://bot@db/bot");
  CHECK(redact_url("postgresql://bot:p@ss/w0rd@db/bot?sslmode=require") ==
        "postgresql://bot:***@db/bot?sslmode=require");
  CHECK(redact_url("host=db password=s3cret dbname=bot") == "host=db password=*** dbname=bot");
  CHECK(redact_url("host=db password='s3 cret' dbname=bot") == "host=db password=*** dbname=bot");
  CHECK(redact_url("postgresql://db/bot?user=a&password=s3cret&sslmode=require") ==
        "postgresql://db/bot?user=a&password=***&sslmode=require");
  CHECK(redact_url("sqlite:/var/lib/bot.db") == "sqlite:/var/lib/bot.db");
}

TEST_CASE("the redactor hides a remembered password wherever it appears") {
  Redactor r;
  r.remember("postgresql://bot:p%40ss%2Fword@db/bot");
  r.remember("host=db password=kv-secret");
  CHECK(r("connecting with p@ss/word failed") == "connecting with *** failed");
  CHECK(r("raw p%40ss%2Fword") == "raw ***");
  CHECK(r("kv-secret rejected") == "*** rejected");
  CHECK(r("to postgresql://x:other@h/d") == "to postgresql://x:***@h/d");
  CHECK(r("nothing secret here") == "nothing secret here");
}

namespace {

// A clock the test moves by hand.
struct FakeClock {
  std::chrono::steady_clock::time_point now{};
  Progress::Clock fn() {
    return [this] { return now; };
  }
};

int count_lines(const std::string& s) {
  int n = 0;
  for (char c : s) n += c == '\n';
  return n;
}

}  // namespace

TEST_CASE("progress without a terminal: plain lines, at most one per interval") {
  std::ostringstream out;
  FakeClock clock;
  {
    Progress p("exported", Progress::Mode::lines, out, std::chrono::milliseconds(1000), clock.fn());
    p.update(0, 1000000, "rows");
    for (int i = 1; i <= 500; ++i) p.update(i * 100, 1000000, "rows");  // no time passes
    CHECK(out.str() == "exported 0/1000000 rows (0%)\n");
    clock.now += std::chrono::milliseconds(999);
    p.update(120000, 1000000, "rows");
    CHECK(count_lines(out.str()) == 1);
    clock.now += std::chrono::milliseconds(1);
    p.update(120000, 1000000, "rows");
    CHECK(out.str() == "exported 0/1000000 rows (0%)\nexported 120000/1000000 rows (12%)\n");
    p.update(1000000, 1000000, "rows");
    p.finish();  // the last state, once
    p.finish();
  }
  CHECK(out.str() ==
        "exported 0/1000000 rows (0%)\nexported 120000/1000000 rows (12%)\n"
        "exported 1000000/1000000 rows (100%)\n");
  CHECK(out.str().find('\r') == std::string::npos);
  CHECK(out.str().find('\x1b') == std::string::npos);
}

TEST_CASE("progress with an unknown total, a changing unit, and finish after a fresh line") {
  std::ostringstream out;
  FakeClock clock;
  Progress p("copied", Progress::Mode::lines, out, std::chrono::milliseconds(1000), clock.fn());
  p.update(5, std::nullopt, "users");
  clock.now += std::chrono::seconds(2);
  p.update(40, std::nullopt, "messages");
  p.finish();  // the line for 40 is already printed: nothing more
  CHECK(out.str() == "copied 5 users\ncopied 40 messages\n");
}

TEST_CASE("progress is silent with --quiet, and on a terminal redraws one line") {
  std::ostringstream quiet_out;
  FakeClock clock;
  {
    Progress quiet("exported", Progress::Mode::quiet, quiet_out, std::chrono::milliseconds(0),
                   clock.fn());
    quiet.update(1, 2, "rows");
    quiet.finish();
  }
  CHECK(quiet_out.str().empty());
  CHECK(Progress::mode_for(true) == Progress::Mode::quiet);

  std::ostringstream bar_out;
  Progress bar("exported", Progress::Mode::bar, bar_out, std::chrono::milliseconds(100),
               clock.fn());
  bar.update(0, 200, "rows");
  clock.now += std::chrono::milliseconds(100);
  bar.update(100, 200, "rows");
  bar.finish();
  const std::string s = bar_out.str();
  CHECK(s.rfind('\r', 0) == 0);
  CHECK(count_lines(s) == 1);  // one line, ended by finish()
  CHECK(s.back() == '\n');
  CHECK(s.find(" 50% 100/200 rows") != std::string::npos);
  CHECK(s.find("100% 200/200") == std::string::npos);  // never claims more than it got
}

TEST_CASE("nothing is printed for a command that never reported progress") {
  std::ostringstream out;
  FakeClock clock;
  {
    Progress p("exported", Progress::Mode::lines, out, std::chrono::milliseconds(1000), clock.fn());
  }
  CHECK(out.str().empty());
}

TEST_CASE("counts in messages agree with their number") {
  CHECK(counted(1, "line") == "1 line");
  CHECK(counted(0, "line") == "0 lines");
  CHECK(counted(2, "row") == "2 rows");
  CHECK(counted(-1, "row") == "-1 rows");
}
