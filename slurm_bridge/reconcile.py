"""Reconcile: make Slurm, the clouds and the state DB agree again, once per daemon cycle.

Three views are compared: Slurm's pool nodes, every provider's tagged instances and the DB's
active rows. `gather` reads them (I/O), `plan` decides (pure, so every rule can be tested on
made-up views), `apply` acts one action at a time: a failing action is logged and reported, the
rest go on. Nothing here ever launches: reconcile only adopts, records, terminates, closes rows
and hands nodes back to the pool.

A provider whose listing fails is skipped for the whole cycle: an instance missing from a listing
we did not get proves nothing, and "vanished" concluded from it would fail healthy nodes.
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import ClassVar

from . import crashpoints, nodestate, selector
from .config import Config, PoolConfig
from .models import Node
from .prices import PriceBook, book_for
from .providers.base import TOKEN_DIGEST_TAG, TOKEN_TAG, Instance, Provider, token_digest
from .slurm.backend import SlurmBackend
from .state import InstanceRow, StateDB

log = logging.getLogger("slurm_bridge.reconcile")

LIVE = ("pending", "running")
# Slurm's own ResumeTimeout handling (down~, ResumeFailProgram) gets this long to act before we do.
STUCK_MARGIN_S = 120
OUR_REASONS = (nodestate.REASON_PREFIX, "ResumeTimeout reached")
VANISHED_REASON = "instance vanished (spot preemption or deleted)"


# --- actions ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Adopt:
    kind: ClassVar[str] = "adopt"
    node: str
    pool: str
    provider: str
    region: str
    instance_id: str
    instance_type: str
    price_per_hour: float
    price_known: bool
    spot: bool
    address: str | None
    launched_at: float | None


@dataclass(frozen=True)
class Orphan:
    kind: ClassVar[str] = "orphan"
    node: str
    provider: str
    region: str
    instance_id: str
    reason: str
    age_s: float
    row_id: int | None = None
    record: Adopt | None = None   # a rowless instance of a pool node: its interval still goes in the ledger


@dataclass(frozen=True)
class Vanished:
    kind: ClassVar[str] = "vanished"
    node: str
    row_id: int
    provider: str
    region: str
    instance_id: str
    fail_node: bool


@dataclass(frozen=True)
class ReturnToPool:
    kind: ClassVar[str] = "return_to_pool"
    node: str
    reason: str


@dataclass(frozen=True)
class StuckPoweringUp:
    kind: ClassVar[str] = "stuck_powering_up"
    node: str
    since: float
    waited_s: float


@dataclass(frozen=True)
class StuckTerminating:
    kind: ClassVar[str] = "stuck_terminating"
    node: str
    row_id: int
    provider: str
    region: str
    instance_ids: tuple[str, ...]   # what still runs; empty: only the row is left to close
    by_tag: bool


@dataclass(frozen=True)
class FixFeatures:
    kind: ClassVar[str] = "fix_features"
    node: str
    provider: str
    region: str
    country: str | None
    features: tuple[str, ...]
    was: tuple[str, ...]


@dataclass(frozen=True)
class RecordLaunch:
    kind: ClassVar[str] = "record_launch"
    node: str
    row_id: int
    provider: str
    instance_id: str
    address: str | None
    zone: str | None


@dataclass(frozen=True)
class LaunchLost:
    kind: ClassVar[str] = "launch_lost"
    node: str
    row_id: int
    provider: str
    age_s: float


Action = (Adopt | Orphan | Vanished | ReturnToPool | StuckPoweringUp | StuckTerminating | FixFeatures
          | RecordLaunch | LaunchLost)
ACTION_TYPES = (Adopt, Orphan, Vanished, ReturnToPool, StuckPoweringUp, StuckTerminating, FixFeatures,
                RecordLaunch, LaunchLost)
KINDS = tuple(t.kind for t in ACTION_TYPES)


def describe(action: Action) -> dict:
    return {"kind": action.kind, **asdict(action)}


# --- views --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Views:
    nodes: Mapping[str, Node]                        # pool nodes as Slurm lists them
    slurm_error: str | None
    instances: Mapping[str, tuple[Instance, ...]]    # only the providers that answered
    provider_errors: Mapping[str, str]
    rows: tuple[InstanceRow, ...]                    # active DB rows
    closed_ids: frozenset[tuple[str, str]] = frozenset()   # listed live, but the DB says it is gone
    last_resume: Mapping[str, float] = field(default_factory=dict)   # node -> newest resume request
    unfinished: Mapping[int, float] = field(default_factory=dict)    # request id -> received_at
    book: PriceBook | None = None


def gather(cfg: Config, db: StateDB, slurm: SlurmBackend, providers: Mapping[str, Provider],
           now: float) -> Views:
    # Order matters: providers, then the DB, then Slurm. A row is written before its launch, so
    # an instance in the listing always finds its row in a later DB read (never adopted twice).
    instances: dict[str, tuple[Instance, ...]] = {}
    errors: dict[str, str] = {}
    for name, provider in sorted(providers.items()):
        try:
            instances[name] = tuple(provider.list_instances(cfg.cluster.name))
        except Exception as exc:   # noqa: BLE001 - one cloud's outage must not stop the others' repair
            errors[name] = f"{type(exc).__name__}: {exc}"
            log.warning("reconcile: %s did not list its instances (%s); skipped this cycle", name, exc)
    rows = tuple(db.active_instances())
    for row in rows:
        if row.provider not in providers:
            errors.setdefault(row.provider, "provider is not configured: its rows stay unchecked")
    active = {(r.provider, r.instance_id) for r in rows if r.instance_id}
    closed = frozenset(
        (p, i.instance_id) for p, listed in instances.items() for i in listed
        if i.state in LIVE and (p, i.instance_id) not in active
        and db.find_by_instance_id(p, i.instance_id) is not None)
    unfinished = {r.id: r.received_at for r in db.unfinished_requests()}
    book = book_for(cfg.price_overrides, db.prices())
    names = [n for pool in cfg.pools for n in pool.node_names]
    try:
        nodes, slurm_error = {n.name: n for n in slurm.nodes(names)}, None
    except Exception as exc:   # noqa: BLE001 - without Slurm, only the Slurm-free rules run
        nodes, slurm_error = {}, f"{type(exc).__name__}: {exc}"
        log.warning("reconcile: cannot read nodes from Slurm (%s); node repairs wait", exc)
    last = _last_resume(db, sorted(n for n, node in nodes.items() if node.powering_up))
    return Views(nodes, slurm_error, instances, errors, rows, closed, last, unfinished, book)


def _last_resume(db: StateDB, nodes: list[str]) -> dict[str, float]:
    """Newest resume/power_up request naming each node: when it started powering up."""
    return db.last_request_times(nodes, ("resume", "power_up"))


# --- plan (pure) --------------------------------------------------------------------------

def _token_match(provider: str, inst: Instance, token: str) -> bool | None:
    """Whether INST was launched with client TOKEN; None when the instance does not show it."""
    tag = inst.tags.get(TOKEN_TAG)
    if tag:
        return tag == token
    digest = inst.tags.get(TOKEN_DIGEST_TAG)
    if digest:
        return token_digest(token) == digest
    return None


_country = selector.country_of


def _listed_regions(cfg: Config, provider: str) -> set[str] | None:
    """Regions a provider's listing covers (None: all); a row elsewhere cannot be seen to vanish."""
    if provider == "local":
        return {r.name for r in cfg.local_regions}
    settings = {"aws": cfg.aws, "gcp": cfg.gcp}.get(provider)
    return set(settings.regions) if settings is not None else None


def _adoption(cfg: Config, views: Views, provider: str, inst: Instance, pool: PoolConfig) -> Adopt:
    itype = inst.instance_type or pool.instance_types.get(provider, "")
    offer = next((o for o in selector.offers(cfg, pool, views.book)[0]
                  if (o.provider, o.region, o.instance_type) == (provider, inst.region, itype)), None)
    return Adopt(inst.node, pool.name, provider, inst.region, inst.instance_id, itype or "unknown",
                 offer.price_per_hour if offer else 0.0, offer is not None,
                 offer.spot if offer else pool.spot, inst.address or None, inst.launched_at)


def plan(cfg: Config, views: Views, now: float) -> list[Action]:
    rt, grace = cfg.slurm.resume_timeout, cfg.policy.orphan_grace_s
    slurm_ok, answered = views.slurm_error is None, views.instances
    live = {(p, i.instance_id): i for p, listed in answered.items() for i in listed if i.state in LIVE}
    listed = {(p, i.instance_id): i for p, listed in answered.items() for i in listed}
    # A provider that cannot read a machine lists it as "unknown" under the machine's id; an SSH
    # host's launches are "<group>/<host>/<life>", so its unknown entry covers every life on it.
    unread = {(p, i.instance_id + "/") for p, listed in answered.items() for i in listed if i.state == "unknown"}
    nodes = views.nodes

    def off(name: str) -> bool:          # powered down, and no resume racing the view
        n = nodes.get(name)
        return slurm_ok and n is not None and n.powered_down and not n.powering_up

    def unwanted(name: str) -> str | None:
        """Why no instance may be adopted for NAME although it is not powered down, if so."""
        n = nodes.get(name)
        if not slurm_ok or n is None:
            return None
        if "POWERING_DOWN" in n.flags:
            return "node is being powered down"
        # Ours: a launch that failed (or ResumeTimeout); an instance arriving after it is late, and
        # adopting it would bill for a node Slurm will not use until someone resumes it.
        if n.state == "DOWN" and n.reason.startswith(OUR_REASONS):
            return "node is down after a failed launch"
        return None

    def up(name: str) -> bool:
        n = nodes.get(name)
        return n is not None and not n.powered_down and "POWERING_DOWN" not in n.flags

    def age(inst: Instance, row: InstanceRow | None = None) -> float | None:
        start = inst.launched_at if inst.launched_at is not None else (row.created_at if row else None)
        return None if start is None else now - start

    # Which row each listed instance belongs to: by recorded id, or by client token for a launch
    # that never recorded its id. Claimed instances are never adopted or orphaned as rowless.
    claimed: dict[tuple[str, str], InstanceRow] = {}
    for row in views.rows:
        if row.instance_id and (row.provider, row.instance_id) in live:
            claimed[(row.provider, row.instance_id)] = row
        elif not row.instance_id and row.state == "launching":
            for inst in answered.get(row.provider, ()):
                key = (row.provider, inst.instance_id)
                if key in live and inst.node == row.node and _token_match(row.provider, inst, row.client_token):
                    claimed[key] = row

    actions: list[Action] = []
    closing: set[int] = set()           # rows this plan closes
    forced: set[str] = set()            # nodes this plan powers down (Slurm then runs suspend on them)
    located: dict[int, tuple[str, Instance]] = {}   # row id -> its instance, once known
    # Each row's claimed instances, grouped once: per row, a scan of every live instance is
    # quadratic (seconds with thousands of instances). Claims added below are for the row at hand.
    by_row: dict[int, list] = defaultdict(list)
    for k, i in live.items():
        if (owner := claimed.get(k)) is not None:
            by_row[owner.id].append((k, i))
    for row in views.rows:
        if row.provider not in answered:
            continue                    # skipped this cycle: nothing is concluded about its instances
        mine = by_row.get(row.id, [])
        if row.state == "terminating":
            # A suspend may still be at work on a young one; its program has suspend_timeout.
            if now - row.updated_at <= cfg.slurm.suspend_timeout:
                continue
            ids = [k[1] for k, _ in mine]
            if not row.instance_id:     # by tag: unclaimed instances of the node there, unless tokens differ
                for key, inst in sorted(live.items()):
                    if (key[0] == row.provider and key not in claimed and inst.node == row.node
                            and inst.region == row.region
                            and _token_match(row.provider, inst, row.client_token) is not False):
                        claimed[key] = row
                        ids.append(key[1])
            actions.append(StuckTerminating(row.node, row.id, row.provider, row.region, tuple(ids),
                                            not row.instance_id))
            closing.add(row.id)
            continue
        if not row.instance_id:         # launching, and the provider's answer was never recorded
            started = views.unfinished.get(row.request_id) if row.request_id is not None else None
            if started is not None and now - started <= rt + STUCK_MARGIN_S:
                continue                # its worker may still record it
            if mine:
                key, inst = max(mine, key=lambda m: (m[1].launched_at or 0.0, m[0]))
                actions.append(RecordLaunch(row.node, row.id, row.provider, inst.instance_id,
                                            inst.address or None, inst.zone or None))
                located[row.id] = (row.provider, inst)
            elif now - row.created_at > rt:
                actions.append(LaunchLost(row.node, row.id, row.provider, now - row.created_at))
                closing.add(row.id)
            continue
        key = (row.provider, row.instance_id)
        if key in live:
            located[row.id] = (row.provider, live[key])
        elif row.state == "running" or now - row.created_at > rt:
            regions = _listed_regions(cfg, row.provider)
            gone = key not in listed or listed[key].state == "terminated"
            if gone and key not in listed and unread:
                gone = not any(p == row.provider and row.instance_id.startswith(pre) for p, pre in unread)
            if slurm_ok and gone and (regions is None or row.region in regions):
                fail = up(row.node)
                actions.append(Vanished(row.node, row.id, row.provider, row.region, row.instance_id, fail))
                closing.add(row.id)
                if fail:
                    forced.add(row.node)

    # An orphan with a row: its node is powered down (or in no pool) and it is past the grace.
    by_id = {r.id: r for r in views.rows}
    for row_id, (provider, inst) in sorted(located.items()):
        row, a = by_id[row_id], age(inst, by_id[row_id])
        stray = cfg.pool_for_node(row.node) is None
        if (stray or off(row.node)) and a is not None and a > grace:
            why = "node is in no pool" if stray else "node is powered down"
            actions.append(Orphan(row.node, provider, inst.region, inst.instance_id, why, a, row.id))
            closing.add(row.id)

    if slurm_ok:
        for name, n in sorted(nodes.items()):
            since = views.last_resume.get(name)
            if n.powering_up and name not in forced and since is not None and now - since > rt + STUCK_MARGIN_S:
                actions.append(StuckPoweringUp(name, since, now - since))
                forced.add(name)

    # Instances no row accounts for: adopt one per node, orphan the rest once past the grace.
    remaining = [r for r in views.rows if r.id not in closing]
    held = {r.node for r in remaining if r.instance_id or r.id in located}
    pending = {r.node for r in remaining if not r.instance_id and r.id not in located}
    rowless: dict[str, list[tuple[str, Instance]]] = defaultdict(list)
    for key, inst in sorted(live.items()):
        if key not in claimed:
            rowless[inst.node].append((key[0], inst))
    adopted: dict[str, Adopt] = {}
    for node, found in sorted(rowless.items()):
        pool = cfg.pool_for_node(node)
        if pool is not None and node in pending and node not in forced:
            continue                    # a launch that has not recorded its id may own one of these
        keep = None
        if pool is not None and node not in held and node not in forced and not off(node) and not unwanted(node):
            fresh = [f for f in found if (f[0], f[1].instance_id) not in views.closed_ids]
            comment = nodes[node].comment if node in nodes else ""
            # The instance Slurm was told about (comment provider/region/id) wins; else the newest.
            fresh.sort(key=lambda f: (comment == f"{f[0]}/{f[1].region}/{f[1].instance_id}",
                                      f[1].launched_at or 0.0, f[1].instance_id), reverse=True)
            keep = fresh[0] if fresh else None
        for provider, inst in found:
            if keep is not None and inst is keep[1]:
                adopted[node] = _adoption(cfg, views, provider, inst, pool)
                actions.append(adopted[node])
                continue
            a = age(inst)
            if a is None or a <= grace:
                continue                # young (or undated): a resume may be racing our view
            closed = (provider, inst.instance_id) in views.closed_ids
            why = ("node is in no pool" if pool is None else "the DB records it as gone" if closed
                   else "node has another instance" if node in held or keep is not None
                   else "node is being powered down" if node in forced else unwanted(node) or "node is powered down")
            record = _adoption(cfg, views, provider, inst, pool) if pool is not None and not closed else None
            actions.append(Orphan(node, provider, inst.region, inst.instance_id, why, a, None, record))

    if not slurm_ok:
        return actions
    # Residency: a node's features say where it runs; `scontrol reconfigure` resets them.
    where = {r.node: (r.provider, r.region) for r in remaining
             if r.state != "terminating" and (r.instance_id or r.id in located)}
    where.update({n: (a.provider, a.region) for n, a in adopted.items()})
    for name, (provider, region) in sorted(where.items()):
        n = nodes.get(name)
        if n is None or name in forced or not up(name):
            continue
        country = _country(cfg, provider, region)
        want = tuple(nodestate.running_features(cfg, name, country))
        if set(want) != set(n.active_features) or set(want) != set(n.available_features):
            actions.append(FixFeatures(name, provider, region, country, want, n.active_features))

    # down~ nodes go back to the pool once nothing of theirs is left (next cycle after an orphan).
    busy = {r.node for r in views.rows} | {i.node for i in live.values()}
    for name, n in sorted(nodes.items()):
        if n.state != "DOWN" or not n.powered_down or n.powering_up or name in busy or name in forced:
            continue
        if "DRAIN" in n.flags and n.reason and not n.reason.startswith(OUR_REASONS):
            continue                    # drained by an admin: theirs to undo
        actions.append(ReturnToPool(name, n.reason))
    return actions


# --- apply --------------------------------------------------------------------------------

@dataclass
class Report:
    started_at: float
    duration_s: float = 0.0
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))   # actions done
    errors: list[dict] = field(default_factory=list)                                 # actions failed
    provider_errors: dict[str, str] = field(default_factory=dict)
    slurm_error: str | None = None

    @property
    def ok(self) -> bool:
        return not self.errors and not self.provider_errors and self.slurm_error is None

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


# The event each action leaves in the DB; its data is the whole action, so the log can be audited.
EVENTS = {"adopt": "adopted", "orphan": "orphan_terminated", "vanished": "vanished",
          "return_to_pool": "returned_to_pool", "stuck_powering_up": "stuck_powering_up",
          "stuck_terminating": "terminate_retried", "fix_features": "features_repaired",
          "record_launch": "launch_recovered", "launch_lost": "launch_lost"}


def _record(db: StateDB, a: Adopt, now: float) -> int:
    return db.adopt(node=a.node, pool=a.pool, provider=a.provider, region=a.region,
                    instance_id=a.instance_id, instance_type=a.instance_type,
                    price_per_hour=a.price_per_hour, spot=a.spot, address=a.address,
                    launched_at=a.launched_at, now=now)


def _apply_one(cfg: Config, db: StateDB, slurm: SlurmBackend, providers: Mapping[str, Provider],
               a: Action, now: float) -> dict:
    """Do A; returns what the event should say beyond the action itself."""
    if isinstance(a, Adopt):
        row_id = _record(db, a, now)
        if not a.price_known:
            db.event("price_unknown", node=a.node, now=now, row_id=row_id, provider=a.provider,
                     region=a.region, instance_type=a.instance_type, note="adopted at 0.0 USD/h")
        return {"row_id": row_id}
    if isinstance(a, Orphan):
        crashpoints.point("reconcile: before terminating an orphan")
        providers[a.provider].terminate(a.region, [a.instance_id])
        row_id = a.row_id if a.row_id is not None else (_record(db, a.record, now) if a.record else None)
        if row_id is not None:
            db.terminated(row_id, now=now)
        return {"row_id": row_id}
    if isinstance(a, Vanished):
        if a.fail_node:
            # Slurm first: if it fails, the row stays open and the next cycle tries again.
            # DOWN makes Slurm requeue the node's jobs; the power-down returns it to the pool.
            slurm.update_nodes([a.node], state="DOWN", reason=f"{nodestate.REASON_PREFIX} {VANISHED_REASON}")
            slurm.update_nodes([a.node], state="POWER_DOWN_FORCE")
        db.terminated(a.row_id, now=now)
    elif isinstance(a, ReturnToPool):
        slurm.update_nodes([a.node], state="RESUME")
    elif isinstance(a, StuckPoweringUp):
        slurm.update_nodes([a.node], state="POWER_DOWN_FORCE")
    elif isinstance(a, StuckTerminating):
        if a.instance_ids:
            crashpoints.point("reconcile: before terminating")
            providers[a.provider].terminate(a.region, list(a.instance_ids))
        db.terminated(a.row_id, now=now)
    elif isinstance(a, FixFeatures):
        log.warning("%s: features %s do not match its region %s/%s (%s): setting %s", a.node,
                    ",".join(a.was), a.provider, a.region, a.country, ",".join(a.features))
        nodestate.set_zone_features(slurm, cfg, a.node, a.country)
    elif isinstance(a, RecordLaunch):
        db.launched(a.row_id, a.instance_id, a.address, a.zone, now=now)
    elif isinstance(a, LaunchLost):
        db.launch_failed(a.row_id, "launch worker lost: no instance carries its client token", now=now)
    else:   # pragma: no cover - plan only makes the types above
        raise TypeError(f"unknown reconcile action {a!r}")
    return {}


def apply(cfg: Config, db: StateDB, slurm: SlurmBackend, providers: Mapping[str, Provider],
          actions: list[Action], now: float) -> Report:
    report = Report(started_at=now)
    for action in actions:
        try:
            extra = _apply_one(cfg, db, slurm, providers, action, now)
            data = {k: v for k, v in asdict(action).items() if k != "node"}
            db.event(EVENTS[action.kind], node=action.node, now=now, **{**data, **extra})
        except Exception as exc:   # noqa: BLE001 - each action stands alone; the next cycle retries
            log.error("reconcile %s on %s failed: %s", action.kind, action.node, exc)
            report.errors.append({"kind": action.kind, "node": action.node,
                                  "error": f"{type(exc).__name__}: {exc}"})
        else:
            report.counts[action.kind] += 1
            log.info("reconcile: %s", json.dumps(describe(action), sort_keys=True, default=str))
    return report


def reconcile(cfg: Config, db: StateDB, slurm: SlurmBackend, providers: Mapping[str, Provider], *,
              now: float | None = None, observe_nodes: Callable[[list[Node]], None] | None = None) -> Report:
    """One pass. OBSERVE_NODES gets the node states read for it, so the caller need not read them again."""
    clock = time.monotonic()
    now = time.time() if now is None else float(now)
    views = gather(cfg, db, slurm, providers, now)
    if observe_nodes is not None and views.slurm_error is None:
        observe_nodes(list(views.nodes.values()))
    report = apply(cfg, db, slurm, providers, plan(cfg, views, now), now)
    report.provider_errors = dict(views.provider_errors)
    report.slurm_error = views.slurm_error
    report.duration_s = round(time.monotonic() - clock, 3)
    done = {k: n for k, n in report.counts.items() if n}
    if done or not report.ok:
        log.info("reconcile: done %s, %d failed, provider errors %s, slurm error %s",
                 done or "nothing", len(report.errors), report.provider_errors or "none", report.slurm_error)
    return report
