"""Job traces for the what-if simulator: `read_trace(path, "philly" | "sacct" | "swf")`.

Files are streamed line by line into `TraceJob`s, submit times shifted so the earliest is 0 (the
shift is kept as `Trace.epoch_offset`). A row that cannot be used is counted under its reason in
`Trace.bad`, never fatal; an unreadable file, or one without a recognisable header, raises `TraceError`.

philly -- RFold's CSV of Microsoft's Philly jobs (`#job id,arrival time (sec),topology,shape,size,
duration (sec)`). `shape` is the placement the job had, one `+`-separated term per machine giving the
GPUs used there ("2+2": 2 GPUs on each of 2 machines); RFold's reader (common/job.py) defines it so for
the folded-Clos topology, the only one in the file. `size` is the total GPUs: the README says so, and
in all 111,549 rows size == sum(shape) (1+1+1+1 -> 4, 8+8 -> 16); the terms of a shape are always
equal and never above 8. The recorded placement often spreads small jobs thinly (up to 32 machines of
1 GPU), which is where Philly found room rather than what the job needed, so jobs are re-packed onto
nodes of `gpus_per_node=8` GPUs (nodes = ceil(size / 8)), the largest machine in the trace and the
usual cloud GPU instance; `gpus_per_node=None` keeps the recorded placement. There is no user,
account, partition, constraint, time limit, CPU count or final state.

sacct -- `sacct --json` (22.05 and 23.02+ shapes, via `slurm.parse.accounting_from_sacct`) or
`sacct -a -X -P` text with its header line, told apart by the first non-space character. The -P text
prints the controller's local time without a zone; it is read in `tz` (default UTC). The simulator
needs only differences, so the zone matters for `epoch_offset` alone (and by an hour across a DST
change). Jobs that never started (pending, cancelled while pending) or still run are skipped.

swf -- the Parallel Workloads Archive's Standard Workload Format: 18 whitespace-separated fields, `;`
header comments, -1 for unknown. SWF counts processors: each is taken as `gpus_per_proc` GPUs
(default 1: a processor is a GPU), packed onto nodes of `gpus_per_node`. User id n becomes user "u<n>",
group n the account "g<n>", queue n the partition "q<n>" ("p<n>" from the partition field when there
is no queue). Status 2-4 lines are partial executions of a job whose summary line (status 0, 1 or 5)
is read instead; a job cancelled before it ran (status 5, run time <= 0) and an unknown run time are
skipped. A `; UnixStartTime:` header sets `epoch_offset`.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import IO, Any

from .errors import BridgeError
from .models import AccountingRecord
from .slurm import parse
from .slurm.hostlists import HostlistError, expand

FORMATS = ("philly", "sacct", "swf")
SACCT_FIELDS = ("JobID,JobIDRaw,User,Account,Partition,State,Submit,Start,End,ElapsedRaw,NNodes,"
                "AllocTRES,TimelimitRaw,NodeList,Constraints")


class TraceError(BridgeError):
    """The trace cannot be read at all; the message names the file and the line."""


@dataclass(frozen=True, slots=True)
class TraceJob:
    job_id: str
    submit: float                   # seconds after the trace's first submit
    duration_s: float               # how long it actually ran
    time_limit_s: float | None      # None: unlimited or unknown
    gpus: int                       # total over all nodes
    nodes: int
    gpus_per_node: int              # GPUs the job uses on each of its nodes
    cpus: int | None = None
    user: str = ""
    account: str = ""
    partition: str = ""
    constraints: str = ""
    state: str = ""                 # final state when the trace knows it


@dataclass(slots=True)
class Trace:
    path: Path
    fmt: str
    jobs: list[TraceJob]            # by submit, then job id
    bad: dict[str, int]             # reason -> rows skipped
    total_rows: int
    epoch_offset: float             # Unix time (or trace time) of submit 0
    first_bad_line: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        span = max((j.submit for j in self.jobs), default=0.0)
        gpu_hours = sum(j.gpus * j.duration_s for j in self.jobs) / 3600
        head = (f"{self.path.name} ({self.fmt}): {len(self.jobs):,} jobs from {self.total_rows:,} rows, "
                f"submitted over {span / 86400:.1f} days, {gpu_hours:,.0f} GPU-hours")
        if not self.bad:
            return head + "; no rows skipped"
        parts = []
        for reason, count in sorted(self.bad.items(), key=lambda kv: (-kv[1], kv[0])):
            line = self.first_bad_line.get(reason)
            parts.append(f"{reason}: {count:,}" + (f" (first at line {line})" if line else ""))
        return f"{head}; skipped {sum(self.bad.values()):,}: " + "; ".join(parts)


class _Skip(Exception):
    """A row left out and counted under `reason`."""

    def __init__(self, reason: str, line: int | None = None):
        super().__init__(reason)
        self.reason, self.line = reason, line


@dataclass
class _Context:
    path: Path
    gpus_per_node: int | None
    gpus_per_proc: float
    tz: tzinfo
    epoch_base: float = 0.0         # what submit 0 of the raw file means (SWF UnixStartTime)


def read_trace(path: str | os.PathLike, fmt: str, *, gpus_per_node: int | None = 8,
               gpus_per_proc: float = 1, tz: tzinfo = UTC) -> Trace:
    path = Path(path)
    readers = {"philly": _read_philly, "sacct": _read_sacct, "swf": _read_swf}
    if fmt not in readers:
        raise TraceError(f"{path}: unknown trace format {fmt!r} (expected one of {', '.join(FORMATS)})")
    if (gpus_per_node is not None and gpus_per_node < 1) or gpus_per_proc <= 0:
        raise TraceError(f"{path}: gpus_per_node and gpus_per_proc must be positive")
    ctx = _Context(path, gpus_per_node, gpus_per_proc, tz)
    jobs: list[TraceJob] = []
    bad: Counter[str] = Counter()
    first_bad: dict[str, int] = {}
    try:
        # errors="replace": one stray byte in a user name is a bad row at worst, not an unreadable file.
        with path.open(encoding="utf-8", errors="replace") as f:
            for item in readers[fmt](f, ctx):
                if isinstance(item, _Skip):
                    bad[item.reason] += 1
                    if item.line is not None:
                        first_bad.setdefault(item.reason, item.line)
                else:
                    jobs.append(item)
    except OSError as exc:
        raise TraceError(f"{path}: cannot read the trace: {exc.strerror or exc}") from exc
    jobs, offset = _normalise(jobs, ctx.epoch_base)
    return Trace(path, fmt, jobs, dict(bad), len(jobs) + sum(bad.values()), offset, first_bad)


def _normalise(jobs: list[TraceJob], base: float) -> tuple[list[TraceJob], float]:
    first = min((j.submit for j in jobs), default=0.0)
    if first:
        jobs = [replace(j, submit=j.submit - first) for j in jobs]
    jobs.sort(key=lambda j: (j.submit, len(j.job_id), j.job_id))   # "9" before "10"
    return jobs, base + first


# -- shared helpers --------------------------------------------------------------------------------

def _first_line(f: IO[str], ctx: _Context) -> tuple[int, str]:
    for lineno, line in enumerate(f, 1):
        if line.strip():
            return lineno, line
    raise TraceError(f"{ctx.path}: line 1: the file is empty")


def _number(text: str, column: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise _Skip(f"unparsable number in column {column!r}") from None
    if not math.isfinite(value):
        raise _Skip(f"unparsable number in column {column!r}")
    return value


def _integer(text: str, column: str) -> int:
    try:
        return int(text)            # the common case, and the fast one
    except ValueError:
        pass
    value = _number(text, column)
    if value != int(value):
        raise _Skip(f"unparsable number in column {column!r}")
    return int(value)


def _pack(gpus: int, per_node: int) -> tuple[int, int]:
    """(nodes, GPUs on each) for `gpus` spread evenly over nodes of `per_node` GPUs."""
    nodes = max(1, -(-gpus // per_node))
    return nodes, -(-gpus // nodes)


# -- philly ----------------------------------------------------------------------------------------

_PHILLY_HEADER = ["#job id", "arrival time (sec)", "topology", "shape", "size", "duration (sec)"]


def _read_philly(f: IO[str], ctx: _Context) -> Iterator[TraceJob | _Skip]:
    lineno, header = _first_line(f, ctx)
    if [c.strip().lower() for c in header.split(",")] != _PHILLY_HEADER:
        raise TraceError(f"{ctx.path}: line {lineno}: not the Philly trace header "
                         f"(expected {','.join(_PHILLY_HEADER)!r})")
    for n, line in enumerate(f, lineno + 1):
        if line.strip():
            try:
                yield _philly_job(line, ctx)
            except _Skip as skip:
                yield _Skip(skip.reason, n)


def _philly_job(line: str, ctx: _Context) -> TraceJob:
    # int() and float() ignore surrounding whitespace, so only the text columns are stripped.
    cells = line.split(",")
    if len(cells) != 6:
        raise _Skip("wrong number of fields (expected 6)")
    job_id, arrival, topology, shape, size, duration = cells
    if topology.strip() != "CLOS":
        raise _Skip("topology is not CLOS")
    gpus = _integer(size, "size")
    terms = [_integer(t, "shape") for t in shape.split("+")]
    if gpus != sum(terms):
        raise _Skip("size is not the sum of shape")
    if min(terms) < 1:
        raise _Skip("no GPUs")
    duration_s = _number(duration, "duration (sec)")
    if duration_s < 0:
        raise _Skip("negative duration")
    if ctx.gpus_per_node is None:
        nodes, per_node = len(terms), max(terms)
    else:
        nodes, per_node = _pack(gpus, ctx.gpus_per_node)
    return TraceJob(job_id.strip(), _number(arrival, "arrival time (sec)"), duration_s, None, gpus, nodes,
                    per_node)


# -- sacct -----------------------------------------------------------------------------------------

_UNFINISHED = {"RUNNING", "SUSPENDED", "REQUEUED", "RESIZING", "STOPPED"}


def _read_sacct(f: IO[str], ctx: _Context) -> Iterator[TraceJob | _Skip]:
    lineno, first = _first_line(f, ctx)
    if first.lstrip()[0] in "{[":
        return _sacct_json(first + f.read(), lineno, ctx)
    return _sacct_text(f, first, lineno, ctx)


def _sacct_json(text: str, lineno: int, ctx: _Context) -> Iterator[TraceJob | _Skip]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TraceError(f"{ctx.path}: line {lineno + exc.lineno - 1}: not sacct --json output "
                         f"({exc.msg})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("jobs"), list):
        raise TraceError(f"{ctx.path}: line {lineno}: no \"jobs\" list: not sacct --json output")
    for raw in data["jobs"]:
        try:
            yield _sacct_json_job(raw)
        except _Skip as skip:
            yield skip


def _sacct_json_job(raw: Any) -> TraceJob:
    try:
        # One record at a time, so one malformed job is a bad row rather than a lost file.
        rec = parse.accounting_record(raw)
        limit = _json_minutes((raw.get("time") or {}).get("limit"))
    except (KeyError, TypeError, ValueError, AttributeError):
        raise _Skip("malformed job record") from None
    return _sacct_job(rec, nnodes=None, elapsed=None, limit_min=limit)


def _json_minutes(value: Any) -> int | None:
    """time.limit: minutes as an int (22.05) or {"set", "infinite", "number"} (23.02+)."""
    if isinstance(value, dict):
        if not value.get("set", True) or value.get("infinite"):
            return None
        value = value.get("number")
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _sacct_job(rec: AccountingRecord, *, nnodes: int | None, elapsed: int | None,
               limit_min: int | None) -> TraceJob:
    alloc = rec.alloc_tres
    if rec.state == "PENDING" or rec.start is None or not (nnodes or alloc.get("node") or rec.nodes):
        raise _Skip("never started")
    if rec.state in _UNFINISHED or (rec.end is None and elapsed is None):
        raise _Skip("still running")
    if rec.submit is None:
        raise _Skip("no submit time")
    duration = (rec.end - rec.start).total_seconds() if rec.end is not None else float(elapsed or 0)
    if duration < 0:
        raise _Skip("negative duration")
    gpus = alloc.get("gres/gpu", sum(v for k, v in alloc.items() if k.startswith("gres/gpu:")))
    nodes = nnodes or alloc.get("node") or _count_nodes(rec.nodes)
    return TraceJob(
        job_id=rec.job_id_str, submit=rec.submit.timestamp(), duration_s=duration,
        time_limit_s=None if limit_min is None else limit_min * 60.0, gpus=gpus, nodes=nodes,
        gpus_per_node=-(-gpus // nodes), cpus=alloc.get("cpu"), user=rec.user, account=rec.account,
        partition=rec.partition, constraints=rec.constraints, state=rec.state,
    )


def _count_nodes(hostlist: str) -> int:
    try:
        return len(expand(hostlist))
    except HostlistError:
        return 1


def _sacct_text(f: IO[str], header: str, lineno: int, ctx: _Context) -> Iterator[TraceJob | _Skip]:
    # `sacct -p` (lower case) ends every line with the delimiter as well.
    trailing = header.rstrip("\r\n").endswith("|")
    names = [c.strip().lower() for c in _cells(header, trailing)]
    missing = [c for c in ("JobID", "Submit", "Start", "AllocTRES") if c.lower() not in names]
    if "end" not in names and "elapsedraw" not in names:
        missing.append("End or ElapsedRaw")
    if missing:
        raise TraceError(f"{ctx.path}: line {lineno}: not a `sacct -P` header (no {', '.join(missing)}); "
                         f"expected the output of sacct -a -X -P -o {SACCT_FIELDS}")
    for n, line in enumerate(f, lineno + 1):
        if line.strip():
            try:
                yield _sacct_row(_cells(line, trailing), names, ctx)
            except _Skip as skip:
                yield _Skip(skip.reason, n)


def _cells(line: str, trailing: bool) -> list[str]:
    line = line.rstrip("\r\n")
    return (line[:-1] if trailing and line.endswith("|") else line).split("|")


def _sacct_row(cells: list[str], names: list[str], ctx: _Context) -> TraceJob:
    if len(cells) > len(names):
        # Only a last Constraints column can hold the extra `|`s: `-C "a|b"` is a valid constraint.
        if names[-1] != "constraints":
            raise _Skip("more fields than the header")
        cells = cells[:len(names) - 1] + ["|".join(cells[len(names) - 1:])]
    elif len(cells) < len(names):
        raise _Skip("fewer fields than the header")
    row = dict(zip(names, (c.strip() for c in cells)))
    job_id = row["jobid"]
    if "." in job_id:
        raise _Skip("job step, not an allocation (run sacct with -X)")
    alloc = _tres(row["alloctres"])
    node_list = row.get("nodelist", "")
    rec = AccountingRecord(
        job_id=0, job_id_str=job_id, array_job_id=None, array_task_id=None, name="",
        user=row.get("user", ""), account=row.get("account", ""), partition=row.get("partition", ""),
        cluster="", state=(row.get("state", "").split() or [""])[0].upper(),
        nodes="" if node_list in ("None assigned", "(null)") else node_list, alloc_tres=alloc,
        submit=_local_time(row["submit"], "Submit", ctx), start=_local_time(row["start"], "Start", ctx),
        end=_local_time(row.get("end", ""), "End", ctx), constraints=row.get("constraints", ""),
    )
    return _sacct_job(rec, nnodes=_optional_int(row.get("nnodes", ""), "NNodes"),
                      elapsed=_optional_int(row.get("elapsedraw", ""), "ElapsedRaw"),
                      limit_min=_optional_int(row.get("timelimitraw", ""), "TimelimitRaw"))


def _tres(text: str) -> dict[str, int]:
    """`billing=2,cpu=2,gres/gpu=8,mem=2000M,node=2` -> counts; memory (with a unit) is not needed."""
    out: dict[str, int] = {}
    for part in text.split(","):
        key, _, value = part.partition("=")
        if value.isdigit():
            out[key.strip()] = int(value)
        elif key in ("cpu", "node") or key.startswith("gres/gpu"):
            raise _Skip("unparsable number in column 'AllocTRES'")
    return out


def _optional_int(text: str, column: str) -> int | None:
    if text in ("", "UNLIMITED", "Partition_Limit", "INVALID", "Unknown"):
        return None
    return _integer(text, column)


def _local_time(text: str, column: str, ctx: _Context) -> datetime | None:
    if text in ("", "Unknown", "None", "N/A"):
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise _Skip(f"unparsable time in column {column!r}") from None
    return when if when.tzinfo else when.replace(tzinfo=ctx.tz)


# -- swf -------------------------------------------------------------------------------------------

_SWF_STATES = {0: "FAILED", 1: "COMPLETED", 5: "CANCELLED"}
_UNIX_START = re.compile(r";\s*UnixStartTime:\s*(-?\d+)")


def _read_swf(f: IO[str], ctx: _Context) -> Iterator[TraceJob | _Skip]:
    if ctx.gpus_per_node is None:
        raise TraceError(f"{ctx.path}: SWF records no placement: gpus_per_node must be a number")
    first = True
    for n, line in enumerate(f, 1):
        text = line.strip()
        if text.startswith(";"):
            if m := _UNIX_START.match(text):
                ctx.epoch_base = float(m.group(1))
        elif text:
            if first and len(text.split()) != 18:
                # Without a header, only a proper first job line says this is SWF at all.
                raise TraceError(f"{ctx.path}: line {n}: not SWF (no ';' header comments, not 18 fields)")
            try:
                yield _swf_job(text.split(), ctx)
            except _Skip as skip:
                yield _Skip(skip.reason, n)
        first = first and not text


def _swf_job(fields: list[str], ctx: _Context) -> TraceJob:
    if len(fields) != 18:
        raise _Skip("wrong number of fields (SWF has 18)")

    def num(i: int, name: str) -> float:     # SWF fields are numbered from 1
        return _number(fields[i - 1], name)

    status = int(num(11, "status"))
    if status in (2, 3, 4):
        raise _Skip("partial-execution line (the job's summary line is read)")
    run = num(4, "run time")
    if status == 5 and run <= 0:
        raise _Skip("never started")
    if run == -1:
        raise _Skip("unknown run time")
    if run < 0:
        raise _Skip("negative duration")
    submit = num(2, "submit time")
    if submit < 0:
        raise _Skip("unknown submit time")
    procs = num(5, "allocated processors")
    procs = procs if procs > 0 else num(8, "requested processors")
    if procs <= 0:
        raise _Skip("unknown processor count")
    gpus = math.ceil(procs * ctx.gpus_per_proc)
    nodes, per_node = _pack(gpus, ctx.gpus_per_node or 1)
    limit = num(9, "requested time")
    user, group = int(num(12, "user id")), int(num(13, "group id"))
    queue, partition = int(num(15, "queue")), int(num(16, "partition"))
    return TraceJob(
        job_id=str(int(num(1, "job number"))), submit=submit, duration_s=run,
        time_limit_s=limit if limit > 0 else None, gpus=gpus, nodes=nodes, gpus_per_node=per_node,
        user=f"u{user}" if user >= 0 else "", account=f"g{group}" if group >= 0 else "",
        partition=f"q{queue}" if queue >= 0 else f"p{partition}" if partition >= 0 else "",
        state=_SWF_STATES.get(status, ""),
    )
