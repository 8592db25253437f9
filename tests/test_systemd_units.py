"""The systemd unit and tmpfiles line: the settings we promise, and systemd's own checks of them.

`systemd-analyze verify` works here although PID 1 is not systemd: it loads the
unit file into an offline manager, and needs no running one. It does check that
ExecStart's binary exists and is executable, so the check runs on a copy whose
ExecStart points at this virtualenv's `slurm-bridge` script (the same program,
installed elsewhere); everything else is verified as shipped. Verify exits 0 on
unknown keys and unparsable values (it only warns on stderr), so stderr must be
empty too. `--offline=yes` exists only for `security` in systemd 252.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "systemd" / "slurm-bridge.service"
TMPFILES = REPO / "systemd" / "slurm-bridge.tmpfiles.conf"
README = REPO / "systemd" / "README.md"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze") or "/usr/bin/systemd-analyze"
SYSTEMD_TMPFILES = shutil.which("systemd-tmpfiles") or "/usr/bin/systemd-tmpfiles"
SHIPPED_EXEC = "/usr/local/bin/slurm-bridge"


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """Sections -> key -> every value given (keys may repeat; an empty value resets, as systemd does)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    pending = ""
    for raw in text.splitlines():
        line = pending + raw.strip()
        pending = ""
        if not line or line[0] in "#;":
            continue
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"setting outside a section: {line}"
        key, sep, value = line.partition("=")
        assert sep, f"not a Key=value line: {line}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


@pytest.fixture(scope="module")
def unit():
    return parse_unit(UNIT.read_text())


def one(unit, section: str, key: str) -> str:
    values = unit[section].get(key)
    assert values, f"[{section}] {key}= is missing"
    assert len(values) == 1, f"[{section}] {key}= is given {len(values)} times: {values}"
    return values[0]


REQUIRED = [
    ("Unit", "After", "network-online.target slurmctld.service munge.service"),
    ("Unit", "Wants", "network-online.target"),
    ("Service", "Type", "notify"),
    ("Service", "NotifyAccess", "main"),
    ("Service", "ExecStart", f"{SHIPPED_EXEC} daemon --config /etc/slurm-bridge/bridge.toml"),
    ("Service", "ExecReload", "/bin/kill -HUP $MAINPID"),
    ("Service", "Restart", "on-failure"),
    ("Service", "RestartSec", "10s"),
    ("Service", "WatchdogSec", "60"),
    ("Service", "TimeoutStopSec", "90s"),
    ("Service", "User", "slurm"),
    ("Service", "Group", "slurm"),
    ("Service", "Environment", "PYTHONUNBUFFERED=1"),
    ("Service", "StateDirectory", "slurm-bridge"),
    ("Service", "StateDirectoryMode", "0700"),
    ("Service", "ReadWritePaths", "/var/lib/slurm-bridge"),
    ("Service", "UMask", "0077"),
    ("Service", "ProtectSystem", "strict"),
    ("Service", "ProtectHome", "yes"),
    ("Service", "PrivateTmp", "yes"),
    ("Service", "NoNewPrivileges", "yes"),
    ("Service", "CapabilityBoundingSet", ""),
    ("Service", "ProtectKernelTunables", "yes"),
    ("Service", "ProtectKernelModules", "yes"),
    ("Service", "ProtectKernelLogs", "yes"),
    ("Service", "ProtectControlGroups", "yes"),
    ("Service", "RestrictSUIDSGID", "yes"),
    ("Service", "LockPersonality", "yes"),
    ("Service", "RestrictRealtime", "yes"),
    ("Service", "RestrictNamespaces", "yes"),
    ("Service", "SystemCallArchitectures", "native"),
    ("Service", "MemoryDenyWriteExecute", "yes"),
    ("Install", "WantedBy", "multi-user.target"),
]


@pytest.mark.parametrize("section, key, value", REQUIRED, ids=[f"{s}.{k}" for s, k, _ in REQUIRED])
def test_required_setting(unit, section, key, value):
    assert one(unit, section, key) == value


def test_nothing_hides_munge_etc_or_the_network(unit):
    svc = unit["Service"]
    # Every Slurm command authenticates through /run/munge/munge.socket.2 and reads /etc/slurm.
    for key in ("PrivateNetwork", "InaccessiblePaths", "TemporaryFileSystem", "RootDirectory", "RootImage",
                "BindPaths", "BindReadOnlyPaths", "IPAddressDeny", "PrivateUsers", "DynamicUser"):
        assert key not in svc, f"{key}= would hide munge's socket, /etc/slurm, slurmctld or the user"
    families = one(unit, "Service", "RestrictAddressFamilies").split()
    assert {"AF_UNIX", "AF_INET", "AF_INET6"} <= set(families) and not families[0].startswith("~")
    assert "LogsDirectory" not in svc                      # logs go to journald
    assert one(unit, "Service", "ProtectSystem") == "strict"   # read-only /etc, still readable


def test_ambient_capabilities_are_empty(unit):
    assert one(unit, "Service", "AmbientCapabilities") == ""


def _verifiable_copy(tmp_path: Path, text: str | None = None) -> Path:
    """The unit as shipped, but ExecStart's binary is this venv's slurm-bridge (verify needs it to exist)."""
    script = Path(sys.executable).parent / "slurm-bridge"
    assert os.access(script, os.X_OK), f"{script} is not installed: pip install -e . first"
    text = UNIT.read_text() if text is None else text
    assert text.count(f"ExecStart={SHIPPED_EXEC} ") == 1
    copy = tmp_path / UNIT.name
    copy.write_text(text.replace(f"ExecStart={SHIPPED_EXEC} ", f"ExecStart={script} "))
    return copy


def _analyze(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    assert os.access(SYSTEMD_ANALYZE, os.X_OK), \
        "systemd-analyze is missing: apt-get install systemd (Debian 12 ships 252)"
    return subprocess.run([SYSTEMD_ANALYZE, *args], check=False, capture_output=True, text=True, cwd=cwd,
                          timeout=120,
                          env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "SYSTEMD_PAGER": "", "LANG": "C.UTF-8"})


def test_systemd_analyze_verify_passes(tmp_path):
    copy = _verifiable_copy(tmp_path)
    res = _analyze("verify", "--man=no", str(copy), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stderr.strip() == "", f"systemd-analyze verify complained:\n{res.stderr}"


@pytest.mark.parametrize("change, complaint", [
    (("WatchdogSec=60", "WatchdogSek=60"), "Unknown key 'WatchdogSek'"),
    (("ProtectSystem=strict", "ProtectSystem=stricter"), "stricter"),
])
def test_verify_would_catch_a_broken_unit(tmp_path, change, complaint):
    # The check above is not vacuous: verify reports these on stderr (with exit 0).
    copy = _verifiable_copy(tmp_path, UNIT.read_text().replace(*change))
    res = _analyze("verify", "--man=no", str(copy), cwd=tmp_path)
    assert complaint in res.stderr


def test_verify_checks_the_executable(tmp_path):
    copy = tmp_path / UNIT.name
    copy.write_text(UNIT.read_text().replace(SHIPPED_EXEC, str(tmp_path / "no-such-program")))
    res = _analyze("verify", "--man=no", str(copy), cwd=tmp_path)
    assert res.returncode != 0 and "no-such-program" in res.stderr


def recorded_exposure() -> float:
    m = re.search(r"exposure level[^0-9]*([0-9]+\.[0-9])", README.read_text())
    assert m, "systemd/README.md must record the `systemd-analyze security` exposure level"
    return float(m.group(1))


def test_security_exposure_is_no_worse_than_recorded(tmp_path):
    copy = _verifiable_copy(tmp_path)
    res = _analyze("security", "--offline=yes", "--no-pager", str(copy), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    m = re.search(r"Overall exposure level for slurm-bridge\.service: ([0-9.]+)", res.stdout)
    assert m, res.stdout[-2000:]
    measured, recorded = float(m.group(1)), recorded_exposure()
    assert measured <= recorded, (f"exposure rose from {recorded} to {measured}: harden the unit back, or "
                                  f"record the new score in systemd/README.md with the reason")
    # The same bound through systemd's own gate (threshold is the score x 10).
    gate = _analyze("security", "--offline=yes", "--no-pager", f"--threshold={round(recorded * 10)}", str(copy),
                    cwd=tmp_path)
    assert gate.returncode == 0, gate.stdout[-2000:]


def test_tmpfiles_line_creates_the_state_dir(tmp_path):
    # A private root with its own passwd, so the line is applied for real without touching /var/lib.
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\nslurm:x:4242:4343::/nonexistent:/bin/false\n")
    (root / "etc" / "group").write_text("root:x:0:\nslurm:x:4343:\n")
    res = subprocess.run([SYSTEMD_TMPFILES, "--create", f"--root={root}", str(TMPFILES)],
                         check=False, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stderr.strip() == ""
    st = (root / "var" / "lib" / "slurm-bridge").stat()
    assert (oct(st.st_mode & 0o7777), st.st_uid, st.st_gid) == ("0o700", 4242, 4343)


def test_tmpfiles_and_unit_agree_on_the_state_dir(unit):
    lines = [ln.split() for ln in TMPFILES.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    assert lines == [["d", "/var/lib/slurm-bridge", "0700", "slurm", "slurm", "-"]]
    assert "/var/lib/" + one(unit, "Service", "StateDirectory") == lines[0][1]


_MDWE_CHILD = textwrap.dedent("""
    import ctypes, mmap, subprocess, sys, urllib.request
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(65, 1, 0, 0, 0) != 0:          # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
        sys.exit(77)
    try:                                          # prove it is in force
        mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        sys.exit("a writable+executable mapping was allowed")
    except OSError:
        pass
    import slurm_bridge.cli, slurm_bridge.daemon, slurm_bridge.state, slurm_bridge.sdnotify
    import apscheduler.schedulers.background, sqlite_utils, ssl, boto3, google.cloud.compute_v1
    from slurm_bridge.metrics import Metrics
    ssl.create_default_context()
    boto3.client("ec2", region_name="eu-central-1", aws_access_key_id="x", aws_secret_access_key="y")
    db = sqlite_utils.Database(memory=True); db["t"].insert({"a": 1}); assert db["t"].count == 1
    m = Metrics(); port = m.serve("127.0.0.1", 0).server_port; m.count_decision("burst", "waited")
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    assert b"slurm_bridge_decisions_total" in body
    m.close()
    # inherited across exec: the Slurm client the daemon runs works too
    print(subprocess.run(["scontrol", "--version"], capture_output=True, text=True, check=True,
                         env={"SLURM_CONF": sys.argv[1]}).stdout.strip())
""")


def test_cpython_runs_under_memory_deny_write_execute(tmp_path):
    # systemd 252 enforces MemoryDenyWriteExecute= with seccomp; the kernel's PR_SET_MDWE
    # (Linux 6.3+) refuses the same W+X and exec-gaining mappings, so it stands in for it here.
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(66, 0, 0, 0, 0) < 0 and ctypes.get_errno() == errno.EINVAL:   # PR_GET_MDWE
        pytest.skip("kernel older than 6.3: no PR_SET_MDWE to check MemoryDenyWriteExecute= with")
    conf = tmp_path / "slurm.conf"
    conf.write_text("ClusterName=mdwe\nSlurmctldHost=localhost\n")
    res = subprocess.run([sys.executable, "-c", _MDWE_CHILD, str(conf)], check=False, capture_output=True,
                         text=True, timeout=180)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.startswith("slurm-wlm ")
