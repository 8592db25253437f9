"""SLURM_RESUME_FILE parsing: the shapes slurmctld writes, and every way a file can be wrong.

The resume program must turn any bad file into ResumeFileError: it catches
exactly that to set the nodes down at once. Anything else escapes and leaves
the nodes powering up until ResumeTimeout.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slurm_bridge.resume_file import ResumeFile, ResumeFileError, ResumeJob, manual, parse


def test_slurm_22_05_shape():
    rf = parse('{"jobs":[{"job_id":18,"nodes":"burst[1-2]"},{"job_id":19,"nodes":"burst3"}],'
               '"all_nodes":"burst[1-3]"}')
    assert rf.all_nodes == ("burst1", "burst2", "burst3")
    assert rf.jobs == (ResumeJob(18, ("burst1", "burst2")), ResumeJob(19, ("burst3",)))
    # 22.05 tells neither partition nor features.
    assert all(j.partition is None and j.features is None for j in rf.jobs)


def test_manual_power_up_lists_no_jobs():
    rf = parse('{"jobs":[],"all_nodes":"burst2"}')
    assert rf == ResumeFile(("burst2",), ())
    assert rf.job_of("burst2") is None
    # What the program assumes when slurmctld passes no file at all.
    assert manual(["burst2"]) == rf


def test_missing_jobs_key_is_a_manual_power_up():
    assert parse('{"all_nodes":"burst[2-3]"}') == ResumeFile(("burst2", "burst3"), ())


SHAPE_23_02 = {
    "all_nodes_resume": "cloud[1-3,7-8]",
    "jobs": [
        {"extra": "an --extra string", "features": "c1&c2", "job_id": 140814,
         "nodes_alloc": "cloud[1-4]", "nodes_resume": "cloud[1,3]", "oversubscribe": "OK",
         "partition": "cloud", "reservation": "resv_1234"},
        {"extra": None, "features": "c1|c2", "job_id": 140815, "nodes_alloc": "cloud[1-2]",
         "nodes_resume": "cloud2", "oversubscribe": "NO", "partition": "cloud", "reservation": None},
        {"extra": None, "features": None, "job_id": 140816, "nodes_alloc": "cloud[7-8]",
         "nodes_resume": "cloud[7-8]", "oversubscribe": "NO", "partition": "cloud_exclusive",
         "reservation": None},
    ],
}


def test_slurm_23_02_shape():
    rf = parse(json.dumps(SHAPE_23_02))
    assert rf.all_nodes == ("cloud1", "cloud2", "cloud3", "cloud7", "cloud8")
    # nodes_resume, not nodes_alloc: cloud4 of job 140814 is already up and must not be launched.
    assert rf.jobs == (
        ResumeJob(140814, ("cloud1", "cloud3"), "cloud", "c1&c2"),
        ResumeJob(140815, ("cloud2",), "cloud", "c1|c2"),
        ResumeJob(140816, ("cloud7", "cloud8"), "cloud_exclusive", None),
    )


def test_slurm_26_05_extra_keys_are_ignored():
    data = json.loads(json.dumps(SHAPE_23_02))
    for job in data["jobs"]:
        job.update(exclusive="NO", priority=4294901758)
    assert parse(json.dumps(data)) == parse(json.dumps(SHAPE_23_02))


def test_all_nodes_resume_wins_over_all_nodes():
    rf = parse('{"all_nodes_resume":"b1","all_nodes":"b[1-9]","jobs":[]}')
    assert rf.all_nodes == ("b1",)


def test_job_of():
    rf = parse(json.dumps(SHAPE_23_02))
    assert rf.job_of("cloud3").job_id == 140814
    assert rf.job_of("cloud2").job_id == 140815
    assert rf.job_of("cloud8").job_id == 140816
    assert rf.job_of("cloud4") is None        # allocated to 140814 but not being resumed
    assert rf.job_of("cloud") is None         # no prefix matching


# --------------------------------------------------------------- errors ---

def error(text: str) -> str:
    with pytest.raises(ResumeFileError) as info:
        parse(text)
    return str(info.value)


def test_not_json():
    msg = error('{"all_nodes": "b1",')
    assert "not JSON" in msg and "line 1" in msg


def test_empty_file():
    assert "not JSON" in error("")


def test_not_an_object():
    assert error('[{"all_nodes": "b1"}]') == "resume file: expected a JSON object, got list"
    assert "got str" in error('"b1"')


def test_missing_all_nodes():
    msg = error('{"jobs": []}')
    assert "all_nodes" in msg and "all_nodes_resume" in msg


def test_all_nodes_not_a_string():
    assert "no all_nodes" in error('{"all_nodes": ["b1"]}')


@pytest.mark.parametrize("expr, why", [
    ("b[1-3", "unbalanced brackets"),
    ("b[3-1]", "start > stop"),
    ("", "empty hostlist"),
    ("b1 b2", "invalid node name"),
])
def test_malformed_all_nodes(expr, why):
    msg = error(json.dumps({"all_nodes": expr}))
    assert msg.startswith("resume file: all_nodes:")
    assert why in msg


def test_jobs_not_a_list():
    assert error('{"all_nodes": "b1", "jobs": {"job_id": 1, "nodes": "b1"}}') == "resume file: jobs is not a list"


def test_job_not_an_object():
    assert error('{"all_nodes": "b1", "jobs": [18]}') == "resume file: jobs[0] is not an object"


@pytest.mark.parametrize("job, shown", [
    ({"nodes": "b1"}, "None"),
    ({"job_id": 0, "nodes": "b1"}, "0"),
    ({"job_id": -4, "nodes": "b1"}, "-4"),
    ({"job_id": True, "nodes": "b1"}, "True"),       # JSON true is not job 1
    ({"job_id": "18", "nodes": "b1"}, "'18'"),
    ({"job_id": 18.0, "nodes": "b1"}, "18.0"),
])
def test_bad_job_id(job, shown):
    doc = {"all_nodes": "b[1-2]", "jobs": [{"job_id": 7, "nodes": "b2"}, job]}
    assert error(json.dumps(doc)) == f"resume file: jobs[1].job_id is not a positive integer: {shown}"


def test_job_without_nodes():
    assert "jobs[0] has no nodes/nodes_resume hostlist" in error('{"all_nodes":"b1","jobs":[{"job_id":5}]}')


def test_job_with_malformed_nodes():
    msg = error('{"all_nodes":"b1","jobs":[{"job_id":5,"nodes":"b[1"}]}')
    assert msg.startswith("resume file: jobs[0].nodes:") and "unbalanced brackets" in msg


def test_job_nodes_outside_all_nodes():
    msg = error('{"all_nodes":"b[1-2]","jobs":[{"job_id":5,"nodes":"b[2-4]"}]}')
    # The first stray node is named, so the admin can find it in slurmctld's log.
    assert msg == "resume file: jobs[0] names b3 which is not in all_nodes"


def test_deeply_nested_json_is_a_resume_file_error():
    # json.loads raises RecursionError (not JSONDecodeError) past ~1000 levels; the
    # program only catches ResumeFileError, so this would leave the nodes powering up.
    assert "not JSON" in error("[" * 100_000 + "]" * 100_000)


# ------------------------------------------------------------- property ---

hostlists = st.sampled_from(["b1", "b[1-3]", "b[1-2]", "b2", "b[1", "cloud[1,3]", "", "b[3-1]", "b1,b1"])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12) | hostlists,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["all_nodes", "all_nodes_resume", "jobs", "job_id", "nodes", "nodes_resume",
                         "partition", "features"]) | st.text(max_size=6),
        children, max_size=5),
    max_leaves=25,
)
# Wholly random values are almost never objects with a hostlist, so half the examples are
# resume-file-like documents whose fields are each either plausible or random: they reach
# the job checks that plain random values never do.
jobs_like = st.fixed_dictionaries(
    {"job_id": st.integers(-2, 2**40) | st.integers(1, 50) | json_values, "nodes": hostlists},
    optional={"nodes_resume": hostlists | json_values, "partition": json_values, "features": json_values})
resume_like = st.fixed_dictionaries(
    {"all_nodes": hostlists, "jobs": st.lists(jobs_like | json_values, max_size=4) | jobs_like | json_values},
    optional={"all_nodes_resume": hostlists | json_values})


@settings(max_examples=2000, deadline=None)
@given(json_values | resume_like)
def test_any_json_value_is_parsed_or_rejected_cleanly(value):
    try:
        rf = parse(json.dumps(value))
    except ResumeFileError as exc:
        assert str(exc).startswith("resume file")
        return
    # Accepted: every job's nodes are among all_nodes, and every job id is a real id.
    assert isinstance(rf, ResumeFile)
    for job in rf.jobs:
        assert set(job.nodes) <= set(rf.all_nodes)
        assert type(job.job_id) is int and job.job_id > 0


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=40))
def test_any_text_is_parsed_or_rejected_cleanly(text):
    try:
        parse(text)
    except ResumeFileError:
        pass
