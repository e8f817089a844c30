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
// timestamps travel as ISO 8601 text, JSON as text, booleans as 0/1 (read
// back from "1"/"t"), enums as their names.
//
// The statement is always left reset (drained), so SQLite never keeps a read
// snapshot or a write lock open behind the caller's back.
class Stmt {
 public:
  Stmt(Connection& c, const Sql& sql);
  // A statement whose text is built at run time (kept prepared by text).
  Stmt(Connection& c, std::string text);
  ~Stmt();
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;

  // ---- parameters ----
  Stmt& in(const std::string& v);  // bound by reference: keep `v` alive until run
  Stmt& in(std::string&& v) { return in_text(std::move(v)); }
  Stmt& in(std::string_view v) { return in_text(std::string(v)); }
  Stmt& in(const char* v) { return in_text(std::string(v)); }
  Stmt& in(long long v);
  Stmt& in(long v) { return in(static_cast<long long>(v)); }
  Stmt& in(int v) { return in(static_cast<long long>(v)); }
  Stmt& in(std::size_t v) { return in(static_cast<long long>(v)); }
  Stmt& in(bool v) { return in(static_cast<long long>(v ? 1 : 0)); }
  Stmt& in(double v);
  Stmt& in(Timestamp t) { return in_text(to_iso8601(t)); }
  Stmt& in(const Json& j) { return in_text(j.dump()); }
  template <class E, class = std::enable_if_t<std::is_enum_v<E>>>
  Stmt& in(E e) {
    return in_text(std::string(to_string(e)));
  }
  template <class T>
  Stmt& in(const std::optional<T>& v) {
    if (v) return in(*v);
    return in_null();
  }
  // A NULL parameter (typed as text; PostgreSQL infers the column's type).
  Stmt& in_null();

  // ---- results ----
  Stmt& out(std::string& v);
  Stmt& out(long long& v);
  Stmt& out(long& v);
  Stmt& out(int& v);
  Stmt& out(bool& v);
  Stmt& out(double& v);
  Stmt& out(Timestamp& v);
  Stmt& out(Json& v);
  template <class E, class = std::enable_if_t<std::is_enum_v<E>>>
  Stmt& out(E& e) {
    return out_text(&e, [](void* t, std::string& s, bool) { parse_enum(s, *static_cast<E*>(t)); });
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
  using Apply = void (*)(void* target, std::string& text, bool null);
  struct Fix {
    Apply apply;
    void* target;
    std::string* text;
    soci::indicator* ind;
  };
  Stmt& in_text(std::string&& v);
  Stmt& out_text(void* target, Apply apply);
  bool execute_first();
  bool fetch_more();
  void apply_fixes();
  void drain() noexcept;

  Connection& conn_;
  std::string dynamic_text_;
  const char* text_;
  soci::statement& st_;
  bool bound_ = false;
  bool active_ = false;  // a fetch returned a row; the statement may hold more
  bool started_ = false;
  std::deque<std::string> texts_;
  std::deque<long long> ints_;
  std::deque<double> doubles_;
  std::deque<soci::indicator> inds_;
  std::vector<Fix> fixes_;
};

}  // namespace convstore::detail
