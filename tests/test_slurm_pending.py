"""The watch loop's narrow `squeue` text (slurm/pending.py), on output captured from the lab.

squeue_pending.txt and squeue_pending.json were captured a second apart from the same jobs (see
fixtures/slurm-22.05.8/README.md), so both parsers must agree on everything a burst decision uses.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from conftest import FIXTURES
from slurm_bridge.slurm import parse, pending
from slurm_bridge.slurm.cli_backend import CliSlurm

V2205 = FIXTURES / "slurm-22.05.8"
TEXT = (V2205 / "squeue_pending.txt").read_text()


def from_json() -> dict[int, object]:
    data = json.loads((V2205 / "squeue_pending.json").read_text())
    return {j.job_id: j for j in parse.jobs_from_squeue(data) if j.state == "PENDING"}


def test_text_and_json_agree_on_every_decision_field():
    text_jobs = {j.job_id: j for j in pending.PendingParser().parse(TEXT)}
    json_jobs = from_json()
    assert set(text_jobs) == set(json_jobs) == {15, 16, 17, 18, 19, 20, 21, 22, 23}
    for job_id, t in text_jobs.items():
        j = json_jobs[job_id]
        cpus_per_node = -(-j.cpus // j.node_count)
        mem = j.memory_per_node_mb or (j.memory_per_cpu_mb or 0) * cpus_per_node
        assert t.memory_per_node_mb == mem, job_id
        # The text leaves out the expected start (it changes while the job waits) and the
        # memory split (it has only the job's total); everything else must match.
        assert replace(t, memory_per_node_mb=None) == replace(j, start_time=None, memory_per_cpu_mb=None,
                                                              memory_per_node_mb=None, nodes="",
                                                              admin_comment=""), job_id


def test_gpu_forms_arrays_names_and_flags():
    jobs = {j.job_id: j for j in pending.PendingParser().parse(TEXT)}
    assert jobs[16].name == "name with\ttab|pipe" and jobs[16].gres.gpus_per_node == 2
    assert jobs[16].time_limit_min == 90
    assert jobs[17].gres.gpus_total == 3 and jobs[17].time_limit_min == 26 * 60 + 4
    assert jobs[18].features == "(res_de|onprem)&res_eu" and jobs[18].gres.gpus_total == 2
    assert jobs[19].memory_per_node_mb == 2048
    assert jobs[20].array_job_id == 20 and jobs[20].array_task == "0-5%2"
    assert jobs[15].array_task == "2-3" and jobs[15].reason == "Resources"
    assert jobs[21].partitions == ("gpu", "burst-a100-de") and jobs[21].reason == "JobHeldUser"
    assert jobs[22].requeue is False and jobs[16].requeue is True
    assert jobs[23].account == "medical" and jobs[23].gres.gpus_per_node == 1 and jobs[23].node_count == 2
    assert all(j.submit_time.tzinfo is not None and j.batch for j in jobs.values())


def test_unchanged_lines_reuse_their_job_and_gone_lines_leave_the_cache():
    parser = pending.PendingParser()
    first = {j.job_id: j for j in parser.parse(TEXT)}
    lines = TEXT.splitlines()
    changed = lines[1].replace("\tPriority\t", "\tResources\t")
    second = {j.job_id: j for j in parser.parse("\n".join([lines[0], changed]) + "\n")}
    assert second[15] is first[15]                      # same line: same object, not parsed again
    assert second[16] is not first[16] and second[16].reason == "Resources"
    assert len(parser._cache) == 2


def test_a_malformed_line_is_skipped_and_kept_for_the_log():
    parser = pending.PendingParser()
    text = TEXT + "garbage without tabs\n" + "x\t" * 20 + "name\n"
    jobs = parser.parse(text)
    assert len(jobs) == 9
    assert parser.bad_lines == ["garbage without tabs", "x\t" * 20 + "name"]


@pytest.mark.parametrize("text,minutes", [("UNLIMITED", None), ("N/A", None), ("1:30:00", 90),
                                          ("1-02:04:00", 1564), ("05:30", 6), ("45", 45)])
def test_time_limits(text, minutes):
    assert pending.time_limit_minutes(text) == minutes


def test_argv_filters_in_squeue_and_never_needs_a_shell():
    argv = pending.argv(["gpu", "burst-a", "gpu"])
    assert argv[:4] == ["squeue", "--noheader", "--all", "--states=PENDING"]
    assert argv[-1] == "--partition=burst-a,gpu"
    assert pending.argv(None)[-1].startswith("--Format=")


class Canned(CliSlurm):
    """The real CliSlurm with only the command runner replaced by the captured output."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def run(self, argv, *, tz=None):
        self.calls.append((argv, tz))
        return TEXT + "not a job line\n"


def test_cli_backend_reads_pending_jobs_as_text_in_utc(caplog):
    slurm = Canned()
    jobs = slurm.pending_jobs(["gpu"])
    assert len(jobs) == 9 and slurm.calls[0][1] == "UTC"
    assert "skipped 1 line" in caplog.text


def test_federation_siblings_and_a_sibling_clusters_estimates_are_read():
    # What 22.05 printed on the lab: a federated job, one outside any federation, and -M's banner.
    text = "67108879\tlab,sib\n67108878\tNA\n7_[0-3]\tlab,sib\n"
    assert pending.parse_siblings(text) == {67108879: ("lab", "sib"), 7: ("lab", "sib")}
    assert pending.start_argv([5], cluster="sib")[:3] == ["squeue", "--noheader", "--clusters=sib"]
    starts = pending.parse_starts("CLUSTER: sib\n67108879\t2026-11-30T16:55:17\n")
    assert list(starts) == [67108879]
