"""Job-trace readers, on the real Philly trace, sacct output captured from the lab, and a hand-written SWF."""

from __future__ import annotations

import json
import time
from zoneinfo import ZoneInfo

import pytest
from conftest import FIXTURES, SHARED_DATA

from slurm_bridge.errors import BridgeError
from slurm_bridge.traces import TraceError, TraceJob, read_trace

PHILLY = SHARED_DATA / "traces" / "rfold_philly_trace.csv"
V2205 = FIXTURES / "slurm-22.05.8"
SWF = FIXTURES / "traces" / "sample.swf"
PARSABLE_HEADER = ("JobID|JobIDRaw|User|Account|Partition|State|Submit|Start|End|ElapsedRaw|NNodes|"
                   "AllocTRES|TimelimitRaw|NodeList|Constraints")


def write(tmp_path, name, *lines):
    path = tmp_path / name
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


# -- philly ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def philly():
    started = time.perf_counter()
    trace = read_trace(PHILLY, "philly")
    return trace, time.perf_counter() - started


def test_philly_every_row_is_a_job(philly):
    trace, seconds = philly
    assert trace.total_rows == 111_549 and len(trace.jobs) == 111_549 and trace.bad == {}
    assert trace.epoch_offset == 0.0
    assert seconds < 10, f"reading the Philly trace took {seconds:.1f} s"
    assert "111,549 jobs from 111,549 rows" in trace.summary()


# The lines as they are in the file, and what they become with 8-GPU nodes.
PHILLY_LINES = {
    "0,0.0,CLOS,1,1,3613033.0": TraceJob("0", 0.0, 3613033.0, None, 1, 1, 1),
    "112,2601211.0,CLOS,8+8,16,1453510.0": TraceJob("112", 2601211.0, 1453510.0, None, 16, 2, 8),
    "218,3104565.0,CLOS,2+2+2+2,8,795109.0": TraceJob("218", 3104565.0, 795109.0, None, 8, 1, 8),
    "27507,4958050.0,CLOS,1+1+1+1+1+1+1,7,60988.0": TraceJob("27507", 4958050.0, 60988.0, None, 7, 1, 7),
    "12266,4397836.0,CLOS,8+8+8+8+8+8+8+8+8+8+8+8+8+8+8+8,128,538.0":
        TraceJob("12266", 4397836.0, 538.0, None, 128, 16, 8),
    "23206,4803879.0,CLOS,1,1,0.0": TraceJob("23206", 4803879.0, 0.0, None, 1, 1, 1),
    "111548,11176511.0,CLOS,1,1,64.0": TraceJob("111548", 11176511.0, 64.0, None, 1, 1, 1),
}


def test_philly_jobs_match_the_file_lines(philly):
    trace, _ = philly
    with PHILLY.open() as f:
        in_file = {line.strip() for line in f} & set(PHILLY_LINES)
    assert in_file == set(PHILLY_LINES)
    by_id = {j.job_id: j for j in trace.jobs}
    for expected in PHILLY_LINES.values():
        assert by_id[expected.job_id] == expected
    assert sum(j.gpus for j in trace.jobs) == 194_266          # the sum of the size column


def test_philly_sorted_by_submit_then_id(philly):
    trace, _ = philly
    keys = [(j.submit, int(j.job_id)) for j in trace.jobs]
    assert keys == sorted(keys)
    tied = [j.job_id for j in trace.jobs if j.submit == 10001715.0]
    assert tied[:2] == ["106384", "106385"]


def test_philly_recorded_placement_on_request():
    trace = read_trace(PHILLY, "philly", gpus_per_node=None)
    by_id = {j.job_id: j for j in trace.jobs}
    assert (by_id["218"].nodes, by_id["218"].gpus_per_node, by_id["218"].gpus) == (4, 2, 8)
    assert (by_id["27507"].nodes, by_id["27507"].gpus_per_node) == (7, 1)
    packed = read_trace(PHILLY, "philly", gpus_per_node=4)
    assert {j.job_id: (j.nodes, j.gpus_per_node) for j in packed.jobs}["112"] == (4, 4)


def test_philly_bad_rows_are_counted_and_submits_start_at_zero(tmp_path):
    path = write(
        tmp_path, "broken.csv",
        "#job id,arrival time (sec),topology,shape,size,duration (sec)",
        "a,50.0,CLOS,1,1,10.0",
        "b,80.0,CLOS,2+2,4,20.0",
        "c,soon,CLOS,1,1,10.0",
        "d,90.0,CLOS,2,two,10.0",
        "e,95.0,CLOS,1,1,-3.0",
        "f,96.0,CLOS,2+2,5,1.0",
        "g,97.0,CLOS,1,1",
        "",
        "h,98.0,CLOS,1,1,nan",
        "i,99.0,T2D,2x2,4,1.0",
    )
    trace = read_trace(path, "philly")
    assert [(j.job_id, j.submit, j.gpus) for j in trace.jobs] == [("a", 0.0, 1), ("b", 30.0, 4)]
    assert trace.epoch_offset == 50.0
    assert trace.total_rows == 9
    assert trace.bad == {
        "unparsable number in column 'arrival time (sec)'": 1,
        "unparsable number in column 'size'": 1,
        "negative duration": 1,
        "size is not the sum of shape": 1,
        "wrong number of fields (expected 6)": 1,
        "unparsable number in column 'duration (sec)'": 1,
        "topology is not CLOS": 1,
    }
    assert trace.first_bad_line["negative duration"] == 6
    assert "skipped 7" in trace.summary() and "negative duration: 1 (first at line 6)" in trace.summary()


# -- sacct -------------------------------------------------------------------------------------------

def test_sacct_json_and_parsable_agree_on_the_same_lab_jobs():
    from_json = read_trace(V2205 / "sacct_trace.json", "sacct")
    from_text = read_trace(V2205 / "sacct_parsable.txt", "sacct")
    assert from_json.jobs == from_text.jobs
    assert from_json.epoch_offset == from_text.epoch_offset == 1796037250.0   # the lab runs in UTC
    assert from_json.bad == from_text.bad == {}
    ids = [j.job_id for j in from_json.jobs]
    assert ids == ["1", "2", "3", "4", "5", "6_0", "6_1", "6_2", "6_3", "6_4", "6_5"]
    by_id = {j.job_id: j for j in from_json.jobs}
    # The 2-node job cancelled after 50 s: 8 GPUs over 2 nodes, still a job that ran.
    assert by_id["1"] == TraceJob("1", 0.0, 50.0, None, 8, 2, 4, 2, "root", "lab", "gpu", "res_eu",
                                  "CANCELLED")
    assert (by_id["3"].gpus, by_id["3"].nodes, by_id["3"].duration_s) == (3, 1, 31.0)
    assert by_id["6_5"].cpus == 1 and by_id["5"].cpus == 2


def test_sacct_constraints_keep_their_pipe():
    # The fixture has the documented field list, Constraints last (fixtures README).
    assert (V2205 / "sacct_parsable.txt").read_text().splitlines()[0] == PARSABLE_HEADER
    trace = read_trace(V2205 / "sacct_parsable.txt", "sacct")
    job4 = next(j for j in trace.jobs if j.job_id == "4")
    assert job4.constraints == "(res_de|onprem)&res_eu"
    assert job4.gpus == 2 and job4.cpus == 2


def _as_2302(data: dict) -> dict:
    """The 23.02+ shapes made from the 22.05 capture: states as lists, times as set/infinite/number."""
    out = json.loads(json.dumps(data))
    for job in out["jobs"]:
        job["state"]["current"] = [job["state"]["current"]]
        t = job["time"]
        for key in ("submission", "start", "end", "eligible", "elapsed"):
            t[key] = {"set": True, "infinite": False, "number": t[key]}
        limit = t["limit"]
        t["limit"] = {"set": True, "infinite": limit is None, "number": limit or 0}
    return out


def test_sacct_json_2302_shape_reads_the_same(tmp_path):
    data = json.loads((V2205 / "sacct_trace.json").read_text())
    data["jobs"][1]["time"]["limit"] = 10
    old = read_trace(write(tmp_path, "sacct_2205.json", json.dumps(data)), "sacct")
    new = read_trace(write(tmp_path, "sacct_2302.json", json.dumps(_as_2302(data))), "sacct")
    assert new.jobs == old.jobs and new.epoch_offset == old.epoch_offset
    limits = {j.job_id: j.time_limit_s for j in new.jobs}
    assert limits["2"] == 600.0 and limits["1"] is None


def test_sacct_json_skips_jobs_that_never_ran_or_still_run():
    trace = read_trace(V2205 / "sacct_all.json", "sacct")
    # 1 finished; 2 and 3 were running; 4 and the array 7 were pending when captured.
    assert [j.job_id for j in trace.jobs] == ["1"]
    assert trace.bad == {"never started": 2, "still running": 2} and trace.total_rows == 5


def test_sacct_json_malformed_record_is_one_bad_row(tmp_path):
    data = json.loads((V2205 / "sacct_trace.json").read_text())
    del data["jobs"][0]["job_id"]
    trace = read_trace(write(tmp_path, "s.json", json.dumps(data)), "sacct")
    assert len(trace.jobs) == 10 and trace.bad == {"malformed job record": 1}


def test_sacct_parsable_columns_by_name_and_bad_rows(tmp_path):
    path = write(
        tmp_path, "sacct.txt",
        "State|JobName|JobID|Submit|Start|ElapsedRaw|AllocTRES|TimelimitRaw|NodeList",
        "COMPLETED|train|10|2026-11-30T10:00:00|2026-11-30T10:05:00|600|cpu=4,gres/gpu=4,node=1|120|g-0",
        "COMPLETED|batch|10.batch|2026-11-30T10:00:00|2026-11-30T10:05:00|600|cpu=4,node=1|120|g-0",
        "PENDING|wait|11|2026-11-30T10:01:00|Unknown|0||120|None assigned",
        "CANCELLED by 0|gone|12|2026-11-30T10:02:00|2026-11-30T10:09:00|0||60|None assigned",
        ("FAILED|x|13|2026-11-30T10:03:00|2026-11-30T10:04:00|60|cpu=2,gres/gpu=2,gres/gpu:a100=2,node=2|"
         "UNLIMITED|g-[0-1]"),
        "COMPLETED|a|b|14|2026-11-30T10:03:00|2026-11-30T10:04:00|60|cpu=1,node=1|60|g-0",
        "COMPLETED|y|15|yesterday|2026-11-30T10:04:00|60|cpu=1,node=1|60|g-0",
        "COMPLETED|z|16|2026-11-30T10:03:00|2026-11-30T10:04:00|sixty|cpu=1,node=1|60|g-0",
        "RUNNING|r|17|2026-11-30T10:03:00|2026-11-30T10:04:00|60|cpu=1,node=1|60|g-0",
        "COMPLETED|short|18",
    )
    trace = read_trace(path, "sacct")
    assert trace.jobs == [
        TraceJob("10", 0.0, 600.0, 7200.0, 4, 1, 4, 4, state="COMPLETED"),
        TraceJob("13", 180.0, 60.0, None, 2, 2, 1, 2, state="FAILED"),   # typed GPUs not counted twice
    ]
    assert trace.bad == {
        "job step, not an allocation (run sacct with -X)": 1,
        "never started": 2,
        "more fields than the header": 1,          # a `|` in JobName: only Constraints may hold one
        "unparsable time in column 'Submit'": 1,
        "unparsable number in column 'ElapsedRaw'": 1,
        "still running": 1,
        "fewer fields than the header": 1,
    }
    assert trace.total_rows == 10


def test_sacct_parsable_times_are_read_in_the_given_zone():
    utc = read_trace(V2205 / "sacct_parsable.txt", "sacct")
    berlin = read_trace(V2205 / "sacct_parsable.txt", "sacct", tz=ZoneInfo("Europe/Berlin"))
    assert berlin.jobs == utc.jobs
    assert utc.epoch_offset - berlin.epoch_offset == 3600


def test_sacct_lower_case_p_trailing_delimiter(tmp_path):
    lines = (V2205 / "sacct_parsable.txt").read_text().splitlines()
    path = write(tmp_path, "p.txt", *(line + "|" for line in lines))
    assert read_trace(path, "sacct").jobs == read_trace(V2205 / "sacct_parsable.txt", "sacct").jobs


# -- swf ---------------------------------------------------------------------------------------------

def test_swf_sample():
    trace = read_trace(SWF, "swf")
    assert trace.total_rows == 14
    assert trace.epoch_offset == 1767225600 + 100        # UnixStartTime + the first submit
    by_id = {j.job_id: j for j in trace.jobs}
    assert [j.job_id for j in trace.jobs] == ["1", "2", "3", "5", "7", "9", "10", "12"]
    assert by_id["1"] == TraceJob("1", 0.0, 3600.0, 7200.0, 8, 1, 8, None, "u3", "g1", "q1", "", "COMPLETED")
    assert (by_id["3"].nodes, by_id["3"].gpus_per_node, by_id["3"].state) == (2, 8, "FAILED")
    assert (by_id["5"].gpus, by_id["5"].partition) == (2, "p2")        # requested processors, no queue
    assert (by_id["7"].nodes, by_id["7"].gpus_per_node) == (2, 6)
    assert (by_id["9"].user, by_id["9"].account, by_id["9"].time_limit_s) == ("", "", None)
    assert (by_id["10"].state, by_id["10"].duration_s) == ("CANCELLED", 300.0)   # cancelled while running
    assert by_id["12"].duration_s == 150.0 and by_id["12"].submit == 800.0
    assert trace.bad == {
        "never started": 1,
        "unknown run time": 1,
        "unparsable number in column 'run time'": 1,
        "wrong number of fields (SWF has 18)": 1,
        "partial-execution line (the job's summary line is read)": 2,
    }
    assert trace.first_bad_line["never started"] == 10


def test_swf_processors_as_fractions_of_gpus():
    trace = read_trace(SWF, "swf", gpus_per_proc=0.25, gpus_per_node=4)
    by_id = {j.job_id: j for j in trace.jobs}
    assert (by_id["3"].gpus, by_id["3"].nodes) == (4, 1)
    assert by_id["2"].gpus == 1                          # a part of a GPU is a whole one


# -- whole-file errors -----------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt,text,match", [
    ("philly", "0,0.0,CLOS,1,1,3.0\n", r"headerless\.txt: line 1: not the Philly trace header"),
    ("philly", "\n\n", r"line 1: the file is empty"),
    ("sacct", "1|1|root|lab|gpu|COMPLETED|2026-11-30T11:14:10\n",
     r"headerless\.txt: line 1: not a `sacct -P` header \(no JobID, Submit, Start, AllocTRES, End or ElapsedRaw\)"),
    ("sacct", '\n{"jobs": [\n  {"job_id": 1,,}\n]}\n', r"headerless\.txt: line 3: not sacct --json output"),
    ("sacct", '{"meta": {}}\n', r"line 1: no \"jobs\" list"),
    ("swf", "1 2 3\n", r"headerless\.txt: line 1: not SWF"),
    ("csv", "x\n", r"unknown trace format 'csv'"),
])
def test_a_file_without_a_recognisable_header_is_an_error(tmp_path, fmt, text, match):
    path = tmp_path / "headerless.txt"
    path.write_text(text)
    with pytest.raises(TraceError, match=match):
        read_trace(path, fmt)


def test_an_unreadable_file_is_an_error_naming_it(tmp_path):
    with pytest.raises(TraceError, match=r"missing\.csv: cannot read the trace: No such file"):
        read_trace(tmp_path / "missing.csv", "philly")
    with pytest.raises(BridgeError, match=r"cannot read the trace"):
        read_trace(tmp_path, "swf")
