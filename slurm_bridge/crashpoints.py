"""Numbered crash points, for the crash-consistency test (tests/test_crash_points.py, issue 9).

Every place where the bridge's work crosses a boundary (a state DB write, a provider call, a Slurm
update) calls `point(name)`. With SLURM_BRIDGE_CRASH_AT=N in the environment, the N-th point the
process passes kills it with SIGKILL, as a power cut or the OOM killer would, so the test can check
that a restart and one reconcile leave nothing lost. SLURM_BRIDGE_CRASH_LOG names a file that gets
one line per point passed. Without them (always, outside that test) a point costs one comparison.
"""

from __future__ import annotations

import os
import signal

_AT = int(os.environ.get("SLURM_BRIDGE_CRASH_AT") or 0)
_LOG = os.environ.get("SLURM_BRIDGE_CRASH_LOG") or None
_passed = 0


def point(name: str) -> None:
    global _passed
    if not _AT and _LOG is None:
        return
    _passed += 1
    if _LOG is not None:
        with open(_LOG, "a") as f:
            f.write(f"{os.getpid()} {_passed} {name}\n")
    if _passed == _AT:
        os.kill(os.getpid(), signal.SIGKILL)
