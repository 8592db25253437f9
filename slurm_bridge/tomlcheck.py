"""Typed reading of a TOML document, reporting every problem under its full key path.

Shared by the config sections (config.py, cloud_config.py) so every section
reports mistakes the same way: `<key path>: <reason>`.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from pathlib import Path
from typing import Any

from .catalog import COMMON_MISTAKES, ISO_COUNTRIES

# Characters Slurm reads as syntax in hostlists, constraints and partition lists are left out.
_WORD = (re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*"), "letters, digits, '_', '.', '-'")

_MISSING: Any = object()   # key absent
_BAD: Any = object()       # present but invalid, already reported: skip checks that depend on it


def _key(path: str, key: str) -> str:
    part = key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)
    return f"{path}.{part}" if path else part


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return json.dumps(value, ensure_ascii=False)
    return {list: "an array", dict: "a table"}.get(type(value), f"a {type(value).__name__}")


def _suggest(word: str, known: list[str]) -> str:
    close = difflib.get_close_matches(word, known, n=1)
    return f"did you mean {close[0]}?" if close else "known: " + ", ".join(sorted(known))


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)   # TOML true is not 1


_TYPES = {
    "int": ("an integer", _is_int),
    "number": ("a number", lambda v: _is_int(v) or (isinstance(v, float) and math.isfinite(v))),
    "str": ("a string", lambda v: isinstance(v, str)),
    "bool": ("true or false", lambda v: isinstance(v, bool)),
    "list": ("an array", lambda v: isinstance(v, list)),
    "table": ("a table", lambda v: isinstance(v, dict)),
}


class _Checker:
    def __init__(self) -> None:
        self.problems: list[str] = []

    def add(self, path: str, reason: str) -> Any:
        self.problems.append(f"{path}: {reason}")
        return _BAD

    def typed(self, path: str, value: Any, kind: str) -> Any:
        name, ok = _TYPES[kind]
        return value if ok(value) else self.add(path, f"expected {name}, got {_show(value)}")

    def table(self, path: str, value: Any, known: tuple[str, ...]) -> _Table | None:
        value = {} if value is _MISSING else value
        return None if self.typed(path, value, "table") is _BAD else _Table(self, path, value, known)

    def country(self, path: str, value: Any) -> Any:
        if self.typed(path, value, "str") is _BAD:
            return _BAD
        code = value.strip().upper()
        if code in ISO_COUNTRIES:
            return code
        hint = f" (did you mean {COMMON_MISTAKES[code]}?)" if code in COMMON_MISTAKES else ""
        return self.add(path, f"unknown ISO 3166 country code {_show(value)}{hint}")


class _Table:
    """One TOML table: typed getters that report problems under the key's full path."""

    def __init__(self, ck: _Checker, path: str, data: dict, known: tuple[str, ...]):
        self.ck, self.path, self.data = ck, path, data
        for key in data:
            if key not in known:
                ck.add(_key(path, key), f"unknown key ({_suggest(key, list(known))})")

    def at(self, key: str) -> str:
        return _key(self.path, key)

    def get(self, key: str, kind: str, default: Any = _MISSING, minimum: int | None = None) -> Any:
        value = self.data.get(key, _MISSING)
        if value is _MISSING:
            return default if default is not _MISSING else self.ck.add(self.at(key), "missing required key")
        if self.ck.typed(self.at(key), value, kind) is _BAD:
            return _BAD
        if minimum is not None and value < minimum:
            return self.ck.add(self.at(key), f"must be at least {minimum}, got {_show(value)}")
        return float(value) if kind == "number" else value

    def name(self, key: str, rule: tuple[re.Pattern, str], default: Any = _MISSING) -> Any:
        value = self.get(key, "str", default)
        if key in self.data and isinstance(value, str) and not rule[0].fullmatch(value):
            return self.ck.add(self.at(key), f"invalid name {_show(value)}: {rule[1]}")
        return value

    def abspath(self, key: str, default: Any = _MISSING) -> Any:
        value = self.get(key, "str", default)
        # Daemons and power-save programs run from different working directories.
        if isinstance(value, str) and not value.startswith("/"):
            return self.ck.add(self.at(key), f"must be an absolute path, got {_show(value)}")
        return Path(value) if isinstance(value, str) else value

    def names(self, key: str, default: Any = _MISSING) -> Any:
        value = self.get(key, "list", default)
        if not isinstance(value, list):
            return value
        out: list[str] = []
        for i, item in enumerate(value):
            p = f"{self.at(key)}[{i}]"
            if self.ck.typed(p, item, "str") is _BAD:
                continue
            if not _WORD[0].fullmatch(item):
                self.ck.add(p, f"invalid name {_show(item)}: {_WORD[1]}")
            elif item in out:
                self.ck.add(p, f"{_show(item)} is listed twice")
            out.append(item)
        return tuple(out)


def _ok(*values: Any) -> bool:
    return all(v is not _BAD for v in values)
