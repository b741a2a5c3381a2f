#!/usr/bin/env bash
# Checks the simulator against the official Alibaba Cloud Python SDK
# (alibabacloud-ecs20140526, pinned in tests/wire/requirements.txt), with both
# signature versions. Run by tests/wire/run.sh (which .ci/run calls); on its
# own it needs python3 with venv and PyPI, and builds with cargo.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${SDK_CHECK_VENV:-$root/target/wire-venv}"

if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$root/tests/wire/requirements.txt"
fi

cd "$root"
if [ -z "${SDK_CHECK_BINARY:-}" ]; then
  cargo build --locked --bin lifecycle-worker
fi
cmd=("${SDK_CHECK_BINARY:-./target/debug/lifecycle-worker}" simulate)

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
