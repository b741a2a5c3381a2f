"""An independent judge of the worker's HTTP requests to ECS and STS.

The worker's own simulator verifies signatures with the worker's own signing
code, so it cannot see a defect the two share. This judge shares nothing with
the worker: it is a reverse proxy that reads each request as raw bytes off a
TCP socket (its own HTTP/1.1 parser, no framework that folds or drops repeated
field lines), looks at it the way an HTTP server does (RFC 9110 section 5.3:
repeated field lines of one name are one field, values joined with ","), and
verifies it with the official Alibaba Cloud SDK's own code:

* ACS3-HMAC-SHA256: ``alibabacloud_tea_openapi.utils.Utils.get_authorization``
  over the signed headers as the server sees them, the decoded query and the
  body hash; the server's string-to-sign from the same module's
  ``get_canonical_query_string`` and ``get_canonicalized_headers``;
* RPC HMAC-SHA1: ``Utils.get_rpcsignature`` over the decoded parameters.

A request that fails is answered as the service would (400
``SignatureDoesNotMatch`` with the server's string-to-sign in the message, 404
``InvalidAccessKeyId.NotFound``, 400 ``IncompleteSignature``); one that passes
is forwarded byte for byte to the upstream (the worker's simulator, which
supplies behaviour only) and the answer returned byte for byte.

Each passing request is also compared with the request the official SDK
*client* (``alibabacloud_ecs20140526``, ``alibabacloud_sts20150401``) builds
for the same action and parameters, captured the same raw way: the same
parameter names and values, the same required signed headers. Parameter names
the SDK's request model does not know are dropped by the model, so a misspelt
or misplaced parameter shows up as a difference.

Everything found is kept in ``Judge.verdicts``; nothing is fixed up.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import queue
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from types import SimpleNamespace
from urllib.parse import parse_qsl, unquote_plus

from alibabacloud_tea_openapi import utils as sdk_utils
from alibabacloud_tea_openapi.utils import Utils

ACS3 = "ACS3-HMAC-SHA256"

# Headers the gateway needs signed in every ACS3 request (the V3 signature
# document: every common request header present except Authorization must be
# signed; these are the ones that must be present).
REQUIRED_SIGNED = ("host", "x-acs-action", "x-acs-version", "x-acs-date",
                   "x-acs-signature-nonce", "x-acs-content-sha256")
# x-acs-* headers the SDK adds as client metadata, which the gateway does not
# require (checked by ``selftest``: the SDK's own request passes without them).
SDK_METADATA = ("x-acs-credentials-provider", "x-acs-accesskey-id",
                "x-acs-retry-attempts", "x-acs-retry-delay")
# RPC parameters that are about signing rather than the API call.
RPC_SIGNING = ("Action", "Format", "Version", "Timestamp", "SignatureNonce",
               "SignatureMethod", "SignatureVersion", "SignatureType",
               "AccessKeyId", "SecurityToken", "Signature")
# Among those, the ones whose values are deterministic and must equal the SDK's.
RPC_COMPARED = ("Action", "Format", "Version", "SignatureMethod",
                "SignatureVersion", "AccessKeyId", "SecurityToken")
# What may appear raw in a query piece: RFC 3986 unreserved characters, escapes,
# and `+` for a space (the official Python SDK form-encodes its query).
ENCODED_PIECE = re.compile(r"(?:[A-Za-z0-9\-_.~+]|%[0-9A-Fa-f]{2})*")
TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
MAX_SKEW_S = 15 * 60


class HttpError(Exception):
    """The bytes are not an HTTP/1.1 message this judge accepts."""


@dataclass
class RawMessage:
    """One HTTP message exactly as it arrived."""

    start: str
    fields: list  # [(name as sent, value as sent)] in wire order
    body: bytes
    raw: bytes

    def server_view(self) -> dict:
        """Field name (lower case) -> value as a server sees it (RFC 9110 5.3)."""
        joined: dict = {}
        for name, value in self.fields:
            joined.setdefault(name.lower(), []).append(value.strip(" \t"))
        return {k: ",".join(v) for k, v in joined.items()}

    def repeated_fields(self) -> list:
        seen, repeated = set(), []
        for name, _ in self.fields:
            low = name.lower()
            if low in seen and low not in repeated:
                repeated.append(low)
            seen.add(low)
        return repeated


async def read_message(reader: asyncio.StreamReader) -> RawMessage | None:
    """Reads one HTTP/1.1 message; None at a clean end of stream."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as e:
        if not e.partial:
            return None
        raise HttpError("connection closed inside a header section") from e
    lines = head[:-4].split(b"\r\n")
    start = lines[0].decode("latin-1")
    fields = []
    for line in lines[1:]:
        if line[:1] in (b" ", b"\t"):
            raise HttpError("obsolete line folding")
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip():
            raise HttpError(f"malformed field line {line!r}")
        fields.append((name.decode("latin-1"), value.decode("latin-1")))
    msg = RawMessage(start, fields, b"", head)
    view = msg.server_view()
    length, chunked = view.get("content-length"), view.get("transfer-encoding")
    if length is not None and chunked is not None:
        raise HttpError("both Content-Length and Transfer-Encoding")
    if chunked is not None:
        if chunked.lower() != "chunked":
            raise HttpError(f"transfer coding {chunked!r}")
        body, raw = await read_chunked(reader)
        msg.body, msg.raw = body, head + raw
    elif length is not None:
        if not length.isdigit():
            raise HttpError(f"Content-Length {length!r}")
        msg.body = await reader.readexactly(int(length))
        msg.raw = head + msg.body
    elif start.startswith("HTTP/") and not status_without_body(start):
        msg.body = await reader.read()  # a response delimited by close
        msg.raw = head + msg.body
    return msg


def status_without_body(start: str) -> bool:
    code = start.split(" ", 2)[1]
    return code.startswith("1") or code in ("204", "304")


async def read_chunked(reader):
    body, raw = b"", b""
    while True:
        size_line = await reader.readuntil(b"\r\n")
        raw += size_line
        size = int(size_line.split(b";")[0].strip(), 16)
        chunk = await reader.readexactly(size + 2)
        raw += chunk
        if size == 0:
            while chunk != b"\r\n":  # trailers
                chunk = await reader.readuntil(b"\r\n")
                raw += chunk
            return body, raw
        body += chunk[:-2]


def decode_query(raw_query: str, problems: list) -> list:
    """The query's (name, value) pairs, decoded as a server does (``+`` is a space).

    Anything the SDK would have percent-encoded but that arrives raw (``:``,
    ``*``, ``/``...) is reported: a server or proxy may read it differently.
    """
    pairs = []
    if not raw_query:
        return pairs
    for piece in raw_query.split("&"):
        name, _, value = piece.partition("=")
        for part in (name, value):
            if not ENCODED_PIECE.fullmatch(part):
                problems.append(f"query not percent-encoded as the SDK does: {part!r}")
        try:
            pairs.append((unquote_plus(name, errors="strict"),
                          unquote_plus(value, errors="strict")))
        except UnicodeDecodeError:
            problems.append(f"query piece is not UTF-8 once decoded: {piece!r}")
    return pairs


def unique(pairs: list, what: str, problems: list) -> dict:
    out = {}
    for k, v in pairs:
        if k in out:
            problems.append(f"{what} parameter {k!r} appears twice")
        out[k] = v
    return out


@dataclass
class Verdict:
    """What the judge found about one request."""

    seq: int
    action: str = ""
    kind: str = ""  # acs3 | rpc | anonymous
    access_key_id: str = ""
    token: bool = False
    params: dict = field(default_factory=dict)  # API parameters (no signing ones)
    signed_headers: list = field(default_factory=list)
    problems: list = field(default_factory=list)
    reference: list = field(default_factory=list)  # differences from the SDK client's request
    code: str = ""  # the error code answered, when refused
    string_to_sign: str = ""

    @property
    def ok(self) -> bool:
        return not self.problems and not self.reference

    def line(self) -> str:
        tok = "+token" if self.token else ""
        head = f"#{self.seq} {self.kind}{tok} {self.action} {json.dumps(self.params, sort_keys=True)}"
        if self.ok:
            return "ok   " + head
        return "FAIL " + head + "".join(f"\n       - {p}" for p in self.problems + self.reference)


class Credentials:
    """AccessKey id -> (secret, security token or None); learns STS answers."""

    def __init__(self, static: dict):
        self._lock = threading.Lock()
        self._keys = {k: (s, None) for k, s in static.items()}

    def get(self, key_id):
        with self._lock:
            return self._keys.get(key_id)

    def learn_sts_answer(self, body: bytes):
        try:
            c = json.loads(body)["Credentials"]
            with self._lock:
                self._keys[c["AccessKeyId"]] = (c["AccessKeySecret"], c["SecurityToken"])
        except (ValueError, KeyError, TypeError):
            pass


def split_target(start: str, problems: list):
    parts = start.split(" ")
    if len(parts) != 3 or parts[2] != "HTTP/1.1":
        problems.append(f"request line {start!r}")
        return "", "/", ""
    method, target, _ = parts
    path, _, raw_query = target.partition("?")
    return method, path, raw_query


def check_time(stamp: str, problems: list):
    if not stamp or not TIMESTAMP.fullmatch(stamp):
        problems.append(f"timestamp {stamp!r} is not YYYY-MM-DDTHH:MM:SSZ")
        return
    t = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    if abs(time.time() - t.timestamp()) > MAX_SKEW_S:
        problems.append(f"timestamp {stamp} is more than 15 minutes off")


def verify(msg: RawMessage, creds: Credentials, nonces: set, seq: int) -> Verdict:
    """Verifies one request with the SDK's code, as a server receives it."""
    v = Verdict(seq)
    for name in msg.repeated_fields():
        v.problems.append(f"header field {name!r} sent more than once")
    method, path, raw_query = split_target(msg.start, v.problems)
    headers = msg.server_view()
    query = unique(decode_query(raw_query, v.problems), "query", v.problems)
    params = dict(query)
    if headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        form = parse_qsl(msg.body.decode("utf-8", "replace"), keep_blank_values=True)
        for k, val in unique(form, "form", v.problems).items():
            if k in params:
                v.problems.append(f"parameter {k!r} both in the query and the body")
            params[k] = val
    auth = headers.get("authorization", "")
    if auth.startswith(ACS3):
        verify_acs3(v, method, path, query, headers, auth, msg.body, creds, nonces)
    elif "Signature" in params:
        verify_rpc(v, method, params, creds, nonces)
    else:
        v.kind = "anonymous"
        v.action = params.get("Action", headers.get("x-acs-action", ""))
        v.params = {k: val for k, val in params.items() if k not in RPC_SIGNING}
        if v.action != "AssumeRoleWithOIDC":
            v.problems.append("neither an ACS3 authorization nor an RPC Signature")
            v.code = "IncompleteSignature"
    return v


def verify_acs3(v, method, path, query, headers, auth, body, creds, nonces):
    v.kind = "acs3"
    v.action = headers.get("x-acs-action", "")
    v.params = dict(query)
    parts = dict(p.strip().split("=", 1) for p in auth[len(ACS3):].split(",") if "=" in p)
    key_id, signed = parts.get("Credential", ""), parts.get("SignedHeaders", "")
    v.access_key_id = key_id
    v.signed_headers = signed.split(";") if signed else []
    v.token = "x-acs-security-token" in headers
    incomplete = [f"required header {name!r} is not signed"
                  for name in REQUIRED_SIGNED if name not in v.signed_headers]
    incomplete += [f"signed header {name!r} is absent"
                   for name in v.signed_headers if name not in headers]
    if incomplete:
        v.problems += incomplete
        v.code = "IncompleteSignature"
        return
    for name in headers:
        if (name.startswith("x-acs-") or name in ("host", "content-type", "accept")) \
                and name not in v.signed_headers:
            v.problems.append(f"header {name!r} is sent but not signed")
    check_time(headers["x-acs-date"], v.problems)
    nonce_used(headers["x-acs-signature-nonce"], nonces, v)
    payload = hashlib.sha256(body).hexdigest()
    if headers["x-acs-content-sha256"] != payload:
        v.problems.append("x-acs-content-sha256 is not the body's SHA-256")
    key = creds.get(key_id)
    if key is None:
        v.problems.append(f"unknown AccessKey id {key_id!r}")
        v.code = "InvalidAccessKeyId.NotFound"
        return
    secret, token = key
    token_matches(v, token, headers.get("x-acs-security-token"))
    request = SimpleNamespace(method=method, pathname=path, query=query,
                              headers={n: headers[n] for n in v.signed_headers})
    expected = Utils.get_authorization(request, ACS3, payload, key_id, secret)
    canonical_headers, _ = sdk_utils.get_canonicalized_headers(request.headers)
    canonical = "\n".join([method, path or "/", sdk_utils.get_canonical_query_string(query),
                           canonical_headers, signed, payload])
    v.string_to_sign = f"{ACS3}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    if expected != auth:
        v.problems.append("signature does not match the SDK's computation "
                          f"(server string to sign: {v.string_to_sign!r})")
        v.code = "SignatureDoesNotMatch"


def verify_rpc(v, method, params, creds, nonces):
    v.kind = "rpc"
    v.action = params.get("Action", "")
    v.access_key_id = params.get("AccessKeyId", "")
    v.token = "SecurityToken" in params
    v.params = {k: val for k, val in params.items() if k not in RPC_SIGNING}
    for name in ("Action", "Version", "Timestamp", "SignatureNonce", "AccessKeyId"):
        if not params.get(name):
            v.problems.append(f"required parameter {name} is absent")
    if params.get("SignatureMethod") != "HMAC-SHA1" or params.get("SignatureVersion") != "1.0":
        v.problems.append("SignatureMethod/SignatureVersion are not HMAC-SHA1/1.0")
    if v.problems:
        v.code = "IncompleteSignature"
        return
    check_time(params["Timestamp"], v.problems)
    nonce_used(params["SignatureNonce"], nonces, v)
    key = creds.get(v.access_key_id)
    if key is None:
        v.problems.append(f"unknown AccessKey id {v.access_key_id!r}")
        v.code = "InvalidAccessKeyId.NotFound"
        return
    secret, token = key
    token_matches(v, token, params.get("SecurityToken"))
    signed = {k: val for k, val in params.items() if k != "Signature"}
    expected = Utils.get_rpcsignature(signed, method, secret)
    if expected != params["Signature"]:
        v.string_to_sign = rpc_string_to_sign(method, signed)
        v.problems.append("signature does not match the SDK's computation "
                          f"(server string to sign: {v.string_to_sign!r})")
        v.code = "SignatureDoesNotMatch"


def rpc_string_to_sign(method, signed):
    """The string-to-sign, for the error message only (the check uses the SDK)."""
    from urllib.parse import quote, quote_plus
    canon = "&".join(f"{quote(k, safe='~')}={quote(signed[k], safe='~')}" for k in sorted(signed))
    return f"{method}&%2F&{quote_plus(canon, safe='~')}"


def nonce_used(nonce, nonces, v):
    if nonce in nonces:
        v.problems.append(f"signature nonce {nonce} was used before")
        v.code = "SignatureNonceUsed"
    nonces.add(nonce)


def token_matches(v, issued, presented):
    if issued is not None and presented != issued:
        v.problems.append("an STS key is used without the security token STS issued with it")
    if issued is None and presented is not None:
        v.token = True


def error_answer(v: Verdict) -> bytes:
    status = 404 if v.code == "InvalidAccessKeyId.NotFound" else 400
    code = v.code or "SignatureDoesNotMatch"
    message = "; ".join(v.problems)
    if code == "SignatureDoesNotMatch":
        message = ("The request signature does not conform to Aliyun standards. "
                   f"server string to sign is:{v.string_to_sign}")
    body = json.dumps({"RequestId": str(uuid.uuid4()).upper(), "HostId": "wire-judge",
                       "Code": code, "Message": message,
                       "Recommend": "https://api.aliyun.com/troubleshoot"}).encode()
    reason = "Not Found" if status == 404 else "Bad Request"
    head = (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json;charset=utf-8\r\n"
            f"content-length: {len(body)}\r\n\r\n")
    return head.encode() + body


class Reference:
    """Builds the official SDK client's request for an action and parameters.

    The SDK client is pointed at a capture socket that records the raw request
    and answers a bare 200; the SDK may then fail to read that answer, which
    does not matter: only its request is wanted.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._captured: queue.Queue = queue.Queue()
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self.endpoint = f"127.0.0.1:{self._sock.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            conn, _ = self._sock.accept()
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                head, _, body = data.partition(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                fields = [tuple(s.strip() for s in ln.split(":", 1)) for ln in lines[1:]]
                length = int(dict((k.lower(), val) for k, val in fields).get("content-length", "0"))
                while len(body) < length:
                    body += conn.recv(65536)
                self._captured.put(RawMessage(lines[0], fields, body, data))
                answer = b'{"RequestId":"reference"}'
                conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                             b"content-length: %d\r\nconnection: close\r\n\r\n" % len(answer) + answer)

    def request_for(self, v: Verdict, secret: str | None, token: str | None) -> RawMessage:
        from alibabacloud_tea_openapi import models as open_api
        with self._lock:
            cfg = open_api.Config(endpoint=self.endpoint, protocol="http",
                                  region_id=v.params.get("RegionId", "cn-hangzhou"))
            if v.kind != "anonymous":
                cfg.access_key_id, cfg.access_key_secret = v.access_key_id, secret
                if token:
                    cfg.security_token = token
            if v.kind == "rpc":
                cfg.signature_algorithm = "v2"
            client, models = sdk_client(v.action, cfg)
            model = getattr(models, f"{v.action}Request")().from_map(unflatten(v.params))
            try:
                getattr(client, snake(v.action))(model)
            except Exception:  # noqa: BLE001 - the bare 200 is not a real answer
                pass
            return self._captured.get(timeout=10)


def sdk_client(action, cfg):
    if action.startswith("AssumeRole"):
        from alibabacloud_sts20150401 import models
        from alibabacloud_sts20150401.client import Client
    else:
        from alibabacloud_ecs20140526 import models
        from alibabacloud_ecs20140526.client import Client
    return Client(cfg), models


def snake(action: str) -> str:
    special = {"AssumeRoleWithOIDC": "assume_role_with_oidc"}
    return special.get(action) or re.sub(r"(?<!^)(?=[A-Z])", "_", action).lower()


def unflatten(params: dict) -> dict:
    """``InstanceId.1``, ``InstanceId.2`` -> ``InstanceId: [..]`` for ``from_map``."""
    out, lists = {}, {}
    for k, val in params.items():
        m = re.fullmatch(r"([A-Za-z]+)\.(\d+)", k)
        if m:
            lists.setdefault(m.group(1), []).append((int(m.group(2)), val))
        else:
            out[k] = val
    for k, items in lists.items():
        out[k] = [val for _, val in sorted(items)]
    return out


def compare(v: Verdict, ours: RawMessage, theirs: RawMessage) -> list:
    """How the worker's request differs from the SDK client's."""
    diffs = []
    our_probe, their_probe = [], []
    ref = verify_shape(theirs, their_probe)
    if their_probe:
        diffs.append(f"judge cannot read the SDK's own request: {their_probe}")
    our_method, their_method = ours.start.split(" ")[0], theirs.start.split(" ")[0]
    if our_method != their_method:
        diffs.append(f"method {our_method}, the SDK uses {their_method}")
    our_params = verify_shape(ours, our_probe)
    api = lambda p: {k: val for k, val in p.items() if k not in RPC_SIGNING}  # noqa: E731
    if api(our_params) != api(ref):
        diffs.append(f"API parameters differ: worker {api(our_params)}, SDK {api(ref)}")
    if v.kind == "rpc":
        for name in RPC_COMPARED:
            if our_params.get(name) != ref.get(name):
                diffs.append(f"{name}: worker {our_params.get(name)!r}, SDK {ref.get(name)!r}")
    if v.kind == "anonymous":
        for name in ("Action", "Version"):
            if our_params.get(name) != ref.get(name):
                diffs.append(f"{name}: worker {our_params.get(name)!r}, SDK {ref.get(name)!r}")
    if v.kind == "acs3":
        mine, sdk = ours.server_view(), theirs.server_view()
        sdk_signed = signed_list(sdk.get("authorization", ""))
        required = set(REQUIRED_SIGNED) | ({"x-acs-security-token"} if v.token else set())
        if not required <= set(sdk_signed):
            diffs.append(f"the SDK itself does not sign {sorted(required - set(sdk_signed))}")
        wanted = {n for n in sdk_signed if n.startswith("x-acs-") and n not in SDK_METADATA}
        for name in sorted(wanted | required):
            if name not in v.signed_headers:
                diffs.append(f"the SDK signs {name!r}, the worker does not")
            elif name not in ("host", "x-acs-date", "x-acs-signature-nonce") \
                    and mine.get(name) != sdk.get(name):
                diffs.append(f"{name}: worker {mine.get(name)!r}, SDK {sdk.get(name)!r}")
        extra = {n for n in v.signed_headers if n.startswith("x-acs-")} - set(sdk_signed)
        if extra:
            diffs.append(f"the worker signs {sorted(extra)}, which the SDK does not send")
    return diffs


def verify_shape(msg: RawMessage, problems: list) -> dict:
    """All parameters of a request (query and form body), decoded."""
    _, _, raw_query = split_target(msg.start, problems)
    params = dict(decode_query(raw_query, problems))
    view = msg.server_view()
    if view.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        params.update(parse_qsl(msg.body.decode("utf-8", "replace"), keep_blank_values=True))
    if "x-acs-action" in view and "Action" not in params and "authorization" in view:
        params["Action"] = view["x-acs-action"]
    return params


def signed_list(auth: str) -> list:
    m = re.search(r"SignedHeaders=([^,]*)", auth)
    return m.group(1).split(";") if m else []


class Judge:
    """The proxy: listen, judge, answer or forward; keep every verdict."""

    def __init__(self, upstream: tuple, static_keys: dict, compare_with_sdk: bool = True):
        self.upstream = upstream
        self.creds = Credentials(static_keys)
        self.nonces: set = set()
        self.verdicts: list = []
        self.reference = Reference() if compare_with_sdk else None
        self._seq = 0
        self._loop = None
        self.port = None
        self.ready = threading.Event()

    def start(self):
        threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True).start()
        if not self.ready.wait(10):
            raise RuntimeError("judge did not start")
        return self

    async def _main(self):
        self._loop = asyncio.get_running_loop()
        server = await asyncio.start_server(self._client, "127.0.0.1", 0, limit=1 << 20)
        self.port = server.sockets[0].getsockname()[1]
        self.ready.set()
        async with server:
            await server.serve_forever()

    async def _client(self, reader, writer):
        try:
            while True:
                try:
                    msg = await read_message(reader)
                except HttpError as e:
                    self._record(Verdict(self._next(), problems=[f"unreadable request: {e}"]))
                    break
                if msg is None:
                    break
                answer, close = await self._one(msg)
                writer.write(answer)
                await writer.drain()
                if close:
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    def _next(self):
        self._seq += 1
        return self._seq

    def _record(self, v):
        self.verdicts.append(v)

    async def _one(self, msg: RawMessage):
        v = verify(msg, self.creds, self.nonces, self._next())
        if v.code:
            self._record(v)
            return error_answer(v), False
        answer, close = await self._forward(msg)
        if v.action.startswith("AssumeRole"):
            head, _, body = answer.partition(b"\r\n\r\n")
            if b" 200 " in head.split(b"\r\n")[0]:
                self.creds.learn_sts_answer(body)
        if self.reference is not None and v.action:
            secret_token = self.creds.get(v.access_key_id) or (None, None)
            token = msg.server_view().get("x-acs-security-token") if v.kind == "acs3" \
                else verify_shape(msg, []).get("SecurityToken")
            try:
                theirs = await self._loop.run_in_executor(
                    None, self.reference.request_for, v, secret_token[0], token)
                v.reference = compare(v, msg, theirs)
            except Exception as e:  # noqa: BLE001 - reported, never hidden
                v.reference = [f"the SDK client could not build this request: {e!r}"]
        self._record(v)
        return answer, close

    async def _forward(self, msg: RawMessage):
        reader, writer = await asyncio.open_connection(*self.upstream, limit=1 << 22)
        try:
            writer.write(msg.raw)
            await writer.drain()
            answer = await read_message(reader)
        finally:
            writer.close()
        close = answer.server_view().get("connection", "").lower() == "close"
        return answer.raw, close


def selftest():
    """The judge must pass the SDK's own requests and fail doctored ones.

    Returns a list of problems with the judge itself (empty when it works).
    """
    from alibabacloud_tea_openapi import models as open_api
    failures = []
    ref = Reference()
    creds = Credentials({"selftest": "selftest-secret"})
    for algorithm in (None, "v2"):
        for token in (None, "tok/en+=="):
            cfg = open_api.Config(access_key_id="selftest", access_key_secret="selftest-secret",
                                  security_token=token, endpoint=ref.endpoint, protocol="http",
                                  region_id="cn-hangzhou")
            if algorithm:
                cfg.signature_algorithm = algorithm
            client, models = sdk_client("DescribeManagedInstances", cfg)
            try:
                client.describe_managed_instances(models.DescribeManagedInstancesRequest(
                    region_id="cn-hangzhou", instance_ip="2001:db8::1", max_results=1,
                    instance_name="主机 a+b*c~d/e&f=g"))
            except Exception:  # noqa: BLE001
                pass
            good = ref._captured.get(timeout=10)
            name = f"{algorithm or 'acs3'}{'+token' if token else ''}"
            v = verify(good, creds, set(), 0)
            if not v.ok:
                failures.append(f"{name}: the SDK's own request fails: {v.problems}")
            # The landed defect: one header line repeated (accept, which ACS3
            # signs; RPC requests carry none, so another line of theirs).
            again = [f for f in good.fields if f[0].lower() == ("x-acs-version" if algorithm
                                                                 else "accept")]
            doubled = RawMessage(good.start, good.fields + again, good.body, good.raw)
            if verify(doubled, creds, set(), 0).ok:
                failures.append(f"{name}: a repeated accept line passes")
            tampered_fields = [(k, val.replace("2001%3Adb8", "2001%3Adb9")) for k, val in good.fields]
            tampered = RawMessage(good.start.replace("2001%3Adb8", "2001%3Adb9"), tampered_fields,
                                  good.body, good.raw)
            if verify(tampered, creds, set(), 0).ok:
                failures.append(f"{name}: a changed parameter passes")
            raw_colon = RawMessage(good.start.replace("2001%3Adb8%3A%3A1", "2001:db8::1"),
                                   good.fields, good.body, good.raw)
            if verify(raw_colon, creds, set(), 0).ok:
                failures.append(f"{name}: an unencoded ':' in the query passes")
            if verify(good, creds, {nonce_of(good)}, 0).ok:
                failures.append(f"{name}: a reused nonce passes")
    return failures


def nonce_of(msg: RawMessage) -> str:
    view = msg.server_view()
    if "x-acs-signature-nonce" in view and "authorization" in view:
        return view["x-acs-signature-nonce"]
    return verify_shape(msg, []).get("SignatureNonce", "")
