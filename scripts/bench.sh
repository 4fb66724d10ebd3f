#!/usr/bin/env bash
# The benchmark suite (`npm run bench -- [options] [scenario …]`): setup (idempotent), the peers it compares with,
# then bench/run.ts with the arguments given.
#
# Peers are measured side by side with AEGIS only when present, so this makes them present where it can:
#   - as root with apt-get: installs socat and ripgrep (sandbox-runtime needs them on Linux), runsc (gVisor) and
#     busybox-static (the Docker image's only binary); with --quick only those already installed are used, so a
#     smoke run stays under two minutes and downloads nothing. docker.io is installed by the full run too.
#     AEGIS_BENCH_NO_INSTALL=1 skips every install.
#   - when no dockerd answers but one is installed (and we are root), starts a private one for this run with
#     scripts/test-dockerd.sh (its own data root and socket under /tmp/aegis-test-dockerd-<checkout hash>, no bridge,
#     no iptables changes: containers run with --network none anyway), exports DOCKER_HOST/AEGIS_DOCKER_HOST for the
#     raw peers and the docker runtime, and stops it by its pid when the run ends. A dockerd that was already up
#     (the system's, or this checkout's test daemon) is used as is and left running.
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

# The private dockerd is scripts/test-dockerd.sh's (its directory is keyed by this checkout's path, so two checkouts
# benchmarking at once never share or stop each other's daemon). Stopped at the end only if this run started it.
started_dockerd=0
stop_dockerd() {
  [ "$started_dockerd" = 1 ] && bash scripts/test-dockerd.sh stop || true
}

if command -v docker >/dev/null 2>&1 && docker_up ""; then
  say "using the running dockerd"
elif [ "$(id -u)" -eq 0 ] && command -v dockerd >/dev/null 2>&1; then
  bash scripts/test-dockerd.sh status >/dev/null 2>&1 || started_dockerd=1
  trap stop_dockerd EXIT
  if url="$(bash scripts/test-dockerd.sh start)"; then
    export DOCKER_HOST="$url"
    export AEGIS_DOCKER_HOST="$url"
    say "$([ "$started_dockerd" = 1 ] && echo started || echo reusing) a private dockerd ($url)"
  else
    say "the private dockerd did not come up; Docker is reported absent"
  fi
fi

node bench/run.ts "$@"
