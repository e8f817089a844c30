// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#pragma once

#include <string>
#include <string_view>

#include "convstore/error.hpp"
#include "convstore/types.hpp"

namespace convstore::detail {

// Conversions between stored text and API values, shared by the stores.

// Parses stored JSON text; an empty or NULL column gives `fallback`.
Json parse_json(const std::string& text, const Json& fallback = nullptr);

inline void parse_enum(const std::string& s, Role& r) { r = parse_role(s); }
inline void parse_enum(const std::string& s, MessageKind& k) { k = parse_message_kind(s); }
inline void parse_enum(const std::string& s, ConversationStatus& st) {
  st = parse_conversation_status(s);
}
inline void parse_enum(const std::string& s, DataKind& k) { k = parse_data_kind(s); }
inline void parse_enum(const std::string& s, StateScope::Kind& k) { k = parse_state_scope_kind(s); }

// Appends `s`, already checked to be valid UTF-8, to `out` as a JSON string
// literal. nlohmann's serializer re-decodes every character to validate it,
// which made it the largest cost of a PostgreSQL batch; validation has been
// done by check_text, so only quotes, backslashes and control characters
// need escaping here. Tested against nlohmann's parser.
void append_json_string(std::string& out, std::string_view s);

// Throws Error(invalid_argument) unless `text` is valid UTF-8 without NUL;
// `what` names the field ("message content").
void check_text(std::string_view text, std::string_view what);

}  // namespace convstore::detail
