"""Plain data shared by every layer: no I/O, no imports from the rest of the package."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class Zone:
    """A residency zone: a named set of ISO 3166 alpha-2 countries, or every country."""

    name: str
    countries: frozenset[str] | None  # None: any country

    def contains(self, country: str) -> bool:
        return self.countries is None or country.upper() in self.countries

    def within(self, other: "Zone") -> bool:
        """True when every country of this zone is also in OTHER."""
        if other.countries is None:
            return True
        if self.countries is None:
            return False
        return self.countries <= other.countries

    @property
    def feature(self) -> str:
        return f"res_{self.name}"


@dataclass(frozen=True, slots=True)
class GresRequest:
    """GPUs a job asks for, normalised from --gres/--gpus*/tres strings."""

    gpus_per_node: int = 0
    gpus_total: int = 0
    gpu_type: str | None = None


@dataclass(frozen=True, slots=True)
class Job:
    job_id: int
    name: str
    user: str
    account: str
    partitions: tuple[str, ...]
    state: str                      # PENDING, RUNNING, ... (one string; 23.02+ lists are joined)
    reason: str                     # Resources, Priority, Dependency, JobHeldUser, ...
    submit_time: datetime | None
    start_time: datetime | None     # expected start (backfill estimate) while pending
    time_limit_min: int | None      # None: unlimited / partition default
    node_count: int
    cpus: int
    memory_per_cpu_mb: int | None
    memory_per_node_mb: int | None
    gres: GresRequest
    features: str                   # the --constraint expression as submitted
    requeue: bool
    batch: bool
    array_job_id: int | None = None
    array_task: str | None = None   # "3" for one task, "0-39%4" for a pending meta record
    nodes: str = ""                 # allocated hostlist once running
    admin_comment: str = ""


@dataclass(frozen=True, slots=True)
class Node:
    name: str
    state: str                      # base state: IDLE, ALLOCATED, MIXED, DOWN, ...
    flags: frozenset[str]           # CLOUD, POWERED_DOWN, POWERING_UP, DRAIN, NOT_RESPONDING, ...
    available_features: tuple[str, ...]
    active_features: tuple[str, ...]
    address: str
    hostname: str
    partitions: tuple[str, ...]
    comment: str = ""
    reason: str = ""
    gres: str = ""
    cpus: int = 0
    real_memory_mb: int = 0
    boot_time: datetime | None = None

    @property
    def powered_down(self) -> bool:
        return "POWERED_DOWN" in self.flags

    @property
    def powering_up(self) -> bool:
        return "POWERING_UP" in self.flags


@dataclass(frozen=True)
class AccountingRecord:
    """One job allocation from sacct (steps are not listed separately)."""

    job_id: int
    job_id_str: str                 # "7_3" for an array task, "42" otherwise
    array_job_id: int | None
    array_task_id: int | None
    name: str
    user: str
    account: str
    partition: str
    cluster: str
    state: str
    nodes: str                      # hostlist as sacct prints it; "None assigned" becomes ""
    alloc_tres: dict[str, int] = field(default_factory=dict)   # {"cpu": 1, "gres/gpu": 1, ...}
    submit: datetime | None = None
    start: datetime | None = None
    end: datetime | None = None
    elapsed_s: int = 0
    admin_comment: str = ""
    constraints: str = ""

    @property
    def gpus(self) -> int:
        return self.alloc_tres.get("gres/gpu", 0)
