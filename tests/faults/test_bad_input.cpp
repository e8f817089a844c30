// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT

// Bad text across the public API: every text field fed invalid UTF-8, NUL,
// 10 MB, injection-shaped strings, control characters and "". The expected
// outcome follows the headers: free text (message content, titles, ...) is
// valid UTF-8 without NUL of any length; identifiers (agent ids, keys, names)
// are 1..200 characters without control characters; fields with a documented
// byte limit refuse more; injection-shaped text is just text, stored and read
// back byte-exact. A refused call writes nothing, and both backends agree.

#include <algorithm>
#include <convstore/convstore.hpp>
#include <string>
#include <vector>

#include "faults/bad_input.hpp"
#include "faults/faults_support.hpp"

using namespace convstore;
using namespace bad_input;

namespace {

// Text with a documented byte limit (below 10 MB); `non_empty`: "" refused.
Expect bounded_rule(bool non_empty = false, std::string done = ok) {
  return [=](const TextValue& v) {
    if (not_text(v) || v.kind == TextKind::big) return invalid;
    if (non_empty && v.kind == TextKind::empty) return invalid;
    return done;
  };
}
// Text an index holds (a channel, an external id, a platform message id, a
// client key): valid UTF-8 without NUL, at most 1024 bytes.
// `non_empty`: "" refused too.
Expect key_rule(std::string done = ok, bool non_empty = false) {
  return [=](const TextValue& v) {
    if (non_empty && v.kind == TextKind::empty) return invalid;
    return not_text(v) || v.kind == TextKind::big ? invalid : done;
  };
}
// An identifier: 1..200 (or fewer) characters, no control characters.
Expect id_rule(std::string done = ok) {
  return [done](const TextValue& v) { return v.kind == TextKind::injection ? done : invalid; };
}
// A search: text with a word.
Expect search_rule() {
  return [](const TextValue& v) { return not_text(v) || !v.has_word ? invalid : ok; };
}

// A conversation of its own for a call that changes one.
ConversationId new_conversation(Fixture& f) {
  NewConversation n;
  n.user_id = f.user;
  n.channel = "telegram";
  auto id = f.store.conversations().start(n).id;
  f.snapshot();
  return id;
}

std::vector<TextOp> text_ops() {
  std::vector<TextOp> ops;
  auto add = [&](std::string name, Expect e, Call c, bool big = false) {
    ops.push_back({std::move(name), std::move(e), std::move(c), big});
  };
  // ---- users and channels
  add(
      "upsert_user channel", key_rule(ok, true),
      [](Fixture& f, const std::string& v) {
        auto u = f.store.conversations().upsert_user(UserUpsert(v, f.fresh("ext")));
        return same(f.store.conversations().get_user(u.id)->channel, v, "channel");
      },
      true);
  add(
      "upsert_user external_id", key_rule(ok, true),
      [](Fixture& f, const std::string& v) {
        auto u = f.store.conversations().upsert_user(UserUpsert(f.fresh("ch"), v));
        return same(f.store.conversations().get_user(u.id)->external_id, v, "external id");
      },
      true);
  add(
      "upsert_user display_name", text_rule(),
      [](Fixture& f, const std::string& v) {
        UserUpsert up("telegram", f.fresh("ext"));
        up.display_name = v;
        auto u = f.store.conversations().upsert_user(up);
        return same(f.store.conversations().get_user(u.id)->display_name.value_or(""), v, "name");
      },
      true);
  add("update_user system_prompt", text_rule(), [](Fixture& f, const std::string& v) {
    UserUpdate up;
    up.system_prompt = v;
    f.store.conversations().update_user(f.user, up);
    return same(f.store.conversations().get_user(f.user)->system_prompt.value_or(""), v, "prompt");
  });
  add("find_user external_id", key_rule(none), [](Fixture& f, const std::string& v) {
    return found(f.store.conversations().find_user("telegram", v).has_value());
  });
  add("set_channel_config default_model", text_rule(), [](Fixture& f, const std::string& v) {
    f.store.conversations().set_channel_config("telegram", v);
    return same(f.store.conversations().channel_config("telegram")->default_model, v, "model");
  });
  add("channel_config channel", key_rule(none), [](Fixture& f, const std::string& v) {
    return found(f.store.conversations().channel_config(v).has_value());
  });
  // ---- conversations
  add("start key", id_rule(), [](Fixture& f, const std::string& v) {
    NewConversation n;
    n.user_id = f.user;
    n.channel = "telegram";
    n.key = v;
    auto c = f.store.conversations().start(n);
    return same(f.store.conversations().find(v)->key.value_or(""), v, "key");
  });
  add(
      "start title", text_rule(),
      [](Fixture& f, const std::string& v) {
        NewConversation n;
        n.user_id = f.user;
        n.channel = "telegram";
        n.title = v;
        auto c = f.store.conversations().start(n);
        return same(f.store.conversations().get(c.id)->title.value_or(""), v, "title");
      },
      true);
  add(
      "start chat_id", key_rule(),
      [](Fixture& f, const std::string& v) {
        NewConversation n;
        n.user_id = f.user;
        n.channel = "telegram";
        n.chat_id = v;
        auto c = f.store.conversations().start(n);
        return same(f.store.conversations().get(c.id)->chat_id.value_or(""), v, "chat id");
      },
      true);
  add("find key", id_rule(none), [](Fixture& f, const std::string& v) {
    return found(f.store.conversations().find(v).has_value());
  });
  add("get_or_create key", id_rule(), [](Fixture& f, const std::string& v) {
    NewConversation n;
    n.channel = "web";
    auto c = f.store.conversations().get_or_create(v, n);
    return same(c.key.value_or(""), v, "key");
  });
  add("update title", text_rule(), [](Fixture& f, const std::string& v) {
    ConversationUpdate up;
    up.title = v;
    f.store.conversations().update(f.conversation, up);
    return same(f.store.conversations().get(f.conversation)->title.value_or(""), v, "title");
  });
  add("complete external_ref", text_rule(), [](Fixture& f, const std::string& v) {
    auto id = new_conversation(f);
    f.store.conversations().complete(id, v);
    return same(f.store.conversations().get(id)->external_ref.value_or(""), v, "reference");
  });
  add("list channel filter", text_rule(none), [](Fixture& f, const std::string& v) {
    ConversationFilter filter;
    filter.channel = v;
    return found(!f.store.conversations().list(filter).items.empty());
  });
  // ---- messages
  add(
      "append content", text_rule(),
      [](Fixture& f, const std::string& v) {
        auto m = f.store.conversations().append(f.conversation, testing::text(v));
        return same(f.store.conversations().get_message(m.id)->content, v, "content");
      },
      true);
  add("append model", text_rule(), [](Fixture& f, const std::string& v) {
    NewMessage n = testing::text("x");
    n.model = v;
    auto m = f.store.conversations().append(f.conversation, n);
    return same(f.store.conversations().get_message(m.id)->model.value_or(""), v, "model");
  });
  add(
      "append platform_message_id", key_rule(),
      [](Fixture& f, const std::string& v) {
        NewMessage n = testing::text("x");
        n.platform_message_id = v;
        auto m = f.store.conversations().append(f.conversation, n);
        return same(f.store.conversations().get_message(m.id)->platform_message_id.value_or(""), v,
                    "platform id");
      },
      true);
  add(
      "append client_key", key_rule(ok, true),
      [](Fixture& f, const std::string& v) {
        NewMessage n = testing::text("x");
        n.client_key = v;
        auto m = f.store.conversations().append(f.conversation, n);
        return same(f.store.conversations().get_message(m.id)->client_key.value_or(""), v,
                    "client key");
      },
      true);
  add("append tool_name", text_rule(), [](Fixture& f, const std::string& v) {
    NewMessage n = testing::text("x");
    n.role = Role::tool;
    n.tool_name = v;
    auto m = f.store.conversations().append(f.conversation, n);
    return same(f.store.conversations().get_message(m.id)->tool_name.value_or(""), v, "tool");
  });
  add("append_batch second content", text_rule(), [](Fixture& f, const std::string& v) {
    auto ms = f.store.conversations().append_batch(f.conversation,
                                                   {testing::text("first"), testing::text(v)});
    return same(f.store.conversations().get_message(ms.at(1).id)->content, v, "content");
  });
  add("update_message content", text_rule(), [](Fixture& f, const std::string& v) {
    MessageUpdate up;
    up.content = v;
    f.store.conversations().update_message(f.message, up);
    return same(f.store.conversations().get_message(f.message)->content, v, "content");
  });
  add(
      "append_content delta", text_rule(),
      [](Fixture& f, const std::string& v) {
        auto m = f.store.conversations().append(f.conversation, testing::text("start:"));
        f.snapshot();
        f.store.conversations().append_content(m.id, v);
        return same(f.store.conversations().get_message(m.id)->content, "start:" + v, "content");
      },
      true);
  add("find_by_platform_id", key_rule(none), [](Fixture& f, const std::string& v) {
    return found(f.store.conversations().find_by_platform_id("telegram", "chat-1", v).has_value());
  });
  add("history agent filter", text_rule(none), [](Fixture& f, const std::string& v) {
    HistoryQuery q;
    q.agent = v;
    return found(!f.store.conversations().history(f.conversation, q).empty());
  });
  add("ask question", text_rule(), [](Fixture& f, const std::string& v) {
    auto q = f.store.conversations().ask(f.conversation, NewQuestion("agent-1", v));
    auto all = f.store.conversations().questions(f.conversation);
    for (const auto& x : all) {
      if (x.id == q.id) return same(x.question, v, "question");
    }
    return std::string("mismatch: question not found");
  });
  add("answer", text_rule(), [](Fixture& f, const std::string& v) {
    auto q = f.store.conversations().ask(f.conversation, NewQuestion("agent-1", "q"));
    f.snapshot();
    return same(f.store.conversations().answer(q.id, v).answer.value_or(""), v, "answer");
  });
  add("search text", search_rule(), [](Fixture& f, const std::string& v) {
    SearchQuery q;
    q.text = v;
    f.store.conversations().search(q);
    return ok;
  });
  add("search highlight", text_rule(), [](Fixture& f, const std::string& v) {
    SearchQuery q;
    q.text = "hello";
    q.highlight_open = v;
    f.store.conversations().search(q);
    return ok;
  });
  // ---- agents and state
  add(
      "create_agent id", id_rule(),
      [](Fixture& f, const std::string& v) {
        NewAgent a;
        a.id = v;
        a.name = "n";
        f.store.agents().create_agent(a);
        return same(f.store.agents().get_agent(v)->id, v, "agent id");
      },
      true);
  add(
      "create_agent name", text_rule(),
      [](Fixture& f, const std::string& v) {
        NewAgent a;
        a.id = f.fresh("agent");
        a.name = v;
        f.store.agents().create_agent(a);
        f.store.agents().clear_cache();
        return same(f.store.agents().get_agent(a.id)->name, v, "agent name");
      },
      true);
  add("create_agent tool", id_rule(), [](Fixture& f, const std::string& v) {
    NewAgent a;
    a.id = f.fresh("agent");
    a.tools = {v};
    f.store.agents().create_agent(a);
    f.store.agents().clear_cache();
    return same(f.store.agents().get_agent(a.id)->tools.at(0), v, "tool");
  });
  add("update_agent description", text_rule(), [](Fixture& f, const std::string& v) {
    AgentUpdate up;
    up.description = v;
    f.store.agents().update_agent(f.agent, up);
    f.store.agents().clear_cache();
    return same(f.store.agents().get_agent(f.agent)->description, v, "description");
  });
  add("get_agent id", id_rule(none), [](Fixture& f, const std::string& v) {
    return found(f.store.agents().get_agent(v) != nullptr);
  });
  add("record_use id", id_rule(not_found), [](Fixture& f, const std::string& v) {
    f.store.agents().record_use(v);
    return ok;
  });
  add("save_state scope key", id_rule(), [](Fixture& f, const std::string& v) {
    f.store.agents().save_state(StateScope::named(v), f.agent, Json{{"k", v}});
    return same(f.store.agents().load_state(StateScope::named(v), f.agent)["k"].get<std::string>(),
                v, "state");
  });
  add("load_state agent", id_rule(), [](Fixture& f, const std::string& v) {
    auto s = f.store.agents().get_state(StateScope::named("s1"), v);
    return s ? std::string("mismatch: a state found") : ok;
  });
  // ---- calendar
  add(
      "create event title", text_rule(),
      [](Fixture& f, const std::string& v) {
        NewEvent e;
        e.title = v;
        e.start = parse_timestamp("2030-02-01T10:00:00Z");
        e.end = parse_timestamp("2030-02-01T11:00:00Z");
        auto c = f.store.calendar().create(e);
        return same(f.store.calendar().get(c.id)->title, v, "title");
      },
      true);
  add(
      "create event description", text_rule(),
      [](Fixture& f, const std::string& v) {
        NewEvent e;
        e.title = "t";
        e.description = v;
        e.start = parse_timestamp("2030-02-01T10:00:00Z");
        e.end = parse_timestamp("2030-02-01T11:00:00Z");
        auto c = f.store.calendar().create(e);
        return same(f.store.calendar().get(c.id)->description, v, "description");
      },
      true);
  // An empty uid asks for a generated one.
  add(
      "create event uid",
      [](const TextValue& v) { return v.kind == TextKind::empty ? ok : id_rule()(v); },
      [](Fixture& f, const std::string& v) {
        NewEvent e;
        e.uid = v;
        e.title = "t";
        e.start = parse_timestamp("2030-02-01T10:00:00Z");
        e.end = parse_timestamp("2030-02-01T11:00:00Z");
        auto c = f.store.calendar().create(e);
        if (v.empty()) return c.uid.empty() ? std::string("mismatch: no uid generated") : ok;
        return same(f.store.calendar().find_by_uid(v)->uid, v, "uid");
      });
  add("update event location", text_rule(), [](Fixture& f, const std::string& v) {
    EventUpdate up;
    up.location = v;
    f.store.calendar().update(f.event, up);
    return same(f.store.calendar().get(f.event)->location, v, "location");
  });
  add("find_by_uid", id_rule(none), [](Fixture& f, const std::string& v) {
    return found(f.store.calendar().find_by_uid(v).has_value());
  });
  add("calendar search", search_rule(), [](Fixture& f, const std::string& v) {
    f.store.calendar().search(std::nullopt, v);
    return ok;
  });
  // ---- tasks
  add("enqueue type", id_rule(), [](Fixture& f, const std::string& v) {
    auto t = f.store.tasks().enqueue(NewTask(v));
    return same(f.store.tasks().get(t.task.id)->type, v, "type");
  });
  add("enqueue dedupe_key", id_rule(), [](Fixture& f, const std::string& v) {
    NewTask n("dedupe");
    n.dedupe_key = v;
    auto t = f.store.tasks().enqueue(n);
    return same(f.store.tasks().get(t.task.id)->dedupe_key.value_or(""), v, "dedupe key");
  });
  add("claim worker", id_rule(none), [](Fixture& f, const std::string& v) {
    ClaimOptions o;
    o.types = {"nothing-of-this-type"};
    return found(!f.store.tasks().claim(v, o).empty());
  });
  add(
      "fail error", text_rule(),
      [](Fixture& f, const std::string& v) {
        const std::string type = f.fresh("failing");
        f.store.tasks().enqueue(NewTask(type));
        ClaimOptions o;
        o.types = {type};
        auto t = f.store.tasks().claim("w", o).at(0);
        f.snapshot();
        RetryPolicy p;
        p.retry = false;
        const std::string got = f.store.tasks().fail(t, v, p).last_error.value_or("");
        if (v.size() <= TaskLimits::max_error_bytes) return same(got, v, "error");
        // Documented: cut to at most 8 KiB, ending in "...".
        const bool cut = got.size() <= TaskLimits::max_error_bytes && got.size() > 3 &&
                         got.compare(got.size() - 3, 3, "...") == 0 &&
                         v.compare(0, got.size() - 3, got, 0, got.size() - 3) == 0;
        return cut ? ok : std::string("mismatch: the error was not cut as documented");
      },
      true);
  add("schedule name", id_rule(), [](Fixture& f, const std::string& v) {
    auto s = f.store.tasks().schedule(v, NewTask("periodic"), std::chrono::minutes(5));
    return same(s.name, v, "schedule name");
  });
  add("list type filter", id_rule(none), [](Fixture& f, const std::string& v) {
    TaskFilter filter;
    filter.type = v;
    return found(!f.store.tasks().list(filter).empty());
  });
  // ---- templates
  add("add template name", id_rule(), [](Fixture& f, const std::string& v) {
    NewOperationTemplate t;
    t.kind = "expense";
    t.name = v;
    t.sample_input = "s";
    auto got = f.store.templates().add(t);
    return same(f.store.templates().get(got.id)->name, v, "name");
  });
  add(
      "add template sample_input", bounded_rule(),
      [](Fixture& f, const std::string& v) {
        NewOperationTemplate t;
        t.kind = "expense";
        t.name = f.fresh("template");
        t.sample_input = v;
        auto got = f.store.templates().add(t);
        return same(f.store.templates().get(got.id)->sample_input, v, "sample");
      },
      true);
  add("list templates kind", id_rule(none),
      [](Fixture& f, const std::string& v) { return found(!f.store.templates().list(v).empty()); });
  // ---- dialogs and reviews
  add("advance_cursor message id", id_rule(), [](Fixture& f, const std::string& v) {
    auto id = new_conversation(f);
    f.store.dialogs().configure(id);
    f.snapshot();
    f.store.dialogs().advance_cursor(id, std::nullopt, v, parse_timestamp("2030-01-01T00:00:00Z"));
    return same(f.store.dialogs().get(id)->last_message_id.value_or(""), v, "cursor");
  });
  add(
      "suggest text", bounded_rule(true),
      [](Fixture& f, const std::string& v) {
        auto id = new_conversation(f);
        f.store.dialogs().configure(id);
        f.snapshot();
        f.snapshot();
        NewSuggestion s;
        s.answers_message_id = "m1";
        s.answers_message_at = parse_timestamp("2030-01-01T00:00:00Z");
        s.text = v;
        auto got = f.store.reviews().suggest(id, s);
        return same(f.store.reviews().get(got.id)->suggested_text, v, "suggestion");
      },
      true);
  add("suggest answers_message_id", id_rule(), [](Fixture& f, const std::string& v) {
    auto id = new_conversation(f);
    f.store.dialogs().configure(id);
    f.snapshot();
    NewSuggestion s;
    s.answers_message_id = v;
    s.answers_message_at = parse_timestamp("2030-01-01T00:00:00Z");
    s.text = "reply";
    auto got = f.store.reviews().suggest(id, s);
    return same(f.store.reviews().get(got.id)->answers_message_id, v, "answered id");
  });
  add("reject reason", bounded_rule(), [](Fixture& f, const std::string& v) {
    auto id = new_conversation(f);
    f.store.dialogs().configure(id);
    f.snapshot();
    NewSuggestion s;
    s.answers_message_id = "m1";
    s.answers_message_at = parse_timestamp("2030-01-01T00:00:00Z");
    s.text = "reply";
    auto got = f.store.reviews().suggest(id, s);
    f.snapshot();
    return same(f.store.reviews().reject(got.id, v).reason.value_or(""), v, "reason");
  });
  add("claim_to_send sender", id_rule(none), [](Fixture& f, const std::string& v) {
    return found(!f.store.reviews().claim_to_send(v, 1, std::chrono::seconds(30)).empty());
  });
  // ---- credentials: the secret is 1 byte .. 64 KiB of any bytes, the name an id
  add(
      "credential secret",
      [](const TextValue& v) {
        return v.kind == TextKind::empty || v.kind == TextKind::big ? invalid : ok;
      },
      [](Fixture& f, const std::string& v) {
        const std::string name = f.fresh("cred");
        f.store.credentials().put(f.user, name, v, *f.key);
        return same(f.store.credentials().get(f.user, name, *f.key)->secret, v, "secret");
      },
      true);
  add("credential name", id_rule(), [](Fixture& f, const std::string& v) {
    f.store.credentials().put(f.user, v, "s", *f.key);
    return same(f.store.credentials().info(f.user, v)->name, v, "name");
  });
  add("credential get name", id_rule(none), [](Fixture& f, const std::string& v) {
    return found(f.store.credentials().get(f.user, v, *f.key).has_value());
  });
  // ---- web sessions: a token that is not one is never an error
  add("validate token", always(none), [](Fixture& f, const std::string& v) {
    return found(f.store.web_sessions().validate(v).has_value());
  });
  add("refresh token", always(not_found), [](Fixture& f, const std::string& v) {
    f.store.web_sessions().refresh(v);
    return ok;
  });
  // ---- retention
  add("hold reason", bounded_rule(true), [](Fixture& f, const std::string& v) {
    auto id = new_conversation(f);
    return same(f.store.retention().hold(id, v).reason, v, "reason");
  });
  add("forget_user channel", key_rule(not_found), [](Fixture& f, const std::string& v) {
    f.store.retention().forget_user(v, "nobody");
    return ok;
  });
  return ops;
}

std::vector<Case> text_cases(Fixture& f) {
  std::vector<Case> cases;
  const bool long_run = faults::long_mode();
  // Lookups first: a later write stores the same values (a lookup of "%"
  // after a conversation keyed "%" was started finds it).
  auto ops = text_ops();
  std::stable_partition(ops.begin(), ops.end(), [](const TextOp& op) {
    const std::string e = op.expect(TextValue{"", "x", TextKind::injection, true});
    return e == none || e == not_found;
  });
  for (const auto& op : ops) {
    for (const auto& v : text_values(true)) {
      if (v.kind == TextKind::big && !op.big_in_short && !long_run) continue;
      // The short mode leaves out values refused by the same check as others.
      if (!long_run && (v.name == "overlong slash" || v.name == "past U+10FFFF" ||
                        v.name == "lone continuation" || v.name == "only NUL")) {
        continue;
      }
      // The 10 MB value is a static: point at it instead of copying it.
      const bool big = v.kind == TextKind::big;
      cases.push_back({op.name, v.name, op.expect(v),
                       [&f, call = op.call, text = big ? std::string() : v.value, big] {
                         return call(f, big ? big_text() : text);
                       }});
    }
  }
  return cases;
}

}  // namespace

TEST_CASE("bad input: text fields on both backends") { on_both_backends(text_cases); }
