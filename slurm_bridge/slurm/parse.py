"""Parse what Slurm's commands print into plain models.

Pure functions, tested on output captured from the real lab
(tests/fixtures/slurm-<version>/). Version differences handled here:
- 22.05 prints states as one string plus `state_flags`; 23.02+ prints a list
  of upper-case words.
- 22.05 prints times as integers; 23.02+ as {"set", "infinite", "number"}.
- 22.05 writes GPU requests as `gres:gpu:a100:2`; 23.02+ as `gres/gpu:a100:2`.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import datetime, timezone
from typing import Any, Iterable

from ..errors import SlurmError
from ..models import AccountingRecord, GresRequest, Job, Node

log = logging.getLogger("slurm_bridge.slurm")

NODE_BASE_STATES = {
    "IDLE", "ALLOCATED", "MIXED", "DOWN", "ERROR", "FUTURE", "UNKNOWN",
}


def _num(value: Any) -> int | None:
    """An integer from either JSON shape; None for unset or infinite."""
    if value is None:
        return None
    if isinstance(value, dict):
        if not value.get("set", True) or value.get("infinite"):
            return None
        value = value.get("number")
        if value is None:
            return None
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)):
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def _time(value: Any) -> datetime | None:
    n = _num(value)
    if not n or n <= 0:
        return None
    try:
        return datetime.fromtimestamp(n, tz=timezone.utc)
    except (OverflowError, OSError) as exc:      # past what the platform's time_t or datetime holds
        raise ValueError(f"time {n} out of range") from exc


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def _state_words(value: Any) -> list[str]:
    if isinstance(value, list):
        return [str(v).upper() for v in value]
    if isinstance(value, str) and value:
        # scontrol joins flags with '+': IDLE+CLOUD+POWERED_DOWN
        return [w.upper() for w in value.split("+") if w]
    return []


def node_state(state: Any, flags: Any = ()) -> tuple[str, frozenset[str]]:
    words = _state_words(state) + [str(f).upper() for f in (flags or [])]
    base = next((w for w in words if w in NODE_BASE_STATES), words[0] if words else "UNKNOWN")
    rest = frozenset(w for w in words if w != base)
    return base, rest


def job_state(state: Any) -> str:
    words = _state_words(state)
    return words[0] if words else "UNKNOWN"


def load_json(text: str, command: str) -> dict:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SlurmError(f"{command}: output is not JSON ({exc.msg} at line {exc.lineno})") from exc
    if not isinstance(data, dict):
        raise SlurmError(f"{command}: expected a JSON object, got {type(data).__name__}")
    # sacct reports an empty result as an error ("Nothing found with query"); it is not one.
    errors = [e for e in data.get("errors") or []
              if e and not (isinstance(e, dict) and "Nothing found" in str(e.get("error", "")))]
    if errors:
        first = errors[0]
        msg = first.get("description") or first.get("error") if isinstance(first, dict) else str(first)
        raise SlurmError(f"{command}: Slurm reported an error: {msg}")
    return data


def slurm_version(data: dict) -> tuple[int, int, int] | None:
    meta = data.get("meta") or {}
    ver = (meta.get("Slurm") or meta.get("slurm") or {}).get("version") or {}
    try:
        return int(ver["major"]), int(ver["minor"]), int(ver.get("micro", 0))
    except (KeyError, TypeError, ValueError):
        return None


# -- GPU requests ---------------------------------------------------------------

_GPU_RE = re.compile(r"^(?:gres[:/])?gpu(?::(?P<type>[A-Za-z0-9_.-]+?))?(?::(?P<count>\d+))?$")


def parse_gpu_tres(spec: str) -> tuple[str | None, int]:
    """`gres:gpu:a100:2` / `gres/gpu:2` / `gpu` -> (type, count). Non-GPU parts are ignored."""
    gpu_type, count = None, 0
    for part in (spec or "").split(","):
        part = part.strip()
        if not part or "gpu" not in part:
            continue
        # `gres/gpu=2` (tres_req_str style)
        if "=" in part:
            name, _, value = part.partition("=")
            m = _GPU_RE.match(name)
            if m and value.isdigit():
                gpu_type = m.group("type") or gpu_type
                count += int(value)
            continue
        m = _GPU_RE.match(part)
        if not m:
            continue
        kind = m.group("type")
        if kind and kind.isdigit() and m.group("count") is None:
            kind, n = None, int(kind)   # `gpu:2`: the "type" slot is the count
        else:
            n = int(m.group("count") or 1)
        gpu_type = kind or gpu_type
        count += n
    return gpu_type, count


def gres_request(tres_per_node: str, tres_per_job: str, tres_per_task: str,
                 tasks: int, nodes: int) -> GresRequest:
    t_node, per_node = parse_gpu_tres(tres_per_node)
    t_job, per_job = parse_gpu_tres(tres_per_job)
    t_task, per_task = parse_gpu_tres(tres_per_task)
    nodes = max(nodes, 1)
    total = per_node * nodes or per_job or per_task * max(tasks, 1)
    if per_node:
        node_need = per_node
    elif per_job:
        node_need = -(-per_job // nodes)
    else:
        node_need = -(-(per_task * max(tasks, 1)) // nodes) if per_task else 0
    return GresRequest(gpus_per_node=node_need, gpus_total=total, gpu_type=t_node or t_job or t_task)


# -- squeue --json ------------------------------------------------------------------

def jobs_from_squeue(data: dict) -> list[Job]:
    out = []
    for raw in data.get("jobs") or []:
        nodes = _num(raw.get("node_count")) or 1
        tasks = _num(raw.get("tasks")) or 1
        array_job = _num(raw.get("array_job_id")) or None
        task_id = _num(raw.get("array_task_id"))
        task_str = raw.get("array_task_string") or None
        out.append(Job(
            job_id=int(raw["job_id"]),
            name=_text(raw.get("name")),
            user=_text(raw.get("user_name")),
            account=_text(raw.get("account")),
            partitions=tuple(p for p in _text(raw.get("partition")).split(",") if p),
            state=job_state(raw.get("job_state")),
            reason=_text(raw.get("state_reason")),
            submit_time=_time(raw.get("submit_time")),
            start_time=_time(raw.get("start_time")),
            time_limit_min=_num(raw.get("time_limit")),
            node_count=nodes,
            cpus=_num(raw.get("cpus")) or 1,
            memory_per_cpu_mb=_num(raw.get("memory_per_cpu")),
            memory_per_node_mb=_num(raw.get("memory_per_node")),
            gres=gres_request(_text(raw.get("tres_per_node")), _text(raw.get("tres_per_job")),
                              _text(raw.get("tres_per_task")), tasks, nodes),
            features=_text(raw.get("features")),
            requeue=bool(raw.get("requeue", True)),
            batch=bool(raw.get("batch_flag", True)),
            array_job_id=array_job,
            array_task=str(task_id) if task_id is not None else task_str,
            nodes=_text(raw.get("nodes")),
            admin_comment=_text(raw.get("admin_comment")),
        ))
    return out


# -- sinfo --json and scontrol -o show node ------------------------------------------

def nodes_from_sinfo(data: dict) -> list[Node]:
    out: dict[str, Node] = {}
    for raw in data.get("nodes") or []:
        base, flags = node_state(raw.get("state"), raw.get("state_flags"))
        parts = raw.get("partitions") or []
        out[raw["name"]] = Node(
            name=raw["name"],
            state=base,
            flags=flags,
            available_features=_features(raw.get("features")),
            active_features=_features(raw.get("active_features")),
            address=_text(raw.get("address")),
            hostname=_text(raw.get("hostname")),
            partitions=tuple(parts if isinstance(parts, list) else _text(parts).split(",")),
            comment=_text(raw.get("comment")),
            reason=_text(raw.get("reason")),
            gres=_text(raw.get("gres")),
            cpus=_num(raw.get("cpus")) or 0,
            real_memory_mb=_num(raw.get("real_memory")) or 0,
            boot_time=_time(raw.get("boot_time")),
        )
    return list(out.values())


def _features(value: Any) -> tuple[str, ...]:
    if isinstance(value, list):
        return tuple(str(v) for v in value)
    text = _text(value)
    if text in ("", "(null)"):
        return ()
    return tuple(f for f in text.split(",") if f)


# `Key=value` pairs; a value runs to the next ` Key=` (values such as OS= contain spaces).
_KV_RE = re.compile(r"(?:^|\s)([A-Za-z][A-Za-z0-9_/:]*)=")


def parse_scontrol_record(line: str) -> dict[str, str]:
    matches = list(_KV_RE.finditer(line))
    record: dict[str, str] = {}
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(line)
        record[m.group(1)] = line[m.end():end].strip()
    return record


def _scontrol_time(value: str) -> datetime | None:
    if not value or value in ("None", "Unknown", "N/A", "(null)"):
        return None
    try:
        return datetime.fromisoformat(value).astimezone(timezone.utc)
    except ValueError:
        return None


def nodes_from_scontrol(text: str) -> list[Node]:
    out = []
    for line in text.splitlines():
        if not line.startswith("NodeName="):
            continue
        r = parse_scontrol_record(line)
        base, flags = node_state(r.get("State", ""))
        null = ("", "(null)", "N/A")
        out.append(Node(
            name=r["NodeName"],
            state=base,
            flags=flags,
            available_features=_features(r.get("AvailableFeatures")),
            active_features=_features(r.get("ActiveFeatures")),
            address=r.get("NodeAddr", ""),
            hostname=r.get("NodeHostName", ""),
            partitions=tuple(p for p in r.get("Partitions", "").split(",") if p),
            comment="" if r.get("Comment", "") in null else r.get("Comment", ""),
            reason="" if r.get("Reason", "") in null else r.get("Reason", ""),
            gres="" if r.get("Gres", "") in null else r.get("Gres", ""),
            cpus=_num(r.get("CPUTot")) or 0,
            real_memory_mb=_num(r.get("RealMemory")) or 0,
            boot_time=_scontrol_time(r.get("BootTime", "")),
        ))
    return out


# -- sacct --json -----------------------------------------------------------------------

def _tres_list(items: Iterable[dict] | None) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in items or []:
        count = _num(t.get("count"))
        if count is None:
            continue
        key = t.get("type", "")
        if t.get("name"):
            key = f"{key}/{t['name']}"
        out[key] = out.get(key, 0) + count
    return out


def accounting_from_sacct(data: dict) -> list[AccountingRecord]:
    """Every readable record; a malformed one is logged and set aside, and the others still read.
    A document with no list of jobs at all is an error: read as "no jobs", it would move the
    ingest's mark past jobs it never saw."""
    jobs = data.get("jobs", []) if isinstance(data, dict) else None
    if not isinstance(jobs, list):
        raise SlurmError("sacct --json: the output has no list of jobs")
    out = []
    for i, raw in enumerate(jobs):
        try:
            out.append(accounting_record(raw))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            job = raw.get("job_id") if isinstance(raw, dict) else None
            log.warning("sacct --json: record %d (job %r) set aside: %s: %s", i, job, type(exc).__name__,
                        str(exc)[:200])
    return out


def accounting_record(raw: dict) -> AccountingRecord:
    """One job record of sacct --json; raises KeyError, TypeError, ValueError or AttributeError on garbage."""
    if not isinstance(raw, dict):
        raise TypeError(f"a job record is an object, not {type(raw).__name__}")
    job_id = int(raw["job_id"])
    array = raw.get("array") or {}
    array_job = _num(array.get("job_id")) or None
    task = array.get("task_id")
    task_id = _num(task)
    job_str = f"{array_job}_{task_id}" if array_job and task_id is not None else str(job_id)
    t = raw.get("time") or {}
    state = raw.get("state") or {}
    comment = raw.get("comment") or {}
    nodes = _text(raw.get("nodes"))
    return AccountingRecord(
        job_id=job_id,
        job_id_str=job_str,
        array_job_id=array_job,
        array_task_id=task_id,
        name=_text(raw.get("name")),
        user=_text(raw.get("user")),
        account=_text(raw.get("account")),
        partition=_text(raw.get("partition")),
        cluster=_text(raw.get("cluster")),
        state=job_state(state.get("current") if isinstance(state, dict) else state),
        nodes="" if nodes in ("None assigned", "(null)") else nodes,
        alloc_tres=_tres_list((raw.get("tres") or {}).get("allocated")),
        submit=_time(t.get("submission")),
        start=_time(t.get("start")),
        end=_time(t.get("end")),
        elapsed_s=_num(t.get("elapsed")) or 0,
        admin_comment=_text(comment.get("administrator") if isinstance(comment, dict) else ""),
        constraints=_text(raw.get("constraints")),
    )


# -- scontrol show config / show partition -------------------------------------------------

def config_from_scontrol(text: str) -> dict[str, str]:
    """`Key = Value` lines of `scontrol show config`; later sections (cgroup, mpi) are skipped."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        key = key.strip()
        if sep and key and " " not in key and key not in out:
            out[key] = value.strip()
    return out


def partitions_from_scontrol(text: str) -> dict[str, dict[str, str]]:
    out = {}
    for line in text.splitlines():
        if line.startswith("PartitionName="):
            rec = parse_scontrol_record(line)
            out[rec["PartitionName"]] = rec
    return out
