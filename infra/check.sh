#!/usr/bin/env bash
# Checks infra/: the Prometheus config, the alert rules and their unit tests,
# and the Grafana dashboard (structure, every query parsed by promtool, every
# metric one the gateway exports). Needs promtool (Debian's `prometheus`) and python3.
#
#   infra/check.sh           run every check
#   infra/check.sh --names   print the metric names the dashboard and the alerts use, one a line
set -euo pipefail
cd "$(dirname "$0")"
if [ "${1:-}" = --names ]; then
  exec python3 check.py names
fi
command -v promtool > /dev/null || { echo "promtool is missing: apt-get install prometheus" >&2; exit 1; }
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

promtool check config prometheus/prometheus.yml
promtool check rules prometheus/alerts.yml
promtool test rules prometheus/alerts.test.yml
echo "Checking grafana/oblivious.json"
python3 check.py promql > "$TMP/dashboard-queries.yml"
promtool check rules "$TMP/dashboard-queries.yml" > /dev/null || {
  promtool check rules "$TMP/dashboard-queries.yml" >&2 || true
  echo "(rules numbered as in: python3 infra/check.py promql)" >&2
  exit 1
}
python3 check.py lint
echo "  SUCCESS: $(python3 check.py names | wc -l) metric names, every one exported; every alert tested firing and quiet"
