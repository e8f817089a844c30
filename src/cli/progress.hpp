// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>

namespace convstore::cli {

// Reports the progress of a long command (export, import, copy, prune) on
// stderr. Feed it what the library's progress callback gives:
//
//   Progress progress("exported", Progress::mode_for(quiet));
//   library_call(..., [&](std::int64_t done, std::optional<std::int64_t> total) {
//     progress.update(done, total, "messages");
//   });
//   progress.finish();
//
// Modes:
//   bar    (stderr is a terminal) one line redrawn in place with '\r',
//          "exported [=======>      ] 45% 450000/1000000 messages", at most
//          ten times a second;
//   lines  (stderr is a file or a pipe) plain lines, "exported
//          120000/1000000 messages (12%)", at most one per `interval`;
//   quiet  (--quiet) nothing.
// finish() always prints the final count (bar: ends the line).
class Progress {
 public:
  enum class Mode { bar, lines, quiet };
  using Clock = std::function<std::chrono::steady_clock::time_point()>;

  // bar when stderr is a terminal, lines when not, quiet when `quiet`.
  static Mode mode_for(bool quiet);

  Progress(std::string verb, Mode mode);
  // For tests: the stream, the line interval and the clock.
  Progress(std::string verb, Mode mode, std::ostream& out, std::chrono::milliseconds interval,
           Clock clock);
  ~Progress();
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  // `done` units of `total` (std::nullopt: the total is not known) are done.
  // `unit` names them ("messages", "rows"); it may change between calls (a
  // copy goes through users, then conversations, then messages).
  void update(std::int64_t done, std::optional<std::int64_t> total, std::string_view unit);
  // Prints the last state, once; nothing after it is printed. Called by the
  // destructor if the command did not.
  void finish();

  Mode mode() const noexcept { return mode_; }

 private:
  std::string line(bool bar) const;
  void draw();

  std::string verb_;
  Mode mode_;
  std::ostream& out_;
  std::chrono::milliseconds interval_;
  Clock clock_;
  std::optional<std::chrono::steady_clock::time_point> last_draw_;
  std::int64_t done_ = 0;
  std::optional<std::int64_t> total_;
  std::string unit_;
  bool started_ = false;
  bool drawn_since_update_ = true;
  bool finished_ = false;
  std::size_t last_width_ = 0;
};

}  // namespace convstore::cli
