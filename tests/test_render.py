"""`slurm-bridge conf render` on real config files: the slurm.conf fragment, gres lines and wrappers.

Lines are parsed into key=value pairs and asserted on piece by piece, so a
failure names the one setting that is wrong rather than diffing a whole line.
"""

from __future__ import annotations

import os
import shlex
import stat
from pathlib import Path

from configs import EXAMPLE, edit, write_config
from slurm_bridge import render

POOL_ZONE = 'zone = "de"\ncpus'          # the pool's zone line (the account's reads zone = "de"\nbudget)
DE_PRICE = 'prices = { "lab-a100x8" = 32.0 }'
NL_PRICE = 'prices = { "lab-a100x8" = 24.0 }'
MORE_ZONES = 'any = "*"\nch = ["CH"]\nnl = ["NL"]\n'


def kv(line: str) -> dict[str, str]:
    """`A=1 B=x,y` -> {"A": "1", "B": "x,y"}; a key given twice is itself a bug (Slurm keeps the last)."""
    out: dict[str, str] = {}
    for token in line.split():
        key, sep, value = token.partition("=")
        assert sep, f"{token!r} in {line!r} is not key=value"
        assert key not in out, f"{key} appears twice in {line!r}"
        out[key] = value
    return out


def lines_of(text: str, key: str) -> list[dict[str, str]]:
    return [kv(line) for line in text.splitlines() if line.startswith(key + "=")]


def settings(text: str) -> dict[str, str]:
    """The one-per-file settings of the fragment (everything but comments, nodes and partitions)."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith(("#", "NodeName=", "PartitionName=")):
            out.update(kv(line))
    return out


def rendered(tmp_path: Path, text: str = EXAMPLE, **kwargs) -> render.Rendered:
    cfg, path = write_config(tmp_path, text)
    return render.render(cfg, config_path=path, bin_dir=tmp_path / "bin", **kwargs)


def only_partition(text: str) -> dict[str, str]:
    (part,) = lines_of(text, "PartitionName")
    return part


# ------------------------------------------------------------- fragment ---

def test_example_fragment(tmp_path):
    out = rendered(tmp_path)
    s = settings(out.slurm_conf)
    bin_dir = tmp_path / "bin"
    for key, name in [("ResumeProgram", "resume"), ("SuspendProgram", "suspend"),
                      ("ResumeFailProgram", "resume-fail")]:
        # slurmctld runs the programs from its own working directory: the paths must be absolute.
        assert Path(s[key]).is_absolute()
        assert s[key] == str(bin_dir / name)
    assert (s["SuspendTime"], s["ResumeTimeout"], s["SuspendTimeout"]) == ("300", "900", "120")
    assert s["SuspendExcParts"] == "gpu"
    assert s["PrivateData"] == "cloud"

    (node,) = lines_of(out.slurm_conf, "NodeName")
    assert node["NodeName"] == "a100-de-[0-7]"
    assert node["State"] == "CLOUD"
    assert (node["CPUs"], node["RealMemory"]) == ("96", "1000000")
    assert node["Gres"] == "gpu:a100:8"
    assert node["Features"] == "cloud,a100-de,a100,res_any,res_de,res_eu"
    # Cloud nodes must weigh more than on-prem nodes (weight 1) so Slurm fills on-prem first.
    assert int(node["Weight"]) > 1

    part = only_partition(out.slurm_conf)
    assert part["PartitionName"] == "burst-a100-de"
    assert part["Nodes"] == "a100-de-[0-7]"
    assert part["State"] == "UP"


def test_settings_follow_the_config_not_the_defaults(tmp_path):
    # The example's values equal the dataclass defaults; other numbers prove they are read.
    text = EXAMPLE
    for old, new in [("suspend_time = 300", "suspend_time = 301"), ("resume_timeout = 900", "resume_timeout = 901"),
                     ("suspend_timeout = 120", "suspend_timeout = 121"),
                     ('watch_partitions = ["gpu"]', 'watch_partitions = ["gpu", "gpu-big"]')]:
        text = edit(text, old, new)
    s = settings(rendered(tmp_path, text).slurm_conf)
    assert (s["SuspendTime"], s["ResumeTimeout"], s["SuspendTimeout"]) == ("301", "901", "121")
    assert s["SuspendExcParts"] == "gpu,gpu-big"


def test_bin_dir_defaults_to_the_config(tmp_path):
    text = edit(EXAMPLE, "suspend_timeout = 120\n", f'suspend_timeout = 120\nbin_dir = "{tmp_path}/libexec"\n')
    cfg, path = write_config(tmp_path, text)
    out = render.render(cfg, config_path=path)
    assert out.bin_dir == tmp_path / "libexec"
    assert settings(out.slurm_conf)["ResumeProgram"] == f"{tmp_path}/libexec/resume"


def test_each_pool_gets_its_own_nodes_partition_and_gres(tmp_path):
    text = EXAMPLE + ('[[pools]]\nname = "l4-eu"\nsize = 1\nzone = "eu"\ncpus = 16\nmemory_mb = 64000\n'
                      'gpus = "l4:1"\nspot = true\nfeatures = ["nvlink"]\npartition = "cheap"\n'
                      'instance_types = { local = "lab-a100x8" }\n')
    out = rendered(tmp_path, text, gpu_device_dir=tmp_path)
    nodes = {n["NodeName"]: n for n in lines_of(out.slurm_conf, "NodeName")}
    assert sorted(nodes) == ["a100-de-[0-7]", "l4-eu-0"]      # a 1-node pool is no range
    # Admin features sit after the GPU type and before the zones.
    assert nodes["l4-eu-0"]["Features"] == "cloud,l4-eu,l4,nvlink,res_any,res_de,res_eu"
    parts = {p["PartitionName"]: p["Nodes"] for p in lines_of(out.slurm_conf, "PartitionName")}
    assert parts == {"burst-a100-de": "a100-de-[0-7]", "cheap": "l4-eu-0"}
    assert {g["NodeName"]: g["File"] for g in gres_lines(out)} == {
        "a100-de-[0-7]": f"{tmp_path}/nvidia[0-7]", "l4-eu-0": f"{tmp_path}/nvidia0"}


# --------------------------------------------------------- access rules ---

def test_access_everyone_may_use(tmp_path):
    # default (eu) and medical (de) both contain DE, where the de pool launches.
    part = only_partition(rendered(tmp_path).slurm_conf)
    assert "AllowAccounts" not in part and "DenyAccounts" not in part
    assert part["State"] == "UP"


def test_access_denies_a_listed_account_outside(tmp_path):
    text = edit(EXAMPLE, 'any = "*"\n', 'any = "*"\nch = ["CH"]\n')
    text += '[accounts.swiss]\nzone = "ch"\n[accounts.world]\nzone = "any"\n'
    part = only_partition(rendered(tmp_path, text).slurm_conf)
    assert part["DenyAccounts"] == "swiss"
    assert "AllowAccounts" not in part
    assert part["State"] == "UP"


def test_access_allows_only_accounts_sharing_a_region(tmp_path):
    # Unlisted accounts fall under default (ch), which cannot reach DE: the partition
    # must list who may use it instead of who may not.
    text = edit(EXAMPLE, 'any = "*"\n', 'any = "*"\nch = ["CH"]\n')
    text = edit(text, '[accounts.default]\nzone = "eu"', '[accounts.default]\nzone = "ch"')
    text += ('[accounts.swiss]\nzone = "ch"\n[accounts.research]\nzone = "eu"\n'
             '[accounts.world]\nzone = "any"\n[accounts.inherits]\nburst = true\n')
    part = only_partition(rendered(tmp_path, text).slurm_conf)
    assert part["AllowAccounts"].split(",") == ["medical", "research", "world"]
    assert "DenyAccounts" not in part
    assert part["State"] == "UP"


def test_access_nobody_may_use_makes_the_partition_inactive(tmp_path):
    text = edit(EXAMPLE, 'any = "*"\n', 'any = "*"\nch = ["CH"]\n')
    text = edit(text, '[accounts.default]\nzone = "eu"', '[accounts.default]\nzone = "ch"')
    text = edit(text, 'zone = "de"\nbudget', 'zone = "ch"\nbudget')
    part = only_partition(rendered(tmp_path, text).slurm_conf)
    assert part["State"] == "INACTIVE"
    assert "AllowAccounts" not in part and "DenyAccounts" not in part
    assert part["Nodes"] == "a100-de-[0-7]"     # the nodes still exist, jobs just cannot get them


# ------------------------------------------------------------- features ---

def node_features(out: render.Rendered) -> list[str]:
    (node,) = lines_of(out.slurm_conf, "NodeName")
    return node["Features"].split(",")


def test_eu_pool_reaches_every_zone_of_its_launchable_countries(tmp_path):
    text = edit(edit(EXAMPLE, POOL_ZONE, 'zone = "eu"\ncpus'), 'any = "*"\n', MORE_ZONES)
    # DE and NL are both launchable; CH is no region at all.
    assert node_features(rendered(tmp_path, text)) == [
        "cloud", "a100-de", "a100", "res_any", "res_de", "res_eu", "res_nl"]


def test_pool_with_no_region_inside_its_zone_gets_no_zone_features(tmp_path):
    # Only lab-nl sells the type, and NL is outside zone de: the node can run nowhere.
    text = edit(EXAMPLE, DE_PRICE, 'prices = { "lab-h100x8" = 40.0 }')
    out = rendered(tmp_path, text)
    assert node_features(out) == ["cloud", "a100-de", "a100"]
    assert only_partition(out.slurm_conf)["State"] == "INACTIVE"


def test_region_without_a_price_is_not_reachable(tmp_path):
    text = edit(edit(EXAMPLE, POOL_ZONE, 'zone = "eu"\ncpus'), 'any = "*"\n', MORE_ZONES)
    text = edit(text, NL_PRICE, 'prices = { "lab-h100x8" = 40.0 }')
    feats = node_features(rendered(tmp_path, text))
    assert "res_nl" not in feats
    assert [f for f in feats if f.startswith("res_")] == ["res_any", "res_de", "res_eu"]


def test_onprem_features_without_a_country_are_every_zone(tmp_path):
    text = edit(EXAMPLE, 'any = "*"\n', MORE_ZONES)
    out = rendered(tmp_path, text)
    # `onprem` is how a researcher keeps a job at home (--constraint=onprem).
    assert out.onprem_features == ("onprem", "res_any", "res_ch", "res_de", "res_eu", "res_nl")
    hint = [l for l in out.slurm_conf.splitlines() if l.startswith("# Add to the NodeName lines of gpu:")]
    assert len(hint) == 1 and hint[0].endswith("Features=onprem,res_any,res_ch,res_de,res_eu,res_nl")


def test_onprem_features_with_a_country(tmp_path):
    text = edit(EXAMPLE, 'any = "*"\n', MORE_ZONES)
    nl = edit(text, 'name = "hpc1"\n', 'name = "hpc1"\ncountry = "NL"\n')
    assert rendered(tmp_path / "nl", nl).onprem_features == ("onprem", "res_any", "res_eu", "res_nl")
    ch = edit(text, 'name = "hpc1"\n', 'name = "hpc1"\ncountry = "CH"\n')
    assert rendered(tmp_path / "ch", ch).onprem_features == ("onprem", "res_any", "res_ch")


# ----------------------------------------------------------------- gres ---

def gres_lines(out: render.Rendered) -> list[dict[str, str]]:
    return lines_of(out.gres_conf, "NodeName")


def test_gres_line_for_eight_gpus(tmp_path):
    dev = tmp_path / "dev"
    (line,) = gres_lines(rendered(tmp_path, gpu_device_dir=dev))
    assert line == {"NodeName": "a100-de-[0-7]", "Name": "gpu", "Type": "a100", "File": f"{dev}/nvidia[0-7]"}


def test_gres_line_for_one_gpu(tmp_path):
    out = rendered(tmp_path, edit(EXAMPLE, 'gpus = "a100:8"', 'gpus = "a100:1"'), gpu_device_dir=tmp_path)
    (line,) = gres_lines(out)
    assert line["File"] == f"{tmp_path}/nvidia0"      # not nvidia[0-0]
    assert lines_of(out.slurm_conf, "NodeName")[0]["Gres"] == "gpu:a100:1"


def test_untyped_gpus(tmp_path):
    out = rendered(tmp_path, edit(EXAMPLE, 'gpus = "a100:8"', 'gpus = "2"'), gpu_device_dir=tmp_path)
    (line,) = gres_lines(out)
    assert line == {"NodeName": "a100-de-[0-7]", "Name": "gpu", "File": f"{tmp_path}/nvidia[0-1]"}
    (node,) = lines_of(out.slurm_conf, "NodeName")
    assert node["Gres"] == "gpu:2"
    assert node["Features"] == "cloud,a100-de,res_any,res_de,res_eu"


def test_pool_without_gpus_has_no_gres(tmp_path):
    out = rendered(tmp_path, edit(EXAMPLE, 'gpus = "a100:8"\n', ""))
    assert gres_lines(out) == []
    (node,) = lines_of(out.slurm_conf, "NodeName")
    assert "Gres" not in node
    assert node["Features"] == "cloud,a100-de,res_any,res_de,res_eu"


# ------------------------------------------------------------- wrappers ---

def exec_words(wrapper: str) -> list[str]:
    (line,) = [l for l in wrapper.splitlines() if l.startswith("exec ")]
    return shlex.split(line)     # how /bin/sh will split it


def test_wrappers_carry_the_config_path(tmp_path):
    out = rendered(tmp_path)
    assert set(out.wrappers) == {"resume", "suspend", "resume-fail", "prolog"}
    for name, text in out.wrappers.items():
        assert text.startswith("#!/bin/sh\n")
        words = exec_words(text)
        assert words[0] == "exec" and words[2:] == ["--config", str(tmp_path / "bridge.toml"), "$@"]
        program = Path(words[1])
        assert program.is_absolute() and program.name == f"slurm-bridge-{name}"
        assert os.access(program, os.X_OK)


def test_wrapper_survives_a_config_path_with_a_space(tmp_path):
    # The wrapper is a shell script: an unquoted path would reach the program as two words.
    cfg, path = write_config(tmp_path, EXAMPLE, name="site configs/bridge.toml")
    out = render.render(cfg, config_path=path, bin_dir=tmp_path / "bin")
    assert exec_words(out.wrappers["resume"])[2:] == ["--config", str(path), "$@"]


def test_write_puts_files_where_asked_with_their_modes(tmp_path):
    out = rendered(tmp_path)
    out_dir, bin_dir = tmp_path / "etc", tmp_path / "bin"
    old_umask = os.umask(0o077)    # slurmctld (SlurmUser) must still read and run them
    try:
        written = render.write(out, out_dir)
    finally:
        os.umask(old_umask)
    expected = {out_dir / "slurm-bridge.conf": (out.slurm_conf, 0o644),
                out_dir / "gres-bridge.conf": (out.gres_conf, 0o644)}
    expected |= {bin_dir / n: (out.wrappers[n], 0o755) for n in ("resume", "suspend", "resume-fail", "prolog")}
    expected |= {out_dir / n: (out.lua[n], 0o644) for n in ("job_submit.lua", "slurm-bridge.lua")}
    assert sorted(written) == sorted(expected)
    for path, (text, mode) in expected.items():
        assert path.read_text() == text
        assert stat.S_IMODE(path.stat().st_mode) == mode, path
    assert stat.S_IMODE(bin_dir.stat().st_mode) == 0o755
    # The wrapper paths are exactly what the fragment points slurmctld at.
    assert settings(out.slurm_conf)["ResumeProgram"] == str(bin_dir / "resume")
    assert sorted(p.name for p in bin_dir.iterdir()) == ["prolog", "resume", "resume-fail", "suspend"]
    assert sorted(p.name for p in out_dir.iterdir()) == ["gres-bridge.conf", "job_submit.lua", "slurm-bridge.conf",
                                                         "slurm-bridge.lua"]


def test_rewrite_tightens_a_group_writable_wrapper(tmp_path):
    # slurmctld silently disables power saving when others may write the programs.
    out = rendered(tmp_path)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(mode=0o777)
    os.chmod(bin_dir, 0o777)
    (bin_dir / "resume").write_text("old")
    os.chmod(bin_dir / "resume", 0o777)
    render.write(out, tmp_path / "etc")
    assert (bin_dir / "resume").read_text() == out.wrappers["resume"]
    assert stat.S_IMODE((bin_dir / "resume").stat().st_mode) == 0o755
    assert stat.S_IMODE(bin_dir.stat().st_mode) == 0o755
