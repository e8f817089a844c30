// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include "support.hpp"

#include <fcntl.h>
#include <libpq-fe.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <sstream>
#include <vector>

extern char** environ;

namespace testing {

TempDir::TempDir() {
  static std::atomic<int> counter{0};
  path_ = std::filesystem::temp_directory_path() /
          ("convstore_test_" + std::to_string(getpid()) + "_" + std::to_string(counter++));
  std::filesystem::create_directories(path_);
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

bool in_order(const std::string& text, const std::vector<std::string>& parts) {
  std::size_t at = 0;
  for (const auto& p : parts) {
    auto found = text.find(p, at);
    if (found == std::string::npos) return false;
    at = found + p.size();
  }
  return true;
}

std::string program_path(const char* env_var, const std::string& built) {
  const char* env = std::getenv(env_var);
  return env != nullptr && *env != '\0' ? std::string(env) : built;
}

std::vector<std::string> environment() {
  std::vector<std::string> out;
  for (char** e = environ; *e != nullptr; ++e) out.emplace_back(*e);
  return out;
}

int spawn(const std::vector<std::string>& argv, const std::vector<std::string>& envp,
          const std::string& in, const std::string& out, const std::string& err) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  std::vector<char*> env;
  for (const auto& e : envp) env.push_back(const_cast<char*>(e.c_str()));
  env.push_back(nullptr);
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    int in_fd = open(in.c_str(), O_RDONLY);
    int out_fd = open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    int err_fd = open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (in_fd < 0 || out_fd < 0 || err_fd < 0) _exit(126);
    dup2(in_fd, 0);
    dup2(out_fd, 1);
    dup2(err_fd, 2);
    execve(args[0], args.data(), env.data());
    _exit(127);
  }
  return pid;
}

namespace {

bool in_ci() {
  const char* ci = std::getenv("CI");
  return ci != nullptr && std::string(ci) == "true";
}

std::string unique_suffix() {
  static std::atomic<int> counter{0};
  std::random_device rd;
  std::ostringstream os;
  os << getpid() << "_" << counter++ << "_" << (rd() % 100000);
  return os.str();
}

void admin_exec(const std::string& url, const std::string& sql) {
  PGconn* c = PQconnectdb(url.c_str());
  if (PQstatus(c) != CONNECTION_OK) {
    std::string msg = PQerrorMessage(c);
    PQfinish(c);
    FAIL("cannot connect to the test PostgreSQL server: " << msg);
  }
  PQsetNoticeProcessor(
      c, [](void*, const char*) {}, nullptr);
  PGresult* r = PQexec(c, sql.c_str());
  bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
  std::string msg = PQerrorMessage(c);
  PQclear(r);
  PQfinish(c);
  if (!ok) FAIL("'" << sql << "' failed: " << msg);
}

}  // namespace

TestDb::TestDb(const char* backend) : backend_(backend) {
  if (backend_ == "sqlite") {
    auto dir = std::filesystem::temp_directory_path() / ("convstore_test_" + unique_suffix());
    std::filesystem::create_directories(dir);
    dir_ = dir.string();
    url_ = "sqlite:" + (dir / "test.db").string();
    return;
  }
  const char* pg = std::getenv("CONVSTORE_TEST_PG_URL");
  if (pg == nullptr || *pg == '\0') {
    if (in_ci()) {
      FAIL("CONVSTORE_TEST_PG_URL is not set: PostgreSQL tests cannot run (CI=true)");
    }
    MESSAGE("PostgreSQL not configured (CONVSTORE_TEST_PG_URL unset): skipped");
    return;
  }
  schema_ = "t_" + unique_suffix();
  admin_exec(pg, "CREATE SCHEMA " + schema_);
  std::string base = pg;
  url_ = base + (base.find('?') == std::string::npos ? "?" : "&") + "options=-csearch_path%3D" +
         schema_;
}

TestDb::~TestDb() {
  try {
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
    if (!schema_.empty()) {
      const char* pg = std::getenv("CONVSTORE_TEST_PG_URL");
      PGconn* c = PQconnectdb(pg);
      PQsetNoticeProcessor(
          c, [](void*, const char*) {}, nullptr);
      PQclear(PQexec(c, ("DROP SCHEMA " + schema_ + " CASCADE").c_str()));
      PQfinish(c);
    }
  } catch (...) {
  }
}

convstore::Store TestDb::open(convstore::Options options) const {
  return convstore::Store::open(url_, options);
}

std::string raw_exec(const TestDb& db, const std::string& sql) {
  std::string out;
  if (db.backend() == "sqlite") {
    sqlite3* h = nullptr;
    REQUIRE(sqlite3_open(db.url().substr(7).c_str(), &h) == SQLITE_OK);
    sqlite3_busy_timeout(h, 10000);
    sqlite3_stmt* st = nullptr;
    int rc = sqlite3_prepare_v2(h, sql.c_str(), -1, &st, nullptr);
    if (rc == SQLITE_OK) {
      rc = sqlite3_step(st);
      if (rc == SQLITE_ROW && sqlite3_column_text(st, 0) != nullptr) {
        out = reinterpret_cast<const char*>(sqlite3_column_text(st, 0));
      }
    }
    std::string msg = sqlite3_errmsg(h);
    sqlite3_finalize(st);
    sqlite3_close(h);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) FAIL("'" << sql << "' failed: " << msg);
    return out;
  }
  PGconn* c = PQconnectdb(db.url().c_str());
  PGresult* r = PQexec(c, sql.c_str());
  auto status = PQresultStatus(r);
  std::string msg = PQerrorMessage(c);
  if (status == PGRES_TUPLES_OK && PQntuples(r) > 0) out = PQgetvalue(r, 0, 0);
  PQclear(r);
  PQfinish(c);
  if (status != PGRES_TUPLES_OK && status != PGRES_COMMAND_OK) {
    FAIL("'" << sql << "' failed: " << msg);
  }
  return out;
}

namespace {
std::string file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}
}  // namespace

bool stored_anywhere(const TestDb& db, const std::string& table, const std::string& text) {
  if (db.backend() == "sqlite") {
    const std::string path = db.url().substr(7);
    return (file_bytes(path) + file_bytes(path + "-wal")).find(text) != std::string::npos;
  }
  return raw_exec(db, "SELECT COUNT(*) FROM " + table + " w WHERE strpos(w::text, '" + text +
                          "') > 0") != "0";
}

void delete_user_by_sql(const TestDb& db, convstore::UserId id) {
  const std::string sql = "DELETE FROM users WHERE id = " + std::to_string(id);
  if (db.backend() != "sqlite") {
    raw_exec(db, sql);
    return;
  }
  // SQLite needs foreign keys switched on for the connection.
  sqlite3* h = nullptr;
  REQUIRE(sqlite3_open(db.url().substr(7).c_str(), &h) == SQLITE_OK);
  sqlite3_busy_timeout(h, 10000);
  const std::string both = "PRAGMA foreign_keys = ON; " + sql;
  char* err = nullptr;
  int rc = sqlite3_exec(h, both.c_str(), nullptr, nullptr, &err);
  std::string msg = err != nullptr ? err : "";
  sqlite3_free(err);
  sqlite3_close(h);
  REQUIRE_MESSAGE(rc == SQLITE_OK, msg);
}

CacheFixture::CacheFixture(const char* kind, convstore::CacheOptions options) : kind_(kind) {
  prefix_ = "t" + unique_suffix() + ":";
  options.key_prefix = prefix_;
  bool database = kind_ == "sqlite" || kind_ == "postgresql";
  db_ = std::make_unique<TestDb>(database ? kind : "sqlite");
  if (!db_->ready()) return;
  store_.emplace(db_->open());
  if (kind_ == "memory") {
    cache_.emplace(convstore::SessionCache::in_memory(options));
  } else if (database) {
    cache_.emplace(convstore::SessionCache::database(*store_, options));
  } else {
    const char* url = std::getenv("CONVSTORE_TEST_REDIS_URL");
    if (!CONVSTORE_HAS_REDIS || url == nullptr || *url == '\0') {
      if (in_ci()) FAIL("Redis tests cannot run: no Redis build or CONVSTORE_TEST_REDIS_URL unset");
      MESSAGE("Redis not configured (CONVSTORE_TEST_REDIS_URL unset or no Redis build): skipped");
      return;
    }
    redis_url_ = url;
    cache_.emplace(convstore::SessionCache::redis(redis_url_, options));
  }
}

convstore::SessionCache CacheFixture::open(convstore::CacheOptions options) {
  options.key_prefix = prefix_;
  if (kind_ == "memory") return convstore::SessionCache::in_memory(options);
  if (kind_ == "redis") return convstore::SessionCache::redis(redis_url_, options);
  return convstore::SessionCache::database(*store_, options);
}

std::string contents(const std::vector<convstore::Message>& messages) {
  std::string out;
  for (const auto& m : messages) out += (out.empty() ? "" : ",") + m.content;
  return out;
}

convstore::NewMessage text(std::string content) {
  convstore::NewMessage m;
  m.content = std::move(content);
  return m;
}

convstore::SessionCache& CacheFixture::peer() {
  if (kind_ == "memory") return *cache_;
  if (!peer_) peer_.emplace(open());
  return *peer_;
}

std::string CacheFixture::helper_args() const {
  std::string kind = kind_ == "redis" ? "redis" : kind_ == "memory" ? "memory" : "database";
  return kind + " " + (redis_url_.empty() ? "-" : redis_url_) + " " + prefix_;
}

namespace {
std::string helper_path() {
  const char* dir = std::getenv("CONVSTORE_TEST_HELPER");
  return dir != nullptr ? dir : "./convstore_test_helper";
}
}  // namespace

int run_helper(const std::string& args) { return wait_helper(spawn_helper(args)); }

int spawn_helper(const std::string& args) {
  std::string cmd = "exec " + helper_path() + " " + args;  // the pid is the helper's
  pid_t pid = fork();
  if (pid == 0) {
    execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  return pid;
}

int wait_helper(int pid) {
  int status = 0;
  if (waitpid(pid, &status, 0) < 0) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace testing
