// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
//
// A placeholder page: the review UI (approve, edit, reject pending replies;
// browse conversations) replaces this file.
#include "ui.hpp"

namespace assistant_server {

std::string_view ui_page() {
  return R"html(<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>convstore assistant server</title></head>
<body>
<h1>convstore assistant server</h1>
<p>The JSON API is under <code>/api/v1/</code>; see <code>/health</code>.</p>
</body>
</html>
)html";
}

}  // namespace assistant_server
