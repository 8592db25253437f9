"""A tiny sd_notify(3) client: tell systemd we are ready, alive, reloading or stopping.

The protocol is one AF_UNIX datagram of newline-separated `KEY=VALUE` lines sent
to the socket named in `$NOTIFY_SOCKET`: a filesystem path, or an abstract
socket written with a leading '@'. Without `$NOTIFY_SOCKET` (not started by
systemd, or a unit that is not Type=notify) every call is a no-op that returns
False, so the daemon can call it unconditionally.

    notify(READY=1, STATUS="watching gpu")      # b"READY=1\\nSTATUS=watching gpu"
    notify(WATCHDOG=1)
    reloading()                                 # RELOADING=1 + MONOTONIC_USEC=...
    notify(STOPPING=1)

No dependency beyond the standard library; never raises for a transport error
(the service must not die because its manager is gone), only for a malformed
field, which is a bug in the caller.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import time

log = logging.getLogger("slurm_bridge.sdnotify")

_KEY_RE = re.compile(r"^[A-Z][A-Z0-9_]*$")


def _address() -> str | None:
    path = os.environ.get("NOTIFY_SOCKET", "")
    if not path:
        return None
    if path.startswith("@"):
        return "\0" + path[1:]          # abstract namespace: Linux-only, leading NUL
    if path.startswith("/"):
        return path
    # systemd 254+ may also hand out "vsock:CID:PORT"; nothing here runs inside a VM guest of systemd.
    log.debug("NOTIFY_SOCKET=%r is neither a path nor an abstract socket: not notifying", path)
    return None


def _value(key: str, value: object) -> str:
    if value is True:
        return "1"
    if value is False or value is None:
        raise ValueError(f"sd_notify field {key}: no value (pass 1 or a string)")
    text = str(value)
    if "\n" in text:
        raise ValueError(f"sd_notify field {key}: a value may not contain a newline")
    return text


def message(**fields: object) -> bytes:
    """The datagram for FIELDS, in the order given: b"READY=1\\nSTATUS=..."."""
    if not fields:
        raise ValueError("sd_notify needs at least one field")
    lines = []
    for key, value in fields.items():
        name = key.upper()
        if not _KEY_RE.match(name):
            raise ValueError(f"sd_notify field name {key!r} is not of the form KEY")
        lines.append(f"{name}={_value(name, value)}")
    return "\n".join(lines).encode()


def notify(**fields: object) -> bool:
    """Send FIELDS as one datagram to $NOTIFY_SOCKET.

    Keys are upper-cased (`ready=1` and `READY=1` are the same); True means "1".
    Returns True when the datagram was sent, False when $NOTIFY_SOCKET is unset or
    unusable or the send failed (logged once per call at warning level).
    """
    data = message(**fields)
    addr = _address()
    if addr is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(data, addr)
    except OSError as exc:
        log.warning("sd_notify to %s failed: %s", os.environ.get("NOTIFY_SOCKET"), exc)
        return False
    return True


def reloading(status: str | None = None) -> bool:
    """RELOADING=1 with MONOTONIC_USEC (CLOCK_MONOTONIC in microseconds), as systemd 253+ wants it
    for Type=notify-reload; older managers ignore the extra field. Send READY=1 when done."""
    fields: dict[str, object] = {"RELOADING": 1, "MONOTONIC_USEC": time.monotonic_ns() // 1000}
    if status is not None:
        fields["STATUS"] = status
    return notify(**fields)


def watchdog_interval() -> float | None:
    """How often to send WATCHDOG=1, in seconds: half of $WATCHDOG_USEC, as sd_watchdog_enabled(3)
    recommends. None when the watchdog is off: $WATCHDOG_USEC unset, not a positive integer, or
    $WATCHDOG_PID set to another process (the variables were inherited, not meant for us)."""
    raw = os.environ.get("WATCHDOG_USEC", "")
    if not raw:
        return None
    try:
        usec = int(raw)
    except ValueError:
        log.warning("WATCHDOG_USEC=%r is not an integer: watchdog off", raw)
        return None
    if usec <= 0:
        return None
    pid = os.environ.get("WATCHDOG_PID", "")
    if pid:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            log.warning("WATCHDOG_PID=%r is not a PID: watchdog off", pid)
            return None
    return usec / 2 / 1_000_000
