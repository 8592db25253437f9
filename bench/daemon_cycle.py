"""CPU time and memory of one daemon cycle (watch + reconcile) at 50,000 pending jobs and 5,000 cloud nodes.

Issue 5 sets the targets: one `Daemon.watch_once()` plus one `Daemon.reconcile_once()` in at most
1 s of CPU, and the daemon in at most 150 MB of RSS, with 50,000 pending jobs and 5,000 cloud nodes.

Run (from the repository root):

    .venv/bin/python bench/daemon_cycle.py [--jobs 50000] [--nodes 5000] [--repeat 3] [--json]
                                           [--profile] [--no-metrics] [--keep]

What is real and what is not (the fixtures are built by bench/cycle_fixtures.py):

- Slurm's side goes through the real adapter. The daemon reads pending jobs with `squeue --Format=...`
  and node states with `sinfo --Format=...` (slurm_bridge/slurm/pending.py, node_text.py). The text the
  bench feeds it is printed field by field the way the lab printed it (tests/fixtures/slurm-22.05.8/
  squeue_pending.txt, sinfo_nodes.txt), for jobs and nodes scaled up from the lab's captured records.
  `BenchSlurm` is the real `CliSlurm` with only `run(argv)` replaced: it returns that text from a file
  for exactly the command line the daemon builds, so parsing and everything above it are measured;
  slurmctld's own time is not. `scontrol update` calls are counted and answered with "".
- The state DB is a real StateDB, filled with the active rows that match the Slurm view and the
  provider listing, plus 60 days of history. Account budgets are set from this month's spend in it,
  so one account is over budget.
- The provider is a stand-in: `StandInProvider.list_instances` returns prebuilt `Instance`s. A real
  listing is network-bound (cloud API pages) and is measured elsewhere (bench/aws_launch_calls.py).
- `Daemon(config, slurm=..., providers=...)` is built as the daemon builds itself; `daemon.metrics` is a
  real `Metrics()` (not served) unless `--no-metrics`.

Three processes: this one (stays small), one that builds the fixtures (~1 GB), and the measuring one,
a daemon-like process. A child inherits its parent's peak RSS in ru_maxrss through vfork + exec, hence
the separate builder. In the measuring process: one warm-up cycle, then REPEAT measured cycles, each
`time.process_time()` around `watch_once()` + `reconcile_once()` (the median is judged; the time spent
in the cyclic GC is reported too); then one cycle with coarse per-step timers, one under tracemalloc,
and with `--profile` one under cProfile. Peak RSS is the larger of `ru_maxrss` and VmHWM. Exit status 1
when a target is missed. Nothing reaches a cluster, the lab or a cloud; everything is written in a temp
dir, removed at the end (`--keep` keeps it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures" / "slurm-22.05.8"
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


from cycle_fixtures import setup  # noqa: E402 - bench/ is on sys.path as the script's directory

from slurm_bridge import policy
from slurm_bridge.errors import SlurmError
from slurm_bridge.providers.base import TOKEN_TAG, Instance
from slurm_bridge.slurm import node_text, pending
from slurm_bridge.slurm.cli_backend import CliSlurm

CPU_TARGET_S = 1.0
RSS_TARGET_MB = 150.0

# --- the measured process (child) ---------------------------------------------------------------------

class BenchSlurm(CliSlurm):
    """The real CliSlurm; only the commands are not run. Reading the captured-and-scaled text from a
    file stands in for reading slurmctld's answer from the pipe: subprocess.run(text=True) also holds
    the bytes and then the decoded str."""

    def __init__(self, outputs: dict[tuple[str, ...], str]):
        super().__init__(slurm_conf=None)
        self.outputs = outputs
        self.calls: dict[str, int] = {}

    def run(self, argv: list[str], *, tz: str | None = None) -> str:
        key = " ".join(argv[:2])
        self.calls[key] = self.calls.get(key, 0) + 1
        if tuple(argv) in self.outputs:
            return Path(self.outputs[tuple(argv)]).read_text()
        if argv[:2] == ["scontrol", "update"]:
            return ""        # a real call is a fork/exec of scontrol: counted, not run
        raise SlurmError(f"{' '.join(argv[:3])}: not expected in this benchmark")


class StandInProvider:
    """Stand-in for the cloud: lists the active instances. A real provider's listing is network-bound
    (paged cloud API calls) and is measured elsewhere; here it costs only a list copy."""

    name = "local"

    def __init__(self, instances):
        self._instances = tuple(instances)
        self.terminated: list[str] = []

    def list_instances(self, cluster: str):
        return list(self._instances)

    def terminate(self, region, instance_ids):
        self.terminated.extend(instance_ids)

    def describe(self, region, instance_ids):
        wanted = set(instance_ids)
        return [i for i in self._instances if i.instance_id in wanted]

    def launch(self, request):   # pragma: no cover - the daemon never launches
        raise AssertionError("the daemon does not launch")


def _rss_mb() -> tuple[float, float]:
    """(VmRSS, VmHWM) of this process in MB."""
    vals = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            key, value = line.split(":")
            vals[key] = int(value.split()[0]) / 1024
    return vals.get("VmRSS", 0.0), vals.get("VmHWM", 0.0)


def _reset_hwm() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")   # resets VmHWM (Linux >= 4.0)
        return True
    except OSError:
        return False


def make_daemon(m: dict):
    """A Daemon built from the bench config, with BenchSlurm and the stand-in provider put in."""
    import logging

    from slurm_bridge.daemon import Daemon
    from slurm_bridge.metrics import Metrics

    listing = [Instance(instance_id=r["instance_id"], node=r["node"], region=r["region"], state=r["state"],
                        address=r["address"], instance_type=r["instance_type"], cluster="bench",
                        launched_at=r["launched_at"],
                        tags={"slurm-bridge:cluster": "bench", "slurm-bridge:node": r["node"],
                              "slurm-bridge:pool": r["pool"], TOKEN_TAG: r["token"]})
               for r in json.loads(Path(m["listing"]).read_text())]
    log_path = Path(m["config"]).parent / "daemon.log"
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        handlers=[logging.FileHandler(log_path)])     # as cli.cmd_daemon, to a file
    slurm = BenchSlurm({tuple(m["squeue_argv"]): m["squeue"], tuple(m["sinfo_argv"]): m["sinfo"]})
    d = Daemon(m["config"], slurm=slurm, providers={"local": StandInProvider(listing)})
    if m["metrics"]:
        d.metrics = Metrics()     # as with --metrics-port; not served
    return d, slurm, log_path


def run_cycle(d, slurm: BenchSlurm, log_path: Path) -> dict:
    def lines() -> int:
        with open(log_path, "rb") as f:
            return sum(1 for _ in f)

    import gc

    gc_spent = [0.0, 0.0, {0: 0, 1: 0, 2: 0}]

    def gc_timer(phase, info):     # CPU time inside the cyclic garbage collector, by generation
        if phase == "start":
            gc_spent[1] = time.process_time()
        else:
            gc_spent[0] += time.process_time() - gc_spent[1]
            gc_spent[2][info["generation"]] += 1

    before_calls, before_lines = dict(slurm.calls), lines()
    gc.callbacks.append(gc_timer)
    w0, c0 = time.perf_counter(), time.process_time()
    decisions = d.watch_once()
    w1, c1 = time.perf_counter(), time.process_time()
    report = d.reconcile_once()
    w2, c2 = time.perf_counter(), time.process_time()
    gc.callbacks.remove(gc_timer)
    codes: dict[str, int] = {}
    for dec in decisions:
        codes[dec.code] = codes.get(dec.code, 0) + 1
    return {"cpu_s": c2 - c0, "watch_cpu_s": c1 - c0, "reconcile_cpu_s": c2 - c1,
            "wall_s": w2 - w0, "watch_wall_s": w1 - w0, "reconcile_wall_s": w2 - w1,
            "decisions": len(decisions), "codes": codes,
            "actions": {k: v for k, v in report.counts.items() if v},
            "reconcile_errors": len(report.errors), "provider_errors": report.provider_errors,
            "slurm_error": report.slurm_error,
            "commands": {k: v - before_calls.get(k, 0) for k, v in slurm.calls.items() if v - before_calls.get(k, 0)},
            "log_lines": lines() - before_lines, "gc_cpu_s": round(gc_spent[0], 3), "gc_runs": gc_spent[2]}


def step_times(d, slurm: BenchSlurm, log_path: Path) -> dict:
    """One cycle with coarse CPU timers around its steps (each called once, or a few dozen times)."""
    from slurm_bridge import reconcile
    from slurm_bridge.state import StateDB

    spent: dict[str, list] = {}

    def timed(label, fn):
        def wrapper(*a, **kw):
            c = time.process_time()
            try:
                return fn(*a, **kw)
            finally:
                s = spent.setdefault(label, [0.0, 0])
                s[0] += time.process_time() - c
                s[1] += 1
        return wrapper

    patches = [               (pending.PendingParser, "parse", "PendingParser.parse"),
               (node_text.NodeParser, "parse", "NodeParser.parse"),
               (policy.Policy, "decide", "Policy.decide"),
               (reconcile, "gather", "reconcile.gather"),
               (reconcile, "plan", "reconcile.plan"),
               (reconcile, "apply", "reconcile.apply"),
               (StateDB, "active_instances", "StateDB.active_instances"),
               (StateDB, "count_active", "StateDB.count_active"),
               (StateDB, "failed_since", "StateDB.failed_since"),
               (StateDB, "spend_by_account", "StateDB.spend_by_account"),
               (StateDB, "instances", "StateDB.instances"),
               (StateDB, "events", "StateDB.events"),
               (StateDB, "last_request_times", "StateDB.last_request_times"),
               (StateDB, "unfinished_requests", "StateDB.unfinished_requests"),
               (StateDB, "event", "StateDB.event"),
               (StateDB, "is_blocked", "StateDB.is_blocked")]
    saved = [(obj, name, getattr(obj, name)) for obj, name, _ in patches]
    methods = ("_update_metrics", "_update_node_metrics", "_guard_pools", "_count_launches", "_write_status")
    try:
        for obj, name, label in patches:
            setattr(obj, name, timed(label, getattr(obj, name)))
        for name in methods:
            setattr(d, name, timed(f"Daemon.{name}", getattr(d, name)))
        slurm.run = timed("CliSlurm.run (read + decode the output)", slurm.run)
        c0 = time.process_time()
        run_cycle(d, slurm, log_path)
        total = time.process_time() - c0
    finally:
        for obj, name, fn in saved:
            setattr(obj, name, fn)
        for name in methods:
            d.__dict__.pop(name, None)
        slurm.__dict__.pop("run", None)
    return {"cycle_cpu_s": round(total, 3),
            **{k: {"cpu_ms": round(v[0] * 1000, 1), "calls": v[1]}
               for k, v in sorted(spent.items(), key=lambda kv: -kv[1][0])}}


def child(manifest_path: str) -> None:
    import cProfile
    import io
    import pstats
    import tracemalloc

    m = json.loads(Path(manifest_path).read_text())
    t0 = time.process_time()
    # What the daemon process has imported by the time it runs (cli.cmd_daemon -> Daemon.run).
    import apscheduler.executors.pool
    import apscheduler.schedulers.background  # noqa: F401

    d, slurm, log_path = make_daemon(m)
    out: dict = {"import_and_init_cpu_s": round(time.process_time() - t0, 3),
                 "rss_after_init_mb": round(_rss_mb()[0], 1)}
    out["warmup"] = run_cycle(d, slurm, log_path)
    out["hwm_after_warmup_mb"] = round(_rss_mb()[1], 1)
    hwm_reset = _reset_hwm()
    out["runs"] = [run_cycle(d, slurm, log_path) for _ in range(m["repeat"])]
    rss, hwm = _rss_mb()
    # ru_maxrss is right here only because the parent stayed small: through vfork + exec a child
    # inherits its parent's peak (a 800 MB parent makes a fresh `python -c` report 811 MB).
    out["ru_maxrss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    out["rss_after_cycles_mb"] = round(rss, 1)
    out["cycle_hwm_mb"] = round(hwm, 1) if hwm_reset else None
    out["steps"] = step_times(d, slurm, log_path)
    # Python heap of one cycle (tracemalloc slows allocation: not timed).
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    run_cycle(d, slurm, log_path)
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    out["tracemalloc"] = {"peak_above_start_mb": round((peak - base) / 2**20, 1),
                          "held_after_mb": round((current - base) / 2**20, 1)}
    if m["profile"]:
        prof = cProfile.Profile()
        prof.enable()
        d.watch_once()
        d.reconcile_once()
        prof.disable()
        text = io.StringIO()
        stats = pstats.Stats(prof, stream=text)
        stats.sort_stats("cumulative").print_stats(15)
        stats.sort_stats("tottime").print_stats(15)
        out["profile"] = text.getvalue()
    out["scontrol_updates_total"] = slurm.calls.get("scontrol update", 0)
    print(json.dumps(out))


# --- report -------------------------------------------------------------------------------------------

def machine() -> dict:
    return {"date_utc": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "nproc": os.cpu_count(),
            "machine": platform.machine(), "python": platform.python_version(),
            "loadavg_1m": round(os.getloadavg()[0], 2)}


def print_table(res: dict) -> None:
    f, r = res["fixture"], res["child"]
    runs = r["runs"]
    mach = res["machine"]
    print(f"machine: {mach['date_utc']}, nproc {mach['nproc']}, {mach['machine']}, Python {mach['python']}, "
          f"1-min load {mach['loadavg_1m']}; metrics {'on' if res['metrics'] else 'off'}")
    print(f"squeue (pending, text): {f['pending_jobs']:,} pending jobs ({f['running_jobs']:,} running and "
          f"{f['completed_jobs']} completed ones are not listed), {f['squeue_text_mb']} MB; sinfo (text): "
          f"{f['sinfo_nodes']:,} nodes "
          f"({f['cloud_nodes']:,} cloud), {f['sinfo_text_mb']} MB")
    print(f"state DB: {f['db_rows']:,} instance rows ({f['active_rows']:,} active: {f['active_by_state']}), "
          f"{f['db_requests']:,} requests, {f['db_events']:,} events, {f['db_mb']} MB")
    print(f"queue: {f['already_eligible_jobs']:,} pending jobs already eligible hold {f['already_eligible_nodes']:,} "
          f"nodes; max_cloud_nodes {f['max_cloud_nodes']:,}, headroom {f['headroom']}")
    print()
    print(f"{'cycle':<10}{'CPU s':>8}{'watch':>8}{'reconcile':>10}{'wall s':>8}{'in gc':>8}  {'gc runs 0/1/2':<14}"
          f"{'scontrol':>9}{'log lines':>10}")
    for name, c in [("warm-up", r["warmup"])] + [(f"run {i + 1}", c) for i, c in enumerate(runs)]:
        g = c["gc_runs"]
        gens = "/".join(str(g.get(k, g.get(str(k), 0))) for k in (0, 1, 2))
        print(f"{name:<10}{c['cpu_s']:>8.3f}{c['watch_cpu_s']:>8.3f}{c['reconcile_cpu_s']:>10.3f}{c['wall_s']:>8.3f}"
              f"{c['gc_cpu_s']:>8.3f}  {gens:<14}{c['commands'].get('scontrol update', 0):>9}{c['log_lines']:>10}")
    print()
    last = runs[-1]
    print(f"decisions: {last['decisions']:,}  {json.dumps(last['codes'], sort_keys=True)}")
    print(f"reconcile actions: {last['actions'] or 'none'}; errors {last['reconcile_errors']}; "
          f"Slurm reads per cycle: {json.dumps({k: v for k, v in last['commands'].items() if k != 'scontrol update'})}")
    print()
    cpu, rss = res["cpu_median_s"], res["peak_rss_mb"]
    print(f"{'target (issue 5)':<46}{'measured':>12}{'limit':>10}  verdict")
    print(f"{'CPU of watch_once + reconcile_once (median)':<46}{cpu:>11.3f}s{CPU_TARGET_S:>9.1f}s  "
          f"{'met' if cpu <= CPU_TARGET_S else 'MISSED'}")
    print(f"{'peak RSS of the daemon process':<46}{rss:>10.1f}MB{RSS_TARGET_MB:>8.0f}MB  "
          f"{'met' if rss <= RSS_TARGET_MB else 'MISSED'}")
    print(f"RSS after imports + Daemon(): {r['rss_after_init_mb']} MB; peak after the warm-up {r['hwm_after_warmup_mb']} MB; "
          f"ru_maxrss {r['ru_maxrss_mb']} MB; peak of the measured cycles only (VmHWM reset) {r['cycle_hwm_mb']} MB; "
          f"RSS after them {r['rss_after_cycles_mb']} MB")
    print(f"tracemalloc, one cycle: Python heap peak {r['tracemalloc']['peak_above_start_mb']} MB above its start, "
          f"{r['tracemalloc']['held_after_mb']} MB still held after it")
    print()
    print(f"where the CPU goes (one instrumented cycle, {r['steps']['cycle_cpu_s']:.3f} s; steps nest: gather and "
          f"_update_metrics each hold a sinfo read, a read holds CliSlurm.run + json.loads + parse):")
    for k, v in r["steps"].items():
        if k != "cycle_cpu_s":
            print(f"  {k:<48}{v['cpu_ms']:>9.1f} ms{v['calls']:>6} calls")
    if r.get("profile"):
        print()
        print(r["profile"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=50_000, help="pending jobs (default 50,000)")
    ap.add_argument("--nodes", type=int, default=5_000, help="cloud nodes over all pools (default 5,000)")
    ap.add_argument("--history", type=int, default=100_000, help="closed instance rows in the DB (default 100,000)")
    ap.add_argument("--headroom", type=int, default=64,
                    help="cloud nodes the queue leaves under max_cloud_nodes (default 64)")
    ap.add_argument("--repeat", type=int, default=3, help="measured cycles after the warm-up (default 3)")
    ap.add_argument("--no-metrics", action="store_true", help="run the daemon without its Metrics")
    ap.add_argument("--profile", action="store_true", help="cProfile one more cycle: top 15 cumulative and tottime")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (fixtures, DB, daemon.log)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--setup", nargs=2, metavar=("DIR", "ARGS_JSON"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child)
        return 0
    if args.setup:
        a = json.loads(args.setup[1])
        manifest = setup(Path(args.setup[0]), a["jobs"], a["nodes"], a["history"], a["headroom"])
        (Path(args.setup[0]) / "manifest.json").write_text(json.dumps(manifest))
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="slurm-bridge-bench-cycle-"))
    me = [sys.executable, str(Path(__file__).resolve())]
    try:
        # The fixtures are built in a process of their own: it grows to ~1.5 GB, and a child started
        # from a process inherits that peak in ru_maxrss. This process stays small.
        t = time.perf_counter()
        sizes = {"jobs": args.jobs, "nodes": args.nodes, "history": args.history, "headroom": args.headroom}
        subprocess.run(me + ["--setup", str(tmp), json.dumps(sizes)], check=True, cwd=REPO)
        setup_s = time.perf_counter() - t
        manifest = json.loads((tmp / "manifest.json").read_text())
        manifest.update(repeat=max(1, args.repeat), profile=args.profile,
                        metrics=not args.no_metrics)
        (tmp / "manifest.json").write_text(json.dumps(manifest))
        proc = subprocess.run(me + ["--child", str(tmp / "manifest.json")], capture_output=True, text=True,
                              cwd=REPO, check=False)
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr)
            print(f"daemon_cycle: the measuring process failed (exit {proc.returncode})", file=sys.stderr)
            return 2
        child_out = json.loads(proc.stdout.strip().splitlines()[-1])
        res = {"machine": machine(), "args": vars(args), "setup_s": round(setup_s, 1),
               "fixture": manifest["fixture"], "metrics": manifest["metrics"], "child": child_out}
        res["cpu_median_s"] = round(statistics.median(c["cpu_s"] for c in child_out["runs"]), 3)
        res["peak_rss_mb"] = max(child_out["ru_maxrss_mb"], child_out["hwm_after_warmup_mb"])
        res["targets"] = {"cpu_s": {"limit": CPU_TARGET_S, "measured": res["cpu_median_s"],
                                    "met": res["cpu_median_s"] <= CPU_TARGET_S},
                          "rss_mb": {"limit": RSS_TARGET_MB, "measured": res["peak_rss_mb"],
                                     "met": res["peak_rss_mb"] <= RSS_TARGET_MB}}
        if args.json:
            print(json.dumps(res, indent=1))
        else:
            print_table(res)
        return 0 if all(t["met"] for t in res["targets"].values()) else 1
    finally:
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
