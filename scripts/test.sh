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
