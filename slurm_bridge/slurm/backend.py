"""The interface the rest of slurm-bridge uses to talk to Slurm."""

from __future__ import annotations

from datetime import datetime
from typing import Iterable, Protocol, Sequence

from ..models import AccountingRecord, Job, Node


class SlurmBackend(Protocol):
    def version(self) -> tuple[int, int, int]:
        """(major, minor, micro) of the running Slurm."""

    def jobs(self) -> list[Job]:
        """Every job slurmctld holds (pending, running, recently finished)."""

    def pending_jobs(self, partitions: Iterable[str] | None = None) -> list[Job]:
        """Pending jobs whose partition list includes any of PARTITIONS (all when None)."""

    def expected_starts(self, job_ids: Sequence[int]) -> dict[int, float]:
        """Slurm's expected start (unix seconds) of pending jobs that have one."""

    def sibling_starts(self, job_ids: Sequence[int]) -> dict[int, tuple[str, float]]:
        """Federated jobs: (cluster, expected start) of the earliest sibling on another cluster."""

    def job(self, job_id: int) -> Job | None: ...

    def nodes(self, names: Iterable[str] | None = None) -> list[Node]:
        """Nodes (all when NAMES is None); CLOUD nodes need PrivateData=cloud to be listed."""

    def node_details(self, names: Sequence[str]) -> list[Node]:
        """Fresh state of a few named nodes."""

    def show_config(self) -> dict[str, str]:
        """The running slurmctld's configuration (`scontrol show config`)."""

    def partitions(self) -> dict[str, dict[str, str]]:
        """Partition name -> its `scontrol show partition` fields."""

    def update_job(self, job_id: int | str, *, partitions: Sequence[str] | None = None,
                   features: str | None = None, admin_comment: str | None = None,
                   start_now: bool = False) -> None:
        """JOB_ID is a job id, or some tasks of a job array as scontrol writes them ("7_[3-6]")."""

    def requeue(self, job_ids: Sequence[int]) -> None: ...

    def update_partition(self, name: str, *, state: str) -> None:
        """UP, DOWN (accepts jobs, starts none), DRAIN or INACTIVE."""

    def update_nodes(self, names: Sequence[str], *, state: str | None = None,
                     reason: str | None = None, address: str | None = None,
                     hostname: str | None = None, available_features: Sequence[str] | None = None,
                     active_features: Sequence[str] | None = None,
                     comment: str | None = None) -> None: ...

    def accounting(self, *, since: datetime, until: datetime | None = None,
                   job_ids: Sequence[int] | None = None, runs: bool = False) -> list[AccountingRecord]:
        """Job allocations from slurmdbd; RUNS lists every run of a requeued job, not only its last."""
