"""Node states as narrow `sinfo` text: what the reconcile reads every cycle.

`sinfo --json` prints about sixty fields per node, and 22.05 ignores `-n`
for it; at 5,000 cloud nodes that is 7.8 MB of JSON and 0.2-0.4 s per read
(bench/README.md). The text output honours `-n` and prints only the fields
asked for. The free-text fields come last (comment, then reason), so a
reason holding a tab stays whole. A node in several partitions is printed
once per partition; its lines are merged here.
"""

from __future__ import annotations

from typing import Iterable

from ..models import Node
from .hostlists import compress
from .linecache import LineCache
from .parse import node_state

FIELDS = ("NodeList", "StateComplete", "Features", "features_act", "NodeAddr", "NodeHost", "Partition",
          "Gres", "CPUs", "Memory", "Comment", "Reason")
FORMAT = ",".join(f"{f}:\t" for f in FIELDS[:-1]) + f",{FIELDS[-1]}:"
_NULL = ("", "(null)", "N/A", "none")


def argv(names: Iterable[str] | None) -> list[str]:
    out = ["sinfo", "--noheader", "--Node", "--all", "--Format=" + FORMAT]
    if names is not None:
        out.append("--nodes=" + compress(sorted(set(names))))
    return out


class NodeParser(LineCache[Node]):
    """sinfo lines to `Node`s, reusing last call's `Node` for a line that did not change; a node
    printed once per partition becomes one `Node` with all of them."""

    def __init__(self) -> None:
        super().__init__(parse_line)

    def parse(self, text: str) -> list[Node]:
        out: dict[str, Node] = {}
        for node in super().parse(text):
            seen = out.get(node.name)
            if seen is None:
                out[node.name] = node
            elif node.partitions and node.partitions[0] not in seen.partitions:   # a node in no partition has ()
                out[node.name] = _with_partitions(seen, seen.partitions + node.partitions)
        return list(out.values())


def _with_partitions(node: Node, partitions: tuple[str, ...]) -> Node:
    from dataclasses import replace

    return replace(node, partitions=partitions)


def _features(text: str) -> tuple[str, ...]:
    return () if text in _NULL else tuple(f for f in text.split(",") if f)


def _same(value):
    return value


def parse_line(line: str, share=_same) -> Node | None:
    """One sinfo line to a `Node`, or None when it is not in FIELDS' shape. SHARE returns a stored
    equal value for a repeated one (thousands of powered-down nodes look alike)."""
    f = line.split("\t", len(FIELDS) - 1)
    if len(f) != len(FIELDS):
        return None
    name, state, avail, active, addr, host, partition, gres, cpus, memory, comment, reason = f
    base, flags = node_state(state)
    try:
        return Node(
            name=name,
            state=share(base),
            flags=share(flags),
            available_features=share(_features(avail)),
            active_features=share(_features(active)),
            address=addr if addr != name else name,
            hostname=host if host != name else name,
            partitions=share((partition.rstrip("*"),) if partition not in _NULL else ()),
            comment="" if comment in _NULL else comment,
            reason="" if reason in _NULL else share(reason),
            gres="" if gres in _NULL else share(gres),
            cpus=int(cpus) if cpus not in _NULL else 0,
            real_memory_mb=int(memory) if memory not in _NULL else 0,
        )
    except ValueError:
        return None
