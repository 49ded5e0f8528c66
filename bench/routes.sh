#!/usr/bin/env bash
# What many routes cost: for 0, 1,000 and 10,000 routes (a template path, a method and a sticky
# 50 % weight each, as in bench/run.sh), `strangler check`'s wall time and peak memory, the
# proxy's memory at idle after start, and a reload's time (POST /api/reload, read from
# strangler_rules_reload_duration_seconds, the mean of 5). Usage: bench/routes.sh [reloads]
set -euo pipefail
reloads="${1:-5}"
source "$(dirname "$0")/lib.sh"
need curl python3
bin="$(release_build -p strangler strangler)"
backend_port=$(free_port)

metric() { # $1 = admin port, $2 = metric name: its value
  curl -fs "http://127.0.0.1:$1/metrics" | awk -v m="$2" '$1 == m {print $2}'
}

row() { # $1 = routes
  local dir="$work/r$1"; mkdir -p "$dir/rules"
  python3 - "$dir/rules/routes.yaml" "$1" <<'PY'
import sys
path, n = sys.argv[1], int(sys.argv[2])
with open(path, "w") as f:
    f.write("routes:\n" if n else "routes: []\n")
    for i in range(n):
        f.write(f"  - name: r{i}\n    match: {{ path: {{ template: \"/svc{i}/items/{{id}}\" }}, methods: [POST] }}\n"
                f"    target: {{ service: new, weight: 50, sticky: {{ path_param: id }} }}\n")
PY
  local port admin; port=$(free_port); admin=$(free_port)
  cat > "$dir/strangler.yaml" <<YAML
listen: ["127.0.0.1:$port"]
admin: "127.0.0.1:$admin"
workers: 1
legacy: { address: "127.0.0.1:$backend_port" }
services:
  new: { address: "127.0.0.1:$backend_port" }
store: "sqlite://$dir/strangler.db"
rules: rules
log: { level: "warn" }
YAML
  local check; check=$( { /usr/bin/time -f "%e %M" "$bin" check --config "$dir/strangler.yaml" >/dev/null; } 2>&1 | tail -1)
  RUST_LOG=warn "$bin" run --config "$dir/strangler.yaml" 2>"$dir/log" & pids+=($!); local pid=$!
  for _ in $(seq 1 400); do curl -fs "http://127.0.0.1:$admin/readyz" >/dev/null 2>&1 && break; sleep 0.05; done
  sleep 2
  local rss; rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
  local s0 c0; s0=$(metric "$admin" strangler_rules_reload_duration_seconds_sum); c0=$(metric "$admin" strangler_rules_reload_duration_seconds_count)
  for _ in $(seq 1 "$reloads"); do curl -fs -X POST "http://127.0.0.1:$admin/api/reload" >/dev/null; done
  local s1 c1; s1=$(metric "$admin" strangler_rules_reload_duration_seconds_sum); c1=$(metric "$admin" strangler_rules_reload_duration_seconds_count)
  local rss2; rss2=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  python3 - "$1" "$check" "$rss" "$rss2" "$s0" "$s1" "$c0" "$c1" <<'PY'
import sys
n, check, rss, rss2, s0, s1, c0, c1 = sys.argv[1:]
secs, peak = check.split()
reload_ms = (float(s1) - float(s0)) / max(1.0, float(c1) - float(c0)) * 1e3
print(f"| {int(n):>6,} | {float(secs)*1e3:8.0f} | {int(peak)/1024:8.1f} | {int(rss)/1024:8.1f} | {reload_ms:8.1f} | {int(rss2)/1024:8.1f} |")
PY
}

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $reloads reloads per row" >&2
echo "| routes | check ms | check peak MB | idle RSS MB | reload ms | RSS after reloads MB |"
echo "|---|---|---|---|---|---|"
for n in 0 1000 10000; do row "$n"; done
