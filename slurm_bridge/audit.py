"""`slurm-bridge audit residency`: re-derive after the fact where every cloud job ran.

From sacct (which nodes, when, with which account, partition and constraint)
and the state DB (which instance each node was, in which region, when), every
job that ran on a cloud node is checked against its allowed zone. This does
not trust node features or the selector: it is the independent proof.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime

from . import residency
from .config import Config
from .models import AccountingRecord
from .selector import country_of
from .slurm.hostlists import HostlistError, expand
from .state import InstanceRow


@dataclass(frozen=True)
class Placement:
    job: str
    account: str
    partition: str
    node: str
    provider: str
    region: str
    country: str
    zone: str            # the job's allowed countries, "*" for anywhere
    ok: bool
    why: str = ""

    def to_json(self) -> dict:
        return asdict(self)


def _country(cfg: Config, row: InstanceRow) -> str | None:
    return country_of(cfg, row.provider, row.region)


def _covering(rows: list[InstanceRow], start: float, end: float) -> InstanceRow | None:
    """The instance that was that node while the job ran on it."""
    for row in rows:
        began = row.launched_at or row.created_at
        ended = row.terminated_at if row.terminated_at is not None else float("inf")
        if began <= start + 1 and end <= ended + 1:   # sacct times are whole seconds
            return row
    return None


def audit(cfg: Config, records: list[AccountingRecord], instances: list[InstanceRow]) -> list[Placement]:
    cloud_nodes = {n for p in cfg.pools for n in p.node_names}
    by_node: dict[str, list[InstanceRow]] = {}
    for row in instances:
        if row.state != "failed":
            by_node.setdefault(row.node, []).append(row)
    out: list[Placement] = []
    for rec in records:
        if not rec.nodes or rec.start is None:
            continue
        try:
            nodes = expand(rec.nodes)
        except HostlistError:
            nodes = []
        zone = residency.job_zone(cfg, rec.account, rec.partition.split(","), rec.constraints)
        zone_text = "*" if zone.countries is None else ",".join(sorted(zone.countries)) or "(none)"
        start = rec.start.timestamp()
        end = (rec.end or datetime.now(rec.start.tzinfo)).timestamp()
        for node in nodes:
            if node not in cloud_nodes:
                continue
            row = _covering(by_node.get(node, []), start, end)
            base = dict(job=rec.job_id_str, account=rec.account, partition=rec.partition, node=node, zone=zone_text)
            if row is None:
                out.append(Placement(**base, provider="?", region="?", country="?", ok=False,
                                     why="no instance recorded for this node at that time"))
                continue
            country = _country(cfg, row)
            if country is None:
                out.append(Placement(**base, provider=row.provider, region=row.region, country="?", ok=False,
                                     why="region's country unknown"))
            elif not zone.contains(country):
                out.append(Placement(**base, provider=row.provider, region=row.region, country=country,
                                     ok=False, why=f"{country} is outside the job's zone"))
            else:
                out.append(Placement(**base, provider=row.provider, region=row.region, country=country, ok=True))
    return out
