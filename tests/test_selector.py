"""Region selection: residency first, then price; every region not chosen says why."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from configs import build, pool, region
from slurm_bridge import selector
from slurm_bridge.models import Zone

ZONES = {"de": ["DE"], "dach": ["DE", "CH"], "eu": "EU", "ch": ["CH"], "any": "*"}


def three_regions(**pool_kw):
    return build(zones=ZONES, pools=[pool(**pool_kw)], regions=[
        region("r-de", "DE", {"t1": 3.0}),
        region("r-nl", "NL", {"t1": 2.0}),
        region("r-ch", "CH", {"t1": 1.0}),
    ])


def names(offers) -> list[str]:
    return [o.region for o in offers]


def reasons(excluded) -> dict[str, str]:
    return {e.region: e.reason for e in excluded}


def test_ranked_by_price():
    cfg = three_regions(zone="any")
    ranked, excluded = selector.rank(cfg, cfg.pools[0])
    assert names(ranked) == ["r-ch", "r-nl", "r-de"]
    assert [o.price_per_hour for o in ranked] == [1.0, 2.0, 3.0]
    assert excluded == []
    assert ranked[0] == selector.Offer("local", "r-ch", "CH", "t1", 1.0, False, 2.0)


def test_equal_prices_ranked_by_region_name():
    # Configured out of order, so the result cannot come from config order.
    cfg = build(zones=ZONES, pools=[pool()], regions=[
        region("r-c", "DE", {"t1": 2.0}), region("r-a", "NL", {"t1": 2.0}),
        region("r-b", "FR", {"t1": 2.0}), region("r-0", "DE", {"t1": 5.0})])
    assert names(selector.rank(cfg, cfg.pools[0])[0]) == ["r-a", "r-b", "r-c", "r-0"]


def test_region_outside_pool_zone_is_excluded_with_country_and_zone():
    cfg = three_regions(zone="eu")
    ranked, excluded = selector.rank(cfg, cfg.pools[0])
    # CH is cheapest but not in the EU: residency outranks price.
    assert names(ranked) == ["r-nl", "r-de"]
    assert excluded == [selector.Excluded("local", "r-ch", "CH", "CH is outside pool zone eu")]


def test_job_zone_narrower_than_pool_zone():
    cfg = three_regions(zone="eu")
    ranked, excluded = selector.rank(cfg, cfg.pools[0], job_zone=cfg.zone("de"))
    assert names(ranked) == ["r-de"]
    assert reasons(excluded) == {"r-ch": "CH is outside pool zone eu", "r-nl": "NL is outside job zone de"}


def test_job_zone_cannot_widen_the_pool_zone():
    # A job allowed anywhere still only gets the pool's countries.
    cfg = three_regions(zone="dach")
    ranked, excluded = selector.rank(cfg, cfg.pools[0], job_zone=cfg.zone("any"))
    assert names(ranked) == ["r-ch", "r-de"]
    assert reasons(excluded) == {"r-nl": "NL is outside pool zone dach"}


def test_blocked_regions_are_excluded_with_the_callbacks_reason():
    cfg = three_regions(zone="any")
    calls = []

    def blocked(provider, region_name):
        calls.append((provider, region_name))
        return "capacity: backoff until 12:00" if region_name == "r-ch" else None

    ranked, excluded = selector.rank(cfg, cfg.pools[0], blocked=blocked)
    assert names(ranked) == ["r-nl", "r-de"]
    assert reasons(excluded) == {"r-ch": "capacity: backoff until 12:00"}
    assert sorted(calls) == [("local", "r-ch"), ("local", "r-de"), ("local", "r-nl")]


def test_spot_price_used_when_the_pool_allows_and_the_region_has_one():
    cfg = build(zones=ZONES, pools=[pool(spot=True)], regions=[
        region("r-de", "DE", {"t1": 3.0}, {"t1": 0.9}),
        region("r-nl", "NL", {"t1": 2.0}),                 # no spot market: on-demand
        region("r-fr", "FR", {"t1": 2.5}, {"t9": 0.1}),    # spot, but not for t1
    ])
    ranked, _ = selector.rank(cfg, cfg.pools[0])
    assert [(o.region, o.price_per_hour, o.spot) for o in ranked] == [
        ("r-de", 0.9, True), ("r-nl", 2.0, False), ("r-fr", 2.5, False)]


def test_on_demand_pool_ignores_spot_prices():
    cfg = build(zones=ZONES, pools=[pool(spot=False)], regions=[
        region("r-de", "DE", {"t1": 3.0}, {"t1": 0.9}), region("r-nl", "NL", {"t1": 2.0})])
    ranked, _ = selector.rank(cfg, cfg.pools[0])
    assert [(o.region, o.price_per_hour, o.spot) for o in ranked] == [("r-nl", 2.0, False), ("r-de", 3.0, False)]


def test_spot_only_region_offers_the_type_to_a_spot_pool():
    cfg = build(zones=ZONES, pools=[pool(spot=True)], regions=[region("r-de", "DE", {}, {"t1": 0.5})])
    (offer,), excluded = selector.rank(cfg, cfg.pools[0])
    assert (offer.region, offer.price_per_hour, offer.spot, excluded) == ("r-de", 0.5, True, [])


def test_region_without_the_type_does_not_offer_it():
    cfg = build(zones=ZONES, pools=[pool(itype="t1")], regions=[
        region("r-de", "DE", {"t2": 1.0}), region("r-nl", "NL", {"t1": 2.0})])
    ranked, excluded = selector.rank(cfg, cfg.pools[0])
    assert names(ranked) == ["r-nl"]
    assert excluded == [selector.Excluded("local", "r-de", "DE", "does not offer t1")]


def test_pool_without_a_local_instance_type():
    cfg = build(zones=ZONES, pools=[{**pool(), "instance_types": {"aws": "p4d.24xlarge"}}],
                regions=[region("r-de", "DE", {"p4d.24xlarge": 1.0})])
    ranked, excluded = selector.rank(cfg, cfg.pools[0])
    assert ranked == []
    assert reasons(excluded) == {"r-de": "pool has no local instance type"}


def test_reachable_zones():
    zones = {**ZONES, "nl": ["NL"], "us": ["US"]}
    cfg = build(zones=zones, pools=[pool(zone="eu")], regions=[
        region("r-de", "DE", {"t1": 3.0}), region("r-nl", "NL", {"t9": 2.0}),   # NL lacks the type
        region("r-us", "US", {"t1": 1.0})])                                     # US outside eu
    got = [z.name for z in selector.reachable_zones(cfg, cfg.pools[0])]
    assert got == ["any", "dach", "de", "eu"]
    assert selector.launchable_countries(cfg, cfg.pools[0]) == {"DE"}


def test_zones_of_country():
    cfg = three_regions()
    assert [z.name for z in selector.zones_of_country(cfg, "DE")] == ["any", "dach", "de", "eu"]
    assert [z.name for z in selector.zones_of_country(cfg, "CH")] == ["any", "ch", "dach"]
    assert [z.name for z in selector.zones_of_country(cfg, "US")] == ["any"]
    assert [z.name for z in selector.zones_of_country(cfg, "de")] == ["any", "dach", "de", "eu"]


def test_account_may_use():
    cfg = three_regions(zone="eu")          # launchable: DE, NL (CH is outside eu)
    p = cfg.pools[0]
    assert selector.account_may_use(cfg, cfg.zone("de"), p)
    assert selector.account_may_use(cfg, cfg.zone("dach"), p)
    assert selector.account_may_use(cfg, cfg.zone("any"), p)
    # CH has a region, but the pool may not launch there: sharing a region is what counts.
    assert not selector.account_may_use(cfg, cfg.zone("ch"), p)
    assert not selector.account_may_use(cfg, Zone("us", frozenset({"US"})), p)


# ------------------------------------------------------------- property ---

COUNTRIES = ["DE", "NL", "FR", "CH", "US"]
country_sets = st.frozensets(st.sampled_from(COUNTRIES))


@st.composite
def scenarios(draw):
    n = draw(st.integers(0, 6))
    regions = []
    for i in range(n):
        # Few distinct prices, so ties (and the name tie-break) come up often.
        price = draw(st.none() | st.sampled_from([1.0, 2.0, 2.5, 7.0]))
        spot = draw(st.none() | st.sampled_from([0.5, 2.0, 3.0]))
        regions.append(region(f"r{i}", draw(st.sampled_from(COUNTRIES)),
                              {"t1": price} if price else {"t2": 9.0},
                              {"t1": spot} if spot else None))
    pool_countries = draw(st.none() | country_sets.filter(bool))     # None: "*"
    job_zone = draw(st.none() | st.builds(Zone, st.just("job"), st.none() | country_sets))
    blocked = draw(st.frozensets(st.sampled_from([f"r{i}" for i in range(n)] or ["none"])))
    zones = {"pz": "*" if pool_countries is None else sorted(pool_countries)}
    cfg = build(zones=zones, pools=[pool(zone="pz", spot=draw(st.booleans()))], regions=regions)
    return cfg, job_zone, blocked


@settings(max_examples=500, deadline=None)
@given(scenarios())
def test_ranking_respects_both_zones_and_price(scenario):
    cfg, job_zone, blocked = scenario
    p = cfg.pools[0]
    ranked, excluded = selector.rank(cfg, p, job_zone,
                                     blocked=lambda _prov, r: "backoff" if r in blocked else None)

    def inside(country):
        return p.zone.contains(country) and (job_zone is None or job_zone.contains(country))

    def price(r):   # the effective price, computed independently of the selector
        if p.spot and "t1" in r.spot_prices:
            return r.spot_prices["t1"]
        return r.prices.get("t1")

    for offer in ranked:
        assert inside(offer.country), offer
    assert ranked == sorted(ranked, key=lambda o: (o.price_per_hour, o.region))

    eligible = [r for r in cfg.local_regions if inside(r.country) and price(r) is not None]
    open_ = [r for r in eligible if r.name not in blocked]
    if open_:
        assert ranked, f"nothing ranked though {[r.name for r in open_]} qualify"
        assert ranked[0].price_per_hour == min(price(r) for r in open_)
    else:
        assert ranked == []
    assert sorted(names(ranked)) == sorted(r.name for r in open_)
    for o in ranked:
        assert o.spot == (p.spot and "t1" in cfg.local_regions[int(o.region[1:])].spot_prices)
    # Every region is accounted for exactly once: chosen, or excluded with a reason.
    seen = names(ranked) + [e.region for e in excluded]
    assert sorted(seen) == sorted(r.name for r in cfg.local_regions)
    assert all(e.reason for e in excluded)
    for e in excluded:
        r = next(r for r in cfg.local_regions if r.name == e.region)
        if inside(r.country) and price(r) is not None:
            assert e.reason == "backoff"      # the only reason to leave out a compliant offer
