"""`slurm-bridge conf render`: the slurm.conf lines that make the pools real.

One fragment for slurm.conf (power saving, CLOUD nodes, burst partitions),
the matching gres.conf lines, and three tiny wrappers for the power-save
programs: slurmctld passes them nothing but the hostlist and SLURM_CONF, so
the wrapper is what carries the bridge config's path.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from . import selector, submit_lua
from .nodestate import pool_features
from .config import Config, PoolConfig
from .prices import PriceBook

PROGRAMS = {"resume": "slurm-bridge-resume", "suspend": "slurm-bridge-suspend",
            "resume-fail": "slurm-bridge-resume-fail", "prolog": "slurm-bridge-prolog"}
FRAGMENT_NAME = "slurm-bridge.conf"
GRES_NAME = "gres-bridge.conf"
CLOUD_NODE_WEIGHT = 1000   # on-prem nodes (weight 1 by default) are always preferred


@dataclass(frozen=True)
class Rendered:
    slurm_conf: str
    gres_conf: str
    wrappers: dict[str, str] = field(default_factory=dict)   # file name -> text
    bin_dir: Path = Path()
    onprem_features: tuple[str, ...] = ()
    lua: dict[str, str] = field(default_factory=dict)        # file name (beside slurm.conf) -> text


def program_path(name: str) -> str:
    """The installed console script beside the running interpreter (a venv or /usr)."""
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if not found:
        raise FileNotFoundError(f"{name} is not installed (pip install slurm-bridge)")
    return found


def onprem_features(cfg: Config) -> list[str]:
    # On-prem nodes sit in the site's country; without one they count as inside every zone,
    # so a zone constraint never keeps a job off them.
    zones = sorted(cfg.zones.values(), key=lambda z: z.name)
    if cfg.cluster.country:
        zones = [z for z in zones if z.contains(cfg.cluster.country)]
    # `onprem` lets a researcher keep a job at home with plain `sbatch --constraint=onprem`.
    return ["onprem"] + selector.zone_features(zones)


def _access(cfg: Config, pool: PoolConfig, book: PriceBook | None) -> str:
    listed = {n: a for n, a in cfg.accounts.items() if n != "default"}
    may = {n for n, a in listed.items() if selector.account_may_use(cfg, a.zone, pool, book)}
    if selector.account_may_use(cfg, cfg.accounts["default"].zone, pool, book):
        deny = sorted(set(listed) - may)
        return f" DenyAccounts={','.join(deny)}" if deny else ""
    if may:
        return f" AllowAccounts={','.join(sorted(may))}"
    # No account may use it: keep the partition defined (its nodes exist) but closed to jobs.
    return " State=INACTIVE"


def render(cfg: Config, *, config_path: Path, bin_dir: Path | None = None,
           gpu_device_dir: Path = Path("/dev"), lua_dir: Path | None = None,
           book: PriceBook | None = None) -> Rendered:
    """LUA_DIR: where slurm.conf (and so job_submit.lua) lives; default beside cfg.slurm.slurm_conf.
    BOOK: known prices (a cloud region with no price for a pool's type cannot launch it)."""
    bin_dir = bin_dir or cfg.slurm.bin_dir
    s = cfg.slurm
    watched = ",".join(s.watch_partitions)
    lines = [
        f"# Rendered by `slurm-bridge conf render` from {config_path}; do not edit by hand.",
        "# Include it from slurm.conf after your own settings:  Include <this file>",
        f"ResumeProgram={bin_dir / 'resume'}",
        f"SuspendProgram={bin_dir / 'suspend'}",
        f"ResumeFailProgram={bin_dir / 'resume-fail'}",
        f"SuspendTime={s.suspend_time}",
        f"ResumeTimeout={s.resume_timeout}",
        f"SuspendTimeout={s.suspend_timeout}",
        f"ResumeRate={s.resume_rate}",
        f"SuspendRate={s.suspend_rate}",
        "# SuspendTime applies to every node: keep on-prem partitions out of power saving.",
        f"SuspendExcParts={watched}",
        "# Powered-down CLOUD nodes are invisible to sinfo/scontrol without this.",
        "PrivateData=cloud",
        f"TreeWidth={s.tree_width}",
        "SlurmctldParameters=cloud_reg_addrs,idle_on_node_suspend",
        "# Residency: job_submit.lua (beside slurm.conf) adds each job's zone to its constraint,",
        "# and a partition an account may not use refuses its jobs at submit.",
        "JobSubmitPlugins=lua",
        "EnforcePartLimits=ALL",
        "# The last residency gate at job start; it also waits for resumed nodes to be up,",
        "# which spares their first job Slurm's periodic 30 s pass.",
        f"PrologSlurmctld={bin_dir / 'prolog'}",
        "",
        f"# On-prem nodes belong to every zone containing the site's country "
        f"({cfg.cluster.country or 'not set: every zone'}).",
        f"# Add to the NodeName lines of {watched}:  Features={','.join(onprem_features(cfg))}",
        "",
    ]
    gres = [f"# Rendered by `slurm-bridge conf render` from {config_path}."]
    for pool in cfg.pools:
        feats = ",".join(pool_features(cfg, pool, book))
        access = _access(cfg, pool, book)
        gres_spec = f" Gres=gpu:{pool.gpu_type + ':' if pool.gpu_type else ''}{pool.gpu_count}" if pool.gpu_count else ""
        lines.append(f"# pool {pool.name}: zone {pool.zone.name}, {'spot' if pool.spot else 'on-demand'}")
        lines.append(
            f"NodeName={pool.hostlist} State=CLOUD CPUs={pool.cpus} RealMemory={pool.memory_mb}"
            f"{gres_spec} Features={feats} Weight={CLOUD_NODE_WEIGHT}")
        lines.append(f"PartitionName={pool.partition} Nodes={pool.hostlist} MaxTime=INFINITE"
                     f"{access}{'' if 'State=' in access else ' State=UP'}")
        lines.append("")
        if pool.gpu_count:
            files = "nvidia0" if pool.gpu_count == 1 else f"nvidia[0-{pool.gpu_count - 1}]"
            type_part = f" Type={pool.gpu_type}" if pool.gpu_type else ""
            gres.append(f"NodeName={pool.hostlist} Name=gpu{type_part} File={gpu_device_dir / files}")
    wrappers = {}
    for short, console in PROGRAMS.items():
        wrappers[short] = (
            "#!/bin/sh\n"
            "# Rendered by `slurm-bridge conf render`. slurmctld passes only the hostlist and\n"
            "# SLURM_CONF, so this wrapper carries the bridge config's path.\n"
            f"exec {shlex.quote(program_path(console))} --config {shlex.quote(str(config_path))} \"$@\"\n"
        )
    lua_dir = lua_dir or cfg.slurm.slurm_conf.parent
    lua = {submit_lua.LIBRARY_NAME: submit_lua.library(cfg, str(config_path)),
           "job_submit.lua": submit_lua.job_submit(str(lua_dir / submit_lua.LIBRARY_NAME))}
    return Rendered("\n".join(lines), "\n".join(gres) + "\n", wrappers, bin_dir,
                    tuple(onprem_features(cfg)), lua)


def write(rendered: Rendered, output_dir: Path, fragment_name: str = FRAGMENT_NAME,
          gres_name: str = GRES_NAME) -> list[Path]:
    """Write the fragment, the gres lines and the wrappers; returns what was written."""
    output_dir.mkdir(parents=True, exist_ok=True)
    written = [_atomic(output_dir / fragment_name, rendered.slurm_conf, 0o644),
               _atomic(output_dir / gres_name, rendered.gres_conf, 0o644)]
    for name, text in rendered.lua.items():
        written.append(_atomic(output_dir / name, text, 0o644))
    rendered.bin_dir.mkdir(parents=True, exist_ok=True)
    # slurmctld silently disables power saving for programs that others can write (DESIGN B).
    os.chmod(rendered.bin_dir, 0o755)
    for name, text in rendered.wrappers.items():
        written.append(_atomic(rendered.bin_dir / name, text, 0o755))
    return written


def _atomic(path: Path, text: str, mode: int) -> Path:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
    return path
