// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
//
// The assistant server's parts, without a server: request validation, the
// error mapping, the built-in responder's phrases.

#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "../support.hpp"
#include "api.hpp"
#include "responder.hpp"

using namespace assistant_server;
using convstore::ErrorCode;
using convstore::Json;
using convstore::parse_timestamp;
using convstore::to_iso8601;

TEST_CASE("assistant_server: error categories map to the HTTP statuses of the contract") {
  CHECK(http_status(ErrorCode::invalid_argument) == 422);
  CHECK(http_status(ErrorCode::not_found) == 404);
  CHECK(http_status(ErrorCode::already_exists) == 409);
  CHECK(http_status(ErrorCode::conflict) == 409);
  CHECK(http_status(ErrorCode::failed_precondition) == 409);
  CHECK(http_status(ErrorCode::unavailable) == 503);
  CHECK(http_status(ErrorCode::aborted) == 503);
  CHECK(http_status(ErrorCode::internal) == 500);
  CHECK(http_status(ErrorCode::data_loss) == 500);
  CHECK(http_status(ErrorCode::not_supported) == 500);
}

TEST_CASE("assistant_server: request bodies are checked field by field") {
  SUBCASE("not JSON is a 400") {
    bool thrown = false;
    try {
      parse_body("{\"name\": ");
    } catch (const HttpError& e) {
      thrown = true;
      CHECK(e.status() == 400);
      CHECK(e.category() == "invalid_argument");
    }
    CHECK(thrown);
  }
  SUBCASE("an agent id with a '/' is refused: no URL could reach it") {
    CHECK_THROWS_AS(new_agent_from_json(Json{{"id", "team/a"}, {"name", "A"}}), convstore::Error);
    CHECK(new_agent_from_json(Json{{"id", "team-a"}, {"name", "A"}}).id == "team-a");
  }
  SUBCASE("a body nested deeper than the limit is a 422, however deep") {
    for (std::size_t depth : {std::size_t(kMaxBodyDepth) + 1, std::size_t(500000)}) {
      CAPTURE(depth);
      std::string deep = std::string(depth, '[') + std::string(depth, ']');
      bool thrown = false;
      try {
        parse_body(deep);
      } catch (const HttpError& e) {
        thrown = true;
        CHECK(e.status() == 422);
        CHECK(std::string(e.what()).find("nests deeper") != std::string::npos);
      }
      CHECK(thrown);
    }
    std::string at_limit =
        "{\"a\":" + std::string(kMaxBodyDepth - 1, '[') + std::string(kMaxBodyDepth - 1, ']') + "}";
    CHECK(parse_body(at_limit).is_object());
  }
  SUBCASE("an agent: name required, types checked, unknown fields refused") {
    auto a = new_agent_from_json(Json{{"id", "support"},
                                      {"name", "Support Bot"},
                                      {"model", "gpt-4o"},
                                      {"system_prompt", "Be kind."},
                                      {"tools", {"calendar"}},
                                      {"persona", {{"personality", "friendly"}}}});
    CHECK(a.id == "support");
    CHECK(a.name == "Support Bot");
    CHECK(a.config["model"] == "gpt-4o");
    CHECK(a.config["system_prompt"] == "Be kind.");
    REQUIRE(a.tools.size() == 1);
    CHECK(a.tools[0] == "calendar");
    CHECK(a.persona.personality == "friendly");

    auto generated = new_agent_from_json(Json{{"name", "x"}});
    CHECK(generated.id.rfind("agent-", 0) == 0);
    CHECK(generated.id.size() == 18);
    CHECK(new_agent_from_json(Json{{"name", "x"}}).id != generated.id);

    CHECK_ERROR_CODE(new_agent_from_json(Json{{"id", "a"}}), ErrorCode::invalid_argument);
    CHECK_ERROR_CODE(new_agent_from_json(Json{{"name", 5}}), ErrorCode::invalid_argument);
    CHECK_ERROR_CODE(new_agent_from_json(Json{{"name", "x"}, {"tools", "calendar"}}),
                     ErrorCode::invalid_argument);
    CHECK_ERROR_CODE(new_agent_from_json(Json{{"name", "x"}, {"nmae", "typo"}}),
                     ErrorCode::invalid_argument);
    CHECK_ERROR_CODE(new_agent_from_json(Json::array()), ErrorCode::invalid_argument);
    CHECK_ERROR_CODE(new_agent_from_json(Json{{"name", "x"}, {"persona", {{"age", 3}}}}),
                     ErrorCode::invalid_argument);
  }
  SUBCASE("an agent update merges model into the current config") {
    auto u = agent_update_from_json(Json{{"model", "small"}}, Json{{"temperature", 0.5}});
    REQUIRE(u.config.has_value());
    CHECK((*u.config)["model"] == "small");
    CHECK((*u.config)["temperature"] == 0.5);
    CHECK_FALSE(u.name.has_value());
    CHECK_ERROR_CODE(agent_update_from_json(Json::object(), Json::object()),
                     ErrorCode::invalid_argument);
    CHECK_ERROR_CODE(agent_update_from_json(Json{{"name", ""}}, Json::object()),
                     ErrorCode::invalid_argument);
  }
  SUBCASE("a conversation needs a user with a channel and an external id") {
    auto r = conversation_request_from_json(
        Json{{"user", {{"channel", "web"}, {"external_id", "alice"}}}, {"review", true}});
    CHECK(r.user.channel == "web");
    CHECK(r.user.external_id == "alice");
    CHECK(r.review);
    CHECK_FALSE(r.agent_id.has_value());
    CHECK_ERROR_CODE(conversation_request_from_json(Json{{"title", "x"}}),
                     ErrorCode::invalid_argument);
    CHECK_ERROR_CODE(conversation_request_from_json(Json{{"user", {{"channel", "web"}}}}),
                     ErrorCode::invalid_argument);
    CHECK_ERROR_CODE(conversation_request_from_json(Json{
                         {"user", {{"channel", "web"}, {"external_id", "a"}}}, {"review", "yes"}}),
                     ErrorCode::invalid_argument);
  }
  SUBCASE("an event needs RFC 3339 times") {
    auto r = event_request_from_json(Json{{"title", "Standup"},
                                          {"start", "2026-12-07T10:00:00Z"},
                                          {"end", "2026-12-07T10:15:00Z"},
                                          {"refuse_conflicts", true}});
    CHECK(r.refuse_conflicts);
    CHECK(r.event.start == parse_timestamp("2026-12-07T10:00:00Z"));
    CHECK_ERROR_CODE(event_request_from_json(Json{
                         {"title", "x"}, {"start", "tomorrow"}, {"end", "2026-12-07T10:15:00Z"}}),
                     ErrorCode::invalid_argument);
  }
  SUBCASE("query parameters") {
    CHECK(parse_integer("limit", "20", 1, 1000) == 20);
    CHECK_ERROR_CODE(parse_integer("limit", "0", 1, 1000), ErrorCode::invalid_argument);
    CHECK_ERROR_CODE(parse_integer("limit", "20x", 1, 1000), ErrorCode::invalid_argument);
    CHECK_ERROR_CODE(parse_integer("limit", "", 1, 1000), ErrorCode::invalid_argument);
    CHECK(parse_flag("stream", "1"));
    CHECK_FALSE(parse_flag("stream", "false"));
    CHECK_ERROR_CODE(parse_flag("stream", "maybe"), ErrorCode::invalid_argument);
  }
}

TEST_CASE("assistant_server: scheduling phrases are read relative to the clock") {
  const auto now = parse_timestamp("2026-12-06T09:30:00Z");
  auto r = parse_schedule("schedule lunch tomorrow at 12:00 for 1h", now);
  REQUIRE(r.has_value());
  CHECK(r->title == "lunch");
  CHECK(to_iso8601(r->start) == "2026-12-07T12:00:00.000000Z");
  CHECK(to_iso8601(r->end) == "2026-12-07T13:00:00.000000Z");

  r = parse_schedule("meeting on 2026-12-07 10:00", now);
  REQUIRE(r.has_value());
  CHECK(r->title == "meeting");
  CHECK(to_iso8601(r->start) == "2026-12-07T10:00:00.000000Z");
  CHECK(to_iso8601(r->end) == "2026-12-07T11:00:00.000000Z");

  r = parse_schedule("Book Team sync today 9:05 for 30 min.", now);
  REQUIRE(r.has_value());
  CHECK(r->title == "Team sync");
  CHECK(to_iso8601(r->start) == "2026-12-06T09:05:00.000000Z");
  CHECK(to_iso8601(r->end) == "2026-12-06T09:35:00.000000Z");

  // A day that crosses a month and a year.
  r = parse_schedule("party tomorrow at 23:30 for 2 hours",
                     parse_timestamp("2026-12-31T20:00:00Z"));
  REQUIRE(r.has_value());
  CHECK(to_iso8601(r->start) == "2027-01-01T23:30:00.000000Z");
  CHECK(to_iso8601(r->end) == "2027-01-02T01:30:00.000000Z");

  CHECK_FALSE(parse_schedule("hello there", now).has_value());
  CHECK_FALSE(parse_schedule("what did I say", now).has_value());
  CHECK_FALSE(parse_schedule("lunch tomorrow", now).has_value());
  CHECK_ERROR_CODE(parse_schedule("meeting on 2026-02-30 10:00", now), ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(parse_schedule("meeting today at 25:00", now), ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(parse_schedule("meeting today at 10:00 for 0h", now),
                   ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(parse_schedule("meeting today at 10:00 for 25h", now),
                   ErrorCode::invalid_argument);
}

TEST_CASE("assistant_server: replies are cut into word chunks that add up to the reply") {
  const std::string text = "Booked \"lunch\"  on 2026-12-07 (event 5).";
  auto chunks = split_chunks(text);
  REQUIRE(chunks.size() == 6);
  CHECK(chunks[0] == "Booked ");
  CHECK(chunks[1] == "\"lunch\"  ");
  std::string joined;
  for (const auto& c : chunks) joined += c;
  CHECK(joined == text);
  CHECK(split_chunks("").empty());
}

TEST_CASE_TEMPLATE("assistant_server: the built-in responder books, refuses overlaps, recalls", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& cs = store.conversations();
  auto user = cs.upsert_user({"web", "alice"});
  convstore::NewConversation n;
  n.user_id = user.id;
  n.channel = "web";
  auto conv = cs.start(n);
  BuiltinResponder responder;
  const auto now = parse_timestamp("2026-12-06T09:00:00Z");

  auto say = [&](const std::string& text) {
    cs.append(conv.id, testing::text(text));
    auto history = cs.recent(conv.id, 20);
    std::string reply;
    responder.respond(Turn{store, conv, nullptr, history, now},
                      [&](std::string_view chunk) { reply.append(chunk); });
    return reply;
  };

  CHECK(say("hello") == "You said: hello");
  const std::string booked = say("schedule lunch tomorrow at 12:00 for 1h");
  CHECK(booked.rfind("Booked \"lunch\" on 2026-12-07 from 12:00 to 13:00 UTC", 0) == 0);
  auto events = store.calendar().range(user.id, parse_timestamp("2026-12-07T00:00:00Z"),
                                       parse_timestamp("2026-12-08T00:00:00Z"));
  REQUIRE(events.items.size() == 1);
  CHECK(events.items[0].title == "lunch");

  const std::string refused = say("meeting on 2026-12-07 12:30 for 30m");
  CHECK(refused.find("overlaps \"lunch\"") != std::string::npos);
  CHECK(refused.find("nothing was booked") != std::string::npos);
  CHECK(store.calendar()
            .range(user.id, parse_timestamp("2026-12-07T00:00:00Z"),
                   parse_timestamp("2026-12-08T00:00:00Z"))
            .items.size() == 1);

  const std::string recalled = say("what did I say?");
  CHECK(recalled.find("\"hello\"") != std::string::npos);
  CHECK(recalled.find("\"schedule lunch tomorrow at 12:00 for 1h\"") != std::string::npos);

  CHECK(say("dinner on 2026-02-30 19:00").rfind("I could not book that", 0) == 0);
}
