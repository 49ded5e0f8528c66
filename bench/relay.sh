#!/usr/bin/env bash
# Relay throughput vs a plain aws-sdk PutRecords loop against the same kinesalite, same run.
# Usage: bench/relay.sh [records, default 20000]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
n="${1:-20000}"
npm_dir="$HOME/.cache/strangler-npm"
if [ ! -x "$npm_dir/node_modules/.bin/kinesalite" ]; then
  mkdir -p "$npm_dir" && npm install --silent --no-audit --no-fund --prefix "$npm_dir" kinesalite@3.3.3
fi
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$npm_dir/node_modules/.bin/kinesalite" --port "$port" --createStreamMs 0 --shardLimit 100 >/dev/null 2>&1 &
kpid=$!
trap 'kill $kpid 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
echo "building (release)…" >&2
cargo build --quiet --release -p strangler-events --example relay_bench --manifest-path "$root/Cargo.toml"
target_dir="$(cargo metadata --format-version 1 --no-deps --manifest-path "$root/Cargo.toml" | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench "$target_dir/release/examples/relay_bench" "http://127.0.0.1:$port" "$n"
