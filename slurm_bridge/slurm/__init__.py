"""Adapters to Slurm. `default_backend()` is what every other module should use."""

from __future__ import annotations

import os

from .backend import SlurmBackend
from .cli_backend import CliSlurm

__all__ = ["SlurmBackend", "CliSlurm", "default_backend"]


def default_backend(slurm_conf: str | os.PathLike | None = None) -> SlurmBackend:
    # The pyslurm backend will be chosen here when it is importable and matches the
    # running Slurm (DESIGN C); until then the command-line backend serves every version.
    return CliSlurm(slurm_conf)
