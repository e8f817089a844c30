// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "convstore/types.hpp"
#include "db/codec.hpp"
#include "db/connection.hpp"

namespace convstore::detail {

// One execution of a prepared statement: parameters are bound in the order
// of the placeholders, results are read into the targets given to out() after
// every row. Values are converted here, once, for both backends:
// timestamps travel as ISO 8601 text, JSON as text (callers bind the text
// json_text() checked), booleans as 0/1 (read
// back from "1"/"t"), enums as their names.
//
// The first execution of a statement on a connection binds SOCI to holders
// kept with the statement (Binding); later executions only copy the new
// values into those holders and point the results at the new targets, so a
// hot statement costs no SOCI set-up per call. Every call site therefore
// binds a given statement with the same sequence of parameter and result
// types (an optional binds its value type, with a NULL indicator).
//
// The statement is always left reset (drained), so SQLite never keeps a read
// snapshot or a write lock open behind the caller's back.
class Stmt {
 public:
  Stmt(Connection& c, const Sql& sql);
  // A statement whose text is built at run time (kept prepared by text).
  Stmt(Connection& c, const std::string& text);
  ~Stmt();
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;

  // ---- parameters ----
  Stmt& in(const std::string& v) { return in_text(v, false); }
  Stmt& in(std::string_view v) { return in_text(v, false); }
  Stmt& in(const char* v) { return in_text(v, false); }
  Stmt& in(long long v) { return in_int(v, false); }
  Stmt& in(long v) { return in_int(v, false); }
  Stmt& in(int v) { return in_int(v, false); }
  Stmt& in(std::size_t v) { return in_int(static_cast<long long>(v), false); }
  Stmt& in(bool v) { return in_int(v ? 1 : 0, false); }
  Stmt& in(Timestamp t);
  template <class E, class = std::enable_if_t<std::is_enum_v<E>>>
  Stmt& in(E e) {
    return in_text(to_string(e), false);
  }
  template <class T>
  Stmt& in(const std::optional<T>& v) {
    if (v) return in(*v);
    if constexpr (std::is_integral_v<T>) {
      return in_int(0, true);
    } else {
      return in_text(std::string_view(), true);
    }
  }
  // A NULL text parameter (PostgreSQL infers the column's type).
  Stmt& in_null() { return in_text(std::string_view(), true); }

  // ---- results ----
  Stmt& out(std::string& v);
  Stmt& out(long long& v);
  Stmt& out(long& v);
  Stmt& out(int& v);
  Stmt& out(bool& v);
  Stmt& out(Timestamp& v);
  Stmt& out(Json& v);
  template <class E, class = std::enable_if_t<std::is_enum_v<E>>>
  Stmt& out(E& e) {
    return out_text(
        &e, [](void* t, std::string* s, long long, bool) { parse_enum(*s, *static_cast<E*>(t)); });
  }
  Stmt& out(std::optional<std::string>& v);
  Stmt& out(std::optional<long long>& v);
  Stmt& out(std::optional<long>& v);
  Stmt& out(std::optional<Timestamp>& v);

  // ---- execution ----
  // Runs a statement that returns no rows, or at most one; returns whether a
  // row was read into the targets.
  bool one();
  // Runs a statement that returns rows: call repeatedly; each true return has
  // read the next row into the targets.
  bool next();
  // Rows changed by the last one().
  long long affected();

 private:
  using Apply = Binding::Apply;
  Stmt(Connection& c, Prepared& p);
  Stmt& in_text(std::string_view v, bool null);
  Stmt& in_int(long long v, bool null);
  // A result read as text ('T') or as an integer ('I'), copied into
  // `target` by `apply` after each row.
  Stmt& out_slot(char kind, void* target, Apply apply);
  Stmt& out_text(void* target, Apply apply) { return out_slot('T', target, apply); }
  Stmt& out_number(void* target, Apply apply) { return out_slot('I', target, apply); }
  // The holder for the next bind of kind `kind`: created (and bound in SOCI)
  // on the statement's first execution, reused afterwards.
  Binding::Slot& slot(char kind);
  bool execute_first();
  void apply_fixes();
  void bind_slots();
  void drain() noexcept;
  void discard() noexcept;

  Connection& conn_;
  Prepared& prepared_;
  soci::statement* st_;
  Binding& b_;
  std::size_t pos_ = 0;  // next slot
  std::size_t fix_ = 0;  // next result fix
  bool active_ = false;  // a fetch returned a row; the statement may hold more
  bool started_ = false;
  bool dead_ = false;  // discarded after a failure
};

}  // namespace convstore::detail
