"""The state DB as a file: created private, copied beside itself, checked for damage, and what an
admin can do when it is damaged (state.py raises StateError with that advice)."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

BROKEN_FILE_CODES = {11, 26}  # SQLITE_CORRUPT, SQLITE_NOTADB


def create_private(path: Path) -> None:
    """Create PATH as an empty 0600 file unless it exists (umask-proof)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, 0o600)
        # root (an admin's `slurm-bridge status`) must not leave a DB that the programs, which run as
        # SlurmUser, cannot write: the new file takes the state dir's owner. SQLite itself gives the
        # -wal and -shm files the database file's owner when it runs as root.
        parent = os.stat(path.parent)
        if os.geteuid() == 0 and parent.st_uid != 0:
            os.fchown(fd, parent.st_uid, parent.st_gid)
    finally:
        os.close(fd)


BACKUP_SUFFIX = ".backup"      # the daemon's hourly copy, beside the DB


def backup_path(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + BACKUP_SUFFIX)


def recovery(path: Path) -> str:
    """What an admin can do about a broken state DB: the daemon refuses to start on one."""
    backup = backup_path(path)
    rebuild = "or move it aside so slurm-bridge rebuilds it from provider tags (reconcile adopts every instance)"
    if backup.exists():
        when = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(backup.stat().st_mtime))
        return (f"stop slurm-bridge, move it aside and copy the daemon's backup {backup} (of {when}) in its place; "
                + rebuild)
    return "restore it from a backup, " + rebuild


def damage_found(conn: sqlite3.Connection) -> str | None:
    """The first problem PRAGMA quick_check finds, or None for a sound DB (reads every page once)."""
    try:
        rows = conn.execute("PRAGMA quick_check(5)").fetchall()
    except sqlite3.DatabaseError as exc:
        return str(exc)
    found = [r[0] for r in rows if r[0] != "ok"]
    return found[0].replace("\n", "; ")[:300] if found else None
