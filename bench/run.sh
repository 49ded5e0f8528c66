#!/usr/bin/env bash
# Pass-through benchmark: nginx proxy_pass (upstream keepalive, 1 worker) vs strangler (1 worker
# thread) with no matching rule and with 1,000 routes loaded, in front of the same nginx
# `return 200` backend, all on loopback. wrk and the backend share one core, the proxy under test
# gets the other. Prints req/s, p50/p99 latency, the proxy's CPU µs per request, and the ratio to
# nginx. Usage: bench/run.sh [seconds per run, default 10] [connections, default 64]
set -euo pipefail
secs="${1:-10}"
conns="${2:-64}"
source "$(dirname "$0")/lib.sh"
need nginx wrk taskset
ncpu=$(nproc)
proxy_cpu=0
load_cpu=$(( ncpu > 1 ? 1 : 0 ))

bin="$(release_build -p strangler strangler)"

backend_port=$(free_port); nginx_port=$(free_port); s0_port=$(free_port); s1k_port=$(free_port)

nginx_conf() { # $1 = name, $2 = server block
  mkdir -p "$work/$1"
  cat > "$work/$1/nginx.conf" <<NGINX
worker_processes 1;
daemon off;
pid $work/$1/nginx.pid;
error_log $work/$1/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work/$1; proxy_temp_path $work/$1; fastcgi_temp_path $work/$1;
  uwsgi_temp_path $work/$1; scgi_temp_path $work/$1;
  $2
}
NGINX
}
nginx_conf backend "server { listen 127.0.0.1:$backend_port; keepalive_requests 1000000; location / { return 200 'ok'; } }"
nginx_conf proxy "upstream be { server 127.0.0.1:$backend_port; keepalive 128; }
  server { listen 127.0.0.1:$nginx_port; keepalive_requests 1000000;
    location / { proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }"

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
workers: 1
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

wait_port() { for _ in $(seq 1 200); do curl -fs "http://127.0.0.1:$1/" >/dev/null 2>&1 && return 0; sleep 0.05; done; echo "port $1 never answered" >&2; tail -n 5 "$work"/*.log "$work"/*/error.log >&2; exit 1; }
for p in $backend_port $nginx_port $s0_port $s1k_port; do wait_port "$p"; done
nginx_proxy_pid=$(pgrep -P "$(cat "$work/proxy/nginx.pid")" | head -1) # the worker, not the master

cpu_ticks() { # utime+stime of a process and its threads, in clock ticks
  awk '{print $14 + $15}' "/proc/$1/stat"
}
hz=$(getconf CLK_TCK)

run() { # $1 = label, $2 = port, $3 = pid whose CPU is measured ("" for none)
  taskset -c "$load_cpu" wrk -t1 -c"$conns" -d2s "http://127.0.0.1:$2/" >/dev/null # warm-up
  local before=0 after=0
  [ -n "$3" ] && before=$(cpu_ticks "$3")
  local out; out=$(taskset -c "$load_cpu" wrk -t1 -c"$conns" -d"${secs}s" --latency "http://127.0.0.1:$2/")
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

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); ${secs}s per run, wrk -t1 -c$conns; proxy on cpu $proxy_cpu, wrk + backend on cpu $load_cpu" >&2
rows=()
rows+=("$(run "direct to backend (reference)" "$backend_port" "")")
rows+=("$(run "nginx proxy_pass, keepalive, 1 worker" "$nginx_port" "$nginx_proxy_pid")")
rows+=("$(run "strangler, 1 thread, no rule matches" "$s0_port" "$s0_pid")")
rows+=("$(run "strangler, 1 thread, 1,000 routes" "$s1k_port" "$s1k_pid")")

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
