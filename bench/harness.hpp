// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#pragma once

// Timing helpers shared by the benchmarks: each workload is run once on
// convstore and once on a baseline written directly on the client library,
// and the two are printed side by side with their ratio.

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <functional>
#include <string>
#include <vector>

namespace bench {

using Clock = std::chrono::steady_clock;

inline double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Latency samples in microseconds.
struct Samples {
  std::vector<double> us;
  void add(Clock::time_point t0) {
    us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
  }
  double percentile(double p) {
    if (us.empty()) return 0;
    std::sort(us.begin(), us.end());
    auto i = static_cast<std::size_t>(p / 100.0 * static_cast<double>(us.size() - 1));
    return us[i];
  }
};

// 200 bytes of UTF-8 with some Cyrillic, as W1 asks.
inline std::string message_content(int i) {
  std::string s = "msg " + std::to_string(i) + " Кофе и круассан, счёт ";
  while (s.size() < 200) s += "lorem ipsum ";
  s.resize(200);
  // Do not cut a multi-byte character: the tail above is ASCII.
  return s;
}

inline const char* kMetadata = R"({"tokens": 42, "model": "gpt-4o"})";

// The current UTC time as convstore stores it on SQLite.
inline std::string now_text() {
  using namespace std::chrono;
  auto t = time_point_cast<microseconds>(system_clock::now());
  auto secs = time_point_cast<seconds>(t);
  std::time_t tt = system_clock::to_time_t(secs);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[96];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%06lldZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<long long>((t - secs).count()));
  return buf;
}

// Runs `a` and `b`, taking turns at going first by the parity of `i`: the
// second finds the same rows warm in the CPU caches (and the database's).
template <class A, class B>
void in_turns(int i, A&& a, B&& b) {
  if (i % 2 == 0) {
    a();
    b();
  } else {
    b();
    a();
  }
}

// One line of the table; the ratio is convstore / baseline (for a
// throughput higher is better, for a latency lower is better).
struct Row {
  std::string workload;
  std::string metric;
  double convstore;
  double baseline;
};

inline void print_rows(const std::string& backend, const std::vector<Row>& rows) {
  std::printf("\n%-12s %-48s %14s %14s %8s\n", backend.c_str(), "workload", "convstore",
              "raw baseline", "ratio");
  for (const auto& r : rows) {
    double ratio = r.convstore / r.baseline;
    std::printf("%-12s %-48s %14.2f %14.2f %7.2fx\n", "", (r.workload + " " + r.metric).c_str(),
                r.convstore, r.baseline, ratio);
  }
  std::fflush(stdout);
}

}  // namespace bench
