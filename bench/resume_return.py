"""How long `slurm-bridge-resume HOSTLIST` takes to return to slurmctld.

The resume program only copies SLURM_RESUME_FILE, records the request in the
state DB and spawns a background worker; slurmctld (23.02+) kills it if it is
slow, and issue 3 / issue 7 set targets: < 1 s for 64 nodes, <= 0.5 s for
1,000 nodes.

Run (from the repository root):

    .venv/bin/python bench/resume_return.py [--nodes 64,256,1000] [--repeat 5] [--json] [--profile]

Each measurement starts the installed console script the way slurmctld does
(absolute path, fds 0-2 closed, env only SLURM_CONF and SLURM_RESUME_FILE,
SLURM_RESUME_FILE a /proc/<pid>/fd/<n> path) and times spawn -> exit with
time.perf_counter().  `python -c pass` with the same interpreter, started the
same way, is timed in the same rounds as a baseline: the machine is noisy, so
the ratio to it is the figure to compare across runs.

Nothing reaches a real cluster or the lab: the config points the local
provider at a lab directory that does not exist and SLURM_CONF at a file that
does not exist.  The worker each call spawns is killed (its whole process
group: it may be sitting in an `scontrol` call) right after the measurement.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = REPO / ".venv" / "bin"
PROGRAM = VENV_BIN / "slurm-bridge-resume"
POOL = "bench"
NODES_PER_JOB = 8
# nodes -> (limit s, label, strictly below?)
TARGETS = {64: (1.0, "issue 3: < 1 s", True), 1000: (0.5, "issue 7: <= 0.5 s", False)}

CONFIG = """\
[cluster]
name = "bench"
state_dir = "{state_dir}"

[slurm]
watch_partitions = ["gpu"]
slurm_conf = "{slurm_conf}"

[policy]

[zones]
any = "*"

[accounts.default]
zone = "any"

[[pools]]
name = "{pool}"
size = {size}
zone = "any"
cpus = 8
memory_mb = 64000
instance_types = {{ local = "lab-x" }}

[providers.local]
lab_dir = "{lab_dir}"              # does not exist: the worker fails fast, launches nothing

[[providers.local.regions]]
name = "bench-region"
country = "DE"
capacity = 4
boot_seconds = 1
prices = {{ "lab-x" = 1.0 }}
"""


# --- process handling ------------------------------------------------------------------------

def _become_subreaper() -> bool:
    """Orphaned workers are re-parented to us (not PID 1), so we can reap them."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(36, 1, 0, 0, 0) == 0   # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        return False


def _close_stdio() -> None:
    # slurmctld starts power-save programs with fds 0, 1 and 2 closed (DESIGN.md part B,
    # measured on 22.05.8), no PATH and only SLURM_CONF / SLURM_RESUME_FILE in the env.
    for fd in (0, 1, 2):
        try:
            os.close(fd)
        except OSError:
            pass


def spawn_like_slurmctld(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, int]:
    """Run ARGV as slurmctld runs a power-save program; (wall seconds spawn -> exit, exit code)."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, cwd=cwd, close_fds=True, pass_fds=(),
                            preexec_fn=_close_stdio)
    rc = proc.wait()
    return time.perf_counter() - start, rc


def _is_our_worker(pid: int, config: Path) -> bool:
    """PID is a resume worker started for this benchmark's config (never someone else's)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return (b"slurm_bridge.programs" in cmdline and b"resume-worker" in cmdline
            and os.fsencode(str(config)) in cmdline)


def _reap(timeout: float) -> None:
    """Reap orphans re-parented to us (the worker and its scontrol) for up to TIMEOUT s."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            time.sleep(0.01)


def stop_worker(pid: int | None, config: Path) -> None:
    """Kill the background worker a resume call spawned, and everything it started."""
    if not pid:
        return
    # The worker is started with start_new_session=True: its process group id is its pid,
    # and its scontrol children are in that group.
    if _is_our_worker(pid, config):
        try:
            if os.getpgid(pid) == pid:
                os.killpg(pid, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    _reap(2.0)


# --- one setup, many calls -------------------------------------------------------------------

class Bench:
    def __init__(self, max_nodes: int) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="slurm-bridge-bench-"))
        self.cwd = self.tmp / "ctld-log"          # slurmctld runs the program in its log dir
        self.cwd.mkdir()
        self.state_dir = self.tmp / "state"
        self.slurm_conf = self.tmp / "no-slurm.conf"   # does not exist: no real cluster is reached
        self.config = self.tmp / "bridge.toml"
        self.config.write_text(CONFIG.format(state_dir=self.state_dir, slurm_conf=self.slurm_conf,
                                             pool=POOL, size=max_nodes, lab_dir=self.tmp / "no-lab"))
        self.db_path = self.state_dir / "state.db"
        self.next_job = 1000

    def close(self) -> None:
        import shutil

        shutil.rmtree(self.tmp, ignore_errors=True)

    def _resume_fd(self, n: int) -> int:
        """The resume file in slurmctld's shape: an fd of ours, passed as /proc/<pid>/fd/<n>."""
        jobs = []
        for first in range(0, n, NODES_PER_JOB):
            last = min(first + NODES_PER_JOB, n) - 1
            jobs.append({"job_id": self.next_job,
                         "nodes": f"{POOL}-{first}" if first == last else f"{POOL}-[{first}-{last}]"})
            self.next_job += 1
        text = json.dumps({"jobs": jobs, "all_nodes": hostlist(n)}, separators=(",", ":"))
        fd = os.memfd_create("slurm-bridge-bench-resume") if hasattr(os, "memfd_create") else None
        if fd is None:
            fd, name = tempfile.mkstemp(dir=self.tmp)
            os.unlink(name)
        os.write(fd, text.encode())
        return fd

    def _max_request_id(self) -> int:
        if not self.db_path.exists():
            return 0
        with sqlite3.connect(self.db_path) as con:
            try:
                return con.execute("SELECT COALESCE(MAX(id), 0) FROM requests").fetchone()[0]
            except sqlite3.OperationalError:   # no table yet
                return 0

    def baseline(self) -> float:
        env = {"SLURM_CONF": str(self.slurm_conf), "SLURM_RESUME_FILE": "/nonexistent"}
        seconds, rc = spawn_like_slurmctld([sys.executable, "-c", "pass"], env, self.cwd)
        if rc != 0:
            raise SystemExit(f"baseline `{sys.executable} -c pass` exited {rc}")
        return seconds

    def resume(self, n: int) -> float:
        """Time one `slurm-bridge-resume bench-[0-N-1]`; check its request row; kill its worker."""
        before = self._max_request_id()
        fd = self._resume_fd(n)
        env = {"SLURM_CONF": str(self.slurm_conf), "SLURM_RESUME_FILE": f"/proc/{os.getpid()}/fd/{fd}"}
        try:
            seconds, rc = spawn_like_slurmctld(
                [str(PROGRAM), "--config", str(self.config), hostlist(n)], env, self.cwd)
        finally:
            os.close(fd)
        rows = []
        if self.db_path.exists():
            with sqlite3.connect(self.db_path) as con:
                con.row_factory = sqlite3.Row
                rows = [dict(r) for r in con.execute(
                    "SELECT id, kind, hostlist, nodes_json, worker_pid, error FROM requests WHERE id > ?",
                    (before,))]
        for row in rows:
            stop_worker(row["worker_pid"], self.config)
        problems = []
        if rc != 0:
            problems.append(f"exit code {rc}")
        if len(rows) != 1:
            problems.append(f"{len(rows)} new request rows, expected 1")
        else:
            row = rows[0]
            want = [f"{POOL}-{i}" for i in range(n)]
            if json.loads(row["nodes_json"]) != want:
                problems.append(f"request {row['id']}: nodes_json is not the {n} nodes")
            if row["kind"] != "resume" or row["hostlist"] != hostlist(n):
                problems.append(f"request {row['id']}: kind {row['kind']!r} hostlist {row['hostlist']!r}")
            if not row["worker_pid"]:
                problems.append(f"request {row['id']}: no worker_pid")
        if problems:
            log = self.state_dir / "log" / "slurm-bridge-resume.log"
            tail = log.read_text().splitlines()[-5:] if log.exists() else ["(no log)"]
            raise SystemExit(f"{n} nodes: " + "; ".join(problems) + "\n  " + "\n  ".join(tail))
        return seconds


def hostlist(n: int) -> str:
    return f"{POOL}-0" if n == 1 else f"{POOL}-[0-{n - 1}]"


# --- profile -----------------------------------------------------------------------------

def _importtime(argv: list[str], env: dict[str, str], cwd: Path) -> list[tuple[int, int, int, str]]:
    """(self us, cumulative us, depth, module) per line of -X importtime."""
    done = subprocess.run([sys.executable, "-X", "importtime", *argv], env=env, cwd=cwd,
                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True, check=True)
    out = []
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        head, cum_us, name = line.split("|")
        self_us = head.split(":")[1]
        depth = (len(name) - len(name.lstrip(" ")) - 1) // 2
        out.append((int(self_us), int(cum_us), depth, name.strip()))
    return out


def profile(bench: Bench, n: int, rounds: int = 5) -> dict:
    """Where `slurm-bridge-resume` spends its time for N nodes: imports and the steps of resume_main."""
    import pstats

    env_base = {"SLURM_CONF": str(bench.slurm_conf), "SLURM_RESUME_FILE": "/nonexistent"}
    # Imports: the median over ROUNDS runs of each module's cumulative time, minus what
    # `python -c pass` imports anyway (site, encodings, the editable-install finder ...).
    startup = {name for *_, name in _importtime(["-c", "pass"], env_base, bench.cwd)}
    samples: dict[str, list[int]] = {}
    self_samples: dict[str, list[int]] = {}
    depth_of: dict[str, int] = {}
    parent_of: dict[str, str] = {}
    totals = []
    for _ in range(rounds):
        fd = bench._resume_fd(n)
        env = {**env_base, "SLURM_RESUME_FILE": f"/proc/{os.getpid()}/fd/{fd}"}
        before = bench._max_request_id()
        try:
            lines = _importtime([str(PROGRAM), "--config", str(bench.config), hostlist(n)], env, bench.cwd)
        finally:
            os.close(fd)
            _stop_new_workers(bench, before)
        # -X importtime prints a module after its children: the parent is the next line with a lower depth.
        stack: list[tuple[int, str]] = []
        for self_us, cum_us, depth, name in reversed(lines):
            while stack and stack[-1][0] >= depth:
                stack.pop()
            parent_of[name] = stack[-1][1] if stack else ""
            stack.append((depth, name))
            samples.setdefault(name, []).append(cum_us)
            self_samples.setdefault(name, []).append(self_us)
            depth_of[name] = depth
        totals.append(sum(c for _, c, d, name in lines if d == 0 and name not in startup))
    med = {name: statistics.median(v) / 1000 for name, v in samples.items()}
    med_self = {name: statistics.median(v) / 1000 for name, v in self_samples.items()}
    program_imports = [name for name in med if name not in startup]
    # The import tree, four levels deep, biggest first: entries of 1.5 ms and more (4 ms at level 4).
    children: dict[str, list[str]] = {}
    for name in program_imports:
        children.setdefault(parent_of.get(name, ""), []).append(name)
    top: list[str] = []

    def walk(parent: str, level: int) -> None:
        for name in sorted(children.get(parent, []), key=lambda m: -med[m]):
            if med[name] >= (1.5 if level < 3 else 4.0):
                top.append(name)
                if level < 3:
                    walk(name, level + 1)
    walk("", 0)

    # Steps of resume_main, from cProfile (its own overhead inflates the figures; compare them
    # with each other, not with the wall-clock table).
    prof = bench.tmp / "resume.prof"
    fd = bench._resume_fd(n)
    env = {**env_base, "SLURM_RESUME_FILE": f"/proc/{os.getpid()}/fd/{fd}"}
    before = bench._max_request_id()
    try:
        subprocess.run([sys.executable, "-m", "cProfile", "-o", str(prof), str(PROGRAM), "--config",
                        str(bench.config), hostlist(n)], env=env, cwd=bench.cwd, check=True,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    finally:
        os.close(fd)
        _stop_new_workers(bench, before)
    stats = pstats.Stats(str(prof)).stats
    wanted = {
        ("slurm-bridge-resume", "<module>"): "the console script (all of it)",
        ("programs.py", "<module>"): "  import slurm_bridge.programs (at the script's top)",
        ("programs.py", "resume_main"): "  resume_main (all of it)",
        ("programs.py", "_early"): "    _early: stdio, argparse, config, logging",
        ("config.py", "<module>"): "      import slurm_bridge.config",
        ("config.py", "load_config"): "      load_config (read + validate the TOML)",
        ("resume_file.py", "<module>"): "    import slurm_bridge.resume_file (+ slurm/__init__, hostlists)",
        ("state.py", "<module>"): "    import slurm_bridge.state (+ sqlite_utils)",
        ("hostlists.py", "expand"): "    hostlists.expand, all calls",
        ("resume_file.py", "parse"): "    resume_file.parse (expand per job included)",
        ("state.py", "open"): "    StateDB.open",
        ("state.py", "add_request"): "    StateDB.add_request",
        ("subprocess.py", "__init__"): "    subprocess.Popen (the worker)",
        ("state.py", "start_request"): "    StateDB.start_request",
        ("programs.py", "_json_or_none"): "    _json_or_none",
    }
    steps = []
    for (file, line, func), (cc, nc, tt, ct, callers) in stats.items():
        for (wfile, wfunc), label in wanted.items():
            if not (file.endswith("/" + wfile) and func == wfunc):
                continue
            # subprocess.Popen.__init__: only the call resume_main makes, not the stdlib's own.
            if wfile == "subprocess.py" and not any(c[0].endswith("/programs.py") for c in callers):
                continue
            steps.append({"step": label, "calls": nc, "cumulative_ms": round(ct * 1000, 1)})
    order = list(wanted.values())
    steps.sort(key=lambda s: order.index(s["step"]))
    return {
        "nodes": n, "rounds": rounds,
        "program_import_ms_median": round(statistics.median(totals) / 1000, 1),
        "top_imports": [{"module": m, "depth": depth_of[m], "imported_by": parent_of.get(m, ""),
                         "cumulative_ms": round(med[m], 1), "self_ms": round(med_self[m], 1)} for m in top],
        "steps": steps,
        "phases": phases(bench, n, rounds=max(rounds, 9)),
    }


# What the console script does (`from slurm_bridge.programs import resume_main;
# sys.exit(resume_main())`), with time stamps; {head} and {tail} give the what-if variants.
_PHASE_SCRIPT = """\
{head}import sys, time
t0 = time.perf_counter()
from slurm_bridge.programs import resume_main
t1 = time.perf_counter()
rc = resume_main()
t2 = time.perf_counter()
with open({stamps!r}, "w") as f:
    f.write(repr((t0, t1, t2)))
{tail}sys.exit(rc)
"""

PHASE_VARIANTS = {
    "as installed": ("", ""),
    # What-ifs, NOT what programs.py does today: they show what the interpreter's
    # garbage collector and its teardown cost.
    "what-if: gc.disable() first, gc.freeze() before exit": ("import gc; gc.disable()\n", "gc.freeze()\n"),
    "what-if: logging.shutdown(); os._exit(rc)": ("", "import logging, os; logging.shutdown(); os._exit(rc)\n"),
}


def phases(bench: Bench, n: int, rounds: int) -> list[dict]:
    """Wall ms of startup / import programs / resume_main / exit (interpreter teardown), medians.

    perf_counter is CLOCK_MONOTONIC, shared by the processes, so the parent's spawn and exit
    times and the child's stamps are on one clock.
    """
    stamps = bench.tmp / "stamps"
    out = []
    for label, (head, tail) in PHASE_VARIANTS.items():
        script = bench.tmp / "phases.py"
        script.write_text(_PHASE_SCRIPT.format(head=head, tail=tail, stamps=str(stamps)))
        rows = []
        for _ in range(rounds):
            fd = bench._resume_fd(n)
            env = {"SLURM_CONF": str(bench.slurm_conf), "SLURM_RESUME_FILE": f"/proc/{os.getpid()}/fd/{fd}"}
            before = bench._max_request_id()
            stamps.unlink(missing_ok=True)
            try:
                start = time.perf_counter()
                proc = subprocess.Popen([sys.executable, str(script), "--config", str(bench.config), hostlist(n)],
                                        env=env, cwd=bench.cwd, close_fds=True, pass_fds=(),
                                        preexec_fn=_close_stdio)
                rc = proc.wait()
                end = time.perf_counter()
            finally:
                os.close(fd)
                _stop_new_workers(bench, before)
            if rc != 0 or not stamps.exists():
                raise SystemExit(f"phase run ({label}) exited {rc}")
            t0, t1, t2 = (float(x) for x in stamps.read_text().strip("()").split(","))
            rows.append((t0 - start, t1 - t0, t2 - t1, end - t2, end - start))
        med = [round(statistics.median(col) * 1000, 1) for col in zip(*rows)]
        out.append({"variant": label, "rounds": rounds, "startup_ms": med[0], "import_programs_ms": med[1],
                    "resume_main_ms": med[2], "exit_ms": med[3], "total_ms": med[4]})
    return out


def _stop_new_workers(bench: Bench, before: int) -> None:
    if not bench.db_path.exists():
        return
    with sqlite3.connect(bench.db_path) as con:
        for (pid,) in con.execute("SELECT worker_pid FROM requests WHERE id > ?", (before,)):
            stop_worker(pid, bench.config)


# --- main --------------------------------------------------------------------------------

def summary(samples: list[float]) -> dict:
    return {"min": round(min(samples), 4), "median": round(statistics.median(samples), 4),
            "max": round(max(samples), 4),
            "samples": [round(s, 4) for s in samples]}


def machine() -> dict:
    return {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "nproc": os.cpu_count(),
            "machine": platform.machine(), "python": platform.python_version(),
            "loadavg_1m": round(os.getloadavg()[0], 2)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nodes", default="64,256,1000", help="node counts, comma separated (default 64,256,1000)")
    p.add_argument("--repeat", type=int, default=5, help="timed calls per node count (default 5)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--profile", action="store_true",
                   help="also profile one node count (the largest): -X importtime and cProfile")
    args = p.parse_args(argv)
    sizes = [int(x) for x in args.nodes.split(",") if x.strip()]
    if not sizes or min(sizes) < 1 or args.repeat < 1:
        p.error("--nodes needs positive counts and --repeat at least 1")
    if not PROGRAM.exists():
        p.error(f"{PROGRAM} is missing: install the project into {VENV_BIN.parent}")
    _become_subreaper()

    bench = Bench(max(sizes))
    try:
        # Warm-up, not timed: creates the state DB and log dir, fills the page cache.
        bench.baseline()
        first = {n: bench.resume(n) for n in sizes}
        base: list[float] = []
        times: dict[int, list[float]] = {n: [] for n in sizes}
        # Interleaved rounds, so a burst of noise hits every size and the baseline alike.
        for _ in range(args.repeat):
            base.append(bench.baseline())
            for n in sizes:
                times[n].append(bench.resume(n))
        prof = profile(bench, max(sizes)) if args.profile else None
    finally:
        _reap(1.0)
        bench.close()

    b = summary(base)
    results = []
    for n in sizes:
        s = summary(times[n])
        s.update(nodes=n, ratio=round(s["median"] / b["median"], 2), warmup=round(first[n], 4))
        if n in TARGETS:
            limit, label, strict = TARGETS[n]

            def ok(x: float) -> bool:
                return x < limit if strict else x <= limit
            s.update(target_s=limit, target=label, target_met=ok(s["median"]), target_met_by_max=ok(s["max"]))
        results.append(s)
    report = {"machine": machine(), "repeat": args.repeat, "program": str(PROGRAM),
              "baseline_python_c_pass": b, "results": results}
    if prof:
        report["profile"] = prof

    if args.json:
        print(json.dumps(report, indent=2))
        return 0 if all(r.get("target_met", True) for r in results) else 1
    m = report["machine"]
    print(f"slurm-bridge-resume return time, {args.repeat} calls each ({m['date']}, {m['nproc']} CPU "
          f"{m['machine']}, Python {m['python']}, load {m['loadavg_1m']:.2f})")
    print(f"{'nodes':>16} {'min s':>7} {'median s':>9} {'max s':>7} {'vs python':>10}  target")
    print(f"{'python -c pass':>16} {b['min']:7.3f} {b['median']:9.3f} {b['max']:7.3f} {1:9.2f}x")
    for r in results:
        target = ""
        if "target_s" in r:
            target = f"{r['target']}: {'met' if r['target_met'] else 'MISSED'} (median)"
            if r["target_met"] and not r["target_met_by_max"]:
                target += ", max over"
        print(f"{r['nodes']:>16} {r['min']:7.3f} {r['median']:9.3f} {r['max']:7.3f} {r['ratio']:9.2f}x  {target}")
    if prof:
        print(f"\nprofile, {prof['nodes']} nodes: the program's own imports (beyond python -c pass) "
              f"{prof['program_import_ms_median']:.0f} ms under -X importtime (median of {prof['rounds']})")
        print(f"  {'cumulative ms':>13} {'self ms':>7}  module (imported by)")
        for t in prof["top_imports"]:
            print(f"  {t['cumulative_ms']:13.1f} {t['self_ms']:7.1f}  {'  ' * t['depth']}{t['module']}"
                  + (f"  ({t['imported_by']})" if t["imported_by"] else ""))
        print("  steps of resume_main under cProfile (inflated by the profiler; compare with each other):")
        for s in prof["steps"]:
            print(f"  {s['cumulative_ms']:13.1f}  {s['step']}" + (f"  x{s['calls']}" if s["calls"] > 1 else ""))
        print(f"  wall-clock phases, medians of {prof['phases'][0]['rounds']} runs (ms):")
        print(f"  {'startup':>8} {'import':>7} {'resume':>7} {'exit':>6} {'total':>6}")
        print(f"  {'(python)':>8} {'progs':>7} {'_main':>7} {'':>6} {'':>6}")
        for ph in prof["phases"]:
            print(f"  {ph['startup_ms']:8.1f} {ph['import_programs_ms']:7.1f} {ph['resume_main_ms']:7.1f} "
                  f"{ph['exit_ms']:6.1f} {ph['total_ms']:6.1f}  {ph['variant']}")
    return 0 if all(r.get("target_met", True) for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
