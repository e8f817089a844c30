// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#include "convstore/operation_templates.hpp"

#include <fmt/format.h>

#include "store_helpers.hpp"
#include "store_impl.hpp"

namespace convstore {

using detail::Connection;
using detail::Sql;
using detail::Stmt;

Json to_json(const OperationTemplate& t) {
  auto opt_time = [](const std::optional<Timestamp>& v) {
    return v ? Json(to_iso8601(*v)) : Json(nullptr);
  };
  return Json{{"id", t.id},
              {"user_id", t.user_id ? Json(*t.user_id) : Json(nullptr)},
              {"kind", t.kind},
              {"name", t.name},
              {"sample_input", t.sample_input},
              {"expected_output", t.expected_output},
              {"use_count", t.use_count},
              {"last_used_at", opt_time(t.last_used_at)},
              {"created_at", to_iso8601(t.created_at)},
              {"updated_at", to_iso8601(t.updated_at)}};
}

namespace {

#define CS_TEMPLATE_COLS                                                                          \
  "id, user_id, kind, name, sample_input, expected_output, use_count, last_used_at, created_at, " \
  "updated_at"

struct Row {
  OperationTemplate t;
  std::optional<long long> user;
};

void bind_row(Stmt& st, Row& r) {
  OperationTemplate& t = r.t;
  st.out(t.id).out(r.user).out(t.kind).out(t.name).out(t.sample_input).out(t.expected_output);
  st.out(t.use_count).out(t.last_used_at).out(t.created_at).out(t.updated_at);
}

OperationTemplate decode(Row& r) {
  r.t.user_id = r.user ? std::optional<UserId>(static_cast<UserId>(*r.user)) : std::nullopt;
  return std::move(r.t);
}

std::optional<OperationTemplate> fetch(Stmt& st) {
  return detail::fetch_one_decoded<Row>(st, bind_row, decode);
}

void check_kind(std::string_view kind) {
  detail::check_id(kind, "template kind", TemplateLimits::max_kind_chars);
}

}  // namespace

OperationTemplate OperationTemplates::add(const NewOperationTemplate& n) {
  check_kind(n.kind);
  detail::check_id(n.name, "template name", TemplateLimits::max_name_chars);
  detail::check_text(n.sample_input, "template sample input");
  if (n.sample_input.size() > TemplateLimits::max_sample_bytes) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("template sample input is {} bytes (at most {})", n.sample_input.size(),
                            TemplateLimits::max_sample_bytes));
  }
  const std::string output = detail::json_text(n.expected_output, "template expected output");
  if (output.size() > TemplateLimits::max_output_bytes) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("template expected output is {} bytes of JSON (at most {})",
                            output.size(), TemplateLimits::max_output_bytes));
  }
  std::optional<long long> user;
  if (n.user_id) user = static_cast<long long>(*n.user_id);
  static const Sql q{
      "INSERT INTO operation_templates (user_id, kind, name, sample_input, expected_output, "
      "created_at, updated_at) VALUES (:u, :k, :n, :s, :o, :t1, :t2) RETURNING " CS_TEMPLATE_COLS};
  try {
    return impl_->single(Op{"add operation template"}, [&](Connection& c) {
      const Timestamp t = now();
      Stmt st(c, q);
      st.in(user).in(n.kind).in(n.name).in(n.sample_input).in(output).in(t).in(t);
      auto row = fetch(st);
      if (!row) throw Error(ErrorCode::internal, "adding an operation template returned no row");
      return *row;
    });
  } catch (const Error& e) {
    if (e.code() == ErrorCode::not_found && n.user_id) {
      throw Error(ErrorCode::not_found, fmt::format("user {} not found", *n.user_id), e.sqlstate());
    }
    if (e.code() == ErrorCode::already_exists) {
      throw Error(
          ErrorCode::already_exists,
          fmt::format(
              "an operation template '{}' of kind '{}' already exists for {}", n.name, n.kind,
              n.user_id ? fmt::format("user {}", *n.user_id) : std::string("all users (shared)")),
          e.sqlstate());
    }
    throw;
  }
}

std::optional<OperationTemplate> OperationTemplates::get(TemplateId id) {
  static const Sql q{"SELECT " CS_TEMPLATE_COLS " FROM operation_templates WHERE id = :id"};
  return impl_->read(Op{"get operation template", "template", id}, [&](Connection& c) {
    Stmt st(c, q);
    st.in(static_cast<long long>(id));
    return fetch(st);
  });
}

std::optional<OperationTemplate> OperationTemplates::find(std::optional<UserId> owner,
                                                          std::string_view kind,
                                                          std::string_view name) {
  check_kind(kind);
  detail::check_id(name, "template name", TemplateLimits::max_name_chars);
  // The unique index's own expression: no user is 0, a shared template is.
  static const Sql q{"SELECT " CS_TEMPLATE_COLS
                     " FROM operation_templates WHERE COALESCE(user_id, 0) = :u AND kind = :k "
                     "AND name = :n"};
  const long long user = owner ? static_cast<long long>(*owner) : 0;
  return impl_->read(Op{"find operation template"}, [&](Connection& c) {
    Stmt st(c, q);
    st.in(user).in(kind).in(name);
    return fetch(st);
  });
}

std::vector<OperationTemplate> OperationTemplates::list(std::string_view kind,
                                                        std::optional<UserId> user,
                                                        std::size_t limit) {
  check_kind(kind);
  detail::check_count(limit, TemplateLimits::max_list, "template list limit");
  // Most used first; among equals the most recently used, then the oldest.
#define CS_TEMPLATE_ORDER " ORDER BY use_count DESC, last_used_at DESC NULLS LAST, id LIMIT :n"
  static const Sql any{"SELECT " CS_TEMPLATE_COLS
                       " FROM operation_templates WHERE kind = :k" CS_TEMPLATE_ORDER};
  static const Sql mine{"SELECT " CS_TEMPLATE_COLS
                        " FROM operation_templates WHERE kind = :k AND (user_id = :u OR user_id "
                        "IS NULL)" CS_TEMPLATE_ORDER};
#undef CS_TEMPLATE_ORDER
  return impl_->read(Op{"list operation templates"}, [&](Connection& c) {
    Stmt st(c, user ? mine : any);
    st.in(kind);
    if (user) st.in(static_cast<long long>(*user));
    st.in(limit);
    return detail::fetch_all_decoded<Row>(st, bind_row, decode);
  });
}

OperationTemplate OperationTemplates::record_use(TemplateId id) {
  static const Sql q{
      "UPDATE operation_templates SET use_count = use_count + 1, last_used_at = :t WHERE id = "
      ":id RETURNING " CS_TEMPLATE_COLS};
  return impl_->single(Op{"record operation template use", "template", id}, [&](Connection& c) {
    Stmt st(c, q);
    st.in(now()).in(static_cast<long long>(id));
    auto row = fetch(st);
    if (!row) {
      throw Error(ErrorCode::not_found, fmt::format("operation template {} not found", id));
    }
    return *row;
  });
}

bool OperationTemplates::remove(TemplateId id) {
  static const Sql q{"DELETE FROM operation_templates WHERE id = :id"};
  return impl_->single(Op{"remove operation template", "template", id}, [&](Connection& c) {
    Stmt st(c, q);
    st.in(static_cast<long long>(id)).one();
    return st.affected() > 0;
  });
}

}  // namespace convstore
