// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
//
// The convstore tool's command line: every command with its arguments and
// options (CLI11), dispatch, and the one place where errors are printed.

#include <CLI/CLI.hpp>
#include <convstore/convstore.hpp>
#include <convstore/version.hpp>
#include <functional>
#include <iostream>
#include <string>
#include <vector>

#include "commands.hpp"
#include "duration.hpp"
#include "errors.hpp"
#include "redact.hpp"

namespace convstore::cli {

namespace {

constexpr const char* kUrlHelp =
    "database URL: sqlite:PATH, postgresql://USER[:PASSWORD]@HOST[:PORT]/DB or a libpq "
    "key=value string (a password is never printed)";

void print_error(const std::string& message) {
  std::cout.flush();
  std::cerr << "convstore: error: " << redactor()(message) << '\n';
  std::cerr.flush();
}

// Checks a duration option while the command line is parsed: a bad value
// is a usage error naming it.
CLI::Validator duration_validator() {
  return CLI::Validator(
      [](std::string& value) -> std::string {
        try {
          parse_duration(value);
          return {};
        } catch (const std::exception& e) {
          return e.what();
        }
      },
      "DURATION");
}

struct Command {
  CLI::App* app;
  std::function<int()> run;
};

}  // namespace

int run(int argc, char** argv) {
  // Every argument that may hold a password, before anything can print it.
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a.find("://") != std::string_view::npos || a.find("password=") != std::string_view::npos) {
      redactor().remember(a);
    }
  }

  CLI::App app{
      "convstore: look after a convstore database (SQLite or PostgreSQL).\n"
      "Run 'convstore COMMAND --help' for a command's arguments and options.\n"
      "Exit status: 0 success, 1 the command failed, 2 a command-line error.",
      "convstore"};
  app.set_version_flag("--version", std::string("convstore ") + CONVSTORE_VERSION_STRING);
  app.require_subcommand(1);
  app.get_formatter()->label("SUBCOMMAND", "COMMAND");
  app.get_formatter()->label("Subcommands", "Commands");
  std::vector<Command> commands;

  // ---- migrate ----
  MigrateArgs migrate;
  {
    auto* c = app.add_subcommand(
        "migrate",
        "Apply the missing schema migrations; print the schema version before and after");
    c->add_option("URL", migrate.url, kUrlHelp)->required();
    c->add_flag("--dry-run", migrate.dry_run,
                "list the migrations that would be applied, apply none");
    c->add_flag("--json", migrate.json, "print the result as JSON");
    commands.push_back({c, [&] { return run_migrate(migrate); }});
  }

  // ---- stats ----
  StatsArgs stats;
  {
    auto* c =
        app.add_subcommand("stats", "Print row counts, schema version and health of the database");
    c->add_option("URL", stats.url, kUrlHelp)->required();
    c->add_flag("--operations", stats.operations,
                "also print the operation counters (calls, errors, latency) of the calls this "
                "stats command made: counters are per process, so they never describe "
                "another program's use of the database");
    c->add_flag("--json", stats.json, "print the statistics as JSON");
    commands.push_back({c, [&] { return run_stats(stats); }});
  }

  // ---- show ----
  ShowArgs show;
  {
    auto* c = app.add_subcommand("show", "Print a conversation as a readable transcript");
    c->add_option("URL", show.url, kUrlHelp)->required();
    c->add_option("CONVERSATION", show.conversation,
                  "the conversation's numeric id or its key (an id wins when a key is all digits)")
        ->required();
    c->add_option("--last", show.last, "only the newest N messages")
        ->check(CLI::Range(std::size_t{1}, std::size_t{1000000000}));
    c->add_option("--page-size", show.page_size,
                  "messages read from the database at a time (1..10000)")
        ->check(CLI::Range(std::size_t{1}, std::size_t{10000}))
        ->capture_default_str();
    c->add_flag("--json", show.json,
                "print {\"conversation\", \"user\", \"messages\": [...]} as JSON");
    commands.push_back({c, [&] { return run_show(show); }});
  }

  // ---- The data commands (commands_data.cpp) ----

  ExportArgs export_args;
  {
    auto* c = app.add_subcommand("export", "Export the database as JSON Lines into FILE");
    c->add_option("URL", export_args.url, kUrlHelp)->required();
    c->add_option("FILE", export_args.file, "the JSON Lines file to write ('-': stdout)")
        ->required();
    c->add_flag("-q,--quiet", export_args.quiet, "no progress on stderr");
    c->add_flag("--json", export_args.json, "print the summary as JSON");
    commands.push_back({c, [&] { return run_export(export_args); }});
  }

  ImportArgs import_args;
  {
    auto* c = app.add_subcommand(
        "import", "Import a JSON Lines file (idempotent; all or nothing unless --skip-bad-lines)");
    c->add_option("URL", import_args.url, kUrlHelp)->required();
    c->add_option("FILE", import_args.file, "the JSON Lines file to read ('-': stdin)")->required();
    c->add_flag("--skip-bad-lines", import_args.skip_bad_lines,
                "skip the lines that do not validate (reported) instead of importing nothing");
    c->add_flag("-q,--quiet", import_args.quiet, "no progress on stderr");
    c->add_flag("--json", import_args.json, "print the summary as JSON");
    commands.push_back({c, [&] { return run_import(import_args); }});
  }

  CopyArgs copy;
  {
    auto* c = app.add_subcommand(
        "copy",
        "Copy all data from one database to another (e.g. SQLite to PostgreSQL), then verify "
        "counts and checksums (exit 1 if they differ)");
    c->add_option("FROM_URL", copy.from_url, "the source database URL")->required();
    c->add_option("TO_URL", copy.to_url, "the target database URL (migrated if needed)")
        ->required();
    c->add_flag("-q,--quiet", copy.quiet, "no progress on stderr");
    c->add_flag("--json", copy.json, "print the verification as JSON");
    commands.push_back({c, [&] { return run_copy(copy); }});
  }

  BackupArgs backup;
  {
    auto* c = app.add_subcommand(
        "backup",
        "Consistent online backup of a live SQLite database into FILE (PostgreSQL: use "
        "pg_dump)");
    c->add_option("URL", backup.url, kUrlHelp)->required();
    c->add_option("FILE", backup.file, "the backup file to write")->required();
    c->add_flag("-q,--quiet", backup.quiet, "no progress on stderr");
    c->add_flag("--json", backup.json, "print the summary as JSON");
    commands.push_back({c, [&] { return run_backup(backup); }});
  }

  PruneArgs prune;
  std::string completed_older_than, idle_after, finished_tasks_older_than;
  std::string prune_channel, prune_agent, prune_now;
  std::size_t keep_last_messages = 0;
  CLI::App* prune_app = nullptr;
  {
    auto* c = prune_app = app.add_subcommand(
        "prune",
        "Apply a retention policy in batches: remove (or archive, or anonymize) old completed "
        "conversations, mark idle ones abandoned, trim long ones; legal holds are honoured");
    c->add_option("URL", prune.url, kUrlHelp)->required();
    c->add_option("--completed-older-than", completed_older_than,
                  "remove completed conversations last active longer ago than this (30d, 24h, "
                  "90m, 45s, 1h30m)")
        ->check(duration_validator());
    c->add_option("--idle-after", idle_after,
                  "mark active conversations idle for longer than this abandoned (e.g. 24h)")
        ->check(duration_validator());
    c->add_option("--keep-last-messages", keep_last_messages,
                  "in active conversations keep only the newest N messages (system messages "
                  "and the newest turn are always kept)")
        ->check(CLI::Range(std::size_t{1}, std::size_t{1000000000}));
    auto* archive = c->add_flag("--archive", prune.archive,
                                "move old completed conversations to the archive tables "
                                "instead of deleting them");
    c->add_flag("--anonymize", prune.anonymize,
                "blank the text of old completed conversations but keep the rows and counts")
        ->excludes(archive);
    c->add_option("--channel", prune_channel, "only conversations of this channel");
    c->add_option("--agent", prune_agent, "only conversations of this agent");
    c->add_flag("--remove-orphans", prune.remove_orphans,
                "also remove session-scoped agent state whose conversation is gone");
    c->add_flag("--remove-expired", prune.remove_expired,
                "also remove expired session-cache rows and expired or revoked web sessions");
    c->add_option("--finished-tasks-older-than", finished_tasks_older_than,
                  "also remove tasks that finished longer ago than this")
        ->check(duration_validator());
    c->add_option("--now", prune_now,
                  "count the ages from this time (ISO 8601) instead of the current time: a "
                  "--dry-run and the real run then see the same conversations");
    c->add_option("--batch-size", prune.batch_size, "conversations per transaction (1..100000)")
        ->check(CLI::Range(std::size_t{1}, std::size_t{100000}))
        ->capture_default_str();
    c->add_flag("--dry-run", prune.dry_run, "report what would be done, change nothing");
    c->add_flag("-q,--quiet", prune.quiet, "no progress on stderr");
    c->add_flag("--json", prune.json, "print the report as JSON");
    commands.push_back(
        {c, [&] {
           auto given = [&](const char* name) { return prune_app->count(name) > 0; };
           if (given("--completed-older-than")) {
             prune.completed_older_than = parse_duration(completed_older_than);
           }
           if (given("--idle-after")) prune.idle_after = parse_duration(idle_after);
           if (given("--keep-last-messages")) {
             prune.keep_last_messages = keep_last_messages;
           }
           if (given("--finished-tasks-older-than")) {
             prune.finished_tasks_older_than = parse_duration(finished_tasks_older_than);
           }
           if (given("--channel")) prune.channel = prune_channel;
           if (given("--agent")) prune.agent = prune_agent;
           if (given("--now")) {
             try {
               parse_timestamp(prune_now);
             } catch (const std::exception& e) {
               throw UsageError(e.what());
             }
             prune.now = prune_now;
           }
           if ((prune.archive || prune.anonymize) && !prune.completed_older_than) {
             throw UsageError(
                 "prune: --archive and --anonymize apply to "
                 "--completed-older-than, which is missing");
           }
           if (!prune.completed_older_than && !prune.idle_after && !prune.keep_last_messages &&
               !prune.remove_orphans && !prune.remove_expired && !prune.finished_tasks_older_than) {
             throw UsageError(
                 "prune: nothing to do: give --completed-older-than, "
                 "--idle-after, --keep-last-messages, --remove-orphans, "
                 "--remove-expired and/or --finished-tasks-older-than");
           }
           return run_prune(prune);
         }});
  }

  SearchArgs search;
  std::string search_user, search_conversation, search_role, search_since, search_until;
  CLI::App* search_app = nullptr;
  {
    auto* c = search_app = app.add_subcommand(
        "search", "Full-text search over message content: ranked hits with highlighted snippets");
    c->add_option("URL", search.url, kUrlHelp)->required();
    c->add_option("TEXT", search.text, "the words to look for")->required();
    c->add_option("--user", search_user, "only this user: a numeric id or CHANNEL:EXTERNAL_ID");
    c->add_option("--conversation", search_conversation,
                  "only this conversation: a numeric id or a key");
    c->add_option("--role", search_role, "only messages of this role")
        ->check(CLI::IsMember({"user", "assistant", "system", "tool"}));
    c->add_option("--since", search_since, "only messages at or after this time (ISO 8601)");
    c->add_option("--until", search_until, "only messages before this time (ISO 8601)");
    c->add_option("--limit", search.limit, "at most N hits (1..1000)")
        ->check(CLI::Range(std::size_t{1}, std::size_t{1000}))
        ->capture_default_str();
    c->add_flag("--json", search.json, "print the hits as JSON");
    commands.push_back({c, [&] {
                          auto set = [&](const char* name, const std::string& value,
                                         std::optional<std::string>& into) {
                            if (search_app->count(name) > 0) into = value;
                          };
                          set("--user", search_user, search.user);
                          set("--conversation", search_conversation, search.conversation);
                          set("--role", search_role, search.role);
                          set("--since", search_since, search.since);
                          set("--until", search_until, search.until);
                          // A bad time is a usage error, found before any database work.
                          for (const auto* t : {&search.since, &search.until}) {
                            if (!*t) continue;
                            try {
                              parse_timestamp(**t);
                            } catch (const std::exception& e) {
                              throw UsageError(e.what());
                            }
                          }
                          return run_search(search);
                        }});
  }

  ForgetUserArgs forget;
  {
    auto* c = app.add_subcommand(
        "forget-user",
        "Remove every row of one user (conversations, messages, state, sessions, ...) in one "
        "transaction and print a receipt of counts (refused for a user under legal hold)");
    c->add_option("URL", forget.url, kUrlHelp)->required();
    c->add_option("CHANNEL", forget.channel, "the user's channel (telegram, web, ...)")->required();
    c->add_option("EXTERNAL_ID", forget.external_id, "the user's id on that channel")->required();
    c->add_flag("--json", forget.json, "print the receipt as JSON");
    commands.push_back({c, [&] { return run_forget_user(forget); }});
  }

  // An unknown command gets its own message, not CLI11's "arguments were
  // not expected".
  if (argc > 1 && argv[1][0] != '-') {
    bool known = false;
    for (const auto& c : commands) known = known || c.app->get_name() == argv[1];
    if (!known) {
      print_error(std::string("unknown command '") + argv[1] +
                  "' (run 'convstore --help' for the list of commands)");
      return kExitUsage;
    }
  }

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::string hint = " (run 'convstore";
    for (const auto* sub : app.get_subcommands()) hint += " " + sub->get_name();
    print_error(std::string(e.what()) + hint + " --help')");
    return kExitUsage;
  }

  try {
    for (const auto& c : commands) {
      if (c.app->parsed()) return c.run();
    }
    print_error("no command given (run 'convstore --help')");
    return kExitUsage;
  } catch (const UsageError& e) {
    print_error(e.what());
    return kExitUsage;
  } catch (const Error& e) {
    print_error(e.what());
    return kExitFailure;
  } catch (const std::exception& e) {
    print_error(e.what());
    return kExitFailure;
  } catch (...) {
    print_error("unexpected failure");
    return kExitFailure;
  }
}

}  // namespace convstore::cli
