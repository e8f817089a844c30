// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "convstore/export.hpp"
#include "convstore/store.hpp"
#include "convstore/types.hpp"

namespace convstore {

using TemplateId = std::int64_t;

// Limits of an operation template.
struct TemplateLimits {
  static constexpr std::size_t max_kind_chars = 100;
  static constexpr std::size_t max_name_chars = 200;
  static constexpr std::size_t max_sample_bytes = 64 * 1024;
  static constexpr std::size_t max_output_bytes = 1024 * 1024;  // JSON text
  static constexpr std::size_t max_list = 1000;
};

// A frequently used operation pattern (seed 000 operation_templates): a
// sample input of an operation kind ("expense", "income", ...) and the
// output expected from it, e.g. as few-shot examples for an AI agent.
struct OperationTemplate {
  TemplateId id = 0;
  // The owner, or none for a template shared by every user. Deleting the
  // user deletes their templates.
  std::optional<UserId> user_id;
  std::string kind;  // seed operation_type
  std::string name;  // seed template_name
  std::string sample_input;
  Json expected_output;
  std::int64_t use_count = 0;  // seed usage_count
  std::optional<Timestamp> last_used_at;
  Timestamp created_at{};
  Timestamp updated_at{};
};

struct NewOperationTemplate {
  std::optional<UserId> user_id;  // an existing user, or none: shared
  std::string kind;               // 1..100 characters, no control characters
  std::string name;               // 1..200 characters, no control characters
  std::string sample_input;       // valid UTF-8 without NUL, up to 64 KiB
  Json expected_output;           // any JSON, up to 1 MiB as text
};

// Operation templates, reached as store.templates().
//
// A (owner, kind, name) is unique: adding a second one is
// Error(already_exists). Listings put the most used first (use_count, then
// the most recently used, then the oldest id): what the seed keeps the
// templates for.
//
// Thread safety: safe from any thread and process; record_use is one
// atomic statement, so concurrent uses are all counted.
// Errors: bad input is Error(invalid_argument) and writes nothing; an
// unknown template is Error(not_found) (an unknown owner in add() too).
class CONVSTORE_EXPORT OperationTemplates {
 public:
  OperationTemplate add(const NewOperationTemplate& t);
  std::optional<OperationTemplate> get(TemplateId id);
  // The one template with this unique key: `owner`'s (std::nullopt: the
  // shared one) of `kind` named `name`, or std::nullopt. A user's lookup does
  // not fall back to the shared template of that name (ask with
  // std::nullopt for it). One indexed lookup; kind and name are checked as in
  // add() (Error(invalid_argument)).
  std::optional<OperationTemplate> find(std::optional<UserId> owner, std::string_view kind,
                                        std::string_view name);
  // The templates of `kind`, most used first, at most `limit` (1..1000).
  // With a user: that user's templates and the shared ones; without: every
  // template of the kind, whoever owns it.
  std::vector<OperationTemplate> list(std::string_view kind,
                                      std::optional<UserId> user = std::nullopt,
                                      std::size_t limit = 50);
  // Counts one use: use_count + 1 and last_used_at = now, in one statement.
  // Returns the template as updated; Error(not_found) when there is none.
  OperationTemplate record_use(TemplateId id);
  // Deletes the template; false when there was none.
  bool remove(TemplateId id);

 private:
  friend class Store;
  explicit OperationTemplates(Store::Impl* impl) : impl_(impl) {}
  Store::Impl* impl_;
};

// JSON form of a template (timestamps as ISO 8601 strings).
CONVSTORE_EXPORT Json to_json(const OperationTemplate& t);

}  // namespace convstore
