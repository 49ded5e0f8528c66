#!/usr/bin/env bash
# Relay throughput vs a plain aws-sdk PutRecords loop against the same kinesalite, same run.
# Then the relay with 1, 10 and 50 partition keys (hot keys), plain and KPL-aggregated.
# Usage: bench/relay.sh [records, default 20000] [hot-key events, default 5000]
set -euo pipefail
source "$(dirname "$0")/lib.sh"
n="${1:-20000}"
hot="${2:-5000}"
port=$(free_port)
"$(kinesalite_bin)" --port "$port" --createStreamMs 0 --shardLimit 100 >/dev/null 2>&1 & pids+=($!)
for _ in $(seq 1 100); do (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
bench="$(release_build -p strangler-events --example relay_bench examples/relay_bench)"
AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench "$bench" "http://127.0.0.1:$port" "$n" "$hot"
