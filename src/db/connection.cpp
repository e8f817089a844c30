// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#include "db/connection.hpp"

#include <fmt/format.h>

#include <utility>

namespace convstore::detail {

namespace {

std::unique_ptr<soci::statement> prepare(soci::session& s, const std::string& text) {
  auto st = std::make_unique<soci::statement>(s);
  st->alloc();
  st->prepare(text);
  return st;
}

}  // namespace

Connection::Connection(const Dialect& dialect, std::unique_ptr<soci::session> session,
                       const Options& opts)
    : dialect_(dialect), session_(std::move(session)), options_(opts) {}

Connection::~Connection() {
  // Statements first: they refer to the session. On a broken PostgreSQL
  // connection their DEALLOCATE fails; that is of no consequence.
  try {
    statements_.clear();
    text_statements_.clear();
  } catch (...) {
  }
}

Prepared& Connection::prepared(const Sql& sql) {
  auto it = statements_.find(&sql);
  if (it == statements_.end()) {
    it = statements_.emplace(&sql, Prepared{nullptr, {}, sql.text(backend())}).first;
  }
  // Prepared on first use, and again after a failure discarded it.
  if (!it->second.statement) it->second.statement = prepare(*session_, it->second.text);
  return it->second;
}

Prepared& Connection::prepared(const std::string& text) {
  auto it = text_statements_.find(text);
  if (it == text_statements_.end()) {
    it = text_statements_.emplace(text, Prepared{nullptr, {}, text}).first;
  }
  if (!it->second.statement) it->second.statement = prepare(*session_, it->second.text);
  return it->second;
}

void Connection::execute(const Sql& sql) {
  Prepared& p = prepared(sql);
  if (!p.binding.bound) {
    p.statement->define_and_bind();
    p.binding.bound = true;
  }
  timed(sql.text(backend()), [&] { p.statement->execute(true); });
}

void Connection::execute_once(const std::string& text) {
  timed(text, [&] { *session_ << text; });
}

Pool::Pool(const Dialect& dialect, Target target, Options options)
    : dialect_(dialect),
      target_(std::move(target)),
      options_(std::move(options)),
      capacity_(target_.memory ? 1 : std::max<std::size_t>(1, options_.pool_size)) {}

Pool::~Pool() = default;

std::unique_ptr<Connection> Pool::open_connection() {
  return std::make_unique<Connection>(dialect_, dialect_.connect(target_, options_), options_);
}

Pool::Lease Pool::acquire() {
  std::unique_lock<std::mutex> lock(mutex_);
  auto deadline = std::chrono::steady_clock::now() + options_.acquire_timeout;
  for (;;) {
    if (!idle_.empty()) {
      auto c = std::move(idle_.back());
      idle_.pop_back();
      lock.unlock();
      if (!dialect_.stale(c->session())) return Lease(this, std::move(c));
      // Closed by the server while idle: replaced by a fresh connection
      // (closing this one may talk to the server: outside the lock).
      c->broken = true;
      c.reset();
      lock.lock();
      --open_;
      continue;
    }
    if (open_ < capacity_) {
      ++open_;
      lock.unlock();
      try {
        return Lease(this, open_connection());
      } catch (...) {
        std::lock_guard<std::mutex> relock(mutex_);
        --open_;
        freed_.notify_one();
        throw;
      }
    }
    if (freed_.wait_until(lock, deadline) == std::cv_status::timeout && idle_.empty() &&
        open_ >= capacity_) {
      throw Error(ErrorCode::unavailable,
                  fmt::format("no free connection to {} within {} ms (pool size {})",
                              target_.display, options_.acquire_timeout.count(), capacity_));
    }
  }
}

void Pool::release(std::unique_ptr<Connection> c) {
  bool broken = c->broken;
  bool drop = broken || c->depth != 0;
  std::vector<std::unique_ptr<Connection>> stale;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (drop) {
      --open_;
    } else {
      idle_.push_back(std::move(c));
    }
    if (broken) {
      // What broke one connection (a server restart, a network cut) most
      // likely broke the idle ones too: open fresh ones when needed instead
      // of failing one call per stale connection.
      stale.swap(idle_);
      open_ -= stale.size();
    }
  }
  freed_.notify_all();
  // Closed outside the lock: closing may talk to the server.
  c.reset();
  stale.clear();
}

}  // namespace convstore::detail
