"""The daemon's log line format: key=value pairs, one grep-able line per event."""

from __future__ import annotations

import json


def kv(**fields) -> str:
    """key=value pairs, values quoted when they hold spaces or are empty."""
    return " ".join(f"{k}={json.dumps(v) if isinstance(v, str) and (' ' in v or not v) else v}"
                    for k, v in fields.items())
