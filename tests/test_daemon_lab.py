"""The daemon on the real lab: bursts a job that waited for room, keeps the others home.

The daemon runs as a real process (`slurm-bridge daemon`) with a copy of the session's bridge config
where burst_after = 20 s and the medical account has no budget left; the power-save programs keep
using the session config (same cluster, same state dir).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import LAB_DIR, bridge_config_text, finished, job_record, sbatch, wait_until
from conftest import state_db as db

BIN = Path(sys.executable).parent
METRICS_PORT = 19321


def daemon_config(tmp_path: Path) -> Path:
    text = bridge_config_text(LAB_DIR).replace("[policy]\n", "[policy]\nburst_after = 20\npoll_interval = 2\n"
                                               "reconcile_interval = 5\norphan_grace_s = 5\n")
    text = text.replace('[accounts.medical]\nzone = "de"\n', '[accounts.medical]\nzone = "de"\nbudget_usd_month = 0\n')
    path = tmp_path / "daemon.toml"
    path.write_text(text)
    return path


@pytest.fixture
def daemon(lab, cloud, tmp_path):
    config = daemon_config(tmp_path)
    log = open(tmp_path / "daemon.log", "w")
    proc = subprocess.Popen([str(BIN / "slurm-bridge"), "daemon", "--config", str(config),
                             "--metrics-port", str(METRICS_PORT)], stdout=log, stderr=subprocess.STDOUT)
    proc.config = config
    proc.log_path = tmp_path / "daemon.log"
    yield proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, "the daemon must stop cleanly on SIGTERM"
    log.close()
    print("daemon log:\n" + proc.log_path.read_text()[-5000:])   # shown when a test fails


def fill_onprem(lab) -> list[int]:
    """Both on-prem nodes busy with every GPU, for a while."""
    return [sbatch(lab, "-p", "gpu", "-w", node, "--gres=gpu:a100:4", "--wrap", "sleep 300")
            for node in ("gpu-0", "gpu-1")]


def test_waiting_job_bursts_home_job_stays_over_budget_job_stays(lab, slurm, daemon, bridge_config):
    fillers = fill_onprem(lab)
    wait_until("on-prem full", lambda: all(job_record(lab, j)["JobState"] == "RUNNING" for j in fillers), 60)
    submitted = time.time()
    waiting = sbatch(lab, "-p", "gpu", "--gres=gpu:a100:1", "--wrap", "hostname")
    broke = sbatch(lab, "-A", "medical", "-p", "gpu", "--gres=gpu:a100:1", "--wrap", "hostname")

    wait_until(f"job {waiting} ran in the cloud", lambda: finished(lab, waiting), timeout=120, lab=lab)
    took = time.time() - submitted
    node = (lab.dir / f"slurm-{waiting}.out").read_text().strip()
    assert node.startswith("a100-"), f"job {waiting} ran on {node}"
    assert 20 <= took <= 20 + 60, f"burst_after is 20 s; the job finished after {took:.0f} s"
    with db(bridge_config) as state:
        [burst] = [e for e in state.events("burst") if e["job_id"] == waiting]
        assert burst["ts"] - submitted >= 19     # Slurm keeps submit times in whole seconds
        assert not [e for e in state.events("burst") if e["job_id"] == broke]

    # The over-budget job is still pending on-prem, and status says why.
    assert job_record(lab, broke)["Partition"] == "gpu"
    out = subprocess.run([str(BIN / "slurm-bridge"), "status", "--config", str(daemon.config), "--json"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    status = json.loads(out.stdout)
    reasons = status["daemon"]["watch"]["reasons"]
    assert any(r.startswith("account medical spent 0.00 of 0.00 USD") for r in reasons), reasons
    [medical] = [b for b in status["budgets"] if b["account"] == "medical"]
    assert medical["over"] is True

    # The metrics endpoint answers with the daemon's families.
    text = urllib.request.urlopen(f"http://127.0.0.1:{METRICS_PORT}/metrics", timeout=10).read().decode()
    for family in ("slurm_bridge_nodes", "slurm_bridge_loop_duration_seconds", "slurm_bridge_decisions_total"):
        assert family in text, family

    # A job that fits on-prem runs there and never bursts.
    for j in fillers + [broke]:
        subprocess.run(["scancel", str(j)], env=lab.env(), check=True)
    home = sbatch(lab, "-p", "gpu", "--gres=gpu:a100:1", "--wrap", "hostname")
    wait_until(f"job {home} done", lambda: finished(lab, home), timeout=60, lab=lab)
    assert (lab.dir / f"slurm-{home}.out").read_text().strip() in ("gpu-0", "gpu-1")
    with db(bridge_config) as state:
        assert not [e for e in state.events("burst") if e["job_id"] == home]


def test_second_daemon_refuses_to_start(lab, daemon):
    wait_until("first daemon running", lambda: "event=started" in daemon.log_path.read_text(), timeout=30)
    second = subprocess.run([str(BIN / "slurm-bridge"), "daemon", "--config", str(daemon.config)],
                            capture_output=True, text=True, timeout=30)
    assert second.returncode == 2
    assert f"another slurm-bridge daemon (pid {daemon.pid}) holds" in second.stderr


def test_sighup_with_a_bad_config_keeps_the_old_one(lab, daemon):
    wait_until("daemon running", lambda: "event=started" in daemon.log_path.read_text(), timeout=30)
    good = daemon.config.read_text()
    daemon.config.write_text(good.replace('zone = "de"', 'zone = "dee"', 1))
    os.kill(daemon.pid, signal.SIGHUP)
    wait_until("reload refused", lambda: "event=reload_refused" in daemon.log_path.read_text(), timeout=30)
    assert daemon.poll() is None
    daemon.config.write_text(good)
    os.kill(daemon.pid, signal.SIGHUP)
    wait_until("reloaded", lambda: "event=reloaded" in daemon.log_path.read_text(), timeout=30)


def start_daemon(config: Path, log_path: Path) -> subprocess.Popen:
    with open(log_path, "w") as log:
        return subprocess.Popen([str(BIN / "slurm-bridge"), "daemon", "--config", str(config)],
                                stdout=log, stderr=subprocess.STDOUT)


def test_a_pool_with_no_region_is_closed_and_a_restarted_daemon_opens_it(lab, slurm, cloud, bridge_config,
                                                                         tmp_path):
    """Pool a100-de launches only in lab-de: with lab-de blocked its burst partition goes DOWN, so no
    job is placed on nodes that cannot start. The daemon is killed while it is closed; the one started
    after the block ends must open it (the closure is in the state DB, not in the dead daemon)."""
    config = daemon_config(tmp_path)
    with db(bridge_config) as state:
        state.block(provider="local", scope="region", region="lab-de", kind="capacity",
                    reason="test: lab-de has nothing", seconds=15)
    blocked_until = time.time() + 15
    first = start_daemon(config, tmp_path / "first.log")
    try:
        wait_until("burst-a100-de closed", lambda: slurm.partitions()["burst-a100-de"]["State"] == "DOWN",
                   timeout=30, lab=lab)
        assert slurm.partitions()["burst-a100-eu"]["State"] == "UP", "lab-nl still takes a100-eu"
        assert "event=pool_closed partition=burst-a100-de pool=a100-de" in (tmp_path / "first.log").read_text()
    finally:
        first.kill()
        first.wait(timeout=30)
    time.sleep(max(0.0, blocked_until - time.time()))
    second = start_daemon(config, tmp_path / "second.log")
    try:
        wait_until("burst-a100-de open again", lambda: slurm.partitions()["burst-a100-de"]["State"] == "UP",
                   timeout=30, lab=lab)
        assert "event=pool_opened partition=burst-a100-de" in (tmp_path / "second.log").read_text()
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=30) == 0
        if slurm.partitions()["burst-a100-de"]["State"] != "UP":     # leave the lab as found
            slurm.update_partition("burst-a100-de", state="UP")
