#!/usr/bin/env bash
# Scaling out: 1, 2 and 3 strangler replicas on one PostgreSQL database, six streams of 4 shards
# on kinesalite behind the tests' shim (tests/src/bin/kinesis-shim.rs), which answers every
# Kinesis call $DELAY_MS later (default 20 ms, an in-region round trip).
#  1. relay: the outbox is filled with $EVENTS events over the six streams by SQL (no replica
#     busy serving meanwhile), then R replicas start and drain it: events/s from start to empty,
#     the streams each replica relayed (strangler_lease_held{lease="relay:<stream>"}), and the
#     most PostgreSQL connections each replica held (pg_stat_activity by application_name).
#     Once with $DELAY_MS and once with $SLOW_DELAY_MS (default 500 ms: a Kinesis far away or
#     slow), where a replica's calls in flight, not the cores, bound what it sends.
#  2. serving: R replicas behind haproxy (round robin, health-checked on /readyz), wrk POSTing
#     orders over the six streams for $SECS s with sync durability: req/s and latency through
#     the balancer, then how long the relays take to drain what is left.
#  3. consumers: 1, 2 and 3 count-consumer instances (tests/src/bin/count-consumer.rs) of one
#     consumer name on a PostgreSQL database read a stream of $CONSUMED events (4 shards, through
#     the shim): events applied per second from start to the last, and the shards each held.
# Everything floats over the two cores. Usage: bench/scale.sh [secs, default 10]
set -euo pipefail
secs="${1:-10}"
events="${EVENTS:-60000}"
consumed="${CONSUMED:-60000}"
delay="${DELAY_MS:-20}"
slow_delay="${SLOW_DELAY_MS:-500}"
source "$(dirname "$0")/lib.sh"
need nginx wrk haproxy psql curl
kinesalite="$(kinesalite_bin)"
bin="$(release_build -p strangler strangler)"
shim_bin="$(release_build -p strangler-tests --bin kinesis-shim kinesis-shim)"
consumer_bin="$(release_build -p strangler-tests --bin count-consumer count-consumer)"
pg_base="${PG_URL:-postgres://postgres@127.0.0.1:5432}"
psql "$pg_base/postgres" -qAtc 'select 1' >/dev/null || { echo "bench needs PostgreSQL at $pg_base"; exit 1; }
db="strangler_scale_$$"
dbs=("$db")
drop_dbs() { for d in "${dbs[@]}"; do psql "$pg_base/postgres" -qc "DROP DATABASE IF EXISTS $d WITH (FORCE)" >/dev/null 2>&1 || true; done; }
trap 'cleanup; drop_dbs' EXIT INT TERM
q() { psql "$pg_base/$1" -qAtc "$2"; }
q postgres "CREATE DATABASE $db" >/dev/null

export AWS_ACCESS_KEY_ID=b AWS_SECRET_ACCESS_KEY=b AWS_REGION=us-east-1 RUST_LOG=warn
backend=$(free_port); kport=$(free_port)
nginx_conf backend "server { listen 127.0.0.1:$backend; keepalive_requests 1000000; location / { return 200 '{\"id\":1}'; } }"
nginx -c "$work/backend/nginx.conf" -p "$work/backend" & pids+=($!)
"$kinesalite" --port "$kport" --createStreamMs 0 --shardLimit 100 >/dev/null 2>&1 & pids+=($!)
for _ in $(seq 1 100); do (echo > "/dev/tcp/127.0.0.1/$kport") 2>/dev/null && break; sleep 0.1; done
"$shim_bin" --target "127.0.0.1:$kport" --delay-ms "$delay" > "$work/shim.url" & pids+=($!)
for _ in $(seq 1 100); do [ -s "$work/shim.url" ] && break; sleep 0.05; done
shim="$(cat "$work/shim.url")"
"$shim_bin" --target "127.0.0.1:$kport" --delay-ms "$slow_delay" > "$work/slow.url" & pids+=($!)
for _ in $(seq 1 100); do [ -s "$work/slow.url" ] && break; sleep 0.05; done
slow="$(cat "$work/slow.url")"

streams=(s0 s1 s2 s3 s4 s5)
mkdir -p "$work/rules"
{
  echo "routes:"
  for s in "${streams[@]}"; do
    cat <<YAML
  - name: $s
    match: { methods: [POST], path: { template: "/api/$s/users/{user}/orders" } }
    target: { service: legacy }
    publish: { stream: $s, type: ORDER_CREATED, partition_key: { request.path_param: user }, data: { request.body: "\$" } }
YAML
  done
} > "$work/rules/r.yaml"

# Replica $1's config (listen port $2, admin port $3, Kinesis endpoint $4). Kinesis's per-shard
# limits are off: this measures the relays, not Kinesis's quotas.
replica_conf() {
  cat > "$work/r$1.yaml" <<YAML
listen: ["127.0.0.1:$2"]
admin: "127.0.0.1:$3"
workers: 1
legacy: { address: "127.0.0.1:$backend" }
rules: rules
store: "$pg_base/$db?application_name=replica$1"
kinesis: { region: us-east-1, endpoint: "$4" }
events: { shard_records_per_second: 0, shard_bytes_per_second: 0 }
log: { level: warn }
YAML
}
declare -A port admin
for i in 1 2 3; do port[$i]=$(free_port); admin[$i]=$(free_port); replica_conf "$i" "${port[$i]}" "${admin[$i]}" "$shim"; done
for s in "${streams[@]}" c; do
  "$bin" stream create --config "$work/r1.yaml" --stream "$s" --shards 4 >/dev/null
done

started=()
start_replicas() { # $1 = how many
  started=()
  for i in $(seq 1 "$1"); do
    "$bin" run --config "$work/r$i.yaml" 2>"$work/r$i.log" & pids+=($!); started+=($!)
  done
  for i in $(seq 1 "$1"); do
    for _ in $(seq 1 200); do curl -fs "http://127.0.0.1:${admin[$i]}/readyz" >/dev/null 2>&1 && break; sleep 0.05; done
  done
}
stop_replicas() {
  kill -TERM "${started[@]}" 2>/dev/null || true
  for p in "${started[@]}"; do while kill -0 "$p" 2>/dev/null; do sleep 0.05; done; done
}
# The first replica creates the tables; the outbox is then filled by SQL.
start_replicas 1; stop_replicas
fill() { # $1 = events, $2 = SQL for the stream of event g
  q "$db" "INSERT INTO strangler_outbox (id, route, stream, partition_key, payload, created_ms, next_attempt_ms)
    SELECT 'ev-' || g || '-' || md5(random()::text), 'bench', $2, 'user-' || (g % 6000),
      convert_to('{\"specversion\":\"1.0\",\"type\":\"ORDER_CREATED\",\"source\":\"bench\",\"id\":\"ev-' || g || '\",\"data\":{\"n\":' || g || ',\"note\":\"' || repeat('x', 300) || '\"}}', 'UTF8'),
      (extract(epoch from now()) * 1000)::bigint, 0
    FROM generate_series(1, $1) AS g" >/dev/null
}
depth() { q "$db" "SELECT count(*) FROM strangler_outbox"; }
now() { date +%s.%N; }
# The most connections each replica held, sampled while $1 (a pid) runs.
conns_while() {
  local most="" ; declare -A top=()
  while kill -0 "$1" 2>/dev/null; do
    while IFS='|' read -r name n; do
      [ -n "$name" ] && [ "${top[$name]:-0}" -lt "$n" ] && top[$name]=$n
    done < <(q postgres "SELECT application_name, count(*) FROM pg_stat_activity WHERE datname = '$db' AND application_name LIKE 'replica%' GROUP BY 1")
    sleep 0.2
  done
  for k in $(printf '%s\n' "${!top[@]}" | sort); do most+="${top[$k]} "; done
  echo "${most% }"
}
held_streams() { # streams each running replica relays, as "2 2 2"
  local out=""
  for i in $(seq 1 "$1"); do
    out+="$(curl -fs "http://127.0.0.1:${admin[$i]}/metrics" | grep -c '^strangler_lease_held{lease="relay:[^"]*"} 1') "
  done
  echo "${out% }"
}
wait_drained() { while [ "$(depth)" -gt 0 ]; do sleep 0.1; done; }

for d in "$delay" "$slow_delay"; do
  endpoint="$shim"; [ "$d" = "$slow_delay" ] && endpoint="$slow"
  for i in 1 2 3; do replica_conf "$i" "${port[$i]}" "${admin[$i]}" "$endpoint"; done
  echo "== 1. relay: $events events over six streams drained by R replicas (Kinesis calls +$d ms)"
  printf '| replicas | drained in | events/s | streams relayed per replica | PG connections per replica (most) |\n|---|---|---|---|---|\n'
  for r in 1 2 3; do
    fill "$events" "'s' || (g % 6)"
    t0=$(now)
    start_replicas "$r"
    ( wait_drained ) & drain=$!
    conns=$(conns_while "$drain")
    t1=$(now)
    held=$(held_streams "$r")
    stop_replicas
    python3 -c "import sys; t=$t1-$t0; print(f'| {$r} | {t:.1f} s | {$events/t:,.0f} | $held | $conns |')"
  done
  echo
done
for i in 1 2 3; do replica_conf "$i" "${port[$i]}" "${admin[$i]}" "$shim"; done

echo "== 2. serving: wrk -t2 -c64 POSTs through haproxy to R replicas for ${secs}s (sync publishing to six streams)"
lb=$(free_port)
cat > "$work/post.lua" <<'LUA'
local n = 0
request = function()
  n = n + 1
  local path = "/api/s" .. (n % 6) .. "/users/u" .. (n % 600) .. "/orders"
  return wrk.format("POST", path, {["Content-Type"] = "application/json"}, '{"n":' .. n .. '}')
end
LUA
printf '| replicas | req/s | p50 | p99 | events | relays drained after | events/s published |\n|---|---|---|---|---|---|---|\n'
for r in 1 2 3; do
  {
    echo "global"; echo "  maxconn 4096"
    echo "defaults"; echo "  mode http"; echo "  timeout connect 2s"; echo "  timeout client 30s"; echo "  timeout server 30s"
    echo "frontend fe"; echo "  bind 127.0.0.1:$lb"; echo "  default_backend replicas"
    echo "backend replicas"; echo "  balance roundrobin"; echo "  option httpchk GET /readyz"; echo "  retries 2"; echo "  option redispatch"; echo "  http-reuse always"
    for i in $(seq 1 "$r"); do echo "  server r$i 127.0.0.1:${port[$i]} check port ${admin[$i]} inter 1s"; done
  } > "$work/haproxy.cfg"
  start_replicas "$r"
  haproxy -f "$work/haproxy.cfg" & pids+=($!); hap=$!
  for _ in $(seq 1 100); do curl -fs -X POST -d '{}' "http://127.0.0.1:$lb/api/s0/users/warm/orders" >/dev/null 2>&1 && break; sleep 0.05; done
  before=$(q "$db" "SELECT last_value FROM strangler_outbox_seq_seq")
  t0=$(now)
  wrk -t2 -c64 -d"${secs}s" --latency -s "$work/post.lua" "http://127.0.0.1:$lb" > "$work/wrk.txt"
  t1=$(now)
  wait_drained
  t2=$(now)
  n=$(q "$db" "SELECT last_value FROM strangler_outbox_seq_seq")
  kill "$hap"; wait "$hap" 2>/dev/null || true
  stop_replicas
  rps=$(awk '/Requests\/sec/ {print $2}' "$work/wrk.txt")
  p50=$(awk '$1 == "50%" {print $2}' "$work/wrk.txt")
  p99=$(awk '$1 == "99%" {print $2}' "$work/wrk.txt")
  python3 -c "e=$n-$before; print(f'| {$r} | {float(\"$rps\"):,.0f} | $p50 | $p99 | {e:,} | {$t2-$t1:.1f} s | {e/($t2-$t0):,.0f} |')"
done

echo
echo "== 3. consumers: C instances of one consumer name apply $consumed events of a 4-shard stream (Kinesis calls +$delay ms)"
fill "$consumed" "'c'"
start_replicas 1; wait_drained; stop_replicas
printf '| instances | applied in | events/s | shards per instance |\n|---|---|---|---|\n'
for c in 1 2 3; do
  cdb="${db}_c$c"; dbs+=("$cdb")
  q postgres "CREATE DATABASE $cdb" >/dev/null
  cpids=()
  t0=$(now)
  for i in $(seq 1 "$c"); do
    "$consumer_bin" --db "$pg_base/$cdb" --stream c --endpoint "$shim" --instance "i$i" --failover 3000 2>"$work/c$i.log" & pids+=($!); cpids+=($!)
  done
  for _ in $(seq 1 6000); do
    [ "$(q "$cdb" "SELECT count(*) FROM applied" 2>/dev/null || echo 0)" -ge "$consumed" ] && break
    sleep 0.1
  done
  t1=$(now)
  shares=$(q "$cdb" "SELECT string_agg(n::text, ' ' ORDER BY owner) FROM (SELECT owner, count(*) AS n FROM strangler_consumer_leases GROUP BY owner) x")
  kill -TERM "${cpids[@]}" 2>/dev/null || true; wait "${cpids[@]}" 2>/dev/null || true
  python3 -c "t=$t1-$t0; print(f'| {$c} | {t:.1f} s | {$consumed/t:,.0f} | $shares |')"
done
