// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#include "db/statement.hpp"

#include <fmt/format.h>

#include <cstring>
#include <utility>

namespace convstore::detail {

Stmt::Stmt(Connection& c, const Sql& sql) : Stmt(c, c.prepared(sql)) {}

Stmt::Stmt(Connection& c, const std::string& text) : Stmt(c, c.prepared(text)) {}

Stmt::Stmt(Connection& c, Prepared& p)
    : conn_(c), prepared_(p), st_(p.statement.get()), b_(p.binding) {}

Stmt::~Stmt() {
  drain();
  // Holders collected for a statement that never ran are not kept.
  if (!dead_ && !b_.bound) b_ = Binding{};
}

void Stmt::drain() noexcept {
  if (!active_) return;
  try {
    while (st_->fetch()) {
    }
  } catch (...) {
    discard();
  }
  active_ = false;
}

Binding::Slot& Stmt::slot(char kind) {
  if (b_.bound) {
    if (pos_ >= b_.slots.size() || b_.slots[pos_].kind != kind) {
      throw Error(
          ErrorCode::internal,
          fmt::format("statement bound with another sequence of types: {}", prepared_.text));
    }
    return b_.slots[pos_++];
  }
  Binding::Slot s{kind, nullptr, nullptr, nullptr};
  b_.inds.push_back(soci::i_ok);
  s.ind = &b_.inds.back();
  if (kind == 't' || kind == 'T') {
    b_.texts.emplace_back();
    s.text = &b_.texts.back();
  } else {
    b_.numbers.push_back(0);
    s.number = &b_.numbers.back();
  }
  b_.slots.push_back(s);
  ++pos_;
  return b_.slots.back();
}

Stmt& Stmt::in_text(std::string_view v, bool null) {
  // SOCI's PostgreSQL backend sends parameters as C strings: a NUL would
  // silently cut the value short (and match another row).
  if (!v.empty() && std::memchr(v.data(), 0, v.size()) != nullptr) {
    throw Error(ErrorCode::invalid_argument, "a text value contains a NUL byte");
  }
  Binding::Slot& s = slot('t');
  s.text->assign(v.data(), v.size());
  *s.ind = null ? soci::i_null : soci::i_ok;
  return *this;
}

Stmt& Stmt::in_int(long long v, bool null) {
  Binding::Slot& s = slot('i');
  *s.number = v;
  *s.ind = null ? soci::i_null : soci::i_ok;
  return *this;
}

Stmt& Stmt::in(Timestamp t) {
  Binding::Slot& s = slot('t');
  *s.text = to_iso8601(t);
  *s.ind = soci::i_ok;
  return *this;
}

Stmt& Stmt::out_slot(char kind, void* target, Apply apply) {
  Binding::Slot& s = slot(kind);
  if (b_.bound) {
    b_.fixes[fix_++].target = target;
  } else {
    b_.fixes.push_back(Binding::Fix{apply, target, &s});
    ++fix_;
  }
  return *this;
}

Stmt& Stmt::out(std::string& v) {
  return out_text(&v, [](void* t, std::string* s, long long, bool) {
    *static_cast<std::string*>(t) = std::move(*s);
  });
}

Stmt& Stmt::out(long long& v) {
  return out_number(&v, [](void* t, std::string*, long long n, bool null) {
    *static_cast<long long*>(t) = null ? 0 : n;
  });
}

Stmt& Stmt::out(long& v) {
  return out_number(&v, [](void* t, std::string*, long long n, bool null) {
    *static_cast<long*>(t) = null ? 0 : static_cast<long>(n);
  });
}

Stmt& Stmt::out(int& v) {
  return out_number(&v, [](void* t, std::string*, long long n, bool null) {
    *static_cast<int*>(t) = null ? 0 : static_cast<int>(n);
  });
}

// Booleans are read as text: SQLite stores 0/1, PostgreSQL sends t/f.
Stmt& Stmt::out(bool& v) {
  return out_text(&v, [](void* t, std::string* s, long long, bool null) {
    *static_cast<bool*>(t) = !null && (*s == "1" || *s == "t" || *s == "true");
  });
}

Stmt& Stmt::out(Timestamp& v) {
  return out_text(&v, [](void* t, std::string* s, long long, bool null) {
    *static_cast<Timestamp*>(t) = null ? Timestamp{} : parse_timestamp(*s);
  });
}

Stmt& Stmt::out(Json& v) {
  return out_text(&v, [](void* t, std::string* s, long long, bool null) {
    *static_cast<Json*>(t) = null ? Json(nullptr) : parse_json(*s);
  });
}

Stmt& Stmt::out(std::optional<std::string>& v) {
  return out_text(&v, [](void* t, std::string* s, long long, bool null) {
    auto& o = *static_cast<std::optional<std::string>*>(t);
    if (null) {
      o.reset();
    } else {
      o = std::move(*s);
    }
  });
}

Stmt& Stmt::out(std::optional<long long>& v) {
  return out_number(&v, [](void* t, std::string*, long long n, bool null) {
    auto& o = *static_cast<std::optional<long long>*>(t);
    if (null) {
      o.reset();
    } else {
      o = n;
    }
  });
}

Stmt& Stmt::out(std::optional<long>& v) {
  return out_number(&v, [](void* t, std::string*, long long n, bool null) {
    auto& o = *static_cast<std::optional<long>*>(t);
    if (null) {
      o.reset();
    } else {
      o = static_cast<long>(n);
    }
  });
}

Stmt& Stmt::out(std::optional<Timestamp>& v) {
  return out_text(&v, [](void* t, std::string* s, long long, bool null) {
    auto& o = *static_cast<std::optional<Timestamp>*>(t);
    if (null) {
      o.reset();
    } else {
      o = parse_timestamp(*s);
    }
  });
}

void Stmt::apply_fixes() {
  for (std::size_t i = 0; i < fix_; ++i) {
    const Binding::Fix& f = b_.fixes[i];
    f.apply(f.target, f.slot->text, f.slot->number != nullptr ? *f.slot->number : 0,
            *f.slot->ind == soci::i_null);
  }
}

void Stmt::bind_slots() {
  // SOCI learns of the holders only now, all at once: a Stmt that never runs
  // (its call failed before) leaves the prepared statement untouched.
  for (auto& s : b_.slots) {
    switch (s.kind) {
      case 't':
        st_->exchange(soci::use(*s.text, *s.ind));
        break;
      case 'i':
        st_->exchange(soci::use(*s.number, *s.ind));
        break;
      case 'T':
        st_->exchange(soci::into(*s.text, *s.ind));
        break;
      default:
        st_->exchange(soci::into(*s.number, *s.ind));
        break;
    }
  }
  st_->define_and_bind();
  b_.bound = true;
}

bool Stmt::execute_first() {
  if (!b_.bound) {
    try {
      bind_slots();
    } catch (...) {
      discard();
      throw;
    }
  } else if (pos_ != b_.slots.size()) {
    throw Error(ErrorCode::internal, fmt::format("statement bound with {} values, then {}: {}",
                                                 b_.slots.size(), pos_, prepared_.text));
  }
  started_ = true;
  bool got = false;
  try {
    got = conn_.timed(prepared_.text, [&] { return st_->execute(true); });
  } catch (...) {
    discard();
    throw;
  }
  active_ = got;
  // Outside the try: a row that does not decode leaves the statement
  // active, and the destructor drains it.
  if (got) apply_fixes();
  return got;
}

void Stmt::discard() noexcept {
  // After a failure the statement is prepared anew on its next use:
  // SOCI's PostgreSQL backend frees a parameter's buffer only after a
  // successful execution (a NULL parameter would resend the stale value),
  // and its SQLite backend never forgets a use element once bound.
  prepared_.statement.reset();
  prepared_.binding = Binding{};
  active_ = false;
  dead_ = true;
}

bool Stmt::one() {
  bool got = execute_first();
  if (got) {
    // Reset the statement (SQLite keeps it active after the first row).
    // A second row would only overwrite the holders, never the targets.
    try {
      while (st_->fetch()) {
      }
    } catch (...) {
      discard();
      throw;
    }
    active_ = false;
  }
  return got;
}

bool Stmt::next() {
  if (!started_) return execute_first();
  if (!active_) return false;
  try {
    active_ = st_->fetch();
  } catch (...) {
    discard();
    throw;
  }
  if (active_) apply_fixes();
  return active_;
}

long long Stmt::affected() { return st_->get_affected_rows(); }

}  // namespace convstore::detail
