#!/usr/bin/env bash
# Checks the simulator against the official Alibaba Cloud Python SDK
# (alibabacloud-ecs20140526), with both signature versions.
# Needs python3 with venv and network access to PyPI; builds with cargo.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${SDK_CHECK_VENV:-/tmp/lifecycle-worker-sdk-venv}"

if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install -q alibabacloud-ecs20140526

cd "$root"
cargo build --locked --bin lifecycle-worker
cmd=(./target/debug/lifecycle-worker simulate)

log="$(mktemp)"
"${cmd[@]}" --listen 127.0.0.1:0 --seed config/seed.json >"$log" 2>&1 &
pid=$!
cleanup() { kill -INT "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -f "$log"; }
trap cleanup EXIT

endpoint=""
for _ in $(seq 1 100); do
  endpoint="$(sed -n 's/^simulator listening on //p' "$log" | head -n1)"
  [ -n "$endpoint" ] && break
  if ! kill -0 "$pid" 2>/dev/null; then cat "$log"; exit 1; fi
  sleep 0.1
done
[ -n "$endpoint" ] || { echo "simulator did not start"; cat "$log"; exit 1; }
echo "simulator at $endpoint"

"$venv/bin/python" "$here/check.py" "$endpoint" "$root/config/seed.json"
