"""A write run a second time after its first run failed on a lost or demoted primary (with several
MariaDB hosts the store does exactly that, once): the first run may have committed, and the second
must find its own result instead of failing or doing it twice."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from node.model.errors import NotFound, RunInFlight, VersionConflict
from node.model.jobs import validate
from node.store import Store
from node.store.connection import Attempt
from node.store.jobs import new_id

_first_init = Attempt.__init__


@contextmanager
def second_run() -> Iterator[None]:
    """Every attempt opened meanwhile is a second attempt (``again``), as after a lost primary."""
    def again(self: Attempt, db: object, *, again: bool, transaction: bool) -> None:
        _first_init(self, db, again=True, transaction=transaction)  # type: ignore[arg-type]

    Attempt.__init__ = again  # type: ignore[method-assign]
    try:
        yield
    finally:
        Attempt.__init__ = _first_init  # type: ignore[method-assign]


async def test_an_edit_or_delete_that_committed_is_found_not_refused(store: Store) -> None:
    job = await store.jobs.create(validate({"uri": "http://127.0.0.1:9/", "schedule": "* * * * *"}), 100)
    edited = replace(job, schedule="*/5 * * * *", expect_status=(200, 204))
    after = await store.jobs.update(job.id, edited, if_version=job.version, schedule_changed=True)
    with second_run():  # the same edit again, as its second run: already in place
        again = await store.jobs.update(job.id, edited, if_version=job.version, schedule_changed=True)
    assert again.version == after.version == job.version + 1
    with pytest.raises(VersionConflict):  # a different edit on the old version is still a conflict
        with second_run():
            await store.jobs.update(job.id, replace(job, schedule="*/7 * * * *"), if_version=job.version,
                                   schedule_changed=True)
    with pytest.raises(VersionConflict):  # and the same edit as a first run is one too
        await store.jobs.update(job.id, edited, if_version=job.version, schedule_changed=True)
    version = await store.jobs.delete(job.id, if_version=after.version)
    with second_run():
        assert await store.jobs.delete(job.id, if_version=after.version) == version
    with pytest.raises(NotFound):
        await store.jobs.delete(job.id, if_version=after.version)


async def test_a_run_now_claim_that_committed_is_ours(store: Store) -> None:
    job = await store.jobs.create(validate({"uri": "http://127.0.0.1:9/", "schedule": "0 0 1 1 *",
                                           "concurrencyPolicy": "forbid"}), 100)
    eid = new_id()
    at = datetime.now(UTC)
    fence = await store.executions.claim_run_now(job.id, "n1", eid, at, forbid_overlap=True)
    with second_run():  # not "a run is in flight" (it is ours), not a second row
        assert await store.executions.claim_run_now(job.id, "n1", eid, at, forbid_overlap=True) == fence
    with pytest.raises(RunInFlight):  # another run-now still meets the forbid rule
        await store.executions.claim_run_now(job.id, "n1", new_id(), at, forbid_overlap=True)
    assert [r.id for r in await store.history.executions(job.id, limit=10)] == [eid]


async def test_a_create_that_committed_is_not_made_twice(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = validate({"uri": "http://127.0.0.1:9/", "schedule": "* * * * *"})
    monkeypatch.setattr("node.store.jobs.new_id", lambda: "f" * 16)  # both runs of one create use one id
    first = await store.jobs.create(spec, 100)
    with second_run():
        again = await store.jobs.create(spec, 100)  # found, not a duplicate-key error nor a second job
    assert again.id == first.id and again.version == 1
    assert [j.id for j in await store.jobs.page(limit=10, cursor=None, q=None, paused=None)] == [first.id]
