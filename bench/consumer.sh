#!/usr/bin/env bash
# The consumer (strangler-consumer) applying events into a read model vs a plain GetRecords loop,
# same kinesalite, same run; with and without KPL aggregation; SQLite, then PostgreSQL when one
# answers on 127.0.0.1:5432.
# Usage: bench/consumer.sh [events, default 20000]
set -euo pipefail
source "$(dirname "$0")/lib.sh"
n="${1:-20000}"
port=$(free_port)
"$(kinesalite_bin)" --port "$port" --createStreamMs 0 --shardLimit 100 >/dev/null 2>&1 & pids+=($!)
for _ in $(seq 1 100); do (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
bench="$(release_build -p strangler-consumer --example consumer_bench examples/consumer_bench)"
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench
"$bench" "http://127.0.0.1:$port" "$n"
pg_base="${PG_URL:-postgres://postgres@127.0.0.1:5432}"
if command -v psql >/dev/null && psql "$pg_base/postgres" -qAtc 'select 1' >/dev/null 2>&1; then
  db="strangler_consumer_bench_$$"
  psql "$pg_base/postgres" -qc "CREATE DATABASE $db" >/dev/null
  trap 'cleanup; psql "$pg_base/postgres" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true' EXIT INT TERM
  echo
  "$bench" "http://127.0.0.1:$port" "$n" "$pg_base/$db" | tail -n +3
fi
