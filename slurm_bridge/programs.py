"""The programs slurmctld runs: ResumeProgram, SuspendProgram, ResumeFailProgram.

slurmctld starts them as SlurmUser with file descriptors 0-2 closed, no PATH,
and only SLURM_CONF (and SLURM_RESUME_FILE) in the environment (DESIGN B).
So the first thing each does is give itself stdio, and every failure goes to
a log file with one clear line. The resume program only records the request
and hands off to a worker: Slurm 23.02+ kills power-save programs that take
longer than the resume timeout, and slurmctld waits on nothing we do.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from . import crashpoints
from .errors import BridgeError

log = logging.getLogger("slurm_bridge.programs")


def _stdio() -> None:
    # slurmctld starts its power-save programs with signals blocked (the mask is inherited across
    # exec): unblock, so that we, and every process we start, can be stopped normally.
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    # A child started with 0-2 closed would reuse them for its first files, and a
    # later print() would then write into a socket or a log (DESIGN B).
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
    if sys.stdout is None:
        sys.stdout = open(1, "w", closefd=False)
    if sys.stderr is None:
        sys.stderr = open(2, "w", closefd=False)


# Libraries that log every connection and channel at INFO: at that level one SSH launch is 40 lines.
CHATTY_LIBRARIES = ("asyncssh", "botocore", "boto3", "urllib3", "google.auth", "google.api_core")


def quiet_libraries() -> None:
    for name in CHATTY_LIBRARIES:
        logging.getLogger(name).setLevel(logging.WARNING)


def _setup_logging(program: str, state_dir: Path | None) -> Path | None:
    """Log to STATE_DIR/log/PROGRAM.log; also to stderr when a person runs the program by hand."""
    handlers: list[logging.Handler] = []
    path = None
    if state_dir is not None:
        path = state_dir / "log" / f"{program}.log"
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            handlers.append(logging.FileHandler(path))
        except OSError:
            path = None
    if sys.stderr.isatty() or not handlers:
        handlers.append(logging.StreamHandler(sys.stderr))
    fmt = logging.Formatter(f"%(asctime)s %(levelname)s {program}[%(process)d] %(name)s: %(message)s")
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in handlers:
        h.setFormatter(fmt)
        root.addHandler(h)
    root.setLevel(logging.INFO)
    quiet_libraries()
    return path


def _parser(prog: str, what: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=what)
    p.add_argument("--config", help="bridge config (default $SLURM_BRIDGE_CONFIG or /etc/slurm-bridge/bridge.toml)")
    p.add_argument("hostlist", help="the nodes, as one Slurm hostlist expression (e.g. a100-de-[0-3])")
    return p


def _context(cfg):
    """The state DB and Slurm of a loaded config."""
    from .slurm import default_backend
    from .state import StateDB

    db = StateDB.open(cfg.cluster.state_dir)
    slurm = default_backend(os.environ.get("SLURM_CONF") or cfg.slurm.slurm_conf)
    return db, slurm


def _fail(program: str, message: str) -> int:
    """One line, in the log if there is one and on stderr, then a non-zero exit."""
    log.error("%s", message)
    if not any(isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
               for h in logging.getLogger().handlers):
        print(f"{program}: error: {message}", file=sys.stderr)
    return 1


def _guarded(program: str):
    """Whatever escapes a program is one line on stderr (which slurmctld may log) and the whole
    traceback in the program's own log: never a bare traceback with no message."""
    def wrap(main):
        @functools.wraps(main)
        def run(argv: list[str] | None = None) -> int:
            try:
                return main(argv)
            except SystemExit:
                raise
            except BridgeError as exc:
                return _fail(program, str(exc))
            except Exception as exc:   # noqa: BLE001 - a bug: say so in one line, keep the detail
                log.exception("%s: unexpected error", program)
                print(f"{program}: error: unexpected {type(exc).__name__}: {exc} (traceback in the log)",
                      file=sys.stderr)
                return 1
        return run
    return wrap


def _early(program: str, argv: list[str] | None, what: str):
    """Stdio, arguments, config, log and the hostlist: what every program does before its own work.

    Returns (args, cfg, nodes, exit code); cfg is None when the program must stop with that code.
    """
    _stdio()
    args = _parser(program, what).parse_args(argv)
    from .config import load_config
    from .slurm.hostlists import HostlistError, expand

    try:
        cfg = load_config(args.config)
    except BridgeError as exc:
        _setup_logging(program, None)
        return args, None, [], _fail(program, str(exc))
    _setup_logging(program, cfg.cluster.state_dir)
    try:
        nodes = expand(args.hostlist)
    except HostlistError as exc:
        return args, None, [], _fail(program, f"{exc}; no node touched")
    return args, cfg, nodes, 0


# -- ResumeProgram --------------------------------------------------------------------------

@_guarded("slurm-bridge-resume")
def resume_main(argv: list[str] | None = None) -> int:
    program = "slurm-bridge-resume"
    # Copy at once: the file is /proc/<slurmctld>/fd/N and is gone soon (DESIGN B).
    resume_path = os.environ.get("SLURM_RESUME_FILE")
    resume_text = None
    if resume_path:
        try:
            resume_text = Path(resume_path).read_text()
        except OSError as exc:
            resume_text = ""
            resume_error = f"cannot read SLURM_RESUME_FILE {resume_path}: {exc.strerror or exc}"
        else:
            resume_error = None
    else:
        resume_error = None
    args, cfg, nodes, rc = _early(program, argv, "ResumeProgram: record the request and hand it to a worker.")
    if cfg is None:
        return rc
    from . import resume_file
    from .state import StateDB

    db = StateDB.open(cfg.cluster.state_dir)
    try:
        if resume_error:
            raise resume_file.ResumeFileError(resume_error)
        parsed = resume_file.parse(resume_text) if resume_text is not None else resume_file.manual(nodes)
        raw = _json_or_none(resume_text)
    except resume_file.ResumeFileError as exc:
        request_id = db.add_request("resume", args.hostlist, nodes, None)
        db.finish_request(request_id, str(exc))
        _fail_nodes(cfg, nodes, f"bad resume file: {exc}")
        return _fail(program, f"{exc}; nodes {args.hostlist} set down and powered down")
    request_id = db.add_request("resume" if parsed.jobs else "power_up", args.hostlist, nodes, raw)
    crashpoints.point("resume: before starting the worker")
    worker = subprocess.Popen(
        [sys.executable, "-m", "slurm_bridge.programs", "resume-worker", str(request_id)]
        + (["--config", args.config] if args.config else []),
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, close_fds=True, env=os.environ.copy())
    db.start_request(request_id, worker.pid)
    db.close()
    log.info("request %d: %d node(s) %s for job(s) %s handed to worker %d", request_id, len(nodes),
             args.hostlist, ",".join(str(j.job_id) for j in parsed.jobs) or "none (manual power-up)", worker.pid)
    return 0


def _json_or_none(text: str | None):
    import json

    if text is None:
        return None
    return json.loads(text)


def _fail_nodes(cfg, nodes: list[str], reason: str) -> None:
    from . import nodestate
    from .slurm import default_backend

    nodestate.fail(default_backend(os.environ.get("SLURM_CONF") or cfg.slurm.slurm_conf),
                   [n for n in nodes if cfg.pool_for_node(n) is not None], reason)


@_guarded("slurm-bridge-resume")
def resume_worker_main(argv: list[str] | None = None) -> int:
    program = "slurm-bridge-resume"
    _stdio()
    p = argparse.ArgumentParser(prog="slurm-bridge-resume-worker")
    p.add_argument("request_id", type=int)
    p.add_argument("--config")
    args = p.parse_args(argv)
    from .config import load_config

    cfg = load_config(args.config)
    _setup_logging(program, cfg.cluster.state_dir)
    from . import resume_file
    from .power import run_resume_request
    from .providers.registry import build

    db, slurm = _context(cfg)
    req = db.get_request(args.request_id)
    db.start_request(req.id, os.getpid())
    parsed = resume_file.parse(_dump(req.resume_file)) if req.resume_file else resume_file.manual(list(req.nodes))
    started = time.monotonic()
    try:
        ok = run_resume_request(cfg, db, slurm, build(cfg), req.id, parsed)
    except Exception as exc:   # noqa: BLE001 - a bug: fail the nodes loudly rather than leave them hanging
        log.exception("request %d crashed", req.id)
        db.finish_request(req.id, f"worker crashed: {exc}")
        _fail_nodes(cfg, list(req.nodes), f"resume worker crashed: {exc}")
        return 1
    log.info("request %d finished in %.1f s: %s", req.id, time.monotonic() - started, "ok" if ok else "with failures")
    return 0 if ok else 1


def _dump(data) -> str:
    import json

    return json.dumps(data)


# -- SuspendProgram and ResumeFailProgram ------------------------------------------------------

def _terminating_program(program: str, argv, what: str, action) -> int:
    args, cfg, nodes, rc = _early(program, argv, what)
    if cfg is None:
        return rc
    from .providers.registry import build

    db, slurm = _context(cfg)
    kind = "suspend" if action.__name__ == "suspend" else "resume_fail"
    request_id = db.add_request(kind, args.hostlist, nodes, None)
    try:
        ok = action(cfg, db, slurm, build(cfg), nodes)
    except BridgeError as exc:
        db.finish_request(request_id, str(exc))
        return _fail(program, str(exc))
    db.finish_request(request_id, None if ok else "some instances could not be terminated")
    log.info("%s %s: %s", kind, args.hostlist, "done" if ok else "some instances left for reconcile")
    return 0 if ok else 1


@_guarded("slurm-bridge-suspend")
def suspend_main(argv: list[str] | None = None) -> int:
    from .power import suspend

    return _terminating_program("slurm-bridge-suspend", argv,
                                "SuspendProgram: terminate the nodes' instances.", suspend)


@_guarded("slurm-bridge-resume-fail")
def resume_fail_main(argv: list[str] | None = None) -> int:
    from .power import resume_fail

    return _terminating_program("slurm-bridge-resume-fail", argv,
                                "ResumeFailProgram: release what a failed resume left and return the nodes "
                                "to the pool.", resume_fail)


# -- PrologSlurmctld --------------------------------------------------------------------------

@_guarded("slurm-bridge-prolog")
def prolog_main(argv: list[str] | None = None) -> int:
    """Exit non-zero (Slurm then requeues the job) when a cloud node is outside the job's zone."""
    program = "slurm-bridge-prolog"
    _stdio()
    p = argparse.ArgumentParser(prog=program, description="PrologSlurmctld: the residency gate at job start.")
    p.add_argument("--config", help="bridge config")
    args = p.parse_args(argv)
    from .config import load_config

    try:
        cfg = load_config(args.config)
    except BridgeError as exc:
        _setup_logging(program, None)
        return _fail(program, str(exc))
    _setup_logging(program, cfg.cluster.state_dir)
    job_id = os.environ.get("SLURM_JOB_ID", "")
    if not job_id.isdigit():
        return _fail(program, f"SLURM_JOB_ID is {job_id!r}: not run by slurmctld?")
    from .power import gate

    db, slurm = _context(cfg)
    env = os.environ
    from .slurm.hostlists import expand

    try:
        nodes = expand(env["SLURM_JOB_NODELIST"]) if env.get("SLURM_JOB_NODELIST") else None
        breach = gate(cfg, db, slurm, int(job_id), timeout=cfg.slurm.resume_timeout, nodes=nodes,
                      account=env.get("SLURM_JOB_ACCOUNT"),
                      partitions=env["SLURM_JOB_PARTITION"].split(",") if env.get("SLURM_JOB_PARTITION") else None,
                      features=env.get("SLURM_JOB_CONSTRAINTS", "") if nodes is not None else None)
    except BridgeError as exc:
        # Unable to check is not a breach: the launch path already kept the zone; say so loudly.
        log.error("job %s: residency gate could not check: %s", job_id, exc)
        return 0
    if breach:
        log.error("job %s: %s; failing the prolog so Slurm requeues it", job_id, breach)
        return 1
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["resume-worker"]:
        sys.exit(resume_worker_main(sys.argv[2:]))
    sys.exit(resume_main())
