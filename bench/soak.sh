#!/usr/bin/env bash
# Memory through a Kinesis outage: the proxy publishes every POST (sync durability, SQLite outbox,
# partition key: one of 50 users) at a steady rate over keep-alive connections, to kinesalite
# behind a TCP forwarder. After a warm-up the forwarder stops listening (connections refused) for
# the outage, with the load still on; then Kinesis is back, the load stops, and the relay drains.
# Prints the proxy's RSS (and its anonymous part), the events waiting and published, and whether
# the stream is up, every few seconds; a row per sample to stderr, a table of one row in
# `every` at the end. Not a test: a figure for the README's memory budget.
# Usage: bench/soak.sh [rate/s, default 200] [warm s, 60] [outage s, 300] [sample s, 5] [every, 6]
set -euo pipefail
rate="${1:-200}"; warm="${2:-60}"; outage="${3:-300}"; sample="${4:-5}"; every="${5:-6}"
source "$(dirname "$0")/lib.sh"
need nginx curl python3
kinesalite="$(kinesalite_bin)"
bin="$(release_build -p strangler strangler)"
backend=$(free_port); kport=$(free_port); fport=$(free_port); port=$(free_port); admin=$(free_port)

cat > "$work/nginx.conf" <<NGINX
worker_processes 1; daemon off; pid $work/nginx.pid; error_log $work/nginx.err warn;
events { worker_connections 1024; }
http { access_log off; client_body_temp_path $work; proxy_temp_path $work; fastcgi_temp_path $work;
  uwsgi_temp_path $work; scgi_temp_path $work;
  server { listen 127.0.0.1:$backend; keepalive_requests 1000000; location / { return 201 '{"id":1}'; } } }
NGINX
nginx -c "$work/nginx.conf" -p "$work" & pids+=($!)
"$kinesalite" --port "$kport" --createStreamMs 0 --shardLimit 100 >/dev/null 2>&1 & pids+=($!)

# The forwarder: SIGUSR1 stops listening (connections refused) and resets the open connections,
# SIGUSR2 listens again.
cat > "$work/forward.py" <<'PY'
import asyncio, signal, sys
listen, target = int(sys.argv[1]), int(sys.argv[2])
async def pipe(r, w):
    try:
        while data := await r.read(65536):
            w.write(data); await w.drain()
    except Exception:
        pass
    finally:
        w.close()
open_conns = set()
async def handle(cr, cw):
    try:
        tr, tw = await asyncio.open_connection("127.0.0.1", target)
    except OSError:
        cw.close(); return
    pair = (cw, tw)
    open_conns.add(pair)
    try:
        await asyncio.gather(pipe(cr, tw), pipe(tr, cw))
    finally:
        open_conns.discard(pair)
async def main():
    loop = asyncio.get_running_loop()
    server = [await asyncio.start_server(handle, "127.0.0.1", listen, reuse_address=True)]
    async def down():
        # Refuse new connections and reset the open ones (pooled keep-alive connections too).
        server[0].close()
        for cw, tw in list(open_conns):
            cw.transport.abort(); tw.transport.abort()
    async def up():
        server[0] = await asyncio.start_server(handle, "127.0.0.1", listen, reuse_address=True)
    loop.add_signal_handler(signal.SIGUSR1, lambda: asyncio.ensure_future(down()))
    loop.add_signal_handler(signal.SIGUSR2, lambda: asyncio.ensure_future(up()))
    await asyncio.Event().wait()
asyncio.run(main())
PY
python3 "$work/forward.py" "$fport" "$kport" & pids+=($!); forwarder=$!

mkdir -p "$work/rules"
cat > "$work/rules/r.yaml" <<'YAML'
routes:
  - name: orders
    match: { methods: [POST], path: { prefix: /api/orders } }
    target: { service: legacy }
    publish: { stream: orders, type: ORDER_CREATED, partition_key: { request.body: "$.user" } }
YAML
cat > "$work/strangler.yaml" <<YAML
listen: ["127.0.0.1:$port"]
admin: "127.0.0.1:$admin"
legacy: { address: "127.0.0.1:$backend" }
rules: rules
store: "sqlite://$work/outbox.db"
kinesis: { region: us-east-1, endpoint: "http://127.0.0.1:$fport" }
log: { level: info }
${SOAK_EXTRA:-}
YAML
for _ in $(seq 1 100); do (echo > "/dev/tcp/127.0.0.1/$kport") 2>/dev/null && break; sleep 0.1; done
export AWS_ACCESS_KEY_ID=soak AWS_SECRET_ACCESS_KEY=soak STRANGLER_REDACT_SALT=soak
"$bin" stream create --config "$work/strangler.yaml" --stream orders --shards 4 >/dev/null
"$bin" run --config "$work/strangler.yaml" 2>"$work/proxy.log" & pids+=($!); proxy=$!
for _ in $(seq 1 200); do curl -fs "http://127.0.0.1:$admin/metrics" >/dev/null 2>&1 && break; sleep 0.05; done

# The load: 10 keep-alive connections, `rate` requests/s in all, ~1 KB JSON bodies, 50 users.
cat > "$work/load.py" <<'PY'
import http.client, json, sys, threading, time
port, rate = int(sys.argv[1]), float(sys.argv[2])
stop = threading.Event()
pad = "x" * 900
def worker(i):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    n, start, per = 0, time.monotonic(), rate / 10
    while not stop.is_set():
        n += 1
        body = json.dumps({"user": f"user-{(i * 7 + n) % 50}", "n": n, "note": pad})
        try:
            conn.request("POST", "/api/orders", body, {"content-type": "application/json"})
            conn.getresponse().read()
        except Exception:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        delay = start + n / per - time.monotonic()
        if delay > 0:
            time.sleep(delay)
threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(10)]
for t in threads: t.start()
sys.stdin.read()  # runs until stdin closes
stop.set()
PY
exec 3> >(python3 "$work/load.py" "$port" "$rate")

metric() { # name → sum over series
  curl -fs "http://127.0.0.1:$admin/metrics" | awk -v m="$1" '$1 ~ "^"m"({|$)" {s += $2} END {print s + 0}'
}
rss() { awk -v k="$1:" '$1 == k {printf "%.0f", $2 / 1024}' "/proc/$proxy/status"; }
rows=()
t0=$(date +%s)
phase=warm
took() { echo $(( $(date +%s) - t0 )); }
record() {
  local row
  row="$(took)|$phase|$(rss VmRSS)|$(rss RssAnon)|$(metric strangler_outbox_depth)|$(metric strangler_events_published_total)|$(metric strangler_events_dead_lettered_total)|$(metric strangler_stream_up)"
  rows+=("$row"); echo "$row" >&2
}
echo "t s|phase|RSS MB|anon MB|waiting|published|dead|up" >&2
while [ "$(took)" -lt "$warm" ]; do record; sleep "$sample"; done
kill -USR1 "$forwarder"; phase=outage
while [ "$(took)" -lt $(( warm + outage )) ]; do record; sleep "$sample"; done
kill -USR2 "$forwarder"; exec 3>&-; phase=drain
drained=""
while :; do
  record
  if [ "$(metric strangler_outbox_depth)" = 0 ]; then
    drained=${drained:-$(took)}
    [ $(( $(took) - drained )) -ge 60 ] && break
    phase=idle
  fi
  sleep "$sample"
done
echo
echo "rate $rate/s over 10 connections; outage ${outage}s after ${warm}s; $(grep -c WARN "$work/proxy.log" || true) WARN and $(grep -c 'ERROR' "$work/proxy.log" || true) ERROR log lines; events.memory ${SOAK_EXTRA:-default}"
printf '| %6s | %-6s | %7s | %8s | %8s | %9s | %5s | %3s |\n' "t (s)" phase "RSS MB" "anon MB" waiting published dead up
printf '|%s|%s|%s|%s|%s|%s|%s|%s|\n' "--------" "--------" "---------" "----------" "----------" "-----------" "-------" "-----"
last=$(( ${#rows[@]} - 1 ))
for i in "${!rows[@]}"; do
  if (( i % every == 0 || i == last )); then
    IFS='|' read -r t ph r a w p d u <<<"${rows[$i]}"
    printf '| %6s | %-6s | %7s | %8s | %8s | %9s | %5s | %3s |\n' "$t" "$ph" "$r" "$a" "$w" "$p" "$d" "$u"
  fi
done
peak=$(printf '%s\n' "${rows[@]}" | awk -F'|' '$3 > m {m = $3} END {print m}')
echo "peak RSS ${peak} MB; log lines about the stream:"
grep -E "unreachable|reachable again" "$work/proxy.log" | cut -c1-300 || true
