"""Fixtures for bench/daemon_cycle.py: the bench config, Slurm's output scaled up from lab captures, a state DB.

Everything here runs in the builder process (it grows to about 1 GB); see daemon_cycle.py for why the
measuring process must not be its child.
"""

from __future__ import annotations

import copy
import json
import random
import sqlite3
import time
from pathlib import Path

from slurm_bridge import policy
from slurm_bridge.slurm import node_text, pending

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures" / "slurm-22.05.8"
SEED = 5          # issue 5; the fixtures are the same on every run

# --- the bench config -------------------------------------------------------------------------

# Pool sizes are shares of --nodes (5,000 by default: 1,500 + 1,500 + 1,000 + 1,000).
POOLS = [  # name, share, zone, cpus, memory_mb, gpus, spot, local instance type
    ("a100-de", 0.30, "de", 96, 1000000, "a100:8", False, "lab-a100x8"),
    ("a100-eu", 0.30, "eu", 96, 1000000, "a100:8", False, "lab-a100x8"),
    ("h100-eu", 0.20, "eu", 192, 2000000, "h100:8", False, "lab-h100x8"),
    ("l4-any", 0.20, "any", 32, 192000, "l4:4", True, "lab-l4x4"),
]
REGIONS = [  # name, country, {instance type: USD/h}, {spot}
    ("lab-de-fra", "DE", {"lab-a100x8": 32.8, "lab-h100x8": 98.3, "lab-l4x4": 4.1}, {"lab-l4x4": 1.6}),
    ("lab-de-ber", "DE", {"lab-a100x8": 33.9, "lab-h100x8": 101.0, "lab-l4x4": 4.3}, {"lab-l4x4": 1.9}),
    ("lab-nl-ams", "NL", {"lab-a100x8": 31.2, "lab-h100x8": 96.0, "lab-l4x4": 3.9}, {"lab-l4x4": 1.4}),
    ("lab-fr-par", "FR", {"lab-a100x8": 30.9, "lab-h100x8": 95.1, "lab-l4x4": 3.8}, {"lab-l4x4": 1.5}),
    ("lab-pl-waw", "PL", {"lab-a100x8": 29.5, "lab-l4x4": 3.6}, {"lab-l4x4": 1.2}),
    ("lab-ch-zrh", "CH", {"lab-a100x8": 36.0, "lab-l4x4": 4.8}, {}),
    ("lab-us-east", "US", {"lab-a100x8": 27.4, "lab-h100x8": 88.0, "lab-l4x4": 3.2}, {"lab-l4x4": 1.0}),
]
BLOCKED_REGION = "lab-fr-par"     # one active capacity block, as after a failed launch
# Budgets are set from the history in the DB: this month's spend times the factor.
ACCOUNTS = [  # name, zone, budget factor or None (no budget), burst, weight among pending jobs
    ("medical", "de", 1.5, True, 12),
    ("physics", "any", 2.0, True, 22),
    ("ml", "any", 1.5, True, 30),
    ("climate", "eu", None, True, 12),
    ("bio", "dach", 1.3, True, 10),
    ("chem", "eu", 0.8, True, 8),          # spent more than its budget: over_budget
    ("ops", "eu", None, False, 3),         # does not burst
    ("student", "eu", None, True, 3),      # not listed: [accounts.default]
]
ONPREM_NODES = 500
WATCHED = ("gpu", "gpu-long")

CONFIG = """\
[cluster]
name = "bench"
state_dir = "{state_dir}"
country = "DE"

[slurm]
watch_partitions = {watched}
suspend_timeout = 600
slurm_conf = "{slurm_conf}"

[policy]
burst_after = 600
poll_interval = 15
max_cloud_nodes = {max_cloud_nodes}

[zones]
de = ["DE"]
dach = ["DE", "AT", "CH"]
eu = "EU"
any = "*"

[accounts.default]
zone = "eu"
{accounts}
{pools}
[providers.local]
lab_dir = "{lab_dir}"              # does not exist: the LocalProvider the daemon builds is never used
{regions}"""


def pool_sizes(total: int) -> dict[str, int]:
    sizes = {p[0]: int(total * p[1]) for p in POOLS}
    sizes[POOLS[0][0]] += total - sum(sizes.values())
    return sizes


def _inline(table: dict[str, float]) -> str:
    return "{ " + ", ".join(f'"{k}" = {v}' for k, v in table.items()) + " }"


def render_config(tmp: Path, nodes: int, max_cloud_nodes: int, budgets: dict[str, float]) -> str:
    sizes = pool_sizes(nodes)
    accounts = "".join(
        f"\n[accounts.{name}]\nzone = \"{zone}\"\n"
        + (f"budget_usd_month = {budgets.get(name, 1000)}\n" if factor is not None else "")
        + ("" if burst else "burst = false\n")
        for name, zone, factor, burst, _ in ACCOUNTS if name != "student")
    pools = "".join(
        f"\n[[pools]]\nname = \"{name}\"\nsize = {sizes[name]}\nzone = \"{zone}\"\ncpus = {cpus}\n"
        f"memory_mb = {mem}\ngpus = \"{gpus}\"\nspot = {'true' if spot else 'false'}\n"
        f"instance_types = {{ local = \"{itype}\" }}\n"
        for name, _, zone, cpus, mem, gpus, spot, itype in POOLS)
    regions = "".join(
        f"\n[[providers.local.regions]]\nname = \"{name}\"\ncountry = \"{country}\"\ncapacity = 2000\n"
        f"boot_seconds = 60\nprices = {_inline(prices)}\n" + (f"spot_prices = {_inline(spot)}\n" if spot else "")
        for name, country, prices, spot in REGIONS)
    return CONFIG.format(state_dir=tmp / "state", slurm_conf=tmp / "no-slurm.conf", lab_dir=tmp / "no-lab",
                         watched=json.dumps(list(WATCHED)), max_cloud_nodes=max_cloud_nodes,
                         accounts=accounts, pools=pools, regions=regions)


# --- Slurm output, scaled up from the captured fixtures -------------------------------------------

# (weight, tres_per_node, tres_per_job, tres_per_task, nodes, tasks, cpus, mem/cpu MB, mem/node MB)
# The GRES forms 22.05 writes: --gres=gpu:a100:4 and --gpus-per-node are tres_per_node
# "gres:gpu:[type:]N"; --gpus=N is tres_per_job; --gpus-per-task is tres_per_task.
SHAPES = [
    (20, "gres:gpu:a100:4", "", "", 1, 1, 32, 4000, None),
    (14, "gres:gpu:a100:8", "", "", 2, 2, 192, None, 900000),
    (6, "gres:gpu:a100:8", "", "", 4, 4, 384, None, 900000),
    (10, "gres:gpu:2", "", "", 1, 1, 8, 8000, None),
    (8, "gres:gpu:1", "", "", 2, 2, 2, 1000, None),            # the fixture's job 7 shape
    (8, "gres:gpu:h100:8", "", "", 1, 8, 96, None, 1500000),
    (10, "gres:gpu:l4:1", "", "", 1, 1, 4, 16000, None),
    (8, "", "gres:gpu:16", "", 2, 16, 64, 8000, None),
    (6, "", "", "gres:gpu:1", 1, 4, 4, 16000, None),
    (4, "gres:gpu:a100:16", "", "", 1, 1, 8, 4000, None),       # fits no pool (8 GPUs per node at most)
    (3, "gres:gpu:l4:4", "", "", 1, 1, 16, None, 500000),       # more memory than the l4 pool has
    (3, "", "", "", 1, 1, 16, 4000, None),                      # CPU-only job in the GPU partition
]
REASONS = [("Priority", 55), ("Resources", 17), ("Dependency", 12), ("JobHeldUser", 6),
           ("QOSMaxGRESPerUser", 4), ("AssocGrpGRES", 3), ("BeginTime", 3)]
FEATURES = [("", 84), ("onprem", 5), ("res_de", 5), ("a100", 3), ("res_eu&a100", 2), ("res_dach", 1)]


def _weighted(rng: random.Random, pairs):
    """One value of PAIRS, a list of (value, weight)."""
    return rng.choices([v for v, _ in pairs], weights=[w for _, w in pairs])[0]


def _shape(rng: random.Random):
    return rng.choices(SHAPES, weights=[s[0] for s in SHAPES])[0]


def _gpus_in(shape) -> int:
    _, per_node, per_job, per_task, nodes, tasks = shape[:6]
    for spec, mult in ((per_node, nodes), (per_job, 1), (per_task, tasks)):
        if spec:
            return int(spec.rsplit(":", 1)[1]) * mult
    return 0


def _job(template: dict, job_id: int, *, state: str, reason: str, partition: str, account: str, user: int,
         submit: int, shape, features: str = "", batch: bool = True, array: str | None = None,
         array_task: int | None = None, array_job: int = 0, nodes_alloc: str = "", start: int = 0) -> dict:
    j = copy.deepcopy(template)
    _, per_node, per_job, per_task, nodes, tasks, cpus, mem_cpu, mem_node = shape
    mem = (mem_node or (mem_cpu or 0) * cpus // max(nodes, 1)) * nodes
    gpus = _gpus_in(shape)
    j.update({
        "job_id": job_id, "job_state": state, "state_reason": reason, "partition": partition,
        "account": account, "user_name": f"u{user:04d}", "user_id": 10000 + user, "group_id": 10000 + user,
        "group_name": f"u{user:04d}", "name": f"train-{job_id % 997}",
        "command": f"/home/u{user:04d}/jobs/train-{job_id % 997}.sh",
        "current_working_directory": f"/home/u{user:04d}/jobs",
        "standard_output": f"/home/u{user:04d}/jobs/slurm-{job_id}.out",
        "standard_error": f"/home/u{user:04d}/jobs/slurm-{job_id}.out",
        "submit_time": submit, "eligible_time": submit if reason not in ("Dependency", "JobHeldUser") else 0,
        "accrue_time": submit if reason in ("Priority", "Resources") else 0,
        "priority": 0 if reason == "JobHeldUser" else 4294901759 - job_id % 100000,
        "tres_per_node": per_node, "tres_per_job": per_job, "tres_per_task": per_task,
        "node_count": nodes, "tasks": tasks, "cpus": cpus,
        "memory_per_cpu": mem_cpu, "memory_per_node": mem_node,
        "minimum_cpus_per_node": -(-cpus // nodes),
        "tres_req_str": f"cpu={cpus},mem={mem}M,node={nodes},billing={cpus}"
                        + (f",gres/gpu={gpus}" if gpus else ""),
        "features": features, "batch_flag": batch, "time_limit": 2880 if partition.startswith("gpu-long") else 720,
        "array_job_id": array_job, "array_task_id": array_task, "array_task_string": array or "",
        "nodes": nodes_alloc, "start_time": start,
    })
    if state == "RUNNING":
        j["batch_host"] = nodes_alloc.split(",")[0]
        j["tres_alloc_str"] = j["tres_req_str"]
        if j.get("job_resources"):
            j["job_resources"]["nodes"] = nodes_alloc
            for n in j["job_resources"].get("allocated_nodes", []):
                n["nodename"] = j["batch_host"]
    return j


def build_squeue(rng: random.Random, templates: dict, now: int, pending: int, eligible_nodes: int,
                 running_cloud: list[tuple[str, str]], burst_parts: dict[str, str]) -> tuple[dict, dict]:
    """The squeue --json document: PENDING jobs (the first ones already eligible, holding ELIGIBLE_NODES
    cloud nodes between them), jobs running on-prem and on the cloud nodes, and recently completed ones."""
    jobs, stats = [], {"pending": 0, "already_eligible_jobs": 0, "already_eligible_nodes": 0,
                       "running": 0, "completed": 0, "array_records": 0}
    next_id = 100_000
    accounts = [(a[0], a[4]) for a in ACCOUNTS]
    fitting = {"a100-de": "gres:gpu:a100:4", "a100-eu": "gres:gpu:a100:4", "h100-eu": "gres:gpu:h100:8",
               "l4-any": "gres:gpu:l4:1"}
    pools = list(burst_parts)
    # Completed within MinJobAge: squeue still lists them.
    for _ in range(100):
        jobs.append(_job(templates["completed"], next_id, state="COMPLETED", reason="None", partition="gpu",
                         account=_weighted(rng, accounts), user=rng.randrange(400), submit=now - rng.randrange(900, 4000),
                         shape=SHAPES[0], nodes_alloc=f"gpu-{rng.randrange(ONPREM_NODES)}", start=now - 800))
        next_id += 1
    # Running on-prem, one job per node.
    for n in range(ONPREM_NODES):
        jobs.append(_job(templates["running"], next_id, state="RUNNING", reason="None", partition="gpu",
                         account=_weighted(rng, accounts), user=rng.randrange(400),
                         submit=now - rng.randrange(3600, 3 * 86400), shape=SHAPES[0], nodes_alloc=f"gpu-{n}",
                         start=now - rng.randrange(60, 86400)))
        next_id += 1
    # Running in the cloud: one job on each allocated cloud node, in its burst partition.
    for node, pool in running_cloud:
        shape = next(s for s in SHAPES if s[1] == fitting[pool])
        jobs.append(_job(templates["running"], next_id, state="RUNNING", reason="None",
                         partition=burst_parts[pool], account=_weighted(rng, accounts), user=rng.randrange(400),
                         submit=now - rng.randrange(3600, 3 * 86400), shape=shape, nodes_alloc=node,
                         start=now - rng.randrange(60, 86400)))
        next_id += 1
    stats["running"] = ONPREM_NODES + len(running_cloud)
    stats["completed"] = 100
    # Pending: first the already-eligible ones, until they hold ELIGIBLE_NODES nodes.
    held = 0
    while stats["pending"] < pending:
        eligible = held < eligible_nodes
        shape = _shape(rng)
        if eligible:
            shape = next(s for s in SHAPES if s[1] == "gres:gpu:a100:4") if rng.random() < 0.7 else \
                next(s for s in SHAPES if s[1] == "gres:gpu:a100:8" and s[4] == 2)
            shape = shape if held + shape[4] <= eligible_nodes else SHAPES[0]
        template = templates["pending"][rng.randrange(len(templates["pending"]))]
        reason = rng.choice(("Resources", "Priority")) if eligible else _weighted(rng, REASONS)
        own = rng.choices(WATCHED, weights=(85, 15))[0]
        partition = own
        if eligible:
            partition = ",".join([own] + [burst_parts[p] for p in rng.sample(pools[:2], rng.choice((1, 2)))])
        # 10 % were submitted less than burst_after (600 s) ago; the rest up to 3 days ago.
        age = rng.randrange(0, 600) if rng.random() < 0.10 and not eligible else rng.randrange(600, 3 * 86400)
        array = task = None
        array_job = 0
        r = rng.random()
        if r < 0.06:                 # a pending array's meta record, as the fixture's job 7
            array, array_job = f"0-{rng.choice((9, 49, 99, 499))}%{rng.choice((4, 8, 16))}", next_id
            stats["array_records"] += 1
        elif r < 0.12:               # one split-off task of an array
            array_job, task = next_id - rng.randrange(1, 50), rng.randrange(0, 100)
        features = "" if eligible else _weighted(rng, FEATURES)
        jobs.append(_job(template, next_id, state="PENDING", reason=reason, partition=partition,
                         account=_weighted(rng, accounts), user=rng.randrange(400), submit=now - age, shape=shape,
                         features=features, batch=eligible or rng.random() > 0.02, array=array,
                         array_task=task, array_job=array_job))
        stats["pending"] += 1
        if eligible:
            held += shape[4]
            stats["already_eligible_jobs"] += 1
            stats["already_eligible_nodes"] += shape[4]
        next_id += 1
    # squeue lists by job id, not by submit time: mix them a little as slurmctld's job list does.
    rng.shuffle(jobs)
    jobs.sort(key=lambda j: j["job_id"] // 64)
    doc = json.loads((FIXTURES / "squeue.json").read_text())
    doc["jobs"] = jobs
    return doc, stats


def build_sinfo(rng: random.Random, cfg, templates: dict, now: int, active: dict[str, dict],
                down_nodes: set[str]) -> dict:
    """sinfo --json: on-prem nodes, then every pool node in the state its DB row implies."""
    from slurm_bridge import nodestate, selector

    nodes = []
    for n in range(ONPREM_NODES):
        rec = copy.deepcopy(templates["onprem"])
        rec.update({"name": f"gpu-{n}", "hostname": f"gpu-{n}", "address": f"10.20.{n // 250}.{n % 250 + 1}",
                    "state": "allocated", "alloc_cpus": rec["cpus"], "idle_cpus": 0,
                    "partitions": ["gpu", "gpu-long"]})
        nodes.append(rec)
    for pool in cfg.pools:
        gpus = f"gpu:{pool.gpu_type}:{pool.gpu_count}"
        powered_down = nodestate.pool_wide_features(cfg, f"{pool.name}-0")
        for name in pool.node_names:
            rec = copy.deepcopy(templates["cloud"])
            rec.update({"name": name, "hostname": name, "address": name, "partitions": [pool.partition],
                        "cpus": pool.cpus, "sockets": pool.cpus, "idle_cpus": pool.cpus,
                        "real_memory": pool.memory_mb, "gres": gpus,
                        "gres_used": f"gpu:{pool.gpu_type}:0(IDX:N/A)",
                        "tres": f"cpu={pool.cpus},mem={pool.memory_mb}M,billing={pool.cpus},gres/gpu={pool.gpu_count}",
                        "features": ",".join(powered_down), "active_features": ",".join(powered_down)})
            row = active.get(name)
            if row is not None:
                country = selector.country_of(cfg, "local", row["region"])
                feats = ",".join(nodestate.running_features(cfg, name, country))
                state, flags = {"running": (row["slurm_state"], ["CLOUD"]),
                                "launching": ("allocated", ["CLOUD", "POWERING_UP"]),
                                "terminating": ("idle", ["CLOUD", "POWERING_DOWN"])}[row["state"]]
                rec.update({"state": state, "state_flags": flags, "address": row["address"],
                            "comment": f"local/{row['region']}/{row['instance_id']}",
                            "features": feats, "active_features": feats,
                            "boot_time": int(row["launched_at"]) + 60, "slurmd_start_time": int(row["launched_at"]) + 60,
                            "last_busy": now - rng.randrange(0, 600)})
                if state in ("allocated", "mixed"):
                    rec.update({"alloc_cpus": pool.cpus, "idle_cpus": 0, "alloc_memory": pool.memory_mb // 2})
            elif name in down_nodes:    # down~ after a failed launch: reconcile returns it to the pool
                rec.update({"state": "down", "state_flags": ["CLOUD", "POWERED_DOWN"],
                            "reason": "slurm-bridge: no launchable region inside the job's zone",
                            "reason_changed_at": now - 3000})
            nodes.append(rec)
    doc = json.loads((FIXTURES / "sinfo_cloud.json").read_text())
    doc["nodes"] = nodes
    return doc


def _limit(minutes: int | None) -> str:
    if not minutes:
        return "UNLIMITED"
    d, rest = divmod(minutes * 60, 86400)
    h, m = divmod(rest // 60, 60)
    return f"{d}-{h:02d}:{m:02d}:00" if d else (f"{h}:{m:02d}:00" if h else f"{m}:00")


def pending_text(doc: dict, partitions: set[str]) -> str:
    """What `squeue --Format=<pending.FORMAT>` prints for the pending jobs in PARTITIONS, field by field
    as captured in tests/fixtures/slurm-22.05.8/squeue_pending.txt (N/A and (null) for unset fields)."""
    out = []
    for j in doc["jobs"]:
        if j["job_state"] != "PENDING" or not partitions & set(j["partition"].split(",")):
            continue
        task = j["array_task_id"] if j["array_task_id"] is not None else (j["array_task_string"] or "N/A")
        fields = [j["job_id"], j["array_job_id"] or j["job_id"], task, j["partition"], j["user_name"], j["account"],
                  "PENDING", j["state_reason"],
                  time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(j["submit_time"])),
                  _limit(j["time_limit"]), j["node_count"], j["cpus"], j["tasks"], j["tres_req_str"],
                  j["tres_per_node"] or "N/A", j["tres_per_job"] or "N/A", j["tres_per_task"] or "N/A",
                  int(bool(j["batch_flag"])), int(bool(j.get("requeue", True))), j["features"] or "(null)",
                  j["name"]]
        out.append("\t".join(str(f) for f in fields))
    return "\n".join(out) + "\n"


def sinfo_text(doc: dict) -> str:
    """What `sinfo --Format=<node_text.FORMAT>` prints for these nodes, one line per node and partition,
    field by field as captured in tests/fixtures/slurm-22.05.8/sinfo_nodes.txt."""
    out = []
    for n in doc["nodes"]:
        state = "+".join([n["state"].lower()] + [f.lower() for f in n.get("state_flags") or []])
        for part in n["partitions"] or ["(null)"]:
            fields = [n["name"], state, n["features"] or "(null)", n["active_features"] or "(null)", n["address"],
                      n["hostname"], part, n["gres"] or "(null)", n["cpus"], n["real_memory"],
                      n.get("comment") or "(null)", n.get("reason") or "none"]
            out.append("\t".join(str(f) for f in fields))
    return "\n".join(out) + "\n"


# --- the state DB ---------------------------------------------------------------------------------

def fill_db(rng: random.Random, cfg, now: int, active_plan: list[tuple[str, str, str]], history: int) -> dict:
    """Active rows (one per active node) and HISTORY closed rows, with their requests and events.

    Written with plain executemany in a few transactions: the per-row API would take minutes, and only
    the content matters to the cycle. The schema is the one StateDB itself creates and migrates.
    """
    from slurm_bridge.state import StateDB

    StateDB.open(cfg.cluster.state_dir).close()
    path = cfg.cluster.state_dir / "state.db"
    conn = sqlite3.connect(str(path))
    conn.execute("PRAGMA journal_mode = WAL")
    regions_of = {}
    for pool in cfg.pools:
        regions_of[pool.name] = [r for r in cfg.local_regions if pool.zone.contains(r.country)
                                 and pool.instance_types["local"] in r.prices]
    price = {(r.name, t): (r.spot_prices.get(t) or p) for r in cfg.local_regions for t, p in r.prices.items()}
    accounts = [(a[0], a[4]) for a in ACCOUNTS if a[3]]
    req_rows, inst_rows, ev_rows = [], [], []
    active: dict[str, dict] = {}
    req_id = 0

    def request(kind, nodes, at):
        nonlocal req_id
        req_id += 1
        hostlist = ",".join(nodes)
        req_rows.append((req_id, kind, hostlist, json.dumps(nodes), None, at, "done", at + rng.uniform(5, 90),
                         None, 4000 + req_id % 30000))
        return req_id

    def event(ts, kind, node, job_id, request_id, **data):
        ev_rows.append((ts, kind, node, job_id, request_id, json.dumps(data, sort_keys=True)))

    # History: closed rows over the last 60 days, in requests of 1-8 nodes.
    pools = [p for p in cfg.pools]
    sizes = [p.size for p in pools]
    i = 0
    while i < history:
        pool = rng.choices(pools, weights=sizes)[0]
        k = min(rng.choice((1, 1, 2, 4, 8)), history - i)
        start = now - rng.uniform(600, 60 * 86400)
        nodes = [f"{pool.name}-{rng.randrange(pool.size)}" for _ in range(k)]
        rid = request("resume", nodes, start)
        job_id = rng.randrange(10_000, 99_999)
        account = _weighted(rng, accounts)
        region = rng.choice(regions_of[pool.name])
        itype = pool.instance_types["local"]
        event(start - 30, "burst", None, job_id, None, pools=[pool.name], partitions=["gpu", pool.partition])
        failed = rng.random() < 0.03
        end = start + rng.uniform(1800, 30 * 3600)
        for node in nodes:
            token = f"{rid}-{node}-{rng.getrandbits(32):08x}"
            iid = None if failed else f"i-{rng.getrandbits(64):016x}"
            state = "failed" if failed else "terminated"
            inst_rows.append((node, pool.name, "local", region.name, None, itype, price[(region.name, itype)],
                              int(pool.spot), json.dumps([job_id]), rid, token, iid,
                              None if failed else f"10.{rng.randrange(64, 128)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
                              state, None if failed else start + 20, None if failed else start + 90,
                              start + 25 if failed else end, "capacity: no capacity left" if failed else None,
                              start, end, account))
            if failed:
                event(start + 25, "launch_failed", None, job_id, rid, nodes=[node], error="capacity")
            else:
                event(start + 20, "launched", node, job_id, rid, provider="local", region=region.name,
                      country=region.country, instance_id=iid, price_per_hour=price[(region.name, itype)])
                event(start + 90, "running", node, None, None)
                event(end, "terminated", node, None, None, provider="local", region=region.name, instance_id=iid)
        if not failed:
            request("suspend", nodes, end - 1)
        i += k

    # Active rows: what runs now, one per active node; the rows' ids are the listing's.
    for node, pool_name, state in active_plan:
        pool = cfg.pool(pool_name)
        region = rng.choice([r for r in regions_of[pool_name] if r.name != BLOCKED_REGION] or regions_of[pool_name])
        itype = pool.instance_types["local"]
        launched = now - (rng.uniform(30, 200) if state == "launching" else rng.uniform(900, 5 * 86400))
        rid = request("resume", [node], launched - 20)
        job_id = rng.randrange(100_000, 160_000)
        iid = f"i-{rng.getrandbits(64):016x}"
        address = f"10.{128 + rng.randrange(64)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        updated = now - 30 if state == "terminating" else launched + 90
        inst_rows.append((node, pool_name, "local", region.name, None, itype, price[(region.name, itype)],
                          int(pool.spot), json.dumps([job_id]), rid, f"{rid}-{node}-{rng.getrandbits(32):08x}",
                          iid, address, state, launched, None if state == "launching" else launched + 90,
                          None, None, launched - 20, updated, _weighted(rng, accounts)))
        event(launched, "launched", node, job_id, rid, provider="local", region=region.name,
              country=region.country, instance_id=iid, price_per_hour=price[(region.name, itype)])
        active[node] = {"region": region.name, "instance_id": iid, "address": address, "state": state,
                        "launched_at": launched, "itype": itype, "pool": pool_name,
                        "slurm_state": rng.choices(("allocated", "mixed", "idle"), weights=(80, 10, 10))[0],
                        "token": inst_rows[-1][10]}
    with conn:
        conn.executemany("INSERT INTO requests (id, kind, hostlist, nodes_json, resume_file_json, received_at, "
                         "state, finished_at, error, worker_pid) VALUES (?,?,?,?,?,?,?,?,?,?)", req_rows)
        conn.executemany("INSERT INTO instances (node, pool, provider, region, zone, instance_type, price_per_hour, "
                         "spot, job_ids_json, request_id, client_token, instance_id, address, state, launched_at, "
                         "running_at, terminated_at, error, created_at, updated_at, account) "
                         "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", inst_rows)
        ev_rows.sort(key=lambda e: e[0])
        conn.executemany("INSERT INTO events (ts, kind, node, job_id, request_id, data_json) VALUES (?,?,?,?,?,?)",
                         ev_rows)
        for k in range(30):     # expired blocks, and one active one
            t = now - rng.uniform(3600, 30 * 86400)
            conn.execute("INSERT INTO blocks (provider, region, zone, scope, kind, reason, created_at, until) "
                         "VALUES ('local', ?, NULL, 'region', 'capacity', 'capacity: no capacity left', ?, ?)",
                         (rng.choice(REGIONS)[0], t, t + 600))
        conn.execute("INSERT INTO blocks (provider, region, zone, scope, kind, reason, created_at, until) "
                     "VALUES ('local', ?, NULL, 'region', 'capacity', 'capacity: no capacity left', ?, ?)",
                     (BLOCKED_REGION, now - 60, now + 7 * 86400))
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return {"active": active, "rows": len(inst_rows), "requests": len(req_rows), "events": len(ev_rows),
            "mb": round(path.stat().st_size / 2**20, 1)}


# --- setup (parent) ---------------------------------------------------------------------------------

def setup(tmp: Path, jobs: int, nodes: int, history: int, headroom: int) -> dict:
    from slurm_bridge.config import load_config
    from slurm_bridge.state import StateDB

    rng = random.Random(SEED)
    now = int(time.time())
    squeue_fixture = json.loads((FIXTURES / "squeue.json").read_text())
    sinfo_fixture = json.loads((FIXTURES / "sinfo_cloud.json").read_text())
    by_state = {"pending": [j for j in squeue_fixture["jobs"] if j["job_state"] == "PENDING"],
                "running": next(j for j in squeue_fixture["jobs"] if j["job_state"] == "RUNNING"),
                "completed": next(j for j in squeue_fixture["jobs"] if j["job_state"] == "COMPLETED"),
                "cloud": next(n for n in sinfo_fixture["nodes"] if "CLOUD" in n["state_flags"]),
                "onprem": next(n for n in sinfo_fixture["nodes"] if "CLOUD" not in n["state_flags"])}
    # 40 % of the cloud nodes have an instance: 38 % up, 1.2 % powering up, 0.8 % powering down.
    n_active = round(nodes * 0.40)
    n_launching, n_terminating = round(nodes * 0.012), round(nodes * 0.008)
    max_cloud_nodes = nodes     # every pool node may be used
    path = tmp / "bridge.toml"
    path.write_text(render_config(tmp, nodes, max_cloud_nodes, {}))
    cfg = load_config(path)
    assert sum(p.size for p in cfg.pools) == nodes
    # Active nodes: the first ones of each pool, in proportion to its size.
    plan: list[tuple[str, str, str]] = []
    for pool in cfg.pools:
        share = round(n_active * pool.size / nodes)
        for i in range(share):
            plan.append((f"{pool.name}-{i}", pool.name, "running"))
    for k, idx in enumerate(rng.sample(range(len(plan)), n_launching + n_terminating)):
        plan[idx] = (plan[idx][0], plan[idx][1], "launching" if k < n_launching else "terminating")
    db = fill_db(rng, cfg, now, plan, history)
    with StateDB.open(cfg.cluster.state_dir) as sdb:
        spend = sdb.spend_by_account(policy.month_start(now), now)
    budgets = {name: round(spend.get(name, 0.0) * factor, -3) or 1000.0
               for name, _, factor, _, _ in ACCOUNTS if factor is not None}
    path.write_text(render_config(tmp, nodes, max_cloud_nodes, budgets))
    active = db.pop("active")
    down = {f"{p.name}-{p.size - 1}" for p in cfg.pools[:3]}     # 3 down~ nodes
    running_cloud = [(n, r["pool"]) for n, r in active.items()
                     if r["state"] == "running" and r["slurm_state"] in ("allocated", "mixed")]
    # The queue holds the pools nearly full: active rows plus already-eligible pending jobs leave
    # HEADROOM nodes under max_cloud_nodes, so each cycle bursts a few jobs and keeps the rest.
    eligible_nodes = max(0, max_cloud_nodes - len(active) - headroom)
    squeue, qstats = build_squeue(rng, by_state, now, jobs, eligible_nodes, running_cloud,
                                  {p.name: p.partition for p in cfg.pools})
    sinfo = build_sinfo(rng, cfg, by_state, now, active, down)
    parts = set(WATCHED) | {p.partition for p in cfg.pools}
    (tmp / "squeue_pending.txt").write_text(pending_text(squeue, parts))
    squeue_argv = pending.argv([*WATCHED, *sorted({p.partition for p in cfg.pools})])
    (tmp / "sinfo.txt").write_text(sinfo_text(sinfo))
    sinfo_argv = node_text.argv([n for p in cfg.pools for n in p.node_names])
    listing = [{"instance_id": r["instance_id"], "node": n, "region": r["region"],
                "state": {"launching": "pending"}.get(r["state"], "running"), "address": r["address"],
                "instance_type": r["itype"], "launched_at": r["launched_at"], "pool": r["pool"], "token": r["token"]}
               for n, r in active.items()]
    (tmp / "listing.json").write_text(json.dumps(listing))
    return {"config": str(path), "now": now, "squeue": str(tmp / "squeue_pending.txt"), "squeue_argv": squeue_argv,
            "sinfo": str(tmp / "sinfo.txt"), "sinfo_argv": sinfo_argv,
            "listing": str(tmp / "listing.json"),
            "fixture": {"pending_jobs": qstats["pending"], "running_jobs": qstats["running"],
                        "completed_jobs": qstats["completed"], "array_records": qstats["array_records"],
                        "already_eligible_jobs": qstats["already_eligible_jobs"],
                        "already_eligible_nodes": qstats["already_eligible_nodes"],
                        "squeue_text_mb": round((tmp / "squeue_pending.txt").stat().st_size / 2**20, 1),
                        "sinfo_nodes": len(sinfo["nodes"]), "cloud_nodes": nodes,
                        "sinfo_text_mb": round((tmp / "sinfo.txt").stat().st_size / 2**20, 1),
                        "pools": {p.name: p.size for p in cfg.pools}, "regions": len(cfg.local_regions),
                        "active_rows": len(active),
                        "active_by_state": {s: sum(1 for r in active.values() if r["state"] == s)
                                            for s in ("running", "launching", "terminating")},
                        "down_nodes": len(down), "max_cloud_nodes": max_cloud_nodes, "headroom": headroom,
                        **{f"db_{k}": v for k, v in db.items()}}}


