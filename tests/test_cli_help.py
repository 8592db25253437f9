"""Every command and option of the CLI explains itself."""

from __future__ import annotations

import argparse

import pytest

from slurm_bridge.cli import build_parser, main


def walk(parser: argparse.ArgumentParser, path=()):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                assert helps.get(name), f"`slurm-bridge {' '.join(path + (name,))}` has no help text"
                yield from walk(sub, path + (name,))


def test_every_command_and_option_has_help():
    seen = 0
    for path, parser in walk(build_parser()):
        seen += 1
        assert parser.description, f"`slurm-bridge {' '.join(path)}` has no description"
        for action in parser._actions:
            if action.option_strings and action.dest not in ("help", "version"):
                assert action.help, f"`slurm-bridge {' '.join(path)} {action.option_strings[0]}` has no help"
            if not action.option_strings and not isinstance(action, argparse._SubParsersAction):
                assert action.help, f"`slurm-bridge {' '.join(path)}` argument {action.dest} has no help"
    assert seen >= 4


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["lab", "nonsense"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_every_command_is_in_the_readme():
    from conftest import REPO

    readme = (REPO / "README.md").read_text()
    leaves = [path for path, parser in walk(build_parser())
              if path and not any(isinstance(a, argparse._SubParsersAction) for a in parser._actions)]
    missing = [" ".join(p) for p in leaves if f"slurm-bridge {' '.join(p)}" not in readme]
    assert not missing, f"commands not documented in README.md: {', '.join(missing)}"
    for script in ("slurm-bridge-resume", "slurm-bridge-suspend", "slurm-bridge-resume-fail", "slurm-bridge-prolog"):
        assert script in readme, f"{script} is not documented in README.md"


PROGRAMS = {
    # console script -> (its main, what it must say about itself)
    "slurm-bridge-resume": ("resume_main", "ResumeProgram"),
    "slurm-bridge-suspend": ("suspend_main", "SuspendProgram"),
    "slurm-bridge-resume-fail": ("resume_fail_main", "ResumeFailProgram"),
    "slurm-bridge-prolog": ("prolog_main", "PrologSlurmctld"),
}


@pytest.mark.parametrize("script", sorted(PROGRAMS))
def test_every_power_save_program_explains_itself(script, capsys):
    # slurmctld runs these with a hostlist (the prolog with none); a person reading them gets --help.
    # Each main first gives itself stdio and unblocks signals: harmless in-process.
    from slurm_bridge import programs

    entry, role = PROGRAMS[script]
    with pytest.raises(SystemExit) as exc:
        getattr(programs, entry)(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: {script} "), out[:200]
    assert role in out, f"{script} --help does not say it is the {role}"
    options = out.split("options:", 1)[1]
    assert "--config" in options and "bridge config" in options, f"{script} --config has no help"
    if script != "slurm-bridge-prolog":
        assert "hostlist" in out and "Slurm hostlist expression" in out, f"{script}: hostlist has no help"


def test_console_scripts_are_the_pyproject_ones():
    import tomllib

    from conftest import REPO

    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert set(scripts) == {"slurm-bridge", *PROGRAMS}, "a console script was added: give it a help test here"
    from slurm_bridge import programs

    for script, (entry, _) in PROGRAMS.items():
        assert scripts[script] == f"slurm_bridge.programs:{entry}" and callable(getattr(programs, entry))
