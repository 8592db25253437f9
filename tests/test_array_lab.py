"""A job array on the real lab (issue 11): bursts as tasks, within max_cloud_nodes, and costs sum per array.

Both on-prem nodes are held by jobs that use every GPU. A 40-task array of whole-node tasks waits for
room; the real daemon (`slurm-bridge daemon`) runs with max_cloud_nodes = 4, while the lab has six
cloud nodes (a100-de-[0-1], a100-eu-[0-3]), so the limit, not the pool size, is what holds. A sampler
reads sinfo and the local provider's instances twice a second for the whole run.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path

from conftest import CLOUD_NODES, LAB_DIR, bridge_config_text, job_record, sbatch, wait_until
from conftest import state_db as db

BIN = Path(sys.executable).parent
TASKS = 40


def array_states(lab, array: int) -> dict[str, tuple[str, str]]:
    """'7_3' -> (state, nodes) for each task sacct knows."""
    out = subprocess.run(["sacct", "-X", "-P", "-n", "-j", str(array), "-o", "JobID,State,NodeList"],
                         env=lab.env(), capture_output=True, text=True, check=True).stdout
    rows = (line.split("|") for line in out.splitlines() if line)
    return {r[0]: (r[1], r[2]) for r in rows if "[" not in r[0]}


class Sampler(threading.Thread):
    """The most cloud nodes up (not powered down) and instances running seen at once."""

    def __init__(self, slurm, cloud):
        super().__init__(daemon=True)
        self.slurm, self.cloud, self.stop = slurm, cloud, threading.Event()
        self.peak_nodes = self.peak_instances = self.samples = 0

    def run(self):
        provider = self.cloud()
        while not self.stop.is_set():
            up = [n for n in self.slurm.nodes(CLOUD_NODES) if not n.powered_down]
            running = [i for i in provider.list_instances("sbtest") if i.state in ("pending", "running")]
            self.peak_nodes = max(self.peak_nodes, len(up))
            self.peak_instances = max(self.peak_instances, len(running))
            self.samples += 1
            self.stop.wait(0.5)


def test_a_40_task_array_never_has_more_than_four_cloud_nodes_up_and_its_cost_sums_the_tasks(
        lab, slurm, cloud, bridge_config, tmp_path):
    config = tmp_path / "daemon.toml"
    config.write_text(bridge_config_text(LAB_DIR).replace(
        "[policy]\n", "[policy]\nburst_after = 0\npoll_interval = 2\nreconcile_interval = 5\nmax_cloud_nodes = 4\n"))
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() - 5))
    fillers = [sbatch(lab, "-p", "gpu", "-w", node, "--gres=gpu:a100:4", "--wrap", "sleep 600")
               for node in ("gpu-0", "gpu-1")]
    sampler = Sampler(slurm, cloud)
    log = open(tmp_path / "daemon.log", "w")
    daemon = None
    try:
        wait_until("on-prem full", lambda: all(job_record(lab, j)["JobState"] == "RUNNING" for j in fillers),
                   timeout=60, lab=lab)
        array = sbatch(lab, "-p", "gpu", f"--array=0-{TASKS - 1}", "--gres=gpu:a100:4", "-t", "10",
                       "--wrap", "sleep 3; hostname")
        sampler.start()
        started = time.time()
        daemon = subprocess.Popen([str(BIN / "slurm-bridge"), "daemon", "--config", str(config)],
                                  stdout=log, stderr=subprocess.STDOUT)

        def all_done():
            states = array_states(lab, array)
            return len(states) == TASKS and all(s == "COMPLETED" for s, _ in states.values())
        wait_until(f"all {TASKS} tasks of array {array} done", all_done, timeout=600, interval=2, lab=lab)
        took = time.time() - started
    finally:
        sampler.stop.set()
        if daemon is not None and daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=30)
        log.close()
        subprocess.run(["scancel", *map(str, fillers)], env=lab.env(), check=False)
    sampler.join(timeout=10)
    print(f"array of {TASKS}: {took:.0f} s; peak {sampler.peak_nodes} nodes up, "
          f"{sampler.peak_instances} instances, {sampler.samples} samples")
    daemon_log = (tmp_path / "daemon.log").read_text()

    states = array_states(lab, array)
    assert all(nodes.startswith("a100-") for _, nodes in states.values()), states   # every task in the cloud
    assert sampler.samples > 20
    assert sampler.peak_nodes <= 4 and sampler.peak_instances <= 4, (sampler.peak_nodes, sampler.peak_instances)
    assert sampler.peak_nodes >= 2, "tasks ran side by side"
    # Bursts went out as task ranges, never the whole array at once.
    with db(config) as state:
        bursts = [e for e in state.events("burst") if e["job_id"] == array or e["data"].get("tasks", "")
                  .startswith(f"{array}_")]
    refs = [e["data"]["tasks"] for e in bursts if e["data"].get("tasks")]
    assert refs and all(r.startswith(f"{array}_[") for r in refs), bursts
    assert "Traceback" not in daemon_log, daemon_log[-3000:]

    # Cost: every task is a row by job, and the array's row is their sum.
    wait_until("instances terminated", lambda: not [i for i in cloud().list_instances("sbtest")
                                                    if i.state == "running"], timeout=120, interval=1, lab=lab)
    cli = [str(BIN / "slurm-bridge")]
    done = subprocess.run(cli + ["cost", "ingest", "--config", str(config)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr

    def report(by: str) -> dict:
        out = subprocess.run(cli + ["cost", "report", "--since", since, "--by", by, "--format", "json",
                                    "--config", str(config)], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)
    by_job = {r["key"]: r for r in report("job")["rows"]}
    by_array = {r["key"]: r for r in report("array")["rows"]}
    tasks = {k: r for k, r in by_job.items() if k.startswith(f"{array}_")}
    assert len(tasks) == TASKS and all(Decimal(str(r["spend_usd"])) > 0 for r in tasks.values())
    row = by_array[str(array)]
    assert row["jobs"] == TASKS
    assert Decimal(str(row["spend_usd"])) == sum(Decimal(str(r["spend_usd"])) for r in tasks.values())
    # GPU-hours are rounded to 3 places per row: forty rows may each be half a unit off.
    assert abs(row["cloud_gpu_hours"] - sum(r["cloud_gpu_hours"] for r in tasks.values())) <= TASKS * 0.0005 + 1e-9
