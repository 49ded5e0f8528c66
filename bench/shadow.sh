#!/usr/bin/env bash
# Shadow cost: strangler (1 worker thread, core 0) in front of a monolith that answers a 1 KB JSON
# order after DELAY ms, three ways with the same route: no shadow; every request shadowed to a
# new service as fast as the monolith; and shadowed to one ten times slower. Load is a constant
# rate (oha -q, latency-corrected) at half of the no-shadow setup's saturation (measured first
# with wrk); oha and the upstreams share core 1. Prints the client's p50/p99, the proxy's CPU µs
# per request (all its threads: copies and comparisons included) and the copies compared.
# Usage: bench/shadow.sh [secs per run, default 10] [DELAY ms, default 2] [connections, default 64]
# PROFILE=dir: afterwards, the shadowed proxy (target as fast) and the plain one each once more
# under `perf record` (DWARF call graphs) at the same rate, folded into dir/shadow-*.folded.gz
# and summed per thread, kind of work and function in µs per request (bench/top.py).
set -euo pipefail
secs="${1:-10}"
delay="${2:-2}"
conns="${3:-64}"
source "$(dirname "$0")/lib.sh"
need wrk taskset
need_oha
proxy_cpu=0
load_cpu=$(( $(nproc) > 1 ? 1 : 0 ))

bin="$(release_build -p strangler strangler)"
upstream="$(release_build -p strangler-tests --bin bench-upstream bench-upstream)"

legacy=$(free_port); fast=$(free_port); slow=$(free_port)
taskset -c "$load_cpu" "$upstream" "$legacy" "$delay" & pids+=($!)
taskset -c "$load_cpu" "$upstream" "$fast" "$delay" & pids+=($!)
taskset -c "$load_cpu" "$upstream" "$slow" "$(( delay * 10 ))" & pids+=($!)

declare -A port admin pid
proxy() { # $1 = name, $2 = shadow section ("" for none): starts it, sets port/admin/pid[$1]
  port[$1]=$(free_port); admin[$1]=$(free_port)
  mkdir -p "$work/$1/rules"
  cat > "$work/$1/rules/r.yaml" <<YAML
routes:
  - name: orders-read
    match: { methods: [GET], path: { template: "/api/orders/{id}" } }
    target: { service: legacy }
$2
YAML
  cat > "$work/$1/strangler.yaml" <<YAML
listen: ["127.0.0.1:${port[$1]}"]
admin: "127.0.0.1:${admin[$1]}"
workers: 1
legacy: { address: "127.0.0.1:$legacy" }
services:
  fast: { address: "127.0.0.1:$fast" }
  slow: { address: "127.0.0.1:$slow", read_timeout: 5s }
store: "sqlite://$work/$1/strangler.db"
rules: rules
log: { level: "warn" }
YAML
  RUST_LOG=warn taskset -c "$proxy_cpu" "$bin" run --config "$work/$1/strangler.yaml" 2>"$work/$1.log" &
  pids+=($!); pid[$1]=$!
}
shadow_to() { echo "    shadow: { service: $1, limits: { in_flight: 4096 } }"; }
proxy plain ""
proxy fast "$(shadow_to fast)"
proxy slow "$(shadow_to slow)"

wait_port() { for _ in $(seq 1 200); do curl -fs "http://127.0.0.1:$1/api/orders/1" >/dev/null 2>&1 && return 0; sleep 0.05; done; echo "port $1 never answered" >&2; tail -n 5 "$work"/*.log >&2; exit 1; }
for p in $legacy $fast $slow "${port[@]}"; do wait_port "$p"; done

hz=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
compared() { # admin port: copies compared (match + mismatch) so far
  curl -fs "http://127.0.0.1:$1/metrics" | awk '/^strangler_shadow_total\{/ && /result="(match|mismatch)"/ {s += $2} END {print s + 0}'
}

# Saturation of the route without shadow (closed loop, as many requests as it can).
taskset -c "$load_cpu" wrk -t1 -c"$conns" -d2s "http://127.0.0.1:${port[plain]}/api/orders/1" >/dev/null
sat=$(taskset -c "$load_cpu" wrk -t1 -c"$conns" -d"${secs}s" "http://127.0.0.1:${port[plain]}/api/orders/1" | awk '/Requests\/sec/ {print int($2)}')
rate=$(( sat / 2 ))
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); monolith ${delay} ms, slow target $(( delay * 10 )) ms; saturation without shadow ${sat} req/s → oha -q ${rate} for ${secs}s, -c ${conns}" >&2

run() { # $1 = label, $2 = proxy name
  local url="http://127.0.0.1:${port[$2]}/api/orders/1"
  taskset -c "$load_cpu" oha --no-tui -z 2s -q "$rate" -c "$conns" "$url" >/dev/null # warm-up
  local c0 before after c1 c
  c0=$(compared "${admin[$2]}"); before=$(cpu_ticks "${pid[$2]}")
  taskset -c "$load_cpu" oha --no-tui --output-format json --latency-correction -z "${secs}s" -q "$rate" -c "$conns" "$url" >"$work/oha.json"
  after=$(cpu_ticks "${pid[$2]}")
  # Copies of the last requests may still be out (the slow target): wait until the count holds.
  c1=$(compared "${admin[$2]}")
  for _ in $(seq 1 25); do sleep 0.2; c=$(compared "${admin[$2]}"); [ "$c" = "$c1" ] && break; c1=$c; done
  python3 - "$1" "$before" "$after" "$hz" "$c0" "$c1" "$work/oha.json" <<'PY'
import json, sys
label, path = sys.argv[1], sys.argv[7]
before, after, hz, c0, c1 = map(float, sys.argv[2:7])
r = json.load(open(path))
ok = sum(v for k, v in r["statusCodeDistribution"].items() if k.startswith("2"))
p = r["latencyPercentiles"]
print("|".join([label, f"{r['summary']['requestsPerSec']:.0f}", f"{p['p50']*1000:.2f}", f"{p['p99']*1000:.2f}",
                f"{(after-before)/hz*1e6/max(ok,1):.1f}", str(int(c1 - c0)), str(ok)]))
PY
}


rows=()
rows+=("$(run "no shadow" plain)")
rows+=("$(run "shadow, target as fast" fast)")
rows+=("$(run "shadow, target 10× slower" slow)")

base_p99=$(echo "${rows[0]}" | cut -d'|' -f4)
printf '\n| %-28s | %8s | %8s | %8s | %10s | %12s | %10s |\n' "setup" "req/s" "p50 ms" "p99 ms" "p99 change" "CPU µs/req" "compared"
printf '|%s|%s|%s|%s|%s|%s|%s|\n' "------------------------------" "----------" "----------" "----------" "------------" "--------------" "------------"
for r in "${rows[@]}"; do
  IFS='|' read -r name rps p50 p99 cpu copies ok <<<"$r"
  change=$(python3 -c "print(f'{($p99/$base_p99-1)*100:+.1f} %')")
  [ "$name" = "no shadow" ] && change="-" && copies="-"
  [ "$copies" != "-" ] && copies="$copies/$ok"
  printf '| %-28s | %8s | %8s | %8s | %10s | %12s | %10s |\n' "$name" "$rps" "$p50" "$p99" "$change" "$cpu" "$copies"
done

if [ -n "${PROFILE:-}" ]; then
  need perf
  mkdir -p "$PROFILE"
  profile() { # $1 = proxy name, $2 = table row (for its CPU µs/req)
    local us; us=$(echo "$2" | cut -d'|' -f5)
    perf record -q -F 499 --call-graph dwarf,16384 -p "${pid[$1]}" -o "$work/$1.data" -- sleep "$secs" >/dev/null 2>&1 &
    local rec=$!
    taskset -c "$load_cpu" oha --no-tui -z "${secs}s" -q "$rate" -c "$conns" "http://127.0.0.1:${port[$1]}/api/orders/1" >/dev/null
    wait "$rec" || true
    perf script -i "$work/$1.data" 2>/dev/null | python3 "$root/bench/fold.py" | gzip -9 > "$PROFILE/shadow-$1.folded.gz"
    printf '\n### %s (%s µs/req)\n\n' "$1" "$us"
    python3 "$root/bench/top.py" "$PROFILE/shadow-$1.folded.gz" "$us" 25
  }
  profile plain "${rows[0]}"
  profile fast "${rows[1]}"
fi
