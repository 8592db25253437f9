"""slurmctld restarted in the middle of a burst, on the real lab (issue 9).

slurmctld goes away while the resume worker launches both instances of a 2-node job, and comes back
(`lab up` restarts it from its saved state, as systemd would). The job must still run on those
instances, with no instance launched twice, none left without a row, and no node stuck powering up.

Found by this test: 22.05 starts a job allocated before the restart without its cloud nodes'
addresses, so its `srun` fails ("Can't find an address"). The PrologSlurmctld gate now requeues such
a job once (power.allocated_before_restart), and the daemon's next cycle lifts the requeue delay
(BeginTime, about 2 min) so that, allocated anew, it runs on the same instances before they suspend.
"""

from __future__ import annotations

from conftest import diagnose, finished, job_record, sbatch, wait_until
from conftest import state_db as db
from test_reconcile_lab import cycle

from slurm_bridge.lab import procs
from slurm_bridge.lab.cluster import LabState


def test_slurmctld_restarted_mid_burst_the_job_runs_on_the_instances_already_launched(lab, slurm, cloud,
                                                                                        bridge_config):
    job = sbatch(lab, "-p", "burst-a100-eu", "-N", "2", "--gres=gpu:a100:1", "--wrap", "srun hostname")

    def launched():
        with db(bridge_config) as state:
            rows = [r for r in state.active_instances() if job in r.job_ids and r.instance_id]
        return rows if len(rows) == 2 else None
    before = wait_until("both instances launched", launched, timeout=60, interval=0.1, lab=lab)
    ctld = LabState.load(lab.state_file).procs["slurmctld"]
    procs.stop(ctld)
    assert not procs.alive(ctld)
    lab.up(progress=lambda m: print(f"lab: {m}"))
    def done():
        record = job_record(lab, job)
        if record["JobState"] == "PENDING" and record.get("Reason") == "BeginTime":
            cycle(bridge_config)       # one daemon cycle: watch (which releases the job) and reconcile
        return finished(lab, job)
    try:
        wait_until(f"job {job} done", done, timeout=120, lab=lab)
    except AssertionError:
        print(diagnose(lab))
        raise
    assert sorted((lab.dir / f"slurm-{job}.out").read_text().split()) == sorted(r.node for r in before)
    with db(bridge_config) as state:
        requeues = [e for e in state.events(kind="requeue_after_restart") if e["job_id"] == job]
        released = [e for e in state.events(kind="released_after_restart") if e["job_id"] == job]
    assert len(requeues) <= 1 and len(released) == len(requeues)
    with db(bridge_config) as state:
        rows = [r for r in state.instances() if job in r.job_ids]
        recorded = {r.instance_id for r in state.instances() if r.instance_id}
    assert sorted((r.node, r.instance_id) for r in rows) == sorted((r.node, r.instance_id) for r in before), \
        "an instance launched twice, or a row lost"
    live = [i for i in cloud().list_instances("sbtest") if i.state == "running"]
    assert {i.instance_id for i in live} <= recorded, "an instance without a row"
    assert not [n.name for n in slurm.node_details([r.node for r in before]) if n.powering_up], \
        "a node stuck powering up"
