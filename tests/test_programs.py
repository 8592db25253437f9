"""The power-save programs as slurmctld runs them: fds 0-2 closed, no PATH, only SLURM_CONF.

These cases fail before any Slurm command is run, so they need no lab: a bad
hostlist or config must give one clear line and a non-zero exit, and touch
nothing (no request recorded, no node changed).
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from configs import EXAMPLE, edit

BIN = Path(sys.executable).parent
PROGRAMS = ["slurm-bridge-resume", "slurm-bridge-suspend", "slurm-bridge-resume-fail"]


def write_config(tmp_path: Path, text: str) -> Path:
    state = tmp_path / "state"
    path = tmp_path / "bridge.toml"
    path.write_text(text.replace('state_dir = "/var/lib/slurm-bridge"', f'state_dir = "{state}"'))
    return path


def run(program: str, *args: str, closed_stdio: bool = False, env: dict | None = None):
    def close_stdio():
        # What slurmctld does before exec'ing a power-save program (DESIGN B).
        for fd in (0, 1, 2):
            os.close(fd)

    return subprocess.run([str(BIN / program), *args], capture_output=not closed_stdio, text=True,
                          env=env or {"SLURM_CONF": "/nonexistent/slurm.conf"},
                          preexec_fn=close_stdio if closed_stdio else None, timeout=30)


@pytest.mark.parametrize("program", PROGRAMS)
def test_malformed_hostlist_is_one_line_and_nonzero(tmp_path, program):
    cfg = write_config(tmp_path, EXAMPLE)
    done = run(program, "--config", str(cfg), "a100-de-[0-")
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "malformed hostlist 'a100-de-[0-'" in lines[0] and "no node touched" in lines[0]
    log = (tmp_path / "state" / "log" / f"{program}.log").read_text()
    assert "malformed hostlist" in log
    db = tmp_path / "state" / "state.db"
    if db.exists():
        assert sqlite3.connect(db).execute("select count(*) from requests").fetchone()[0] == 0


@pytest.mark.parametrize("program", PROGRAMS)
def test_bad_config_names_the_key(tmp_path, program):
    cfg = write_config(tmp_path, edit(EXAMPLE, 'zone = "de"\ncpus', 'zone = "dee"\ncpus'))
    done = run(program, "--config", str(cfg), "a100-de-0")
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert 'pools[0].zone: unknown zone "dee"' in lines[0]


def test_closed_stdio_still_logs_the_failure(tmp_path):
    cfg = write_config(tmp_path, EXAMPLE)
    done = run("slurm-bridge-resume", "--config", str(cfg), "bad name;rm", closed_stdio=True)
    assert done.returncode == 1
    log = (tmp_path / "state" / "log" / "slurm-bridge-resume.log").read_text()
    assert "invalid node name" in log


def test_unreadable_config_path(tmp_path):
    done = run("slurm-bridge-suspend", "--config", str(tmp_path / "missing.toml"), "a100-de-0")
    assert done.returncode == 1
    assert "missing.toml: cannot read" in done.stderr


def test_cli_conf_check_lists_every_config_problem(tmp_path):
    cfg = write_config(tmp_path, edit(edit(EXAMPLE, 'zone = "de"\ncpus', 'zone = "dee"\ncpus'),
                                      "suspend_time = 300", "suspend_tme = 300"))
    done = subprocess.run([str(BIN / "slurm-bridge"), "conf", "check", "--config", str(cfg)],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert 'pools[0].zone: unknown zone "dee"' in done.stdout
    assert "slurm.suspend_tme: unknown key (did you mean suspend_time?)" in done.stdout


@pytest.mark.parametrize("program", PROGRAMS)
def test_a_corrupt_state_db_is_one_line_naming_it_and_the_traceback_stays_out_of_slurms_log(tmp_path, program):
    cfg = write_config(tmp_path, EXAMPLE)
    (tmp_path / "state").mkdir(mode=0o700, exist_ok=True)
    (tmp_path / "state" / "state.db").write_bytes(b"\x00garbage" * 600)
    done = run(program, "--config", str(cfg), "a100-de-0", env={"SLURM_CONF": str(tmp_path / "no-slurm.conf")})
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "state.db is not a usable SQLite database" in lines[0] and "provider tags" in lines[0]


def test_the_daemon_refuses_a_db_with_damaged_pages_before_its_first_cycle(tmp_path):
    """Opening reads only the header and schema; the daemon reads every page (quick_check) before it
    starts, so a damaged table is one clear refusal, not a failed loop every cycle."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from test_state import damage_a_table_page

    cfg = write_config(tmp_path, EXAMPLE)
    damage_a_table_page(tmp_path / "state")
    done = subprocess.run([str(BIN / "slurm-bridge"), "daemon", "--once", "--config", str(cfg)],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "SLURM_CONF": str(tmp_path / "no-slurm.conf")})
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    [line] = [x for x in done.stderr.splitlines() if x.startswith("slurm-bridge: error:")]
    assert "state.db is damaged" in line and "move it aside" in line and "provider tags" in line, line
    assert "loop_failed" not in done.stderr
