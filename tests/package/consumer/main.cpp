// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT

// Opens an in-memory store through the installed (or embedded) convstore and
// prints the library version and the schema version.

#include <convstore/convstore.hpp>

#include <exception>
#include <iostream>

int main() {
  try {
    auto store = convstore::Store::open("sqlite::memory:");
    std::cout << "convstore " << convstore::version_string << " schema " << store.schema_version()
              << '\n';
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "consumer: " << e.what() << '\n';
    return 1;
  }
}
