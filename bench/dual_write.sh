#!/usr/bin/env bash
# Dual-write cost: strangler (1 worker thread) forwarding a 1 KB JSON POST, four ways with the
# same route: passing it through; with a publish rule that reads the body for its partition key
# but never fires (when_status 599: the cost of reading and parsing the body); publishing with
# sync durability (each event committed to the SQLite outbox before the answer is released; the
# relay drains to kinesalite meanwhile); and the same with the stream KPL-aggregated. nginx
# `return 200` is the backend. Each proxy (all its threads) runs on core 0; wrk, nginx and
# kinesalite share core 1. Prints req/s, latency and each proxy's CPU time per request.
# HOLD_NEVER=7000 sends the never-firing proxy's traffic to an nginx that answers at most that
# many requests per second (limit_req, excess delayed): that proxy then runs at the publishing
# one's rate and latency without any event, which isolates what the lower rate alone costs.
# PostgreSQL rows (when PostgreSQL answers at $PG_URL, default postgres://postgres@127.0.0.1:5432):
# the publishing proxy with its outbox in a scratch database, one replica alone (on core 0), then
# two replicas on that one database side by side (one per core, each driven by its own wrk with
# half the connections; every other process floats), summed; then the same two rows with 8
# connections per replica, where latency rather than the cores bounds the rate.
# Usage: bench/dual_write.sh [secs] [conns]
set -euo pipefail
secs="${1:-10}"
conns="${2:-64}"
source "$(dirname "$0")/lib.sh"
need nginx wrk taskset
kinesalite="$(kinesalite_bin)"
bin="$(release_build -p strangler strangler)"
backend=$(free_port); held=$(free_port); kport=$(free_port); plain=$(free_port); never=$(free_port); publish=$(free_port); aggregated=$(free_port)

cat > "$work/nginx.conf" <<NGINX
worker_processes 1; daemon off; pid $work/nginx.pid; error_log $work/nginx.err warn;
events { worker_connections 4096; }
http { access_log off; client_body_temp_path $work; proxy_temp_path $work; fastcgi_temp_path $work;
  uwsgi_temp_path $work; scgi_temp_path $work;
  server { listen 127.0.0.1:$backend; keepalive_requests 1000000; client_body_buffer_size 64k;
    location / { return 200 '{"id":1}'; } }
  # The held backend: \`return\` answers in the rewrite phase, before limit_req (preaccess) runs,
  # so the answer comes from a 404 (no such file) turned into the same 200.
  limit_req_zone \$binary_remote_addr zone=held:1m rate=${HOLD_NEVER:-1000000}r/s;
  server { listen 127.0.0.1:$held; keepalive_requests 1000000; client_body_buffer_size 64k;
    location / { limit_req zone=held burst=1000000; root $work/empty; error_page 404 405 =200 @ok; }
    location @ok { return 200 '{"id":1}'; } } }
NGINX
mkdir -p "$work/empty"
taskset -c 1 nginx -c "$work/nginx.conf" -p "$work" & pids+=($!)
taskset -c 1 "$kinesalite" --port "$kport" --createStreamMs 0 --shardLimit 100 >/dev/null 2>&1 & pids+=($!); kinesalite_pid=$!

setup() { # $1 name, $2 port, $3 publish yes/no/never, $4 extra config, $5 store URL
  mkdir -p "$work/$1/rules"
  {
    echo "routes:"
    echo "  - name: orders"
    echo "    match: { methods: [POST], path: { prefix: /api/orders } }"
    echo "    target: { service: legacy }"
    case "$3" in
      yes) echo "    publish: { stream: bench, type: ORDER_CREATED, partition_key: { request.body: \"\$.user\" } }" ;;
      # Reads and parses the body like a publishing route, but the answer never qualifies.
      never) echo "    publish: { stream: bench, type: ORDER_CREATED, partition_key: { request.body: \"\$.user\" }, when_status: [599] }" ;;
    esac
  } > "$work/$1/rules/r.yaml"
  cat > "$work/$1/strangler.yaml" <<YAML
listen: ["127.0.0.1:$2"]
admin: "127.0.0.1:$(free_port)"
workers: 1
legacy: { address: "127.0.0.1:$backend" }
rules: rules
store: "${5:-sqlite://$work/$1/outbox.db}"
kinesis: { region: us-east-1, endpoint: "http://127.0.0.1:$kport" }
log: { level: warn }
${4:-}
YAML
}
# kinesalite does not throttle; real Kinesis caps a shard at 1,000 records/s and 1 MiB/s, and the
# relay keeps under that by default. Off here: this measures the proxy and the relay themselves.
unlimited="events: { shard_records_per_second: 0, shard_bytes_per_second: 0 }"
setup plain "$plain" no
setup never "$never" never
if [ -n "${HOLD_NEVER:-}" ]; then
  sed -i "s#127.0.0.1:$backend#127.0.0.1:$held#" "$work/never/strangler.yaml"
fi
setup publish "$publish" yes "$unlimited"
setup aggregated "$aggregated" yes "events: { aggregate: [bench], shard_records_per_second: 0, shard_bytes_per_second: 0 }"
for _ in $(seq 1 100); do (echo > "/dev/tcp/127.0.0.1/$kport") 2>/dev/null && break; sleep 0.1; done
AWS_ACCESS_KEY_ID=b AWS_SECRET_ACCESS_KEY=b "$bin" stream create --config "$work/publish/strangler.yaml" --stream bench --shards 4 >/dev/null
export AWS_ACCESS_KEY_ID=b AWS_SECRET_ACCESS_KEY=b RUST_LOG=warn
taskset -c 0 "$bin" run --config "$work/plain/strangler.yaml" 2>"$work/plain.log" & pids+=($!); plain_pid=$!
taskset -c 0 "$bin" run --config "$work/never/strangler.yaml" 2>"$work/never.log" & pids+=($!); never_pid=$!
taskset -c 0 "$bin" run --config "$work/publish/strangler.yaml" 2>"$work/publish.log" & pids+=($!); publish_pid=$!
taskset -c 0 "$bin" run --config "$work/aggregated/strangler.yaml" 2>"$work/aggregated.log" & pids+=($!); aggregated_pid=$!
pg_base="${PG_URL:-postgres://postgres@127.0.0.1:5432}"
pg_db=""
if command -v psql >/dev/null && psql "$pg_base/postgres" -qAtc 'select 1' >/dev/null 2>&1; then
  pg_db="strangler_bench_$$"
  psql "$pg_base/postgres" -qc "CREATE DATABASE $pg_db" >/dev/null
  drop_pg() { psql "$pg_base/postgres" -qc "DROP DATABASE IF EXISTS $pg_db WITH (FORCE)" >/dev/null 2>&1 || true; }
  trap 'cleanup; drop_pg' EXIT INT TERM
  pg1=$(free_port); pga=$(free_port); pgb=$(free_port)
  setup pg1 "$pg1" yes "" "$pg_base/$pg_db"
  setup pga "$pga" yes "" "$pg_base/$pg_db"
  setup pgb "$pgb" yes "" "$pg_base/$pg_db"
fi
for p in $plain $never $publish $aggregated; do
  for _ in $(seq 1 200); do curl -fs -X POST -d '{}' "http://127.0.0.1:$p/api/orders" >/dev/null 2>&1 && break; sleep 0.05; done
done

python3 - "$work/post.lua" <<'PY'
import json, sys
body = json.dumps({"user": "u-1", "items": [{"sku": f"sku-{i}", "qty": i} for i in range(30)], "note": ""})
body = json.dumps({"user": "u-1", "items": [{"sku": f"sku-{i}", "qty": i} for i in range(30)], "note": "x" * (1024 - len(body))})
open(sys.argv[1], "w").write(f'''
local n = 0
request = function()
  n = n + 1
  local body = [[{body}]]
  body = body:gsub('"u%-1"', '"u-' .. (n % 1000) .. '"')
  return wrk.format("POST", "/api/orders", {{["Content-Type"] = "application/json"}}, body)
end
''')
PY

# User + system CPU time in a /proc …/stat file, in clock ticks: fields 14 and 15, counted after
# the parenthesised name (which may hold spaces).
stat_ticks() { sed 's/.*) //' "$1" | awk '{print $12 + $13}'; }
# CPU time a process (all its threads) has used.
ticks() { stat_ticks "/proc/$1/stat"; }
# The same per thread name ("name ticks" lines).
thread_ticks() {
  for t in /proc/"$1"/task/*; do
    printf '%s %s\n' "$(tr ' ' _ < "$t/comm")" "$(stat_ticks "$t/stat")"
  done | awk '{s[$1] += $2} END {for (n in s) print n, s[n]}' | sort
}
# Busy ticks per core ("cpuN busy total" lines).
core_ticks() { awk '/^cpu[0-9]/ {print $1, $2+$3+$4+$7+$8, $2+$3+$4+$5+$6+$7+$8}' /proc/stat; }

run() { # $1 label, $2 port, $3 proxy pid, $4 connections (default: conns)
  local conns="${4:-$conns}"
  taskset -c 1 wrk -t1 -c"$conns" -d2s -s "$work/post.lua" "http://127.0.0.1:$2/" >/dev/null
  local before; before=$(ticks "$3")
  local threads_before; threads_before=$(thread_ticks "$3")
  local cores_before; cores_before=$(core_ticks)
  local kinesalite_before; kinesalite_before=$(ticks "$kinesalite_pid")
  local out; out=$(taskset -c 1 wrk -t1 -c"$conns" -d"${secs}s" --latency -s "$work/post.lua" "http://127.0.0.1:$2/")
  local used=$(( $(ticks "$3") - before ))
  local requests; requests=$(echo "$out" | awk '/requests in/ {print $1}')
  # Where the proxy's CPU went, per thread, and how busy each core was: to stderr, after the row.
  {
    echo "  $1 — CPU µs/req by thread:" \
      "$(join -a2 <(echo "$threads_before") <(thread_ticks "$3") | awk -v r="$requests" -v hz="$(getconf CLK_TCK)" \
        'NF == 2 {$3 = $2; $2 = 0} {d = ($3 - $2) / hz / r * 1e6; if (d >= 0.5) printf "%s %.1f, ", $1, d}')"
    echo "  core busy %:" \
      "$(join <(echo "$cores_before") <(core_ticks) | awk '{printf "%s %.0f%%, ", $1, ($4 - $2) / ($5 - $3) * 100}')" \
      "kinesalite: $(echo "$kinesalite_before $(ticks "$kinesalite_pid")" \
        | awk -v t="$secs" -v hz="$(getconf CLK_TCK)" '{printf "%.0f%% of a core", ($2 - $1) / hz / t * 100}') (the rest of core 1: wrk, nginx)"
  } >&2
  local rps p50 p99 non2xx cpu
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  cpu=$(python3 -c "print(f'{$used / $(getconf CLK_TCK) / $requests * 1e6:.1f}')")
  p50=$(echo "$out" | awk '$1=="50%" {print $2}')
  p99=$(echo "$out" | awk '$1=="99%" {print $2}')
  non2xx=$(echo "$out" | awk '/Non-2xx/ {print $5}')
  echo "$1|$rps|$p50|$p99|${non2xx:-0}|$cpu"
}
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); ${secs}s per run, wrk -t1 -c$conns, 1 KB JSON POST" >&2
# Two replicas at once: one wrk each (half the connections), each replica on its own core;
# req/s summed, CPU per request over both.
run2() { # $1 label, $2 port a, $3 pid a, $4 port b, $5 pid b, $6 connections per replica
  local half="${6:-$(( conns / 2 ))}"
  taskset -c 0 wrk -t1 -c"$half" -d2s -s "$work/post.lua" "http://127.0.0.1:$2/" >/dev/null &
  taskset -c 1 wrk -t1 -c"$half" -d2s -s "$work/post.lua" "http://127.0.0.1:$4/" >/dev/null; wait %1 2>/dev/null || true
  local before=$(( $(ticks "$3") + $(ticks "$5") ))
  taskset -c 0 wrk -t1 -c"$half" -d"${secs}s" --latency -s "$work/post.lua" "http://127.0.0.1:$2/" >"$work/wrk_a" &
  local wa=$!
  taskset -c 1 wrk -t1 -c"$half" -d"${secs}s" --latency -s "$work/post.lua" "http://127.0.0.1:$4/" >"$work/wrk_b"
  wait "$wa"
  local used=$(( $(ticks "$3") + $(ticks "$5") - before ))
  local requests rps p50 p99 non2xx cpu
  requests=$(cat "$work/wrk_a" "$work/wrk_b" | awk '/requests in/ {s += $1} END {print s}')
  rps=$(cat "$work/wrk_a" "$work/wrk_b" | awk '/Requests\/sec/ {s += $2} END {printf "%.2f", s}')
  p50="$(awk '$1=="50%" {print $2}' "$work/wrk_a")/$(awk '$1=="50%" {print $2}' "$work/wrk_b")"
  p99="$(awk '$1=="99%" {print $2}' "$work/wrk_a")/$(awk '$1=="99%" {print $2}' "$work/wrk_b")"
  non2xx=$(cat "$work/wrk_a" "$work/wrk_b" | awk '/Non-2xx/ {s += $5} END {print s + 0}')
  cpu=$(python3 -c "print(f'{$used / $(getconf CLK_TCK) / $requests * 1e6:.1f}')")
  echo "$1|$rps|$p50|$p99|$non2xx|$cpu"
}
# The group writer's figures so far (its /metrics): how long a commit takes, how many events one
# carries, and how long a write waits from being handed over to its commit (what a sync answer
# waits for). To stderr, after the rows.
writer_figures() { # $1 setup name
  local admin; admin=$(awk -F'"' '/^admin:/ {print $2}' "$work/$1/strangler.yaml")
  curl -fs "http://$admin/metrics" | awk -v n="$1" '
    $1 == "strangler_outbox_commit_duration_seconds_sum" {cs = $2}
    $1 == "strangler_outbox_commit_duration_seconds_count" {cc = $2}
    $1 == "strangler_outbox_commit_events_sum" {es = $2}
    $1 == "strangler_outbox_commit_events_count" {ec = $2}
    $1 == "strangler_outbox_write_wait_seconds_sum" {ws = $2}
    $1 == "strangler_outbox_write_wait_seconds_count" {wc = $2}
    END { if (cc > 0) printf "  %s — group writer: %d commits, %.2f ms each, %.1f events per commit; a write waits %.2f ms (means)\n",
      n, cc, cs / cc * 1e3, (ec > 0 ? es / ec : 0), (wc > 0 ? ws / wc * 1e3 : 0) }' >&2
}
a=$(run "pass-through (same route, no publish)" "$plain" "$plain_pid")
n=$(run "publish rule, never fires (body read + parsed)${HOLD_NEVER:+, held to $HOLD_NEVER/s}" "$never" "$never_pid")
b=$(run "publish, sync: outbox commit before the answer" "$publish" "$publish_pid")
g=$(run "publish, sync, KPL-aggregated stream" "$aggregated" "$aggregated_pid")
rows=("$a" "$n" "$b" "$g")
writer_figures publish
writer_figures aggregated
if [ -n "$pg_db" ]; then
  # (The SQLite proxies stay up, idle.)
  taskset -c 0 "$bin" run --config "$work/pg1/strangler.yaml" 2>"$work/pg1.log" & pids+=($!); pg1_pid=$!
  for _ in $(seq 1 200); do curl -fs -X POST -d '{}' "http://127.0.0.1:$pg1/api/orders" >/dev/null 2>&1 && break; sleep 0.05; done
  rows+=("$(run "publish, sync, PostgreSQL, 1 replica" "$pg1" "$pg1_pid")")
  # Latency-bound: few connections, so the cores are not the limit and what the store does
  # with two replicas shows.
  rows+=("$(run "… PostgreSQL, 1 replica, 8 connections" "$pg1" "$pg1_pid" 8)")
  writer_figures pg1
  kill "$pg1_pid"; wait "$pg1_pid" 2>/dev/null || true
  taskset -c 0 "$bin" run --config "$work/pga/strangler.yaml" 2>"$work/pga.log" & pids+=($!); pga_pid=$!
  taskset -c 1 "$bin" run --config "$work/pgb/strangler.yaml" 2>"$work/pgb.log" & pids+=($!); pgb_pid=$!
  for p in $pga $pgb; do
    for _ in $(seq 1 200); do curl -fs -X POST -d '{}' "http://127.0.0.1:$p/api/orders" >/dev/null 2>&1 && break; sleep 0.05; done
  done
  rows+=("$(run2 "publish, sync, PostgreSQL, 2 replicas, 1 database" "$pga" "$pga_pid" "$pgb" "$pgb_pid")")
  rows+=("$(run2 "… PostgreSQL, 2 replicas, 8 connections each" "$pga" "$pga_pid" "$pgb" "$pgb_pid" 8)")
fi
base=$(echo "$a" | cut -d'|' -f2)
# "CPU µs/req": the proxy process's CPU time (all its threads: worker, outbox, relay) during the
# run, per request answered.
# "req/s per core": 1e6 / CPU µs per request, the rate the proxy would reach with its core as
# the only limit. The publishing run's req/s is also held down by core 1, where kinesalite
# competes with wrk and nginx (stderr shows how busy each core was and kinesalite's share).
base_cpu=$(echo "$a" | cut -d'|' -f6)
printf '\n| %-48s | %10s | %8s | %8s | %8s | %12s | %7s | %13s | %7s |\n' setup "req/s" p50 p99 "non-2xx" "CPU µs/req" "×" "req/s per core" "×"
printf '|%s|%s|%s|%s|%s|%s|%s|%s|%s|\n' "--------------------------------------------------" "------------" "----------" "----------" "----------" "-------------" "---------" "----------------" "---------"
for r in "${rows[@]}"; do
  IFS='|' read -r name rps p50 p99 bad cpu <<<"$r"
  printf '| %-48s | %10s | %8s | %8s | %8s | %11s | %7s | %14s | %7s |\n' "$name" "$rps" "$p50" "$p99" "$bad" "$cpu" \
    "$(python3 -c "print(f'{$rps/$base:.2f}')")" "$(python3 -c "print(f'{1e6/$cpu:.0f}')")" "$(python3 -c "print(f'{$base_cpu/$cpu:.2f}')")"
done
sleep 2
echo
for name in publish aggregated ${pg_db:+pga}; do
  admin=$(grep '^admin' "$work/$name/strangler.yaml" | cut -d'"' -f2)
  metrics=$(curl -s "http://$admin/metrics")
  echo "$name: events enqueued: $(echo "$metrics" | awk '/^strangler_events_enqueued_total/ {s+=$2} END {print s}'), published so far: $(echo "$metrics" | awk '/^strangler_events_published_total/ {s+=$2} END {print s + 0}')$(echo "$metrics" | awk '/^strangler_kinesis_events_per_record_sum/ {s=$2} /^strangler_kinesis_events_per_record_count/ {c=$2} END {if (c) printf ", %.1f events per Kinesis record", s / c}')"
done
