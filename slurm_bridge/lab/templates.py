"""The lab's Slurm configuration files, as text.

Settings here are chosen for Slurm 22.05 on a single machine with fake
hardware (see DESIGN part B): linuxproc/none plugins, config_overrides so a
2-core machine can register 16-CPU nodes, and GRES backed by character
devices because 22.05 drops file-less GPUs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class LabNode:
    name: str
    address: str


@dataclass(frozen=True)
class LabLayout:
    dir: Path
    cluster: str
    controller_host: str
    controller_addr: str
    ctld_port: int
    dbd_port: int
    mysql_port: int
    nodes: tuple[LabNode, ...]
    gpus_per_node: int
    gpu_type: str = "a100"
    cpus_per_node: int = 16
    memory_mb: int = 128000
    onprem_features: tuple[str, ...] = ()
    munge_dir: Path | None = None     # a second cluster shares the first one's munged

    @property
    def etc(self) -> Path:
        return self.dir / "etc"

    @property
    def slurm_conf(self) -> Path:
        return self.etc / "slurm.conf"

    @property
    def fragment(self) -> Path:
        """What `slurm-bridge conf render` writes; included by slurm.conf."""
        return self.etc / "bridge.conf"

    @property
    def gres_fragment(self) -> Path:
        return self.etc / "bridge-gres.conf"

    @property
    def munge_socket(self) -> Path:
        return (self.munge_dir or self.dir / "munge") / "munge.socket.2"

    @property
    def mysql_socket(self) -> Path:
        return self.dir / "mysql" / "mysqld.sock"

    def gpu_files(self, count: int | None = None) -> str:
        n = self.gpus_per_node if count is None else count
        return str(self.dir / "dev" / (f"nvidia[0-{n - 1}]" if n > 1 else "nvidia0"))


def slurm_conf(lay: LabLayout) -> str:
    d = lay.dir
    lines = [
        "# Written by `slurm-bridge lab up`; the lab rewrites it on every start.",
        f"ClusterName={lay.cluster}",
        f"SlurmctldHost={lay.controller_host}({lay.controller_addr})",
        "SlurmUser=root",
        f"SlurmctldPort={lay.ctld_port}",
        "SlurmdPort=6818",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={lay.munge_socket}",
        f"StateSaveLocation={d}/state",
        f"SlurmdSpoolDir={d}/spool/%n",
        f"SlurmctldPidFile={d}/run/slurmctld.pid",
        f"SlurmdPidFile={d}/run/slurmd-%n.pid",
        f"SlurmctldLogFile={d}/log/slurmctld.log",
        f"SlurmdLogFile={d}/log/slurmd-%n.log",
        "SlurmctldDebug=info",
        "SlurmdDebug=info",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/linux",
        "JobAcctGatherFrequency=30",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core_Memory",
        "SchedulerType=sched/backfill",
        "MpiDefault=none",
        "ReturnToService=2",
        "SlurmdParameters=config_overrides",
        "GresTypes=gpu",
        "DefMemPerCPU=1000",
        "MinJobAge=300",
        "SlurmdTimeout=300",
        "InactiveLimit=0",
        "KillWait=5",
        "Waittime=0",
        "AccountingStorageType=accounting_storage/slurmdbd",
        "AccountingStorageHost=localhost",
        f"AccountingStoragePort={lay.dbd_port}",
        # A private munge socket reaches slurmdbd through this, not AuthInfo (DESIGN B).
        f"AccountingStoragePass=socket={lay.munge_socket}",
        "AccountingStorageTRES=gres/gpu",
        "AccountingStorageEnforce=associations",
        "JobCompType=jobcomp/none",
        "",
    ]
    for node in lay.nodes:
        lines.append(
            f"NodeName={node.name} NodeAddr={node.address} NodeHostname={node.name} "
            f"CPUs={lay.cpus_per_node} RealMemory={lay.memory_mb} "
            f"Gres=gpu:{lay.gpu_type}:{lay.gpus_per_node} "
            f"Features={','.join(dict.fromkeys(('onprem',) + lay.onprem_features))} State=UNKNOWN"
        )
    names = ",".join(n.name for n in lay.nodes)
    lines += [
        f"PartitionName=gpu Nodes={names} Default=YES MaxTime=INFINITE State=UP",
        "",
        "# Cloud pools, power saving and residency features from `slurm-bridge conf render`.",
        f"Include {lay.fragment}",
        "",
    ]
    return "\n".join(lines)


def gres_conf(lay: LabLayout, fragment_text: str = "") -> str:
    # gres.conf has no Include, so the rendered pool lines are copied in.
    names = ",".join(n.name for n in lay.nodes)
    text = (
        "# Written by `slurm-bridge lab up`.\n"
        f"NodeName={names} Name=gpu Type={lay.gpu_type} File={lay.gpu_files()}\n"
    )
    if fragment_text.strip():
        text += "\n# From `slurm-bridge conf render`:\n" + fragment_text
    return text


def slurmdbd_conf(lay: LabLayout, db_password: str) -> str:
    d = lay.dir
    return "\n".join([
        "# Written by `slurm-bridge lab up`.",
        "DbdHost=localhost",
        f"DbdPort={lay.dbd_port}",
        "SlurmUser=root",
        "AuthType=auth/munge",
        f"AuthInfo=socket={lay.munge_socket}",
        f"PidFile={d}/run/slurmdbd.pid",
        f"LogFile={d}/log/slurmdbd.log",
        "DebugLevel=info",
        "StorageType=accounting_storage/mysql",
        "StorageHost=127.0.0.1",
        f"StoragePort={lay.mysql_port}",
        "StorageUser=slurm",
        f"StoragePass={db_password}",
        "StorageLoc=slurm_acct_db",
        "",
    ])

