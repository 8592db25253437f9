"""Host keys of a new instance, as its provider publishes them: pinned before the bridge connects.

A cloud instance's SSH host key is made at its first boot; the bridge must learn it through the
provider's authenticated API, never from the network it is about to trust (that would be trust on
first use, and whoever answers first would get the munge key):

- AWS: cloud-init prints the keys to the instance's console between `-----BEGIN SSH HOST KEY
  KEYS-----` and `-----END SSH HOST KEY KEYS-----`; `GetConsoleOutput` reads it.
- GCP: the guest environment publishes them as guest attributes under `hostkeys/` (the instance
  needs the metadata item `enable-guest-attributes = TRUE`); `getGuestAttributes` reads them.
- local (the lab): the instance's host writes its public key where the provider's records are.

`None` from a provider means "not published yet" (the instance is still booting): ask again.
"""

from __future__ import annotations

import re
from typing import Iterable, Protocol, Sequence, runtime_checkable

import asyncssh

BEGIN, END = "-----BEGIN SSH HOST KEY KEYS-----", "-----END SSH HOST KEY KEYS-----"
_LINE = re.compile(r"(?P<type>[a-z0-9@.-]+) (?P<blob>[A-Za-z0-9+/]+={0,2})(?: .*)?")


@runtime_checkable
class PublishesHostKeys(Protocol):
    def host_keys(self, region: str, instance_id: str) -> tuple[str, ...] | None:
        """The instance's SSH host public keys (`type base64`), or None while none are published."""


def valid_keys(lines: Iterable[str]) -> tuple[str, ...]:
    """The lines that are real SSH public keys, as `type base64`, in order, without duplicates."""
    out: list[str] = []
    for line in lines:
        m = _LINE.fullmatch(line.strip())
        if m is None:
            continue
        key = f"{m.group('type')} {m.group('blob')}"
        try:
            asyncssh.import_public_key(key)
        except (asyncssh.KeyImportError, ValueError):
            continue
        if key not in out:
            out.append(key)
    return tuple(out)


def from_console(text: str) -> tuple[str, ...] | None:
    """The keys of the last complete block cloud-init printed to the console, or None if none yet.
    The last: a rebuilt instance prints a new block, and only the newest describes the running host."""
    end = text.rfind(END)
    begin = text.rfind(BEGIN, 0, end) if end >= 0 else -1
    if begin < 0:
        return None
    keys = valid_keys(text[begin + len(BEGIN):end].splitlines())
    return keys or None


def known_hosts_lines(address: str, port: int, keys: Sequence[str]) -> str:
    host = address if port == 22 else f"[{address}]:{port}"
    return "".join(f"{host} {k}\n" for k in keys)
