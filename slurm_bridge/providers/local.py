"""The local provider: a small cloud made of lab hosts, for the demo and the tests.

Launching an instance creates a network-namespace host on the lab's bridge
and starts a real `slurmd -N <node>` in it, with its own hostname and a boot
clock that starts at the launch (see lab/nsexec.py). Each region honours its
capacity (past it: a capacity failure) and boot time. Like a cloud's API, the
provider keeps its own records on disk (DIR/cloud/<region>/<id>.json), and
lists instances by cluster tag from them.

A region with `image = "ssh"` plays a cloud image with cloud-init instead: its instances run only
an SSH server (lab/sshhost.py) with a host key made at launch, let in the bridge's public key (as
user data would), print their host key to a console file once listening, and have their own
/etc/munge, /etc/slurm and munge socket directory. `[bootstrap]` then brings them up as it does
AWS and GCP instances, reading the host key from that console through `host_keys`.
"""

from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import secrets
import shutil
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

from ..config import LocalRegion
from ..lab import netns, procs
from . import hostkeys
from .base import (TOKEN_TAG, Failure, FailureKind, Instance, LaunchRequest, LaunchResult, ProviderError,
                   Scope)

FIRST_HOST = 100   # lab on-prem nodes use .10 and up; instances .100 and up


class LocalProvider:
    name = "local"

    def __init__(self, regions: Sequence[LocalRegion], lab_dir: Path, *, authorized_key: str | None = None):
        self.regions = {r.name: r for r in regions}
        self.lab_dir = Path(lab_dir)
        self.root = self.lab_dir / "cloud"
        self.authorized_key = authorized_key     # for image "ssh": what user data would install

    # -- the lab this cloud lives in -----------------------------------------------

    def _lab(self) -> dict:
        try:
            lab = json.loads((self.lab_dir / "lab.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError) as exc:
            raise ProviderError(Failure(FailureKind.CONFIG, f"no lab in {self.lab_dir} (run `slurm-bridge lab up`)",
                                        Scope.PROVIDER)) from exc
        if not lab.get("bridge"):
            raise ProviderError(Failure(FailureKind.CONFIG, f"the lab in {self.lab_dir} is down", Scope.PROVIDER))
        return lab

    @contextmanager
    def _locked(self) -> Iterator[None]:
        # Several resume workers may launch at once: capacity and addresses are decided under one lock.
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _records(self) -> list[dict]:
        out = []
        for path in sorted(self.root.glob("*/*.json")):
            try:
                out.append(json.loads(path.read_text()))
            except (json.JSONDecodeError, FileNotFoundError):
                continue   # a record being written; the writer holds the lock
        return out

    def _save(self, rec: dict) -> None:
        path = self.root / rec["region"] / f"{rec['instance_id']}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(rec, indent=1))
        os.replace(tmp, path)

    def _alive(self, rec: dict) -> bool:
        if "pid" not in rec:
            return netns.netns_exists(rec["netns"])   # host made, slurmd not yet started
        return procs.alive(procs.Proc(rec["pid"], rec["start_ticks"]))

    def _instance(self, rec: dict) -> Instance:
        return Instance(
            instance_id=rec["instance_id"], node=rec["node"], region=rec["region"],
            state="running" if self._alive(rec) else "terminated", address=rec["address"],
            instance_type=rec["instance_type"], cluster=rec["cluster"], launched_at=rec["launched_at"],
            tags=dict(rec.get("tags", {})))

    # -- verbs ------------------------------------------------------------------------

    def launch(self, request: LaunchRequest) -> LaunchResult:
        region = self.regions.get(request.region)
        if region is None:
            fail = Failure(FailureKind.CONFIG, f"unknown local region {request.region!r}", Scope.REGION)
            return LaunchResult((), {n.node: fail for n in request.nodes})
        try:
            lab = self._lab()
        except ProviderError as exc:
            return LaunchResult((), {n.node: exc.failure for n in request.nodes})
        launched: list[Instance] = []
        failed: dict[str, Failure] = {}
        with self._locked():
            records = self._records()
            by_token = {r.get("client_token"): r for r in records if self._alive(r)}
            live = [r for r in records if r["region"] == region.name and self._alive(r)]
            used = {r["address"] for r in records if self._alive(r)}
            free = region.capacity - len(live)
            for spec in request.nodes:
                if spec.client_token and spec.client_token in by_token:
                    launched.append(self._instance(by_token[spec.client_token]))   # a retried launch
                    continue
                if free <= 0:
                    failed[spec.node] = Failure(
                        FailureKind.CAPACITY, f"{region.name}: no capacity for {spec.instance_type} "
                        f"({region.capacity} instances at most)", Scope.REGION)
                    continue
                try:
                    rec = self._start(lab, region, request.cluster, spec, used)
                except (procs.LabError, OSError) as exc:
                    failed[spec.node] = Failure(FailureKind.TRANSIENT, f"{region.name}: {exc}", Scope.REGION)
                    continue
                free -= 1
                used.add(rec["address"])
                launched.append(self._instance(rec))
        return LaunchResult(tuple(launched), failed)

    def _start(self, lab: dict, region: LocalRegion, cluster: str, spec, used: set[str]) -> dict:
        net = ipaddress.ip_network(lab["options"]["subnet"])
        address = next((str(h) for i, h in enumerate(net.hosts()) if i + 1 >= FIRST_HOST and str(h) not in used),
                       None)
        if address is None:
            raise procs.LabError(f"no free address left in {net}")
        instance_id = "i-" + secrets.token_hex(8)
        rec = {
            "instance_id": instance_id, "node": spec.node, "region": region.name, "cluster": cluster,
            "instance_type": spec.instance_type, "address": address, "netns": f"sbi-{instance_id}",
            "client_token": spec.client_token, "launched_at": time.time(),
            "tags": {"slurm-bridge:cluster": cluster, "slurm-bridge:node": spec.node,
                     "slurm-bridge:pool": spec.pool,
                     "slurm-bridge:jobs": ",".join(str(j) for j in spec.job_ids),
                     TOKEN_TAG: spec.client_token},
        }
        # The record exists before the host does: a crash from here on leaves something to find.
        self._save(rec)
        netns.add_host(rec["netns"], lab["bridge"], ipaddress.ip_interface(f"{address}/{net.prefixlen}"))
        lab_dir = Path(lab["options"]["dir"])
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "SLURM_CONF": str(lab_dir / "etc" / "slurm.conf")}
        if region.image == "ssh":
            proc = self._start_ssh_image(rec, region, lab_dir, env)
            rec.update(pid=proc.pid, start_ticks=proc.start_ticks)
            self._save(rec)
            return rec
        proc = procs.spawn(
            [sys.executable, "-m", "slurm_bridge.lab.nsexec", "--netns", rec["netns"], "--hostname", spec.node,
             # slurmctld accepts a resumed node only if it booted after the resume request, in whole
             # seconds: start slurmd a clear 2 s after the launch, whatever the region's boot time.
             "--fresh-boot", "--delay", f"{max(region.boot_seconds, 2.0):g}", "--",
             "slurmd", "-D", "-N", spec.node],
            lab_dir / "log" / f"instance-{instance_id}.out", env=env)
        rec.update(pid=proc.pid, start_ticks=proc.start_ticks)
        self._save(rec)
        return rec

    def _host_dir(self, rec: dict) -> Path:
        return self.root / rec["region"] / rec["instance_id"]

    def _start_ssh_image(self, rec: dict, region: LocalRegion, lab_dir: Path, env: dict) -> procs.Proc:
        import asyncssh

        if not self.authorized_key:
            raise procs.LabError(f"{region.name}: image \"ssh\" needs the bridge's public key ([bootstrap] client_keys)")
        d = self._host_dir(rec)
        for sub in ("home", "etc-munge", "etc-slurm", "munge"):
            (d / sub).mkdir(parents=True, exist_ok=True)
            os.chmod(d / sub, 0o700 if sub == "home" else 0o755)
        key = d / "ssh_host_ed25519_key"
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(asyncssh.generate_private_key("ssh-ed25519").export_private_key())
        (d / "authorized_keys").write_text(self.authorized_key.strip() + "\n")
        munge_dir = lab_dir / "munge"
        binds = [f"{d / 'etc-munge'}:/etc/munge", f"{d / 'etc-slurm'}:/etc/slurm", f"{d / 'munge'}:{munge_dir}"]
        return procs.spawn(
            [sys.executable, "-m", "slurm_bridge.lab.nsexec", "--netns", rec["netns"], "--hostname", rec["node"],
             "--delay", f"{region.boot_seconds:g}", *[a for b in binds for a in ("--bind", b)], "--",
             sys.executable, "-m", "slurm_bridge.lab.sshhost", "serve", "--home", str(d / "home"),
             "--host-key", str(key), "--authorized-keys", str(d / "authorized_keys"), "--console", str(d / "console")],
            lab_dir / "log" / f"instance-{rec['instance_id']}.out", env=env)

    def host_keys(self, region: str, instance_id: str) -> tuple[str, ...] | None:
        """For image "ssh": the key the instance printed to its console once listening."""
        for rec in self._records():
            if rec["region"] == region and rec["instance_id"] == instance_id:
                try:
                    return hostkeys.from_console((self._host_dir(rec) / "console").read_text())
                except FileNotFoundError:
                    return None
        return None

    def terminate(self, region: str, instance_ids: Sequence[str]) -> None:
        wanted = set(instance_ids)
        with self._locked():
            for rec in self._records():
                if rec["instance_id"] in wanted and rec["region"] == region:
                    self._destroy(rec)

    def _destroy(self, rec: dict) -> None:
        # Terminating a cloud instance is a power-off, not a shutdown: slurmd gets no chance to
        # report anything, exactly as with a real instance (or a spot preemption).
        # The host's own process first: while it waits out its boot delay it is not in the namespace
        # yet, and left alive it would go on to start a slurmd that nothing owns. Then whatever it
        # started meanwhile, which is in the namespace.
        if "pid" in rec:
            procs.kill(procs.Proc(rec["pid"], rec["start_ticks"]))
        netns.kill_all_in(rec["netns"], graceful=False)
        netns.remove_host(rec["netns"])
        shutil.rmtree(self._host_dir(rec), ignore_errors=True)
        (self.root / rec["region"] / f"{rec['instance_id']}.json").unlink(missing_ok=True)

    def list_instances(self, cluster: str) -> list[Instance]:
        return [self._instance(r) for r in self._records() if r.get("cluster") == cluster]

    def describe(self, region: str, instance_ids: Sequence[str]) -> list[Instance]:
        wanted = set(instance_ids)
        return [self._instance(r) for r in self._records()
                if r["region"] == region and r["instance_id"] in wanted]

    def destroy_all(self) -> int:
        """Terminate every instance of this lab, whatever its cluster (used by `lab down`)."""
        with self._locked():
            records = self._records()
            for rec in records:
                self._destroy(rec)
        return len(records)
