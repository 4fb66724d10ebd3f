#!/usr/bin/env bash
# A throwaway PostgreSQL for the test suite (the PostgresStore tests need a real server).
#
#   bash scripts/test-postgres.sh start    # start (or reuse) the cluster; prints its URL, also in $DIR/url
#   bash scripts/test-postgres.sh url      # prints the URL of the running cluster
#   bash scripts/test-postgres.sh status   # exit 0 when it runs, 1 when not
#   bash scripts/test-postgres.sh stop     # stops it (pg_ctl stop -m fast); the data directory stays
#   bash scripts/test-postgres.sh destroy  # stops it and removes $DIR
#
# DIR is $AEGIS_TEST_PG_DIR (default /tmp/aegis-test-pg-<12 hex of this checkout's path>, so two checkouts on one
# machine never share, stop or reuse each other's cluster): data/ (the cluster), the unix socket, postgres.log, port,
# url. The server listens on 127.0.0.1 only, on the first free port from 55432 up, with fsync off (test data is
# disposable). Role `aegis` (not a superuser) owns database `aegis_test` and logs in without a password over
# loopback and the socket: never point this at anything but tests.
#
# Binaries: Debian's /usr/lib/postgresql/<newest>/bin, else initdb/pg_ctl on PATH. When they are missing and we are
# root, `apt-get install postgresql` (without Debian's default `main` cluster). PostgreSQL refuses to run as root:
# as root the cluster belongs to the `postgres` system user (created by the package), else to a system user
# `aegis-pg` made for the purpose; as anyone else it runs as the current user.
set -euo pipefail

CHECKOUT="$(cd "$(dirname "$0")/.." && pwd -P)"
DIR="${AEGIS_TEST_PG_DIR:-/tmp/aegis-test-pg-$(printf '%s' "$CHECKOUT" | sha256sum | cut -c1-12)}"
DATA="$DIR/data"
FIRST_PORT=55432
ROLE=aegis
DATABASE=aegis_test

die() {
  echo "test-postgres: $*" >&2
  exit 1
}

find_bindir() {
  local dir
  dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
  if [ -n "$dir" ] && [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then
    echo "$dir"
    return 0
  fi
  if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
    dirname "$(command -v initdb)"
    return 0
  fi
  return 1
}

install_postgres() {
  [ "$(id -u)" -eq 0 ] || die "PostgreSQL is not installed (no initdb/pg_ctl); install it (Debian/Ubuntu: sudo apt-get install postgresql) or run this script as root"
  command -v apt-get >/dev/null 2>&1 || die "PostgreSQL is not installed and this host has no apt-get; install PostgreSQL (initdb, pg_ctl, psql) by hand"
  echo "test-postgres: installing PostgreSQL with apt-get" >&2
  # No `main` cluster: we only want the binaries.
  mkdir -p /etc/postgresql-common
  [ -e /etc/postgresql-common/createcluster.conf ] ||
    echo 'create_main_cluster = false' >/etc/postgresql-common/createcluster.conf
  DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o Dpkg::Options::=--force-confold postgresql >&2
}

BIN="$(find_bindir || true)"
if [ -z "$BIN" ] && [ "${1:-}" = start ]; then
  install_postgres
  BIN="$(find_bindir)" || die "apt-get installed postgresql but initdb/pg_ctl are still missing"
fi

# Who owns and runs the cluster.
if [ "$(id -u)" -eq 0 ]; then
  if id postgres >/dev/null 2>&1; then
    PG_USER=postgres
  else
    PG_USER=aegis-pg
  fi
else
  PG_USER="$(id -un)"
fi

as_pg() {
  if [ "$(id -u)" -eq 0 ]; then
    if command -v runuser >/dev/null 2>&1; then
      runuser -u "$PG_USER" -- "$@"
    else
      su -s /bin/sh "$PG_USER" -c "$(printf '%q ' "$@")"
    fi
  else
    "$@"
  fi
}

is_running() {
  [ -n "$BIN" ] && [ -f "$DATA/PG_VERSION" ] && as_pg "$BIN/pg_ctl" status -D "$DATA" >/dev/null 2>&1
}

url_for() {
  echo "postgres://$ROLE@127.0.0.1:$1/$DATABASE"
}

port_busy() {
  # Something accepts connections on 127.0.0.1:$1 (bash's /dev/tcp; the subshell closes the socket).
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

psql_admin() {
  as_pg "$BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$DIR" -p "$1" -U postgres -d postgres -tA -c "$2"
}

init_cluster() {
  echo "test-postgres: creating a cluster in $DATA" >&2
  as_pg "$BIN/initdb" -D "$DATA" -U postgres --encoding=UTF8 --locale=C --auth=trust >/dev/null
  as_pg tee -a "$DATA/postgresql.conf" >/dev/null <<EOF

# --- scripts/test-postgres.sh: a disposable cluster for tests ---
listen_addresses = '127.0.0.1'
unix_socket_directories = '$DIR'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
shared_buffers = 32MB
logging_collector = off
EOF
}

write_hba() {
  # The superuser only over the socket (whose directory only $PG_USER and root can enter); the test role also over
  # loopback TCP (any database, so tests can see how a missing one is reported). Everything else is refused.
  as_pg tee "$DATA/pg_hba.conf" >/dev/null <<EOF
# TYPE  DATABASE      USER      ADDRESS        METHOD
local   all           all                      trust
host    all           $ROLE     127.0.0.1/32   trust
EOF
}

start() {
  mkdir -p "$DIR"
  if [ "$(id -u)" -eq 0 ]; then
    if ! id "$PG_USER" >/dev/null 2>&1; then
      useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$PG_USER"
    fi
    chown "$PG_USER" "$DIR"
  fi
  chmod 0700 "$DIR"
  as_pg test -w "$DIR" ||
    die "$PG_USER cannot write $DIR (is a parent directory closed to it?); set AEGIS_TEST_PG_DIR to a directory under /tmp"

  if is_running; then
    local port
    port="$(cat "$DIR/port")"
    write_hba
    as_pg "$BIN/pg_ctl" reload -D "$DATA" >/dev/null
  else
    [ -f "$DATA/PG_VERSION" ] || init_cluster
    write_hba
    local port=$FIRST_PORT started=0 attempt
    for attempt in 1 2 3 4 5 6 7 8 9 10; do
      while port_busy "$port"; do port=$((port + 1)); done
      # 9>&-: the server must not inherit the lock on $DIR/.lock (it would hold it for its whole life).
      if as_pg "$BIN/pg_ctl" start -D "$DATA" -l "$DIR/postgres.log" -w -t 60 -o "-p $port" >/dev/null 9>&-; then
        started=1
        break
      fi
      # Lost a race for the port (or something else): the log says which; try the next port.
      echo "test-postgres: start on port $port failed (attempt $attempt), see $DIR/postgres.log" >&2
      port=$((port + 1))
    done
    [ "$started" -eq 1 ] || die "could not start PostgreSQL; last lines of $DIR/postgres.log:
$(tail -n 20 "$DIR/postgres.log" 2>/dev/null)"
    echo "$port" >"$DIR/port"
  fi

  if [ "$(psql_admin "$port" "SELECT 1 FROM pg_roles WHERE rolname = '$ROLE'")" != 1 ]; then
    psql_admin "$port" "CREATE ROLE $ROLE LOGIN"
  fi
  # The server's end-to-end tests give each server its own database (test/server/harness.ts).
  psql_admin "$port" "ALTER ROLE $ROLE CREATEDB" >/dev/null
  if [ "$(psql_admin "$port" "SELECT 1 FROM pg_database WHERE datname = '$DATABASE'")" != 1 ]; then
    psql_admin "$port" "CREATE DATABASE $DATABASE OWNER $ROLE"
  fi
  url_for "$port" >"$DIR/url"
  chmod 0644 "$DIR/url"
  cat "$DIR/url"
}

stop() {
  if is_running; then
    as_pg "$BIN/pg_ctl" stop -D "$DATA" -m fast -w >/dev/null
    echo "test-postgres: stopped the cluster in $DATA" >&2
  fi
  rm -f "$DIR/url"
}

case "${1:-}" in
  start)
    # One `start` at a time per DIR (two test runs starting together).
    mkdir -p "$DIR"
    if command -v flock >/dev/null 2>&1; then
      exec 9>"$DIR/.lock"
      flock 9
    fi
    start
    ;;
  stop) stop ;;
  destroy)
    stop
    rm -rf "$DIR"
    ;;
  status)
    if is_running; then
      echo "running: $(cat "$DIR/url" 2>/dev/null || url_for "$(cat "$DIR/port")")"
    else
      echo "not running" >&2
      exit 1
    fi
    ;;
  url)
    is_running || die "no test cluster runs in $DIR; start one with: bash scripts/test-postgres.sh start"
    cat "$DIR/url"
    ;;
  *)
    echo "usage: $0 start|stop|url|status|destroy" >&2
    exit 2
    ;;
esac
