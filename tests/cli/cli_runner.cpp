// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#include "cli_runner.hpp"

#include <doctest/doctest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>

namespace testing {

CliResult run_cli(const std::vector<std::string>& args, const std::string& stdin_file) {
  static std::atomic<int> counter{0};
  const std::string path = program_path("CONVSTORE_CLI", CONVSTORE_CLI_PATH);
  REQUIRE_MESSAGE(std::filesystem::exists(path), "the convstore binary is missing: " << path);
  auto base = std::filesystem::temp_directory_path() /
              ("convstore_cli_" + std::to_string(getpid()) + "_" + std::to_string(counter++));
  const std::string out_file = base.string() + ".out";
  const std::string err_file = base.string() + ".err";

  std::vector<std::string> argv{path};
  argv.insert(argv.end(), args.begin(), args.end());
  // stdout and stderr to files (never a terminal: the non-tty mode).
  const int pid = spawn(argv, environment(), stdin_file, out_file, err_file);
  int wstatus = 0;
  while (waitpid(pid, &wstatus, 0) < 0) {
  }
  CliResult r;
  r.status = WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : -1;
  r.out = read_file(out_file);
  r.err = read_file(err_file);
  std::filesystem::remove(out_file);
  std::filesystem::remove(err_file);
  return r;
}

void check_error(const CliResult& r, int status, const std::string& mentions) {
  CHECK(r.status == status);
  CHECK_MESSAGE(r.out.empty(), "stdout: " << r.out);
  CHECK_MESSAGE(r.err.rfind("convstore: error: ", 0) == 0, "stderr: " << r.err);
  CHECK_MESSAGE(contains(r.err, mentions), "stderr: " << r.err);
  CHECK_MESSAGE(!contains(r.err, "terminate called"), "stderr: " << r.err);
}

convstore::Json parse_json(const std::string& text) {
  try {
    return convstore::Json::parse(text);
  } catch (const std::exception& e) {
    FAIL("not JSON (" << e.what() << "): " << text);
  }
  return nullptr;
}

}  // namespace testing
