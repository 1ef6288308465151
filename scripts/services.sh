#!/usr/bin/env bash
# Postgres and Redis for `make run` and `make test`, whatever the machine has. For each of
# DATABASE_URL and REDIS_URL, in order:
#   1. something answers there: use it;
#   2. a Docker engine runs: start it from compose.yaml (development secrets under ./secrets/);
#   3. the server binaries are installed (Debian's postgresql, redis-server): start a private one
#      under target/services/ on that host and port (initdb on first use; the data is kept
#      between runs), as an unprivileged user when we are root (initdb and postgres refuse root);
#   4. otherwise: say what to install, and fail.
# Each run says which of these happened. `services_down` stops what `services_up` started.
#
# Sourced by scripts/run.sh and scripts/test.sh; also a command of its own:
#   bash scripts/services.sh up | down
# SERVICES_DIR (default target/services); for tests, SERVICES_NO_DOCKER=1 and
# SERVICES_NO_PRIVATE=1 skip steps 2 and 3.

SERVICES_DIR=${SERVICES_DIR:-target/services}
# What this shell's services_up started, so services_down stops only that.
services_started=""

services_hostport() { # URL -> "host port" (the URL's defaults: 5432 / 6379)
  local url=$1 default=$2 rest
  rest=${url#*://}; rest=${rest##*@}; rest=${rest%%/*}; rest=${rest%%\?*}
  case $rest in
    *:*) echo "${rest%:*} ${rest##*:}" ;;
    *) echo "${rest:-127.0.0.1} $default" ;;
  esac
}

services_reachable() { # host port
  timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null
}

services_wait() { # what host port
  for _ in $(seq 1 120); do
    if services_reachable "$2" "$3"; then return 0; fi
    sleep 0.5
  done
  echo "$1 did not come up at $2:$3" >&2
  return 1
}

# Runs a command as the unprivileged user that owns the private Postgres when we are root.
services_as_pg_user() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u "$(services_pg_user)" -- "$@"
  else
    "$@"
  fi
}

services_pg_user() {
  if [ -n "${SERVICES_USER:-}" ]; then echo "$SERVICES_USER"
  elif id postgres >/dev/null 2>&1; then echo postgres
  else echo nobody
  fi
}

services_pg_bin() {
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  if [ -n "$dir" ] && [ -x "$dir/initdb" ]; then echo "$dir"; return 0; fi
  if command -v initdb >/dev/null 2>&1; then dirname "$(command -v initdb)"; return 0; fi
  return 1
}

services_docker() {
  [ -z "${SERVICES_NO_DOCKER:-}" ] && command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1
}

services_start_private_postgres() { # host port
  local bin dir data user
  [ -z "${SERVICES_NO_PRIVATE:-}" ] || return 1
  bin=$(services_pg_bin) || return 1
  dir="$SERVICES_DIR/postgres"
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  data="$dir/data"
  # The database user the URL names becomes the cluster's superuser (trust, loopback only).
  user=${DATABASE_URL#*://}; user=${user%%@*}; user=${user%%:*}
  case $user in *'/'*|'') user=postgres ;; esac
  if [ "$(id -u)" = 0 ]; then chown "$(services_pg_user)" "$dir"; fi
  if [ ! -f "$data/PG_VERSION" ]; then
    services_as_pg_user "$bin/initdb" -D "$data" -U "$user" --auth=trust -E UTF8 \
      > "$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; return 1; }
    # TLS as a production server has it (the TLS tests expect `ssl = on`): a self-signed
    # certificate, when openssl is there.
    if command -v openssl >/dev/null 2>&1; then
      services_as_pg_user openssl req -new -x509 -days 3650 -nodes -subj /CN=localhost \
        -keyout "$data/server.key" -out "$data/server.crt" > /dev/null 2>&1 \
        && services_as_pg_user chmod 600 "$data/server.key" \
        && echo "ssl = on" >> "$data/postgresql.conf"
    fi
    echo "Postgres: initialised a private cluster in $data (kept between runs)"
  fi
  services_as_pg_user "$bin/pg_ctl" -D "$data" -l "$dir/postgres.log" -w -t 60 \
    -o "-p $2 -k $dir -c listen_addresses=$1" start > /dev/null \
    || { tail -20 "$dir/postgres.log" >&2; return 1; }
  echo "Postgres: nothing answered at $1:$2, so a private one was started there from $data ($bin)"
}

services_stop_private_postgres() {
  local bin data="$SERVICES_DIR/postgres/data"
  [ -f "$data/postmaster.pid" ] || return 0
  bin=$(services_pg_bin) || return 0
  services_as_pg_user "$bin/pg_ctl" -D "$(cd "$data" && pwd)" -m fast -w stop > /dev/null 2>&1 || true
  echo "Postgres: stopped the private one (its data stays in $data)"
}

services_start_private_redis() { # host port
  local dir="$SERVICES_DIR/redis"
  [ -z "${SERVICES_NO_PRIVATE:-}" ] || return 1
  command -v redis-server >/dev/null 2>&1 || return 1
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  redis-server --bind "$1" --port "$2" --save "" --appendonly no --daemonize yes \
    --dir "$dir" --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" > /dev/null
  services_wait Redis "$1" "$2" || return 1
  echo "Redis: nothing answered at $1:$2, so a private one was started there (redis-server, no persistence)"
}

services_stop_private_redis() {
  local pidfile="$SERVICES_DIR/redis/redis.pid"
  [ -f "$pidfile" ] || return 0
  kill "$(cat "$pidfile")" 2>/dev/null || true
  for _ in $(seq 1 50); do [ -f "$pidfile" ] || break; sleep 0.1; done
  rm -f "$pidfile"
  echo "Redis: stopped the private one"
}

services_up() {
  local pg_host pg_port rd_host rd_port need_pg=0 need_rd=0 missing=()
  read -r pg_host pg_port < <(services_hostport "$DATABASE_URL" 5432)
  read -r rd_host rd_port < <(services_hostport "$REDIS_URL" 6379)
  services_reachable "$pg_host" "$pg_port" || need_pg=1
  services_reachable "$rd_host" "$rd_port" || need_rd=1
  [ $need_pg = 1 ] || echo "Postgres: using the one at $pg_host:$pg_port"
  [ $need_rd = 1 ] || echo "Redis: using the one at $rd_host:$rd_port"
  if [ $need_pg = 0 ] && [ $need_rd = 0 ]; then return 0; fi

  mkdir -p "$SERVICES_DIR"
  if services_docker; then
    local wanted=()
    [ $need_pg = 1 ] && wanted+=(postgres)
    [ $need_rd = 1 ] && wanted+=(redis)
    bash scripts/dev-secrets.sh > /dev/null
    docker compose up -d --wait "${wanted[@]}"
    printf '%s\n' "${wanted[@]}" > "$SERVICES_DIR/compose-started"
    services_started="compose"
    if [ $need_pg = 1 ]; then
      # compose's Postgres has a password (secrets/postgres_password); the database as named.
      local db=${DATABASE_URL##*/}
      DATABASE_URL="postgres://postgres:$(tr -d '\n' < "${SECRETS_DIR:-./secrets}/postgres_password")@127.0.0.1:5432/${db%%\?*}"
      export DATABASE_URL
    fi
    echo "${wanted[*]}: nothing answered, so started from compose.yaml (Docker)"
    return 0
  fi

  if [ $need_pg = 1 ]; then
    if services_start_private_postgres "$pg_host" "$pg_port"; then
      services_started="$services_started postgres"
    else
      missing+=("PostgreSQL (apt-get install postgresql)")
    fi
  fi
  if [ $need_rd = 1 ]; then
    if services_start_private_redis "$rd_host" "$rd_port"; then
      services_started="$services_started redis"
    else
      missing+=("Redis (apt-get install redis-server)")
    fi
  fi
  if [ ${#missing[@]} -gt 0 ]; then
    cat >&2 <<EOT
Nothing answers at DATABASE_URL ($pg_host:$pg_port) or REDIS_URL ($rd_host:$rd_port), no Docker
engine runs here, and the server binaries are not installed, so they cannot be started for
you. Either point DATABASE_URL and REDIS_URL at a Postgres (13 or later) and a Redis (6 or
later) you run, start Docker (then compose.yaml's are used), or install what is missing:
${missing[*]}; it is then started privately under $SERVICES_DIR/ on its own.
EOT
    return 1
  fi
}

services_down() { # [all]: also what an earlier `services.sh up` started
  local what=$services_started
  [ "${1:-}" = all ] && what="compose postgres redis"
  case " $what " in *" compose "*)
    if [ -f "$SERVICES_DIR/compose-started" ]; then
      # shellcheck disable=SC2046
      docker compose stop $(cat "$SERVICES_DIR/compose-started") > /dev/null 2>&1 || true
      rm -f "$SERVICES_DIR/compose-started"
      echo "stopped compose's services (their data stays in Docker volumes)"
    fi ;;
  esac
  case " $what " in *" redis "*) services_stop_private_redis ;; esac
  case " $what " in *" postgres "*) services_stop_private_postgres ;; esac
  services_started=""
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  cd "$(dirname "$0")/.."
  export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/payments}"
  export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
  case "${1:-}" in
    up) services_up ;;
    down) services_down all ;;
    *) echo "usage: bash scripts/services.sh up|down" >&2; exit 2 ;;
  esac
fi
