// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#pragma once

// The whole public API of convstore.
#include "convstore/agent_state_store.hpp"
#include "convstore/analytics.hpp"
#include "convstore/calendar_store.hpp"
#include "convstore/config.hpp"
#include "convstore/conversation_store.hpp"
#include "convstore/credential_store.hpp"
#include "convstore/dialog_store.hpp"
#include "convstore/error.hpp"
#include "convstore/operation_templates.hpp"
#include "convstore/options.hpp"
#include "convstore/portability.hpp"
#include "convstore/retention.hpp"
#include "convstore/session_cache.hpp"
#include "convstore/store.hpp"
#include "convstore/task_queue.hpp"
#include "convstore/types.hpp"
#include "convstore/version.hpp"
#include "convstore/web_session_store.hpp"
