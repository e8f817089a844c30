// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
//
// quickstart: a small seed-000 conversation. A user reports an expense, the
// agent asks for the missing field, the user answers by replying to the
// question, and the conversation completes with a spreadsheet row. Then the
// context an agent would load is printed.
//
//   quickstart [DATABASE_URL]      default: sqlite:quickstart.db
#include <convstore/convstore.hpp>
#include <iostream>

using namespace convstore;

int main(int argc, char** argv) {
  try {
    const char* url = argc > 1 ? argv[1] : "sqlite:quickstart.db";
    Store store = Store::open(url);
    ConversationStore& cs = store.conversations();

    User user = cs.upsert_user({"telegram", "5551234"});
    NewConversation start;
    start.user_id = user.id;
    start.channel = "telegram";
    start.chat_id = "5551234";
    start.kind = "expense";
    start.agent = "ExpenseAgent";
    Conversation conv = cs.start(start);

    // 1. The user writes; the agent extracts what it can.
    NewMessage said;
    said.content = "coffee 300";
    said.platform_message_id = "101";
    said.client_key = "101";  // a redelivered update is stored once
    cs.append(conv.id, said);
    cs.save_data(conv.id, DataKind::partial, {{"amount", 300}, {"item", "coffee"}});
    cs.save_data(conv.id, DataKind::missing_fields, Json::array({"account"}));

    // 2. The agent asks for the missing field; the bot sends it as message 102.
    cs.ask(conv.id, {"ExpenseAgent", "Which account: cash or card?", {"account"}, "102"});
    NewMessage asked;
    asked.role = Role::assistant;
    asked.content = "Which account: cash or card?";
    asked.agent = "ExpenseAgent";
    asked.platform_message_id = "102";
    cs.append(conv.id, asked);

    // 3. Later (maybe after a restart) the user replies to message 102: the
    //    reply finds its conversation, and the question is answered.
    auto hit = cs.find_by_platform_id("telegram", "5551234", "102");
    if (!hit) throw std::runtime_error("reply target not found");
    NewMessage reply;
    reply.content = "cash";
    reply.platform_message_id = "103";
    reply.reply_to_platform_id = "102";
    reply.client_key = "103";
    cs.append(hit->conversation.id, reply);
    for (const auto& q : cs.open_questions(hit->conversation.id)) cs.answer(q.id, "cash");
    Json complete = {{"amount", 300}, {"item", "coffee"}, {"account", "cash"}};
    cs.save_data(conv.id, DataKind::partial, complete);
    cs.save_data(conv.id, DataKind::missing_fields, Json::array());

    // 4. The row goes to the spreadsheet (row 7); the conversation completes.
    store.transaction([&] {
      cs.complete(conv.id, "7", complete);
      NewMessage done;
      done.role = Role::assistant;
      done.content = "Saved: coffee 300 (cash), row 7";
      done.platform_message_id = "104";
      cs.append(conv.id, done);
    });

    ConversationContext ctx = cs.context(conv.id, 10);
    std::cout << "conversation " << ctx.conversation.id << " ("
              << to_string(ctx.conversation.status) << ", sheet row "
              << ctx.conversation.external_ref.value_or("-") << ")\n";
    for (const auto& m : ctx.messages) {
      std::cout << "  [" << m.platform_message_id.value_or("-") << "] " << to_string(m.role) << ": "
                << m.content << "\n";
    }
    std::cout << "partial data: " << ctx.partial_data.dump() << "\n"
              << "missing fields: " << ctx.missing_fields.dump() << "\n"
              << "last bot message: " << ctx.last_bot_message_id.value_or("-") << "\n\n"
              << "as JSON:\n"
              << ctx.to_json().dump(2) << "\n";
    return 0;
  } catch (const Error& e) {
    std::cerr << "quickstart: " << to_string(e.code()) << ": " << e.what() << "\n";
    return 1;
  }
}
