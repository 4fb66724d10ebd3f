#!/usr/bin/env bash
# The benchmark suite (`npm run bench -- [options] [scenario …]`): setup (idempotent), the peers it compares with,
# then bench/run.ts with the arguments given.
#
# Peers are measured side by side with AEGIS only when present, so this makes them present where it can:
#   - as root with apt-get: installs socat and ripgrep (sandbox-runtime needs them on Linux), runsc (gVisor) and
#     busybox-static (the Docker image's only binary); with --quick only those already installed are used, so a
#     smoke run stays under two minutes and downloads nothing. docker.io is installed by the full run too.
#     AEGIS_BENCH_NO_INSTALL=1 skips every install.
#   - when no dockerd answers but one is installed (and we are root), starts a private one for this run: its own
#     data root and socket under /tmp/aegis-bench-dockerd, no bridge, no iptables changes (containers run with
#     --network none anyway), and stops it by its pid when the run ends. A dockerd that was already up is used as is.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --quiet
export PATH="$PWD/node_modules/.bin:$PATH"
hash -r

quick=0
for arg in "$@"; do [ "$arg" = "--quick" ] && quick=1; done
say() { echo "bench: $*" >&2; }

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1 && [ "${AEGIS_BENCH_NO_INSTALL:-}" != 1 ] && [ "$quick" = 0 ]; then
  want=()
  command -v socat >/dev/null 2>&1 || want+=(socat)
  command -v rg >/dev/null 2>&1 || want+=(ripgrep)
  command -v runsc >/dev/null 2>&1 || want+=(runsc)
  [ -x /bin/busybox ] || [ -x /usr/bin/busybox ] || want+=(busybox-static)
  command -v dockerd >/dev/null 2>&1 || want+=(docker.io)
  if [ "${#want[@]}" -gt 0 ]; then
    say "installing the peers' Debian packages: ${want[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    # policy-rc.d refuses service starts during the install: the daemon is started below, privately, not by dpkg.
    policy=/usr/sbin/policy-rc.d
    made_policy=0
    if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod 755 "$policy" && made_policy=1; fi
    apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null || say "install failed; the missing peers are reported absent"
    [ "$made_policy" = 1 ] && rm -f "$policy"
  fi
fi

docker_up() { docker ${1:+-H "$1"} version --format '{{.Server.Version}}' >/dev/null 2>&1; }

DOCKERD_DIR=/tmp/aegis-bench-dockerd
dockerd_pid=""
stop_dockerd() {
  if [ -n "$dockerd_pid" ] && kill -0 "$dockerd_pid" 2>/dev/null; then
    kill "$dockerd_pid"
    for _ in $(seq 1 100); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$dockerd_pid" 2>/dev/null && kill -9 "$dockerd_pid"
    say "stopped the private dockerd (pid $dockerd_pid)"
  fi
}

if command -v docker >/dev/null 2>&1 && docker_up ""; then
  say "using the running dockerd"
elif [ "$(id -u)" -eq 0 ] && command -v dockerd >/dev/null 2>&1; then
  mkdir -p "$DOCKERD_DIR"
  sock="$DOCKERD_DIR/docker.sock"
  dockerd --data-root "$DOCKERD_DIR/data" --exec-root "$DOCKERD_DIR/exec" --pidfile "$DOCKERD_DIR/dockerd.pid" \
    -H "unix://$sock" --bridge=none --iptables=false --ip6tables=false >"$DOCKERD_DIR/dockerd.log" 2>&1 &
  dockerd_pid=$!
  trap stop_dockerd EXIT
  for _ in $(seq 1 100); do docker_up "unix://$sock" && break; sleep 0.2; done
  if docker_up "unix://$sock"; then
    export DOCKER_HOST="unix://$sock"
    say "started a private dockerd (pid $dockerd_pid, $sock)"
  else
    say "the private dockerd did not come up (see $DOCKERD_DIR/dockerd.log); Docker is reported absent"
    stop_dockerd
    dockerd_pid=""
  fi
fi

node bench/run.ts "$@"
