// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#pragma once

#include <string_view>

namespace assistant_server {

// The single-page web UI served at GET / (HTML with its script and style
// inline), embedded in the binary. It uses only the JSON API.
std::string_view ui_page();

}  // namespace assistant_server
