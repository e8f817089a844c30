// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#include "convstore/web_session_store.hpp"

#include <sodium.h>

#include <algorithm>
#include <array>

#include "crypto.hpp"
#include "store_helpers.hpp"
#include "store_impl.hpp"

namespace convstore {

using detail::Connection;
using detail::ensure_sodium;
using detail::json_text;
using detail::Sql;
using detail::Stmt;

// ================================ names ====================================

std::string_view to_string(SessionStatus s) noexcept {
  switch (s) {
    case SessionStatus::pending:
      return "pending";
    case SessionStatus::authenticated:
      return "authenticated";
    case SessionStatus::error:
      return "error";
    case SessionStatus::expired:
      return "expired";
  }
  return "?";
}

std::string_view to_string(RevokeReason r) noexcept {
  switch (r) {
    case RevokeReason::rotated:
      return "rotated";
    case RevokeReason::revoked:
      return "revoked";
    case RevokeReason::reuse:
      return "reuse";
  }
  return "?";
}

SessionStatus parse_session_status(std::string_view s) {
  for (auto v : {SessionStatus::pending, SessionStatus::authenticated, SessionStatus::error,
                 SessionStatus::expired}) {
    if (to_string(v) == s) return v;
  }
  throw Error(ErrorCode::invalid_argument, fmt::format("unknown session status '{}'", s));
}

RevokeReason parse_revoke_reason(std::string_view s) {
  for (auto v : {RevokeReason::rotated, RevokeReason::revoked, RevokeReason::reuse}) {
    if (to_string(v) == s) return v;
  }
  throw Error(ErrorCode::invalid_argument, fmt::format("unknown revoke reason '{}'", s));
}

Json to_json(const WebSession& s) {
  auto opt_time = [](const std::optional<Timestamp>& t) {
    return t ? Json(to_iso8601(*t)) : Json(nullptr);
  };
  return Json{
      {"id", s.id},
      {"user_id", s.user_id},
      {"family_id", s.family_id},
      {"rotated_from", s.rotated_from ? Json(*s.rotated_from) : Json(nullptr)},
      {"status", to_string(s.status)},
      {"metadata", s.metadata},
      {"device_info", s.device_info},
      {"access_expires_at", to_iso8601(s.access_expires_at)},
      {"refresh_expires_at", to_iso8601(s.refresh_expires_at)},
      {"created_at", to_iso8601(s.created_at)},
      {"updated_at", to_iso8601(s.updated_at)},
      {"last_used_at", opt_time(s.last_used_at)},
      {"revoked_at", opt_time(s.revoked_at)},
      {"revoke_reason", s.revoke_reason ? Json(to_string(*s.revoke_reason)) : Json(nullptr)}};
}

namespace {

// ================================ tokens ===================================

// A token: 32 random bytes as URL-safe base64 without padding.
constexpr std::size_t kTokenBytes = 32;
constexpr std::size_t kTokenChars =
    sodium_base64_ENCODED_LEN(kTokenBytes, sodium_base64_VARIANT_URLSAFE_NO_PADDING) - 1;
static_assert(kTokenChars == 43);

std::string new_token() {
  std::array<unsigned char, kTokenBytes> bytes{};
  randombytes_buf(bytes.data(), bytes.size());
  std::array<char, kTokenChars + 1> text{};
  sodium_bin2base64(text.data(), text.size(), bytes.data(), bytes.size(),
                    sodium_base64_VARIANT_URLSAFE_NO_PADDING);
  sodium_memzero(bytes.data(), bytes.size());
  std::string token(text.data(), kTokenChars);
  sodium_memzero(text.data(), text.size());
  return token;
}

// What is stored of a token: its SHA-256, as 64 lowercase hex digits.
std::string token_hash(std::string_view token) {
  std::array<unsigned char, crypto_hash_sha256_BYTES> digest{};
  crypto_hash_sha256(digest.data(), reinterpret_cast<const unsigned char*>(token.data()),
                     token.size());
  std::array<char, crypto_hash_sha256_BYTES * 2 + 1> hex{};
  sodium_bin2hex(hex.data(), hex.size(), digest.data(), digest.size());
  return std::string(hex.data(), hex.size() - 1);
}

// Only what issue() hands out can match; anything else is not even looked up.
bool plausible_token(std::string_view token) {
  if (token.size() != kTokenChars) return false;
  return std::all_of(token.begin(), token.end(), [](char ch) {
    return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
           ch == '-' || ch == '_';
  });
}

// ================================ checks ===================================

constexpr std::chrono::seconds kMaxTtl = std::chrono::hours(24 * 3653);
// last_used_at is written by validate() only when older than this.
constexpr std::chrono::seconds kTouchResolution{60};

void check_ttl(std::chrono::seconds ttl, std::string_view what) {
  if (ttl.count() <= 0 || ttl > kMaxTtl) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("{} of {} s is outside 1 s .. 10 years", what, ttl.count()));
  }
}

bool live_status(SessionStatus s) {
  return s == SessionStatus::pending || s == SessionStatus::authenticated;
}

bool allowed_move(SessionStatus from, SessionStatus to) {
  if (from == to) return true;
  switch (from) {
    case SessionStatus::pending:
      return true;
    case SessionStatus::authenticated:
      return to == SessionStatus::error || to == SessionStatus::expired;
    case SessionStatus::error:
    case SessionStatus::expired:
      return false;
  }
  return false;
}

[[noreturn]] void session_not_found(WebSessionId id) {
  throw Error(ErrorCode::not_found, fmt::format("web session {} not found", id));
}

// ================================= rows ====================================

#define CS_WS_COLS                                                                           \
  "id, user_id, family_id, rotated_from, status, metadata, device_info, access_expires_at, " \
  "refresh_expires_at, created_at, updated_at, last_used_at, revoked_at, revoke_reason"

// A row as read; the status and the reason travel as text.
struct Row {
  WebSession s;
  std::string status;
  std::optional<std::string> reason;
};

void bind_row(Stmt& st, Row& r) {
  WebSession& s = r.s;
  st.out(s.id).out(s.user_id).out(s.family_id).out(s.rotated_from).out(r.status);
  st.out(s.metadata).out(s.device_info).out(s.access_expires_at).out(s.refresh_expires_at);
  st.out(s.created_at).out(s.updated_at).out(s.last_used_at).out(s.revoked_at).out(r.reason);
}

// The session as the API shows it: a session whose refresh token has
// expired reads as expired.
WebSession decoded(Row& r, Timestamp at) {
  r.s.status = parse_session_status(r.status);
  r.s.revoke_reason =
      r.reason ? std::optional<RevokeReason>(parse_revoke_reason(*r.reason)) : std::nullopt;
  if (r.s.refresh_expires_at <= at) r.s.status = SessionStatus::expired;
  return std::move(r.s);
}

std::optional<WebSession> fetch_session(Stmt& st, Timestamp at) {
  return detail::fetch_one_decoded<Row>(st, bind_row, [at](Row& r) { return decoded(r, at); });
}

// Serializes, per user, the writes that rotate or revoke sessions (refresh,
// revoke, revoke_all): each takes this lock first, so its later statements
// see every session an earlier holder inserted. Row locks cannot do that on
// PostgreSQL (READ COMMITTED): a revoking UPDATE that waits for a concurrent
// refresh's lock on the old row does not see the row that refresh inserts,
// and the client refreshes on from it. A transaction-scoped advisory lock
// in a key space of its own (0x77656273, "webs"; user ids fold into 31
// bits, where a collision only makes two users wait for each other). SQLite
// runs one writer at a time: nothing to do.
void lock_user(Connection& c, UserId user) {
  static const Sql q{"SELECT 1",
                     "SELECT pg_advisory_xact_lock(2003133043, (:u::bigint % 2147483647)::int)"};
  if (c.backend() != detail::Backend::postgresql) return;
  Stmt(c, q).in(user).one();
}

const Sql kGet{"SELECT " CS_WS_COLS " FROM web_sessions WHERE id = :id"};
const Sql kLock{"SELECT " CS_WS_COLS " FROM web_sessions WHERE id = :id",
                "SELECT " CS_WS_COLS " FROM web_sessions WHERE id = :id FOR UPDATE"};
const Sql kByAccess{"SELECT " CS_WS_COLS " FROM web_sessions WHERE access_hash = :h"};
const Sql kByRefresh{"SELECT " CS_WS_COLS " FROM web_sessions WHERE refresh_hash = :h"};

// What one new session is made of; its tokens are returned, their hashes
// stored.
struct Fresh {
  std::string access, refresh;
  std::string access_hash, refresh_hash;
  Fresh() : access(new_token()), refresh(new_token()) {
    access_hash = token_hash(access);
    refresh_hash = token_hash(refresh);
  }
};

// Inserts a session row; `family` 0 makes it the first of its own family.
WebSession insert_session(Connection& c, UserId user, WebSessionId family,
                          std::optional<WebSessionId> rotated_from, const Fresh& f,
                          SessionStatus status, const std::string& metadata,
                          const std::string& device_info, Timestamp access_expires,
                          Timestamp refresh_expires, Timestamp t) {
  static const Sql insert{
      "INSERT INTO web_sessions (user_id, family_id, rotated_from, access_hash, refresh_hash, "
      "access_expires_at, refresh_expires_at, status, metadata, device_info, created_at, "
      "updated_at) VALUES (:u, :f, :r, :ah, :rh, :ae, :re, :st, :md, :di, :t1, :t2) "
      "RETURNING " CS_WS_COLS};
  static const Sql own_family{
      "UPDATE web_sessions SET family_id = id WHERE id = :id RETURNING " CS_WS_COLS};
  Stmt s(c, insert);
  s.in(user).in(family).in(rotated_from).in(f.access_hash).in(f.refresh_hash);
  s.in(access_expires).in(refresh_expires).in(status).in(metadata).in(device_info).in(t).in(t);
  auto row = fetch_session(s, t);
  if (!row) throw Error(ErrorCode::internal, "inserting a web session returned no row");
  if (family != 0) return *row;
  Stmt u(c, own_family);
  u.in(row->id);
  return *fetch_session(u, t);
}

}  // namespace

WebSessionStore::WebSessionStore(Store::Impl* impl) : impl_(impl) {}

// ================================ issuing ==================================

IssuedSession WebSessionStore::issue(UserId user, const NewWebSession& n) {
  check_ttl(n.access_ttl, "access token lifetime");
  check_ttl(n.refresh_ttl, "refresh token lifetime");
  if (n.access_ttl > n.refresh_ttl) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("the access token ({} s) would outlive the refresh token ({} s)",
                            n.access_ttl.count(), n.refresh_ttl.count()));
  }
  if (!live_status(n.status)) {
    throw Error(
        ErrorCode::invalid_argument,
        fmt::format("a session is issued pending or authenticated, not {}", to_string(n.status)));
  }
  const std::string metadata = detail::object_text(n.metadata, "session metadata");
  const std::string device = detail::object_text(n.device_info, "session device info");
  ensure_sodium();
  Fresh f;
  try {
    WebSession s = impl_->write(Op{"issue web session", "user", user}, [&](Connection& c) {
      Timestamp t = now();
      return insert_session(c, user, 0, std::nullopt, f, n.status, metadata, device,
                            t + n.access_ttl, t + n.refresh_ttl, t);
    });
    return IssuedSession{std::move(s), std::move(f.access), std::move(f.refresh)};
  } catch (const Error& e) {
    if (e.code() == ErrorCode::not_found) {
      throw Error(ErrorCode::not_found, fmt::format("user {} not found", user), e.sqlstate());
    }
    throw;
  }
}

// ================================ checking =================================

std::optional<WebSession> WebSessionStore::validate(std::string_view access_token, bool touch) {
  if (!plausible_token(access_token)) return std::nullopt;
  ensure_sodium();
  const std::string hash = token_hash(access_token);
  // Counted once, with the use it records.
  return impl_->counted(Op{"validate web session"}, [&]() -> std::optional<WebSession> {
    const Timestamp t = now();
    auto s = impl_->read(Op{"validate web session"}, [&](Connection& c) {
      Stmt st(c, kByAccess);
      st.in(hash);
      return fetch_session(st, t);
    });
    if (!s || !s->usable(t)) return std::nullopt;
    if (touch && (!s->last_used_at || *s->last_used_at + kTouchResolution <= t)) {
      static const Sql q{
          "UPDATE web_sessions SET last_used_at = :t WHERE id = :id AND revoked_at IS NULL "
          "AND (last_used_at IS NULL OR last_used_at < :t2)"};
      impl_->single(Op{"record web session use", "web session", s->id}, [&](Connection& c) {
        Stmt(c, q).in(t).in(s->id).in(t - kTouchResolution).one();
      });
      s->last_used_at = t;
    }
    return s;
  });
}

// ================================ refreshing ===============================

IssuedSession WebSessionStore::refresh(std::string_view refresh_token, const RefreshOptions& o) {
  if (o.access_ttl) check_ttl(*o.access_ttl, "access token lifetime");
  if (o.refresh_ttl) check_ttl(*o.refresh_ttl, "refresh token lifetime");
  if (o.reuse_grace.count() < 0) {
    throw Error(ErrorCode::invalid_argument, "refresh token reuse grace is negative");
  }
  if (!plausible_token(refresh_token)) {
    throw Error(ErrorCode::not_found, "unknown refresh token");
  }
  ensure_sodium();
  const std::string hash = token_hash(refresh_token);
  Fresh f;

  // What the transaction found; refused refreshes are reported after it
  // ends, so that a family revoked for reuse stays revoked.
  enum class Outcome { issued, unknown, expired, revoked, dead_status, raced, reused };
  struct Result {
    Outcome outcome = Outcome::unknown;
    WebSession session;  // the new one, or the one the token belonged to
    std::int64_t family_revoked = 0;
  };
  Result r = impl_->write(Op{"refresh web session"}, [&](Connection& c) {
    // Revoking the old session is the claim on the token: of two concurrent
    // refreshes only one updates the row (PostgreSQL re-checks the condition
    // after the other's commit; SQLite runs one writer at a time).
    static const Sql claim{
        "UPDATE web_sessions SET revoked_at = :t1, revoke_reason = 'rotated', updated_at = :t2 "
        "WHERE refresh_hash = :h AND revoked_at IS NULL AND refresh_expires_at > :t3 AND "
        "status IN ('pending', 'authenticated') RETURNING " CS_WS_COLS};
    static const Sql revoke_family{
        "UPDATE web_sessions SET revoked_at = :t1, revoke_reason = 'reuse', updated_at = :t2 "
        "WHERE family_id = :f AND revoked_at IS NULL"};
    static const Sql owner{"SELECT user_id FROM web_sessions WHERE refresh_hash = :h"};
    Result out;
    UserId user = 0;
    if (!Stmt(c, owner).in(hash).out(user).one()) return out;
    lock_user(c, user);
    const Timestamp t = now();
    Stmt st(c, claim);
    st.in(t).in(t).in(hash).in(t);
    if (auto old = fetch_session(st, t)) {
      Timestamp refresh_expires = o.refresh_ttl ? t + *o.refresh_ttl : old->refresh_expires_at;
      auto access_ttl = o.access_ttl
                            ? std::chrono::duration_cast<std::chrono::microseconds>(*o.access_ttl)
                            : old->access_expires_at - old->created_at;
      Timestamp access_expires = std::min(t + access_ttl, refresh_expires);
      out.session = insert_session(c, old->user_id, old->family_id, old->id, f, old->status,
                                   json_text(old->metadata, "session metadata"),
                                   json_text(old->device_info, "session device info"),
                                   access_expires, refresh_expires, t);
      out.outcome = Outcome::issued;
      return out;
    }
    Stmt find(c, kByRefresh);
    find.in(hash);
    auto s = fetch_session(find, t);
    if (!s) return out;
    out.session = *s;
    if (s->revoke_reason == RevokeReason::rotated) {
      if (o.reuse_grace.count() > 0 && t < *s->revoked_at + o.reuse_grace) {
        out.outcome = Outcome::raced;
        return out;
      }
      Stmt rv(c, revoke_family);
      rv.in(t).in(t).in(s->family_id).one();
      out.family_revoked = rv.affected();
      out.outcome = Outcome::reused;
    } else if (s->revoked_at) {
      out.outcome = Outcome::revoked;
    } else if (s->refresh_expires_at <= t) {
      out.outcome = Outcome::expired;
    } else {
      out.outcome = Outcome::dead_status;
    }
    return out;
  });

  const WebSession& s = r.session;
  switch (r.outcome) {
    case Outcome::issued:
      return IssuedSession{std::move(r.session), std::move(f.access), std::move(f.refresh)};
    case Outcome::unknown:
      throw Error(ErrorCode::not_found, "unknown refresh token");
    case Outcome::expired:
      throw Error(ErrorCode::not_found,
                  fmt::format("the refresh token of web session {} has expired", s.id));
    case Outcome::revoked:
      throw Error(ErrorCode::not_found, fmt::format("web session {} was revoked ({})", s.id,
                                                    to_string(*s.revoke_reason)));
    case Outcome::dead_status:
      throw Error(ErrorCode::not_found,
                  fmt::format("web session {} is {}", s.id, to_string(s.status)));
    case Outcome::raced:
      throw Error(ErrorCode::conflict,
                  fmt::format("the refresh token of web session {} was just rotated by another "
                              "request; use the tokens that request received",
                              s.id));
    case Outcome::reused:
      throw Error(ErrorCode::conflict,
                  fmt::format("the refresh token of web session {} was already used: possible "
                              "token theft; session family {} revoked ({} active session(s))",
                              s.id, s.family_id, r.family_revoked));
  }
  throw Error(ErrorCode::internal, "refresh ended in an unknown state");
}

// ================================ reading ==================================

std::optional<WebSession> WebSessionStore::get(WebSessionId id) {
  const Timestamp t = now();
  return impl_->read(Op{"get web session", "web session", id}, [&](Connection& c) {
    Stmt st(c, kGet);
    st.in(id);
    return fetch_session(st, t);
  });
}

std::vector<WebSession> WebSessionStore::list(UserId user) {
  static const Sql q{"SELECT " CS_WS_COLS
                     " FROM web_sessions WHERE user_id = :u AND revoked_at IS NULL AND "
                     "refresh_expires_at > :t AND status IN ('pending', 'authenticated') "
                     "ORDER BY created_at DESC, id DESC"};
  const Timestamp t = now();
  return impl_->read(Op{"list web sessions", "user", user}, [&](Connection& c) {
    Stmt st(c, q);
    st.in(user).in(t);
    return detail::fetch_all_decoded<Row>(st, bind_row, [t](Row& r) { return decoded(r, t); });
  });
}

// ================================ changing =================================

WebSession WebSessionStore::set_status(WebSessionId id, SessionStatus status) {
  if (to_string(status) == "?") {
    throw Error(ErrorCode::invalid_argument, "session status is outside the set");
  }
  static const Sql q{
      "UPDATE web_sessions SET status = :s, updated_at = :t WHERE id = :id "
      "RETURNING " CS_WS_COLS};
  return impl_->write(Op{"set web session status", "web session", id}, [&](Connection& c) {
    const Timestamp t = now();
    Stmt sel(c, kLock);
    sel.in(id);
    auto s = fetch_session(sel, t);
    if (!s) session_not_found(id);
    if (s->revoked_at) {
      throw Error(ErrorCode::conflict,
                  fmt::format("web session {} is revoked ({})", id, to_string(*s->revoke_reason)));
    }
    if (!allowed_move(s->status, status)) {
      throw Error(ErrorCode::conflict, fmt::format("web session {} cannot move from {} to {}", id,
                                                   to_string(s->status), to_string(status)));
    }
    if (s->status == status) return *s;
    Stmt up(c, q);
    up.in(status).in(t).in(id);
    return *fetch_session(up, t);
  });
}

WebSession WebSessionStore::update_metadata(WebSessionId id, const Json& patch) {
  if (!patch.is_object()) {
    throw Error(
        ErrorCode::invalid_argument,
        fmt::format("session metadata patch must be a JSON object, not {}", patch.type_name()));
  }
  json_text(patch, "session metadata patch");
  static const Sql q{
      "UPDATE web_sessions SET metadata = :m, updated_at = :t WHERE id = :id "
      "RETURNING " CS_WS_COLS};
  return impl_->write(Op{"update web session metadata", "web session", id}, [&](Connection& c) {
    const Timestamp t = now();
    Stmt sel(c, kLock);
    sel.in(id);
    auto s = fetch_session(sel, t);
    if (!s) session_not_found(id);
    Json metadata = std::move(s->metadata);
    metadata.merge_patch(patch);
    Stmt up(c, q);
    up.in(json_text(metadata, "session metadata")).in(t).in(id);
    return *fetch_session(up, t);
  });
}

bool WebSessionStore::revoke(WebSessionId id) {
  static const Sql family{"SELECT user_id, family_id FROM web_sessions WHERE id = :id"};
  static const Sql q{
      "UPDATE web_sessions SET revoked_at = :t1, revoke_reason = 'revoked', updated_at = :t2 "
      "WHERE family_id = :f AND revoked_at IS NULL"};
  return impl_->write(Op{"revoke web session", "web session", id}, [&](Connection& c) {
    UserId user = 0;
    WebSessionId f = 0;
    if (!Stmt(c, family).in(id).out(user).out(f).one()) return false;
    lock_user(c, user);
    const Timestamp t = now();
    Stmt st(c, q);
    st.in(t).in(t).in(f).one();
    return st.affected() > 0;
  });
}

std::int64_t WebSessionStore::revoke_all(UserId user) {
  static const Sql q{
      "UPDATE web_sessions SET revoked_at = :t1, revoke_reason = 'revoked', updated_at = :t2 "
      "WHERE user_id = :u AND revoked_at IS NULL"};
  return impl_->write(Op{"revoke web sessions", "user", user}, [&](Connection& c) {
    lock_user(c, user);
    const Timestamp t = now();
    Stmt st(c, q);
    st.in(t).in(t).in(user).one();
    return static_cast<std::int64_t>(st.affected());
  });
}

std::int64_t WebSessionStore::purge_expired(Timestamp older_than) {
  static const Sql q{
      "DELETE FROM web_sessions WHERE refresh_expires_at < :c1 OR "
      "(revoked_at < :c2 AND revoke_reason <> 'rotated')"};
  return impl_->single(Op{"purge expired web sessions"}, [&](Connection& c) {
    Stmt st(c, q);
    st.in(older_than).in(older_than).one();
    return static_cast<std::int64_t>(st.affected());
  });
}

}  // namespace convstore
