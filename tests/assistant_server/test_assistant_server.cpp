// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
//
// End-to-end tests of the assistant server: the built binary is started on
// each backend and driven over HTTP with httplib::Client.

#include <chrono>
#include <cstdlib>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "../support.hpp"
#include "responder.hpp"
#include "server.hpp"
#include "server_process.hpp"

using convstore::Json;
using testing::Api;
using testing::check_error;
using testing::contains;
using testing::parse_sse;
using testing::Reply;
using testing::ServerProcess;

namespace {

// The server's clock in these tests: "tomorrow" is 2026-12-07.
const char* const kNow = "2026-12-06T09:00:00Z";

std::string q(const std::string& value) { return httplib::detail::encode_query_param(value); }

Json user(const std::string& external_id) {
  return Json{{"channel", "web"}, {"external_id", external_id}};
}

std::string conversation_path(std::int64_t id) {
  return "/api/v1/conversations/" + std::to_string(id);
}

// Starts a conversation and returns it.
Json start(Api& api, Json body) {
  auto r = api.post("/api/v1/conversations", body);
  REQUIRE_MESSAGE(r.status == 201, r.text);
  return r.json;
}

// Sends a message; returns the response body (201 required).
Json say(Api& api, std::int64_t conversation, const std::string& text) {
  auto r = api.post(conversation_path(conversation) + "/messages", Json{{"content", text}});
  REQUIRE_MESSAGE(r.status == 201, r.text);
  return r.json;
}

}  // namespace

TEST_CASE_TEMPLATE("assistant_server e2e: health, stats, agents and their errors", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  ServerProcess server({"--db", db.url()});
  Api api(server.port());

  auto health = api.get("/health");
  CHECK(health.status == 200);
  CHECK(health.json["ok"] == true);
  CHECK(health.json["backend"] == B::name);
  CHECK(health.json["cache"]["backend"] == "none");
  auto page = api.get("/");
  CHECK(page.status == 200);
  CHECK(contains(page.content_type, "text/html"));

  // Create.
  auto created = api.post("/api/v1/agents", Json{{"id", "support"},
                                                 {"name", "Support Bot"},
                                                 {"model", "gpt-4o"},
                                                 {"tools", {"calendar"}},
                                                 {"persona", {{"personality", "friendly"}}}});
  REQUIRE_MESSAGE(created.status == 201, created.text);
  CHECK(created.json["id"] == "support");
  CHECK(created.json["version"] == 1);
  CHECK(created.json["active"] == true);
  CHECK(created.json["config"]["model"] == "gpt-4o");
  CHECK(created.json["tools"] == Json::array({"calendar"}));
  CHECK(created.json["persona"]["personality"] == "friendly");
  check_error(api.post("/api/v1/agents", Json{{"id", "support"}, {"name", "Again"}}), 409,
              "already_exists", "support");
  auto generated = api.post("/api/v1/agents", Json{{"name", "Helper"}});
  REQUIRE(generated.status == 201);
  const std::string generated_id = generated.json["id"].get<std::string>();
  CHECK(generated_id.rfind("agent-", 0) == 0);

  // Read.
  auto got = api.get("/api/v1/agents/support");
  CHECK(got.status == 200);
  CHECK(got.json["name"] == "Support Bot");
  check_error(api.get("/api/v1/agents/nobody"), 404, "not_found", "nobody");
  auto first = api.get("/api/v1/agents?limit=1");
  REQUIRE(first.status == 200);
  REQUIRE(first.json["items"].size() == 1);
  REQUIRE(first.json["next_cursor"].is_string());
  auto second =
      api.get("/api/v1/agents?limit=1&cursor=" + q(first.json["next_cursor"].get<std::string>()));
  REQUIRE(second.status == 200);
  REQUIRE(second.json["items"].size() == 1);
  std::set<std::string> ids{first.json["items"][0]["id"].get<std::string>(),
                            second.json["items"][0]["id"].get<std::string>()};
  CHECK(ids == std::set<std::string>{"support", generated_id});
  check_error(api.get("/api/v1/agents?limit=0"), 422, "invalid_argument", "limit");
  check_error(api.get("/api/v1/agents?cursor=garbage"), 422, "invalid_argument");

  // Update.
  auto patched = api.patch("/api/v1/agents/support",
                           Json{{"name", "Support Bot 2"}, {"system_prompt", "Be brief."}});
  REQUIRE_MESSAGE(patched.status == 200, patched.text);
  CHECK(patched.json["version"] == 2);
  CHECK(patched.json["name"] == "Support Bot 2");
  CHECK(patched.json["config"]["model"] == "gpt-4o");
  CHECK(patched.json["config"]["system_prompt"] == "Be brief.");
  check_error(api.patch("/api/v1/agents/support", Json{{"name", 3}}), 422, "invalid_argument",
              "name");
  check_error(api.patch("/api/v1/agents/support", Json{{"name", "x"}, {"expected_version", 1}}),
              409, "conflict");
  check_error(api.patch("/api/v1/agents/nobody", Json{{"name", "x"}}), 404, "not_found");
  check_error(api.patch("/api/v1/agents/support", Json::object()), 422, "invalid_argument");

  // Bodies: not JSON 400; not an object, unknown field, wrong type 422.
  check_error(api.post_raw("/api/v1/agents", "{not json"), 400, "invalid_argument", "not JSON");
  check_error(api.post_raw("/api/v1/agents", ""), 400, "invalid_argument");
  check_error(api.post("/api/v1/agents", Json::array({1})), 422, "invalid_argument", "object");
  check_error(api.post("/api/v1/agents", Json{{"name", "x"}, {"colour", "red"}}), 422,
              "invalid_argument", "colour");
  check_error(api.post("/api/v1/agents", Json{{"name", "x"}, {"tools", "calendar"}}), 422,
              "invalid_argument", "tools");
  check_error(api.post("/api/v1/agents", Json{{"description", "no name"}}), 422, "invalid_argument",
              "name");

  // Delete: soft, the agent stays inactive.
  auto deleted = api.del("/api/v1/agents/" + generated_id);
  CHECK(deleted.status == 204);
  CHECK(deleted.text.empty());
  auto inactive = api.get("/api/v1/agents/" + generated_id);
  CHECK(inactive.status == 200);
  CHECK(inactive.json["active"] == false);
  CHECK(api.get("/api/v1/agents").json["items"].size() == 1);
  CHECK(api.get("/api/v1/agents?include_inactive=true").json["items"].size() == 2);
  check_error(api.del("/api/v1/agents/nobody"), 404, "not_found", "nobody");
  // Hard delete.
  CHECK(api.del("/api/v1/agents/" + generated_id + "?hard=true").status == 204);
  check_error(api.get("/api/v1/agents/" + generated_id), 404, "not_found");

  // No route: 404 JSON.
  check_error(api.get("/api/v1/nothing"), 404, "not_found", "/api/v1/nothing");
  check_error(api.post("/api/v1/nothing", Json::object()), 404, "not_found");

  auto stats = api.get("/api/v1/stats");
  REQUIRE(stats.status == 200);
  CHECK(stats.json["backend"] == B::name);
  CHECK(stats.json["stats"]["agents"] == 1);
  CHECK(stats.json["operations"].is_array());
  CHECK(stats.json["operations"].size() > 0);
  CHECK(stats.json["http"]["requests"].get<int>() > 10);
  CHECK(stats.json["http"]["client_errors"].get<int>() > 5);

  CHECK(server.stop() == 0);
}

TEST_CASE_TEMPLATE("assistant_server e2e: conversations and messages", B, CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  ServerProcess server({"--db", db.url(), "--now", kNow});
  Api api(server.port());
  REQUIRE(api.post("/api/v1/agents", Json{{"id", "support"}, {"name", "Support"}, {"model", "m1"}})
              .status == 201);

  auto c = start(
      api, Json{{"user", {{"channel", "web"}, {"external_id", "alice"}, {"display_name", "Alice"}}},
                {"agent_id", "support"},
                {"title", "Help"}});
  const std::int64_t id = c["id"];
  const std::int64_t alice = c["user_id"];
  CHECK(c["agent"] == "support");
  CHECK(c["title"] == "Help");
  CHECK(c["review"] == false);
  CHECK(c["status"] == "active");
  CHECK(api.get("/api/v1/agents/support").json["usage_count"] == 1);

  check_error(api.post("/api/v1/conversations", Json{{"user", user("a")}, {"agent_id", "ghost"}}),
              404, "not_found", "ghost");
  check_error(api.post("/api/v1/conversations", Json{{"user", {{"channel", "web"}}}}), 422,
              "invalid_argument", "external_id");
  check_error(api.post("/api/v1/conversations", Json{{"title", "x"}}), 422, "invalid_argument",
              "user");
  check_error(api.post("/api/v1/conversations", Json{{"user", user("a")}, {"review", "yes"}}), 422,
              "invalid_argument", "review");

  // A message and its reply.
  auto turn = say(api, id, "hello");
  CHECK(turn["message"]["role"] == "user");
  CHECK(turn["message"]["content"] == "hello");
  CHECK(turn["reply"]["role"] == "assistant");
  CHECK(turn["reply"]["content"] == "Support: You said: hello");
  CHECK(turn["reply"]["agent"] == "support");
  CHECK(turn["reply"]["model"] == "m1");
  CHECK(turn["reply"]["complete"] == true);
  CHECK(turn["suggestion"].is_null());
  const std::string path = conversation_path(id);
  check_error(api.post("/api/v1/conversations/999999/messages", Json{{"content", "x"}}), 404,
              "not_found", "999999");
  check_error(api.post(path + "/messages", Json{{"content", ""}}), 422, "invalid_argument",
              "content");
  check_error(api.post(path + "/messages", Json{{"content", 5}}), 422, "invalid_argument",
              "content");
  check_error(api.post(path + "/messages", Json{{"text", "hi"}}), 422, "invalid_argument");
  check_error(api.post_raw(path + "/messages", "nope"), 400, "invalid_argument");

  // Read it back.
  auto got = api.get(path + "?messages=10");
  REQUIRE(got.status == 200);
  CHECK(got.json["conversation"]["message_count"] == 2);
  REQUIRE(got.json["messages"].size() == 2);
  CHECK(got.json["messages"][0]["content"] == "hello");
  CHECK(got.json["messages"][1]["role"] == "assistant");
  CHECK(got.json["suggestion"].is_null());
  auto last = api.get(path + "?messages=1");
  REQUIRE(last.json["messages"].size() == 1);
  CHECK(last.json["messages"][0]["role"] == "assistant");
  check_error(api.get("/api/v1/conversations/424242"), 404, "not_found", "424242");
  check_error(api.get(path + "?messages=abc"), 422, "invalid_argument", "messages");

  // Lists.
  auto bob = start(api, Json{{"user", user("bob")}});
  CHECK(bob["user_id"] != alice);
  auto mine = api.get("/api/v1/conversations?user_id=" + std::to_string(alice));
  REQUIRE(mine.status == 200);
  REQUIRE(mine.json["items"].size() == 1);
  CHECK(mine.json["items"][0]["id"] == id);
  CHECK(mine.json["next_cursor"].is_null());
  CHECK(api.get("/api/v1/conversations?status=active").json["items"].size() == 2);
  auto one = api.get("/api/v1/conversations?limit=1");
  REQUIRE(one.json["items"].size() == 1);
  REQUIRE(one.json["next_cursor"].is_string());
  auto rest = api.get("/api/v1/conversations?limit=1&cursor=" +
                      q(one.json["next_cursor"].get<std::string>()));
  REQUIRE(rest.json["items"].size() == 1);
  CHECK(rest.json["items"][0]["id"] != one.json["items"][0]["id"]);
  check_error(api.get("/api/v1/conversations?status=bogus"), 422, "invalid_argument", "bogus");
  check_error(api.get("/api/v1/conversations?user_id=x"), 422, "invalid_argument", "user_id");

  // A deactivated agent takes no new conversation; its old ones go on.
  REQUIRE(api.del("/api/v1/agents/support").status == 204);
  check_error(api.post("/api/v1/conversations", Json{{"user", user("c")}, {"agent_id", "support"}}),
              409, "failed_precondition", "support");
  CHECK(say(api, id, "still there?")["reply"]["content"] == "Support: You said: still there?");
  CHECK(server.stop() == 0);
}

TEST_CASE_TEMPLATE("assistant_server e2e: calendar events, conflicts, booking by message", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  ServerProcess server({"--db", db.url(), "--now", kNow});
  Api api(server.port());
  auto c = start(api, Json{{"user", user("alice")}});
  const std::int64_t id = c["id"];
  const std::int64_t alice = c["user_id"];

  auto standup = api.post("/api/v1/calendar/events", Json{{"owner_id", alice},
                                                          {"title", "Standup"},
                                                          {"start", "2026-12-07T10:00:00Z"},
                                                          {"end", "2026-12-07T10:30:00Z"},
                                                          {"refuse_conflicts", true}});
  REQUIRE_MESSAGE(standup.status == 201, standup.text);
  CHECK(standup.json["title"] == "Standup");
  CHECK(standup.json["owner_id"] == alice);
  CHECK(standup.json["start"] == "2026-12-07T10:00:00.000000Z");

  auto clash = api.post("/api/v1/calendar/events", Json{{"owner_id", alice},
                                                        {"title", "Review"},
                                                        {"start", "2026-12-07T10:15:00Z"},
                                                        {"end", "2026-12-07T10:45:00Z"},
                                                        {"refuse_conflicts", true}});
  check_error(clash, 409, "conflict");
  REQUIRE(clash.json["error"]["conflicts"].size() == 1);
  CHECK(clash.json["error"]["conflicts"][0]["title"] == "Standup");
  // Without refuse_conflicts an overlap is stored.
  REQUIRE(api.post("/api/v1/calendar/events", Json{{"owner_id", alice},
                                                   {"title", "Review"},
                                                   {"start", "2026-12-07T10:15:00Z"},
                                                   {"end", "2026-12-07T10:45:00Z"}})
              .status == 201);
  check_error(api.post("/api/v1/calendar/events",
                       Json{{"title", "x"}, {"start", "soon"}, {"end", "2026-12-07T10:45:00Z"}}),
              422, "invalid_argument", "start");
  check_error(api.post("/api/v1/calendar/events", Json{{"title", "x"},
                                                       {"start", "2026-12-07T11:00:00Z"},
                                                       {"end", "2026-12-07T10:00:00Z"}}),
              422, "invalid_argument");
  check_error(api.post("/api/v1/calendar/events", Json{{"owner_id", 999999},
                                                       {"title", "x"},
                                                       {"start", "2026-12-07T11:00:00Z"},
                                                       {"end", "2026-12-07T12:00:00Z"}}),
              404, "not_found");

  const std::string owner = "owner_id=" + std::to_string(alice);
  auto day = api.get("/api/v1/calendar/events?" + owner +
                     "&from=2026-12-07T00:00:00Z&to=2026-12-08T00:00:00Z");
  REQUIRE(day.status == 200);
  REQUIRE(day.json["items"].size() == 2);
  CHECK(day.json["items"][0]["title"] == "Standup");
  CHECK(day.json["items"][1]["title"] == "Review");
  check_error(api.get("/api/v1/calendar/events?" + owner + "&to=2026-12-08T00:00:00Z"), 422,
              "invalid_argument", "from");
  auto conflicts = api.get("/api/v1/calendar/conflicts?" + owner +
                           "&start=2026-12-07T10:20:00Z&end=2026-12-07T10:25:00Z");
  REQUIRE(conflicts.status == 200);
  CHECK(conflicts.json["items"].size() == 2);
  CHECK(api.get("/api/v1/calendar/conflicts?" + owner +
                "&start=2026-12-07T11:00:00Z&end=2026-12-07T12:00:00Z")
            .json["items"]
            .empty());

  // The responder books from a message, relative to --now, refusing overlaps.
  auto booked = say(api, id, "schedule lunch tomorrow at 12:00 for 1h");
  const std::string text = booked["reply"]["content"];
  CHECK_MESSAGE(text.rfind("Booked \"lunch\" on 2026-12-07 from 12:00 to 13:00 UTC", 0) == 0, text);
  auto refused = say(api, id, "meeting on 2026-12-07 12:30");
  const std::string no = refused["reply"]["content"];
  CHECK_MESSAGE(contains(no, "overlaps \"lunch\""), no);
  CHECK_MESSAGE(contains(no, "nothing was booked"), no);
  auto noon = api.get("/api/v1/calendar/events?" + owner +
                      "&from=2026-12-07T12:00:00Z&to=2026-12-07T14:00:00Z");
  REQUIRE(noon.json["items"].size() == 1);
  CHECK(noon.json["items"][0]["title"] == "lunch");
  CHECK(noon.json["items"][0]["end"] == "2026-12-07T13:00:00.000000Z");
  CHECK(server.stop() == 0);
}

TEST_CASE_TEMPLATE(
    "assistant_server e2e: a streamed reply arrives as events, stored chunk by chunk", B,
    CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  ServerProcess server({"--db", db.url()});
  Api api(server.port());
  auto c = start(api, Json{{"user", user("alice")}});
  const std::int64_t id = c["id"];
  const std::string path = conversation_path(id);

  // (That each chunk is stored before it is sent is checked in
  // test_assistant_delivery.cpp, with a responder paused midway.)
  auto res = api.post(path + "/messages?stream=1",
                      Json{{"content", "one two three four five six seven eight"}});
  REQUIRE(res.status == 200);
  CHECK(contains(res.content_type, "text/event-stream"));

  auto events = parse_sse(res.text);
  REQUIRE(events.size() >= 4);
  CHECK(events[0].event == "message");
  CHECK(events[0].data["content"] == "one two three four five six seven eight");
  CHECK(events[1].event == "start");
  std::string whole;
  std::size_t deltas = 0;
  for (std::size_t i = 2; i + 1 < events.size(); ++i) {
    CHECK(events[i].event == "delta");
    whole += events[i].data["text"].get<std::string>();
    ++deltas;
  }
  CHECK(deltas == 10);  // "You said: " and the eight words, one chunk each
  CHECK(whole == "You said: one two three four five six seven eight");
  const auto& done = events.back();
  CHECK(done.event == "done");
  CHECK(done.data["id"] == events[1].data["id"]);
  CHECK(done.data["complete"] == true);
  CHECK(done.data["content"] == whole);

  // Stored whole and complete.
  auto got = api.get(path + "?messages=10");
  REQUIRE(got.json["messages"].size() == 2);
  CHECK(got.json["messages"][1]["id"] == done.data["id"]);
  CHECK(got.json["messages"][1]["content"] == whole);
  CHECK(got.json["messages"][1]["complete"] == true);

  // Errors before the stream starts are plain JSON errors.
  check_error(api.post("/api/v1/conversations/999999/messages?stream=1", Json{{"content", "x"}}),
              404, "not_found");
  check_error(api.post(path + "/messages?stream=maybe", Json{{"content", "x"}}), 422,
              "invalid_argument", "stream");

  // A review-mode conversation streams the user's message, then the suggestion.
  auto r = start(api, Json{{"user", user("bob")}, {"review", true}});
  auto streamed = api.post(conversation_path(r["id"]) + "/messages?stream=1",
                           Json{{"content", "draft please"}});
  REQUIRE(streamed.status == 200);
  auto review_events = parse_sse(streamed.text);
  REQUIRE(review_events.size() == 2);
  CHECK(review_events[0].event == "message");
  CHECK(review_events[1].event == "suggestion");
  CHECK(review_events[1].data["status"] == "pending_approval");
  CHECK(review_events[1].data["text"] == "You said: draft please");
  CHECK(server.stop() == 0);
}

TEST_CASE_TEMPLATE("assistant_server e2e: review mode: suggestions approved, edited, rejected", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  ServerProcess server({"--db", db.url()});
  Api api(server.port());
  auto c = start(api, Json{{"user", user("alice")}, {"review", true}});
  CHECK(c["review"] == true);
  const std::int64_t id = c["id"];
  const std::int64_t alice = c["user_id"];
  const std::string path = conversation_path(id);
  const std::string pending = "/api/v1/reviews/pending?user_id=" + std::to_string(alice);

  // A message makes a pending suggestion, not a reply.
  auto turn = say(api, id, "Can we meet tomorrow?");
  CHECK(turn["reply"].is_null());
  REQUIRE(turn["suggestion"].is_object());
  CHECK(turn["suggestion"]["status"] == "pending_approval");
  CHECK(turn["suggestion"]["text"] == "You said: Can we meet tomorrow?");
  CHECK(turn["suggestion"]["user_id"] == alice);
  const std::int64_t s1 = turn["suggestion"]["id"];
  auto listed = api.get(pending);
  REQUIRE(listed.status == 200);
  REQUIRE(listed.json["items"].size() == 1);
  CHECK(listed.json["items"][0]["id"] == s1);
  CHECK(api.get("/api/v1/reviews/" + std::to_string(s1)).json["status"] == "pending_approval");
  CHECK(api.get(path).json["suggestion"]["id"] == s1);
  check_error(api.get("/api/v1/reviews/pending"), 422, "invalid_argument", "user_id");
  check_error(api.get("/api/v1/reviews/999999"), 404, "not_found", "999999");
  check_error(api.post("/api/v1/reviews/999999/approve", Json::object()), 404, "not_found");

  // Approve with an edit: the edited text is the assistant's message.
  auto approved =
      api.post("/api/v1/reviews/" + std::to_string(s1) + "/approve", Json{{"text", "Yes, 10:00."}});
  REQUIRE_MESSAGE(approved.status == 200, approved.text);
  CHECK(approved.json["status"] == "sent");
  CHECK(approved.json["edited_text"] == "Yes, 10:00.");
  CHECK(approved.json["message"]["role"] == "assistant");
  CHECK(approved.json["message"]["content"] == "Yes, 10:00.");
  auto got = api.get(path + "?messages=10");
  REQUIRE(got.json["messages"].size() == 2);
  CHECK(got.json["messages"][1]["role"] == "assistant");
  CHECK(got.json["messages"][1]["content"] == "Yes, 10:00.");
  CHECK(api.get(pending).json["items"].empty());
  check_error(api.post("/api/v1/reviews/" + std::to_string(s1) + "/approve", Json::object()), 409,
              "conflict");

  // Reject: nothing is added to the conversation.
  const std::int64_t s2 = say(api, id, "And on Friday?")["suggestion"]["id"];
  check_error(api.post("/api/v1/reviews/" + std::to_string(s2) + "/approve", Json{{"text", 5}}),
              422, "invalid_argument", "text");
  check_error(api.post("/api/v1/reviews/" + std::to_string(s2) + "/reject", Json{{"why", "x"}}),
              422, "invalid_argument", "why");
  auto rejected =
      api.post("/api/v1/reviews/" + std::to_string(s2) + "/reject", Json{{"reason", "not now"}});
  REQUIRE(rejected.status == 200);
  CHECK(rejected.json["status"] == "rejected");
  CHECK(rejected.json["reason"] == "not now");
  CHECK(api.get(path + "?messages=10").json["messages"].size() == 3);
  check_error(api.post("/api/v1/reviews/" + std::to_string(s2) + "/reject", Json::object()), 409,
              "conflict");

  // A newer message supersedes the pending suggestion; approving with an
  // empty body sends the suggested text.
  const std::int64_t s3 = say(api, id, "first")["suggestion"]["id"];
  const std::int64_t s4 = say(api, id, "second")["suggestion"]["id"];
  CHECK(api.get("/api/v1/reviews/" + std::to_string(s3)).json["status"] == "superseded");
  auto now_pending = api.get(pending);
  REQUIRE(now_pending.json["items"].size() == 1);
  CHECK(now_pending.json["items"][0]["id"] == s4);
  auto plain = api.post_raw("/api/v1/reviews/" + std::to_string(s4) + "/approve", "");
  REQUIRE_MESSAGE(plain.status == 200, plain.text);
  CHECK(plain.json["status"] == "sent");
  CHECK(plain.json["message"]["content"] == "You said: second");
  auto all = api.get(path + "?messages=20");
  REQUIRE(all.json["messages"].size() == 6);
  CHECK(all.json["messages"][5]["content"] == "You said: second");
  CHECK(server.stop() == 0);
}

TEST_CASE_TEMPLATE(
    "assistant_server e2e: approved replies are delivered at startup and in the background", B,
    CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto status_of = [&](std::int64_t id) {
    auto s = store.reviews().get(id);
    REQUIRE(s.has_value());
    return s->status;
  };
  auto wait_sent = [&](std::int64_t id) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (status_of(id) != convstore::ReviewStatus::sent &&
           std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return status_of(id) == convstore::ReviewStatus::sent;
  };
  std::int64_t id = 0;
  std::int64_t s1 = 0;
  {
    ServerProcess server({"--db", db.url()});
    Api api(server.port());
    id = start(api, Json{{"user", user("alice")}, {"review", true}})["id"];
    s1 = say(api, id, "Lunch?")["suggestion"]["id"];
    CHECK(server.stop() == 0);
  }
  // Approved while no server runs (as a server that stopped or crashed
  // between approving and delivering leaves it).
  store.reviews().approve(s1, "Yes, at noon.");

  // The next server delivers it when it starts: the next background pass
  // is an hour away.
  {
    ServerProcess server({"--db", db.url(), "--delivery-interval", "3600"});
    REQUIRE(wait_sent(s1));
    Api api(server.port());
    auto got = api.get(conversation_path(id) + "?messages=10");
    REQUIRE(got.json["messages"].size() == 2);
    CHECK(got.json["messages"][1]["role"] == "assistant");
    CHECK(got.json["messages"][1]["content"] == "Yes, at noon.");
    CHECK(server.stop() == 0);
  }

  // A reply approved elsewhere while a server runs (here through the
  // library, as another process would) is delivered by the background pass.
  ServerProcess server({"--db", db.url(), "--delivery-interval", "0.05"});
  Api api(server.port());
  const std::int64_t s2 = say(api, id, "And dinner?")["suggestion"]["id"];
  store.reviews().approve(s2);
  REQUIRE(wait_sent(s2));
  auto got = api.get(conversation_path(id) + "?messages=10");
  REQUIRE(got.json["messages"].size() == 4);
  CHECK(got.json["messages"][3]["content"] == "You said: And dinner?");
  CHECK(server.stop() == 0);
}

TEST_CASE_TEMPLATE("assistant_server e2e: bodies over the limit are refused with 413", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  ServerProcess server({"--db", db.url(), "--max-body", "1024"});
  Api api(server.port());

  CHECK(api.post("/api/v1/agents", Json{{"name", "small"}, {"description", std::string(900, 'a')}})
            .status == 201);
  check_error(
      api.post("/api/v1/agents", Json{{"name", "big"}, {"description", std::string(2000, 'a')}}),
      413, "invalid_argument", "1024");

  // A declared length of 1 GB: refused at once, without the body being sent.
  const std::string answer = testing::raw_exchange(
      server.port(),
      "POST /api/v1/agents HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
      "Content-Length: 1000000000\r\n\r\n",
      "{\"name\": \"", std::chrono::seconds(10));
  CHECK_MESSAGE(answer.rfind("HTTP/1.1 413", 0) == 0, answer);
  CHECK_MESSAGE(contains(answer, "\"category\":\"invalid_argument\""), answer);

  // A chunked body (no declared length) is cut off at the limit too.
  auto chunked = api.client().Post(
      "/api/v1/agents",
      [](std::size_t offset, httplib::DataSink& sink) {
        const std::string part(512, ' ');
        if (offset >= 4096) {
          sink.done();
          return true;
        }
        return sink.write(part.data(), part.size());
      },
      "application/json");
  REQUIRE(chunked);
  CHECK(chunked->status == 413);

  // Nothing was stored by the refused requests; the server still serves.
  auto fresh = Api(server.port());
  auto agents = fresh.get("/api/v1/agents");
  REQUIRE(agents.status == 200);
  CHECK(agents.json["items"].size() == 1);
  CHECK(server.stop() == 0);
}

TEST_CASE_TEMPLATE("assistant_server e2e: an agent survives a restart (seed 004's manual test)", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  {
    ServerProcess first({"--db", db.url()});
    Api api(first.port());
    auto created = api.post(
        "/api/v1/agents",
        Json{{"id", "planner"}, {"name", "Planner"}, {"persona", {{"description", "Plans days"}}}});
    REQUIRE(created.status == 201);
    // SIGTERM with this client's keep-alive connection still open: a clean
    // exit, not a kill.
    CHECK(first.stop(SIGTERM) == 0);
    CHECK(contains(first.log(), "stopping"));
  }
  ServerProcess second({"--db", db.url()});
  Api api(second.port());
  auto agent = api.get("/api/v1/agents/planner");
  REQUIRE(agent.status == 200);
  CHECK(agent.json["name"] == "Planner");
  CHECK(agent.json["persona"]["description"] == "Plans days");
  auto c = start(api, Json{{"user", user("alice")}, {"agent_id", "planner"}});
  CHECK(c["agent"] == "planner");
  CHECK(say(api, c["id"], "hello")["reply"]["content"] == "Planner: You said: hello");
  CHECK(api.get("/api/v1/agents/planner").json["usage_count"] == 1);
  CHECK(second.stop(SIGINT) == 0);
}

TEST_CASE_TEMPLATE("assistant_server e2e: two server processes share one database (and Redis)", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  std::vector<std::string> args{"--db", db.url()};
  const char* redis = std::getenv("CONVSTORE_TEST_REDIS_URL");
  const bool with_redis = redis != nullptr && *redis != '\0';
  if (with_redis) {
    std::random_device rd;
    args.insert(args.end(),
                {"--redis", redis, "--cache-prefix", "asrv_test_" + std::to_string(rd()) + ":"});
  } else {
    MESSAGE("CONVSTORE_TEST_REDIS_URL unset: the two servers run without a shared cache");
  }
  ServerProcess a(args);
  ServerProcess b(args);
  Api on_a(a.port());
  Api on_b(b.port());
  if (with_redis) {
    CHECK(on_a.get("/health").json["cache"]["backend"] == "redis");
    CHECK(on_b.get("/health").json["cache"]["ok"] == true);
  }

  // An agent created on one is served by the other.
  REQUIRE(on_a.post("/api/v1/agents", Json{{"id", "shared"}, {"name", "Shared"}}).status == 201);
  auto seen = on_b.get("/api/v1/agents/shared");
  REQUIRE(seen.status == 200);
  CHECK(seen.json["name"] == "Shared");

  // A conversation continued across them: each sees the other's messages
  // (the context cached in Redis is dropped when the other process appends).
  auto c = start(on_a, Json{{"user", user("alice")}, {"agent_id", "shared"}});
  const std::int64_t id = c["id"];
  CHECK(say(on_b, id, "one")["reply"]["content"] == "Shared: You said: one");
  CHECK(say(on_a, id, "two")["reply"]["content"] == "Shared: You said: two");
  const std::string recalled = say(on_b, id, "what did I say?")["reply"]["content"];
  CHECK_MESSAGE(contains(recalled, "\"one\"; \"two\""), recalled);
  CHECK(say(on_a, id, "three")["reply"]["content"] == "Shared: You said: three");
  const std::string again = say(on_b, id, "what did I say now?")["reply"]["content"];
  CHECK_MESSAGE(contains(again, "\"one\"; \"two\"; \"what did I say?\"; \"three\""), again);
  auto got = on_a.get(conversation_path(id) + "?messages=50");
  CHECK(got.json["conversation"]["message_count"] == 10);

  // A reply suggested on one server is approved on the other.
  auto r = start(on_b, Json{{"user", user("bob")}, {"review", true}});
  const std::int64_t s = say(on_b, r["id"], "draft")["suggestion"]["id"];
  auto approved = on_a.post("/api/v1/reviews/" + std::to_string(s) + "/approve", Json::object());
  REQUIRE(approved.status == 200);
  CHECK(approved.json["status"] == "sent");
  auto thread = on_b.get(conversation_path(r["id"]) + "?messages=5");
  REQUIRE(thread.json["messages"].size() == 2);
  CHECK(thread.json["messages"][1]["content"] == "You said: draft");

  // Both servers write to one conversation at once: nothing is lost, every
  // message has its reply.
  auto shared = start(on_a, Json{{"user", user("carol")}});
  const std::int64_t sid = shared["id"];
  auto writer = [&](int port, const std::string& name, std::vector<int>& statuses) {
    Api api(port);
    for (int i = 0; i < 10; ++i) {
      auto r =
          api.client().Post((conversation_path(sid) + "/messages").c_str(),
                            Json{{"content", name + std::to_string(i)}}.dump(), "application/json");
      statuses.push_back(r ? r->status : -1);
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  };
  std::vector<int> from_a, from_b;
  std::thread ta(writer, a.port(), "a", std::ref(from_a));
  std::thread tb(writer, b.port(), "b", std::ref(from_b));
  ta.join();
  tb.join();
  for (int s : from_a) CHECK(s == 201);
  for (int s : from_b) CHECK(s == 201);
  auto both = on_b.get(conversation_path(sid) + "?messages=100");
  CHECK(both.json["conversation"]["message_count"] == 40);
  std::size_t replies = 0;
  for (const auto& m : both.json["messages"]) {
    if (m["role"] == "assistant") ++replies;
  }
  CHECK(replies == 20);

  CHECK(a.stop() == 0);
  CHECK(b.stop() == 0);
}

TEST_CASE_TEMPLATE("assistant_server e2e: messages over a user's rate limit get 429", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  // With Redis the count is shared by two server processes; without it, it
  // is the one process's.
  std::vector<std::string> args{"--db", db.url(), "--rate-limit", "4"};
  const char* redis = std::getenv("CONVSTORE_TEST_REDIS_URL");
  const bool with_redis = redis != nullptr && *redis != '\0';
  if (with_redis) {
    std::random_device rd;
    args.insert(args.end(),
                {"--redis", redis, "--cache-prefix", "asrv_rate_" + std::to_string(rd()) + ":"});
  }
  ServerProcess a(args);
  std::unique_ptr<ServerProcess> b;
  if (with_redis) b = std::make_unique<ServerProcess>(args);
  Api on_a(a.port());
  Api on_b(b ? b->port() : a.port());

  const std::int64_t alice = start(on_a, Json{{"user", user("alice")}})["id"];
  const std::int64_t bob = start(on_a, Json{{"user", user("bob")}})["id"];
  for (int i = 0; i < 4; ++i) say(i % 2 == 0 ? on_a : on_b, alice, "m" + std::to_string(i));
  auto refused = on_b.client().Post((conversation_path(alice) + "/messages").c_str(),
                                    Json{{"content", "one too many"}}.dump(), "application/json");
  REQUIRE(refused);
  CHECK(refused->status == 429);
  CHECK(std::stoi(refused->get_header_value("Retry-After")) >= 1);
  const auto body = Json::parse(refused->body);
  CHECK(body["error"]["category"] == "unavailable");
  CHECK(contains(body["error"]["message"].get<std::string>(), "retry in"));
  // Another user is not limited; the refused message was not stored.
  CHECK(say(on_a, bob, "hi")["reply"]["content"] == "You said: hi");
  CHECK(on_a.get(conversation_path(alice)).json["conversation"]["message_count"] == 8);
  if (b) CHECK(b->stop() == 0);
  CHECK(a.stop() == 0);
}

TEST_CASE("assistant_server e2e: bad options exit 2, an unusable database 1, no password shown") {
  std::string err;
  CHECK(testing::run_to_exit({"--listen", "127.0.0.1"}, err) == 2);
  CHECK_MESSAGE(contains(err, "--listen"), err);
  CHECK(testing::run_to_exit({"--max-body", "0"}, err) == 2);
  CHECK(testing::run_to_exit({"--no-such-option"}, err) == 2);
  CHECK(testing::run_to_exit({"--delivery-interval", "0"}, err) == 2);
  CHECK(testing::run_to_exit({"--delivery-lease", "x"}, err) == 2);
  CHECK(testing::run_to_exit({"--help"}, err) == 0);

  CHECK(testing::run_to_exit({"--db", "nosuchscheme:x", "--listen", "127.0.0.1:0"}, err) == 1);
  CHECK_MESSAGE(err.rfind("assistant_server: error: ", 0) == 0, err);
  // An unreachable PostgreSQL (port 1): the error names it, never the password.
  CHECK(testing::run_to_exit({"--db", "postgresql://bot:s3cretpw@127.0.0.1:1/bot?connect_timeout=2",
                              "--listen", "127.0.0.1:0"},
                             err) == 1);
  CHECK_MESSAGE(err.rfind("assistant_server: error: ", 0) == 0, err);
  CHECK_MESSAGE(!contains(err, "s3cretpw"), err);
}

namespace {

// A responder of the test's own: two chunks, then a failure on demand.
class ScriptedResponder : public assistant_server::Responder {
 public:
  void respond(const assistant_server::Turn& turn,
               const std::function<void(std::string_view)>& emit) override {
    const std::string text = turn.history.back().content;
    emit("thinking ");
    emit("about " + text);
    if (text == "fail") {
      throw convstore::Error(convstore::ErrorCode::unavailable, "the model is down");
    }
    if (text == "crash") throw std::runtime_error("secret internals");
    emit(".");
  }
};

}  // namespace

TEST_CASE_TEMPLATE("assistant_server: a responder plugged in; its failures are reported", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  assistant_server::AssistantServer server(store, nullptr, std::make_shared<ScriptedResponder>(),
                                           assistant_server::Clock{},
                                           assistant_server::ServerOptions{});
  const int port = server.bind("127.0.0.1", 0);
  std::thread runner([&] { server.run(); });
  struct Stopper {
    assistant_server::AssistantServer& server;
    std::thread& runner;
    ~Stopper() {
      server.stop();
      runner.join();
    }
  } stopper{server, runner};
  Api api(port);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!api.client().Get("/health") && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }

  const std::int64_t id = start(api, Json{{"user", user("alice")}})["id"];
  CHECK(say(api, id, "hello")["reply"]["content"] == "thinking about hello.");
  const std::string path = conversation_path(id) + "/messages";
  check_error(api.post(path, Json{{"content", "fail"}}), 503, "unavailable", "the model is down");
  auto crash = api.post(path, Json{{"content", "crash"}});
  check_error(crash, 500, "internal", "internal error");
  CHECK_MESSAGE(!contains(crash.text, "secret"), crash.text);

  // Streamed: the chunks before the failure are sent and stored; the message
  // is finished with the error in its metadata, then an error event ends
  // the stream.
  auto streamed = api.post(path + "?stream=1", Json{{"content", "fail"}});
  REQUIRE(streamed.status == 200);
  auto events = parse_sse(streamed.text);
  REQUIRE(events.size() == 5);
  CHECK(events[0].event == "message");
  CHECK(events[1].event == "start");
  CHECK(events[2].event == "delta");
  CHECK(events[3].event == "delta");
  CHECK(events[4].event == "error");
  CHECK(events[4].data["error"]["category"] == "unavailable");
  const std::int64_t reply_id = events[1].data["id"];
  auto stored = store.conversations().get_message(reply_id);
  REQUIRE(stored.has_value());
  CHECK(stored->content == "thinking about fail");
  CHECK(stored->complete);
  CHECK(stored->metadata["error"]["category"] == "unavailable");
  CHECK(stored->metadata["error"]["message"] == "the model is down");
  CHECK(stored->metadata["interrupted"] == true);
  // The API shows it so: the conversation is not left with a reply
  // streaming forever, and it takes the next message.
  auto got = api.get(conversation_path(id) + "?messages=2");
  REQUIRE(got.json["messages"].size() == 2);
  CHECK(got.json["messages"][1]["id"] == reply_id);
  CHECK(got.json["messages"][1]["complete"] == true);
  CHECK(got.json["messages"][1]["metadata"]["error"]["category"] == "unavailable");
  CHECK(say(api, id, "hello")["reply"]["content"] == "thinking about hello.");

  // A failure that is not a convstore error: recorded without its internals.
  auto crashed = api.post(path + "?stream=1", Json{{"content", "crash"}});
  REQUIRE(crashed.status == 200);
  CHECK_MESSAGE(!contains(crashed.text, "secret"), crashed.text);
  auto crash_events = parse_sse(crashed.text);
  REQUIRE(crash_events.size() == 5);
  CHECK(crash_events[4].data["error"]["category"] == "internal");
  auto crash_stored =
      store.conversations().get_message(crash_events[1].data["id"].get<std::int64_t>());
  REQUIRE(crash_stored.has_value());
  CHECK(crash_stored->complete);
  CHECK(crash_stored->metadata["error"]["message"] == "internal error");
}
