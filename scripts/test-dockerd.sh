#!/usr/bin/env bash
# A private Docker Engine for the test suite (the `docker` runtime's tests need a real dockerd).
#
#   bash scripts/test-dockerd.sh start    # start (or reuse) it; prints its URL (unix://…/docker.sock), also in $DIR/url
#   bash scripts/test-dockerd.sh url      # prints the URL of the running daemon
#   bash scripts/test-dockerd.sh status   # exit 0 when it runs, 1 when not
#   bash scripts/test-dockerd.sh stop     # stops it by its pid (SIGTERM, then SIGKILL after 20 s); data stays
#   bash scripts/test-dockerd.sh destroy  # stops it and removes $DIR
#
# DIR is $AEGIS_TEST_DOCKERD_DIR (default /tmp/aegis-test-dockerd-<12 hex of this checkout's path>, so two checkouts
# on one machine never share, stop or reuse each other's daemon): data/ (--data-root), exec/ (--exec-root),
# docker.sock, dockerd.pid, dockerd.log, url. The daemon listens on its unix socket only (no TCP), makes no bridge
# and touches no iptables rules (AEGIS runs every container with NetworkMode none), and runs its own containerd
# under exec/. Root only (dockerd needs it); when dockerd is missing, `apt-get install docker.io` (Debian's 20.10).
set -euo pipefail

CHECKOUT="$(cd "$(dirname "$0")/.." && pwd -P)"
DIR="${AEGIS_TEST_DOCKERD_DIR:-/tmp/aegis-test-dockerd-$(printf '%s' "$CHECKOUT" | sha256sum | cut -c1-12)}"
SOCK="$DIR/docker.sock"
PIDFILE="$DIR/dockerd.pid"

die() {
  echo "test-dockerd: $*" >&2
  exit 1
}

install_docker() {
  [ "$(id -u)" -eq 0 ] || die "dockerd is not installed; install it (Debian: sudo apt-get install docker.io) or run this script as root"
  command -v apt-get >/dev/null 2>&1 || die "dockerd is not installed and this host has no apt-get; install Docker Engine by hand"
  echo "test-dockerd: installing docker.io with apt-get" >&2
  DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    -o DPkg::Lock::Timeout=600 docker.io >&2
}

# Asks the Engine API itself (GET /_ping over the socket), so the docker CLI is not needed.
answers() {
  [ -S "$SOCK" ] && curl -sf --max-time 2 --unix-socket "$SOCK" http://docker/_ping >/dev/null 2>&1
}

daemon_pid() {
  local pid
  pid="$(cat "$PIDFILE" 2>/dev/null || true)"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

is_running() {
  daemon_pid >/dev/null && answers
}

start() {
  [ "$(id -u)" -eq 0 ] || die "a private dockerd needs root"
  command -v dockerd >/dev/null 2>&1 || install_docker
  command -v dockerd >/dev/null 2>&1 || die "apt-get installed docker.io but dockerd is still missing"
  mkdir -p "$DIR"
  chmod 0711 "$DIR"
  if is_running; then
    echo "unix://$SOCK" >"$DIR/url"
    cat "$DIR/url"
    return 0
  fi
  rm -f "$SOCK" "$PIDFILE"
  # setsid: the daemon is not in the caller's process group (a test runner's Ctrl-C does not reach it); 9>&-: it
  # must not inherit the start lock.
  setsid dockerd \
    --host "unix://$SOCK" \
    --data-root "$DIR/data" \
    --exec-root "$DIR/exec" \
    --pidfile "$PIDFILE" \
    --bridge=none --iptables=false --ip6tables=false --ip-masq=false \
    --userland-proxy=false \
    --storage-driver=overlay2 \
    >"$DIR/dockerd.log" 2>&1 </dev/null 9>&- &
  local pid=$! waited=0
  echo "$pid" >"$PIDFILE.launch"
  until answers; do
    kill -0 "$pid" 2>/dev/null || die "dockerd exited while starting; last lines of $DIR/dockerd.log:
$(tail -n 20 "$DIR/dockerd.log" 2>/dev/null)"
    waited=$((waited + 1))
    [ "$waited" -le 600 ] || {
      kill "$pid" 2>/dev/null || true
      die "dockerd did not answer on $SOCK within 60 s; see $DIR/dockerd.log"
    }
    sleep 0.1
  done
  # dockerd writes its own pidfile; keep ours in case it did not.
  [ -s "$PIDFILE" ] || echo "$pid" >"$PIDFILE"
  rm -f "$PIDFILE.launch"
  echo "unix://$SOCK" >"$DIR/url"
  chmod 0644 "$DIR/url"
  cat "$DIR/url"
}

stop() {
  local pid
  pid="$(daemon_pid || true)"
  if [ -n "$pid" ]; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      kill -9 "$pid" 2>/dev/null || true
      echo "test-dockerd: dockerd (pid $pid) did not stop in 20 s; killed" >&2
    else
      echo "test-dockerd: stopped dockerd (pid $pid)" >&2
    fi
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
    # Overlay mounts of containers a killed daemon left behind would keep files busy.
    grep -o " $DIR/[^ ]*" /proc/self/mounts 2>/dev/null | sort -r | while read -r mnt; do umount -l "$mnt" 2>/dev/null || true; done
    rm -rf "$DIR"
    ;;
  status)
    if is_running; then
      echo "running: unix://$SOCK (pid $(daemon_pid))"
    else
      echo "not running" >&2
      exit 1
    fi
    ;;
  url)
    is_running || die "no test dockerd runs in $DIR; start one with: bash scripts/test-dockerd.sh start"
    echo "unix://$SOCK"
    ;;
  *)
    echo "usage: $0 start|stop|url|status|destroy" >&2
    exit 2
    ;;
esac
