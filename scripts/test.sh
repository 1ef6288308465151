#!/usr/bin/env bash
# `make test`: every test against a real Postgres and a real Redis: the ones at DATABASE_URL /
# REDIS_URL, or, where nothing answers, started from compose.yaml or privately under
# target/services/ (scripts/services.sh), and stopped again at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"

. scripts/services.sh
trap services_down EXIT
services_up

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
