"""Drives the real worker through every API call it makes and has the judge rule.

Usage: python drive.py PATH/TO/lifecycle-worker

The worker runs as a user runs it (`run`, `send`, `check`, configured by
environment variables only) against the real RabbitMQ on 127.0.0.1:5672 (a
vhost of its own, deleted at the end). Its ECS and STS endpoints point at the
judge (judge.py), which verifies every request with the official SDK's code and
forwards those that pass to the worker's simulator for behaviour.

Matrix: both signature kinds x three credential sources (an AccessKey; an
AccessKey with a security token; RRSA/OIDC, whose STS session carries a token).
In each: every command shape the worker knows (each resolver filter, paging,
an IPv6 address, dotted hostnames, ClientTokens with ':' and '.', derived
ClientTokens, a leak-alert with quarantine, an unused code deleted, a command
in a mapped account through STS AssumeRole) and `check`.

Exit 0 only when the judge's self-test passes, every request passed, every
command ended as expected, `check` passed, and the coverage list is complete.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid

import judge

KEY_ID, KEY_SECRET = "wire-key", "wire/secret+=="
TOKEN = "CAIS/wire+token==.v1"  # a static STS token with characters to encode
ACCOUNT = "1234567890123456"
ROLE_ARN = f"acs:ram::{ACCOUNT}:role/wire-ops"
OIDC_ROLE = "acs:ram::1111222233334444:role/wire-rrsa"
OIDC_PROVIDER = "acs:ram::1111222233334444:oidc-provider/ack-rrsa-wire"
REGIONS = ("cn-hangzhou", "cn-beijing", "cn-shanghai")
USED = "4ECEEE12-56F1-4FBC-9AB1-89AB00000001"
UNUSED = "4ECEEE12-56F1-4FBC-9AB1-89AB00000002"


def instance(n, **kw):
    base = {"RegionId": "cn-hangzhou", "InstanceId": f"mi-wire{n:07d}",
            "InstanceName": f"wire-{n}", "Hostname": f"wire-{n}.fill.example.internal",
            "MachineId": f"wire-machine-{n:04d}", "IntranetIp": f"10.8.{n // 250}.{n % 250 + 1}",
            "OsType": "linux", "RegistrationTime": "2026-11-01T03:00:00Z", "Connected": True}
    base.update(kw)
    return base


def seed():
    """55 instances in cn-hangzhou (so a hostname search pages), the targets."""
    instances = [instance(n) for n in range(100, 155)]
    instances += [
        instance(1),
        instance(2, Hostname="db-2.wire.example.internal"),
        instance(3, InternetIp="2001:db8::22"),
        instance(4, MachineId="e0323-wire-0004"),
        instance(5, IntranetIp="10.9.0.9"),
        instance(6, IntranetIp="10.9.0.9"),
        instance(7),
        instance(8, ActivationId=USED, RegistrationTime="2026-11-10T00:00:00Z"),
        instance(9, ActivationId=USED, RegistrationTime="2026-11-12T00:00:00Z"),
    ]
    activation = {"RegionId": "cn-hangzhou", "InstanceName": "wire", "IpAddressRange": "0.0.0.0/0",
                  "InstanceCount": 10, "DeregisteredCount": 0, "TimeToLiveInHours": 4,
                  "CreationTime": "2026-11-01T02:00:00Z", "Disabled": False}
    return {"Activations": [dict(activation, ActivationId=USED, RegisteredCount=2),
                            dict(activation, ActivationId=UNUSED, RegisteredCount=0)],
            "Instances": instances}


# (name, send arguments, expected terminal outcome)
def commands(tag):
    return [
        ("instance-id, ClientToken with ':' and '.'",
         ["decommission", "--instance-id", "mi-wire0000001", "--command-id", f"wire:{tag}.deregister.1"],
         "succeeded"),
        ("hostname with dots (pages through every instance)",
         ["decommission", "--hostname", "DB-2.wire.example.internal."], "succeeded"),
        ("IPv6 InstanceIp", ["decommission", "--ip", "2001:db8::22"], "succeeded"),
        ("MachineId", ["decommission", "--machine-id", "e0323-wire-0004"], "succeeded"),
        ("InstanceId filter (dry run)", ["decommission", "--instance-id", "mi-wire0000100", "--dry-run"],
         "dry_run"),
        ("several matches, derived ClientTokens",
         ["decommission", "--ip", "10.9.0.9", "--all-matches"], "succeeded"),
        ("leak-alert dry run (DescribeActivations)",
         ["leak-alert", "--activation-id", USED, "--quarantine", "all", "--dry-run"], "dry_run"),
        ("leak-alert with quarantine (Disable, ActivationId filter, derived ClientTokens)",
         ["leak-alert", "--activation-id", USED, "--detected-at", "2026-11-11T00:00:00Z",
          "--quarantine", "all"], "succeeded"),
        ("leak-alert of an unused code (DeleteActivation)",
         ["leak-alert", "--activation-id", UNUSED], "succeeded"),
        ("mapped account (STS AssumeRole, then a token)",
         ["decommission", "--instance-id", "mi-wire0000007", "--account-id", ACCOUNT], "succeeded"),
    ]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, url, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("content-type", "application/json")
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status, r.read()


class Simulator:
    def __init__(self, binary, workdir):
        self.seed_file = os.path.join(workdir, "seed.json")
        with open(self.seed_file, "w") as f:
            json.dump(seed(), f)
        self.log = open(os.path.join(workdir, "simulator.log"), "w+")
        self.proc = subprocess.Popen(
            [binary, "simulate", "--listen", "127.0.0.1:0", "--seed", self.seed_file,
             "--key", f"{KEY_ID}:{KEY_SECRET}"],
            stdout=self.log, stderr=subprocess.STDOUT, env=clean_env(workdir))
        deadline = time.time() + 30
        self.url = None
        while time.time() < deadline and not self.url:
            self.log.seek(0)
            m = re.search(r"simulator listening on (http://\S+)", self.log.read())
            if m:
                self.url = m.group(1)
            elif self.proc.poll() is not None:
                raise RuntimeError("simulator exited")
            else:
                time.sleep(0.05)
        if not self.url:
            raise RuntimeError("simulator did not start")
        http("POST", self.url + "/_sim/roles", {"RoleArn": ROLE_ARN})
        http("POST", self.url + "/_sim/roles", {"RoleArn": OIDC_ROLE})
        http("POST", self.url + "/_sim/oidc-providers", {"ProviderArn": OIDC_PROVIDER, "Token": "eyJ.wire.jwt"})

    def reset(self):
        with open(self.seed_file, "rb") as f:
            req = urllib.request.Request(self.url + "/_sim/state", data=f.read(), method="PUT")
        req.add_header("content-type", "application/json")
        urllib.request.urlopen(req, timeout=10).read()

    def stop(self):
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(10)


def clean_env(home):
    """The caller's environment minus anything that would configure the worker."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("LIFECYCLE__", "ALIBABA_CLOUD_", "ALICLOUD_"))}
    env["HOME"] = home  # no ~/.aliyun or ~/.alibabacloud of the machine's
    env["RUST_LOG"] = "warn,lapin=error"
    return env


def worker_env(workdir, vhost, judge_port, signature, creds):
    env = clean_env(workdir)
    endpoint = f"http://127.0.0.1:{judge_port}"
    env.update({
        "LIFECYCLE__AMQP__URL": f"amqp://guest:guest@127.0.0.1:5672/{vhost}",
        "LIFECYCLE__ECS__ENDPOINT": endpoint,
        "LIFECYCLE__STS__ENDPOINT": endpoint,
        "LIFECYCLE__ECS__SIGNATURE": signature,
        "LIFECYCLE__ACCOUNTS__ROLES": f"{ACCOUNT}={ROLE_ARN}",
        "LIFECYCLE__RETRY__REDELIVERY_DELAYS": "2s,2s",
        "LIFECYCLE__RETRY__MAX_ELAPSED_MS": "1000",
        "LIFECYCLE__CREDENTIALS__METADATA_ENDPOINT": "http://127.0.0.1:9",
        "LIFECYCLE__HTTP__LISTEN": f"127.0.0.1:{free_port()}",
    })
    if creds in ("key", "key+token"):
        env["ALIBABA_CLOUD_ACCESS_KEY_ID"] = KEY_ID
        env["ALIBABA_CLOUD_ACCESS_KEY_SECRET"] = KEY_SECRET
    if creds == "key+token":
        env["ALIBABA_CLOUD_SECURITY_TOKEN"] = TOKEN
    if creds == "oidc":
        token_file = os.path.join(workdir, "oidc-token")
        with open(token_file, "w") as f:
            f.write("eyJ.wire.jwt\n")
        env["ALIBABA_CLOUD_ROLE_ARN"] = OIDC_ROLE
        env["ALIBABA_CLOUD_OIDC_PROVIDER_ARN"] = OIDC_PROVIDER
        env["ALIBABA_CLOUD_OIDC_TOKEN_FILE"] = token_file
    return env


def wait_ready(listen, proc, seconds=30):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(f"http://{listen}/readyz", timeout=2) as r:
                if r.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


def terminal_outcome(stdout):
    for line in stdout.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and "outcome" in event:
            return event["outcome"], event
    return None, None


def run_matrix(binary, workdir, sim, the_judge, failures):
    for signature in ("acs3-hmac-sha256", "hmac-sha1"):
        for creds in ("key", "key+token", "oidc"):
            name = f"{signature}/{creds}"
            print(f"== {name}", flush=True)
            sim.reset()
            with Vhost() as vhost:
                run_cell(binary, workdir, the_judge, vhost, signature, creds, failures)


class Vhost:
    """A vhost of one matrix cell's own, so no command of one cell leaks into the next."""

    def __enter__(self):
        self.name = f"wire-{uuid.uuid4().hex[:8]}"
        subprocess.run(["rabbitmqctl", "-q", "add_vhost", self.name], check=True)
        subprocess.run(["rabbitmqctl", "-q", "set_permissions", "-p", self.name, "guest",
                        ".*", ".*", ".*"], check=True)
        return self.name

    def __exit__(self, *exc):
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", self.name], check=False)


def run_cell(binary, workdir, the_judge, vhost, signature, creds, failures):
    """One worker, every command shape, then `check`."""
    name = f"{signature}/{creds}"
    env = worker_env(workdir, vhost, the_judge.port, signature, creds)
    log = open(os.path.join(workdir, f"worker-{signature}-{creds}.log"), "w")
    proc = subprocess.Popen([binary, "run"], env=env, stdout=log, stderr=subprocess.STDOUT,
                            cwd=workdir)
    try:
        if not wait_ready(env["LIFECYCLE__HTTP__LISTEN"], proc):
            failures.append(f"{name}: the worker did not become ready")
            return
        for what, args, expected in commands(f"{signature}.{creds.replace('+', '-')}"):
            r = subprocess.run([binary, "send", *args, "--wait", "15"], env=env,
                               capture_output=True, text=True, cwd=workdir)
            outcome, event = terminal_outcome(r.stdout)
            if outcome != expected:
                failures.append(f"{name}: {what}: expected {expected}, got {outcome} "
                                f"({r.stderr.strip()[:300]}) {json.dumps(event)[:600]}")
            print(f"   {what}: {outcome}", flush=True)
        r = subprocess.run([binary, "check"], env=env, capture_output=True, text=True,
                           cwd=workdir)
        print(f"   check: exit {r.returncode}", flush=True)
        if r.returncode != 0:
            failures.append(f"{name}: check exited {r.returncode}: "
                            f"{(r.stdout + r.stderr).strip()[:600]}")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            failures.append(f"{name}: the worker did not stop on SIGTERM")
        log.close()


def report(verdicts, failures):
    """Every request in a line per (kind, action, result); failures with an example."""
    groups = {}
    for v in verdicts:
        shape = tuple(re.sub(r"'ACS3-HMAC-SHA256\\n[0-9a-f]+'|'POST&[^']*'|[0-9a-f]{32}", "...", p)
                      for p in v.problems + v.reference)
        groups.setdefault((v.kind, v.action, v.token, shape), []).append(v)
    print(f"\n{len(verdicts)} requests judged:")
    for (kind, action, token, shape), vs in sorted(groups.items(), key=lambda g: g[1][0].seq):
        verdict = "FAIL" if shape else "ok  "
        print(f"  {verdict} {len(vs):4d} x {kind}{'+token' if token else ''} {action}")
        if shape:
            print("        e.g. " + vs[0].line().replace("\n", "\n        "))
            failures.append(f"{len(vs)} {kind} {action} requests failed the judge")


def coverage(verdicts):
    """What the run must have shown the judge, and whether it did."""
    seen = set()
    for v in verdicts:
        if not v.ok:
            continue
        seen.add((v.kind, v.action))
        if v.token:
            seen.add((v.kind, "token"))
        if v.action == "DescribeManagedInstances":
            filters = {k for k in v.params if k not in ("RegionId", "MaxResults")}
            seen.add((v.kind, "filter:" + (",".join(sorted(filters)) or "none")))
        for k, val in v.params.items():
            if k == "InstanceIp" and ":" in val:
                seen.add((v.kind, "ipv6"))
            if k == "ClientToken" and ":" in val and "." in val:
                seen.add((v.kind, "token-with-colon-and-dot"))
    wanted = {("anonymous", "AssumeRoleWithOIDC")}
    for kind in ("acs3", "rpc"):
        for what in ("DeregisterManagedInstance", "DisableActivation", "DeleteActivation",
                     "DescribeManagedInstances", "DescribeActivations", "AssumeRole", "token",
                     "filter:none", "filter:MachineId", "filter:InstanceIp", "filter:ActivationId",
                     "filter:InstanceId.1", "filter:NextToken", "ipv6", "token-with-colon-and-dot"):
            wanted.add((kind, what))
    return sorted(wanted - seen)


def main():
    binary = os.path.abspath(sys.argv[1])
    failures = [f"judge self-test: {p}" for p in judge.selftest()]
    print("judge self-test:", "ok" if not failures else failures, flush=True)
    with tempfile.TemporaryDirectory(prefix="wire-") as workdir:
        sim = Simulator(binary, workdir)
        try:
            the_judge = judge.Judge(("127.0.0.1", int(sim.url.rsplit(":", 1)[1])),
                                    {KEY_ID: KEY_SECRET}).start()
            run_matrix(binary, workdir, sim, the_judge, failures)
        finally:
            sim.stop()
            if failures:
                for path in sorted(os.listdir(workdir)):
                    if path.endswith(".log"):
                        with open(os.path.join(workdir, path)) as f:
                            tail = f.read()[-3000:]
                        print(f"--- {path} (tail)\n{tail}")
    verdicts = the_judge.verdicts
    report(verdicts, failures)
    missing = coverage(verdicts)
    failures += [f"not covered (no passing request): {kind} {what}" for kind, what in missing]
    if failures:
        print("\nWIRE CHECK FAILED:")
        for f in failures:
            print(" -", f)
        sys.exit(1)
    print("\nWIRE CHECK PASSED: every request verified by the official SDK's code "
          "and matched the SDK client's request")


if __name__ == "__main__":
    main()
