"""A write run a second time after its first run failed on a lost or demoted primary (with several
MariaDB hosts the store does exactly that, once): the first run may have committed, and the second
must find its own result instead of failing or doing it twice."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from node.model.jobs import validate
from node.store import _RETRYING, NotFound, RunInFlight, Store, VersionConflict, new_id


@contextmanager
def second_run() -> Iterator[None]:
    token = _RETRYING.set(True)
    try:
        yield
    finally:
        _RETRYING.reset(token)


async def test_an_edit_or_delete_that_committed_is_found_not_refused(store: Store) -> None:
    job = await store.create_job(validate({"uri": "http://127.0.0.1:9/", "schedule": "* * * * *"}), 100)
    edited = replace(job, schedule="*/5 * * * *", expect_status=(200, 204))
    after = await store.update_job(job.id, edited, if_version=job.version, schedule_changed=True)
    with second_run():  # the same edit again, as its second run: already in place
        again = await store.update_job(job.id, edited, if_version=job.version, schedule_changed=True)
    assert again.version == after.version == job.version + 1
    with pytest.raises(VersionConflict):  # a different edit on the old version is still a conflict
        with second_run():
            await store.update_job(job.id, replace(job, schedule="*/7 * * * *"), if_version=job.version,
                                   schedule_changed=True)
    with pytest.raises(VersionConflict):  # and the same edit as a first run is one too
        await store.update_job(job.id, edited, if_version=job.version, schedule_changed=True)
    version = await store.delete_job(job.id, if_version=after.version)
    with second_run():
        assert await store.delete_job(job.id, if_version=after.version) == version
    with pytest.raises(NotFound):
        await store.delete_job(job.id, if_version=after.version)


async def test_a_run_now_claim_that_committed_is_ours(store: Store) -> None:
    job = await store.create_job(validate({"uri": "http://127.0.0.1:9/", "schedule": "0 0 1 1 *",
                                           "concurrencyPolicy": "forbid"}), 100)
    eid = new_id()
    at = datetime.now(UTC)
    fence = await store.claim_manual(job.id, "n1", eid, at, forbid_overlap=True)
    with second_run():  # not "a run is in flight" (it is ours), not a second row
        assert await store.claim_manual(job.id, "n1", eid, at, forbid_overlap=True) == fence
    with pytest.raises(RunInFlight):  # another run-now still meets the forbid rule
        await store.claim_manual(job.id, "n1", new_id(), at, forbid_overlap=True)
    assert [r["id"] for r in await store.executions(job.id, limit=10)] == [eid]


async def test_a_create_that_committed_is_not_made_twice(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = validate({"uri": "http://127.0.0.1:9/", "schedule": "* * * * *"})
    monkeypatch.setattr("node.store.new_id", lambda: "f" * 32)  # both runs of one create use one id
    first = await store.create_job(spec, 100)
    with second_run():
        again = await store.create_job(spec, 100)  # found, not a duplicate-key error nor a second job
    assert again.id == first.id and again.version == 1
    assert [j.id for j in await store.list_jobs(limit=10, cursor=None, q=None, paused=None)] == [first.id]
