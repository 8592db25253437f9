"""Slurm hostlist expressions, with errors that say which input was wrong."""

from __future__ import annotations

import re
from typing import Iterable

import hostlist as _hostlist

from ..errors import BridgeError

# Slurm node names: letters, digits, '-', '_', '.'; no spaces, quotes or shell metacharacters.
_NODE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
MAX_NODES = 100_000


class HostlistError(BridgeError):
    pass


def expand(expr: str) -> list[str]:
    """`burst-[0-2],x1` -> ['burst-0', 'burst-1', 'burst-2', 'x1']; HostlistError on garbage."""
    if not isinstance(expr, str) or not expr.strip():
        raise HostlistError(f"empty hostlist {expr!r}")
    try:
        names = _hostlist.expand_hostlist(expr.strip(), allow_duplicates=True)
    except _hostlist.BadHostlist as exc:
        raise HostlistError(f"malformed hostlist {expr!r}: {exc}") from exc
    if len(names) > MAX_NODES:
        raise HostlistError(f"hostlist {expr[:60]!r} expands to {len(names)} names (limit {MAX_NODES})")
    bad = [n for n in names if not _NODE_RE.match(n)]
    if bad:
        raise HostlistError(f"malformed hostlist {expr!r}: invalid node name {bad[0]!r}")
    # Slurm never repeats a node in one list; a repeat means the input is not what we think.
    if len(set(names)) != len(names):
        raise HostlistError(f"malformed hostlist {expr!r}: a node is listed twice")
    return names


def compress(names: Iterable[str]) -> str:
    names = list(names)
    return _hostlist.collect_hostlist(names) if names else ""
