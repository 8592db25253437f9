"""A second Slurm cluster beside the lab's, for federation (issue 11).

It shares the lab's munged, MariaDB and slurmdbd, as clusters of one site do, and has its own
slurmctld (the lab's port + 10), state, logs and on-prem GPU nodes (`<name>-gpu-<i>`, at .20 and up
of the lab's subnet) in a partition also named `gpu`, so a job submitted to one may run on either.
Its nodes carry the lab's on-prem features (the residency zones job_submit.lua adds to every job's
constraint), as a federated site's clusters must, or no sibling could run there.
Its processes and namespaces are recorded in the lab's state: `lab down` stops them with the rest.

`federate` puts clusters in one Slurm federation through slurmdbd (`sacctmgr add federation`), and
`unfederate` takes it apart again.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import stat
import sys

from . import netns, procs, templates
from .procs import LabError

PORT_OFFSET = 10
FIRST_HOST = 19            # hosts()[19] is .20


def layout(lab, name: str, nodes: int = 1) -> templates.LabLayout:
    hosts = list(lab.gateway.network.hosts())
    return dataclasses.replace(
        lab.layout,
        dir=lab.dir / "clusters" / name,
        cluster=name,
        ctld_port=lab.opts.ctld_port + PORT_OFFSET,
        nodes=tuple(templates.LabNode(f"{name}-gpu-{i}", str(hosts[FIRST_HOST + i])) for i in range(nodes)),
        munge_dir=lab.layout.munge_socket.parent,
    )


def env(lay: templates.LabLayout, lab) -> dict[str, str]:
    return lab.env() | {"SLURM_CONF": str(lay.slurm_conf)}


def start(lab, name: str, nodes: int = 1, progress=print) -> templates.LabLayout:
    """Start cluster NAME (idempotent); the lab itself must be up."""
    if name == lab.opts.cluster:
        raise LabError(f"the sibling cluster needs a name other than the lab's ({name})")
    lay = layout(lab, name, nodes)
    for sub in ("etc", "log", "run", "state", "spool", "dev"):
        (lay.dir / sub).mkdir(parents=True, exist_ok=True)
    for i in range(lay.gpus_per_node):
        dev = lay.dir / "dev" / f"nvidia{i}"
        if not dev.exists():
            os.mknod(dev, 0o666 | stat.S_IFCHR, os.makedev(195, i))
    lay.fragment.write_text("# A sibling cluster: no cloud pools here.\n")
    (lay.etc / "slurm.conf").write_text(templates.slurm_conf(lay))
    (lay.etc / "gres.conf").write_text(templates.gres_conf(lay))
    state = lab._state()
    prefix = lab.gateway.network.prefixlen
    for node in lay.nodes:
        ns = lab.host_netns(node.name)
        netns.add_host(ns, lab.bridge, ipaddress.ip_interface(f"{node.address}/{prefix}"))
        lab.register(f"netns:{ns}", host=ns)
    _accounts(lab, name)
    e = env(lay, lab)
    ctld = f"slurmctld:{name}"
    if not (ctld in state.procs and procs.alive(state.procs[ctld])):
        progress(f"starting {ctld}")
        proc = procs.spawn(["slurmctld", "-D", "-i"], lay.dir / "log" / "slurmctld.out", env=e)
        lab.register(ctld, proc)
        procs.wait_for(ctld, lambda: "is UP" in procs.run(["scontrol", "ping"], check=False, env=e,
                                                          timeout=10).stdout or not procs.alive(proc), 60, 0.25)
        if not procs.alive(proc):
            raise LabError(f"{ctld} exited; see {lay.dir}/log/slurmctld.log")
    for node in lay.nodes:
        key = f"slurmd:{node.name}"
        if key in state.procs and procs.alive(state.procs[key]):
            continue
        progress(f"starting {key}")
        lab.register(key, procs.spawn(
            [sys.executable, "-m", "slurm_bridge.lab.nsexec", "--netns", lab.host_netns(node.name),
             "--hostname", node.name, "--", "slurmd", "-D", "-N", node.name],
            lay.dir / "log" / f"slurmd-{node.name}.out", env=e))

    def ready() -> bool:
        out = procs.run(["sinfo", "-h", "-N", "-p", "gpu", "-o", "%N %T"], check=False, env=e).stdout
        states = dict(line.split() for line in out.splitlines() if line.strip())
        return all(states.get(n.name, "").rstrip("*~#%!") in ("idle", "mixed", "allocated") for n in lay.nodes)
    procs.wait_for(f"{name}'s nodes to register", ready, 60, 0.5)
    progress(f"cluster '{name}' is up: SLURM_CONF={lay.slurm_conf}")
    return lay


def _accounts(lab, cluster: str) -> None:
    """The lab's accounts, with root in each, on CLUSTER too: a federated job's association must
    exist on every sibling that may run it."""
    if cluster not in lab._sacctmgr("list", "cluster", "format=cluster").split():
        lab._sacctmgr("add", "cluster", cluster)
    wanted = ["lab", *lab.opts.accounts]
    accounts = lab._sacctmgr("list", "assoc", f"cluster={cluster}", "format=account").split()
    for acct in wanted:
        if acct not in accounts:
            lab._sacctmgr("add", "account", acct, f"cluster={cluster}", f"description={acct}", "organization=lab")
    have = lab._sacctmgr("list", "assoc", f"cluster={cluster}", "user=root", "format=account").split()
    for acct in wanted:
        if acct not in have:
            extra = ["defaultaccount=lab"] if acct == "lab" else []
            lab._sacctmgr("add", "user", "root", f"account={acct}", f"cluster={cluster}", *extra)


def federate(lab, federation: str, clusters: list[str]) -> None:
    """One federation of CLUSTERS, waited for until every member's slurmctld reports it."""
    existing = lab._sacctmgr("list", "federation", "format=federation").split()
    if federation not in existing:
        lab._sacctmgr("add", "federation", federation, "clusters=" + ",".join(clusters))
    else:
        lab._sacctmgr("modify", "federation", federation, "set", "clusters=" + ",".join(clusters))

    def joined() -> bool:
        out = procs.run(["scontrol", "show", "federation"], check=False, env=lab.env()).stdout
        return f"Federation: {federation}" in out and all(c in out for c in clusters) and "DOWN" not in out
    procs.wait_for(f"federation {federation}", joined, 60, 0.5)


def unfederate(lab, federation: str) -> None:
    if federation in lab._sacctmgr("list", "federation", "format=federation").split():
        lab._sacctmgr("remove", "federation", federation)

    def left() -> bool:
        out = procs.run(["scontrol", "show", "federation"], check=False, env=lab.env()).stdout
        return f"Federation: {federation}" not in out
    procs.wait_for(f"federation {federation} gone", left, 60, 0.5)
