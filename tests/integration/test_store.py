"""The store against a real MariaDB: migrations under GET_LOCK, fenced claims, the claim race."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from node.model.backfills import Backfill
from node.model.executions import Claim, Execution, ExecutionState, new_execution_id
from node.model.jobs import validate
from node.store import MIGRATIONS, Store
from node.store import jobs as jobs_module


async def test_migrations_run_once_with_many_nodes_starting(store: Store) -> None:
    others = [Store(store.db.url) for _ in range(6)]
    await asyncio.gather(*(o.start() for o in others))
    for o in others:
        await o.close()
    rows = await store.db.fetchall("SELECT version FROM schema_migrations")
    assert [r["version"] for r in rows] == [v for v, _ in MIGRATIONS]


async def test_claim_race_exactly_one_per_tick_never_stale(store: Store) -> None:
    job = await store.jobs.create(validate({"uri": "http://127.0.0.1:9/", "schedule": "* * * * * *"}), 100)
    (t,) = await store.executions.take_over([job.id], "node-a")
    fence = t.fence
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    ticks = [t0 + timedelta(seconds=i) for i in range(40)]
    won_by: Counter[tuple[str, int]] = Counter()

    async def claimer(name: str, claim_fence: int) -> None:
        order = ticks[:]
        random.shuffle(order)
        for k in range(0, len(order), 5):
            claims = [Claim(id=new_execution_id(), job_id=job.id, scheduled_at=x, fence=claim_fence) for x in order[k : k + 5]]
            won = (await store.executions.claim(name, claims)).won
            for c in claims:
                if c.id in won:
                    won_by[(c.scheduled_at.isoformat(), claim_fence)] += 1

    # 24 concurrent claimers: a third with the current fence, the rest stale (older epochs, written or not; a higher
    # fence is a newer owner's epoch: test_an_owners_first_write_ends_an_older_owners_claims)
    fences = [fence, fence - 1, 0] * 8
    await asyncio.gather(*(claimer(f"n{i}", f) for i, f in enumerate(fences)))
    rows = await store.history.all_executions([job.id])
    per_tick = Counter(r.scheduled_at for r in rows)
    assert len(rows) == len(ticks) and set(per_tick.values()) == {1}
    assert {r.fence for r in rows} == {fence}
    assert all(f == fence for (_, f) in won_by)


async def test_takeover_makes_old_owner_claims_fail_and_abandons_its_open_rows(store: Store) -> None:
    job = await store.jobs.create(validate({"uri": "http://127.0.0.1:9/", "schedule": "* * * * * *"}), 100)
    (a,) = await store.executions.take_over([job.id], "node-a")
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    c1 = Claim(id=new_execution_id(), job_id=job.id, scheduled_at=t0, fence=a.fence)
    assert (await store.executions.claim("node-a", [c1])).won == {c1.id}
    (b,) = await store.executions.take_over([job.id], "node-b")
    assert b.fence == a.fence + 1 and b.last_tick == t0
    late = Claim(id=new_execution_id(), job_id=job.id, scheduled_at=t0 + timedelta(seconds=1), fence=a.fence)
    assert (await store.executions.claim("node-a", [late])).won == set()
    (row,) = [r for r in await store.history.all_executions([job.id]) if r.id == c1.id]
    assert row.state == "abandoned" and "not re-sent" in row.error


async def test_bump_racing_claims_never_lets_a_stale_fence_win(store: Store) -> None:
    """Claims under epoch a race a takeover that draws epoch b and claims under it: once the new owner's first
    claim has returned (its epoch is written with it), no claim under a that starts after wins; every tick has
    one row."""
    job = await store.jobs.create(validate({"uri": "http://127.0.0.1:9/", "schedule": "* * * * * *"}), 100)
    (a,) = await store.executions.take_over([job.id], "node-a")
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    written = asyncio.Event()
    late_wins: list[int] = []

    async def old_owner() -> None:
        for i in range(200):
            after = written.is_set()
            c = Claim(id=new_execution_id(), job_id=job.id, scheduled_at=t0 + timedelta(seconds=i), fence=a.fence)
            if c.id in (await store.executions.claim("node-a", [c])).won and after:
                late_wins.append(i)

    async def new_owner() -> None:
        await asyncio.sleep(0.05)
        (b,) = await store.executions.take_over([job.id], "node-b")
        assert b.fence > a.fence
        for i in range(200):
            await store.executions.claim("node-b", [Claim(id=new_execution_id(), job_id=job.id,
                                                          scheduled_at=t0 + timedelta(seconds=i), fence=b.fence)])
            written.set()

    await asyncio.gather(old_owner(), new_owner())
    rows = await store.history.all_executions([job.id])
    assert len(rows) == 200 and len({r.scheduled_at for r in rows}) == 200
    assert written.is_set() and late_wins == []


async def test_an_owners_first_write_ends_an_older_owners_claims(store: Store) -> None:
    """Fences are epochs: each takeover draws one above every fence issued, and the owner's first write (here a
    claim) gives it to the job, upwards only. An older owner claims until then, never after; a newer epoch
    written first makes the older one's write a no-op."""
    job = await store.jobs.create(validate({"uri": "http://127.0.0.1:9/", "schedule": "* * * * * *"}), 100)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)

    def claim(fence: int, k: int) -> Claim:
        return Claim(id=new_execution_id(), job_id=job.id, scheduled_at=t0 + timedelta(seconds=k), fence=fence)

    (a,) = await store.executions.take_over([job.id], "node-a")
    (b,) = await store.executions.take_over([job.id], "node-b")
    (c,) = await store.executions.take_over([job.id], "node-c")
    assert 0 < a.fence < b.fence < c.fence and not a.handover  # (nobody wrote a fence: no hand-over yet)
    assert (await store.db.fetchone("SELECT fence FROM jobs WHERE id = %s", (job.id,)))["fence"] == 0
    first = claim(a.fence, 0)
    assert (await store.executions.claim("node-a", [first])).won == {first.id}  # a stale owner, before any write
    later = claim(c.fence, 1)
    assert (await store.executions.claim("node-c", [later])).won == {later.id}  # the newest epoch, written
    row = await store.db.fetchone("SELECT fence, owner FROM jobs WHERE id = %s", (job.id,))
    assert (row["fence"], row["owner"]) == (c.fence, "node-c")
    for fence, node in ((a.fence, "node-a"), (b.fence, "node-b")):  # older epochs, written or never: refused
        assert (await store.executions.claim(node, [claim(fence, 2)])).won == set()
    assert (await store.db.fetchone("SELECT fence FROM jobs WHERE id = %s", (job.id,)))["fence"] == c.fence
    (d,) = await store.executions.take_over([job.id], "node-d")
    assert d.fence > c.fence and d.handover


async def test_record_batches_outcomes(store: Store) -> None:
    job = await store.jobs.create(validate({"uri": "http://127.0.0.1:9/", "schedule": "* * * * * *"}), 100)
    (a,) = await store.executions.take_over([job.id], "n")
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    claims = [Claim(id=new_execution_id(), job_id=job.id, scheduled_at=t0 + timedelta(seconds=i), fence=a.fence) for i in range(50)]
    assert len((await store.executions.claim("n", claims)).won) == 50
    await store.executions.record([Execution(id=c.id, job_id=c.job_id, scheduled_at=c.scheduled_at, fence=a.fence, state="succeeded",
                                node="n", attempts=1, status_code=200, duration_ms=3, lateness_ms=1) for c in claims])
    rows = await store.history.all_executions([job.id])
    assert {r.state for r in rows} == {"succeeded"} and {r.status_code for r in rows} == {200}
    assert await store.history.apply_retention([job.id], 10) == 40


async def test_json_reads_agree_with_the_column_reads(store: Store) -> None:
    """The API's reads (rows as JSON objects built by MariaDB) give what plain column reads give."""
    job = await store.jobs.create(validate({
        "uri": "http://127.0.0.1:9/", "schedule": "* * * * * *", "name": 'n\t"é😀</script>',
        "headers": {"X-A": "b\\c"}, "body": {"k": [1, "\n\u2028"]}}), 100)
    got, last = await store.jobs.get_and_last(job.id)
    assert got == await store.jobs.get(job.id) and last is None
    (t,) = await store.executions.take_over([job.id], "node-a")
    t0 = datetime(2026, 3, 29, 1, 0, 0, 123000, tzinfo=UTC)
    claims = [Claim(id=new_execution_id(), job_id=job.id, scheduled_at=t0 + timedelta(seconds=i), fence=t.fence)
              for i in range(3)]
    assert len((await store.executions.claim("node-a", claims)).won) == 3
    await store.executions.record([Execution(id=claims[1].id, job_id=job.id, scheduled_at=claims[1].scheduled_at, fence=t.fence,
                                state="failed", node="node-a", attempts=2, status_code=500, duration_ms=12,
                                lateness_ms=3, error="bad\x00 \"x\"", response_excerpt="<b>\u2028</b>",
                                started_at=t0, finished_at=t0 + timedelta(seconds=2))])
    got, last = await store.jobs.get_and_last(job.id)
    assert got == await store.jobs.get(job.id)
    by_columns = next(r for r in await store.history.all_executions([job.id]) if r.id == claims[1].id)
    assert last == by_columns == (await store.history.last_executions([job.id]))[job.id]
    assert last.id == claims[1].id and last.error == "bad\x00 \"x\"" and last.started_at == t0
    assert await store.jobs.page(limit=10, cursor=None, q="script", paused=None) == [got]


async def test_a_tick_with_a_row_is_taken_only_under_the_current_fence(store: Store) -> None:
    job = await store.jobs.create(validate({"uri": "http://127.0.0.1:9/", "schedule": "* * * * * *"}), 100)
    (a,) = await store.executions.take_over([job.id], "node-a")
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    first = Claim(id=new_execution_id(), job_id=job.id, scheduled_at=t0, fence=a.fence)
    claimed = await store.executions.claim("node-a", [first])
    assert (claimed.won, claimed.taken) == ({first.id}, set())
    again = Claim(id=new_execution_id(), job_id=job.id, scheduled_at=t0, fence=a.fence)
    claimed = await store.executions.claim("node-a", [again])
    assert (claimed.won, claimed.taken) == (set(), {again.id})  # accounted for: not a fence loss
    (b,) = await store.executions.take_over([job.id], "node-b")
    stale = Claim(id=new_execution_id(), job_id=job.id, scheduled_at=t0, fence=a.fence)
    claimed = await store.executions.claim("node-a", [stale])
    assert (claimed.won, claimed.taken) == (set(), set())  # refused: the fence moved on
    assert await store.executions.existing([first.id, stale.id]) == {first.id}


async def test_a_backfill_never_sends_beside_its_instants_tick_and_keeps_what_it_sent(store: Store) -> None:
    """claim_backfill: an instant whose own tick is in flight (claimed, running, buffered) is busy, one delivered
    is done; retention never deletes a backfill's executions (a repeated backfill must find them), and an ended
    backfill goes with them after BACKFILL_KEEP_DAYS."""
    job = await store.jobs.create(validate({"uri": "http://127.0.0.1:9/", "schedule": "* * * * * *"}), 100)
    (a,) = await store.executions.take_over([job.id], "n")
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    ticks = [Claim(id=new_execution_id(), job_id=job.id, scheduled_at=t0 + timedelta(seconds=i), fence=a.fence)
             for i in range(3)]
    assert len((await store.executions.claim("n", ticks)).won) == 3
    await store.executions.record([Execution(id=ticks[0].id, job_id=job.id, scheduled_at=ticks[0].scheduled_at,
                                             fence=a.fence, state=ExecutionState.SUCCEEDED, node="n", attempts=1)])
    b = await store.backfills.create(Backfill(id="", job_id=job.id, start=t0 - timedelta(seconds=300),
                                              end=t0 + timedelta(seconds=3), total=303))

    async def claim(t: datetime) -> str:
        return str(await store.executions.claim_backfill(job.id, a.fence, "n", "c", b.id, t, new_execution_id()))

    assert await claim(ticks[0].scheduled_at) == "done"
    assert await claim(ticks[1].scheduled_at) == "busy"  # its tick is claimed: it goes, or is settled, first
    await store.executions.record([Execution(id=ticks[2].id, job_id=job.id, scheduled_at=ticks[2].scheduled_at,
                                             fence=a.fence, state=ExecutionState.FAILED, node="n", attempts=1)])
    assert await claim(ticks[2].scheduled_at) == "claimed"  # its tick failed: the backfill sends it
    sent = [t0 - timedelta(seconds=300 - i) for i in range(300)]
    for t in sent:
        assert await claim(t) == "claimed"
    rows = await store.db.fetchall("SELECT id, scheduled_at FROM executions WHERE backfill=%s", (b.id,))
    await store.executions.record([Execution(id=r["id"], job_id=job.id, scheduled_at=r["scheduled_at"], fence=a.fence,
                                             state=ExecutionState.SUCCEEDED, node="n", attempts=1) for r in rows])
    await store.db.execute("UPDATE executions SET scheduled_at = scheduled_at - INTERVAL 1 HOUR WHERE job_id=%s",
                           (job.id,))  # (retention keeps the last minutes whatever the count)
    await store.history.apply_retention([job.id], 10)
    assert (await store.backfills.counts(b.id))["sent"] == 301
    assert all([await claim(t) == "mine" for t in sent])  # the same backfill again: nothing twice
    await store.db.execute("UPDATE backfills SET state='done', updated_at = NOW(3) - INTERVAL 31 DAY WHERE id=%s",
                           (b.id,))
    assert await store.history.purge_backfills() == 1
    assert (await store.backfills.counts(b.id))["sent"] == 0


async def test_a_claim_refused_by_a_pause_records_the_instants_due_before_it(store: Store) -> None:
    """A claim held up by an outage past its instant, refused because the job was paused meanwhile: the instant
    due before the pause gets a missed row (else nobody would write one: a paused job is never taken over); an
    instant the pause covers gets none; nor does a claim whose fence moved on."""
    job = await store.jobs.create(validate({"uri": "http://127.0.0.1:9/", "schedule": "* * * * * *"}), 100)
    (t,) = await store.executions.take_over([job.id], "node-a")
    await asyncio.sleep(0.01)  # (the pause's valid_from after the creation's, by more than their millisecond)
    await store.jobs.set_paused(job.id, True)
    (created, paused) = [h["valid_from"] for h in (await store.history.job_history([job.id]))[job.id]]
    before = Claim(id=new_execution_id(), job_id=job.id, scheduled_at=created + (paused - created) / 2, fence=t.fence)
    after = Claim(id=new_execution_id(), job_id=job.id, scheduled_at=paused + timedelta(seconds=2), fence=t.fence)
    assert (await store.executions.claim("node-a", [before, after])).won == set()  # refused: paused

    assert await store.executions.refused("node-a", [before, after]) == {before.id}
    row = await store.db.fetchone("SELECT state, kind, missed_count, error FROM executions WHERE id = %s", (before.id,))
    assert (row["state"], row["kind"], row["missed_count"]) == ("missed", "misfire", 1)
    assert "paused" in row["error"]
    assert await store.executions.refused("node-a", [before]) == {before.id}  # again: the same row, no second

    (t2,) = await store.executions.take_over([job.id], "node-b")
    mine = Claim(id=new_execution_id(), job_id=job.id, scheduled_at=before.scheduled_at + timedelta(milliseconds=2),
                 fence=t2.fence)
    assert await store.executions.refused("node-b", [mine]) == {mine.id}  # (node-b's first write: its epoch)
    stale = Claim(id=new_execution_id(), job_id=job.id, scheduled_at=before.scheduled_at + timedelta(milliseconds=1),
                  fence=t.fence)
    assert t2.fence > t.fence and await store.executions.refused("node-a", [stale]) == set()


async def test_gap_anchors_are_a_paused_jobs_fence_and_last_scheduled_instant(store: Store) -> None:
    paused, active = [await store.jobs.create(validate({"uri": "http://127.0.0.1:9/", "schedule": "* * * * * *"}), 100)
                      for _ in range(2)]
    (t, _) = await store.executions.take_over([paused.id, active.id], "node-a")
    at = datetime(2026, 1, 1, tzinfo=UTC)
    claims = [Claim(id=new_execution_id(), job_id=paused.id, scheduled_at=at + timedelta(seconds=k), fence=t.fence)
              for k in range(3)]
    assert len((await store.executions.claim("node-a", claims)).won) == 3
    await store.jobs.set_paused(paused.id, True)
    assert await store.executions.gap_anchors([paused.id, active.id]) == {
        paused.id: (t.fence, at + timedelta(seconds=2))}
    gone = await store.jobs.create(validate({"uri": "http://127.0.0.1:9/", "schedule": "* * * * * *"}), 100)
    await store.jobs.delete(gone.id)  # a deleted job's gap before its delete, too (its ring owner writes it)
    assert set(await store.executions.gap_anchors([paused.id, active.id, gone.id])) == {paused.id, gone.id}


async def test_a_search_reads_in_windows_and_says_where_to_go_on(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """store/jobs.search: windows of the creation order; within its budget it fills a page, past it it answers with
    what it found and where to go on (resume, with how far it got). Followed to the end: every match once, in
    order; nothing is skipped at a window's edge."""
    monkeypatch.setattr(jobs_module, "SEARCH_WINDOW", 3)
    made = [await store.jobs.create(validate({"uri": "http://127.0.0.1:9/", "schedule": "0 4 * * *",
                                              "name": f"{'hit' if i % 4 == 0 else 'miss'}-{i}"}), 100)
            for i in range(17)]
    hits = [j.name for j in made if j.name.startswith("hit")]
    assert [j.name for j in (await store.jobs.search(limit=50, cursor=None, q="hit", paused=None)).jobs] == hits
    full = await store.jobs.search(limit=2, cursor=None, q="hit", paused=None)
    assert [j.name for j in full.jobs] == hits[:2] and full.resume is None  # (a full page: its cursor is its own)
    names, steps, cursor, seen = [], 0, None, []
    while steps < 50:
        steps += 1
        found = await store.jobs.search(limit=50, cursor=cursor, q="hit", paused=None, budget=0)
        names += [j.name for j in found.jobs]
        if found.resume is None:
            break
        seen.append(found.resume / found.top)
        cursor = found.resume
    assert names == hits and steps >= 5 and seen == sorted(seen) and 0 < seen[0] < 1
    none = await store.jobs.search(limit=50, cursor=None, q="nobody", paused=None)  # (within its budget: to the end)
    assert none.jobs == [] and none.resume is None
    plain = await store.jobs.search(limit=50, cursor=None, q=None, paused=None, budget=0)  # no search: one page
    assert len(plain.jobs) == 17 and plain.resume is None


async def test_eager_takeovers_and_the_reseed_keep_fences_unique_beside_release_2(store: Store) -> None:
    """A release-2 node bumps a job's fence by one at each takeover and knows no epochs. Meanwhile (eager) a
    takeover writes GREATEST(fence + 1, epoch) and moves the counter past it; once release 2 has gone, the reseed
    moves the counter past every fence, so a later epoch (written only with the owner's first write) is above
    anything a release-2 node wrote."""
    job = await store.jobs.create(validate({"uri": "http://127.0.0.1:9/", "schedule": "* * * * * *"}), 100)

    async def fence() -> int:
        return int((await store.db.fetchone("SELECT fence FROM jobs WHERE id = %s", (job.id,)))["fence"])

    (a,) = await store.executions.take_over([job.id], "node-a", eager=True)
    assert await fence() == a.fence > 0
    await store.db.execute("UPDATE jobs SET fence = fence + 5 WHERE id = %s", (job.id,))  # release 2, five times
    (b,) = await store.executions.take_over([job.id], "node-b", eager=True)
    assert b.fence == a.fence + 6 == await fence() and b.handover
    assert await store.executions.next_epoch() > b.fence  # (the counter moved past what it wrote)
    await store.db.execute("UPDATE jobs SET fence = fence + 50 WHERE id = %s", (job.id,))  # release 2, beyond it
    high = await fence()
    await store.executions.reseed_epochs()
    (c,) = await store.executions.take_over([job.id], "node-c")
    assert c.fence > high and await fence() == high  # (nothing written yet: the first claim writes it)
    first = Claim(id=new_execution_id(), job_id=job.id, scheduled_at=datetime(2026, 1, 1, tzinfo=UTC), fence=c.fence)
    assert (await store.executions.claim("node-c", [first])).won == {first.id} and await fence() == c.fence
