// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
//
// convstore: the command-line tool (see commands.hpp and the README section
// "The convstore command-line tool").

#include "commands.hpp"

int main(int argc, char** argv) { return convstore::cli::run(argc, argv); }
