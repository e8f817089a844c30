#!/usr/bin/env bash
# Copyright (c) the convstore authors.
# SPDX-License-Identifier: MIT
#
# Shared by scripts/demo and scripts/test (source it). Defines the Debian
# packages convstore needs and ensure_packages, which installs the missing ones.

# shellcheck disable=SC2034  # used by the scripts that source this file
# To build the library and the examples (the examples' HTTP: cpp-httplib).
CONVSTORE_BUILD_PACKAGES=(
  build-essential cmake pkg-config git
  libsoci-dev libsqlite3-dev libpq-dev nlohmann-json3-dev libfmt-dev libhiredis-dev
  libhowardhinnant-date-dev libical-dev libsodium-dev libcli11-dev tzdata
  libcpp-httplib-dev  # the examples' HTTP server and client
)
# To run the tests: doctest, throwaway PostgreSQL and Redis servers, python3 (to
# pick free ports, scripts/servers.sh works without it; and to drive the
# assistant_server web UI test), chromium (that test's headless browser), wrk
# (bench/assistant_server.sh). The benchmarks (CONVSTORE_BUILD_BENCH=ON, built
# by neither script) also need libbenchmark-dev.
# shellcheck disable=SC2034
CONVSTORE_TEST_PACKAGES=(doctest-dev postgresql redis-server python3 chromium wrk)
# The fuzz targets (scripts/test's third build, scripts/fuzz): Clang and its
# runtime libraries (libFuzzer, ASan, UBSan), Debian 12's version.
# shellcheck disable=SC2034
CONVSTORE_FUZZ_PACKAGES=(clang libclang-rt-14-dev)

# configure_fuzz_build DIR: configures DIR for the fuzz targets only (Clang,
# CONVSTORE_BUILD_FUZZ=ON; no tool, tests, examples or benchmarks), with
# ccache when it is installed. Build it with `cmake --build DIR --target
# convstore_fuzz`.
configure_fuzz_build() {
  local launcher=()
  if command -v ccache >/dev/null 2>&1; then
    launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
  fi
  CC=clang CXX=clang++ cmake -S . -B "$1" -DCONVSTORE_BUILD_FUZZ=ON \
    -DCONVSTORE_BUILD_TESTS=OFF -DCONVSTORE_BUILD_EXAMPLES=OFF -DCONVSTORE_BUILD_BENCH=OFF \
    -DCONVSTORE_BUILD_CLI=OFF -DCONVSTORE_INSTALL=OFF "${launcher[@]}"
}

# ensure_packages PKG...: installs, with apt-get, those of the Debian packages
# PKG... that are not installed; does nothing (and needs no network) when all
# are. Uses sudo when not root.
ensure_packages() {
  local pkg status missing=() sudo=()
  for pkg in "$@"; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null) || status=""
    [[ $status == *" ok installed" ]] || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0

  echo "Installing missing packages: ${missing[*]}"
  if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
      sudo=(sudo)
    else
      echo "error: these packages are missing and installing them needs root or sudo:" \
        "${missing[*]}" >&2
      return 1
    fi
  fi
  "${sudo[@]}" apt-get update
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y --no-install-recommends "${missing[@]}"
}
