"""Pending jobs as narrow text: what the daemon's watch loop reads every cycle.

`squeue --json` in 22.05 ignores `-t` and `-p` and prints every job with
about a hundred fields; at 50,000 pending jobs that is 164 MB of text and
several seconds of `json.loads` each cycle (bench/README.md). The text
output honours the filters, so the watch asks only for pending jobs in the
partitions it cares about, and only for the fields a burst decision needs.

Fields are separated by a tab: no field here can hold one except the job
name, which is printed last and may keep any tabs of its own. A feature
expression may hold `|` (`--constraint="a|b"`), so `|` is no separator.
Fields that change while a job waits (expected start, priority) are left
out on purpose: then an unchanged job prints an unchanged line, and
`PendingParser` reuses the `Job` it built for that line last cycle.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Iterable

from ..models import Job
from .linecache import LineCache
from .parse import gres_request

FIELDS = (
    "JobID", "ArrayJobID", "ArrayTaskID", "Partition", "UserName", "Account", "State", "Reason",
    "SubmitTime", "TimeLimit", "NumNodes", "NumCPUs", "NumTasks", "tres-alloc", "tres-per-node", "tres-per-job",
    "tres-per-task", "BatchFlag", "Requeue", "Feature", "Name",
)
# `Field:<suffix>` with no width prints the whole value followed by the suffix (22.05).
FORMAT = ",".join(f"{f}:\t" for f in FIELDS[:-1]) + f",{FIELDS[-1]}:"
_NULL = ("", "N/A", "(null)", "None")
_UNITS = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}
_MEM_RE = re.compile(r"(?:^|,)mem=(\d+(?:\.\d+)?)([KMGT]?)")


def argv(partitions: Iterable[str] | None) -> list[str]:
    """The squeue command line (every partition when None); run it with TZ=UTC so SubmitTime is UTC."""
    out = ["squeue", "--noheader", "--all", "--states=PENDING", "--Format=" + FORMAT]
    if partitions is not None:
        out.append("--partition=" + ",".join(sorted(set(partitions))))
    return out


def start_argv(job_ids, cluster: str | None = None) -> list[str]:
    """Slurm's expected start of some pending jobs (backfill's estimate): asked only for the few the
    policy is about to burst, so the per-cycle line above stays free of fields that change. CLUSTER
    asks another cluster of the federation about its sibling of each job (same job id)."""
    return ["squeue", "--noheader", *((f"--clusters={cluster}",) if cluster else ()), "--states=PENDING",
            "--jobs=" + ",".join(str(int(j)) for j in job_ids), "--Format=JobID:\t,StartTime:"]


def siblings_argv(job_ids) -> list[str]:
    """The clusters of a Slurm federation where each job may run (its viable siblings)."""
    return ["squeue", "--noheader", "--states=PENDING", "--jobs=" + ",".join(str(int(j)) for j in job_ids),
            "--Format=JobID:\t,SiblingsViable:"]


def parse_siblings(text: str) -> dict[int, tuple[str, ...]]:
    """JobID -> viable sibling clusters; a job outside any federation ("NA") is left out."""
    out: dict[int, tuple[str, ...]] = {}
    for line in text.splitlines():
        job, _, names = line.partition("\t")
        head, names = job.strip().split("_", 1)[0], names.strip()
        if head.isdigit() and names not in _NULL and names != "NA":
            out[int(head)] = tuple(n for n in names.split(",") if n)
    return out


def parse_starts(text: str) -> dict[int, float]:
    """JobID -> expected start (unix seconds; the command runs with TZ=UTC); jobs with none are left out.
    An array's pending record ("7_[0-9]") counts for its array job id."""
    out: dict[int, float] = {}
    for line in text.splitlines():
        job, _, start = line.partition("\t")
        head = job.strip().split("_", 1)[0]
        start = start.strip()
        if not head.isdigit() or start in _NULL:
            continue
        try:
            ts = datetime.strptime(start, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc).timestamp()
        except ValueError:
            continue
        out[int(head)] = min(ts, out.get(int(head), ts))
    return out


def time_limit_minutes(text: str) -> int | None:
    """`[D-]HH:MM:SS`, `MM:SS` or `MM` to minutes, rounded up; None for UNLIMITED or unset."""
    if text in _NULL or text.upper() in ("UNLIMITED", "INFINITE", "PARTITION_LIMIT", "NOT_SET"):
        return None
    days, _, rest = text.rpartition("-")
    parts = [int(p) for p in rest.split(":")]
    if len(parts) == 1:
        h, m, s = 0, parts[0], 0
    elif len(parts) == 2:
        h, (m, s) = 0, parts
    else:
        h, m, s = parts[-3:]
    total_s = (int(days) if days else 0) * 86400 + h * 3600 + m * 60 + s
    return -(-total_s // 60)


def memory_per_node_mb(tres: str, nodes: int) -> int | None:
    """The job's memory from its TRES (`mem=2G`), which Slurm gives for the whole job."""
    m = _MEM_RE.search(tres)
    if not m:
        return None
    total = float(m.group(1)) * _UNITS[m.group(2) or "M"]
    return -(-int(round(total)) // max(nodes, 1))


class PendingParser(LineCache[Job]):
    """squeue lines to `Job`s; a line that did not change since the last cycle is not parsed again."""

    def __init__(self) -> None:
        super().__init__(parse_line)


def _same(value):
    return value


def parse_line(line: str, share=_same) -> Job | None:
    """One squeue line to a `Job`, or None when it is not in FIELDS' shape. SHARE returns a stored
    equal value for a repeated one."""
    f = line.split("\t", len(FIELDS) - 1)
    if len(f) != len(FIELDS):
        return None
    (job_id, array_job, array_task, partition, user, account, state, reason, submit, limit, nodes,
     cpus, tasks, tres, per_node, per_job, per_task, batch, requeue, features, name) = f
    try:
        n_nodes = int(nodes) if nodes not in _NULL else 1
        n_cpus = int(cpus) if cpus not in _NULL else 1
        n_tasks = int(tasks) if tasks not in _NULL else 1
        submitted = None if submit in _NULL else \
            datetime.fromisoformat(submit).replace(tzinfo=timezone.utc)
        gres = share(gres_request(*("" if v in _NULL else v for v in (per_node, per_job, per_task)),
                                  n_tasks, n_nodes))
        job = Job(
            job_id=int(job_id),
            name=share(name),
            user=share(user),
            account=share(account),
            partitions=share(tuple(p for p in partition.split(",") if p)),
            state=share(state),
            reason=share(reason) if reason not in _NULL else "",
            submit_time=submitted,
            start_time=None,
            time_limit_min=time_limit_minutes(limit),
            node_count=n_nodes,
            cpus=n_cpus,
            memory_per_cpu_mb=None,
            memory_per_node_mb=memory_per_node_mb(tres, n_nodes),
            gres=gres,
            features="" if features in _NULL else share(features),
            requeue=requeue.strip() != "0",
            batch=batch.strip() != "0",
            array_job_id=int(array_job) if array_task not in _NULL and array_job not in _NULL else None,
            array_task=None if array_task in _NULL else share(array_task),
        )
    except ValueError:
        return None
    return job
