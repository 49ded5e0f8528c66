#!/usr/bin/env bash
# Pass-through benchmark: nginx proxy_pass (upstream keepalive, 1 worker), a minimal hyper 1.x
# proxy (bench/hyper-proxy: one current-thread runtime, pooled upstream connections) and
# strangler (1 worker thread) with no matching rule and with 1,000 routes loaded, in front of the same nginx
# `return 200` backend, all on loopback. wrk and the backend share one core, the proxy under test
# gets the other. Prints req/s, p50/p99 latency, the proxy's CPU µs per request, and the ratio to
# nginx. Usage: bench/run.sh [seconds per run, default 10] [connections, default 64]
# WORKERS=2: nginx with 2 worker processes against strangler with 2 worker threads (the hyper
# proxy stays one thread); nothing is pinned then — proxies, wrk (one thread per worker) and the
# backend share every core, and CPU µs/req sums all of a proxy's processes and threads.
set -euo pipefail
secs="${1:-10}"
conns="${2:-64}"
workers="${WORKERS:-1}"
source "$(dirname "$0")/lib.sh"
need nginx wrk taskset
ncpu=$(nproc)
proxy_cpu=0
load_cpu=$(( ncpu > 1 ? 1 : 0 ))
wrk_threads=1
if [ "$workers" -gt 1 ]; then
  proxy_cpu="0-$(( ncpu - 1 ))"; load_cpu="$proxy_cpu"; wrk_threads="$workers"
fi

bin="$(release_build -p strangler strangler)"
hyper_bin="$(release_build -p bench-hyper-proxy bench-hyper-proxy)"

backend_port=$(free_port); nginx_port=$(free_port); s0_port=$(free_port); s1k_port=$(free_port); hyper_port=$(free_port)

nginx_backend_and_proxy "$backend_port" "$nginx_port" "$workers"

taskset -c "$load_cpu" nginx -c "$work/backend/nginx.conf" -p "$work/backend" & pids+=($!)
taskset -c "$proxy_cpu" nginx -c "$work/proxy/nginx.conf" -p "$work/proxy" & pids+=($!)

strangler_conf() { # $1 = name, $2 = port, $3 = routes
  mkdir -p "$work/$1/rules"
  python3 - "$work/$1/rules/routes.yaml" "$3" <<'PY'
import sys
path, n = sys.argv[1], int(sys.argv[2])
with open(path, "w") as f:
    f.write("routes:\n")
    for i in range(n):
        f.write(f"  - name: r{i}\n    match: {{ path: {{ template: \"/svc{i}/items/{{id}}\" }}, methods: [POST] }}\n"
                f"    target: {{ service: new, weight: 50, sticky: {{ path_param: id }} }}\n")
PY
  cat > "$work/$1/strangler.yaml" <<YAML
listen: ["127.0.0.1:$2"]
admin: "127.0.0.1:$(free_port)"
workers: $workers
legacy: { address: "127.0.0.1:$backend_port" }
services:
  new: { address: "127.0.0.1:$backend_port" }
rules: rules
log: { level: "warn" }
YAML
}
strangler_conf s0 "$s0_port" 0
strangler_conf s1k "$s1k_port" 1000
RUST_LOG=warn taskset -c "$proxy_cpu" "$bin" run --config "$work/s0/strangler.yaml" 2>"$work/s0.log" & pids+=($!); s0_pid=$!
RUST_LOG=warn taskset -c "$proxy_cpu" "$bin" run --config "$work/s1k/strangler.yaml" 2>"$work/s1k.log" & pids+=($!); s1k_pid=$!
taskset -c "$proxy_cpu" "$hyper_bin" "127.0.0.1:$hyper_port" "127.0.0.1:$backend_port" 2>"$work/hyper.log" & pids+=($!); hyper_pid=$!

wait_port() { for _ in $(seq 1 200); do curl -fs "http://127.0.0.1:$1/" >/dev/null 2>&1 && return 0; sleep 0.05; done; echo "port $1 never answered" >&2; tail -n 5 "$work"/*.log "$work"/*/error.log >&2; exit 1; }
for p in $backend_port $nginx_port $s0_port $s1k_port $hyper_port; do wait_port "$p"; done
nginx_proxy_pid=$(pgrep -P "$(cat "$work/proxy/nginx.pid")" | paste -sd,) # the workers, not the master

cpu_ticks() { # utime+stime of processes (comma-separated pids) and their threads, in clock ticks
  local p sum=0
  for p in ${1//,/ }; do sum=$(( sum + $(awk '{print $14 + $15}' "/proc/$p/stat") )); done
  echo "$sum"
}
hz=$(getconf CLK_TCK)

run() { # $1 = label, $2 = port, $3 = pid whose CPU is measured ("" for none)
  taskset -c "$load_cpu" wrk -t"$wrk_threads" -c"$conns" -d2s "http://127.0.0.1:$2/" >/dev/null # warm-up
  local before=0 after=0
  [ -n "$3" ] && before=$(cpu_ticks "$3")
  local out; out=$(taskset -c "$load_cpu" wrk -t"$wrk_threads" -c"$conns" -d"${secs}s" --latency "http://127.0.0.1:$2/")
  [ -n "$3" ] && after=$(cpu_ticks "$3")
  local reqs rps p50 p99
  reqs=$(echo "$out" | awk '/requests in/ {print $1}')
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p50=$(echo "$out" | awk '$1=="50%" {print $2}')
  p99=$(echo "$out" | awk '$1=="99%" {print $2}')
  local cpu_us="-"
  [ -n "$3" ] && cpu_us=$(python3 -c "print(f'{($after-$before)/$hz*1e6/$reqs:.1f}')")
  echo "$1|$rps|$p50|$p99|$cpu_us"
}

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); ${secs}s per run, wrk -t$wrk_threads -c$conns; proxy on cpu $proxy_cpu, wrk + backend on cpu $load_cpu" >&2
w="$workers worker"; t="$workers thread"; [ "$workers" -gt 1 ] && w+="s" && t+="s"
rows=()
rows+=("$(run "direct to backend (reference)" "$backend_port" "")")
rows+=("$(run "nginx proxy_pass, keepalive, $w" "$nginx_port" "$nginx_proxy_pid")")
rows+=("$(run "hyper 1.x proxy, 1 thread (reference)" "$hyper_port" "$hyper_pid")")
rows+=("$(run "strangler, $t, no rule matches" "$s0_port" "$s0_pid")")
rows+=("$(run "strangler, $t, 1,000 routes" "$s1k_port" "$s1k_pid")")

nginx_rps=$(echo "${rows[1]}" | cut -d'|' -f2)
nginx_cpu=$(echo "${rows[1]}" | cut -d'|' -f5)
printf '\n| %-40s | %10s | %8s | %8s | %12s | %9s | %9s |\n' "setup" "req/s" "p50" "p99" "CPU µs/req" "req/s ×" "CPU ×"
printf '|%s|%s|%s|%s|%s|%s|%s|\n' "------------------------------------------" "------------" "----------" "----------" "--------------" "-----------" "-----------"
for r in "${rows[@]}"; do
  IFS='|' read -r name rps p50 p99 cpu <<<"$r"
  ratio=$(python3 -c "print(f'{$rps/$nginx_rps:.2f}')")
  cratio="-"; [ "$cpu" != "-" ] && cratio=$(python3 -c "print(f'{$cpu/$nginx_cpu:.2f}')")
  printf '| %-40s | %10s | %8s | %8s | %12s | %9s | %9s |\n' "$name" "$rps" "$p50" "$p99" "$cpu" "$ratio" "$cratio"
done

# PROFILE=dir: one more run of nginx, the hyper proxy and strangler (no rules) each under
# `perf record` (DWARF call graphs), folded into dir/<name>.folded.gz (flame graph input) and
# summed up per kind of work and function, in µs per request from the table above.
if [ -n "${PROFILE:-}" ]; then
  need perf
  mkdir -p "$PROFILE"
  profile() { # $1 = name, $2 = port, $3 = pid, $4 = table row (for its CPU µs/req)
    local us; us=$(echo "$4" | cut -d'|' -f5)
    perf record -q -F 499 --call-graph dwarf,16384 -p "$3" -o "$work/$1.data" -- sleep "$secs" >/dev/null 2>&1 &
    local rec=$!
    taskset -c "$load_cpu" wrk -t1 -c"$conns" -d"${secs}s" "http://127.0.0.1:$2/" >/dev/null
    wait "$rec" || true
    perf script -i "$work/$1.data" 2>/dev/null | python3 "$root/bench/fold.py" | gzip -9 > "$PROFILE/$1.folded.gz"
    printf '\n### %s (%s µs/req)\n\n' "$1" "$us"
    python3 "$root/bench/top.py" "$PROFILE/$1.folded.gz" "$us" 15
  }
  profile nginx "$nginx_port" "$nginx_proxy_pid" "${rows[1]}"
  profile hyper-proxy "$hyper_port" "$hyper_pid" "${rows[2]}"
  profile strangler "$s0_port" "$s0_pid" "${rows[3]}"
fi
