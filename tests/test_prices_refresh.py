"""AWS spot prices refreshed into the state DB, through the real AWS provider against moto."""

from __future__ import annotations

from moto_server import GPU_TYPE
from slurm_bridge.prices import refresh_spot
from slurm_bridge.state import StateDB
from test_failover_clouds import config, gcp_server  # noqa: F401 - the GCP stand-in fixture
from test_provider_gcp import loopback_only  # noqa: F401 - autouse fixture

pytest_plugins = ["moto_server"]


def test_spot_prices_are_stored_per_region(moto_cloud, gcp_server, tmp_path):  # noqa: F811
    cfg = config(moto_cloud, gcp_server, tmp_path)
    spot_cfg = cfg.__class__(**{**cfg.__dict__, "pools": tuple(p.__class__(**{**p.__dict__, "spot": True})
                                                                for p in cfg.pools)})
    aws = moto_cloud.provider(**{k: getattr(cfg.aws, k) for k in ("regions", "subnets")})
    with StateDB.open(tmp_path / "state") as db:
        done = refresh_spot(spot_cfg, {"aws": aws}, lambda rows, source: db.set_prices(rows, source=source))
        assert done == {"eu-central-1": 1, "eu-west-1": 1}
        rows = {(r["region"], r["instance_type"]): r for r in db.prices()}
        assert set(rows) == {("eu-central-1", GPU_TYPE), ("eu-west-1", GPU_TYPE)}
        assert all(r["spot"] > 0 and r["ondemand"] is None for r in rows.values())
        assert {r["source"] for r in rows.values()} == {"aws:describe_spot_price_history"}


def test_no_spot_pool_means_nothing_to_ask(moto_cloud, gcp_server, tmp_path):  # noqa: F811
    cfg = config(moto_cloud, gcp_server, tmp_path)
    aws = moto_cloud.provider(**{k: getattr(cfg.aws, k) for k in ("regions", "subnets")})
    assert refresh_spot(cfg, {"aws": aws}, lambda rows, source: None) == {}
