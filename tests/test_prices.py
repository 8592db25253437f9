"""Price tables: reading every supported format, the layered PriceBook, the state DB table,
`slurm-bridge prices import`, and how the selector ranks cloud regions by those prices."""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from pathlib import Path

import pytest
from configs import EXAMPLE, edit, write_config
from conftest import SHARED_DATA

from slurm_bridge import selector
from slurm_bridge.prices import (
    Price,
    PriceBook,
    PriceTableError,
    book_for,
    from_rows,
    read_table,
)
from slurm_bridge.state import StateDB

AWS_TABLE = SHARED_DATA / "prices" / "aws_gpu_prices_by_region.csv"
GCP_TABLE = SHARED_DATA / "prices" / "gcp_gpu_prices_by_region.csv"
CLI = Path(sys.executable).with_name("slurm-bridge")

BRIDGE_HEADER = "provider,region,instance_type,ondemand_usd_hr,spot_usd_hr\n"
SKY_HEADER = "InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,GpuInfo,Price,SpotPrice,Region,AvailabilityZone\n"


def csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def by_key(prices) -> dict[tuple[str, str, str], Price]:
    return {(p.provider, p.region, p.instance_type): p for p in prices}


def money(text: str) -> float | None:
    return float(text) if text.strip() else None


# --------------------------------------------------------------- the shared tables ---

def test_shared_aws_table_reads_every_row():
    rows = csv_rows(AWS_TABLE)
    assert len(rows) == 172
    result = read_table(AWS_TABLE)
    assert result.format == "shared-aws"
    assert result.bad_rows == []
    assert len(result.prices) == 172
    prices = by_key(result.prices)
    # Every row, checked against the CSV read independently.
    for row in rows:
        p = prices[(row["cloud"], row["region"], row["instance_type"])]
        assert p.ondemand == money(row["ondemand_usd_hr"])
        assert p.spot == money(row["spot_min_usd_hr"])


def test_shared_aws_p4d_us_east_1():
    row = next(r for r in csv_rows(AWS_TABLE)
               if r["instance_type"] == "p4d.24xlarge" and r["region"] == "us-east-1")
    price = by_key(read_table(AWS_TABLE).prices)[("aws", "us-east-1", "p4d.24xlarge")]
    assert price.ondemand == float(row["ondemand_usd_hr"]) == 32.7726
    # The lowest spot price over the zones, not the median or max.
    assert price.spot == float(row["spot_min_usd_hr"]) == 5.0933
    assert price.spot != float(row["spot_median_usd_hr"])


def test_shared_aws_row_without_spot_keeps_ondemand_only():
    row = next(r for r in csv_rows(AWS_TABLE)
               if r["instance_type"] == "p4d.24xlarge" and r["region"] == "ap-south-1")
    assert row["spot_min_usd_hr"] == ""
    price = by_key(read_table(AWS_TABLE).prices)[("aws", "ap-south-1", "p4d.24xlarge")]
    assert price == Price("aws", "ap-south-1", "p4d.24xlarge", float(row["ondemand_usd_hr"]), None)


def test_shared_gcp_table_uses_totals():
    rows = csv_rows(GCP_TABLE)
    result = read_table(GCP_TABLE)
    assert result.format == "shared-gcp"
    assert result.bad_rows == []
    assert len(result.prices) == len(rows) == 157
    prices = by_key(result.prices)
    for row in rows:
        p = prices[("gcp", row["region"], row["config"])]
        assert p.ondemand == money(row["total_ondemand_usd_hr"])
        assert p.spot == money(row["total_spot_usd_hr"])
    row = next(r for r in rows if r["config"] == "a2-highgpu-8g" and r["region"] == "europe-west4")
    p = prices[("gcp", "europe-west4", "a2-highgpu-8g")]
    # The machine price is host + GPUs, not the host alone.
    assert p.ondemand == float(row["total_ondemand_usd_hr"]) == 19.4217
    assert p.spot == float(row["total_spot_usd_hr"]) == 12.49388
    assert p.ondemand != float(row["host_ondemand_usd_hr"])


# ------------------------------------------------------------- slurm-bridge CSV ---

def test_bridge_format_with_empty_spot(tmp_path):
    path = tmp_path / "prices.csv"
    path.write_text(BRIDGE_HEADER
                    + "aws,eu-central-1,p4d.24xlarge,40.5,\n"
                    + "aws,eu-west-1,p4d.24xlarge,,12.25\n"
                    + "gcp,europe-west4,a2-highgpu-8g,19.42,12.49\n")
    result = read_table(path)
    assert result.format == "slurm-bridge"
    assert result.bad_rows == []
    assert sorted(result.prices, key=lambda p: p.region) == [
        Price("aws", "eu-central-1", "p4d.24xlarge", 40.5, None),
        Price("aws", "eu-west-1", "p4d.24xlarge", None, 12.25),
        Price("gcp", "europe-west4", "a2-highgpu-8g", 19.42, 12.49),
    ]


def test_bad_rows_are_counted_with_line_numbers_and_the_rest_imported(tmp_path):
    path = tmp_path / "prices.csv"
    path.write_text(BRIDGE_HEADER
                    + "aws,eu-central-1,p4d.24xlarge,40.5,18.2\n"      # line 2: good
                    + "aws,eu-west-1,p4d.24xlarge,abc,\n"              # line 3: not a number
                    + "aws,eu-west-2,p4d.24xlarge,-3,\n"               # line 4: negative
                    + "aws,,p4d.24xlarge,3,\n"                         # line 5: empty region
                    + "azure,westeurope,nd96,30,\n"                    # line 6: unknown provider
                    + "gcp,europe-west4,a2-highgpu-8g,,\n"             # line 7: no price
                    + "aws,eu-west-3,p4d.24xlarge,0,\n"                # line 8: zero
                    + "gcp,europe-west4,a2-highgpu-1g,2.5,1.5\n")      # line 9: good
    result = read_table(path)
    assert result.format == "slurm-bridge"
    assert by_key(result.prices) == {
        ("aws", "eu-central-1", "p4d.24xlarge"): Price("aws", "eu-central-1", "p4d.24xlarge", 40.5, 18.2),
        ("gcp", "europe-west4", "a2-highgpu-1g"): Price("gcp", "europe-west4", "a2-highgpu-1g", 2.5, 1.5),
    }
    assert len(result.bad_rows) == 6
    assert [b.split(":")[0] for b in result.bad_rows] == [f"line {n}" for n in (3, 4, 5, 6, 7, 8)]
    bad = dict(b.split(": ", 1) for b in result.bad_rows)
    assert "'abc' is not a number" in bad["line 3"]
    assert "'-3' must be a positive number" in bad["line 4"]
    assert "must not be empty" in bad["line 5"]
    assert "'azure' is not aws or gcp" in bad["line 6"]
    assert "no price" in bad["line 7"]
    assert "'0' must be a positive number" in bad["line 8"]


def test_bad_row_line_number_counts_blank_lines(tmp_path):
    """The reported line is the file's line, so an admin finds the row in an editor."""
    path = tmp_path / "prices.csv"
    path.write_text(BRIDGE_HEADER
                    + "aws,eu-central-1,p4d.24xlarge,40.5,\n"
                    + "\n"
                    + "aws,eu-west-1,p4d.24xlarge,abc,\n")    # line 4 of the file
    result = read_table(path)
    assert len(result.prices) == 1
    assert [b.split(":")[0] for b in result.bad_rows] == ["line 4"]


def test_short_row_is_a_bad_row_not_a_crash(tmp_path):
    """A truncated row (fewer columns than the header) is counted like any bad row."""
    path = tmp_path / "prices.csv"
    path.write_text(BRIDGE_HEADER
                    + "aws,eu-west-1\n"                         # line 2: truncated
                    + "aws,eu-central-1,p4d.24xlarge,40.5,\n")
    result = read_table(path)
    assert by_key(result.prices) == {
        ("aws", "eu-central-1", "p4d.24xlarge"): Price("aws", "eu-central-1", "p4d.24xlarge", 40.5, None)}
    assert len(result.bad_rows) == 1 and result.bad_rows[0].startswith("line 2:")


def test_unknown_header_names_the_expected_one(tmp_path):
    path = tmp_path / "prices.csv"
    path.write_text("cloud,region,price\naws,eu-west-1,3\n")
    with pytest.raises(PriceTableError) as err:
        read_table(path)
    msg = str(err.value)
    assert str(path) in msg
    assert "unknown price table format" in msg
    assert "cloud,region,price" in msg
    assert "expected provider,region,instance_type,ondemand_usd_hr,spot_usd_hr" in msg


def test_missing_file_is_a_price_table_error(tmp_path):
    path = tmp_path / "nope.csv"
    with pytest.raises(PriceTableError, match=r"nope\.csv: cannot read: No such file or directory"):
        read_table(path)


def test_directory_is_a_price_table_error(tmp_path):
    with pytest.raises(PriceTableError, match="cannot read"):
        read_table(tmp_path)


def test_binary_file_is_a_price_table_error(tmp_path):
    """A file that is not UTF-8 text (say, the .csv.gz passed by mistake) is unreadable as a table:
    one clear PriceTableError, not a UnicodeDecodeError traceback."""
    path = tmp_path / "prices.csv.gz"
    path.write_bytes(b"\x1f\x8b\x08\x00\xff\xfe" + BRIDGE_HEADER.encode())
    with pytest.raises(PriceTableError, match=r"prices\.csv\.gz"):
        read_table(path)


# ------------------------------------------------------------- SkyPilot vms.csv ---

def write_vms(tmp_path: Path) -> Path:
    path = tmp_path / "vms.csv"
    path.write_text(
        SKY_HEADER
        # one region, three zones: the lowest spot and on-demand over the zones are kept
        + "p4d.24xlarge,A100,8,96,1152,{},32.7726,9.61,us-east-1,us-east-1a\n"
        + "p4d.24xlarge,A100,8,96,1152,{},32.7726,5.0933,us-east-1,us-east-1b\n"
        + "p4d.24xlarge,A100,8,96,1152,{},32.7726,6.79,us-east-1,us-east-1c\n"
        # another region, two zones, one of them without spot
        + "p4d.24xlarge,A100,8,96,1152,{},40.94475,,eu-central-1,eu-central-1a\n"
        + "p4d.24xlarge,A100,8,96,1152,{},40.94475,18.213,eu-central-1,eu-central-1b\n"
        # an accelerator-only row (GCP style): prices a GPU, not a machine
        + ",A100,1,,,{},2.93,0.88,us-east-1,us-east-1a\n"
        # another type in one zone only
        + "g5.xlarge,A10G,1,4,16,{},1.006,0.38,eu-central-1,eu-central-1a\n"
        # bad rows
        + "g5.xlarge,A10G,1,4,16,{},lots,,us-east-1,us-east-1a\n"     # line 9
        + "g5.xlarge,A10G,1,4,16,{},1.0,0.3,,\n")                     # line 10
    return path


def test_skypilot_vms_min_over_zones(tmp_path):
    result = read_table(write_vms(tmp_path), provider="aws")
    assert result.format == "skypilot"
    assert by_key(result.prices) == {
        ("aws", "us-east-1", "p4d.24xlarge"): Price("aws", "us-east-1", "p4d.24xlarge", 32.7726, 5.0933),
        ("aws", "eu-central-1", "p4d.24xlarge"): Price("aws", "eu-central-1", "p4d.24xlarge", 40.94475, 18.213),
        ("aws", "eu-central-1", "g5.xlarge"): Price("aws", "eu-central-1", "g5.xlarge", 1.006, 0.38),
    }
    # The GPU-only row is skipped silently (not a bad row); the two broken ones are reported.
    assert [b.split(":")[0] for b in result.bad_rows] == ["line 9", "line 10"]
    assert "'lots' is not a number" in result.bad_rows[0]


def test_skypilot_vms_takes_the_provider_given(tmp_path):
    result = read_table(write_vms(tmp_path), provider="gcp")
    assert {p.provider for p in result.prices} == {"gcp"}
    assert len(result.prices) == 3


@pytest.mark.parametrize("provider", [None, "azure", "local"])
def test_skypilot_vms_needs_aws_or_gcp(tmp_path, provider):
    with pytest.raises(PriceTableError, match=re.escape("give --provider aws|gcp")):
        read_table(write_vms(tmp_path), provider=provider)


# ------------------------------------------------------------------- PriceBook ---

def test_pricebook_later_layers_win_field_by_field():
    stored = [Price("aws", "eu-west-1", "p4d", 30.0, 10.0), Price("aws", "eu-central-1", "p4d", 40.0, None)]
    refreshed = [Price("aws", "eu-west-1", "p4d", None, 9.0)]
    override = [Price("aws", "eu-central-1", "p4d", None, 15.0), Price("gcp", "europe-west4", "a2", 19.0, None)]
    book = PriceBook(stored, refreshed, override)
    assert len(book) == 3
    # spot only: the stored on-demand price stays
    assert book.get("aws", "eu-west-1", "p4d") == Price("aws", "eu-west-1", "p4d", 30.0, 9.0)
    assert book.get("aws", "eu-central-1", "p4d") == Price("aws", "eu-central-1", "p4d", 40.0, 15.0)
    assert book.get("gcp", "europe-west4", "a2") == Price("gcp", "europe-west4", "a2", 19.0, None)
    assert book.get("aws", "eu-west-2", "p4d") is None
    assert sorted(p.region for p in book) == ["eu-central-1", "eu-west-1", "europe-west4"]


def test_pricebook_override_of_both_fields_replaces_both():
    book = PriceBook([Price("aws", "r", "t", 30.0, 10.0)], [Price("aws", "r", "t", 1.0, 2.0)])
    assert book.get("aws", "r", "t") == Price("aws", "r", "t", 1.0, 2.0)


def test_book_for_puts_overrides_over_stored_rows(tmp_path):
    cfg, _ = write_config(tmp_path, EXAMPLE + """
[[prices.overrides]]
provider = "aws"
region = "eu-west-1"
instance_type = "p4d.24xlarge"
spot = 7.5
""")
    assert len(cfg.price_overrides) == 1
    stored = [{"provider": "aws", "region": "eu-west-1", "instance_type": "p4d.24xlarge", "ondemand": 35.4,
               "spot": 16.3, "source": "import:x.csv", "updated_at": 1.0},
              {"provider": "aws", "region": "eu-central-1", "instance_type": "p4d.24xlarge", "ondemand": 40.9,
               "spot": None, "source": "import:x.csv", "updated_at": 1.0}]
    book = book_for(cfg.price_overrides, stored)
    assert book.get("aws", "eu-west-1", "p4d.24xlarge") == Price("aws", "eu-west-1", "p4d.24xlarge", 35.4, 7.5)
    assert book.get("aws", "eu-central-1", "p4d.24xlarge") == Price("aws", "eu-central-1", "p4d.24xlarge", 40.9,
                                                                     None)
    assert from_rows(stored)[1] == Price("aws", "eu-central-1", "p4d.24xlarge", 40.9, None)


# -------------------------------------------------------------- state DB table ---

def row(provider, region, itype, ondemand, spot) -> dict:
    return {"provider": provider, "region": region, "instance_type": itype, "ondemand": ondemand, "spot": spot}


def test_set_prices_upserts_and_keeps_a_field_given_as_none(tmp_path):
    with StateDB.open(tmp_path / "state") as db:
        assert db.prices() == []
        n = db.set_prices([row("aws", "eu-west-1", "p4d", 35.0, 16.0), row("aws", "eu-central-1", "p4d", 40.0, None)],
                          source="import:a.csv", now=100.0)
        assert n == 2
        assert db.prices() == [
            {"provider": "aws", "region": "eu-central-1", "instance_type": "p4d", "ondemand": 40.0, "spot": None,
             "source": "import:a.csv", "updated_at": 100.0},
            {"provider": "aws", "region": "eu-west-1", "instance_type": "p4d", "ondemand": 35.0, "spot": 16.0,
             "source": "import:a.csv", "updated_at": 100.0},
        ]
        # Re-import: new values win, None keeps the old one, a new key is added.
        n = db.set_prices([row("aws", "eu-west-1", "p4d", None, 12.0), row("aws", "eu-central-1", "p4d", 41.0, 18.0),
                           row("gcp", "europe-west4", "a2", 19.0, None)], source="spot-refresh", now=200.0)
        assert n == 3
        got = {(r["provider"], r["region"]): r for r in db.prices()}
        assert len(got) == 3
        assert (got[("aws", "eu-west-1")]["ondemand"], got[("aws", "eu-west-1")]["spot"]) == (35.0, 12.0)
        assert (got[("aws", "eu-central-1")]["ondemand"], got[("aws", "eu-central-1")]["spot"]) == (41.0, 18.0)
        assert got[("aws", "eu-west-1")]["source"] == "spot-refresh"
        assert got[("aws", "eu-west-1")]["updated_at"] == 200.0
        assert (got[("gcp", "europe-west4")]["ondemand"], got[("gcp", "europe-west4")]["spot"]) == (19.0, None)


def test_set_prices_persists_across_reopen(tmp_path):
    with StateDB.open(tmp_path / "state") as db:
        db.set_prices([row("aws", "eu-west-1", "p4d", 35.0, None)], source="import:a.csv", now=1.0)
    with StateDB.open(tmp_path / "state") as db:
        assert [(r["region"], r["ondemand"], r["spot"]) for r in db.prices()] == [("eu-west-1", 35.0, None)]


# --------------------------------------------------------- `slurm-bridge prices import` ---

def cli_config(tmp_path: Path) -> tuple[Path, Path]:
    state = tmp_path / "state"
    cfg_path = tmp_path / "bridge.toml"
    cfg_path.write_text(edit(EXAMPLE, 'state_dir = "/var/lib/slurm-bridge"', f'state_dir = "{state}"'))
    return cfg_path, state


def run_cli(*args: str) -> subprocess.CompletedProcess:
    assert CLI.exists(), f"{CLI} is not installed (pip install -e . into the venv)"
    return subprocess.run([str(CLI), *args], capture_output=True, text=True, timeout=60, check=False)


def stored(state: Path) -> dict[tuple[str, str, str], tuple]:
    with StateDB.open(state) as db:
        return {(r["provider"], r["region"], r["instance_type"]): (r["ondemand"], r["spot"], r["source"])
                for r in db.prices()}


def test_cli_imports_the_shared_aws_table(tmp_path):
    cfg, state = cli_config(tmp_path)
    done = run_cli("prices", "import", "--config", str(cfg), str(AWS_TABLE))
    assert done.returncode == 0, done.stderr
    assert f"imported 172 price(s) from {AWS_TABLE} (shared-aws format); 0 bad row(s) skipped" in done.stdout
    prices = stored(state)
    assert len(prices) == 172
    assert prices[("aws", "us-east-1", "p4d.24xlarge")] == (32.7726, 5.0933, "import:aws_gpu_prices_by_region.csv")


def test_cli_import_reports_bad_rows_and_keeps_the_good(tmp_path):
    cfg, state = cli_config(tmp_path)
    table = tmp_path / "mine.csv"
    table.write_text(BRIDGE_HEADER + "aws,eu-west-1,p4d.24xlarge,35.4,\naws,eu-west-2,p4d.24xlarge,x,\n")
    done = run_cli("prices", "import", "--config", str(cfg), str(table))
    assert done.returncode == 0, done.stderr
    assert "imported 1 price(s)" in done.stdout and "(slurm-bridge format); 1 bad row(s) skipped" in done.stdout
    assert f"skipped {table}: line 3: ondemand_usd_hr 'x' is not a number" in done.stderr
    assert stored(state) == {("aws", "eu-west-1", "p4d.24xlarge"): (35.4, None, "import:mine.csv")}


def test_cli_reimport_updates_and_keeps_the_other_field(tmp_path):
    cfg, state = cli_config(tmp_path)
    first, second = tmp_path / "first.csv", tmp_path / "second.csv"
    first.write_text(BRIDGE_HEADER + "aws,eu-west-1,p4d.24xlarge,35.4,16.3\n")
    second.write_text(BRIDGE_HEADER + "aws,eu-west-1,p4d.24xlarge,,12.0\n")
    assert run_cli("prices", "import", "--config", str(cfg), str(first)).returncode == 0
    assert run_cli("prices", "import", "--config", str(cfg), str(second)).returncode == 0
    assert stored(state) == {("aws", "eu-west-1", "p4d.24xlarge"): (35.4, 12.0, "import:second.csv")}


def test_cli_skypilot_needs_provider(tmp_path):
    cfg, state = cli_config(tmp_path)
    vms = write_vms(tmp_path)
    done = run_cli("prices", "import", "--config", str(cfg), str(vms))
    assert done.returncode == 2
    assert "slurm-bridge: error:" in done.stderr and "--provider aws|gcp" in done.stderr
    assert "Traceback" not in done.stderr
    done = run_cli("prices", "import", "--config", str(cfg), "--provider", "aws", str(vms))
    assert done.returncode == 0, done.stderr
    assert "imported 3 price(s)" in done.stdout and "(skypilot format); 2 bad row(s) skipped" in done.stdout
    assert stored(state)[("aws", "us-east-1", "p4d.24xlarge")] == (32.7726, 5.0933, "import:vms.csv")


def test_cli_nothing_importable_exits_1(tmp_path):
    cfg, state = cli_config(tmp_path)
    table = tmp_path / "bad.csv"
    table.write_text(BRIDGE_HEADER + "aws,eu-west-1,p4d.24xlarge,,\n")
    done = run_cli("prices", "import", "--config", str(cfg), str(table))
    assert done.returncode == 1
    assert "imported 0 price(s)" in done.stdout
    assert stored(state) == {}


def test_cli_unknown_format_and_missing_file_are_one_line_errors(tmp_path):
    cfg, _ = cli_config(tmp_path)
    table = tmp_path / "odd.csv"
    table.write_text("a,b\n1,2\n")
    done = run_cli("prices", "import", "--config", str(cfg), str(table))
    assert done.returncode == 2
    assert "unknown price table format" in done.stderr and "Traceback" not in done.stderr
    done = run_cli("prices", "import", "--config", str(cfg), str(tmp_path / "missing.csv"))
    assert done.returncode == 2
    assert "missing.csv: cannot read" in done.stderr and "Traceback" not in done.stderr


# ------------------------------------------------------------ selector integration ---

AWS_EU = EXAMPLE + """
[providers.aws]
regions = ["eu-central-1", "eu-west-1"]
launch_template = "slurm-bridge"

[[pools]]
name = "a100-eu"
size = 2
zone = "eu"
cpus = 96
memory_mb = 1000000
gpus = "a100:8"
instance_types = { aws = "p4d.24xlarge" }

[[pools]]
name = "a100-eu-spot"
size = 2
zone = "eu"
cpus = 96
memory_mb = 1000000
gpus = "a100:8"
spot = true
instance_types = { aws = "p4d.24xlarge" }
"""


def aws_offers(ranked) -> list[tuple[str, float, bool]]:
    return [(o.region, o.price_per_hour, o.spot) for o in ranked if o.provider == "aws"]


def test_selector_ranks_aws_regions_by_the_book(tmp_path):
    cfg, _ = write_config(tmp_path, AWS_EU)
    pool = cfg.pool("a100-eu")
    book = PriceBook([Price("aws", "eu-central-1", "p4d.24xlarge", 40.9, 18.2),
                      Price("aws", "eu-west-1", "p4d.24xlarge", 35.4, 16.3)])
    ranked, excluded = selector.rank(cfg, pool, book=book)
    assert aws_offers(ranked) == [("eu-west-1", 35.4, False), ("eu-central-1", 40.9, False)]
    assert [(o.region, o.country) for o in ranked] == [("eu-west-1", "IE"), ("eu-central-1", "DE")]
    # The pool has no local instance type: the lab regions are listed as excluded, with why.
    assert {(e.region, e.reason) for e in excluded} == {("lab-de", "pool has no local instance type"),
                                                        ("lab-nl", "pool has no local instance type")}
    # Prices the other way round: the order follows.
    book = PriceBook([Price("aws", "eu-central-1", "p4d.24xlarge", 30.0, None),
                      Price("aws", "eu-west-1", "p4d.24xlarge", 35.4, None)])
    ranked, _ = selector.rank(cfg, pool, book=book)
    assert aws_offers(ranked) == [("eu-central-1", 30.0, False), ("eu-west-1", 35.4, False)]


def test_selector_uses_spot_prices_for_spot_pools(tmp_path):
    cfg, _ = write_config(tmp_path, AWS_EU)
    book = PriceBook([Price("aws", "eu-central-1", "p4d.24xlarge", 40.9, 14.0),
                      Price("aws", "eu-west-1", "p4d.24xlarge", 35.4, 16.3)])
    ranked, _ = selector.rank(cfg, cfg.pool("a100-eu-spot"), book=book)
    assert aws_offers(ranked) == [("eu-central-1", 14.0, True), ("eu-west-1", 16.3, True)]
    # The on-demand pool ignores spot prices.
    ranked, _ = selector.rank(cfg, cfg.pool("a100-eu"), book=book)
    assert aws_offers(ranked) == [("eu-west-1", 35.4, False), ("eu-central-1", 40.9, False)]
    # A spot pool falls back to on-demand where no spot price is known.
    book = PriceBook([Price("aws", "eu-central-1", "p4d.24xlarge", 40.9, None),
                      Price("aws", "eu-west-1", "p4d.24xlarge", 35.4, 36.0)])
    ranked, _ = selector.rank(cfg, cfg.pool("a100-eu-spot"), book=book)
    assert aws_offers(ranked) == [("eu-west-1", 36.0, True), ("eu-central-1", 40.9, False)]


def test_selector_excludes_a_region_without_a_price(tmp_path):
    cfg, _ = write_config(tmp_path, AWS_EU)
    book = PriceBook([Price("aws", "eu-west-1", "p4d.24xlarge", 35.4, None),
                      Price("aws", "eu-central-1", "p5.48xlarge", 50.0, None)])   # another type
    ranked, excluded = selector.rank(cfg, cfg.pool("a100-eu"), book=book)
    assert aws_offers(ranked) == [("eu-west-1", 35.4, False)]
    why = {e.region: e for e in excluded if e.provider == "aws"}
    assert set(why) == {"eu-central-1"}
    assert why["eu-central-1"].country == "DE"
    assert "no price known for p4d.24xlarge" in why["eu-central-1"].reason


def test_selector_with_an_empty_book_offers_no_cloud_region(tmp_path):
    cfg, _ = write_config(tmp_path, AWS_EU)
    ranked, excluded = selector.rank(cfg, cfg.pool("a100-eu"), book=PriceBook())
    assert ranked == []
    assert sorted(e.region for e in excluded if "no price known" in e.reason) == ["eu-central-1", "eu-west-1"]


def test_config_override_beats_the_stored_price(tmp_path):
    text = AWS_EU + """
[[prices.overrides]]
provider = "aws"
region = "eu-west-1"
instance_type = "p4d.24xlarge"
ondemand = 50.0
"""
    text = edit(text, 'state_dir = "/var/lib/slurm-bridge"', f'state_dir = "{tmp_path / "state"}"')
    cfg, _ = write_config(tmp_path, text)
    with StateDB.open(cfg.cluster.state_dir) as db:
        db.set_prices([row("aws", "eu-west-1", "p4d.24xlarge", 35.4, 16.3),
                       row("aws", "eu-central-1", "p4d.24xlarge", 40.9, 18.2)], source="import:t.csv")
        book = book_for(cfg.price_overrides, db.prices())
    ranked, _ = selector.rank(cfg, cfg.pool("a100-eu"), book=book)
    assert aws_offers(ranked) == [("eu-central-1", 40.9, False), ("eu-west-1", 50.0, False)]
    # The override names only on-demand: the stored spot price still counts for the spot pool.
    ranked, _ = selector.rank(cfg, cfg.pool("a100-eu-spot"), book=book)
    assert aws_offers(ranked) == [("eu-west-1", 16.3, True), ("eu-central-1", 18.2, True)]
    # Without a book, the selector uses the overrides alone: only eu-west-1 has a price.
    ranked, _ = selector.rank(cfg, cfg.pool("a100-eu"))
    assert aws_offers(ranked) == [("eu-west-1", 50.0, False)]


def test_job_zone_excludes_a_cheaper_cloud_region_outside_it(tmp_path):
    cfg, _ = write_config(tmp_path, AWS_EU)
    book = PriceBook([Price("aws", "eu-central-1", "p4d.24xlarge", 40.9, None),
                      Price("aws", "eu-west-1", "p4d.24xlarge", 35.4, None)])
    ranked, excluded = selector.rank(cfg, cfg.pool("a100-eu"), cfg.zone("de"), book=book)
    assert aws_offers(ranked) == [("eu-central-1", 40.9, False)]
    assert {e.region: e.reason for e in excluded}["eu-west-1"] == "IE is outside job zone de"
