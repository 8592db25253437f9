"""Close a burst partition while none of its pools can launch anywhere, and open it again after.

Without this, Slurm resumes the nodes of a pool whose every region is blocked, every launch fails,
the jobs are requeued and placed on the same nodes again, in a loop (slurm-gcp's users know it).

Which partitions the bridge closed is kept in the state DB (meta key `closed_partitions`), not in
the daemon's memory: a daemon restarted while a partition is closed must still open it once a region
is launchable again, and must never open a partition an admin set DOWN. The intent is written before
the `scontrol update`, so a crash between the two leaves a record of a partition that may still be
UP; each process re-asserts every recorded state once, which closes that gap.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Callable

from . import crashpoints, selector
from .config import Config
from .errors import BridgeError
from .logfmt import kv
from .slurm import SlurmBackend
from .state import StateDB

log = logging.getLogger("slurm_bridge.daemon")
KEY = "closed_partitions"


def closed(db: StateDB) -> set[str]:
    rows = db.read("SELECT value FROM meta WHERE key = ?", (KEY,))
    return set(json.loads(rows[0]["value"])) if rows else set()


def _save(db: StateDB, names: set[str]) -> None:
    with db.writing() as conn:
        conn.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET "
                     "value = excluded.value", (KEY, json.dumps(sorted(names))))


@dataclass
class PoolGuard:
    """One per process: `asserted` holds the partitions whose recorded state this process has applied."""

    asserted: set[str] = field(default_factory=set)

    def check(self, cfg: Config, db: StateDB, slurm: SlurmBackend, blocked: Callable[[str, str], str | None],
              book) -> dict[str, str]:
        """Close or open each burst partition; returns partition -> "DOWN"/"UP" for the ones acted on."""
        # Each pool has a partition of its own (config.py refuses two pools in one).
        launchable = {p.partition: bool(selector.rank(cfg, p, None, blocked, book)[0]) for p in cfg.pools}
        pools = {p.partition: p.name for p in cfg.pools}
        recorded, acted = closed(db), {}
        for partition, ok in sorted(launchable.items()):
            try:
                if not ok and (partition not in recorded or partition not in self.asserted):
                    if partition not in recorded:
                        recorded.add(partition)
                        _save(db, recorded)
                    crashpoints.point("daemon: before closing a burst partition")
                    slurm.update_partition(partition, state="DOWN")
                    self.asserted.add(partition)
                    acted[partition] = "DOWN"
                    log.warning(kv(event="pool_closed", partition=partition, pool=pools[partition],
                                   reason="no launchable region"))
                elif ok and partition in recorded:
                    crashpoints.point("daemon: before opening a burst partition")
                    slurm.update_partition(partition, state="UP")
                    recorded.discard(partition)
                    _save(db, recorded)
                    self.asserted.discard(partition)
                    acted[partition] = "UP"
                    log.info(kv(event="pool_opened", partition=partition, pool=pools[partition]))
            except BridgeError as exc:   # tried again next cycle: the record says what is wanted
                self.asserted.discard(partition)
                log.error(kv(event="pool_state_failed", partition=partition, error=str(exc)))
        return acted
