// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#include <fmt/format.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include <algorithm>
#include <cerrno>
#include <cmath>

#include "db/dialect.hpp"
#include "db/schema.hpp"
// After db/soci.hpp (included by dialect.hpp), which fixes SOCI's config.
// It includes <sqlite3.h> inside namespace sqlite_api; the SQLITE_ macros
// stay global.
#include <soci/sqlite3/soci-sqlite3.h>

namespace convstore::detail {

namespace {

sqlite_api::sqlite3* handle(soci::session& s) {
  // static_cast: Debian's SOCI does not export the backend's type info.
  if (s.get_backend() == nullptr || s.get_backend_name() != "sqlite3") return nullptr;
  return static_cast<soci::sqlite3_session_backend*>(s.get_backend())->conn_;
}

std::string quote(const std::string& v) {
  std::string out = "\"";
  for (char c : v) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

// convstore_rank(messages_fts): the rank of a search hit, a function of the
// row alone (unlike bm25, whose whole-index statistics move with every
// write, which would misalign the (rank, id) cursor of a search's pages):
// the phrase matches in the row divided by 1 + ln(its token count), as
// PostgreSQL's ts_rank_cd with normalization 1.
void rank_function(const sqlite_api::Fts5ExtensionApi* api, sqlite_api::Fts5Context* fts,
                   sqlite_api::sqlite3_context* ctx, int, sqlite_api::sqlite3_value**) {
  int hits = 0;
  int tokens = 0;
  int rc = api->xInstCount(fts, &hits);
  if (rc == SQLITE_OK) rc = api->xColumnSize(fts, -1, &tokens);
  if (rc != SQLITE_OK) {
    sqlite_api::sqlite3_result_error_code(ctx, rc);
    return;
  }
  sqlite_api::sqlite3_result_double(
      ctx, static_cast<double>(hits) / (1.0 + std::log(static_cast<double>(std::max(tokens, 1)))));
}

// Registers convstore_rank with the connection's FTS5 module.
void register_rank(sqlite_api::sqlite3* db) {
  using namespace sqlite_api;
  fts5_api* api = nullptr;
  sqlite3_stmt* st = nullptr;
  int rc = sqlite3_prepare_v2(db, "SELECT fts5(?1)", -1, &st, nullptr);
  if (rc == SQLITE_OK) rc = sqlite3_bind_pointer(st, 1, &api, "fts5_api_ptr", nullptr);
  if (rc == SQLITE_OK) sqlite3_step(st);
  sqlite3_finalize(st);
  if (rc != SQLITE_OK || api == nullptr || api->iVersion < 2) {
    throw Error(ErrorCode::internal, "SQLite has no FTS5 (needed by search)");
  }
  rc = api->xCreateFunction(api, "convstore_rank", nullptr, &rank_function, nullptr);
  if (rc != SQLITE_OK) {
    throw Error(ErrorCode::internal,
                fmt::format("cannot register the search rank function ({})", sqlite3_errstr(rc)));
  }
}

// True when the database's file system has (almost) no space left, or one
// of its files reached the process's file size limit (RLIMIT_FSIZE): the
// cause of an I/O error. (sqlite3_system_errno is not reliable here: it is
// the errno of the thread when SQLite recorded the error, which a later
// system call of the rollback may have replaced.)
bool disk_full(sqlite_api::sqlite3* db) {
  if (db == nullptr) return false;
  const int sys = sqlite_api::sqlite3_system_errno(db);
  if (sys == ENOSPC || sys == EFBIG || sys == EDQUOT) return true;
  const char* file = sqlite_api::sqlite3_db_filename(db, "main");
  if (file == nullptr || *file == '\0') return false;
  constexpr unsigned long long kSlack = 1024 * 1024;
  struct statvfs fs {};
  if (::statvfs(file, &fs) == 0 &&
      static_cast<unsigned long long>(fs.f_bavail) * fs.f_frsize < kSlack) {
    return true;
  }
  struct rlimit limit {};
  if (::getrlimit(RLIMIT_FSIZE, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY) return false;
  for (const char* suffix : {"", "-wal", "-journal"}) {
    struct stat st {};
    if (::stat((std::string(file) + suffix).c_str(), &st) == 0 &&
        static_cast<unsigned long long>(st.st_size) + kSlack >= limit.rlim_cur) {
      return true;
    }
  }
  return false;
}

class SqliteDialect final : public Dialect {
 public:
  Backend backend() const noexcept override { return Backend::sqlite; }
  std::string_view name() const noexcept override { return "sqlite"; }

  std::unique_ptr<soci::session> connect(const Target& target,
                                         const Options& options) const override {
    std::unique_ptr<soci::session> s;
    try {
      s = std::make_unique<soci::session>(soci::sqlite3, "db=" + quote(target.connect));
    } catch (const soci::soci_error& e) {
      throw Error(ErrorCode::unavailable,
                  fmt::format("cannot open {}: {}", target.display, e.get_error_message()));
    }
    try {
      // The busy timeout first: switching to WAL takes a lock that another
      // process opening the same file at the same moment may hold.
      *s << fmt::format("PRAGMA busy_timeout={}", options.busy_timeout.count());
      if (!target.memory) *s << "PRAGMA journal_mode=WAL";
      *s << (options.durability == Durability::full ? "PRAGMA synchronous=FULL"
                                                    : "PRAGMA synchronous=NORMAL");
      *s << "PRAGMA foreign_keys=ON";
      register_rank(handle(*s));
    } catch (const soci::soci_error& e) {
      throw translate(e, s.get(), fmt::format("setting up {}", target.display));
    }
    return s;
  }

  bool broken(soci::session&) const noexcept override { return false; }

  Error translate(const soci::soci_error& e, soci::session* s,
                  std::string_view what) const override {
    int ext = 0;
    if (auto* se = dynamic_cast<const soci::sqlite3_soci_error*>(&e)) ext = se->result();
    if (s != nullptr) {
      if (sqlite_api::sqlite3* db = handle(*s)) {
        int last = sqlite_api::sqlite3_extended_errcode(db);
        if (last != SQLITE_OK && (ext == 0 || (last & 0xff) == (ext & 0xff))) ext = last;
      }
    }
    std::string msg = e.get_error_message();
    while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' ')) msg.pop_back();
    const std::string state = ext != 0 ? std::to_string(ext) : "";
    // A full disk: SQLITE_FULL, or an I/O error on a file system without
    // space or a file at the process's size limit (SQLite reports a write
    // that failed outright, ENOSPC or EFBIG, as SQLITE_IOERR_WRITE "disk I/O
    // error"). Nothing of the failed call was written; the database stays
    // intact and readable.
    if ((ext & 0xff) == SQLITE_FULL ||
        ((ext & 0xff) == SQLITE_IOERR && s != nullptr && disk_full(handle(*s)))) {
      return Error(ErrorCode::unavailable,
                   fmt::format("{}: the database or disk is full: nothing was written; free "
                               "space (or raise the file size limit), then retry ({})",
                               what, msg),
                   state);
    }
    ErrorCode code = ErrorCode::internal;
    switch (ext & 0xff) {
      case SQLITE_BUSY:
      case SQLITE_LOCKED:
      case SQLITE_FULL:
      case SQLITE_IOERR:
      case SQLITE_CANTOPEN:
      case SQLITE_PROTOCOL:
        code = ErrorCode::unavailable;
        break;
      case SQLITE_CONSTRAINT:
        if (ext == SQLITE_CONSTRAINT_UNIQUE || ext == SQLITE_CONSTRAINT_PRIMARYKEY) {
          code = ErrorCode::already_exists;
        } else if (ext == SQLITE_CONSTRAINT_FOREIGNKEY) {
          code = ErrorCode::not_found;
        } else {
          code = ErrorCode::invalid_argument;
        }
        break;
      case SQLITE_TOOBIG:
      case SQLITE_MISMATCH:
      case SQLITE_RANGE:
        code = ErrorCode::invalid_argument;
        break;
      case SQLITE_READONLY:
      case SQLITE_CORRUPT:
      case SQLITE_NOTADB:
      case SQLITE_PERM:
        code = ErrorCode::failed_precondition;
        break;
      default:
        break;
    }
    return Error(code, fmt::format("{}: {}", what, msg), state);
  }

  bool errors_abort_transaction() const noexcept override { return false; }
  std::string lock_migrations() const override { return {}; }

  void backup(soci::session& s, const std::string& path, int pages_per_step,
              const std::function<void(long long, long long)>& progress) const override {
    using namespace sqlite_api;
    sqlite3* src = handle(s);
    if (src == nullptr) throw Error(ErrorCode::internal, "backup: no SQLite connection");
    sqlite3* dst = nullptr;
    int rc =
        sqlite3_open_v2(path.c_str(), &dst, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr);
    auto fail = [&](ErrorCode code, const std::string& what) {
      std::string msg = dst != nullptr ? sqlite3_errmsg(dst) : "out of memory";
      sqlite3_close(dst);
      throw Error(code, fmt::format("backup to {}: {}: {}", path, what, msg));
    };
    if (rc != SQLITE_OK) fail(ErrorCode::unavailable, "cannot open the backup file");
    sqlite3_backup* b = sqlite3_backup_init(dst, "main", src, "main");
    if (b == nullptr) fail(ErrorCode::unavailable, "cannot start the backup");
    int busy = 0;
    try {
      do {
        rc = sqlite3_backup_step(b, pages_per_step);
        if (rc == SQLITE_BUSY || rc == SQLITE_LOCKED) {
          if (++busy > 2000) break;  // about 10 s
          sqlite3_sleep(5);
          continue;
        }
        if (progress) {
          long long total = sqlite3_backup_pagecount(b);
          progress(total - sqlite3_backup_remaining(b), total);
        }
      } while (rc == SQLITE_OK || rc == SQLITE_BUSY || rc == SQLITE_LOCKED);
    } catch (...) {
      sqlite3_backup_finish(b);
      sqlite3_close(dst);
      throw;
    }
    int fin = sqlite3_backup_finish(b);
    if (rc != SQLITE_DONE) {
      fail(rc == SQLITE_BUSY || rc == SQLITE_LOCKED ? ErrorCode::unavailable : ErrorCode::internal,
           fmt::format("step failed ({})", sqlite3_errstr(rc)));
    }
    if (fin != SQLITE_OK) fail(ErrorCode::internal, "finishing failed");
    if (sqlite3_close(dst) != SQLITE_OK) {
      throw Error(ErrorCode::internal, fmt::format("backup to {}: closing failed", path));
    }
  }

  const std::vector<std::vector<std::string>>& migrations() const override {
    static const auto m = schema_migrations(SchemaTypes{
        "INTEGER PRIMARY KEY AUTOINCREMENT", "INTEGER", "TEXT", "TEXT", "BOOLEAN", "TEXT", false});
    return m;
  }
};

}  // namespace

const Dialect& sqlite_dialect() {
  static const SqliteDialect d;
  return d;
}

}  // namespace convstore::detail
