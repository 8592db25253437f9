"""The AWS provider: elastic nodes as EC2 instances, started by instant EC2 Fleets.

One CreateFleet call starts up to `fleet_batch` instances of one shape from the
launch template, one override per configured subnet so EC2 picks an AZ with
capacity. Errors, raised or listed per override in the fleet's `Errors`, are
classified by one table (ERROR_CODES). Tags are how slurm-bridge finds
instances again (reconcile, a lost state DB): cluster, pool, jobs, node, token.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import boto3
from botocore import exceptions as bex
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from ..cloud_config import AwsConfig
from . import hostkeys
from .base import Failure, FailureKind, Instance, LaunchRequest, LaunchResult, NodeSpec, ProviderError, Scope

log = logging.getLogger("slurm_bridge.providers.aws")

TAG_CLUSTER, TAG_NODE, TAG_POOL = "slurm-bridge:cluster", "slurm-bridge:node", "slurm-bridge:pool"
TAG_JOBS, TAG_TOKEN, TAG_REQUEST = "slurm-bridge:jobs", "slurm-bridge:token", "slurm-bridge:request"

# What an IAM policy for slurm-bridge must allow. The first five are the calls this module makes
# (tests/test_provider_aws_verbs.py checks that it makes no other); AWS also checks the rest when
# CreateFleet launches, though moto checks none of them.
REQUIRED_IAM_ACTIONS = frozenset({
    "ec2:CreateFleet",
    "ec2:CreateTags",                 # per-node tags, and tags at launch (TagSpecifications) need it too
    "ec2:DescribeInstances",
    "ec2:TerminateInstances",
    "ec2:DescribeSpotPriceHistory",
    "ec2:RunInstances",               # an instant fleet launches under the caller's RunInstances rights
    "iam:PassRole",                   # only if the launch template names an instance profile
    "iam:CreateServiceLinkedRole",    # only until AWSServiceRoleForEC2Spot exists (first Spot launch)
})

_K, _S = FailureKind, Scope
# One table for every EC2 error code we act on; codes not listed fall back in `classify`.
ERROR_CODES: dict[str, tuple[FailureKind, Scope]] = {
    # No such instances in that place right now; narrowed to the AZ when the message names one. A full
    # subnet is this place's capacity too (a /24 holds 251 instances). SpotMaxPriceTooLow: we set no max
    # price, so only a launch template's cap below today's Spot price here: a market condition of this
    # place, not a broken config.
    **dict.fromkeys(("InsufficientInstanceCapacity", "InsufficientCapacity", "InsufficientHostCapacity",
                     "UnfulfillableCapacity", "InsufficientFreeAddressesInSubnet", "SpotMaxPriceTooLow"),
                    (_K.CAPACITY, _S.REGION)),
    # Quotas are per account and region.
    **dict.fromkeys(("InstanceLimitExceeded", "VcpuLimitExceeded", "MaxSpotInstanceCountExceeded",
                     "MaxFleetCountExceeded", "MaxSpotFleetRequestCountExceeded"), (_K.QUOTA, _S.REGION)),
    **dict.fromkeys(("RequestLimitExceeded", "Throttling", "ThrottlingException", "RequestThrottled",
                     "EC2ThrottledException"), (_K.THROTTLED, _S.NONE)),
    # Who we are is the same in every region.
    **dict.fromkeys(("AuthFailure", "UnauthorizedOperation", "InvalidClientTokenId", "SignatureDoesNotMatch",
                     "ExpiredToken", "RequestExpired", "Blocked", "PendingVerification"),
                    (_K.CREDENTIALS, _S.PROVIDER)),
    # Everything a launch names (template, its AMI, subnets, security groups) is a regional object the
    # admin creates per region: a config error found in one region says nothing about the others, so it
    # blocks that region, loudly (CONFIG is never temporary). OptInRequired: a region not enabled, or a
    # Marketplace AMI (regional too) not subscribed.
    **dict.fromkeys(("InvalidLaunchTemplateName.NotFoundException", "InvalidLaunchTemplateName.MalformedException",
                     "InvalidLaunchTemplateId.NotFound", "InvalidLaunchTemplateId.Malformed",
                     "InvalidLaunchTemplateId.VersionNotFound", "InvalidSubnetID.NotFound", "InvalidSubnetID.Malformed",
                      "InvalidAMIID.NotFound", "InvalidAMIID.Malformed", "InvalidAMIID.Unavailable",
                     "InvalidGroup.NotFound", "InvalidSecurityGroupID.NotFound", "InvalidKeyPair.NotFound",
                     "InvalidParameterValue", "InvalidParameterCombination", "InvalidParameter", "MissingParameter",
                     "Unsupported", "OptInRequired"), (_K.CONFIG, _S.REGION)),
    # InvalidInstanceID.NotFound right after a launch: EC2 is eventually consistent.
    **dict.fromkeys(("InternalError", "InternalFailure", "ServerInternal", "ServiceUnavailable", "Unavailable",
                     "RequestTimeout", "RequestTimeoutException", "InvalidInstanceID.NotFound"),
                    (_K.TRANSIENT, _S.REGION)),
    "IdempotentParameterMismatch": (_K.UNKNOWN, _S.REGION),   # a bug here: one token, two requests
}
_SEVERITY = (_K.CREDENTIALS, _K.CONFIG, _K.QUOTA, _K.CAPACITY, _K.UNKNOWN, _K.TRANSIENT, _K.THROTTLED)
_AZ = re.compile(r"\b[a-z]{2}(?:-gov)?-[a-z]+-\d[a-z]\b")
_ID = re.compile(r"i-[0-9a-f]{8}(?:[0-9a-f]{9})?")
_NOT_FOUND = ("InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed")

FILTER_VALUES = 200      # EC2 refuses more values in one filter
TERMINATE_BATCH = 1000   # TerminateInstances takes at most this many ids
TAG_WORKERS = 8          # CreateTags is one call per instance: overlap the round trips
TAG_ATTEMPTS = 5
LIVE = ("pending", "running")
LISTED = ("pending", "running", "stopping", "stopped", "shutting-down")
_STATE = {"pending": "pending", "running": "running", "stopping": "stopping", "stopped": "stopping",
          "shutting-down": "terminated", "terminated": "terminated"}


def classify(code: str, message: str = "", status: int = 0) -> Failure:
    kind, scope = ERROR_CODES.get(code) or (
        (_K.QUOTA, _S.REGION) if code.endswith("LimitExceeded") else
        (_K.TRANSIENT, _S.REGION) if status >= 500 else (_K.UNKNOWN, _S.REGION))
    zone = None
    if kind is _K.CAPACITY and (m := _AZ.search(message)):
        scope, zone = _S.ZONE, m.group(0)
    return Failure(kind, f"{code}: {message}" if message else code, scope, zone)


def classify_exception(exc: BaseException) -> Failure:
    if isinstance(exc, ClientError):
        err, meta = exc.response.get("Error", {}), exc.response.get("ResponseMetadata", {})
        return classify(err.get("Code", ""), err.get("Message", ""), meta.get("HTTPStatusCode", 0))
    if isinstance(exc, (bex.NoCredentialsError, bex.PartialCredentialsError, bex.CredentialRetrievalError,
                        bex.ProfileNotFound, bex.TokenRetrievalError, bex.SSOTokenLoadError)):
        return Failure(_K.CREDENTIALS, str(exc), _S.PROVIDER)
    if isinstance(exc, (bex.ConnectionError, bex.HTTPClientError)):   # connect/read timeouts, refused, reset
        return Failure(_K.TRANSIENT, str(exc), _S.REGION)
    if isinstance(exc, bex.ParamValidationError):
        return Failure(_K.CONFIG, str(exc), _S.PROVIDER)
    return Failure(_K.UNKNOWN, f"{type(exc).__name__}: {exc}", _S.REGION)


def _combine(failures: Sequence[Failure]) -> Failure:
    """One failure for one fleet call's per-override errors."""
    worst = min(failures, key=lambda f: _SEVERITY.index(f.kind))
    same = [f for f in failures if f.kind is worst.kind]
    message = "; ".join(dict.fromkeys(f.message for f in same))[:600]
    zones = {f.zone for f in same}
    if worst.kind is _K.CAPACITY and (len(zones) != 1 or None in zones):
        # Every AZ we offered EC2 is out: that is the region.
        return Failure(_K.CAPACITY, message, _S.REGION)
    return Failure(worst.kind, message, worst.scope, worst.zone)


def _veto_capacity_retry(response=None, **_: Any):
    # EC2 sends capacity errors as HTTP 500, and botocore's standard mode retries every 500 (also 502-504,
    # connection errors, timeouts, and throttling codes such as RequestLimitExceeded). Retrying capacity
    # in place only delays the move to another region, so we answer first with False, which botocore
    # reads as "no retry". The standard handler still runs and keeps 14 tokens of its retry quota (500,
    # refilled by 1 per success); capacity errors are rare enough for that.
    if response is not None:
        code = (response[1] or {}).get("Error", {}).get("Code", "")
        if ERROR_CODES.get(code, (None,))[0] is _K.CAPACITY:
            return False
    return None


@contextmanager
def _classified() -> Iterator[None]:
    """For the verbs that raise: any SDK error leaves as a classified ProviderError."""
    try:
        yield
    except (ClientError, BotoCoreError) as exc:
        raise ProviderError(classify_exception(exc)) from exc


def _chunks(items: Sequence, n: int) -> Iterator[Sequence]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


def _tags(d: dict) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in d.get("Tags", [])}


def _instance(d: dict, region: str, extra_tags: dict[str, str] | None = None) -> Instance:
    tags = {**_tags(d), **(extra_tags or {})}
    launched = d.get("LaunchTime")
    state = d.get("State", {}).get("Name", "")
    return Instance(instance_id=d["InstanceId"], node=tags.get(TAG_NODE, ""), region=region,
                    state=_STATE.get(state, state), address=d.get("PrivateIpAddress", ""),
                    zone=d.get("Placement", {}).get("AvailabilityZone", ""), instance_type=d.get("InstanceType", ""),
                    cluster=tags.get(TAG_CLUSTER, ""), launched_at=launched.timestamp() if launched else None,
                    tags=tags)


@dataclass
class _Batch:
    """Nodes that go out in one CreateFleet call: one shape, one pool, the same jobs."""

    specs: list[NodeSpec]
    tokens: list[str]
    token: str                                   # ClientToken and the slurm-bridge:request tag
    found: dict[str, dict] = field(default_factory=dict)   # node -> instance launched earlier for it
    orphans: list[dict] = field(default_factory=list)      # launched for this batch, never node-tagged


def _request_token(cluster: str, region: str, tokens: Iterable[str]) -> str:
    # ClientToken takes at most 64 characters.
    return "sb-" + hashlib.sha256("\0".join((cluster, region, *tokens)).encode()).hexdigest()[:40]


class AwsProvider:
    name = "aws"

    def __init__(self, config: AwsConfig, *, session: boto3.Session | None = None,
                 sleep: Callable[[float], None] = time.sleep):
        self.config = config
        self._session = session
        self._sleep = sleep
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    def client(self, region: str):
        """The EC2 client of REGION, made on first use (tests hook into its events)."""
        with self._lock:
            if region not in self._clients:
                if self._session is None:
                    self._session = boto3.Session(profile_name=self.config.profile)
                # Retries are spelled out, not left to the default "legacy" mode: standard mode retries
                # 5xx, timeouts and throttling a bounded number of times with jittered backoff, and the
                # one thing it would retry wrongly, capacity, is vetoed (_veto_capacity_retry).
                # total_max_attempts counts the first try, as `max_attempts` does in ~/.aws/config;
                # Config's own "max_attempts" would count retries only (N+1 attempts).
                cfg = BotoConfig(retries={"mode": "standard", "total_max_attempts": self.config.max_attempts},
                                 connect_timeout=5, read_timeout=30, max_pool_connections=TAG_WORKERS + 2)
                client = self._session.client("ec2", region_name=region, endpoint_url=self.config.endpoint_url,
                                              config=cfg)
                client.meta.events.register_first("needs-retry.ec2", _veto_capacity_retry)
                self._clients[region] = client
            return self._clients[region]

    # -- launch -----------------------------------------------------------------------

    def launch(self, request: LaunchRequest) -> LaunchResult:
        specs = list(request.nodes)
        try:
            if request.region not in self.config.regions:
                raise ProviderError(Failure(_K.CONFIG, f"{request.region} is not in providers.aws.regions",
                                            _S.REGION))
            client = self.client(request.region)
            batches = self._batches(request, specs)
            self._find_earlier(client, request, batches)
        except (ClientError, BotoCoreError, ProviderError) as exc:
            failure = exc.failure if isinstance(exc, ProviderError) else classify_exception(exc)
            return LaunchResult((), {s.node: failure for s in specs})
        launched: list[Instance] = []
        failed: dict[str, Failure] = {}
        for batch in batches:
            if failed:   # the launcher releases the whole request anyway: spend nothing more
                first = next(iter(failed.values()))
                launched += [_instance(d, request.region) for d in batch.found.values()]
                failed.update({s.node: first for s in batch.specs if s.node not in batch.found})
                continue
            got, lost = self._launch_batch(client, request, batch)
            launched += got
            failed.update(lost)
        return LaunchResult(tuple(launched), failed)

    def _batches(self, request: LaunchRequest, specs: list[NodeSpec]) -> list[_Batch]:
        groups: dict[tuple, list[NodeSpec]] = {}
        for s in specs:
            groups.setdefault((s.instance_type, s.spot, s.pool, s.job_ids), []).append(s)
        out = []
        for group in groups.values():
            for chunk in _chunks(group, self.config.fleet_batch):
                # Without client tokens there is nothing to be idempotent on: a fresh token per call.
                tokens = [s.client_token or f"sb-{uuid.uuid4().hex}" for s in chunk]
                out.append(_Batch(list(chunk), tokens, _request_token(request.cluster, request.region, tokens)))
        return out

    def _find_earlier(self, client, request: LaunchRequest, batches: list[_Batch]) -> None:
        """Instances an earlier call with the same tokens started (EC2 honours ClientToken, moto does
        not): return them, do not launch again. The request tag is set at creation, so one filter value
        per batch finds finished instances and those a crash left without node tags."""
        by_token = {b.token: b for b in batches}
        node_of = {b.token: {t: s.node for t, s in zip(b.tokens, b.specs)} for b in batches}
        for values in _chunks(list(by_token), FILTER_VALUES):
            # One filter: the token already hashes the cluster in, and each filter costs moto a pass
            # over every tag in the region (the rest is checked here).
            for d in self._describe(client, [{"Name": f"tag:{TAG_REQUEST}", "Values": list(values)}]):
                tags = _tags(d)
                batch = by_token.get(tags.get(TAG_REQUEST, ""))
                if batch is None or tags.get(TAG_CLUSTER) != request.cluster or d["State"]["Name"] not in LIVE:
                    continue
                if TAG_TOKEN not in tags:
                    batch.orphans.append(d)
                elif node_of[batch.token].get(tags[TAG_TOKEN]) == tags.get(TAG_NODE):
                    batch.found[tags[TAG_NODE]] = d

    def _launch_batch(self, client, request: LaunchRequest, batch: _Batch) -> tuple[list[Instance], dict]:
        region = request.region
        launched = [_instance(batch.found[s.node], region) for s in batch.specs if s.node in batch.found]
        todo = [(s, t) for s, t in zip(batch.specs, batch.tokens) if s.node not in batch.found]
        ids = [d["InstanceId"] for d in batch.orphans]
        failure = None
        if len(ids) < len(todo):
            need = todo[len(ids):]
            token = batch.token if len(need) == len(batch.specs) else \
                _request_token(request.cluster, region, [t for _, t in need])
            try:
                new, failure = self._fleet(client, request, [s for s, _ in need], token)
            except (ClientError, BotoCoreError) as exc:
                new, failure = [], classify_exception(exc)
            ids += new
        failed: dict[str, Failure] = {}
        for spec, _ in todo[len(ids):]:
            failed[spec.node] = failure or Failure(_K.UNKNOWN, f"fleet started {len(ids)} of {len(todo)} "
                                                               "instances and gave no reason")
        drop = list(ids[len(todo):])   # more than asked for: never ours to keep
        # CreateFleet tags every instance of a call alike, but each must carry its own node. So the
        # shared tags (cluster, pool, jobs, request) go on at creation, the node and token here,
        # one CreateTags per instance (tags differ, so they cannot share a call). A crash between the
        # two leaves instances that have the request tag but no node tag: `_find_earlier` adopts them
        # on a retry with the same tokens, and reconcile finds them by cluster tag otherwise.
        pairs = list(zip(ids, todo))
        for (iid, (spec, _)), lost in zip(pairs, self._tag_each(client, pairs)):
            if lost is not None:
                failed[spec.node] = lost
                drop.append(iid)
        wanted = {iid: (spec, token) for iid, (spec, token) in pairs if spec.node not in failed}
        seen, unseen = self._visible(client, list(wanted))
        for iid, (spec, token) in wanted.items():
            if iid in seen:
                launched.append(_instance(seen[iid], region, {TAG_NODE: spec.node, TAG_TOKEN: token}))
            else:
                failed[spec.node] = unseen
                drop.append(iid)
        if drop:
            self._discard(region, drop)
        return launched, failed

    def _fleet(self, client, request: LaunchRequest, specs: list[NodeSpec], token: str):
        first = specs[0]
        subnets = self.config.subnets.get(request.region, ())
        overrides = [{"InstanceType": first.instance_type, "SubnetId": s} for s in subnets] or \
            [{"InstanceType": first.instance_type, **({"AvailabilityZone": request.zone} if request.zone else {})}]
        # MinTargetCapacity makes each call all or nothing in one AZ: no paying for a partial batch the
        # launcher would release at once, and a job's nodes share an AZ (latency, no cross-AZ traffic).
        whole = {"SingleInstanceType": True, "SingleAvailabilityZone": True, "MinTargetCapacity": len(specs)}
        market = {"SpotOptions": {"AllocationStrategy": "price-capacity-optimized", **whole}} if first.spot else \
            {"OnDemandOptions": {"AllocationStrategy": "lowest-price", **whole}}
        shared = {TAG_CLUSTER: request.cluster, TAG_POOL: first.pool, TAG_REQUEST: token,
                  TAG_JOBS: ",".join(str(j) for j in first.job_ids)}
        resp = client.create_fleet(
            ClientToken=token, Type="instant",
            LaunchTemplateConfigs=[{"LaunchTemplateSpecification": {"LaunchTemplateName": self.config.launch_template,
                                                                    "Version": "$Default"},
                                    "Overrides": overrides}],
            TargetCapacitySpecification={"TotalTargetCapacity": len(specs),
                                         "DefaultTargetCapacityType": "spot" if first.spot else "on-demand"},
            TagSpecifications=[{"ResourceType": "instance",
                                "Tags": [{"Key": k, "Value": v} for k, v in shared.items()]}],
            **market)
        ids = [i for item in resp.get("Instances", []) for i in item.get("InstanceIds", [])]
        errors = []
        for e in resp.get("Errors", []):
            f = classify(e.get("ErrorCode", ""), e.get("ErrorMessage", ""))
            az = e.get("LaunchTemplateAndOverrides", {}).get("Overrides", {}).get("AvailabilityZone")
            if f.kind is _K.CAPACITY and az and f.zone is None:
                f = Failure(f.kind, f.message, _S.ZONE, az)
            errors.append(f)
        return ids, (_combine(errors) if errors else None)

    def _tag_each(self, client, pairs: list[tuple[str, tuple[NodeSpec, str]]]) -> list[Failure | None]:
        def one(pair) -> Failure | None:
            iid, (spec, token) = pair
            for attempt in range(TAG_ATTEMPTS):
                try:
                    client.create_tags(Resources=[iid], Tags=[{"Key": TAG_NODE, "Value": spec.node},
                                                              {"Key": TAG_TOKEN, "Value": token}])
                    return None
                except (ClientError, BotoCoreError) as exc:
                    failure = classify_exception(exc)
                # The instance runs and is billed: worth more patience than botocore's few retries.
                if failure.kind not in (_K.THROTTLED, _K.TRANSIENT) or attempt == TAG_ATTEMPTS - 1:
                    return failure
                self._sleep(0.5 * 2 ** attempt)
            return None   # pragma: no cover - the last attempt returns
        if len(pairs) <= 1:
            return [one(p) for p in pairs]
        with ThreadPoolExecutor(TAG_WORKERS) as pool:
            return list(pool.map(one, pairs))

    def _visible(self, client, ids: list[str]) -> tuple[dict[str, dict], Failure]:
        """The new instances as DescribeInstances shows them (addresses), waiting briefly for stragglers.
        By id, as AWS advises right after a launch: a tag filter may lag further (and costs moto a scan
        of every tag in the region per instance)."""
        seen: dict[str, dict] = {}
        failure = Failure(_K.TRANSIENT, "launched but not visible to DescribeInstances", _S.REGION)
        for attempt in range(4):
            missing = [i for i in ids if i not in seen]
            if not missing:
                break
            if attempt:
                self._sleep(float(attempt))
            for chunk in _chunks(missing, FILTER_VALUES):
                try:
                    resp = client.describe_instances(InstanceIds=list(chunk))
                except (ClientError, BotoCoreError) as exc:
                    failure = classify_exception(exc)
                    if failure.kind is not _K.TRANSIENT:   # NotFound (not visible yet) is; look again
                        return seen, failure
                    continue
                seen.update((d["InstanceId"], d) for r in resp.get("Reservations", []) for d in r.get("Instances", []))
        return seen, failure

    def _discard(self, region: str, ids: list[str]) -> None:
        try:
            self.terminate(region, ids)
        except ProviderError as exc:
            log.error("%s: cannot terminate %s (%s); reconcile will find them by tag", region, ids, exc)

    # -- the other verbs ----------------------------------------------------------------

    def _describe(self, client, filters: list[dict]) -> Iterator[dict]:
        for page in client.get_paginator("describe_instances").paginate(
                Filters=filters, PaginationConfig={"PageSize": 1000}):
            for reservation in page.get("Reservations", []):
                yield from reservation.get("Instances", [])

    def terminate(self, region: str, instance_ids: Sequence[str]) -> None:
        # A malformed id names no instance; sending it would fail the whole call.
        ids = [i for i in dict.fromkeys(instance_ids) if _ID.fullmatch(i or "")]
        with _classified():
            for chunk in _chunks(ids, TERMINATE_BATCH):
                self._terminate_chunk(self.client(region), list(chunk))

    def _terminate_chunk(self, client, ids: list[str]) -> None:
        # One unknown id fails the whole call and terminates nothing: find the known ones and retry.
        for attempt in range(4):
            try:
                client.terminate_instances(InstanceIds=ids)
                return
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") not in _NOT_FOUND or attempt == 3:
                    raise
                known = {d["InstanceId"] for values in _chunks(ids, FILTER_VALUES)
                         for d in self._describe(client, [{"Name": "instance-id", "Values": list(values)}])}
                if known >= set(ids):
                    raise
                if attempt == 0:
                    self._sleep(1.0)   # a just-launched id may not be visible yet: one more look
                    continue
                ids = [i for i in ids if i in known]
                if not ids:
                    return

    def list_instances(self, cluster: str) -> list[Instance]:
        filters = [{"Name": f"tag:{TAG_CLUSTER}", "Values": [cluster]},
                   {"Name": "instance-state-name", "Values": list(LISTED)}]
        with _classified():
            return [_instance(d, region) for region in self.config.regions
                    for d in self._describe(self.client(region), filters)]

    def describe(self, region: str, instance_ids: Sequence[str]) -> list[Instance]:
        # A filter, not InstanceIds: an unknown id is then left out instead of failing the call.
        with _classified():
            return [_instance(d, region) for values in _chunks(list(dict.fromkeys(instance_ids)), FILTER_VALUES)
                    for d in self._describe(self.client(region), [{"Name": "instance-id", "Values": list(values)}])]

    def host_keys(self, region: str, instance_id: str) -> tuple[str, ...] | None:
        """The host keys cloud-init printed to the console (hostkeys.py); None until it has."""
        if not _ID.fullmatch(instance_id or ""):
            return None
        client = self.client(region)
        with _classified():
            try:
                # Latest: the console as it is now (Nitro instances, as every GPU type is), not as
                # it was captured at the last state change, which can be minutes old.
                out = client.get_console_output(InstanceId=instance_id, Latest=True)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "UnsupportedOperation":
                    raise
                out = client.get_console_output(InstanceId=instance_id)
        return hostkeys.from_console(out.get("Output") or "")

    def spot_prices(self, region: str, instance_types: Sequence[str]) -> dict[str, float]:
        """The current Spot price of each type (USD/h), the cheapest over the region's AZs."""
        if not instance_types:
            return {}
        latest: dict[tuple[str, str], tuple[datetime, float]] = {}   # (type, AZ) -> newest price
        with _classified():
            for page in self.client(region).get_paginator("describe_spot_price_history").paginate(
                    InstanceTypes=list(dict.fromkeys(instance_types)), ProductDescriptions=["Linux/UNIX"],
                    StartTime=datetime.now(UTC)):
                for p in page.get("SpotPriceHistory", []):
                    key, stamp = (p["InstanceType"], p.get("AvailabilityZone", "")), p["Timestamp"]
                    if key not in latest or stamp > latest[key][0]:
                        latest[key] = (stamp, float(p["SpotPrice"]))
        prices: dict[str, float] = {}
        for (itype, _), (_, price) in latest.items():
            prices[itype] = min(price, prices.get(itype, price))
        return prices
