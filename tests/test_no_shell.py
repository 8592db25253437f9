"""No command ever goes through a shell: a scan of the package's source (issue 9, security).

A node name, a reason or a job comment comes from users; passed to a shell it could become a command.
Every subprocess call must take an argument list, never `shell=True`, and nothing may use os.system or
os.popen. Commands sent over SSH (which always runs a shell on the far side) must be built by quoting
each argument: the SSH provider's `remote_command` is the one place allowed to join a command line.
"""

from __future__ import annotations

import ast
from pathlib import Path

import slurm_bridge

PACKAGE = Path(slurm_bridge.__file__).parent
SUBPROCESS_CALLS = {"run", "Popen", "call", "check_call", "check_output", "getoutput", "getstatusoutput"}


def sources():
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path, ast.parse(path.read_text(), str(path))


def _name(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_name(node.value)}.{node.attr}"
    if isinstance(node, ast.Name):
        return node.id
    return ""


def test_no_shell_true_and_no_string_commands():
    problems = []
    for path, tree in sources():
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = _name(node.func)
            where = f"{path.relative_to(PACKAGE.parent)}:{node.lineno}"
            for kw in node.keywords:
                if kw.arg == "shell" and not (isinstance(kw.value, ast.Constant) and kw.value.value is False):
                    problems.append(f"{where}: {name}(shell=...)")
            if name in ("os.system", "os.popen", "subprocess.getoutput", "subprocess.getstatusoutput"):
                problems.append(f"{where}: {name}() runs a shell")
            if name.split(".")[-1] in SUBPROCESS_CALLS and name.startswith(("subprocess.", "procs.")) and node.args:
                first = node.args[0]
                if isinstance(first, (ast.Constant, ast.JoinedStr)) and not isinstance(getattr(first, "value", None),
                                                                                          bytes):
                    problems.append(f"{where}: {name}() with a command string instead of a list")
    assert not problems, "commands that could go through a shell:\n" + "\n".join(problems)


def test_the_scan_finds_what_it_looks_for(tmp_path, monkeypatch):
    bad = tmp_path / "slurm_bridge"
    bad.mkdir()
    (bad / "__init__.py").write_text("")
    (bad / "evil.py").write_text("import os, subprocess\nsubprocess.run('ls ' + x, shell=True)\nos.system('x')\n"
                                 "subprocess.check_output(f'scontrol {n}')\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", bad)
    try:
        test_no_shell_true_and_no_string_commands()
    except AssertionError as exc:
        text = str(exc)
    else:
        raise AssertionError("the scan missed a shell=True, an os.system and a string command")
    assert "shell=" in text and "os.system" in text and "command string" in text
