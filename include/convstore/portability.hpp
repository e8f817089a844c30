// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#pragma once

// Moving a store's data out and in: a portable JSON Lines export and its
// import, a copy between two stores (typically SQLite -> PostgreSQL) verified
// by row counts and checksums, and an online backup of a live SQLite database.
// The format is documented in the README ("Export, import, copy and backup").

#include <cstdint>
#include <functional>
#include <iosfwd>
#include <string>
#include <string_view>
#include <vector>

#include "convstore/export.hpp"
#include "convstore/store.hpp"

namespace convstore {

// How far a long operation is. `stage` names what is being done: the record
// type ("message") for export, import and copy, "verify" while a copy checks
// its target, "pages" for a backup.
struct Progress {
  std::string stage;
  std::int64_t done = 0;   // rows (pages for a backup) done so far, all stages together
  std::int64_t total = 0;  // the expected total, 0 when unknown (an import)
};
using ProgressFn = std::function<void(const Progress&)>;

// The number of rows of one record type.
struct TypeCount {
  std::string type;  // "user", "message", ...
  std::int64_t rows = 0;
};

struct ExportOptions {
  std::size_t page_size = 1000;  // rows read per query (1 .. 100000)
  ProgressFn on_progress;        // called every `progress_every` rows and at the end
  std::int64_t progress_every = 10000;
};

struct ExportReport {
  int schema_version = 0;               // of the exported database
  std::int64_t rows = 0;                // records written (the header line not counted)
  std::vector<TypeCount> rows_by_type;  // in file order
};

// Writes every exported record of `store` to `out` as JSON Lines: a header
// line, then one record per line, parents before children, each type in key
// order (messages by id). Reads in pages inside one read snapshot, so the
// file is consistent and memory does not grow with the database. Throws
// Error(unavailable) when `out` fails.
CONVSTORE_EXPORT ExportReport export_jsonl(Store& store, std::ostream& out,
                                           const ExportOptions& options = {});

struct ImportOptions {
  // false: the first bad line throws Error(invalid_argument) naming it, and
  // nothing is imported. true: bad lines are skipped (listed in the report),
  // the others imported.
  bool skip_bad_lines = false;
  std::size_t batch_size = 500;  // rows per INSERT (1 .. 10000; fewer for wide rows)
  ProgressFn on_progress;        // called every `progress_every` lines and at the end
  std::int64_t progress_every = 10000;
};

// A line that was not imported.
struct BadLine {
  std::int64_t line = 0;  // 1-based
  std::string reason;
};

struct ImportReport {
  std::int64_t lines = 0;      // lines read, the header and blank lines included
  std::int64_t inserted = 0;   // records stored now
  std::int64_t unchanged = 0;  // records already stored with the same content
  std::vector<TypeCount> inserted_by_type;
  std::vector<BadLine> skipped;  // with skip_bad_lines
};

// Imports a file written by export_jsonl, in one transaction. Every line is
// checked: JSON syntax, a known type, every field present with its type,
// references to records earlier in the file or already stored. A record
// whose key is already stored with the same content is left alone (so an
// import is idempotent); with other content it is a bad line (Error(conflict)
// naming the line and key without skip_bad_lines). Identity sequences are
// moved past the imported ids. Throws Error(invalid_argument) for a bad line
// ("line 12: ...") or a bad header.
CONVSTORE_EXPORT ImportReport import_jsonl(Store& store, std::istream& in,
                                           const ImportOptions& options = {});

// One record type as found in two stores.
struct TableCheck {
  std::string type;   // "message"
  std::string table;  // "messages"
  std::int64_t source_rows = 0;
  std::int64_t target_rows = 0;
  std::string source_sha256;  // hex SHA-256 of the type's export lines, in key order
  std::string target_sha256;
  bool match() const { return source_rows == target_rows && source_sha256 == target_sha256; }
};

struct VerifyReport {
  std::vector<TableCheck> tables;  // every exported type, in file order
  bool match = false;              // all tables match
};

// Counts and checksums every exported type in both stores (each read in one
// snapshot) and compares them. Never throws for a mismatch: see `match`.
CONVSTORE_EXPORT VerifyReport verify_stores(Store& source, Store& target,
                                            const ProgressFn& on_progress = {});

struct CopyOptions {
  std::size_t batch_size = 500;  // rows per INSERT
  ProgressFn on_progress;
  std::int64_t progress_every = 10000;
};

struct CopyReport {
  std::int64_t inserted = 0;            // records written to the target
  std::int64_t unchanged = 0;           // already there with the same content
  std::vector<TypeCount> rows_by_type;  // read from the source
  VerifyReport verification;
};

// Copies every exported record of `from` into `to` (in one transaction on
// `to`, read from one snapshot of `from`), with the import's rules for rows
// already there, then verifies both stores with verify_stores(). Throws
// Error(data_loss) naming the first differing type when they do not match
// (the copied rows stay), Error(conflict) when a row of `to` has the key of a
// copied row but other content (nothing is copied then).
CONVSTORE_EXPORT CopyReport copy_store(Store& from, Store& to, const CopyOptions& options = {});

struct BackupOptions {
  int pages_per_step = 1024;  // pages copied per sqlite3_backup_step()
  ProgressFn on_progress;     // after each step, in pages
};

// A consistent online backup of a SQLite store to the file `path` (replaced
// if it exists; written to "<path>.part" first, then renamed), with SQLite's
// backup API: the copy is taken from one read snapshot, step by step, while
// other connections keep writing. On PostgreSQL throws Error(not_supported):
// use pg_dump / pg_restore (see the README).
CONVSTORE_EXPORT void backup(Store& store, std::string_view path,
                             const BackupOptions& options = {});

}  // namespace convstore
