// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#pragma once

#include <string>
#include <vector>

namespace convstore::detail {

// The column types a backend uses for the schema's few kinds of column.
struct SchemaTypes {
  const char* pk;  // auto-increment primary key, never reused
  const char* bigint;
  const char* timestamp;  // TEXT (ISO 8601, sorts as time) / TIMESTAMPTZ
  const char* json;       // TEXT / JSONB
  const char* boolean;
  const char* sorted_text;  // text that sorts by bytes (COLLATE "C" on PostgreSQL), as on SQLite
  bool postgresql = false;  // picks the few statements that differ (full-text search)
};

// The schema's migrations written once for both backends: element i takes a
// database from version i to i + 1; each element is a list of statements
// applied in one transaction.
std::vector<std::vector<std::string>> schema_migrations(const SchemaTypes& types);

// A description of each migration, recorded in convstore_schema.
const std::vector<std::string>& migration_descriptions();

}  // namespace convstore::detail
