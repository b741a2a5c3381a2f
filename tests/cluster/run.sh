#!/usr/bin/env bash
# The cluster scenarios (tests/e2e/cluster.rs, CONTRACT section 6 "Clusters"):
# starts the three-node cluster (tests/cluster/cluster.sh), runs the
# scenarios one at a time, stops the cluster whatever happens. Prints each
# scenario's recovery time; with a count (`run.sh 3`) runs them that many
# times and prints the medians. CI runs it once, after the main suite.
set -euo pipefail
cd "$(dirname "$0")/../.."
runs="${1:-1}"
cluster=tests/cluster/cluster.sh

trap 'bash "$cluster" stop >/dev/null 2>&1 || true' EXIT
bash "$cluster" start >/dev/null
log=$(mktemp)
for run in $(seq 1 "$runs"); do
  echo "cluster scenarios, run $run of $runs"
  cargo test --locked --test e2e -- --ignored --test-threads=1 --nocapture cluster:: 2>&1 | tee -a "$log" |
    grep -E '^(RECOVERY|test |test result)' || true
  # tee hides cargo's status: fail on the test run's own result.
  grep -q '^test result: ok' "$log" || { echo "cluster scenarios failed (log: $log)"; exit 1; }
  sed -i 's/^test result: ok/test result (run '"$run"'): ok/' "$log"
done
if [ "$runs" -gt 1 ]; then
  echo "medians of $runs runs (ms from the fault to the probe leak-alert's terminal event):"
  # A RECOVERY line can share its line with cargo's "test ... " prefix.
  grep -o 'RECOVERY [a-z-]* [0-9]*' "$log" | awk '{ print $2, $3 }' | sort -k1,1 -k2,2n |
    awk '{ v[$1] = v[$1] " " $2; n[$1]++ }
         END { for (k in v) { split(substr(v[k], 2), a, " "); printf "  %s %d ms (runs:%s)\n", k, a[int((n[k] + 1) / 2)], v[k] } }'
fi
