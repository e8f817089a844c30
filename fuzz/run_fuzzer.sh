#!/usr/bin/env bash
# Copyright (c) the convstore authors.
# SPDX-License-Identifier: MIT
#
# Runs one libFuzzer target for a bounded time, from a temporary copy of its
# seed corpus (the inputs it finds are thrown away with the copy; the seeds
# are run first, so every checked-in input is replayed):
#
#   fuzz/run_fuzzer.sh FUZZER SEED_DIR SECONDS ARTIFACT_DIR [LIBFUZZER_OPTION...]
#
# Memory is bounded (-rss_limit_mb, -malloc_limit_mb) and so is the time of
# one input (-timeout). Exits non-zero on a crash, a sanitizer report, a
# timeout or an out-of-memory; the input is written to ARTIFACT_DIR.
set -euo pipefail

if [ $# -lt 4 ]; then
  echo "usage: $0 FUZZER SEED_DIR SECONDS ARTIFACT_DIR [LIBFUZZER_OPTION...]" >&2
  exit 2
fi
fuzzer=$1
seeds=$2
seconds=$3
artifacts=$4
shift 4

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/corpus" "$artifacts"
cp -R "$seeds/." "$work/corpus/"

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
status=0
"$fuzzer" -max_total_time="$seconds" -rss_limit_mb=512 -malloc_limit_mb=256 -timeout=10 \
  -print_final_stats=1 -artifact_prefix="$artifacts/" "$@" "$work/corpus" || status=$?
exit "$status"
