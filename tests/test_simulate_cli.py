"""`slurm-bridge simulate` as an admin runs it: a trace file, a config file, every strategy, JSON and a plot."""

from __future__ import annotations

import json

from configs import EXAMPLE
from conftest import FIXTURES, SHARED_DATA
from slurm_bridge.cli import main


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["simulate", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_compare_on_a_sacct_export_with_a_residency_mix_and_a_plot(tmp_path, capsys):
    config = tmp_path / "bridge.toml"
    config.write_text(EXAMPLE.replace("/var/lib/slurm-bridge", str(tmp_path / "state")))
    plot = tmp_path / "whatif.html"
    code, out, _ = run(capsys, "--trace", str(FIXTURES / "slurm-22.05.8" / "sacct_trace.json"), "--format", "sacct",
                       "--config", str(config), "--onprem-gpus", "4", "--gpus-per-node", "4", "--compare",
                       "--accounts", "medical=1,lab=2", "--set", "policy.burst_after=0", "--seed", "3", "--json",
                       "--plot", str(plot))
    assert code == 0
    data = json.loads(out)
    results = {r["strategy"]: r for r in data["results"]}
    assert set(results) >= {"onprem", "naive", "threshold:0", "policy-home", "policy"}
    assert all(r["jobs"] == data["jobs"] == 11 for r in results.values())   # the 11 jobs of the lab capture
    assert results["onprem"]["cloud_spend_usd"] == 0
    assert all(r["residency_violations"] == 0 for name, r in results.items() if name != "naive")
    html = plot.read_text()
    assert html.count("<svg") == 3 and "policy" in html


def test_table_output_and_bad_input_say_what_is_wrong(tmp_path, capsys):
    config = tmp_path / "bridge.toml"
    config.write_text(EXAMPLE.replace("/var/lib/slurm-bridge", str(tmp_path / "state")))
    trace = SHARED_DATA / "traces" / "rfold_philly_trace.csv"
    code, out, _ = run(capsys, "--trace", str(trace), "--format", "philly", "--config", str(config),
                       "--onprem-gpus", "64", "--limit", "300", "--strategy", "threshold:600")
    assert code == 0 and "threshold:600" in out and "mean wait" in out and "300 jobs" in out
    code, _, err = run(capsys, "--trace", str(trace), "--format", "philly", "--config", str(config),
                       "--onprem-gpus", "64", "--set", "policy.burst_after")
    assert code == 2 and "--set 'policy.burst_after': expected KEY.PATH=VALUE" in err
    code, _, err = run(capsys, "--trace", str(trace), "--format", "philly", "--config", str(config),
                       "--onprem-gpus", "64", "--accounts", "clinic")
    assert code == 2 and "--accounts 'clinic'" in err


def test_without_onprem_gpus_the_config_or_the_trace_says_how_many(tmp_path, capsys):
    config = tmp_path / "bridge.toml"
    text = EXAMPLE.replace("/var/lib/slurm-bridge", str(tmp_path / "state"))
    config.write_text(text)
    trace = FIXTURES / "slurm-22.05.8" / "sacct_trace.json"
    code, out, err = run(capsys, "--trace", str(trace), "--format", "sacct", "--config", str(config), "--json")
    assert code == 0 and "the trace's mean GPU load" in err
    assert json.loads(out)["onprem_gpus"] == 24               # 16.7 GPUs busy on average: three 8-GPU nodes
    config.write_text(text + "\n[cost.onprem]\ncapex_per_gpu_usd = 30000\namortisation_years = 4\n"
                             "power_kw_per_gpu = 0.7\npue = 1.3\nusd_per_kwh = 0.25\nops_usd_per_gpu_year = 2000\n"
                             "gpus = 24\n")
    code, out, err = run(capsys, "--trace", str(trace), "--format", "sacct", "--config", str(config), "--json")
    assert code == 0 and "[cost.onprem] gpus" in err and json.loads(out)["onprem_gpus"] == 24
