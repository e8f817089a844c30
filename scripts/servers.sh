#!/usr/bin/env bash
# Copyright (c) the convstore authors.
# SPDX-License-Identifier: MIT
#
# Throwaway PostgreSQL and Redis servers on 127.0.0.1 for the test suite.
# Source this file, then call `start_postgres DIR` / `start_redis DIR` and
# `stop_servers` (also installed as an EXIT trap by the callers).
# On success start_postgres exports CONVSTORE_TEST_PG_URL and start_redis
# exports CONVSTORE_TEST_REDIS_URL.

# free_port: a TCP port on 127.0.0.1 that nothing listens on. Asks the kernel
# through python3 when there is one; otherwise tries random ports until a
# connection to one is refused.
free_port() {
  local port
  if port=$(python3 - 2>/dev/null <<'PY'
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
PY
  ) && [ -n "$port" ]; then
    echo "$port"
    return 0
  fi
  for _ in $(seq 100); do
    port=$((20000 + RANDOM % 20000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return 0
    fi
  done
  echo "servers: no free port found" >&2
  return 1
}

pg_bindir() {
  local d
  d=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  [ -n "$d" ] && [ -x "$d/initdb" ] && echo "$d"
}

# start_postgres DIR: initdb a cluster under DIR (owned by postgres when run as
# root, since initdb refuses to run as root) and start it on a free port.
start_postgres() {
  local dir=$1 bin port as=()
  bin=$(pg_bindir) || { echo "servers: no PostgreSQL server binaries found" >&2; return 1; }
  port=$(free_port) || return 1
  mkdir -p "$dir/pgdata" "$dir/pgsock" "$dir/pglog" || return 1
  dir=$(cd "$dir" && pwd)
  if [ "$(id -u)" = 0 ]; then
    chown -R postgres:postgres "$dir/pgdata" "$dir/pgsock" "$dir/pglog" || return 1
    chmod 755 "$dir"
    as=(runuser -u postgres --)
    if ! "${as[@]}" test -w "$dir/pgdata"; then
      echo "servers: user postgres cannot reach $dir/pgdata (make its parent directories" \
        "searchable: chmod o+x)" >&2
      return 1
    fi
  fi
  # The server processes run in DIR, a directory the postgres user can enter.
  (cd "$dir" && "${as[@]}" "$bin/initdb" -D "$dir/pgdata" -U convstore --auth=trust -E UTF8 \
    --locale=C.UTF-8 --no-sync >"$dir/initdb.log" 2>&1) || { cat "$dir/initdb.log" >&2; return 1; }
  cat >>"$dir/pgdata/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir/pgsock'
max_connections = 200
fsync = on
CONF
  PG_DATA_DIR="$dir/pgdata"
  PG_RUN_AS=("${as[@]}")
  PG_BIN=$bin
  (cd "$dir" && "${as[@]}" "$bin/pg_ctl" -D "$dir/pgdata" -l "$dir/pglog/postgres.log" -w -t 60 \
    start >/dev/null) || { cat "$dir/pglog/postgres.log" >&2; return 1; }
  (cd "$dir" && "${as[@]}" "$bin/createdb" -h 127.0.0.1 -p "$port" -U convstore convstore_test) ||
    return 1
  export CONVSTORE_TEST_PG_URL="postgresql://convstore@127.0.0.1:$port/convstore_test"
  echo "servers: PostgreSQL on 127.0.0.1:$port"
}

# start_redis DIR: a Redis without persistence on a free port, its pid file
# and log in DIR.
start_redis() {
  local dir=$1 port
  command -v redis-server >/dev/null || { echo "servers: redis-server not found" >&2; return 1; }
  port=$(free_port) || return 1
  mkdir -p "$dir" || return 1
  dir=$(cd "$dir" && pwd)
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
    --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" --dir "$dir" || return 1
  # The pid file is written once the server listens.
  for _ in $(seq 50); do
    [ -s "$dir/redis.pid" ] && break
    sleep 0.1
  done
  if [ ! -s "$dir/redis.pid" ]; then
    echo "servers: Redis did not start on port $port:" >&2
    cat "$dir/redis.log" >&2 2>/dev/null
    return 1
  fi
  REDIS_PID_FILE="$dir/redis.pid"
  export CONVSTORE_TEST_REDIS_URL="redis://127.0.0.1:$port/0"
  echo "servers: Redis on 127.0.0.1:$port"
}

# stop_servers: stops what start_postgres / start_redis started, and only
# that. Never fails, so it is safe in an EXIT trap under `set -e`.
stop_servers() {
  if [ -n "${PG_DATA_DIR:-}" ] && [ -f "$PG_DATA_DIR/postmaster.pid" ]; then
    (cd "$PG_DATA_DIR" && "${PG_RUN_AS[@]}" "$PG_BIN/pg_ctl" -D "$PG_DATA_DIR" -m fast -w stop \
      >/dev/null 2>&1) || kill "$(head -n 1 "$PG_DATA_DIR/postmaster.pid")" 2>/dev/null || true
  fi
  if [ -n "${REDIS_PID_FILE:-}" ] && [ -f "$REDIS_PID_FILE" ]; then
    kill "$(cat "$REDIS_PID_FILE")" 2>/dev/null || true
  fi
  PG_DATA_DIR='' REDIS_PID_FILE=''
  return 0
}
