"""The state DB: the bridge's record of every cloud instance that might exist.

Short-lived processes (resume, its launch worker, suspend, the daemon) write it
at once, hence WAL, a long busy timeout and one short transaction per write.
A row is written BEFORE the provider is asked for the instance, so a crash at
any moment leaves a row for anything that may be running and costing money.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from slurm_bridge.errors import BridgeError

from . import crashpoints
from .schema import MIGRATIONS, SCHEMA_VERSION
from .state_files import BROKEN_FILE_CODES, create_private, damage_found, recovery

DB_NAME = "state.db"
BUSY_TIMEOUT_MS = 30_000

REQUEST_KINDS = ("resume", "suspend", "resume_fail", "power_up")
ACTIVE_STATES = ("launching", "running", "terminating")
BLOCK_SCOPES = ("zone", "region", "provider")
_ACTIVE_SQL = f"state IN {ACTIVE_STATES}"
RECENT_REQUESTS = 2000

# Substrings of event keys that suggest a secret; secrets never reach the DB.
_SECRET_WORDS = ("munge", "secret", "password", "token")
_SECRET_ALLOWED = frozenset({"client_token"})  # an idempotency key, not a credential

class StateError(BridgeError):
    """The state DB cannot be used; the message names the file and what to do."""


@dataclass(frozen=True)
class RequestRow:
    id: int
    kind: str
    hostlist: str
    nodes: tuple[str, ...]
    resume_file: dict[str, Any] | None
    received_at: float
    state: str
    finished_at: float | None
    error: str | None
    worker_pid: int | None


@dataclass(frozen=True)
class InstanceRow:
    id: int
    node: str
    pool: str
    provider: str
    region: str
    zone: str | None
    instance_type: str
    price_per_hour: float
    spot: bool
    job_ids: tuple[int, ...]
    request_id: int | None
    client_token: str
    instance_id: str | None
    address: str | None
    state: str
    launched_at: float | None
    running_at: float | None
    terminated_at: float | None
    error: str | None
    created_at: float
    updated_at: float
    account: str | None = None


@dataclass(frozen=True)
class BlockRow:
    id: int
    provider: str
    region: str | None
    zone: str | None
    scope: str
    kind: str
    reason: str
    created_at: float
    until: float




# --- helpers ----------------------------------------------------------------

def _now(now: float | None) -> float:
    return time.time() if now is None else float(now)


def _secret_keys(data: Any, prefix: str = "") -> list[str]:
    found: list[str] = []
    if isinstance(data, dict):
        for key, value in data.items():
            name = str(key).lower()
            if name not in _SECRET_ALLOWED and any(w in name for w in _SECRET_WORDS):
                found.append(f"{prefix}{key}")
            found += _secret_keys(value, f"{prefix}{key}.")
    elif isinstance(data, (list, tuple)):
        for item in data:
            found += _secret_keys(item, prefix)
    return found


def _request(r: dict[str, Any]) -> RequestRow:
    nodes, resume_file = r.pop("nodes_json"), r.pop("resume_file_json")
    return RequestRow(**r, nodes=tuple(json.loads(nodes)),
                      resume_file=json.loads(resume_file) if resume_file else None)


def _instance(r: dict[str, Any]) -> InstanceRow:
    job_ids = tuple(int(j) for j in json.loads(r.pop("job_ids_json")))
    return InstanceRow(**{**r, "spot": bool(r["spot"]), "job_ids": job_ids})


class StateDB:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        create_private(self.path)
        # isolation_level=None: the driver never opens transactions behind our
        # back; every write goes through _write().
        self._conn = sqlite3.connect(str(self.path), isolation_level=None)
        try:
            self._conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self.db = Database(self._conn, execute_plugins=False)
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = NORMAL")
            self._conn.execute("PRAGMA foreign_keys = ON")
            self._migrate()
        except BaseException as exc:
            self._conn.close()
            if (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF in BROKEN_FILE_CODES:
                raise StateError(f"{self.path} is not a usable SQLite database ({exc}); {recovery(self.path)}") from exc
            raise

    @classmethod
    def open(cls, state_dir: Path) -> StateDB:
        state_dir = Path(state_dir)
        if not state_dir.exists():
            state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(state_dir, 0o700)  # mkdir's mode is filtered by the umask
        return cls(state_dir / DB_NAME)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> StateDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        # IMMEDIATE takes the write lock up front and waits busy_timeout for
        # it.  A deferred transaction that reads and then writes fails at once
        # with "database is locked" if another process committed in between.
        crashpoints.point("db: before a write")
        with self._damaged():
            self._conn.execute("BEGIN IMMEDIATE")
            with self._conn:  # COMMIT, or ROLLBACK on any exception
                yield self._conn
        crashpoints.point("db: after a write")

    def _user_version(self) -> int:
        return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    def _check_version(self, version: int) -> int:
        if version > SCHEMA_VERSION:
            raise StateError(
                f"{self.path.name} schema version {version} is newer than this "
                f"slurm-bridge (knows {SCHEMA_VERSION}); upgrade slurm-bridge "
                f"({self.path})")
        return version

    def _migrate(self) -> None:
        if self._check_version(self._user_version()) == SCHEMA_VERSION:
            return
        with self._write():
            # Re-read under the write lock: another process may have migrated.
            version = self._check_version(self._user_version())
            for step in MIGRATIONS[version:]:
                step(self.db)
            self._conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def backup(self, dest: Path) -> None:
        """Consistent copy of the live DB (other writers may carry on)."""
        dest = Path(dest)
        tmp = dest.with_name(dest.name + ".tmp")
        tmp.unlink(missing_ok=True)
        create_private(tmp)
        target = sqlite3.connect(str(tmp))
        try:
            self._conn.backup(target)
            damage = damage_found(target)
        finally:
            target.close()
        if damage:   # the last good backup is what an admin will need: never replace it with this
            tmp.unlink(missing_ok=True)
            raise StateError(f"{self.path} is damaged ({damage}); not copied over the backup {dest}; "
                             + recovery(self.path))
        os.replace(tmp, dest)  # a crash mid-backup never leaves a half-written dest

    def check(self) -> None:
        """Refuse a DB whose pages are damaged: opening it reads only the header and the schema."""
        damage = damage_found(self._conn)
        if damage:
            raise StateError(f"{self.path} is damaged ({damage}); {recovery(self.path)}")

    def _rows(self, sql: str, params: tuple | dict = ()) -> list[dict[str, Any]]:
        # fetchall: an unfinished cursor would pin a WAL read snapshot.
        with self._damaged():
            cur = self._conn.execute(sql, params)
            keys = [d[0] for d in cur.description]
            return [dict(zip(keys, row)) for row in cur.fetchall()]

    @contextmanager
    def _damaged(self) -> Iterator[None]:
        """A damaged page found by a read or write is the same clear error as a damaged file at open."""
        try:
            yield
        except sqlite3.DatabaseError as exc:
            if (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF in BROKEN_FILE_CODES:
                raise StateError(f"{self.path} is damaged ({exc}); {recovery(self.path)}") from exc
            raise

    def _one(self, sql: str, params: tuple | dict = ()) -> dict[str, Any] | None:
        rows = self._rows(sql, params)
        return rows[0] if rows else None

    def _get(self, table: str, row_id: int) -> dict[str, Any]:
        row = self._one(f"SELECT * FROM {table} WHERE id = ?", (row_id,))
        if row is None:
            raise KeyError(f"no row {row_id} in {table} of {self.path}")
        return row

    def _insert(self, table: str, record: dict[str, Any]) -> int:
        return int(self.db.table(table).insert(record).last_rowid)

    def _insert_once(self, match: str, params: tuple, record: dict[str, Any]) -> int:
        """Insert an instance row unless one matches; either way return its id."""
        with self._write():
            existing = self._one(
                f"SELECT id FROM instances WHERE {match} ORDER BY id DESC LIMIT 1", params)
            return int(existing["id"]) if existing else self._insert("instances", record)

    def _update(self, table: str, row_id: int, assignments: str, params: tuple) -> None:
        with self._write():
            cur = self._conn.execute(
                f"UPDATE {table} SET {assignments} WHERE id = ?", (*params, row_id))
            if cur.rowcount != 1:
                raise KeyError(f"no row {row_id} in {table} of {self.path}")

    # --- requests -----------------------------------------------------------

    def add_request(self, kind: str, hostlist: str, nodes: list[str],
                    resume_file: dict[str, Any] | None, now: float | None = None) -> int:
        if kind not in REQUEST_KINDS:
            raise ValueError(f"request kind {kind!r} is not one of {REQUEST_KINDS}")
        with self._write():
            return self._insert("requests", {
                "kind": kind, "hostlist": hostlist, "nodes_json": json.dumps(list(nodes)),
                "resume_file_json": None if resume_file is None else json.dumps(resume_file),
                "received_at": _now(now), "state": "received"})

    def start_request(self, request_id: int, worker_pid: int) -> None:
        self._update("requests", request_id, "state = 'working', worker_pid = ?", (worker_pid,))

    def finish_request(self, request_id: int, error: str | None = None,
                       now: float | None = None) -> None:
        self._update("requests", request_id, "state = ?, error = ?, finished_at = ?",
                     ("done" if error is None else "failed", error, _now(now)))

    def get_request(self, request_id: int) -> RequestRow:
        return _request(self._get("requests", request_id))

    def unfinished_requests(self) -> list[RequestRow]:
        return [_request(r) for r in self._rows(
            "SELECT * FROM requests WHERE state IN ('received', 'working') ORDER BY id")]

    # --- instances ----------------------------------------------------------

    def begin_launch(self, *, node: str, pool: str, provider: str, region: str,
                     zone: str | None, instance_type: str, price_per_hour: float,
                     spot: bool, job_ids: list[int] | tuple[int, ...],
                     request_id: int | None, client_token: str, account: str | None = None,
                     now: float | None = None) -> int:
        """Record an instance about to be requested; call BEFORE the provider."""
        t = _now(now)
        return self._insert_once(
            "client_token = ?", (client_token,), {
                "node": node, "pool": pool, "provider": provider, "region": region,
                "zone": zone, "instance_type": instance_type,
                "price_per_hour": float(price_per_hour), "spot": int(bool(spot)),
                "job_ids_json": json.dumps([int(j) for j in job_ids]),
                "request_id": request_id, "client_token": client_token, "account": account,
                "state": "launching", "created_at": t, "updated_at": t})

    def launched(self, row_id: int, instance_id: str, address: str | None = None,
                 zone: str | None = None, now: float | None = None) -> None:
        t = _now(now)
        self._update("instances", row_id,
                     "instance_id = ?, address = COALESCE(?, address), zone = COALESCE(?, zone), "
                     "launched_at = COALESCE(launched_at, ?), updated_at = ?",
                     (instance_id, address, zone, t, t))

    def mark_running(self, node: str, address: str | None = None,
                     now: float | None = None) -> InstanceRow | None:
        """The node's launching/running row -> running; None if it has none."""
        t = _now(now)
        with self._write():
            row = self._one(
                "SELECT id FROM instances WHERE node = ? AND state IN "
                "('launching', 'running') ORDER BY id DESC LIMIT 1", (node,))
            if row is None:
                return None
            self._conn.execute(
                "UPDATE instances SET state = 'running', address = COALESCE(?, address), "
                "running_at = COALESCE(running_at, ?), updated_at = ? WHERE id = ?",
                (address, t, t, row["id"]))
        return self.get_instance(row["id"])

    def launch_failed(self, row_id: int, error: str, now: float | None = None) -> None:
        # Without launched_at the instance never existed: its billing interval
        # collapses to [terminated_at, terminated_at] (see instances()).
        t = _now(now)
        self._update("instances", row_id, "state = 'failed', error = ?, "
                     "terminated_at = COALESCE(terminated_at, ?), updated_at = ?", (error, t, t))

    def begin_terminate(self, node: str, now: float | None = None) -> list[InstanceRow]:
        """The node's launching/running rows -> terminating, returned for the provider call."""
        t = _now(now)
        with self._write():
            ids = [r["id"] for r in self._rows(
                "SELECT id FROM instances WHERE node = ? AND state IN "
                "('launching', 'running') ORDER BY id", (node,))]
            self._conn.executemany(
                "UPDATE instances SET state = 'terminating', updated_at = ? WHERE id = ?",
                [(t, i) for i in ids])
        return [self.get_instance(i) for i in ids]

    def terminated(self, row_id: int, now: float | None = None) -> None:
        t = _now(now)
        self._update("instances", row_id, "state = 'terminated', "
                     "terminated_at = COALESCE(terminated_at, ?), updated_at = ?", (t, t))

    def adopt(self, *, node: str, pool: str, provider: str, region: str,
              instance_id: str, instance_type: str, price_per_hour: float, spot: bool,
              address: str | None, launched_at: float | None,
              now: float | None = None) -> int:
        """Record an instance found by provider tags that the DB does not know."""
        t, token = _now(now), f"adopted:{provider}:{instance_id}"
        # running_at stays NULL: when slurmd first registered is unknown, and a
        # guess would distort boot-time figures.
        return self._insert_once(
            "client_token = ? OR (provider = ? AND instance_id = ?)",
            (token, provider, instance_id), {
                "node": node, "pool": pool, "provider": provider, "region": region,
                "instance_type": instance_type, "price_per_hour": float(price_per_hour),
                "spot": int(bool(spot)), "job_ids_json": "[]", "client_token": token,
                "instance_id": instance_id, "address": address, "state": "running",
                "launched_at": launched_at, "created_at": t, "updated_at": t})

    def get_instance(self, row_id: int) -> InstanceRow:
        return _instance(self._get("instances", row_id))

    def active_instances(self, provider: str | None = None) -> list[InstanceRow]:
        sql = f"SELECT * FROM instances WHERE {_ACTIVE_SQL}"
        params: tuple = ()
        if provider is not None:
            sql, params = sql + " AND provider = ?", (provider,)
        return [_instance(r) for r in self._rows(sql + " ORDER BY id", params)]

    def active_for_node(self, node: str) -> InstanceRow | None:
        row = self._one(f"SELECT * FROM instances WHERE node = ? AND {_ACTIVE_SQL} "
                        "ORDER BY id DESC LIMIT 1", (node,))
        return None if row is None else _instance(row)

    def instances(self, since: float | None = None,
                  until: float | None = None) -> list[InstanceRow]:
        """Rows whose lifetime overlaps [since, until] (either end open if None).

        A row lives from launched_at (created_at while the provider has not
        answered; terminated_at if it never existed) to terminated_at, or
        is still alive if that is NULL.
        """
        return [_instance(r) for r in self._rows(
            "SELECT * FROM instances WHERE "
            "(:until IS NULL OR COALESCE(launched_at, terminated_at, created_at) <= :until) "
            "AND (:since IS NULL OR terminated_at IS NULL OR terminated_at >= :since) "
            "ORDER BY id", {"since": since, "until": until})]

    def find_by_instance_id(self, provider: str, instance_id: str) -> InstanceRow | None:
        row = self._one("SELECT * FROM instances WHERE provider = ? AND instance_id = ? "
                        "ORDER BY id DESC LIMIT 1", (provider, instance_id))
        return None if row is None else _instance(row)

    # --- events -------------------------------------------------------------

    def event(self, kind: str, *, node: str | None = None, job_id: int | None = None,
              request_id: int | None = None, now: float | None = None,
              **data: Any) -> None:
        secret = _secret_keys(data)
        if secret:
            raise ValueError(f"event {kind!r}: refusing keys that look like secrets: "
                             f"{', '.join(secret)}")
        with self._write():
            self._insert("events", {
                "ts": _now(now), "kind": kind, "node": node, "job_id": job_id,
                "request_id": request_id,
                "data_json": json.dumps(data, sort_keys=True, default=str)})

    def events(self, kind: str | None = None, node: str | None = None,
               since: float | None = None, after_id: int = 0) -> list[dict[str, Any]]:
        rows = self._rows(
            "SELECT * FROM events WHERE (:kind IS NULL OR kind = :kind) "
            "AND (:node IS NULL OR node = :node) AND (:since IS NULL OR ts >= :since) AND id > :after "
            "ORDER BY id", {"kind": kind, "node": node, "since": since, "after": after_id})
        for r in rows:
            r["data"] = json.loads(r.pop("data_json"))
        return rows

    # --- blocks -------------------------------------------------------------

    def block(self, *, provider: str, scope: str, kind: str, reason: str,
              region: str | None = None, zone: str | None = None,
              seconds: float, now: float | None = None) -> None:
        if scope not in BLOCK_SCOPES:
            raise ValueError(f"block scope {scope!r} is not one of {BLOCK_SCOPES}")
        if scope in ("zone", "region") and not region:
            raise ValueError(f"a {scope} block needs a region")
        if scope == "zone" and not zone:
            raise ValueError("a zone block needs a zone")
        if seconds <= 0:
            raise ValueError(f"block seconds must be positive, got {seconds}")
        t = _now(now)
        with self._write():
            self._conn.execute("DELETE FROM blocks WHERE until <= ?", (t,))
            self._insert("blocks", {
                "provider": provider, "region": region, "zone": zone, "scope": scope,
                "kind": kind, "reason": reason, "created_at": t, "until": t + float(seconds)})

    def active_blocks(self, now: float | None = None) -> list[BlockRow]:
        return [BlockRow(**r) for r in self._rows(
            "SELECT * FROM blocks WHERE until > ? ORDER BY id", (_now(now),))]

    def set_prices(self, rows: list[dict[str, Any]], source: str, now: float | None = None) -> int:
        """Upsert price rows (provider, region, instance_type, ondemand, spot); returns how many."""
        stamp = _now(now)
        with self._write():
            for r in rows:
                self._conn.execute(
                    "INSERT INTO prices (provider, region, instance_type, ondemand, spot, source, updated_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (provider, region, instance_type) DO UPDATE SET "
                    "ondemand = COALESCE(excluded.ondemand, ondemand), spot = COALESCE(excluded.spot, spot), "
                    "source = excluded.source, updated_at = excluded.updated_at",
                    (r["provider"], r["region"], r["instance_type"], r.get("ondemand"), r.get("spot"),
                     source, stamp))
        return len(rows)

    def spend_by_account(self, since: float, until: float | None = None, *, closed_by: float | None = None,
                         alive_after: float | None = None) -> dict[str, float]:
        """USD of every instance interval inside [since, until), by the account that caused it.

        CLOSED_BY keeps only rows terminated at or before it; ALIVE_AFTER only rows still alive, or
        terminated, after it. The two split the rows exactly, so a caller can sum closed rows once
        and add the live ones each cycle."""
        end = _now(until)
        which = "terminated_at IS NULL OR terminated_at > :since"
        if closed_by is not None:
            which = "terminated_at > :since AND terminated_at <= :closed_by"
        elif alive_after is not None:
            # Two index lookups on terminated_at rather than a scan of every row ever closed.
            which = "id IN (SELECT id FROM instances WHERE terminated_at IS NULL UNION ALL " \
                    "SELECT id FROM instances WHERE terminated_at > MAX(:since, :alive_after))"
        rows = self._rows(
            "SELECT COALESCE(account, '') AS account, SUM(MAX(0.0, MIN(COALESCE(terminated_at, :end), :end) "
            "- MAX(launched_at, :since)) * price_per_hour) / 3600.0 AS usd FROM instances "
            f"WHERE launched_at IS NOT NULL AND launched_at < :end AND ({which}) GROUP BY 1",
            {"end": end, "since": since, "closed_by": closed_by, "alive_after": alive_after})
        return {r["account"]: float(r["usd"] or 0.0) for r in rows}

    def count_active(self) -> dict[tuple[str, str], int]:
        """(provider, region) -> instances launching, up or terminating: without reading the rows."""
        rows = self._rows(f"SELECT provider, region, COUNT(*) AS n FROM instances WHERE {_ACTIVE_SQL} "
                          "GROUP BY provider, region")
        return {(r["provider"], r["region"]): r["n"] for r in rows}

    # --- for the other stores of this layer (job_runs.py) -----------------------

    def read(self, sql: str, params: tuple | dict = ()) -> list[dict[str, Any]]:
        return self._rows(sql, params)

    def writing(self):
        """A write transaction (BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on an exception)."""
        return self._write()

    def high_water(self) -> tuple[int, int]:
        """(newest event id, newest instance id): where a reader of new rows starts."""
        row = self._one("SELECT (SELECT COALESCE(MAX(id), 0) FROM events) AS e, "
                        "(SELECT COALESCE(MAX(id), 0) FROM instances) AS i")
        return int(row["e"]), int(row["i"])

    def failed_since(self, after_id: int) -> list[InstanceRow]:
        """Failed instance rows with an id above AFTER_ID (the metrics' high-water mark)."""
        return [_instance(r) for r in self._rows("SELECT * FROM instances WHERE state = 'failed' AND id > ? "
                                                 "ORDER BY id", (after_id,))]

    def last_request_times(self, nodes: list[str], kinds: tuple[str, ...]) -> dict[str, float]:
        """Node -> when the newest request of one of KINDS naming it was received."""
        if not nodes:
            return {}
        # The nodes asked about are almost always named by one of the newest requests: look there
        # first, and search the whole table only for the nodes not found.
        found = self._request_times(nodes, kinds, recent=RECENT_REQUESTS)
        missing = [n for n in nodes if n not in found]
        if missing:
            found.update(self._request_times(missing, kinds, recent=None))
        return found

    def _request_times(self, nodes: list[str], kinds: tuple[str, ...], recent: int | None) -> dict[str, float]:
        source = "requests" if recent is None else f"(SELECT * FROM requests ORDER BY id DESC LIMIT {int(recent)})"
        sql = (f"SELECT j.value AS node, MAX(r.received_at) AS at FROM {source} r, json_each(r.nodes_json) j "
               f"WHERE r.kind IN ({','.join('?' * len(kinds))}) AND j.value IN ({','.join('?' * len(nodes))}) "
               "GROUP BY j.value")
        return {r["node"]: float(r["at"]) for r in self._rows(sql, tuple(kinds) + tuple(nodes))}

    def prices(self) -> list[dict[str, Any]]:
        return self._rows("SELECT * FROM prices ORDER BY provider, region, instance_type")

    def is_blocked(self, provider: str, region: str, zone: str | None = None,
                   now: float | None = None) -> BlockRow | None:
        """The longest-lasting block covering provider/region(/zone), if any."""
        row = self._one(
            "SELECT * FROM blocks WHERE until > :now AND provider = :provider AND ("
            " scope = 'provider'"
            " OR (scope = 'region' AND region = :region)"
            " OR (scope = 'zone' AND region = :region AND zone = :zone))"
            " ORDER BY until DESC, id DESC LIMIT 1",
            {"now": _now(now), "provider": provider, "region": region, "zone": zone})
        return None if row is None else BlockRow(**row)
