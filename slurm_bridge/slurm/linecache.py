"""Parse a command's lines once: the daemon reads the same squeue/sinfo lines every cycle."""

from __future__ import annotations

from typing import Any, Callable, Generic, TypeVar

T = TypeVar("T")


class LineCache(Generic[T]):
    """Turns lines into objects with PARSE_LINE(line, share), reusing last call's object for a line
    that did not change.

    The cache holds exactly the lines of the last call, so what left the output leaves the cache at
    once. `share` returns a stored equal value for a repeated one (tens of thousands of jobs come from
    a few hundred users; thousands of powered-down nodes look alike), which keeps the cache small.
    """

    def __init__(self, parse_line: Callable[[str, Callable[[Any], Any]], T | None]) -> None:
        self._parse_line = parse_line
        self._cache: dict[str, tuple[str, T]] = {}
        self._shared: dict = {}
        self.bad_lines: list[str] = []

    def _share(self, value):
        return self._shared.setdefault(value, value)

    def parse(self, text: str) -> list[T]:
        old, new, bad = self._cache, {}, []
        if len(self._shared) > 4 * len(old) + 1000:     # values of what is long gone: start afresh
            self._shared = {}
        out = []
        for line in text.splitlines():
            if not line:
                continue
            hit = old.get(line)
            if hit is None:
                item = self._parse_line(line, self._share)
                if item is None:
                    bad.append(line)
                    continue
                hit = (line, item)
            new[hit[0]] = hit           # keep the old key: this cycle's copy of the line is freed
            out.append(hit[1])
        self._cache, self.bad_lines = new, bad
        return out
