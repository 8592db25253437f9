"""`slurm-bridge conf check`: is the running Slurm set up the way the bridge config says?

Every problem is listed (not just the first), each naming what to change,
because an admin fixes them in one sitting. Power saving fails silently when
a program path is wrong or writable by others, so those are checked on disk.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from . import render
from .config import Config
from .errors import SlurmError
from .slurm.backend import SlurmBackend
from .slurm.hostlists import expand

_NUM = re.compile(r"^(-?\d+)")


def _number(value: str | None) -> int | None:
    m = _NUM.match(value or "")
    return int(m.group(1)) if m else None


def check_program(path: Path) -> str | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return f"{path} does not exist (run `slurm-bridge conf render`)"
    if not stat.S_ISREG(st.st_mode) or not os.access(path, os.X_OK):
        return f"{path} is not an executable file"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"{path} is writable by group or others: slurmctld silently disables power saving (chmod go-w)"
    return None


def check(cfg: Config, slurm: SlurmBackend) -> list[str]:
    problems: list[str] = []
    try:
        live = slurm.show_config()
        parts = slurm.partitions()
        nodes = {n.name: n for n in slurm.nodes()}
    except SlurmError as exc:
        return [f"cannot read the running Slurm: {exc}"]
    bin_dir = cfg.slurm.bin_dir
    for key, name in (("ResumeProgram", "resume"), ("SuspendProgram", "suspend"),
                      ("ResumeFailProgram", "resume-fail"), ("PrologSlurmctld", "prolog")):
        want = str(bin_dir / name)
        have = live.get(key, "(null)")
        if have != want:
            problems.append(f"{key} is {have}, expected {want} (Include the rendered {render.FRAGMENT_NAME})")
        elif (why := check_program(Path(want))) is not None:
            problems.append(f"{key}: {why}")
    for key, want in (("SuspendTime", cfg.slurm.suspend_time), ("ResumeTimeout", cfg.slurm.resume_timeout),
                      ("SuspendTimeout", cfg.slurm.suspend_timeout)):
        have = _number(live.get(key))
        if have != want:
            problems.append(f"{key} is {live.get(key, 'unset')}, the bridge config says {want}")
    if "lua" not in live.get("JobSubmitPlugins", ""):
        problems.append("JobSubmitPlugins lacks lua: jobs would not carry their residency zone")
    if live.get("EnforcePartLimits", "") != "ALL":
        problems.append("EnforcePartLimits is not ALL: an account outside a pool's zones is not refused at submit")
    if "cloud" not in live.get("PrivateData", "").split(","):
        problems.append("PrivateData lacks `cloud`: powered-down cloud nodes are invisible to the bridge")
    excluded = set(live.get("SuspendExcParts", "").split(","))
    for part in cfg.slurm.watch_partitions:
        if part not in parts:
            problems.append(f"watched partition {part} does not exist in Slurm")
        if part not in excluded:
            problems.append(f"SuspendExcParts lacks on-prem partition {part}: Slurm would power its nodes down")
    for pool in cfg.pools:
        part = parts.get(pool.partition)
        if part is None:
            problems.append(f"pool {pool.name}: partition {pool.partition} does not exist in Slurm")
        elif set(expand(part.get("Nodes", "") or pool.hostlist)) != set(pool.node_names):
            problems.append(f"pool {pool.name}: partition {pool.partition} has nodes {part.get('Nodes')}, "
                            f"expected {pool.hostlist}")
        for name in pool.node_names:
            node = nodes.get(name)
            if node is None:
                problems.append(f"pool {pool.name}: node {name} is not defined in Slurm")
                break
            if "CLOUD" not in node.flags:
                problems.append(f"pool {pool.name}: node {name} is not State=CLOUD")
                break
    restricts = any("AllowAccounts" in line or "DenyAccounts" in line
                    for line in render.render(cfg, config_path=cfg.source or Path("bridge.toml"),
                                              bin_dir=bin_dir).slurm_conf.splitlines())
    if restricts and live.get("AccountingStorageType", "") in ("", "accounting_storage/none"):
        problems.append("burst partitions use AllowAccounts/DenyAccounts, which need accounting (slurmdbd)")
    return problems
