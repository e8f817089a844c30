// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#include "cache/cache_backend.hpp"

#include <thread>

namespace convstore::detail {

// Out of line: the key function, so the class's vtable has one home.
void CacheBackend::lease_wait(const std::string&, Ms pause) { std::this_thread::sleep_for(pause); }

}  // namespace convstore::detail
