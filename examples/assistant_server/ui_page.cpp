// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
//
// The page served at GET /: web/index.html, embedded by the
// assistant_server_web library (web/CMakeLists.txt, web/embed.cmake).
#include "ui.hpp"
#include "web_assets.hpp"

namespace assistant_server {

std::string_view ui_page() { return {kIndexHtml, kIndexHtmlSize}; }

}  // namespace assistant_server
