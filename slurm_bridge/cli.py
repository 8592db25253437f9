"""`slurm-bridge`: the command line. Thin: every command calls the library."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import __version__

CONFIG_HELP = "bridge config (default $SLURM_BRIDGE_CONFIG, else /etc/slurm-bridge/bridge.toml)"


def _lab_options(args):
    from .lab.cluster import LabOptions

    opts = LabOptions(dir=Path(args.dir))
    for key in ("onprem_nodes", "gpus_per_node", "cluster"):
        value = getattr(args, key, None)
        if value is not None:
            setattr(opts, key, value)
    if getattr(args, "config", None):
        opts.bridge_config = Path(args.config).resolve()
    return opts


def cmd_lab_up(args) -> int:
    from .lab.cluster import Lab

    Lab(_lab_options(args)).up(progress=lambda m: print(f"lab: {m}", file=sys.stderr))
    return 0


def cmd_lab_status(args) -> int:
    from .lab.cluster import Lab

    status = Lab(_lab_options(args)).status()
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        print(f"lab in {status['dir']}: {'up' if status['up'] else 'not (fully) up'}")
        for name, p in status["procs"].items():
            print(f"  {name:24} pid {p['pid']:>7}  {'running' if p['alive'] else 'GONE'}")
        for host in status["hosts"]:
            print(f"  host {host}")
    return 0 if status["up"] else 1


def cmd_lab_down(args) -> int:
    from .lab.cluster import Lab

    Lab(_lab_options(args)).down(progress=lambda m: print(f"lab: {m}", file=sys.stderr), purge=args.purge)
    return 0


def cmd_demo(args) -> int:
    from .demo import run

    return run(_lab_options(args), Path(args.config) if args.config else None)


def _load(args):
    from .config import load_config

    return load_config(args.config)


def cmd_conf_render(args) -> int:
    from . import render

    cfg = _load(args)
    out_dir = Path(args.output) if args.output else cfg.slurm.slurm_conf.parent
    config_path = (cfg.source or Path(args.config)).resolve()
    rendered = render.render(cfg, config_path=config_path)
    for path in render.write(rendered, out_dir):
        print(f"wrote {path}")
    print(f"\nAdd to slurm.conf:  Include {out_dir / render.FRAGMENT_NAME}")
    print(f"Add to gres.conf the lines of {out_dir / render.GRES_NAME} (gres.conf has no Include).")
    print(f"Add to the on-prem NodeName lines: Features={','.join(rendered.onprem_features)}")
    print("Then restart slurmctld (node and partition lines are read only at start).")
    return 0


def cmd_conf_check(args) -> int:
    from .confcheck import check
    from .errors import ConfigError
    from .slurm import default_backend

    try:
        cfg = _load(args)
    except ConfigError as exc:
        for line in getattr(exc, "problems", None) or [str(exc)]:
            print(f"problem: {line}")
        return 1
    problems = check(cfg, default_backend(cfg.slurm.slurm_conf if args.slurm_conf is None else args.slurm_conf))
    for p in problems:
        print(f"problem: {p}")
    if problems:
        print(f"{len(problems)} problem(s) in the running Slurm against {cfg.source}")
        return 1
    print(f"config {cfg.source} is valid and matches the running Slurm "
          f"({len(cfg.pools)} pool(s), {sum(p.size for p in cfg.pools)} cloud node(s))")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .lab.cluster import DEFAULT_DIR

    parser = argparse.ArgumentParser(prog="slurm-bridge", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"slurm-bridge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    lab = sub.add_parser("lab", help="run a real Slurm cluster on this machine (demo and tests)",
                         description="A real Slurm 22.05 cluster on this machine: munge, MariaDB, "
                                     "slurmdbd, slurmctld and on-prem GPU nodes in network namespaces.")
    labsub = lab.add_subparsers(dest="lab_command", required=True, metavar="ACTION")
    up = labsub.add_parser("up", help="start the lab (idempotent)",
                           description="Start the lab, or whatever part of it is not running.")
    up.add_argument("--dir", default=str(DEFAULT_DIR), help="where the lab keeps everything (default %(default)s)")
    up.add_argument("--onprem-nodes", type=int, default=2, help="on-prem GPU nodes in partition gpu (default %(default)s)")
    up.add_argument("--gpus-per-node", type=int, default=4, help="fake a100 GPUs per on-prem node (default %(default)s)")
    up.add_argument("--cluster", default="lab", help="Slurm ClusterName (default %(default)s)")
    up.add_argument("--config", metavar="BRIDGE_TOML", help="bridge config whose pools join the lab")
    up.set_defaults(func=cmd_lab_up)
    st = labsub.add_parser("status", help="show the lab's processes and hosts",
                           description="Show what the lab started and whether it still runs; exit 1 if any part is down.")
    st.add_argument("--dir", default=str(DEFAULT_DIR), help="the lab's directory (default %(default)s)")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.set_defaults(func=cmd_lab_status)
    down = labsub.add_parser("down", help="stop the lab and remove its namespaces",
                             description="Stop every process the lab recorded and remove its namespaces and bridge.")
    down.add_argument("--dir", default=str(DEFAULT_DIR), help="the lab's directory (default %(default)s)")
    down.add_argument("--purge", action="store_true",
                      help="also delete the lab's directory: job state, accounting database, logs")
    down.set_defaults(func=cmd_lab_down)

    conf = sub.add_parser("conf", help="render and check the Slurm side of the config",
                          description="Render the slurm.conf lines for the pools, or check the running "
                                      "Slurm against the bridge config.")
    confsub = conf.add_subparsers(dest="conf_command", required=True, metavar="ACTION")
    rnd = confsub.add_parser("render", help="write the slurm.conf fragment, gres.conf lines and program wrappers",
                             description="Write slurm-bridge.conf (power saving, CLOUD nodes, burst partitions), "
                                         "gres-bridge.conf and the Resume/Suspend/ResumeFail wrappers.")
    rnd.add_argument("--config", help=CONFIG_HELP)
    rnd.add_argument("--output", metavar="DIR", help="where to write the fragments (default: beside slurm.conf)")
    rnd.set_defaults(func=cmd_conf_render)
    chk = confsub.add_parser("check", help="validate the config and compare it with the running Slurm",
                             description="Validate the bridge config and compare it with the live slurm.conf; "
                                         "exit 1 with every problem listed.")
    chk.add_argument("--config", help=CONFIG_HELP)
    chk.add_argument("--slurm-conf", help="slurm.conf of the cluster to check (default: slurm.slurm_conf)")
    chk.set_defaults(func=cmd_conf_check)

    demo = sub.add_parser("demo", help="bring up the lab and show a GPU job end to end",
                          description="Start the lab (if needed), run GPU jobs as a researcher would, "
                                      "and print what happened.")
    demo.add_argument("--dir", default=str(DEFAULT_DIR), help="the lab's directory (default %(default)s)")
    demo.add_argument("--config", help="bridge config for the lab (default slurm_conf/lab-bridge.toml)")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except Exception as exc:  # noqa: BLE001 - one clear line for the admin, not a traceback
        from .errors import user_facing

        msg = user_facing(exc)
        if msg is None:
            raise
        problems = getattr(exc, "problems", None) or [msg]
        for line in problems:
            print(f"slurm-bridge: error: {line}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
