"""The simulator replays what researchers submit (issue 11): array tasks and multi-node jobs from a
`sacct -P` export, under the node limit, and Slurm's expected start keeps a job home when on-prem
is about to free up. The rules are the daemon's own (`policy.Policy`)."""

from __future__ import annotations

from pathlib import Path

from slurm_bridge import simulate, traces
from test_simulate_engine import SMALL, config, job, starts

HEADER = "JobID|JobIDRaw|User|Account|Partition|State|Submit|Start|End|ElapsedRaw|NNodes|AllocTRES|TimelimitRaw|NodeList"


def row(job_id: str, raw: int, submit: str, start: str, end: str, elapsed: int, nodes: int, gpus: int,
        limit_min: int) -> str:
    tres = f"billing={gpus},cpu={8 * nodes},gres/gpu={gpus},mem=64000M,node={nodes}"
    return (f"{job_id}|{raw}|ann|lab|gpu|COMPLETED|{submit}|{start}|{end}|{elapsed}|{nodes}|{tres}|"
            f"{limit_min}|gpu-[0-{nodes - 1}]")


def sacct_export(path: Path) -> Path:
    """A 12-task sweep (one whole 8-GPU node each, 20 min) and a 2-node, 16-GPU job, as sacct -a -X -P
    prints them: array tasks are records of their own, 7_0 ... 7_11."""
    lines = [HEADER]
    for task in range(12):
        lines.append(row(f"7_{task}", 7 + task, "2026-11-02T09:00:00", "2026-11-02T09:00:05",
                         "2026-11-02T09:20:05", 1200, 1, 8, 30))
    lines.append(row("40", 40, "2026-11-02T09:00:30", "2026-11-02T09:01:00", "2026-11-02T09:31:00", 1800, 2, 16, 60))
    path.write_text("\n".join(lines) + "\n")
    return path


def peak_nodes(result: simulate.SimResult) -> int:
    events = sorted([(iv.start, 1) for iv in result.ledger if not iv.failed] +
                    [(iv.end, -1) for iv in result.ledger if not iv.failed])
    live = peak = 0
    for _, step in events:
        live += step
        peak = max(peak, live)
    return peak


def test_an_array_and_a_two_node_job_from_sacct_replay_as_tasks_under_the_node_limit(tmp_path):
    trace = traces.read_trace(sacct_export(tmp_path / "sacct.txt"), "sacct")
    assert [j.job_id for j in trace.jobs][:3] == ["7_0", "7_1", "7_2"] and len(trace.jobs) == 13
    pair = trace.jobs[-1]
    assert (pair.job_id, pair.nodes, pair.gpus_per_node) == ("40", 2, 8)
    cfg = config(SMALL.replace("poll_interval = 60\n", "poll_interval = 60\nmax_cloud_nodes = 3\n"))
    r = simulate.run(trace.jobs, cfg, "policy", onprem_gpus=8)
    assert r.finished == r.jobs == 13 and r.residency_violations == 0
    assert r.cloud_jobs > r.jobs_per_region["onprem"]     # on-prem runs one task at a time: most go out
    assert peak_nodes(r) <= 3                 # the sweep never takes more than the limit at once
    # The 2-node job ran on two cloud nodes that came up together, in one region.
    [run] = [x for x in r.runs if x.job_id == "13"]
    assert len(run.nodes) == 2
    lives = [iv for iv in r.ledger if iv.node in run.nodes and iv.start <= run.start < iv.end]
    assert len(lives) == 2 and len({iv.region for iv in lives}) == 1
    # A larger limit lets more tasks out at once, and the sweep finishes sooner.
    wide = simulate.run(trace.jobs, config(SMALL), "policy", onprem_gpus=8)
    assert peak_nodes(wide) > 3
    assert max(x.end for x in wide.runs) < max(x.end for x in r.runs)


def test_a_job_that_on_prem_frees_up_for_within_the_boot_time_stays_home():
    # j1 holds the on-prem node; its time limit (650 s) says it ends by 650. j2 has waited 600 s at the
    # watch at 600: Slurm would start it in 50 s. With a 60 s boot it stays home and starts at 645, when
    # j1 really ends; with a 10 s boot the cloud is sooner and it bursts.
    trace = [job("j1", 0, 8, 645, limit=650), job("j2", 0, 8, 100)]
    home = simulate.run(trace, config(), "policy", onprem_gpus=8)
    assert starts(home) == {"1": 0, "2": 645} and home.cloud_jobs == 0
    quick = simulate.run(trace, config(SMALL.replace("boot_seconds = 60", "boot_seconds = 10")), "policy",
                         onprem_gpus=8)
    assert quick.cloud_jobs == 1 and starts(quick)["2"] == 610
