"""Google Compute Engine: elastic nodes as instances made by instances.bulkInsert.

A launch is one bulkInsert per zone with count = minCount = the number of nodes, so GCP itself
is all or nothing; when a zone has no capacity, the next zone of the region is tried in the
same call, and only when every zone is out does the region count as out of capacity.

Identity. An instance is named `<cluster>-<node>-<hash of its client token>`, cut to RFC 1035,
and its `Instance.instance_id` is `<zone>/<name>` (e.g. `europe-west3-a/sbtest-a100-de-0-1f2e3d4c`):
every Compute call on an instance needs its zone, and names are unique only within a zone.
bulkInsert gives every instance of a call the same instanceProperties, so no label or metadata
value can name one node: the labels carry cluster, pool and a hash of the batch's tokens, and
the metadata key `slurm-bridge-nodes` maps each instance name of the batch to its node (labels
are lossy). A booting instance finds its node there under its own name (metadata server
`instance/name`); `slurm-bridge-cluster` in the metadata holds the exact cluster name.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
import time
import uuid
from datetime import datetime
from typing import Callable, Iterable, NamedTuple, Sequence, TypeVar

import google.auth
import requests
from google.api_core import exceptions as gexc
from google.auth import exceptions as auth_exc
from google.auth.credentials import AnonymousCredentials
from google.cloud import compute_v1
from google.oauth2 import service_account

from .. import secretfiles
from ..cloud_config import GcpConfig
from . import hostkeys
from .base import (TOKEN_DIGEST_TAG, Failure, FailureKind, Instance, LaunchRequest, LaunchResult, ProviderError,
                   Scope, token_digest)

log = logging.getLogger("slurm_bridge.providers.gcp")

LABEL_CLUSTER, LABEL_NODE = "slurm-bridge-cluster", "slurm-bridge-node"
LABEL_POOL, LABEL_TOKEN = "slurm-bridge-pool", "slurm-bridge-token"
META_CLUSTER, META_NODES = "slurm-bridge-cluster", "slurm-bridge-nodes"
META_GUEST_ATTRIBUTES, HOSTKEYS_PATH = "enable-guest-attributes", "hostkeys/"
SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
HTTP_TIMEOUT_S = 60.0
ATTEMPTS = 3            # per API call, for transient failures only: mutating calls carry a requestId
_REQUEST_NS = uuid.UUID("1f0c8a52-7b8e-4d1e-9a57-6a3d2c0e5b11")
_DONE = compute_v1.Operation.Status.DONE

# bulkInsert's own error when fewer than minCount instances could be made; it does not say why,
# so the cause is looked up in the per-instance insert operations of the same operationGroupId.
SUMMARY = "VM_MIN_COUNT_NOT_REACHED"


class Rule(NamedTuple):
    kind: FailureKind
    scope: Scope
    codes: frozenset[str]
    message: str | None          # a regular expression searched in the error message
    statuses: frozenset[int]     # HTTP statuses, consulted only when no rule matched by code


def _rule(kind, scope, codes=(), message=None, statuses=()) -> Rule:
    return Rule(kind, scope, frozenset(codes), message, frozenset(statuses))


# The one table from GCP errors to failures. A rule matches on any of its codes (operation
# error codes, errors[].reason, ErrorInfo.reason, and two local words: "auth" for credential
# errors raised on this side, "network" for connection errors and timeouts) or on its message
# pattern; the first matching rule wins, so the more fatal kinds come first. Only when no rule
# matches that way does the HTTP status decide: GCP reports a stockout as 503 or 429 and quota
# and rate limits as 403, so the status alone would mislead.
_K = FailureKind
ERROR_TABLE: tuple[Rule, ...] = (
    # GPU machine types exist in some zones of a region only: not offered is "no capacity here".
    _rule(_K.CAPACITY, Scope.ZONE,
          message=r"[Mm]achine type .* does not exist in zone|/machineTypes/[^ ]+' was not found"),
    _rule(_K.CREDENTIALS, Scope.PROVIDER, {
        "auth", "forbidden", "unauthorized", "authError", "PERMISSION_DENIED", "IAM_PERMISSION_DENIED",
        "accessNotConfigured", "SERVICE_DISABLED", "ACCESS_TOKEN_EXPIRED", "CREDENTIALS_MISSING"},
        statuses={401, 403}),
    _rule(_K.QUOTA, Scope.REGION, {"QUOTA_EXCEEDED", "quotaExceeded"}),
    _rule(_K.THROTTLED, Scope.NONE, {"rateLimitExceeded", "userRateLimitExceeded", "RATE_LIMIT_EXCEEDED"},
          statuses={429}),
    _rule(_K.CAPACITY, Scope.REGION, {"REGION_RESOURCE_POOL_EXHAUSTED"}),
    _rule(_K.CAPACITY, Scope.ZONE, {
        "ZONE_RESOURCE_POOL_EXHAUSTED", "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS", "RESOURCE_POOL_EXHAUSTED",
        "resource_availability", SUMMARY}),
    # A name taken by an instance that is not ours: about this launch only, not the whole provider.
    _rule(_K.UNKNOWN, Scope.REGION, {"RESOURCE_ALREADY_EXISTS", "alreadyExists"}),
    _rule(_K.CONFIG, Scope.PROVIDER, {
        "invalid", "badRequest", "required", "notFound", "RESOURCE_NOT_FOUND", "INVALID_FIELD_VALUE",
        "invalidParameter"}, statuses={400, 404}),
    _rule(_K.TRANSIENT, Scope.REGION, {
        "network", "backendError", "internalError", "RESOURCE_NOT_READY", "resourceNotReady"},
        statuses={409, 500, 502, 503, 504}),   # 409: a concurrent change; it passes
)

# A status GCP adds later reads as pending: neither counted as running nor reaped as gone.
STATES = {"PROVISIONING": "pending", "STAGING": "pending", "PENDING": "pending", "RUNNING": "running",
          "REPAIRING": "running", "STOPPING": "stopping", "SUSPENDING": "stopping", "PENDING_STOP": "stopping",
          "DEPROVISIONING": "stopping", "STOPPED": "terminated", "SUSPENDED": "terminated",
          "TERMINATED": "terminated"}

T = TypeVar("T")


def classify(status: int | None, codes: Iterable[str], message: str, zone: str | None = None) -> Failure:
    codes = set(codes)
    if len(codes) > 1:
        codes.discard(SUMMARY)   # the cause, when known, says more than the summary
    rule = next((r for r in ERROR_TABLE if codes & r.codes or (r.message and re.search(r.message, message))), None)
    if rule is None and status is not None:
        rule = next((r for r in ERROR_TABLE if status in r.statuses), None)
    if rule is None:
        return Failure(FailureKind.UNKNOWN, message[:500])
    return Failure(rule.kind, message[:500], rule.scope, zone if rule.scope is Scope.ZONE else None)


def failure_of(exc: BaseException, zone: str | None = None) -> Failure | None:
    """The failure an exception from the client library stands for; None for a bug of ours."""
    if isinstance(exc, gexc.GoogleAPICallError):
        codes = {e.get("reason") for e in exc.errors if isinstance(e, dict)} | {exc.reason}
        status = exc.code if isinstance(exc.code, int) else None
        return classify(status, codes - {None, ""}, f"HTTP {status}: {exc.message}", zone)
    if isinstance(exc, (auth_exc.RefreshError, auth_exc.DefaultCredentialsError)):
        return classify(None, {"auth"}, f"credentials: {exc}", zone)
    if isinstance(exc, (gexc.RetryError, requests.ConnectionError, requests.Timeout, auth_exc.TransportError,
                        ConnectionError, TimeoutError)):
        return classify(None, {"network"}, f"{type(exc).__name__}: {exc}", zone)
    return None


def _op_errors(op: compute_v1.Operation) -> tuple[set[str], str]:
    codes, parts = set(), []
    for err in op.error.errors:
        codes.add(err.code)
        parts.append(f"{err.code}: {err.message}")
        codes.update(d.error_info.reason for d in err.error_details if d.error_info.reason)
    return codes, "; ".join(parts)


def instance_name(cluster: str, node: str, token: str) -> str:
    """Deterministic, unique per token, valid RFC 1035 (a-z first, [-a-z0-9], at most 63)."""
    digest = token_digest(token)
    stem = re.sub(r"[^a-z0-9]+", "-", f"{cluster}-{node}".lower()).strip("-")
    if not stem[:1].isalpha():
        stem = f"sb-{stem}"
    return f"{stem[:54].rstrip('-')}-{digest}"


def label_value(value: str) -> str:
    return re.sub(r"[^a-z0-9_-]", "_", value.lower())[:63]


def split_id(instance_id: str) -> tuple[str, str]:
    zone, sep, name = instance_id.partition("/")
    if not sep or not zone or not name or "/" in name:
        raise ValueError(f"not a GCP instance id (zone/name): {instance_id!r}")
    return zone, name


def _region_of(zone: str) -> str:
    return zone.rsplit("-", 1)[0]


class GcpProvider:
    name = "gcp"

    def __init__(self, config: GcpConfig, *, credentials=None):
        self.config = config
        self._credentials = credentials
        self._api: tuple | None = None
        self._template: tuple[str, tuple[tuple[str, str], ...]] | None = None

    # -- plumbing ------------------------------------------------------------------------------

    def _clients(self) -> tuple[compute_v1.InstancesClient, compute_v1.ZoneOperationsClient,
                                compute_v1.InstanceTemplatesClient]:
        # Built on first use, so a missing credential becomes a classified failure, not a crash
        # of whatever program merely configured the provider.
        if self._api is None:
            creds = self._credentials
            try:
                if creds is None and self.config.anonymous:
                    creds = AnonymousCredentials()
                elif creds is None and self.config.credentials_file:
                    if (why := secretfiles.problem(self.config.credentials_file)) is not None:
                        raise ProviderError(Failure(FailureKind.CREDENTIALS, f"refusing GCP credentials "
                                                    f"{self.config.credentials_file}: it {why}", Scope.PROVIDER))
                    creds = service_account.Credentials.from_service_account_file(
                        str(self.config.credentials_file), scopes=SCOPES)
                elif creds is None:
                    creds, _ = google.auth.default(scopes=SCOPES)
            except (auth_exc.GoogleAuthError, OSError, ValueError) as exc:
                # The message names the file or the lookup, never the key material.
                where = self.config.credentials_file or "application default credentials"
                raise ProviderError(Failure(FailureKind.CREDENTIALS, f"cannot load GCP credentials from {where}: "
                                            f"{type(exc).__name__}: {exc}", Scope.PROVIDER)) from exc
            # Every client gets the same endpoint: see _wait for why the operations client is ours.
            opts = {"api_endpoint": self.config.endpoint} if self.config.endpoint else None
            kw = {"transport": "rest", "credentials": creds, "client_options": opts}
            self._api = (compute_v1.InstancesClient(**kw), compute_v1.ZoneOperationsClient(**kw),
                         compute_v1.InstanceTemplatesClient(**kw))
        return self._api

    def _call(self, fn: Callable[[], T], *, zone: str | None = None, missing_ok: bool = False) -> T | None:
        # The library's own retries are off (retry=None at every call): one policy, here.
        for attempt in range(ATTEMPTS):
            try:
                return fn()
            except Exception as exc:   # classified below; re-raised when it is not the API's
                if missing_ok and isinstance(exc, gexc.NotFound):
                    return None
                failure = failure_of(exc, zone)
                if failure is None:
                    raise
                if failure.kind is not FailureKind.TRANSIENT or attempt == ATTEMPTS - 1:
                    raise ProviderError(failure) from exc
                log.info("gcp: %s; retrying", failure.message)
                time.sleep(0.2 * 2 ** attempt)
        raise AssertionError("unreachable")   # pragma: no cover

    def _wait(self, op: compute_v1.Operation, zone: str, deadline: float | None = None) -> compute_v1.Operation:
        """Poll OP until DONE or the deadline (default: operation_timeout_s from now); returns it as last seen.

        Not ExtendedOperation.result(): in google-cloud-compute 1.57 the non-unary methods build
        their poller from `transport._zone_operations_client` (services/instances/transports/
        base.py), a ZoneOperationsClient made with the transport's credentials and kind only,
        without client_options, so it polls compute.googleapis.com whatever endpoint this client
        was given. Hence the *_unary methods and our own ZoneOperationsClient, built with the
        same endpoint and credentials. zoneOperations.wait holds up to ~2 minutes server-side
        but may return early, so an early RUNNING answer is followed by a short pause.
        """
        _, ops, _ = self._clients()
        if deadline is None:
            deadline = time.monotonic() + self.config.operation_timeout_s
        pause = 0.05
        while op.status != _DONE and (left := deadline - time.monotonic()) > 0:
            started = time.monotonic()
            op = self._call(functools.partial(
                ops.wait, request=compute_v1.WaitZoneOperationRequest(
                    project=self.config.project, zone=zone, operation=op.name),
                retry=None, timeout=max(1.0, min(left, 150.0))), zone=zone)
            if op.status != _DONE and time.monotonic() - started < 1.0:
                time.sleep(min(pause, max(deadline - time.monotonic(), 0)))
                pause = min(pause * 2, 2.0)
        return op

    def _template_parts(self) -> tuple[str, tuple[tuple[str, str], ...]]:
        """The template's URL and its metadata items, which our metadata must carry along: bulkInsert
        merges instanceProperties over the template as an RFC 7396 merge patch, where a list
        (metadata.items) replaces the template's, and would drop its startup-script."""
        if self._template is None:
            ref = self.config.instance_template
            m = re.fullmatch(r"(?:https://[^/]+/compute/v1/)?(?:projects/([^/]+)/)?global/instanceTemplates/"
                             r"([a-z][-a-z0-9]{0,62})|([a-z][-a-z0-9]{0,62})", ref)
            if m is None:
                raise ProviderError(Failure(FailureKind.CONFIG, f"instance_template {ref!r}: expected NAME or "
                                            "[projects/P/]global/instanceTemplates/NAME", Scope.PROVIDER))
            project, name = m.group(1) or self.config.project, m.group(2) or m.group(3)
            _, _, templates = self._clients()
            tpl = self._call(lambda: templates.get(project=project, instance_template=name, retry=None,
                                                   timeout=HTTP_TIMEOUT_S))
            items = tuple((i.key, i.value) for i in tpl.properties.metadata.items)
            self._template = (f"projects/{project}/global/instanceTemplates/{name}", items)
        return self._template

    # -- launch --------------------------------------------------------------------------------

    def launch(self, request: LaunchRequest) -> LaunchResult:
        if not request.nodes:
            return LaunchResult((), {})
        shapes = {(n.instance_type, n.spot, n.pool) for n in request.nodes}
        if len(shapes) > 1:
            # One bulkInsert has one machine type and scheduling; the launcher sends one pool per call.
            raise ValueError(f"one launch takes one instance type, spot flag and pool, got {sorted(shapes)}")
        try:
            if request.region not in self.config.regions:
                raise ProviderError(Failure(FailureKind.CONFIG, f"region {request.region} is not configured "
                                            "for gcp", Scope.REGION))
            if request.zone and _region_of(request.zone) != request.region:
                # Residency is decided per region: a zone elsewhere must never be used for it.
                raise ProviderError(Failure(FailureKind.CONFIG, f"zone {request.zone} is not in region "
                                            f"{request.region}", Scope.REGION))
            return self._launch(request)
        except ProviderError as exc:
            return LaunchResult((), {n.node: exc.failure for n in request.nodes})

    def _launch(self, request: LaunchRequest) -> LaunchResult:
        tokens = {n.node: n.client_token or uuid.uuid4().hex for n in request.nodes}   # no token: no idempotency
        names = {node: instance_name(request.cluster, node, tok) for node, tok in tokens.items()}
        if len(set(names.values())) != len(names):
            raise ValueError(f"instance names collide: {names}")
        batch = hashlib.sha256("\n".join(sorted(tokens.values())).encode()).hexdigest()[:16]
        template, template_items = self._template_parts()
        spec = request.nodes[0]
        ours = {META_CLUSTER: request.cluster, META_NODES: json.dumps({v: k for k, v in names.items()}, sort_keys=True),
                # The guest environment then publishes the host keys, which the bootstrap pins (hostkeys.py).
                META_GUEST_ATTRIBUTES: "TRUE"}
        items = [(k, v) for k, v in template_items if k not in ours] + sorted(ours.items())
        scheduling = (compute_v1.Scheduling(provisioning_model="SPOT", instance_termination_action="DELETE",
                                            automatic_restart=False, on_host_maintenance="TERMINATE")
                      if spec.spot else compute_v1.Scheduling(provisioning_model="STANDARD"))
        props = compute_v1.InstanceProperties(
            machine_type=spec.instance_type, scheduling=scheduling,
            labels={LABEL_CLUSTER: label_value(request.cluster), LABEL_POOL: label_value(spec.pool),
                    LABEL_TOKEN: batch},
            metadata=compute_v1.Metadata(items=[compute_v1.Items(key=k, value=v) for k, v in items]))
        resource = compute_v1.BulkInsertInstanceResource(
            count=len(names), min_count=len(names), source_instance_template=template, instance_properties=props,
            per_instance_properties={n: compute_v1.BulkInsertInstanceResourcePerInstanceProperties()
                                     for n in names.values()})
        zones = (request.zone,) if request.zone else self.config.zones_of(request.region)
        exhausted: list[Failure] = []
        for zone in zones:
            # Per zone, so that a retry after a stockout in zone a is not answered with zone a's operation.
            request_id = str(uuid.uuid5(_REQUEST_NS, "\n".join([zone, *sorted(tokens.values())])))
            try:
                return self._launch_in_zone(request, zone, names, batch, resource, request_id)
            except ProviderError as exc:
                if exc.failure.kind is not FailureKind.CAPACITY or exc.failure.effective_scope is not Scope.ZONE:
                    raise
                log.warning("gcp %s: no capacity for %d x %s (%s); next zone", zone, len(names),
                            spec.instance_type, exc.failure.message)
                exhausted.append(exc.failure)
        if request.zone:
            raise ProviderError(exhausted[0])
        raise ProviderError(Failure(FailureKind.CAPACITY, f"{request.region}: no zone can take {len(names)} x "
                                    f"{spec.instance_type}: " + "; ".join(f"{f.zone}: {f.message}" for f in exhausted),
                                    Scope.REGION))

    def _launch_in_zone(self, request: LaunchRequest, zone: str, names: dict[str, str], batch: str,
                        resource: compute_v1.BulkInsertInstanceResource, request_id: str) -> LaunchResult:
        instances, ops, _ = self._clients()
        req = compute_v1.BulkInsertInstanceRequest(project=self.config.project, zone=zone, request_id=request_id,
                                                   bulk_insert_instance_resource_resource=resource)
        log.info("gcp %s: bulkInsert %s (request %s)", zone, sorted(names.values()), request_id)
        op = self._call(lambda: instances.bulk_insert_unary(request=req, retry=None, timeout=HTTP_TIMEOUT_S),
                        zone=zone)
        # From here on instances may exist: when the outcome is unknown, report what exists so the
        # launcher releases it; later arrivals carry the cluster label and reconcile finds them.
        try:
            op = self._wait(op, zone)
        except ProviderError as exc:
            return self._collect(request, zone, names, batch, exc.failure)
        if op.status != _DONE:
            late = Failure(FailureKind.TRANSIENT, f"{zone}: bulkInsert {op.name} not done after "
                                                  f"{self.config.operation_timeout_s} s")
            return self._collect(request, zone, names, batch, late)
        codes, message = _op_errors(op)
        if not codes:
            return self._collect(request, zone, names, batch,
                                 Failure(FailureKind.TRANSIENT, f"{zone}: created but not listed"))
        if codes == {SUMMARY}:
            codes |= self._insert_causes(ops, op, zone)
        failure = classify(op.http_error_status_code or None, codes, f"{zone}: {message}", zone)
        if codes <= {"RESOURCE_ALREADY_EXISTS", "alreadyExists"}:
            # A replay after GCP forgot the requestId: instances of this batch are ours to report.
            return self._collect(request, zone, names, batch, failure)
        raise ProviderError(failure)

    def _insert_causes(self, ops: compute_v1.ZoneOperationsClient, bulk: compute_v1.Operation, zone: str) -> set[str]:
        flt = f'operationGroupId = "{bulk.operation_group_id}"'
        try:
            found = self._call(lambda: list(ops.list(request=compute_v1.ListZoneOperationsRequest(
                project=self.config.project, zone=zone, filter=flt), retry=None, timeout=HTTP_TIMEOUT_S)), zone=zone)
        except ProviderError as exc:   # the summary alone still reads as a stockout
            log.warning("gcp %s: cannot read the insert operations of %s: %s", zone, bulk.name, exc)
            return set()
        return {code for o in found if o.name != bulk.name for code in _op_errors(o)[0]}

    def _collect(self, request: LaunchRequest, zone: str, names: dict[str, str], batch: str,
                 missing: Failure) -> LaunchResult:
        try:
            found = {i.name: i for i in self._list_zone(zone, f'labels.{LABEL_TOKEN} = "{batch}"')}
        except ProviderError:
            self._release(zone, names.values())
            raise
        launched = [self._to_instance(found[name]) for name in names.values() if name in found]
        failed = {node: missing for node, name in names.items() if name not in found}
        return LaunchResult(tuple(launched), failed)

    def _release(self, zone: str, names: Iterable[str]) -> None:
        try:
            self.terminate(_region_of(zone), [f"{zone}/{n}" for n in names])
        except ProviderError as exc:
            log.error("gcp %s: cannot release %s (%s); reconcile will find them by label", zone, list(names), exc)

    def _list_zone(self, zone: str, flt: str) -> list[compute_v1.Instance]:
        instances, _, _ = self._clients()
        return self._call(lambda: list(instances.list(request=compute_v1.ListInstancesRequest(
            project=self.config.project, zone=zone, filter=flt), retry=None, timeout=HTTP_TIMEOUT_S)), zone=zone)

    # -- the other verbs -------------------------------------------------------------------------

    def terminate(self, region: str, instance_ids: Sequence[str]) -> None:
        instances, _, _ = self._clients()
        pending, errors = [], []
        for iid in instance_ids:
            try:
                zone, name = split_id(iid)
            except ValueError:
                log.warning("gcp: ignoring %r: not an instance id of this provider", iid)
                continue
            req = compute_v1.DeleteInstanceRequest(project=self.config.project, zone=zone, instance=name,
                                                   request_id=str(uuid.uuid4()))
            try:
                op = self._call(functools.partial(instances.delete_unary, request=req, retry=None,
                                                  timeout=HTTP_TIMEOUT_S), zone=zone, missing_ok=True)
            except ProviderError as exc:
                errors.append(exc.failure)
                continue
            if op is not None:
                pending.append((iid, zone, op))
        deadline = time.monotonic() + self.config.operation_timeout_s   # one bound for the whole call
        for iid, zone, op in pending:
            try:
                op = self._wait(op, zone, deadline)
            except ProviderError as exc:
                errors.append(exc.failure)
                continue
            codes, message = _op_errors(op)
            if op.status != _DONE:
                errors.append(Failure(FailureKind.TRANSIENT, f"{iid}: delete not done after "
                                                             f"{self.config.operation_timeout_s} s"))
            elif codes - {"RESOURCE_NOT_FOUND", "notFound"}:
                errors.append(classify(op.http_error_status_code or None, codes, f"{iid}: {message}", zone))
        if errors:
            order = [rule.kind for rule in ERROR_TABLE]   # most fatal first
            raise ProviderError(min(errors, key=lambda f: order.index(f.kind)))

    def list_instances(self, cluster: str) -> list[Instance]:
        instances, _, _ = self._clients()
        req = compute_v1.AggregatedListInstancesRequest(
            project=self.config.project, filter=f'labels.{LABEL_CLUSTER} = "{label_value(cluster)}"',
            max_results=500)
        pairs = self._call(lambda: list(instances.aggregated_list(request=req, retry=None, timeout=HTTP_TIMEOUT_S)))
        out = []
        for _scope, scoped in pairs:
            for raw in scoped.instances:
                inst = self._to_instance(raw)
                # Labels are lossy ("Lab" and "lab" label alike): the metadata has the exact name.
                if inst.region in self.config.regions and inst.cluster == cluster:
                    out.append(inst)
        return out

    def describe(self, region: str, instance_ids: Sequence[str]) -> list[Instance]:
        # REGION is implied: every id names its zone.
        instances, _, _ = self._clients()
        out = []
        for iid in instance_ids:
            try:
                zone, name = split_id(iid)
            except ValueError:
                continue
            raw = self._call(functools.partial(instances.get, project=self.config.project, zone=zone,
                                               instance=name, retry=None, timeout=HTTP_TIMEOUT_S),
                             zone=zone, missing_ok=True)
            if raw is not None:
                out.append(self._to_instance(raw))
        return out

    def host_keys(self, region: str, instance_id: str) -> tuple[str, ...] | None:
        """The host keys the guest environment published as guest attributes; None until it has."""
        try:
            zone, name = split_id(instance_id)
        except ValueError:
            return None
        instances, _, _ = self._clients()
        ask = compute_v1.GetGuestAttributesInstanceRequest(project=self.config.project, zone=zone, instance=name,
                                                           query_path=HOSTKEYS_PATH)
        attrs = self._call(functools.partial(instances.get_guest_attributes, request=ask, retry=None,
                                             timeout=HTTP_TIMEOUT_S),
                           zone=zone, missing_ok=True)     # 404 until the guest has published anything
        if attrs is None:
            return None
        items = attrs.query_value.items if attrs.query_value else []
        return hostkeys.valid_keys(f"{i.key} {i.value}" for i in items if i.namespace == "hostkeys") or None

    def _to_instance(self, raw: compute_v1.Instance) -> Instance:
        zone = raw.zone.rsplit("/", 1)[-1]
        meta = {i.key: i.value for i in raw.metadata.items}
        labels = dict(raw.labels)
        try:
            nodes = json.loads(meta.get(META_NODES) or "{}")
        except ValueError:
            nodes = {}
        node = (nodes.get(raw.name) if isinstance(nodes, dict) else None) or labels.get(LABEL_NODE, "")
        nics = raw.network_interfaces
        return Instance(
            instance_id=f"{zone}/{raw.name}", node=node, region=_region_of(zone),
            state=STATES.get(raw.status, "pending"), address=nics[0].network_i_p if nics else "", zone=zone,
            instance_type=raw.machine_type.rsplit("/", 1)[-1],
            cluster=meta.get(META_CLUSTER) or labels.get(LABEL_CLUSTER, ""),
            launched_at=datetime.fromisoformat(raw.creation_timestamp).timestamp() if raw.creation_timestamp else None,
            tags={**labels, TOKEN_DIGEST_TAG: raw.name.rpartition("-")[2]})
