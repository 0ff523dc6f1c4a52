"""A job packed for a cold owned record (model/jobs.pack_job) unpacks equal, whatever its fields hold."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from node.model.calendars import Calendar
from node.model.jobs import ConcurrencyPolicy, Delivery, Job, MisfirePolicy, StoredJob, pack_job, unpack_job
from node.model.schedule import GapPolicy, OverlapPolicy

T0 = datetime(2026, 3, 29, 0, 59, 59, 123000, tzinfo=UTC)


def row_of(job: Job) -> dict[str, Any]:
    """The row MariaDB gives back for ``job``: its spec as JSON text, its times naive UTC, ``paused`` an int."""
    def naive(t: datetime | None) -> datetime | None:
        return None if t is None else t.astimezone(UTC).replace(tzinfo=None)

    return {"id": job.id, "seq": job.seq, "name": job.name, "schedule": job.schedule, "time_zone": job.time_zone,
            "paused": int(job.paused), "spec": json.dumps(job.spec()), "version": job.version, "fence": job.fence,
            "owner": job.owner, "active_since": naive(job.active_since), "created_at": naive(job.created_at),
            "updated_at": naive(job.updated_at), "runs": job.runs, "completed_at": naive(job.completed_at),
            "fail_streak": job.fail_streak, "failing_since": naive(job.failing_since)}


def stored(job: Job) -> Job:
    """The job as the store reads it back (its spec through JSON, its times as MariaDB keeps them)."""
    return Job.from_row(row_of(job))


def packs_from_its_row(job: Job) -> None:
    """A takeover's StoredJob of the job's row schedules it as the Job would, and packs to the same bytes."""
    row = row_of(job)
    sj, full = StoredJob(row), Job.from_row(row)
    assert (sj.id, sj.version, sj.fence, sj.runs, sj.active_since, sj.exclude_calendars) == (
        full.id, full.version, full.fence, full.runs, full.active_since, full.exclude_calendars)
    cals = {"holidays": Calendar(name="holidays", dates=frozenset({date(2026, 12, 25)}))}
    assert sj.timetable(cals) == full.timetable(cals)
    assert sj.pack() == pack_job(full)
    assert unpack_job(sj.pack()) == full == sj.job()


def test_a_plain_job_packs_small_and_unpacks_equal() -> None:
    job = stored(Job(id="9f2c4e1a7b3d5c60", name="nightly", schedule="0 0 1 1 *", uri="http://10.0.0.7:8080/hook",
                     version=3, fence=12, active_since=T0))
    packed = pack_job(job)
    assert unpack_job(packed) == job
    assert len(packed) < 100, len(packed)
    packs_from_its_row(job)


def test_every_field_set_survives() -> None:
    from node.model.schedule import DstPolicy

    job = stored(Job(
        id="a" * 16, seq=7, name="ünïcode ✓", schedule="H/5 * * * *", time_zone="Europe/Lisbon", paused=True,
        uri="https://user:pw@example.com/x?token=abc", method="PUT", headers={"Authorization": "Bearer s3cret"},
        body={"nested": [1, 2.5, None, True, "x" * 300]}, timeout_ms=1234, retries=3, retry_backoff_ms=2000,
        retry_max_backoff_ms=60000, expect_status=(200, 204), misfire_policy=MisfirePolicy.FIRE_ALL,
        misfire_grace_seconds=5, concurrency_policy=ConcurrencyPolicy.BUFFER_ONE, follow_redirects=True,
        delivery=Delivery.AT_LEAST_ONCE, more_schedules=("*/7 * * * *",), start_at=T0, end_at=T0 + timedelta(days=9),
        max_runs=40, jitter_seconds=30, dst_policy=DstPolicy(gap=GapPolicy.SKIP, overlap=OverlapPolicy.BOTH),
        exclude_calendars=("holidays",), skip_until=T0 + timedelta(hours=1), labels={"team": "billing"},
        expect_body="/ok$/i", expect_json=(("$.a", 1),), max_duration_ms=900, pause_after_failures=4,
        alert_uri="http://alerts/x", paused_reason="maintenance", paused_by="ops", paused_at=T0,
        paused_until=T0 + timedelta(days=1), version=9, fence=4, owner="node-2", active_since=T0,
        created_at=T0 - timedelta(days=3), updated_at=T0, runs=17, completed_at=None, fail_streak=2,
        failing_since=T0 - timedelta(seconds=1)))
    assert job.paused_reason == "maintenance" and job.labels and job.dst_policy.gap is GapPolicy.SKIP  # (all kept)
    assert unpack_job(pack_job(job)) == job
    packs_from_its_row(job)


_text = st.text(max_size=40)
_when = st.none() | st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2100, 1, 1)).map(
    lambda d: d.replace(tzinfo=UTC))


@settings(max_examples=200, deadline=None)
@given(name=_text, uri=_text.map(lambda s: "http://h/" + s), body=st.none() | st.recursive(
           st.none() | st.booleans() | st.integers(-2**53, 2**53) | _text,
           lambda kids: st.lists(kids, max_size=3) | st.dictionaries(_text, kids, max_size=3), max_leaves=8),
       headers=st.dictionaries(st.from_regex(r"[A-Za-z][A-Za-z-]{0,10}", fullmatch=True), _text, max_size=3),
       version=st.integers(0, 2**31), fence=st.integers(0, 2**40), runs=st.integers(0, 10**6),
       active_since=_when, completed_at=_when, failing_since=_when, paused=st.booleans(),
       owner=st.none() | _text)
def test_any_job_survives(name: str, uri: str, body: Any, headers: dict[str, str], version: int, fence: int,
                          runs: int, active_since: datetime | None, completed_at: datetime | None,
                          failing_since: datetime | None, paused: bool, owner: str | None) -> None:
    job = stored(Job(id="b" * 16, name=name, schedule="* * * * *", uri=uri, body=body, headers=headers,
                     version=version, fence=fence, runs=runs, active_since=active_since, completed_at=completed_at,
                     failing_since=failing_since, paused=paused, owner=owner))
    assert unpack_job(pack_job(job)) == job
    packs_from_its_row(job)
