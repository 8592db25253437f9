"""Cost reports on a real state DB: the ledger from instance rows, job runs from sacct records, every format.

The Slurm side here is a stand-in for sacct (it returns AccountingRecords or raises as a down slurmdbd
makes sacct fail); the real sacct path is covered by tests/test_cost_lab.py on the lab.
"""

from __future__ import annotations

import csv
import io
import json
import tomllib
from datetime import datetime, timezone
from decimal import Decimal
from html.parser import HTMLParser

import pytest

from configs import EXAMPLE
from slurm_bridge import accounting, costreport, job_runs
from slurm_bridge.config import parse_config
from slurm_bridge.errors import SlurmError
from slurm_bridge.models import AccountingRecord
from slurm_bridge.state import StateDB

ONPREM = ("\n[cost.onprem]\ncapex_per_gpu_usd = 26298\namortisation_years = 3\npower_kw_per_gpu = 0.5\n"
          "pue = 1.2\nusd_per_kwh = 0.25\nops_usd_per_gpu_year = 0\ngpus = 8\n")


def t(s: float) -> datetime:
    return datetime.fromtimestamp(s, tz=timezone.utc)


def record(job_id, account, nodes, gpus, start, end, state="COMPLETED") -> AccountingRecord:
    return AccountingRecord(job_id=job_id, job_id_str=str(job_id), array_job_id=None, array_task_id=None,
                            name="j", user="ada", account=account, partition="gpu", cluster="hpc1", state=state,
                            nodes=nodes, alloc_tres={"cpu": 1, "gres/gpu": gpus, "billing": 1, "node": 1},
                            submit=t(start - 100), start=t(start), end=None if end is None else t(end))


@pytest.fixture
def env(tmp_path):
    cfg = parse_config(tomllib.loads(EXAMPLE.replace("/var/lib/slurm-bridge", str(tmp_path / "state")) + ONPREM))
    with StateDB.open(cfg.cluster.state_dir) as db:
        # Instance A on a100-de-0, 36 USD/h (0.01 USD/s), 1,000 -> 5,000 s, started for job 101.
        a = db.begin_launch(node="a100-de-0", pool="a100-de", provider="local", region="lab-de", zone=None,
                            instance_type="lab-a100x8", price_per_hour=36.0, spot=False, job_ids=[101],
                            request_id=None, client_token="a", account="medical", now=990.0)
        db.launched(a, "i-a", now=1000.0)
        db.terminated(a, now=5000.0)
        # Instance B existed 1,000 -> 1,300 s and failed (never joined Slurm); started for job 102.
        b = db.begin_launch(node="a100-de-1", pool="a100-de", provider="local", region="lab-de", zone=None,
                            instance_type="lab-a100x8", price_per_hour=36.0, spot=False, job_ids=[102],
                            request_id=None, client_token="b", account="lab", now=990.0)
        db.launched(b, "i-b", now=1000.0)
        db.launch_failed(b, "boot: never registered", now=1300.0)
        yield cfg, db


class Sacct:
    """Stands in for sacct: returns the records, or fails as sacct does while slurmdbd is down."""

    def __init__(self, records, down=False):
        self.records, self.down, self.calls = records, down, []

    def accounting(self, *, since, until=None, job_ids=None, runs=False):
        self.calls.append((since, until, runs))
        if self.down:
            raise SlurmError("sacct --json -a: exit 1: Problem talking to the database: Connection refused")
        return list(self.records)


RECORDS = [record(101, "medical", "a100-de-0", 1, 1100, 2900), record(102, "lab", "a100-de-0", 3, 2000, 3800),
           record(103, "lab", "gpu-0", 2, 1000, 4600), record(104, "lab", "None assigned", 0, 0, 0, "CANCELLED")]


def test_job_costs_and_overhead_add_up_to_the_ledger_by_hand(env):
    cfg, db = env
    RECORDS[3] = AccountingRecord(**{**RECORDS[3].__dict__, "nodes": "", "start": None})
    assert accounting.ingest(db, Sacct(RECORDS), now=6000.0).changed == 3     # 104 never ran
    data = costreport.report(cfg, db, 0.0, 10_000.0, "job", now=6000.0)
    jobs = {j["job"]: j for j in data["jobs"]}
    # A: boot 1,000-1,100 (1.00, overhead of 101, whose resume started it); 1,100-2,000 job 101 alone
    # (9.00); 2,000-2,900 both, shared 1:3 by GPUs (2.25 and 6.75); 2,900-3,800 job 102 alone (9.00);
    # idle 3,800-5,000 until suspend (12.00, overhead of 101). B: 300 s failed (3.00, overhead of 102).
    assert jobs["101"]["run_usd"] == Decimal("11.25") and jobs["101"]["overhead_usd"] == Decimal("13.00")
    assert jobs["102"]["run_usd"] == Decimal("15.75") and jobs["102"]["overhead_usd"] == Decimal("3.00")
    assert data["totals"]["cloud_usd"] == Decimal("43.00")
    assert sum(j["total_usd"] for j in jobs.values()) == data["totals"]["cloud_usd"]
    # On-prem: job 103, 2 GPUs x 1 h at (26,298 / 3 / 8,766 + 0.5 x 1.2 x 0.25) = 1.15 USD per GPU-hour.
    assert jobs["103"]["onprem_usd"] == Decimal("2.30") and jobs["103"]["total_usd"] == Decimal("0.00")
    assert jobs["101"]["regions"] == ["lab-de"]


def test_grouped_rows_add_up_and_every_format_carries_the_same_numbers(env):
    cfg, db = env
    accounting.ingest(db, Sacct(RECORDS[:3]), now=6000.0)
    data = costreport.report(cfg, db, 0.0, 10_000.0, "account", now=6000.0)
    rows = {r["key"]: r for r in data["rows"]}
    assert rows["medical"]["spend_usd"] == Decimal("24.25") and rows["lab"]["spend_usd"] == Decimal("18.75")
    assert rows["lab"]["onprem_gpu_hours"] == 2.0
    table = costreport.render(data, "table")
    assert "24.25" in table and "43.00" in table and "medical" in table
    parsed = list(csv.DictReader(io.StringIO(costreport.render(data, "csv"))))
    assert {r["key"]: r["spend_usd"] for r in parsed} == {"medical": "24.25", "lab": "18.75"}
    js = json.loads(costreport.render(data, "json"))
    assert sum(Decimal(str(r["spend_usd"])) for r in js["rows"]) == Decimal(str(js["totals"]["cloud_usd"]))
    assert js["budgets"][0]["account"] == "medical"
    html = costreport.render(data, "html")
    svgs = html.count("<svg")
    assert svgs == 3 and "http://" not in html and "https://" not in html
    HTMLParser().feed(html)
    assert data["daily_spend_by_account"] == {"1970-01-01": {"lab": 18.75, "medical": 24.25}}


def test_ingest_is_idempotent_and_a_down_slurmdbd_loses_nothing(env):
    cfg, db = env
    down = Sacct(RECORDS[:3], down=True)
    result = accounting.ingest(db, down, now=6000.0)
    assert not result.ok and "Connection refused" in result.error
    assert job_runs.get_mark(db) is None and job_runs.count(db) == 0
    first = accounting.ingest(db, Sacct(RECORDS[:2]), now=7000.0)
    assert first.changed == 2 and job_runs.get_mark(db) == 7000.0
    # The next read starts before the mark (late records), and stores nothing twice.
    again = Sacct(RECORDS[:3])
    second = accounting.ingest(db, again, now=8000.0)
    assert again.calls[0][0].timestamp() == 7000.0 - accounting.OVERLAP_S and again.calls[0][2] is True
    assert (second.changed, second.unchanged) == (1, 2) and job_runs.count(db) == 3
    assert accounting.ingest(db, Sacct(RECORDS[:3]), now=9000.0).changed == 0
    # A running job's end arrives later: the same run is updated, not added.
    running = record(105, "lab", "a100-de-0", 1, 8500, None, state="RUNNING")
    accounting.ingest(db, Sacct([running]), now=9000.0)
    accounting.ingest(db, Sacct([record(105, "lab", "a100-de-0", 1, 8500, 8900)]), now=9500.0)
    [row] = [r for r in job_runs.between(db, 0, 10_000) if r.job_id == 105]
    assert row.end == 8900.0 and job_runs.count(db) == 4


def test_a_malformed_node_list_is_reported_and_the_rest_still_priced(env):
    cfg, db = env
    bad = AccountingRecord(**{**RECORDS[1].__dict__, "nodes": "a100-de-[0-"})
    accounting.ingest(db, Sacct([RECORDS[0], bad]), now=6000.0)
    data = costreport.report(cfg, db, 0.0, 10_000.0, "job", now=6000.0)
    assert data["problems"] and "a100-de-[0-" in data["problems"][0]
    assert data["totals"]["cloud_usd"] == Decimal("43.00")      # the ledger is whole; 102's share is idle now
    assert "warning:" in costreport.render(data, "table")


def test_breakeven_prints_its_assumptions(env):
    cfg, db = env
    accounting.ingest(db, Sacct(RECORDS[:3]), now=6000.0)
    data = costreport.breakeven_data(cfg, db, 0.0, 10_000.0)
    text = costreport.render_breakeven(data, "table")
    assert "assumptions:" in text and "more GPUs" in text
    assert data["rows"][0]["extra_gpus"] == 0
