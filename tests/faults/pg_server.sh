#!/usr/bin/env bash
# Copyright (c) the convstore authors.
# SPDX-License-Identifier: MIT
#
# A throwaway PostgreSQL server for the restart faults (test_pg_restart.cpp),
# never the shared one: its cluster, socket and log live under DIR.
#
#   pg_server.sh start DIR            initdb and start on a free port; prints
#                                     the URL (also written to DIR/url)
#   pg_server.sh stop DIR fast|immediate
#                                     pg_ctl stop with that shutdown mode
#   pg_server.sh restart DIR          pg_ctl start again (same port)
#   pg_server.sh destroy DIR          stop (immediate) if running
#
# Exits non-zero with the reason on stderr when it cannot.
set -u
cmd=${1:?command}
dir=${2:?directory}
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../../scripts/servers.sh
. "$here/../../scripts/servers.sh"

state="$dir/pg_server.env"

load() {
  [ -f "$state" ] || { echo "pg_server: no server under $dir" >&2; exit 1; }
  # shellcheck disable=SC1090
  . "$state"
  as=()
  if [ "$(id -u)" = 0 ]; then as=(runuser -u postgres --); fi
}

pg_ctl_() {
  (cd "$dir" && "${as[@]}" "$PG_BIN/pg_ctl" -D "$PG_DATA_DIR" "$@")
}

case $cmd in
  start)
    mkdir -p "$dir" || exit 1
    dir=$(cd "$dir" && pwd)
    start_postgres "$dir" >/dev/null || exit 1
    # The restarts stop server processes, never the machine: what a commit
    # wrote is in the kernel's page cache either way, so fsync only makes
    # the restarts slower (crash recovery's checkpoint).
    echo "fsync = off" >>"$PG_DATA_DIR/postgresql.conf"
    (cd "$dir" && "${PG_RUN_AS[@]}" "$PG_BIN/pg_ctl" -D "$PG_DATA_DIR" reload >/dev/null) || exit 1
    printf 'PG_BIN=%q\nPG_DATA_DIR=%q\n' "$PG_BIN" "$PG_DATA_DIR" >"$state"
    echo "$CONVSTORE_TEST_PG_URL" >"$dir/url"
    echo "$CONVSTORE_TEST_PG_URL"
    ;;
  stop)
    load
    mode=${3:?fast or immediate}
    pg_ctl_ -m "$mode" -w -t 30 stop >/dev/null
    ;;
  restart)
    load
    pg_ctl_ -l "$dir/pglog/postgres.log" -w -t 60 start >/dev/null ||
      { tail -n 20 "$dir/pglog/postgres.log" >&2; exit 1; }
    ;;
  destroy)
    [ -f "$state" ] || exit 0
    load
    if [ -f "$PG_DATA_DIR/postmaster.pid" ]; then
      pg_ctl_ -m immediate -w -t 30 stop >/dev/null 2>&1 ||
        kill -9 "$(head -n 1 "$PG_DATA_DIR/postmaster.pid")" 2>/dev/null
    fi
    exit 0
    ;;
  *)
    echo "pg_server: unknown command $cmd" >&2
    exit 2
    ;;
esac
