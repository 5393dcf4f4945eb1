#!/usr/bin/env bash
# After a suite run with OBLIVIOUS_TEST_LOG_DIR set: fails if any API key the
# tests created (keys.txt, written by the harness) appears in any gateway log.
set -euo pipefail
dir="${1:?usage: tests/secrets_in_logs.sh LOG_DIR}"
keys="$dir/keys.txt"
shopt -s nullglob
logs=("$dir"/*.log)
[ -s "$keys" ] || { echo "no keys listed in $keys: was OBLIVIOUS_TEST_LOG_DIR set for the run?" >&2; exit 1; }
[ "${#logs[@]}" -gt 0 ] || { echo "no gateway logs in $dir" >&2; exit 1; }
# Only real keys (a blank or short line would match every log).
patterns="$(mktemp)"
trap 'rm -f "$patterns"' EXIT
awk 'length($0) >= 20' "$keys" | sort -u > "$patterns"
n_keys=$(wc -l < "$patterns")
size=$(cat "${logs[@]}" | wc -c)
if grep -F -l -f "$patterns" "${logs[@]}"; then
  echo "an API key reached the logs above" >&2
  exit 1
fi
echo "secrets check: none of $n_keys keys in ${#logs[@]} gateway logs ($size bytes)"
