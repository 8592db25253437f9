"""Numbered crash points, for the crash-consistency tests (tests/test_crash_points.py,
tests/test_crash_lab.py; issue 9).

Every place where the bridge's work crosses a boundary (a state DB write, a provider call, a Slurm
update) calls `point(name)`. With SLURM_BRIDGE_CRASH_AT=N in the environment, the N-th point the
process passes kills it with SIGKILL, as a power cut or the OOM killer would, so the test can check
that a restart and one reconcile leave nothing lost. SLURM_BRIDGE_CRASH_LOG names a file that gets
one line per point passed.

The lab test cannot pick a number: slurmctld starts the programs, and a resume program and its worker
count separately. It sets SLURM_BRIDGE_CRASH_NAMES ("name|name|...") and SLURM_BRIDGE_CRASH_ONCE (a
directory): the first process to pass a point so named dies there, once per name across all
processes, which a marker file created with O_EXCL in that directory decides.

Without them (always, outside those tests) a point costs one comparison.
"""

from __future__ import annotations

import hashlib
import os
import signal

_AT = int(os.environ.get("SLURM_BRIDGE_CRASH_AT") or 0)
_LOG = os.environ.get("SLURM_BRIDGE_CRASH_LOG") or None
_NAMES = frozenset(n for n in (os.environ.get("SLURM_BRIDGE_CRASH_NAMES") or "").split("|") if n)
_ONCE = os.environ.get("SLURM_BRIDGE_CRASH_ONCE") or None
_ACTIVE = bool(_AT or _LOG or (_NAMES and _ONCE))
_passed = 0


def point(name: str) -> None:
    global _passed
    if not _ACTIVE:
        return
    _passed += 1
    if _LOG is not None:
        with open(_LOG, "a") as f:
            f.write(f"{os.getpid()} {_passed} {name}\n")
    if _passed == _AT or (name in _NAMES and _ONCE is not None and _first(name)):
        os.kill(os.getpid(), signal.SIGKILL)


def _first(name: str) -> bool:
    marker = os.path.join(_ONCE or "", hashlib.sha1(name.encode()).hexdigest()[:12])
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(f"{os.getpid()} {name}\n")
    return True
