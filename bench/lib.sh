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
