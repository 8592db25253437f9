"""The README's links point somewhere: every #anchor to one of its headings, every relative path to a file."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _anchor(heading: str) -> str:
    # GitHub's rule: lower case, drop punctuation but '-' and '_', spaces become '-'.
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_readme_links_resolve():
    for doc in (REPO / "README.md", REPO / "slurm_conf" / "README.md", REPO / "systemd" / "README.md"):
        text = doc.read_text()
        anchors = {_anchor(h) for h in re.findall(r"^#+ (.+)$", text, re.M)}
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if target.startswith(("http://", "https://")):
                continue
            path, _, anchor = target.partition("#")
            if path:
                assert (doc.parent / path).exists(), f"{doc.relative_to(REPO)}: link to missing {path}"
            elif anchor:
                assert anchor in anchors, f"{doc.relative_to(REPO)}: no heading for #{anchor}"
