// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#pragma once

// The bad-input fault test: tables of named operations, each a lambda taking
// one bad value, run for every value on SQLite and on PostgreSQL. Each case
// has an expected outcome (what the headers document), is checked to write
// nothing when it throws (a row count of every table before and after), and
// the outcome lists of the two backends must be identical.

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "support.hpp"

namespace bad_input {

// The outcomes a case can have: "ok" (done; a value written was read back
// byte-exact), "none" (a lookup found nothing / a delete removed nothing),
// an ErrorCode name ("invalid_argument", ...), or a failure ("mismatch: ...",
// "crash: ...") that never is expected.
inline const std::string ok = "ok";
inline const std::string none = "none";
inline const std::string invalid = "invalid_argument";
inline const std::string not_found = "not_found";

// What kind of bad text a value is.
enum class TextKind {
  bad_utf8,   // not valid UTF-8
  nul,        // holds a NUL byte
  big,        // 10 MB of valid UTF-8 words
  injection,  // SQL / LIKE / FTS / format shaped, but valid text
  control,    // valid text with control characters (newline, tab)
  empty,      // ""
};

struct TextValue {
  std::string name;
  std::string value;
  TextKind kind;
  bool has_word;  // a letter or digit (a search needs one)
};

// The text tables (test_bad_input.cpp, test_bad_input_more.cpp): the
// outcome a value must have, and the call that feeds it to an operation.
struct Fixture;
using Expect = std::function<std::string(const TextValue&)>;
using Call = std::function<std::string(Fixture&, const std::string&)>;

struct TextOp {
  std::string name;
  Expect expect;
  Call call;
  bool big_in_short = false;  // also fed 10 MB in the short mode
};

// Invalid UTF-8 or a NUL: what no text field takes.
inline bool not_text(const TextValue& v) {
  return v.kind == TextKind::bad_utf8 || v.kind == TextKind::nul;
}
// Free text: valid UTF-8 without NUL, any length.
inline Expect text_rule(std::string done = ok) {
  return [done](const TextValue& v) { return not_text(v) ? invalid : done; };
}
// A value that is never refused.
inline Expect always(std::string outcome) {
  return [outcome](const TextValue&) { return outcome; };
}
// A lookup's outcome.
inline std::string found(bool b) { return b ? ok : none; }

// Every bad text value; the 10 MB one only when `with_big`.
std::vector<TextValue> text_values(bool with_big);
// 10 MB of valid UTF-8 words that do not repeat much (no compression helps).
const std::string& big_text();

// The base objects every operation works on, created through the public API.
struct Fixture {
  explicit Fixture(const testing::TestDb& db);

  const testing::TestDb& db;
  convstore::Store store;
  convstore::UserId user = 0;
  convstore::ConversationId conversation = 0;
  convstore::MessageId message = 0;
  convstore::QuestionId question = 0;
  std::string agent = "agent-1";
  std::int64_t event = 0;
  std::int64_t task = 0;
  std::int64_t claimed_task = 0;
  std::int64_t claimed_lease = 0;
  std::int64_t template_id = 0;
  std::int64_t suggestion = 0;
  std::int64_t web_session = 0;
  std::optional<convstore::SecretKey> key;

  // A name no earlier call used ("p-17").
  std::string fresh(const std::string& prefix);

  // Records the row count of every table: what a refused call must leave
  // as it was. The runner takes it before each call; a call that first sets
  // up objects of its own (a fresh conversation) takes it again after them.
  void snapshot();
  const std::string& counts() const { return counts_; }

 private:
  int counter_ = 0;
  std::string counts_;
};

// One call with one bad value and the outcome the documentation promises.
struct Case {
  std::string op;
  std::string value;
  std::string expected;
  std::function<std::string()> call;
};

// Runs every case on `f`'s database: records "op / value -> outcome", checks
// it against the expectation and that a case that threw left every table's
// row count as it was. Returns the outcome list.
std::vector<std::string> run_cases(Fixture& f, const std::vector<Case>& cases);

// The row count of every table of the database, as "table=n,..." (one
// connection per database, kept open).
std::string table_counts(const testing::TestDb& db);

// "ok" when `got` equals `want` byte for byte, else a mismatch naming `what`.
std::string same(const std::string& got, const std::string& want, const std::string& what);

// Runs `make_cases` on a fresh database of each backend and checks that the
// outcome lists are identical (when PostgreSQL is configured).
void on_both_backends(const std::function<std::vector<Case>(Fixture&)>& make_cases);

}  // namespace bad_input
