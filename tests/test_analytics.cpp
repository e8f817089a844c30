// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#include <string>

#include "support.hpp"

using namespace convstore;

namespace {

// Sets a row's time the way an SQL tool would: the store writes now().
void set_time(const testing::TestDb& db, const char* table, std::int64_t id, const char* at) {
  testing::raw_exec(db, std::string("UPDATE ") + table + " SET created_at = '" + at +
                            "' WHERE id = " + std::to_string(id));
}

Timestamp at(const char* text) { return parse_timestamp(text); }

// The data of every analytics test, with the figures computed by hand in
// the comments. Days: D1 = 2030-03-14, D2 = 2030-03-15 (UTC); the range is
// [D1, D2 + 1 day).
struct Fixture {
  UserId u1 = 0, u2 = 0, u3 = 0;
  ConversationId c1 = 0, c2 = 0, c3 = 0, c4 = 0, c5 = 0;

  explicit Fixture(const testing::TestDb& db, Store& store) {
    auto& cs = store.conversations();
    u1 = cs.upsert_user(UserUpsert("telegram", "a")).id;
    u2 = cs.upsert_user(UserUpsert("telegram", "b")).id;
    u3 = cs.upsert_user(UserUpsert("discord", "c")).id;
    auto conv = [&](std::optional<UserId> u, const char* channel, const char* created) {
      NewConversation n;
      n.user_id = u;
      n.channel = channel;
      ConversationId id = cs.start(n).id;
      set_time(db, "conversations", id, created);
      return id;
    };
    c1 = conv(u1, "telegram", "2030-03-14T01:00:00.000000Z");
    c2 = conv(u2, "telegram", "2030-03-14T02:00:00.000000Z");
    c3 = conv(u3, "discord", "2030-03-15T03:00:00.000000Z");
    c4 = conv(std::nullopt, "web", "2030-03-14T04:00:00.000000Z");
    c5 = conv(u1, "telegram", "2030-03-10T00:00:00.000000Z");  // created before the range
    auto msg = [&](ConversationId c, Role role, std::optional<std::string> model,
                   std::optional<std::int64_t> tokens, const char* when) {
      NewMessage m;
      m.role = role;
      m.content = "x";
      m.model = std::move(model);
      m.token_count = tokens;
      set_time(db, "messages", cs.append(c, m).id, when);
    };
    const auto user = Role::user;
    const auto bot = Role::assistant;
    msg(c1, user, std::nullopt, 10, "2030-03-14T10:00:00.000000Z");            // m1 D1
    msg(c1, bot, "gpt-4", 20, "2030-03-14T10:01:00.000000Z");                  // m2 D1
    msg(c1, user, std::nullopt, std::nullopt, "2030-03-15T00:00:00.000000Z");  // m3 D2 (midnight)
    msg(c1, bot, "gpt-4", 30, "2030-03-14T23:59:59.999999Z");                  // m4 D1 (last µs)
    msg(c2, user, std::nullopt, 5, "2030-03-15T12:00:00.000000Z");             // m5 D2
    msg(c2, bot, "claude", 50, "2030-03-15T12:01:00.000000Z");                 // m6 D2
    msg(c3, bot, "claude", 7, "2030-03-14T08:00:00.000000Z");                  // m7 D1
    msg(c3, user, std::nullopt, std::nullopt, "2030-03-15T09:00:00.000000Z");  // m8 D2
    msg(c4, user, "gpt-4", 100, "2030-03-14T05:00:00.000000Z");                // m9 D1, no user
    // Decoys outside [from, to): the microsecond before, and `to` itself.
    msg(c1, user, "gpt-4", 1000, "2030-03-13T23:59:59.999999Z");   // m10
    msg(c2, user, "claude", 1000, "2030-03-16T00:00:00.000000Z");  // m11
    msg(c5, user, "gpt-4", 40, "2030-03-10T00:00:01.000000Z");     // m12
    cs.set_status(c1, ConversationStatus::completed);
    cs.set_status(c2, ConversationStatus::abandoned);
    cs.set_status(c5, ConversationStatus::completed);
  }
};

AnalyticsFilter range() {
  AnalyticsFilter f;
  f.from = at("2030-03-14T00:00:00Z");
  f.to = at("2030-03-16T00:00:00Z");
  return f;
}

void check_row(const UsageRow& r, std::int64_t messages, std::int64_t tokens, std::int64_t without,
               std::int64_t conversations) {
  CHECK(r.messages == messages);
  CHECK(r.tokens == tokens);
  CHECK(r.messages_without_tokens == without);
  CHECK(r.conversations == conversations);
}

}  // namespace

TEST_CASE_TEMPLATE("Analytics: usage by model, user, channel and UTC day", B, CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  Store store = db.open();
  Fixture fx(db, store);
  auto& an = store.analytics();

  SUBCASE("by model: named models by name, messages without a model last") {
    auto rows = an.usage(range(), UsageGroup::model);
    REQUIRE(rows.size() == 3);
    CHECK(rows[0].model == std::optional<std::string>("claude"));
    check_row(rows[0], 2, 57, 0, 2);  // m6 50 + m7 7; c2, c3
    CHECK(rows[1].model == std::optional<std::string>("gpt-4"));
    check_row(rows[1], 3, 150, 0, 2);  // m2 20 + m4 30 + m9 100; c1, c4
    CHECK_FALSE(rows[2].model.has_value());
    check_row(rows[2], 4, 15, 2, 3);  // m1 10, m3 -, m5 5, m8 -; c1, c2, c3
    for (const auto& r : rows) {
      CHECK_FALSE(r.user_id.has_value());
      CHECK_FALSE(r.day.has_value());
    }
  }
  SUBCASE("by user: by id, conversations without a user last") {
    auto rows = an.usage(range(), UsageGroup::user);
    REQUIRE(rows.size() == 4);
    CHECK(rows[0].user_id == std::optional<UserId>(fx.u1));
    check_row(rows[0], 4, 60, 1, 1);  // m1-m4
    CHECK(rows[1].user_id == std::optional<UserId>(fx.u2));
    check_row(rows[1], 2, 55, 0, 1);
    CHECK(rows[2].user_id == std::optional<UserId>(fx.u3));
    check_row(rows[2], 2, 7, 1, 1);
    CHECK_FALSE(rows[3].user_id.has_value());
    check_row(rows[3], 1, 100, 0, 1);
  }
  SUBCASE("by channel") {
    auto rows = an.usage(range(), UsageGroup::channel);
    REQUIRE(rows.size() == 3);
    CHECK(rows[0].channel == std::optional<std::string>("discord"));
    check_row(rows[0], 2, 7, 1, 1);
    CHECK(rows[1].channel == std::optional<std::string>("telegram"));
    check_row(rows[1], 6, 115, 1, 2);
    CHECK(rows[2].channel == std::optional<std::string>("web"));
    check_row(rows[2], 1, 100, 0, 1);
  }
  SUBCASE("by day: 23:59:59.999999 is the day before, 00:00:00 the day after") {
    auto rows = an.usage(range(), UsageGroup::day);
    REQUIRE(rows.size() == 2);
    CHECK(rows[0].day == std::optional<Timestamp>(at("2030-03-14T00:00:00Z")));
    check_row(rows[0], 5, 167, 0, 3);  // m1 m2 m4 m7 m9
    CHECK(rows[1].day == std::optional<Timestamp>(at("2030-03-15T00:00:00Z")));
    check_row(rows[1], 4, 55, 2, 3);  // m3 m5 m6 m8
  }
  SUBCASE("filters: channel, user, and a range of one microsecond") {
    auto f = range();
    f.channel = "telegram";
    auto days = an.usage(f, UsageGroup::day);
    REQUIRE(days.size() == 2);
    check_row(days[0], 3, 60, 0, 1);  // m1 m2 m4
    check_row(days[1], 3, 55, 1, 2);  // m3 m5 m6

    f = range();
    f.user_id = fx.u1;
    auto models = an.usage(f, UsageGroup::model);
    REQUIRE(models.size() == 2);
    CHECK(models[0].model == std::optional<std::string>("gpt-4"));
    check_row(models[0], 2, 50, 0, 1);
    CHECK_FALSE(models[1].model.has_value());
    check_row(models[1], 2, 10, 1, 1);

    f.channel = "discord";  // u1 has no discord conversation
    CHECK(an.usage(f, UsageGroup::model).empty());

    f = range();
    f.from = at("2030-03-14T23:59:59.999999Z");
    f.to = at("2030-03-15T00:00:00Z");
    auto one = an.usage(f, UsageGroup::day);
    REQUIRE(one.size() == 1);
    CHECK(one[0].day == std::optional<Timestamp>(at("2030-03-14T00:00:00Z")));
    check_row(one[0], 1, 30, 0, 1);  // m4 only
  }
}

TEST_CASE_TEMPLATE("Analytics: active users per UTC day", B, CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  Store store = db.open();
  Fixture fx(db, store);
  auto& an = store.analytics();

  // Users' own messages: D1 m1 (u1; m9 has no user); D2 m3 u1, m5 u2, m8 u3.
  auto own = an.active_users(range());
  REQUIRE(own.size() == 2);
  CHECK(own[0].day == at("2030-03-14T00:00:00Z"));
  CHECK(own[0].users == 1);
  CHECK(own[1].day == at("2030-03-15T00:00:00Z"));
  CHECK(own[1].users == 3);

  // Any role: D1 adds u3 (the assistant's m7 in c3).
  auto any = an.active_users(range(), false);
  REQUIRE(any.size() == 2);
  CHECK(any[0].users == 2);
  CHECK(any[1].users == 3);

  auto f = range();
  f.channel = "telegram";
  auto tg = an.active_users(f);
  REQUIRE(tg.size() == 2);
  CHECK(tg[0].users == 1);
  CHECK(tg[1].users == 2);

  // The decoys alone: m10 (u1, 2030-03-13) and m11 (u2, 2030-03-16).
  f = range();
  f.from = at("2030-03-13T00:00:00Z");
  f.to = at("2030-03-17T00:00:00Z");
  auto wide = an.active_users(f);
  REQUIRE(wide.size() == 4);
  CHECK(wide[0].day == at("2030-03-13T00:00:00Z"));
  CHECK(wide[0].users == 1);
  CHECK(wide[3].day == at("2030-03-16T00:00:00Z"));
  CHECK(wide[3].users == 1);
}

TEST_CASE_TEMPLATE("Analytics: conversations by status and their length", B, CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  Store store = db.open();
  Fixture fx(db, store);
  auto& an = store.analytics();

  auto all = an.conversation_counts();
  CHECK(all.active == 2);     // c3 c4
  CHECK(all.completed == 2);  // c1 c5
  CHECK(all.abandoned == 1);  // c2
  CHECK(all.archived == 0);
  CHECK(all.total() == 5);

  ConversationScope s;
  s.created_from = at("2030-03-14T00:00:00Z");
  s.created_to = at("2030-03-16T00:00:00Z");
  auto in_range = an.conversation_counts(s);
  CHECK(in_range.active == 2);
  CHECK(in_range.completed == 1);  // c5 was created before
  CHECK(in_range.abandoned == 1);

  ConversationScope tg;
  tg.channel = "telegram";
  auto t = an.conversation_counts(tg);
  CHECK(t.total() == 3);
  CHECK(t.completed == 2);
  tg.user_id = fx.u2;
  CHECK(an.conversation_counts(tg).abandoned == 1);
  CHECK(an.conversation_counts(tg).total() == 1);

  // c1..c4 were created in range (c5 not); all their messages count, the
  // decoys m10 (c1) and m11 (c2) too: c1 5 messages, 1060 tokens; c2 3,
  // 1055; c3 2, 7; c4 1, 100.
  auto len = an.conversation_length(range());
  CHECK(len.conversations == 4);
  CHECK(len.messages == 11);
  CHECK(len.tokens == 2222);
  CHECK(len.avg_messages == doctest::Approx(2.75));
  CHECK(len.avg_tokens == doctest::Approx(555.5));

  auto f = range();
  f.user_id = fx.u1;
  auto mine = an.conversation_length(f);
  CHECK(mine.conversations == 1);
  CHECK(mine.avg_messages == doctest::Approx(5.0));
  CHECK(mine.avg_tokens == doctest::Approx(1060.0));

  f = range();
  f.from = at("2031-01-01T00:00:00Z");
  f.to = at("2031-02-01T00:00:00Z");
  auto none = an.conversation_length(f);
  CHECK(none.conversations == 0);
  CHECK(none.avg_messages == 0.0);
}

TEST_CASE_TEMPLATE("Analytics: bad filters are refused", B, CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  Store store = db.open();
  auto& an = store.analytics();
  auto f = range();
  f.to = f.from;
  CHECK_ERROR_CODE(an.usage(f, UsageGroup::day), ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(an.active_users(f), ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(an.conversation_length(f), ErrorCode::invalid_argument);
  f = range();
  f.channel = std::string("bad\xff");
  CHECK_ERROR_CODE(an.usage(f, UsageGroup::model), ErrorCode::invalid_argument);
  f = range();
  CHECK_ERROR_CODE(an.usage(f, static_cast<UsageGroup>(9)), ErrorCode::invalid_argument);
  ConversationScope s;
  s.created_from = at("2030-03-14T00:00:00Z");
  s.created_to = s.created_from;
  CHECK_ERROR_CODE(an.conversation_counts(s), ErrorCode::invalid_argument);
  // An empty store: no rows, zeros.
  CHECK(an.usage(range(), UsageGroup::model).empty());
  CHECK(an.conversation_counts().total() == 0);
}
