// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
//
// The commands that move or change data: export, import, copy, backup,
// prune, search, forget-user. Each opens the store with open_existing()
// (copy opens its target with Store::open, so that it is migrated), calls
// the library, and prints the result: with --json the library's report as
// JSON on stdout, else a short human-readable summary. Long commands report
// progress through Progress (progress.hpp) on stderr only, so stdout keeps
// the result. Errors are thrown; app.cpp prints them (redacted) and sets the
// exit status.

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <convstore/portability.hpp>
#include <convstore/retention.hpp>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "commands.hpp"
#include "common.hpp"
#include "errors.hpp"
#include "progress.hpp"
#include "redact.hpp"

namespace convstore::cli {

namespace {

// Rows between two calls of the library's progress callback: Progress
// itself limits what is printed (ten redraws, or one line, a second).
constexpr std::int64_t kProgressEvery = 1000;

// The library's progress callback feeding `progress`; `unit` names what
// `done` counts.
ProgressFn report_to(Progress& progress, std::string unit) {
  return [&progress, unit = std::move(unit)](const convstore::Progress& p) {
    progress.update(p.done, p.total > 0 ? std::optional<std::int64_t>(p.total) : std::nullopt,
                    unit);
  };
}

Json counts_json(const std::vector<TypeCount>& counts) {
  Json out = Json::object();
  for (const auto& c : counts) out[c.type] = c.rows;
  return out;
}

// "user 2, conversation 3, message 12" (types without rows left out).
std::string counts_text(const std::vector<TypeCount>& counts) {
  std::string out;
  for (const auto& c : counts) {
    if (c.rows == 0) continue;
    if (!out.empty()) out += ", ";
    out += fmt::format("{} {}", c.type, c.rows);
  }
  return out.empty() ? std::string("nothing") : out;
}

}  // namespace

// export URL FILE: the JSON Lines export of the whole database into FILE
// ("-": stdout, the summary then goes to stderr), progress in rows.
int run_export(const ExportArgs& args) {
  const bool to_stdout = args.file == "-";
  if (to_stdout && args.json) {
    throw UsageError("export: --json prints on stdout, which FILE '-' already uses");
  }
  Store store = open_existing(args.url);
  Progress progress("exported", Progress::mode_for(args.quiet));
  ExportOptions options;
  options.on_progress = report_to(progress, "rows");
  options.progress_every = kProgressEvery;
  ExportReport report;
  if (to_stdout) {
    report = export_jsonl(store, std::cout, options);
  } else {
    std::ofstream out(args.file, std::ios::binary | std::ios::trunc);
    if (!out) {
      throw Error(ErrorCode::unavailable,
                  fmt::format("export: cannot write '{}': {}", args.file, std::strerror(errno)));
    }
    try {
      report = export_jsonl(store, out, options);
      out.close();
      if (!out) throw Error(ErrorCode::unavailable, "export: writing the output failed");
    } catch (...) {
      // Leave no half-written export behind.
      out.close();
      std::error_code ec;
      if (std::filesystem::is_regular_file(args.file, ec)) std::filesystem::remove(args.file, ec);
      throw;
    }
  }
  progress.finish();
  if (args.json) {
    print_json({{"database", redact_url(args.url)},
                {"file", args.file},
                {"schema_version", report.schema_version},
                {"rows", report.rows},
                {"rows_by_type", counts_json(report.rows_by_type)}});
    return 0;
  }
  std::ostream& out = to_stdout ? std::cerr : std::cout;
  if (to_stdout && args.quiet) return 0;
  out << fmt::format("exported {} to {} (schema version {}): {}\n", counted(report.rows, "row"),
                     to_stdout ? std::string("stdout") : args.file, report.schema_version,
                     counts_text(report.rows_by_type));
  return 0;
}

// import URL FILE [--skip-bad-lines]: validate and import JSON Lines
// (idempotent, one transaction); a bad line names its line number and
// imports nothing unless --skip-bad-lines. Progress in lines (total unknown).
int run_import(const ImportArgs& args) {
  std::ifstream file;
  if (args.file != "-") {
    file.open(args.file, std::ios::binary);
    if (!file) {
      throw Error(ErrorCode::not_found,
                  fmt::format("import: cannot read '{}': {}", args.file, std::strerror(errno)));
    }
  }
  std::istream& in = args.file == "-" ? std::cin : file;
  Store store = open_existing(args.url);
  Progress progress("imported", Progress::mode_for(args.quiet));
  ImportOptions options;
  options.skip_bad_lines = args.skip_bad_lines;
  options.on_progress = report_to(progress, "lines");
  options.progress_every = kProgressEvery;
  ImportReport report = import_jsonl(store, in, options);
  progress.finish();
  if (args.json) {
    Json skipped = Json::array();
    for (const auto& b : report.skipped) {
      skipped.push_back({{"line", b.line}, {"reason", b.reason}});
    }
    print_json({{"database", redact_url(args.url)},
                {"file", args.file},
                {"lines", report.lines},
                {"inserted", report.inserted},
                {"unchanged", report.unchanged},
                {"inserted_by_type", counts_json(report.inserted_by_type)},
                {"skipped", skipped}});
    return 0;
  }
  std::cout << fmt::format("imported {}: {} read, {} inserted, {} unchanged, {} skipped\n",
                           args.file == "-" ? std::string("stdin") : args.file,
                           counted(report.lines, "line"), counted(report.inserted, "row"),
                           report.unchanged,
                           counted(static_cast<std::int64_t>(report.skipped.size()), "line"));
  if (report.inserted > 0) {
    std::cout << fmt::format("inserted: {}\n", counts_text(report.inserted_by_type));
  }
  for (const auto& b : report.skipped) {
    std::cout << fmt::format("skipped line {}: {}\n", b.line, b.reason);
  }
  return 0;
}

// copy FROM_URL TO_URL: copy everything (the target is migrated by open),
// then print the verification (counts and checksums per type); exit 1 if
// it does not match.
int run_copy(const CopyArgs& args) {
  Store from = open_existing(args.from_url);
  Options options;
  options.pool_size = 2;
  options.migrate = true;
  Store to = Store::open(args.to_url, options);

  Progress progress("copied", Progress::mode_for(args.quiet));
  CopyOptions copy;
  copy.progress_every = kProgressEvery;
  copy.on_progress = [&](const convstore::Progress& p) {
    if (p.stage == "verify") {
      progress.update(p.done, std::nullopt, "rows verified");
    } else {
      progress.update(p.done, p.total > 0 ? std::optional<std::int64_t>(p.total) : std::nullopt,
                      "rows");
    }
  };
  std::optional<CopyReport> report;
  VerifyReport verification;
  std::string failure;
  try {
    report = copy_store(from, to, copy);
    verification = report->verification;
  } catch (const Error& e) {
    if (e.code() != ErrorCode::data_loss) throw;
    // The rows were copied but the stores differ: show how.
    failure = e.what();
    verification = verify_stores(from, to);
  }
  progress.finish();

  if (args.json) {
    Json tables = Json::array();
    for (const auto& t : verification.tables) {
      tables.push_back({{"type", t.type},
                        {"table", t.table},
                        {"source_rows", t.source_rows},
                        {"target_rows", t.target_rows},
                        {"source_sha256", t.source_sha256},
                        {"target_sha256", t.target_sha256},
                        {"match", t.match()}});
    }
    Json out = {{"from", redact_url(args.from_url)},
                {"to", redact_url(args.to_url)},
                {"match", verification.match},
                {"tables", tables}};
    if (report) {
      out["inserted"] = report->inserted;
      out["unchanged"] = report->unchanged;
      out["rows_by_type"] = counts_json(report->rows_by_type);
    }
    print_json(out);
  } else {
    if (report) {
      std::cout << fmt::format("copied {} -> {}: {} inserted, {} already there\n",
                               redact_url(args.from_url), redact_url(args.to_url),
                               counted(report->inserted, "row"), report->unchanged);
    }
    std::cout << fmt::format("{:<22} {:>10} {:>10}  {}\n", "type", "source", "target", "checksum");
    for (const auto& t : verification.tables) {
      std::cout << fmt::format("{:<22} {:>10} {:>10}  {}\n", t.type, t.source_rows, t.target_rows,
                               t.match()
                                   ? std::string("match")
                                   : fmt::format("DIFFERS ({} / {})", t.source_sha256.substr(0, 12),
                                                 t.target_sha256.substr(0, 12)));
    }
    std::cout << (verification.match ? "verified: source and target match\n"
                                     : "NOT verified: source and target differ\n");
  }
  if (!verification.match) {
    throw Error(ErrorCode::data_loss,
                failure.empty() ? std::string("copy: source and target differ") : failure);
  }
  return 0;
}

// backup URL FILE: SQLite online backup into FILE, progress in pages; on
// PostgreSQL the library's not_supported error, pointing to pg_dump.
int run_backup(const BackupArgs& args) {
  Store store = open_existing(args.url);
  Progress progress("backed up", Progress::mode_for(args.quiet));
  BackupOptions options;
  options.on_progress = report_to(progress, "pages");
  backup(store, args.file, options);
  progress.finish();
  std::error_code ec;
  const auto bytes = std::filesystem::file_size(args.file, ec);
  if (args.json) {
    print_json({{"database", redact_url(args.url)},
                {"file", args.file},
                {"bytes", ec ? Json(nullptr) : Json(bytes)}});
    return 0;
  }
  std::cout << fmt::format("backed up {} to {} ({} bytes)\n", redact_url(args.url), args.file,
                           ec ? std::string("?") : std::to_string(bytes));
  return 0;
}

// prune URL [policy options] [--dry-run]: the library's retention policy,
// run in batches with progress, then the report (what was / would be done).
int run_prune(const PruneArgs& args) {
  using std::chrono::milliseconds;
  RetentionPolicy policy;
  if (args.completed_older_than)
    policy.completed_older_than = milliseconds(*args.completed_older_than);
  policy.completed_action = args.archive     ? RetentionAction::archive
                            : args.anonymize ? RetentionAction::anonymize
                                             : RetentionAction::remove;
  if (args.idle_after) policy.abandon_idle_after = milliseconds(*args.idle_after);
  policy.keep_last_messages = args.keep_last_messages;
  policy.channel = args.channel;
  policy.agent = args.agent;
  policy.remove_orphans = args.remove_orphans;
  policy.remove_expired_cache = args.remove_expired;
  if (args.finished_tasks_older_than) {
    policy.finished_tasks_older_than = milliseconds(*args.finished_tasks_older_than);
  }

  Store store = open_existing(args.url);
  Progress progress(args.dry_run ? "checked (dry run)" : "pruned", Progress::mode_for(args.quiet));
  RetentionRun run;
  run.dry_run = args.dry_run;
  run.batch_size = args.batch_size;
  if (args.now) run.now = parse_timestamp(*args.now);
  std::int64_t conversations = 0;
  run.progress = [&](const RetentionProgress& p) {
    conversations += p.conversations;
    progress.update(conversations, std::nullopt,
                    fmt::format("conversations (batch {}, {})", p.batch, p.phase));
  };
  const RetentionReport report = store.retention().run(policy, run);
  progress.finish();

  if (args.json) {
    Json out = to_json(report);
    out["database"] = redact_url(args.url);
    print_json(out);
    return 0;
  }
  const RetentionCounts& t = report.totals;
  std::cout << fmt::format("{}: {} as of {}{}\n", redact_url(args.url),
                           report.dry_run ? "retention dry run" : "retention run",
                           format_time(report.now), report.dry_run ? " (nothing was changed)" : "");
  const char* verb = report.dry_run ? "would be " : "";
  std::cout << fmt::format("  {:<30} {:>13} {:>10}\n", "", "conversations", "messages");
  auto row = [&](const std::string& what, std::int64_t c, std::optional<std::int64_t> m) {
    std::cout << fmt::format("  {:<30} {:>13} {:>10}\n", verb + what, c,
                             m ? std::to_string(*m) : std::string("-"));
  };
  row("deleted", t.conversations_deleted, t.messages_deleted);
  row("archived", t.conversations_archived, t.messages_archived);
  row("anonymized", t.conversations_anonymized, t.messages_anonymized);
  row("trimmed", t.conversations_trimmed, t.messages_trimmed);
  row("abandoned", t.conversations_abandoned, std::nullopt);
  std::cout << fmt::format("  content bytes {}removed: {}\n", verb, t.bytes_removed);
  auto groups = [&](const char* title, const std::map<std::string, RetentionCounts>& by) {
    for (const auto& [name, c] : by) {
      if (c == RetentionCounts{}) continue;
      std::cout << fmt::format(
          "  {} {}: deleted {}, archived {}, anonymized {}, trimmed {}, abandoned {} "
          "(messages {})\n",
          title, name.empty() ? std::string("(none)") : name, c.conversations_deleted,
          c.conversations_archived, c.conversations_anonymized, c.conversations_trimmed,
          c.conversations_abandoned,
          c.messages_deleted + c.messages_archived + c.messages_anonymized + c.messages_trimmed);
    }
  };
  groups("channel", report.by_channel);
  groups("agent", report.by_agent);
  if (args.remove_orphans) {
    std::cout << fmt::format("  orphaned agent states {}removed: {}\n", verb,
                             report.orphaned_states);
  }
  if (args.remove_expired) {
    std::cout << fmt::format(
        "  expired {}removed: cache entries {}, cache fields {}, cache waiters {}, web "
        "sessions {}\n",
        verb, report.cache_entries, report.cache_fields, report.cache_waiters, report.web_sessions);
  }
  if (args.finished_tasks_older_than) {
    std::cout << fmt::format("  finished tasks {}removed: {}\n", verb, report.tasks);
  }
  std::cout << fmt::format("  batches: {}\n", report.batches);
  return 0;
}

// search URL TEXT [--user U] [--conversation C] [--role R] [--since T]
// [--until T] [--limit N]: one page of the full-text search, best first; each
// hit with its message, conversation, time, role and highlighted snippet
// (bold on a terminal, [brackets] otherwise and in JSON).
int run_search(const SearchArgs& args) {
  Store store = open_existing(args.url);
  auto& conversations = store.conversations();
  SearchQuery q;
  q.text = args.text;
  q.limit = args.limit;
  if (args.user) {
    const std::string& ref = *args.user;
    auto colon = ref.find(':');
    std::optional<User> user;
    if (colon != std::string::npos) {
      user = conversations.find_user(ref.substr(0, colon), ref.substr(colon + 1));
    } else if (!ref.empty() && ref.size() <= 18 &&
               ref.find_first_not_of("0123456789") == std::string::npos) {
      user = conversations.get_user(std::stoll(ref));
    } else {
      throw UsageError(
          fmt::format("search: --user '{}': give a numeric user id or CHANNEL:EXTERNAL_ID", ref));
    }
    if (!user) throw Error(ErrorCode::not_found, fmt::format("user '{}' not found", ref));
    q.user_id = user->id;
  }
  if (args.conversation) q.conversation_id = find_conversation(store, *args.conversation).id;
  if (args.role) q.role = parse_role(*args.role);
  if (args.since) q.from = parse_timestamp(*args.since);
  if (args.until) q.to = parse_timestamp(*args.until);
  const bool bold = !args.json && isatty(STDOUT_FILENO) == 1;
  if (bold) {
    q.highlight_open = "\033[1m";
    q.highlight_close = "\033[0m";
  }
  const Page<SearchHit> page = conversations.search(q);

  if (args.json) {
    Json hits = Json::array();
    for (const auto& h : page.items) {
      hits.push_back({{"conversation_id", h.message.conversation_id},
                      {"message_id", h.message.id},
                      {"created_at", to_iso8601(h.message.created_at)},
                      {"role", to_string(h.message.role)},
                      {"rank", h.rank},
                      {"snippet", h.snippet}});
    }
    print_json({{"hits", hits}, {"more", !page.next_cursor.empty()}});
    return 0;
  }
  for (const auto& h : page.items) {
    std::string snippet = h.snippet;
    std::replace(snippet.begin(), snippet.end(), '\n', ' ');
    std::cout << fmt::format("conversation {}  #{}  [{}] {}\n    {}\n", h.message.conversation_id,
                             h.message.id, format_time(h.message.created_at),
                             to_string(h.message.role), snippet);
  }
  if (page.items.empty()) {
    std::cout << "no hits\n";
  } else {
    std::cout << fmt::format("{} hit{}{}\n", page.items.size(), page.items.size() == 1 ? "" : "s",
                             page.next_cursor.empty() ? "" : " (more: raise --limit)");
  }
  return 0;
}

// forget-user URL CHANNEL EXTERNAL_ID: remove every row of the user in one
// transaction and print the receipt (an unknown user, or one under a legal
// hold: the library's error, exit 1, nothing removed).
int run_forget_user(const ForgetUserArgs& args) {
  Store store = open_existing(args.url);
  const ForgetReceipt receipt = store.retention().forget_user(args.channel, args.external_id);
  if (args.json) {
    Json out = to_json(receipt);
    out["channel"] = args.channel;
    out["external_id"] = args.external_id;
    print_json(out);
    return 0;
  }
  std::cout << fmt::format("forgot user {} ({}:{}): {} removed\n", receipt.user_id, args.channel,
                           args.external_id, counted(receipt.total, "row"));
  for (const auto& [table, rows] : receipt.rows) {
    std::cout << fmt::format("  {:<28} {:>8}\n", table, rows);
  }
  for (const auto& note : receipt.notes) std::cout << fmt::format("note: {}\n", note);
  return 0;
}

}  // namespace convstore::cli
