"""What a leaked secret would look like in a blob: for scans of logs, databases and rendered files."""

from __future__ import annotations

import base64


def needles(key: bytes) -> list[bytes]:
    """What a leak of KEY would look like: raw, base64, hex or a bytes repr of (the start of) it.
    24 bytes encode to base64 without padding, so a leak of the whole key contains them all."""
    head = key[:24]
    return [head, base64.b64encode(head), base64.urlsafe_b64encode(head), head.hex().encode(),
            repr(key)[2:40].encode(), base64.b64encode(key)]


def leaks(key: bytes, blob: bytes | str) -> list[bytes]:
    data = blob.encode() if isinstance(blob, str) else blob
    return [n for n in needles(key) if n in data]
