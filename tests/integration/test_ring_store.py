"""MariaDB selects a node's share of the ring as the ring computes it: ``jobs.ring_point`` is the job's point,
and ``changed_since`` with a member's arcs returns exactly the jobs the ring gives that member, through the
covering index (a range scan, not the table)."""

from __future__ import annotations

from datetime import UTC
from typing import Any

from node.cluster.catalogue import Catalogue, slices
from node.cluster.ring import Ring, point
from node.model.jobs import validate
from node.store import Store
from node.store.codec import arcs_sql
from node.store.jobs import changed_page_sql


async def _jobs(store: Store, n: int) -> list[str]:
    return [(await store.jobs.create(validate({"uri": "http://127.0.0.1:9/", "schedule": "0 0 1 1 *"}), 10_000)).id
            for _ in range(n)]


async def test_the_tables_ring_point_is_the_rings(store: Store) -> None:
    ids = await _jobs(store, 40)
    rows = await store.db.fetchall("SELECT id, ring_point FROM jobs")
    assert {r["id"]: int.from_bytes(r["ring_point"], "big") for r in rows} == {j: point(j) for j in ids}


async def test_a_members_arcs_select_its_jobs(store: Store) -> None:
    ids = await _jobs(store, 200)
    ring = Ring(["node-a", "node-b", "node-c"])
    got: dict[str, set[str]] = {}
    for m in ring.members:
        summaries: list[Any] = []
        for part in slices(ring.arcs(m)):
            out, now = await store.jobs.changed_since(None, part)
            assert now is not None
            summaries += out
        got[m] = {s.id for s in summaries}
        assert got[m] == ring.owned_by(m, ids)
    assert sum(len(v) for v in got.values()) == len(ids)
    assert (await store.jobs.changed_since(None, ()))[0] == []
    plan = await store.db.fetchall("EXPLAIN SELECT id FROM jobs FORCE INDEX (ix_jobs_ring) WHERE deleted_at IS NULL"
                                   " AND ring_point >= X'00' AND ring_point < X'80000000000000000000000000000000'")
    assert plan[0]["key"] == "ix_jobs_ring"


async def test_the_catalogue_of_a_node_reads_its_share_from_mariadb(store: Store) -> None:
    ids = await _jobs(store, 120)
    ring = Ring(["node-a", "node-b"])
    c = Catalogue(store.jobs, 5.0, node_id="node-b")
    assert await c.focus(ring)
    assert set(c.active_ids()) == ring.owned_by("node-b", ids)
    await store.jobs.delete(sorted(c.active_ids())[0])
    await c.full_sync()
    assert set(c.active_ids()) == ring.owned_by("node-b", ids) - {sorted(ring.owned_by("node-b", ids))[0]}


async def test_mariadbs_digest_of_a_share_is_the_catalogues(store: Store) -> None:
    ids = await _jobs(store, 60)
    await store.jobs.set_paused(ids[0], True)
    await store.db.execute("UPDATE jobs SET completed_at = NOW(3), version = version + 1 WHERE id = %s", (ids[1],))
    ring = Ring(["node-a", "node-b"])
    for m in ring.members:
        c = Catalogue(store.jobs, 5.0, node_id=m)
        assert await c.focus(ring)
        n, x, _ = await store.jobs.share_digest(ring.arcs(m))
        assert (n, x) == await c._digest() and n == len(ring.owned_by(m, ids))


async def test_a_shares_read_brings_its_recent_deletes_not_old_ones(store: Store) -> None:
    """A node taking an arc over learns of the jobs deleted in it within RECENT_DELETES (their ring owner may have
    died before recording the instants due before the delete); older deletes stay out of the read."""
    ids = await _jobs(store, 40)
    ring = Ring(["node-a", "node-b"])
    theirs = sorted(ring.owned_by("node-b", ids))
    recent, old = theirs[0], theirs[1]
    await store.jobs.delete(recent)
    await store.jobs.delete(old)
    await store.db.execute("UPDATE jobs SET deleted_at = NOW(3) - INTERVAL 11 MINUTE WHERE id = %s", (old,))
    c = Catalogue(store.jobs, 5.0, node_id="node-b")
    assert await c.focus(ring)
    assert c.jobs[recent].deleted and recent in c.changed_ids and old not in c.jobs
    assert set(c.active_ids()) == set(theirs) - {recent, old}


async def test_a_takeover_hands_back_the_id_strings_it_was_given(store: Store) -> None:
    """An owned job's id is one object in the catalogue, the owned records and the timer (~65 bytes a job at
    200,000 jobs a node): the takeover's rows carry the caller's strings, not the driver's copies."""
    ids = await _jobs(store, 5)
    given = ["".join(list(i)) for i in ids]  # equal strings, other objects
    taken = await store.executions.take_over(given, "node-a")
    assert sorted(t.job.id for t in taken) == sorted(ids)
    assert all(any(t.job.id is g for g in given) for t in taken)


async def test_a_read_since_a_watermark_comes_in_pages_and_misses_no_row(store: Store, monkeypatch: Any) -> None:
    """Paged in (updated_at, id) order: every row once, across pages, when many share one updated_at (a bulk
    apply's rows all have its statement's time), and through the updated_at index."""
    import node.store.jobs as jobs_store

    monkeypatch.setattr(jobs_store, "CHANGED_PAGE", 7)
    ids = await _jobs(store, 40)
    (row,) = await store.db.fetchall("SELECT NOW(3) AS w")
    await store.db.execute("UPDATE jobs SET updated_at = %s", (row["w"],))  # one instant: 30 of them stay there
    later = ",".join(["%s"] * 10)
    await store.db.execute(f"UPDATE jobs SET updated_at = updated_at + INTERVAL 1 SECOND WHERE id IN ({later})", ids[30:])
    ring = Ring(["node-a", "node-b"])
    for arcs, want in ((None, set(ids)), (ring.arcs("node-a"), ring.owned_by("node-a", ids))):
        got, now = await store.jobs.changed_since(row["w"].replace(tzinfo=UTC), arcs)
        assert now is not None
        assert [s.id for s in got if s.id in want] == [s.id for s in got] and sorted(s.id for s in got) == sorted(want)
    share, share_args = arcs_sql(ring.arcs("node-a"))
    sql = changed_page_sql("id, paused, version, deleted_at, completed_at", share, first=False)
    plan = await store.db.fetchall(f"EXPLAIN {sql}", (row["w"], row["w"], ids[0], *share_args))
    # the index's range on (updated_at, id): both columns (6 bytes of DATETIME(3), then the id), never a filesort
    assert plan[0]["key"] == "ix_jobs_updated" and "filesort" not in (plan[0]["Extra"] or "")
    assert int(plan[0]["key_len"]) > 7
