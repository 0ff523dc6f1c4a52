"""Bulk apply's store (node/store/bulk.py) against a real MariaDB: a batch is written whole, in one transaction,
as the single paths write each job (row, history, audit), or not at all; in statements under the packet limit; and
the second attempt after a lost connection (several MariaDB hosts) neither writes a batch twice nor takes a batch
as written when it was not.

For the second attempt the store is given two hosts (the real MariaDB and a closed port), so a lost connection is
retried on "the new primary" (the same server) with ``attempt.again`` set, as after a failover; the fault is
injected at the batch's COMMIT."""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import aiomysql
import pytest
from asyncmy.cursors import DictCursor
from asyncmy.errors import OperationalError

from node.model.audit import Actor, AuditAction, AuditEntry, job_changes
from node.model.calendars import validate as validate_calendar
from node.model.errors import TooManyJobs, UnknownCalendars
from node.model.jobs import validate
from node.store import DatabaseURL, Store
from node.store.bulk import STATEMENT_BYTES, JobEdit, NewJob, StaleJobs
from node.store.jobs import new_id
from tests.harness import DATABASE_URL, free_port

ACTOR = Actor("ops", "cli", "node-a")


def _new(i: int, **fields: object) -> NewJob:
    job = validate({"uri": f"http://127.0.0.1:9/{i}", "schedule": "0 3 * * *", "name": f"job-{i}", **fields})
    return NewJob(id=new_id(), job=job, audit=AuditEntry(ACTOR, AuditAction.CREATE, job_changes(None, job)))


async def _count(store: Store, sql: str, args: tuple[object, ...] = ()) -> int:
    row = await store.db.fetchone(sql, args)
    assert row is not None
    return int(next(iter(row.values())))


async def test_creates_and_edits_in_one_transaction_as_the_single_paths_write_them(store: Store) -> None:
    first = [_new(i) for i in range(1500)]  # more than one statement's rows
    await store.bulk.apply(first, [], max_jobs=10_000)
    assert await _count(store, "SELECT COUNT(*) FROM jobs WHERE deleted_at IS NULL AND version = 1") == 1500
    assert await _count(store, "SELECT COUNT(*) FROM job_history WHERE version = 1") == 1500
    assert await _count(store, "SELECT COUNT(*) FROM audit_log WHERE action = 'create' AND from_version IS NULL"
                               " AND to_version = 1 AND actor = 'ops' AND via = 'cli' AND node = 'node-a'") == 1500
    # one instant for the batch: created, updated, active since, the history's valid_from, the audit's at
    row = await store.db.fetchone("SELECT COUNT(DISTINCT created_at) AS a, COUNT(DISTINCT updated_at) AS b,"
                                  " SUM(created_at = updated_at AND updated_at = active_since) AS c FROM jobs")
    assert row == {"a": 1, "b": 1, "c": 1500}
    job = await store.jobs.get(first[7].id)
    assert (job.name, job.version, job.uri) == ("job-7", 1, "http://127.0.0.1:9/7")
    hit = await store.jobs.page(limit=5, cursor=None, q="127.0.0.1:9/7", paused=None)
    assert first[7].id in {j.id for j in hit}

    # edits: a new schedule restarts the timetable, a rename does not, a pause keeps who paused it
    before = {j.id: j for j in await store.jobs.get_many([first[0].id, first[1].id, first[2].id])}
    a = replace(before[first[0].id], schedule="*/5 * * * *")
    b = replace(before[first[1].id], name="renamed")
    until = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
    c = replace(before[first[2].id], paused=True, paused_by="ops", paused_until=until)
    edits = [JobEdit(id=j.id, job=j, version=1, restart=r,
                     audit=AuditEntry(ACTOR, AuditAction.UPDATE, job_changes(before[j.id], j)))
             for j, r in ((a, True), (b, False), (c, False))]
    more = [_new(5000)]
    await store.bulk.apply(more, edits, max_jobs=10_000)
    after = {j.id: j for j in await store.jobs.get_many([a.id, b.id, c.id])}
    assert [after[x.id].version for x in (a, b, c)] == [2, 2, 2]
    assert after[a.id].schedule == "*/5 * * * *" and after[a.id].active_since == after[a.id].updated_at
    assert after[b.id].name == "renamed" and after[b.id].active_since == before[b.id].active_since
    assert after[c.id].paused and after[c.id].paused_by == "ops" and after[c.id].paused_until == until
    assert await store.jobs.pauses_ended() == []  # (its end is in the column the sweep reads, not yet passed)
    assert await _count(store, "SELECT COUNT(*) FROM jobs WHERE paused_until IS NOT NULL") == 1
    rows = await store.db.fetchall("SELECT job_id, from_version, to_version, changes FROM audit_log"
                                   " WHERE action = 'update' ORDER BY job_id")
    assert {(r["job_id"], r["from_version"], r["to_version"]) for r in rows} == {(x.id, 1, 2) for x in (a, b, c)}
    assert json.loads(next(r["changes"] for r in rows if r["job_id"] == b.id)) == {"name": ["job-1", "renamed"]}
    versions = await store.history.versions(a.id, limit=10)
    assert [v.version for v in versions] == [2, 1] and versions[0].job.schedule == "*/5 * * * *"
    assert (await store.jobs.get(more[0].id)).version == 1


async def test_a_stale_edit_writes_nothing(store: Store) -> None:
    (one, two) = [_new(i) for i in range(2)]
    await store.bulk.apply([one, two], [], max_jobs=100)
    await store.jobs.update(one.id, replace(one.job, name="someone else"), if_version=1, schedule_changed=False)
    edits = [JobEdit(id=x.id, job=replace(x.job, name="mine"), version=1, audit=AuditEntry(ACTOR, AuditAction.UPDATE))
             for x in (one, two)]
    with pytest.raises(StaleJobs) as e:
        await store.bulk.apply([_new(9)], edits, max_jobs=100)
    assert e.value.ids == [one.id]
    assert await _count(store, "SELECT COUNT(*) FROM jobs") == 2  # not the create either
    assert (await store.jobs.get(two.id)).version == 1
    await store.jobs.delete(two.id)
    with pytest.raises(StaleJobs):  # a deleted job is not edited
        await store.bulk.apply([], edits[1:], max_jobs=100)


async def test_a_missing_calendar_and_the_job_cap_write_nothing(store: Store) -> None:
    await store.calendars.put(validate_calendar("holidays", {"dates": ["2026-12-25"]}), if_version=None)
    ok, bad = _new(1, excludeCalendars=["holidays"]), _new(2, excludeCalendars=["holidays", "nope"])
    with pytest.raises(UnknownCalendars) as e:
        await store.bulk.apply([ok, bad], [], max_jobs=100)
    assert e.value.names == ["nope"]
    with pytest.raises(TooManyJobs):
        await store.bulk.apply([_new(i) for i in range(11)], [], max_jobs=10)
    assert await _count(store, "SELECT COUNT(*) FROM jobs") == 0
    assert await _count(store, "SELECT COUNT(*) FROM audit_log") == 0
    await store.bulk.apply([ok, *[_new(i) for i in range(3, 12)]], [], max_jobs=10)  # exactly the cap
    assert await _count(store, "SELECT COUNT(*) FROM jobs") == 10


async def test_a_reopen_restarts_the_timetable_as_the_single_path_does(store: Store) -> None:
    """A completed job an edit lets fire again (a higher maxRuns): ``active_since`` is the edit's instant, as
    Jobs.update sets it, so the owner does not fire the instants that passed while it was completed."""
    (one,) = [_new(1, maxRuns=1)]
    await store.bulk.apply([one], [], max_jobs=100)
    await store.db.execute("UPDATE jobs SET completed_at = NOW(3) - INTERVAL 1 HOUR, active_since = NOW(3) -"
                           " INTERVAL 1 DAY, version = 2 WHERE id = %s", (one.id,))
    edit = JobEdit(id=one.id, job=replace(one.job, max_runs=4), version=2, reopen=True,
                   audit=AuditEntry(ACTOR, AuditAction.UPDATE, {"maxRuns": [1, 4]}))
    await store.bulk.apply([], [edit], max_jobs=100)
    row = await store.db.fetchone("SELECT active_since, updated_at, completed_at, version FROM jobs WHERE id = %s",
                                  (one.id,))
    assert row is not None and (row["active_since"], row["completed_at"], row["version"]) == (row["updated_at"], None, 3)


async def test_big_rows_are_cut_into_statements_under_the_packet_limit(store: Store,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """120 jobs of 64 KiB bodies (emoji: 12 bytes each in the spec's JSON, escaped again in the statement): ~45 MiB
    as one statement, past max_allowed_packet. Every statement stays under STATEMENT_BYTES; the batch is written."""
    sizes: list[int] = []

    class Spy(DictCursor):
        async def execute(self, query: str, args: Any = None) -> int:
            sizes.append(len(self.mogrify(query, args).encode()))
            return await super().execute(query, args)

    monkeypatch.setattr(store.db, "cursor_class", Spy)
    emoji = "\U0001F600" * (16 * 1024 - 8)
    creates = [_new(i, body=emoji) for i in range(120)]
    await store.bulk.apply(creates, [], max_jobs=1000)
    edits = [JobEdit(id=c.id, job=replace(c.job, body=emoji[:-1]), version=1,
                     audit=AuditEntry(ACTOR, AuditAction.UPDATE, {"body": [emoji, emoji[:-1]]})) for c in creates]
    await store.bulk.apply([], edits, max_jobs=1000)
    assert max(sizes) <= STATEMENT_BYTES and sum(sizes) > 8 * STATEMENT_BYTES, (max(sizes), sum(sizes))
    assert await _count(store, "SELECT COUNT(*) FROM jobs WHERE version = 2") == 120
    assert await _count(store, "SELECT COUNT(*) FROM job_history") == 240
    assert await _count(store, "SELECT COUNT(*) FROM audit_log") == 240
    assert (await store.jobs.get(creates[77].id)).body == emoji[:-1]


# ---- a second attempt after a lost connection -----------------------------------------------------------------


@pytest.fixture
async def two_host_store() -> AsyncIterator[Store]:
    name = f"cronring_itr_{secrets.token_hex(4)}"
    u = DatabaseURL.parse(DATABASE_URL)
    auth = f"{u.user}:{u.password}@" if u.password else f"{u.user}@"
    s = Store(DatabaseURL.parse(f"mysql://{auth}{u.host}:{u.port},127.0.0.1:{free_port()}/{name}"), pool_size=5,
              connect_timeout=1.0)
    await s.start()
    yield s
    await s.close()
    conn = await aiomysql.connect(host=u.host, port=u.port, user=u.user, password=u.password, autocommit=True)
    async with conn.cursor() as cur:
        await cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
    conn.close()


def _fail_commit(store: Store, monkeypatch: pytest.MonkeyPatch, *, commit_first: bool,
                 meanwhile: Callable[[], Awaitable[None]] | None = None) -> list[int]:
    """The first COMMIT of a batch is lost: committed then the reply lost (``commit_first``), or the connection lost
    before it (rolled back); ``meanwhile`` runs between the loss and the second attempt."""
    fired: list[int] = []

    class Spy(DictCursor):
        async def execute(self, query: str, args: Any = None) -> int:
            if query == "COMMIT" and not fired:
                fired.append(1)
                await super().execute("COMMIT" if commit_first else "ROLLBACK")
                if meanwhile is not None:
                    await meanwhile()
                raise OperationalError(2013, "Lost connection to server during query (injected)")
            return await super().execute(query, args)

    monkeypatch.setattr(store.db, "cursor_class", Spy)
    return fired


async def test_a_lost_reply_after_commit_writes_the_batch_once(two_host_store: Store,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    store = two_host_store
    fired = _fail_commit(store, monkeypatch, commit_first=True)
    creates = [_new(i) for i in range(300)]
    await store.bulk.apply(creates, [], max_jobs=10_000)
    assert fired
    assert await _count(store, "SELECT COUNT(*) FROM jobs") == 300
    assert await _count(store, "SELECT COUNT(*) FROM audit_log") == 300
    # edits alone too: the batch's mark (its first audit row) is found, nothing is written again
    fired.clear()
    edits = [JobEdit(id=c.id, job=replace(c.job, retries=2), version=1,
                     audit=AuditEntry(ACTOR, AuditAction.UPDATE, {"retries": [0, 2]})) for c in creates]
    await store.bulk.apply([], edits, max_jobs=10_000)
    assert fired
    assert await _count(store, "SELECT COUNT(*) FROM jobs WHERE version = 2") == 300
    assert await _count(store, "SELECT COUNT(*) FROM audit_log") == 600


async def test_an_identical_edit_made_meanwhile_is_not_taken_for_the_batch(two_host_store: Store,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Edits [A, B]; the first attempt is rolled back (the connection lost before COMMIT); meanwhile another writer
    makes the very same edit to A (two CI runs applying one file). A in place at the next version is not the batch's
    mark: the second attempt writes again, finds A changed since the batch was validated (StaleJobs: the caller
    validates again, A now unchanged), and B is never reported written when it was not."""
    store = two_host_store
    a, b = _new(1), _new(2)
    await store.bulk.apply([a, b], [], max_jobs=100)
    current = {j.id: j for j in await store.jobs.get_many([a.id, b.id])}
    edits = [JobEdit(id=x.id, job=replace(current[x.id], retries=3), version=1,
                     audit=AuditEntry(ACTOR, AuditAction.UPDATE, {"retries": [0, 3]})) for x in (a, b)]

    async def someone_else() -> None:
        await store.jobs.update(a.id, edits[0].job, if_version=1, schedule_changed=False)

    fired = _fail_commit(store, monkeypatch, commit_first=False, meanwhile=someone_else)
    with pytest.raises(StaleJobs) as stale:
        await store.bulk.apply([], edits, max_jobs=100)
    assert fired and stale.value.ids == [a.id]
    after = {j.id: j for j in await store.jobs.get_many([a.id, b.id])}
    assert (after[a.id].version, after[a.id].retries) == (2, 3)
    assert (after[b.id].version, after[b.id].retries) == (1, 0)  # nothing of the batch written
    assert await _count(store, "SELECT COUNT(*) FROM audit_log WHERE action = 'update'") == 0  # (theirs has none)
