"""Bad input of every other kind gives a clear error or a correct result, never a crash (issue 9).

Hypothesis mutates real documents: the demo's bridge config, price tables in the formats the bridge
imports, and the lab's captured `sacct --json`. Together with test_fuzz_slurm_text.py (squeue and
sinfo text), test_resume_file.py (resume files and hostlists) and test_selector.py, more than 10,000
inputs run in every CI run.
"""

from __future__ import annotations

import copy
import json
import math
import re
import tempfile
import tomllib
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import FIXTURES, REPO
from slurm_bridge.config import Config, ConfigProblems, parse_config
from slurm_bridge.prices import PriceTableError, read_table
from slurm_bridge.slurm.parse import accounting_from_sacct

DEMO = tomllib.loads((REPO / "slurm_bridge" / "lab" / "lab-bridge.toml").read_text())
SACCT = json.loads((FIXTURES / "slurm-22.05.8" / "sacct_all.json").read_text())
# "<source>: key.path: reason", every one; a key with odd characters is quoted as JSON in the path.
PROBLEM = re.compile(r'<config>: (?:[^:"]|"(?:[^"\\]|\\.)*")+: .+')

ANY_VALUE = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True),
                      st.text(max_size=20), st.lists(st.text(max_size=5), max_size=3),
                      st.dictionaries(st.text(max_size=5), st.integers(), max_size=2))


def paths(doc, prefix=()):
    """Every key path in DOC, through tables and arrays of tables."""
    for key, value in doc.items():
        yield prefix + (key,)
        if isinstance(value, dict):
            yield from paths(value, prefix + (key,))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for i, item in enumerate(value):
                yield from paths(item, prefix + (key, i))


CONFIG_PATHS = sorted(paths(DEMO), key=str)


def apply(doc: dict, path: tuple, how: str, value) -> dict:
    doc = copy.deepcopy(doc)
    *parents, last = path
    node = doc
    for p in parents:
        node = node[p]
    if how == "delete":
        del node[last]
    elif how == "typo" and isinstance(last, str):
        node[last[:-1] + "x"] = node.pop(last)
    else:
        node[last] = value
    return doc


@settings(max_examples=2500, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(CONFIG_PATHS), st.sampled_from(["delete", "typo", "value"]), ANY_VALUE),
                min_size=1, max_size=3))
def test_a_mutated_config_is_valid_or_every_problem_names_its_key(mutations):
    # Found by CI: an unknown key ":" is named as accounts.default.":", quoted, which is right.
    doc = DEMO
    for path, how, value in mutations:
        try:
            doc = apply(doc, path, how, value)
        except (KeyError, IndexError, TypeError, AttributeError):
            continue            # an earlier mutation removed or replaced the parent
    try:
        cfg = parse_config(doc)
    except ConfigProblems as exc:
        assert exc.problems and all(PROBLEM.fullmatch(p) for p in exc.problems), exc.problems
    else:
        assert isinstance(cfg, Config)    # no pools is a valid config: the bridge then bursts nothing


CELL = st.one_of(st.sampled_from(["aws", "gcp", "azure", "", "eu-central-1", "p4d.24xlarge", "32.77", "-1",
                                  "nan", "inf", "1e309", "0", "3,5", '"', "USD 4"]),
                 st.text(max_size=12), st.floats(allow_nan=True).map(repr))
HEADERS = [["provider", "region", "instance_type", "ondemand_usd_hr", "spot_usd_hr"],
           ["InstanceType", "AcceleratorName", "AcceleratorCount", "vCPUs", "MemoryGiB", "Price", "Region",
            "SpotPrice"]]


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(HEADERS), st.lists(st.lists(CELL, min_size=0, max_size=9), max_size=6),
       st.sampled_from([None, "aws", "gcp"]))
def test_a_price_table_gives_good_prices_and_numbered_bad_lines(header, rows, provider):
    import csv
    import io

    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(rows)
    with tempfile.NamedTemporaryFile("w", suffix=".csv", delete=False) as f:
        f.write(out.getvalue())
    path = Path(f.name)
    try:
        result = read_table(path, provider)
    except PriceTableError as exc:
        assert str(path) in str(exc)
        return
    finally:
        path.unlink()
    assert all(re.fullmatch(r"line \d+: .+", b) for b in result.bad_rows), result.bad_rows
    for p in result.prices:
        assert p.provider in ("aws", "gcp") and p.region and p.instance_type
        for v in (p.ondemand, p.spot):
            assert v is None or (math.isfinite(v) and v >= 0), p


def _mutate_record(draw, record: dict) -> dict:
    record = copy.deepcopy(record)
    keys = sorted(paths(record), key=str)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(keys))
        try:
            record = apply(record, path, draw(st.sampled_from(["delete", "value"])), draw(ANY_VALUE))
        except (KeyError, IndexError, TypeError, AttributeError):
            continue
    return record


@st.composite
def sacct_documents(draw):
    data = copy.deepcopy(SACCT)
    jobs = data["jobs"]
    bad = draw(st.sets(st.integers(0, len(jobs) - 1), min_size=1, max_size=min(3, len(jobs))))
    for i in bad:
        jobs[i] = draw(st.one_of(st.builds(lambda: None), st.text(max_size=5), st.just([]),
                                 st.just(_mutate_record(draw, jobs[i]))))
    return data, bad


@settings(max_examples=1500, deadline=None)
@given(sacct_documents())
def test_sacct_garbage_sets_its_record_aside_and_reads_every_other(doc):
    data, bad = doc
    records = accounting_from_sacct(data)
    good = [j for i, j in enumerate(SACCT["jobs"]) if i not in bad]
    got = {(r.job_id, r.start) for r in records}
    want = {(r.job_id, r.start) for r in accounting_from_sacct({"jobs": good})}
    assert want <= got       # every untouched record still read, whatever its neighbours hold


def test_sacct_output_without_a_jobs_list_is_an_error_not_an_empty_read(caplog):
    import pytest

    from slurm_bridge.errors import SlurmError

    for data in ({"jobs": None}, {"jobs": {"1": {}}}, ["jobs"]):
        with pytest.raises(SlurmError, match="no list of jobs"):
            accounting_from_sacct(data)
    assert accounting_from_sacct({"jobs": []}) == []
    good = SACCT["jobs"][0]
    assert [r.job_id for r in accounting_from_sacct({"jobs": [{"job_id": "x"}, good]})] == [good["job_id"]]
    assert "record 0 (job 'x') set aside: ValueError" in caplog.text
