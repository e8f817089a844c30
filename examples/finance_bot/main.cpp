// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
//
// finance_bot: the expense / income tracking Telegram bot of seed 000 on
// convstore. Online it long-polls the Bot API; with --updates it reads
// updates from a file (or stdin) and prints its replies.

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <convstore/convstore.hpp>
#include <csignal>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <optional>
#include <string>
#include <thread>

#include "bot.hpp"
#include "telegram.hpp"

namespace {

using namespace finance_bot;
using Clock = std::chrono::steady_clock;

volatile std::sig_atomic_t g_stop = 0;

void on_signal(int) { g_stop = 1; }

std::string env_or(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return (v != nullptr && *v != '\0') ? std::string(v) : fallback;
}

// "90s", "15m", "24h", "7d"; "off" is std::nullopt.
std::optional<std::chrono::milliseconds> parse_duration(const std::string& text) {
  if (text == "off") return std::nullopt;
  std::size_t digits = 0;
  while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9') ++digits;
  if (digits == 0 || digits > 9 || digits + 1 != text.size()) {
    throw CLI::ValidationError("'" + text + "' is not a duration (like 90s, 15m, 24h, 7d or off)");
  }
  const long long n = std::stoll(text.substr(0, digits));
  if (n <= 0) throw CLI::ValidationError("'" + text + "' is not a positive duration");
  using std::chrono::hours;
  using std::chrono::milliseconds;
  using std::chrono::minutes;
  using std::chrono::seconds;
  switch (text.back()) {
    case 's':
      return std::chrono::duration_cast<milliseconds>(seconds(n));
    case 'm':
      return std::chrono::duration_cast<milliseconds>(minutes(n));
    case 'h':
      return std::chrono::duration_cast<milliseconds>(hours(n));
    case 'd':
      return std::chrono::duration_cast<milliseconds>(hours(24 * n));
    default:
      throw CLI::ValidationError("'" + text +
                                 "' is not a duration (like 90s, 15m, 24h, 7d or off)");
  }
}

// Sleeps up to `d`, waking early on SIGINT / SIGTERM.
void pause_for(std::chrono::milliseconds d) {
  const auto until = Clock::now() + d;
  while (g_stop == 0 && Clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

// Offline: replies go to stdout. The bot's message to user message N gets
// the id 1000000 + N (stable across runs, so an update file can reply to it).
class StdoutMessenger : public Messenger {
 public:
  std::optional<std::int64_t> send(const Reply& reply, const IncomingMessage& cause) override {
    const std::int64_t id = 1000000 + cause.message_id;
    std::cout << "-> chat " << reply.chat_id;
    if (reply.reply_to) std::cout << " (reply to " << *reply.reply_to << ")";
    std::cout << " #" << id << ": " << reply.text << std::endl;
    return id;
  }
};

struct Settings {
  std::string db;
  std::string sheet = "finance.csv";
  std::string updates;
  std::string abandon_after = "24h";
  std::string retention_every = "10m";
  int poll_timeout = 25;
};

void run_retention(Bot& bot, const std::optional<std::chrono::milliseconds>& idle) {
  if (!idle) return;
  auto report = bot.abandon_idle(*idle);
  if (report.totals.conversations_abandoned > 0) {
    std::cerr << "finance_bot: abandoned " << report.totals.conversations_abandoned
              << " idle conversation(s)\n";
  }
}

int run_offline(convstore::Store& store, CsvSheet& sheet, const Settings& s,
                const std::optional<std::chrono::milliseconds>& idle) {
  StdoutMessenger messenger;
  Bot bot(store, sheet, messenger);
  run_retention(bot, idle);
  std::ifstream file;
  std::istream* in = &std::cin;
  if (s.updates != "-") {
    file.open(s.updates);
    if (!file) {
      std::cerr << "finance_bot: error: cannot open " << s.updates << "\n";
      return 1;
    }
    in = &file;
  }
  read_updates(*in, [&](const convstore::Json& j) {
    const Update u = update_from_json(j);
    if (u.message) {
      const auto& m = *u.message;
      std::cout << "<- chat " << m.chat_id << " from "
                << m.username.value_or(m.display_name.value_or(m.user_id)) << " #" << m.message_id;
      if (m.reply_to) std::cout << " (reply to " << *m.reply_to << ")";
      std::cout << ": " << m.text << std::endl;
    }
    const auto outcome = bot.handle(u);
    if (outcome == Bot::Outcome::duplicate || (outcome == Bot::Outcome::skipped && u.message)) {
      std::cout << "   (update " << u.update_id << " was already processed)" << std::endl;
    }
  });
  return 0;
}

int run_online(convstore::Store& store, CsvSheet& sheet, const Settings& s,
               const std::optional<std::chrono::milliseconds>& idle,
               std::chrono::milliseconds retention_every) {
  const std::string token = env_or("TELEGRAM_BOT_TOKEN", "");
  const std::string base = env_or("TELEGRAM_API_BASE", "https://api.telegram.org");
  // SIGINT / SIGTERM end the loop after the current poll (offline, they
  // keep their default action).
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  TelegramApi api(base, token);
  TelegramMessenger messenger(api);
  Bot bot(store, sheet, messenger);
  std::cerr << "finance_bot: polling " << mask_secret(base, token) << " (" << store.backend()
            << " store, sheet " << sheet.path() << ")" << std::endl;

  run_retention(bot, idle);
  auto last_retention = Clock::now();
  std::chrono::milliseconds backoff(500);
  const auto grow = [&] { backoff = std::min(backoff * 2, std::chrono::milliseconds(30000)); };
  while (g_stop == 0) {
    try {
      if (idle && Clock::now() - last_retention >= retention_every) {
        run_retention(bot, idle);
        last_retention = Clock::now();
      }
      const auto updates = api.get_updates(bot.next_offset(), std::chrono::seconds(s.poll_timeout));
      for (const auto& j : updates) {
        if (g_stop != 0) break;
        Update u;
        try {
          u = update_from_json(j);
        } catch (const std::invalid_argument& e) {
          std::cerr << "finance_bot: skipping a malformed update: " << e.what() << "\n";
          if (j.is_object() && j.contains("update_id") && j["update_id"].is_number_integer()) {
            bot.handle(Update{j["update_id"].get<std::int64_t>(), std::nullopt});
          }
          continue;
        }
        try {
          bot.handle(u);
        } catch (const convstore::Error& e) {
          if (e.retryable()) throw;
          // Bad input the store refuses (invalid UTF-8, ...): never retried.
          std::cerr << "finance_bot: skipping update " << u.update_id << ": " << e.what() << "\n";
          bot.handle(Update{u.update_id, std::nullopt});
        }
      }
      backoff = std::chrono::milliseconds(500);
    } catch (const TelegramError& e) {
      std::cerr << "finance_bot: " << mask_secret(e.what(), token) << "\n";
      if (e.retry_after()) {
        pause_for(std::chrono::duration_cast<std::chrono::milliseconds>(*e.retry_after()));
      } else {
        pause_for(backoff);
        grow();
      }
    } catch (const std::exception& e) {
      // The store is unreachable, the sheet cannot be written, ...: the
      // update was not committed and is fetched again.
      std::cerr << "finance_bot: " << mask_secret(e.what(), token) << " (retrying)\n";
      pause_for(backoff);
      grow();
    }
  }
  std::cerr << "finance_bot: stopped" << std::endl;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Settings s;
  s.db = env_or("CONVSTORE_URL", "sqlite:finance_bot.db");
  CLI::App app{
      "finance_bot: the seed-000 expense / income Telegram bot on convstore.\n"
      "Online (default) it long-polls the Bot API: token in TELEGRAM_BOT_TOKEN, base URL in\n"
      "TELEGRAM_API_BASE (default https://api.telegram.org). With --updates it reads Bot API\n"
      "updates (JSON Lines, a JSON array or a getUpdates response) and prints its replies.",
      "finance_bot"};
  app.add_option("--db", s.db, "convstore URL (default $CONVSTORE_URL or sqlite:finance_bot.db)");
  app.add_option("--sheet", s.sheet, "CSV file the operations are appended to")
      ->capture_default_str();
  app.add_option("--updates", s.updates, "read updates from FILE ('-': stdin) instead of Telegram");
  app.add_option("--abandon-after", s.abandon_after,
                 "abandon conversations idle this long (90s, 15m, 24h, 7d, off)")
      ->capture_default_str();
  app.add_option("--retention-every", s.retention_every, "how often retention runs when online")
      ->capture_default_str();
  app.add_option("--poll-timeout", s.poll_timeout, "getUpdates long-poll timeout in seconds")
      ->check(CLI::Range(0, 50))
      ->capture_default_str();
  std::optional<std::chrono::milliseconds> idle;
  std::chrono::milliseconds every{};
  try {
    app.parse(argc, argv);
    idle = parse_duration(s.abandon_after);
    auto e = parse_duration(s.retention_every);
    if (!e) throw CLI::ValidationError("--retention-every cannot be off");
    every = *e;
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::cerr << "finance_bot: error: " << e.what() << "\n";
    return 2;
  }

  std::signal(SIGPIPE, SIG_IGN);
  if (s.updates.empty() && env_or("TELEGRAM_BOT_TOKEN", "").empty()) {
    std::cerr << "finance_bot: error: TELEGRAM_BOT_TOKEN is not set (or run offline with "
                 "--updates FILE)\n";
    return 2;
  }
  try {
    auto store = convstore::Store::open(s.db);
    CsvSheet sheet(s.sheet);
    if (!s.updates.empty()) return run_offline(store, sheet, s, idle);
    return run_online(store, sheet, s, idle, every);
  } catch (const std::exception& e) {
    std::cerr << "finance_bot: error: " << mask_secret(e.what(), env_or("TELEGRAM_BOT_TOKEN", ""))
              << "\n";
    return 1;
  }
}
