#!/usr/bin/env bash
# Tail latency at a constant rate: the nginx `return 200` backend reached directly, through nginx
# proxy_pass (1 worker), through the minimal hyper 1.x proxy (bench/hyper-proxy) and through
# strangler (1 worker thread, no rules), each proxy pinned to core 0, oha and the backend on core
# 1. strangler's saturation is measured first (wrk); then oha sends a constant rate
# (latency-corrected: a late request counts from when it should have been sent) at a quarter and
# at half of it, and the table prints p50 / p99 / p99.9 per setup, and p99 added over direct.
# strangler's threads other than the worker are summed too (helpers must stay off the worker's
# core when idle). Usage: bench/tail.sh [seconds per run, default 10] [connections, default 64]
set -euo pipefail
secs="${1:-10}"
conns="${2:-64}"
source "$(dirname "$0")/lib.sh"
need nginx wrk taskset curl python3
need_oha
proxy_cpu=0
load_cpu=$(( $(nproc) > 1 ? 1 : 0 ))
bin="$(release_build -p strangler strangler)"
hyper_bin="$(release_build -p bench-hyper-proxy bench-hyper-proxy)"
backend=$(free_port); nginx=$(free_port); hyper=$(free_port); strangler=$(free_port)

nginx_backend_and_proxy "$backend" "$nginx"
taskset -c "$load_cpu" nginx -c "$work/backend/nginx.conf" -p "$work/backend" & pids+=($!)
taskset -c "$proxy_cpu" nginx -c "$work/proxy/nginx.conf" -p "$work/proxy" & pids+=($!)
taskset -c "$proxy_cpu" "$hyper_bin" "127.0.0.1:$hyper" "127.0.0.1:$backend" & pids+=($!)
mkdir -p "$work/s/rules"; echo "routes: []" > "$work/s/rules/r.yaml"
cat > "$work/s/strangler.yaml" <<YAML
listen: ["127.0.0.1:$strangler"]
admin: "127.0.0.1:$(free_port)"
workers: 1
legacy: { address: "127.0.0.1:$backend" }
store: "sqlite://$work/s/strangler.db"
rules: rules
log: { level: warn }
YAML
RUST_LOG=warn taskset -c "$proxy_cpu" "$bin" run --config "$work/s/strangler.yaml" 2>"$work/s.log" & pids+=($!); spid=$!
for p in $backend $nginx $hyper $strangler; do
  for _ in $(seq 1 200); do curl -fs "http://127.0.0.1:$p/" >/dev/null 2>&1 && break; sleep 0.05; done
done

# CPU ticks of every strangler thread but the worker ("strangler proxy"), which serves requests.
helper_ticks() {
  for t in /proc/"$spid"/task/*; do
    [ "$(cat "$t/comm")" = "strangler proxy" ] && continue
    sed 's/.*) //' "$t/stat" | awk '{print $12 + $13}'
  done | awk '{s += $1} END {print s + 0}'
}

taskset -c "$load_cpu" wrk -t1 -c"$conns" -d2s "http://127.0.0.1:$strangler/" >/dev/null
sat=$(taskset -c "$load_cpu" wrk -t1 -c"$conns" -d5s "http://127.0.0.1:$strangler/" | awk '/Requests\/sec/ {printf "%d", $2}')
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); strangler saturates at $sat req/s (wrk -c$conns); oha -q for ${secs}s, -c $conns" >&2

run() { # $1 = label, $2 = port, $3 = rate: "label|rate|p50|p99|p99.9|sent"
  local url="http://127.0.0.1:$2/"
  taskset -c "$load_cpu" oha --no-tui -z 2s -q "$3" -c "$conns" "$url" >/dev/null
  taskset -c "$load_cpu" oha --no-tui --output-format json --latency-correction -z "${secs}s" -q "$3" -c "$conns" "$url" >"$work/oha.json"
  python3 - "$1" "$3" "$work/oha.json" <<'PY'
import json, sys
label, rate, path = sys.argv[1], sys.argv[2], sys.argv[3]
r = json.load(open(path))
p = r["latencyPercentiles"]
ms = lambda k: f"{(p.get(k) or 0) * 1000:.2f}"
print("|".join([label, rate, ms("p50"), ms("p99"), ms("p99.9"), f"{r['summary']['requestsPerSec']:.0f}"]))
PY
}

rows=()
for share in 4 2; do
  rate=$(( sat / share ))
  h0=$(helper_ticks)
  rows+=("$(run "direct to backend" "$backend" "$rate")")
  rows+=("$(run "nginx proxy_pass, 1 worker" "$nginx" "$rate")")
  rows+=("$(run "hyper 1.x proxy, 1 thread" "$hyper" "$rate")")
  rows+=("$(run "strangler, 1 thread, no rules" "$strangler" "$rate")")
  echo "  at $rate req/s: strangler's helper threads used $(( $(helper_ticks) - h0 )) ticks of CPU over the four runs ($(getconf CLK_TCK)/s)" >&2
done

printf '\n| %-30s | %8s | %8s | %8s | %9s | %9s | %14s |\n' "setup" "rate" "achieved" "p50 ms" "p99 ms" "p99.9 ms" "p99 over direct"
printf '|%s|%s|%s|%s|%s|%s|%s|\n' "--------------------------------" "----------" "----------" "----------" "-----------" "-----------" "----------------"
direct=0
for r in "${rows[@]}"; do
  IFS='|' read -r name rate p50 p99 p999 got <<<"$r"
  [ "$name" = "direct to backend" ] && direct=$p99
  added=$(python3 -c "print(f'{$p99 - $direct:+.2f} ms')")
  printf '| %-30s | %8s | %8s | %8s | %9s | %9s | %14s |\n' "$name" "$rate" "$got" "$p50" "$p99" "$p999" "$added"
done
