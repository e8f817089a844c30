// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
//
// The commands whose library part is in this build: migrate, stats, show.

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <iostream>
#include <vector>

#include "commands.hpp"
#include "common.hpp"
#include "redact.hpp"

namespace convstore::cli {

namespace {

Json migrations_json(const std::vector<SchemaMigration>& migrations) {
  Json out = Json::array();
  for (const auto& m : migrations) {
    out.push_back({{"version", m.version}, {"description", m.description}});
  }
  return out;
}

Json operations_json(const std::vector<OperationStats>& operations) {
  Json out = Json::array();
  for (const auto& o : operations) {
    out.push_back(to_json(o));
  }
  return out;
}

Json storage_json(const std::vector<StorageStats>& groups) {
  Json out = Json::array();
  for (const auto& g : groups) {
    Json j = to_json(g);
    j.erase("would_remove");  // no policy given
    out.push_back(std::move(j));
  }
  return out;
}

// Conversations, messages and content per channel or agent.
void print_storage(const char* what, const std::vector<StorageStats>& groups) {
  std::cout << fmt::format("\nper {}:\n", what);
  if (groups.empty()) {
    std::cout << "  (no conversations)\n";
    return;
  }
  std::cout << fmt::format("  {:<20} {:>13} {:>8} {:>9} {:>10} {:>14}  {}\n", what, "conversations",
                           "active", "completed", "messages", "content bytes", "oldest");
  for (const auto& g : groups) {
    std::cout << fmt::format("  {:<20} {:>13} {:>8} {:>9} {:>10} {:>14}  {}\n",
                             g.group.empty() ? std::string("(none)") : g.group, g.conversations,
                             g.active, g.completed, g.messages, g.content_bytes,
                             g.oldest ? format_time(*g.oldest) : std::string("-"));
  }
}

void print_operations(const std::vector<OperationStats>& operations) {
  std::cout << "\noperations (the calls of this stats command only: counters are per process):\n";
  std::cout << fmt::format("  {:<32} {:>6} {:>6} {:>9} {:>10} {:>10}\n", "action", "calls",
                           "errors", "conflicts", "p50 us", "p99 us");
  for (const auto& o : operations) {
    std::cout << fmt::format("  {:<32} {:>6} {:>6} {:>9} {:>10.0f} {:>10.0f}\n", o.action, o.calls,
                             o.errors, o.conflicts, o.p50_us, o.p99_us);
  }
}

}  // namespace

// ---- migrate ----------------------------------------------------------------

int run_migrate(const MigrateArgs& args) {
  const std::string shown = redact_url(args.url);
  SchemaStatus before;
  auto file = sqlite_file(args.url);
  std::error_code ec;
  if (file && !std::filesystem::exists(*file, ec)) {
    // Nothing there yet: every migration is pending. Not even a dry run
    // creates the file.
    before.backend = "sqlite";
    before.library_version = Store::library_schema_version();
    before.pending = Store::schema_migrations();
  } else {
    before = Store::inspect_schema(args.url);
  }
  if (before.database_version > before.library_version) {
    throw Error(ErrorCode::failed_precondition,
                fmt::format("{}: the database schema is version {}, newer than this convstore "
                            "understands (version {}); upgrade convstore",
                            shown, before.database_version, before.library_version));
  }

  if (args.dry_run) {
    if (args.json) {
      print_json({{"database", shown},
                  {"backend", before.backend},
                  {"dry_run", true},
                  {"schema_version", before.database_version},
                  {"library_schema_version", before.library_version},
                  {"pending", migrations_json(before.pending)}});
      return 0;
    }
    std::cout << fmt::format("{}: schema version {}, this convstore writes version {}\n", shown,
                             before.database_version, before.library_version);
    if (before.pending.empty()) {
      std::cout << "up to date: no migration to apply\n";
    } else {
      std::cout << fmt::format("{} migration{} would be applied:\n", before.pending.size(),
                               before.pending.size() == 1 ? "" : "s");
      for (const auto& m : before.pending) {
        std::cout << fmt::format("  {:>3}  {}\n", m.version, m.description);
      }
    }
    return 0;
  }

  Options options;
  options.pool_size = 1;
  options.migrate = true;
  Store store = Store::open(args.url, options);
  const int after = store.schema_version();
  std::vector<SchemaMigration> applied;
  for (const auto& m : Store::schema_migrations()) {
    if (m.version > before.database_version && m.version <= after) applied.push_back(m);
  }
  if (args.json) {
    print_json({{"database", shown},
                {"backend", store.backend()},
                {"dry_run", false},
                {"schema_version_before", before.database_version},
                {"schema_version", after},
                {"library_schema_version", Store::library_schema_version()},
                {"applied", migrations_json(applied)}});
    return 0;
  }
  if (applied.empty()) {
    std::cout << fmt::format("{}: schema version {}, up to date (nothing applied)\n", shown, after);
  } else {
    std::cout << fmt::format("{}: schema version {} -> {} ({} migration{} applied)\n", shown,
                             before.database_version, after, applied.size(),
                             applied.size() == 1 ? "" : "s");
    for (const auto& m : applied) {
      std::cout << fmt::format("  {:>3}  {}\n", m.version, m.description);
    }
  }
  return 0;
}

// ---- stats ------------------------------------------------------------------

int run_stats(const StatsArgs& args) {
  Store store = open_existing(args.url);
  const Health health = store.health();
  const Stats s = store.stats();
  auto& retention = store.retention();
  const std::vector<StorageStats> by_channel = retention.storage_stats(StatsGroup::channel);
  const std::vector<StorageStats> by_agent = retention.storage_stats(StatsGroup::agent);
  // The counters are read last, so that they include the queries above.
  std::vector<OperationStats> operations;
  if (args.operations) {
    for (auto& o : store.operation_stats()) {
      if (o.calls > 0) operations.push_back(std::move(o));
    }
  }
  if (args.json) {
    Json health_json = {{"ok", health.ok},
                        {"round_trip_us", health.round_trip.count()},
                        {"schema_version", health.schema_version}};
    if (!health.error.empty()) health_json["error"] = redactor()(health.error);
    Json out = {{"database", redact_url(args.url)},
                {"backend", store.backend()},
                {"schema_version", health.schema_version},
                {"library_schema_version", Store::library_schema_version()},
                {"health", health_json},
                {"counts", to_json(s)}};
    out["by_channel"] = storage_json(by_channel);
    out["by_agent"] = storage_json(by_agent);
    if (args.operations) out["operations"] = operations_json(operations);
    print_json(out);
    return 0;
  }
  std::cout << fmt::format("database:       {}\n", redact_url(args.url));
  std::cout << fmt::format("backend:        {}\n", store.backend());
  std::cout << fmt::format("schema version: {} (this convstore: {})\n", health.schema_version,
                           Store::library_schema_version());
  if (health.ok) {
    std::cout << fmt::format("health:         ok, round trip {} us\n", health.round_trip.count());
  } else {
    std::cout << fmt::format("health:         NOT OK: {}\n", redactor()(health.error));
  }
  std::cout << fmt::format("users:          {}\n", s.users);
  std::cout << fmt::format(
      "conversations:  {} (active {}, completed {}, abandoned {}, archived {})\n", s.conversations,
      s.active, s.completed, s.abandoned, s.archived);
  std::cout << fmt::format("messages:       {}\n", s.messages);
  std::cout << fmt::format("agents:         {}\n", s.agents);
  print_storage("channel", by_channel);
  print_storage("agent", by_agent);
  if (args.operations) print_operations(operations);
  return health.ok ? 0 : 1;
}

// ---- show -------------------------------------------------------------------

namespace {

std::string describe_user(const User& u) {
  std::string out = fmt::format("{} ({}:{}", u.id, u.channel, u.external_id);
  if (u.username) out += fmt::format(", @{}", *u.username);
  if (u.display_name) out += fmt::format(", {}", *u.display_name);
  return out + ")";
}

void print_header(const Conversation& c, const std::optional<User>& user) {
  auto opt = [](const std::optional<std::string>& s) { return s ? *s : std::string("-"); };
  std::cout << fmt::format("conversation {}\n", c.id);
  std::cout << fmt::format("  key:      {}\n", opt(c.key));
  if (user) {
    std::cout << fmt::format("  user:     {}\n", describe_user(*user));
  } else {
    std::cout << fmt::format("  user:     {}\n",
                             c.user_id ? std::to_string(*c.user_id) : std::string("-"));
  }
  std::cout << fmt::format("  channel:  {}   chat: {}\n", c.channel.empty() ? "-" : c.channel,
                           opt(c.chat_id));
  std::cout << fmt::format("  agent:    {}   active agent: {}\n", opt(c.agent),
                           opt(c.active_agent));
  if (c.title) std::cout << fmt::format("  title:    {}\n", *c.title);
  if (c.kind) std::cout << fmt::format("  kind:     {}\n", *c.kind);
  if (c.model_override) std::cout << fmt::format("  model:    {}\n", *c.model_override);
  std::cout << fmt::format("  status:   {}\n", to_string(c.status));
  std::cout << fmt::format("  messages: {}   last message: {}\n", c.message_count,
                           c.last_message_at ? format_time(*c.last_message_at) : "-");
  std::cout << fmt::format("  created:  {}   updated: {}\n", format_time(c.created_at),
                           format_time(c.updated_at));
}

void print_message(const Message& m) {
  std::string head = fmt::format("[{}] #{} {}", format_time(m.created_at), m.id, to_string(m.role));
  if (m.kind != MessageKind::text) head += fmt::format(" ({})", to_string(m.kind));
  if (m.agent) head += fmt::format("  agent: {}", *m.agent);
  if (m.model) head += fmt::format("  model: {}", *m.model);
  if (m.token_count) head += fmt::format("  tokens: {}", *m.token_count);
  if (!m.complete) head += "  [streaming, incomplete]";
  std::cout << head << '\n';
  if (m.tool_name || !m.tool_args.is_null()) {
    std::cout << fmt::format("    tool: {}{}{}\n", m.tool_name ? *m.tool_name : "-",
                             m.tool_args.is_null() ? "" : " ",
                             m.tool_args.is_null() ? "" : m.tool_args.dump());
  }
  // The content, indented, line by line.
  std::size_t start = 0;
  do {
    std::size_t end = m.content.find('\n', start);
    std::cout << "    "
              << m.content.substr(start, end == std::string::npos ? std::string::npos : end - start)
              << '\n';
    start = end == std::string::npos ? std::string::npos : end + 1;
  } while (start != std::string::npos);
}

}  // namespace

int run_show(const ShowArgs& args) {
  Store store = open_existing(args.url);
  const Conversation c = find_conversation(store, args.conversation);
  std::optional<User> user;
  if (c.user_id) user = store.conversations().get_user(*c.user_id);

  // Messages are read a page at a time (keyset pagination on the id), so a
  // long conversation is never loaded whole. With --last N, the newest N
  // are found first (newest first, in pages), then printed oldest first.
  std::optional<MessageId> after;
  std::size_t remaining = 0;  // 0: no limit
  if (args.last > 0) {
    HistoryQuery q;
    q.newest_first = true;
    q.limit = std::min<std::size_t>(args.last, args.page_size);
    std::size_t seen = 0;
    std::optional<MessageId> before;
    while (seen < args.last) {
      q.before = before;
      q.limit = std::min(args.page_size, args.last - seen);
      auto page = store.conversations().history(c.id, q);
      if (page.empty()) break;
      seen += page.size();
      before = page.back().id;
      if (page.size() < q.limit) break;
    }
    // The oldest of the newest N is `before`: start just before it.
    if (before) {
      HistoryQuery probe;
      probe.before = *before;
      probe.newest_first = true;
      probe.limit = 1;
      auto older = store.conversations().history(c.id, probe);
      if (!older.empty()) after = older.front().id;
    }
    remaining = args.last;
  }

  auto for_each_message = [&](auto&& fn) {
    HistoryQuery q;
    std::size_t printed = 0;
    while (true) {
      q.after = after;
      q.limit = remaining > 0 ? std::min(args.page_size, remaining - printed) : args.page_size;
      if (q.limit == 0) break;
      auto page = store.conversations().history(c.id, q);
      for (const auto& m : page) fn(m);
      printed += page.size();
      if (page.size() < q.limit) break;
      after = page.back().id;
    }
  };

  if (args.json) {
    // Streamed as one JSON document: the messages are never all in memory.
    Json head = {{"conversation", to_json(c)}};
    head["user"] = user ? to_json(*user) : Json(nullptr);
    std::string text = head.dump(-1, ' ', false, Json::error_handler_t::replace);
    text.pop_back();  // the closing '}'
    std::cout << text << ",\"messages\":[";
    bool first = true;
    for_each_message([&](const Message& m) {
      if (!first) std::cout << ',';
      first = false;
      std::cout << '\n' << to_json(m).dump(-1, ' ', false, Json::error_handler_t::replace);
    });
    std::cout << "\n]}\n";
    return 0;
  }
  print_header(c, user);
  std::cout << '\n';
  for_each_message([](const Message& m) { print_message(m); });
  return 0;
}

}  // namespace convstore::cli
