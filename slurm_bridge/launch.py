"""The launch worker: turns one resume request into instances, or into a loud, quick failure.

Nodes of one job are launched together in one region, all or nothing: a
partial launch is released at once and the next candidate region is tried.
A classified failure blocks its scope (zone, region, provider) for a while so
the next request does not walk into the same wall. When no candidate is
left, the nodes are set down with a reason and powered down: Slurm requeues
the job at once and the nodes return to the pool; nothing retries in a loop.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable, Mapping

from . import crashpoints, nodestate, selector
from .config import Config, PoolConfig
from .models import Zone
from .prices import book_for
from .errors import BridgeError
from .providers.base import (Failure, FailureKind, Instance, LaunchRequest, NodeSpec, Provider, Scope)
from .resume_file import ResumeFile
from .slurm.backend import SlurmBackend
from .state import StateDB

log = logging.getLogger("slurm_bridge.launch")

# Throttling and transient errors are retried in place a few times before the region is left.
SAME_PLACE_RETRIES = 2


@dataclass(frozen=True)
class Group:
    """Nodes that must come up together: one job's nodes of one pool, or one manual power-up."""

    pool: PoolConfig
    nodes: tuple[str, ...]
    job_id: int | None


@dataclass
class Outcome:
    group: Group
    ok: bool
    provider: str = ""
    region: str = ""
    reason: str = ""


def plan(cfg: Config, request_nodes: list[str], resume: ResumeFile) -> tuple[list[Group], list[str]]:
    """Group the request's nodes; returns the groups and the nodes that belong to no pool."""
    unknown = [n for n in request_nodes if cfg.pool_for_node(n) is None]
    groups: dict[tuple[str, int | None], list[str]] = {}
    for node in request_nodes:
        pool = cfg.pool_for_node(node)
        if pool is None:
            continue
        job = resume.job_of(node)
        if job is None:
            # A manual power-up: each node stands alone.
            groups[(node, None)] = [node]
        else:
            groups.setdefault((pool.name, job.job_id), []).append(node)
    out = []
    for (key, job_id), nodes in groups.items():
        out.append(Group(cfg.pool_for_node(nodes[0]), tuple(nodes), job_id))
    return out, unknown


class Launcher:
    def __init__(self, cfg: Config, db: StateDB, slurm: SlurmBackend,
                 providers: Mapping[str, Provider], *, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep):
        self.cfg, self.db, self.slurm, self.providers = cfg, db, slurm, providers
        self.clock, self.sleep = clock, sleep
        self.book = book_for(cfg.price_overrides, db.prices())
        self._bootstrapper = None     # built on first use: see _bootstrap

    def _bootstrap(self, provider: Provider, instances: tuple[Instance, ...], specs,
                   request_id: int) -> dict[str, Failure]:
        """[bootstrap] for this provider's instances: node -> failure of those not brought up."""
        boot = self.cfg.bootstrap
        if boot is None or provider.name not in boot.providers:
            return {}
        if self._bootstrapper is None:
            from .node_bootstrap import Bootstrapper

            try:
                self._bootstrapper = Bootstrapper(boot, self.cfg.cluster.name, clock=self.clock)
            except (BridgeError, ValueError) as exc:
                fail = Failure(FailureKind.CONFIG, f"[bootstrap]: {exc}", Scope.PROVIDER)
                return {i.node: fail for i in instances}
        # Within Slurm's ResumeTimeout for the whole request (every region tried shares it), leaving
        # room to see slurmd register after the start.
        timeout = self.cfg.slurm.resume_timeout
        deadline = self.db.get_request(request_id).received_at + max(timeout - 15, timeout / 2)
        return self._bootstrapper.run(provider, instances, {s.node: s.client_token for s in specs}, deadline)

    def _blocked(self, provider: str, region: str) -> str | None:
        if provider not in self.providers:
            return f"provider {provider} is not configured"
        row = self.db.is_blocked(provider, region, now=self.clock())
        if row is None:
            return None
        return f"blocked until {time.strftime('%H:%M:%S', time.localtime(row.until))} by {row.kind}: {row.reason}"

    def launch_group(self, group: Group, request_id: int, job_zone: Zone | None = None,
                     account: str | None = None) -> Outcome:
        ranked, excluded = selector.rank(self.cfg, group.pool, job_zone, self._blocked, self.book)
        for ex in excluded:
            log.info("group %s: %s/%s excluded: %s", list(group.nodes), ex.provider, ex.region, ex.reason)
        tried = []
        for offer in ranked:
            # Backoff recorded by an earlier candidate of this same request counts too.
            if (why := self._blocked(offer.provider, offer.region)) is not None:
                tried.append(f"{offer.region}: {why}")
                continue
            failure = self._try(group, offer, request_id, account)
            if failure is None:
                return Outcome(group, True, offer.provider, offer.region)
            tried.append(f"{offer.region}: {failure.kind.value}")
        reason = ("no region could launch: " + "; ".join(tried)) if tried else \
            "no region inside the zone offers this pool: " + "; ".join(f"{e.region} {e.reason}" for e in excluded)
        self.db.event("launch_failed", job_id=group.job_id, request_id=request_id,
                      nodes=list(group.nodes), reason=reason,
                      zone=sorted(job_zone.countries) if job_zone and job_zone.countries is not None else "*",
                      now=self.clock())
        log.error("nodes %s (job %s): %s", ",".join(group.nodes), group.job_id, reason)
        nodestate.fail(self.slurm, list(group.nodes), reason)
        return Outcome(group, False, reason=reason)

    def _try(self, group: Group, offer: selector.Offer, request_id: int, account: str | None) -> Failure | None:
        provider = self.providers[offer.provider]
        job_ids = (group.job_id,) if group.job_id else ()
        # Request ids restart when a state DB is lost; the request's receipt time keeps a token
        # from ever matching an older instance, while a retry of this request still matches its own.
        stamp = int(self.db.get_request(request_id).received_at * 1000)
        for attempt in range(SAME_PLACE_RETRIES + 1):
            specs = tuple(NodeSpec(node, group.pool.name, offer.instance_type, offer.spot, job_ids,
                                   f"sb-{request_id}.{stamp}-{node}-{offer.provider}-{offer.region}-{attempt}")
                          for node in group.nodes)
            rows = {s.node: self.db.begin_launch(
                node=s.node, pool=group.pool.name, provider=offer.provider, region=offer.region, zone=None,
                instance_type=offer.instance_type, price_per_hour=offer.price_per_hour, spot=offer.spot,
                job_ids=list(job_ids), request_id=request_id, client_token=s.client_token, account=account,
                now=self.clock())
                for s in specs}
            request = LaunchRequest(self.cfg.cluster.name, offer.region, specs)
            try:
                crashpoints.point("launch: before provider.launch")
                result = provider.launch(request)
                crashpoints.point("launch: after provider.launch")
            except Exception as exc:   # noqa: BLE001 - an unclassified bug must not leave instances behind
                log.exception("provider %s crashed launching %s", offer.provider, list(group.nodes))
                self._sweep(offer, rows, f"provider error: {exc}")
                failure = Failure(FailureKind.UNKNOWN, str(exc))
            else:
                for inst in result.launched:
                    self.db.launched(rows[inst.node], inst.instance_id, inst.address or None,
                                     inst.zone or None, now=self.clock())
                if result.complete and len(result.launched) == len(specs):
                    unready = self._bootstrap(provider, result.launched, specs, request_id)
                    if not unready:
                        self._announce(group, offer, result.launched, request_id)
                        return None
                    failure = self._release_bootstrapped(offer, rows, result.launched, unready)
                else:
                    failure = self._release(offer, rows, result)
            if failure.kind not in (FailureKind.THROTTLED, FailureKind.TRANSIENT) or attempt == SAME_PLACE_RETRIES:
                self._block(offer, failure)
                return failure
            self.sleep(failure.retry_after_s or 2.0 * (attempt + 1))
        return failure  # pragma: no cover - the loop always returns

    def _announce(self, group: Group, offer: selector.Offer, instances, request_id: int) -> None:
        for inst in instances:
            nodestate.launched(self.slurm, self.cfg, inst.node, address=inst.address, provider=offer.provider,
                               region=offer.region, country=offer.country, instance_id=inst.instance_id)
            self.db.event("launched", node=inst.node, job_id=group.job_id, request_id=request_id,
                          provider=offer.provider, region=offer.region, country=offer.country,
                          instance_id=inst.instance_id, price_per_hour=offer.price_per_hour, now=self.clock())
        log.info("launched %s for job %s in %s/%s at %.2f USD/h each", ",".join(group.nodes), group.job_id,
                 offer.provider, offer.region, offer.price_per_hour)

    def _release(self, offer: selector.Offer, rows: dict[str, int], result) -> Failure:
        """All or nothing: terminate what did come up, record why the rest did not."""
        provider = self.providers[offer.provider]
        if result.launched:
            ids = [i.instance_id for i in result.launched]
            log.warning("partial launch in %s (%d of %d): releasing %s", offer.region, len(ids), len(rows), ids)
            try:
                crashpoints.point("launch: before releasing a partial launch")
                provider.terminate(offer.region, ids)
            except Exception as exc:   # noqa: BLE001 - stays 'launching' in the DB for reconcile
                log.error("could not release %s in %s: %s; reconcile will", ids, offer.region, exc)
            else:
                for inst in result.launched:
                    self.db.terminated(rows[inst.node], now=self.clock())
        worst = _worst(result.failed.values()) or Failure(FailureKind.UNKNOWN, "provider returned nothing")
        for node, row in rows.items():
            if node not in {i.node for i in result.launched}:
                fail = result.failed.get(node, worst)
                self.db.launch_failed(row, f"{fail.kind.value}: {fail.message}", now=self.clock())
        return worst

    def _release_bootstrapped(self, offer: selector.Offer, rows: dict[str, int], instances: tuple[Instance, ...],
                              unready: dict[str, Failure]) -> Failure:
        """All or nothing after a failed bootstrap: every instance goes, each row says why."""
        ids = [i.instance_id for i in instances]
        for node, fail in unready.items():
            log.error("bootstrap of %s in %s/%s failed: %s", node, offer.provider, offer.region, fail.message)
        try:
            crashpoints.point("launch: before releasing a bootstrap failure")
            self.providers[offer.provider].terminate(offer.region, ids)
        except Exception as exc:   # noqa: BLE001 - stays 'launching' in the DB for reconcile
            log.error("could not release %s in %s: %s; reconcile will", ids, offer.region, exc)
            return _worst(unready.values()) or Failure(FailureKind.UNKNOWN, "bootstrap failed")
        for node, row in rows.items():
            if node in unready:
                fail = unready[node]
                self.db.launch_failed(row, f"bootstrap: {fail.kind.value}: {fail.message}", now=self.clock())
            else:
                self.db.terminated(row, now=self.clock())   # came up, but its group did not: released
        return _worst(unready.values()) or Failure(FailureKind.UNKNOWN, "bootstrap failed")

    def _sweep(self, offer: selector.Offer, rows: dict[str, int], error: str) -> None:
        """After a provider crash, find by tag anything it may have started for these nodes."""
        provider = self.providers[offer.provider]
        try:
            found = [i for i in provider.list_instances(self.cfg.cluster.name)
                     if i.node in rows and i.region == offer.region and i.state != "terminated"]
            if found:
                provider.terminate(offer.region, [i.instance_id for i in found])
        except Exception as exc:   # noqa: BLE001
            log.error("cannot sweep %s after a provider error (%s); rows stay for reconcile", offer.region, exc)
            return
        for row in rows.values():
            self.db.launch_failed(row, error, now=self.clock())

    def _block(self, offer: selector.Offer, failure: Failure) -> None:
        scope = failure.effective_scope
        if scope is Scope.NONE:
            return
        level = logging.ERROR if not failure.temporary else logging.WARNING
        log.log(level, "%s/%s: %s (%s); blocking the %s for %d s", offer.provider, offer.region,
                failure.kind.value, failure.message, scope.value, self.cfg.policy.block_seconds)
        self.db.block(provider=offer.provider, scope=scope.value, kind=failure.kind.value,
                      reason=failure.message[:200], region=None if scope is Scope.PROVIDER else offer.region,
                      zone=failure.zone if scope is Scope.ZONE else None,
                      seconds=self.cfg.policy.block_seconds, now=self.clock())

    def wait_registered(self, nodes: list[str], timeout: float, poll: float = 1.0) -> list[str]:
        """Mark each node running once its slurmd has registered; returns the nodes that never did.

        A slurmctld restarted between our update and its next state save comes back without the
        node's address, comment and zone features, and a job's steps then cannot reach the node:
        while waiting, a node whose address is not its instance's is told again."""
        waiting = set(nodes)
        deadline = self.clock() + timeout
        while waiting and self.clock() < deadline:
            rows = {r.node: r for r in self.db.active_instances() if r.node in waiting and r.address}
            try:
                seen = self.slurm.node_details(sorted(waiting))
            except BridgeError as exc:     # slurmctld restarting: it comes back, and so do we
                log.warning("cannot read nodes %s from Slurm (%s); retrying", ",".join(sorted(waiting)), exc)
                seen = []
            for node in seen:
                row = rows.get(node.name)
                if row is not None and node.address != row.address and not node.powered_down:
                    self._reannounce(row, node.address)
                    continue
                if not node.powering_up and node.state not in ("DOWN", "UNKNOWN") and "NOT_RESPONDING" not in node.flags:
                    self.db.mark_running(node.name, node.address or None, now=self.clock())
                    self.db.event("running", node=node.name, now=self.clock())
                    waiting.discard(node.name)
            if waiting:
                self.sleep(poll)
        return sorted(waiting)

    def _reannounce(self, row, slurm_address: str) -> None:
        log.warning("%s: Slurm has address %s, not its instance's %s (slurmctld restarted?): telling it again",
                    row.node, slurm_address, row.address)
        try:
            nodestate.launched(self.slurm, self.cfg, row.node, address=row.address, provider=row.provider,
                               region=row.region, country=selector.country_of(self.cfg, row.provider, row.region) or "",
                               instance_id=row.instance_id)
        except BridgeError as exc:
            log.warning("%s: cannot update it in Slurm yet: %s", row.node, exc)


_SEVERITY = [FailureKind.CREDENTIALS, FailureKind.CONFIG, FailureKind.QUOTA, FailureKind.CAPACITY,
             FailureKind.UNKNOWN, FailureKind.TRANSIENT, FailureKind.THROTTLED]


def _worst(failures) -> Failure | None:
    failures = list(failures)
    if not failures:
        return None
    return min(failures, key=lambda f: _SEVERITY.index(f.kind))
