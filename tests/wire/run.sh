#!/usr/bin/env bash
# The official SDK's judgement of the worker, run by .ci/run after the main suite:
#  1. tests/wire/drive.py: the worker's real requests (run, send, check; both
#     signature kinds; AccessKey, AccessKey + token, OIDC) verified as raw bytes
#     by the official SDK's own code (judge.py) and compared with the requests
#     the official SDK client builds for the same calls;
#  2. tests/sdk_check: the official SDK client drives the simulator.
# Needs python3 with venv, RabbitMQ on 127.0.0.1:5672 and PyPI (first run only).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${WIRE_VENV:-$root/target/wire-venv}"
stamp="$venv/.requirements"

if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
if ! cmp -s "$here/requirements.txt" "$stamp"; then
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$here/requirements.txt"
  cp "$here/requirements.txt" "$stamp"
fi

cd "$root"
cargo build --locked --bin lifecycle-worker
binary="$root/target/debug/lifecycle-worker"

(cd "$here" && "$venv/bin/python" drive.py "$binary")
SDK_CHECK_VENV="$venv" SDK_CHECK_BINARY="$binary" bash "$root/tests/sdk_check/check.sh"
