#!/usr/bin/env bash
# Offline checks of deploy/ (called by .ci/run): Kubernetes manifests against the pinned
# schemas of one Kubernetes version, the alert rules with promtool (syntax and unit
# tests), and what no schema knows (check_manifests.py). Needs PyPI (once, for the venv)
# and Debian's `prometheus` package for promtool; no cluster, no network otherwise.
set -euo pipefail
cd "$(dirname "$0")"

# The Kubernetes version the manifests are validated against (ACK offers 1.32-1.34).
K8S_VERSION=1.33.0
VENV="${DEPLOY_CHECK_VENV:-/tmp/lifecycle-worker-deploy-venv}"

if ! cmp -s requirements.txt "$VENV/requirements.txt" 2>/dev/null; then
  echo "installing deploy/requirements.txt into $VENV"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r requirements.txt
  cp requirements.txt "$VENV/requirements.txt"
fi
if ! command -v promtool >/dev/null 2>&1; then
  echo "promtool is not installed: installing Debian's prometheus package"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus
fi

echo "== kubernetes-validate $("$VENV/bin/kubernetes-validate" --version 2>&1 | tr -d '\n'), Kubernetes $K8S_VERSION (strict)"
manifests=(kubernetes/*.yaml)
out=$("$VENV/bin/kubernetes-validate" -k "$K8S_VERSION" --strict "${manifests[@]}" 2>&1) || {
  echo "$out"
  exit 1
}
echo "$out"
# Only these have no schema in kubernetes-validate (CRDs and kustomize's own file); any
# other warning (a typo in a kind or apiVersion) is a failure.
unexpected=$(echo "$out" | grep '^WARN' | grep -v -E "kind (ServiceMonitor|PrometheusRule) with api version monitoring.coreos.com/v1|kind Kustomization with api version kustomize.config.k8s.io/v1beta1" || true)
if [ -n "$unexpected" ]; then
  echo "unexpected warnings:" >&2
  echo "$unexpected" >&2
  exit 1
fi
# The kustomization as kubectl applies it (generated ConfigMap, image, labels), when
# kubectl is at hand; the files above are validated either way.
if command -v kubectl >/dev/null 2>&1; then
  rendered=$(mktemp --suffix=.yaml)
  trap 'rm -f "$rendered"' EXIT
  kubectl kustomize kubernetes > "$rendered"
  "$VENV/bin/kubernetes-validate" -k "$K8S_VERSION" --strict --no-warn --quiet "$rendered"
  echo "kubectl kustomize output validates ($(grep -c '^kind:' "$rendered") resources)"
else
  echo "kubectl not installed: the kustomization itself is not rendered"
fi

echo "== $(promtool --version 2>&1 | head -1)"
promtool check rules prometheus/alerts.yaml
promtool test rules prometheus/alerts.test.yaml
prometheus/render-prometheusrule.sh --check

echo "== cross-checks"
"$VENV/bin/python" check_manifests.py
echo "deploy checks passed"
