// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "support.hpp"

using namespace convstore;

namespace {

NewOperationTemplate tmpl(const std::string& kind, const std::string& name,
                          std::optional<UserId> user = std::nullopt) {
  NewOperationTemplate n;
  n.user_id = user;
  n.kind = kind;
  n.name = name;
  n.sample_input = "кофе 300 рублей";
  n.expected_output = Json{{"amount", 300}, {"item", "coffee"}};
  return n;
}

std::string count_rows(const testing::TestDb& db) {
  return testing::raw_exec(db, "SELECT COUNT(*) FROM operation_templates");
}

std::vector<std::string> names(const std::vector<OperationTemplate>& ts) {
  std::vector<std::string> out;
  for (const auto& t : ts) out.push_back(t.name);
  return out;
}

std::string joined(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : ",") + x;
  return s;
}

}  // namespace

TEST_CASE_TEMPLATE("OperationTemplates: add, get, list by use, record_use, remove", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  Store store = db.open();
  auto& tp = store.templates();
  const UserId alice = store.conversations().upsert_user(UserUpsert("telegram", "alice")).id;
  const UserId bob = store.conversations().upsert_user(UserUpsert("telegram", "bob")).id;

  auto a = tp.add(tmpl("expense", "coffee"));
  CHECK(a.id > 0);
  CHECK_FALSE(a.user_id.has_value());
  CHECK(a.kind == "expense");
  CHECK(a.sample_input == "кофе 300 рублей");
  CHECK(a.expected_output == Json{{"amount", 300}, {"item", "coffee"}});
  CHECK(a.use_count == 0);
  CHECK_FALSE(a.last_used_at.has_value());
  auto got = tp.get(a.id);
  REQUIRE(got);
  CHECK(got->name == "coffee");
  CHECK(got->expected_output == a.expected_output);
  CHECK_FALSE(tp.get(a.id + 1000));

  auto b = tp.add(tmpl("expense", "taxi", alice));
  auto c = tp.add(tmpl("expense", "lunch", bob));
  auto d = tp.add(tmpl("expense", "rent"));
  auto e = tp.add(tmpl("income", "salary"));
  CHECK(b.user_id == std::optional<UserId>(alice));

  // coffee 3 uses, taxi 1, lunch 1 (used later than taxi), rent none.
  for (int i = 0; i < 3; ++i) tp.record_use(a.id);
  auto used = tp.record_use(b.id);
  CHECK(used.use_count == 1);
  REQUIRE(used.last_used_at);
  tp.record_use(c.id);
  testing::raw_exec(db,
                    "UPDATE operation_templates SET last_used_at = '2030-01-01T00:00:00Z' "
                    "WHERE id = " +
                        std::to_string(b.id));
  testing::raw_exec(db,
                    "UPDATE operation_templates SET last_used_at = '2030-01-02T00:00:00Z' "
                    "WHERE id = " +
                        std::to_string(c.id));
  CHECK(tp.get(a.id)->use_count == 3);

  CHECK(joined(names(tp.list("expense"))) == "coffee,lunch,taxi,rent");
  CHECK(joined(names(tp.list("expense", std::nullopt, 2))) == "coffee,lunch");
  // Alice sees hers and the shared ones, not Bob's.
  CHECK(joined(names(tp.list("expense", alice))) == "coffee,taxi,rent");
  CHECK(joined(names(tp.list("income"))) == "salary");
  CHECK(tp.list("transfer").empty());

  CHECK(tp.remove(d.id));
  CHECK_FALSE(tp.remove(d.id));
  CHECK_FALSE(tp.get(d.id));
  CHECK(joined(names(tp.list("expense", alice))) == "coffee,taxi");
  CHECK(to_json(*tp.get(e.id))["kind"] == "income");
  CHECK(to_json(*tp.get(e.id))["name"] == "salary");

  // A user's templates go with the user; the shared ones stay.
  testing::delete_user_by_sql(db, alice);
  CHECK_FALSE(tp.get(b.id));
  CHECK(tp.get(a.id));
  CHECK(count_rows(db) == "3");  // coffee, lunch, salary
}

TEST_CASE_TEMPLATE("OperationTemplates: bad input writes nothing", B, CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  Store store = db.open();
  auto& tp = store.templates();
  const UserId alice = store.conversations().upsert_user(UserUpsert("telegram", "alice")).id;

  CHECK_ERROR_CODE(tp.add(tmpl("", "x")), ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(tp.add(tmpl("expense", "")), ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(tp.add(tmpl("expense", "a\nb")), ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(tp.add(tmpl(std::string(101, 'k'), "x")), ErrorCode::invalid_argument);
  auto bad = tmpl("expense", "x");
  bad.sample_input = "bad \xff";
  CHECK_ERROR_CODE(tp.add(bad), ErrorCode::invalid_argument);
  bad.sample_input = std::string(64 * 1024 + 1, 'a');
  CHECK_ERROR_CODE(tp.add(bad), ErrorCode::invalid_argument);
  bad = tmpl("expense", "x");
  bad.expected_output = Json{{"t", std::string("nul\0", 4)}};
  CHECK_ERROR_CODE(tp.add(bad), ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(tp.add(tmpl("expense", "x", alice + 1000)), ErrorCode::not_found);
  CHECK(count_rows(db) == "0");

  tp.add(tmpl("expense", "x"));
  tp.add(tmpl("expense", "x", alice));  // the same name for a user: another template
  tp.add(tmpl("income", "x"));          // another kind
  CHECK_ERROR_CODE(tp.add(tmpl("expense", "x")), ErrorCode::already_exists);
  CHECK_ERROR_CODE(tp.add(tmpl("expense", "x", alice)), ErrorCode::already_exists);
  CHECK(count_rows(db) == "3");

  CHECK_ERROR_CODE(tp.list(""), ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(tp.list("expense", std::nullopt, 0), ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(tp.list("expense", std::nullopt, 1001), ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(tp.record_use(424242), ErrorCode::not_found);
}

TEST_CASE_TEMPLATE("OperationTemplates: concurrent record_use counts every use", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  Store store = db.open();
  auto t = store.templates().add(tmpl("expense", "coffee"));
  constexpr int kThreads = 4, kUses = 25;
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&] {
      for (int n = 0; n < kUses; ++n) {
        try {
          store.templates().record_use(t.id);
        } catch (const std::exception& e) {
          ++failures;
          MESSAGE(e.what());
        }
        // SQLite's busy handler is unfair to a writer that never pauses.
        std::this_thread::sleep_for(std::chrono::microseconds(200));
      }
    });
  }
  for (auto& th : threads) th.join();
  CHECK(failures.load() == 0);
  CHECK(store.templates().get(t.id)->use_count == kThreads * kUses);
}

TEST_CASE_TEMPLATE("OperationTemplates: find looks one template up by owner, kind and name", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  Store store = db.open();
  auto& tp = store.templates();
  const UserId alice = store.conversations().upsert_user(UserUpsert("telegram", "alice")).id;
  const UserId bob = store.conversations().upsert_user(UserUpsert("telegram", "bob")).id;

  auto shared = tp.add(tmpl("expense", "coffee"));
  auto mine = tp.add(tmpl("expense", "coffee", alice));
  auto income = tp.add(tmpl("income", "coffee", alice));
  tp.record_use(mine.id);

  auto a = tp.find(alice, "expense", "coffee");
  REQUIRE(a.has_value());
  CHECK(a->id == mine.id);
  CHECK(a->user_id == std::optional<UserId>(alice));
  CHECK(a->use_count == 1);
  CHECK(a->expected_output == mine.expected_output);
  auto s = tp.find(std::nullopt, "expense", "coffee");
  REQUIRE(s.has_value());
  CHECK(s->id == shared.id);
  CHECK_FALSE(s->user_id.has_value());
  CHECK(tp.find(alice, "income", "coffee")->id == income.id);
  // Exactly the key: no fallback to the shared template, another kind or
  // another case.
  CHECK_FALSE(tp.find(bob, "expense", "coffee").has_value());
  CHECK_FALSE(tp.find(std::nullopt, "income", "coffee").has_value());
  CHECK_FALSE(tp.find(alice, "expense", "Coffee").has_value());
  CHECK_FALSE(tp.find(alice, "expense", "tea").has_value());
  CHECK_FALSE(tp.find(alice + 1000, "expense", "coffee").has_value());
  // Among many templates (more than a listing's default page).
  for (int i = 0; i < 60; ++i) tp.add(tmpl("expense", "item " + std::to_string(i), alice));
  auto far = tp.find(alice, "expense", "item 59");
  REQUIRE(far.has_value());
  CHECK(far->name == "item 59");
  tp.remove(mine.id);
  CHECK_FALSE(tp.find(alice, "expense", "coffee").has_value());

  CHECK_ERROR_CODE(tp.find(alice, "", "coffee"), ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(tp.find(alice, "expense", ""), ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(tp.find(alice, "expense", std::string(201, 'n')), ErrorCode::invalid_argument);
}
