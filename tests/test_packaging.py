"""What `pip install slurm-bridge` installs: every command the README documents and every module.

The wheel is built offline, from a copy of the sources (so the work tree gets no build/ or egg-info),
with this virtualenv's setuptools (`pip wheel --no-build-isolation --no-index`); setuptools older than
70.1 needs the `wheel` package for that, which the test extras install. About 6 s.
"""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

import slurm_bridge

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "slurm_bridge"
README = REPO / "README.md"
# The console scripts: slurmctld runs the four programs (through the rendered wrappers), people run the first.
SCRIPTS = {
    "slurm-bridge": "slurm_bridge.cli:main",
    "slurm-bridge-resume": "slurm_bridge.programs:resume_main",
    "slurm-bridge-suspend": "slurm_bridge.programs:suspend_main",
    "slurm-bridge-resume-fail": "slurm_bridge.programs:resume_fail_main",
    "slurm-bridge-prolog": "slurm_bridge.programs:prolog_main",
}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    src = tmp_path_factory.mktemp("src")
    shutil.copy(REPO / "pyproject.toml", src)
    shutil.copy(README, src)
    shutil.copytree(PACKAGE, src / "slurm_bridge", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path_factory.mktemp("wheel")
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                          "-q", "-w", str(out), str(src)], capture_output=True, text=True, timeout=180, check=False)
    assert res.returncode == 0, ("building the wheel failed (setuptools < 70.1 needs the `wheel` package: "
                                 f"pip install -e '.[test]'):\n{res.stderr[-3000:]}")
    wheels = list(out.glob("slurm_bridge-*.whl"))
    assert len(wheels) == 1, wheels
    with zipfile.ZipFile(wheels[0]) as zf:
        yield zf


def _dist_info(zf: zipfile.ZipFile, name: str) -> str:
    hits = [n for n in zf.namelist() if re.fullmatch(r"slurm_bridge-[^/]+\.dist-info/" + re.escape(name), n)]
    assert len(hits) == 1, f"{name} not in the wheel: {zf.namelist()[-10:]}"
    return zf.read(hits[0]).decode()


def test_wheel_has_every_console_script(wheel):
    ep = configparser.ConfigParser()
    ep.read_string(_dist_info(wheel, "entry_points.txt"))
    assert dict(ep["console_scripts"]) == SCRIPTS


def test_every_console_script_is_in_the_readme():
    text = README.read_text()
    missing = [s for s in SCRIPTS if not re.search(rf"`{re.escape(s)}[ `]", text)]
    assert not missing, f"console scripts not documented in README.md: {missing}"


def test_pyproject_scripts_are_the_ones_tested():
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == SCRIPTS


def test_wheel_has_every_module_of_the_package(wheel):
    tracked = subprocess.run(["git", "ls-files", "slurm_bridge"], cwd=REPO, capture_output=True, text=True,
                             check=False).stdout.split()
    files = set(tracked) or {str(p.relative_to(REPO)) for p in PACKAGE.rglob("*") if p.is_file()
                             and "__pycache__" not in p.parts}
    in_wheel = set(wheel.namelist())
    missing = sorted(f for f in files if f not in in_wheel)
    assert not missing, f"not in the wheel (fix [tool.setuptools] in pyproject.toml): {missing}"
    for sub in ("lab", "providers", "simulate", "slurm"):
        assert f"slurm_bridge/{sub}/__init__.py" in in_wheel
    # Non-Python files tracked in the package are data the code opens at run time: they must ship too
    # (the check above covers them). Nothing outside the package goes in.
    outside = [n for n in in_wheel if not n.startswith(("slurm_bridge/", "slurm_bridge-"))]
    assert not outside, outside


def test_wheel_version_is_the_package_version(wheel):
    meta = _dist_info(wheel, "METADATA")
    assert re.search(rf"^Version: {re.escape(slurm_bridge.__version__)}$", meta, re.M), meta[:400]
    assert re.search(r"^Name: slurm-bridge$", meta, re.M)


# ---- one version, in one place ---------------------------------------------------------------------

def test_version_comes_from_one_place():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "slurm_bridge.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+((a|b|rc)\d+)?(\.dev\d+)?", slurm_bridge.__version__)
    # Nothing else in the package spells the version out.
    needle = slurm_bridge.__version__
    spelled = [str(p.relative_to(REPO)) for p in PACKAGE.rglob("*.py")
               if p.name != "__init__.py" or p.parent != PACKAGE
               if needle in p.read_text() or re.search(r"__version__\s*=", p.read_text())]
    assert not spelled, f"the version is spelled out outside slurm_bridge/__init__.py: {spelled}"


def test_cli_version_prints_it():
    res = subprocess.run([sys.executable, "-m", "slurm_bridge.cli", "--version"], capture_output=True, text=True,
                         timeout=60, check=False)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"slurm-bridge {slurm_bridge.__version__}"


def _changelog() -> list[tuple[str, str]]:
    text = README.read_text()
    m = re.search(r"^## Changelog\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert m, "README.md has no `## Changelog` section"
    return re.findall(r"^### (\S+) \((\d{4}-\d{2}-\d{2})", m.group(1), re.M)


def test_readme_changelog_newest_version_is_the_package_version():
    entries = _changelog()
    assert entries, "the Changelog lists no `### VERSION (YYYY-MM-DD ...)` entry"
    assert entries[0][0] == slurm_bridge.__version__, \
        f"the newest Changelog entry is {entries[0][0]}, the package is {slurm_bridge.__version__}"
    dates = [d for _, d in entries]
    assert dates == sorted(dates, reverse=True), "Changelog entries go newest first"
