#include <convstore/convstore.hpp>
#include <iostream>

int main() {
  auto store = convstore::Store::open("sqlite:quickstart-readme.db");
  auto& conversations = store.conversations();
  auto user = conversations.upsert_user({"telegram", "1001"});
  convstore::NewConversation start;
  start.user_id = user.id;
  auto conversation = conversations.start(start);
  convstore::NewMessage hello;
  hello.content = "coffee 300";
  conversations.append(conversation.id, hello);
  for (const auto& m : conversations.recent(conversation.id, 10)) {
    std::cout << convstore::to_string(m.role) << ": " << m.content << "\n";
  }
}
