#!/usr/bin/env bash
# `make bench`: builds the release binaries, then measures throughput and latency against this
# machine's Postgres and Redis and writes bench/results.md and bench/results.svg. Every
# deployment it starts gets its own database and Redis namespace, removed afterwards.
# Arguments go to the bench binary: `bash scripts/bench.sh --quick` checks the harness quickly.
set -euo pipefail
cd "$(dirname "$0")/.."

export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"

cargo build --release --bins
exec ./target/release/bench "$@"
