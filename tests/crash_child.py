"""One phase of the bridge's work in a process of its own, for test_crash_points.py to kill.

    python tests/crash_child.py resume|suspend|resume-fail|reconcile|daemon WORKDIR

The config is WORKDIR/bridge.toml (AWS against the test's moto server), the state DB lives in
WORKDIR/state, and Slurm's node table is WORKDIR/slurm.json: a double, saved after every update so
what the killed process told "Slurm" survives it (the crash test needs hundreds of kills; the lab's
slurmctld is exercised by test_reconcile_lab.py and test_restart_lab.py). The daemon phase adds
WORKDIR/queue.json: pending jobs, partition states and sacct records, kept the same way.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fakes_reconcile import NodeSlurm  # noqa: E402

from slurm_bridge import power, reconcile  # noqa: E402
from slurm_bridge.config import load_config  # noqa: E402
from slurm_bridge.daemon import Daemon  # noqa: E402
from slurm_bridge.launch import Group, Launcher  # noqa: E402
from slurm_bridge.models import AccountingRecord, GresRequest, Job, Node  # noqa: E402
from slurm_bridge.providers.registry import build  # noqa: E402
from slurm_bridge.state import StateDB  # noqa: E402

NODES = ["g-0", "g-1"]
LATER = 3600.0     # how far past a crash "Slurm" and reconcile look: every timeout and grace has passed


def node_json(n: Node) -> dict:
    return {"name": n.name, "state": n.state, "flags": sorted(n.flags), "features": list(n.active_features),
            "address": n.address, "comment": n.comment, "reason": n.reason}


class FileSlurm(NodeSlurm):
    def __init__(self, path: Path):
        self.path = path
        rows = json.loads(path.read_text())
        super().__init__([Node(r["name"], r["state"], frozenset(r["flags"]), tuple(r["features"]),
                               tuple(r["features"]), r["address"], r["name"], ("burst",), r["comment"], r["reason"])
                          for r in rows])

    def update_nodes(self, names, **changes) -> None:
        try:
            super().update_nodes(names, **changes)
        finally:
            for name in names:
                n = self.table[name]
                if "address" in changes or "comment" in changes:
                    self.table[name] = replace(n, address=changes.get("address", n.address),
                                               comment=changes.get("comment", n.comment))
            self.save()

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps([node_json(n) for n in self.table.values()]))
        tmp.replace(self.path)

    def set_flags(self, names, add=(), remove=(), state=None) -> None:
        for name in names:
            n = self.table[name]
            self.table[name] = replace(n, flags=frozenset((set(n.flags) - set(remove)) | set(add)),
                                       state=state or n.state)
        self.save()


def utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=timezone.utc)


class QueueSlurm(FileSlurm):
    """FileSlurm plus what the daemon's watch and ingest read and change: pending jobs (their
    partition lists), partition states and sacct records, in WORKDIR/queue.json."""

    def __init__(self, path: Path, queue: Path):
        super().__init__(path)
        self.queue_path = queue
        self.queue = json.loads(queue.read_text())

    def _save_queue(self) -> None:
        tmp = self.queue_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.queue))
        tmp.replace(self.queue_path)

    def pending_jobs(self, partitions=None) -> list[Job]:
        wanted = set(partitions or ())
        return [Job(job_id=j["id"], name="crash", user="u", account="lab", partitions=tuple(j["partitions"]),
                    state="PENDING", reason="Resources", submit_time=utc(j["submit"]), start_time=None,
                    time_limit_min=60, node_count=1, cpus=1, memory_per_cpu_mb=1000, memory_per_node_mb=None,
                    gres=GresRequest(1, 1, "a10g"), features="", requeue=True, batch=True)
                for j in self.queue["jobs"] if not wanted or wanted & set(j["partitions"])]

    def expected_starts(self, job_ids) -> dict[int, float]:
        return {}

    def sibling_starts(self, job_ids) -> dict[int, tuple[str, float]]:
        return {}

    def update_job(self, job_id, *, partitions=None, **_) -> None:
        for j in self.queue["jobs"]:
            if j["id"] == job_id and partitions is not None:
                j["partitions"] = list(partitions)
                j["updates"] = j.get("updates", 0) + 1
        self._save_queue()

    def update_partition(self, name: str, *, state: str) -> None:
        self.queue["partitions"][name] = state
        self._save_queue()

    def accounting(self, *, since, until=None, job_ids=None, runs=False) -> list[AccountingRecord]:
        return [AccountingRecord(job_id=r["id"], job_id_str=str(r["id"]), array_job_id=None, array_task_id=None,
                                 name="crash", user="u", account="lab", partition="burst-g", cluster="crash",
                                 state="COMPLETED", nodes=r["node"], alloc_tres={"cpu": 1, "gres/gpu": 1},
                                 submit=utc(r["start"] - 60), start=utc(r["start"]), end=utc(r["start"] + 600),
                                 elapsed_s=600) for r in self.queue["sacct"]]


def run(phase: str, work: Path) -> None:
    if phase == "daemon":
        # One watch cycle and one sacct ingest of a daemon that was (re)started on this state dir.
        daemon = Daemon(str(work / "bridge.toml"), slurm=QueueSlurm(work / "slurm.json", work / "queue.json"))
        daemon.watch_once()
        daemon.ingest_once()
        return
    cfg = load_config(work / "bridge.toml")
    slurm = FileSlurm(work / "slurm.json")
    providers = build(cfg)
    with StateDB.open(cfg.cluster.state_dir) as db:
        if phase == "resume":
            request = db.add_request("resume", "g-[0-1]", NODES, None)
            launcher = Launcher(cfg, db, slurm, providers, sleep=lambda s: None)
            outcome = launcher.launch_group(Group(cfg.pool("g"), tuple(NODES), 7), request)
            db.finish_request(request, None if outcome.ok else outcome.reason)
        elif phase == "suspend":
            power.suspend(cfg, db, slurm, providers, NODES)
        elif phase == "resume-fail":
            power.resume_fail(cfg, db, slurm, providers, NODES)
        elif phase == "reconcile":
            reconcile.reconcile(cfg, db, slurm, providers, now=time.time() + LATER)
        else:
            raise SystemExit(f"unknown phase {phase}")


if __name__ == "__main__":
    run(sys.argv[1], Path(sys.argv[2]))
