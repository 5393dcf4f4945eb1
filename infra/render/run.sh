#!/usr/bin/env bash
# Screenshots infra/grafana/oblivious.json rendered from a real run, without Grafana:
# a real gateway (target/debug/oblivious) over mock upstreams, a real Prometheus
# (infra/stack.sh, 1s scrapes), ~2.5 minutes of varied traffic (infra/render/traffic.py),
# then infra/render/render.py writes the dashboard as HTML from Prometheus and
# headless Chromium takes the picture.
#
#   infra/render/run.sh [OUT.png]        # default docs/dashboard.png
#
# Environment: TRAFFIC_SECONDS (150), WIDTH (1600), RATE_INTERVAL (unset: Grafana's
# rule for a 1s-scrape data source, max($__interval + 1s, 4s); e.g. 15s smooths),
# SKIP_BUILD=1 (use the binaries already in target/debug), KEEP_WORK=1 (keep the
# config, logs, HTML and TSDB in the temporary directory it prints).
# The PNG is cut to 256 colours (pngquant, else png8.py) when over 300 KB.
# Needs prometheus (Debian's package), python3 and chromium (apt-get install -y chromium).
# Everything listens on 127.0.0.1; the processes it started are stopped on exit, by pid.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
HERE="$ROOT/infra/render"
OUT="$(realpath -m "${1:-$ROOT/docs/dashboard.png}")"
SECONDS_OF_TRAFFIC="${TRAFFIC_SECONDS:-150}"
WIDTH="${WIDTH:-1600}"
cd "$ROOT"

for tool in prometheus python3 curl; do
  command -v "$tool" > /dev/null || { echo "run.sh needs $tool" >&2; exit 1; }
done
CHROMIUM="$(command -v chromium || command -v chromium-browser || true)"
[ -n "$CHROMIUM" ] || { echo "run.sh needs chromium: apt-get install -y chromium" >&2; exit 1; }

if [ "${SKIP_BUILD:-}" != 1 ]; then
  cargo build -q -p oblivious -p oblivious-mock --bin oblivious --bin mock-upstream
fi
BIN="$ROOT/target/debug/oblivious"
MOCK="$ROOT/target/debug/mock-upstream"

WORK="$(mktemp -d /tmp/oblivious-render.XXXXXX)"
PIDS=()
PROM_PORT=""
cleanup() {
  local code=$?
  if [ -n "$PROM_PORT" ]; then
    PROM_PORT="$PROM_PORT" PROM_DIR="$WORK/prometheus" bash "$ROOT/infra/stack.sh" stop > /dev/null || true
  fi
  for pid in "${PIDS[@]}"; do kill "$pid" 2> /dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2> /dev/null || true; done
  if [ "${KEEP_WORK:-}" = 1 ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
  exit "$code"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Free ports on 127.0.0.1 for the primary, slow, flaky and dead upstreams, the gateway,
# its metrics and Prometheus: below the kernel's ephemeral range, so that another
# program's port-0 bind or outgoing connection cannot take one before it is used.
read -r P_PRIMARY P_SLOW P_FLAKY P_DEAD P_GW P_METRICS P_PROM < <(python3 -c '
import random, socket
ports = []
while len(ports) < 7:
    p = random.randrange(20000, 32000)
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
    except OSError:
        continue
    finally:
        s.close()
    if p not in ports:
        ports.append(p)
print(*ports)')

wait_port() { # PORT WHAT
  for _ in $(seq 200); do
    python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $1), 0.2)" 2> /dev/null && return 0
    sleep 0.05
  done
  echo "$2 did not listen on 127.0.0.1:$1" >&2
  exit 1
}

# The upstreams: the repository's mock (fast, always answers), and infra/render/mock.py
# for a slow one (100-900 ms heads, streamed chunks, 3% stalls past the 2 s upstream
# timeout), a flaky one (55% 500s, 10% 429s) and a dead one (always 500).
"$MOCK" "$P_PRIMARY" > "$WORK/mock-primary.log" 2>&1 &
PIDS+=($!)
python3 "$HERE/mock.py" "$P_SLOW" --name slow --delay 100-900 --chunk-ms 30 --stall-rate 0.03 --stall 3 \
  > "$WORK/mock-slow.log" 2>&1 &
PIDS+=($!)
python3 "$HERE/mock.py" "$P_FLAKY" --name flaky --delay 20-80 --fail-rate 0.55 --r429-rate 0.10 \
  > "$WORK/mock-flaky.log" 2>&1 &
PIDS+=($!)
python3 "$HERE/mock.py" "$P_DEAD" --name dead --fail-rate 1 > "$WORK/mock-dead.log" 2>&1 &
PIDS+=($!)
wait_port "$P_PRIMARY" "mock-upstream"
wait_port "$P_SLOW" "mock.py slow"
wait_port "$P_FLAKY" "mock.py flaky"
wait_port "$P_DEAD" "mock.py dead"

cat > "$WORK/oblivious.toml" << EOF
[metrics]
listen = "127.0.0.1:$P_METRICS"

[relay]
upstream_timeout_ms = 2000
retry_base_ms = 20
retry_max_ms = 200
attempts_per_channel = 2
channel_failure_threshold = 6
key_failure_threshold = 3
key_rest_seconds = 10

[billing]
sweep_interval_seconds = 5

[alerts]
thresholds_percent = [90, 50, 10]

[groups.default]
ratio = 1.0

[groups.vip]
ratio = 0.8
description = "20% off"

[rate_limits.groups.vip]
token = { rpm = 60 }
user = { concurrency = 4 }

[rate_limits.models."m-limited"]
rpm = 5

[prices."gpt-4o-mini"]
input = 0.15
output = 0.60

[prices."gpt-4o"]
input = 2.50
output = 10.00

[prices."llama-3-70b"]
input = 0.90
output = 0.90

[prices."text-embedding-3-*"]
input = 0.02

[prices."m-*"]
input = 1.00
output = 1.00

[[channels]]
name = "primary"
type = "openai"
base_url = "http://127.0.0.1:$P_PRIMARY/v1"
models = ["gpt-4o-mini", "gpt-4o", "text-embedding-3-*", "m-limited"]
group = ["default", "vip"]

[[channels]]
name = "slow"
type = "openai"
base_url = "http://127.0.0.1:$P_SLOW/v1"
models = ["gpt-4o", "llama-3-70b"]
group = ["default", "vip"]

[[channels]]
name = "flaky"
type = "openai"
base_url = "http://127.0.0.1:$P_FLAKY/v1"
keys = ["sk-flaky-key-a", "sk-flaky-key-b"]
models = ["gpt-4o-mini"]
priority = 10
group = ["default", "vip"]

[[channels]]
name = "dead"
type = "openai"
base_url = "http://127.0.0.1:$P_DEAD/v1"
models = ["m-down"]
group = ["default", "vip"]
EOF

OBLIVIOUS_LOG=warn "$BIN" serve --listen "127.0.0.1:$P_GW" --config "$WORK/oblivious.toml" --data "$WORK/data" \
  > "$WORK/gateway.out" 2> "$WORK/gateway.log" &
PIDS+=($!)
for _ in $(seq 300); do grep -q "^Oblivious listening on" "$WORK/gateway.out" 2> /dev/null && break; sleep 0.1; done
grep -q "^Oblivious listening on" "$WORK/gateway.out" || { cat "$WORK/gateway.log" >&2; exit 1; }
GW="http://127.0.0.1:$P_GW"
ADMIN="$(grep -o 'sk-[A-Za-z0-9]*' "$WORK/gateway.out" | head -n 1)"
[ -n "$ADMIN" ] || { echo "the gateway printed no admin key" >&2; exit 1; }

cli() { "$BIN" "$@" --data "$WORK/data"; }
cli user create alice --quota 100000000 > /dev/null           # $100
cli user create bob --group vip --quota 100000000 > /dev/null # $100, 20% off
cli user create erin --quota 30000 > /dev/null                # $0.03: crosses 90/50/10% and runs out
ALICE="$(cli token create --name alice --user alice)"
BOB="$(cli token create --name bob --user bob)"
ERIN="$(cli token create --name erin --user erin)"
sleep 1.5 # the server picks up CLI changes within half a second

PROM_PORT="$P_PROM"
PROM_PORT="$P_PROM" PROM_DIR="$WORK/prometheus" SCRAPE_INTERVAL=1s bash "$ROOT/infra/stack.sh" start "127.0.0.1:$P_METRICS"
PROM="http://127.0.0.1:$P_PROM"
for _ in $(seq 150); do
  curl -fsS "$PROM/api/v1/query" --data-urlencode 'query=up{job="oblivious"}' 2> /dev/null | grep -q '"1"\]' && break
  sleep 0.2
done

NOW=$(date +%s)
START=$((NOW - 10))
# The render ends where the traffic stops (its "now"), so stats show the last live values.
END=$((NOW + ${SECONDS_OF_TRAFFIC%.*}))
echo "driving ${SECONDS_OF_TRAFFIC}s of traffic at $GW (metrics 127.0.0.1:$P_METRICS, prometheus $PROM)"
python3 "$HERE/traffic.py" "$GW" "$ADMIN" "$ALICE" "$BOB" "$ERIN" --seconds "$SECONDS_OF_TRAFFIC"
sleep 3 # the last scrapes

RENDER_ARGS=(--prometheus "$PROM" --from "$START" --to "$END" --out "$WORK/dashboard.html" --width "$WIDTH"
  --scrape-interval 1s)
[ -n "${RATE_INTERVAL:-}" ] && RENDER_ARGS+=(--rate-interval "$RATE_INTERVAL")
python3 "$HERE/render.py" "${RENDER_ARGS[@]}" | tee "$WORK/render.out"
HEIGHT="$(sed -n 's/^height=//p' "$WORK/render.out")"

mkdir -p "$(dirname "$OUT")"
"$CHROMIUM" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
  --disable-component-update --disable-sync --hide-scrollbars --force-device-scale-factor=1 \
  --user-data-dir="$WORK/chromium" --window-size="$WIDTH,$HEIGHT" --screenshot="$OUT" \
  "file://$WORK/dashboard.html" > "$WORK/chromium.log" 2>&1 || { tail -n 20 "$WORK/chromium.log" >&2; exit 1; }
[ -s "$OUT" ] || { echo "chromium wrote no screenshot" >&2; tail -n 20 "$WORK/chromium.log" >&2; exit 1; }
# A palette of 256 colours keeps the picture small: pngquant when installed, else png8.py.
if [ "$(stat -c %s "$OUT")" -gt 300000 ]; then
  if command -v pngquant > /dev/null; then
    pngquant --force --skip-if-larger --output "$OUT" 256 -- "$OUT" || true
  else
    python3 "$HERE/png8.py" "$OUT"
  fi
fi
echo "wrote $OUT ($(stat -c %s "$OUT") bytes, ${WIDTH}x$HEIGHT)"
