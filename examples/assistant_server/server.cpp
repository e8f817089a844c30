// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#include "server.hpp"

#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <iostream>
#include <map>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "api.hpp"
#include "ui.hpp"

namespace assistant_server {

namespace cs = convstore;
using convstore::ErrorCode;

namespace {

std::string dump(const Json& j) { return j.dump(-1, ' ', false, Json::error_handler_t::replace); }

void send_json(httplib::Response& res, int status, const Json& body) {
  res.status = status;
  res.set_content(dump(body), "application/json");
}

void send_error(httplib::Response& res, int status, std::string_view category,
                std::string_view message) {
  send_json(res, status, error_body(category, message));
}

std::optional<std::string> param(const httplib::Request& req, const char* name) {
  if (!req.has_param(name)) return std::nullopt;
  return req.get_param_value(name);
}

std::string required_param(const httplib::Request& req, const char* name) {
  auto v = param(req, name);
  if (!v || v->empty()) {
    throw cs::Error(ErrorCode::invalid_argument,
                    "query parameter '" + std::string(name) + "' is required");
  }
  return *v;
}

std::size_t limit_param(const httplib::Request& req, std::size_t fallback = 50) {
  auto v = param(req, "limit");
  if (!v) return fallback;
  return static_cast<std::size_t>(parse_integer("limit", *v, 1, 1000));
}

std::int64_t id_param(const httplib::Request& req, const char* what) {
  return parse_integer(what, req.matches[1].str(), 1, INT64_MAX);
}

std::optional<std::uint64_t> declared_length(const httplib::Request& req) {
  if (!req.has_header("Content-Length")) return std::nullopt;
  const std::string v = req.get_header_value("Content-Length");
  std::uint64_t n = 0;
  auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
  if (ec != std::errc() || end != v.data() + v.size()) return std::nullopt;
  return n;
}

[[noreturn]] void not_found(const std::string& what) {
  throw cs::Error(ErrorCode::not_found, what + " not found");
}

}  // namespace

class AssistantServer::Impl {
 public:
  Impl(cs::Store& store, cs::SessionCache* cache, std::shared_ptr<Responder> responder, Clock clock,
       ServerOptions options, cs::SessionCache* limiter)
      : store_(store),
        cache_(cache),
        limiter_(limiter),
        responder_(std::move(responder)),
        clock_(std::move(clock)),
        options_(std::move(options)) {
    if (!responder_) throw std::invalid_argument("assistant_server: no responder");
    if (!clock_) clock_ = [] { return cs::now(); };
    options_.threads = std::clamp<std::size_t>(options_.threads, 1, 1024);
    options_.context_messages = std::clamp<std::size_t>(options_.context_messages, 1, 1000);
    const std::chrono::milliseconds day = std::chrono::hours(24);
    options_.delivery_interval =
        std::clamp(options_.delivery_interval, std::chrono::milliseconds(1), day);
    options_.delivery_lease =
        std::clamp(options_.delivery_lease, std::chrono::milliseconds(1), day);
    const std::size_t threads = options_.threads;
    http_.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
    // Headers and body go out in separate writes: without TCP_NODELAY,
    // Nagle's algorithm and the peer's delayed ACK add ~40 ms to a response.
    http_.set_tcp_nodelay(true);
    http_.set_keep_alive_max_count(1000);
    // An idle keep-alive connection holds a worker thread, and stop() waits
    // for it: keep them short.
    http_.set_keep_alive_timeout(1);
    http_.set_payload_max_length(options_.max_body);
    install_guards();
    install_routes();
  }

  int bind(const std::string& host, int port) {
    int bound = -1;
    if (port == 0) {
      bound = http_.bind_to_any_port(host);
    } else if (http_.bind_to_port(host, port)) {
      bound = port;
    }
    if (bound <= 0) {
      throw std::runtime_error("cannot listen on " + host + ":" + std::to_string(port));
    }
    return bound;
  }
  // Serves; meanwhile a thread delivers approved replies: at once, then
  // every delivery_interval until stop().
  bool run() {
    std::thread deliverer([this] { delivery_loop(); });
    const bool ok = http_.listen_after_bind();
    stop_delivery();
    deliverer.join();
    return ok;
  }
  void stop() {
    stop_delivery();
    http_.stop();
  }

 private:
  using Handler =
      std::function<void(const httplib::Request&, httplib::Response&, const std::string& body)>;

  // ---- plumbing ---------------------------------------------------------------

  // Runs a handler, turning what it throws into the JSON error response.
  void guarded(httplib::Response& res, const std::function<void()>& body) {
    try {
      body();
    } catch (const HttpError& e) {
      send_error(res, e.status(), e.category(), e.what());
    } catch (const cs::CalendarConflict& e) {
      Json b = error_body("conflict", e.what());
      Json items = Json::array();
      for (const auto& ev : e.conflicts()) items.push_back(event_json(ev));
      b["error"]["conflicts"] = std::move(items);
      send_json(res, 409, b);
    } catch (const cs::Error& e) {
      const int status = http_status(e.code());
      if (status == 500) {
        std::cerr << "assistant_server: internal error: " << e.what() << "\n";
        send_error(res, 500, cs::to_string(e.code()), "internal error");
      } else {
        send_error(res, status, cs::to_string(e.code()), e.what());
      }
    } catch (const std::exception& e) {
      std::cerr << "assistant_server: internal error: " << e.what() << "\n";
      send_error(res, 500, "internal", "internal error");
    }
  }

  void get(const std::string& pattern, Handler h) {
    http_.Get(pattern, [this, h](const httplib::Request& req, httplib::Response& res) {
      guarded(res, [&] { h(req, res, std::string()); });
    });
  }
  void del(const std::string& pattern, Handler h) {
    http_.Delete(pattern, [this, h](const httplib::Request& req, httplib::Response& res) {
      guarded(res, [&] { h(req, res, std::string()); });
    });
  }
  // POST and PATCH read their body themselves, so that a body without a
  // declared length (chunked) is cut off at the limit too.
  void post(const std::string& pattern, Handler h) { http_.Post(pattern, with_body(std::move(h))); }
  void patch(const std::string& pattern, Handler h) {
    http_.Patch(pattern, with_body(std::move(h)));
  }
  httplib::Server::HandlerWithContentReader with_body(Handler h) {
    return [this, h](const httplib::Request& req, httplib::Response& res,
                     const httplib::ContentReader& reader) {
      guarded(res, [&] {
        std::string body;
        bool over = false;
        bool ok = reader([&](const char* data, std::size_t n) {
          if (body.size() + n > options_.max_body) {
            over = true;
            return false;
          }
          body.append(data, n);
          return true;
        });
        if (over || !ok) {
          // The rest of the body is still on the connection: close it.
          res.set_header("Connection", "close");
          if (over) throw too_large();
          throw HttpError(400, "invalid_argument", "the request body could not be read");
        }
        h(req, res, body);
      });
    };
  }

  HttpError too_large() const {
    return HttpError(413, "invalid_argument",
                     "the request body is larger than the limit of " +
                         std::to_string(options_.max_body) + " bytes");
  }

  void install_guards() {
    // A declared length over the limit is refused before the body is read.
    http_.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
      requests_.fetch_add(1, std::memory_order_relaxed);
      auto len = declared_length(req);
      if (len && *len > options_.max_body) {
        send_error(res, 413, "invalid_argument", too_large().what());
        res.set_header("Connection", "close");
        return httplib::Server::HandlerResponse::Handled;
      }
      return httplib::Server::HandlerResponse::Unhandled;
    });
    // "Expect: 100-continue" (curl, for large bodies): refuse before the
    // client sends it.
    http_.set_expect_100_continue_handler(
        [this](const httplib::Request& req, httplib::Response& res) {
          auto len = declared_length(req);
          if (len && *len > options_.max_body) {
            send_error(res, 413, "invalid_argument", too_large().what());
            return 413;
          }
          return 100;
        });
    // Responses httplib makes itself (no route, unreadable request) get a
    // JSON body too; counts the errors.
    httplib::Server::HandlerWithResponse on_error = [this](const httplib::Request& req,
                                                           httplib::Response& res) {
      if (res.status >= 500) {
        server_errors_.fetch_add(1, std::memory_order_relaxed);
      } else {
        client_errors_.fetch_add(1, std::memory_order_relaxed);
      }
      if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
      if (res.status == 404) {
        send_error(res, 404, "not_found", "no route for " + req.method + " " + req.path);
      } else if (res.status == 413) {
        send_error(res, 413, "invalid_argument", too_large().what());
      } else if (res.status < 500) {
        send_error(res, res.status, "invalid_argument", "bad request");
      } else {
        send_error(res, res.status, "internal", "internal error");
      }
      return httplib::Server::HandlerResponse::Handled;
    };
    http_.set_error_handler(std::move(on_error));
    http_.set_exception_handler(
        [](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
          try {
            if (ep) std::rethrow_exception(ep);
          } catch (const std::exception& e) {
            std::cerr << "assistant_server: internal error: " << e.what() << "\n";
          } catch (...) {
            std::cerr << "assistant_server: internal error\n";
          }
          send_error(res, 500, "internal", "internal error");
        });
    if (options_.access_log) {
      http_.set_logger([](const httplib::Request& req, const httplib::Response& res) {
        std::cerr << req.method << " " << req.path << " " << res.status << "\n";
      });
    }
  }

  // ---- routes -------------------------------------------------------------------

  void install_routes() {
    get("/", [](const httplib::Request&, httplib::Response& res, const std::string&) {
      const auto page = ui_page();
      res.set_content(page.data(), page.size(), "text/html; charset=utf-8");
    });
    get("/health", [this](auto&, auto& res, auto&) { health(res); });
    get("/api/v1/stats", [this](auto&, auto& res, auto&) { stats(res); });

    post("/api/v1/agents", [this](auto&, auto& res, auto& body) { create_agent(res, body); });
    get("/api/v1/agents", [this](auto& req, auto& res, auto&) { list_agents(req, res); });
    get(R"(/api/v1/agents/([^/]+))", [this](auto& req, auto& res, auto&) { get_agent(req, res); });
    patch(R"(/api/v1/agents/([^/]+))",
          [this](auto& req, auto& res, auto& body) { update_agent(req, res, body); });
    del(R"(/api/v1/agents/([^/]+))",
        [this](auto& req, auto& res, auto&) { delete_agent(req, res); });

    post("/api/v1/conversations",
         [this](auto&, auto& res, auto& body) { start_conversation(res, body); });
    get("/api/v1/conversations",
        [this](auto& req, auto& res, auto&) { list_conversations(req, res); });
    get(R"(/api/v1/conversations/(\d+))",
        [this](auto& req, auto& res, auto&) { get_conversation(req, res); });
    post(R"(/api/v1/conversations/(\d+)/messages)",
         [this](auto& req, auto& res, auto& body) { send_message(req, res, body); });

    post("/api/v1/calendar/events",
         [this](auto&, auto& res, auto& body) { create_event(res, body); });
    get("/api/v1/calendar/events", [this](auto& req, auto& res, auto&) { list_events(req, res); });
    get("/api/v1/calendar/conflicts",
        [this](auto& req, auto& res, auto&) { list_conflicts(req, res); });

    get("/api/v1/reviews/pending", [this](auto& req, auto& res, auto&) { pending(req, res); });
    get(R"(/api/v1/reviews/(\d+))", [this](auto& req, auto& res, auto&) { get_review(req, res); });
    post(R"(/api/v1/reviews/(\d+)/approve)",
         [this](auto& req, auto& res, auto& body) { approve(req, res, body); });
    post(R"(/api/v1/reviews/(\d+)/reject)",
         [this](auto& req, auto& res, auto& body) { reject(req, res, body); });
  }

  // ---- health and stats ---------------------------------------------------------

  Json cache_health() const {
    if (cache_ == nullptr) return Json{{"ok", true}, {"backend", "none"}};
    const auto h = cache_->health();
    Json j{{"ok", h.ok}, {"backend", h.backend}, {"round_trip_us", h.round_trip.count()}};
    if (!h.ok) j["error"] = h.error;
    return j;
  }

  void health(httplib::Response& res) {
    const auto h = store_.health();
    Json j{{"ok", h.ok},
           {"backend", h.backend},
           {"schema_version", h.schema_version},
           {"round_trip_us", h.round_trip.count()},
           {"cache", cache_health()}};
    if (!h.ok) j["error"] = h.error;
    send_json(res, h.ok ? 200 : 503, j);
  }

  void stats(httplib::Response& res) {
    const auto s = store_.stats();
    Json ops = Json::array();
    for (const auto& o : store_.operation_stats()) {
      ops.push_back(cs::to_json(o));
    }
    Json j{{"backend", store_.backend()},
           {"stats", cs::to_json(s)},
           {"operations", std::move(ops)},
           {"http",
            {{"requests", requests_.load(std::memory_order_relaxed)},
             {"client_errors", client_errors_.load(std::memory_order_relaxed)},
             {"server_errors", server_errors_.load(std::memory_order_relaxed)}}}};
    if (cache_ != nullptr) {
      const auto c = cache_->stats();
      j["cache"] =
          Json{{"backend", cache_->backend()}, {"hits", c.hits},     {"misses", c.misses},
               {"writes", c.writes},           {"errors", c.errors}, {"fallbacks", c.fallbacks}};
    }
    send_json(res, 200, j);
  }

  // ---- agents (seed 004) -------------------------------------------------------------

  void create_agent(httplib::Response& res, const std::string& body) {
    const auto n = new_agent_from_json(parse_body(body));
    const auto agent = store_.agents().create_agent(n);
    send_json(res, 201, cs::to_json(agent));
  }

  void list_agents(const httplib::Request& req, httplib::Response& res) {
    cs::AgentFilter f;
    if (auto v = param(req, "include_inactive"))
      f.include_inactive = parse_flag("include_inactive", *v);
    f.type = param(req, "type");
    f.limit = limit_param(req);
    f.cursor = param(req, "cursor").value_or("");
    auto page = store_.agents().list_agents(f);
    Json items = Json::array();
    for (const auto& a : page.items) items.push_back(cs::to_json(a));
    send_json(res, 200, page_json(std::move(items), page.next_cursor));
  }

  std::shared_ptr<const cs::Agent> find_agent(const std::string& id) {
    auto a = store_.agents().get_agent(id);
    if (!a) not_found("agent '" + id + "'");
    return a;
  }

  void get_agent(const httplib::Request& req, httplib::Response& res) {
    send_json(res, 200, cs::to_json(*find_agent(req.matches[1].str())));
  }

  void update_agent(const httplib::Request& req, httplib::Response& res, const std::string& body) {
    const std::string id = req.matches[1].str();
    const Json j = parse_body(body);
    const auto current = find_agent(id);
    const auto updated =
        store_.agents().update_agent(id, agent_update_from_json(j, current->config));
    send_json(res, 200, cs::to_json(updated));
  }

  // Soft delete (the agent stays, inactive); ?hard=true deletes it, refused
  // (409) while conversations name it unless ?force=true.
  void delete_agent(const httplib::Request& req, httplib::Response& res) {
    const std::string id = req.matches[1].str();
    bool hard = false, force = false;
    if (auto v = param(req, "hard")) hard = parse_flag("hard", *v);
    if (auto v = param(req, "force")) force = parse_flag("force", *v);
    const bool found =
        hard ? store_.agents().delete_agent(id, force) : store_.agents().deactivate_agent(id);
    if (!found) not_found("agent '" + id + "'");
    res.status = 204;
  }

  // ---- conversations and messages -----------------------------------------------------

  cs::Conversation find_conversation(cs::ConversationId id) {
    auto c = store_.conversations().get(id);
    if (!c) not_found("conversation " + std::to_string(id));
    return *c;
  }

  void start_conversation(httplib::Response& res, const std::string& body) {
    auto r = conversation_request_from_json(parse_body(body));
    if (r.agent_id) {
      const auto agent = find_agent(*r.agent_id);
      if (!agent->active) {
        throw cs::Error(ErrorCode::failed_precondition,
                        "agent '" + *r.agent_id + "' is deactivated");
      }
    }
    auto& conversations = store_.conversations();
    const cs::Conversation c = store_.transaction([&] {
      const cs::User user = conversations.upsert_user(r.user);
      cs::NewConversation n;
      n.user_id = user.id;
      n.channel = user.channel;
      n.agent = r.agent_id;
      n.title = r.title;
      n.metadata = r.metadata;
      n.metadata["review"] = r.review;
      cs::Conversation started = conversations.start(n);
      if (r.review) {
        cs::DialogSettings settings;
        settings.auto_send = false;  // replies wait for a person's approval
        store_.dialogs().configure(started.id, settings);
      }
      return started;
    });
    if (r.agent_id) store_.agents().record_use(*r.agent_id);  // usage statistics (seed 004)
    send_json(res, 201, conversation_json(c));
  }

  void list_conversations(const httplib::Request& req, httplib::Response& res) {
    cs::ConversationFilter f;
    if (auto v = param(req, "user_id")) f.user_id = parse_integer("user_id", *v, 1, INT64_MAX);
    if (auto v = param(req, "status")) f.status = cs::parse_conversation_status(*v);
    f.agent = param(req, "agent_id");
    f.channel = param(req, "channel");
    f.limit = limit_param(req);
    f.cursor = param(req, "cursor").value_or("");
    auto page = store_.conversations().list(f);
    Json items = Json::array();
    for (const auto& c : page.items) items.push_back(conversation_json(c));
    send_json(res, 200, page_json(std::move(items), page.next_cursor));
  }

  void get_conversation(const httplib::Request& req, httplib::Response& res) {
    const auto id = id_param(req, "conversation id");
    std::size_t n = 50;
    if (auto v = param(req, "messages")) {
      n = static_cast<std::size_t>(parse_integer("messages", *v, 0, 1000));
    }
    const auto c = find_conversation(id);
    Json messages = Json::array();
    if (n > 0) {
      for (const auto& m : store_.conversations().recent(id, n)) messages.push_back(cs::to_json(m));
    }
    Json suggestion = nullptr;
    if (is_review(c)) {
      if (auto s = store_.reviews().current(id)) suggestion = cs::to_json(*s);
    }
    send_json(res, 200,
              Json{{"conversation", conversation_json(c)},
                   {"messages", std::move(messages)},
                   {"suggestion", std::move(suggestion)}});
  }

  // The recent messages a responder sees: from the cache when there is one
  // (kept right by SessionCache::attach), else from the store.
  std::vector<cs::Message> context(cs::ConversationId id) {
    if (cache_ != nullptr) return cache_->context(store_, id, options_.context_messages);
    return store_.conversations().recent(id, options_.context_messages);
  }

  std::shared_ptr<const cs::Agent> agent_of(const cs::Conversation& c) {
    if (!c.agent) return nullptr;
    return store_.agents().get_agent(*c.agent);  // null when it was deleted since
  }

  static cs::NewMessage assistant_message(const cs::Conversation& c,
                                          const std::shared_ptr<const cs::Agent>& agent) {
    cs::NewMessage m;
    m.role = cs::Role::assistant;
    m.agent = c.agent;
    if (agent) {
      auto model = agent->config.find("model");
      if (model != agent->config.end() && model->is_string()) m.model = model->get<std::string>();
    }
    return m;
  }

  std::string whole_reply(const Turn& turn) {
    std::string text;
    responder_->respond(turn, [&](std::string_view chunk) { text.append(chunk); });
    return text;
  }

  void send_message(const httplib::Request& req, httplib::Response& res, const std::string& body) {
    const auto id = id_param(req, "conversation id");
    Fields f(parse_body(body));
    const std::string content = f.required_string("content");
    f.finish();
    bool stream = false;
    if (auto v = param(req, "stream")) stream = parse_flag("stream", *v);

    auto& conversations = store_.conversations();
    const auto conv = find_conversation(id);
    if (conv.status != cs::ConversationStatus::active) {
      throw cs::Error(ErrorCode::failed_precondition,
                      "conversation " + std::to_string(id) + " is " +
                          std::string(cs::to_string(conv.status)) + ": it takes no new message");
    }
    check_rate(conv, res);
    cs::NewMessage said;
    said.role = cs::Role::user;
    said.content = content;
    const cs::Message user_message = conversations.append(id, said);

    if (stream) {
      start_stream(res, conv, user_message);
      return;
    }
    const auto agent = agent_of(conv);
    const auto history = context(id);
    const Turn turn{store_, conv, agent, history, clock_()};
    const std::string text = whole_reply(turn);
    Json out{{"message", cs::to_json(user_message)}, {"reply", nullptr}, {"suggestion", nullptr}};
    if (is_review(conv)) {
      out["suggestion"] = cs::to_json(suggest(conv, user_message, text));
    } else {
      cs::NewMessage reply = assistant_message(conv, agent);
      reply.content = text;
      out["reply"] = cs::to_json(conversations.append(id, reply));
    }
    send_json(res, 201, out);
  }

  // Counts the message against its user's limit; over it, 429 with
  // Retry-After. A limiter that fails lets messages through (the cache's
  // fail-open policy).
  void check_rate(const cs::Conversation& conv, httplib::Response& res) {
    if (limiter_ == nullptr || options_.messages_per_minute <= 0 || !conv.user_id) return;
    cs::RateLimit limit;
    limit.limit = options_.messages_per_minute;
    limit.window = std::chrono::minutes(1);
    const auto d = limiter_->hit("messages:user:" + std::to_string(*conv.user_id), limit);
    if (d.allowed) return;
    const std::int64_t seconds = std::max<std::int64_t>(1, (d.retry_after.count() + 999) / 1000);
    res.set_header("Retry-After", std::to_string(seconds));
    throw HttpError(429, "unavailable",
                    "user " + std::to_string(*conv.user_id) + " sent " +
                        std::to_string(options_.messages_per_minute) +
                        " messages in the last minute: retry in " + std::to_string(seconds) + " s");
  }

  cs::Suggestion suggest(const cs::Conversation& conv, const cs::Message& answered,
                         const std::string& text) {
    cs::NewSuggestion s;
    s.answers_message_id = std::to_string(answered.id);
    s.answers_message_at = answered.created_at;
    s.text = text;
    return store_.reviews().suggest(conv.id, s);
  }

  // Server-sent events: message (the user's), then start, delta per chunk
  // (appended to the stored message before it is sent) and done (the
  // complete message); error if the reply fails. A review-mode conversation
  // gets message, then suggestion. The reply is produced and stored in full
  // even if the client goes away.
  void start_stream(httplib::Response& res, const cs::Conversation& conv,
                    const cs::Message& user_message) {
    res.status = 200;
    res.set_header("Cache-Control", "no-cache");
    res.set_header("X-Accel-Buffering", "no");
    res.set_chunked_content_provider(
        "text/event-stream", [this, conv, user_message](std::size_t, httplib::DataSink& sink) {
          stream_reply(conv, user_message, sink);
          sink.done();
          return true;
        });
  }

  void stream_reply(const cs::Conversation& conv, const cs::Message& user_message,
                    httplib::DataSink& sink) {
    bool client_ok = true;
    auto send = [&](const char* event, const Json& data) {
      if (!client_ok) return;
      const std::string frame = std::string("event: ") + event + "\ndata: " + dump(data) + "\n\n";
      client_ok = sink.write(frame.data(), frame.size());
    };
    auto& conversations = store_.conversations();
    std::optional<cs::MessageId> started_id;
    // The reply failed after it started: the message is marked complete
    // with the error in its metadata (the text so far stays), so that the
    // conversation is not left with a message streaming forever; then the
    // error event is sent.
    auto fail = [&](std::string_view category, const std::string& message) {
      const Json error = error_body(category, message);
      if (started_id) {
        try {
          store_.transaction([&] {
            cs::MessageUpdate u;
            u.metadata_patch = Json{{"error", error["error"]}, {"interrupted", true}};
            conversations.update_message(*started_id, u);
            conversations.finish_message(*started_id);
          });
        } catch (const std::exception& e) {
          std::cerr << "assistant_server: could not record the failure of message " << *started_id
                    << ": " << e.what() << "\n";
        }
      }
      send("error", error);
    };
    try {
      send("message", cs::to_json(user_message));
      const auto agent = agent_of(conv);
      const auto history = context(conv.id);
      const Turn turn{store_, conv, agent, history, clock_()};
      if (is_review(conv)) {
        send("suggestion", cs::to_json(suggest(conv, user_message, whole_reply(turn))));
        return;
      }
      cs::NewMessage start = assistant_message(conv, agent);
      start.complete = false;
      const cs::Message started = conversations.append(conv.id, start);
      started_id = started.id;
      send("start", Json{{"id", started.id}});
      responder_->respond(turn, [&](std::string_view chunk) {
        if (chunk.empty()) return;
        conversations.append_content(started.id, chunk);
        send("delta", Json{{"text", std::string(chunk)}});
      });
      send("done", cs::to_json(conversations.finish_message(started.id)));
    } catch (const cs::Error& e) {
      const int status = http_status(e.code());
      if (status == 500) std::cerr << "assistant_server: internal error: " << e.what() << "\n";
      fail(cs::to_string(e.code()), status == 500 ? "internal error" : e.what());
    } catch (const std::exception& e) {
      std::cerr << "assistant_server: internal error: " << e.what() << "\n";
      fail("internal", "internal error");
    }
  }

  // ---- calendar (seed 001) ------------------------------------------------------------

  void create_event(httplib::Response& res, const std::string& body) {
    const auto r = event_request_from_json(parse_body(body));
    cs::BookingOptions options;
    options.refuse_conflicts = r.refuse_conflicts;
    send_json(res, 201, event_json(store_.calendar().create(r.event, options)));
  }

  static std::optional<cs::UserId> owner_param(const httplib::Request& req) {
    auto v = param(req, "owner_id");
    if (!v || v->empty()) return std::nullopt;
    return parse_integer("owner_id", *v, 1, INT64_MAX);
  }

  void list_events(const httplib::Request& req, httplib::Response& res) {
    const auto from = parse_time("from", required_param(req, "from"));
    const auto to = parse_time("to", required_param(req, "to"));
    auto page = store_.calendar().range(owner_param(req), from, to, limit_param(req, 100),
                                        param(req, "cursor").value_or(""));
    Json items = Json::array();
    for (const auto& e : page.items) items.push_back(event_json(e));
    send_json(res, 200, page_json(std::move(items), page.next_cursor));
  }

  void list_conflicts(const httplib::Request& req, httplib::Response& res) {
    const auto start = parse_time("start", required_param(req, "start"));
    const auto end = parse_time("end", required_param(req, "end"));
    Json items = Json::array();
    for (const auto& e : store_.calendar().conflicts(owner_param(req), start, end)) {
      items.push_back(event_json(e));
    }
    send_json(res, 200, Json{{"items", std::move(items)}});
  }

  // ---- review queue (seed 003) --------------------------------------------------------

  void pending(const httplib::Request& req, httplib::Response& res) {
    const auto user = parse_integer("user_id", required_param(req, "user_id"), 1, INT64_MAX);
    cs::PendingQuery q;
    q.limit = limit_param(req);
    q.cursor = param(req, "cursor").value_or("");
    auto page = store_.reviews().pending(user, q);
    Json items = Json::array();
    for (const auto& s : page.items) items.push_back(cs::to_json(s));
    send_json(res, 200, page_json(std::move(items), page.next_cursor));
  }

  cs::Suggestion find_suggestion(cs::SuggestionId id) {
    auto s = store_.reviews().get(id);
    if (!s) not_found("suggestion " + std::to_string(id));
    return *s;
  }

  void get_review(const httplib::Request& req, httplib::Response& res) {
    send_json(res, 200, cs::to_json(find_suggestion(id_param(req, "suggestion id"))));
  }

  // An empty body counts as {}.
  static Json optional_body(const std::string& body) {
    return body.empty() ? Json::object() : parse_body(body);
  }

  void approve(const httplib::Request& req, httplib::Response& res, const std::string& body) {
    const auto id = id_param(req, "suggestion id");
    Fields f(optional_body(body));
    const auto text = f.string("text");
    f.finish();
    // The passes of this process take turns: none claims the reply between
    // its approval and this request's pass.
    std::unique_lock<std::mutex> pass(delivery_pass_);
    store_.reviews().approve(id, text);
    const Delivery d = delivery_pass();
    pass.unlock();
    Json out = cs::to_json(find_suggestion(id));
    auto it = d.delivered.find(id);
    out["message"] = it == d.delivered.end() ? Json(nullptr) : cs::to_json(it->second);
    auto failure = d.failed.find(id);
    out["delivery_error"] = failure == d.failed.end() ? Json(nullptr) : failure->second;
    send_json(res, 200, out);
  }

  void reject(const httplib::Request& req, httplib::Response& res, const std::string& body) {
    const auto id = id_param(req, "suggestion id");
    Fields f(optional_body(body));
    const auto reason = f.string("reason");
    f.finish();
    send_json(res, 200, cs::to_json(store_.reviews().reject(id, reason)));
  }

  // ---- delivery of approved replies -------------------------------------------

  // What one deliver_approved() did: the messages delivered, and the
  // failures ({"category", "message", "retry"}), by suggestion.
  struct Delivery {
    std::map<cs::SuggestionId, cs::Message> delivered;
    std::map<cs::SuggestionId, Json> failed;
  };

  // This server is also the review queue's sender: it claims the approved
  // replies (those of other requests and processes included), sends each
  // through the ReplySender if there is one, then appends it to its
  // conversation as the assistant's message in one transaction with marking
  // it sent (the message's client key makes a second delivery of a
  // re-claimed reply a no-op). A retryable failure leaves the reply claimed
  // and approved: once the lease expires, a later pass (of any process)
  // claims it again. Any other failure marks it failed. A pass takes at most
  // kDeliveryBatches batches and stops between two replies when the server
  // stops.
  static constexpr std::size_t kDeliveryBatch = 50;
  static constexpr std::size_t kDeliveryBatches = 20;

  Delivery deliver_approved() {
    std::lock_guard<std::mutex> pass(delivery_pass_);
    return delivery_pass();
  }

  // deliver_approved() with delivery_pass_ held.
  Delivery delivery_pass() {
    Delivery out;
    auto& reviews = store_.reviews();
    for (std::size_t b = 0; b < kDeliveryBatches && !stopping_.load(); ++b) {
      auto claimed =
          reviews.claim_to_send(options_.sender, kDeliveryBatch, options_.delivery_lease);
      for (const auto& s : claimed) {
        // Stopping: the replies claimed and not tried are claimed again
        // when their lease expires.
        if (stopping_.load()) break;
        deliver(s, out);
      }
      if (claimed.size() < kDeliveryBatch) break;
    }
    return out;
  }

  void deliver(const cs::Suggestion& s, Delivery& out) {
    auto& reviews = store_.reviews();
    auto& conversations = store_.conversations();
    try {
      const auto conv = conversations.get(s.conversation_id);
      if (!conv) not_found("conversation " + std::to_string(s.conversation_id));
      if (options_.reply_sender) options_.reply_sender->send(*conv, s);
      cs::Message m = store_.transaction([&] {
        cs::NewMessage a;
        a.role = cs::Role::assistant;
        a.agent = conv->agent;
        a.content = s.text();
        a.client_key = "suggestion:" + std::to_string(s.id);
        a.metadata = Json{{"suggestion_id", s.id}};
        cs::Message stored = conversations.append(s.conversation_id, a);
        reviews.mark_sent(s.id, s.claim());
        return stored;
      });
      out.delivered.emplace(s.id, std::move(m));
      return;
    } catch (const cs::Error& e) {
      const bool retry = e.retryable();
      out.failed[s.id] =
          Json{{"category", cs::to_string(e.code())}, {"message", e.what()}, {"retry", retry}};
      std::cerr << "assistant_server: could not deliver suggestion " << s.id << ": " << e.what()
                << (retry ? " (retried later)" : "") << "\n";
      if (!retry) failed(s, e.what());
    } catch (const std::exception& e) {
      out.failed[s.id] =
          Json{{"category", "internal"}, {"message", "internal error"}, {"retry", false}};
      std::cerr << "assistant_server: could not deliver suggestion " << s.id << ": " << e.what()
                << "\n";
      failed(s, "internal error");
    }
  }

  void failed(const cs::Suggestion& s, std::string error) {
    // mark_failed takes 1..4,096 bytes of UTF-8: cut on a character boundary.
    if (error.size() > 4096) {
      std::size_t cut = 4096;
      while (cut > 0 && (static_cast<unsigned char>(error[cut]) & 0xC0) == 0x80) --cut;
      error.resize(cut);
    }
    if (error.empty()) error = "delivery failed";
    try {
      store_.reviews().mark_failed(s.id, s.claim(), error);
    } catch (const cs::Error&) {
      // Left claimed: the claim expires and another delivery retries.
    }
  }

  // The background delivery: a pass at once, then one every
  // delivery_interval, until stop_delivery().
  void delivery_loop() {
    std::unique_lock<std::mutex> lock(delivery_mutex_);
    while (!stopping_.load()) {
      lock.unlock();
      try {
        deliver_approved();
      } catch (const std::exception& e) {
        std::cerr << "assistant_server: delivery of approved replies failed: " << e.what() << "\n";
      }
      lock.lock();
      delivery_wake_.wait_for(lock, options_.delivery_interval,
                              [this] { return stopping_.load(); });
    }
  }

  void stop_delivery() {
    {
      std::lock_guard<std::mutex> lock(delivery_mutex_);
      stopping_.store(true);
    }
    delivery_wake_.notify_all();
  }

  cs::Store& store_;
  cs::SessionCache* cache_;
  cs::SessionCache* limiter_;
  std::shared_ptr<Responder> responder_;
  Clock clock_;
  ServerOptions options_;
  httplib::Server http_;
  std::atomic<std::uint64_t> requests_{0};
  std::atomic<std::uint64_t> client_errors_{0};
  std::atomic<std::uint64_t> server_errors_{0};
  std::mutex delivery_pass_;  // one delivery pass at a time in this process
  std::mutex delivery_mutex_;
  std::condition_variable delivery_wake_;
  std::atomic<bool> stopping_{false};
};

AssistantServer::AssistantServer(cs::Store& store, cs::SessionCache* cache,
                                 std::shared_ptr<Responder> responder, Clock clock,
                                 ServerOptions options, cs::SessionCache* limiter)
    : impl_(std::make_unique<Impl>(store, cache, std::move(responder), std::move(clock),
                                   std::move(options), limiter)) {}

AssistantServer::~AssistantServer() = default;

int AssistantServer::bind(const std::string& host, int port) { return impl_->bind(host, port); }
bool AssistantServer::run() { return impl_->run(); }
void AssistantServer::stop() { impl_->stop(); }

}  // namespace assistant_server
