#!/usr/bin/env bash
# Cold start of the relay Lambda binary, measured on this machine: each run
# starts the release binary under a Lambda runtime API (cargo lambda), lets it
# build its ports (the AWS client, SSM-free settings, Redis, the first snapshot
# from DynamoDB on the emulator) and times the first answered request.
# Prints the function's own init time, the time to the first answer, and the
# binary's size. Needs the emulator on 127.0.0.1:5400 and Redis on 6390
# (`.ci/run` starts both; or see the README's "Try it locally").
#
# Usage: tests/aws/cold_start.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${1:-10}
PORT=9477
export AWS_ENDPOINT_URL=${OBLIVIOUS_TEST_AWS:-http://127.0.0.1:5400} AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test
export OBLIVIOUS_TABLE_PREFIX="coldstart-$$-" OBLIVIOUS_REDIS_URL=${OBLIVIOUS_TEST_REDIS:-redis://127.0.0.1:6390/}
OBLIVIOUS_SECRET_KEY=$(head -c32 /dev/urandom | base64)
export OBLIVIOUS_SECRET_KEY
export OBLIVIOUS_CONFIG_TOML='[prices."*"]
free = true
[[channels]]
name = "c"
type = "openai"
base_url = "http://127.0.0.1:9/v1"
keys = ["k"]
models = ["gpt-*"]'

cargo build --release -q -p oblivious-lambda --bin relay --bin setup
KEY=$(target/release/setup --create-tables | sed 's/.*: //')

sleep 3600 | .venv/bin/cargo-lambda lambda watch --only-lambda-apis -A 127.0.0.1 -P "$PORT" >/dev/null 2>&1 &
CL=$!
trap 'kill $CL 2>/dev/null || true; pkill -P $$ sleep 2>/dev/null || true' EXIT
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done

init=(); first=()
for _ in $(seq "$RUNS"); do
  start=$(date +%s%N)
  AWS_LAMBDA_RUNTIME_API="http://127.0.0.1:$PORT/.rt" AWS_LAMBDA_FUNCTION_NAME=_ AWS_LAMBDA_FUNCTION_VERSION=1 \
    AWS_LAMBDA_FUNCTION_MEMORY_SIZE=512 target/release/relay > target/coldstart.log 2>&1 &
  R=$!
  until curl -sf -o /dev/null -m 5 "http://127.0.0.1:$PORT/lambda-url/_/v1/models" -H "Authorization: Bearer $KEY"; do sleep 0.005; done
  end=$(date +%s%N)
  kill $R; wait $R 2>/dev/null || true
  init+=("$(grep -o 'init_ms=[0-9]*' target/coldstart.log | cut -d= -f2)")
  first+=("$(( (end - start) / 1000000 ))")
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "runs: $RUNS"
echo "init (ports built, first snapshot loaded), median ms: $(median "${init[@]}")  [all: ${init[*]}]"
echo "process start → first answered request, median ms: $(median "${first[@]}")  [all: ${first[*]}]"
echo "relay binary (x86_64, release profile, line tables kept): $(du -h target/release/relay | cut -f1)"
for z in target/lambda/relay/bootstrap.zip; do [ -f "$z" ] && echo "relay bootstrap.zip (arm64, stripped, as the README builds it): $(du -h "$z" | cut -f1)"; done
true
