#!/usr/bin/env bash
# Writes deploy/kubernetes/prometheusrule.yaml from deploy/prometheus/alerts.yaml: the
# same rule groups wrapped in a PrometheusRule, so there is one copy to edit. With
# --check, compares instead of writing and fails if the committed file is stale.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
src="$here/alerts.yaml"
dst="$here/../kubernetes/prometheusrule.yaml"

render() {
  cat <<'HEADER'
# GENERATED from deploy/prometheus/alerts.yaml by deploy/prometheus/render-prometheusrule.sh.
# Do not edit: change alerts.yaml and run the script (CI fails if this copy is stale).
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: lifecycle-worker
  labels:
    app.kubernetes.io/name: lifecycle-worker
spec:
HEADER
  # Everything from `groups:` on, indented under spec (comments above it stay behind).
  sed -n '/^groups:/,$p' "$src" | sed 's/^\(.\)/  \1/'
}

if [ "${1:-}" = "--check" ]; then
  if ! diff -u "$dst" <(render); then
    echo "deploy/kubernetes/prometheusrule.yaml is stale: run deploy/prometheus/render-prometheusrule.sh" >&2
    exit 1
  fi
  echo "prometheusrule.yaml matches alerts.yaml"
else
  render > "$dst"
  echo "wrote $dst"
fi
