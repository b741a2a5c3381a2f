"""Calls every simulated operation with the official Alibaba Cloud Python SDK.

Both signatures: ACS3-HMAC-SHA256 (the SDK default) and the RPC HMAC-SHA1 one
(signature_algorithm='v2'). Exits non-zero on the first surprise.
Usage: python check.py http://127.0.0.1:PORT path/to/seed.json
"""

import json
import sys
import urllib.request

from alibabacloud_ecs20140526 import models as m
from alibabacloud_ecs20140526.client import Client
from alibabacloud_tea_openapi import models as open_api_models

ENDPOINT, SEED = sys.argv[1], sys.argv[2]
HOSTPORT = ENDPOINT.split("://", 1)[1]
REGION = "cn-hangzhou"
USED = "4ECEEE12-56F1-4FBC-9AB1-890F12340001"
UNUSED = "4ECEEE12-56F1-4FBC-9AB1-890F12340003"


def client(algorithm, secret="testsecret"):
    cfg = open_api_models.Config(
        access_key_id="testid",
        access_key_secret=secret,
        endpoint=HOSTPORT,
        protocol="http",
        region_id=REGION,
    )
    if algorithm == "v2":
        cfg.signature_algorithm = "v2"
    return Client(cfg)


def reset():
    with open(SEED, "rb") as f:
        req = urllib.request.Request(ENDPOINT + "/_sim/state", data=f.read(), method="PUT")
    req.add_header("content-type", "application/json")
    urllib.request.urlopen(req).read()


def error_code(fn):
    try:
        fn()
    except Exception as e:  # the SDK's exception classes differ across versions
        return getattr(e, "code", None) or str(e)
    return None


def check(algorithm):
    reset()
    c = client(algorithm)
    # Paging to the end with MaxResults / NextToken.
    seen, token = [], None
    while True:
        r = c.describe_managed_instances(
            m.DescribeManagedInstancesRequest(region_id=REGION, max_results=4, next_token=token)
        ).body
        assert r.request_id
        seen += [i.instance_id for i in r.instances]
        token = r.next_token
        if not token:
            break
    assert len(seen) == 6, seen
    # Filters, including a value that needs careful encoding.
    r = c.describe_managed_instances(
        m.DescribeManagedInstancesRequest(region_id=REGION, instance_ip="47.96.1.22")
    ).body
    assert [i.instance_id for i in r.instances] == ["mi-hz01db00002"], r.to_map()
    r = c.describe_managed_instances(
        m.DescribeManagedInstancesRequest(region_id=REGION, instance_id=["mi-hz01web0001", "mi-hz01db00001"])
    ).body
    assert len(r.instances) == 2, r.to_map()
    r = c.describe_managed_instances(
        m.DescribeManagedInstancesRequest(region_id=REGION, instance_name="主机 a+b*c~d/e&f=g")
    ).body
    assert r.instances == [], r.to_map()
    r = c.describe_activations(m.DescribeActivationsRequest(region_id=REGION, activation_id=USED)).body
    assert r.activation_list[0].registered_count == 4, r.to_map()
    # Mutations.
    r = c.deregister_managed_instance(
        m.DeregisterManagedInstanceRequest(region_id=REGION, instance_id="mi-hz01web0001")
    ).body
    assert r.instance.instance_id == "mi-hz01web0001", r.to_map()
    r = c.disable_activation(m.DisableActivationRequest(region_id=REGION, activation_id=USED)).body
    assert r.activation.disabled is True, r.to_map()
    r = c.delete_activation(m.DeleteActivationRequest(region_id=REGION, activation_id=UNUSED)).body
    assert r.activation.activation_id == UNUSED, r.to_map()
    code = error_code(
        lambda: c.delete_activation(m.DeleteActivationRequest(region_id=REGION, activation_id=USED))
    )
    assert code == "ActivationId.InUse", code
    # A wrong secret is refused.
    bad = client(algorithm, secret="wrong")
    code = error_code(lambda: bad.describe_activations(m.DescribeActivationsRequest(region_id=REGION)))
    assert code == "SignatureDoesNotMatch", code
    print(f"{algorithm}: all operations OK, wrong secret -> {code}")


for algorithm in ("acs3", "v2"):
    check(algorithm)
print("SDK CHECK PASSED")
