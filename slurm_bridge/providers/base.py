"""The provider contract: the verbs every cloud implements, with typed requests and results.

Failures are classified here, at the boundary, into what went wrong and which
scope should be avoided for a while (an availability zone, a region, or the
whole provider), so the selector can re-rank around it without knowing any
cloud's error codes. Retry intent (temporary or permanent) travels with the
failure; transport retries stay inside each provider.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, field
from typing import Protocol, Sequence, runtime_checkable

from ..errors import BridgeError


# Every provider tags each instance with the client token it was launched with, or, where a tag cannot
# be per instance (GCP labels a bulkInsert batch alike), shows the token's digest in TOKEN_DIGEST_TAG.
TOKEN_TAG = "slurm-bridge:token"
TOKEN_DIGEST_TAG = "slurm-bridge:token-digest"


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:8]


class FailureKind(enum.Enum):
    CAPACITY = "capacity"        # no such instances right now in that place
    QUOTA = "quota"              # the account may not have more there
    THROTTLED = "throttled"      # asked too fast: same place, later
    CREDENTIALS = "credentials"  # cannot authenticate or not authorised: fatal, loud
    CONFIG = "config"            # bad template, image, network: fatal, loud
    TRANSIENT = "transient"      # 5xx, timeout, connection reset: try again soon
    UNKNOWN = "unknown"


class Scope(enum.Enum):
    ZONE = "zone"
    REGION = "region"
    PROVIDER = "provider"
    NONE = "none"                # retry the same place


DEFAULT_SCOPE = {
    FailureKind.CAPACITY: Scope.REGION,
    FailureKind.QUOTA: Scope.REGION,
    FailureKind.THROTTLED: Scope.NONE,
    FailureKind.CREDENTIALS: Scope.PROVIDER,
    FailureKind.CONFIG: Scope.PROVIDER,
    FailureKind.TRANSIENT: Scope.REGION,
    FailureKind.UNKNOWN: Scope.REGION,
}


@dataclass(frozen=True)
class Failure:
    kind: FailureKind
    message: str
    scope: Scope | None = None   # None: DEFAULT_SCOPE[kind]
    zone: str | None = None      # availability zone the failure is about, when narrower than region
    retry_after_s: float | None = None

    @property
    def effective_scope(self) -> Scope:
        return self.scope if self.scope is not None else DEFAULT_SCOPE[self.kind]

    @property
    def temporary(self) -> bool:
        return self.kind not in (FailureKind.CREDENTIALS, FailureKind.CONFIG)


class ProviderError(BridgeError):
    def __init__(self, failure: Failure):
        super().__init__(f"{failure.kind.value}: {failure.message}")
        self.failure = failure


@dataclass(frozen=True)
class NodeSpec:
    node: str
    pool: str
    instance_type: str
    spot: bool
    job_ids: tuple[int, ...] = ()
    client_token: str = ""       # unique per (node, resume request): makes a retried launch idempotent


@dataclass(frozen=True)
class LaunchRequest:
    cluster: str
    region: str
    nodes: tuple[NodeSpec, ...]
    zone: str | None = None      # availability zone, when the provider takes one


@dataclass(frozen=True)
class Instance:
    instance_id: str
    node: str
    region: str
    state: str                   # pending, running, stopping, terminated (provider words mapped)
    address: str = ""
    zone: str = ""
    instance_type: str = ""
    cluster: str = ""
    launched_at: float | None = None   # unix seconds
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class LaunchResult:
    launched: tuple[Instance, ...]
    failed: dict[str, Failure]   # node -> why it did not launch

    @property
    def complete(self) -> bool:
        return not self.failed


@runtime_checkable
class Provider(Protocol):
    name: str

    def launch(self, request: LaunchRequest) -> LaunchResult:
        """Start every node of REQUEST in its region. Never raises for a classified failure."""

    def terminate(self, region: str, instance_ids: Sequence[str]) -> None:
        """Terminate; unknown or already-gone ids are not an error. Raises ProviderError."""

    def list_instances(self, cluster: str) -> list[Instance]:
        """Every live instance tagged with CLUSTER, in every region the provider serves."""

    def describe(self, region: str, instance_ids: Sequence[str]) -> list[Instance]:
        """Current view of the given instances; missing ones are left out."""
