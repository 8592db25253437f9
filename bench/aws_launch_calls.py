"""How many EC2 API calls, and how long, the AWS provider takes to launch N nodes in one region.

Run (from the repository root):

    .venv/bin/python bench/aws_launch_calls.py [--nodes 1000] [--repeat 1] [--json]

Each round starts a fresh local moto server (tests/moto_server.py: fake
credentials, one VPC with two subnets, one AMI, the launch template), then
times `AwsProvider.launch` of N on-demand nodes of one pool and job in one
region with time.perf_counter(), and counts the API calls it made by
operation (botocore's `before-call` event) and the HTTP attempts
(`before-send`; more than calls only when botocore retried). It also sums the
time spent inside each operation: CreateTags calls overlap (a small thread
pool), so their sum exceeds their share of the wall time.

moto runs in this process and is slow per request (about 10 ms of its own
dispatch, plus a scan of every tag in the region for each instance it
describes), so the wall time is moto's far more than the provider's: the call
counts are the figures that carry over to AWS.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from moto_server import launch_request, running_moto


def one_round(nodes: int) -> dict:
    with running_moto() as cloud:
        region = "eu-central-1"
        provider = cloud.provider(regions=(region,))
        client = provider.client(region)
        calls: Counter = Counter()
        attempts: Counter = Counter()
        busy: dict[str, float] = defaultdict(float)
        started: dict[int, float] = {}

        def before(model, context, **_):
            calls[model.name] += 1
            started[id(context)] = time.perf_counter()

        def after(model, context, **_):
            busy[model.name] += time.perf_counter() - started.pop(id(context), time.perf_counter())

        def send(**_):
            attempts["http"] += 1

        client.meta.events.register("before-call.ec2", before)
        client.meta.events.register("after-call.ec2", after)
        client.meta.events.register("before-send.ec2", send)
        t0 = time.perf_counter()
        result = provider.launch(launch_request("bench", nodes, region=region))
        wall = time.perf_counter() - t0
        assert result.complete and len(result.launched) == nodes, result.failed
        return {"nodes": nodes, "wall_s": round(wall, 2), "calls": dict(calls),
                "http_attempts": sum(attempts.values()),
                "seconds_in_calls": {k: round(v, 2) for k, v in busy.items()}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--json", action="store_true", help="print the raw rounds as JSON")
    args = ap.parse_args()
    meta = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "python": platform.python_version(),
            "machine": platform.machine(), "cpus": len(os.sched_getaffinity(0))}
    rounds = [one_round(args.nodes) for _ in range(args.repeat)]
    if args.json:
        print(json.dumps({"meta": meta, "rounds": rounds}, indent=1))
        return 0
    print(f"{meta['date']}  python {meta['python']}  {meta['machine']}  {meta['cpus']} cpus")
    for r in rounds:
        c = r["calls"]
        print(f"{r['nodes']} nodes: {r['wall_s']:.2f} s wall; CreateFleet {c.get('CreateFleet', 0)}, "
              f"CreateTags {c.get('CreateTags', 0)}, DescribeInstances {c.get('DescribeInstances', 0)}, "
              f"other {sum(v for k, v in c.items() if k not in ('CreateFleet', 'CreateTags', 'DescribeInstances'))}; "
              f"HTTP attempts {r['http_attempts']}")
        print("  seconds inside calls: " + ", ".join(f"{k} {v:.2f}" for k, v in sorted(r["seconds_in_calls"].items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
