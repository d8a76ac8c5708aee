#!/usr/bin/env bash
# Runs the README's test command (`make test`) from fresh clones of this checkout, several times
# in a row, while another process keeps one core busy: the way a loaded CI machine runs it.
#
#   scripts/test-under-load.sh            # 3 runs
#   scripts/test-under-load.sh 5          # 5 runs
#   RUNS_DIR=/var/tmp/x scripts/test-under-load.sh
#
# Each run gets its own clone (so a missing install step shows up), and its own log. The busy
# process is one CPU-bound loop (`nice -n 0`, same priority as the tests). The script prints one
# line per run (exit code, duration, pytest's closing line) and exits non-zero when any run
# failed. Nothing is left running: the busy loop is killed on exit, whatever happened.
set -euo pipefail

runs=${1:-3}
case "$runs" in '' | *[!0-9]*) echo "usage: $0 [RUNS]" >&2; exit 2 ;; esac
top=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)
base=${RUNS_DIR:-$(mktemp -d /tmp/nonstop-load-runs.XXXXXX)}
mkdir -p "$base"

python3 -c 'while True: pass' &
busy=$!
trap 'kill "$busy" 2>/dev/null || true' EXIT
echo "==> one core kept busy by pid $busy; $runs run(s) of make test in $base"

failed=0
for i in $(seq 1 "$runs"); do
  dir="$base/run-$i"
  rm -rf "$dir"
  git clone --quiet "$top" "$dir"
  # Sibling shared/ (read-only project data), as CI lays it out, when present.
  if [ -d "$top/../shared" ] && [ ! -e "$base/shared" ]; then ln -s "$(cd "$top/../shared" && pwd)" "$base/shared"; fi
  start=$(date +%s)
  if (cd "$dir" && CI=true make test >"$dir.log" 2>&1); then code=0; else code=$?; fi
  took=$(($(date +%s) - start))
  summary=$(grep -E '^=+ .*(passed|failed|error).* =+$' "$dir.log" | tail -n 1 || true)
  echo "run $i: exit $code in ${took}s: ${summary:-no pytest summary} (log: $dir.log)"
  [ "$code" = 0 ] || failed=$((failed + 1))
done

echo "==> $((runs - failed)) of $runs runs passed"
[ "$failed" = 0 ]
