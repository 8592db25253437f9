"""The type checker verifies that every provider implements the Provider protocol (providers/base.py).

A provider is a typing.Protocol, not a base class: nothing at run time would notice a verb with the
wrong signature. mypy (installed with the test extras) checks each one structurally.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PROVIDERS = {"aws": "AwsProvider", "gcp": "GcpProvider", "local": "LocalProvider", "ssh": "SshProvider"}
# The providers [bootstrap] serves must also tell new instances' host keys (providers/hostkeys.py).
PUBLISHERS = ("aws", "gcp", "local")


def test_every_provider_is_a_provider_to_mypy(tmp_path):
    lines = ["from slurm_bridge.providers.base import Provider",
             "from slurm_bridge.providers.hostkeys import PublishesHostKeys"]
    for module, cls in PROVIDERS.items():
        lines += [f"from slurm_bridge.providers.{module} import {cls}",
                  f"def as_{module}(p: {cls}) -> Provider:\n    return p"]
        if module in PUBLISHERS:
            lines.append(f"def keys_of_{module}(p: {cls}) -> PublishesHostKeys:\n    return p")
    check = tmp_path / "check_providers.py"
    check.write_text("\n".join(lines) + "\n")
    done = subprocess.run([sys.executable, "-m", "mypy", "--ignore-missing-imports", "--follow-imports=silent",
                           str(check)], capture_output=True, text=True, cwd=Path(__file__).parent.parent)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_check_fails_for_a_class_that_is_not_a_provider(tmp_path):
    check = tmp_path / "not_a_provider.py"
    check.write_text("from slurm_bridge.providers.base import Provider\n"
                     "class Half:\n    name = 'half'\n    def launch(self, request: int) -> None: ...\n"
                     "def as_half(p: Half) -> Provider:\n    return p\n")
    done = subprocess.run([sys.executable, "-m", "mypy", "--ignore-missing-imports", "--follow-imports=silent",
                           str(check)], capture_output=True, text=True, cwd=Path(__file__).parent.parent)
    assert done.returncode == 1 and "Incompatible return value" in done.stdout, done.stdout
