"""Executions: fenced claims, outcomes, takeovers, and the rows that account for instants not run.

Two rules make "never twice" hold:

* a **claim** inserts the execution row for ``(job_id, scheduled_at)`` only where ``jobs.fence`` still
  equals the claimer's fence, under a UNIQUE key on ``(job_id, scheduled_at)``; no claim, no request;
* the **fence** is an epoch: each takeover draws a new one from ``fence_epochs`` (one counter for the cluster, so
  every epoch is unique and above every fence any job has), and the owner writes it to ``jobs.fence`` (only ever
  upwards) in the statement before its first write for the job (a claim, a gap row, a completion, a lost row it
  takes on). From then on a stale owner's claims stop matching. A job nobody writes for (a yearly job between
  its instants) costs its takeover no write at all: bumping every job's row was half of MariaDB's CPU while five
  nodes took a million jobs over (BENCHMARKS.md, "sixth part"). Until the new owner's first write a stale owner
  can still claim, as it could before a takeover: the UNIQUE key keeps every instant to one row, and the new
  owner settles a row its claimer left open (``orphans``).

And one makes a hand-over cheap: every row names its **claimer** (the claiming process, see
``model.executions.Liveness``), so an open row is in flight exactly while its claimer is a live member's.
A takeover settles only a lost claimer's open rows (abandoned, or re-sent for at_least_once); a forbid run
sees a live claimer's run in flight inside its own claim statement and is recorded as an overlap.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from ..batching import CLAIM_ROWS, STATEMENT_ROWS, TAKEOVER_JOBS, chunks
from ..model.backfills import ACTIVE as BACKFILL_ACTIVE
from ..model.errors import NotFound, RunInFlight, StoreUnavailable
from ..model.executions import (
    OPEN_STATES,
    OVERLAP_REASON,
    Claim,
    Claimed,
    Execution,
    ExecutionKind,
    ExecutionState,
    Liveness,
    Redelivery,
    Takeover,
    new_execution_id,
)
from ..model.jobs import Delivery, StoredJob
from .codec import (
    ABANDONED,
    BACKFILL,
    BUFFERED,
    CLAIMED,
    IN_FLIGHT,
    MANUAL,
    MISFIRE,
    MISSED,
    ONE_INSTANT,
    OPEN,
    OVERLAP,
    OWNER_COLS,
    RUNNING,
    SKIPPED,
    SUCCEEDED,
    from_db,
    last_ticks_sql,
    ph,
    sql_in,
    to_db,
    to_db_or_none,
)
from .connection import Cursor, Database

RECENT_CLAIM_SECONDS = 2  # a live claimer's claimed row this young may be in flight (its "running" is held back 1 s)
REFUSED_REASON = "due before the job was paused or deleted; its claim arrived after (MariaDB was away); not run"
LOST = "lost before recording an outcome"  # the error of a lost claimer's open row, abandoned by its successor


class BackfillClaim(StrEnum):
    CLAIMED = "claimed"  # its row is in: send it
    DONE = "done"  # another execution delivered the instant
    MINE = "mine"  # this backfill has a row for it already (delivered, or in flight)
    BUSY = "busy"  # another backfill is sending it
    LOST = "lost"  # the fence moved on


# An instant (the statement's two %s) that has a delivered execution, or one in flight or waiting (its own tick's, a
# backfill's): not sent now (a tick in flight makes it busy: tried again once that ends).
_DELIVERED_OR_SENDING_OF = (
    f"(e.scheduled_at = %s AND e.kind IN {ONE_INSTANT} AND e.state IN ({SUCCEEDED}, {BUFFERED}, {CLAIMED}, {RUNNING}))"
    " OR"
    f" (e.instant = %s AND e.kind = {BACKFILL} AND e.state IN ({SUCCEEDED}, {CLAIMED}, {RUNNING}))")
_DELIVERED_OR_SENDING = f"SELECT 1 FROM executions e WHERE e.job_id = j.id AND ({_DELIVERED_OR_SENDING_OF})"
# A lost claimer's row a takeover (or the settling of orphans) abandons: any but an active backfill's, which its
# backfill re-sends as the same execution when it resumes on the job's next owner.
def _settled_here(alias: str) -> str:
    return (f"({alias}.kind <> {BACKFILL} OR NOT EXISTS (SELECT 1 FROM backfills b WHERE b.id = {alias}.backfill"
            f" AND b.state IN {sql_in(BACKFILL_ACTIVE)}))")
_AT_LEAST_ONCE = f"JSON_VALUE(j.spec, '$.delivery') = '{Delivery.AT_LEAST_ONCE}'"
_IN_GRACE = "e.scheduled_at >= NOW(3) - INTERVAL JSON_VALUE(j.spec, '$.misfire_grace_seconds') SECOND"
# An outcome overwrites its row, except a redelivered row, which only its current owner (fence) writes:
# the lost first owner, if it comes back, must not overwrite the redelivery's outcome.
_RECORD_UPDATE = ", ".join(
    f"{col}=IF(redelivered = 1 AND fence <> VALUES(fence), {col}, {new})" for col, new in (
        ("state", "VALUES(state)"), ("attempts", "VALUES(attempts)"), ("status_code", "VALUES(status_code)"),
        ("duration_ms", "VALUES(duration_ms)"), ("lateness_ms", "VALUES(lateness_ms)"), ("error", "VALUES(error)"),
        ("response_excerpt", "VALUES(response_excerpt)"), ("started_at", "COALESCE(VALUES(started_at), started_at)"),
        ("finished_at", "VALUES(finished_at)"),
    )
)


def _in_flight(live: Liveness, alias: str, *, recent_claims: bool) -> tuple[str, list[Any]]:
    """SQL true for an open row of ``alias`` that is in flight on a live process: another live claimer's
    row in state running (a run sent and still going; a hand-over writes that state before it releases),
    or, with ``recent_claims``, claimed moments ago (a run-now just sent: its running state is held back);
    or an execution this process is sending right now. A live claimer's older claimed row is a claim it
    will not send (left for the next owner): not in flight."""
    parts, args = [], []
    if live.others:
        young = f" OR {alias}.claimed_at >= NOW(3) - INTERVAL {RECENT_CLAIM_SECONDS} SECOND" if recent_claims else ""
        parts.append(f"({alias}.claimer IN ({ph(len(live.others))}) AND ({alias}.state = {RUNNING}{young}))")
        args += sorted(live.others)
    if live.sending:
        parts.append(f"{alias}.id IN ({ph(len(live.sending))})")
        args += sorted(live.sending)
    return ("(" + " OR ".join(parts) + ")" if parts else "FALSE"), args


def _redeliveries(rows: Iterable[dict[str, Any]]) -> dict[str, list[Redelivery]]:
    out: dict[str, list[Redelivery]] = {}
    for r in rows:
        out.setdefault(r["job_id"], []).append(Redelivery(
            id=r["id"], scheduled_at=r["scheduled_at"].replace(tzinfo=UTC), kind=ExecutionKind(r["kind"]),
            attempts=int(r["attempts"])))
    return out


FENCES_KNOWN = 100_000  # jobs whose fence this node knows it wrote (then its claims skip the write); cleared when full


async def write_fences(cur: Cursor, node: str, fences: Mapping[str, int], *, held: bool = False) -> list[str]:
    """Write each job's fence (an epoch its owner drew at the takeover) where the job's is still lower: an owner's
    first write for a job. A higher one is a newer owner's: left, so the statement after this one fails its fence
    check. One statement for each epoch (a takeover draws one for a chunk of jobs). With ``held``: the jobs whose
    fence is the given one now (the others' rows are a newer owner's to settle), read under a lock."""
    by_epoch: dict[int, list[str]] = {}
    for job_id, fence in fences.items():
        by_epoch.setdefault(fence, []).append(job_id)
    for fence, ids in sorted(by_epoch.items()):
        await cur.execute(f"UPDATE jobs SET fence = %s, owner = %s WHERE id IN ({ph(len(ids))}) AND fence < %s",
                          [fence, node, *ids, fence])
    if not held or not fences:
        return list(fences)
    ids = list(fences)
    await cur.execute(f"SELECT id, fence FROM jobs WHERE id IN ({ph(len(ids))}) LOCK IN SHARE MODE", ids)
    return [r["id"] for r in await cur.fetchall() if int(r["fence"]) == fences[r["id"]]]


class Executions:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._fenced: dict[str, int] = {}  # job -> a fence this node wrote for it (or saw hold)

    def _unwritten(self, claims: Sequence[Claim]) -> dict[str, int]:
        known = self._fenced
        return {c.job_id: c.fence for c in claims if known.get(c.job_id, -1) < c.fence}

    def _written(self, claims: Sequence[Claim], held: set[str]) -> None:
        """Claims won (or found taken under their fence) show that fence is the job's: later claims skip the write."""
        if len(self._fenced) >= FENCES_KNOWN:
            self._fenced.clear()
        for c in claims:
            if c.id in held:
                self._fenced[c.job_id] = c.fence

    # ---- ownership ------------------------------------------------------------------------

    async def take_over(self, job_ids: Sequence[str], node: str, live: Liveness | None = None, *,
                        eager: bool = False) -> list[Takeover]:
        """Bump the fence of each job to this node, and read what a new owner needs: the definition, the
        anchor (the last scheduled instant claimed) and what it must send again.

        Rows claimed under an older fence and still open are a lost claimer's (abandoned, or re-sent for
        at_least_once) unless they are in flight on a live process: a live member's running row (a hand-over
        no longer waits for its runs), or one this process is sending itself (``live``). Those stay open:
        their claimer records their outcome, and a forbid run sees them in flight.

        ``eager``: a release-2 node is in the ring, which bumps a job's fence by one at each takeover and knows no
        epochs. Each job's fence is then written here, above both (``GREATEST(fence + 1, epoch)``), and the counter
        moves past what was written, so two owners never hold one fence (``reseed_epochs`` once it has gone)."""
        live = live or Liveness(claimer="")
        alive, alive_args = _in_flight(live, "e", recent_claims=False)
        out: list[Takeover] = []
        for chunk in chunks(job_ids, TAKEOVER_JOBS):
            ids, jobs_in = list(chunk), ph(len(chunk))
            epoch = await self.next_epoch()
            async for attempt in self.db.attempts(transaction=True):
                async with attempt as cur:
                    if eager:
                        await cur.execute(f"UPDATE jobs SET fence = GREATEST(fence + 1, %s), owner = %s WHERE id IN"
                                          f" ({jobs_in}) AND deleted_at IS NULL", [epoch, node, *ids])
                    await cur.execute(f"SELECT {OWNER_COLS} FROM jobs WHERE id IN ({jobs_in}) AND deleted_at IS NULL", ids)
                    rows = await cur.fetchall()
                    # each row's id is the string the caller gave (the catalogue's own): an owned job's id is one
                    # object in the catalogue, the owned records and the timer, not two (~65 bytes a job)
                    given = {i: i for i in ids}
                    for r in rows:
                        r["id"] = given.get(r["id"], r["id"])
                    fence_of = {r["id"]: int(r["fence"]) if eager else epoch for r in rows}
                    await cur.execute(last_ticks_sql(len(ids)), ids)
                    last = {r["job_id"]: from_db(r["last"]) for r in await cur.fetchall()}
                    # Which of them have open rows at all (most have none): a plain read, without the next-key
                    # locks a locking scan of the index over 2,000 jobs takes, which stalled the claims of every
                    # node meanwhile. Those few get the new fence now, then their lost claimer's rows are settled
                    # (a claim reads the fence under a shared lock: once it is written, none opens under an older
                    # one). A row a stale claimer opens after this read is its own to finish, or ``orphans``'.
                    await cur.execute(f"SELECT DISTINCT job_id FROM executions WHERE state IN {OPEN}"
                                      f" AND job_id IN ({jobs_in})", ids)
                    opened = [r["job_id"] for r in await cur.fetchall()]
                    redeliver: dict[str, list[Redelivery]] = {}
                    buffered: dict[str, list[Redelivery]] = {}
                    if opened and not eager:
                        opened = await write_fences(cur, node, {j: epoch for j in opened}, held=True)
                    if opened:
                        redeliver, buffered = await _settle_lost(cur, opened, node, live, alive, alive_args)
                    # (a hand-over: an owner had written a fence before; with eager writes, any fence above ours)
                    taken = [Takeover(job=StoredJob(r), fence=fence_of[r["id"]], last_tick=last.get(r["id"]),
                                      handover=int(r["fence"]) > (epoch if eager else 0),
                                      redeliver=tuple(redeliver.get(r["id"], ())),
                                      buffered=tuple(buffered.get(r["id"], ()))) for r in rows]
            if eager and taken:  # the counter past every fence written here
                await self.db.execute("UPDATE fence_epochs SET n = GREATEST(n, %s) WHERE id = 1",
                                      (max(t.fence for t in taken),))
            out.extend(taken)
        return out

    async def reseed_epochs(self) -> None:
        """The counter past every job's fence: once the last release-2 node has gone (it bumped fences by one,
        beyond what the counter knew), before the next takeover that writes nothing."""
        await self.db.execute("UPDATE fence_epochs SET n = GREATEST(n, (SELECT COALESCE(MAX(fence), 0) FROM jobs))"
                              " WHERE id = 1")

    async def next_epoch(self) -> int:
        """A new fence epoch: above every fence any job has (its own statement: the counter's row is never held
        across a takeover's transaction, which would queue every node's takeovers behind each other)."""
        async for attempt in self.db.attempts():
            async with attempt as cur:
                await cur.execute("UPDATE fence_epochs SET n = LAST_INSERT_ID(n + 1) WHERE id = 1")
                await cur.execute("SELECT LAST_INSERT_ID() AS n")
                return int((await cur.fetchone())["n"])
        raise StoreUnavailable("could not draw a fence epoch; retry")

    async def gap_anchors(self, job_ids: Sequence[str]) -> dict[str, tuple[int, datetime | None]]:
        """Each of these jobs that is paused or deleted: its fence and its last scheduled instant claimed, where a gap
        before its pause or delete starts (scheduling/ownership: a job paused or deleted while its owner was lost)."""
        out: dict[str, tuple[int, datetime | None]] = {}
        for chunk in chunks(job_ids, TAKEOVER_JOBS):
            ids = list(chunk)
            rows = await self.db.fetchall(f"SELECT id, fence FROM jobs WHERE id IN ({ph(len(ids))})"
                                          " AND (paused = 1 OR deleted_at IS NOT NULL)", ids)
            last = {r["job_id"]: from_db(r["last"]) for r in await self.db.fetchall(last_ticks_sql(len(ids)), ids)}
            out.update({r["id"]: (int(r["fence"]), last.get(r["id"])) for r in rows})
        return out

    async def refused(self, node: str, claims: Sequence[Claim]) -> set[str]:
        """Rows for instants of a paused (or deleted) job that were due before the pause took force (the definition
        in force at the instant was active), written under ``fence`` if it is still the job's: missed for a run, as
        given for a missed or skipped row; an instant that already has a row keeps it. A paused job is never taken
        over again, so its gap is written here (scheduling/ownership._close_gaps). The ids written."""
        out: set[str] = set()
        scheduled = [c for c in claims if c.kind not in (ExecutionKind.MANUAL, ExecutionKind.BACKFILL)]
        for chunk in chunks(scheduled, CLAIM_ROWS):
            out |= await self._refused(node, list(chunk))
        return out

    async def _refused(self, node: str, rows: list[Claim]) -> set[str]:
        union = " UNION ALL ".join(
            ["SELECT %s AS id, %s AS job_id, CAST(%s AS DATETIME(3)) AS scheduled_at, %s AS fence, %s AS kind,"
             " %s AS state, %s AS missed_count, CAST(%s AS DATETIME(3)) AS missed_from, %s AS error"] * len(rows))
        args: list[Any] = [node, REFUSED_REASON]
        for c in rows:
            args += [c.id, c.job_id, to_db(c.scheduled_at), c.fence, str(c.kind), str(c.state), c.missed_count,
                     to_db_or_none(c.missed_from), c.error]
        run = f"c.state IN ({CLAIMED}, {BUFFERED})"  # a run that was to go: missed now
        async for attempt in self.db.attempts(transaction=True):
            async with attempt as cur:
                await write_fences(cur, node, {c.job_id: c.fence for c in rows})
                await cur.execute(
                    "INSERT INTO executions (id, job_id, scheduled_at, kind, state, fence, node, missed_count,"
                    " missed_from, error, claimed_at, finished_at)"
                    f" SELECT c.id, c.job_id, c.scheduled_at, IF({run}, {MISFIRE}, c.kind), IF({run}, {MISSED}, c.state),"
                    f" c.fence, %s, IF({run}, 1, c.missed_count), IF({run}, c.scheduled_at, c.missed_from),"
                    f" IF({run}, %s, c.error), NOW(3), NOW(3) FROM ({union}) c"
                    " JOIN jobs j ON j.id = c.job_id AND j.fence = c.fence AND (j.paused = 1 OR j.deleted_at IS NOT NULL)"
                    # the definition in force at the instant (a segment's instants are after its start): active
                    " WHERE (SELECT h.paused = 0 AND h.deleted = 0 FROM job_history h WHERE h.job_id = c.job_id"
                    " AND h.valid_from < c.scheduled_at ORDER BY h.valid_from DESC, h.version DESC LIMIT 1)"
                    " ON DUPLICATE KEY UPDATE executions.id = executions.id", args)
                ids = [c.id for c in rows]
                await cur.execute(f"SELECT id FROM executions WHERE id IN ({ph(len(ids))})", ids)
                return {r["id"] for r in await cur.fetchall()}
        return set()

    async def orphans(self, gone: Sequence[str], fences: Mapping[str, int], node: str, claimer: str
                      ) -> dict[str, list[Redelivery]]:
        """Open rows of these (owned) jobs whose claimer has gone (its node died, lapsed or restarted after a
        hand-over or a run-now left them in flight there): what a takeover does with a lost claimer's rows,
        now. at_least_once rows within the grace become this owner's to re-send (by job); the rest are
        abandoned."""
        if not gone or not fences:
            return {}
        gone_in = ph(len(gone))
        rows = await self.db.fetchall(f"SELECT DISTINCT job_id FROM executions WHERE state IN {IN_FLIGHT}"
                                      f" AND claimer IN ({gone_in})", list(gone))
        hit = [r["job_id"] for r in rows if r["job_id"] in fences]
        out: dict[str, list[Redelivery]] = {}
        for chunk in chunks(hit, TAKEOVER_JOBS):
            async for attempt in self.db.attempts(transaction=True):
                async with attempt as cur:
                    found: dict[str, list[Redelivery]] = {}
                    # (re-sent rows take the job's fence: ours, or the job is a newer owner's to settle)
                    ids = await write_fences(cur, node, {j: fences[j] for j in chunk}, held=True)
                    if not ids:
                        break
                    jobs_in = ph(len(ids))
                    await cur.execute(
                        f"SELECT e.id FROM executions e JOIN jobs j ON j.id = e.job_id WHERE e.job_id IN ({jobs_in})"
                        f" AND e.state IN {IN_FLIGHT} AND e.claimer IN ({gone_in}) AND e.kind <> {BACKFILL}"
                        f" AND {_AT_LEAST_ONCE} AND {_IN_GRACE}"
                        f" FOR UPDATE", [*ids, *gone])
                    again = [r["id"] for r in await cur.fetchall()]
                    if again:
                        await cur.execute(
                            f"UPDATE executions e JOIN jobs j ON j.id = e.job_id SET e.fence = j.fence, e.node = %s,"
                            f" e.claimer = %s, e.redelivered = 1, e.state = {CLAIMED} WHERE e.id IN ({ph(len(again))})",
                            [node, claimer, *again])
                        await cur.execute(f"SELECT id, job_id, scheduled_at, kind, attempts FROM executions"
                                          f" WHERE id IN ({ph(len(again))}) ORDER BY scheduled_at", again)
                        found = _redeliveries(await cur.fetchall())
                    await cur.execute(
                        f"UPDATE executions SET state={ABANDONED}, finished_at=NOW(3),"
                        f" error=CONCAT(node, ' {LOST}; not re-sent')"
                        f" WHERE job_id IN ({jobs_in}) AND state IN {IN_FLIGHT} AND claimer IN ({gone_in})"
                        f" AND {_settled_here('executions')}", [*ids, *gone])
            out.update(found)
        return out

    # ---- claims ---------------------------------------------------------------------------

    async def claim(self, node: str, claims: Sequence[Claim], live: Liveness | None = None) -> Claimed:
        """Insert fence-checked execution rows. Returns the ids won, and the ids whose tick already had a row
        of another execution (the tick is accounted for: not a fence problem). A claim in neither set was
        refused: the fence moved on, or the job was paused or deleted.

        A ``forbid`` run is inserted as an overlap row (state skipped) when its job has a run in flight
        elsewhere: an open row of another live claimer (a run-now on another node, or the previous owner's
        run that a hand-over left in flight), or one this process is sending (``live``)."""
        result = Claimed(won=set(), taken=set(), overlapped=set())
        claimer = live.claimer if live is not None and live.claimer else None
        lost: set[str] = set()  # jobs with a lost claimer's open row where this owner claimed
        for chunk in chunks(claims, CLAIM_ROWS):
            guarded = {c.id for c in chunk if (c.forbid or c.buffer) and c.state == ExecutionState.CLAIMED} \
                if live else set()
            sql, args = _claim_statement(node, claimer, chunk, guarded, live)
            counted = any(c.counted for c in chunk)  # maxRuns: the runs count goes up in the claim's transaction
            fences = self._unwritten(chunk)
            async for attempt in self.db.attempts(transaction=counted):
                async with attempt as cur:
                    if fences:
                        await write_fences(cur, node, fences)
                    if counted and attempt.again:  # the first attempt may have committed: our ids tell
                        await cur.execute(f"SELECT id FROM executions WHERE id IN ({ph(len(chunk))})",
                                          [c.id for c in chunk])
                        if {r["id"] for r in await cur.fetchall()}:
                            won, dup, skipped = await _claim_chunk(cur, sql, args, chunk, guarded, live, lost,
                                                                   readback=True)
                            break
                    won, dup, skipped = await _claim_chunk(cur, sql, args, chunk, guarded, live, lost)
                    if counted:  # a run buffered by the guard is a run (it goes later); an overlap row is not
                        await _count_runs(cur, [c for c in chunk if c.counted and c.id in won
                                                and not (c.id in skipped and c.forbid)])
            self._written(chunk, won | dup)
            result.won.update(won)
            result.taken.update(dup)
            # a guarded run inserted busy: an overlap row (forbid) or a buffered tick (buffer policies)
            result.overlapped.update(i for i in skipped if i in {c.id for c in chunk if c.forbid})
            result.buffered.update(i for i in skipped if i in {c.id for c in chunk if c.buffer})
        if lost and live is not None:
            # A deposed owner's claim can land after this owner took the job over and before its first write (the
            # fence then still matched): its row holds the tick, under a claimer that is gone. Settled here, as a
            # takeover settles them: at_least_once re-sent by this owner, buffered ticks its queue, the rest
            # abandoned. (Left alone, the tick was lost: no takeover would come to it.)
            alive, alive_args = _in_flight(live, "e", recent_claims=False)
            async for attempt in self.db.attempts(transaction=True):
                async with attempt as cur:
                    redeliver, requeue = await _settle_lost(cur, sorted(lost), node, live, alive, alive_args)
            result.redeliver.update(redeliver)
            result.requeue.update(requeue)
        return result

    async def claim_run_now(self, job_id: str, node: str, execution_id: str, at: datetime, *,
                            forbid_overlap: bool = False, claimer: str | None = None) -> int:
        """Claim a run-now execution under whatever fence the job has now; returns that fence. Raises
        NotFound when the job is gone, RunInFlight when ``forbid_overlap`` and a run of the job is open. Its
        instant never equals a tick (ticks are whole seconds) nor another run-now."""
        at = to_db(at)
        if at.microsecond == 0:
            at = at.replace(microsecond=1000)
        guard = (f" AND NOT EXISTS (SELECT 1 FROM executions e WHERE e.job_id = jobs.id AND e.state IN {IN_FLIGHT})"
                 if forbid_overlap else "")
        async for attempt in self.db.attempts():
            async with attempt as cur:
                if attempt.again:  # the first run may have committed: our execution id is our claim
                    await cur.execute("SELECT fence FROM executions WHERE id=%s", (execution_id,))
                    if (mine := await cur.fetchone()) is not None:
                        return int(mine["fence"])
                for k in range(5):  # another run-now at the same millisecond: the next one
                    n = await cur.execute(
                        "INSERT INTO executions (id, job_id, scheduled_at, kind, state, fence, node, claimer, claimed_at)"
                        f" SELECT %s, id, %s, {MANUAL}, {CLAIMED}, fence, %s, %s, NOW(3) FROM jobs"
                        " WHERE id=%s AND deleted_at IS NULL" + guard +
                        " ON DUPLICATE KEY UPDATE executions.id = executions.id",
                        (execution_id, at + timedelta(milliseconds=k), node, claimer, job_id))
                    if n == 1:
                        await cur.execute("SELECT fence FROM executions WHERE id=%s", (execution_id,))
                        return int((await cur.fetchone())["fence"])
                    await cur.execute("SELECT 1 FROM jobs WHERE id=%s AND deleted_at IS NULL", (job_id,))
                    if await cur.fetchone() is None:
                        raise NotFound(job_id)
                    if forbid_overlap:
                        await cur.execute(f"SELECT 1 FROM executions WHERE job_id=%s AND state IN {IN_FLIGHT} LIMIT 1",
                                          (job_id,))
                        if await cur.fetchone() is not None:
                            raise RunInFlight("a run of this job is still in flight (concurrencyPolicy forbid)")
        raise StoreUnavailable("could not find a free instant for the run; retry")

    async def existing(self, execution_ids: Sequence[str]) -> set[str]:
        """Which of these executions have a row (claims whose statement failed may have been inserted)."""
        found: set[str] = set()
        for chunk in chunks(execution_ids, STATEMENT_ROWS):
            rows = await self.db.fetchall(f"SELECT id FROM executions WHERE id IN ({ph(len(chunk))})", list(chunk))
            found.update(r["id"] for r in rows)
        return found

    # ---- backfills -------------------------------------------------------------------------

    async def claim_backfill(self, job_id: str, fence: int, node: str, claimer: str, backfill_id: str,
                             instant: datetime, execution_id: str) -> BackfillClaim:
        """One instant of a backfill, under the owner's fence: ``claimed`` (its row is in: send it), ``done`` (a
        delivered execution has the instant already: its tick's, or a backfill's), ``busy`` (a backfill is sending
        it now), ``lost`` (the fence moved on: not this owner's to send). Its row's scheduled_at is the claim's time
        (the instant's own tick row may exist); ``instant`` says which instant it stands for."""
        instant = to_db(instant)
        async for attempt in self.db.attempts():
            async with attempt as cur:
                if attempt.again:
                    await cur.execute("SELECT 1 FROM executions WHERE id=%s", (execution_id,))
                    if await cur.fetchone() is not None:
                        return BackfillClaim.CLAIMED
                await write_fences(cur, node, {job_id: fence})
                for k in range(5):  # another claim at the same millisecond: the next one
                    n = await cur.execute(
                        "INSERT INTO executions (id, job_id, scheduled_at, kind, state, fence, node, claimer, claimed_at,"
                        f" instant, backfill) SELECT %s, j.id, NOW(3) + INTERVAL %s MICROSECOND, {BACKFILL}, {CLAIMED},"
                        " j.fence, %s, %s, NOW(3), %s, %s FROM jobs j WHERE j.id = %s AND j.fence = %s AND"
                        f" j.deleted_at IS NULL AND NOT EXISTS ({_DELIVERED_OR_SENDING})"
                        " ON DUPLICATE KEY UPDATE executions.id = executions.id",
                        (execution_id, 1000 * k + 1000, node, claimer, instant, backfill_id, job_id, fence,
                         instant, instant))
                    if n == 1:
                        return BackfillClaim.CLAIMED
                    await cur.execute("SELECT fence, deleted_at FROM jobs WHERE id = %s", (job_id,))
                    job = await cur.fetchone()
                    if job is None or job["deleted_at"] is not None or int(job["fence"]) != fence:
                        return BackfillClaim.LOST
                    await cur.execute(f"SELECT e.state, e.backfill FROM executions e WHERE"
                                      f" e.job_id = %s AND ({_DELIVERED_OR_SENDING_OF})", (job_id, instant, instant))
                    rows = await cur.fetchall()
                    if any(r["backfill"] == backfill_id for r in rows):
                        return BackfillClaim.MINE  # this backfill has it (a resumed one meets its own rows)
                    if any(r["state"] == ExecutionState.SUCCEEDED for r in rows):
                        return BackfillClaim.DONE
                    if rows:
                        return BackfillClaim.BUSY
        raise StoreUnavailable("could not find a free instant for a backfill's row; retry")

    async def lost_backfill_rows(self, backfill_id: str, job_id: str, fence: int, node: str, live: Liveness
                                 ) -> list[Redelivery]:
        """A backfill's rows in flight on a process that is gone (its owner died, lapsed or restarted): now this
        owner's, to send again as the same executions (same Idempotency-Key). Rows of a live claimer are left alone:
        that process finishes them."""
        claimers = sorted({live.claimer, *live.others})
        async for attempt in self.db.attempts(transaction=True):
            async with attempt as cur:
                await cur.execute(
                    f"SELECT id, instant FROM executions WHERE backfill = %s AND state IN {IN_FLIGHT}"
                    f" AND (claimer IS NULL OR claimer NOT IN ({ph(len(claimers))})) FOR UPDATE", [backfill_id, *claimers])
                rows = await cur.fetchall()
                if not rows:
                    return []
                ids = [r["id"] for r in rows]
                if not await write_fences(cur, node, {job_id: fence}, held=True):
                    return []  # (a newer owner's fence: its rows to take on)
                await cur.execute(
                    f"UPDATE executions e JOIN jobs j ON j.id = e.job_id SET e.fence = j.fence, e.node = %s,"
                    f" e.claimer = %s, e.redelivered = 1, e.state = {CLAIMED} WHERE e.id IN ({ph(len(ids))})",
                    [node, live.claimer, *ids])
                await cur.execute(f"SELECT id, instant, kind, attempts FROM executions WHERE id IN ({ph(len(ids))})"
                                  " ORDER BY instant", ids)
                return [Redelivery(id=r["id"], scheduled_at=r["instant"].replace(tzinfo=UTC),
                                   kind=ExecutionKind(r["kind"]), attempts=int(r["attempts"]))
                        for r in await cur.fetchall()]
        return []

    # ---- buffered ticks (concurrencyPolicy buffer_one, buffer_all) ---------------------------

    async def dequeue(self, execution_id: str, fence: int) -> bool:
        """A buffered tick becomes a claim to send now, if it is still this owner's (its fence): False when a
        takeover made it another owner's meanwhile (then this node must not send it)."""
        async for attempt in self.db.attempts():
            async with attempt as cur:
                n = await cur.execute(f"UPDATE executions SET state = {CLAIMED}, claimed_at = NOW(3) WHERE id = %s"
                                      f" AND state = {BUFFERED} AND fence = %s", (execution_id, fence))
                if n == 0 and attempt.again:  # the first attempt may have committed it
                    await cur.execute("SELECT state, fence FROM executions WHERE id = %s", (execution_id,))
                    row = await cur.fetchone()
                    return bool(row is not None and row["state"] == ExecutionState.CLAIMED and int(row["fence"]) == fence)
                return bool(n == 1)
        return False

    async def in_flight(self, job_id: str, live: Liveness) -> list[tuple[str, str, str | None]]:
        """The job's runs in flight on another live process (id, node, claimer): what a buffered tick waits for,
        what a replace tick cancels."""
        elsewhere = Liveness(claimer=live.claimer, others=live.others)
        alive, args = _in_flight(elsewhere, "o", recent_claims=True)
        # A run whose node died with it (abandoned by a takeover: its outcome unknown) may still be running at the
        # target, which was never told: it counts as in flight until the job's timeout has passed since it was sent
        # (its start, else its claim or instant, whichever is later; a second of margin). A buffered tick sent at
        # the takeover put two requests of a buffer_all job in flight at once (tests/chaos/test_buffered.py).
        lost = (f"(o.state = {ABANDONED} AND o.error LIKE %s AND COALESCE(o.started_at, GREATEST(o.claimed_at,"
                f" o.scheduled_at)) >= NOW(3) - INTERVAL (COALESCE(CAST(JSON_VALUE(j.spec, '$.timeout_ms') AS UNSIGNED),"
                f" 10000) + 1000) * 1000 MICROSECOND)")
        rows = await self.db.fetchall(f"SELECT o.id, o.node, o.claimer FROM executions o JOIN jobs j ON j.id = o.job_id"
                                      f" WHERE o.job_id = %s AND ((o.state IN {IN_FLIGHT} AND {alive}) OR {lost})",
                                      [job_id, *args, f"%{LOST}%"])
        return [(r["id"], r["node"], r["claimer"]) for r in rows]

    # ---- outcomes -------------------------------------------------------------------------

    async def record(self, executions: Iterable[Execution]) -> None:
        """Write execution state changes in multi-row upserts (an outcome of a row whose claim was lost is
        inserted, under its own kind)."""
        for chunk in chunks(list(executions), CLAIM_ROWS):
            args: list[Any] = []
            for e in chunk:
                args += [e.id, e.job_id, to_db(e.scheduled_at), str(e.kind), str(e.state), e.fence, e.node, e.attempts,
                         e.status_code, e.duration_ms, e.lateness_ms, (e.error or None) and e.error[:1000],
                         e.response_excerpt, to_db_or_none(e.started_at), to_db_or_none(e.finished_at), e.claimer]
            await self.db.execute(
                "INSERT INTO executions (id, job_id, scheduled_at, kind, state, fence, node, attempts, status_code,"
                " duration_ms, lateness_ms, error, response_excerpt, started_at, finished_at, claimer, claimed_at)"
                " VALUES " + ",".join(["(%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,NOW(3))"] * len(chunk))
                + " ON DUPLICATE KEY UPDATE " + _RECORD_UPDATE, args)

    async def record_missed(self, job_id: str, node: str, ranges: Sequence[Any], reason: str) -> None:
        """Missed-range rows written without a fence (a gap of a job nobody owns any more, e.g. deleted): a
        range whose last instant already has a row is left alone."""
        if not ranges:
            return
        rows = [(new_execution_id(), job_id, to_db(m.last), node, int(m.count), to_db(m.first), reason) for m in ranges]
        await self.db.execute(
            "INSERT IGNORE INTO executions (id, job_id, scheduled_at, kind, state, fence, node, missed_count,"
            " missed_from, error, claimed_at, finished_at) VALUES "
            + ",".join([f"(%s,%s,%s,{MISFIRE},{MISSED},0,%s,%s,%s,%s,NOW(3),NOW(3))"] * len(rows)),
            [v for r in rows for v in r])


def _claim_statement(node: str, claimer: str | None, chunk: Sequence[Claim], guarded: set[str],
                     live: Liveness | None) -> tuple[str, list[Any]]:
    """One INSERT … SELECT for a batch of claims, joined to the job at the claimer's fence. A guarded run whose
    job has a run in flight elsewhere goes in as an overlap row (guard 1: forbid) or a buffered tick (guard 2)."""
    union = " UNION ALL ".join(
        ["SELECT %s AS id, %s AS job_id, CAST(%s AS DATETIME(3)) AS scheduled_at, %s AS fence, %s AS kind,"
         " %s AS state, %s AS missed_count, CAST(%s AS DATETIME(3)) AS missed_from, %s AS error,"
         " %s AS guard"] * len(chunk))
    rows: list[Any] = []
    for c in chunk:
        rows += [c.id, c.job_id, to_db(c.scheduled_at), c.fence, str(c.kind), str(c.state), c.missed_count,
                 to_db_or_none(c.missed_from), c.error, (1 if c.forbid else 2) if c.id in guarded else 0]
    busy, busy_args = "0", list[Any]()
    if guarded and live is not None:
        alive, busy_args = _in_flight(live, "o", recent_claims=True)
        busy = (f"(c.guard > 0 AND EXISTS (SELECT 1 FROM executions o WHERE o.job_id = c.job_id"
                f" AND o.state IN {IN_FLIGHT} AND {alive}))")
    skip = "(c.busy AND c.guard = 1)"  # forbid: an overlap row, terminal
    sql = (
        "INSERT INTO executions (id, job_id, scheduled_at, kind, state, fence, node, claimer, missed_count,"
        " missed_from, error, claimed_at, finished_at)"
        f" SELECT c.id, c.job_id, c.scheduled_at, IF({skip}, {OVERLAP}, c.kind),"
        f" IF(c.busy, IF(c.guard = 1, {SKIPPED}, {BUFFERED}), c.state),"
        f" c.fence, %s, %s, IF({skip}, 1, c.missed_count), IF({skip}, c.scheduled_at, c.missed_from),"
        f" IF({skip}, %s, c.error), NOW(3), IF(c.state IN ({CLAIMED}, {BUFFERED}) AND NOT {skip}, NULL, NOW(3))"
        f" FROM (SELECT c.*, {busy} AS busy FROM ({union}) c) c JOIN jobs j ON j.id = c.job_id AND j.fence = c.fence"
        f" AND j.deleted_at IS NULL AND (j.paused = 0 OR c.kind = {MANUAL})"
        " ON DUPLICATE KEY UPDATE executions.id = executions.id"
    )
    # the placeholders in the statement's order: node, claimer, the overlap reason, the in-flight check's,
    # then the claims'
    return sql, [node, claimer, OVERLAP_REASON, *busy_args, *rows]


async def _count_runs(cur: Cursor, runs: Sequence[Claim]) -> None:
    """maxRuns: each job's runs count goes up by the runs it just won (under the claim's fence)."""
    by_job: dict[tuple[str, int], int] = {}
    for c in runs:
        by_job[(c.job_id, c.fence)] = by_job.get((c.job_id, c.fence), 0) + 1
    for (job_id, fence), n in by_job.items():
        await cur.execute("UPDATE jobs SET runs = runs + %s WHERE id = %s AND fence = %s", (n, job_id, fence))


async def _claim_chunk(cur: Cursor, sql: str, args: list[Any], chunk: Sequence[Claim], guarded: set[str],
                       live: Liveness | None, lost: set[str], *, readback: bool = False
                       ) -> tuple[set[str], set[str], set[str]]:
    skipped: set[str] = set()
    # A duplicate tick is left unchanged, so it counts 0 affected rows: when every row was inserted, every
    # claim is won without reading them back. (``readback``: the statement already ran; read what it did.)
    if not readback and await cur.execute(sql, args) == len(chunk):
        if guarded:
            await cur.execute(f"SELECT id FROM executions WHERE id IN ({ph(len(guarded))})"
                              f" AND (kind = {OVERLAP} OR state = {BUFFERED})", sorted(guarded))
            skipped = {r["id"] for r in await cur.fetchall()}
        return {c.id for c in chunk}, set(), skipped
    keys = [(c.job_id, to_db(c.scheduled_at)) for c in chunk]
    await cur.execute(
        "SELECT e.id, e.job_id, e.scheduled_at, e.kind, e.state, e.fence, e.claimer, j.fence AS job_fence,"
        " (j.deleted_at IS NULL AND j.paused = 0) AS live FROM executions e JOIN jobs j ON j.id = e.job_id"
        f" WHERE (e.job_id, e.scheduled_at) IN ({','.join(['(%s,%s)'] * len(keys))})", [v for k in keys for v in k])
    rows = {(r["job_id"], r["scheduled_at"]): r for r in await cur.fetchall()}
    got, dup = set(), set()
    for c, k in zip(chunk, keys, strict=True):
        row = rows.get(k)
        if row is None:
            continue
        if row["id"] == c.id:
            got.add(c.id)
            if c.id in guarded and (row["kind"] == ExecutionKind.OVERLAP or row["state"] == ExecutionState.BUFFERED):
                skipped.add(c.id)
        elif row["job_fence"] == c.fence and row["live"]:
            dup.add(c.id)  # our fence still holds: the tick simply has its row already
            if (live is not None and row["state"] in OPEN_STATES and row["fence"] < c.fence
                    and row["claimer"] not in (live.claimer, *live.others)):
                lost.add(c.job_id)  # a lost claimer's row, opened under an older fence after our takeover read
    return got, dup, skipped


async def _settle_lost(cur: Cursor, job_ids: list[str], node: str, live: Liveness, alive: str, alive_args: list[Any]
                       ) -> tuple[dict[str, list[Redelivery]], dict[str, list[Redelivery]]]:
    """A takeover's open rows of ``job_ids`` claimed under older fences: at_least_once ones within the grace become
    this owner's to send again; buffered ones its queue; the rest (a lost claimer's, outcome unknown) abandoned."""
    ids, jobs_in = job_ids, ph(len(job_ids))
    # at_least_once: a lost claimer's rows still within the job's misfire grace become this
    # owner's, to be sent again as the same execution
    await cur.execute(
        f"UPDATE executions e JOIN jobs j ON j.id = e.job_id SET e.fence = j.fence, e.node = %s,"
        f" e.claimer = %s, e.redelivered = 1, e.state = {CLAIMED}"
        f" WHERE e.job_id IN ({jobs_in}) AND e.state IN {IN_FLIGHT} AND e.fence < j.fence AND NOT {alive}"
        f" AND e.kind <> {BACKFILL} AND {_AT_LEAST_ONCE} AND {_IN_GRACE}",
        [node, live.claimer or None, *ids, *alive_args])
    redeliver: dict[str, list[Redelivery]] = {}
    if cur.rowcount:
        await cur.execute(
            f"SELECT e.id, e.job_id, e.scheduled_at, e.kind, e.attempts FROM executions e"
            f" JOIN jobs j ON j.id = e.job_id AND e.fence = j.fence WHERE e.job_id IN ({jobs_in})"
            f" AND e.state = {CLAIMED} AND e.redelivered = 1 AND e.kind <> {BACKFILL}"
            " ORDER BY e.scheduled_at", ids)
        redeliver = _redeliveries(await cur.fetchall())
    # the lost claimer's other rows: outcome unknown, never re-sent (a run still in flight
    # somewhere overwrites this with its real outcome when it records it)
    await cur.execute(
        f"UPDATE executions e JOIN jobs j ON j.id = e.job_id SET e.state = {ABANDONED},"
        f" e.finished_at=NOW(3), e.error=CONCAT('owner ', e.node, ' {LOST};"
        f" not re-sent') WHERE e.state IN {IN_FLIGHT} AND e.job_id IN ({jobs_in}) AND e.fence < j.fence"
        f" AND NOT {alive} AND {_settled_here('e')}", [*ids, *alive_args])
    # buffered ticks were never sent: they become this owner's queue, whoever buffered them
    await cur.execute(
        f"UPDATE executions e JOIN jobs j ON j.id = e.job_id SET e.fence = j.fence, e.node = %s,"
        f" e.claimer = %s WHERE e.job_id IN ({jobs_in}) AND e.state = {BUFFERED} AND e.fence < j.fence",
        [node, live.claimer or None, *ids])
    buffered: dict[str, list[Redelivery]] = {}
    if cur.rowcount:
        await cur.execute(f"SELECT id, job_id, scheduled_at, kind, attempts FROM executions"
                          f" WHERE job_id IN ({jobs_in}) AND state = {BUFFERED} ORDER BY scheduled_at", ids)
        buffered = _redeliveries(await cur.fetchall())
    return redeliver, buffered
