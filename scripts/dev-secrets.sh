#!/usr/bin/env bash
# Development secrets for compose.yaml under ${SECRETS_DIR:-./secrets}: a random Postgres
# password (and the DATABASE_URL that carries it), stripe-sim's key, a development webhook
# secret, a random merchant key and admin token. Existing files are kept. For production, put
# your own files there (or point SECRETS_DIR elsewhere): see docs/deploy.md.
set -euo pipefail
cd "$(dirname "$0")/.."

dir=${SECRETS_DIR:-./secrets}
mkdir -p "$dir"
random() { od -An -N16 -tx1 /dev/urandom | tr -d ' \n'; }
put() { # name value
  if [ ! -s "$dir/$1" ]; then
    printf '%s\n' "$2" > "$dir/$1"
    # The containers run as `nobody`: the files are mounted as they are here.
    chmod 644 "$dir/$1"
    echo "wrote $dir/$1"
  fi
}
put postgres_password "$(random)"
put database_url "postgres://postgres:$(tr -d '\n' < "$dir/postgres_password")@postgres:5432/payments"
put stripe_secret_key sk_test_simulator
put stripe_webhook_secret whsec_dev_simulator_only
put merchant_api_key "mk_dev_$(random)"
put admin_token "admin_dev_$(random)"
# With --profile dev the worker charges against stripe-sim, not api.stripe.com:
#   docker compose --env-file secrets/dev.env --profile dev up
if [ ! -f "$dir/dev.env" ]; then
  printf 'STRIPE_API_BASE=http://stripe-sim:12111\nSTRIPE_SIM_PUBLIC_URL=http://127.0.0.1:12111\n' > "$dir/dev.env"
  echo "wrote $dir/dev.env"
fi
