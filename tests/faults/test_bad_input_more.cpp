// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT

// Bad input, continued: the SessionCache (the database backend on SQLite and
// PostgreSQL, the in-memory backend beside it), the JSON Lines import, the
// iCalendar import and the analytics filters. The same runner as
// test_bad_input.cpp: every case has the documented outcome, a refused call
// writes nothing, and both databases agree.

#include <chrono>
#include <convstore/convstore.hpp>
#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "faults/bad_input.hpp"
#include "faults/faults_support.hpp"

using namespace convstore;
using namespace bad_input;
using namespace std::chrono_literals;

namespace {

// 1025 bytes of valid text: one byte past the index-key limit.
const std::string& over_key_limit() {
  static const std::string s = std::string(1021, 'k') + "\xf0\x9f\x98\x80";
  return s;
}

// The values of test_bad_input.cpp (the short mode leaves out those refused
// by the same check as others) and 1025 bytes of text.
std::vector<TextValue> values(bool long_run) {
  std::vector<TextValue> out;
  for (auto& v : text_values(true)) {
    if (!long_run &&
        (v.name == "overlong slash" || v.name == "past U+10FFFF" || v.name == "lone continuation" ||
         v.name == "only NUL" || v.name == "underscore" || v.name == "question mark")) {
      continue;
    }
    out.push_back(std::move(v));
  }
  // Long but not huge: refused where an index holds the text, stored where
  // it is free text. Marked `big` for the rules below.
  out.push_back({"1025 bytes", over_key_limit(), TextKind::big, true});
  return out;
}

bool is_big(const TextValue& v) { return v.kind == TextKind::big; }

// A cache key, session field, channel, flag name ...: 1..1024 bytes of
// UTF-8 without control characters.
Expect cache_key_rule(std::string done = ok) {
  return [done](const TextValue& v) { return v.kind == TextKind::injection ? done : invalid; };
}
// Text an index holds: valid UTF-8 without NUL, at most 1024 bytes.
Expect key_rule(std::string done = ok) {
  return [done](const TextValue& v) { return not_text(v) || is_big(v) ? invalid : done; };
}

// ---- the SessionCache

// The caches of one fixture: the database backend on the fixture's store
// and an in-memory one. Both must give the documented outcome.
struct Caches {
  explicit Caches(Store& store) : db(SessionCache::database(store, options())) {}
  static CacheOptions options() {
    CacheOptions o;
    o.sweep_interval = 0ms;  // no sweeper changing row counts between calls
    return o;
  }
  SessionCache db;
  SessionCache memory = SessionCache::in_memory(options());
};

using CacheCall = std::function<std::string(Fixture&, SessionCache&, const std::string&)>;

std::vector<std::pair<std::string, std::pair<Expect, CacheCall>>> cache_ops() {
  std::vector<std::pair<std::string, std::pair<Expect, CacheCall>>> ops;
  auto add = [&](std::string name, Expect e, CacheCall c) {
    ops.push_back({std::move(name), {std::move(e), std::move(c)}});
  };
  // Lookups first (a later write stores the same keys).
  add("cache get key", cache_key_rule(none),
      [](Fixture&, SessionCache& c, const std::string& v) { return found(c.get(v).has_value()); });
  add("cache remove key", cache_key_rule(none),
      [](Fixture&, SessionCache& c, const std::string& v) { return found(c.remove(v)); });
  add("cache get_many key", cache_key_rule(none),
      [](Fixture&, SessionCache& c, const std::string& v) {
        auto got = c.get_many({"k-present", v});
        return found(got.size() == 2 && got[1].has_value());
      });
  add("session_get session", cache_key_rule(none),
      [](Fixture&, SessionCache& c, const std::string& v) {
        return found(c.session_get(v, "f").has_value());
      });
  add("active_count channel", cache_key_rule(none),
      [](Fixture&, SessionCache& c, const std::string& v) {
        return found(c.active_count(v, 1h) > 0);
      });
  add("flag name", cache_key_rule(none),
      [](Fixture&, SessionCache& c, const std::string& v) { return found(c.flag(v).has_value()); });
  // Writes, read back.
  add("cache set key", cache_key_rule(), [](Fixture&, SessionCache& c, const std::string& v) {
    c.set(v, "value");
    return same(c.get(v).value_or(""), "value", "cache value");
  });
  // A value is any bytes up to 64 MiB: invalid UTF-8 and NUL included.
  add("cache set value", always(ok), [](Fixture& f, SessionCache& c, const std::string& v) {
    const std::string k = f.fresh("value");
    c.set(k, v);
    return same(c.get(k).value_or("(missing)"), v, "cache value");
  });
  add("cache set_many value", always(ok), [](Fixture& f, SessionCache& c, const std::string& v) {
    const std::string k = f.fresh("many");
    c.set_many({{k + "a", "plain"}, {k + "b", v}});
    return same(c.get(k + "b").value_or("(missing)"), v, "cache value");
  });
  add("session_set session", cache_key_rule(), [](Fixture&, SessionCache& c, const std::string& v) {
    c.session_set(v, "f", Json(1));
    return found(c.session_get(v, "f") == Json(1));
  });
  add("session_set field", cache_key_rule(), [](Fixture&, SessionCache& c, const std::string& v) {
    c.session_set("s", v, Json(2));
    return found(c.session_get("s", v) == Json(2));
  });
  // A field value is JSON: a string of invalid UTF-8 or with NUL is refused.
  add("session_set JSON string", text_rule(),
      [](Fixture& f, SessionCache& c, const std::string& v) {
        const std::string s = f.fresh("sess");
        c.session_set(s, "f", Json(v));
        auto got = c.session_get(s, "f");
        return got && got->is_string() ? same(got->get<std::string>(), v, "session value")
                                       : std::string("mismatch: session value missing");
      });
  add("session_update field", cache_key_rule(),
      [](Fixture& f, SessionCache& c, const std::string& v) {
        const std::string s = f.fresh("upd");
        Json fields = Json::object();
        fields["a"] = 1;
        fields[v] = 2;  // nlohmann keeps any bytes as a key
        c.session_update(s, fields);
        return found(c.session_get(s, v) == Json(2));
      });
  add("hit key", cache_key_rule(), [](Fixture&, SessionCache& c, const std::string& v) {
    return found(c.hit(v, RateLimit{}).allowed);
  });
  add("reset_rate key", cache_key_rule(), [](Fixture&, SessionCache& c, const std::string& v) {
    c.reset_rate(v);
    return ok;
  });
  add("mark_active channel", cache_key_rule(), [](Fixture&, SessionCache& c, const std::string& v) {
    c.mark_active(v, "u1");
    return found(c.is_active(v, "u1", 1h));
  });
  add("mark_active user", cache_key_rule(), [](Fixture&, SessionCache& c, const std::string& v) {
    c.mark_active("web", v);
    return found(c.is_active("web", v, 1h));
  });
  add("set_flag name", cache_key_rule(), [](Fixture&, SessionCache& c, const std::string& v) {
    c.set_flag(v, Json(true));
    return found(c.flag(v) == Json(true));
  });
  // "" is the global flag; any other channel is a key.
  add(
      "set_flag channel",
      [](const TextValue& v) { return v.kind == TextKind::empty ? ok : cache_key_rule()(v); },
      [](Fixture&, SessionCache& c, const std::string& v) {
        c.set_flag("per-channel", Json(3), v);
        return found(c.flag("per-channel", v) == Json(3));
      });
  add("set_flag JSON string", text_rule(), [](Fixture& f, SessionCache& c, const std::string& v) {
    const std::string name = f.fresh("flag");
    c.set_flag(name, Json(v));
    auto got = c.flag(name);
    return got && got->is_string() ? same(got->get<std::string>(), v, "flag")
                                   : std::string("mismatch: flag missing");
  });
  add("variant user", cache_key_rule(), [](Fixture&, SessionCache& c, const std::string& v) {
    const std::string got = c.variant("exp", v, {"a", "b"});
    return found(got == "a" || got == "b");
  });
  add("variant name", cache_key_rule(), [](Fixture&, SessionCache& c, const std::string& v) {
    return found(c.variant("exp", "u1", {"a", v}).size() > 0);
  });
  add("assign_variant variant", cache_key_rule(),
      [](Fixture& f, SessionCache& c, const std::string& v) {
        const std::string user = f.fresh("user");
        c.assign_variant("exp2", user, v);
        return found(c.variant("exp2", user, {"a", "b"}) == v);
      });
  add("acquire_turn name", cache_key_rule(), [](Fixture&, SessionCache& c, const std::string& v) {
    auto lease = c.acquire_turn(v, 1s, 0ms);
    if (!lease) return none;
    c.release_turn(*lease);
    return ok;
  });
  return ops;
}

std::vector<Case> cache_cases(Fixture& f) {
  const bool long_run = faults::long_mode();
  auto caches = std::make_shared<Caches>(f.store);
  caches->db.set("k-present", "x");
  caches->memory.set("k-present", "x");
  std::vector<Case> cases;
  for (const auto& [name, op] : cache_ops()) {
    for (const auto& v : values(long_run)) {
      // 10 MB: to a cache value (its documented range), else only the long mode.
      const bool ten_mb = v.name == "10 MB";
      if (ten_mb && !long_run && name != "cache set value") continue;
      for (const char* backend : {"database", "memory"}) {
        const bool db = backend[0] == 'd';
        cases.push_back(
            {std::string(backend) + " " + name, v.name, op.first(v),
             [&f, caches, call = op.second, db, text = ten_mb ? std::string() : v.value, ten_mb] {
               return call(f, db ? caches->db : caches->memory, ten_mb ? big_text() : text);
             }});
      }
    }
  }
  return cases;
}

// ---- the JSON Lines import

// `v` as a JSON string literal, its bytes kept as they are (invalid UTF-8
// stays invalid: nlohmann's dump would refuse it).
std::string raw_json_string(const std::string& v) {
  std::string out = "\"";
  out.reserve(v.size() + 2);
  for (unsigned char ch : v) {
    if (ch == '"' || ch == '\\') {
      out += '\\';
      out += static_cast<char>(ch);
    } else if (ch < 0x20) {
      static const char hex[] = "0123456789abcdef";
      out += "\\u00";
      out += hex[ch >> 4];
      out += hex[ch & 15];
    } else {
      out += static_cast<char>(ch);
    }
  }
  return out + "\"";
}

// The record of `type` from an export of the fixture's store (exported
// once per database: the fixture's records do not change).
Json exported(Fixture& f, const std::string& type, std::string& header) {
  static std::map<std::string, std::string> memo;  // database url -> export
  std::string& text = memo[f.db.url()];
  if (text.empty()) {
    std::ostringstream out;
    export_jsonl(f.store, out);
    text = out.str();
  }
  std::istringstream in(text);
  std::string line;
  std::getline(in, header);
  while (std::getline(in, line)) {
    Json j = Json::parse(line);
    if (j.value("type", "") == type) return j;
  }
  FAIL("no " << type << " record in the export");
  return {};
}

// Imports `record` with `field` set to `v` (written byte for byte).
ImportReport import_with(Fixture& f, Json record, const std::string& header,
                         const std::string& field, const std::string& v) {
  record[field] = "@@VALUE@@";
  std::string line = record.dump();
  line.replace(line.find("\"@@VALUE@@\""), 11, raw_json_string(v));
  std::istringstream in(header + "\n" + line + "\n");
  return import_jsonl(f.store, in);
}

std::vector<TextOp> import_ops() {
  std::vector<TextOp> ops;
  auto add = [&](std::string name, Expect e, Call c, bool big = false) {
    ops.push_back({std::move(name), std::move(e), std::move(c), big});
  };
  // A user of a fresh id (and external id) with `field` = v.
  auto user = [](const std::string& field) {
    return [field](Fixture& f, const std::string& v) {
      std::string header;
      Json rec = exported(f, "user", header);
      const std::int64_t id = 100000 + std::stoll(f.fresh("").substr(1));
      rec["id"] = id;
      rec["external_id"] = "imported-" + std::to_string(id);
      import_with(f, rec, header, field, v);
      auto u = f.store.conversations().get_user(id);
      if (!u) return std::string("mismatch: imported user missing");
      return same(field == "channel"       ? u->channel
                  : field == "external_id" ? u->external_id
                                           : u->display_name.value_or(""),
                  v, field);
    };
  };
  add("import user channel", key_rule(), user("channel"), true);
  add("import user external_id", key_rule(), user("external_id"));
  add("import user display_name", text_rule(), user("display_name"));
  // A message of a fresh id in the fixture's conversation.
  auto message = [](const std::string& field) {
    return [field](Fixture& f, const std::string& v) {
      std::string header;
      Json rec = exported(f, "message", header);
      const std::int64_t id = 100000 + std::stoll(f.fresh("").substr(1));
      rec["id"] = id;
      rec["platform_message_id"] = nullptr;
      rec["client_key"] = nullptr;
      import_with(f, rec, header, field, v);
      auto m = f.store.conversations().get_message(id);
      if (!m) return std::string("mismatch: imported message missing");
      return same(field == "client_key"            ? m->client_key.value_or("")
                  : field == "platform_message_id" ? m->platform_message_id.value_or("")
                                                   : m->content,
                  v, field);
    };
  };
  add("import message client_key", key_rule(), message("client_key"));
  add("import message platform_message_id", key_rule(), message("platform_message_id"));
  add("import message content", text_rule(), message("content"));
  // A conversation key is an index key too.
  add(
      "import conversation key", key_rule(),
      [](Fixture& f, const std::string& v) {
        std::string header;
        Json rec = exported(f, "conversation", header);
        const std::int64_t id = 100000 + std::stoll(f.fresh("").substr(1));
        rec["id"] = id;
        rec["message_count"] = 0;
        rec["last_message_at"] = nullptr;
        import_with(f, rec, header, "key", v);
        auto c = f.store.conversations().get(id);
        if (!c) return std::string("mismatch: imported conversation missing");
        return same(c->key.value_or(""), v, "key");
      },
      true);
  return ops;
}

std::vector<Case> text_cases(Fixture& f, const std::vector<TextOp>& ops) {
  const bool long_run = faults::long_mode();
  std::vector<Case> cases;
  for (const auto& op : ops) {
    for (const auto& v : values(long_run)) {
      const bool ten_mb = v.name == "10 MB";
      if (ten_mb && !op.big_in_short && !long_run) continue;
      cases.push_back({op.name, v.name, op.expect(v),
                       [&f, call = op.call, text = ten_mb ? std::string() : v.value, ten_mb] {
                         return call(f, ten_mb ? big_text() : text);
                       }});
    }
  }
  return cases;
}

// ---- the iCalendar import

// `v` as iCalendar TEXT (RFC 5545 3.3.11): backslash, semicolon, comma and
// line feed escaped. A CR has no escape: it stays raw.
std::string ics_text(const std::string& v) {
  std::string out;
  for (char ch : v) {
    if (ch == '\\' || ch == ';' || ch == ',') {
      out += '\\';
      out += ch;
    } else if (ch == '\n') {
      out += "\\n";
    } else {
      out += ch;
    }
  }
  return out;
}

std::string ics_with(const std::string& uid, const std::string& summary) {
  return "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\nBEGIN:VEVENT\r\nUID:" +
         ics_text(uid) +
         "\r\nDTSTART:20300108T090000Z\r\nDTEND:20300108T093000Z\r\nSUMMARY:" + ics_text(summary) +
         "\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
}

// Every value is written escaped; the file is checked as text first (invalid
// UTF-8, NUL: invalid_argument), then parsed.
std::vector<TextOp> ics_ops() {
  std::vector<TextOp> ops;
  ops.push_back({"import_ics uid",
                 // The UID is an event identifier (1..200 characters, no
                 // control characters); "" is an event without a UID.
                 [](const TextValue& v) { return v.kind == TextKind::injection ? ok : invalid; },
                 [](Fixture& f, const std::string& v) {
                   auto r = f.store.calendar().import_ics(ics_with(v, "meeting"));
                   if (r.ids.size() != 1) return std::string("mismatch: no event");
                   return same(f.store.calendar().get(r.ids[0])->uid, v, "uid");
                 }});
  ops.push_back({"import_ics summary",
                 [](const TextValue& v) {
                   // "" : libical refuses a SUMMARY property without a value.
                   if (not_text(v) || v.kind == TextKind::empty) {
                     return invalid;
                   }
                   return ok;
                 },
                 [](Fixture& f, const std::string& v) {
                   auto r = f.store.calendar().import_ics(ics_with(f.fresh("uid"), v));
                   if (r.ids.size() != 1) return std::string("mismatch: no event");
                   // A CR has no iCalendar escape: the one before the line's
                   // CRLF is part of the line end.
                   std::string want = v;
                   while (!want.empty() && want.back() == '\r') want.pop_back();
                   return same(f.store.calendar().get(r.ids[0])->title, want, "summary");
                 }});
  return ops;
}

// ---- analytics filters

std::vector<Case> analytics_cases(Fixture& f) {
  const bool long_run = faults::long_mode();
  std::vector<Case> cases;
  const Timestamp from = parse_timestamp("2000-01-01T00:00:00Z");
  const Timestamp to = parse_timestamp("2100-01-01T00:00:00Z");
  // A channel filter: valid UTF-8 without NUL; anything else matches nothing.
  for (const auto& v : values(long_run)) {
    const bool ten_mb = v.name == "10 MB";
    if (ten_mb && !long_run) continue;
    const std::string e = not_text(v) ? invalid : none;
    const std::string text = v.value;
    cases.push_back({"usage channel", v.name, e, [&f, text, from, to] {
                       AnalyticsFilter filter{from, to, text, std::nullopt};
                       return found(!f.store.analytics().usage(filter, UsageGroup::model).empty());
                     }});
    cases.push_back({"active_users channel", v.name, e, [&f, text, from, to] {
                       AnalyticsFilter filter{from, to, text, std::nullopt};
                       return found(!f.store.analytics().active_users(filter, false).empty());
                     }});
    cases.push_back({"conversation_length channel", v.name, e, [&f, text, from, to] {
                       AnalyticsFilter filter{from, to, text, std::nullopt};
                       return found(f.store.analytics().conversation_length(filter).conversations >
                                    0);
                     }});
    cases.push_back({"conversation_counts channel", v.name, e, [&f, text] {
                       ConversationScope scope;
                       scope.channel = text;
                       return found(f.store.analytics().conversation_counts(scope).total() > 0);
                     }});
  }
  // The user filter: an unknown or malformed id matches nothing.
  for (std::int64_t id :
       {std::int64_t{987654321}, std::int64_t{0}, std::int64_t{-1},
        std::numeric_limits<std::int64_t>::min(), std::numeric_limits<std::int64_t>::max()}) {
    cases.push_back({"usage user_id", std::to_string(id), none, [&f, id, from, to] {
                       AnalyticsFilter filter{from, to, std::nullopt, id};
                       return found(!f.store.analytics().usage(filter, UsageGroup::user).empty());
                     }});
    cases.push_back({"conversation_counts user_id", std::to_string(id), none, [&f, id] {
                       ConversationScope scope;
                       scope.user_id = id;
                       return found(f.store.analytics().conversation_counts(scope).total() > 0);
                     }});
  }
  // Ranges: empty or reversed, outside years 0001..9999.
  struct Range {
    std::string name;
    Timestamp from, to;
  };
  const Timestamp lo = Timestamp(Timestamp::duration(std::numeric_limits<std::int64_t>::min()));
  const Timestamp hi = Timestamp(Timestamp::duration(std::numeric_limits<std::int64_t>::max()));
  const Timestamp y1 = parse_timestamp("0001-01-01T00:00:00Z");
  for (const Range& r :
       {Range{"empty", from, from}, Range{"reversed", to, from},
        Range{"from before year 1", y1 - 1s, to},
        Range{"to past year 9999", from, parse_timestamp("9999-12-31T23:59:59Z") + 1s},
        Range{"int64 extremes", lo, hi}, Range{"epoch zero", Timestamp{}, to}}) {
    const std::string e = r.name == "epoch zero" ? ok : invalid;
    cases.push_back({"usage range", r.name, e, [&f, r] {
                       AnalyticsFilter filter{r.from, r.to, std::nullopt, std::nullopt};
                       f.store.analytics().usage(filter, UsageGroup::day);
                       return ok;
                     }});
    cases.push_back({"active_users range", r.name, e, [&f, r] {
                       AnalyticsFilter filter{r.from, r.to, std::nullopt, std::nullopt};
                       f.store.analytics().active_users(filter);
                       return ok;
                     }});
    cases.push_back({"conversation_length range", r.name, e, [&f, r] {
                       AnalyticsFilter filter{r.from, r.to, std::nullopt, std::nullopt};
                       f.store.analytics().conversation_length(filter);
                       return ok;
                     }});
  }
  return cases;
}

}  // namespace

TEST_CASE("bad input: session cache on both backends") { on_both_backends(cache_cases); }

TEST_CASE("bad input: JSON Lines import on both backends") {
  on_both_backends([](Fixture& f) { return text_cases(f, import_ops()); });
}

TEST_CASE("bad input: iCalendar import on both backends") {
  on_both_backends([](Fixture& f) { return text_cases(f, ics_ops()); });
}

TEST_CASE("bad input: analytics filters on both backends") { on_both_backends(analytics_cases); }
