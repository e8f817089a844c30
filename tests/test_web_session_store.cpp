// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#include <sodium.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <future>
#include <set>
#include <thread>
#include <vector>

#include "support.hpp"

using namespace convstore;
using namespace std::chrono_literals;

namespace {

UserId new_user(Store& store, const std::string& id = "alice") {
  return store.conversations().upsert_user(UserUpsert("web", id)).id;
}

std::string sha256_hex(const std::string& text) {
  unsigned char digest[crypto_hash_sha256_BYTES];
  crypto_hash_sha256(digest, reinterpret_cast<const unsigned char*>(text.data()), text.size());
  char hex[crypto_hash_sha256_BYTES * 2 + 1];
  sodium_bin2hex(hex, sizeof hex, digest, sizeof digest);
  return hex;
}

bool url_safe(const std::string& token) {
  return std::all_of(token.begin(), token.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_';
  });
}

std::string count_rows(const testing::TestDb& db) {
  return testing::raw_exec(db, "SELECT COUNT(*) FROM web_sessions");
}

}  // namespace

TEST_CASE("web sessions: status and reason names") {
  CHECK(to_string(SessionStatus::authenticated) == "authenticated");
  CHECK(parse_session_status("expired") == SessionStatus::expired);
  CHECK(parse_revoke_reason("reuse") == RevokeReason::reuse);
  CHECK_ERROR_CODE(parse_session_status("EXPIRED"), ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(parse_revoke_reason(""), ErrorCode::invalid_argument);
}

TEST_CASE_TEMPLATE("web sessions: issue returns random URL-safe tokens that validate", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& ws = store.web_sessions();
  UserId user = new_user(store);
  NewWebSession n;
  n.metadata = {{"login", "telegram"}};
  n.device_info = {{"user_agent", "Firefox"}, {"ip", "203.0.113.7"}};
  const Timestamp before = now();
  IssuedSession is = ws.issue(user, n);
  CHECK(is.access_token.size() == 43);
  CHECK(is.refresh_token.size() == 43);
  CHECK(url_safe(is.access_token));
  CHECK(url_safe(is.refresh_token));
  CHECK(is.access_token != is.refresh_token);
  const WebSession& s = is.session;
  CHECK(s.id > 0);
  CHECK(s.user_id == user);
  CHECK(s.family_id == s.id);
  CHECK_FALSE(s.rotated_from.has_value());
  CHECK(s.status == SessionStatus::pending);
  CHECK(s.metadata == n.metadata);
  CHECK(s.device_info == n.device_info);
  CHECK(s.access_expires_at - s.created_at == std::chrono::microseconds(15min));
  CHECK(s.refresh_expires_at - s.created_at == std::chrono::microseconds(24h * 30));
  CHECK(s.created_at >= before);
  CHECK_FALSE(s.revoked_at.has_value());
  CHECK(s.usable());
  CHECK_FALSE(to_json(s).dump().find(is.access_token) != std::string::npos);

  auto v = ws.validate(is.access_token);
  REQUIRE(v.has_value());
  CHECK(v->id == s.id);
  CHECK(v->device_info == n.device_info);
  CHECK(v->last_used_at.has_value());
  CHECK(ws.get(s.id)->last_used_at.has_value());

  // Anything else is simply not a session.
  CHECK_FALSE(ws.validate(is.refresh_token).has_value());
  CHECK_FALSE(ws.validate("").has_value());
  CHECK_FALSE(ws.validate(std::string(43, 'A')).has_value());
  CHECK_FALSE(ws.validate(is.access_token + "=").has_value());
  std::string nul = is.access_token;
  nul[5] = '\0';
  CHECK_FALSE(ws.validate(nul).has_value());
  CHECK_FALSE(ws.get(s.id + 1000).has_value());

  // Every token is new.
  IssuedSession other = ws.issue(user);
  std::set<std::string> all{is.access_token, is.refresh_token, other.access_token,
                            other.refresh_token};
  CHECK(all.size() == 4);
  CHECK(other.session.family_id == other.session.id);
  CHECK(ws.list(user).size() == 2);
}

TEST_CASE_TEMPLATE("web sessions: only the SHA-256 of a token is stored", B, CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& ws = store.web_sessions();
  IssuedSession is = ws.issue(new_user(store));
  IssuedSession next = ws.refresh(is.refresh_token);
  for (const IssuedSession* s : {&is, &next}) {
    const std::string id = std::to_string(s->session.id);
    CHECK(testing::raw_exec(db, "SELECT access_hash FROM web_sessions WHERE id = " + id) ==
          sha256_hex(s->access_token));
    CHECK(testing::raw_exec(db, "SELECT refresh_hash FROM web_sessions WHERE id = " + id) ==
          sha256_hex(s->refresh_token));
    CHECK_FALSE(testing::stored_anywhere(db, "web_sessions", s->access_token));
    CHECK_FALSE(testing::stored_anywhere(db, "web_sessions", s->refresh_token));
    CHECK(testing::stored_anywhere(db, "web_sessions",
                                   sha256_hex(s->access_token)));  // the search does find things
  }
}

TEST_CASE_TEMPLATE("web sessions: bad input is refused and nothing is written", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& ws = store.web_sessions();
  UserId user = new_user(store);
  auto with = [](auto change) {
    NewWebSession n;
    change(n);
    return n;
  };
  CHECK_ERROR_CODE(ws.issue(user, with([](NewWebSession& n) { n.access_ttl = 0s; })),
                   ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(ws.issue(user, with([](NewWebSession& n) { n.refresh_ttl = -5s; })),
                   ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(ws.issue(user, with([](NewWebSession& n) { n.refresh_ttl = 24h * 365 * 20; })),
                   ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(ws.issue(user, with([](NewWebSession& n) {
                              n.access_ttl = 2h;
                              n.refresh_ttl = 1h;
                            })),
                   ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(ws.issue(user, with([](NewWebSession& n) { n.status = SessionStatus::error; })),
                   ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(ws.issue(user, with([](NewWebSession& n) { n.metadata = Json::array(); })),
                   ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(ws.issue(user, with([](NewWebSession& n) { n.device_info = "phone"; })),
                   ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(ws.issue(user, with([](NewWebSession& n) {
                              n.metadata = {{"k", std::string("a\0b", 3)}};
                            })),
                   ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(ws.issue(user + 1000), ErrorCode::not_found);
  CHECK(count_rows(db) == "0");

  // A failed transaction takes its session with it.
  CHECK_THROWS_AS(store.transaction([&] {
    ws.issue(user);
    throw std::runtime_error("the app changed its mind");
  }),
                  std::runtime_error);
  CHECK(count_rows(db) == "0");
  CHECK(ws.list(user).empty());

  // null metadata is an empty object.
  NewWebSession null_md;
  null_md.metadata = nullptr;
  CHECK(ws.issue(user, null_md).session.metadata == Json::object());

  IssuedSession is = ws.issue(user);
  RefreshOptions bad;
  bad.access_ttl = 0s;
  CHECK_ERROR_CODE(ws.refresh(is.refresh_token, bad), ErrorCode::invalid_argument);
  RefreshOptions grace;
  grace.reuse_grace = -1s;
  CHECK_ERROR_CODE(ws.refresh(is.refresh_token, grace), ErrorCode::invalid_argument);
  CHECK(ws.validate(is.access_token).has_value());  // still the same session
  CHECK_ERROR_CODE(ws.update_metadata(is.session.id, Json::array()), ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(ws.update_metadata(is.session.id + 1000, {{"a", 1}}), ErrorCode::not_found);
}

TEST_CASE_TEMPLATE("web sessions: expired tokens stop working", B, CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& ws = store.web_sessions();
  UserId user = new_user(store);
  NewWebSession short_access;
  short_access.access_ttl = 1s;
  short_access.refresh_ttl = 1h;
  IssuedSession a = ws.issue(user, short_access);
  NewWebSession short_both;
  short_both.access_ttl = 1s;
  short_both.refresh_ttl = 1s;
  short_both.status = SessionStatus::authenticated;
  IssuedSession b = ws.issue(user, short_both);
  CHECK(ws.validate(a.access_token).has_value());
  CHECK(ws.validate(b.access_token).has_value());
  CHECK(ws.list(user).size() == 2);

  std::this_thread::sleep_for(1100ms);
  // Access token expired: validate says no, the refresh token still works.
  CHECK_FALSE(ws.validate(a.access_token).has_value());
  CHECK(ws.get(a.session.id)->status == SessionStatus::pending);
  IssuedSession a2 = ws.refresh(a.refresh_token);
  CHECK(ws.validate(a2.access_token).has_value());
  CHECK(a2.session.refresh_expires_at == a.session.refresh_expires_at);  // absolute lifetime
  CHECK(a2.session.access_expires_at - a2.session.created_at == std::chrono::microseconds(1s));

  // Both expired: the session reads as expired and cannot be refreshed.
  CHECK_FALSE(ws.validate(b.access_token).has_value());
  CHECK(ws.get(b.session.id)->status == SessionStatus::expired);
  CHECK_FALSE(ws.get(b.session.id)->usable());
  CHECK_ERROR_CODE(ws.refresh(b.refresh_token), ErrorCode::not_found);
  CHECK_ERROR_CODE(ws.set_status(b.session.id, SessionStatus::authenticated), ErrorCode::conflict);
  auto listed = ws.list(user);
  REQUIRE(listed.size() == 1);
  CHECK(listed[0].id == a2.session.id);
}

TEST_CASE_TEMPLATE("web sessions: refresh rotates both tokens and keeps the family", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& ws = store.web_sessions();
  UserId user = new_user(store);
  NewWebSession n;
  n.status = SessionStatus::authenticated;
  n.metadata = {{"role", "admin"}};
  n.device_info = {{"device", "laptop"}};
  IssuedSession s1 = ws.issue(user, n);
  IssuedSession s2 = ws.refresh(s1.refresh_token);
  CHECK(s2.session.id != s1.session.id);
  CHECK(s2.session.family_id == s1.session.id);
  CHECK(s2.session.rotated_from == s1.session.id);
  CHECK(s2.session.user_id == user);
  CHECK(s2.session.status == SessionStatus::authenticated);
  CHECK(s2.session.metadata == n.metadata);
  CHECK(s2.session.device_info == n.device_info);
  CHECK(s2.access_token != s1.access_token);
  CHECK(s2.refresh_token != s1.refresh_token);

  // The old session is revoked as rotated: neither of its tokens works.
  auto old = ws.get(s1.session.id);
  REQUIRE(old.has_value());
  CHECK(old->revoked_at.has_value());
  CHECK(old->revoke_reason == RevokeReason::rotated);
  CHECK_FALSE(ws.validate(s1.access_token).has_value());
  CHECK(ws.validate(s2.access_token).has_value());

  // Lifetimes: the access TTL carries over unless given; refresh_ttl slides.
  RefreshOptions o;
  o.access_ttl = 60s;
  o.refresh_ttl = 2h;
  IssuedSession s3 = ws.refresh(s2.refresh_token, o);
  CHECK(s3.session.access_expires_at - s3.session.created_at == std::chrono::microseconds(60s));
  CHECK(s3.session.refresh_expires_at - s3.session.created_at == std::chrono::microseconds(2h));
  CHECK(s3.session.family_id == s1.session.id);
  IssuedSession s4 = ws.refresh(s3.refresh_token);
  CHECK(s4.session.access_expires_at - s4.session.created_at == std::chrono::microseconds(60s));
  CHECK(s4.session.refresh_expires_at == s3.session.refresh_expires_at);

  // An access token is not a refresh token, and junk is unknown.
  CHECK_ERROR_CODE(ws.refresh(s4.access_token), ErrorCode::not_found);
  CHECK_ERROR_CODE(ws.refresh("junk"), ErrorCode::not_found);
  CHECK_ERROR_CODE(ws.refresh(std::string(43, 'x')), ErrorCode::not_found);
  auto listed = ws.list(user);
  REQUIRE(listed.size() == 1);
  CHECK(listed[0].id == s4.session.id);
}

TEST_CASE_TEMPLATE("web sessions: a reused refresh token revokes the whole family", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& ws = store.web_sessions();
  UserId user = new_user(store);
  IssuedSession other = ws.issue(user);  // another device, untouched
  IssuedSession s1 = ws.issue(user);
  IssuedSession s2 = ws.refresh(s1.refresh_token);
  IssuedSession s3 = ws.refresh(s2.refresh_token);

  // The thief (or a replay) presents the first refresh token again.
  CHECK_ERROR_CODE(ws.refresh(s1.refresh_token), ErrorCode::conflict);
  CHECK_FALSE(ws.validate(s3.access_token).has_value());
  auto s3_now = ws.get(s3.session.id);
  CHECK(s3_now->revoke_reason == RevokeReason::reuse);
  CHECK(ws.get(s2.session.id)->revoke_reason == RevokeReason::rotated);
  // The legitimate client's newest refresh token is dead too.
  CHECK_ERROR_CODE(ws.refresh(s3.refresh_token), ErrorCode::not_found);
  // Presenting a rotated one again still says reuse.
  CHECK_ERROR_CODE(ws.refresh(s2.refresh_token), ErrorCode::conflict);
  // The other device is not in the family.
  CHECK(ws.validate(other.access_token).has_value());
  auto listed = ws.list(user);
  REQUIRE(listed.size() == 1);
  CHECK(listed[0].id == other.session.id);

  // With a grace period a recent rotation is refused without revoking.
  IssuedSession t1 = ws.issue(user);
  IssuedSession t2 = ws.refresh(t1.refresh_token);
  RefreshOptions grace;
  grace.reuse_grace = 30s;
  CHECK_ERROR_CODE(ws.refresh(t1.refresh_token, grace), ErrorCode::conflict);
  CHECK(ws.validate(t2.access_token).has_value());
  CHECK_ERROR_CODE(ws.refresh(t1.refresh_token), ErrorCode::conflict);  // no grace: reuse
  CHECK_FALSE(ws.validate(t2.access_token).has_value());
}

TEST_CASE_TEMPLATE("web sessions: concurrent refreshes with one token: exactly one wins", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& ws = store.web_sessions();
  UserId user = new_user(store);
  constexpr int kThreads = 6;
  for (std::chrono::seconds grace : {0s, 60s}) {
    CAPTURE(grace.count());
    IssuedSession s = ws.issue(user);
    std::promise<void> go;
    std::shared_future<void> start = go.get_future().share();
    std::atomic<int> wins{0}, conflicts{0}, other{0};
    std::vector<IssuedSession> won(kThreads);
    std::vector<std::thread> threads;
    for (int i = 0; i < kThreads; ++i) {
      threads.emplace_back([&, i] {
        start.wait();
        try {
          RefreshOptions o;
          o.reuse_grace = grace;
          won[i] = ws.refresh(s.refresh_token, o);
          ++wins;
        } catch (const Error& e) {
          ++(e.code() == ErrorCode::conflict ? conflicts : other);
        }
      });
    }
    go.set_value();
    for (auto& t : threads) t.join();
    CHECK(wins == 1);
    CHECK(conflicts == kThreads - 1);
    CHECK(other == 0);
    auto winner = std::find_if(won.begin(), won.end(),
                               [](const IssuedSession& w) { return !w.access_token.empty(); });
    REQUIRE(winner != won.end());
    CHECK(winner->session.rotated_from == s.session.id);
    // Without grace the losers' reuse revoked the family (the winner
    // included); with it the winner's session lives on.
    CHECK(ws.validate(winner->access_token).has_value() == (grace > 0s));
  }
  CHECK(testing::raw_exec(db, "SELECT COUNT(*) FROM web_sessions") == "4");
}

TEST_CASE_TEMPLATE("web sessions: status moves", B, CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& ws = store.web_sessions();
  UserId user = new_user(store);
  IssuedSession s = ws.issue(user);
  const WebSessionId id = s.session.id;
  WebSession a = ws.set_status(id, SessionStatus::authenticated);
  CHECK(a.status == SessionStatus::authenticated);
  CHECK(a.updated_at >= s.session.updated_at);
  CHECK(ws.set_status(id, SessionStatus::authenticated).status == SessionStatus::authenticated);
  CHECK_ERROR_CODE(ws.set_status(id, SessionStatus::pending), ErrorCode::conflict);
  CHECK(ws.validate(s.access_token)->status == SessionStatus::authenticated);
  // Refresh keeps the status.
  IssuedSession r = ws.refresh(s.refresh_token);
  CHECK(r.session.status == SessionStatus::authenticated);
  CHECK_ERROR_CODE(ws.set_status(id, SessionStatus::expired), ErrorCode::conflict);  // rotated
  // Expired (invalidated) is final and stops the tokens.
  CHECK(ws.set_status(r.session.id, SessionStatus::expired).status == SessionStatus::expired);
  CHECK_FALSE(ws.validate(r.access_token).has_value());
  CHECK_ERROR_CODE(ws.refresh(r.refresh_token), ErrorCode::not_found);
  CHECK_ERROR_CODE(ws.set_status(r.session.id, SessionStatus::authenticated), ErrorCode::conflict);

  // A failed sign-in.
  IssuedSession f = ws.issue(user);
  CHECK(ws.set_status(f.session.id, SessionStatus::error).status == SessionStatus::error);
  CHECK_FALSE(ws.validate(f.access_token).has_value());
  CHECK_ERROR_CODE(ws.set_status(f.session.id, SessionStatus::pending), ErrorCode::conflict);
  CHECK(ws.list(user).empty());
  CHECK_ERROR_CODE(ws.set_status(f.session.id + 1000, SessionStatus::error), ErrorCode::not_found);
  CHECK_ERROR_CODE(ws.set_status(id, static_cast<SessionStatus>(42)), ErrorCode::invalid_argument);
}

TEST_CASE_TEMPLATE("web sessions: metadata is merged; last use is recorded on request", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& ws = store.web_sessions();
  NewWebSession n;
  n.metadata = {{"a", 1}, {"b", {{"c", 2}}}};
  IssuedSession s = ws.issue(new_user(store), n);
  WebSession m = ws.update_metadata(s.session.id, {{"a", nullptr}, {"b", {{"d", 3}}}});
  CHECK(m.metadata == Json{{"b", {{"c", 2}, {"d", 3}}}});
  CHECK(ws.get(s.session.id)->metadata == m.metadata);
  CHECK(ws.refresh(s.refresh_token).session.metadata == m.metadata);

  IssuedSession quiet = ws.issue(new_user(store, "bob"));
  CHECK(ws.validate(quiet.access_token, false).has_value());
  CHECK_FALSE(ws.get(quiet.session.id)->last_used_at.has_value());
  auto v = ws.validate(quiet.access_token);
  REQUIRE(v->last_used_at.has_value());
  auto first = ws.get(quiet.session.id)->last_used_at;
  ws.validate(quiet.access_token);  // within a minute: not written again
  CHECK(ws.get(quiet.session.id)->last_used_at == first);
}

TEST_CASE_TEMPLATE("web sessions: revoke one, revoke all", B, CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& ws = store.web_sessions();
  UserId alice = new_user(store, "alice");
  UserId bob = new_user(store, "bob");
  IssuedSession a1 = ws.issue(alice);
  IssuedSession a2 = ws.issue(alice);
  IssuedSession a3 = ws.issue(alice);
  IssuedSession b1 = ws.issue(bob);
  // Revoking by an old id of a family signs the device out.
  IssuedSession a1r = ws.refresh(a1.refresh_token);
  CHECK(ws.revoke(a1.session.id));
  CHECK_FALSE(ws.validate(a1r.access_token).has_value());
  CHECK(ws.get(a1r.session.id)->revoke_reason == RevokeReason::revoked);
  CHECK_ERROR_CODE(ws.refresh(a1r.refresh_token), ErrorCode::not_found);
  CHECK_FALSE(ws.revoke(a1.session.id));  // nothing left
  CHECK_FALSE(ws.revoke(999999));
  CHECK(ws.list(alice).size() == 2);

  CHECK(ws.revoke_all(alice) == 2);
  CHECK(ws.revoke_all(alice) == 0);
  CHECK(ws.revoke_all(999999) == 0);
  CHECK(ws.list(alice).empty());
  CHECK_FALSE(ws.validate(a2.access_token).has_value());
  CHECK_FALSE(ws.validate(a3.access_token).has_value());
  CHECK_ERROR_CODE(ws.set_status(a2.session.id, SessionStatus::authenticated), ErrorCode::conflict);
  CHECK(ws.validate(b1.access_token).has_value());
  CHECK(ws.list(bob).size() == 1);
}

TEST_CASE_TEMPLATE("web sessions: purge deletes dead sessions but keeps reuse detection", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& ws = store.web_sessions();
  UserId user = new_user(store);
  IssuedSession live = ws.issue(user);
  IssuedSession gone = ws.issue(user);
  IssuedSession rotated = ws.issue(user);
  IssuedSession current = ws.refresh(rotated.refresh_token);
  CHECK(ws.revoke(gone.session.id));
  CHECK(count_rows(db) == "4");

  CHECK(ws.purge_expired(now() - 24h) == 0);  // keep revoked ones for a day
  CHECK(ws.purge_expired() == 1);             // the revoked one
  CHECK_FALSE(ws.get(gone.session.id).has_value());
  // The rotated one stays until it expires, so replaying it is still reuse.
  CHECK(ws.get(rotated.session.id).has_value());
  CHECK(ws.validate(live.access_token).has_value());
  CHECK_ERROR_CODE(ws.refresh(rotated.refresh_token), ErrorCode::conflict);
  CHECK_FALSE(ws.validate(current.access_token).has_value());

  // A cutoff past every refresh expiry deletes the rest.
  CHECK(ws.purge_expired(now() + 24h * 31) == 3);
  CHECK(count_rows(db) == "0");
  CHECK_FALSE(ws.validate(live.access_token).has_value());
  CHECK_ERROR_CODE(ws.refresh(live.refresh_token), ErrorCode::not_found);
  CHECK(ws.purge_expired() == 0);
}

TEST_CASE_TEMPLATE("web sessions: deleting a user deletes the sessions", B, CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& ws = store.web_sessions();
  UserId alice = new_user(store, "alice");
  UserId bob = new_user(store, "bob");
  IssuedSession a = ws.issue(alice);
  ws.refresh(a.refresh_token);
  IssuedSession b = ws.issue(bob);
  testing::delete_user_by_sql(db, alice);
  CHECK(count_rows(db) == "1");
  CHECK(ws.list(alice).empty());
  CHECK(ws.validate(b.access_token).has_value());
}

TEST_CASE_TEMPLATE("web sessions: a refresh racing a revocation never survives it", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& ws = store.web_sessions();
  UserId user = new_user(store);
  for (int round = 0; round < 20; ++round) {
    CAPTURE(round);
    IssuedSession s = ws.issue(user);
    std::atomic<bool> revoked{false};
    std::atomic<int> refreshed{0};
    std::atomic<int> survived{0};
    // A client refreshing (paced, so that SQLite's unfair busy handler lets
    // the other writer in) until it is refused.
    std::thread client([&] {
      std::string token = s.refresh_token;
      for (int i = 0; i < 3000; ++i) {
        const bool after = revoked;
        try {
          token = ws.refresh(token).refresh_token;
          ++refreshed;
          if (after) ++survived;  // refreshed after the revocation returned
        } catch (const Error&) {
          if (revoked) return;
        }
        std::this_thread::sleep_for(std::chrono::microseconds(200));
      }
    });
    while (refreshed == 0) std::this_thread::yield();
    std::this_thread::sleep_for(std::chrono::milliseconds(round % 5));
    if (round % 2 == 0) {
      ws.revoke_all(user);  // sign out everywhere
    } else {
      // A replay of the first token revokes the family.
      CHECK_ERROR_CODE(ws.refresh(s.refresh_token), ErrorCode::conflict);
    }
    revoked = true;
    client.join();
    CHECK(survived == 0);
    CHECK(ws.list(user).empty());
  }
}
