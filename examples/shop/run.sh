#!/usr/bin/env bash
# Runs the example migration: the legacy shop (:8081, a second instance on :8083 for the shadow's
# noise learning), the new orders service (:8082), a local Kinesis (kinesis-local from npm, :4567),
# strangler (:8080, admin :9090), and two consumers of the shop-orders stream (consumers/): the
# projector that builds the new service's orders from the events, and a notifier. Each run starts
# from fresh data. Ctrl-C stops all. HTTPS=1 also listens on https://localhost:8443 with a
# self-signed certificate made here (run/tls.pem; needs the openssl CLI).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$here"
rm -rf run && mkdir -p run

echo "building strangler…"
cargo build --quiet -p strangler -p shop-consumers --manifest-path "$root/Cargo.toml"
target_dir="$(cargo metadata --format-version 1 --no-deps --manifest-path "$root/Cargo.toml" | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
bin="$target_dir/debug/strangler"
projector="$target_dir/debug/projector"
notifier="$target_dir/debug/notifier"

config=strangler.yaml
if [ "${HTTPS:-0}" = 1 ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 7 \
    -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
    -keyout run/tls.key -out run/tls.pem 2>/dev/null
  # The same config in run/ (paths in it are relative to its folder), with an HTTPS listener.
  sed -e 's|^listen: \["127.0.0.1:8080"\]|listen: ["127.0.0.1:8080", { address: "127.0.0.1:8443", tls: { cert: tls.pem, key: tls.key } }]|' \
      -e 's|^rules: rules|rules: ../rules|' -e 's|^store: "sqlite://run/|store: "sqlite://|' \
      strangler.yaml > run/strangler.yaml
  config=run/strangler.yaml
fi
"$bin" check "$config"

# Local Kinesis: kinesis-local (npm), installed once under ~/.cache/strangler-npm.
npm_dir="$HOME/.cache/strangler-npm"
kl="$npm_dir/node_modules/kinesis-local"
if [ ! -f "$kl/main.js" ]; then
  echo "installing kinesis-local (npm)…"
  mkdir -p "$npm_dir" && npm install --silent --no-audit --no-fund --prefix "$npm_dir" kinesis-local@0.6.2
fi
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-local}" AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-local}"
export STRANGLER_REDACT_SALT="${STRANGLER_REDACT_SALT:-example-salt}"

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

KINESIS_MOCK_CERT_PATH="$kl/server.json" KINESIS_MOCK_PLAIN_PORT=4567 KINESIS_MOCK_TLS_PORT=4568 \
  CREATE_STREAM_DURATION=0ms SHARD_LIMIT=1000 LOG_LEVEL=WARN node "$kl/main.js" >run/kinesis.log 2>&1 & pids+=($!)
for _ in $(seq 1 200); do curl -fs http://127.0.0.1:4567/healthcheck >/dev/null 2>&1 && break; sleep 0.1; done
"$bin" stream create --config "$config" --stream shop-orders >/dev/null
"$bin" stream create --config "$config" --stream shop-users >/dev/null
"$bin" stream create --config "$config" --stream shop-orders-v2 >/dev/null   # for the backfill demo

python3 legacy_shop.py 8081 run/legacy.db & pids+=($!)
python3 legacy_shop.py 8083 run/legacy.db & pids+=($!)
python3 orders_service.py 8082 run/orders.db & pids+=($!)
# Its log (an access line per request) goes to run/strangler.log; warnings and errors also here.
"$bin" run --config "$config" 2> >(tee run/strangler.log | grep --line-buffered -E ' (WARN|ERROR) ' >&2) & pids+=($!)
# The new service's read model (its orders table) from the events, and an independent notifier.
"$projector" --db sqlite://run/orders.db --endpoint http://127.0.0.1:4567 --region us-east-1 --metrics 127.0.0.1:9101 2>run/projector.log & pids+=($!)
"$notifier" --db sqlite://run/notifier.db --endpoint http://127.0.0.1:4567 --region us-east-1 --metrics 127.0.0.1:9102 2>run/notifier.log & pids+=($!)

for _ in $(seq 1 100); do
  curl -fs http://127.0.0.1:9090/readyz >/dev/null 2>&1 && break
  sleep 0.1
done

cat <<'TRY'

strangler is up: proxy http://127.0.0.1:8080, admin http://127.0.0.1:9090

Try:
  # place orders as ten users: the orders context's share of users is served by the new orders
  # service, each user always by the same side (placing, reading and cancelling alike)
  for u in alice bob carol dave erin frank grace heidi ivan judy; do
    curl -s -X POST localhost:8080/api/orders -H "x-user-id: $u" -H 'content-type: application/json' \
      -d '{"items":[{"sku":"tea","qty":2}]}'; echo
  done
  # sign up (published as USER_REGISTERED, e-mail hashed)
  curl -s -X POST localhost:8080/api/users -d '{"name":"Alice","email":"alice@example.com"}'; echo
  # a wholesale order stays on the monolith (JSONPath body rule)
  curl -s -X POST localhost:8080/api/orders -H 'x-user-id: alice' -d '{"items":[{"sku":"mug","qty":500}]}'; echo
  # everything else goes to the monolith
  curl -s localhost:8080/api/catalog; echo
  # routes, weights and request counts; Prometheus metrics
  curl -s localhost:9090/api/routes
  curl -s localhost:9090/metrics | grep strangler_requests_total
  # edit examples/shop/rules/orders.yaml and save: the proxy reloads at once

TRY
echo "  # the events published to Kinesis (ORDER_CREATED, USER_REGISTERED), one JSON line each"
echo "  # (kinesis-local accepts any credentials, but the AWS SDK wants some set)"
echo "  AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local $bin stream read --config $here/$config --stream shop-orders"
echo "  AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local $bin stream read --config $here/$config --stream shop-users"
echo "  curl -s localhost:9090/api/outbox   # events waiting, per stream"
echo "  # an order the monolith takes reaches the new service through the stream (the projector):"
echo "  # at the rollout's first step every user is on the monolith"
echo "  id=\$(curl -s -X POST localhost:8080/api/orders -H 'x-user-id: zoe' -d '{\"items\":[{\"sku\":\"tea\",\"qty\":1}]}' | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"id\"])')"
echo "  sleep 2; curl -s localhost:8082/api/orders/\$id; echo; curl -s localhost:8082/api/orders -H 'x-user-id: zoe'; echo"
echo "  grep 'Order confirmation' $here/run/notifier.log    # the notifier read the same events"
echo "  curl -s localhost:9101/metrics    # the projector's progress: lag per shard, events applied"
echo "  # backfill a new read model from the archive (events.keep_published): the order events of the"
echo "  # last hour go out again, original ids kept, to a stream of its own, and a second projector"
echo "  # builds run/orders-v2.db from it"
echo "  $bin events replay --config $here/$config --stream shop-orders --since 1h --to-stream shop-orders-v2"
echo "  AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local timeout 300 $projector --db sqlite://$here/run/orders-v2.db --stream shop-orders-v2 --endpoint http://127.0.0.1:4567 --region us-east-1 &   # stops by itself after 5 minutes"
echo "  sleep 3; sqlite3 $here/run/orders-v2.db 'SELECT id, user_id, status FROM orders' 2>/dev/null || python3 -c \"import sqlite3; print(sqlite3.connect('$here/run/orders-v2.db').execute('SELECT id, user_id, status FROM orders').fetchall())\""
echo "  # read the order history (orders 1-12, imported into the new service): each read is copied to"
echo "  # the other side and to a second monolith instance, and the answers compared"
echo "  for id in \$(seq 1 12); do curl -s localhost:8080/api/orders/\$id -H \"x-user-id: user-\$id\"; echo; done"
echo "  $bin shadow summary --config $here/$config      # matches, mismatches, top differences, noise"
echo "  curl -s 'localhost:9090/api/shadow/mismatches?route=orders-read&pattern=\$.total_cents'"
echo "  $bin shadow show 1 --config $here/$config       # one mismatch whole"
echo "  # the orders context moves 0 % (shadow only) → 10 → 50 → 100 on its own while traffic flows:"
echo "  # (40 users: at 10 % a handful of them are on the new side, enough for its gates)"
echo "  timeout 120 bash -c 'while sleep 0.1; do for u in \$(seq 1 40); do curl -s -o /dev/null localhost:8080/api/orders/1 -H \"x-user-id: user-\$u\"; done; done' &   # load for 2 minutes"
echo "  $bin rollout status --config $here/$config      # weight, phase, step, why"
echo "  curl -s -X POST localhost:8082/_control/bad-deploy       # the new service now answers 500s: rolled back within ~10 s (at any step, 100 % too)"
echo "  $bin rollout audit --config $here/$config       # every transition and the figures behind it"
echo "  curl -s -X DELETE localhost:8082/_control/bad-deploy; $bin rollout resume orders --config $here/$config"
echo "  $bin kill-switch on --config $here/$config      # everything to the monolith at once (off: kill-switch off)"
echo "  # why did a request go where it went?"
echo "  $bin explain --config $here/$config --method POST --path /api/orders -H 'x-user-id: bob' --verbose"
if [ "${HTTPS:-0}" = 1 ]; then
  echo "  # HTTPS (h2 or http/1.1), the self-signed certificate made for this run"
  echo "  curl -s --cacert $here/run/tls.pem https://localhost:8443/api/catalog"
fi
echo
echo "Ctrl-C stops everything."
wait
