// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT

// Bad ids, limits, cursors and JSON across the public API. An unknown or
// malformed numeric id (0, negative, huge) is never an error of its own: a
// lookup finds nothing, an operation that needs the object throws
// Error(not_found). A limit outside its documented range is
// invalid_argument; a malformed cursor is invalid_argument; JSON with
// invalid UTF-8, NUL or nested deeper than the library's limit is
// invalid_argument (not a stack overflow). A refused call writes nothing,
// and both backends agree.

#include <climits>
#include <convstore/convstore.hpp>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "faults/bad_input.hpp"
#include "faults/faults_support.hpp"

using namespace convstore;
using namespace bad_input;

namespace {

// ---- numeric ids

struct IdValue {
  std::string name;
  std::int64_t value;
};

const std::vector<IdValue>& id_values() {
  static const std::vector<IdValue> v = {
      {"unknown", 987654321},
      {"zero", 0},
      {"negative", -1},
      {"int64 min", std::numeric_limits<std::int64_t>::min()},
      {"int64 max", std::numeric_limits<std::int64_t>::max()},
  };
  return v;
}

struct IdOp {
  std::string name;
  std::string expected;  // for every bad id
  std::function<std::string(Fixture&, std::int64_t)> call;
};

Timestamp at(const char* iso) { return parse_timestamp(iso); }

std::vector<IdOp> id_ops() {
  std::vector<IdOp> ops;
  auto add = [&](std::string name, std::string expected,
                 std::function<std::string(Fixture&, std::int64_t)> call) {
    ops.push_back({std::move(name), std::move(expected), std::move(call)});
  };
  // conversations and users
  add("get_user", none, [](Fixture& f, std::int64_t id) {
    return found(f.store.conversations().get_user(id).has_value());
  });
  add("update_user", not_found, [](Fixture& f, std::int64_t id) {
    UserUpdate up;
    up.display_name = "x";
    f.store.conversations().update_user(id, up);
    return ok;
  });
  add("start user_id", not_found, [](Fixture& f, std::int64_t id) {
    NewConversation n;
    n.user_id = id;
    n.channel = "telegram";
    f.store.conversations().start(n);
    return ok;
  });
  add("get conversation", none, [](Fixture& f, std::int64_t id) {
    return found(f.store.conversations().get(id).has_value());
  });
  add("update conversation", not_found, [](Fixture& f, std::int64_t id) {
    ConversationUpdate up;
    up.title = "x";
    f.store.conversations().update(id, up);
    return ok;
  });
  add("set_status", not_found, [](Fixture& f, std::int64_t id) {
    f.store.conversations().set_status(id, ConversationStatus::completed);
    return ok;
  });
  add("complete", not_found, [](Fixture& f, std::int64_t id) {
    f.store.conversations().complete(id, "ref", Json{{"a", 1}});
    return ok;
  });
  add("remove conversation", none,
      [](Fixture& f, std::int64_t id) { return found(f.store.conversations().remove(id)); });
  add("append", not_found, [](Fixture& f, std::int64_t id) {
    f.store.conversations().append(id, testing::text("x"));
    return ok;
  });
  add("append_batch", not_found, [](Fixture& f, std::int64_t id) {
    f.store.conversations().append_batch(id, {testing::text("x"), testing::text("y")});
    return ok;
  });
  add("get_message", none, [](Fixture& f, std::int64_t id) {
    return found(f.store.conversations().get_message(id).has_value());
  });
  add("history", not_found, [](Fixture& f, std::int64_t id) {
    f.store.conversations().history(id);
    return ok;
  });
  add("history before", not_found, [](Fixture& f, std::int64_t id) {
    HistoryQuery q;
    q.before = id;
    f.store.conversations().history(f.conversation, q);
    return ok;
  });
  add("recent", not_found, [](Fixture& f, std::int64_t id) {
    f.store.conversations().recent(id, 5);
    return ok;
  });
  add("update_message", not_found, [](Fixture& f, std::int64_t id) {
    MessageUpdate up;
    up.content = "x";
    f.store.conversations().update_message(id, up);
    return ok;
  });
  add("append_content", not_found, [](Fixture& f, std::int64_t id) {
    f.store.conversations().append_content(id, "x");
    return ok;
  });
  add("finish_message", not_found, [](Fixture& f, std::int64_t id) {
    f.store.conversations().finish_message(id, 3);
    return ok;
  });
  add("remove_message", none, [](Fixture& f, std::int64_t id) {
    return found(f.store.conversations().remove_message(id));
  });
  add("save_data", not_found, [](Fixture& f, std::int64_t id) {
    f.store.conversations().save_data(id, DataKind::partial, Json{{"a", 1}});
    return ok;
  });
  add("ask", not_found, [](Fixture& f, std::int64_t id) {
    f.store.conversations().ask(id, NewQuestion("agent-1", "q"));
    return ok;
  });
  add("answer", not_found, [](Fixture& f, std::int64_t id) {
    f.store.conversations().answer(id, "a");
    return ok;
  });
  add("context", not_found, [](Fixture& f, std::int64_t id) {
    f.store.conversations().context(id);
    return ok;
  });
  add("context_window", not_found, [](Fixture& f, std::int64_t id) {
    ContextBudget b;
    b.max_tokens = 100;
    f.store.conversations().context_window(id, b);
    return ok;
  });
  add("search conversation filter", none, [](Fixture& f, std::int64_t id) {
    SearchQuery q;
    q.text = "hello";
    q.conversation_id = id;
    return found(!f.store.conversations().search(q).items.empty());
  });
  // agent state bound to a conversation
  add("save_state conversation scope", not_found, [](Fixture& f, std::int64_t id) {
    f.store.agents().save_state(StateScope::conversation(id), f.agent, Json::object());
    return ok;
  });
  // calendar
  add("get event", none,
      [](Fixture& f, std::int64_t id) { return found(f.store.calendar().get(id).has_value()); });
  add("update event", not_found, [](Fixture& f, std::int64_t id) {
    EventUpdate up;
    up.title = "x";
    f.store.calendar().update(id, up);
    return ok;
  });
  add("remove event", none,
      [](Fixture& f, std::int64_t id) { return found(f.store.calendar().remove(id)); });
  add("create event owner", not_found, [](Fixture& f, std::int64_t id) {
    NewEvent e;
    e.owner = id;
    e.title = "t";
    e.start = at("2030-03-01T10:00:00Z");
    e.end = at("2030-03-01T11:00:00Z");
    f.store.calendar().create(e);
    return ok;
  });
  add("cancel_occurrence series", not_found, [](Fixture& f, std::int64_t id) {
    f.store.calendar().cancel_occurrence(id, at("2030-03-01T10:00:00Z"));
    return ok;
  });
  // tasks
  add("get task", none,
      [](Fixture& f, std::int64_t id) { return found(f.store.tasks().get(id).has_value()); });
  add("cancel task", not_found, [](Fixture& f, std::int64_t id) {
    f.store.tasks().cancel(id);
    return ok;
  });
  add("complete task", not_found, [](Fixture& f, std::int64_t id) {
    f.store.tasks().complete(id, 1);
    return ok;
  });
  add("heartbeat task", not_found, [](Fixture& f, std::int64_t id) {
    f.store.tasks().heartbeat(id, 1, std::chrono::seconds(30));
    return ok;
  });
  // templates
  add("get template", none,
      [](Fixture& f, std::int64_t id) { return found(f.store.templates().get(id).has_value()); });
  add("record_use template", not_found, [](Fixture& f, std::int64_t id) {
    f.store.templates().record_use(id);
    return ok;
  });
  add("remove template", none,
      [](Fixture& f, std::int64_t id) { return found(f.store.templates().remove(id)); });
  add("add template user_id", not_found, [](Fixture& f, std::int64_t id) {
    NewOperationTemplate t;
    t.user_id = id;
    t.kind = "k";
    t.name = f.fresh("n");
    f.store.templates().add(t);
    return ok;
  });
  // dialogs and reviews
  add("configure dialog", not_found, [](Fixture& f, std::int64_t id) {
    f.store.dialogs().configure(id);
    return ok;
  });
  add("get dialog", none,
      [](Fixture& f, std::int64_t id) { return found(f.store.dialogs().get(id).has_value()); });
  add("suggest", not_found, [](Fixture& f, std::int64_t id) {
    NewSuggestion s;
    s.answers_message_id = "m";
    s.answers_message_at = at("2030-01-01T00:00:00Z");
    s.text = "t";
    f.store.reviews().suggest(id, s);
    return ok;
  });
  add("get suggestion", none,
      [](Fixture& f, std::int64_t id) { return found(f.store.reviews().get(id).has_value()); });
  add("approve", not_found, [](Fixture& f, std::int64_t id) {
    f.store.reviews().approve(id);
    return ok;
  });
  // credentials and web sessions
  add("put credential user", not_found, [](Fixture& f, std::int64_t id) {
    f.store.credentials().put(id, "c", "s", *f.key);
    return ok;
  });
  add("list credentials", none,
      [](Fixture& f, std::int64_t id) { return found(!f.store.credentials().list(id).empty()); });
  add("issue web session", not_found, [](Fixture& f, std::int64_t id) {
    f.store.web_sessions().issue(id);
    return ok;
  });
  add("get web session", none, [](Fixture& f, std::int64_t id) {
    return found(f.store.web_sessions().get(id).has_value());
  });
  add("set_status web session", not_found, [](Fixture& f, std::int64_t id) {
    f.store.web_sessions().set_status(id, SessionStatus::authenticated);
    return ok;
  });
  add("revoke web session", none,
      [](Fixture& f, std::int64_t id) { return found(f.store.web_sessions().revoke(id)); });
  // retention
  add("hold", not_found, [](Fixture& f, std::int64_t id) {
    f.store.retention().hold(id, "audit");
    return ok;
  });
  add("hold_user", not_found, [](Fixture& f, std::int64_t id) {
    f.store.retention().hold_user(id, "audit");
    return ok;
  });
  // Documented: not_found for an unknown conversation.
  add("release", not_found,
      [](Fixture& f, std::int64_t id) { return found(f.store.retention().release(id)); });
  add("export_user", not_found, [](Fixture& f, std::int64_t id) {
    f.store.retention().export_user(id);
    return ok;
  });
  add("forget_user id", not_found, [](Fixture& f, std::int64_t id) {
    f.store.retention().forget_user(id);
    return ok;
  });
  return ops;
}

std::vector<Case> id_cases(Fixture& f) {
  std::vector<Case> cases;
  for (const auto& op : id_ops()) {
    for (const auto& v : id_values()) {
      // A conversation scope's key is the id as text: one that no
      // conversation can have (0, negative) is a malformed key.
      const bool malformed_scope = op.name == "save_state conversation scope" && v.value <= 0;
      cases.push_back({op.name, v.name, malformed_scope ? invalid : op.expected,
                       [&f, call = op.call, id = v.value] { return call(f, id); }});
    }
  }
  return cases;
}

// ---- limits and page sizes

struct LimitValue {
  std::string name;
  std::size_t value;
};

const std::vector<LimitValue>& limit_values() {
  static const std::vector<LimitValue> v = {
      {"zero", 0},
      {"huge", std::size_t{1} << 40},
      {"negative cast", static_cast<std::size_t>(-1)},
  };
  return v;
}

struct LimitOp {
  std::string name;
  bool zero_allowed;  // documented 0 .. max
  std::function<void(Fixture&, std::size_t)> call;
  bool no_max = false;  // a cap, not a page size: any size is legal
};

std::vector<LimitOp> limit_ops() {
  std::vector<LimitOp> ops;
  auto add = [&](std::string name, bool zero_allowed,
                 std::function<void(Fixture&, std::size_t)> call) {
    ops.push_back({std::move(name), zero_allowed, std::move(call)});
  };
  add("list conversations limit", false, [](Fixture& f, std::size_t n) {
    ConversationFilter filter;
    filter.limit = n;
    f.store.conversations().list(filter);
  });
  add("history limit", false, [](Fixture& f, std::size_t n) {
    HistoryQuery q;
    q.limit = n;
    f.store.conversations().history(f.conversation, q);
  });
  add("recent n", true,
      [](Fixture& f, std::size_t n) { f.store.conversations().recent(f.conversation, n); });
  add("context n", true,
      [](Fixture& f, std::size_t n) { f.store.conversations().context(f.conversation, n); });
  add("context_window max_messages", false, [](Fixture& f, std::size_t n) {
    ContextBudget b;
    b.max_tokens = 100;
    b.max_messages = n;
    f.store.conversations().context_window(f.conversation, b);
  });
  ops.back().no_max = true;
  add("search limit", false, [](Fixture& f, std::size_t n) {
    SearchQuery q;
    q.text = "hello";
    q.limit = n;
    f.store.conversations().search(q);
  });
  add("search snippet_words", false, [](Fixture& f, std::size_t n) {
    SearchQuery q;
    q.text = "hello";
    q.snippet_words = n;
    f.store.conversations().search(q);
  });
  add("list_agents limit", false, [](Fixture& f, std::size_t n) {
    AgentFilter filter;
    filter.limit = n;
    f.store.agents().list_agents(filter);
  });
  add("scopes_of limit", false,
      [](Fixture& f, std::size_t n) { f.store.agents().scopes_of(f.agent, n); });
  add("calendar range limit", false, [](Fixture& f, std::size_t n) {
    f.store.calendar().range(std::nullopt, at("2030-01-01T00:00:00Z"), at("2030-02-01T00:00:00Z"),
                             n);
  });
  add("calendar search limit", false,
      [](Fixture& f, std::size_t n) { f.store.calendar().search(std::nullopt, "standup", n); });
  add("task list limit", false,
      [](Fixture& f, std::size_t n) { f.store.tasks().list(TaskFilter{}, n); });
  add("claim max", false, [](Fixture& f, std::size_t n) {
    ClaimOptions o;
    o.max = n;
    o.types = {"nothing-of-this-type"};
    f.store.tasks().claim("w", o);
  });
  add("templates list limit", false,
      [](Fixture& f, std::size_t n) { f.store.templates().list("expense", std::nullopt, n); });
  add("dialogs due limit", false, [](Fixture& f, std::size_t n) {
    f.store.dialogs().due(std::chrono::seconds(60), n, at("2030-01-01T00:00:00Z"));
  });
  add("review history limit", false,
      [](Fixture& f, std::size_t n) { f.store.reviews().history(f.conversation, n); });
  add("pending page size", false, [](Fixture& f, std::size_t n) {
    PendingQuery q;
    q.limit = n;
    f.store.reviews().pending(f.user, q);
  });
  add("ready_to_send limit", false,
      [](Fixture& f, std::size_t n) { f.store.reviews().ready_to_send(n); });
  add("claim_to_send max", false, [](Fixture& f, std::size_t n) {
    f.store.reviews().claim_to_send("sender", n, std::chrono::seconds(30));
  });
  add("retention batch_size", false, [](Fixture& f, std::size_t n) {
    RetentionRun r;
    r.dry_run = true;
    r.batch_size = n;
    f.store.retention().run(RetentionPolicy{}, r);
  });
  return ops;
}

std::vector<Case> limit_cases(Fixture& f) {
  std::vector<Case> cases;
  for (const auto& op : limit_ops()) {
    for (const auto& v : limit_values()) {
      const bool legal = v.value == 0 ? op.zero_allowed : op.no_max;
      cases.push_back({op.name, v.name, legal ? ok : invalid, [&f, call = op.call, n = v.value] {
                         call(f, n);
                         return ok;
                       }});
    }
  }
  for (int batch : {0, -1, INT_MIN}) {
    cases.push_back({"rotate batch", std::to_string(batch), invalid, [&f, batch] {
                       f.store.credentials().rotate(*f.key, SecretKey::generate(), batch);
                       return ok;
                     }});
  }
  return cases;
}

// ---- cursors

std::vector<Case> cursor_cases(Fixture& f) {
  const std::vector<std::pair<std::string, std::string>> cursors = {
      {"garbage", "garbage"},
      {"digits", "1.2.3"},
      {"overflow", "c1.99999999999999999999999.1"},
      {"negative id", "c1.5.-1"},
      {"invalid UTF-8", "\xff\xfe"},
      {"NUL", std::string("c\0x", 3)},
      {"injection", "'; DROP TABLE messages; --"},
  };
  std::vector<std::pair<std::string, std::function<void(Fixture&, const std::string&)>>> ops = {
      {"list conversations cursor",
       [](Fixture& g, const std::string& c) {
         ConversationFilter filter;
         filter.cursor = c;
         g.store.conversations().list(filter);
       }},
      {"list_agents cursor",
       [](Fixture& g, const std::string& c) {
         AgentFilter filter;
         filter.cursor = c;
         g.store.agents().list_agents(filter);
       }},
      {"search cursor",
       [](Fixture& g, const std::string& c) {
         SearchQuery q;
         q.text = "hello";
         q.cursor = c;
         g.store.conversations().search(q);
       }},
      {"pending cursor",
       [](Fixture& g, const std::string& c) {
         PendingQuery q;
         q.cursor = c;
         g.store.reviews().pending(g.user, q);
       }},
      {"calendar range cursor",
       [](Fixture& g, const std::string& c) {
         g.store.calendar().range(std::nullopt, at("2030-01-01T00:00:00Z"),
                                  at("2030-02-01T00:00:00Z"), 10, c);
       }},
  };
  std::vector<Case> cases;
  for (const auto& [name, call] : ops) {
    for (const auto& [cname, cursor] : cursors) {
      cases.push_back({name, cname, invalid, [&f, call = call, cursor = cursor] {
                         call(f, cursor);
                         return ok;
                       }});
    }
  }
  return cases;
}

// ---- JSON

// `depth` nested arrays (or objects), built without recursion.
Json nested(std::size_t depth, bool objects) {
  Json j = 1;
  for (std::size_t i = 0; i < depth; ++i) {
    Json outer = objects ? Json::object() : Json::array();
    if (objects) {
      outer["k"] = std::move(j);
    } else {
      outer.push_back(std::move(j));
    }
    j = std::move(outer);
  }
  return j;
}

// A value is made afresh for each call and moved into the API's structs:
// copying a deep value (as `up.metadata = j` would) recurses in the caller.
struct JsonValue {
  std::string name;
  std::function<Json()> make;
  std::string expected;  // for a field that takes any JSON object
};

// {"deep": value}, built without copying `value` (a copy of deep JSON recurses).
Json holding(Json value) {
  Json j = Json::object();
  j["deep"] = std::move(value);
  return j;
}

std::vector<JsonValue> json_values(bool with_big) {
  std::vector<JsonValue> v;
  v.push_back({"100k nested arrays", [] { return holding(nested(100000, false)); }, invalid});
  v.push_back({"100k nested objects", [] { return holding(nested(100000, true)); }, invalid});
  v.push_back({"300 nested arrays", [] { return holding(nested(300, false)); }, invalid});
  v.push_back({"100 nested objects", [] { return holding(nested(100, true)); }, ok});
  v.push_back({"invalid UTF-8 string", [] { return Json{{"s", "ab\xff"}}; }, invalid});
  v.push_back({"invalid UTF-8 key", [] { return Json{{"k\xc0\xaf", 1}}; }, invalid});
  v.push_back({"NUL in string", [] { return Json{{"s", std::string("a\0b", 3)}}; }, invalid});
  v.push_back({"NUL in key", [] { return Json{{std::string("k\0", 2), 1}}; }, invalid});
  v.push_back({"injection", [] { return Json{{"'; DROP TABLE x; --", "%_\\$1' OR 1=1 --"}}; }, ok});
  if (with_big) v.push_back({"10 MB string", [] { return Json{{"big", big_text()}}; }, ok});
  return v;
}

struct JsonOp {
  std::string name;
  std::size_t max_bytes;  // 0: no documented limit
  // Stores the value and returns what reads back.
  std::function<Json(Fixture&, Json)> call;
  bool big_in_short = false;
};

std::vector<JsonOp> json_ops() {
  std::vector<JsonOp> ops;
  auto add = [&](std::string name, std::size_t max, std::function<Json(Fixture&, Json)> c,
                 bool big = false) {
    ops.push_back({std::move(name), max, std::move(c), big});
  };
  add("upsert_user metadata", 0, [](Fixture& f, Json j) {
    UserUpsert up("telegram", f.fresh("ext"));
    up.metadata = std::move(j);
    auto u = f.store.conversations().upsert_user(up);
    return f.store.conversations().get_user(u.id)->metadata;
  });
  add("update_user metadata_patch", 0, [](Fixture& f, Json j) {
    auto id = f.store.conversations().upsert_user(UserUpsert("telegram", f.fresh("ext"))).id;
    f.snapshot();
    UserUpdate up;
    up.metadata_patch = std::move(j);
    f.store.conversations().update_user(id, up);
    return f.store.conversations().get_user(id)->metadata;
  });
  add("set_channel_config settings", 0, [](Fixture& f, Json j) {
    const std::string channel = f.fresh("channel");
    f.store.conversations().set_channel_config(channel, "m", std::move(j));
    return f.store.conversations().channel_config(channel)->settings;
  });
  add("start metadata", 0, [](Fixture& f, Json j) {
    NewConversation n;
    n.channel = "web";
    n.metadata = std::move(j);
    auto c = f.store.conversations().start(n);
    return f.store.conversations().get(c.id)->metadata;
  });
  add("append metadata", 0, [](Fixture& f, Json j) {
    NewMessage n = testing::text("x");
    n.metadata = std::move(j);
    auto m = f.store.conversations().append(f.conversation, n);
    return f.store.conversations().get_message(m.id)->metadata;
  });
  add(
      "append tool_args", 0,
      [](Fixture& f, Json j) {
        NewMessage n = testing::text("x");
        n.role = Role::tool;
        n.tool_name = "t";
        n.tool_args = std::move(j);
        auto m = f.store.conversations().append(f.conversation, n);
        return f.store.conversations().get_message(m.id)->tool_args;
      },
      true);
  add("update_message metadata_patch", 0, [](Fixture& f, Json j) {
    auto m = f.store.conversations().append(f.conversation, testing::text("x"));
    f.snapshot();
    MessageUpdate up;
    up.metadata_patch = std::move(j);
    f.store.conversations().update_message(m.id, up);
    return f.store.conversations().get_message(m.id)->metadata;
  });
  add("save_data", 0, [](Fixture& f, Json j) {
    f.store.conversations().save_data(f.conversation, DataKind::partial, j);
    return f.store.conversations().latest_data(f.conversation, DataKind::partial)->data;
  });
  add("ask missing_fields", 0, [](Fixture& f, Json j) {
    Json fields = Json::array();
    fields.push_back(std::move(j));
    auto q = f.store.conversations().ask(f.conversation, NewQuestion("a", "q", std::move(fields)));
    for (const auto& x : f.store.conversations().questions(f.conversation)) {
      if (x.id == q.id) return x.missing_fields.at(0);
    }
    return Json();
  });
  add("create_agent config", 0, [](Fixture& f, Json j) {
    NewAgent a;
    a.id = f.fresh("agent");
    a.config = std::move(j);
    f.store.agents().create_agent(a);
    f.store.agents().clear_cache();
    return f.store.agents().get_agent(a.id)->config;
  });
  add(
      "save_state", 0,
      [](Fixture& f, Json j) {
        auto scope = StateScope::named(f.fresh("scope"));
        f.store.agents().save_state(scope, f.agent, std::move(j));
        return f.store.agents().load_state(scope, f.agent);
      },
      true);
  add("patch_state", 0, [](Fixture& f, Json j) {
    auto scope = StateScope::named(f.fresh("scope"));
    f.store.agents().save_state(scope, f.agent, Json{{"keep", 1}});
    f.snapshot();
    f.store.agents().patch_state(scope, f.agent, std::move(j));
    Json got = f.store.agents().load_state(scope, f.agent);
    got.erase("keep");
    return got;
  });
  add("create event metadata", 0, [](Fixture& f, Json j) {
    NewEvent e;
    e.title = "t";
    e.start = at("2030-04-01T10:00:00Z");
    e.end = at("2030-04-01T11:00:00Z");
    e.metadata = std::move(j);
    auto c = f.store.calendar().create(e);
    return f.store.calendar().get(c.id)->metadata;
  });
  add(
      "enqueue payload", TaskLimits::max_json_bytes,
      [](Fixture& f, Json j) {
        auto t = f.store.tasks().enqueue(NewTask("payload", std::move(j)));
        return f.store.tasks().get(t.task.id)->payload;
      },
      true);
  add("complete task result", TaskLimits::max_json_bytes, [](Fixture& f, Json j) {
    const std::string type = f.fresh("result");
    f.store.tasks().enqueue(NewTask(type));
    ClaimOptions o;
    o.types = {type};
    auto t = f.store.tasks().claim("w", o).at(0);
    f.snapshot();
    return f.store.tasks().complete(t, std::move(j)).result;
  });
  add("add template expected_output", TemplateLimits::max_output_bytes, [](Fixture& f, Json j) {
    NewOperationTemplate t;
    t.kind = "k";
    t.name = f.fresh("n");
    t.expected_output = std::move(j);
    auto got = f.store.templates().add(t);
    return f.store.templates().get(got.id)->expected_output;
  });
  add("put credential metadata", 0, [](Fixture& f, Json j) {
    const std::string name = f.fresh("cred");
    f.store.credentials().put(f.user, name, "s", *f.key, std::move(j));
    return f.store.credentials().info(f.user, name)->metadata;
  });
  add("issue device_info", 0, [](Fixture& f, Json j) {
    NewWebSession n;
    n.device_info = std::move(j);
    auto s = f.store.web_sessions().issue(f.user, n);
    return f.store.web_sessions().get(s.session.id)->device_info;
  });
  add("update_metadata web session", 0, [](Fixture& f, Json j) {
    auto s = f.store.web_sessions().issue(f.user);
    f.snapshot();
    return f.store.web_sessions().update_metadata(s.session.id, std::move(j)).metadata;
  });
  return ops;
}

std::vector<Case> json_cases(Fixture& f) {
  std::vector<Case> cases;
  const bool long_run = faults::long_mode();
  // The values are shared by the cases (the deep ones are costly to build).
  static const auto values = std::make_shared<std::vector<JsonValue>>(json_values(true));
  for (const auto& op : json_ops()) {
    for (std::size_t i = 0; i < values->size(); ++i) {
      const JsonValue& v = (*values)[i];
      const bool big = v.name == "10 MB string";
      if (big && !op.big_in_short && !long_run) continue;
      std::string expected = v.expected;
      if (big && op.max_bytes != 0) expected = invalid;
      cases.push_back({op.name, v.name, expected, [&f, call = op.call, &v] {
                         Json got = call(f, v.make());
                         // Reached only for values the library took (shallow).
                         return got == v.make() ? ok
                                                : std::string("mismatch: JSON read back differs");
                       }});
    }
  }
  return cases;
}

}  // namespace

TEST_CASE("bad input: numeric ids on both backends") { on_both_backends(id_cases); }

TEST_CASE("bad input: limits on both backends") { on_both_backends(limit_cases); }

TEST_CASE("bad input: cursors on both backends") { on_both_backends(cursor_cases); }

TEST_CASE("bad input: JSON on both backends") { on_both_backends(json_cases); }
