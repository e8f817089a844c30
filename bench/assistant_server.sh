#!/usr/bin/env bash
# Copyright (c) the convstore authors.
# SPDX-License-Identifier: MIT
#
# Load benchmark of examples/assistant_server: wrk (Debian package wrk) sends
# messages over loopback, spread at random over 100 conversations of a fresh
# database; each request appends the user's message, reads the context and
# appends the assistant's reply (two commits). Prints wrk's report and one
# summary line: requests/s and p50 / p99 latency.
#
#   bench/assistant_server.sh BUILD_DIR sqlite [SECONDS] [CONNECTIONS]
#   bench/assistant_server.sh BUILD_DIR postgresql [SECONDS] [CONNECTIONS]
#
# SQLite: a file in a temporary directory ($TMPDIR), full durability.
# PostgreSQL: a schema of its own, created and dropped here, in the database
# named by $CONVSTORE_BENCH_PG_URL (else $CONVSTORE_TEST_PG_URL); needs psql.
# The server runs with as many worker threads as wrk has connections.
set -euo pipefail

build=${1:?usage: bench/assistant_server.sh BUILD_DIR sqlite|postgresql [SECONDS] [CONNECTIONS]}
backend=${2:-sqlite}
seconds=${3:-10}
connections=${4:-8}
server="$build/examples/assistant_server/assistant_server"
[ -x "$server" ] || { echo "error: $server is missing (build the examples)" >&2; exit 1; }
command -v wrk >/dev/null || { echo "error: wrk is missing (Debian: wrk)" >&2; exit 1; }
command -v curl >/dev/null || { echo "error: curl is missing" >&2; exit 1; }

tmp=$(mktemp -d)
pid=""
schema=""
pg=""
cleanup() {
  if [ -n "$pid" ]; then kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  if [ -n "$schema" ]; then psql -q "$pg" -c "DROP SCHEMA $schema CASCADE" >/dev/null 2>&1 || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

case "$backend" in
  sqlite) url="sqlite:$tmp/bench.db" ;;
  postgresql)
    pg=${CONVSTORE_BENCH_PG_URL:-${CONVSTORE_TEST_PG_URL:-}}
    [ -n "$pg" ] || { echo "error: set CONVSTORE_BENCH_PG_URL" >&2; exit 1; }
    schema="asrv_bench_$$"
    psql -q "$pg" -c "CREATE SCHEMA $schema" >/dev/null
    case "$pg" in *\?*) url="$pg&options=-csearch_path%3D$schema" ;; *) url="$pg?options=-csearch_path%3D$schema" ;; esac
    ;;
  *) echo "error: backend is sqlite or postgresql, not '$backend'" >&2; exit 2 ;;
esac

"$server" --db "$url" --listen 127.0.0.1:0 --threads "$connections" >"$tmp/out" 2>"$tmp/err" &
pid=$!
line=""
for _ in $(seq 1 200); do
  line=$(head -n 1 "$tmp/out" 2>/dev/null || true)
  case "$line" in listening*) break ;; esac
  sleep 0.05
done
case "$line" in listening*) ;; *) echo "error: the server did not start:" >&2; cat "$tmp/err" >&2; exit 1 ;; esac
base=${line#listening on }

ids=()
for i in $(seq 1 100); do
  body=$(curl -sf -X POST -H 'Content-Type: application/json' \
    -d "{\"user\": {\"channel\": \"bench\", \"external_id\": \"user$i\"}}" \
    "$base/api/v1/conversations")
  ids+=("$(printf '%s' "$body" | grep -o '"id":[0-9]*' | head -n 1 | cut -d: -f2)")
done

{
  echo "local ids = {$(IFS=,; echo "${ids[*]}")}"
  cat <<'EOF'
local body = '{"content": "Hello! Could you tell me what is on my calendar this week, please?"}'
local headers = {["Content-Type"] = "application/json"}
request = function()
  local id = ids[math.random(#ids)]
  return wrk.format("POST", "/api/v1/conversations/" .. id .. "/messages", headers, body)
end
EOF
} >"$tmp/post.lua"

threads=2
[ "$connections" -lt 2 ] && threads=1
wrk -t"$threads" -c"$connections" -d"${seconds}s" --latency -s "$tmp/post.lua" "$base" | tee "$tmp/wrk.txt"

if grep -q "Non-2xx" "$tmp/wrk.txt"; then
  echo "error: some requests failed; server log:" >&2
  tail -n 20 "$tmp/err" >&2
  exit 1
fi
rps=$(awk '/^Requests\/sec:/ {print $2}' "$tmp/wrk.txt")
p50=$(awk '$1 == "50%" {print $2}' "$tmp/wrk.txt")
p99=$(awk '$1 == "99%" {print $2}' "$tmp/wrk.txt")
messages=$(curl -sf "$base/api/v1/stats" | grep -o '"messages":[0-9]*' | head -n 1 | cut -d: -f2)
echo "assistant_server $backend: $rps requests/s, p50 $p50, p99 $p99 ($connections connections, ${seconds}s; $messages messages stored)"
