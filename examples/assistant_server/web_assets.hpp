// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#pragma once

// The web UI (examples/assistant_server/web/index.html) embedded in the
// binary by the assistant_server_web library: the server answers GET / with
// these bytes (text/html; charset=utf-8). Generated at build time by
// web/embed.cmake, regenerated when index.html changes.

#include <cstddef>

// The page's bytes, kIndexHtmlSize of them, followed by a '\0' that is not
// part of the page.
extern const char kIndexHtml[];
extern const std::size_t kIndexHtmlSize;
