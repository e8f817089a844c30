// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "convstore/export.hpp"
#include "convstore/store.hpp"
#include "convstore/types.hpp"

namespace convstore {

using WebSessionId = std::int64_t;

// Where a web session is in its life (seed 003 SessionStatus):
//   pending        created, the sign-in is not finished yet
//   authenticated  the user has signed in
//   error          the sign-in failed (final)
//   expired        timed out or invalidated (final)
// Allowed moves: pending -> authenticated / error / expired,
// authenticated -> error / expired; setting the current status is a no-op.
enum class SessionStatus { pending, authenticated, error, expired };

// Why a session stopped working before its expiry.
//   rotated  its refresh token was exchanged by refresh() for a new session
//   revoked  revoke() or revoke_all() (a sign-out)
//   reuse    a refresh token of its family was presented again after it had
//            been rotated: the whole family was revoked
enum class RevokeReason { rotated, revoked, reuse };

CONVSTORE_EXPORT std::string_view to_string(SessionStatus s) noexcept;
CONVSTORE_EXPORT std::string_view to_string(RevokeReason r) noexcept;
// Parsers for the names above; throw Error(invalid_argument) naming the value.
CONVSTORE_EXPORT SessionStatus parse_session_status(std::string_view s);
CONVSTORE_EXPORT RevokeReason parse_revoke_reason(std::string_view s);

// A web session as stored: never its tokens, which exist only in the
// IssuedSession that issue() or refresh() returned.
//
// Every refresh replaces the session by a new one (a new id, the same
// family): `family_id` is the id of the first session of the chain, and
// stays the same across refreshes; `rotated_from` is the session it
// replaced (none for the first, or once that one is purged).
struct WebSession {
  WebSessionId id = 0;
  UserId user_id = 0;
  WebSessionId family_id = 0;
  std::optional<WebSessionId> rotated_from;
  // As stored, except that a session whose refresh token has expired reads
  // as expired.
  SessionStatus status = SessionStatus::pending;
  Json metadata = Json::object();
  Json device_info = Json::object();  // user agent, IP, device name, ...
  Timestamp access_expires_at{};
  Timestamp refresh_expires_at{};
  Timestamp created_at{};  // when this session (this link of the chain) was issued
  Timestamp updated_at{};
  std::optional<Timestamp> last_used_at;  // last validate(), to within a minute
  std::optional<Timestamp> revoked_at;
  std::optional<RevokeReason> revoke_reason;

  // True when its access token validates now: not revoked, status pending
  // or authenticated, access token not expired.
  bool usable(Timestamp at = now()) const noexcept {
    return !revoked_at &&
           (status == SessionStatus::pending || status == SessionStatus::authenticated) &&
           at < access_expires_at && at < refresh_expires_at;
  }
};

// Input of WebSessionStore::issue.
struct NewWebSession {
  // Lifetimes of the tokens, each 1 s .. 10 years; the access token may not
  // outlive the refresh token.
  std::chrono::seconds access_ttl = std::chrono::minutes(15);
  std::chrono::seconds refresh_ttl = std::chrono::hours(24 * 30);
  SessionStatus status = SessionStatus::pending;  // pending or authenticated
  Json metadata = Json::object();                 // a JSON object (null: {})
  Json device_info = Json::object();              // a JSON object (null: {})
};

// A session with its two tokens in plain text: 32 random bytes each, as
// URL-safe base64 without padding (43 characters). Give them to the client
// and forget them: the store keeps only their SHA-256, so they cannot be
// shown again.
struct IssuedSession {
  WebSession session;
  std::string access_token;
  std::string refresh_token;
};

// How WebSessionStore::refresh issues the new session.
struct RefreshOptions {
  // Lifetime of the new access token; default: that of the old one.
  std::optional<std::chrono::seconds> access_ttl;
  // Default: the new refresh token expires when the old one would have, so
  // a session family cannot outlive its first refresh_ttl (re-authenticate
  // then). Set: it expires this long from now (a sliding session).
  std::optional<std::chrono::seconds> refresh_ttl;
  // A refresh token that was rotated less than this long ago is refused
  // with Error(conflict) but the family is left alone: two tabs of one
  // browser refreshing at once should not sign the user out. Zero (the
  // default, as the OAuth 2.0 Security BCP wants): any reuse revokes the
  // family.
  std::chrono::seconds reuse_grace{0};
};

// Durable web sessions with access and refresh tokens (seed 003), reached as
// store.web_sessions().
//
// Tokens are random (libsodium), returned once, and stored only as their
// SHA-256 hash: a token is found by looking its hash up in a unique index,
// so no stored secret is ever compared byte by byte, and a copy of the
// database gives nobody a working token. convstore never logs a token and
// no error message contains one.
//
// Refresh tokens rotate: refresh() revokes the session it is given and
// issues a new one (new tokens, new id, same family). Presenting a rotated
// refresh token again means it was stolen or replayed: the whole family is
// revoked and the call throws Error(conflict) (OAuth 2.0 Security BCP,
// refresh token rotation). Of two concurrent refreshes with one token,
// exactly one succeeds.
//
// Thread safety: safe to use from many threads and processes at once;
// returned values are copies the caller owns.
// Errors: throws convstore::Error. A lookup that finds nothing returns
// std::nullopt; revoking what is not there returns false / 0. A bad TTL,
// status or metadata is Error(invalid_argument). A call that throws has
// written nothing, except refresh() on a reused token, which revokes the
// family before throwing Error(conflict).
class CONVSTORE_EXPORT WebSessionStore {
 public:
  // Issues a new session for `user` (the first of a family) and returns it
  // with its tokens. Throws Error(not_found) for an unknown user.
  IssuedSession issue(UserId user, const NewWebSession& session = {});

  // The session whose access token this is, if that token works now: known,
  // not expired, not revoked, status pending or authenticated. Anything else
  // (a malformed or refresh token included) is std::nullopt. When `touch`,
  // records the use in last_used_at, writing at most once a minute per
  // session.
  std::optional<WebSession> validate(std::string_view access_token, bool touch = true);

  // Exchanges a refresh token for a new session, atomically: the old
  // session is revoked (reason rotated; its access token stops working too)
  // and a new one of the same family, user, status, metadata and device
  // info is issued. Throws Error(not_found) when the token is unknown,
  // expired or revoked (by a sign-out), or its session's status is error or
  // expired: sign in again. Throws Error(conflict) when the token was
  // already rotated: after RefreshOptions::reuse_grace the family is
  // revoked first (reason reuse). Error(invalid_argument) for a bad TTL.
  // Inside Store::transaction that revocation belongs to the transaction: a
  // body that lets the conflict escape rolls it back, so call refresh
  // outside one (it is atomic on its own).
  IssuedSession refresh(std::string_view refresh_token, const RefreshOptions& options = {});

  // The session, revoked or expired ones included, or std::nullopt.
  std::optional<WebSession> get(WebSessionId id);
  // The sessions of `user` that can still be used or refreshed (not
  // revoked, refresh token not expired, status pending or authenticated),
  // newest first. An unknown user has none.
  std::vector<WebSession> list(UserId user);

  // Moves the status (see SessionStatus for the allowed moves) and returns
  // the session. Throws Error(not_found) for an unknown id, Error(conflict)
  // for a move that is not allowed or a revoked session.
  WebSession set_status(WebSessionId id, SessionStatus status);
  // Merges `patch` (RFC 7396, a JSON object) into the metadata and returns
  // the session. Throws Error(not_found) for an unknown id.
  WebSession update_metadata(WebSessionId id, const Json& patch);

  // Revokes the session and the rest of its family (a sign-out of one
  // device): its tokens stop working at once. Returns false when nothing
  // was left to revoke (unknown id, or already revoked).
  bool revoke(WebSessionId id);
  // Revokes every session of `user` (sign out everywhere); returns how many.
  std::int64_t revoke_all(UserId user);

  // Deletes the sessions whose refresh token expired before `older_than`,
  // and those revoked by revoke() / revoke_all() / reuse before it; returns
  // how many. Rotated sessions stay until their refresh token expires, so a
  // replayed one is still recognized as reuse. Pass an earlier time (now()
  // minus a week) to keep dead sessions around for a while; a time in the
  // future deletes sessions that would still expire in between.
  std::int64_t purge_expired(Timestamp older_than = now());

 private:
  friend class Store;
  explicit WebSessionStore(Store::Impl* impl);
  Store::Impl* impl_;
};

// JSON form of a session (timestamps as ISO 8601 strings; no token).
CONVSTORE_EXPORT Json to_json(const WebSession& s);

}  // namespace convstore
