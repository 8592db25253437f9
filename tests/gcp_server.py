"""A stand-in for the Compute Engine REST API (v1), for the GCP provider's tests.

The real API cannot be reached from here (and tests must never touch a real project), so this
in-process server speaks the part of it that google-cloud-compute's REST transport uses for the
provider: instances.bulkInsert/get/delete/list/aggregatedList, zoneOperations.get/wait/list and
instanceTemplates.get, with the JSON field names (camelCase) and error shapes the real API returns.
Anything else is answered 404 and listed in `unknown`, so a test notices a call it did not expect.

What it models on purpose, because the provider depends on it:
- Operations start RUNNING and are DONE only after `polls` get/wait calls; instances of a
  bulkInsert appear when its operation completes, so a client that does not poll sees nothing.
- `requestId` makes a mutating call idempotent: the same id returns the same operation.
- bulkInsert merges instanceProperties over the template as an RFC 7396 merge patch, as GCP
  documents: objects merge, arrays (metadata.items) are replaced.
- minCount: when fewer than minCount instances can be made, none are (GCP deletes what it made).

Faults, as GCP reports them:
- `exhaust(zone, style)`: "operation" (the default) ends the bulkInsert operation with
  VM_MIN_COUNT_NOT_REACHED plus ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS (httpErrorStatusCode 503);
  "summary" gives only VM_MIN_COUNT_NOT_REACHED on it and puts the cause in per-instance insert
  operations of the same operationGroupId; "http" refuses the call itself with HTTP 503.
- `quota(region, style)`: QUOTA_EXCEEDED in the operation (403), or "http": 403 quotaExceeded.
- `forbid(reason)`: every call gets HTTP 403 with a googleapis error body.
- `throttle(times, status, path_contains)`: 429 (or 403) rateLimitExceeded;
  `fail_5xx(times, path_contains)`: 503 backendError.
- `stall(where, polls=None, times=None)`: the next TIMES (None: every) bulkInsert operations made in
  WHERE (a zone, or a region: each of its zones) stay RUNNING for POLLS get/wait calls, or, with
  polls None, until `release(where)`; only then do they complete as any other, so their instances
  appear late, after a client that gave up on the operation has gone. `release` is GCP finishing
  the work on its own time, polled or not; a replayed requestId still gets the stalled operation.
"""

from __future__ import annotations

import base64
import itertools
import json
import math
import re
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

API = "https://www.googleapis.com/compute/v1"
SUMMARY = "VM_MIN_COUNT_NOT_REACHED"
NAME = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")
ZONE = re.compile(r"[a-z]+-[a-z]+\d+-[a-z]")
EXTRA_ZONES = ("us-central1-a", "us-central1-b")   # listed by aggregatedList like any project sees


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    query: dict
    body: dict | None


class HttpError(Exception):
    def __init__(self, status: int, reason: str, message: str, *, domain: str = "global",
                 details: tuple = ()):
        super().__init__(message)
        self.status, self.body = status, {"error": {
            "code": status, "message": message,
            "errors": [{"message": message, "domain": domain, "reason": reason}],
            **({"details": list(details)} if details else {})}}


def merge_patch(target, patch):
    """RFC 7396."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def _now() -> str:
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="milliseconds")


def _region(zone: str) -> str:
    return zone.rsplit("-", 1)[0]


def _field(resource: dict, path: str):
    value = resource
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


_TERM = re.compile(r'\(?\s*([A-Za-z][\w.-]*)\s*(=|!=)\s*(?:"([^"]*)"|([^\s)]+))\s*\)?')


def matches(flt: str, resource: dict) -> bool:
    """The subset of the list-filter syntax the provider uses: `field = "value"` terms, ANDed."""
    terms = list(_TERM.finditer(flt))
    rest = _TERM.sub("", flt).replace("AND", "").strip()
    if not terms or rest:
        raise HttpError(400, "invalid", f"Invalid value for field 'filter': '{flt}'. Invalid list filter expression.")
    for t in terms:
        field, op, value = t.group(1), t.group(2), t.group(3) if t.group(3) is not None else t.group(4)
        if (str(_field(resource, field)) == value) != (op == "="):
            return False
    return True


class ComputeServer:
    def __init__(self, project: str, *, polls: int = 1, page_size: int = 500):
        self.project, self.polls, self.page_size = project, polls, page_size
        self.lock = threading.Lock()
        self.templates: dict[str, dict] = {}
        self.instances: dict[str, dict[str, dict]] = {}      # zone -> name -> instance
        self.operations: dict[str, dict] = {}                # name -> operation (with private _keys)
        self.request_ids: dict[str, str] = {}                # requestId -> operation name
        self.requests: list[Recorded] = []
        self.unknown: list[str] = []
        self.exhausted: dict[str, str] = {}                  # zone -> style
        self.quota_regions: dict[str, str] = {}              # region -> style
        self.forbidden: str | None = None
        self.throttles: list[tuple[int, str]] = []           # (status, path fragment) of the next throttled calls
        self.failures: list[str] = []                        # path fragments of the next 5xx calls
        self.stalls: list[dict] = []                         # where, polls, times left: see stall()
        self.guest_attributes: dict[str, list[dict]] = {}   # 'zone/name' -> items the guest published
        self._ids = itertools.count(4_000_000_000_000_000_001)
        self._ips = itertools.count(2)
        self._http: ThreadingHTTPServer | None = None

    # -- life --------------------------------------------------------------------------------

    def start(self) -> str:
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._http.daemon_threads = True
        threading.Thread(target=self._http.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self.endpoint

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._http.server_address[1]}"

    def stop(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()

    # -- faults and fixtures -------------------------------------------------------------------

    def exhaust(self, zone: str, style: str = "operation") -> None:
        assert style in ("operation", "summary", "http")
        self.exhausted[zone] = style

    def quota(self, region: str, style: str = "operation") -> None:
        assert style in ("operation", "http")
        self.quota_regions[region] = style

    def forbid(self, reason: str = "forbidden") -> None:
        self.forbidden = reason

    def throttle(self, times: int = 1, status: int = 429, path_contains: str = "") -> None:
        self.throttles.extend([(status, path_contains)] * times)

    def fail_5xx(self, times: int = 1, path_contains: str = "") -> None:
        self.failures.extend([path_contains] * times)

    def stall(self, where: str, polls: int | None = None, times: int | None = None) -> None:
        assert (polls is None or polls >= 0) and (times is None or times > 0)
        with self.lock:
            self.stalls.append({"where": where, "polls": math.inf if polls is None else polls, "times": times})

    def release(self, where: str | None = None) -> list[str]:
        """Complete the stalled bulkInsert operations (of WHERE: a zone or a region; None: all) now,
        as GCP does when their work ends with nobody polling; returns 'zone/name' of the instances made."""
        made = []
        with self.lock:
            for op in self.operations.values():
                if (op.get("_stalled") and op["status"] != "DONE"
                        and where in (None, op["_zone"], _region(op["_zone"]))):
                    before = set(self.instances.get(op["_zone"], {}))
                    op.pop("_finish")()
                    op.update(status="DONE", progress=100, endTime=_now())
                    made += [f"{op['_zone']}/{n}" for n in sorted(set(self.instances[op["_zone"]]) - before)]
        return made

    def add_template(self, name: str, properties: dict) -> None:
        self.templates[name] = {
            "kind": "compute#instanceTemplate", "id": str(next(self._ids)), "name": name,
            "creationTimestamp": _now(), "properties": properties,
            "selfLink": f"{API}/projects/{self.project}/global/instanceTemplates/{name}"}

    def add_instance(self, zone: str, name: str, *, labels: dict | None = None, metadata: dict | None = None,
                     status: str = "RUNNING", machine_type: str = "n1-standard-1") -> dict:
        props = {"machineType": machine_type, "labels": labels or {},
                 "metadata": {"items": [{"key": k, "value": v} for k, v in (metadata or {}).items()]},
                 "networkInterfaces": [{"network": "global/networks/default"}]}
        with self.lock:
            inst = self._make_instance(zone, name, props)
            inst["status"] = status
            self.instances.setdefault(zone, {})[name] = inst
        return inst

    def publish_host_keys(self, zone: str, name: str, keys: list[str]) -> None:
        """What the guest environment does once sshd has its keys: guest attributes under hostkeys/."""
        with self.lock:
            self.guest_attributes[f"{zone}/{name}"] = [
                {"namespace": "hostkeys", "key": k.split()[0], "value": k.split()[1]} for k in keys]

    def set_status(self, zone: str, name: str, status: str) -> None:
        with self.lock:
            self.instances[zone][name]["status"] = status

    def all_instances(self) -> dict[str, dict]:
        """'zone/name' -> instance."""
        with self.lock:
            return {f"{z}/{n}": i for z, by in self.instances.items() for n, i in by.items()}

    def calls(self, method: str, fragment: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == method and fragment in r.path]

    # -- dispatch -------------------------------------------------------------------------------

    def handle(self, method: str, url: str, body: dict | None) -> tuple[int, dict]:
        parts = urlsplit(url)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        with self.lock:
            self.requests.append(Recorded(method, parts.path, query, body))
            try:
                self._faults(parts.path)
                for verb, pattern, fn in self._routes():
                    m = re.fullmatch(pattern, parts.path)
                    if m and verb == method:
                        if m.group("project") != self.project:
                            raise HttpError(404, "notFound", f"The resource 'projects/{m.group('project')}' was not found")
                        return 200, fn(query, body, **{k: v for k, v in m.groupdict().items() if k != "project"})
                self.unknown.append(f"{method} {parts.path}")
                raise HttpError(404, "notFound", f"unknown path {method} {parts.path}")
            except HttpError as exc:
                return exc.status, exc.body

    def _routes(self):
        p = r"/compute/v1/projects/(?P<project>[^/]+)"
        z = p + r"/zones/(?P<zone>[^/]+)"
        return (
            ("POST", z + r"/instances/bulkInsert", self._bulk_insert),
            ("GET", z + r"/instances", self._list),
            ("GET", z + r"/instances/(?P<name>[^/]+)", self._get),
            ("GET", z + r"/instances/(?P<name>[^/]+)/getGuestAttributes", self._guest_attributes),
            ("DELETE", z + r"/instances/(?P<name>[^/]+)", self._delete),
            ("GET", p + r"/aggregated/instances", self._aggregated),
            ("GET", z + r"/operations", self._list_operations),
            ("GET", z + r"/operations/(?P<name>[^/]+)", self._get_operation),
            ("POST", z + r"/operations/(?P<name>[^/]+)/wait", self._wait_operation),
            ("GET", p + r"/global/instanceTemplates/(?P<name>[^/]+)", self._template),
        )

    def _faults(self, path: str) -> None:
        if self.forbidden:
            raise HttpError(403, self.forbidden, "Required 'compute.instances.list' permission for "
                            f"'projects/{self.project}'", details=({
                                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                                "reason": "IAM_PERMISSION_DENIED", "domain": "compute.googleapis.com"},))
        for i, (status, fragment) in enumerate(self.throttles):
            if fragment in path:
                del self.throttles[i]
                raise HttpError(status, "rateLimitExceeded", "Rate Limit Exceeded", domain="usageLimits")
        for i, fragment in enumerate(self.failures):
            if fragment in path:
                del self.failures[i]
                raise HttpError(503, "backendError", "Internal error. Please try again or contact Google Support.")

    # -- instances -----------------------------------------------------------------------------

    def _check_zone(self, zone: str) -> None:
        if not ZONE.fullmatch(zone):
            raise HttpError(400, "invalid", f"Invalid value for field 'zone': '{zone}'. Unknown zone.")

    def _bulk_insert(self, query, body, zone):
        self._check_zone(zone)
        if (rid := query.get("requestId")) in self.request_ids:
            return self._public(self.operations[self.request_ids[rid]])
        body = body or {}
        names = list(body.get("perInstanceProperties") or {})
        count, min_count = int(body.get("count", 0)), int(body.get("minCount", body.get("count", 0)))
        if not names or len(names) != count or not 0 < min_count <= count:
            raise HttpError(400, "invalid", "Invalid value for field 'resource.count': count, minCount and "
                            "perInstanceProperties disagree")
        for name in names:
            if not NAME.fullmatch(name):
                raise HttpError(400, "invalid", f"Invalid value for field 'resource.perInstanceProperties': '{name}'. "
                                "Must be a match of regex '[a-z]([-a-z0-9]{0,61}[a-z0-9])?'")
        props = {}
        if src := body.get("sourceInstanceTemplate"):
            tname = src.rsplit("/", 1)[-1]
            if tname not in self.templates or f"projects/{self.project}/global/instanceTemplates/" not in src:
                raise HttpError(404, "notFound", f"The resource '{src}' was not found")
            props = self.templates[tname]["properties"]
        props = merge_patch(props, body.get("instanceProperties") or {})
        if not props.get("machineType"):
            raise HttpError(400, "required", "Required field 'resource.machineType' not specified")
        region = _region(zone)
        if self.exhausted.get(zone) == "http":
            raise HttpError(503, "ZONE_RESOURCE_POOL_EXHAUSTED", f"The zone 'projects/{self.project}/zones/{zone}' "
                            "does not have enough resources available to fulfill the request.  Try a different "
                            "zone, or try again later.")
        if self.quota_regions.get(region) == "http":
            raise HttpError(403, "quotaExceeded", f"Quota 'NVIDIA_A100_GPUS' exceeded.  Limit: 0.0 in region {region}.",
                            domain="usageLimits")
        op = self._operation(zone, "bulkInsert", f"{API}/projects/{self.project}/zones/{zone}/instances", rid)
        op["instancesBulkInsertOperationMetadata"] = {"perLocationStatus": {f"zones/{zone}": {
            "status": "CREATING", "targetVmCount": count}}}
        op["_finish"] = lambda: self._finish_bulk(op, zone, names, props, min_count)
        for rule in self.stalls:
            if rule["times"] != 0 and rule["where"] in (zone, region):
                op["_polls"], op["_stalled"] = rule["polls"], True
                if rule["times"] is not None:
                    rule["times"] -= 1
                break
        return self._public(op)

    def _finish_bulk(self, op, zone, names, props, min_count):
        status = op["instancesBulkInsertOperationMetadata"]["perLocationStatus"][f"zones/{zone}"]
        existing = self.instances.setdefault(zone, {})
        errors = []
        if self.quota_regions.get(_region(zone)):
            errors = [{"code": "QUOTA_EXCEEDED", "message": f"Quota 'NVIDIA_A100_GPUS' exceeded.  Limit: 0.0 in "
                       f"region {_region(zone)}.", "errorDetails": [{"quotaInfo": {
                           "metricName": "compute.googleapis.com/nvidia_a100_gpus", "limitName": "NVIDIA-A100-GPUS-per-project-region",
                           "dimensions": {"region": _region(zone)}, "limit": 0}}]}]
            op["httpErrorStatusCode"], op["httpErrorMessage"] = 403, "FORBIDDEN"
        elif style := self.exhausted.get(zone):
            summary = {"code": SUMMARY, "message": f"Requested minimum count of {min_count} VMs could not be created."}
            cause = {"code": "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS", "message": f"The zone 'projects/"
                     f"{self.project}/zones/{zone}' does not have enough resources available to fulfill the request.",
                     "errorDetails": [{"errorInfo": {"reason": "resource_availability", "domain":
                                       "compute.googleapis.com", "metadatas": {"zone": zone}}}]}
            errors = [summary, cause] if style == "operation" else [summary]
            op["httpErrorStatusCode"], op["httpErrorMessage"] = 503, "SERVICE UNAVAILABLE"
            if style == "summary":
                for name in names:
                    ins = self._operation(zone, "insert", f"{API}/projects/{self.project}/zones/{zone}/instances/{name}",
                                          None, group=op["operationGroupId"])
                    ins.update(status="DONE", progress=100, endTime=_now(), httpErrorStatusCode=503,
                               httpErrorMessage="SERVICE UNAVAILABLE",
                               error={"errors": [dict(cause, code="ZONE_RESOURCE_POOL_EXHAUSTED")]})
        elif taken := [n for n in names if n in existing]:
            errors = [{"code": "RESOURCE_ALREADY_EXISTS", "message": f"The resource 'projects/{self.project}/zones/"
                       f"{zone}/instances/{n}' already exists"} for n in taken]
            op["httpErrorStatusCode"], op["httpErrorMessage"] = 409, "CONFLICT"
        if errors:
            op["error"] = {"errors": errors}
            status.update(status="FAILED", createdVmCount=0, failedToCreateVmCount=len(names))
            return
        for name in names:
            existing[name] = self._make_instance(zone, name, props)
        status.update(status="DONE", createdVmCount=len(names))

    def _guest_attributes(self, query, body, zone, name):
        if name not in self.instances.get(zone, {}):
            raise HttpError(404, "notFound", f"The resource 'projects/{self.project}/zones/{zone}/instances/{name}' "
                            "was not found")
        path = query.get("queryPath", "")
        namespace = path.rstrip("/").split("/")[0]
        items = [i for i in self.guest_attributes.get(f"{zone}/{name}", []) if i["namespace"] == namespace]
        if not items:
            # As the API answers before the guest has published anything under the path.
            raise HttpError(404, "notFound", f"The resource 'projects/{self.project}/zones/{zone}/instances/{name}/"
                            f"guestAttributes/{path}' was not found")
        return {"kind": "compute#guestAttributes", "queryPath": path, "queryValue": {"items": items},
                "selfLink": f"{API}/projects/{self.project}/zones/{zone}/instances/{name}/guestAttributes/{path}"}

    def _make_instance(self, zone, name, props):
        inst = json.loads(json.dumps(props))
        n = next(self._ips)
        nics = inst.get("networkInterfaces") or [{"network": "global/networks/default"}]
        for i, nic in enumerate(nics):
            nic.update(name=f"nic{i}", networkIP=f"10.156.{n // 250}.{n % 250 + 2}", kind="compute#networkInterface")
        md = inst.setdefault("metadata", {})
        md.update(kind="compute#metadata", fingerprint=base64.b64encode(uuid.uuid4().bytes[:8]).decode())
        mt = inst["machineType"]
        inst.update(
            kind="compute#instance", id=str(next(self._ids)), creationTimestamp=_now(), name=name,
            status="STAGING", zone=f"{API}/projects/{self.project}/zones/{zone}", networkInterfaces=nics,
            machineType=mt if "/" in mt else f"{API}/projects/{self.project}/zones/{zone}/machineTypes/{mt}",
            labelFingerprint=base64.b64encode(uuid.uuid4().bytes[:8]).decode(),
            selfLink=f"{API}/projects/{self.project}/zones/{zone}/instances/{name}")
        return inst

    def _get(self, query, body, zone, name):
        inst = self.instances.get(zone, {}).get(name)
        if inst is None:
            raise HttpError(404, "notFound", f"The resource 'projects/{self.project}/zones/{zone}/instances/{name}' "
                            "was not found")
        return inst

    def _delete(self, query, body, zone, name):
        if (rid := query.get("requestId")) in self.request_ids:
            return self._public(self.operations[self.request_ids[rid]])
        inst = self._get(query, body, zone, name)
        inst["status"] = "STOPPING"
        op = self._operation(zone, "delete", inst["selfLink"], rid)
        op["_finish"] = lambda: self.instances.get(zone, {}).pop(name, None)
        return self._public(op)

    def _page(self, rows: list, query) -> tuple[list, str | None]:
        start = int(base64.b64decode(query["pageToken"]).decode()) if query.get("pageToken") else 0
        size = min(int(query.get("maxResults", self.page_size)), self.page_size)
        nxt = base64.b64encode(str(start + size).encode()).decode() if start + size < len(rows) else None
        return rows[start:start + size], nxt

    def _list(self, query, body, zone):
        self._check_zone(zone)
        rows = [i for _, i in sorted(self.instances.get(zone, {}).items())
                if not query.get("filter") or matches(query["filter"], i)]
        page, nxt = self._page(rows, query)
        return {"kind": "compute#instanceList", "id": f"projects/{self.project}/zones/{zone}/instances",
                **({"items": page} if page else {}), **({"nextPageToken": nxt} if nxt else {}),
                "selfLink": f"{API}/projects/{self.project}/zones/{zone}/instances"}

    def _aggregated(self, query, body):
        zones = sorted(set(self.instances) | set(EXTRA_ZONES))
        rows = [(z, i) for z in zones for _, i in sorted(self.instances.get(z, {}).items())
                if not query.get("filter") or matches(query["filter"], i)]
        page, nxt = self._page(rows, query)
        items = {}
        for z in zones:
            found = [i for zz, i in page if zz == z]
            items[f"zones/{z}"] = {"instances": found} if found else {"warning": {
                "code": "NO_RESULTS_ON_PAGE", "message": f"There are no results for scope 'zones/{z}' on this page.",
                "data": [{"key": "scope", "value": f"zones/{z}"}]}}
        return {"kind": "compute#instanceAggregatedList", "id": f"projects/{self.project}/aggregated/instances",
                "items": items, **({"nextPageToken": nxt} if nxt else {}),
                "selfLink": f"{API}/projects/{self.project}/aggregated/instances"}

    def _template(self, query, body, name):
        if name not in self.templates:
            raise HttpError(404, "notFound", f"The resource 'projects/{self.project}/global/instanceTemplates/{name}' "
                            "was not found")
        return self.templates[name]

    # -- operations ------------------------------------------------------------------------------

    def _operation(self, zone, kind, target, request_id, group=None) -> dict:
        oid = next(self._ids)
        name = f"operation-{int(time.time() * 1000)}-{uuid.uuid4().hex[:13]}-{uuid.uuid4().hex[:8]}"
        op = {"kind": "compute#operation", "id": str(oid), "name": name, "operationType": kind,
              "zone": f"{API}/projects/{self.project}/zones/{zone}", "targetLink": target,
              "targetId": str(oid + 7), "status": "RUNNING", "user": "test@example.iam.gserviceaccount.com",
              "progress": 0, "insertTime": _now(), "startTime": _now(),
              "selfLink": f"{API}/projects/{self.project}/zones/{zone}/operations/{name}",
              "_polls": self.polls, "_zone": zone}
        if group or kind == "bulkInsert":
            op["operationGroupId"] = group or str(uuid.uuid4())
        self.operations[name] = op
        if request_id:
            self.request_ids[request_id] = name
        return op

    def _public(self, op: dict) -> dict:
        return {k: v for k, v in op.items() if not k.startswith("_")}

    def _poll(self, zone, name) -> dict:
        op = self.operations.get(name)
        if op is None or op["_zone"] != zone:
            raise HttpError(404, "notFound", f"The resource 'projects/{self.project}/zones/{zone}/operations/{name}' "
                            "was not found")
        if op["status"] != "DONE":
            if op["_polls"] > 0:
                op["_polls"] -= 1
            else:
                if finish := op.pop("_finish", None):
                    finish()
                op.update(status="DONE", progress=100, endTime=_now())
        return self._public(op)

    def _get_operation(self, query, body, zone, name):
        return self._poll(zone, name)

    def _wait_operation(self, query, body, zone, name):
        return self._poll(zone, name)

    def _list_operations(self, query, body, zone):
        rows = [self._public(o) for o in self.operations.values() if o["_zone"] == zone
                and (not query.get("filter") or matches(query["filter"], o))]
        page, nxt = self._page(rows, query)
        return {"kind": "compute#operationList", "id": f"projects/{self.project}/zones/{zone}/operations",
                **({"items": page} if page else {}), **({"nextPageToken": nxt} if nxt else {}),
                "selfLink": f"{API}/projects/{self.project}/zones/{zone}/operations"}


def _handler(server: ComputeServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in two writes: with Nagle on, the body waits for the client's
        # delayed ACK of the headers, ~40 ms per call on loopback.
        disable_nagle_algorithm = True

        def _serve(self):
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                status, payload = 400, HttpError(400, "parseError", "Parse Error").body
            else:
                status, payload = server.handle(self.command, self.path, body)
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=UTF-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _serve

        def log_message(self, format, *args):   # quiet: the tests read `requests` instead
            pass

    return Handler
