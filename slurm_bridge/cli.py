"""`slurm-bridge`: the command line. Thin: every command calls the library."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from . import __version__

CONFIG_HELP = "bridge config (default $SLURM_BRIDGE_CONFIG, else /etc/slurm-bridge/bridge.toml)"


def _lab_options(args):
    from .lab.cluster import LabOptions

    opts = LabOptions(dir=Path(args.dir))
    for key in ("onprem_nodes", "gpus_per_node", "cluster", "ssh_hosts"):
        value = getattr(args, key, None)
        if value is not None:
            setattr(opts, key, value)
    if getattr(args, "config", None):
        opts.bridge_config = Path(args.config).resolve()
    return opts


def cmd_lab_up(args) -> int:
    from .lab.cluster import Lab

    from .lab import sibling

    lab = Lab(_lab_options(args))
    progress = lambda m: print(f"lab: {m}", file=sys.stderr)     # noqa: E731
    lab.up(progress=progress)
    if args.sibling:
        sibling.start(lab, args.sibling, progress=progress)
        if args.federation:
            sibling.federate(lab, args.federation, [lab.opts.cluster, args.sibling])
            progress(f"federation {args.federation}: {lab.opts.cluster}, {args.sibling}")
    elif args.federation:
        raise SystemExit("slurm-bridge lab up: --federation needs --sibling (a federation of one is none)")
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
    book = None
    if (cfg.cluster.state_dir / "state.db").exists():
        from .prices import book_for

        book = book_for(cfg.price_overrides, _state(cfg).prices())
    rendered = render.render(cfg, config_path=config_path, lua_dir=out_dir, book=book)
    for path in render.write(rendered, out_dir):
        print(f"wrote {path}")
    print(f"\nAdd to slurm.conf:  Include {out_dir / render.FRAGMENT_NAME}")
    print(f"Add to gres.conf the lines of {out_dir / render.GRES_NAME} (gres.conf has no Include).")
    print(f"Add to the on-prem NodeName lines: Features={','.join(rendered.onprem_features)}")
    print(f"job_submit.lua must sit beside slurm.conf; if you have one, add the lines of {out_dir / 'job_submit.lua'} "
          "to it.")
    print("Then restart slurmctld (node and partition lines are read only at start).")
    return 0


def cmd_conf_cloud_init(args) -> int:
    import asyncssh

    from . import cloudinit

    cfg = _load(args)
    if cfg.bootstrap is None:
        print("slurm-bridge conf cloud-init: error: the config has no [bootstrap] section (its client key is the "
              "one the user data lets in)", file=sys.stderr)
        return 2
    path = cfg.bootstrap.client_keys[0]
    try:
        public = asyncssh.read_private_key(str(path)).export_public_key().decode()
    except (OSError, ValueError, asyncssh.Error) as exc:
        print(f"slurm-bridge conf cloud-init: error: cannot read [bootstrap] client key {path} "
              f"({type(exc).__name__})", file=sys.stderr)
        return 2
    try:
        text = cloudinit.render_user_data(cfg, args.provider, node=None, controller=args.controller,
                                          ssh_public_key=public)
    except cloudinit.CloudInitError as exc:
        print(f"slurm-bridge conf cloud-init: error: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(text)
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


def _state(cfg):
    from .state import StateDB

    return StateDB.open(cfg.cluster.state_dir)


def cmd_regions(args) -> int:
    import time

    from . import selector, tables
    from .prices import book_for

    cfg = _load(args)
    try:
        pool = cfg.pool(args.pool)
    except KeyError:
        print(f"slurm-bridge: error: no pool named {args.pool!r} (pools: {', '.join(p.name for p in cfg.pools)})",
              file=sys.stderr)
        return 2
    db = _state(cfg)
    zone = cfg.account(args.account).zone if args.account else None

    def blocked(provider, region):
        row = db.is_blocked(provider, region)
        return None if row is None else \
            f"blocked until {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(row.until))} by {row.kind}: {row.reason}"

    ranked, excluded = selector.rank(cfg, pool, zone, blocked, book_for(cfg.price_overrides, db.prices()))
    if args.json:
        print(json.dumps({"pool": pool.name, "account": args.account,
                          "candidates": [vars(o) for o in ranked], "excluded": [vars(e) for e in excluded]},
                         indent=2))
        return 0
    scope = f"pool {pool.name} (zone {pool.zone.name})" + (f", account {args.account} (zone "
                                                            f"{cfg.account(args.account).zone.name})" if args.account else "")
    print(f"Candidates for {scope}, in the order they are tried:")
    print(tables.render(["#", "provider", "region", "country", "instance type", "USD/h", "market"],
                        [[i + 1, o.provider, o.region, o.country, o.instance_type, f"{o.price_per_hour:.2f}",
                          "spot" if o.spot else "on-demand"] for i, o in enumerate(ranked)], right=(0, 5)))
    if excluded:
        print("\nExcluded:")
        print(tables.render(["provider", "region", "country", "why"],
                            [[e.provider, e.region, e.country, e.reason] for e in excluded]))
    return 0


def cmd_audit_residency(args) -> int:
    from datetime import datetime, timedelta, timezone

    from . import tables
    from .audit import audit
    from .slurm import default_backend

    cfg = _load(args)
    since = datetime.fromisoformat(args.since) if args.since else datetime.now(timezone.utc) - timedelta(days=30)
    if since.tzinfo is None:
        since = since.astimezone()
    db = _state(cfg)
    records = default_backend(cfg.slurm.slurm_conf).accounting(since=since)
    placements = audit(cfg, records, db.instances(since=since.timestamp()))
    breaches = [p for p in placements if not p.ok]
    if args.json:
        print(json.dumps({"since": since.isoformat(), "checked": len(placements),
                          "breaches": [p.to_json() for p in breaches],
                          "placements": [p.to_json() for p in placements]}, indent=2))
    else:
        print(tables.render(["job", "account", "partition", "node", "region", "country", "allowed", "verdict"],
                            [[p.job, p.account, p.partition, p.node, f"{p.provider}/{p.region}", p.country, p.zone,
                              "ok" if p.ok else f"BREACH: {p.why}"] for p in placements]))
        print(f"\n{len(placements)} cloud placement(s) since {since:%Y-%m-%d %H:%M}, {len(breaches)} breach(es)")
    return 1 if breaches else 0


def cmd_prices_import(args) -> int:
    from .prices import read_table

    cfg = _load(args)
    result = read_table(Path(args.file), args.provider)
    for bad in result.bad_rows:
        print(f"skipped {args.file}: {bad}", file=sys.stderr)
    n = _state(cfg).set_prices([vars(p) for p in result.prices], source=f"import:{Path(args.file).name}")
    print(f"imported {n} price(s) from {args.file} ({result.format} format); {len(result.bad_rows)} bad row(s) skipped")
    return 0 if n else 1


def cmd_daemon(args) -> int:
    import logging

    from .daemon import Daemon
    from .programs import quiet_libraries

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s" if os.environ.get("JOURNAL_STREAM")
                        else "%(asctime)s %(levelname)s %(name)s: %(message)s")
    quiet_libraries()
    daemon = Daemon(args.config, metrics_addr=args.metrics_addr, metrics_port=args.metrics_port)
    if args.once:
        daemon.lock()
        daemon.watch_once()
        daemon.reconcile_once()
        return 0
    return daemon.run()


def cmd_status(args) -> int:
    import time

    from . import accounting, policy, tables
    from .daemon import read_status
    from .errors import BridgeError
    from .metrics import node_state_label
    from .slurm import default_backend

    cfg = _load(args)
    db = _state(cfg)
    now = time.time()
    out: dict = {"cluster": cfg.cluster.name, "at": now}
    try:
        nodes = {n.name: n for n in default_backend(cfg.slurm.slurm_conf).nodes()}
        slurm_error = None
    except BridgeError as exc:
        nodes, slurm_error = {}, str(exc)
    out["pools"] = []
    for pool in cfg.pools:
        counts: dict[str, int] = {}
        for name in pool.node_names:
            label = node_state_label(nodes[name]) if name in nodes else "unknown"
            counts[label] = counts.get(label, 0) + 1
        out["pools"].append({"pool": pool.name, "partition": pool.partition, "zone": pool.zone.name,
                             "size": pool.size, "nodes": counts})
    out["instances"] = [{"node": r.node, "provider": r.provider, "region": r.region, "instance_id": r.instance_id,
                         "state": r.state, "price_per_hour": r.price_per_hour, "jobs": list(r.job_ids),
                         "account": r.account, "since": r.launched_at or r.created_at}
                        for r in db.active_instances()]
    out["blocked"] = [{"provider": b.provider, "region": b.region, "zone": b.zone, "scope": b.scope,
                       "kind": b.kind, "reason": b.reason, "until": b.until} for b in db.active_blocks()]
    spend = db.spend_by_account(policy.month_start(now), now)
    out["budgets"] = [{**b, "spent_usd_month": b["spent_usd"]}
                      for b in accounting.budget_rows(cfg, spend, unbudgeted=True)]
    out["daemon"] = read_status(cfg.cluster.state_dir)
    out["slurm_error"] = slurm_error
    if args.json:
        print(json.dumps(out, indent=2, default=str))
        return 0
    print(tables.render(["pool", "partition", "zone", "size", "nodes"],
                        [[p["pool"], p["partition"], p["zone"], p["size"],
                          ", ".join(f"{k} {v}" for k, v in sorted(p["nodes"].items()))] for p in out["pools"]]))
    print(f"\n{len(out['instances'])} instance(s) up or launching")
    if out["instances"]:
        print(tables.render(["node", "where", "instance", "state", "USD/h", "jobs"],
                            [[i["node"], f"{i['provider']}/{i['region']}", i["instance_id"] or "-", i["state"],
                              f"{i['price_per_hour']:.2f}", ",".join(map(str, i["jobs"]))] for i in out["instances"]]))
    if out["blocked"]:
        print("\nBlocked:")
        print(tables.render(["provider", "region", "scope", "why", "until"],
                            [[b["provider"], b["region"] or "*", b["scope"], f"{b['kind']}: {b['reason']}",
                              time.strftime("%H:%M:%S", time.localtime(b["until"]))] for b in out["blocked"]]))
    if out["budgets"]:
        print("\nSpend this month:")
        print(tables.render(["account", "spent USD", "budget USD", ""],
                            [[b["account"] + (" (default budget)" if b["from_default"] and b["account"] != "default"
                                              else ""), f"{b['spent_usd_month']:.2f}",
                              "-" if b["budget_usd_month"] is None else f"{b['budget_usd_month']:.2f}",
                              "OVER BUDGET: jobs stay on-prem" if b["over"] else ""] for b in out["budgets"]],
                            right=(1, 2)))
    d = out["daemon"]
    if d:
        w, r = d.get("watch") or {}, d.get("reconcile") or {}
        print(f"\ndaemon pid {d.get('pid')}: last watch {_ago(now, w.get('at'))} ({w.get('pending', 0)} pending, "
              f"{w.get('burst', 0)} burst), last reconcile {_ago(now, r.get('at'))}")
        for reason, n in sorted((w.get("reasons") or {}).items()):
            print(f"  {n:5d} job(s): {reason}")
    else:
        print("\ndaemon: no status yet (not running, or not yet one cycle)")
    if slurm_error:
        print(f"\nslurm: {slurm_error}")
    return 0


def _ago(now, at) -> str:
    return "never" if not at else f"{now - at:.0f}s ago"


def cmd_prices_refresh(args) -> int:
    from .prices import refresh_spot
    from .providers.registry import build

    cfg = _load(args)
    db = _state(cfg)
    done = refresh_spot(cfg, build(cfg), lambda rows, source: db.set_prices(rows, source=source))
    if not done:
        print("nothing to refresh: no [providers.aws] or no spot pool with an aws instance type")
        return 0
    for region, n in done.items():
        print(f"{region}: " + ("FAILED (see the log)" if n < 0 else f"{n} spot price(s) stored"))
    return 1 if any(n < 0 for n in done.values()) else 0


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
    up.add_argument("--ssh-hosts", type=int, metavar="N",
                    help="also run N hosts reachable only over SSH (10.199.0.50 and up) for an SSH host group")
    up.add_argument("--sibling", metavar="NAME",
                    help="also run a second cluster NAME (own slurmctld, one on-prem node) on the same slurmdbd")
    up.add_argument("--federation", metavar="FED",
                    help="join the lab's cluster and the --sibling one in the Slurm federation FED")
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
    ci = confsub.add_parser("cloud-init", help="print the user data for AWS launch templates or GCP instance templates",
                            description="Print the #cloud-config that cloud instances boot with when [bootstrap] "
                                        "brings them up: non-secret facts and the bridge's public key only. Put it "
                                        "in the launch template's user data (AWS) or the instance template's "
                                        "user-data metadata item (GCP).")
    ci.add_argument("--config", help=CONFIG_HELP)
    ci.add_argument("--provider", choices=("aws", "gcp"), required=True, help="whose template it is for")
    ci.add_argument("--controller", required=True, metavar="HOST[:PORT]",
                    help="slurmctld's address as the instances reach it (over the VPN)")
    ci.set_defaults(func=cmd_conf_cloud_init)
    chk = confsub.add_parser("check", help="validate the config and compare it with the running Slurm",
                             description="Validate the bridge config and compare it with the live slurm.conf; "
                                         "exit 1 with every problem listed.")
    chk.add_argument("--config", help=CONFIG_HELP)
    chk.add_argument("--slurm-conf", help="slurm.conf of the cluster to check (default: slurm.slurm_conf)")
    chk.set_defaults(func=cmd_conf_check)

    reg = sub.add_parser("regions", help="where a pool's nodes would be launched, and why not elsewhere",
                         description="Rank the regions a pool's nodes may be launched in (inside the pool's and "
                                     "the account's zone, by price, skipping regions in backoff) and say why each "
                                     "other region is excluded.")
    reg.add_argument("--config", help=CONFIG_HELP)
    reg.add_argument("--pool", required=True, help="pool name")
    reg.add_argument("--account", help="rank for a job of this account (its zone narrows the choice)")
    reg.add_argument("--json", action="store_true", help="machine-readable output")
    reg.set_defaults(func=cmd_regions)

    aud = sub.add_parser("audit", help="check after the fact that policy held",
                         description="Re-check past placements against policy.")
    audsub = aud.add_subparsers(dest="audit_command", required=True, metavar="WHAT")
    res = audsub.add_parser("residency", help="check every cloud job ran inside its allowed zone",
                            description="From sacct and the state DB, find the region of every job that ran on "
                                        "a cloud node and check it against the job's allowed zone; exit 1 and list "
                                        "each breach.")
    res.add_argument("--config", help=CONFIG_HELP)
    res.add_argument("--since", help="ISO date or time (default: 30 days ago)")
    res.add_argument("--json", action="store_true", help="machine-readable output")
    res.set_defaults(func=cmd_audit_residency)

    pr = sub.add_parser("prices", help="manage the price table the selector ranks by",
                        description="Import hourly on-demand and spot prices per provider, region and instance type.")
    prsub = pr.add_subparsers(dest="prices_command", required=True, metavar="ACTION")
    imp = prsub.add_parser("import", help="import a price table (CSV)",
                           description="Import a CSV of prices: slurm-bridge format "
                                       "(provider,region,instance_type,ondemand_usd_hr,spot_usd_hr) or a SkyPilot "
                                       "catalog vms.csv (with --provider). Bad rows are reported and skipped.")
    imp.add_argument("--config", help=CONFIG_HELP)
    imp.add_argument("--provider", choices=("aws", "gcp"), help="the cloud of a SkyPilot vms.csv")
    imp.add_argument("file", help="the CSV file")
    imp.set_defaults(func=cmd_prices_import)
    ref = prsub.add_parser("refresh", help="fetch current AWS spot prices for the spot pools",
                           description="Ask AWS (describe_spot_price_history) for the current spot price of every "
                                       "spot pool's instance type in every configured region, and store them.")
    ref.add_argument("--config", help=CONFIG_HELP)
    ref.set_defaults(func=cmd_prices_refresh)

    dmn = sub.add_parser("daemon", help="run the burst daemon (systemd service)",
                         description="Watch pending jobs in the on-prem partitions, make them eligible for cloud "
                                     "pools by policy, and reconcile Slurm, the clouds and the state DB.")
    dmn.add_argument("--config", help=CONFIG_HELP)
    dmn.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port")
    dmn.add_argument("--metrics-addr", default="127.0.0.1", help="address for the metrics (default %(default)s)")
    dmn.add_argument("--once", action="store_true", help="run one watch and one reconcile cycle, then exit")
    dmn.set_defaults(func=cmd_daemon)

    sts = sub.add_parser("status", help="pools, instances, blocked regions, spend against budgets",
                         description="Show pools and their nodes, instances up, blocked regions, spend this month "
                                     "against budgets, and the daemon's last cycles with why jobs stay on-prem.")
    sts.add_argument("--config", help=CONFIG_HELP)
    sts.add_argument("--json", action="store_true", help="machine-readable output")
    sts.set_defaults(func=cmd_status)

    from .cli_cost import register as register_cost
    from .cli_simulate import register as register_simulate

    register_cost(sub)
    register_simulate(sub)

    demo = sub.add_parser("demo", help="bring up the lab and show a GPU job end to end",
                          description="Start the lab (if needed), run GPU jobs as a researcher would, "
                                      "and print what happened.")
    demo.add_argument("--dir", default=str(DEFAULT_DIR), help="the lab's directory (default %(default)s)")
    demo.add_argument("--config", help="bridge config for the lab (default: the lab-bridge.toml installed with slurm_bridge.lab)")
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
