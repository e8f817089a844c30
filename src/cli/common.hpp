// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#pragma once

// What the commands share: opening a store, finding a conversation, printing.

#include <convstore/convstore.hpp>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace convstore::cli {

// The file of a "sqlite:PATH" / "sqlite://PATH" URL; std::nullopt for
// sqlite::memory: and other backends.
std::optional<std::string> sqlite_file(std::string_view url);

// Opens a database that must already exist and be at this library's schema
// version (commands that read or change data never migrate by surprise): a
// missing SQLite file, or an older schema, is an error that says to run
// `convstore migrate URL`.
Store open_existing(const std::string& url);

// The conversation named by `ref`: a numeric id, else a key (an id wins
// when a key is also all digits). Throws Error(not_found) naming `ref`.
Conversation find_conversation(Store& store, const std::string& ref);

// "2026-11-23 13:08:11Z".
std::string format_time(Timestamp t);

// "1 line", "2 lines", "0 lines": `n` and the noun, with an "s" unless n == 1.
std::string counted(std::int64_t n, std::string_view noun);

// Prints `j` on stdout, indented, with a newline.
void print_json(const Json& j);

}  // namespace convstore::cli
