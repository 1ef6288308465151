#!/usr/bin/env bash
# `make run`: Postgres and Redis (used, started from compose.yaml, or started privately under
# target/services/: scripts/services.sh), then migrate and start stripe-sim (when no real Stripe
# key is set), the api and the worker in the foreground; Ctrl-C stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -f .env ]; then set -a; . ./.env; set +a; fi
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/payments}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"

. scripts/services.sh

cargo build --release --bin api --bin worker --bin stripe-sim
bin=target/release
pids=()
cleanup() {
  kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  services_down
}
trap cleanup EXIT INT TERM
services_up

if [ -z "${STRIPE_SECRET_KEY:-}" ]; then
  export STRIPE_SIM_ADDR="${STRIPE_SIM_ADDR:-127.0.0.1:12111}"
  export STRIPE_SECRET_KEY=sk_test_simulator
  export STRIPE_API_BASE="http://${STRIPE_SIM_ADDR}"
  echo "STRIPE_SECRET_KEY is unset: charging against stripe-sim at ${STRIPE_API_BASE}"
  # The sim sends its webhooks to our endpoint, signed with a development secret that the api
  # checks (a real deployment takes STRIPE_WEBHOOK_SECRET from Stripe's dashboard).
  export STRIPE_WEBHOOK_SECRET="${STRIPE_WEBHOOK_SECRET:-whsec_dev_simulator_only}"
  STRIPE_SIM_WEBHOOK_URL="${STRIPE_SIM_WEBHOOK_URL:-http://${API_ADDR:-127.0.0.1:8080}/webhooks/stripe}" \
    STRIPE_SIM_WEBHOOK_SECRET="$STRIPE_WEBHOOK_SECRET" "$bin/stripe-sim" & pids+=($!)
fi

if [ -z "${ADMIN_TOKEN:-}" ]; then
  # A one-off token for this development run, so /ops works; set ADMIN_TOKEN to choose your own.
  ADMIN_TOKEN="dev-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
  export ADMIN_TOKEN
  generated_admin_token=1
fi

"$bin/api" migrate
"$bin/api" & pids+=($!)
"$bin/worker" & pids+=($!)
echo "api on http://${API_ADDR:-127.0.0.1:8080} — try:"
echo "  curl -s -XPOST http://${API_ADDR:-127.0.0.1:8080}/transactions -H 'content-type: application/json' \\"
echo "       -d '{\"price\":\"basic\",\"email\":\"you@example.com\",\"payment_method\":\"pm_card_visa\"}'"
if [ -n "${generated_admin_token:-}" ]; then
  echo "ops page: http://${API_ADDR:-127.0.0.1:8080}/ops (any user name; password: this run's ADMIN_TOKEN=$ADMIN_TOKEN)"
fi
wait -n "${pids[@]}"
