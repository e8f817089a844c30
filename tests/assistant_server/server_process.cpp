// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#include "server_process.hpp"

#include "../support.hpp"

#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <thread>

namespace testing {

namespace {

using Clock = std::chrono::steady_clock;

// Reads one line from `fd` before `deadline`; false on EOF or timeout.
bool read_line(int fd, std::string& line, Clock::time_point deadline) {
  line.clear();
  for (;;) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return false;
    pollfd p{fd, POLLIN, 0};
    int n = poll(&p, 1, static_cast<int>(left));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    char c = 0;
    ssize_t got = read(fd, &c, 1);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return false;
    if (c == '\n') return true;
    line.push_back(c);
  }
}

}  // namespace

ServerProcess::ServerProcess(std::vector<std::string> args) {
  static std::atomic<int> counter{0};
  const std::string path = program_path("CONVSTORE_ASSISTANT_SERVER", ASSISTANT_SERVER_PATH);
  REQUIRE_MESSAGE(std::filesystem::exists(path),
                  "the assistant_server binary is missing: " << path);
  err_file_ =
      (std::filesystem::temp_directory_path() /
       ("assistant_server_" + std::to_string(getpid()) + "_" + std::to_string(counter++) + ".err"))
          .string();
  args.insert(args.begin(), {path, "--listen", "127.0.0.1:0"});
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  int fds[2];
  REQUIRE(pipe(fds) == 0);
  pid_ = fork();
  REQUIRE(pid_ >= 0);
  if (pid_ == 0) {
    int in = open("/dev/null", O_RDONLY);
    int err = open(err_file_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (in < 0 || err < 0) _exit(126);
    dup2(in, 0);
    dup2(fds[1], 1);
    dup2(err, 2);
    close(fds[0]);
    execv(path.c_str(), argv.data());
    _exit(127);
  }
  close(fds[1]);
  out_fd_ = fds[0];

  const auto deadline = Clock::now() + std::chrono::seconds(20);
  std::string line;
  const bool got = read_line(out_fd_, line, deadline);
  const std::string prefix = "listening on http://127.0.0.1:";
  if (!got || line.rfind(prefix, 0) != 0) {
    stop(SIGKILL);
    FAIL("assistant_server did not start; stdout: '" << line << "'; stderr:\n" << log());
  }
  port_ = std::stoi(line.substr(prefix.size()));
  httplib::Client probe("127.0.0.1", port_);
  probe.set_connection_timeout(std::chrono::seconds(2));
  probe.set_read_timeout(std::chrono::seconds(5));
  while (Clock::now() < deadline) {
    auto r = probe.Get("/health");
    if (r && r->status == 200) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  stop(SIGKILL);
  FAIL("assistant_server did not answer /health; stderr:\n" << log());
}

ServerProcess::~ServerProcess() {
  if (pid_ > 0) {
    kill(pid_, SIGKILL);
    int status = 0;
    waitpid(pid_, &status, 0);
  }
  if (out_fd_ >= 0) close(out_fd_);
  std::error_code ec;
  std::filesystem::remove(err_file_, ec);
}

int ServerProcess::stop(int signal) {
  if (pid_ <= 0) return -1;
  kill(pid_, signal);
  const auto deadline = Clock::now() + std::chrono::seconds(15);
  int status = 0;
  for (;;) {
    pid_t done = waitpid(pid_, &status, WNOHANG);
    if (done == pid_) break;
    if (Clock::now() > deadline) {
      kill(pid_, SIGKILL);
      waitpid(pid_, &status, 0);
      MESSAGE("assistant_server did not stop within 15 s: killed");
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  pid_ = -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

std::string ServerProcess::log() const { return read_file(err_file_); }

int run_to_exit(const std::vector<std::string>& args, std::string& err) {
  static std::atomic<int> counter{0};
  const std::string path = program_path("CONVSTORE_ASSISTANT_SERVER", ASSISTANT_SERVER_PATH);
  const std::string err_file = (std::filesystem::temp_directory_path() /
                                ("assistant_server_exit_" + std::to_string(getpid()) + "_" +
                                 std::to_string(counter++) + ".err"))
                                   .string();
  std::vector<std::string> all{path};
  all.insert(all.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : all) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    int in = open("/dev/null", O_RDONLY);
    int out = open("/dev/null", O_WRONLY);
    int e = open(err_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (in < 0 || out < 0 || e < 0) _exit(126);
    dup2(in, 0);
    dup2(out, 1);
    dup2(e, 2);
    execv(path.c_str(), argv.data());
    _exit(127);
  }
  const auto deadline = Clock::now() + std::chrono::seconds(10);
  int status = 0;
  for (;;) {
    if (waitpid(pid, &status, WNOHANG) == pid) break;
    if (Clock::now() > deadline) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  err = read_file(err_file);
  std::error_code ec;
  std::filesystem::remove(err_file, ec);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// ---- Api ----------------------------------------------------------------------

Api::Api(int port) : client_("127.0.0.1", port) {
  client_.set_connection_timeout(std::chrono::seconds(5));
  client_.set_read_timeout(std::chrono::seconds(10));
  client_.set_write_timeout(std::chrono::seconds(10));
  client_.set_keep_alive(true);
}

Reply Api::wrap(httplib::Result r, const std::string& what) {
  REQUIRE_MESSAGE(r, what << " failed: " << httplib::to_string(r.error()));
  Reply out;
  out.status = r->status;
  out.text = r->body;
  out.content_type = r->get_header_value("Content-Type");
  if (out.content_type.rfind("application/json", 0) == 0 && !out.text.empty()) {
    try {
      out.json = convstore::Json::parse(out.text);
    } catch (const std::exception& e) {
      FAIL(what << ": the body is not JSON (" << e.what() << "): " << out.text);
    }
  }
  return out;
}

Reply Api::get(const std::string& path) { return wrap(client_.Get(path.c_str()), "GET " + path); }

Reply Api::post(const std::string& path, const convstore::Json& body) {
  return post_raw(path, body.dump());
}

Reply Api::post_raw(const std::string& path, const std::string& body,
                    const std::string& content_type) {
  return wrap(client_.Post(path.c_str(), body, content_type.c_str()), "POST " + path);
}

Reply Api::patch(const std::string& path, const convstore::Json& body) {
  return wrap(client_.Patch(path.c_str(), body.dump(), "application/json"), "PATCH " + path);
}

Reply Api::del(const std::string& path) {
  return wrap(client_.Delete(path.c_str()), "DELETE " + path);
}

void check_error(const Reply& r, int status, const std::string& category,
                 const std::string& mentions) {
  CHECK_MESSAGE(r.status == status, "status " << r.status << ": " << r.text);
  CHECK_MESSAGE(r.content_type.rfind("application/json", 0) == 0, r.content_type);
  REQUIRE_MESSAGE(r.json.is_object(), r.text);
  REQUIRE_MESSAGE(r.json.contains("error"), r.text);
  CHECK(r.json["error"].value("category", "") == category);
  const std::string message = r.json["error"].value("message", "");
  CHECK_MESSAGE(!message.empty(), r.text);
  if (!mentions.empty()) {
    CHECK_MESSAGE(message.find(mentions) != std::string::npos, "message: " << message);
  }
}

std::vector<SseEvent> parse_sse(const std::string& text) {
  std::vector<SseEvent> out;
  std::size_t at = 0;
  while (at < text.size()) {
    auto end = text.find("\n\n", at);
    if (end == std::string::npos) end = text.size();
    const std::string block = text.substr(at, end - at);
    at = end + 2;
    if (block.empty()) continue;
    SseEvent e;
    std::string data;
    std::size_t line_start = 0;
    while (line_start <= block.size()) {
      auto line_end = block.find('\n', line_start);
      if (line_end == std::string::npos) line_end = block.size();
      const std::string line = block.substr(line_start, line_end - line_start);
      if (line.rfind("event: ", 0) == 0) e.event = line.substr(7);
      if (line.rfind("data: ", 0) == 0) data += line.substr(6);
      line_start = line_end + 1;
    }
    try {
      e.data = convstore::Json::parse(data);
    } catch (const std::exception&) {
      FAIL("an event's data is not JSON: " << data);
    }
    out.push_back(std::move(e));
  }
  return out;
}

std::string raw_exchange(int port, const std::string& head, const std::string& body_start,
                         std::chrono::milliseconds deadline_in) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  const std::string out = head + body_start;
  REQUIRE(send(fd, out.data(), out.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(out.size()));
  std::string got;
  const auto deadline = Clock::now() + deadline_in;
  for (;;) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) break;
    pollfd p{fd, POLLIN, 0};
    int n = poll(&p, 1, static_cast<int>(left));
    if (n <= 0) break;
    char buf[4096];
    ssize_t r = recv(fd, buf, sizeof buf, 0);
    if (r <= 0) break;
    got.append(buf, static_cast<std::size_t>(r));
    // Done once the headers and the body they announce are in.
    auto end = got.find("\r\n\r\n");
    if (end != std::string::npos) {
      auto cl = got.find("Content-Length: ");
      if (cl != std::string::npos && cl < end) {
        const std::size_t length = std::stoul(got.substr(cl + 16));
        if (got.size() >= end + 4 + length) break;
      }
    }
  }
  close(fd);
  return got;
}

}  // namespace testing
