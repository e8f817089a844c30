// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
//
// PHASE-2 WIRING POINTS: the commands whose library part is being written on
// other branches. Their full command-line syntax is registered in app.cpp
// (arguments, options, --help, duration validation); each function below is
// the single place where its library call goes. Until then each one fails
// with NotAvailable: "convstore: error: 'export' is not available in this
// build yet ...", exit status 2.
//
// How to wire one:
//   - open the store with open_existing(args.url) (common.hpp; copy opens the
//     target with Store::open so that it is migrated);
//   - long commands report progress through Progress (progress.hpp):
//       Progress progress("exported", Progress::mode_for(args.quiet));
//       ... library call with a callback (done, total-or-nullopt) ->
//           progress.update(done, total, "messages");
//       progress.finish();
//     progress goes to stderr only; stdout keeps the command's result;
//   - with args.json print the library's receipt/result with print_json()
//     (common.hpp), else a short human-readable summary;
//   - errors: throw; app.cpp prints them (redacted) and sets the exit status.
// Then remove the command's name from the NotAvailable message in errors.hpp
// and the "(coming)" marks in app.cpp's descriptions and in the README.

#include "commands.hpp"
#include "common.hpp"
#include "errors.hpp"
#include "progress.hpp"

namespace convstore::cli {

// export URL FILE: stream the JSON Lines export of the whole database into
// FILE ("-": stdout), progress in messages (total from Store::stats()).
int run_export(const ExportArgs& args) {
  (void)args;
  throw NotAvailable("export");
}

// import URL FILE [--skip-bad-lines]: validate and import JSON Lines
// (idempotent); a bad line names its line number and imports nothing unless
// --skip-bad-lines; progress in lines (total unknown, or the file's size in
// bytes).
int run_import(const ImportArgs& args) {
  (void)args;
  throw NotAvailable("import");
}

// copy FROM_URL TO_URL: copy everything between backends, then print the
// verification (counts and checksums per table); exit 1 if it does not match.
int run_copy(const CopyArgs& args) {
  (void)args;
  throw NotAvailable("copy");
}

// backup URL FILE: SQLite online backup (sqlite3 backup API) into FILE; for
// PostgreSQL an error pointing to pg_dump (README).
int run_backup(const BackupArgs& args) {
  (void)args;
  throw NotAvailable("backup");
}

// prune URL --completed-older-than D --idle-after D [--keep-last-messages N]
// [--archive] [--anonymize] [--batch-size N] [--dry-run]: build the library's
// retention policy from args (durations are already parsed and validated),
// run it in batches with progress, print the report (what was / would be
// removed, per kind).
int run_prune(const PruneArgs& args) {
  (void)args;
  throw NotAvailable("prune");
}

// search URL TEXT [--user U] [--conversation C] [--role R] [--since T]
// [--until T] [--limit N]: full-text search; print each hit with its
// conversation, time, role and highlighted snippet. --user takes a numeric id
// or CHANNEL:EXTERNAL_ID (find_user), --conversation an id or key
// (find_conversation in common.hpp), --since/--until parse_timestamp().
int run_search(const SearchArgs& args) {
  (void)args;
  throw NotAvailable("search");
}

// forget-user URL CHANNEL EXTERNAL_ID: remove every row of the user in one
// call and print the receipt of counts (not found: exit 1).
int run_forget_user(const ForgetUserArgs& args) {
  (void)args;
  throw NotAvailable("forget-user");
}

}  // namespace convstore::cli
