"""Budget rows as the policy applies them: an account not in the config has the default budget to itself."""

from __future__ import annotations

import tomllib

from configs import EXAMPLE, edit
from slurm_bridge.accounting import budget_rows
from slurm_bridge.config import parse_config
from slurm_bridge.policy import Facts, decide
from test_policy import NOW, job

CFG = parse_config(tomllib.loads(edit(EXAMPLE, '[accounts.default]\nzone = "eu"\n',
                                      '[accounts.default]\nzone = "eu"\nbudget_usd_month = 100\n')))


def rows(spent, **kw):
    return {r["account"]: r for r in budget_rows(CFG, spent, **kw)}


def test_each_unlisted_account_is_held_to_the_default_budget_on_its_own():
    spent = {"medical": 10.0, "physics": 120.0, "chem": 30.0}
    r = rows(spent)
    assert set(r) == {"medical", "physics", "chem"}
    assert (r["physics"]["budget_usd_month"], r["physics"]["over"], r["physics"]["from_default"]) == (100, True, True)
    assert (r["chem"]["left_usd"], r["chem"]["over"]) == (70.0, False)
    assert (r["medical"]["budget_usd_month"], r["medical"]["from_default"]) == (5000, False)
    # The same verdicts the policy reaches: physics stays home, chem may burst.
    facts = Facts(now=NOW, active_cloud_nodes=0, spend_month=spent, blocked=lambda p, r: None)
    ds = {d.job_id: d for d in decide(CFG, [job(1, account="physics"), job(2, account="chem")], facts)}
    assert ds[1].code == "over_budget" and ds[2].burst


def test_before_any_unlisted_account_spends_the_default_row_stands_for_them():
    r = rows({"medical": 1.0})
    assert r["default"]["from_default"] and r["default"]["spent_usd"] == 0 and not r["default"]["over"]
    assert "default" not in rows({"physics": 1.0})


def test_status_lists_spend_without_a_budget_only_when_asked():
    cfg = parse_config(tomllib.loads(EXAMPLE))          # no default budget here
    assert [r["account"] for r in budget_rows(cfg, {"physics": 5.0})] == ["medical"]
    both = {r["account"]: r for r in budget_rows(cfg, {"physics": 5.0}, unbudgeted=True)}
    assert both["physics"]["budget_usd_month"] is None and not both["physics"]["over"]
