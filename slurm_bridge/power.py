"""The work behind the three power-save programs: launch (in a worker), suspend, resume-fail."""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from typing import Callable, Mapping

from . import crashpoints, nodestate, residency
from .errors import BridgeError
from .config import Config
from .launch import Launcher, plan
from .prices import book_for
from .providers.base import Provider
from .resume_file import ResumeFile
from .slurm.backend import SlurmBackend
from .state import InstanceRow, StateDB

log = logging.getLogger("slurm_bridge.power")


def run_resume_request(cfg: Config, db: StateDB, slurm: SlurmBackend, providers: Mapping[str, Provider],
                       request_id: int, resume: ResumeFile, *, clock: Callable[[], float] = time.time,
                       sleep: Callable[[float], None] = time.sleep) -> bool:
    """Launch every node of one resume request; True when all of them came up."""
    req = db.get_request(request_id)
    launcher = Launcher(cfg, db, slurm, providers, clock=clock, sleep=sleep)
    groups, unknown = plan(cfg, list(req.nodes), resume)
    if unknown:
        reason = "not a node of any slurm-bridge pool (check `slurm-bridge conf check`)"
        log.error("%s: %s", ",".join(unknown), reason)
        nodestate.fail(slurm, unknown, reason)
    launched: list[str] = []
    jobs = {}
    if any(g.job_id for g in groups):
        # One squeue for the whole request: it lists every job anyway (DESIGN B).
        try:
            jobs = {j.job_id: j for j in slurm.jobs()}
        except BridgeError as exc:
            log.error("cannot read jobs from Slurm: %s", exc)
    for group in groups:
        zone, account = None, None
        if group.job_id is not None:
            job = jobs.get(group.job_id)
            if job is None:
                # Without the job we cannot know its zone, and a guess could be wider than it.
                reason = f"job {group.job_id} not readable from Slurm: its residency zone is unknown"
                log.error("%s: %s", ",".join(group.nodes), reason)
                db.event("launch_failed", job_id=group.job_id, request_id=request_id, nodes=list(group.nodes),
                         reason=reason, now=clock())
                nodestate.fail(slurm, list(group.nodes), reason)
                continue
            zone = residency.job_zone(cfg, job.account, job.partitions, job.features)
            account = job.account
        outcome = launcher.launch_group(group, request_id, zone, account)
        if outcome.ok:
            launched.extend(group.nodes)
    missing = launcher.wait_registered(launched, timeout=cfg.slurm.resume_timeout) if launched else []
    if missing:
        # Slurm's ResumeTimeout and our resume-fail program take it from here.
        log.warning("%s did not register within %d s", ",".join(missing), cfg.slurm.resume_timeout)
    ok = not unknown and len(launched) == len(req.nodes)
    db.finish_request(request_id, None if ok else "some nodes did not launch", now=clock())
    return ok


def terminate_nodes(cfg: Config, db: StateDB, providers: Mapping[str, Provider], nodes: list[str],
                    *, clock: Callable[[], float] = time.time) -> list[str]:
    """Terminate every instance recorded for NODES; returns the nodes whose instance may still exist."""
    rows: list[InstanceRow] = []
    for node in nodes:
        rows.extend(db.begin_terminate(node, now=clock()))
    # Rows a crashed suspend left 'terminating' are finished here too.
    wanted = set(nodes)
    rows.extend(r for r in db.active_instances() if r.state == "terminating" and r.node in wanted
                and r.id not in {x.id for x in rows})
    by_place: dict[tuple[str, str], list[InstanceRow]] = defaultdict(list)
    for row in rows:
        by_place[(row.provider, row.region)].append(row)
    stuck: list[str] = []
    for (pname, region), group in by_place.items():
        provider = providers.get(pname)
        if provider is None:
            log.error("instances of %s in %s: provider %s is not configured; left for reconcile",
                      ",".join(r.node for r in group), region, pname)
            stuck.extend(r.node for r in group)
            continue
        ids = [r.instance_id for r in group if r.instance_id]
        unknown_id = {r.node for r in group if not r.instance_id}
        try:
            if unknown_id:
                # A launch that crashed before recording its id: find it by its tags, and record it
                # first, so the ledger has the instance it is about to pay for until now.
                rows_of = {r.node: r for r in group if not r.instance_id}
                for inst in provider.list_instances(cfg.cluster.name):
                    row = rows_of.get(inst.node)
                    if row is not None and inst.region == region and inst.state != "terminated":
                        db.launched(row.id, inst.instance_id, inst.address or None, inst.zone or None,
                                    now=inst.launched_at or clock())
                        ids.append(inst.instance_id)
            if ids:
                crashpoints.point("suspend: before provider.terminate")
                provider.terminate(region, ids)
                crashpoints.point("suspend: after provider.terminate")
        except Exception as exc:   # noqa: BLE001 - the rows stay 'terminating' for the next try
            log.error("terminating %s in %s/%s failed: %s", ids, pname, region, exc)
            stuck.extend(r.node for r in group)
            continue
        for row in group:
            db.terminated(row.id, now=clock())
            db.event("terminated", node=row.node, provider=pname, region=region,
                     instance_id=row.instance_id, now=clock())
        log.info("terminated %s in %s/%s", ",".join(r.node for r in group), pname, region)
    return stuck


def suspend(cfg: Config, db: StateDB, slurm: SlurmBackend, providers: Mapping[str, Provider],
            nodes: list[str], *, clock: Callable[[], float] = time.time) -> bool:
    ours = [n for n in nodes if cfg.pool_for_node(n) is not None]
    if len(ours) != len(nodes):
        log.warning("suspend: ignoring nodes of no pool: %s", sorted(set(nodes) - set(ours)))
    stuck = terminate_nodes(cfg, db, providers, ours, clock=clock)
    nodestate.reset(slurm, cfg, ours, book_for(cfg.price_overrides, db.prices()))
    return not stuck


def resume_fail(cfg: Config, db: StateDB, slurm: SlurmBackend, providers: Mapping[str, Provider],
                nodes: list[str], *, clock: Callable[[], float] = time.time) -> bool:
    """After ResumeTimeout: release whatever came up, and give the nodes back to the pool.

    Slurm leaves such nodes `down~` until someone resumes them (DESIGN B).
    """
    ours = [n for n in nodes if cfg.pool_for_node(n) is not None]
    # Where the nodes were meant to come up: a host or region that launched but never produced a
    # registered slurmd is avoided for block_seconds, like any other failure of the place.
    places = {(r.provider, r.region) for r in (db.active_for_node(n) for n in ours) if r is not None}
    stuck = terminate_nodes(cfg, db, providers, ours, clock=clock)
    for provider, region in sorted(places):
        db.block(provider=provider, scope="region", kind="unknown", region=region, seconds=cfg.policy.block_seconds,
                 reason=f"nodes launched there did not register within ResumeTimeout ({cfg.slurm.resume_timeout} s)",
                 now=clock())
        log.warning("%s/%s: nodes did not register within ResumeTimeout; blocked for %d s", provider, region,
                    cfg.policy.block_seconds)
    for node in ours:
        db.event("resume_failed", node=node, now=clock())
    nodestate.reset(slurm, cfg, ours, book_for(cfg.price_overrides, db.prices()))
    # Only nodes still down: one whose slurmd answered at the last moment is already back in service,
    # and Slurm refuses RESUME for it.
    back = [n.name for n in slurm.node_details([n for n in ours if n not in stuck])
            if n.state == "DOWN" or "DOWN" in n.flags]
    if back:
        slurm.update_nodes(back, state="RESUME")
    return not stuck


def gate(cfg: Config, db: StateDB, slurm: SlurmBackend, job_id: int, *, timeout: float,
         nodes: list[str] | None = None, account: str | None = None, partitions: list[str] | None = None,
         features: str | None = None, clock: Callable[[], float] = time.time,
         sleep: Callable[[float], None] = time.sleep) -> str | None:
    """PrologSlurmctld: a last check at job start that every cloud node is where the job may run.

    slurmctld gives the job's nodes, account, partition and constraint in the environment; the
    rest comes from Slurm. Waits (bounded) for the job's cloud nodes to finish powering up: this
    also spares the job Slurm's periodic 30 s pass before a resumed node's first job starts
    (DESIGN B). Returns a breach description, or None when the job may start.
    """
    from .selector import country_of
    from .slurm.hostlists import expand

    if nodes is None or account is None or partitions is None or features is None:
        job = slurm.job(job_id)
        if job is None:
            log.warning("job %d: not found in Slurm; nothing to check", job_id)
            return None
        nodes = expand(job.nodes) if job.nodes else []
        account, partitions, features = job.account, list(job.partitions), job.features
    cloud = [n for n in nodes if cfg.pool_for_node(n) is not None]
    if not cloud:
        return None
    deadline = clock() + timeout
    while clock() < deadline:
        # slurmctld runs this at allocation, often before its power-save thread has even asked for
        # the node: a node still powered down is about to power up, not up.
        # A node set down (its launch failed) will not come up: the job is requeued, stop waiting.
        if not any(n.powering_up or (n.powered_down and n.state != "DOWN") for n in slurm.node_details(cloud)):
            break
        sleep(1.0)
    zone = residency.job_zone(cfg, account, partitions, features)
    for node in cloud:
        row = db.active_for_node(node)
        if row is None:
            continue   # still launching: the launch itself only ever chooses inside the job's zone
        country = country_of(cfg, row.provider, row.region)
        if country is None or not zone.contains(country):
            # Put the truth back on the node so Slurm does not offer it to this job again.
            nodestate.set_zone_features(slurm, cfg, node, country)
            db.event("residency_gate", node=node, job_id=job_id, region=row.region, country=country,
                     now=clock())
            return f"node {node} runs in {row.provider}/{row.region} ({country}), outside job {job_id}'s zone"
    log.info("job %d: %s inside its zone (%s)", job_id, ",".join(cloud),
             "anywhere" if zone.countries is None else ",".join(sorted(zone.countries)))
    stale = allocated_before_restart(db, slurm, job_id, cloud, clock)
    if stale:
        return stale
    comment = trail_comment([r for r in (db.active_for_node(n) for n in cloud) if r is not None])
    if comment:
        try:
            slurm.update_job(job_id, admin_comment=comment)
            log.info("job %d: AdminComment %s", job_id, comment)
        except BridgeError as exc:   # the trail is for people; the job must not wait on it
            log.warning("job %d: could not set AdminComment %s: %s", job_id, comment, exc)
    return None


def allocated_before_restart(db: StateDB, slurm: SlurmBackend, job_id: int, cloud: list[str],
                             clock: Callable[[], float] = time.time) -> str | None:
    """Why the job must be requeued once: slurmctld restarted after the job was allocated the cloud
    nodes launched for it, and 22.05 then starts it without their addresses, so every srun step of
    it fails ("Can't find an address"). Once per job and restart: the requeued job, allocated anew,
    gets them. None when the job may start."""
    rows = [r for r in (db.active_for_node(n) for n in cloud) if r is not None and job_id in r.job_ids and r.request_id]
    if not rows:
        return None      # nodes already up when it was allocated: their addresses were known
    try:
        raw = slurm.show_config().get("BOOT_TIME", "")
        boot = time.mktime(time.strptime(raw, "%Y-%m-%dT%H:%M:%S"))   # slurmctld's local time, as ours
    except (BridgeError, ValueError) as exc:
        log.warning("job %d: cannot read slurmctld's start time (%s); not checking for a restart", job_id, exc)
        return None
    # Slurm allocates first and asks for the resume after: a request older than the restart means
    # an allocation older than it too.
    asked = min(db.get_request(r.request_id).received_at for r in rows if r.request_id is not None)
    if asked >= boot:
        return None
    if any(e["job_id"] == job_id and e["data"].get("boot_time") == boot
           for e in db.events(kind="requeue_after_restart")):
        return None
    db.event("requeue_after_restart", job_id=job_id, boot_time=boot, now=clock())
    return (f"slurmctld restarted ({raw}) after job {job_id} was allocated cloud nodes "
            f"{','.join(r.node for r in rows)}; Slurm 22.05 would start it without their addresses, so it is "
            "requeued once onto the same, running nodes")


def trail_comment(rows) -> str:
    """A short JSON of where a job runs, for `sacct -o JobID,AdminComment`: one object per distinct
    (provider, region, instance type, price), with how many of the job's nodes it has."""
    import json

    seen: dict[tuple, int] = {}
    for r in rows:
        key = (r.provider, r.region, r.instance_type, round(r.price_per_hour, 4), bool(r.spot))
        seen[key] = seen.get(key, 0) + 1
    items = [{"provider": p, "region": g, "type": t, "usd_h": price, **({"spot": True} if spot else {}),
              **({"nodes": n} if len(seen) > 1 or n > 1 else {})}
             for (p, g, t, price, spot), n in seen.items()]
    if not items:
        return ""
    return json.dumps(items[0] if len(items) == 1 else items, separators=(",", ":"))
