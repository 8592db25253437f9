"""A job's allowed zone and the res_<zone> constraint that carries it: in Python, and in the
job_submit.lua that slurmctld runs (executed here by Debian's Lua interpreter)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from configs import EXAMPLE, write_config

from slurm_bridge import residency, submit_lua
from slurm_bridge.catalog import EU_MEMBERS
from slurm_bridge.models import Zone

CONFIG = EXAMPLE.replace('[zones]\nde = ["DE"]\n', '[zones]\nde = ["DE"]\nde2 = ["AT"]\nnl = ["NL"]\n') + """
[accounts.physics]
zone = "any"
[accounts.climate]
zone = "nl"
[partitions.gpu]
zone = "eu"
[partitions.burst-a100-de]
zone = "de"
"""

DE = frozenset({"DE"})


@pytest.fixture
def cfg(tmp_path):
    assert 'de2 = ["AT"]' in CONFIG
    cfg, _ = write_config(tmp_path, CONFIG)
    return cfg


def countries(zone: Zone) -> frozenset[str] | None:
    return zone.countries


# ------------------------------------------------------------------- job_zone ---

def test_account_zone_alone(cfg):
    assert countries(residency.job_zone(cfg, "medical", [], "")) == DE
    assert countries(residency.job_zone(cfg, "default", [], "")) == EU_MEMBERS
    assert countries(residency.job_zone(cfg, "nobody-listed", [], "")) == EU_MEMBERS
    assert countries(residency.job_zone(cfg, "physics", [], "")) is None     # anywhere


def test_partition_zone_intersects_the_account_zone(cfg):
    assert countries(residency.job_zone(cfg, "physics", ["gpu"], "")) == EU_MEMBERS
    assert countries(residency.job_zone(cfg, "medical", ["gpu"], "")) == DE
    assert countries(residency.job_zone(cfg, "climate", ["gpu"], "")) == frozenset({"NL"})
    # a partition without a zone adds nothing
    assert countries(residency.job_zone(cfg, "physics", ["other"], "")) is None
    # two partitions: both count
    assert countries(residency.job_zone(cfg, "climate", ["gpu", "burst-a100-de"], "")) == frozenset()


def test_constraint_zones_intersect(cfg):
    assert countries(residency.job_zone(cfg, "default", ["gpu"], "res_de")) == DE
    assert countries(residency.job_zone(cfg, "physics", [], "(a100|v100)&res_nl")) == frozenset({"NL"})
    assert countries(residency.job_zone(cfg, "medical", [], "res_nl")) == frozenset()


def test_intersection_is_order_independent(cfg):
    a = residency.job_zone(cfg, "default", ["gpu"], "res_de")
    b = residency.job_zone(cfg, "medical", ["gpu"], "res_eu")
    c = residency.job_zone(cfg, "physics", [], "res_eu&res_de")
    d = residency.job_zone(cfg, "physics", [], "res_de&res_eu")
    assert countries(a) == countries(b) == countries(c) == countries(d) == DE


def test_any_adds_nothing(cfg):
    assert countries(residency.job_zone(cfg, "physics", [], "res_any")) is None
    assert countries(residency.job_zone(cfg, "medical", [], "res_any")) == DE
    assert countries(residency.job_zone(cfg, "default", ["gpu"], "cloud&res_any")) == EU_MEMBERS


def test_unknown_res_name_narrows_to_nothing(cfg):
    zone = residency.job_zone(cfg, "physics", [], "res_mars")
    assert countries(zone) == frozenset()
    assert not zone.contains("DE") and not zone.contains("US")


def test_res_name_parsing(cfg):
    assert residency.constraint_zone_names("res_de2") == ["de2"]
    assert residency.constraint_zone_names("xres_de") == []
    assert residency.constraint_zone_names("(a100)&res_de|res_eu") == ["de", "eu"]
    assert residency.constraint_zone_names("foo_res_de") == []
    assert residency.constraint_zone_names("") == [] and residency.constraint_zone_names(None) == []
    # res_de2 names the zone de2 (AT), not de
    assert countries(residency.job_zone(cfg, "default", [], "res_de2")) == frozenset({"AT"})
    assert countries(residency.job_zone(cfg, "medical", [], "res_de2")) == frozenset()
    # xres_de is an ordinary feature: the zone stays the account's
    assert countries(residency.job_zone(cfg, "default", [], "xres_de")) == EU_MEMBERS
    assert countries(residency.job_zone(cfg, "physics", [], "a100&xres_de")) is None


# ------------------------------------------------------------ constraint_with_zones ---

def test_constraint_with_zones(cfg):
    de, eu, anywhere = cfg.zone("de"), cfg.zone("eu"), cfg.zone("any")
    assert residency.constraint_with_zones("", [de]) == "res_de"
    assert residency.constraint_with_zones(None, [de]) == "res_de"
    assert residency.constraint_with_zones("a100", [de]) == "(a100)&res_de"
    assert residency.constraint_with_zones("a100|v100", [de]) == "(a100|v100)&res_de"
    assert residency.constraint_with_zones("(a|b)&c", [de]) == "(a|b)&c&res_de"
    assert residency.constraint_with_zones("a100", [de, eu]) == "(a100)&res_de&res_eu"
    assert residency.constraint_with_zones("", [de, eu]) == "res_de&res_eu"
    assert residency.constraint_with_zones("a100", [anywhere]) == "a100"
    assert residency.constraint_with_zones("", [anywhere]) == ""
    assert residency.constraint_with_zones("a100", []) == "a100"
    assert residency.constraint_with_zones("a100", [de, anywhere, de]) == "(a100)&res_de"
    assert residency.constraint_with_zones("", [de, eu, de, eu]) == "res_de&res_eu"


def test_constraint_with_zones_round_trips_through_job_zone(cfg):
    zones = residency.zones_for(cfg, "medical", ["gpu"])
    constraint = residency.constraint_with_zones("a100", zones)
    assert constraint == "(a100)&res_de&res_eu"
    assert countries(residency.job_zone(cfg, "physics", [], constraint)) == DE


# ----------------------------------------------------------------- job_submit.lua ---

LUA = shutil.which("lua5.3") or shutil.which("lua5.4") or shutil.which("lua")


def lua_interpreter() -> str:
    if LUA is None:
        pytest.fail("no Lua interpreter found (lua5.3, lua5.4 or lua): the rendered job_submit.lua cannot be "
                    "run. Install Debian's: apt-get install lua5.3")
    return LUA


def lua_value(value) -> str:
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, dict):
        return "{" + ", ".join(f"[{lua_value(k)}] = {lua_value(v)}" for k, v in value.items() if v is not None) + "}"
    raise TypeError(value)


HARNESS = """\
slurm = {{ SUCCESS = 0, ERROR = -1, log_user = function(...) end }}
dofile({job_submit})
local function show(v) if v == nil then return "<nil>" end return v end
local cases = {cases}
for _, c in ipairs(cases) do
  local rc
  if c.op == "submit" then
    rc = slurm_job_submit(c.desc, {{}}, 1000)
  else
    rc = slurm_job_modify(c.desc, c.rec, {{}}, 1000)
  end
  print(c.name .. "|" .. tostring(rc) .. "|" .. show(c.desc.features))
end
"""


def run_lua(tmp_path: Path, cfg, cases: list[tuple]) -> dict[str, tuple[int, str | None]]:
    """CASES: (name, "submit", job_desc) or (name, "modify", job_desc, job_rec); returns name -> (rc, features)."""
    lua = lua_interpreter()
    lib = tmp_path / submit_lua.LIBRARY_NAME
    lib.write_text(submit_lua.library(cfg, "bridge.toml"))
    job_submit = tmp_path / "job_submit.lua"
    job_submit.write_text(submit_lua.job_submit(str(lib)))
    entries = []
    for name, op, desc, *rec in cases:
        body = ", ".join([f"name = {lua_value(name)}", f"op = {lua_value(op)}", f"desc = {lua_value(desc)}"]
                         + ([f"rec = {lua_value(rec[0])}"] if rec else []))
        entries.append("{" + body + "}")
    harness = tmp_path / "harness.lua"
    harness.write_text(HARNESS.format(job_submit=lua_value(str(job_submit)), cases="{\n" + ",\n".join(entries) + "\n}"))
    done = subprocess.run([lua, str(harness)], capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, f"{lua} failed: {done.stderr}"
    out = {}
    for line in done.stdout.splitlines():
        name, rc, features = line.split("|", 2)
        out[name] = (int(rc), None if features == "<nil>" else features)
    assert set(out) == {c[0] for c in cases}, done.stdout
    return out


def test_lua_submit(tmp_path, cfg):
    got = run_lua(tmp_path, cfg, [
        ("medical", "submit", {"account": "medical", "features": "a100"}),
        ("medical-plain", "submit", {"account": "medical"}),
        ("medical-paren", "submit", {"account": "medical", "features": "(a|b)&c"}),
        ("default-account", "submit", {"default_account": "medical", "features": "a100"}),
        ("empty-account", "submit", {"account": "", "default_account": "medical"}),
        ("unlisted", "submit", {"account": "nobody-listed", "features": "a100"}),
        ("climate", "submit", {"account": "climate"}),
        ("no-account", "submit", {"features": "a100"}),
        ("partition", "submit", {"account": "medical", "partition": "gpu", "features": "a100"}),
        ("default-partition", "submit", {"account": "climate", "default_partition": "gpu"}),
        ("two-partitions", "submit", {"account": "climate", "partition": "gpu,burst-a100-de"}),
        ("partition-without-zone", "submit", {"account": "medical", "partition": "other"}),
    ])
    assert got["medical"] == (0, "(a100)&res_de")
    assert got["medical-plain"] == (0, "res_de")
    assert got["medical-paren"] == (0, "(a|b)&c&res_de")
    assert got["default-account"] == (0, "(a100)&res_de")
    assert got["empty-account"] == (0, "res_de")
    assert got["unlisted"] == (0, "(a100)&res_eu")
    assert got["climate"] == (0, "res_nl")
    assert got["no-account"] == (-1, "a100")             # refused, constraint untouched
    assert got["partition"] == (0, "(a100)&res_de&res_eu")
    assert got["default-partition"] == (0, "res_nl&res_eu")
    assert got["two-partitions"] == (0, "res_nl&res_eu&res_de")
    assert got["partition-without-zone"] == (0, "res_de")


def test_lua_account_with_zone_any_gets_no_zone(tmp_path, cfg):
    """Python says an account whose zone is `any` may run anywhere (job_zone -> every country);
    the Lua must agree, not put the default account's zone on it."""
    assert countries(residency.job_zone(cfg, "physics", [], "")) is None
    got = run_lua(tmp_path, cfg, [
        ("physics", "submit", {"account": "physics", "features": "a100"}),
        ("physics-gpu", "submit", {"account": "physics", "partition": "gpu"}),
    ])
    assert got["physics"] == (0, "a100")
    assert got["physics-gpu"] == (0, "res_eu")


def test_lua_modify(tmp_path, cfg):
    rec = {"account": "medical", "partition": "burst-a100-eu", "features": "(a100)&res_de"}
    got = run_lua(tmp_path, cfg, [
        ("new-features", "modify", {"features": "v100"}, rec),
        ("new-features-paren", "modify", {"features": "(a|b)&c"}, rec),
        ("cleared", "modify", {"features": ""}, rec),
        ("nothing", "modify", {}, rec),
        ("nothing-other-field", "modify", {"name": "renamed"}, rec),
        ("new-account", "modify", {"account": "climate"}, {"account": "medical", "features": "a100"}),
        ("new-partition", "modify", {"partition": "gpu"}, {"account": "climate", "features": "a100"}),
    ])
    assert got["new-features"] == (0, "(v100)&res_de")
    assert got["new-features-paren"] == (0, "(a|b)&c&res_de")
    assert got["cleared"] == (0, "res_de")
    assert got["nothing"] == (0, None)                   # job_desc.features nil: Slurm keeps the job's
    assert got["nothing-other-field"] == (0, None)
    assert got["new-account"] == (0, "(a100)&res_nl")
    assert got["new-partition"] == (0, "(a100)&res_nl&res_eu")


def test_lua_tables_match_the_config(cfg):
    text = submit_lua.library(cfg, "/etc/slurm-bridge/bridge.toml")
    assert 'M.DEFAULT_ZONE = "res_eu"' in text
    assert '["medical"] = "res_de",' in text and '["climate"] = "res_nl",' in text
    assert '["gpu"] = "res_eu",' in text and '["burst-a100-de"] = "res_de",' in text
    assert "from /etc/slurm-bridge/bridge.toml" in text
    assert 'dofile("/x/slurm-bridge.lua")' in submit_lua.job_submit("/x/slurm-bridge.lua")
