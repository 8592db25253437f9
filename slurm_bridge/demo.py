"""`slurm-bridge demo`: the lab, GPU jobs bursting into the cheapest allowed region, and back.

Uses slurm_bridge/lab/lab-bridge.toml (or --config): two local regions, lab-de and
the cheaper lab-nl, and two pools, zone `de` and zone `eu`.
"""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from . import costreport, tables
from .accounting import ingest
from .config import load_config
from .lab.cluster import Lab, LabOptions
from .providers.local import LocalProvider
from .slurm import CliSlurm
from .state import StateDB

DEFAULT_CONFIG = Path(__file__).resolve().parent / "lab" / "lab-bridge.toml"   # package data


def say(msg: str) -> None:
    print(f"demo: {msg}", flush=True)


def submit(lab: Lab, *args: str) -> int:
    done = subprocess.run(["sbatch", "--parsable", *args], capture_output=True, text=True,
                          env=lab.env(), cwd=lab.dir, check=True)
    return int(done.stdout.strip().split(";")[0])


def wait(what: str, predicate, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(1)
    raise TimeoutError(f"{what}: not within {timeout:.0f} s")


def run(opts: LabOptions, config: Path | None = None) -> int:
    config = (config or opts.bridge_config or DEFAULT_CONFIG).resolve()
    cfg = load_config(config)
    opts.bridge_config = config
    lab = Lab(opts)
    lab.up(progress=lambda m: say(f"lab: {m}"))
    slurm = CliSlurm(lab.layout.slurm_conf)
    since = datetime.now(timezone.utc) - timedelta(minutes=1)
    t0 = time.time()

    say("on-prem job: sbatch -p gpu --gres=gpu:a100:1")
    jobs = {"on-prem": submit(lab, "-p", "gpu", "--gres=gpu:a100:1", "--wrap", "hostname")}
    say("medical job (zone de): sbatch -A medical -p burst-a100-de --gres=gpu:a100:2")
    jobs["medical, zone de"] = submit(lab, "-A", "medical", "-p", "burst-a100-de", "--gres=gpu:a100:2",
                                      "--wrap", "hostname; sleep 3")
    say("EU job: sbatch -p burst-a100-eu --gres=gpu:a100:1")
    jobs["default, zone eu"] = submit(lab, "-p", "burst-a100-eu", "--gres=gpu:a100:1", "--wrap", "hostname; sleep 3")
    say("2-node EU job: sbatch -N 2 -p burst-a100-eu --gres=gpu:a100:8")
    jobs["2 nodes, zone eu"] = submit(lab, "-N", "2", "-p", "burst-a100-eu", "--gres=gpu:a100:8",
                                      "--wrap", "srun hostname; sleep 3")

    def all_done() -> bool:
        recs = {r.job_id: r for r in slurm.accounting(since=since, job_ids=list(jobs.values()))}
        return all(j in recs and recs[j].end and recs[j].partition for j in jobs.values())

    say("waiting for slurmctld to resume cloud nodes and for the jobs to run ...")
    wait("jobs finished", all_done, 180)
    recs = {r.job_id: r for r in slurm.accounting(since=since, job_ids=list(jobs.values()))}
    db = StateDB.open(cfg.cluster.state_dir)
    where = {}
    for row in db.instances(since=t0):
        for j in row.job_ids:
            where.setdefault(j, set()).add(f"{row.provider}/{row.region}")
    print()
    print(tables.render(["job", "what", "partition", "nodes", "ran in", "state"],
                        [[j, label, recs[j].partition, recs[j].nodes, ",".join(sorted(where.get(j, {"on-prem"}))),
                          recs[j].state] for label, j in jobs.items()], right=(0,)))
    print()
    say(f"jobs done; cloud nodes suspend after SuspendTime={cfg.slurm.suspend_time}s idle ...")
    provider = LocalProvider(cfg.local_regions, cfg.local_lab_dir)

    def all_gone() -> bool:
        live = [i for i in provider.list_instances(cfg.cluster.name) if i.state == "running"]
        return not live and not db.active_instances()

    wait("instances terminated", all_gone, 180)
    rows = [r for r in db.instances(since=t0) if r.launched_at]
    print(tables.render(["#", "node", "region", "instance", "jobs", "lifetime", "USD/h", "USD", "state"],
                        [[r.id, r.node, f"{r.provider}/{r.region}", r.instance_id or "", ",".join(map(str, r.job_ids)),
                          f"{(r.terminated_at or time.time()) - r.launched_at:.0f}s", f"{r.price_per_hour:.2f}",
                          f"{r.price_per_hour * ((r.terminated_at or time.time()) - r.launched_at) / 3600:.4f}",
                          r.state] for r in rows], right=(0, 5, 6, 7)))
    print()
    nodes = slurm.node_details([n for p in cfg.pools for n in p.node_names])
    states = sorted({f"{'idle~' if n.powered_down else n.state.lower()}" for n in nodes})
    say(f"every cloud node is back in its pool ({', '.join(states)}); no instance is left running")
    say("the medical job stayed in lab-de (zone de) though lab-nl is cheaper; EU jobs went to lab-nl")
    say(f"what each job cost, from sacct and the ledger: slurm-bridge cost report --config {config} --ingest --by job")
    ingest(db, slurm)
    now = time.time()
    print()
    print(costreport.render_table(costreport.report(cfg, db, since.timestamp(), now, "job", now)))
    print()
    say("finance reads the same with --by account|user|partition|pool|region|array, "
        "--format csv|json|html, and `slurm-bridge cost breakeven`")
    say(f"the lab stays up: SLURM_CONF={lab.layout.slurm_conf}; stop it with `slurm-bridge lab down`")
    return 0


if __name__ == "__main__":
    sys.exit(run(LabOptions()))
