#!/usr/bin/env bash
# `make test`: every test against a real Postgres and a real Redis. Where nothing answers at
# DATABASE_URL / REDIS_URL and Docker is available, the compose.yaml services are started.
set -euo pipefail
cd "$(dirname "$0")/.."

export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"

hostport() { # URL -> "host port"
  local rest=${1#*://}; rest=${rest#*@}; rest=${rest%%/*}
  echo "${rest%:*} ${rest##*:}"
}
reachable() { # host port
  timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null
}

read -r pg_host pg_port < <(hostport "$DATABASE_URL")
read -r rd_host rd_port < <(hostport "$REDIS_URL")
if ! reachable "$pg_host" "$pg_port" || ! reachable "$rd_host" "$rd_port"; then
  if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
    echo "Postgres or Redis not reachable: starting them from compose.yaml"
    docker compose up -d --wait postgres redis
  else
    echo "Postgres ($pg_host:$pg_port) or Redis ($rd_host:$rd_port) is not reachable, and no Docker engine runs." >&2
    exit 1
  fi
fi

# The chaos test and the browser tests drive the real binaries as processes: build them first.
cargo build --workspace --bins
cargo test --workspace --all-targets "$@"

# Browser tests (e2e/): the checkout page in headless Chromium against the real api, worker and
# stripe-sim binaries, each run with its own database and Redis prefix (see docs/checkout.md).
chromium=${CHROMIUM:-/usr/bin/chromium}
if [ ! -x "$chromium" ] || ! command -v npm >/dev/null; then
  if [ -n "${CI:-}" ]; then
    echo "browser tests need $chromium and node/npm (apt-get install chromium); .ci/run installs chromium" >&2
    exit 1
  fi
  echo "################################################################################" >&2
  echo "# WARNING: $chromium or npm is missing: the browser tests (e2e/) were SKIPPED." >&2
  echo "#          Install with: apt-get install -y chromium" >&2
  echo "################################################################################" >&2
  exit 0
fi
cd e2e
[ -d node_modules ] || npm ci --no-audit --no-fund
CHROMIUM="$chromium" node --test --test-concurrency=1 checkout.test.mjs sessions.test.mjs
