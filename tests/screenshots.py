"""Headless Chromium screenshots of the HTML reports, and a small PNG reader to look at them.

Chromium is the Debian package `chromium` (installed by `make test`); without it these tests fail
with that name rather than skip. The flags keep it off the network this machine does not have.
"""

from __future__ import annotations

import struct
import subprocess
import zlib
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")


def screenshot(page: Path, workdir: Path, size: str = "1200,1600") -> Path:
    """PNG of PAGE as headless Chromium renders it."""
    if not CHROMIUM.exists():
        pytest.fail("/usr/bin/chromium is missing: install the Debian package `chromium` "
                    "(apt-get install chromium) to render the HTML report in a real browser")
    shot = workdir / (page.stem + ".png")
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={workdir / 'chromium-profile'}", f"--window-size={size}", f"--screenshot={shot}",
           f"file://{page}"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)
    assert shot.exists(), f"chromium wrote no screenshot (exit {done.returncode}):\n{done.stderr[-2000:]}"
    return shot


def read_png(path: Path) -> tuple[int, int, list[bytes], int]:
    """Width, height, unfiltered rows and bytes per pixel of an 8-bit RGB or RGBA PNG."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (length,), kind = struct.unpack(">I", data[pos:pos + 4]), data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    assert header is not None, "no IHDR chunk"
    width, height, depth, colour, _, _, interlace = header
    assert depth == 8 and colour in (2, 6) and interlace == 0, f"unexpected PNG format {header}"
    bpp = 3 if colour == 2 else 4
    return width, height, unfilter(zlib.decompress(idat), width, height, bpp), bpp


def unfilter(raw: bytes, width: int, height: int, bpp: int) -> list[bytes]:
    stride, rows, prev, pos = width * bpp, [], bytearray(width * bpp), 0
    for _ in range(height):
        kind, line = raw[pos], bytearray(raw[pos + 1:pos + 1 + stride])
        pos += 1 + stride
        if kind == 1:
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 255
        elif kind == 2:
            line = bytearray((a + b) & 255 for a, b in zip(line, prev))
        elif kind == 3:
            for i in range(stride):
                line[i] = (line[i] + ((line[i - bpp] if i >= bpp else 0) + prev[i]) // 2) & 255
        elif kind == 4:
            for i in range(stride):
                a, b = (line[i - bpp] if i >= bpp else 0), prev[i]
                c = prev[i - bpp] if i >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return rows


def near(pixel: tuple[int, ...], hex_colour: str, tolerance: int = 8) -> bool:
    want = bytes.fromhex(hex_colour[1:])
    return all(abs(p - w) <= tolerance for p, w in zip(pixel, want))


