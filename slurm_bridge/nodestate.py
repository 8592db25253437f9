"""What slurm-bridge tells Slurm about a cloud node at each step of its life."""

from __future__ import annotations

import logging
from typing import Sequence

from . import crashpoints, selector
from .config import Config, PoolConfig
from .errors import SlurmError
from .prices import PriceBook
from .slurm.backend import SlurmBackend

log = logging.getLogger("slurm_bridge.nodes")

REASON_PREFIX = "slurm-bridge:"


def _shape_features(pool: PoolConfig) -> list[str]:
    # A pool's own `features` may repeat its GPU type: Slurm would list it twice.
    return list(dict.fromkeys(["cloud", pool.name] + ([pool.gpu_type] if pool.gpu_type else []) + list(pool.features)))


def pool_features(cfg: Config, pool: PoolConfig, book: PriceBook | None = None) -> list[str]:
    """A powered-down node offers every zone its pool can reach (DESIGN: features tell the truth).

    The one definition: slurm.conf is rendered with it and suspend resets nodes to it.
    """
    return _shape_features(pool) + selector.zone_features(selector.reachable_zones(cfg, pool, book))


def base_features(cfg: Config, node: str) -> list[str]:
    pool = cfg.pool_for_node(node)
    return _shape_features(pool) if pool is not None else []


def pool_wide_features(cfg: Config, node: str, book: PriceBook | None = None) -> list[str]:
    pool = cfg.pool_for_node(node)
    return pool_features(cfg, pool, book) if pool is not None else []


def running_features(cfg: Config, node: str, country: str | None) -> list[str]:
    zones = selector.zones_of_country(cfg, country) if country else []
    return base_features(cfg, node) + selector.zone_features(zones)


def launched(slurm: SlurmBackend, cfg: Config, node: str, *, address: str, provider: str,
             region: str, country: str, instance_id: str) -> None:
    """Point Slurm at the instance, and narrow the node's zones to its region's (features tell the truth)."""
    feats = running_features(cfg, node, country)
    crashpoints.point("slurm: before pointing a node at its instance")
    slurm.update_nodes([node], address=address, hostname=node, available_features=feats,
                       active_features=feats, comment=f"{provider}/{region}/{instance_id}")


def set_zone_features(slurm: SlurmBackend, cfg: Config, node: str, country: str | None) -> None:
    feats = running_features(cfg, node, country)
    slurm.update_nodes([node], available_features=feats, active_features=feats)


def reset(slurm: SlurmBackend, cfg: Config, nodes: Sequence[str], book: PriceBook | None = None) -> None:
    """Back to the pool's shape: address = name, every reachable zone, no comment."""
    by_feats: dict[tuple[str, ...], list[str]] = {}
    for node in nodes:
        by_feats.setdefault(tuple(pool_wide_features(cfg, node, book)), []).append(node)
    for feats, group in by_feats.items():
        for node in group:
            # NodeAddr differs per node, so one call each; the features could be shared.
            crashpoints.point("slurm: before resetting a node")
            slurm.update_nodes([node], address=node, hostname=node, comment="",
                               available_features=list(feats) if feats else None,
                               active_features=list(feats) if feats else None)


def fail(slurm: SlurmBackend, nodes: Sequence[str], reason: str) -> None:
    """Fail fast and loud: down with a reason (Slurm requeues the job at once), then power down.

    The node stays visible in `sinfo -R` until the power-down completes; then the
    resume-fail/suspend path returns it to the pool.
    """
    text = f"{REASON_PREFIX} {reason}"[:200]
    crashpoints.point("slurm: before setting nodes down")
    try:
        slurm.update_nodes(nodes, state="DOWN", reason=text)
    except SlurmError as exc:
        log.error("could not set %s down: %s", ",".join(nodes), exc)
    try:
        slurm.update_nodes(nodes, state="POWER_DOWN_FORCE")
    except SlurmError as exc:
        log.error("could not power down %s: %s", ",".join(nodes), exc)
