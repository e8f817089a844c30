// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#pragma once

// The arguments of every command of the convstore tool, as app.cpp parses
// them, and the functions that run them. Each run_* returns the exit status
// and throws UsageError, convstore::Error or another std::exception, which
// app.cpp prints as "convstore: error: ...".
//
// migrate, stats and show are in commands.cpp; export, import, copy,
// backup, prune, search and forget-user in commands_data.cpp.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

namespace convstore::cli {

struct MigrateArgs {
  std::string url;
  bool dry_run = false;
  bool json = false;
};

struct StatsArgs {
  std::string url;
  bool operations = false;  // also the operation counters of this process's own calls
  bool json = false;
};

struct ShowArgs {
  std::string url;
  std::string conversation;  // a numeric id or a conversation key
  std::size_t last = 0;      // only the newest N messages (0: all)
  std::size_t page_size = 200;
  bool json = false;
};

struct ExportArgs {
  std::string url;
  std::string file;  // JSON Lines; "-" for stdout
  bool quiet = false;
  bool json = false;  // a JSON summary of the counts on stdout
};

struct ImportArgs {
  std::string url;
  std::string file;  // JSON Lines; "-" for stdin
  bool skip_bad_lines = false;
  bool quiet = false;
  bool json = false;
};

struct CopyArgs {
  std::string from_url;
  std::string to_url;
  bool quiet = false;
  bool json = false;
};

struct BackupArgs {
  std::string url;
  std::string file;
  bool quiet = false;
  bool json = false;
};

struct PruneArgs {
  std::string url;
  std::optional<std::chrono::seconds> completed_older_than;
  std::optional<std::chrono::seconds> idle_after;
  std::optional<std::size_t> keep_last_messages;
  bool archive = false;                // move to the archive tables instead of deleting
  bool anonymize = false;              // blank the text, keep the counts
  std::optional<std::string> channel;  // only conversations of this channel
  std::optional<std::string> agent;    // only conversations of this agent
  bool remove_orphans = false;         // orphaned session-scoped agent state
  bool remove_expired = false;         // expired cache rows and web sessions
  std::optional<std::chrono::seconds> finished_tasks_older_than;
  std::optional<std::string> now;  // ISO 8601: the time the ages count from
  bool dry_run = false;
  std::size_t batch_size = 500;
  bool quiet = false;
  bool json = false;
};

struct SearchArgs {
  std::string url;
  std::string text;
  std::optional<std::string> user;          // numeric user id or CHANNEL:EXTERNAL_ID
  std::optional<std::string> conversation;  // numeric id or key
  std::optional<std::string> role;          // user, assistant, system, tool
  std::optional<std::string> since;         // ISO 8601 time, inclusive
  std::optional<std::string> until;         // ISO 8601 time, exclusive
  std::size_t limit = 20;
  bool json = false;
};

struct ForgetUserArgs {
  std::string url;
  std::string channel;
  std::string external_id;
  bool json = false;
};

// commands.cpp
int run_migrate(const MigrateArgs& args);
int run_stats(const StatsArgs& args);
int run_show(const ShowArgs& args);

// commands_data.cpp
int run_export(const ExportArgs& args);
int run_import(const ImportArgs& args);
int run_copy(const CopyArgs& args);
int run_backup(const BackupArgs& args);
int run_prune(const PruneArgs& args);
int run_search(const SearchArgs& args);
int run_forget_user(const ForgetUserArgs& args);

// The tool: parses `argv`, runs the command, prints errors. Returns the
// exit status.
int run(int argc, char** argv);

}  // namespace convstore::cli
