// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
//
// The page cursors a caller hands back: every listing that takes one, with
// arbitrary bytes as the cursor. The first byte chooses the listing
// (conversations, search, agents, calendar range, pending suggestions) and
// the page size; the rest is the cursor. The store (in-memory SQLite) is
// opened and filled once per process in LLVMFuzzerInitialize: the listings
// only read, so every input sees the same data. A cursor is either refused
// with Error(invalid_argument) or gives a page, whose next cursor is
// followed to the end (bounded); anything else is a finding.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "fuzz_support.hpp"

using namespace convstore;

namespace {

std::unique_ptr<Store> store;
UserId user = 0;

Timestamp at(const char* iso) { return parse_timestamp(iso); }

void fill(Store& s) {
  auto& cs = s.conversations();
  user = cs.upsert_user(UserUpsert("telegram", "42")).id;
  for (int i = 0; i < 5; ++i) {
    NewConversation nc;
    nc.user_id = user;
    nc.channel = "telegram";
    Conversation c = cs.start(nc);
    NewMessage m;
    m.content = "hello world number " + std::to_string(i);
    cs.append(c.id, m);
    DialogSettings settings;
    s.dialogs().configure(c.id, settings);
    NewSuggestion sg;
    sg.answers_message_id = "p" + std::to_string(i);
    sg.answers_message_at = at("2030-01-01T00:00:00Z");
    sg.text = "a reply";
    s.reviews().suggest(c.id, sg);

    NewAgent a;
    a.id = "agent-" + std::to_string(i);
    a.name = "Agent";
    s.agents().create_agent(a);

    NewEvent e;
    e.owner = user;
    e.title = "Meeting";
    e.start = at("2030-01-07T09:00:00Z") + std::chrono::hours(i);
    e.end = e.start + std::chrono::minutes(30);
    if (i == 0) e.rrule = "FREQ=DAILY;COUNT=5";
    s.calendar().create(e);
  }
}

// One listing, from `cursor` on, following next_cursor for a few pages.
void list(unsigned which, std::size_t limit, std::string cursor) {
  for (int pages = 0; pages < 8; ++pages) {
    std::string next;
    switch (which) {
      case 0: {
        ConversationFilter f;
        f.limit = limit;
        f.cursor = cursor;
        next = store->conversations().list(f).next_cursor;
        break;
      }
      case 1: {
        SearchQuery q;
        q.text = "hello";
        q.limit = limit;
        q.cursor = cursor;
        next = store->conversations().search(q).next_cursor;
        break;
      }
      case 2: {
        AgentFilter f;
        f.limit = limit;
        f.cursor = cursor;
        next = store->agents().list_agents(f).next_cursor;
        break;
      }
      case 3:
        next =
            store->calendar()
                .range(user, at("2030-01-01T00:00:00Z"), at("2030-02-01T00:00:00Z"), limit, cursor)
                .next_cursor;
        break;
      default: {
        PendingQuery q;
        q.limit = limit;
        q.cursor = cursor;
        next = store->reviews().pending(user, q).next_cursor;
        break;
      }
    }
    if (next.empty()) return;
    if (next == cursor) fuzz::fail("a page cursor does not move", cursor);
    cursor = std::move(next);
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  store = std::make_unique<Store>(Store::open("sqlite::memory:", fuzz::store_options()));
  fill(*store);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const unsigned which = (data[0] & 0x0f) % 5;
  const std::size_t limit = (data[0] >> 4) % 3 + 1;
  std::string cursor(reinterpret_cast<const char*>(data + 1), size - 1);
  try {
    list(which, limit, cursor);
  } catch (const Error& e) {
    fuzz::expect_codes(e, {ErrorCode::invalid_argument});
  }
  return 0;
}
