"""Checks of deploy/ that no schema can make (run by deploy/check.sh in its venv).

- The PrometheusRule carries exactly the rule groups of deploy/prometheus/alerts.yaml.
- The preflight init container runs `check` with the same image, config, environment,
  mounts, resources and security context as the worker, so it checks what will run.
- The ServiceMonitor selects the metrics Service and names one of its ports, and the
  Service and the probes use the container's metrics port (CRDs have no schema in
  kubernetes-validate, so this is what validates the ServiceMonitor).

Prints one line per check; exits 1 if any fails.
"""

import pathlib
import sys

import yaml

DEPLOY = pathlib.Path(__file__).resolve().parent
failures = []


def check(ok, what):
    print(("ok    " if ok else "FAIL  ") + what)
    if not ok:
        failures.append(what)


def load(path):
    return yaml.safe_load((DEPLOY / path).read_text())


alerts = load("prometheus/alerts.yaml")
rule = load("kubernetes/prometheusrule.yaml")
check(rule["spec"]["groups"] == alerts["groups"], "PrometheusRule groups == alerts.yaml groups")

pod = load("kubernetes/deployment.yaml")["spec"]["template"]["spec"]
(init,) = pod["initContainers"]
(worker,) = pod["containers"]
check(init["args"][0] == "check" and worker["args"][0] == "run", "init container runs `check`, worker `run`")
check(init["args"][1:] == worker["args"][1:], "check and run get the same --config")
for key in ("image", "env", "volumeMounts", "resources", "securityContext"):
    check(init.get(key) == worker.get(key), f"init container and worker share {key}")
hardened = worker["securityContext"]
check(
    hardened.get("readOnlyRootFilesystem") is True
    and hardened.get("allowPrivilegeEscalation") is False
    and hardened.get("capabilities", {}).get("drop") == ["ALL"]
    and pod["securityContext"].get("runAsNonRoot") is True
    and pod["securityContext"].get("seccompProfile", {}).get("type") == "RuntimeDefault",
    "hardened security context",
)

service = load("kubernetes/service.yaml")
monitor = load("kubernetes/servicemonitor.yaml")
selector = monitor["spec"]["selector"]["matchLabels"]
labels = service["metadata"].get("labels", {})
check(all(labels.get(k) == v for k, v in selector.items()), "ServiceMonitor selects the metrics Service")
service_ports = {p["name"]: p for p in service["spec"]["ports"]}
check(
    all(e["port"] in service_ports for e in monitor["spec"]["endpoints"]),
    "ServiceMonitor endpoints name a Service port",
)
container_ports = {p["name"]: p["containerPort"] for p in worker["ports"]}
check(
    all(p["targetPort"] in container_ports for p in service["spec"]["ports"]),
    "Service targets a container port by name",
)
check(
    worker["livenessProbe"]["httpGet"]["path"] == "/healthz"
    and worker["readinessProbe"]["httpGet"]["path"] == "/readyz"
    and worker["livenessProbe"]["httpGet"]["port"] in container_ports
    and worker["readinessProbe"]["httpGet"]["port"] in container_ports,
    "probes: /healthz and /readyz on the metrics port",
)

sys.exit(1 if failures else 0)
