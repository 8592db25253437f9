"""Imports only go downward: entry points -> logic -> adapters -> plain data.

A module may import its own layer or any layer below, never above, so the
plain models stay usable on their own and the logic can be driven by the
simulator without Slurm or a cloud behind it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import slurm_bridge

PACKAGE = Path(slurm_bridge.__file__).parent

# Most specific prefix wins.
LAYERS = {
    "slurm_bridge": 0,
    "slurm_bridge.models": 0,
    "slurm_bridge.errors": 0,
    "slurm_bridge.catalog": 0,
    "slurm_bridge.config": 0,
    "slurm_bridge.cloud_config": 0,
    "slurm_bridge.ssh_config": 0,
    "slurm_bridge.bootstrap_config": 0,
    "slurm_bridge.secretfiles": 0,
    "slurm_bridge.crashpoints": 0,
    "slurm_bridge.logfmt": 0,
    "slurm_bridge.tomlcheck": 0,
    "slurm_bridge.prices": 0,
    "slurm_bridge.slurm": 1,
    "slurm_bridge.providers": 1,
    "slurm_bridge.state": 1,
    "slurm_bridge.schema": 1,
    "slurm_bridge.state_files": 1,
    "slurm_bridge.job_runs": 1,
    "slurm_bridge.lab": 1,
    "slurm_bridge.traces": 1,
    "slurm_bridge.bootstrap": 1,
    "slurm_bridge.cloudinit": 2,
    "slurm_bridge.selector": 2,
    "slurm_bridge.render": 2,
    "slurm_bridge.launch": 2,
    "slurm_bridge.node_bootstrap": 2,
    "slurm_bridge.power": 2,
    "slurm_bridge.resume_file": 2,
    "slurm_bridge.nodestate": 2,
    "slurm_bridge.confcheck": 2,
    "slurm_bridge.residency": 2,
    "slurm_bridge.submit_lua": 2,
    "slurm_bridge.audit": 2,
    "slurm_bridge.tables": 0,
    "slurm_bridge.svgcharts": 0,
    "slurm_bridge.htmlreport": 0,
    "slurm_bridge.policy": 2,
    "slurm_bridge.simulate": 2,
    "slurm_bridge.reconcile": 2,
    "slurm_bridge.pool_guard": 2,
    "slurm_bridge.costs": 2,
    "slurm_bridge.costmodel": 0,
    "slurm_bridge.accounting": 2,
    "slurm_bridge.costreport": 2,
    "slurm_bridge.sdnotify": 1,
    "slurm_bridge.metrics": 1,
    "slurm_bridge.daemon": 3,
    "slurm_bridge.lab.cluster": 3,
    "slurm_bridge.cli": 3,
    "slurm_bridge.cli_cost": 3,
    "slurm_bridge.cli_simulate": 3,
    "slurm_bridge.simplot": 2,
    "slurm_bridge.programs": 3,
    "slurm_bridge.demo": 3,
}
NAMES = {0: "plain data", 1: "adapters", 2: "logic", 3: "entry points"}


def layer_of(module: str) -> int:
    best = None
    for prefix, level in LAYERS.items():
        if module == prefix or module.startswith(prefix + "."):
            if best is None or len(prefix) > len(best):
                best = prefix
    assert best is not None, f"{module} has no layer: add it to LAYERS"
    return LAYERS[best]


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, module: str) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
                if node.module is None:
                    found.update(f"{target}.{a.name}" for a in node.names)
                else:
                    found.add(target)
            elif node.module:
                found.add(node.module)
    return {f for f in found if f == "slurm_bridge" or f.startswith("slurm_bridge.")}


def test_every_module_imports_only_downward():
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = module_name(path)
        own = layer_of(module)
        for target in imports_of(path, module):
            if layer_of(target) > own:
                problems.append(f"{module} ({NAMES[own]}) imports {target} ({NAMES[layer_of(target)]})")
    assert not problems, "\n".join(problems)


def test_the_check_catches_an_upward_import(tmp_path):
    # The checker itself must be able to fail.
    fake = PACKAGE / "models.py"
    tree_imports = imports_of(fake, "slurm_bridge.models")
    assert all(layer_of(t) == 0 for t in tree_imports)
    bad = tmp_path / "slurm_bridge" / "models.py"
    bad.parent.mkdir()
    bad.write_text("from .cli import main\n")
    assert imports_of(bad, "slurm_bridge.models") == {"slurm_bridge.cli"}
    assert layer_of("slurm_bridge.cli") > layer_of("slurm_bridge.models")
