# Shared by the bench scripts (sourced): tool checks, release builds, free ports, kinesalite, and
# a work dir whose background processes are stopped on exit.
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

need() { # tools…
  for tool in "$@"; do
    command -v "$tool" >/dev/null || { echo "bench needs $tool (apt-get install nginx-light wrk util-linux)"; exit 1; }
  done
}

# Builds in release and prints the path of the named artefact under the target directory.
# STRANGLER_BIN, when set, is used instead of building strangler (A/B runs of two builds).
release_build() { # cargo args…, then the artefact path relative to target/release as last arg
  local artefact="${*: -1}"
  if [ "$artefact" = strangler ] && [ -n "${STRANGLER_BIN:-}" ]; then
    echo "$STRANGLER_BIN"
    return
  fi
  echo "building (release)…" >&2
  cargo build --quiet --release --manifest-path "$root/Cargo.toml" "${@:1:$#-1}"
  local target_dir
  target_dir="$(cargo metadata --format-version 1 --no-deps --manifest-path "$root/Cargo.toml" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
  echo "$target_dir/release/$artefact"
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# kinesalite from npm, installed once under ~/.cache/strangler-npm; prints its path.
kinesalite_bin() {
  local npm_dir="$HOME/.cache/strangler-npm"
  if [ ! -x "$npm_dir/node_modules/.bin/kinesalite" ]; then
    mkdir -p "$npm_dir" && npm install --silent --no-audit --no-fund --prefix "$npm_dir" kinesalite@3.3.3 >&2
  fi
  echo "$npm_dir/node_modules/.bin/kinesalite"
}

work="$(mktemp -d)"
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT INT TERM

# An nginx config under $work/<name>: one worker, no daemon, no access log, the given http block
# contents.
nginx_conf() { # $1 = name, $2 = server block, $3 = worker processes (default 1)
  mkdir -p "$work/$1"
  cat > "$work/$1/nginx.conf" <<NGINX
worker_processes ${3:-1};
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

# The nginx `return 200` backend on port $1, and an nginx proxy_pass to it with upstream
# keep-alive on port $2 (configs in $work/backend and $work/proxy; started by the caller).
nginx_backend_and_proxy() { # $1 = backend port, $2 = proxy port, $3 = the proxy's workers (default 1)
  nginx_conf backend "server { listen 127.0.0.1:$1; keepalive_requests 1000000; location / { return 200 'ok'; } }"
  nginx_conf proxy "upstream be { server 127.0.0.1:$1; keepalive 128; }
  server { listen 127.0.0.1:$2; keepalive_requests 1000000;
    location / { proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }" "${3:-1}"
}

# oha (constant-rate load with latency correction), installed once with cargo.
need_oha() {
  if ! command -v oha >/dev/null; then
    echo "installing oha (cargo install)…" >&2
    cargo install --quiet --locked oha >&2
  fi
}
