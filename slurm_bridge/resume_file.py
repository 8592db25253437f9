"""SLURM_RESUME_FILE: which jobs a power-up is for. Both the 22.05 and the 23.02+ shapes.

22.05:  {"jobs": [{"job_id": 18, "nodes": "b[1-2]"}], "all_nodes": "b[1-2]"}
23.02+: {"jobs": [{"job_id": 18, "nodes_resume": "b[1-2]", "nodes_alloc": "b[1-3]",
          "partition": ..., "features": ..., ...}], "all_nodes_resume": "b[1-2]"}
A manual power-up (`scontrol update nodename=X state=power_up`) lists no jobs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from .errors import BridgeError
from .slurm.hostlists import HostlistError, expand


class ResumeFileError(BridgeError):
    pass


@dataclass(frozen=True)
class ResumeJob:
    job_id: int
    nodes: tuple[str, ...]          # nodes of this job being resumed now
    partition: str | None = None    # 23.02+ only
    features: str | None = None     # 23.02+ only


@dataclass(frozen=True)
class ResumeFile:
    all_nodes: tuple[str, ...]
    jobs: tuple[ResumeJob, ...]

    def job_of(self, node: str) -> ResumeJob | None:
        return next((j for j in self.jobs if node in j.nodes), None)


def parse(text: str) -> ResumeFile:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ResumeFileError(f"resume file is not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from exc
    except RecursionError as exc:
        raise ResumeFileError("resume file is not JSON Slurm writes (nested too deeply)") from exc
    if not isinstance(data, dict):
        raise ResumeFileError(f"resume file: expected a JSON object, got {type(data).__name__}")
    all_expr = data.get("all_nodes_resume", data.get("all_nodes"))
    if not isinstance(all_expr, str):
        raise ResumeFileError("resume file: no all_nodes/all_nodes_resume hostlist")
    try:
        all_nodes = tuple(expand(all_expr))
    except HostlistError as exc:
        raise ResumeFileError(f"resume file: all_nodes: {exc}") from exc
    raw_jobs = data.get("jobs", [])
    if not isinstance(raw_jobs, list):
        raise ResumeFileError("resume file: jobs is not a list")
    jobs = []
    for i, raw in enumerate(raw_jobs):
        if not isinstance(raw, dict):
            raise ResumeFileError(f"resume file: jobs[{i}] is not an object")
        job_id = raw.get("job_id")
        if not isinstance(job_id, int) or isinstance(job_id, bool) or job_id <= 0:
            raise ResumeFileError(f"resume file: jobs[{i}].job_id is not a positive integer: {job_id!r}")
        expr = raw.get("nodes_resume", raw.get("nodes"))
        if not isinstance(expr, str):
            raise ResumeFileError(f"resume file: jobs[{i}] has no nodes/nodes_resume hostlist")
        try:
            nodes = tuple(expand(expr))
        except HostlistError as exc:
            raise ResumeFileError(f"resume file: jobs[{i}].nodes: {exc}") from exc
        stray = set(nodes) - set(all_nodes)
        if stray:
            raise ResumeFileError(f"resume file: jobs[{i}] names {sorted(stray)[0]} which is not in all_nodes")
        part, feats = raw.get("partition"), raw.get("features")
        jobs.append(ResumeJob(job_id, nodes, part if isinstance(part, str) else None,
                              feats if isinstance(feats, str) else None))
    return ResumeFile(all_nodes, tuple(jobs))


def manual(nodes: list[str]) -> ResumeFile:
    """What a call without SLURM_RESUME_FILE means: a power-up for no job."""
    return ResumeFile(tuple(nodes), ())
