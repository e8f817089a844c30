// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "convstore/export.hpp"
#include "convstore/store.hpp"
#include "convstore/types.hpp"

namespace convstore {

// The agent registry (seed 004) and the state agents keep per scope
// (seed 001's agent_states), reached as store.agents().
//
// Agents are read through an in-process cache ("memory first, database
// fallback"): every write through this store updates it at once, a change
// made by another process is seen within Options::agent_cache_ttl.
//
// Thread safety: safe to use from many threads at once. get_agent returns an
// immutable snapshot shared with the cache; other values are copies.
// Errors: throws convstore::Error. Ids (agent ids, scope keys) must be 1..200
// characters without control characters, else Error(invalid_argument). A
// lookup that finds nothing returns nullptr / std::nullopt; deleting what is
// not there returns false. A call that throws has written nothing.
class CONVSTORE_EXPORT AgentStateStore {
 public:
  // ---- registry -----------------------------------------------------------

  // Registers an agent (version 1, active). Throws Error(already_exists) if
  // the id is taken, Error(not_found) for an unknown sub-agent,
  // Error(invalid_argument) for a sub-agent cycle.
  Agent create_agent(const NewAgent& agent);
  // The agent, active or not, or nullptr.
  std::shared_ptr<const Agent> get_agent(std::string_view id);
  // A page of agents ordered by id.
  Page<Agent> list_agents(const AgentFilter& filter = {});
  // Applies `update` and bumps the version. Throws Error(conflict) when
  // update.expected_version is stale, Error(not_found) for an unknown agent
  // or sub-agent, Error(invalid_argument) when the sub-agents would form a
  // cycle.
  Agent update_agent(std::string_view id, const AgentUpdate& update);
  // Soft delete: the agent stays, inactive (hidden from list_agents unless
  // include_inactive). Returns false if there is no such agent.
  bool deactivate_agent(std::string_view id);
  // Makes a soft-deleted agent active again. Throws Error(not_found).
  Agent restore_agent(std::string_view id);
  // Hard delete. Refused with Error(failed_precondition) while conversations
  // name the agent, or while another agent has it as a sub-agent, unless
  // `force` (the conversations then keep the dangling name and the
  // references are removed from the other agents). Returns false if there is
  // no such agent.
  bool delete_agent(std::string_view id, bool force = false);
  // Records one use: usage count + 1 and last-used time, in one atomic
  // statement (exact under any number of threads and processes). Throws
  // Error(not_found).
  Agent record_use(std::string_view id);
  // Drops every cached agent (the next reads go to the database).
  void clear_cache() noexcept;

  // ---- state --------------------------------------------------------------

  // Stores `state` (a JSON object) as the state of `agent` in `scope` and
  // returns it with its new version (1 for the first save). With
  // `expected_version`, fails with Error(conflict) unless the stored version
  // equals it (0: only if nothing is stored yet). The previous versions are
  // kept in the history (Options::state_history of them). A conversation
  // scope needs the conversation: Error(not_found) otherwise.
  AgentState save_state(const StateScope& scope, std::string_view agent, const Json& state,
                        std::optional<std::int64_t> expected_version = std::nullopt);
  // The stored state, or an empty object when there is none (seed 001
  // load_agent_state).
  Json load_state(const StateScope& scope, std::string_view agent);
  // The stored state with its version and times, or std::nullopt.
  std::optional<AgentState> get_state(const StateScope& scope, std::string_view agent);
  // Applies an RFC 7396 merge patch to the stored state (an empty object
  // when there is none) in one transaction, so concurrent patches never
  // lose each other's keys. Optional version check as in save_state.
  AgentState patch_state(const StateScope& scope, std::string_view agent, const Json& patch,
                         std::optional<std::int64_t> expected_version = std::nullopt);
  // The states of every agent in `scope`, ordered by agent.
  std::vector<AgentState> load_scope(const StateScope& scope);
  // Deletes the state (and its history).
  bool delete_state(const StateScope& scope, std::string_view agent);
  // The scopes in which `agent` has state, most recently updated first.
  std::vector<StateScope> scopes_of(std::string_view agent, std::size_t limit = 1000);

  // The versions kept in the state's history, newest first, the current one
  // included (at most Options::state_history).
  std::vector<AgentStateVersion> state_history(const StateScope& scope, std::string_view agent);
  // One earlier version (or the current one), or std::nullopt.
  std::optional<AgentStateVersion> load_state_version(const StateScope& scope,
                                                      std::string_view agent, std::int64_t version);
  // Saves the content of `version` as a new version. Throws Error(not_found)
  // when there is no state or that version is no longer kept.
  AgentState rollback_state(const StateScope& scope, std::string_view agent, std::int64_t version);

  // Removes session-scoped state whose conversation (by key) no longer
  // exists (seed 001 cleanup_orphaned_agent_states); returns how many.
  // Conversation-scoped state goes with its conversation by itself.
  std::size_t cleanup_orphaned_states();

 private:
  friend class Store;
  explicit AgentStateStore(Store::Impl* impl);
  Store::Impl* impl_;
};

}  // namespace convstore
