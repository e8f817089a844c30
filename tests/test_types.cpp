// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#include "support.hpp"

using namespace convstore;

TEST_CASE("timestamps format as fixed-width ISO 8601 and parse the forms both backends write") {
  Timestamp t = parse_timestamp("2026-11-23T13:08:11.123456Z");
  CHECK(to_iso8601(t) == "2026-11-23T13:08:11.123456Z");
  CHECK(parse_timestamp("2026-11-23 13:08:11.123456+00") == t);
  CHECK(parse_timestamp("2026-11-23 16:08:11.123456+03:00") == t);
  CHECK(to_iso8601(parse_timestamp("2026-11-23 13:08:11+00")) == "2026-11-23T13:08:11.000000Z");
  CHECK(to_iso8601(parse_timestamp("2026-11-23 13:08:11.5+00")) == "2026-11-23T13:08:11.500000Z");
  CHECK(to_iso8601(Timestamp{}) == "1970-01-01T00:00:00.000000Z");
  CHECK_ERROR_CODE(parse_timestamp("yesterday"), ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(parse_timestamp("2026-02-30T00:00:00Z"), ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(parse_timestamp("2026-11-23T13:08:11Zjunk"), ErrorCode::invalid_argument);
}

TEST_CASE("enum names round-trip and unknown names are invalid_argument") {
  for (auto r : {Role::user, Role::assistant, Role::system, Role::tool}) {
    CHECK(parse_role(to_string(r)) == r);
  }
  for (auto k : {MessageKind::text, MessageKind::tool_call, MessageKind::tool_response,
                 MessageKind::thinking, MessageKind::error}) {
    CHECK(parse_message_kind(to_string(k)) == k);
  }
  CHECK(parse_conversation_status("abandoned") == ConversationStatus::abandoned);
  CHECK(parse_data_kind("missing_fields") == DataKind::missing_fields);
  CHECK_ERROR_CODE(parse_message_kind("photo"), ErrorCode::invalid_argument);
  CHECK_ERROR_CODE(parse_conversation_status("done"), ErrorCode::invalid_argument);
}

TEST_CASE("errors carry their code and say whether a retry can help") {
  Error e(ErrorCode::unavailable, "db down", "08006");
  CHECK(e.retryable());
  CHECK(e.sqlstate() == "08006");
  CHECK(std::string(e.what()) == "db down");
  CHECK_FALSE(Error(ErrorCode::conflict, "x").retryable());
  CHECK(to_string(ErrorCode::failed_precondition) == "failed_precondition");
  CHECK(to_string(ErrorCode::data_loss) == "data_loss");
  CHECK_FALSE(Error(ErrorCode::data_loss, "x").retryable());
}
