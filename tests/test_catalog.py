"""The region catalog against an independent table (../shared/data/regions, see its README)."""

from __future__ import annotations

import csv

import pytest

from conftest import SHARED_DATA
from slurm_bridge.catalog import AWS_REGIONS, EU_MEMBERS, GCP_REGIONS, ISO_COUNTRIES, region_country

TABLE = SHARED_DATA / "regions" / "region_jurisdiction_aws_gcp.csv"


@pytest.fixture(scope="module")
def reference() -> dict[tuple[str, str], dict]:
    with open(TABLE, newline="") as f:
        return {(row["cloud"], row["region"]): row for row in csv.DictReader(f)}


def test_every_region_of_the_reference_is_in_the_catalog_with_the_same_country(reference):
    ours = {("aws", r): c for r, c in AWS_REGIONS.items()} | {("gcp", r): c for r, c in GCP_REGIONS.items()}
    missing = sorted(set(reference) - set(ours))
    assert not missing, f"regions in the reference but not in the catalog: {missing}"
    wrong = {k: (ours[k], row["iso2"]) for k, row in reference.items() if ours[k] != row["iso2"]}
    assert not wrong, f"country differs (ours, reference): {wrong}"


def test_eu_membership_agrees(reference):
    for (cloud, region), row in reference.items():
        assert (region_country(cloud, region) in EU_MEMBERS) == (row["in_eu"] == "yes"), (cloud, region)


def test_catalog_countries_are_iso_codes_and_extra_regions_are_few():
    assert set(AWS_REGIONS.values()) | set(GCP_REGIONS.values()) <= ISO_COUNTRIES
    assert region_country("aws", "eu-central-1") == "DE"
    assert region_country("gcp", "europe-west4") == "NL"
    assert region_country("aws", "mars-1") is None
    assert region_country("azure", "westeurope") is None
