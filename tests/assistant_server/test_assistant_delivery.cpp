// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
//
// An AssistantServer in the test's process, with a reply sender and
// responders of the test's own: approved replies whose delivery fails
// (retryably or for good), and a streamed reply paused in the middle.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "../support.hpp"
#include "responder.hpp"
#include "server.hpp"
#include "server_process.hpp"

using convstore::Json;
using testing::Api;
using testing::parse_sse;
using namespace std::chrono_literals;

namespace {

// Polls `done` every 10 ms until it is true or `limit` has passed; returns
// its last answer.
template <class F>
bool eventually(F done, std::chrono::seconds limit = 20s) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(10ms);
  }
  return true;
}

// An AssistantServer serving on its own thread, stopped when it goes out of
// scope.
class LocalServer {
 public:
  LocalServer(convstore::Store& store, std::shared_ptr<assistant_server::Responder> responder,
              assistant_server::ServerOptions options)
      : server_(store, nullptr, std::move(responder), assistant_server::Clock{},
                std::move(options)) {
    port_ = server_.bind("127.0.0.1", 0);
    runner_ = std::thread([this] { server_.run(); });
    Api api(port_);
    const bool up = eventually([&] { return static_cast<bool>(api.client().Get("/health")); });
    if (!up) {
      server_.stop();
      runner_.join();
    }
    REQUIRE(up);
  }
  ~LocalServer() {
    server_.stop();
    runner_.join();
  }
  LocalServer(const LocalServer&) = delete;
  LocalServer& operator=(const LocalServer&) = delete;
  int port() const { return port_; }

 private:
  assistant_server::AssistantServer server_;
  int port_ = 0;
  std::thread runner_;
};

// The outbound channel of these tests: down (every send times out, a
// retryable error) until it is brought up; a reply containing "refuse" is
// refused for good (a permanent error). Counts the attempts per reply.
class TestSender : public assistant_server::ReplySender {
 public:
  explicit TestSender(bool down) : down_(down) {}
  void send(const convstore::Conversation&, const convstore::Suggestion& s) override {
    std::lock_guard<std::mutex> lock(mutex_);
    ++attempts_[s.id];
    if (s.text().find("refuse") != std::string::npos) {
      throw convstore::Error(convstore::ErrorCode::invalid_argument, "the channel refuses it");
    }
    if (down_) throw convstore::Error(convstore::ErrorCode::unavailable, "the channel timed out");
    sent_.push_back(s.text());
  }
  void set_down(bool down) {
    std::lock_guard<std::mutex> lock(mutex_);
    down_ = down;
  }
  int attempts(convstore::SuggestionId id) {
    std::lock_guard<std::mutex> lock(mutex_);
    return attempts_[id];
  }
  std::vector<std::string> sent() {
    std::lock_guard<std::mutex> lock(mutex_);
    return sent_;
  }

 private:
  std::mutex mutex_;
  bool down_;
  std::map<convstore::SuggestionId, int> attempts_;
  std::vector<std::string> sent_;
};

assistant_server::ServerOptions delivery_options(std::shared_ptr<TestSender> sender,
                                                 std::string name) {
  assistant_server::ServerOptions o;
  o.reply_sender = std::move(sender);
  o.sender = std::move(name);
  // Short, so that a reply whose delivery failed is claimed again soon.
  o.delivery_interval = 20ms;
  o.delivery_lease = 200ms;
  return o;
}

Json user(const std::string& external_id) {
  return Json{{"channel", "web"}, {"external_id", external_id}};
}

std::string conversation_path(std::int64_t id) {
  return "/api/v1/conversations/" + std::to_string(id);
}

std::string review_path(std::int64_t id) { return "/api/v1/reviews/" + std::to_string(id); }

// Starts a review-mode conversation and sends `text`; returns {conversation
// id, suggestion id}.
std::pair<std::int64_t, std::int64_t> suggestion_for(Api& api, const std::string& who,
                                                     const std::string& text) {
  auto c = api.post("/api/v1/conversations", Json{{"user", user(who)}, {"review", true}});
  REQUIRE_MESSAGE(c.status == 201, c.text);
  const std::int64_t id = c.json["id"];
  auto turn = api.post(conversation_path(id) + "/messages", Json{{"content", text}});
  REQUIRE_MESSAGE(turn.status == 201, turn.text);
  return {id, turn.json["suggestion"]["id"].get<std::int64_t>()};
}

// The assistant messages of a conversation, oldest first.
std::vector<std::string> assistant_texts(convstore::Store& store, std::int64_t conversation) {
  std::vector<std::string> out;
  for (const auto& m : store.conversations().recent(conversation, 100)) {
    if (m.role == convstore::Role::assistant) out.push_back(m.content);
  }
  return out;
}

convstore::ReviewStatus status_of(convstore::Store& store, convstore::SuggestionId id) {
  auto s = store.reviews().get(id);
  REQUIRE(s.has_value());
  return s->status;
}

}  // namespace

TEST_CASE_TEMPLATE(
    "assistant_server: a reply whose delivery failed retryably is delivered later, unasked", B,
    CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto sender = std::make_shared<TestSender>(/*down=*/true);
  LocalServer server(store, std::make_shared<assistant_server::BuiltinResponder>(),
                     delivery_options(sender, "test-a"));
  Api api(server.port());
  std::int64_t conversation = 0, s1 = 0;
  std::tie(conversation, s1) = suggestion_for(api, "alice", "hello");

  // The channel times out: the approval stands, the reply is not delivered
  // and not failed. (The request tries to deliver it, unless the background
  // delivery claimed it first: then it says nothing about the delivery.)
  auto approved = api.post(review_path(s1) + "/approve", Json::object());
  REQUIRE_MESSAGE(approved.status == 200, approved.text);
  CHECK(approved.json["status"] == "approved");
  CHECK(approved.json["message"].is_null());
  if (!approved.json["delivery_error"].is_null()) {
    CHECK(approved.json["delivery_error"]["category"] == "unavailable");
    CHECK(approved.json["delivery_error"]["message"] == "the channel timed out");
    CHECK(approved.json["delivery_error"]["retry"] == true);
  }
  CHECK(assistant_texts(store, conversation).empty());

  // The background delivery tries it again (once its claim has expired),
  // still without marking it failed while the channel is down.
  REQUIRE(eventually([&] { return sender->attempts(s1) >= 3; }));
  CHECK(status_of(store, s1) == convstore::ReviewStatus::approved);
  CHECK_FALSE(store.reviews().get(s1)->error.has_value());
  CHECK(assistant_texts(store, conversation).empty());

  // The channel is back: delivered with no other request, once.
  sender->set_down(false);
  REQUIRE(eventually([&] { return status_of(store, s1) == convstore::ReviewStatus::sent; }));
  const auto texts = assistant_texts(store, conversation);
  REQUIRE(texts.size() == 1);
  CHECK(texts[0] == "You said: hello");
  REQUIRE(sender->sent().size() == 1);
  CHECK(sender->sent()[0] == "You said: hello");
  auto got = api.get(review_path(s1));
  CHECK(got.json["status"] == "sent");

  // A permanent error marks the reply failed at its first attempt; nothing
  // is stored, and it is not tried again.
  std::int64_t other = 0, s2 = 0;
  std::tie(other, s2) = suggestion_for(api, "bob", "hi");
  auto refused = api.post(review_path(s2) + "/approve", Json{{"text", "please refuse this"}});
  REQUIRE_MESSAGE(refused.status == 200, refused.text);
  CHECK(refused.json["message"].is_null());
  if (!refused.json["delivery_error"].is_null()) {
    CHECK(refused.json["status"] == "failed");
    CHECK(refused.json["delivery_error"]["category"] == "invalid_argument");
    CHECK(refused.json["delivery_error"]["retry"] == false);
  }
  REQUIRE(eventually([&] { return status_of(store, s2) == convstore::ReviewStatus::failed; }));
  CHECK(testing::contains(store.reviews().get(s2)->error.value_or(""), "the channel refuses it"));
  CHECK(api.get(review_path(s2)).json["status"] == "failed");
  // Another reply delivered after it (the channel is up) is not held back,
  // and the failed one was attempted once.
  std::int64_t third = 0, s3 = 0;
  std::tie(third, s3) = suggestion_for(api, "carol", "later");
  REQUIRE(api.post(review_path(s3) + "/approve", Json::object()).status == 200);
  REQUIRE(eventually([&] { return status_of(store, s3) == convstore::ReviewStatus::sent; }));
  CHECK(sender->attempts(s2) == 1);
  CHECK(assistant_texts(store, other).empty());
}

TEST_CASE_TEMPLATE(
    "assistant_server: a reply approved before a restart is delivered by the next server", B,
    CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  std::int64_t conversation = 0;
  std::int64_t s1 = 0;
  {
    // The first server approves while the channel is down, and stops: the
    // reply stays approved, claimed by it.
    auto down = std::make_shared<TestSender>(/*down=*/true);
    LocalServer first(store, std::make_shared<assistant_server::BuiltinResponder>(),
                      delivery_options(down, "first"));
    Api api(first.port());
    std::tie(conversation, s1) = suggestion_for(api, "alice", "hello");
    auto approved = api.post(review_path(s1) + "/approve", Json{{"text", "Edited."}});
    REQUIRE_MESSAGE(approved.status == 200, approved.text);
    CHECK(approved.json["status"] == "approved");
  }
  CHECK(status_of(store, s1) == convstore::ReviewStatus::approved);
  CHECK(assistant_texts(store, conversation).empty());

  // The next server (another sender) takes it once the claim has expired.
  auto up = std::make_shared<TestSender>(/*down=*/false);
  LocalServer second(store, std::make_shared<assistant_server::BuiltinResponder>(),
                     delivery_options(up, "second"));
  REQUIRE(eventually([&] { return status_of(store, s1) == convstore::ReviewStatus::sent; }));
  const auto texts = assistant_texts(store, conversation);
  REQUIRE(texts.size() == 1);
  CHECK(texts[0] == "Edited.");
  CHECK(store.reviews().get(s1)->claimed_by == "second");
  REQUIRE(up->sent().size() == 1);
  CHECK(up->sent()[0] == "Edited.");
}

namespace {

// Emits its chunks; after the `pause_after`-th it waits until the test
// releases it (30 s at most, so that a failed test does not hang).
class BlockingResponder : public assistant_server::Responder {
 public:
  BlockingResponder(std::vector<std::string> chunks, std::size_t pause_after)
      : chunks_(std::move(chunks)), pause_after_(pause_after) {}
  void respond(const assistant_server::Turn&,
               const std::function<void(std::string_view)>& emit) override {
    for (std::size_t i = 0; i < chunks_.size(); ++i) {
      emit(chunks_[i]);
      if (i + 1 != pause_after_) continue;
      std::unique_lock<std::mutex> lock(mutex_);
      paused_ = true;
      changed_.notify_all();
      changed_.wait_for(lock, 30s, [this] { return released_; });
    }
  }
  bool wait_paused() {
    std::unique_lock<std::mutex> lock(mutex_);
    return changed_.wait_for(lock, 20s, [this] { return paused_; });
  }
  void release() {
    std::lock_guard<std::mutex> lock(mutex_);
    released_ = true;
    changed_.notify_all();
  }

 private:
  std::vector<std::string> chunks_;
  std::size_t pause_after_;
  std::mutex mutex_;
  std::condition_variable changed_;
  bool paused_ = false;
  bool released_ = false;
};

// Reads one streamed reply on a thread of its own; what has arrived so far
// can be read meanwhile.
class StreamReader {
 public:
  StreamReader(int port, const std::string& path, const std::string& content)
      : thread_([this, port, path, content] {
          Api api(port);
          httplib::Request req;
          req.method = "POST";
          req.path = path;
          req.body = Json{{"content", content}}.dump();
          req.set_header("Content-Type", "application/json");
          req.content_receiver = [this](const char* data, std::size_t n, std::uint64_t,
                                        std::uint64_t) {
            std::lock_guard<std::mutex> lock(mutex_);
            received_.append(data, n);
            return true;
          };
          httplib::Response res;
          httplib::Error err = httplib::Error::Success;
          const bool ok = api.client().send(req, res, err);
          std::lock_guard<std::mutex> lock(mutex_);
          ok_ = ok;
          status_ = res.status;
        }) {}
  ~StreamReader() { join(); }
  void join() {
    if (thread_.joinable()) thread_.join();
  }
  // The complete events received so far.
  std::vector<testing::SseEvent> events() {
    std::lock_guard<std::mutex> lock(mutex_);
    const auto cut = received_.rfind("\n\n");
    return cut == std::string::npos ? std::vector<testing::SseEvent>{}
                                    : parse_sse(received_.substr(0, cut + 2));
  }
  bool ok() {
    std::lock_guard<std::mutex> lock(mutex_);
    return ok_;
  }
  int status() {
    std::lock_guard<std::mutex> lock(mutex_);
    return status_;
  }

 private:
  std::mutex mutex_;
  std::string received_;
  bool ok_ = false;
  int status_ = 0;
  std::thread thread_;
};

std::size_t count_events(const std::vector<testing::SseEvent>& events, const std::string& name) {
  std::size_t n = 0;
  for (const auto& e : events) n += e.event == name ? 1 : 0;
  return n;
}

}  // namespace

TEST_CASE_TEMPLATE("assistant_server: what a stream has sent is stored, as it was sent", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  const std::vector<std::string> chunks{"one ", "two ", "three ", "four ", "five"};
  auto responder = std::make_shared<BlockingResponder>(chunks, 3);
  LocalServer server(store, responder, assistant_server::ServerOptions{});
  Api api(server.port());
  auto c = api.post("/api/v1/conversations", Json{{"user", user("alice")}});
  REQUIRE(c.status == 201);
  const std::int64_t id = c.json["id"];

  StreamReader reader(server.port(), conversation_path(id) + "/messages?stream=1", "count");
  struct Release {  // before the reader is joined, if the test fails midway
    BlockingResponder& r;
    ~Release() { r.release(); }
  } release{*responder};

  // Paused after the third chunk: the client has the three deltas, and the
  // stored message holds exactly their text, still incomplete.
  REQUIRE(responder->wait_paused());
  REQUIRE(eventually([&] { return count_events(reader.events(), "delta") == 3; }));
  auto events = reader.events();
  REQUIRE(events.size() == 5);
  CHECK(events[1].event == "start");
  std::string sent;
  for (std::size_t i = 2; i < events.size(); ++i) sent += events[i].data["text"].get<std::string>();
  CHECK(sent == "one two three ");
  const std::int64_t reply_id = events[1].data["id"];
  auto stored = store.conversations().get_message(reply_id);
  REQUIRE(stored.has_value());
  CHECK(stored->content == sent);
  CHECK_FALSE(stored->complete);
  // The API shows it so too (the UI marks it as streaming).
  auto got = api.get(conversation_path(id) + "?messages=5");
  REQUIRE(got.json["messages"].size() == 2);
  CHECK(got.json["messages"][1]["content"] == sent);
  CHECK(got.json["messages"][1]["complete"] == false);

  responder->release();
  reader.join();
  CHECK(reader.ok());
  CHECK(reader.status() == 200);
  events = reader.events();
  REQUIRE(events.size() == 8);
  CHECK(count_events(events, "delta") == 5);
  CHECK(events.back().event == "done");
  CHECK(events.back().data["content"] == "one two three four five");
  stored = store.conversations().get_message(reply_id);
  CHECK(stored->content == "one two three four five");
  CHECK(stored->complete);
}

TEST_CASE_TEMPLATE("assistant_server: a chunk the store refuses is never sent", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  // The second chunk is not UTF-8: append_content refuses it. Had the server
  // sent it before storing it, the client would have it as a delta.
  auto responder = std::make_shared<BlockingResponder>(
      std::vector<std::string>{"fine ", "\xff\xfe", "never"}, 0);
  LocalServer server(store, responder, assistant_server::ServerOptions{});
  Api api(server.port());
  auto c = api.post("/api/v1/conversations", Json{{"user", user("alice")}});
  REQUIRE(c.status == 201);
  const std::int64_t id = c.json["id"];

  auto r = api.post(conversation_path(id) + "/messages?stream=1", Json{{"content", "x"}});
  REQUIRE(r.status == 200);
  auto events = parse_sse(r.text);
  REQUIRE(events.size() == 4);
  CHECK(events[0].event == "message");
  CHECK(events[1].event == "start");
  CHECK(events[2].event == "delta");
  CHECK(events[2].data["text"] == "fine ");
  CHECK(events[3].event == "error");
  CHECK(events[3].data["error"]["category"] == "invalid_argument");
  // The message is finished with what was stored and sent, and the error.
  auto stored = store.conversations().get_message(events[1].data["id"].get<std::int64_t>());
  REQUIRE(stored.has_value());
  CHECK(stored->content == "fine ");
  CHECK(stored->complete);
  CHECK(stored->metadata["error"]["category"] == "invalid_argument");
  CHECK(stored->metadata["interrupted"] == true);
}
