"""State DB: region-selector blocks by scope, and the append-only event log."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from slurm_bridge.state import StateDB


@pytest.fixture
def db(tmp_path: Path):
    with StateDB.open(tmp_path) as sdb:
        yield sdb


# --- blocks --------------------------------------------------------------------

def test_provider_block_covers_every_region_and_zone(db: StateDB):
    db.block(provider="aws", scope="provider", kind="auth", reason="credentials expired",
             seconds=600, now=1000.0)
    for region, zone in [("eu-west-1", None), ("eu-central-1", "eu-central-1b")]:
        hit = db.is_blocked("aws", region, zone, now=1001.0)
        assert hit is not None and (hit.scope, hit.reason, hit.until) == (
            "provider", "credentials expired", 1600.0)
    assert db.is_blocked("gcp", "europe-west4", now=1001.0) is None


def test_region_block_covers_its_zones_only(db: StateDB):
    db.block(provider="aws", scope="region", region="eu-west-1", kind="capacity",
             reason="InsufficientInstanceCapacity", seconds=300, now=0.0)
    assert db.is_blocked("aws", "eu-west-1", now=1.0).scope == "region"
    assert db.is_blocked("aws", "eu-west-1", "eu-west-1c", now=1.0).kind == "capacity"
    assert db.is_blocked("aws", "eu-west-2", "eu-west-2a", now=1.0) is None
    assert db.is_blocked("gcp", "eu-west-1", now=1.0) is None


def test_zone_block_covers_that_zone_only(db: StateDB):
    db.block(provider="aws", scope="zone", region="eu-west-1", zone="eu-west-1a",
             kind="capacity", reason="no p4d", seconds=120, now=0.0)
    assert db.is_blocked("aws", "eu-west-1", "eu-west-1a", now=1.0).zone == "eu-west-1a"
    assert db.is_blocked("aws", "eu-west-1", "eu-west-1b", now=1.0) is None
    # The region as a whole still has other zones.
    assert db.is_blocked("aws", "eu-west-1", now=1.0) is None


def test_blocks_expire(db: StateDB):
    db.block(provider="aws", scope="region", region="eu-west-1", kind="capacity",
             reason="r", seconds=60, now=100.0)
    assert db.is_blocked("aws", "eu-west-1", now=159.9) is not None
    assert db.is_blocked("aws", "eu-west-1", now=160.0) is None
    assert [b.until for b in db.active_blocks(now=159.0)] == [160.0]
    assert db.active_blocks(now=160.0) == []


def test_longest_block_wins_and_expired_ones_are_pruned(db: StateDB):
    db.block(provider="aws", scope="zone", region="r1", zone="r1a", kind="capacity",
             reason="short", seconds=10, now=0.0)
    db.block(provider="aws", scope="region", region="r1", kind="quota",
             reason="long", seconds=100, now=0.0)
    assert db.is_blocked("aws", "r1", "r1a", now=5.0).reason == "long"
    db.block(provider="gcp", scope="provider", kind="auth", reason="later",
             seconds=10, now=50.0)
    reasons = [r[0] for r in db.db.execute("SELECT reason FROM blocks ORDER BY id")]
    assert reasons == ["long", "later"]


@pytest.mark.parametrize("kwargs, message", [
    ({"scope": "planet"}, "scope 'planet'"),
    ({"scope": "region"}, "needs a region"),
    ({"scope": "zone", "region": "r1"}, "needs a zone"),
    ({"scope": "provider", "seconds": 0}, "positive"),
])
def test_block_arguments_are_checked(db: StateDB, kwargs, message):
    args = {"provider": "aws", "kind": "capacity", "reason": "x", "seconds": 60, **kwargs}
    with pytest.raises(ValueError, match=message):
        db.block(**args)
    assert db.active_blocks(now=0.0) == []


# --- events ----------------------------------------------------------------------

def test_events_append_and_filter(db: StateDB):
    db.event("resume.received", node="gpu-1", request_id=None, now=10.0, hostlist="gpu-[1-2]")
    db.event("launch.requested", node="gpu-1", job_id=41, now=11.0,
             client_token="c-1", region="eu-west-1", path=Path("/x"))
    db.event("launch.requested", node="gpu-2", job_id=42, now=12.0, client_token="c-2")
    everything = db.events()
    assert [(e["id"], e["kind"], e["ts"]) for e in everything] == [
        (1, "resume.received", 10.0), (2, "launch.requested", 11.0), (3, "launch.requested", 12.0)]
    assert everything[1]["data"] == {"client_token": "c-1", "region": "eu-west-1", "path": "/x"}
    assert everything[0] == {"id": 1, "ts": 10.0, "kind": "resume.received", "node": "gpu-1",
                             "job_id": None, "request_id": None,
                             "data": {"hostlist": "gpu-[1-2]"}}
    assert everything[1]["job_id"] == 41
    assert [e["id"] for e in db.events(kind="launch.requested")] == [2, 3]
    assert [e["id"] for e in db.events(node="gpu-1")] == [1, 2]
    assert [e["id"] for e in db.events(since=11.5)] == [3]
    assert [e["id"] for e in db.events(kind="launch.requested", node="gpu-1")] == [2]


@pytest.mark.parametrize("key", ["munge_key", "api_secret", "Password", "token",
                                 "access_token", "MUNGE"])
def test_event_refuses_secret_looking_keys(db: StateDB, key: str):
    with pytest.raises(ValueError, match=key):
        db.event("config.loaded", now=1.0, **{key: "hunter2"})
    assert db.events() == []


def test_event_refuses_secrets_nested_in_data(db: StateDB):
    with pytest.raises(ValueError, match=r"provider\.credentials\.session_token"):
        db.event("config.loaded", provider={"credentials": {"session_token": "x"}})
    with pytest.raises(ValueError, match="password"):
        db.event("config.loaded", users=[{"name": "a", "password": "x"}])
    assert db.events() == []


def test_event_log_cannot_be_updated_or_deleted(db: StateDB):
    db.event("suspend.received", node="gpu-1", now=5.0)
    for sql in ("UPDATE events SET kind = 'forged'", "DELETE FROM events"):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            db.db.execute(sql)
    assert [(e["kind"], e["ts"]) for e in db.events()] == [("suspend.received", 5.0)]
