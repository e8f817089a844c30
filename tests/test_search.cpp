// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
//
// ConversationStore::search and ConversationStore::context_window.
#include <algorithm>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "support.hpp"

using namespace convstore;

namespace {

NewMessage msg(std::string content, Role role = Role::user,
               std::optional<std::int64_t> tokens = std::nullopt) {
  NewMessage m;
  m.role = role;
  m.content = std::move(content);
  m.token_count = tokens;
  return m;
}

SearchQuery query(std::string text) {
  SearchQuery q;
  q.text = std::move(text);
  return q;
}

// The ids of the hits, in order.
std::vector<MessageId> ids(const Page<SearchHit>& page) {
  std::vector<MessageId> out;
  for (const auto& h : page.items) out.push_back(h.message.id);
  return out;
}

bool found(ConversationStore& cs, const std::string& text, MessageId id) {
  auto got = ids(cs.search(query(text)));
  return std::find(got.begin(), got.end(), id) != got.end();
}

Conversation start(ConversationStore& cs, std::optional<UserId> user, std::string channel) {
  NewConversation n;
  n.user_id = user;
  n.channel = std::move(channel);
  return cs.start(n);
}

}  // namespace

// ================================= search ==================================

TEST_CASE_TEMPLATE("search: finds messages by word; each filter leaves out its decoy", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& cs = store.conversations();
  UserId alice = cs.upsert_user({"telegram", "1"}).id;
  UserId bob = cs.upsert_user({"telegram", "2"}).id;
  auto a1 = start(cs, alice, "telegram");
  auto a2 = start(cs, alice, "telegram");
  auto b1 = start(cs, bob, "web");
  MessageId target = cs.append(a1.id, msg("I would like a Cappuccino with oat milk")).id;
  MessageId other_role =
      cs.append(a1.id, msg("One cappuccino coming up", Role::assistant)).id;     // role decoy
  MessageId other_conv = cs.append(a2.id, msg("cappuccino again tomorrow")).id;  // conversation
  MessageId other_user =
      cs.append(b1.id, msg("cappuccino for bob, on the web")).id;  // user, channel
  MessageId old = cs.append(a1.id, msg("an old cappuccino")).id;   // time range
  cs.append(a1.id, msg("tea with lemon"));                         // no match at all
  testing::raw_exec(db,
                    "UPDATE messages SET created_at = '2020-01-01T00:00:00.000000Z' "
                    "WHERE id = " +
                        std::to_string(old));

  auto all = cs.search(query("CAPPUCCINO"));
  auto all_ids = ids(all);
  std::set<MessageId> every(all_ids.begin(), all_ids.end());
  CHECK(every == std::set<MessageId>{target, other_role, other_conv, other_user, old});
  CHECK(all.next_cursor.empty());
  for (const auto& h : all.items) {
    if (h.message.id == target) {
      CHECK(h.message.conversation_id == a1.id);
      CHECK(h.message.content == "I would like a Cappuccino with oat milk");
      CHECK(h.rank > 0);
    }
  }
  // Two words: both required.
  CHECK(ids(cs.search(query("oat cappuccino"))) == std::vector<MessageId>{target});
  CHECK(cs.search(query("cappuccino coffee")).items.empty());

  auto only = [&](SearchQuery q) {
    q.text = "cappuccino";
    auto v = ids(cs.search(q));
    return std::set<MessageId>(v.begin(), v.end());
  };
  SearchQuery by_user;
  by_user.user_id = bob;
  CHECK(only(by_user) == std::set<MessageId>{other_user});
  SearchQuery by_channel;
  by_channel.channel = "telegram";
  CHECK(only(by_channel) == std::set<MessageId>{target, other_role, other_conv, old});
  SearchQuery by_conv;
  by_conv.conversation_id = a2.id;
  CHECK(only(by_conv) == std::set<MessageId>{other_conv});
  SearchQuery by_role;
  by_role.role = Role::assistant;
  CHECK(only(by_role) == std::set<MessageId>{other_role});
  SearchQuery before;
  before.to = parse_timestamp("2021-01-01T00:00:00Z");
  CHECK(only(before) == std::set<MessageId>{old});
  SearchQuery since;
  since.from = parse_timestamp("2021-01-01T00:00:00Z");
  since.conversation_id = a1.id;
  since.role = Role::user;
  since.user_id = alice;
  since.channel = "telegram";
  CHECK(only(since) == std::set<MessageId>{target});
}

TEST_CASE_TEMPLATE("search: denser matches rank first; the snippet marks the words", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& cs = store.conversations();
  auto conv = start(cs, std::nullopt, "web");
  MessageId sparse = cs.append(conv.id, msg("the invoice was sent yesterday along with a long "
                                            "letter about the delivery schedule and prices"))
                         .id;
  MessageId dense = cs.append(conv.id, msg("invoice invoice: the invoice number")).id;
  MessageId other = cs.append(conv.id, msg("nothing to see here")).id;
  (void)other;

  auto page = cs.search(query("invoice"));
  REQUIRE(page.items.size() == 2);
  CHECK(page.items[0].message.id == dense);
  CHECK(page.items[1].message.id == sparse);
  CHECK(page.items[0].rank > page.items[1].rank);
  CHECK(page.items[0].snippet.find("[invoice]") != std::string::npos);
  CHECK(page.items[1].snippet.find("[invoice]") != std::string::npos);
  CHECK(page.items[1].snippet.find("[the]") == std::string::npos);

  // The caller's markers, any text; a long content is cut with the ellipsis.
  std::string long_text;
  for (int i = 0; i < 60; ++i) long_text += "filler" + std::to_string(i) + " ";
  long_text += "needle";
  for (int i = 0; i < 60; ++i) long_text += " tail" + std::to_string(i);
  cs.append(conv.id, msg(long_text));
  SearchQuery q = query("needle");
  q.highlight_open = "<b class=\"hit\">";
  q.highlight_close = "</b>";
  q.snippet_ellipsis = "…";
  q.snippet_words = 10;
  auto hit = cs.search(q);
  REQUIRE(hit.items.size() == 1);
  const std::string& s = hit.items[0].snippet;
  CHECK_MESSAGE(s.find("<b class=\"hit\">needle</b>") != std::string::npos, s);
  CHECK_MESSAGE(s.size() < long_text.size() / 2, s);
  CHECK_MESSAGE(s.find("…") != std::string::npos, s);
}

TEST_CASE_TEMPLATE("search: pages cover every hit exactly once, in rank order", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& cs = store.conversations();
  auto conv = start(cs, std::nullopt, "web");
  std::vector<NewMessage> batch;
  std::set<MessageId> expected;
  for (int i = 0; i < 23; ++i) {
    // Ranks repeat (groups of equal content) so that ties cross page ends.
    std::string content = "report";
    for (int k = 0; k < i % 4; ++k) content += " report";
    content += " number " + std::to_string(i % 3);
    batch.push_back(msg(content));
  }
  batch.push_back(msg("unrelated"));
  for (const auto& m : cs.append_batch(conv.id, batch)) {
    if (m.content != "unrelated") expected.insert(m.id);
  }
  SearchQuery q = query("report");
  q.limit = 5;
  std::vector<MessageId> seen;
  std::vector<double> ranks;
  int pages = 0;
  for (;;) {
    auto page = cs.search(q);
    ++pages;
    CHECK(page.items.size() <= 5);
    for (const auto& h : page.items) {
      seen.push_back(h.message.id);
      ranks.push_back(h.rank);
    }
    if (page.next_cursor.empty()) break;
    q.cursor = page.next_cursor;
    REQUIRE(pages < 10);
  }
  CHECK(pages == 5);
  CHECK(seen.size() == expected.size());
  CHECK(std::set<MessageId>(seen.begin(), seen.end()) == expected);
  CHECK(std::is_sorted(ranks.rbegin(), ranks.rend()));
}

TEST_CASE_TEMPLATE("search: query syntax in the text is plain text and never an error", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& cs = store.conversations();
  auto conv = start(cs, std::nullopt, "web");
  MessageId a = cs.append(conv.id, msg("Tom AND Jerry (near) the house: NOT here")).id;
  MessageId b = cs.append(conv.id, msg("the quick brown fox jumps")).id;
  MessageId c = cs.append(conv.id, msg("well-known foo-bar o'brien")).id;
  MessageId d = cs.append(conv.id, msg("prefixes: starlight starship")).id;

  for (const char* text : {"\"",
                           "\"\"",
                           "'",
                           "AND",
                           "OR",
                           "NOT",
                           "NEAR",
                           "NEAR(",
                           "*",
                           "-",
                           "(",
                           ")",
                           ":",
                           "^",
                           "a:b",
                           "col:here",
                           "'; DROP TABLE messages; --",
                           "\\",
                           "{}",
                           "&",
                           "|",
                           "!",
                           "<->",
                           "x*y",
                           "\" OR 1=1 --",
                           "NEAR(tom jerry, 2)",
                           "-house",
                           "+house",
                           "house)",
                           "(house",
                           "messages_fts",
                           "rank",
                           "content:tom",
                           "😀",
                           "\xE2\x80\x94",
                           "back\\slash",
                           "quo\"te",
                           "{\"a\",\"b\"}",
                           "'a' <-> 'b':*"}) {
    CAPTURE(text);
    try {
      cs.search(query(text));
    } catch (const Error& e) {
      // Text without any word is refused as such; nothing else may throw.
      CHECK_MESSAGE(e.code() == ErrorCode::invalid_argument, e.what());
      CHECK(std::string(e.what()).find("has no word") != std::string::npos);
    }
  }
  CHECK(ids(cs.search(query("AND"))) == std::vector<MessageId>{a});
  CHECK(ids(cs.search(query("near"))) == std::vector<MessageId>{a});
  CHECK(ids(cs.search(query("NOT here"))) == std::vector<MessageId>{a});
  CHECK(ids(cs.search(query("(near)"))) == std::vector<MessageId>{a});
  CHECK(ids(cs.search(query("house:"))) == std::vector<MessageId>{a});
  CHECK(ids(cs.search(query("content:tom"))) == std::vector<MessageId>{});  // "content tom"
  CHECK(ids(cs.search(query("tom AND jerry"))) == std::vector<MessageId>{a});
  CHECK(ids(cs.search(query("tom OR fox"))).empty());  // OR is a word: all are required
  CHECK(ids(cs.search(query("-house"))) == std::vector<MessageId>{a});
  CHECK(ids(cs.search(query("'; DROP TABLE messages; --"))).empty());
  CHECK(ids(cs.search(query("\"quick brown\""))) == std::vector<MessageId>{b});
  CHECK(ids(cs.search(query("\"brown quick\""))).empty());  // a phrase keeps its order
  CHECK(ids(cs.search(query("\"quick brown"))) == std::vector<MessageId>{b});  // unpaired quote
  CHECK(ids(cs.search(query("foo-bar"))) == std::vector<MessageId>{c});
  CHECK(ids(cs.search(query("bar"))) == std::vector<MessageId>{c});
  CHECK(ids(cs.search(query("o'brien"))) == std::vector<MessageId>{c});
  CHECK(ids(cs.search(query("star*"))) == std::vector<MessageId>{d});
  CHECK(ids(cs.search(query("star"))).empty());  // no '*': whole words only
  CHECK(ids(cs.search(query("\"prefixes starl\"*"))) == std::vector<MessageId>{d});
  // The table still holds everything.
  CHECK(cs.get_message(a).has_value());
  CHECK(cs.get(conv.id)->message_count == 4);
}

TEST_CASE_TEMPLATE("search: the index follows streaming, edits, deletes and cascades", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& cs = store.conversations();
  auto conv = start(cs, std::nullopt, "web");
  auto keep = start(cs, std::nullopt, "web");

  NewMessage streamed = msg("The answer", Role::assistant);
  streamed.complete = false;
  MessageId s = cs.append(conv.id, streamed).id;
  CHECK(found(cs, "answer", s));
  CHECK_FALSE(found(cs, "photosynthesis", s));
  cs.append_content(s, " involves photosynthesis");
  CHECK(found(cs, "photosynthesis", s));
  cs.append_content(s, " and chloro");
  cs.append_content(s, "phyll.");
  CHECK(found(cs, "chlorophyll", s));
  CHECK_FALSE(found(cs, "chloro", s));
  cs.finish_message(s, 12);
  CHECK(found(cs, "chlorophyll", s));

  MessageUpdate up;
  up.content = "rewritten entirely";
  cs.update_message(s, up);
  CHECK_FALSE(found(cs, "photosynthesis", s));
  CHECK_FALSE(found(cs, "answer", s));
  CHECK(found(cs, "rewritten", s));
  MessageUpdate meta;  // an update that leaves the content keeps it findable
  meta.metadata_patch = Json{{"seen", true}};
  cs.update_message(s, meta);
  CHECK(found(cs, "rewritten", s));

  MessageId gone = cs.append(conv.id, msg("ephemeral words")).id;
  CHECK(found(cs, "ephemeral", gone));
  CHECK(cs.remove_message(gone));
  CHECK(cs.search(query("ephemeral")).items.empty());

  // Batches (one statement on PostgreSQL) are indexed too.
  auto batch = cs.append_batch(conv.id, {msg("batched alpha"), msg("batched beta")});
  CHECK(cs.search(query("batched")).items.size() == 2);
  MessageId kept = cs.append(keep.id, msg("batched gamma")).id;

  // Deleting the conversation deletes its messages by cascade.
  CHECK(cs.remove(conv.id));
  CHECK(cs.search(query("rewritten")).items.empty());
  CHECK(ids(cs.search(query("batched"))) == std::vector<MessageId>{kept});
  (void)batch;
}

TEST_CASE_TEMPLATE("search: bad input is invalid_argument", B, CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& cs = store.conversations();
  auto conv = start(cs, std::nullopt, "web");
  cs.append(conv.id, msg("something"));
  CHECK_ERROR_CODE(cs.search(query("")), ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(cs.search(query("   \t\n")), ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(cs.search(query("!? -- ()")), ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(cs.search(query(std::string("a\0b", 3))), ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(cs.search(query("bad \xFF utf8")), ErrorCode::invalid_argument);
  SearchQuery q = query("something");
  q.limit = 0;
  CHECK_ERROR_CODE(cs.search(q), ErrorCode::invalid_argument);
  q.limit = 1001;
  CHECK_ERROR_CODE(cs.search(q), ErrorCode::invalid_argument);
  q.limit = 1000;
  CHECK(cs.search(q).items.size() == 1);
  q.snippet_words = 1;
  CHECK_ERROR_CODE(cs.search(q), ErrorCode::invalid_argument);
  q.snippet_words = 65;
  CHECK_ERROR_CODE(cs.search(q), ErrorCode::invalid_argument);
  q.snippet_words = 16;
  for (const char* cursor : {"x", "s1.", "s1.5", "s1.5.", "s1.a.3", "s1.5.3x", "s1.-1.3", "s1.5.0",
                             "v1.5.3", "s1.99999999999999999999.1"}) {
    CAPTURE(cursor);
    q.cursor = cursor;
    CHECK_ERROR_CODE(cs.search(q), ErrorCode::invalid_argument);
  }
}

TEST_CASE_TEMPLATE("search: the migration indexes the messages stored before it", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  MessageId before = 0;
  {
    auto store = db.open();
    auto conv = start(store.conversations(), std::nullopt, "web");
    before = store.conversations().append(conv.id, msg("stored before the index")).id;
  }
  // Back to the schema before migration 10, as a database of an earlier
  // version would be, with the message in it.
  if (db.backend() == "sqlite") {
    for (const char* sql : {"DROP TRIGGER messages_fts_insert", "DROP TRIGGER messages_fts_delete",
                            "DROP TRIGGER messages_fts_update", "DROP TABLE messages_fts"}) {
      testing::raw_exec(db, sql);
    }
  } else {
    testing::raw_exec(db, "DROP AGGREGATE convstore_tsquery_and(tsquery)");
    testing::raw_exec(db, "ALTER TABLE messages DROP COLUMN search");
  }
  // Undo the later migrations too (11 retention, 12 operation templates),
  // so that the store applies 10 and everything after it again. A new
  // migration adds its own undo here.
  for (const char* sql : {"DROP TABLE legal_holds", "DROP TABLE archived_conversations",
                          "DROP TABLE archived_messages", "DROP TABLE archived_conversation_data",
                          "DROP TABLE archived_agent_questions",
                          "ALTER TABLE conversations DROP COLUMN anonymized_at",
                          "DROP TABLE operation_templates", "DROP INDEX messages_created"}) {
    testing::raw_exec(db, sql);
  }
  testing::raw_exec(db, "DELETE FROM convstore_schema WHERE version >= 10");
  auto store = db.open();
  CHECK(store.schema_version() == Store::library_schema_version());
  CHECK(found(store.conversations(), "index", before));
  store.conversations().remove_message(before);
  CHECK(store.conversations().search(query("index")).items.empty());
}

TEST_CASE_TEMPLATE("search: writes between pages shift no other hit", B, CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& cs = store.conversations();
  auto conv = start(cs, std::nullopt, "web");
  auto other = start(cs, std::nullopt, "web");
  std::vector<NewMessage> batch;
  for (int i = 0; i < 10; ++i) batch.push_back(msg("parcel delivered"));  // equal ranks
  for (int i = 0; i < 6; ++i) {
    std::string content = "parcel";
    for (int k = 0; k <= i % 3; ++k) content += " parcel";
    batch.push_back(msg(content + " lost in transit " + std::to_string(i)));
  }
  for (int i = 0; i < 5; ++i) batch.push_back(msg("something else entirely"));
  std::map<MessageId, int> seen;  // every pre-existing hit, and how often it was seen
  for (const auto& m : cs.append_batch(conv.id, batch)) {
    if (m.content.find("parcel") != std::string::npos) seen[m.id] = 0;
  }
  const std::size_t hits = seen.size();
  SearchQuery q = query("parcel");
  q.limit = 4;
  int pages = 0;
  MessageId unrelated = cs.append(other.id, msg("the weather today")).id;
  for (;;) {
    auto page = cs.search(q);
    ++pages;
    for (const auto& h : page.items) {
      auto it = seen.find(h.message.id);
      if (it != seen.end()) ++it->second;
    }
    if (page.next_cursor.empty()) break;
    q.cursor = page.next_cursor;
    REQUIRE(pages < 20);
    // Writes between the pages: unrelated messages added, changed and
    // removed, and a new hit (which may or may not be seen).
    cs.append(other.id, msg("an unrelated message " + std::to_string(pages)));
    cs.append(other.id, msg(std::string(200, 'x') + " long unrelated words"));
    MessageUpdate up;
    up.content = "rewritten weather " + std::to_string(pages);
    cs.update_message(unrelated, up);
    cs.append(other.id, msg("a new parcel arrived"));
  }
  CHECK(seen.size() == hits);
  for (const auto& [id, count] : seen) {
    CAPTURE(id);
    CHECK(count == 1);
  }
}

TEST_CASE_TEMPLATE("search: prefixes of numbers, addresses, paths and versions", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& cs = store.conversations();
  auto conv = start(cs, std::nullopt, "web");
  MessageId pi = cs.append(conv.id, msg("pi is about 3.14159 here")).id;
  MessageId mail = cs.append(conv.id, msg("write to Bob@Example.com today")).id;
  MessageId path = cs.append(conv.id, msg("it is in /usr/local/bin/tool now")).id;
  MessageId version = cs.append(conv.id, msg("release v1.2.3 shipped")).id;
  MessageId host = cs.append(conv.id, msg("served by api.example.org again")).id;
  MessageId hyphen = cs.append(conv.id, msg("a well-known fact")).id;
  // The same on both backends: a prefix of the whole number, address, path
  // or version, from its start.
  CHECK(ids(cs.search(query("3.14*"))) == std::vector<MessageId>{pi});
  CHECK(ids(cs.search(query("3.1415*"))) == std::vector<MessageId>{pi});
  CHECK(ids(cs.search(query("bob@example*"))) == std::vector<MessageId>{mail});
  CHECK(ids(cs.search(query("BOB@EXAMPLE.c*"))) == std::vector<MessageId>{mail});
  CHECK(ids(cs.search(query("/usr/local/bi*"))) == std::vector<MessageId>{path});
  CHECK(ids(cs.search(query("/usr/lo*"))) == std::vector<MessageId>{path});
  CHECK(ids(cs.search(query("v1.2*"))) == std::vector<MessageId>{version});
  CHECK(ids(cs.search(query("v1.2.3*"))) == std::vector<MessageId>{version});
  CHECK(ids(cs.search(query("api.exam*"))) == std::vector<MessageId>{host});
  CHECK(ids(cs.search(query("well-kn*"))) == std::vector<MessageId>{hyphen});
  CHECK(ids(cs.search(query("well-known*"))) == std::vector<MessageId>{hyphen});
  CHECK(ids(cs.search(query("2.71*"))).empty());
  CHECK(ids(cs.search(query("alice@example*"))).empty());
  // The documented difference: PostgreSQL indexes an address, a number, a
  // path or a version as one word, so a part from its middle finds nothing
  // there; SQLite indexes its parts.
  const bool sqlite = db.backend() == "sqlite";
  CHECK(found(cs, "example.c*", mail) == sqlite);
  CHECK(found(cs, "local/bi*", path) == sqlite);
  CHECK(found(cs, "14159*", pi) == sqlite);
}

TEST_CASE_TEMPLATE("search: in a caller's transaction, leaves its settings as they were", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& cs = store.conversations();
  auto conv = start(cs, std::nullopt, "web");
  cs.append(conv.id, msg("committed lantern"));
  const bool pg = db.backend() == "postgresql";
  if (pg) {
    // Every message written records the connection's plan_cache_mode then.
    testing::raw_exec(db, "CREATE TABLE plan_log (id serial PRIMARY KEY, mode text)");
    testing::raw_exec(db,
                      "CREATE FUNCTION log_plan() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                      "INSERT INTO plan_log (mode) VALUES (current_setting('plan_cache_mode')); "
                      "RETURN NULL; END $$");
    testing::raw_exec(db,
                      "CREATE TRIGGER log_plan AFTER INSERT ON messages FOR EACH ROW EXECUTE "
                      "FUNCTION log_plan()");
  }
  std::size_t hits = 0;
  store.transaction([&] {
    cs.append(conv.id, msg("uncommitted lantern"));
    hits = cs.search(query("lantern")).items.size();
    cs.append(conv.id, msg("after the search"));
  });
  CHECK(hits == 2);  // the transaction's own write is seen
  if (pg) {
    CHECK(testing::raw_exec(db, "SELECT count(*) FROM plan_log") == "2");
    CHECK(testing::raw_exec(db, "SELECT count(DISTINCT mode) FROM plan_log") == "1");
    CHECK(testing::raw_exec(db, "SELECT mode FROM plan_log ORDER BY id DESC LIMIT 1") ==
          testing::raw_exec(db, "SELECT current_setting('plan_cache_mode')"));
  }
}

TEST_CASE_TEMPLATE("search: private-use characters in the content stay as they are", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& cs = store.conversations();
  auto conv = start(cs, std::nullopt, "web");
  const std::string open = "\xEE\x80\x80";   // U+E000
  const std::string close = "\xEE\x80\x81";  // U+E001
  const std::string content =
      "keep " + open + "this" + close + " and " + close + open + " the needle";
  cs.append(conv.id, msg(content));
  auto page = cs.search(query("needle"));
  REQUIRE(page.items.size() == 1);
  const std::string& s = page.items[0].snippet;
  CHECK_MESSAGE(s == "keep " + open + "this" + close + " and " + close + open + " the [needle]", s);
}

// ============================= context windows =============================

TEST_CASE_TEMPLATE("context window: the newest messages that fit, oldest first", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& cs = store.conversations();
  auto conv = start(cs, std::nullopt, "web");
  MessageId sys = cs.append(conv.id, msg("You are helpful.", Role::system, 10)).id;
  std::vector<MessageId> turns;
  for (int i = 0; i < 250; ++i) {  // more than one page
    turns.push_back(cs.append(conv.id, msg("turn " + std::to_string(i),
                                           i % 2 ? Role::assistant : Role::user, 20))
                        .id);
  }

  ContextBudget b;
  b.max_tokens = 100;
  auto w = cs.context_window(conv.id, b);
  // The system message (10) and the newest four turns (80); a fifth does not fit.
  REQUIRE(w.messages.size() == 5);
  CHECK(w.messages[0].id == sys);
  CHECK(w.messages[1].id == turns[246]);
  CHECK(w.messages[4].id == turns[249]);
  CHECK(w.total_tokens == 90);
  CHECK(w.estimated == 0);
  CHECK(w.truncated);
  CHECK_FALSE(w.over_budget);

  b.keep_system = false;
  w = cs.context_window(conv.id, b);
  REQUIRE(w.messages.size() == 5);
  CHECK(w.messages[0].id == turns[245]);
  CHECK(w.total_tokens == 100);

  // A budget larger than the conversation: everything, across pages.
  b.max_tokens = 1'000'000;
  b.keep_system = true;
  w = cs.context_window(conv.id, b);
  CHECK(w.messages.size() == 251);
  CHECK(w.messages[0].id == sys);
  CHECK(w.messages[1].id == turns[0]);
  CHECK(w.messages[250].id == turns[249]);
  CHECK(w.total_tokens == 10 + 250 * 20);
  CHECK_FALSE(w.truncated);

  b.max_messages = 3;
  w = cs.context_window(conv.id, b);
  REQUIRE(w.messages.size() == 4);
  CHECK(w.messages[0].id == sys);
  CHECK(w.messages[1].id == turns[247]);
  CHECK(w.truncated);

  // A system message in the middle of the conversation is kept in its place:
  // the window is in id order.
  MessageId late_sys = cs.append(conv.id, msg("Be brief.", Role::system, 5)).id;
  MessageId last = cs.append(conv.id, msg("last", Role::user, 20)).id;
  b.max_messages.reset();
  b.max_tokens = 60;
  w = cs.context_window(conv.id, b);
  REQUIRE(w.messages.size() == 4);
  CHECK(w.messages[0].id == sys);
  CHECK(w.messages[1].id == turns[249]);
  CHECK(w.messages[2].id == late_sys);
  CHECK(w.messages[3].id == last);
  CHECK(w.total_tokens == 55);
  // An old system message, far before the window, still comes first.
  b.max_tokens = 100;
  w = cs.context_window(conv.id, b);
  REQUIRE(w.messages.size() == 6);
  CHECK(w.messages[0].id == sys);
  CHECK(w.messages[1].id == turns[247]);
  CHECK(w.messages[4].id == late_sys);
  CHECK(w.total_tokens == 95);
  for (std::size_t i = 1; i < w.messages.size(); ++i) {
    CHECK(w.messages[i - 1].id < w.messages[i].id);
  }
}

TEST_CASE_TEMPLATE("context window: estimates, over budget, empty and bad input", B,
                   CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& cs = store.conversations();
  auto conv = start(cs, std::nullopt, "web");
  ContextBudget b;
  b.max_tokens = 50;
  auto empty = cs.context_window(conv.id, b);
  CHECK(empty.messages.empty());
  CHECK(empty.total_tokens == 0);
  CHECK_FALSE(empty.truncated);

  // No token counts: the default estimate, ceil(bytes / 4) + 4.
  cs.append(conv.id, msg(std::string(40, 'a')));  // 14
  cs.append(conv.id, msg(std::string(41, 'b')));  // 15
  cs.append(conv.id, msg("Привет"));              // 12 bytes: 7
  Message probe;
  probe.content = std::string(41, 'b');
  CHECK(estimate_tokens(probe) == 15);
  auto w = cs.context_window(conv.id, b);
  CHECK(w.messages.size() == 3);
  CHECK(w.total_tokens == 36);
  CHECK(w.estimated == 3);
  CHECK_FALSE(w.truncated);

  // The caller's estimate replaces it (counted tokens are never estimated).
  cs.append(conv.id, msg("counted", Role::assistant, 5));
  b.max_tokens = 60;
  int calls = 0;
  b.estimate = [&](const Message& m) -> std::int64_t {
    ++calls;
    return static_cast<std::int64_t>(m.content.size());  // one token per byte
  };
  w = cs.context_window(conv.id, b);
  // 5 (counted) + 12 + 41; the 40 'a' do not fit.
  REQUIRE(w.messages.size() == 3);
  CHECK(w.messages[0].content == std::string(41, 'b'));
  CHECK(w.total_tokens == 58);
  CHECK(w.estimated == 2);
  CHECK(calls >= 2);
  CHECK(w.truncated);
  CHECK_FALSE(w.over_budget);

  // The newest message alone over the budget: returned alone, flagged.
  b.max_tokens = 50;
  cs.append(conv.id, msg(std::string(400, 'z')));
  b.estimate = nullptr;
  w = cs.context_window(conv.id, b);
  REQUIRE(w.messages.size() == 1);
  CHECK(w.messages[0].content == std::string(400, 'z'));
  CHECK(w.total_tokens == 104);
  CHECK(w.over_budget);
  CHECK(w.truncated);

  b.estimate = [](const Message&) -> std::int64_t { return -1; };
  CHECK_ERROR_CODE(cs.context_window(conv.id, b), ErrorCode::invalid_argument);
  b.estimate = nullptr;
  b.max_tokens = 0;
  CHECK_ERROR_CODE(cs.context_window(conv.id, b), ErrorCode::invalid_argument);
  b.max_tokens = -5;
  CHECK_ERROR_CODE(cs.context_window(conv.id, b), ErrorCode::invalid_argument);
  b.max_tokens = 10;
  b.max_messages = 0;
  CHECK_ERROR_CODE(cs.context_window(conv.id, b), ErrorCode::invalid_argument);
  b.max_messages.reset();
  CHECK_ERROR_CODE(cs.context_window(conv.id + 1000, b), ErrorCode::not_found);
}

TEST_CASE_TEMPLATE("context window: a huge estimate saturates the total", B, CONVSTORE_BACKENDS) {
  CONVSTORE_TEST_DB(db);
  auto store = db.open();
  auto& cs = store.conversations();
  auto conv = start(cs, std::nullopt, "web");
  MessageId sys = cs.append(conv.id, msg("You are helpful.", Role::system)).id;
  cs.append(conv.id, msg("older"));
  MessageId newest = cs.append(conv.id, msg("newest")).id;
  constexpr std::int64_t kMax = std::numeric_limits<std::int64_t>::max();
  ContextBudget b;
  b.max_tokens = 1000;
  b.estimate = [](const Message&) -> std::int64_t { return kMax; };
  auto w = cs.context_window(conv.id, b);
  REQUIRE(w.messages.size() == 2);
  CHECK(w.messages[0].id == sys);
  CHECK(w.messages[1].id == newest);
  CHECK(w.total_tokens == kMax);
  CHECK(w.over_budget);
  CHECK(w.truncated);
  b.keep_system = false;
  b.max_tokens = kMax;
  b.estimate = [](const Message&) -> std::int64_t { return kMax / 2 + 1; };
  w = cs.context_window(conv.id, b);
  REQUIRE(w.messages.size() == 1);  // two would be over any budget
  CHECK(w.messages[0].id == newest);
  CHECK(w.total_tokens == kMax / 2 + 1);
  CHECK_FALSE(w.over_budget);
  CHECK(w.truncated);
}
