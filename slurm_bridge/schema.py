"""The state DB's schema: one migration per version, applied in order by `StateDB`.

A migration only ever adds (tables, columns, indexes); `PRAGMA user_version` says how many ran.
"""

from __future__ import annotations

from typing import Callable

from sqlite_utils import Database


def _v1(db: Database) -> None:
    db["requests"].create(
        {"id": int, "kind": str, "hostlist": str, "nodes_json": str,
         "resume_file_json": str, "received_at": float, "state": str,
         "finished_at": float, "error": str, "worker_pid": int},
        pk="id",
        not_null=["kind", "hostlist", "nodes_json", "received_at", "state"],
        defaults={"state": "received", "nodes_json": "[]"},
    )
    db["requests"].create_index(["state"])
    db["instances"].create(
        {"id": int, "node": str, "pool": str, "provider": str, "region": str,
         "zone": str, "instance_type": str, "price_per_hour": float, "spot": int,
         "job_ids_json": str, "request_id": int, "client_token": str,
         "instance_id": str, "address": str, "state": str, "launched_at": float,
         "running_at": float, "terminated_at": float, "error": str,
         "created_at": float, "updated_at": float},
        pk="id",
        not_null=["node", "pool", "provider", "region", "instance_type",
                  "price_per_hour", "spot", "job_ids_json", "client_token",
                  "state", "created_at", "updated_at"],
        defaults={"spot": 0, "job_ids_json": "[]", "state": "launching"},
        foreign_keys=[("request_id", "requests", "id")],
    )
    db["instances"].create_index(["client_token"], unique=True)
    db["instances"].create_index(["node", "state"])
    db["instances"].create_index(["instance_id"])
    db["instances"].create_index(["state"])
    db["events"].create(
        {"id": int, "ts": float, "kind": str, "node": str, "job_id": int,
         "request_id": int, "data_json": str},
        pk="id",
        not_null=["ts", "kind", "data_json"],
        defaults={"data_json": "{}"},
    )
    db["events"].create_index(["kind", "ts"])
    db["events"].create_index(["node", "ts"])
    # The log is evidence of what the bridge did; the schema, not only the
    # API, keeps it append-only.
    for op in ("UPDATE", "DELETE"):
        db.execute(
            f"CREATE TRIGGER events_no_{op.lower()} BEFORE {op} ON events "
            "BEGIN SELECT RAISE(ABORT, 'events is append-only'); END"
        )
    db["blocks"].create(
        {"id": int, "provider": str, "region": str, "zone": str, "scope": str,
         "kind": str, "reason": str, "created_at": float, "until": float},
        pk="id",
        not_null=["provider", "scope", "kind", "reason", "created_at", "until"],
    )
    db["blocks"].create_index(["provider", "until"])


def _v2(db: Database) -> None:
    # Hourly prices per (provider, region, instance type): imported tables and refreshed spot prices.
    db["prices"].create(
        {"provider": str, "region": str, "instance_type": str, "ondemand": float, "spot": float,
         "source": str, "updated_at": float},
        pk=("provider", "region", "instance_type"),
        not_null=["provider", "region", "instance_type", "source", "updated_at"],
    )


def _v3(db: Database) -> None:
    # The account whose job caused the launch: budgets are checked against it before sacct knows.
    db["instances"].add_column("account", str)


def _v4(db: Database) -> None:
    # The daemon sums this month's spend every watch cycle: find the rows alive this month without
    # reading 60 days of closed ones.
    db["instances"].create_index(["terminated_at"])


def _v5(db: Database) -> None:
    # Job runs read from sacct, for cost attribution: one row per run (a requeued job has several).
    db["job_runs"].create(
        {"job_id": int, "start": float, "job_id_str": str, "cluster": str, "user": str, "account": str,
         "partition": str, "state": str, "nodes": str, "tres_json": str, "submit": float, "end": float,
         "admin_comment": str, "constraints": str, "updated_at": float},
        pk=("job_id", "start"),
        not_null=["job_id", "start", "job_id_str", "tres_json", "updated_at"],
        defaults={"tres_json": "{}"},
    )
    db["job_runs"].create_index(["end"])
    db["job_runs"].create_index(["start"])
    # Small named values that must survive restarts: the sacct ingest's high-water mark.
    db["meta"].create({"key": str, "value": str}, pk="key", not_null=["value"])


MIGRATIONS: list[Callable[[Database], None]] = [_v1, _v2, _v3, _v4, _v5]
SCHEMA_VERSION = len(MIGRATIONS)
