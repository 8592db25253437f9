"""Job runs from sacct, kept in the state DB so cost reports need neither slurmdbd nor a second read.

One row per run, keyed by (job id, start): a job requeued after its cloud node
vanished ran twice, and both runs used (and cost) cloud time. Writing is an
upsert, so reading the same sacct window again changes nothing, and a run
that was still going last time gets its end.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Iterable

from .models import AccountingRecord
from .state import StateDB

INGEST_MARK = "sacct_ingested_until"


@dataclass(frozen=True)
class JobRunRow:
    job_id: int
    job_id_str: str
    cluster: str
    user: str
    account: str
    partition: str
    state: str
    nodes: str
    tres: dict[str, int]
    submit: float | None
    start: float
    end: float | None
    admin_comment: str
    constraints: str


def _ts(value) -> float | None:
    return None if value is None else value.timestamp()


def upsert(db: StateDB, records: Iterable[AccountingRecord], now: float | None = None) -> tuple[int, int]:
    """Store the runs that started; returns (rows new or changed, rows unchanged)."""
    stamp = time.time() if now is None else now
    changed = same = 0
    with db.writing() as conn:
        for r in records:
            if r.start is None or not r.nodes:
                continue              # never ran: nothing to attribute
            row = (r.job_id, r.start.timestamp(), r.job_id_str, r.cluster, r.user, r.account, r.partition,
                   r.state, r.nodes, json.dumps(r.alloc_tres, sort_keys=True), _ts(r.submit), _ts(r.end),
                   r.admin_comment, r.constraints)
            old = conn.execute(
                "SELECT job_id, start, job_id_str, cluster, user, account, partition, state, nodes, tres_json, "
                "submit, \"end\", admin_comment, constraints FROM job_runs WHERE job_id = ? AND start = ?",
                row[:2]).fetchone()
            if old is not None and tuple(old) == row:
                same += 1
                continue
            conn.execute(
                "INSERT INTO job_runs (job_id, start, job_id_str, cluster, user, account, partition, state, nodes, "
                "tres_json, submit, \"end\", admin_comment, constraints, updated_at) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT (job_id, start) DO UPDATE SET "
                "job_id_str=excluded.job_id_str, cluster=excluded.cluster, user=excluded.user, "
                "account=excluded.account, partition=excluded.partition, state=excluded.state, "
                "nodes=excluded.nodes, tres_json=excluded.tres_json, submit=excluded.submit, "
                "\"end\"=excluded.\"end\", admin_comment=excluded.admin_comment, "
                "constraints=excluded.constraints, updated_at=excluded.updated_at", (*row, stamp))
            changed += 1
    return changed, same


def between(db: StateDB, since: float, until: float) -> list[JobRunRow]:
    """Runs that overlap [since, until)."""
    rows = db.read("SELECT * FROM job_runs WHERE start < ? AND (\"end\" IS NULL OR \"end\" > ?) "
                   "ORDER BY start, job_id", (until, since))
    return [JobRunRow(job_id=r["job_id"], job_id_str=r["job_id_str"], cluster=r["cluster"] or "",
                      user=r["user"] or "", account=r["account"] or "", partition=r["partition"] or "",
                      state=r["state"] or "", nodes=r["nodes"] or "", tres=json.loads(r["tres_json"]),
                      submit=r["submit"], start=r["start"], end=r["end"], admin_comment=r["admin_comment"] or "",
                      constraints=r["constraints"] or "") for r in rows]


def count(db: StateDB) -> int:
    return int(db.read("SELECT COUNT(*) AS n FROM job_runs")[0]["n"])


def id_strings(db: StateDB, job_ids: Iterable[int]) -> dict[int, str]:
    """Slurm's numeric job id -> the id people see ("7_3" for an array task)."""
    ids = sorted(set(job_ids))
    out: dict[int, str] = {}
    for i in range(0, len(ids), 500):
        chunk = ids[i:i + 500]
        for r in db.read(f"SELECT DISTINCT job_id, job_id_str FROM job_runs WHERE job_id IN "
                         f"({','.join('?' * len(chunk))})", tuple(chunk)):
            out[r["job_id"]] = r["job_id_str"]
    return out


def get_mark(db: StateDB, key: str = INGEST_MARK) -> float | None:
    rows = db.read("SELECT value FROM meta WHERE key = ?", (key,))
    return float(rows[0]["value"]) if rows else None


def set_mark(db: StateDB, value: float, key: str = INGEST_MARK) -> None:
    with db.writing() as conn:
        conn.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET "
                     "value = excluded.value", (key, repr(float(value))))
