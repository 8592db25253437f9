"""Errors a person can act on. Anything else is a bug and keeps its traceback."""

from __future__ import annotations


class BridgeError(Exception):
    """Base of every error that carries a message meant for the admin."""


class ConfigError(BridgeError):
    """The config is wrong; the message names the key and the reason."""


class SlurmError(BridgeError):
    """A Slurm command failed; the message names the command and what Slurm said."""


class LabError(BridgeError):
    """The lab cannot do what was asked; the message says exactly why."""


def user_facing(exc: BaseException) -> str | None:
    if isinstance(exc, BridgeError):
        return str(exc)
    return None
