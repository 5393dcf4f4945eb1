#!/usr/bin/env bash
# Runs Prometheus (Debian's `prometheus` package) on 127.0.0.1, scraping one
# gateway's metrics address, with infra/prometheus/alerts.yml loaded.
#
#   infra/stack.sh [start] [METRICS_ADDR]   # default: $OBLIVIOUS_METRICS, else 127.0.0.1:9464
#   infra/stack.sh stop                     # stops the one started with the same PROM_PORT/PROM_DIR
#
# Environment: PROM_PORT (9090), SCRAPE_INTERVAL (5s; also the rules' evaluation
# interval), PROM_DIR (target/prometheus-$PROM_PORT: the effective config, the
# TSDB, prometheus.log, prometheus.pid), PROMETHEUS (the binary).
# Once Prometheus is ready it prints `prometheus pid=PID url=http://127.0.0.1:PORT`.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PORT="${PROM_PORT:-9090}"
DIR="${PROM_DIR:-$ROOT/target/prometheus-$PORT}"
PIDFILE="$DIR/prometheus.pid"
cmd=start
case "${1:-}" in start | stop) cmd="$1"; shift ;; esac

running() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

if [ "$cmd" = stop ]; then
  if running; then
    kill "$(cat "$PIDFILE")" && echo "stopped prometheus pid=$(cat "$PIDFILE")"
    for _ in $(seq 50); do curl -fsS --max-time 1 -o /dev/null "http://127.0.0.1:$PORT/-/ready" 2> /dev/null || break; sleep 0.1; done
  fi
  rm -f "$PIDFILE"
  exit 0
fi

if running; then
  echo "prometheus already runs from $DIR (pid $(cat "$PIDFILE")): infra/stack.sh stop" >&2
  exit 1
fi
# Something answering there already (another Prometheus, the package's service on 9090…).
if curl -s --max-time 1 -o /dev/null "http://127.0.0.1:$PORT/"; then
  echo "127.0.0.1:$PORT is taken: choose another PROM_PORT" >&2
  exit 1
fi
TARGET="${1:-${OBLIVIOUS_METRICS:-127.0.0.1:9464}}"
INTERVAL="${SCRAPE_INTERVAL:-5s}"
mkdir -p "$DIR/data"

# The effective config: prometheus.yml with the target, the intervals and the
# rule file's absolute path put in.
sed -e "s|\"127.0.0.1:9464\"|\"$TARGET\"|" \
  -e "s|^\(  [a-z]*_interval:\) 5s|\1 $INTERVAL|" \
  -e "s|- alerts.yml|- $ROOT/infra/prometheus/alerts.yml|" \
  "$ROOT/infra/prometheus/prometheus.yml" > "$DIR/prometheus.yml"
grep -q "\"$TARGET\"" "$DIR/prometheus.yml" || { echo "could not set the target in $DIR/prometheus.yml" >&2; exit 1; }
if command -v promtool > /dev/null; then
  promtool check config "$DIR/prometheus.yml" > /dev/null
fi

"${PROMETHEUS:-prometheus}" --config.file="$DIR/prometheus.yml" --storage.tsdb.path="$DIR/data" \
  --storage.tsdb.retention.time=1d --web.listen-address="127.0.0.1:$PORT" \
  < /dev/null > "$DIR/prometheus.log" 2>&1 &
PID=$!
echo "$PID" > "$PIDFILE"
for _ in $(seq 300); do
  if curl -fsS --max-time 1 -o /dev/null "http://127.0.0.1:$PORT/-/ready" 2> /dev/null && kill -0 "$PID" 2> /dev/null; then
    echo "prometheus pid=$PID url=http://127.0.0.1:$PORT target=$TARGET interval=$INTERVAL dir=$DIR"
    exit 0
  fi
  kill -0 "$PID" 2> /dev/null || break
  sleep 0.1
done
echo "prometheus did not become ready on 127.0.0.1:$PORT ($DIR/prometheus.log):" >&2
tail -n 20 "$DIR/prometheus.log" >&2
kill "$PID" 2> /dev/null || true
rm -f "$PIDFILE"
exit 1
