"""Garbage in the daemon's per-cycle reads gives a skipped, logged line, never an exception (issue 9).

The narrow squeue and sinfo text is parsed every cycle; a line the parsers do not understand (a job
name with a newline, a future Slurm's extra field, a truncated read) must be set aside while every
other line is still read. Hypothesis mutates real captured lines and invents random ones.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import FIXTURES
from slurm_bridge.models import Job, Node
from slurm_bridge.slurm import node_text, pending

V2205 = FIXTURES / "slurm-22.05.8"
SQUEUE = (V2205 / "squeue_pending.txt").read_text().splitlines()
SINFO = (V2205 / "sinfo_nodes.txt").read_text().splitlines()


def mutated(lines: list[str]):
    """A real line with one field replaced, dropped or doubled, or cut short."""
    @st.composite
    def build(draw):
        fields = draw(st.sampled_from(lines)).split("\t")
        i = draw(st.integers(0, len(fields) - 1))
        how = draw(st.sampled_from(["replace", "drop", "double", "cut"]))
        if how == "replace":
            fields[i] = draw(st.text(max_size=30))
        elif how == "drop":
            del fields[i]
        elif how == "double":
            fields.insert(i, fields[i])
        else:
            return "\t".join(fields)[: draw(st.integers(0, 200))]
        return "\t".join(fields)
    return build()


LINES = st.lists(st.one_of(st.text(max_size=120), mutated(SQUEUE)), max_size=8)
NODE_LINES = st.lists(st.one_of(st.text(max_size=120), mutated(SINFO)), max_size=8)


@settings(max_examples=2500, deadline=None)
@given(LINES)
def test_squeue_garbage_is_set_aside_and_the_real_lines_still_read(noise):
    parser = pending.PendingParser()
    jobs = parser.parse("\n".join(noise + SQUEUE) + "\n")
    assert all(isinstance(j, Job) for j in jobs)
    # Every real line is still read (a noise line may be a valid job of its own).
    assert {j.job_id for j in jobs} >= {15, 16, 17, 18, 19, 20, 21, 22, 23}
    read = len(jobs) + len(parser.bad_lines)
    assert read == sum(1 for line in "\n".join(noise + SQUEUE).splitlines() if line)


@settings(max_examples=2500, deadline=None)
@given(NODE_LINES)
def test_sinfo_garbage_is_set_aside_and_the_real_lines_still_read(noise):
    parser = node_text.NodeParser()
    nodes = parser.parse("\n".join(noise + SINFO) + "\n")
    assert all(isinstance(n, Node) for n in nodes)
    assert {n.name for n in nodes} >= {line.split("\t")[0] for line in SINFO}


@settings(max_examples=1000, deadline=None)
@given(st.text(max_size=40))
def test_a_time_limit_is_read_or_refused_with_a_value_error(text):
    # parse_line turns the ValueError into a bad line; nothing else may escape.
    try:
        minutes = pending.time_limit_minutes(text)
    except ValueError:
        return
    assert minutes is None or minutes >= 0
    assert pending.memory_per_node_mb(text, 2) is None or pending.memory_per_node_mb(text, 2) >= 0
