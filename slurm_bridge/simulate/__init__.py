"""`slurm-bridge simulate`: replay a job trace through on-prem nodes and cloud pools, per strategy.

    result = run(trace.jobs, cfg, "policy", onprem_gpus=1024, seed=1)

The simulator drives the same logic the daemon and the resume program run (`policy.Policy.decide`,
`selector.rank`, `residency.job_zone`) and prices the cloud ledger with `costs.attribute`, so a
what-if differs from production in the cluster model only (see onprem.py and cloud.py).
"""

from __future__ import annotations

import time
from typing import Sequence

from ..config import Config
from ..prices import PriceBook, book_for
from ..traces import TraceJob
from .cloud import Capacity
from .engine import EPOCH, Engine, Progress
from .result import SimResult, build, percentile
from .strategies import STRATEGIES, THRESHOLDS, Strategy, make

__all__ = ["EPOCH", "STRATEGIES", "THRESHOLDS", "Capacity", "SimResult", "Strategy", "make", "percentile", "run"]


def run(trace_jobs: Sequence[TraceJob], cfg: Config, strategy: str | Strategy, *, onprem_gpus: int,
        gpus_per_node: int = 8, seed: int = 0, capacity: Capacity | None = None, book: PriceBook | None = None,
        partition: str | None = None, gpu_type: str | None = None,
        progress: Progress | None = None) -> SimResult:
    """Simulate TRACE_JOBS under STRATEGY (a name from STRATEGIES, threshold:<s>, or a Strategy).

    ONPREM_GPUS are on-prem GPUs in nodes of GPUS_PER_NODE. BOOK prices AWS and GCP regions (default:
    the config's [prices] overrides). PARTITION, when given, is every job's partition instead of the
    trace's (an SWF queue number means nothing to this config); jobs with none get the first watched
    one. GPU_TYPE is the type every GPU job asks for (default: any). PROGRESS(done, total) is called
    about every 1% of jobs finished. The same arguments and SEED give the same result.
    """
    started = time.perf_counter()
    book = book if book is not None else book_for(cfg.price_overrides)
    chosen = strategy if isinstance(strategy, Strategy) else make(strategy, cfg, book)
    sim = Engine(trace_jobs, cfg, chosen, onprem_gpus=onprem_gpus, gpus_per_node=gpus_per_node, seed=seed,
                 capacity=capacity, book=book, partition=partition, gpu_type=gpu_type, progress=progress)
    sim.run()
    return build(sim, chosen.name, started)
