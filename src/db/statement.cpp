// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#include "db/statement.hpp"

#include <utility>

namespace convstore::detail {

Stmt::Stmt(Connection& c, const Sql& sql)
    : conn_(c), text_(sql.text(c.backend())), st_(c.prepared(sql)) {
  st_.bind_clean_up();
}

Stmt::Stmt(Connection& c, std::string text)
    : conn_(c),
      dynamic_text_(std::move(text)),
      text_(dynamic_text_.c_str()),
      st_(c.prepared(dynamic_text_)) {
  st_.bind_clean_up();
}

Stmt::~Stmt() { drain(); }

void Stmt::drain() noexcept {
  if (!active_) return;
  try {
    while (st_.fetch()) {
    }
  } catch (...) {
  }
  active_ = false;
}

Stmt& Stmt::in(const std::string& v) {
  st_.exchange(soci::use(v));
  return *this;
}

Stmt& Stmt::in_text(std::string&& v) {
  texts_.push_back(std::move(v));
  st_.exchange(soci::use(texts_.back()));
  return *this;
}

Stmt& Stmt::in(long long v) {
  ints_.push_back(v);
  st_.exchange(soci::use(ints_.back()));
  return *this;
}

Stmt& Stmt::in(double v) {
  doubles_.push_back(v);
  st_.exchange(soci::use(doubles_.back()));
  return *this;
}

Stmt& Stmt::in_null() {
  texts_.emplace_back();
  inds_.push_back(soci::i_null);
  st_.exchange(soci::use(texts_.back(), inds_.back()));
  return *this;
}

Stmt& Stmt::out_text(void* target, Apply apply) {
  texts_.emplace_back();
  inds_.push_back(soci::i_ok);
  st_.exchange(soci::into(texts_.back(), inds_.back()));
  fixes_.push_back(Fix{apply, target, &texts_.back(), &inds_.back()});
  return *this;
}

Stmt& Stmt::out(std::string& v) {
  return out_text(
      &v, [](void* t, std::string& s, bool) { *static_cast<std::string*>(t) = std::move(s); });
}

namespace {
// Numbers are read as text where they may be NULL or boolean, and converted
// here: that works the same for SQLite integers and PostgreSQL int8/bool.
long long to_ll(const std::string& s) { return std::stoll(s); }
}  // namespace

Stmt& Stmt::out(long long& v) {
  return out_text(&v, [](void* t, std::string& s, bool null) {
    *static_cast<long long*>(t) = null ? 0 : to_ll(s);
  });
}

Stmt& Stmt::out(long& v) {
  return out_text(&v, [](void* t, std::string& s, bool null) {
    *static_cast<long*>(t) = null ? 0 : static_cast<long>(to_ll(s));
  });
}

Stmt& Stmt::out(int& v) {
  return out_text(&v, [](void* t, std::string& s, bool null) {
    *static_cast<int*>(t) = null ? 0 : static_cast<int>(to_ll(s));
  });
}

Stmt& Stmt::out(bool& v) {
  return out_text(&v, [](void* t, std::string& s, bool null) {
    *static_cast<bool*>(t) = !null && (s == "1" || s == "t" || s == "true");
  });
}

Stmt& Stmt::out(double& v) {
  return out_text(&v, [](void* t, std::string& s, bool null) {
    *static_cast<double*>(t) = null ? 0.0 : std::stod(s);
  });
}

Stmt& Stmt::out(Timestamp& v) {
  return out_text(&v, [](void* t, std::string& s, bool null) {
    *static_cast<Timestamp*>(t) = null ? Timestamp{} : parse_timestamp(s);
  });
}

Stmt& Stmt::out(Json& v) {
  return out_text(&v, [](void* t, std::string& s, bool null) {
    *static_cast<Json*>(t) = null ? Json(nullptr) : parse_json(s);
  });
}

Stmt& Stmt::out(std::optional<std::string>& v) {
  return out_text(&v, [](void* t, std::string& s, bool null) {
    auto& o = *static_cast<std::optional<std::string>*>(t);
    if (null) {
      o.reset();
    } else {
      o = std::move(s);
    }
  });
}

Stmt& Stmt::out(std::optional<long long>& v) {
  return out_text(&v, [](void* t, std::string& s, bool null) {
    auto& o = *static_cast<std::optional<long long>*>(t);
    if (null) {
      o.reset();
    } else {
      o = to_ll(s);
    }
  });
}

Stmt& Stmt::out(std::optional<long>& v) {
  return out_text(&v, [](void* t, std::string& s, bool null) {
    auto& o = *static_cast<std::optional<long>*>(t);
    if (null) {
      o.reset();
    } else {
      o = static_cast<long>(to_ll(s));
    }
  });
}

Stmt& Stmt::out(std::optional<Timestamp>& v) {
  return out_text(&v, [](void* t, std::string& s, bool null) {
    auto& o = *static_cast<std::optional<Timestamp>*>(t);
    if (null) {
      o.reset();
    } else {
      o = parse_timestamp(s);
    }
  });
}

void Stmt::apply_fixes() {
  for (auto& f : fixes_) f.apply(f.target, *f.text, *f.ind == soci::i_null);
}

bool Stmt::execute_first() {
  if (!bound_) {
    st_.define_and_bind();
    bound_ = true;
  }
  started_ = true;
  bool got = conn_.timed(text_, [&] { return st_.execute(true); });
  active_ = got;
  if (got) apply_fixes();
  return got;
}

bool Stmt::fetch_more() {
  bool got = st_.fetch();
  active_ = got;
  if (got) apply_fixes();
  return got;
}

bool Stmt::one() {
  bool got = execute_first();
  if (got) {
    // Reset the statement (SQLite keeps it active after the first row).
    // A second row would only overwrite the holders, never the targets.
    while (st_.fetch()) {
    }
    active_ = false;
  }
  return got;
}

bool Stmt::next() { return started_ ? (active_ && fetch_more()) : execute_first(); }

long long Stmt::affected() { return st_.get_affected_rows(); }

}  // namespace convstore::detail
