// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#include "progress.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <iostream>

namespace convstore::cli {

namespace {

constexpr std::chrono::milliseconds kBarInterval{100};
constexpr int kBarWidth = 30;

}  // namespace

Progress::Mode Progress::mode_for(bool quiet) {
  if (quiet) return Mode::quiet;
  return isatty(STDERR_FILENO) == 1 ? Mode::bar : Mode::lines;
}

Progress::Progress(std::string verb, Mode mode)
    : Progress(std::move(verb), mode, std::cerr,
               mode == Mode::bar ? kBarInterval : std::chrono::milliseconds(1000),
               [] { return std::chrono::steady_clock::now(); }) {}

Progress::Progress(std::string verb, Mode mode, std::ostream& out,
                   std::chrono::milliseconds interval, Clock clock)
    : verb_(std::move(verb)),
      mode_(mode),
      out_(out),
      interval_(interval),
      clock_(std::move(clock)) {}

Progress::~Progress() {
  try {
    finish();
  } catch (...) {
  }
}

void Progress::update(std::int64_t done, std::optional<std::int64_t> total, std::string_view unit) {
  if (finished_ || mode_ == Mode::quiet) return;
  done_ = done;
  total_ = total;
  unit_ = std::string(unit);
  started_ = true;
  drawn_since_update_ = false;
  auto now = clock_();
  if (last_draw_ && now - *last_draw_ < interval_) return;
  last_draw_ = now;
  draw();
}

void Progress::finish() {
  if (finished_) return;
  finished_ = true;
  if (mode_ == Mode::quiet || !started_) return;
  if (mode_ == Mode::lines && drawn_since_update_) return;  // the last line is current
  draw();
  if (mode_ == Mode::bar) out_ << '\n';
  out_.flush();
}

std::string Progress::line(bool bar) const {
  std::string counts =
      total_ ? fmt::format("{}/{} {}", done_, *total_, unit_) : fmt::format("{} {}", done_, unit_);
  if (!total_) return fmt::format("{} {}", verb_, counts);
  int percent = *total_ <= 0 ? 100
                             : static_cast<int>(std::min<std::int64_t>(
                                   100, std::max<std::int64_t>(0, done_ * 100 / *total_)));
  if (!bar) return fmt::format("{} {} ({}%)", verb_, counts, percent);
  int filled = percent * kBarWidth / 100;
  std::string gauge(static_cast<std::size_t>(filled), '=');
  if (filled < kBarWidth) gauge += '>';
  gauge.resize(kBarWidth, ' ');
  return fmt::format("{} [{}] {:3}% {}", verb_, gauge, percent, counts);
}

void Progress::draw() {
  drawn_since_update_ = true;
  if (mode_ == Mode::lines) {
    out_ << line(false) << '\n';
    out_.flush();
    return;
  }
  std::string text = line(true);
  std::size_t width = text.size();
  // Blank what is left of a longer previous line.
  if (width < last_width_) text.append(last_width_ - width, ' ');
  last_width_ = width;
  out_ << '\r' << text;
  out_.flush();
}

}  // namespace convstore::cli
