#!/usr/bin/env bash
# Builds the Worker (functions/worker/build/) with worker-build, using
# wasm-bindgen, wasm-opt and esbuild installed by `.ci/run` under .tools and
# tests/edge/node_modules (worker-build would otherwise download them).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
tools="$root/.tools"
wbg="$(awk '/^name = "wasm-bindgen"$/ {getline; gsub(/"/, "", $3); print $3; exit}' "$root/Cargo.lock")"
export WASM_BINDGEN_BIN="$tools/wasm-bindgen-$wbg/bin/wasm-bindgen"
export WASM_OPT_BIN="$root/tests/edge/node_modules/.bin/wasm-opt"
export ESBUILD_BIN="$root/tests/edge/node_modules/.bin/esbuild"
for bin in "$WASM_BINDGEN_BIN" "$WASM_OPT_BIN" "$ESBUILD_BIN" "$tools/worker-build/bin/worker-build"; do
  [ -x "$bin" ] || { echo "missing $bin: run .ci/run (or its edge tools step) first" >&2; exit 1; }
done
cd "$root/functions/worker"
exec "$tools/worker-build/bin/worker-build" --release "$@"
