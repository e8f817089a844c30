// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
//
// The built finance_bot binary, run as a user runs it: against a local stub
// of the Telegram Bot API (several users, replies out of order, a SIGKILL and
// a restart in the middle), and offline with --updates. On each backend; the
// results are checked in the sheet, in what was sent, and in the store
// through the public API.

#include <fcntl.h>
#include <httplib.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <mutex>
#include <thread>

#include "bot.hpp"
#include "support.hpp"

using namespace convstore;
using testing::contains;
using testing::in_order;
using testing::program_path;
using testing::read_file;
using testing::TempDir;
using Clock = std::chrono::steady_clock;

namespace {

const std::string kToken = "123456:TEST-secret-token-e2e";

// Polls `done` every 20 ms for up to `limit`.
bool wait_until(const std::function<bool()>& done,
                std::chrono::milliseconds limit = std::chrono::seconds(20)) {
  const auto deadline = Clock::now() + limit;
  while (Clock::now() < deadline) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return done();
}

// A Bot API stub on 127.0.0.1 (a free port): getUpdates serves the queued
// updates from the requested offset (dropping the confirmed ones, as
// Telegram does) and long-polls up to 1 s; sendMessage records the message
// and answers with a new message id (5000, 5001, ...).
class BotApiStub {
 public:
  struct Sent {
    std::string chat_id;
    std::string text;
    std::optional<std::int64_t> reply_to;
    std::int64_t message_id = 0;
  };

  BotApiStub() {
    server_.Post(R"(/bot([^/]+)/getUpdates)",
                 [this](const httplib::Request& req, httplib::Response& res) {
                   if (!authorized(req, res)) return;
                   get_updates(req, res);
                 });
    server_.Post(R"(/bot([^/]+)/sendMessage)",
                 [this](const httplib::Request& req, httplib::Response& res) {
                   if (!authorized(req, res)) return;
                   send_message(req, res);
                 });
    server_.set_keep_alive_max_count(100000);  // one connection per bot process
    port_ = server_.bind_to_any_port("127.0.0.1");
    REQUIRE(port_ > 0);
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    REQUIRE(wait_until([this] { return server_.is_running(); }));
  }
  ~BotApiStub() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    server_.stop();
    thread_.join();
  }
  BotApiStub(const BotApiStub&) = delete;
  BotApiStub& operator=(const BotApiStub&) = delete;

  std::string base_url() const { return "http://127.0.0.1:" + std::to_string(port_); }

  void push(Json update) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      updates_.push_back(std::move(update));
    }
    cv_.notify_all();
  }
  std::vector<Sent> sent() {
    std::lock_guard<std::mutex> lock(mu_);
    return sent_;
  }
  std::int64_t max_offset() {
    std::lock_guard<std::mutex> lock(mu_);
    return max_offset_;
  }
  int unauthorized() {
    std::lock_guard<std::mutex> lock(mu_);
    return unauthorized_;
  }

 private:
  bool authorized(const httplib::Request& req, httplib::Response& res) {
    if (req.matches.size() > 1 && req.matches[1] == kToken) return true;
    std::lock_guard<std::mutex> lock(mu_);
    ++unauthorized_;
    res.status = 401;
    res.set_content(R"({"ok":false,"error_code":401,"description":"Unauthorized"})",
                    "application/json");
    return false;
  }

  void get_updates(const httplib::Request& req, httplib::Response& res) {
    Json body = Json::parse(req.body, nullptr, false);
    const std::int64_t offset = body.is_object() ? body.value("offset", std::int64_t{0}) : 0;
    const std::int64_t timeout = body.is_object() ? body.value("timeout", std::int64_t{0}) : 0;
    std::unique_lock<std::mutex> lock(mu_);
    max_offset_ = std::max(max_offset_, offset);
    auto ready = [&] {
      updates_.erase(std::remove_if(updates_.begin(), updates_.end(),
                                    [&](const Json& u) { return u["update_id"] < offset; }),
                     updates_.end());
      return stopping_ || !updates_.empty();
    };
    cv_.wait_for(lock, std::chrono::seconds(std::min<std::int64_t>(timeout, 1)), ready);
    ready();
    Json result = Json::array();
    for (const auto& u : updates_) result.push_back(u);
    res.set_content(Json{{"ok", true}, {"result", result}}.dump(), "application/json");
  }

  void send_message(const httplib::Request& req, httplib::Response& res) {
    Json body = Json::parse(req.body, nullptr, false);
    if (!body.is_object() || !body.contains("chat_id") || !body.contains("text")) {
      res.status = 400;
      res.set_content(R"({"ok":false,"error_code":400,"description":"Bad Request"})",
                      "application/json");
      return;
    }
    std::lock_guard<std::mutex> lock(mu_);
    Sent s;
    s.chat_id =
        body["chat_id"].is_string() ? body["chat_id"].get<std::string>() : body["chat_id"].dump();
    s.text = body["text"].get<std::string>();
    if (body.contains("reply_to_message_id")) {
      s.reply_to = body["reply_to_message_id"].get<std::int64_t>();
    }
    s.message_id = next_id_++;
    sent_.push_back(s);
    res.set_content(
        Json{{"ok", true},
             {"result",
              {{"message_id", s.message_id}, {"chat", {{"id", s.chat_id}}}, {"text", s.text}}}}
            .dump(),
        "application/json");
  }

  httplib::Server server_;
  std::thread thread_;
  int port_ = 0;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::vector<Json> updates_;
  std::vector<Sent> sent_;
  std::int64_t next_id_ = 5000;
  std::int64_t max_offset_ = 0;
  int unauthorized_ = 0;
};

// The finance_bot binary as a child process: stdout and stderr to files,
// `env` ("NAME=value") added to (or replacing in) this process's environment.
class BotProcess {
 public:
  BotProcess(const std::vector<std::string>& args, const std::vector<std::string>& env,
             const std::string& log_base, const std::string& stdin_file = "/dev/null")
      : out_(log_base + ".out"), err_(log_base + ".err") {
    const std::string path = program_path("FINANCE_BOT", FINANCE_BOT_PATH);
    REQUIRE_MESSAGE(std::filesystem::exists(path), "the finance_bot binary is missing: " << path);
    std::vector<std::string> env_strings;
    for (const auto& entry : testing::environment()) {
      bool replaced = false;
      for (const auto& mine : env) {
        replaced =
            replaced || entry.compare(0, mine.find('=') + 1, mine, 0, mine.find('=') + 1) == 0;
      }
      if (!replaced) env_strings.push_back(entry);
    }
    for (const auto& mine : env) env_strings.push_back(mine);
    std::vector<std::string> argv = {path};
    argv.insert(argv.end(), args.begin(), args.end());
    pid_ = testing::spawn(argv, env_strings, stdin_file, out_, err_);
  }
  ~BotProcess() {
    if (pid_ > 0) kill_hard();
  }
  BotProcess(const BotProcess&) = delete;
  BotProcess& operator=(const BotProcess&) = delete;

  void kill_hard() {
    ::kill(pid_, SIGKILL);
    int status = 0;
    while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    pid_ = -1;
  }
  // Waits up to `limit` for the process to exit; kills it (and fails) when
  // it does not. Returns the exit status (-1: killed by a signal).
  int wait_exit(std::chrono::milliseconds limit = std::chrono::seconds(30)) {
    int status = 0;
    const bool exited = wait_until([&] { return waitpid(pid_, &status, WNOHANG) == pid_; }, limit);
    if (!exited) {
      kill_hard();
      FAIL("finance_bot did not exit in time; stderr: " << err());
      return -1;
    }
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }
  // SIGTERM, then wait_exit.
  int stop() {
    ::kill(pid_, SIGTERM);
    return wait_exit(std::chrono::seconds(15));
  }
  std::string out() const { return read_file(out_); }
  std::string err() const { return read_file(err_); }

 private:
  pid_t pid_ = -1;
  std::string out_;
  std::string err_;
};

Json message_update(std::int64_t update_id, std::int64_t message_id, std::int64_t user,
                    const std::string& name, const std::string& text,
                    std::optional<std::int64_t> reply_to = std::nullopt) {
  Json m = {{"message_id", message_id},
            {"date", 1767258000 + update_id},
            {"chat", {{"id", user}, {"type", "private"}}},
            {"from", {{"id", user}, {"first_name", name}}},
            {"text", text}};
  if (reply_to) m["reply_to_message"] = {{"message_id", *reply_to}, {"chat", {{"id", user}}}};
  return {{"update_id", update_id}, {"message", m}};
}

// The question the bot sent in `chat` in reply to message `to`.
std::optional<BotApiStub::Sent> reply_in(const std::vector<BotApiStub::Sent>& sent,
                                         const std::string& chat, std::int64_t to) {
  for (const auto& s : sent) {
    if (s.chat_id == chat && s.reply_to == std::optional<std::int64_t>(to)) return s;
  }
  return std::nullopt;
}

std::vector<std::string> online_env(const BotApiStub& stub, const std::string& token = kToken) {
  return {"TELEGRAM_API_BASE=" + stub.base_url(), "TELEGRAM_BOT_TOKEN=" + token};
}

}  // namespace

TEST_CASE_TEMPLATE("finance_bot end to end: users interleave, reply out of order, bot restarts", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  TempDir dir;
  const std::string sheet = dir.file("finance.csv");
  const std::vector<std::string> args = {"--db", db.url(), "--sheet", sheet, "--poll-timeout", "1"};
  BotApiStub stub;
  const std::int64_t alice = 101, bob = 202;

  auto first = std::make_unique<BotProcess>(args, online_env(stub), dir.file("run1"));
  stub.push(message_update(1, 1, alice, "Alice", "coffee 300"));
  stub.push(message_update(2, 1, bob, "Bob", "taxi 450"));
  stub.push(message_update(3, 2, alice, "Alice", "lunch 700"));
  REQUIRE_MESSAGE(wait_until([&] { return stub.sent().size() >= 3; }), first->err());
  auto sent = stub.sent();
  auto q_coffee = reply_in(sent, "101", 1);
  auto q_taxi = reply_in(sent, "202", 1);
  auto q_lunch = reply_in(sent, "101", 2);
  REQUIRE(q_coffee.has_value());
  REQUIRE(q_taxi.has_value());
  REQUIRE(q_lunch.has_value());
  CHECK(q_coffee->text == "Which account did you pay from (cash, card, bank)?");
  CHECK(q_taxi->text == q_coffee->text);

  // Alice answers her older question first (by reply-to).
  stub.push(message_update(4, 3, alice, "Alice", "card", q_coffee->message_id));
  REQUIRE(wait_until([&] { return stub.sent().size() >= 4; }));
  CHECK(stub.sent()[3].text == "Recorded expense: coffee 300 from card (food), row 1.");
  CHECK(stub.sent()[3].reply_to == std::optional<std::int64_t>(3));
  // Update 4 is committed once the bot asks for offset 5. Then it is killed
  // with two questions open; two updates arrive while it is down.
  REQUIRE(wait_until([&] { return stub.max_offset() >= 5; }));
  first->kill_hard();
  const std::string first_log = first->out() + first->err();
  first.reset();
  stub.push(message_update(5, 2, bob, "Bob", "salary 5000"));  // a new, complete operation
  stub.push(message_update(6, 4, alice, "Alice", "cash", q_lunch->message_id));

  BotProcess second(args, online_env(stub), dir.file("run2"));
  stub.push(message_update(7, 3, bob, "Bob", "cash"));  // no reply-to: Bob's one open question
  stub.push(message_update(8, 3, bob, "Bob", "cash"));  // the same message redelivered
  REQUIRE_MESSAGE(wait_until([&] { return stub.sent().size() >= 7 && stub.max_offset() >= 9; }),
                  second.err());
  CHECK(second.stop() == 0);

  sent = stub.sent();
  REQUIRE(sent.size() == 7);  // nothing sent twice
  CHECK(sent[4].chat_id == "202");
  CHECK(sent[4].reply_to == std::optional<std::int64_t>(2));
  CHECK(sent[4].text == "Recorded income: salary 5000 to bank, row 2.");
  CHECK(sent[5].chat_id == "101");
  CHECK(sent[5].reply_to == std::optional<std::int64_t>(4));
  CHECK(sent[5].text == "Recorded expense: lunch 700 from cash (food), row 3.");
  CHECK(sent[6].chat_id == "202");
  CHECK(sent[6].reply_to == std::optional<std::int64_t>(3));
  CHECK(sent[6].text == "Recorded expense: taxi 450 from cash (transport), row 4.");
  CHECK(stub.unauthorized() == 0);

  // The sheet: one row per operation, in the order they completed.
  finance_bot::CsvSheet csv(sheet);
  auto rows = csv.rows();
  REQUIRE(rows.size() == 4);
  const std::vector<std::string> descriptions = {"coffee", "salary", "lunch", "taxi"};
  const std::vector<std::string> users = {"101", "202", "101", "202"};
  for (std::size_t i = 0; i < rows.size(); ++i) {
    CAPTURE(i);
    REQUIRE(rows[i].size() == finance_bot::CsvSheet::header().size());
    CHECK(rows[i][0] == std::to_string(i + 1));
    CHECK(rows[i][4] == descriptions[i]);
    CHECK(rows[i][8] == users[i]);
  }

  // The store, through the public API: every conversation completed with
  // its row, questions answered, messages threaded by platform ids.
  auto store = db.open();
  auto& cs = store.conversations();
  auto row_of_question = [&](const std::string& chat, std::int64_t message_id) {
    auto hit = cs.find_by_platform_id("telegram", chat, std::to_string(message_id));
    REQUIRE(hit.has_value());
    CHECK(hit->message.role == Role::assistant);
    CHECK(hit->conversation.status == ConversationStatus::completed);
    CHECK(cs.open_questions(hit->conversation.id).empty());
    auto complete = cs.latest_data(hit->conversation.id, DataKind::complete);
    REQUIRE(complete.has_value());
    CHECK(complete->data["sheet_row"].dump() == hit->conversation.external_ref.value_or(""));
    return hit->conversation.external_ref.value_or("");
  };
  CHECK(row_of_question("101", q_coffee->message_id) == "1");
  CHECK(row_of_question("101", q_lunch->message_id) == "3");
  CHECK(row_of_question("202", q_taxi->message_id) == "4");

  auto alice_user = cs.find_user("telegram", "101");
  REQUIRE(alice_user.has_value());
  CHECK(alice_user->display_name == std::optional<std::string>("Alice"));
  ConversationFilter f;
  f.user_id = alice_user->id;
  auto alices = cs.list(f).items;
  REQUIRE(alices.size() == 2);
  for (const auto& c : alices) {
    CHECK(c.status == ConversationStatus::completed);
    CHECK(c.chat_id == std::optional<std::string>("101"));
    CHECK(c.message_count == 4);  // question, answer, and the two replies
  }
  auto coffee = cs.find_by_platform_id("telegram", "101", "1");
  REQUIRE(coffee.has_value());
  auto messages = cs.recent(coffee->conversation.id, 10);
  REQUIRE(messages.size() == 4);
  CHECK(messages[1].platform_message_id == std::to_string(q_coffee->message_id));
  CHECK(messages[2].content == "card");
  CHECK(messages[2].reply_to_platform_id == std::to_string(q_coffee->message_id));
  auto stats = store.stats();
  CHECK(stats.conversations == 4);
  CHECK(stats.completed == 4);

  // The token is never printed.
  CHECK_FALSE(contains(first_log + second.out() + second.err(), "TEST-secret-token"));
}

TEST_CASE("finance_bot end to end: a refused token is reported without the token") {
  testing::TestDb db("sqlite");
  TempDir dir;
  BotApiStub stub;
  BotProcess bot({"--db", db.url(), "--sheet", dir.file("f.csv"), "--poll-timeout", "1"},
                 online_env(stub, "999:WRONG-secret-token"), dir.file("run"));
  REQUIRE(wait_until([&] { return stub.unauthorized() >= 1; }));
  CHECK(bot.stop() == 0);
  const std::string log = bot.out() + bot.err();
  CHECK(contains(log, "getUpdates failed: HTTP 401: Unauthorized"));
  CHECK_FALSE(contains(log, "WRONG-secret-token"));

  // No token at all: a clear error, exit status 2.
  BotProcess none({"--db", db.url()}, {"TELEGRAM_BOT_TOKEN="}, dir.file("none"));
  CHECK(none.wait_exit() == 2);
  CHECK(contains(none.err(), "TELEGRAM_BOT_TOKEN is not set"));
}

TEST_CASE_TEMPLATE("finance_bot --updates: the demo, run again, continued from stdin", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  TempDir dir;
  const std::string sheet = dir.file("demo.csv");
  const std::vector<std::string> args = {"--db", db.url(), "--sheet", sheet, "--updates"};
  auto with = [&](const std::string& file) {
    auto a = args;
    a.push_back(file);
    return a;
  };

  BotProcess demo(with(FINANCE_BOT_DEMO_UPDATES), {}, dir.file("demo"));
  REQUIRE(demo.wait_exit() == 0);
  const std::string out = demo.out();
  CHECK_MESSAGE(
      in_order(out,
               {"<- chat 42 from alice #1: coffee 300",
                "-> chat 42 (reply to 1) #1000001: Which account did you pay from (cash, card, "
                "bank)?",
                "-> chat 77 (reply to 1) #1000001: Recorded income: salary 5000 to bank, row 1.",
                "-> chat 77 (reply to 2) #1000002: Recorded expense: taxi 450 from card "
                "(transport), row 2.",
                "<- chat 42 from alice #2 (reply to 1000001): cash",
                "-> chat 42 (reply to 2) #1000002: Recorded expense: coffee 300 from cash "
                "(food), row 3.",
                "-> chat 77 (reply to 3) #1000003: Which category is it",
                "-> chat 42 (reply to 3) #1000003: Recorded transfer: 1000 from card to savings, "
                "row 4.",
                "-> chat 77 (reply to 4) #1000004: Recorded expense: flowers 2000 from card "
                "(gifts), row 5.",
                "-> chat 42 (reply to 4) #1000004: How much was it?",
                "-> chat 42 (reply to 5) #1000005: Which account did you pay from",
                "-> chat 42 (reply to 6) #1000006: Recorded expense: lunch 650 from card (food), "
                "row 6."}),
      out << demo.err());
  finance_bot::CsvSheet csv(sheet);
  CHECK(csv.rows().size() == 6);
  {
    auto store = db.open();
    CHECK(store.stats().completed == 6);
    CHECK(store.stats().active == 0);
  }

  // The same updates again: nothing is processed twice.
  BotProcess again(with(FINANCE_BOT_DEMO_UPDATES), {}, dir.file("again"));
  REQUIRE(again.wait_exit() == 0);
  CHECK(contains(again.out(), "(update 1 was already processed)"));
  CHECK_FALSE(contains(again.out(), "-> chat"));
  CHECK(csv.rows().size() == 6);

  // A question left open when the program ends is answered by the next run
  // (stdin, a getUpdates response).
  const std::string part1 = dir.file("part1.jsonl");
  std::ofstream(part1) << message_update(11, 7, 42, "Alice", "dinner 900").dump() << "\n";
  BotProcess ask(with(part1), {}, dir.file("ask"));
  REQUIRE(ask.wait_exit() == 0);
  CHECK(contains(ask.out(), "-> chat 42 (reply to 7) #1000007: Which account did you pay from"));
  const std::string part2 = dir.file("part2.json");
  std::ofstream(part2)
      << Json{{"ok", true}, {"result", {message_update(12, 8, 42, "Alice", "cash", 1000007)}}}.dump(
             2);
  BotProcess answer(with("-"), {}, dir.file("answer"), part2);
  REQUIRE(answer.wait_exit() == 0);
  CHECK_MESSAGE(contains(answer.out(),
                         "-> chat 42 (reply to 8) #1000008: Recorded expense: dinner "
                         "900 from cash (food), row 7."),
                answer.out() << answer.err());
  CHECK(csv.rows().size() == 7);
}
