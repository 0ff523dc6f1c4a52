"""The per-job records a node keeps for a million jobs (issue 22, memory per job): an owned job's rarely used
fields live in a side dict that exists only while one differs from its default, its anchor is a float, and the
catalogue holds each summary as one int."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.cluster.catalogue import Summaries
from node.model.jobs import JobSummary, validate
from node.scheduling.ownership import NO_PENDING, Owned, OwnedJobs


def _owned() -> Owned:
    job = validate({"uri": "http://127.0.0.1:9/", "schedule": "* * * * *"})
    return Owned.of(job, id="j1", timetable=job.timetable(), fence=3, anchor=datetime(2026, 12, 7, 5, 0, 1, 250000, UTC))


def test_an_owned_jobs_rare_fields_take_no_room_until_used_and_give_it_back() -> None:
    o = _owned()
    assert o._more is None and o.inflight == 0 and o.pending is NO_PENDING and o.queue == () and not o.releasing
    o.inflight += 1
    o.releasing = True
    assert o._more == {"inflight": 1, "releasing": True} and o.inflight == 1 and o.releasing
    o.pend(claim=SimpleNamespace(id="e1"), handle=object())  # type: ignore[arg-type]
    assert len(o.pending) == 1
    o.inflight -= 1
    o.releasing = False
    o.unpend(next(iter(o.pending)))
    assert o._more is None and o.pending is NO_PENDING
    with pytest.raises(TypeError):
        Owned(id="x", definition=b"", version=1, timetable=o.timetable, fence=1, anchor=o.anchor, nonsense=1)


def test_the_anchor_keeps_its_microseconds() -> None:
    o = _owned()
    assert o.anchor == datetime(2026, 12, 7, 5, 0, 1, 250000, UTC)
    for us in (0, 1, 999, 123456, 999999):
        at = datetime(2038, 1, 19, 3, 14, 7, us, UTC)
        o.anchor = at
        assert o.anchor == at and Owned.planned_past([o], at) == [o.id]
        assert Owned.planned_past([o], at.replace(second=8)) == []


def test_the_audit_looks_at_the_jobs_planned_past_the_minute_and_not_being_released() -> None:
    at = datetime(2026, 12, 7, 5, 1, tzinfo=UTC)
    records = []
    for i, (anchor, releasing) in enumerate([(at.replace(minute=0), False), (at, False), (at.replace(second=30), False),
                                             (at.replace(second=30), True)]):
        o = _owned()
        o.id, o.anchor, o.releasing = f"j{i}", anchor, releasing
        records.append(o)
    assert Owned.planned_past(records, at) == ["j1", "j2"]


@given(version=st.integers(1, 2**40), paused=st.booleans(), deleted=st.booleans(), completed=st.booleans())
def test_a_summary_is_one_int_and_reads_back_whole(version: int, paused: bool, deleted: bool, completed: bool) -> None:
    s = JobSummary(id="j1", version=version, paused=paused, deleted=deleted, completed=completed)
    jobs = Summaries()
    jobs["j1"] = s
    assert jobs["j1"] == s and jobs.get("j1") == s and jobs.get("j2") is None and list(jobs) == ["j1"]
    assert jobs.active_ids() == (["j1"] if s.active else [])
    jobs.drop("j1")
    assert len(jobs) == 0 and "j1" not in jobs


def test_an_owned_jobs_lock_is_held_and_stays_held_once_it_leaves_until_released() -> None:
    owned = OwnedJobs()
    held = owned.held
    held.update(["a", "b"])  # acquired, being taken over
    owned["a"] = _owned()
    assert held.others == {"b"} and "a" in held and "b" in held and len(held) == 2 and set(held) == {"a", "b"}
    held.add("a")
    assert held.others == {"b"}  # (an owned job's lock is held already)
    del owned["a"]  # released or dropped: its lock is a stray until deleted in Redis
    assert held.others == {"a", "b"}
    owned["c"] = _owned()
    owned.clear()  # a lapse: every lock a stray
    assert held.others == {"a", "b", "c"}
    owned["d"] = _owned()
    assert owned.pop("d") is not None and "d" in held.others
    held.difference_update(["a", "b", "c", "d"])
    assert not held and len(held) == 0
