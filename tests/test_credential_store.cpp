// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#include <atomic>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "support.hpp"

using namespace convstore;

namespace {

UserId new_user(Store& store, const std::string& id = "alice") {
  return store.conversations().upsert_user(UserUpsert("telegram", id)).id;
}

std::string count_rows(const testing::TestDb& db) {
  return testing::raw_exec(db, "SELECT COUNT(*) FROM credentials");
}

// What error `fn` throws: its code and message.
template <class F>
std::pair<ErrorCode, std::string> error_of(F&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return {e.code(), e.what()};
  }
  FAIL("no error was thrown");
  return {};
}

const std::string kSession = "1BVtsOK8Bu5hTelegramSessionString+/==";

}  // namespace

TEST_CASE("credentials: secret keys") {
  SecretKey a = SecretKey::generate();
  SecretKey b = SecretKey::generate();
  CHECK(a.id().size() == 16);
  CHECK(a.id().find_first_not_of("0123456789abcdef") == std::string::npos);
  CHECK(a.id() != b.id());
  CHECK(a.bytes() != b.bytes());

  // The base64 text gives the same key back, standard or URL-safe.
  const std::string text = a.to_base64();
  CHECK(text.size() == 44);
  CHECK(SecretKey::from_base64(text).id() == a.id());
  CHECK(SecretKey::from_base64(text + "\n").id() == a.id());  // as read from a file
  std::string url = text;
  for (char& ch : url) ch = ch == '+' ? '-' : ch == '/' ? '_' : ch;
  while (!url.empty() && url.back() == '=') url.pop_back();
  CHECK(SecretKey::from_base64(url).bytes() == a.bytes());
  const std::string raw(a.bytes().begin(), a.bytes().end());
  CHECK(SecretKey::from_bytes(raw).id() == a.id());
  SecretKey copy = b;
  copy = a;
  CHECK(copy.id() == a.id());

  // Errors say what is wrong without repeating the text.
  auto [code, msg] = error_of([] { SecretKey::from_base64("not*base64*secretvalue"); });
  CHECK(code == ErrorCode::invalid_argument);
  CHECK(msg.find("secretvalue") == std::string::npos);
  CHECK_ERROR_CODE(SecretKey::from_base64("c2hvcnQ="), ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(SecretKey::from_base64(""), ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(SecretKey::from_bytes("short"), ErrorCode::invalid_argument);
}

TEST_CASE_TEMPLATE("credentials: put and get round-trip any bytes, stored only sealed", B,
                   CONVSTORE_BACKENDS) {
  testing::TestDb db(B::name);
  if (!db.ready()) return;
  Store store = db.open();
  auto& creds = store.credentials();
  const SecretKey key = SecretKey::generate();
  UserId alice = new_user(store);

  CredentialInfo info = creds.put(alice, "telegram", kSession, key, Json{{"phone", "+49***"}});
  CHECK(info.id > 0);
  CHECK(info.user_id == alice);
  CHECK(info.name == "telegram");
  CHECK(info.active);
  CHECK(info.key_id == key.id());
  CHECK(info.metadata["phone"] == "+49***");
  CHECK_FALSE(info.deactivated_at);

  auto got = creds.get(alice, "telegram", key);
  REQUIRE(got);
  CHECK(got->secret == kSession);
  CHECK(got->info.id == info.id);

  static const char kBinary[] = "\0\x01\xff\xfe session \0 end";
  const std::string binary(kBinary, sizeof kBinary - 1);
  CHECK(binary.size() == 18);
  creds.put(alice, "binary", binary, key);
  CHECK(creds.get(alice, "binary", key)->secret == binary);

  // Neither the secret nor the key is anywhere in the database.
  CHECK_FALSE(testing::stored_anywhere(db, "credentials", "TelegramSessionString"));
  CHECK_FALSE(testing::stored_anywhere(db, "credentials", key.to_base64()));
  CHECK(testing::stored_anywhere(db, "credentials", key.id()));  // the search does find things

  // Two seals of one secret differ (a fresh nonce each time).
  const std::string first =
      testing::raw_exec(db, "SELECT ciphertext FROM credentials WHERE name = 'telegram'");
  creds.put(alice, "telegram", kSession, key, Json{{"phone", "+49***"}});
  CHECK(testing::raw_exec(db, "SELECT ciphertext FROM credentials WHERE name = 'telegram'") !=
        first);

  // Listing and info never decrypt.
  auto all = creds.list(alice);
  REQUIRE(all.size() == 2);
  CHECK(all[0].name == "binary");
  CHECK(all[1].name == "telegram");
  CHECK(creds.info(alice, "telegram")->key_id == key.id());
  CHECK_FALSE(creds.info(alice, "nothing"));
  CHECK_FALSE(creds.get(alice, "nothing", key));
  CHECK(to_json(all[1]).dump().find("Telegram") == std::string::npos);
  CHECK(creds.key_usage() == std::map<std::string, std::int64_t>{{key.id(), 2}});
}

TEST_CASE_TEMPLATE("credentials: a wrong key is a clear error, never garbage", B,
                   CONVSTORE_BACKENDS) {
  testing::TestDb db(B::name);
  if (!db.ready()) return;
  Store store = db.open();
  auto& creds = store.credentials();
  const SecretKey key = SecretKey::generate();
  const SecretKey other = SecretKey::generate();
  UserId alice = new_user(store);
  creds.put(alice, "telegram", kSession, key);

  auto [code, msg] = error_of([&] { creds.get(alice, "telegram", other); });
  CHECK(code == ErrorCode::invalid_argument);
  CHECK(msg.find(key.id()) != std::string::npos);
  CHECK(msg.find(other.id()) != std::string::npos);
  CHECK(msg.find("telegram") != std::string::npos);

  // Given several keys, the one that sealed it is used.
  CHECK(creds.get(alice, "telegram", {other, key})->secret == kSession);
  CHECK_ERROR_CODE(creds.get(alice, "telegram", std::vector<SecretKey>{}),
                   ErrorCode::invalid_argument);
}

TEST_CASE_TEMPLATE("credentials: tampered or moved ciphertext is data_loss", B,
                   CONVSTORE_BACKENDS) {
  testing::TestDb db(B::name);
  if (!db.ready()) return;
  Store store = db.open();
  auto& creds = store.credentials();
  const SecretKey key = SecretKey::generate();
  UserId alice = new_user(store, "alice");
  UserId bob = new_user(store, "bob");
  creds.put(alice, "telegram", kSession, key);
  creds.put(bob, "telegram", "bob's own session", key);
  creds.put(alice, "nonce", kSession, key);
  creds.put(alice, "garbled", kSession, key);

  // One character of alice's ciphertext changed.
  std::string ct =
      testing::raw_exec(db,
                        "SELECT ciphertext FROM credentials WHERE name = 'telegram' AND "
                        "user_id = " +
                            std::to_string(alice));
  ct[4] = ct[4] == 'A' ? 'B' : 'A';
  testing::raw_exec(db, "UPDATE credentials SET ciphertext = '" + ct +
                            "' WHERE name = 'telegram' AND user_id = " + std::to_string(alice));
  auto [code, msg] = error_of([&] { creds.get(alice, "telegram", key); });
  CHECK(code == ErrorCode::data_loss);
  CHECK(msg.find("credential 'telegram' of user " + std::to_string(alice)) != std::string::npos);
  CHECK(msg.find("Session") == std::string::npos);

  // Bob's valid ciphertext copied onto alice's row does not open there.
  testing::raw_exec(db,
                    "UPDATE credentials SET nonce = (SELECT nonce FROM credentials WHERE "
                    "user_id = " +
                        std::to_string(bob) +
                        "), ciphertext = (SELECT ciphertext FROM credentials WHERE "
                        "user_id = " +
                        std::to_string(bob) + ") WHERE name = 'nonce'");
  CHECK_ERROR_CODE(creds.get(alice, "nonce", key), ErrorCode::data_loss);
  CHECK(creds.get(bob, "telegram", key)->secret == "bob's own session");

  // Text that is not even base64.
  testing::raw_exec(db, "UPDATE credentials SET ciphertext = '%%%' WHERE name = 'garbled'");
  CHECK_ERROR_CODE(creds.get(alice, "garbled", key), ErrorCode::data_loss);
}

TEST_CASE_TEMPLATE("credentials: deactivate, revive by put, remove", B, CONVSTORE_BACKENDS) {
  testing::TestDb db(B::name);
  if (!db.ready()) return;
  Store store = db.open();
  auto& creds = store.credentials();
  const SecretKey key = SecretKey::generate();
  UserId alice = new_user(store);
  creds.put(alice, "telegram", kSession, key);

  CHECK(creds.deactivate(alice, "telegram"));
  CHECK_FALSE(creds.deactivate(alice, "telegram"));
  CHECK_FALSE(creds.deactivate(alice, "nothing"));
  CHECK_FALSE(creds.get(alice, "telegram", key));
  auto info = creds.info(alice, "telegram");
  REQUIRE(info);
  CHECK_FALSE(info->active);
  CHECK(info->deactivated_at);

  // A new sign-in revives it, with the new secret.
  creds.put(alice, "telegram", "new session", key);
  CHECK(creds.get(alice, "telegram", key)->secret == "new session");
  CHECK_FALSE(creds.info(alice, "telegram")->deactivated_at);

  CHECK(creds.remove(alice, "telegram"));
  CHECK_FALSE(creds.remove(alice, "telegram"));
  CHECK_FALSE(creds.info(alice, "telegram"));
  CHECK(count_rows(db) == "0");
}

TEST_CASE_TEMPLATE("credentials: bad input is refused and nothing is written", B,
                   CONVSTORE_BACKENDS) {
  testing::TestDb db(B::name);
  if (!db.ready()) return;
  Store store = db.open();
  auto& creds = store.credentials();
  const SecretKey key = SecretKey::generate();
  UserId alice = new_user(store);

  CHECK_ERROR_CODE(creds.put(alice, "", kSession, key), ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(creds.put(alice, std::string(201, 'n'), kSession, key),
                   ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(creds.put(alice, "bad\nname", kSession, key), ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(creds.put(alice, "telegram", "", key), ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(
      creds.put(alice, "telegram", std::string(CredentialStore::max_secret_bytes + 1, 's'), key),
      ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(creds.put(alice, "telegram", kSession, key, Json::array()),
                   ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(creds.put(alice, "telegram", kSession, key, Json{{"x", "\xff"}}),
                   ErrorCode::invalid_argument);
  auto [code, msg] = error_of([&] { creds.put(alice + 100, "telegram", kSession, key); });
  CHECK(code == ErrorCode::not_found);
  CHECK(msg.find("user " + std::to_string(alice + 100)) != std::string::npos);
  CHECK(msg.find("Session") == std::string::npos);
  CHECK(count_rows(db) == "0");

  // The largest secret is accepted.
  const std::string big(CredentialStore::max_secret_bytes, 's');
  creds.put(alice, "big", big, key);
  CHECK(creds.get(alice, "big", key)->secret == big);

  const SecretKey other = SecretKey::generate();
  CHECK_ERROR_CODE(creds.rotate(key, other, 0), ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(creds.rotate(key, other, 10001), ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(creds.rotate(key, key), ErrorCode::invalid_argument);
  CHECK(creds.info(alice, "big")->key_id == key.id());
}

TEST_CASE_TEMPLATE("credentials: rotation re-encrypts in batches under the new key", B,
                   CONVSTORE_BACKENDS) {
  testing::TestDb db(B::name);
  if (!db.ready()) return;
  Store store = db.open();
  auto& creds = store.credentials();
  const SecretKey old_key = SecretKey::generate();
  const SecretKey new_key = SecretKey::generate();
  const SecretKey unrelated = SecretKey::generate();
  std::vector<UserId> users;
  for (int i = 0; i < 7; ++i) {
    users.push_back(new_user(store, "u" + std::to_string(i)));
    creds.put(users.back(), "telegram", "session " + std::to_string(i), old_key);
  }
  creds.put(users[0], "other", "kept under its own key", unrelated);
  creds.deactivate(users[1], "telegram");

  RotationResult r = creds.rotate(old_key, new_key, 3);  // batches of 3, 3, 1
  CHECK(r.rotated == 7);
  CHECK(r.remaining == 0);
  CHECK(creds.key_usage() ==
        std::map<std::string, std::int64_t>{{new_key.id(), 7}, {unrelated.id(), 1}});
  for (int i = 0; i < 7; ++i) {
    if (i == 1) continue;
    CHECK(creds.get(users[i], "telegram", new_key)->secret == "session " + std::to_string(i));
    CHECK_ERROR_CODE(creds.get(users[i], "telegram", old_key), ErrorCode::invalid_argument);
  }
  CHECK(creds.info(users[1], "telegram")->key_id == new_key.id());  // inactive ones too
  CHECK_FALSE(creds.info(users[1], "telegram")->active);
  CHECK(creds.get(users[0], "other", unrelated)->secret == "kept under its own key");

  // Running it again finds nothing to do.
  CHECK(creds.rotate(old_key, new_key).rotated == 0);

  // A row that does not authenticate stops the rotation, named; the rows
  // before it are rotated, the rest stay under the old key and still open.
  for (int i = 0; i < 3; ++i) creds.put(users[i], "telegram", "again", new_key);
  testing::raw_exec(db,
                    "UPDATE credentials SET ciphertext = 'AAAA' || ciphertext WHERE user_id = " +
                        std::to_string(users[1]) + " AND name = 'telegram'");
  auto [code, msg] = error_of([&] { creds.rotate(new_key, old_key, 1); });
  CHECK(code == ErrorCode::data_loss);
  CHECK(msg.find("user " + std::to_string(users[1])) != std::string::npos);
  CHECK(creds.get(users[0], "telegram", old_key)->secret == "again");
  CHECK(creds.get(users[2], "telegram", new_key)->secret == "again");
}

TEST_CASE_TEMPLATE("credentials: a rotation never overwrites a concurrent put", B,
                   CONVSTORE_BACKENDS) {
  testing::TestDb db(B::name);
  if (!db.ready()) return;
  Store store = db.open();
  auto& creds = store.credentials();
  const SecretKey old_key = SecretKey::generate();
  const SecretKey new_key = SecretKey::generate();
  std::vector<UserId> users;
  for (int i = 0; i < 40; ++i) {
    users.push_back(new_user(store, "u" + std::to_string(i)));
    creds.put(users.back(), "telegram", "first", old_key);
  }
  // A writer re-signs users in under the new key while the rotation runs.
  std::atomic<bool> done{false};
  std::set<UserId> rewritten;  // by the writer; read after join
  std::thread writer([&] {
    for (int round = 0; !done && round < 200; ++round) {
      UserId u = users[static_cast<std::size_t>(round * 7) % users.size()];
      creds.put(u, "telegram", "second " + std::to_string(u), new_key);
      rewritten.insert(u);
    }
  });
  for (int i = 0; i < 3; ++i) creds.rotate(old_key, new_key, 2);
  done = true;
  writer.join();
  creds.rotate(old_key, new_key, 2);

  // Every row opens under the new key and holds what its last writer wrote.
  CHECK(creds.key_usage() == std::map<std::string, std::int64_t>{{new_key.id(), 40}});
  for (UserId u : users) {
    auto c = creds.get(u, "telegram", new_key);
    REQUIRE(c);
    CHECK(c->secret == (rewritten.count(u) ? "second " + std::to_string(u) : "first"));
  }
}

TEST_CASE_TEMPLATE("credentials: deleting a user deletes their credentials", B,
                   CONVSTORE_BACKENDS) {
  testing::TestDb db(B::name);
  if (!db.ready()) return;
  Store store = db.open();
  const SecretKey key = SecretKey::generate();
  UserId alice = new_user(store, "alice");
  UserId bob = new_user(store, "bob");
  store.credentials().put(alice, "telegram", kSession, key);
  store.credentials().put(bob, "telegram", kSession, key);
  testing::delete_user_by_sql(db, alice);
  CHECK(count_rows(db) == "1");
  CHECK(store.credentials().list(alice).empty());
  CHECK(store.credentials().list(bob).size() == 1);
}
