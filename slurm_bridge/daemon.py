"""`slurm-bridge daemon`: watch pending jobs, burst them by policy, keep Slurm, clouds and DB in agreement.

APScheduler 3.x runs each loop as its own job (coalesced, one instance at a
time): watch every `policy.poll_interval`, reconcile every
`policy.reconcile_interval`. One daemon per state dir (a lock file); SIGTERM
stops it cleanly, SIGHUP reloads the config (a bad new config is refused and
the old one kept). With NOTIFY_SOCKET set it speaks sd_notify. Every decision
is one structured log line on stderr, which journald keeps.
"""

from __future__ import annotations

import fcntl
import gc
import json
import logging
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Mapping

from . import crashpoints, policy, sdnotify
from .config import Config, load_config
from .errors import BridgeError
from .logfmt import kv
from .pool_guard import PoolGuard
from .prices import book_for
from .providers.base import Provider
from .providers.registry import build
from .slurm import SlurmBackend, default_backend
from .state import StateDB
from .state_files import backup_path

log = logging.getLogger("slurm_bridge.daemon")
STATUS_FILE = "daemon-status.json"
GC_FULL_EVERY_S = 3600
BACKUP_INTERVAL_S = 3600     # the state DB is copied beside itself this often (state_files.BACKUP_SUFFIX)


class AlreadyRunning(BridgeError):
    pass


class Daemon:
    def __init__(self, config_path: str | None, *, metrics_addr: str | None = None, metrics_port: int | None = None,
                 slurm: SlurmBackend | None = None, providers: Mapping[str, Provider] | None = None):
        """SLURM and PROVIDERS replace the ones the config names (the benchmark and tests use this);
        they are kept across a reload."""
        self.config_path = config_path
        self.cfg = load_config(config_path)
        self._slurm_override, self._providers_override = slurm, providers
        self.metrics_addr, self.metrics_port = metrics_addr or "127.0.0.1", metrics_port
        self.metrics = None
        self._last_reason: dict[int, str] = {}
        self._guard = PoolGuard()
        self._stop = threading.Event()
        self._lock_fd: int | None = None
        self._status: dict = {"started_at": time.time(), "pid": os.getpid()}
        self._last_watch = time.monotonic()
        self._started = time.time()
        self._gc_full_at = time.monotonic()
        self._spend_closed: tuple[float, float, dict[str, float]] | None = None
        self._open(self.cfg)
        # Counters start at zero with the process, as Prometheus expects: count what comes after now.
        self._event_seen, self._failed_seen = self.db.high_water()

    def _open(self, cfg: Config) -> None:
        # SQLite connections belong to the thread that made them; loops run in scheduler threads.
        self._local = threading.local()
        StateDB.open(cfg.cluster.state_dir).close()   # create and migrate once, here, loudly
        self.slurm = self._slurm_override or default_backend(cfg.slurm.slurm_conf)
        self.providers = dict(self._providers_override) if self._providers_override is not None else build(cfg)
        self.policy = policy.Policy(cfg)
        self._pool_names = {n: p.name for p in cfg.pools for n in p.node_names}

    @property
    def db(self) -> StateDB:
        db = getattr(self._local, "db", None)
        if db is None or db.path.parent != self.cfg.cluster.state_dir:
            db = self._local.db = StateDB.open(self.cfg.cluster.state_dir)
        return db

    # -- one leader per state dir ------------------------------------------------------------

    def lock(self) -> None:
        path = self.cfg.cluster.state_dir / "daemon.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise AlreadyRunning(f"another slurm-bridge daemon (pid {holder}) holds {path}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd
        # The leader reads every page once before it starts: opening a DB checks only its header and
        # schema, and a damaged table would otherwise fail every loop, every cycle, for ever.
        self.db.check()

    # -- loops -----------------------------------------------------------------------------------

    def _expected_starts(self, job_ids) -> dict[int, float]:
        try:
            return self.slurm.expected_starts(job_ids)
        except BridgeError as exc:     # without the estimate, the other rules still decide
            log.warning(kv(event="expected_start_unread", error=str(exc)))
            return {}

    def _sibling_starts(self, job_ids) -> dict[int, tuple[str, float]]:
        try:
            return self.slurm.sibling_starts(job_ids)
        except BridgeError as exc:     # outside a federation, or siblings unread: the other rules decide
            log.warning(kv(event="sibling_start_unread", error=str(exc)))
            return {}

    def _release_requeued(self, jobs, now: float) -> None:
        """A job the prolog gate requeued after a slurmctld restart (power.allocated_before_restart)
        waits out the requeue delay (BeginTime, about 2 min) while its nodes idle: start it now."""
        waiting = {j.job_id for j in jobs if j.reason == "BeginTime"}
        if not waiting:
            return
        recent = {e["job_id"] for e in self.db.events(kind="requeue_after_restart", since=now - 900)}
        for job_id in sorted(waiting & recent):
            try:
                self.slurm.update_job(job_id, start_now=True)
            except BridgeError as exc:
                log.warning(kv(event="release_failed", job=job_id, error=str(exc)))
                continue
            self.db.event("released_after_restart", job_id=job_id)
            log.info(kv(event="released_after_restart", job=job_id))

    def backup_once(self) -> Path:
        """A consistent copy of the state DB beside it, for when the DB itself breaks (state_files.recovery)."""
        dest = backup_path(self.db.path)
        self.db.backup(dest)
        return dest

    def _cloud_nodes(self) -> tuple[int, tuple[tuple[str, frozenset[str]], ...]]:
        """Cloud nodes Slurm has up, or is about to resume, and (pool, active features) of
        each one that is up, idle and healthy: Slurm gives the next eligible job such a node before it
        resumes another, so the policy counts it as room."""
        try:
            nodes = [n for n in self.slurm.nodes(self._pool_names) if n.name in self._pool_names]
        except BridgeError as exc:     # without them, idle nodes count as busy: fewer bursts, never more
            log.warning(kv(event="nodes_unread", error=str(exc)))
            return 0, ()
        # A powered-down node given a job stays POWERED_DOWN (alloc~) until the power-save thread
        # calls the resume program: only an idle powered-down node is free.
        up = sum(not (n.powered_down and n.state == "IDLE" and not n.powering_up) for n in nodes)
        return up, tuple((self._pool_names[n.name], frozenset(n.active_features)) for n in nodes
                         if n.state == "IDLE" and n.flags <= _UP_IDLE_FLAGS)

    def _blocked(self, provider: str, region: str) -> str | None:
        if provider not in self.providers:
            return f"provider {provider} is not configured"
        row = self.db.is_blocked(provider, region)
        return None if row is None else f"blocked by {row.kind} until {row.until:.0f}"

    def watch_once(self) -> list[policy.Decision]:
        started = time.monotonic()
        cfg, now = self.cfg, time.time()
        burst_parts = {p.partition for p in cfg.pools}
        # Pending jobs only, in the watched and burst partitions: the text squeue filters for us.
        jobs = self.slurm.pending_jobs([*cfg.slurm.watch_partitions, *sorted(burst_parts)])
        book = book_for(cfg.price_overrides, self.db.prices())
        active = self.db.count_active()
        up, idle = self._cloud_nodes()
        # A node Slurm has begun to resume may not have its row yet (the resume program is still on its
        # way): count whichever is larger, or one cycle's burst is promised the same room twice.
        facts = policy.Facts(now=now, active_cloud_nodes=max(sum(active.values()), up),
                             spend_month=self._spend_month(now), blocked=self._blocked, book=book,
                             expected_start=self._expected_starts, idle_cloud_nodes=idle,
                             sibling_start=self._sibling_starts)
        # Jobs pending only in burst partitions come back as not_watched: counted as eligible, not logged.
        self._release_requeued(jobs, now)
        decisions = self.policy.decide(jobs, facts)
        last, seen, metrics = self._last_reason, {}, self.metrics
        for d in decisions:
            if d.code in _QUIET:
                continue
            if d.burst:
                try:
                    crashpoints.point("daemon: before making a job eligible")
                    self.slurm.update_job(d.tasks or d.job_id, partitions=d.partitions)
                except BridgeError as exc:   # it may have started or ended meanwhile
                    log.warning(kv(event="burst_failed", job=d.job_id, error=str(exc)))
                    continue
                self.db.event("burst", job_id=d.job_id, pools=list(d.pools), partitions=list(d.partitions),
                              **({"tasks": d.tasks} if d.tasks else {}))
            # Log each burst, and otherwise when the kind of decision changes, not every cycle
            # ("waited 4s", "waited 6s", ...).
            if d.burst or last.get(d.job_id) != d.code:
                log.info(kv(event="decision", job=d.job_id, burst="yes" if d.burst else "no", reason=d.reason,
                            pools=",".join(d.pools) or "-"))
                if metrics:
                    metrics.count_decision("burst" if d.burst else "stay", d.code)
            seen[d.job_id] = d.code
        self._last_reason = seen
        self._guard_pools(book)
        self._last_watch = time.monotonic()
        codes = Counter(d.code for d in decisions)
        eligible = codes["already_eligible"] + codes["not_watched"]
        decisions = [d for d in decisions if d.code != "not_watched"]
        if metrics:
            self._update_metrics(eligible, facts, active)
        self._settle_gc()
        self._status["watch"] = {"at": now, "pending": len(decisions),
                                 "burst": sum(d.burst for d in decisions), "eligible": eligible,
                                 "reasons": _count_reasons(decisions)}
        self._observe("watch", started)
        self._write_status()
        return decisions

    def _spend_month(self, now: float) -> dict[str, float]:
        """This month's spend by account. Rows closed before the cached cut never change, so they are
        summed once per month; each cycle adds only the rows alive, or closed, after the cut."""
        start = policy.month_start(now)
        if self._spend_closed is None or self._spend_closed[0] != start:
            cut = now - 60.0
            self._spend_closed = (start, cut, self.db.spend_by_account(start, cut, closed_by=cut))
        _, cut, closed = self._spend_closed
        out = dict(closed)
        for account, usd in self.db.spend_by_account(start, now, alive_after=cut).items():
            out[account] = out.get(account, 0.0) + usd
        return out

    def _settle_gc(self) -> None:
        """Keep the cyclic collector off the long-lived queue.

        The pending jobs, their parsed lines and their static checks live for many
        cycles; without this, every full collection walks all 50,000 of them again
        (0.4 s of a cycle in bench/daemon_cycle.py). Frozen objects are still freed
        by reference counting when their job leaves the queue; only garbage in
        reference cycles waits for the full collection done here once an hour.
        """
        now = time.monotonic()
        if now - self._gc_full_at > GC_FULL_EVERY_S:
            gc.unfreeze()
            gc.collect()
            self._gc_full_at = now
        gc.freeze()

    def _update_metrics(self, eligible: int, facts: policy.Facts, active: dict[tuple[str, str], int]) -> None:
        m, cfg = self.metrics, self.cfg
        m.set_instances(active)
        m.set_spend(dict(facts.spend_month))
        m.set_budgets({n: a.budget_usd_month for n, a in cfg.accounts.items() if a.budget_usd_month is not None})
        m.set_blocked([(b.provider, b.region, b.scope, b.kind) for b in self.db.active_blocks()])
        m.set_burst_eligible(eligible)

    def _update_node_metrics(self, nodes) -> None:
        """Node gauges from the node states the reconcile has just read: sinfo is read once per cycle."""
        from .metrics import node_counts

        self.metrics.set_nodes(node_counts(nodes, self._pool_names.get, [p.name for p in self.cfg.pools]))

    def _count_launches(self) -> None:
        """Launches happen in resume workers, not here: count them from the state DB, past a high-water mark."""
        if not self.metrics:
            return
        for e in self.db.events("launched", after_id=self._event_seen):
            d = e["data"]
            self.metrics.count_launch(d.get("provider", "?"), d.get("region", "?"))
            self._event_seen = e["id"]
        for row in self.db.failed_since(self._failed_seen):
            self.metrics.count_launch_failure(row.provider, row.region, (row.error or "unknown").split(":")[0])
            self._failed_seen = row.id

    def _guard_pools(self, book) -> None:
        """A pool with no launchable region takes no jobs (pool_guard.py says why and how)."""
        self._guard.check(self.cfg, self.db, self.slurm, self._blocked, book)

    def reconcile_once(self):
        from .reconcile import reconcile

        started = time.monotonic()
        report = reconcile(self.cfg, self.db, self.slurm, self.providers,
                           observe_nodes=self._update_node_metrics if self.metrics else None)
        data = report.to_dict()
        log.info(kv(event="reconcile", duration_s=round(data.get("duration_s", 0.0), 3),
                    **{k: v for k, v in (data.get("counts") or {}).items() if v}))
        self._status["reconcile"] = {"at": time.time(), **data}
        self._count_launches()
        if self.metrics:
            self.metrics.set_last_reconcile()
        self._observe("reconcile", started)
        self._write_status()
        return report

    def ingest_once(self):
        """Read new job records from sacct into the state DB, for cost reports (slurmdbd down: retried)."""
        from .accounting import ingest

        started = time.monotonic()
        result = ingest(self.db, self.slurm)
        log.log(logging.INFO if result.ok else logging.WARNING,
                kv(event="ingest", read=result.read, changed=result.changed, error=result.error or "-"))
        self._status["ingest"] = {"at": time.time(), "read": result.read, "changed": result.changed,
                                  "error": result.error}
        self._observe("ingest", started)
        return result

    def refresh_prices(self) -> dict[str, int]:
        from .prices import refresh_spot

        started = time.monotonic()
        done = refresh_spot(self.cfg, self.providers, lambda rows, source: self.db.set_prices(rows, source=source))
        log.info(kv(event="prices_refreshed", **{r.replace("-", "_"): n for r, n in done.items()}))
        self._observe("prices", started)
        return done

    def _observe(self, loop: str, started: float) -> None:
        if self.metrics:
            self.metrics.observe_loop(loop, time.monotonic() - started)

    def _write_status(self) -> None:
        path = self.cfg.cluster.state_dir / STATUS_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._status, indent=1, default=str))
        os.replace(tmp, path)

    # -- config reload ------------------------------------------------------------------------

    def reload(self) -> bool:
        try:
            cfg = load_config(self.config_path)
        except BridgeError as exc:
            log.error(kv(event="reload_refused", error=str(exc)))
            return False
        self.cfg = cfg
        self._open(cfg)
        log.info(kv(event="reloaded", config=str(cfg.source)))
        return True

    # -- main loop -------------------------------------------------------------------------------

    def run(self) -> int:
        from apscheduler.schedulers.background import BackgroundScheduler

        self.lock()
        if self.metrics_port is not None:
            from .metrics import Metrics

            self.metrics = Metrics()
            self.metrics.serve(self.metrics_addr, self.metrics_port)
        reload_wanted = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: self._stop.set())
        signal.signal(signal.SIGINT, lambda *_: self._stop.set())
        signal.signal(signal.SIGHUP, lambda *_: reload_wanted.set())
        logging.getLogger("apscheduler").setLevel(logging.WARNING)
        # One worker: the loops take turns, so they never race each other on Slurm or the DB, and a
        # hung loop also holds back the watchdog ping, which is what lets systemd restart us.
        from apscheduler.executors.pool import ThreadPoolExecutor

        sched = BackgroundScheduler(executors={"default": ThreadPoolExecutor(1)},
                                    job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 30})
        guarded = self._guarded
        sched.add_job(guarded("watch", self.watch_once), "interval", seconds=self.cfg.policy.poll_interval,
                      id="watch", next_run_time=_now_dt())
        sched.add_job(guarded("reconcile", self.reconcile_once), "interval",
                      seconds=self.cfg.policy.reconcile_interval, id="reconcile", next_run_time=_now_dt())
        sched.add_job(guarded("ingest", self.ingest_once), "interval", seconds=self.cfg.cost.ingest_interval,
                      id="ingest", next_run_time=_now_dt())
        if self.cfg.aws is not None:
            sched.add_job(guarded("prices", self.refresh_prices), "interval", seconds=3600, id="prices",
                          next_run_time=_now_dt())
        sched.add_job(guarded("backup", self.backup_once), "interval", seconds=BACKUP_INTERVAL_S, id="backup",
                      next_run_time=_now_dt())
        ping = sdnotify.watchdog_interval()
        if ping:
            # Only a daemon whose watch loop still completes is alive: a hung Slurm call stops the pings.
            stale = 3 * self.cfg.policy.poll_interval + 60
            sched.add_job(lambda: (time.monotonic() - self._last_watch < stale) and sdnotify.notify(WATCHDOG=1),
                          "interval", seconds=ping, id="watchdog")
        sched.start()
        sdnotify.notify(READY=1, STATUS="watching " + ",".join(self.cfg.slurm.watch_partitions))
        log.info(kv(event="started", pid=os.getpid(), config=str(self.cfg.source)))
        while not self._stop.is_set():
            if reload_wanted.wait(timeout=0.5):
                reload_wanted.clear()
                sdnotify.reloading()
                self.reload()
                sdnotify.notify(READY=1)
        sdnotify.notify(STOPPING=1)
        sched.shutdown(wait=True)
        log.info(kv(event="stopped"))
        return 0

    def _guarded(self, name: str, fn):
        def run():
            try:
                fn()
            except Exception as exc:   # noqa: BLE001 - one failed cycle must not stop the daemon
                log.exception(kv(event="loop_failed", loop=name, error=str(exc)))
                self._status.setdefault("errors", {})[name] = {"at": time.time(), "error": str(exc)}
        return run


# Reasons that carry a number changing every cycle are counted under one label; decisions the daemon
# does not log (jobs pending only in burst partitions) are not listed at all.
_REASON_LABELS = {"too_early": "waited less than burst_after", "node_limit": "cloud node limit", "burst": "burst"}
_QUIET = frozenset({"not_watched"})
_UP_IDLE_FLAGS = frozenset({"CLOUD"})      # anything more (powering, drain, not responding) is not room


def _count_reasons(decisions) -> dict[str, int]:
    by_reason = Counter(d.reason for d in decisions if d.code not in _REASON_LABELS)
    out: Counter[str] = Counter()
    for d_code, n in Counter(d.code for d in decisions if d.code in _REASON_LABELS).items():
        out[_REASON_LABELS[d_code]] += n
    for reason, n in by_reason.items():
        out[reason.partition(":")[0]] += n
    return dict(out)


def _now_dt():
    from datetime import datetime

    return datetime.now()


def read_status(state_dir: Path) -> dict | None:
    try:
        return json.loads((state_dir / STATUS_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
