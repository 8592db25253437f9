"""From sacct and the state DB to money: the ingest, the ledger, and the attribution of a period.

- `ingest` reads sacct from a little before its last successful read up to now and stores every
  job run. It is incremental and idempotent (an upsert keyed by job and start), and it moves its
  mark only after a read succeeded: with slurmdbd down, the next call covers the gap.
- `ledger` turns the state DB's instance rows into intervals. Every instance row is one interval
  from launch to termination at the price in force at launch, so every second an instance
  existed is in exactly one interval (a row is opened before its launch and closed once).
- `attribution` shares a period's ledger among the stored job runs (costs.attribute).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Mapping
from datetime import datetime, timezone

from . import costs, job_runs
from .config import Config
from .errors import BridgeError
from .slurm.backend import SlurmBackend
from .slurm.hostlists import HostlistError, expand
from .state import StateDB

log = logging.getLogger(__name__)

# sacct may store a record a little after the job ends (and a short job's end before its start):
# each read goes back this far before the last mark, and the upsert makes the overlap harmless.
OVERLAP_S = 900
FIRST_READ_DAYS = 62          # a first read covers this month and the last, for budgets and reports


@dataclass(frozen=True)
class IngestResult:
    since: float
    until: float
    read: int = 0             # allocations sacct returned
    changed: int = 0          # runs new or changed in the DB
    unchanged: int = 0
    error: str | None = None  # sacct failed: nothing was stored and the mark did not move

    @property
    def ok(self) -> bool:
        return self.error is None


def ingest(db: StateDB, slurm: SlurmBackend, *, now: float | None = None, since: float | None = None) -> IngestResult:
    now = time.time() if now is None else now
    mark = job_runs.get_mark(db)
    start = since if since is not None else (mark - OVERLAP_S if mark is not None else now - FIRST_READ_DAYS * 86400)
    try:
        records = slurm.accounting(since=datetime.fromtimestamp(start, tz=timezone.utc),
                                   until=datetime.fromtimestamp(now, tz=timezone.utc), runs=True)
    except BridgeError as exc:
        log.warning("sacct ingest from %s failed, will retry from the same point: %s", _iso(start), exc)
        return IngestResult(start, now, error=str(exc))
    changed, same = job_runs.upsert(db, records, now=now)
    if since is None:
        job_runs.set_mark(db, now)
    log.info("sacct ingest %s..%s: %d allocations, %d runs new or changed", _iso(start), _iso(now),
             len(records), changed)
    return IngestResult(start, now, len(records), changed, same)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def ledger(db: StateDB, since: float, until: float) -> list[costs.Interval]:
    """Every instance interval that overlaps [since, until)."""
    rows = [r for r in db.instances(since=since, until=until) if r.launched_at is not None or r.state == "failed"]
    names = job_runs.id_strings(db, [r.job_ids[0] for r in rows if r.job_ids])
    out = []
    for r in rows:
        start = r.launched_at if r.launched_at is not None else (r.terminated_at or r.created_at)
        end = r.terminated_at
        if end is not None and end < start:
            end = start
        first_job = r.job_ids[0] if r.job_ids else None
        out.append(costs.Interval(
            key=str(r.id), node=r.node, pool=r.pool, provider=r.provider, region=r.region,
            instance_type=r.instance_type, spot=r.spot, usd_per_hour=r.price_per_hour, start=start, end=end,
            started_by_job=None if first_job is None else names.get(first_job, str(first_job)),
            failed=r.state == "failed"))
    return out


def runs(db: StateDB, since: float, until: float) -> tuple[list[costs.JobRun], list[str]]:
    """Stored job runs overlapping [since, until), and the problems met (a node list that cannot be read)."""
    out, problems = [], []
    for r in job_runs.between(db, since, until):
        try:
            nodes = tuple(expand(r.nodes))
        except HostlistError as exc:
            problems.append(f"job {r.job_id_str}: node list {r.nodes!r}: {exc}")
            continue
        out.append(costs.JobRun(job_id=r.job_id_str, user=r.user, account=r.account, partition=r.partition,
                                nodes=nodes, tres=r.tres, start=r.start, end=r.end))
    return out, problems


def attribution(cfg: Config, db: StateDB, since: float, until: float) -> tuple[costs.Attribution, list[str]]:
    intervals = ledger(db, since, until)
    job_list, problems = runs(db, since, until)
    onprem = cfg.cost.onprem.usd_per_gpu_hour if cfg.cost.onprem else None
    cloud_nodes = {n for p in cfg.pools for n in p.node_names} | {iv.node for iv in intervals}
    result = costs.attribute(intervals, job_list, since, until, cfg.cost.weight,
                             onprem_usd_per_gpu_hour=onprem, cloud_nodes=cloud_nodes)
    return result, problems


def budgets(cfg: Config, db: StateDB, now: float) -> list[dict]:
    """Each account with a budget: this month's spend (the ledger, as the daemon's policy reads it)."""
    from .policy import month_start   # the same month the policy uses

    return budget_rows(cfg, db.spend_by_account(month_start(now), now))


def budget_rows(cfg: Config, spent: Mapping[str, float], *, unbudgeted: bool = False) -> list[dict]:
    """One row per account against its budget, as the policy applies it: an account not in the config
    has `[accounts.default]`'s budget to itself (`from_default`), so it gets its own row once it spends.
    While none has, `default` stands for them. UNBUDGETED adds accounts with spend but no budget."""
    names = sorted((set(cfg.accounts) - {"default"}) | {n for n in spent if n})
    rows = []
    for name in names:
        budget, usd = cfg.account(name).budget_usd_month, spent.get(name, 0.0)
        if budget is None and not (unbudgeted and usd):
            continue
        rows.append(_budget_row(name, budget, usd, name not in cfg.accounts))
    default = cfg.accounts.get("default")
    if default is not None and default.budget_usd_month is not None and not any(r["from_default"] for r in rows):
        rows.append(_budget_row("default", default.budget_usd_month, spent.get("default", 0.0), True))
    return rows


def _budget_row(name: str, budget: float | None, usd: float, from_default: bool) -> dict:
    return {"account": name, "budget_usd_month": budget, "spent_usd": round(usd, 2),
            "left_usd": None if budget is None else round(budget - usd, 2),
            "over": budget is not None and usd >= budget, "from_default": from_default}
