// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#include "common.hpp"

#include <fmt/format.h>

#include <filesystem>
#include <iostream>

#include "redact.hpp"

namespace convstore::cli {

std::optional<std::string> sqlite_file(std::string_view url) {
  if (url.substr(0, 7) != "sqlite:") return std::nullopt;
  std::string_view path = url.substr(7);
  if (path.substr(0, 2) == "//") path = path.substr(2);
  if (path.empty() || path == ":memory:") return std::nullopt;
  return std::string(path);
}

Store open_existing(const std::string& url) {
  if (auto file = sqlite_file(url)) {
    std::error_code ec;
    if (!std::filesystem::exists(*file, ec)) {
      throw Error(ErrorCode::not_found,
                  fmt::format("no database at '{}' (run 'convstore migrate {}' to create one)",
                              *file, url));
    }
  }
  // Look before opening: Store::open with migrate=false would create the
  // (empty) bookkeeping table in a database convstore never migrated.
  SchemaStatus status = Store::inspect_schema(url);
  if (status.database_version < status.library_version) {
    throw Error(ErrorCode::failed_precondition,
                fmt::format("{}: the database schema is version {}, this convstore needs "
                            "version {} (run 'convstore migrate {}' first)",
                            redact_url(url), status.database_version, status.library_version,
                            redact_url(url)));
  }
  Options options;
  options.pool_size = 2;
  options.migrate = false;  // a newer schema is refused by open, naming both versions
  return Store::open(url, options);
}

Conversation find_conversation(Store& store, const std::string& ref) {
  auto& conversations = store.conversations();
  bool numeric =
      !ref.empty() && ref.size() <= 18 && ref.find_first_not_of("0123456789") == std::string::npos;
  if (numeric) {
    if (auto c = conversations.get(std::stoll(ref))) return *c;
  }
  if (!ref.empty()) {
    if (auto c = conversations.find(ref)) return *c;
  }
  throw Error(ErrorCode::not_found,
              fmt::format("conversation '{}' not found (no conversation has this {})", ref,
                          numeric ? "id or key" : "key"));
}

std::string format_time(Timestamp t) {
  std::string iso = to_iso8601(t);  // 2026-11-23T13:08:11.123456Z
  auto dot = iso.find('.');
  if (dot != std::string::npos) iso = iso.substr(0, dot) + "Z";
  auto tee = iso.find('T');
  if (tee != std::string::npos) iso[tee] = ' ';
  return iso;
}

std::string counted(std::int64_t n, std::string_view noun) {
  return fmt::format("{} {}{}", n, noun, n == 1 ? "" : "s");
}

void print_json(const Json& j) {
  std::cout << j.dump(2, ' ', false, Json::error_handler_t::replace) << '\n';
}

}  // namespace convstore::cli
