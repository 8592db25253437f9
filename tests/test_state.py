"""The state DB on real SQLite files: schema, safety, and the instance lifecycle."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import stat
from pathlib import Path

import pytest

from slurm_bridge import schema, state, state_files
from slurm_bridge.errors import BridgeError
from slurm_bridge.state import StateDB, StateError


@pytest.fixture
def db(tmp_path: Path):
    with StateDB.open(tmp_path / "state") as sdb:
        yield sdb


def launch(sdb: StateDB, node: str = "gpu-1", token: str = "tok-1", *,
           provider: str = "aws", request_id: int | None = None,
           now: float = 100.0) -> int:
    return sdb.begin_launch(
        node=node, pool="a100", provider=provider, region="eu-west-1",
        zone="eu-west-1a", instance_type="p4d.24xlarge", price_per_hour=32.77,
        spot=False, job_ids=[41, 42], request_id=request_id, client_token=token, now=now)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- opening, migrations, corruption, permissions ---------------------------

def test_fresh_db_is_at_the_current_version_in_wal_with_pragmas(db: StateDB):
    raw = sqlite3.connect(db.path)
    assert raw.execute("PRAGMA user_version").fetchone()[0] == state.SCHEMA_VERSION == len(state.MIGRATIONS)
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert set(db.db.table_names()) == {"requests", "instances", "events", "blocks", "prices", "job_runs", "meta"}
    indexed = {tuple(i.columns) for i in db.db.table("instances").indexes}
    assert {("node", "state"), ("instance_id",), ("state",), ("client_token",)} <= indexed
    assert db.db.execute("PRAGMA busy_timeout").fetchone()[0] == 30_000
    raw.close()


def test_foreign_keys_are_enforced(db: StateDB):
    with pytest.raises(sqlite3.IntegrityError):
        launch(db, request_id=999)
    assert db.active_instances() == []


def test_reopen_runs_no_migration_and_keeps_rows(tmp_path: Path, monkeypatch):
    with StateDB.open(tmp_path) as sdb:
        rid = sdb.add_request("resume", "gpu-[1-2]", ["gpu-1", "gpu-2"], None, now=5.0)

    def must_not_run(db):
        raise AssertionError("migration re-run on an up-to-date DB")

    monkeypatch.setattr(state, "MIGRATIONS", [must_not_run])
    with StateDB.open(tmp_path) as sdb:
        assert sdb.get_request(rid).nodes == ("gpu-1", "gpu-2")
        assert sdb.db.execute("PRAGMA user_version").fetchone()[0] == state.SCHEMA_VERSION


def test_pending_migrations_apply_in_order_and_roll_back_on_failure(tmp_path, monkeypatch):
    # Start from a version-1 database, whatever the current schema is.
    monkeypatch.setattr(state, "MIGRATIONS", [schema._v1])
    monkeypatch.setattr(state, "SCHEMA_VERSION", 1)
    StateDB.open(tmp_path).close()

    def v2_broken(db):
        db.table("instances").add_column("rack", str)
        raise RuntimeError("half-way")

    monkeypatch.setattr(state, "MIGRATIONS", [schema._v1, v2_broken])
    monkeypatch.setattr(state, "SCHEMA_VERSION", 2)
    with pytest.raises(RuntimeError, match="half-way"):
        StateDB.open(tmp_path)
    raw = sqlite3.connect(tmp_path / "state.db")
    assert raw.execute("PRAGMA user_version").fetchone()[0] == 1
    assert "rack" not in [r[1] for r in raw.execute("PRAGMA table_info(instances)")]
    raw.close()

    def v2(db):
        db.table("instances").add_column("rack", str)

    monkeypatch.setattr(state, "MIGRATIONS", [schema._v1, v2])
    with StateDB.open(tmp_path) as sdb:
        assert sdb.db.execute("PRAGMA user_version").fetchone()[0] == 2
        assert "rack" in sdb.db.table("instances").columns_dict


def test_newer_schema_is_refused(tmp_path: Path):
    StateDB.open(tmp_path).close()
    raw = sqlite3.connect(tmp_path / "state.db")
    raw.execute("PRAGMA user_version = 70")
    raw.close()
    with pytest.raises(StateError, match=r"state\.db schema version 70 is newer than "
                                         rf"this slurm-bridge \(knows {state.SCHEMA_VERSION}\)"):
        StateDB.open(tmp_path)


@pytest.mark.parametrize("garbage", [b"not a database\n" * 200, b"\x00\xffjunk"])
def test_corrupt_file_is_refused_and_left_untouched(tmp_path: Path, garbage: bytes):
    path = tmp_path / "state.db"
    path.write_bytes(garbage)
    with pytest.raises(StateError) as err:
        StateDB.open(tmp_path)
    msg = str(err.value)
    assert str(path) in msg
    assert "restore it from a backup" in msg and "move it aside" in msg and "provider tags" in msg
    assert isinstance(err.value, BridgeError)
    assert path.read_bytes() == garbage


def damage_a_table_page(tmp_path: Path) -> Path:
    """A DB whose header and schema are sound but pages in the middle are garbage, as a bad
    disk sector or a torn write leaves it. Opening it works; reading that page does not."""
    with StateDB.open(tmp_path) as db:
        for i in range(3000):
            db.event("filler", job_id=i, note="x" * 50)
    raw = sqlite3.connect(tmp_path / "state.db")
    raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page_size = raw.execute("PRAGMA page_size").fetchone()[0]
    raw.close()
    path = tmp_path / "state.db"
    data = bytearray(path.read_bytes())
    first, last = len(data) * 2 // 5 // page_size, len(data) * 3 // 5 // page_size
    for page in range(first, last):     # every b-tree (rows and indexes) has pages in there
        data[page * page_size:(page + 1) * page_size] = b"\xff" * page_size
    path.write_bytes(bytes(data))
    return path


def test_a_damaged_page_is_a_clear_error_not_a_raw_sqlite_one(tmp_path: Path):
    path = damage_a_table_page(tmp_path)
    with StateDB.open(tmp_path) as db:       # the header and schema are fine
        with pytest.raises(StateError, match=r"state\.db is damaged .*move it aside"):
            db.check()
        with pytest.raises(StateError, match=r"is damaged \(database disk image is malformed\)") as err:
            db.read("SELECT * FROM events")
        assert str(path) in str(err.value) and "provider tags" in str(err.value)


def test_a_damaged_db_never_replaces_the_last_good_backup(tmp_path: Path):
    with StateDB.open(tmp_path) as db:
        db.event("before", job_id=1)
        db.backup(state_files.backup_path(db.path))
    backup = state_files.backup_path(tmp_path / "state.db")
    good = backup.read_bytes()
    damage_a_table_page(tmp_path)
    with StateDB.open(tmp_path) as db:
        with pytest.raises(StateError, match="not copied over the backup"):
            db.backup(backup)
    assert backup.read_bytes() == good
    assert not list(tmp_path.glob("*.tmp")), "the damaged copy is not left behind"


def test_a_corrupt_db_names_the_daemons_backup_which_opens_with_the_rows(tmp_path: Path):
    with StateDB.open(tmp_path) as db:
        row = db.begin_launch(node="a-0", pool="a", provider="aws", region="eu-west-1", zone=None,
                              instance_type="t", price_per_hour=1.0, spot=False, job_ids=[7], request_id=None,
                              client_token="tok-1", account=None)
        db.backup(state_files.backup_path(db.path))
    path = tmp_path / "state.db"
    for suffix in ("-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    path.write_bytes(b"\x00" * 4096)
    with pytest.raises(StateError) as err:
        StateDB.open(tmp_path)
    backup = state_files.backup_path(path)
    assert f"copy the daemon's backup {backup}" in str(err.value)
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    path.unlink()
    backup.rename(path)      # what the message tells the admin to do
    with StateDB.open(tmp_path) as db:
        assert [r.id for r in db.instances()] == [row]


def test_dir_is_0700_and_files_0600_whatever_the_umask(tmp_path: Path):
    old = os.umask(0)
    try:
        with StateDB.open(tmp_path / "deep" / "state") as sdb:
            sdb.add_request("resume", "gpu-1", ["gpu-1"], None)
            wal = sdb.path.with_name("state.db-wal")
            assert wal.exists() and mode(wal) == 0o600
        assert mode(tmp_path / "deep" / "state") == 0o700
        assert mode(tmp_path / "deep" / "state" / "state.db") == 0o600
    finally:
        os.umask(old)


def test_a_db_that_root_creates_in_slurms_state_dir_belongs_to_slurm():
    """An admin's first `slurm-bridge status` as root must not lock the programs (SlurmUser) out."""
    import pwd
    import shutil
    import subprocess
    import tempfile

    slurm = pwd.getpwnam("slurm")       # Debian's slurm-wlm makes this user; the tests run as root
    top = Path(tempfile.mkdtemp(dir="/var/tmp", prefix="sb-owner-"))   # pytest's tmp is root's alone
    try:
        os.chmod(top, 0o755)
        state = top / "state"
        state.mkdir(mode=0o700)
        os.chown(state, slurm.pw_uid, slurm.pw_gid)
        with StateDB.open(state) as sdb:
            sdb.add_request("resume", "gpu-1", ["gpu-1"], None)
            owners = {p.name: p.stat().st_uid for p in state.iterdir()}
            assert {"state.db", "state.db-wal", "state.db-shm"} <= set(owners)
            assert set(owners.values()) == {slurm.pw_uid}, owners
            # While root holds it open, a process running as slurm writes to it (Debian's own python3 and
            # sqlite3: the venv's interpreter may live where slurm cannot read).
            code = ("import sqlite3, sys; c = sqlite3.connect(sys.argv[1], isolation_level=None); "
                    "c.execute('PRAGMA busy_timeout = 5000'); "
                    "c.execute('CREATE TABLE probe (x)'); c.execute('INSERT INTO probe VALUES (1)')")
            done = subprocess.run(["setpriv", f"--reuid={slurm.pw_uid}", f"--regid={slurm.pw_gid}", "--clear-groups",
                                   "/usr/bin/python3", "-c", code, str(state / "state.db")],
                                  capture_output=True, text=True)
            assert done.returncode == 0, done.stderr
    finally:
        shutil.rmtree(top)


# --- requests ----------------------------------------------------------------

def test_request_lifecycle(db: StateDB):
    resume_file = {"all_nodes_resume": "gpu-[1-2]", "jobs": [{"job_id": 41}]}
    a = db.add_request("resume", "gpu-[1-2]", ["gpu-1", "gpu-2"], resume_file, now=10.0)
    b = db.add_request("suspend", "gpu-3", ["gpu-3"], None, now=11.0)
    c = db.add_request("power_up", "gpu-4", ["gpu-4"], None, now=12.0)
    db.start_request(a, worker_pid=4242)
    got = db.get_request(a)
    assert (got.kind, got.state, got.worker_pid, got.received_at) == ("resume", "working", 4242, 10.0)
    assert got.nodes == ("gpu-1", "gpu-2") and got.resume_file == resume_file
    db.finish_request(a, now=20.0)
    db.finish_request(b, error="provider said no", now=21.0)
    assert (db.get_request(a).state, db.get_request(a).finished_at) == ("done", 20.0)
    failed = db.get_request(b)
    assert (failed.state, failed.error, failed.finished_at) == ("failed", "provider said no", 21.0)
    assert [r.id for r in db.unfinished_requests()] == [c]


def test_request_kind_is_checked_and_unknown_ids_raise(db: StateDB):
    with pytest.raises(ValueError, match="kind 'reboot'"):
        db.add_request("reboot", "gpu-1", ["gpu-1"], None)
    with pytest.raises(KeyError):
        db.finish_request(12345)
    with pytest.raises(KeyError):
        db.get_request(12345)


# --- instances -----------------------------------------------------------------

def test_launch_lifecycle_with_timestamps(db: StateDB):
    rid = db.add_request("resume", "gpu-1", ["gpu-1"], None, now=99.0)
    row_id = launch(db, request_id=rid, now=100.0)
    # Committed before the provider is asked: another process sees it at once.
    with StateDB(db.path) as other:
        seen = other.active_for_node("gpu-1")
    assert seen is not None and seen.id == row_id and seen.state == "launching"
    assert seen.instance_id is None and seen.launched_at is None
    assert (seen.created_at, seen.updated_at, seen.job_ids, seen.spot) == (100.0, 100.0, (41, 42), False)

    db.launched(row_id, "i-0abc", address="10.0.0.5", zone="eu-west-1b", now=104.0)
    row = db.get_instance(row_id)
    assert (row.state, row.instance_id, row.address, row.zone) == ("launching", "i-0abc", "10.0.0.5", "eu-west-1b")
    assert (row.launched_at, row.updated_at) == (104.0, 104.0)

    assert db.mark_running("gpu-1", now=160.0).state == "running"
    db.mark_running("gpu-1", address="10.0.0.6", now=170.0)
    row = db.get_instance(row_id)
    assert (row.running_at, row.updated_at, row.address) == (160.0, 170.0, "10.0.0.6")

    rows = db.begin_terminate("gpu-1", now=300.0)
    assert [(r.id, r.state, r.updated_at) for r in rows] == [(row_id, "terminating", 300.0)]
    assert db.active_for_node("gpu-1").state == "terminating"
    assert db.begin_terminate("gpu-1", now=301.0) == []

    db.terminated(row_id, now=310.0)
    db.terminated(row_id, now=320.0)
    row = db.get_instance(row_id)
    assert (row.state, row.terminated_at, row.launched_at, row.running_at) == ("terminated", 310.0, 104.0, 160.0)
    assert db.active_for_node("gpu-1") is None
    assert db.active_instances() == []
    assert db.mark_running("gpu-1", now=400.0) is None


def test_launch_failed_has_zero_length_interval(db: StateDB):
    row_id = launch(db, now=10.0)
    db.launch_failed(row_id, "InsufficientInstanceCapacity", now=12.0)
    row = db.get_instance(row_id)
    assert (row.state, row.error, row.launched_at, row.terminated_at) == (
        "failed", "InsufficientInstanceCapacity", None, 12.0)
    assert db.active_for_node("gpu-1") is None
    assert db.instances(since=10.0, until=11.9) == []
    assert [r.id for r in db.instances(since=11.0, until=13.0)] == [row_id]


def test_begin_launch_is_idempotent_by_client_token(db: StateDB):
    first = launch(db, token="cluster-a-gpu-1-7", now=10.0)
    again = db.begin_launch(
        node="other", pool="x", provider="gcp", region="europe-west4", zone=None,
        instance_type="a2", price_per_hour=1.0, spot=True, job_ids=[], request_id=None,
        client_token="cluster-a-gpu-1-7", now=20.0)
    assert again == first
    rows = db.instances()
    assert len(rows) == 1 and (rows[0].node, rows[0].created_at) == ("gpu-1", 10.0)
    assert launch(db, token="cluster-a-gpu-1-8", now=30.0) != first


def test_begin_terminate_takes_every_live_row_of_the_node_only(db: StateDB):
    a = launch(db, "gpu-1", "t1", now=1.0)
    b = launch(db, "gpu-1", "t2", now=2.0)
    db.mark_running("gpu-1", now=3.0)  # the newest row
    c = launch(db, "gpu-2", "t3", now=4.0)
    assert db.get_instance(b).state == "running" and db.get_instance(a).state == "launching"
    assert [r.id for r in db.begin_terminate("gpu-1", now=5.0)] == [a, b]
    assert [(r.id, r.state) for r in db.active_instances()] == [
        (a, "terminating"), (b, "terminating"), (c, "launching")]


def test_active_instances_by_provider_and_find_by_instance_id(db: StateDB):
    a = launch(db, "gpu-1", "t1", provider="aws")
    g = launch(db, "gpu-2", "t2", provider="gcp")
    db.launched(g, "1234567890", now=101.0)
    assert [r.id for r in db.active_instances("gcp")] == [g]
    assert [r.id for r in db.active_instances()] == [a, g]
    assert db.find_by_instance_id("gcp", "1234567890").id == g
    assert db.find_by_instance_id("aws", "1234567890") is None


def test_instances_overlapping_a_period(db: StateDB):
    early = launch(db, "n1", "t1", now=0.0)
    db.launched(early, "i-1", now=1.0)
    db.terminated(early, now=50.0)
    late = launch(db, "n2", "t2", now=60.0)
    db.launched(late, "i-2", now=61.0)
    pending = launch(db, "n3", "t3", now=70.0)  # provider has not answered yet
    assert [r.id for r in db.instances()] == [early, late, pending]
    assert [r.id for r in db.instances(since=0.0, until=55.0)] == [early]
    assert [r.id for r in db.instances(since=55.0, until=65.0)] == [late]
    assert [r.id for r in db.instances(since=51.0)] == [late, pending]
    assert [r.id for r in db.instances(until=0.5)] == []


def test_adopt_is_idempotent_and_respects_known_instances(db: StateDB):
    a = db.adopt(node="gpu-9", pool="a100", provider="aws", region="eu-west-1",
                 instance_id="i-lost", instance_type="p4d.24xlarge", price_per_hour=32.77,
                 spot=True, address="10.0.0.9", launched_at=50.0, now=500.0)
    again = db.adopt(node="gpu-9", pool="a100", provider="aws", region="eu-west-1",
                     instance_id="i-lost", instance_type="p4d.24xlarge", price_per_hour=32.77,
                     spot=True, address="10.0.0.9", launched_at=50.0, now=600.0)
    assert again == a
    row = db.get_instance(a)
    assert (row.client_token, row.state, row.launched_at, row.running_at) == (
        "adopted:aws:i-lost", "running", 50.0, None)
    assert (row.spot, row.job_ids, row.created_at) == (True, (), 500.0)

    known = launch(db, "gpu-1", "t1", now=10.0)
    db.launched(known, "i-known", now=11.0)
    assert db.adopt(node="gpu-1", pool="a100", provider="aws", region="eu-west-1",
                    instance_id="i-known", instance_type="p4d.24xlarge", price_per_hour=1.0,
                    spot=False, address=None, launched_at=11.0, now=700.0) == known
    assert len(db.instances()) == 2


def test_backup_is_a_readable_private_copy(db: StateDB, tmp_path: Path):
    launch(db, now=1.0)
    db.event("launch.requested", node="gpu-1", now=1.0)
    dest = tmp_path / "backups" / "state-1.db"
    dest.parent.mkdir()
    db.backup(dest)
    launch(db, "gpu-2", "t2", now=2.0)  # after the backup: not in it
    assert mode(dest) == 0o600
    with StateDB(dest) as copy:
        assert [r.node for r in copy.instances()] == ["gpu-1"]
        assert [e["kind"] for e in copy.events()] == ["launch.requested"]
    assert not dest.with_name("state-1.db.tmp").exists()


# --- two writers ---------------------------------------------------------------

def _launch_many(path: str, tag: str, barrier, count: int) -> None:
    with StateDB(Path(path)) as sdb:
        barrier.wait()
        for i in range(count):
            row_id = sdb.begin_launch(
                node=f"{tag}-{i}", pool="p", provider="aws", region="r", zone=None,
                instance_type="t", price_per_hour=1.0, spot=False, job_ids=[i],
                request_id=None, client_token=f"{tag}-{i}")
            sdb.launched(row_id, f"i-{tag}-{i}")


def test_two_processes_write_concurrently(tmp_path: Path):
    path = tmp_path / "state.db"  # neither process finds a DB: both race to create it
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_launch_many, args=(str(path), tag, barrier, 200))
             for tag in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]
    with StateDB(path) as sdb:
        rows = sdb.active_instances()
        assert len(rows) == 400
        assert {r.client_token for r in rows} == {f"{t}-{i}" for t in "ab" for i in range(200)}
        assert all(r.instance_id == f"i-{r.client_token}" for r in rows)
        assert sdb.db.execute("PRAGMA user_version").fetchone()[0] == state.SCHEMA_VERSION


def test_spend_by_account_sums_overlap_and_splits_exactly_at_a_cut(db: StateDB):
    # 32.77 USD/h each: closed at 3,700 (before the cut), closed at 7,300 (after it), still running.
    rows = []
    for i, (start, end) in enumerate([(100.0, 3700.0), (3700.0, 7300.0), (5000.0, None)]):
        row = launch(db, f"n{i}", f"t{i}", now=start)
        db.launched(row, f"i-{i}", now=start)
        if end is not None:
            db.terminated(row, now=end)
        rows.append(row)
    db.db.execute("UPDATE instances SET account = 'physics'")
    hour = 32.77
    full = db.spend_by_account(0.0, 9000.0)
    assert full["physics"] == pytest.approx(hour * (1.0 + 1.0 + 4000 / 3600))
    # A month starting at 2,000 counts only what each row ran after it.
    assert db.spend_by_account(2000.0, 9000.0)["physics"] == pytest.approx(hour * (1700 + 3600 + 4000) / 3600)
    cut = 5000.0
    closed = db.spend_by_account(0.0, cut, closed_by=cut)
    alive = db.spend_by_account(0.0, 9000.0, alive_after=cut)
    assert closed["physics"] == pytest.approx(hour)                     # only the first row
    assert closed["physics"] + alive["physics"] == pytest.approx(full["physics"])


def test_the_daemon_backs_the_state_db_up_beside_itself(tmp_path: Path):
    from configs import edit, write_config
    from conftest import REPO
    from fakes import RecordingSlurm

    from slurm_bridge.daemon import Daemon

    text = edit((REPO / "slurm_bridge" / "lab" / "lab-bridge.toml").read_text(),
                'state_dir = "/var/tmp/slurm-bridge-lab/bridge"', f'state_dir = "{tmp_path / "bridge"}"')
    _, path = write_config(tmp_path, text)
    daemon = Daemon(str(path), slurm=RecordingSlurm(), providers={})
    daemon.db.event("burst", job_id=1)
    dest = daemon.backup_once()
    assert dest == tmp_path / "bridge" / "state.db.backup" and stat.S_IMODE(dest.stat().st_mode) == 0o600
    copy = tmp_path / "copy"
    copy.mkdir()
    dest.rename(copy / "state.db")
    with StateDB.open(copy) as db:
        assert [e["kind"] for e in db.events()] == ["burst"]
