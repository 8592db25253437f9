"""Files that hold secrets (munge key, private SSH keys, cloud credentials) must be private to the bridge.

A secret that group or others may read is as good as published on a shared controller host: the
bridge refuses it, naming the file and the fix, and never says what is in it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


def unsafe(st: os.stat_result) -> str | None:
    """Why a file with this status may not hold a secret, or None when it may."""
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file"
    if st.st_uid not in (0, os.geteuid()):
        return f"is owned by uid {st.st_uid}, neither root nor the bridge's user (uid {os.geteuid()})"
    if st.st_mode & 0o077:
        return f"has mode {stat.S_IMODE(st.st_mode):04o}: group or others may access it (chmod 600)"
    return None


def problem(path: Path) -> str | None:
    """Why the secret file PATH is refused, or None. A missing file is left to whoever opens it."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"cannot be examined: {exc.strerror}"
    return unsafe(st)
