// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT

// Checks that the embedded page (kIndexHtml) is index.html byte for byte:
//   assistant_server_web_check <path of index.html>
// Exit status 0 when equal, 1 with the first difference otherwise.

#include <cstddef>
#include <fstream>
#include <iostream>
#include <iterator>
#include <string>

#include "web_assets.hpp"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: assistant_server_web_check <index.html>\n";
    return 2;
  }
  std::ifstream in(argv[1], std::ios::binary);
  if (!in) {
    std::cerr << "cannot read " << argv[1] << "\n";
    return 2;
  }
  const std::string file((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::string embedded(kIndexHtml, kIndexHtmlSize);
  if (kIndexHtml[kIndexHtmlSize] != '\0') {
    std::cerr << "the embedded page is not followed by a NUL\n";
    return 1;
  }
  if (file == embedded) {
    std::cout << "embedded page matches " << argv[1] << " (" << file.size() << " bytes)\n";
    return 0;
  }
  std::size_t i = 0;
  while (i < file.size() && i < embedded.size() && file[i] == embedded[i]) ++i;
  std::cerr << "the embedded page differs from " << argv[1] << " at byte " << i << " (file "
            << file.size() << " bytes, embedded " << embedded.size() << ")\n";
  return 1;
}
