#!/usr/bin/env bash
# `make bench`: builds the release binaries, then measures throughput and latency against this
# machine's Postgres and Redis and writes bench/results.md and bench/results.svg. Every
# deployment it starts gets its own database and Redis namespace, removed afterwards.
# Arguments go to the bench binary: `bash scripts/bench.sh --quick` checks the harness quickly.
set -euo pipefail
cd "$(dirname "$0")/.."

export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"

# `hey`, the ordinary load generator the latency figures are cross-checked with, and pgbench
# (PostgreSQL's client tools), for the naive ceiling; Debian's packages.
missing=()
command -v hey >/dev/null || missing+=(hey)
command -v pgbench >/dev/null || missing+=(postgresql-client)
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing ${missing[*]} (Debian packages)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "bench: ${missing[*]} missing; install with: sudo apt-get install ${missing[*]}" >&2
  fi
fi

cargo build --release --bins
exec ./target/release/bench "$@"
