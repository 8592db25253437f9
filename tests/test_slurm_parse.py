"""Parsing Slurm's output, on output captured from the real lab (22.05.8, see fixtures/README)."""

from __future__ import annotations

import json

import pytest

from conftest import FIXTURES
from slurm_bridge.errors import SlurmError
from slurm_bridge.slurm import parse
from slurm_bridge.slurm.hostlists import HostlistError, compress, expand

V2205 = FIXTURES / "slurm-22.05.8"


def load(name):
    return json.loads((V2205 / name).read_text())


def test_squeue_jobs_states_reasons_and_gpus():
    jobs = {j.job_id: j for j in parse.jobs_from_squeue(load("squeue.json"))}
    assert jobs[4].state == "PENDING" and jobs[4].reason == "Resources"
    assert jobs[4].gres.gpus_per_node == 4 and jobs[4].gres.gpu_type == "a100"
    assert jobs[4].time_limit_min == 10
    assert jobs[5].reason == "JobHeldUser"
    assert jobs[6].reason == "Dependency" and jobs[6].features == "onprem"
    assert jobs[6].gres.gpu_type is None and jobs[6].gres.gpus_per_node == 2
    assert jobs[2].state == "RUNNING" and jobs[2].nodes == "gpu-0"
    assert jobs[1].time_limit_min is None          # UNLIMITED
    assert jobs[4].submit_time.year == 2026


def test_squeue_array_meta_record_and_gpus_per_node():
    arr = {j.job_id: j for j in parse.jobs_from_squeue(load("squeue.json"))}[7]
    assert arr.array_job_id == 7 and arr.array_task == "0-3"
    assert arr.node_count == 2
    assert arr.gres.gpus_per_node == 1 and arr.gres.gpus_total == 2


def test_sinfo_and_scontrol_agree_on_nodes():
    from_json = {n.name: n for n in parse.nodes_from_sinfo(load("sinfo.json"))}
    from_text = {n.name: n for n in parse.nodes_from_scontrol((V2205 / "scontrol_show_node.txt").read_text())}
    assert set(from_json) == set(from_text) == {"gpu-0", "gpu-1"}
    for name in from_json:
        a, b = from_json[name], from_text[name]
        assert (a.state, a.flags, a.address, a.gres, a.cpus, a.active_features) == \
               (b.state, b.flags, b.address, b.gres, b.cpus, b.active_features)
    assert from_json["gpu-1"].address == "10.199.0.11"
    assert from_json["gpu-0"].state == "MIXED"


def test_sacct_allocated_tres_and_times():
    [rec] = parse.accounting_from_sacct(load("sacct_job1.json"))
    assert rec.job_id == 1 and rec.job_id_str == "1"
    assert rec.alloc_tres == {"cpu": 1, "mem": 1000, "node": 1, "billing": 1, "gres/gpu": 1}
    assert rec.state == "COMPLETED" and rec.account == "lab" and rec.nodes == "gpu-0"
    assert rec.end >= rec.start


def test_scontrol_cloud_node_flags_joined_with_plus():
    line = ("NodeName=a100-de-0 CoresPerSocket=1 CPUAlloc=0 AvailableFeatures=cloud,res_de "
            "ActiveFeatures=cloud,res_de Gres=gpu:a100:8 NodeAddr=a100-de-0 NodeHostName=a100-de-0 "
            "RealMemory=1000 State=IDLE+CLOUD+POWERED_DOWN Partitions=burst-a100-de "
            "Comment=local/lab-de/i-1 Reason=(null) BootTime=None OS=Linux 6.1 #1 SMP")
    [node] = parse.nodes_from_scontrol(line)
    assert node.state == "IDLE" and node.flags == {"CLOUD", "POWERED_DOWN"}
    assert node.powered_down and not node.powering_up
    assert node.comment == "local/lab-de/i-1" and node.reason == ""
    assert node.available_features == ("cloud", "res_de")


def _as_2302(data: dict) -> dict:
    """The 23.02+ shapes, made from the 22.05 capture by the documented changes (not captured)."""
    out = json.loads(json.dumps(data))
    for job in out.get("jobs", []):
        job["job_state"] = [job["job_state"]]
        for key in ("submit_time", "start_time", "time_limit"):
            v = job.get(key)
            job[key] = {"set": v is not None, "infinite": v is None and key == "time_limit", "number": v or 0}
        for key in ("tres_per_node", "tres_per_job"):
            if job.get(key):
                job[key] = job[key].replace("gres:", "gres/")
    for node in out.get("nodes", []):
        node["state"] = [node["state"].upper(), *node.get("state_flags", [])]
        node.pop("state_flags", None)
    return out


def test_later_versions_parse_the_same():
    old = {j.job_id: j for j in parse.jobs_from_squeue(load("squeue.json"))}
    new = {j.job_id: j for j in parse.jobs_from_squeue(_as_2302(load("squeue.json")))}
    for job_id in old:
        assert (old[job_id].state, old[job_id].gres, old[job_id].time_limit_min, old[job_id].submit_time) == \
               (new[job_id].state, new[job_id].gres, new[job_id].time_limit_min, new[job_id].submit_time)
    old_n = parse.nodes_from_sinfo(load("sinfo.json"))
    new_n = parse.nodes_from_sinfo(_as_2302(load("sinfo.json")))
    assert [(n.state, n.flags) for n in old_n] == [(n.state, n.flags) for n in new_n]


@pytest.mark.parametrize("spec,expected", [
    ("gres:gpu:a100:2", ("a100", 2)),
    ("gres/gpu:a100:2", ("a100", 2)),
    ("gres:gpu:2", (None, 2)),
    ("gres/gpu", (None, 1)),
    ("gres/gpu=3", (None, 3)),
    ("cpu=4,gres/gpu:h100=8", ("h100", 8)),
    ("gres:shard:2", (None, 0)),
    ("", (None, 0)),
])
def test_gpu_request_forms(spec, expected):
    assert parse.parse_gpu_tres(spec) == expected


def test_errors_in_json_are_reported_with_the_command():
    with pytest.raises(SlurmError, match=r"^squeue --json: output is not JSON"):
        parse.load_json("Slurm is down\n", "squeue --json")
    with pytest.raises(SlurmError, match=r"Invalid job id"):
        parse.load_json(json.dumps({"errors": [{"error": "Invalid job id specified"}], "jobs": []}), "sacct --json")


def test_hostlists_expand_compress_and_refuse_garbage():
    assert expand("a100-de-[0-2],x1") == ["a100-de-0", "a100-de-1", "a100-de-2", "x1"]
    assert compress(["n-1", "n-0", "n-2"]) == "n-[0-2]"
    for bad in ("", "n-[0-", "n-[3-1]", "a;rm -rf /", "n1,n1", "$(reboot)"):
        with pytest.raises(HostlistError):
            expand(bad)
