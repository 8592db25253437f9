"""SlurmBackend over the Slurm commands: `--json` where 22.05 has it, `scontrol -o` where not.

Never through a shell: every argument is passed as a list element, so a
node name or reason can not become a command.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
from datetime import datetime
from typing import Iterable, Sequence

from ..errors import SlurmError
from ..models import AccountingRecord, Job, Node
from . import node_text, parse, pending
from .hostlists import compress
from .node_text import NodeParser
from .pending import PendingParser

# slurmctld starts our programs with no PATH; Debian puts the commands here.
log = logging.getLogger(__name__)
_TASKS_REF = re.compile(r"\d+_\[\d+(?:-\d+)?(?:,\d+(?:-\d+)?)*\]")    # "7_[3-6,9]": some tasks of array 7
_PATH = "/usr/bin:/bin:/usr/sbin:/sbin"


class CliSlurm:
    def __init__(self, slurm_conf: str | os.PathLike | None = None, timeout: float = 60.0,
                 bin_dir: str | None = None):
        self.slurm_conf = str(slurm_conf) if slurm_conf else os.environ.get("SLURM_CONF")
        self.timeout = timeout
        self.bin_dir = bin_dir
        self._version: tuple[int, int, int] | None = None
        self._cluster_name: str | None = None
        self._pending = PendingParser()
        self._nodes = NodeParser()

    # -- plumbing ------------------------------------------------------------------

    def _env(self, tz: str | None = None) -> dict[str, str]:
        env = {"PATH": os.environ.get("PATH") or _PATH, "LC_ALL": "C"}
        if tz:
            env["TZ"] = tz
        if self.slurm_conf:
            env["SLURM_CONF"] = self.slurm_conf
        return env

    def run(self, argv: list[str], *, tz: str | None = None) -> str:
        cmd = [os.path.join(self.bin_dir, argv[0]) if self.bin_dir else argv[0], *argv[1:]]
        shown = " ".join(argv[:3])
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, env=self._env(tz),
                                  timeout=self.timeout, stdin=subprocess.DEVNULL)
        except FileNotFoundError as exc:
            raise SlurmError(f"{argv[0]}: command not found (is slurm-client installed?)") from exc
        except subprocess.TimeoutExpired as exc:
            raise SlurmError(f"{shown}: no answer within {self.timeout:.0f} s (is slurmctld up?)") from exc
        if done.returncode != 0:
            said = (done.stderr.strip() or done.stdout.strip()).splitlines()
            raise SlurmError(f"{shown}: exit {done.returncode}: {said[-1] if said else 'no output'}")
        return done.stdout

    # -- reads -------------------------------------------------------------------------

    def version(self) -> tuple[int, int, int]:
        if self._version is None:
            out = self.run(["sinfo", "--version"]).split()
            try:
                parts = out[-1].split(".")
                self._version = (int(parts[0]), int(parts[1]), int(parts[2].split("-")[0]))
            except (IndexError, ValueError) as exc:
                raise SlurmError(f"sinfo --version: cannot read version from {' '.join(out)!r}") from exc
        return self._version

    def jobs(self) -> list[Job]:
        # squeue --json ignores -p/-t/-j filters in 22.05 (DESIGN B): filter here.
        return parse.jobs_from_squeue(parse.load_json(self.run(["squeue", "--json"]), "squeue --json"))

    def pending_jobs(self, partitions: Iterable[str] | None = None) -> list[Job]:
        # Narrow text, not --json: the text output honours -t/-p (see pending.py for the numbers).
        jobs = self._pending.parse(self.run(pending.argv(partitions), tz="UTC"))
        if self._pending.bad_lines:
            # One odd job (a newline in its name) must not stop the watch for every other job.
            log.warning("squeue: skipped %d line(s) not in the expected shape, first: %r",
                        len(self._pending.bad_lines), self._pending.bad_lines[0][:200])
        return jobs

    def expected_starts(self, job_ids: Sequence[int]) -> dict[int, float]:
        out: dict[int, float] = {}
        ids = sorted(set(job_ids))
        for i in range(0, len(ids), 500):        # keeps the command line short
            out.update(pending.parse_starts(self.run(pending.start_argv(ids[i:i + 500]), tz="UTC")))
        return out

    def sibling_starts(self, job_ids: Sequence[int]) -> dict[int, tuple[str, float]]:
        """For federated jobs: the earliest expected start of a sibling on another cluster, and where.
        A sibling cluster that does not answer is logged and passed over."""
        ids = sorted(set(job_ids))
        if not ids:
            return {}
        viable = pending.parse_siblings(self.run(pending.siblings_argv(ids)))
        if not viable:
            return {}
        local = self.cluster_name()
        asked: dict[str, list[int]] = {}
        for job, clusters in viable.items():
            for cluster in clusters:
                if cluster != local:
                    asked.setdefault(cluster, []).append(job)
        out: dict[int, tuple[str, float]] = {}
        for cluster, jobs in sorted(asked.items()):
            try:
                starts = pending.parse_starts(self.run(pending.start_argv(jobs, cluster=cluster), tz="UTC"))
            except SlurmError as exc:
                log.warning("federation sibling %s did not answer: %s", cluster, exc)
                continue
            for job, at in starts.items():
                if job not in out or at < out[job][1]:
                    out[job] = (cluster, at)
        return out

    def cluster_name(self) -> str:
        if self._cluster_name is None:
            self._cluster_name = self.show_config().get("ClusterName", "")
        return self._cluster_name

    def job(self, job_id: int) -> Job | None:
        return next((j for j in self.jobs() if j.job_id == job_id), None)

    def nodes(self, names: Iterable[str] | None = None) -> list[Node]:
        # Narrow text, not --json: it honours -n and carries only what we read (see node_text.py).
        wanted = None if names is None else set(names)
        if wanted is not None and not wanted:
            return []
        nodes = self._nodes.parse(self.run(node_text.argv(wanted)))
        if self._nodes.bad_lines:
            log.warning("sinfo: skipped %d line(s) not in the expected shape, first: %r",
                        len(self._nodes.bad_lines), self._nodes.bad_lines[0][:200])
        return nodes if wanted is None else [n for n in nodes if n.name in wanted]

    def node_details(self, names: Sequence[str]) -> list[Node]:
        """Fresh state of a few nodes: `scontrol show node` honours its argument, sinfo --json does not."""
        if not names:
            return []
        return parse.nodes_from_scontrol(self.run(["scontrol", "-o", "show", "node", compress(names)]))

    def show_config(self) -> dict[str, str]:
        return parse.config_from_scontrol(self.run(["scontrol", "show", "config"]))

    def partitions(self) -> dict[str, dict[str, str]]:
        return parse.partitions_from_scontrol(self.run(["scontrol", "-o", "show", "partition"]))

    def accounting(self, *, since: datetime, until: datetime | None = None,
                   job_ids: Sequence[int] | None = None, runs: bool = False) -> list[AccountingRecord]:
        """RUNS: every run of a requeued job (sacct -D), not only its last."""
        argv = ["sacct", "--json", "-a", "-S", _sacct_time(since)]
        if runs:
            argv.append("--duplicates")
        argv += ["-E", _sacct_time(until)] if until else ["-E", "now"]
        if job_ids:
            argv += ["-j", ",".join(str(j) for j in job_ids)]
        return parse.accounting_from_sacct(parse.load_json(self.run(argv), "sacct --json"))

    # -- writes ----------------------------------------------------------------------

    def update_job(self, job_id: int | str, *, partitions: Sequence[str] | None = None,
                   features: str | None = None, admin_comment: str | None = None,
                   start_now: bool = False) -> None:
        if isinstance(job_id, str) and not _TASKS_REF.fullmatch(job_id):
            raise SlurmError(f"not a job id or array tasks reference: {job_id!r}")
        argv = ["scontrol", "update", f"jobid={job_id if isinstance(job_id, str) else int(job_id)}"]
        if partitions is not None:
            argv.append("partition=" + ",".join(partitions))
        if features is not None:
            argv.append(f"features={features}")
        if admin_comment is not None:
            argv.append(f"admincomment={admin_comment}")
        if start_now:
            argv.append("starttime=now")     # a pending job's begin time: e.g. the delay a requeue sets
        if len(argv) > 3:
            self.run(argv)

    def update_partition(self, name: str, *, state: str) -> None:
        self.run(["scontrol", "update", f"partitionname={name}", f"state={state}"])

    def requeue(self, job_ids: Sequence[int]) -> None:
        if job_ids:
            self.run(["scontrol", "requeue", ",".join(str(int(j)) for j in job_ids)])

    def update_nodes(self, names: Sequence[str], *, state: str | None = None,
                     reason: str | None = None, address: str | None = None,
                     hostname: str | None = None, available_features: Sequence[str] | None = None,
                     active_features: Sequence[str] | None = None,
                     comment: str | None = None) -> None:
        if not names:
            return
        argv = ["scontrol", "update", f"nodename={compress(names)}"]
        if address is not None:
            argv.append(f"nodeaddr={address}")
        if hostname is not None:
            argv.append(f"nodehostname={hostname}")
        if available_features is not None:
            argv.append("availablefeatures=" + ",".join(available_features))
        if active_features is not None:
            argv.append("activefeatures=" + ",".join(active_features))
        if comment is not None:
            argv.append(f"comment={comment}")
        if state is not None:
            argv.append(f"state={state}")
            if reason is not None:
                argv.append(f"reason={reason}")
        if len(argv) > 3:
            self.run(argv)


def _sacct_time(t: datetime) -> str:
    if t.tzinfo is not None:
        t = t.astimezone().replace(tzinfo=None)  # sacct reads local time
    return t.strftime("%Y-%m-%dT%H:%M:%S")
