#!/usr/bin/env bash
# The gateway benchmark, from a fresh clone: installs oha (into .tools/, git-ignored)
# if it is missing, builds the release gateway and the bench, and runs it.
#   tests/bench/run.sh                 # small store: ~1 minute after the build
#   tests/bench/run.sh --scale         # + 100k keys, 10k channels, 1k prices, compared
#   tests/bench/run.sh --soak 600      # + 10 minutes of steady load
#   tests/bench/run.sh --json out.json # figures as JSON too
set -euo pipefail
cd "$(dirname "$0")/../.."
OHA_VERSION=1.16.0
if [ -z "${OHA:-}" ]; then
  if command -v oha >/dev/null && oha --version | grep -q "$OHA_VERSION"; then
    OHA=$(command -v oha)
  else
    OHA=$PWD/.tools/bin/oha
    if ! [ -x "$OHA" ] || ! "$OHA" --version | grep -q "$OHA_VERSION"; then
      echo "installing oha $OHA_VERSION into .tools/ …" >&2
      cargo install oha --version "$OHA_VERSION" --locked --root .tools >&2
    fi
  fi
fi
export OHA
command -v taskset >/dev/null || echo "taskset not found: running unpinned" >&2
cargo build --release --locked -p oblivious -p oblivious-bench >&2
exec target/release/bench --bin target/release/oblivious "$@"
