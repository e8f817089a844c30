// Seed 003's data lifecycle on convstore: registration -> dialog selection ->
// processing cycle -> review -> send. Telegram and the model are stand-ins.
#include <convstore/convstore.hpp>
#include <iostream>
#include <vector>

using namespace convstore;
using namespace std::chrono_literals;

struct TelegramMessage {
  std::string id;
  Timestamp at;
  std::string text;
};
// Stand-ins for the Telegram API and the model.
std::vector<TelegramMessage> fetch_recent_messages(const std::string& /*chat_id*/) {
  return {{"41", now() - 3min, "Are we still on for Friday?"},
          {"42", now() - 1min, "I can bring the slides."}};
}
std::string generate_reply(const User& user, const std::vector<TelegramMessage>& messages) {
  return "Yes, Friday works! (" + *user.preferred_model + ", " + std::to_string(messages.size()) +
         " new messages)";
}

int main(int argc, char** argv) {
  Store store = Store::open(argc > 1 ? argv[1] : "sqlite:dialog_processor.db");
  const SecretKey key = SecretKey::generate();  // really: SecretKey::from_base64(env var)

  // 1. Registration: the user with their model choice, their Telegram
  //    credentials (encrypted), and a web session.
  UserUpsert registration("telegram", "1001");
  registration.preferred_model = "gpt-4o-mini";
  registration.system_prompt = "Reply briefly and warmly.";
  User user = store.conversations().upsert_user(registration);
  store.credentials().put(user.id, "telegram", "telegram-session-string", key);
  IssuedSession web = store.web_sessions().issue(user.id);

  // 2. Dialog selection: a group chat to process; replies wait for approval.
  NewConversation chat;
  chat.user_id = user.id;
  chat.channel = "telegram";
  chat.chat_id = "-1002003004";
  Conversation dialog = store.conversations().start(chat);
  store.dialogs().configure(dialog.id, {DialogType::group, true, false});
  store.tasks().schedule("process-dialogs", NewTask("system"), 30min);

  // 3. Processing cycle: a worker runs the periodic task; for each due
  //    dialog with new messages it stores only the suggested reply, and
  //    advances the cursor in the same transaction (another worker that
  //    processed the same messages loses the compare-and-set).
  store.tasks().run_periodic();
  for (const Task& task : store.tasks().claim("worker-1")) {
    for (const Dialog& d : store.dialogs().due(30min)) {
      auto signed_in = store.credentials().get(*d.user_id, "telegram", key);  // Telegram login
      auto messages = fetch_recent_messages(*d.chat_id);
      const TelegramMessage& newest = messages.back();
      if (!signed_in || d.last_message_id == newest.id) {
        store.dialogs().mark_checked(d.conversation_id);
        continue;
      }
      store.transaction([&] {
        if (store.dialogs().advance_cursor(d.conversation_id, d.last_message_id, newest.id,
                                           newest.at)) {
          store.reviews().suggest(d.conversation_id,
                                  {newest.id, newest.at, generate_reply(user, messages)});
        }
      });
    }
    store.tasks().complete(task);
  }

  // 4. Review: the signed-in user edits and approves the pending reply.
  if (auto session = store.web_sessions().validate(web.access_token)) {
    for (const Suggestion& s : store.reviews().pending(session->user_id).items) {
      std::cout << "suggested: " << s.suggested_text << "\n";
      store.reviews().approve(s.id, s.suggested_text + " See you then.");
    }
  }

  // 5. Send: a sender claims approved replies (no other sender gets them),
  //    sends them, and records the outcome.
  for (const Suggestion& s : store.reviews().claim_to_send("sender-1", 10, 30s)) {
    auto chat_id = store.conversations().get(s.conversation_id)->chat_id;
    std::cout << "sent to " << *chat_id << ": " << s.text() << "\n";  // Telegram sendMessage
    store.reviews().mark_sent(s.id, s.claim());
  }
  for (const Suggestion& s : store.reviews().history(dialog.id)) {
    std::cout << "status: " << to_string(s.status) << "\n";
  }
}
