"""`slurm-bridge lab up|status|down`: bring a whole Slurm cluster up on this machine.

Munge, MariaDB, slurmdbd and slurmctld run in the root network namespace;
each on-prem node is a real slurmd in a namespace of its own on a private
bridge. With `ssh_hosts`, the lab also runs machines reachable only over SSH
(lab/sshhost.py), for the SSH provider to bootstrap. Everything lives under one directory, every PID started is recorded
in DIR/lab.json, and `down` stops exactly those and removes the namespaces.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import secrets
import shutil
import socket
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path

from . import netns, procs, templates
from .procs import LabError, Proc

DEFAULT_DIR = Path("/var/tmp/slurm-bridge-lab")
SYSTEM_SLURM_CONF = Path("/etc/slurm/slurm.conf")

REQUIRED = {
    "munged": "munge",
    "mariadbd": "mariadb-server",
    "mariadb-install-db": "mariadb-server",
    "mariadb": "mariadb-client",
    "slurmdbd": "slurmdbd",
    "slurmctld": "slurmctld",
    "slurmd": "slurmd",
    "sacctmgr": "slurm-client",
    "scontrol": "slurm-client",
    "sinfo": "slurm-client",
    "ip": "iproute2",
}
# Debian keeps daemons in sbin, which a non-login PATH may lack.
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin", "/usr/bin", "/bin"])


@dataclass
class LabOptions:
    dir: Path = DEFAULT_DIR
    cluster: str = "lab"
    onprem_nodes: int = 2
    gpus_per_node: int = 4
    subnet: str = "10.199.0.0/24"
    ctld_port: int = 6817
    dbd_port: int = 6819
    mysql_port: int = 13306
    bridge_config: Path | None = None
    accounts: tuple[str, ...] = ()
    ssh_hosts: int = 0


@dataclass
class LabState:
    """What DIR/lab.json records: enough for `down` to undo `up` from any shell."""

    options: dict
    procs: dict[str, Proc] = field(default_factory=dict)
    hosts: list[str] = field(default_factory=list)
    bridge: str = ""
    conf_link: bool = False

    def save(self, path: Path) -> None:
        data = {
            "options": self.options,
            "procs": {k: p.to_json() for k, p in self.procs.items()},
            "hosts": self.hosts,
            "bridge": self.bridge,
            "conf_link": self.conf_link,
        }
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> "LabState | None":
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        return cls(
            options=data.get("options", {}),
            procs={k: Proc.from_json(v) for k, v in data.get("procs", {}).items()},
            hosts=list(data.get("hosts", [])),
            bridge=data.get("bridge", ""),
            conf_link=bool(data.get("conf_link", False)),
        )


class Lab:
    def __init__(self, opts: LabOptions):
        self.opts = opts
        self.dir = opts.dir.resolve()
        net = ipaddress.ip_network(opts.subnet)
        hosts = list(net.hosts())
        self.gateway = ipaddress.ip_interface(f"{hosts[0]}/{net.prefixlen}")
        self.node_addrs = hosts[9 : 9 + opts.onprem_nodes]  # .10, .11, ...
        self.ssh_addrs = hosts[49 : 49 + opts.ssh_hosts]     # .50, .51, ... (instances: .100 and up)
        self.layout = templates.LabLayout(
            dir=self.dir,
            cluster=opts.cluster,
            controller_host=socket.gethostname().split(".")[0],
            controller_addr=str(self.gateway.ip),
            ctld_port=opts.ctld_port,
            dbd_port=opts.dbd_port,
            mysql_port=opts.mysql_port,
            nodes=tuple(
                templates.LabNode(f"gpu-{i}", str(a)) for i, a in enumerate(self.node_addrs)
            ),
            gpus_per_node=opts.gpus_per_node,
        )
        self.state_file = self.dir / "lab.json"
        if opts.bridge_config is None:
            # A later `lab up` without --config keeps the pools the lab was started with.
            saved = LabState.load(self.state_file)
            if saved and saved.options.get("bridge_config"):
                opts.bridge_config = Path(saved.options["bridge_config"])
        self.bridge = "sbr-" + opts.cluster[:11]

    # -- helpers -------------------------------------------------------------

    def env(self) -> dict[str, str]:
        return {"PATH": SEARCH_PATH, "SLURM_CONF": str(self.layout.slurm_conf), "HOME": "/root"}

    def host_netns(self, node: str) -> str:
        return f"sb-{self.opts.cluster}-{node}"

    def _state(self) -> LabState:
        st = LabState.load(self.state_file)
        if st is None:
            st = LabState(options={}, bridge=self.bridge)
        st.options = _options_json(self.opts)
        return st

    # -- preflight -------------------------------------------------------------

    def preflight(self, state: LabState) -> None:
        if os.geteuid() != 0:
            raise LabError("the lab needs root (network namespaces, munge and slurmd run as root)")
        missing = sorted({pkg for exe, pkg in REQUIRED.items() if not shutil.which(exe, path=SEARCH_PATH)})
        if missing:
            raise LabError("Debian packages missing: " + " ".join(missing)
                           + " (apt-get install " + " ".join(missing) + ")")
        ours = {n for n, p in state.procs.items() if procs.alive(p)}
        for name, port in (("slurmctld", self.opts.ctld_port), ("slurmdbd", self.opts.dbd_port),
                           ("mariadb", self.opts.mysql_port)):
            if name not in ours and _port_taken(port):
                raise LabError(f"port {port} (for {name}) is taken by another process")

    # -- up ----------------------------------------------------------------------

    def up(self, progress=print) -> LabState:
        state = self._state()
        self.preflight(state)
        lay = self.layout
        for sub in ("etc", "log", "run", "state", "spool", "dev", "munge", "mysql"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o755)
        self._devices()
        if self._write_configs():
            # 22.05 reads node and partition lines only at start: restart what runs.
            for name in sorted(state.procs, key=_stop_rank):
                if name.startswith(("instance:", "slurmd:", "slurmctld")) and procs.alive(state.procs[name]):
                    progress(f"configuration changed: restarting {name}")
                    procs.stop(state.procs[name])
        state.save(self.state_file)

        progress(f"network: bridge {self.bridge} {self.gateway}")
        netns.ensure_bridge(self.bridge, self.gateway)
        state.bridge = self.bridge
        for node in lay.nodes:
            ns = self.host_netns(node.name)
            netns.add_host(ns, self.bridge, ipaddress.ip_interface(f"{node.address}/{self.gateway.network.prefixlen}"))
            if ns not in state.hosts:
                state.hosts.append(ns)
        state.save(self.state_file)

        self._ensure(state, "munged", self._start_munge, progress)
        self._ensure(state, "mariadb", self._start_mariadb, progress)
        self._ensure(state, "slurmdbd", self._start_slurmdbd, progress)
        self._accounts()
        self._ensure(state, "slurmctld", self._start_slurmctld, progress)
        for node in lay.nodes:
            self._ensure(state, f"slurmd:{node.name}", lambda n=node: self._start_slurmd(n), progress)
        self._link_conf(state)
        state.save(self.state_file)
        self._ssh_hosts(state, progress)
        self._wait_nodes_ready()
        progress(f"lab '{self.opts.cluster}' is up: SLURM_CONF={lay.slurm_conf}")
        return state

    def _ensure(self, state: LabState, name: str, start, progress) -> None:
        proc = state.procs.get(name)
        if proc and procs.alive(proc):
            return
        progress(f"starting {name}")
        state.procs[name] = start()
        state.save(self.state_file)

    def _devices(self) -> None:
        # 22.05 drops GPUs without File=; any character device will do (DESIGN B).
        for i in range(max(self.opts.gpus_per_node, 16)):
            path = self.dir / "dev" / f"nvidia{i}"
            if not path.exists():
                os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(195, i))

    def _write_configs(self) -> bool:
        """Write every config file; True when slurm.conf or gres.conf changed."""
        before = "".join(_read(p) for p in self._config_files())
        if not self.layout.fragment.exists():
            self.layout.fragment.write_text("# No bridge config rendered yet.\n")
        if self.opts.bridge_config is not None:
            self._render_bridge(self.opts.bridge_config)
        lay = self.layout
        gres_extra = lay.gres_fragment.read_text() if lay.gres_fragment.exists() else ""
        _write(lay.slurm_conf, templates.slurm_conf(lay), 0o644)
        _write(lay.etc / "gres.conf", templates.gres_conf(lay, gres_extra), 0o644)
        changed = before != "".join(_read(p) for p in self._config_files())
        pw_file = self.dir / "mysql" / "slurm.pass"
        if not pw_file.exists():
            _write(pw_file, secrets.token_hex(16), 0o600)
        _write(lay.etc / "slurmdbd.conf", templates.slurmdbd_conf(lay, pw_file.read_text()), 0o600)
        return changed

    def _config_files(self) -> list[Path]:
        etc = self.layout.etc
        return [self.layout.slurm_conf, self.layout.fragment, etc / "gres.conf", etc / "job_submit.lua",
                etc / "slurm-bridge.lua"]

    def _render_bridge(self, config_path: Path) -> None:
        """The same rendering an admin runs with `conf render`, pointed at the lab's paths."""
        from .. import render
        from ..config import load_config

        cfg = load_config(config_path)
        out = render.render(cfg, config_path=config_path.resolve(), gpu_device_dir=self.dir / "dev")
        render.write(out, self.layout.etc, fragment_name=self.layout.fragment.name,
                     gres_name=self.layout.gres_fragment.name)
        self.layout = dataclasses.replace(self.layout, onprem_features=out.onprem_features)
        self.opts.accounts = tuple(sorted(set(self.opts.accounts) | (set(cfg.accounts) - {"default"})))

    def _start_munge(self) -> Proc:
        lay = self.layout
        mdir = lay.munge_socket.parent
        os.chmod(mdir, 0o755)  # clients must reach the socket (DESIGN B)
        key = mdir / "munge.key"
        if not key.exists():
            fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(secrets.token_bytes(1024))
        proc = procs.spawn(
            ["munged", "-F", "--force", f"--socket={lay.munge_socket}", f"--key-file={key}",
             f"--pid-file={mdir}/munged.pid", f"--log-file={self.dir}/log/munged.log",
             f"--seed-file={mdir}/munged.seed"],
            self.dir / "log" / "munged.out", env=self.env())
        procs.wait_for("munged socket", lambda: lay.munge_socket.exists() or not procs.alive(proc), 10)
        if not procs.alive(proc):
            raise LabError(f"munged exited; see {self.dir}/log/munged.log")
        return proc

    def _mysql(self, sql: str) -> str:
        return procs.run(["mariadb", "--no-defaults", "-S", str(self.layout.mysql_socket),
                          "-u", "root", "-N", "-e", sql], env=self.env()).stdout

    def _start_mariadb(self) -> Proc:
        data = self.dir / "mysql" / "data"
        if not (data / "mysql").exists():
            data.mkdir(parents=True, exist_ok=True)
            procs.run(["mariadb-install-db", "--no-defaults", f"--datadir={data}", "--user=root",
                       "--auth-root-authentication-method=socket", "--skip-test-db"],
                      env=self.env(), timeout=120)
        sock = self.layout.mysql_socket
        proc = procs.spawn(
            ["mariadbd", "--no-defaults", f"--datadir={data}", f"--socket={sock}",
             f"--port={self.opts.mysql_port}", "--bind-address=127.0.0.1", "--user=root",
             f"--pid-file={self.dir}/run/mariadb.pid", "--innodb-buffer-pool-size=64M",
             "--skip-name-resolve"],
            self.dir / "log" / "mariadb.log", env=self.env())
        procs.wait_for("mariadb", lambda: _can_query(self) or not procs.alive(proc), 60, 0.25)
        if not procs.alive(proc):
            raise LabError(f"mariadbd exited; see {self.dir}/log/mariadb.log")
        pw = (self.dir / "mysql" / "slurm.pass").read_text()
        self._mysql(
            f"CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '{pw}';"
            f"ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '{pw}';"
            "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
        )
        return proc

    def _start_slurmdbd(self) -> Proc:
        env = self.env() | {"SLURM_CONF": str(self.layout.slurm_conf)}
        # slurmdbd finds slurmdbd.conf beside SLURM_CONF.
        proc = procs.spawn(["slurmdbd", "-D"], self.dir / "log" / "slurmdbd.out", env=env)
        procs.wait_for("slurmdbd port", lambda: _port_taken(self.opts.dbd_port) or not procs.alive(proc), 60, 0.25)
        if not procs.alive(proc):
            raise LabError(f"slurmdbd exited; see {self.dir}/log/slurmdbd.log")
        return proc

    def _sacctmgr(self, *args: str) -> str:
        return procs.run(["sacctmgr", "-i", "-n", "-P", *args], env=self.env()).stdout

    def _accounts(self) -> None:
        cluster = self.opts.cluster
        if cluster not in self._sacctmgr("list", "cluster", "format=cluster").split():
            self._sacctmgr("add", "cluster", cluster)
        wanted = ["lab", *self.opts.accounts]
        have = set(self._sacctmgr("list", "account", "format=account").split())
        for acct in wanted:
            if acct not in have:
                self._sacctmgr("add", "account", acct, f"cluster={cluster}", f"description={acct}",
                               "organization=lab")
        users = self._sacctmgr("list", "assoc", f"cluster={cluster}", "user=root", "format=account").split()
        for acct in wanted:
            if acct not in users:
                extra = ["defaultaccount=lab"] if acct == "lab" else []
                self._sacctmgr("add", "user", "root", f"account={acct}", f"cluster={cluster}", *extra)

    def _start_slurmctld(self) -> Proc:
        # -i: a changed node list in slurm.conf must not stop an idempotent re-run.
        proc = procs.spawn(["slurmctld", "-D", "-i"], self.dir / "log" / "slurmctld.out", env=self.env())
        procs.wait_for("slurmctld", lambda: self._ctld_ok() or not procs.alive(proc), 60, 0.25)
        if not procs.alive(proc):
            raise LabError(f"slurmctld exited; see {self.dir}/log/slurmctld.log")
        return proc

    def _ctld_ok(self) -> bool:
        done = procs.run(["scontrol", "ping"], check=False, env=self.env(), timeout=10)
        return "is UP" in done.stdout

    def _start_slurmd(self, node: templates.LabNode) -> Proc:
        return procs.spawn(
            [sys.executable, "-m", "slurm_bridge.lab.nsexec", "--netns", self.host_netns(node.name),
             "--hostname", node.name, "--", "slurmd", "-D", "-N", node.name],
            self.dir / "log" / f"slurmd-{node.name}.out", env=self.env())

    # -- SSH hosts ----------------------------------------------------------------

    @property
    def ssh_dir(self) -> Path:
        return self.dir / "ssh"

    def ssh_hosts(self) -> list[tuple[str, str]]:
        """(name, address) of each SSH host; the client key and known_hosts are in `ssh_dir`."""
        return [(f"ssh-{i}", str(a)) for i, a in enumerate(self.ssh_addrs)]

    def ssh_host_dir(self, name: str) -> Path:
        """What is private to host NAME: its login directory and its /etc/munge, /etc/slurm, munge socket dir."""
        return self.ssh_dir / name

    def _ssh_hosts(self, state: LabState, progress) -> None:
        if not self.ssh_addrs:
            return
        import asyncssh

        d = self.ssh_dir
        d.mkdir(mode=0o700, exist_ok=True)
        client = d / "id_ed25519"
        if not client.exists():
            key = asyncssh.generate_private_key("ssh-ed25519", comment="slurm-bridge lab")
            _write_bytes(client, key.export_private_key(), 0o600)
            _write_bytes(d / "authorized_keys", key.export_public_key(), 0o600)
        pins = []
        for name, address in self.ssh_hosts():
            h = self.ssh_host_dir(name)
            for sub in ("home", "etc-munge", "etc-slurm", "munge"):
                (h / sub).mkdir(parents=True, exist_ok=True)
                os.chmod(h / sub, 0o755 if sub != "home" else 0o700)
            host_key = h / "ssh_host_ed25519_key"
            if not host_key.exists():
                _write_bytes(host_key, asyncssh.generate_private_key("ssh-ed25519").export_private_key(), 0o600)
            public = asyncssh.read_private_key(str(host_key)).export_public_key().decode().strip()
            pins.append(f"{address} {public}")
            ns = self.host_netns(name)
            netns.add_host(ns, self.bridge, ipaddress.ip_interface(f"{address}/{self.gateway.network.prefixlen}"))
            if ns not in state.hosts:
                state.hosts.append(ns)
            self._ensure(state, f"sshhost:{name}", lambda n=name, a=address: self._start_ssh_host(n, a), progress)
        _write_bytes(d / "known_hosts", ("\n".join(pins) + "\n").encode(), 0o644)
        for name, address in self.ssh_hosts():
            procs.wait_for(f"sshd of {name}", lambda a=address: _port_open(a, 22), 20, 0.2)

    def _start_ssh_host(self, name: str, address: str) -> Proc:
        h = self.ssh_host_dir(name)
        binds = [f"{h / 'etc-munge'}:/etc/munge", f"{h / 'etc-slurm'}:/etc/slurm",
                 f"{h / 'munge'}:{self.layout.munge_socket.parent}"]
        return procs.spawn(
            [sys.executable, "-m", "slurm_bridge.lab.nsexec", "--netns", self.host_netns(name), "--hostname", name,
             *[a for b in binds for a in ("--bind", b)], "--",
             sys.executable, "-m", "slurm_bridge.lab.sshhost", "serve", "--home", str(h / "home"),
             "--host-key", str(h / "ssh_host_ed25519_key"), "--authorized-keys", str(self.ssh_dir / "authorized_keys")],
            self.dir / "log" / f"sshhost-{name}.out", env=self.env())

    def _wait_nodes_ready(self, timeout: float = 60) -> None:
        names = {n.name for n in self.layout.nodes}

        def ready() -> bool:
            out = procs.run(["sinfo", "-h", "-N", "-p", "gpu", "-o", "%N %T"], check=False,
                            env=self.env()).stdout
            states = dict(line.split() for line in out.splitlines() if line.strip())
            return all(states.get(n, "").rstrip("*~#%!") in ("idle", "mixed", "allocated") for n in names)

        procs.wait_for("on-prem nodes to register", ready, timeout, 0.5)

    def _link_conf(self, state: LabState) -> None:
        # Lets `sbatch` and `sacct` typed by hand find the lab, but never replaces a real site config.
        target = self.layout.slurm_conf
        if SYSTEM_SLURM_CONF.is_symlink() or not SYSTEM_SLURM_CONF.exists():
            SYSTEM_SLURM_CONF.parent.mkdir(parents=True, exist_ok=True)
            if SYSTEM_SLURM_CONF.is_symlink():
                SYSTEM_SLURM_CONF.unlink()
            SYSTEM_SLURM_CONF.symlink_to(target)
            state.conf_link = True

    # -- status and down -----------------------------------------------------------

    def status(self) -> dict:
        state = LabState.load(self.state_file)
        if state is None:
            return {"dir": str(self.dir), "up": False, "procs": {}, "hosts": []}
        live = {name: procs.alive(p) for name, p in state.procs.items()}
        return {
            "dir": str(self.dir),
            "up": bool(live) and all(live.values()),
            "procs": {name: {"pid": state.procs[name].pid, "alive": ok} for name, ok in live.items()},
            "hosts": [h for h in state.hosts if netns.netns_exists(h)],
            "slurm_conf": str(self.layout.slurm_conf),
        }

    def down(self, progress=print, purge: bool = False) -> None:
        state = LabState.load(self.state_file)
        if state is None:
            progress(f"no lab recorded in {self.dir}")
            return
        self._stop_all(state, progress)
        if purge:
            # Only a directory the lab itself made: lab.json marks it.
            shutil.rmtree(self.dir)
            progress(f"removed {self.dir}")

    def _stop_all(self, state: LabState, progress) -> None:
        from ..providers.local import LocalProvider

        # Instances the local provider launched into this lab are hosts of the lab too.
        gone = LocalProvider((), self.dir).destroy_all()
        if gone:
            progress(f"terminated {gone} local instance(s)")
        # Cloud instances first (they are slurmds too), then nodes, then the services they need.
        order = sorted(state.procs, key=_stop_rank)
        for name in order:
            progress(f"stopping {name}")
            procs.stop(state.procs[name])
            del state.procs[name]
            state.save(self.state_file)
        for host in list(state.hosts):
            # Job steps (slurmstepd and the job's own processes) outlive slurmd.
            netns.kill_all_in(host)
            netns.remove_host(host)
            state.hosts.remove(host)
            state.save(self.state_file)
        if state.bridge:
            netns.remove_bridge(state.bridge)
        if state.conf_link and SYSTEM_SLURM_CONF.is_symlink() and \
                os.readlink(SYSTEM_SLURM_CONF) == str(self.layout.slurm_conf):
            SYSTEM_SLURM_CONF.unlink()
        state.conf_link = False
        state.bridge = ""
        state.save(self.state_file)
        progress(f"lab '{self.opts.cluster}' is down")

    def register(self, name: str, proc: Proc | None = None, host: str | None = None) -> None:
        """Let other lab users (the local provider) record what `down` must clean up."""
        state = self._state()
        if proc is not None:
            state.procs[name] = proc
        if host is not None and host not in state.hosts:
            state.hosts.append(host)
        state.save(self.state_file)


def _stop_rank(name: str) -> int:
    for rank, prefix in enumerate(("instance:", "slurmd:", "slurmctld", "slurmdbd", "mariadb", "munged")):
        if name.startswith(prefix):
            return rank
    return 0


def _options_json(opts: LabOptions) -> dict:
    out = {}
    for key, value in vars(opts).items():
        out[key] = str(value) if isinstance(value, Path) else value
    return out


def _write(path: Path, text: str, mode: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


def _write_bytes(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, mode)


def _port_open(address: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((address, port)) == 0


def _port_taken(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _can_query(lab: Lab) -> bool:
    try:
        lab._mysql("SELECT 1")
        return True
    except LabError:
        return False
