"""A generative nemesis: a seeded random schedule of faults and API operations against real nodes,
then a checker that is a pure function of what happened (the history), what arrived (the receiver,
the witness) and what the cluster wrote down (execution rows, the tick ledger, health).

    python -m tests.chaos.nemesis --minutes 3 --seed 7     (scripts/soak provisions and runs this)
    python -m tests.chaos.nemesis --recheck test-artifacts/nemesis/7-....json

The parts, in the order a run uses them:

* ``plan(seed, seconds)`` is pure: a ``random.Random(seed)`` drives a small model of the cluster
  (nodes up / stopped / down / gone, one global fault at a time, job slots) and returns timed
  ``Step``s. The same seed always gives the same steps; what they meet (a node slow to restart, a
  503) can differ between runs, so a replay repeats the schedule, not every reply. Jobs get frequent
  schedules and rare interval ones (issue 18): ``0 */12 29 2 *``, which never fires in a run, and
  ``rare-today`` / ``rare-today-minutely``, names the executor resolves to an every-2-seconds (or
  every-minute) schedule on the UTC dates of yesterday, today and tomorrow, so they fire in any zone.
* ``Nemesis`` executes the steps against a ``Cluster`` (tests/harness.py) whose nodes use a private
  redis-server (restarted empty, ``CLIENT PAUSE``d) and reach MariaDB through a ``TcpProxy`` (cut).
  Faults run as tasks (one lock per node, so a node's faults stay in order); API operations run one
  at a time in plan order, against a random node that is up. Readers (op ``read``) run beside them, one
  burst at a time: concurrent previews of rare interval schedules (count 100), job previews, and ledgers
  from now to year 2400 (limit 10,000) against one node. Everything is appended to a history with
  wall-clock times and status codes.
* ``Nemesis.heal`` resumes and restarts what is down, restores the proxy, and waits for the member
  set; ``settle`` waits (on conditions) until the ledger of every job has no ``unaccounted`` and no
  ``running`` instant in the window, or a deadline passes.
* ``check(evidence)`` is pure and returns the violations (and warnings) of:

  1. no duplicate: no (jobId, scheduledAt) arrives with two execution ids;
  2. no tick without a fate: no ``unaccounted`` instant in any job's ledger over the window, every
     live node's ``unaccountedTicks`` is 0, no instant is called ``trimmed`` (retention keeps
     ``HISTORY_PER_JOB`` rows, so nothing is trimmed in a run); and the ledger agrees with the witness: every request
     that arrived has its execution row (no request without a claim) for that very tick, no row
     that says "not run" (missed/skipped) was in fact sent, every ``delivered`` execution arrived;
  3. edits reach the owner within ``EDIT_GRACE`` (3 s) of the API's reply: no request to a
     superseded URI path, none for a deleted job, no instant fired that lies 3 s or more into a
     pause, no instant of a superseded schedule;
  4. nothing sent after a lease lapsed: for SIGSTOP, kill -9 and Redis ``CLIENT PAUSE``, nothing
     from the affected node(s) arrives between ``fault start + member_ttl + 0.3 s`` and the
     resume/restart, and after a resume nothing that was claimed before the fault (the node must
     have abandoned it);
  5. ``at_least_once`` jobs lose nothing: no instant of theirs is ``abandoned``;
  6. no node stalled its event loop: no "event loop was blocked" line (read from the node logs by
     ``settle``) of 1 s or more, unless logged during a SIGSTOP of that node or within 1 s of its SIGCONT
     (a resumed process reads its pause as lag);
  7. skips and calendars are obeyed (issue 20): no tick of a job arrives for an instant its skip covered
     (from ``EDIT_GRACE`` after the skip's reply), nor for an instant the calendar it names excluded under every
     definition of the calendar that may have been in force then; and backfills (which send instants again, as
     executions of their own) never make an instant delivered twice: at most one tick execution and one
     successful execution per instant;
  8. failure alerts (issue 21) come once per streak: for each job, ``job.failing`` and ``job.recovered`` alternate
     in the order of their runs' instants (the first a ``job.failing``), whatever was killed or cut while they
     were raised and sent; and every alert the cluster lists as sent arrived at the receiver.

Jobs are drawn with every overlap policy (``allow``, ``forbid``, ``buffer_one``, ``buffer_all``, ``replace``) and
some name the run's exclusion calendar (``nem-cal``); the operations add skips, backfills of the last minute and
calendar edits (nothing excluded, today excluded, the next seconds excluded) to creates, edits, pauses, deletes,
run-nows, applies and readers; and the operations layer's (issue 21): pauses with a note and an end (the cluster
resumes the job itself: the history gets that resume as a record of its own, confirmed a few seconds after the
end), restores of one of a job's last versions, bulk pause/resume by label (every job carries ``nem=a|b``), and
jobs that fail and pause themselves (``pauseAfterFailures``). Alerts go to the receiver (``CRONRING_ALERT_URL``).

  Besides, the API never answers a 5xx other than 503, nor a 400 to the valid requests sent here (a
  reader's 400 "range too large" excepted), and a node exits 0 within 30 s of SIGTERM and becomes healthy
  when started.

Known limits (also in the report): the receiver stamps ``arrivedAt`` when a request is read, so a
request sent just before a lease lapsed and delayed in a socket is told apart only by the 0.3 s
tolerance; an edit whose reply was lost (timeout, 503) is counted as maybe-applied from the moment
it was sent; the lease check cannot see a stale request that never reached the receiver; ticks are
judged in ``[start, healed)`` only, so a fault's effects on ticks after the heal are not judged; the stall check sees
only the lag a node logs itself (a node killed while its loop was held logs nothing, and a stall that ends within
1 s of a SIGCONT of that node is taken for the pause). Two findings are
warnings, not violations: a request that arrived although its row says ``abandoned`` (a claimer killed, or cut off
from MariaDB, between sending and recording cannot know it sent), and an instant still ``running`` when the settle
deadline passed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import signal
import subprocess
import sys
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlparse, urlsplit

import aiomysql
import redis.asyncio as aioredis

from tests.harness import ARTIFACTS, DATABASE_URL, Cluster, Node, RedisServer, TcpProxy, db_url, free_port, wait_for

# ---- the cluster's timings (the harness's) and the checker's tolerances -------------------------

HISTORY_PER_JOB = 1_000_000  # retention never trims in a run: a "trimmed" instant is a lost one
HEARTBEAT = 0.5
MEMBER_TTL = 2.0
CLAIM_AHEAD = 0.5
SETTLE = MEMBER_TTL + HEARTBEAT + CLAIM_AHEAD + 2.0  # node/audit.py settle_for: the ledger's "pending" horizon
LEASE_TOLERANCE = 0.3  # a request already on the wire when the lease lapsed may arrive this much later
EDIT_GRACE = 3.0  # an edit reaches the owner within this long after the API replied
MAX_GRACE = 120.0  # the longest misfireGraceSeconds the nemesis gives a job
SETTLE_DEADLINE = 75.0  # after the heal: how long the ledger may take to account for every instant
OP_TIMEOUT = 8.0  # one API call
TERM_TIMEOUT = 50.0  # a SIGTERMed node exits within its stop's budget (2 x grace + 30 s, then it exits 1); 50 s is a hang
START_NODES = 3
MAX_NODES = 5
MAX_JOBS = 28  # live jobs (regular slots + apply-managed), under the brief's 30
MAX_APPLY_JOBS = 4
NODE_PREFIX = "nem"
ARTIFACT_DIR = ARTIFACTS / "nemesis"

# Rare interval schedules (hour field * or */n; issue 18, High 1): one that never fires in a run (planning,
# nextRunAt and ledgers still walk it), and two that fire only on the run's own dates. The latter are names
# in the plan (it stays pure), resolved by the executor from the UTC date of the call (``resolve_schedule``).
RARE_LEAP = "0 */12 29 2 *"
RARE_TODAY = "rare-today"  # -> "*/2 * * D1,D2,D3 M1,M2 *": every 2 s, yesterday to tomorrow (UTC), any zone
RARE_TODAY_MINUTELY = "rare-today-minutely"  # -> "* * D1,D2,D3 M1,M2 *": every minute on those dates
SCHEDULES = ("* * * * * *", "* * * * * *", "*/2 * * * * *", "* * * * * *", "*/2 * * * * *",
             RARE_TODAY, RARE_TODAY, RARE_TODAY_MINUTELY, RARE_LEAP)
ZONES = ("UTC", "Europe/Lisbon", "America/Sao_Paulo", "Asia/Kolkata", "Australia/Lord_Howe", "America/New_York")
# What the readers preview (count 100): rare interval schedules, each cheap only with the jumping algorithm.
RARE_PREVIEWS = (RARE_LEAP, "*/15 */2 29 2 *", "0 0 */12 29 2 *", "0 */4 1 1 *", "30 * 29 2 *", RARE_TODAY)
READ_COUNT = 100  # the API's MAX_PREVIEW
READ_TICKS_TO = "2400-01-01T00:00:00Z"  # a ledger read from now to here, limit READ_TICKS_LIMIT
READ_TICKS_LIMIT = 10_000  # the API's TICKS_LIMIT
TOO_LARGE = "range too large"  # the one 400 a reader may get (a schedule step budget spent)

FAULT_WEIGHTS = {"kill": 1.0, "stop": 1.0, "term": 0.7, "join": 0.6, "leave": 0.5,
                 "redis_pause": 0.7, "redis_restart": 0.4, "db_cut": 0.7}
OP_WEIGHTS = {"create": 1.5, "edit_uri": 3.0, "edit_schedule": 1.5, "edit_zone": 1.0, "pause": 1.0,
              "resume": 1.5, "delete": 1.0, "run_now": 2.0, "apply": 0.7, "read": 1.0, "skip": 0.8, "backfill": 0.5,
              "calendar": 0.6, "pause_until": 0.6, "restore": 0.5, "bulk": 0.3}
GROUPS = ("a", "b")  # the label nem=<group> a created job carries: bulk pause/resume select by it
AUTO_RESUME_SLACK = 4.0  # seconds after a pause's end by which a node's sweep (every 2 s) has resumed the job
OVERLAP_POLICIES = {"allow": 6.0, "forbid": 1.0, "buffer_one": 1.0, "buffer_all": 1.0, "replace": 1.0}
CALENDAR = "nem-cal"  # the run's exclusion calendar: some jobs name it; op ``calendar`` edits it
FAULT_SHARE = 0.25
STEP_GAP = (0.2, 0.9)  # seconds between actions: ~110 a minute, ~80 of them API operations
HEALS = ("restart", "cont", "db_restore")  # steps that end a fault (planned, not drawn)
STALL_EVENT = "event loop was blocked"  # node/app.py's warning (with ``seconds``) when its loop was held > 0.5 s
STALL_SECONDS = 1.0  # a stall this long outside a SIGSTOP of the node is a violation
STALL_AFTER_RESUME = 1.0  # a stopped process reports its pause as lag when it resumes: up to this long after SIGCONT


# ================================================================================================
# The plan: pure
# ================================================================================================

@dataclass(frozen=True, slots=True, kw_only=True)
class Step:
    at: float  # seconds after the start
    kind: str
    args: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"at": round(self.at, 3), "kind": self.kind, **self.args}


def resolve_schedule(expression: str, now: float) -> str:
    """The expression a plan's schedule stands for at ``now``: itself, or for ``RARE_TODAY`` (and
    ``RARE_TODAY_MINUTELY``) an interval schedule restricted to the UTC dates of yesterday, today and
    tomorrow, which covers today's local date in every zone (offsets lie within ±14 h). Pure."""
    if expression not in (RARE_TODAY, RARE_TODAY_MINUTELY):
        return expression
    today = datetime.fromtimestamp(now, UTC)
    dates = [today + timedelta(days=d) for d in (-1, 0, 1)]
    days = ",".join(str(d) for d in sorted({x.day for x in dates}))
    months = ",".join(str(m) for m in sorted({x.month for x in dates}))
    return f"*/2 * * {days} {months} *" if expression == RARE_TODAY else f"* * {days} {months} *"


def _target(rng: random.Random) -> dict[str, Any]:
    """Where a job's requests go: the receiver, slowly, or answering 500."""
    r = rng.random()
    if r < 0.7:
        return {"kind": "ok"}
    if r < 0.85:
        return {"kind": "slow", "delay_ms": rng.choice((300, 800, 1500, 2500))}
    return {"kind": "fail", "status": 500}


@dataclass
class _Model:
    """What the plan believes the cluster looks like: enough to keep its own promises
    (≥ 1 node up, ≤ 5 nodes, one global fault at a time, ≤ 30 jobs)."""

    nodes: dict[str, str]  # id -> up | stopped | down (killed or terminated; a restart is planned) | gone
    next_node: int
    heals: list[Step] = field(default_factory=list)
    global_until: float = 0.0
    slots: dict[int, dict[str, Any]] = field(default_factory=dict)
    next_slot: int = 0
    apply_specs: dict[str, dict[str, Any]] = field(default_factory=dict)
    next_apply: int = 0

    def up(self) -> list[str]:
        return sorted(n for n, s in self.nodes.items() if s == "up")

    def impaired(self) -> int:
        return sum(1 for s in self.nodes.values() if s in ("stopped", "down"))

    def existing(self) -> int:
        return sum(1 for s in self.nodes.values() if s != "gone")

    def live_slots(self) -> list[int]:
        return sorted(k for k, s in self.slots.items() if s["live"])

    def live_jobs(self) -> int:
        return len(self.live_slots()) + len(self.apply_specs)


def plan(seed: int, seconds: float, *, nodes: int = START_NODES) -> list[Step]:
    """The nemesis's schedule for ``seconds``: an action every 0.2-0.9 s, about a quarter of them faults,
    each fault's end planned with it. Pure: the same arguments give the same steps."""
    rng = random.Random(seed)
    m = _Model(nodes={f"{NODE_PREFIX}-{i}": "up" for i in range(1, nodes + 1)}, next_node=nodes + 1)
    steps: list[Step] = []
    t = 0.5
    while t < seconds:
        while m.heals and m.heals[0].at <= t:
            heal = m.heals.pop(0)
            steps.append(heal)
            _heal_model(m, heal)
        step = None
        if rng.random() < FAULT_SHARE:
            step = _draw_fault(m, rng, t)
        if step is None:
            step = _draw_op(m, rng, t)
        if step is not None:
            steps.append(step)
        t += rng.uniform(*STEP_GAP)
    steps.sort(key=lambda s: s.at)  # stable: heals keep their place among actions drawn at once
    return steps


def _later(m: _Model, step: Step) -> None:
    m.heals.append(step)
    m.heals.sort(key=lambda s: s.at)


def _heal_model(m: _Model, heal: Step) -> None:
    if heal.kind in ("restart", "cont"):
        m.nodes[heal.args["node"]] = "up"


def _weighted(rng: random.Random, weights: Mapping[str, float]) -> str | None:
    items = [(k, w) for k, w in weights.items() if w > 0]
    if not items:
        return None
    total = sum(w for _, w in items)
    x = rng.uniform(0, total)
    for k, w in items:
        x -= w
        if x <= 0:
            return k
    return items[-1][0]


def _draw_fault(m: _Model, rng: random.Random, t: float) -> Step | None:
    up = m.up()
    node_fault_ok = len(up) >= 2 and m.impaired() < 2
    allowed = {
        "kill": node_fault_ok, "stop": node_fault_ok, "term": node_fault_ok,
        "leave": node_fault_ok and m.existing() >= 3,
        "join": m.existing() < MAX_NODES,
        "redis_pause": m.global_until <= t, "redis_restart": m.global_until <= t, "db_cut": m.global_until <= t,
    }
    kind = _weighted(rng, {k: w for k, w in FAULT_WEIGHTS.items() if allowed[k]})
    if kind is None:
        return None
    if kind in ("kill", "stop", "term", "leave"):
        node = rng.choice(up)
        if kind == "kill":
            m.nodes[node] = "down"
            _later(m, Step(at=t + rng.uniform(2.0, 6.0), kind="restart", args={"node": node}))
        elif kind == "term":
            m.nodes[node] = "down"
            _later(m, Step(at=t + rng.uniform(1.0, 4.0), kind="restart", args={"node": node}))
        elif kind == "stop":
            m.nodes[node] = "stopped"
            _later(m, Step(at=t + rng.uniform(1.0, 4.0), kind="cont", args={"node": node}))
        else:
            m.nodes[node] = "gone"
        return Step(at=t, kind=kind, args={"node": node})
    if kind == "join":
        node = f"{NODE_PREFIX}-{m.next_node}"
        m.next_node += 1
        m.nodes[node] = "up"
        return Step(at=t, kind=kind, args={"node": node})
    if kind == "redis_pause":
        ms = rng.randint(1000, 2500)
        m.global_until = t + ms / 1000 + 2.0
        return Step(at=t, kind=kind, args={"ms": ms})
    if kind == "redis_restart":
        m.global_until = t + 4.0
        return Step(at=t, kind=kind)
    seconds = rng.uniform(1.0, 4.0)  # db_cut
    m.global_until = t + seconds + 2.0
    _later(m, Step(at=t + seconds, kind="db_restore"))
    return Step(at=t, kind=kind)


def _draw_op(m: _Model, rng: random.Random, t: float) -> Step | None:
    live = m.live_slots()
    paused = [k for k in live if m.slots[k]["paused"]]
    running = [k for k in live if not m.slots[k]["paused"]]
    weights = dict(OP_WEIGHTS)
    if m.live_jobs() < 8:
        weights["create"] = 6.0
    if m.live_jobs() >= MAX_JOBS - MAX_APPLY_JOBS:
        weights["create"] = 0
    for k in ("edit_uri", "edit_schedule", "edit_zone", "run_now", "skip", "backfill", "restore", "bulk"):
        if not live:
            weights[k] = 0
    if not running:
        weights["pause"] = weights["pause_until"] = 0
    if not paused:
        weights["resume"] = 0
    if len(live) <= 6:
        weights["delete"] = 0
    kind = _weighted(rng, weights)
    if kind is None:
        return None
    via = round(rng.random(), 4)  # which up node takes the request (an index into them at run time)
    if kind == "create":
        slot = m.next_slot
        m.next_slot += 1
        target = _target(rng)
        r = rng.random()
        policy = ("fire_all", 120) if r < 0.85 else ("fire_once", 60) if r < 0.95 else ("skip", 60)
        spec = {
            "schedule": rng.choice(SCHEDULES), "timeZone": rng.choice(ZONES), "target": target,
            "misfirePolicy": policy[0], "misfireGraceSeconds": policy[1],
            "concurrencyPolicy": _weighted(rng, OVERLAP_POLICIES),
            "retries": 1 if target["kind"] == "fail" or rng.random() < 0.2 else 0,
            "delivery": "at_least_once" if rng.random() < 0.3 else "at_most_once",
            "calendar": rng.random() < 0.3, "group": rng.choice(GROUPS),
        }
        if target["kind"] == "fail" and rng.random() < 0.4:
            spec["pauseAfterFailures"] = rng.randint(2, 4)  # it pauses itself: an auto-pause, audited
        m.slots[slot] = {"live": True, "paused": False, "version": 1, "group": spec["group"]}
        return Step(at=t, kind=kind, args={"slot": slot, "via": via, **spec})
    if kind == "apply":  # half of them through POST /api/crons/apply (one batch, all or nothing), as the CLI does
        return Step(at=t, kind=kind, args={"via": via, "jobs": _draw_apply(m, rng), "bulk": rng.random() < 0.5})
    if kind == "read":
        previews = [{"schedule": rng.choice(RARE_PREVIEWS), "timeZone": rng.choice(ZONES)} for _ in range(3)]
        return Step(at=t, kind=kind, args={"via": via, "previews": previews,
                                           "slots": sorted(rng.sample(live, min(2, len(live))))})
    if kind == "calendar":  # nothing excluded, today (UTC) excluded, or the next seconds
        shape = rng.choice(("none", "none", "today", "soon"))
        return Step(at=t, kind=kind, args={"via": via, "shape": shape, "seconds": rng.randint(3, 15)})
    if kind == "skip":
        return Step(at=t, kind=kind, args={"via": via, "slot": rng.choice(live), "count": rng.randint(1, 4)})
    if kind == "backfill":
        return Step(at=t, kind=kind, args={"via": via, "slot": rng.choice(live), "ago": rng.randint(15, 90),
                                           "span": rng.randint(5, 40), "policy": rng.choice(("forbid", "allow"))})
    if kind == "restore":  # one of the job's last versions, picked when it runs (``pick``: where in the list)
        return Step(at=t, kind=kind, args={"via": via, "slot": rng.choice(live), "pick": round(rng.random(), 4)})
    if kind == "bulk":
        group, action = rng.choice(GROUPS), rng.choice(("pause", "resume"))
        for k in live:
            if m.slots[k].get("group") == group:
                m.slots[k]["paused"] = action == "pause"
        return Step(at=t, kind=kind, args={"via": via, "group": group, "action": action})
    if kind == "pause_until":  # paused for a few seconds, with a note: the cluster resumes it by itself
        return Step(at=t, kind=kind, args={"via": via, "slot": rng.choice(running), "seconds": rng.randint(3, 12)})
    slot = rng.choice(paused if kind == "resume" else running if kind == "pause" else live)
    s = m.slots[slot]
    args: dict[str, Any] = {"slot": slot, "via": via}
    if kind == "edit_uri":
        s["version"] += 1
        args.update(version=s["version"], target=_target(rng))
    elif kind == "edit_schedule":
        args["schedule"] = rng.choice(SCHEDULES)
    elif kind == "edit_zone":
        args["timeZone"] = rng.choice(ZONES)
    elif kind == "pause":
        s["paused"] = True
    elif kind == "resume":
        s["paused"] = False
    elif kind == "delete":
        s["live"] = False
    return Step(at=t, kind=kind, args=args)


def _draw_apply(m: _Model, rng: random.Random) -> list[dict[str, Any]]:
    """The next declarative file: the managed jobs with one change (or none: a re-apply is 0 changes)."""
    specs = m.apply_specs
    r = rng.random()
    if (not specs or r < 0.25) and len(specs) < MAX_APPLY_JOBS and m.live_jobs() < MAX_JOBS:
        name = f"{NODE_PREFIX}-apply-{m.next_apply}"
        m.next_apply += 1
        specs[name] = {"schedule": rng.choice(SCHEDULES), "timeZone": rng.choice(ZONES), "version": 1,
                       "target": _target(rng), "paused": False}
    elif specs:
        name = rng.choice(sorted(specs))
        change = rng.choice(("uri", "schedule", "paused", "remove", "none"))
        if change == "uri":
            specs[name]["version"] += 1
            specs[name]["target"] = _target(rng)
        elif change == "schedule":
            specs[name]["schedule"] = rng.choice(SCHEDULES)
        elif change == "paused":
            specs[name]["paused"] = not specs[name]["paused"]
        elif change == "remove" and len(specs) > 1:
            del specs[name]
    return [{"name": n, **{k: (dict(v) if isinstance(v, dict) else v) for k, v in s.items()}}
            for n, s in sorted(specs.items())]


# ================================================================================================
# Running the plan against real processes
# ================================================================================================

def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _ts(s: str | None) -> float | None:
    if not s:
        return None
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def _job_view(body: Any) -> dict[str, Any] | None:
    if not isinstance(body, dict) or "id" not in body:
        return None
    return {k: body.get(k) for k in ("id", "uri", "schedule", "timeZone", "paused", "version", "delivery")}


class Nemesis:
    """Executes a plan against a cluster and keeps the history."""

    def __init__(self, cluster: Cluster, redis: RedisServer, proxy: TcpProxy, *, seed: int,
                 progress: Callable[[str], None] = print) -> None:
        self.c = cluster
        self.redis = redis
        self.proxy = proxy
        self.seed = seed
        self.progress = progress
        self.history: list[dict[str, Any]] = []
        self.state: dict[str, str] = {}  # node -> up | starting | stopped | down | gone
        self.node_locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self.global_lock = asyncio.Lock()
        self.tasks: set[asyncio.Task[None]] = set()
        self.ops: asyncio.Queue[Step | None] = asyncio.Queue()
        self.slot_ids: dict[int, str | None] = {}
        self.slot_unsure: set[int] = set()  # create sent, reply lost: look the job up by name
        self.slot_groups: dict[int, str] = {}  # the label group (nem=a|b) each slot's job was created in
        self.at_least_once: bool | None = None  # does the API know the delivery field?
        self.redis_paused_until = 0.0
        self.db_cut = False
        self.started_at = 0.0
        self.steps_done = 0
        self.reading = False  # a readers' burst is in flight (one at a time)

    # -- history
    def record(self, type_: str, kind: str, t: float | None = None, **fields: Any) -> dict[str, Any]:
        t = time.time() if t is None else t
        rec = {"t": round(t, 4), "time": _iso(t), "type": type_, "kind": kind, **fields}
        self.history.append(rec)
        return rec

    def up(self) -> list[str]:
        return sorted(n for n, s in self.state.items() if s == "up")

    def node(self, name: str) -> Node:
        return self.c.nodes[name]

    def receiver_uri(self, name: str, version: int, target: Mapping[str, Any]) -> str:
        assert self.c.receiver is not None
        q = ""
        if target.get("kind") == "slow":
            q = f"?delay_ms={target['delay_ms']}"
        elif target.get("kind") == "fail":
            q = f"?status={target['status']}"
        return f"{self.c.receiver.url}/hooks/{name}v{version}{q}"

    # -- the main loop
    async def start(self, nodes: int = START_NODES) -> None:
        names = [f"{NODE_PREFIX}-{i}" for i in range(1, nodes + 1)]
        await self.c.start_nodes(*names)
        for n in names:
            self.state[n] = "up"
        status, body, _ = await self.c.request("PUT", f"{self.node(names[0]).url}/api/calendars/{CALENDAR}",
                                               json={"timeZone": "UTC"})
        if status not in (200, 201):
            raise AssertionError(f"the run's calendar: {status} {body}")
        self.record("op", "calendar", t=time.time(), reply=round(time.time(), 4), status=status, calendar={},
                    node=names[0], job=None, want=None, got=None, error=None)
        self.record("phase", "started", nodes=names, seed=self.seed)

    async def run(self, steps: list[Step], seconds: float) -> None:
        self.started_at = time.time()
        worker = asyncio.create_task(self._op_worker())
        reporter = asyncio.create_task(self._reporter())
        try:
            for step in steps:
                delay = self.started_at + step.at - time.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                self.steps_done += 1
                if step.kind == "read":
                    if self.reading:
                        self.record("op", "read", skipped="the previous readers' burst is still in flight")
                        continue
                    self._spawn(self._o_read(step))
                elif step.kind in OP_WEIGHTS:
                    if self.ops.qsize() >= 6:
                        self.record("op", step.kind, skipped="backlog: the API worker is behind", step=step.to_json())
                        continue
                    self.ops.put_nowait(step)
                else:
                    self._spawn(self._fault(step))
            rest = self.started_at + seconds - time.time()
            if rest > 0:
                await asyncio.sleep(rest)
        finally:
            reporter.cancel()
            self.ops.put_nowait(None)
            try:
                await asyncio.wait_for(worker, OP_TIMEOUT * 7)
            except TimeoutError:
                worker.cancel()
            if self.tasks:
                await asyncio.wait(list(self.tasks), timeout=60)
        self.record("phase", "plan done", steps=len(steps))

    async def _reporter(self) -> None:
        while True:
            await asyncio.sleep(60)
            faults = Counter(h["kind"] for h in self.history if h["type"] == "fault" and not h.get("skipped"))
            ops = Counter(h["kind"] for h in self.history if h["type"] == "op" and "status" in h)
            try:
                stats = await self.c.get_json(f"{self.c.receiver.url}/stats")  # type: ignore[union-attr]
                requests = stats["total"]["requests"]
            except Exception:
                requests = "?"
            self.progress(f"[nemesis] {int(time.time() - self.started_at)} s: {self.steps_done} steps, "
                          f"nodes up {self.up()}, faults {dict(faults)}, ops {sum(ops.values())}, "
                          f"requests at the receiver {requests}")

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # -- faults
    async def _fault(self, step: Step) -> None:
        try:
            await getattr(self, f"_f_{step.kind}")(step)
        except Exception as e:
            self.record("fault", step.kind, error=f"{type(e).__name__}: {e}", step=step.to_json(),
                        trace=traceback.format_exc(limit=3))

    def _skip(self, step: Step, why: str) -> None:
        self.record("fault", step.kind, skipped=why, **step.args)

    async def _f_kill(self, step: Step) -> None:
        n = step.args["node"]
        async with self.node_locks[n]:
            if self.state.get(n) != "up" or len(self.up()) < 2:
                return self._skip(step, f"{n} is {self.state.get(n)}; up {self.up()}")
            self.state[n] = "down"
            t = time.time()
            self.node(n).kill()
            self.record("fault", "kill", t=t, node=n)

    async def _f_stop(self, step: Step) -> None:
        n = step.args["node"]
        async with self.node_locks[n]:
            if self.state.get(n) != "up" or len(self.up()) < 2:
                return self._skip(step, f"{n} is {self.state.get(n)}; up {self.up()}")
            self.state[n] = "stopped"
            t = time.time()
            self.node(n).signal(signal.SIGSTOP)
            self.record("fault", "stop", t=t, node=n)

    async def _f_cont(self, step: Step) -> None:
        n = step.args["node"]
        async with self.node_locks[n]:
            if self.state.get(n) != "stopped":
                return self._skip(step, f"{n} is {self.state.get(n)}")
            self.node(n).signal(signal.SIGCONT)
            self.state[n] = "up"
            self.record("fault", "cont", node=n)

    async def _f_term(self, step: Step, *, leave: bool = False) -> None:
        n = step.args["node"]
        async with self.node_locks[n]:
            if self.state.get(n) != "up" or len(self.up()) < 2:
                return self._skip(step, f"{n} is {self.state.get(n)}; up {self.up()}")
            self.state[n] = "gone" if leave else "down"
            t = time.time()
            node = self.node(n)
            try:
                rc = await node.terminate(timeout=TERM_TIMEOUT)
            except AssertionError:  # it did not stop: a finding; kill it so no stray process keeps running
                _dump_stacks(node)
                node.kill()
                self.record("fault", step.kind, t=t, node=n, hung=f"still running {TERM_TIMEOUT:.0f} s after SIGTERM "
                            f"(pid {node.pid}); killed")
                return
            self.record("fault", step.kind, t=t, node=n, exited=round(time.time(), 4), returncode=rc)

    async def _f_leave(self, step: Step) -> None:
        await self._f_term(step, leave=True)

    async def _f_restart(self, step: Step) -> None:
        n = step.args["node"]
        async with self.node_locks[n]:
            if self.state.get(n) != "down":
                return self._skip(step, f"{n} is {self.state.get(n)}")
            await self._start(n, "restart")

    async def _f_join(self, step: Step) -> None:
        n = step.args["node"]
        async with self.node_locks[n]:
            if n in self.state:
                return self._skip(step, f"{n} exists")
            await self._start(n, "join")

    async def _start(self, n: str, kind: str) -> None:
        self.state[n] = "starting"
        old = self.c.nodes.get(n)
        if old is not None and old.alive():  # (never expected: every stop above ends in an exit or a kill)
            old.kill()
            self.record("fault", "kill", node=n, stray=f"pid {old.pid} still alive at a restart")
        t = time.time()
        try:
            if n in self.c.nodes:
                await self.c.restart_node(n)
            else:
                await self.c.start_node(n)
        except AssertionError as e:
            self.state[n] = "down"
            self.node(n).kill()
            self.record("fault", kind, t=t, node=n, failed=str(e)[-1500:])
            return
        self.state[n] = "up"
        self.record("fault", kind, t=t, node=n, healthy=round(time.time(), 4))

    async def _redis_admin(self, *args: Any) -> Any:
        r = aioredis.from_url(self.redis.url, socket_timeout=5)
        try:
            return await r.execute_command(*args)
        finally:
            await r.aclose()

    async def _f_redis_pause(self, step: Step) -> None:
        async with self.global_lock:
            ms = int(step.args["ms"])
            t = time.time()
            await self._redis_admin("CLIENT", "PAUSE", str(ms), "ALL")
            self.redis_paused_until = t + ms / 1000
            self.record("fault", "redis_pause", t=t, ms=ms, until=round(t + ms / 1000, 4))

    async def _f_redis_restart(self, step: Step) -> None:
        async with self.global_lock:
            wait = self.redis_paused_until - time.time()
            if wait > 0:  # (the plan keeps global faults apart; a slow start can still bring them together)
                await asyncio.sleep(wait)
            t = time.time()
            self.redis.kill()
            self.redis = RedisServer(self.redis.port, self.c.dir)
            self.redis.start()
            await self.redis.ready()
            self.record("fault", "redis_restart", t=t, up=round(time.time(), 4))

    async def _f_db_cut(self, step: Step) -> None:
        async with self.global_lock:
            t = time.time()
            self.proxy.cut()
            self.db_cut = True
            self.record("fault", "db_cut", t=t)

    async def _f_db_restore(self, step: Step) -> None:
        async with self.global_lock:
            if not self.db_cut:
                return self._skip(step, "not cut")
            self.proxy.restore()
            self.db_cut = False
            self.record("fault", "db_restore")

    # -- API operations, one at a time
    async def _op_worker(self) -> None:
        while True:
            step = await self.ops.get()
            if step is None:
                return
            try:
                await getattr(self, f"_o_{step.kind}")(step)
            except Exception as e:
                self.record("op", step.kind, error=f"{type(e).__name__}: {e}", step=step.to_json(),
                            trace=traceback.format_exc(limit=3))

    def _via(self, step: Step) -> Node | None:
        up = self.up()
        if not up:
            return None
        return self.node(up[min(len(up) - 1, int(step.args.get("via", 0) * len(up)))])

    async def call(self, step: Step, op: str, method: str, path: str, *, node: Node | None = None,
                   body: Any = None, job: str | None = None, want: dict[str, Any] | None = None,
                   **extra: Any) -> tuple[int | None, Any]:
        node = node or self._via(step)
        if node is None:
            self.record("op", op, skipped="no node up", job=job)
            return None, None
        t0 = time.time()
        try:
            kw = {} if body is None else {"json": body}
            status, reply, _ = await asyncio.wait_for(self.c.request(method, f"{node.url}{path}", **kw), OP_TIMEOUT)
        except Exception as e:  # a timeout, a refused connection: the outcome is unknown
            status, reply = None, f"{type(e).__name__}: {e}"
        t1 = time.time()
        ok = status is not None and 200 <= status < 300
        if not ok and isinstance(reply, dict) and isinstance(reply.get("error"), str):
            extra["message"] = reply["error"][:300]  # the API's own error message, whole (``error`` is cut)
        self.record("op", op, t=t0, reply=round(t1, 4), node=node.name, job=job, status=status, want=want,
                    got=_job_view(reply) if ok else None,
                    error=None if ok else (reply if isinstance(reply, str) else json.dumps(reply))[:300],
                    **extra)
        return status, reply

    async def _search(self, node: Node, q: str) -> list[dict[str, Any]]:
        """Every job a search finds, page after page: a search answers within its budget (CRONRING_SEARCH_BUDGET),
        so a page may be short, even empty, and still have a next one (X-Next-Cursor)."""
        out: list[dict[str, Any]] = []
        cursor = ""
        for _ in range(1_000):
            status, body, headers = await asyncio.wait_for(
                self.c.request("GET", f"{node.url}/api/crons?limit=500&q={q}{cursor}"), OP_TIMEOUT)
            if status != 200 or not isinstance(body, list):
                raise RuntimeError(f"search {q!r}: {status}")
            out += body
            if not (nxt := headers.get("X-Next-Cursor")):
                break
            cursor = f"&cursor={nxt}"
        return out

    async def _job(self, step: Step) -> str | None:
        slot = step.args["slot"]
        if slot in self.slot_unsure:
            self.slot_unsure.discard(slot)
            node = self._via(step)
            if node is not None:
                try:
                    found = await self._search(node, f"{NODE_PREFIX}-s{slot}")
                    ids = [j["id"] for j in found if j.get("name") == f"{NODE_PREFIX}-s{slot}"]
                    self.slot_ids[slot] = ids[0] if ids else None
                except Exception:
                    self.slot_unsure.add(slot)
        jid = self.slot_ids.get(slot)
        if jid is None:
            self.record("op", step.kind, skipped=f"slot {slot} has no job (its create failed)", slot=slot)
        return jid

    async def _o_create(self, step: Step) -> None:
        a = step.args
        slot = a["slot"]
        payload = {
            "name": f"{NODE_PREFIX}-s{slot}", "uri": self.receiver_uri(f"s{slot}", 1, a["target"]),
            "schedule": resolve_schedule(a["schedule"], time.time()), "timeZone": a["timeZone"],
            "misfirePolicy": a["misfirePolicy"],
            "misfireGraceSeconds": a["misfireGraceSeconds"], "concurrencyPolicy": a["concurrencyPolicy"],
            "retries": a["retries"], "retryBackoffMs": 200, "retryMaxBackoffMs": 200, "timeoutMs": 5000,
        }
        if a.get("calendar"):
            payload["excludeCalendars"] = [CALENDAR]
        if a.get("group"):
            payload["labels"] = {"nem": a["group"]}
            self.slot_groups[slot] = a["group"]
        if a.get("pauseAfterFailures"):
            payload["pauseAfterFailures"] = a["pauseAfterFailures"]
        if a["delivery"] == "at_least_once" and self.at_least_once is not False:
            payload["delivery"] = "at_least_once"
        status, body = await self.call(step, "create", "POST", "/api/crons", body=payload, want=payload, slot=slot,
                                       target=a["target"]["kind"])
        if status == 400 and "delivery" in payload and "delivery" in json.dumps(body):
            self.at_least_once = False  # not (yet) in this build: the 400 is expected, create without it
            self.history[-1]["probe"] = "delivery field unsupported"
            del payload["delivery"]
            status, body = await self.call(step, "create", "POST", "/api/crons", body=payload, want=payload,
                                           slot=slot, target=a["target"]["kind"])
        elif status == 201 and "delivery" in payload:
            self.at_least_once = True
        if status == 201:
            self.slot_ids[slot] = body["id"]
            self.history[-1]["job"] = body["id"]
        else:
            self.slot_ids[slot] = None
            if status is None or status >= 500:
                self.slot_unsure.add(slot)

    async def _o_skip(self, step: Step) -> None:
        if (jid := await self._job(step)) is None:
            return
        status, body = await self.call(step, "skip", "POST", f"/api/crons/{jid}/skip",
                                       body={"count": step.args["count"]}, job=jid)
        if status == 200 and isinstance(body, dict):
            self.history[-1]["skipUntil"] = body.get("skipUntil")

    async def _o_backfill(self, step: Step) -> None:
        if (jid := await self._job(step)) is None:
            return
        a = step.args
        now = time.time()
        body = {"from": _iso(now - a["ago"] - a["span"]), "to": _iso(now - a["ago"]), "concurrencyPolicy": a["policy"],
                "maxPerSecond": 20}
        status, reply = await self.call(step, "backfill", "POST", f"/api/crons/{jid}/backfill", body=body, job=jid)
        if status == 202 and isinstance(reply, dict):
            self.history[-1]["backfill"] = reply.get("id")

    async def _o_calendar(self, step: Step) -> None:
        a = step.args
        now = time.time()
        if a["shape"] == "today":
            spec: dict[str, Any] = {"weekdays": [datetime.fromtimestamp(now, UTC).isoweekday() % 7]}
        elif a["shape"] == "soon":
            lo = datetime.fromtimestamp(now + 2, UTC).replace(tzinfo=None, microsecond=0)
            spec = {"ranges": [{"from": lo.isoformat(), "to": (lo + timedelta(seconds=a["seconds"])).isoformat()}]}
        else:
            spec = {}
        await self.call(step, "calendar", "PUT", f"/api/calendars/{CALENDAR}", body={"timeZone": "UTC", **spec},
                        calendar=spec)

    async def _o_edit_uri(self, step: Step) -> None:
        if (jid := await self._job(step)) is None:
            return
        a = step.args
        body = {"uri": self.receiver_uri(f"s{a['slot']}", a["version"], a["target"])}
        await self.call(step, "edit_uri", "PUT", f"/api/crons/{jid}", body=body, job=jid, want=body,
                        target=a["target"]["kind"])

    async def _o_edit_schedule(self, step: Step) -> None:
        if (jid := await self._job(step)) is None:
            return
        body = {"schedule": resolve_schedule(step.args["schedule"], time.time())}
        await self.call(step, "edit_schedule", "PUT", f"/api/crons/{jid}", body=body, job=jid, want=body)

    async def _o_edit_zone(self, step: Step) -> None:
        if (jid := await self._job(step)) is None:
            return
        body = {"timeZone": step.args["timeZone"]}
        await self.call(step, "edit_zone", "PUT", f"/api/crons/{jid}", body=body, job=jid, want=body)

    async def _o_pause(self, step: Step) -> None:
        if (jid := await self._job(step)) is None:
            return
        await self.call(step, "pause", "POST", f"/api/crons/{jid}/pause", job=jid, want={"paused": True})

    async def _o_pause_until(self, step: Step) -> None:
        """A pause with a note and an end: the cluster resumes the job by itself at its end (a node's sweep). The
        history gets that resume as a record of its own (``auto_resume``), confirmed AUTO_RESUME_SLACK after."""
        if (jid := await self._job(step)) is None:
            return
        until = time.time() + step.args["seconds"]
        status, _ = await self.call(step, "pause_until", "POST", f"/api/crons/{jid}/pause", job=jid,
                                    body={"note": "nemesis", "until": _iso(until)}, want={"paused": True})
        if status is not None and 200 <= status < 300:
            self.record("op", "auto_resume", t=until, reply=round(until + AUTO_RESUME_SLACK, 4), status=200,
                        job=jid, want={"paused": False}, got=None, error=None, synthetic=True)

    async def _o_restore(self, step: Step) -> None:
        """A restore of one of the job's last versions (its definition read first: what the restore puts back)."""
        if (jid := await self._job(step)) is None:
            return
        node = self._via(step)
        if node is None:
            self.record("op", "restore", skipped="no node up", job=jid)
            return
        try:
            status, versions, _ = await asyncio.wait_for(
                self.c.request("GET", f"{node.url}/api/crons/{jid}/versions", params={"limit": "6"}), OP_TIMEOUT)
        except Exception as e:
            self.record("op", "restore", skipped=f"versions not read: {type(e).__name__}", job=jid)
            return
        # not a version paused with an end still to come (its resume would be the sweep's, unseen here)
        usable = [v for v in versions or [] if v.get("complete") and not v["job"].get("pausedUntil")
                  and not v.get("deleted")] if status == 200 else []
        if len(usable) < 2:
            self.record("op", "restore", skipped="no earlier version to restore", job=jid)
            return
        v = usable[1:][min(len(usable) - 2, int(step.args["pick"] * (len(usable) - 1)))]
        want = {k: v["job"][k] for k in ("uri", "schedule", "timeZone", "paused")}
        await self.call(step, "restore", "POST", f"/api/crons/{jid}/restore", node=node,
                        body={"version": v["version"]}, job=jid, want=want, version=v["version"])

    async def _o_bulk(self, step: Step) -> None:
        """Pause or resume every job of a label group in one request; a record per job it names (or, when the
        reply is lost, per job of the group: each may or may not have changed)."""
        a = step.args
        paused = a["action"] == "pause"
        status, reply = await self.call(step, f"bulk_{a['action']}", "POST", f"/api/crons/{a['action']}",
                                        body={"selector": f"nem={a['group']}"}, group=a["group"])
        t0 = self.history[-1]["t"]
        reply_at = self.history[-1].get("reply", t0)
        if status == 200 and isinstance(reply, dict):
            for j in reply.get("jobs", []):
                if j.get("ok"):
                    self.record("op", f"bulk_{a['action']}", t=t0, reply=reply_at, status=200, job=j["id"],
                                want={"paused": paused}, got=None, error=None, synthetic=True)
        elif status is None or status >= 500:  # each job of the group may or may not have changed
            for slot, jid in self.slot_ids.items():
                if jid is not None and self.slot_groups.get(slot) == a["group"]:
                    self.record("op", f"bulk_{a['action']}", t=t0, reply=reply_at, status=None, job=jid,
                                want={"paused": paused}, got=None, error="unknown outcome", synthetic=True)

    async def _o_resume(self, step: Step) -> None:
        if (jid := await self._job(step)) is None:
            return
        await self.call(step, "resume", "POST", f"/api/crons/{jid}/resume", job=jid, want={"paused": False})

    async def _o_delete(self, step: Step) -> None:
        if (jid := await self._job(step)) is None:
            return
        await self.call(step, "delete", "DELETE", f"/api/crons/{jid}", job=jid, want={"deleted": True})

    async def _o_run_now(self, step: Step) -> None:
        if (jid := await self._job(step)) is None:
            return
        status, body = await self.call(step, "run_now", "POST", f"/api/crons/{jid}/run", job=jid)
        if status == 202 and isinstance(body, dict):
            self.history[-1]["execution"] = body.get("executionId")

    async def _o_apply(self, step: Step) -> None:
        """``cronring jobs apply --prune`` over the managed jobs: node.cli's planner, our HTTP calls
        (so every request's status lands in the history)."""
        from node.cli import plan_apply

        node = self._via(step)
        if node is None:
            self.record("op", "apply", skipped="no node up")
            return
        now = time.time()
        wanted = [{"name": j["name"], "schedule": resolve_schedule(j["schedule"], now), "timeZone": j["timeZone"],
                   "paused": j["paused"],
                   "uri": self.receiver_uri(j["name"].removeprefix(f"{NODE_PREFIX}-"), j["version"], j["target"]),
                   "misfirePolicy": "fire_all", "misfireGraceSeconds": 120} for j in step.args["jobs"]]
        status, listing = await self.call(step, "apply.list", "GET", f"/api/crons?limit=500&q={NODE_PREFIX}-apply-",
                                          node=node)
        if status != 200 or not isinstance(listing, list):
            return
        try:  # (every page: the listing above is the history's record of the call, its first page only)
            listing = await self._search(node, f"{NODE_PREFIX}-apply-")
        except Exception:
            return
        current = [j for j in listing if str(j.get("name", "")).startswith(f"{NODE_PREFIX}-apply-")]
        plan = plan_apply(current, wanted, prune=True)
        if step.args.get("bulk"):
            await self._bulk_apply(step, node, [(have, want) for action, have, want in plan if action != "delete"])
            plan = [p for p in plan if p[0] == "delete"]
        for action, have, want in plan:
            if action == "create":
                status, body = await self.call(step, "apply.create", "POST", "/api/crons", node=node, body=want,
                                               want=want)
                if status == 201:
                    self.history[-1]["job"] = body["id"]
            elif action == "update":
                await self.call(step, "apply.update", "PUT", f"/api/crons/{have['id']}", node=node, body=want,
                                job=have["id"], want=want)
            elif action == "delete":
                await self.call(step, "apply.delete", "DELETE", f"/api/crons/{have['id']}", node=node,
                                job=have["id"], want={"deleted": True})

    async def _bulk_apply(self, step: Step, node: Node, items: list[tuple[dict[str, Any] | None, dict[str, Any]]]
                          ) -> None:
        """The creates and updates of an apply in one ``POST /api/crons/apply`` (all written or none). The call is
        one op (``apply.bulk``, no job); each item is then an op of its own at the call's times and status, with
        the change it asked for and no job view (the checker's rule for a bulk action's job): ``apply.create``
        with the id the reply gave it, ``apply.update`` with its job's."""
        if not items:
            return
        body = {"jobs": [want if have is None else {"id": have["id"], **want} for have, want in items]}
        status, reply = await self.call(step, "apply.bulk", "POST", "/api/crons/apply", node=node, body=body,
                                        jobs=len(items))
        call = self.history[-1]
        ids = {j["index"]: j["id"] for j in reply["jobs"]} if isinstance(reply, dict) and "jobs" in reply else {}
        for k, (have, want) in enumerate(items):
            job = ids.get(k) if have is None else have["id"]
            if job is None:
                continue  # a create whose id is unknown (refused, or no answer): nothing of it is judged
            self.record("op", "apply.create" if have is None else "apply.update", t=call["t"], reply=call["reply"],
                        node=node.name, job=job, status=status, want=want, got=None, error=call.get("error"),
                        bulk=True)

    async def _o_read(self, step: Step) -> None:
        """Readers hammering one node at once: previews of rare interval schedules (count 100), for up to
        two existing jobs their preview (count 100) and their ledger from now to year 2400 (limit 10,000), and
        the dashboard's forecast of every job and the cluster's pulse.
        Each call is an op in the history (kinds ``read.*``, ``want`` None: they change nothing), judged by
        the API check: 200, or 400 only for "range too large"; the node's loop must not stall meanwhile (6).

        A planned op kind (seeded, replayed with the plan) rather than a free-running reader task; run beside
        the op worker rather than in it, as readers do not wait for writers: a burst that took seconds would
        otherwise delay the edits whose timing check 3 judges. One burst at a time keeps two cores usable."""
        self.reading = True
        try:
            node = self._via(step)
            if node is None:
                self.record("op", "read", skipped="no node up")
                return
            now = time.time()
            calls = []
            for pv in step.args["previews"]:
                body = {"schedule": resolve_schedule(pv["schedule"], now), "timeZone": pv["timeZone"],
                        "count": READ_COUNT}
                calls.append(self.call(step, "read.preview", "POST", "/api/schedules/preview", node=node, body=body,
                                       schedule=body["schedule"], timeZone=body["timeZone"]))
            span = f"from={quote(_iso(now) or '')}&to={quote(READ_TICKS_TO)}&limit={READ_TICKS_LIMIT}"
            for slot in step.args["slots"]:
                jid = self.slot_ids.get(slot)
                if jid is None:
                    continue
                calls.append(self.call(step, "read.job_preview", "GET", f"/api/crons/{jid}/preview?count={READ_COUNT}",
                                       node=node, job=jid))
                calls.append(self.call(step, "read.ticks", "GET", f"/api/crons/{jid}/ticks?{span}", node=node,
                                       job=jid))
            # the dashboard's reads of every job at once (issue 23): the forecast of the next day by the minute
            # (computed again whenever a job changed) and every node's pulse
            calls.append(self.call(step, "read.forecast", "GET", "/api/forecast", node=node))
            calls.append(self.call(step, "read.pulse", "GET", "/api/cluster/pulse", node=node))
            await asyncio.gather(*calls)
        except Exception as e:
            self.record("op", "read", error=f"{type(e).__name__}: {e}", step=step.to_json(),
                        trace=traceback.format_exc(limit=3))
        finally:
            self.reading = False

    # -- the end: heal, settle, collect
    async def heal(self) -> float:
        """Resume, restore and restart everything; wait for the member set. Returns the heal time."""
        self.record("phase", "healing", state=dict(self.state))
        wait = self.redis_paused_until - time.time()
        if wait > 0:
            await asyncio.sleep(wait)
        if not await _pings(self.redis.url):
            self.redis.kill()
            self.redis = RedisServer(self.redis.port, self.c.dir)
            self.redis.start()
            await self.redis.ready()
            self.record("fault", "redis_restart", heal=True)
        if self.db_cut or not self.proxy.open:
            self.proxy.restore()
            self.db_cut = False
            self.record("fault", "db_restore", heal=True)
        for n, s in sorted(self.state.items()):
            if s == "stopped":
                self.node(n).signal(signal.SIGCONT)
                self.state[n] = "up"
                self.record("fault", "cont", node=n, heal=True)
        for n, s in sorted(self.state.items()):
            if s == "down":
                await self._start(n, "restart")
                if self.state[n] != "up":  # once more: a start can meet the tail of an outage
                    await self._start(n, "restart")
        for n in self.up():
            await self.c.wait_healthy(self.node(n), timeout=60)
        await self.c.wait_members(set(self.up()), timeout=60)
        healed = time.time()
        self.record("phase", "healed", t=healed, up=self.up())
        return healed


async def _pings(url: str) -> bool:
    r = aioredis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        return bool(await r.ping())
    except Exception:
        return False
    finally:
        await r.aclose()


# ================================================================================================
# Evidence: what the cluster and the witness say, gathered once the ledger has settled
# ================================================================================================

async def ledgers(c: Cluster, node: Node, job_ids: Iterable[str], start: float, end: float) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for jid in job_ids:
        ticks: list[dict] = []
        frm = _iso(start)
        while True:
            status, body, _ = await c.request("GET", f"{node.url}/api/crons/{jid}/ticks",
                                              params={"from": frm, "to": _iso(end)})
            if status != 200:
                raise AssertionError(f"ticks of {jid}: {status} {body}")
            ticks += body["ticks"]
            if not body.get("truncated"):
                break
            frm = body["nextFrom"]
        out[jid] = ticks
    return out


BACKGROUND_DORMANT = "background-dormant"  # the soak's load that never fires in a run (its jobs are not checked)
BACKGROUND_TICKING = "background-every-second"  # ... and the load that fires all through it (checked like the rest)


async def load_background(c: Cluster, dormant: int, ticking: int) -> None:
    """The soak's load beside the nemesis's own jobs: ``dormant`` jobs due only on 29 February (a takeover, a
    hand-over and a re-sync carry them all through the run; MariaDB copies them, a hundred thousand in seconds)
    and ``ticking`` every-second jobs to the receiver, whose every instant the checker accounts for. Before the
    nodes start: they take it all over at once."""
    from node.model.jobs import validate
    from node.store import DatabaseURL, Store

    assert c.receiver is not None
    store = Store(DatabaseURL.parse(db_url(c.database, host=c.db_host, port=c.db_port)))
    await store.start()
    try:
        if ticking:
            await store.jobs.create_many([validate({"uri": f"{c.receiver.url}/hooks/background", "name": BACKGROUND_TICKING,
                                                    "schedule": "* * * * * *"})] * ticking)
        if dormant:
            (template,) = await store.jobs.create_many([validate({
                "uri": f"{c.receiver.url}/hooks/dormant", "name": BACKGROUND_DORMANT, "schedule": "0 0 29 2 *"})])
            cols = "name, schedule, time_zone, paused, spec, version, fence, active_since, created_at, updated_at"
            conn = await c.db_conn()
            try:
                async with conn.cursor() as cur:
                    left = dormant - 1
                    while left > 0:
                        k = min(100_000, left)
                        await cur.execute(f"INSERT INTO jobs (id, {cols}) SELECT LOWER(HEX(RANDOM_BYTES(8))), {cols}"  # noqa: S608
                                          f" FROM jobs JOIN seq_1_to_{k} WHERE jobs.id = %s", (template,))
                        left -= k
                    await cur.execute("INSERT IGNORE INTO job_history (job_id, version, valid_from, schedule, time_zone,"
                                      " paused, deleted, name, spec, completed) SELECT id, version, updated_at, schedule,"
                                      " time_zone, paused, 0, name, spec, 0 FROM jobs WHERE name = %s",
                                      (BACKGROUND_DORMANT,))
            finally:
                conn.close()
    finally:
        await store.close()


async def job_rows(c: Cluster) -> dict[str, dict[str, Any]]:
    """Every job but the dormant background (it never fires in a run: a ledger of each would be 100k reads)."""
    conn = await c.db_conn()
    try:
        async with conn.cursor(aiomysql.DictCursor) as cur:
            await cur.execute("SELECT id, name, spec, created_at, deleted_at FROM jobs WHERE name <> %s",
                              (BACKGROUND_DORMANT,))
            rows = await cur.fetchall()
    finally:
        conn.close()
    out = {}
    for r in rows:
        try:
            spec = json.loads(r["spec"])
        except (TypeError, ValueError):
            spec = {}
        out[r["id"]] = {"name": r["name"], "delivery": spec.get("delivery", "at_most_once"),
                        "calendars": spec.get("exclude_calendars") or [],
                        "grace": spec.get("misfire_grace_seconds"),
                        "createdAt": _iso(r["created_at"].replace(tzinfo=UTC).timestamp()),
                        "deletedAt": _iso(r["deleted_at"].replace(tzinfo=UTC).timestamp()) if r["deleted_at"] else None}
    return out


def stall_lines(logs: Mapping[str, Path]) -> list[dict[str, Any]]:
    """Every "event loop was blocked" line in the nodes' logs (JSON lines, one file per node, appended to on
    each restart): node, timestamp, seconds, in file order."""
    out: list[dict[str, Any]] = []
    for name, path in sorted(logs.items()):
        try:
            fh = path.open(errors="replace")
        except OSError:
            continue
        with fh:
            for line in fh:
                if STALL_EVENT not in line:
                    continue
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if isinstance(rec, dict) and rec.get("event") == STALL_EVENT:
                    out.append({"node": name, "timestamp": rec.get("timestamp"), "seconds": rec.get("seconds"),
                                "log": str(path)})
    return out


def _exec_json(r: Mapping[str, Any]) -> dict[str, Any]:
    def t(v: Any) -> str | None:
        return _iso(v.replace(tzinfo=UTC).timestamp()) if isinstance(v, datetime) else None

    return {"id": r["id"], "jobId": r["job_id"], "scheduledAt": t(r["scheduled_at"]), "kind": r["kind"],
            "state": r["state"], "node": r["node"], "fence": r["fence"], "attempts": r["attempts"],
            "claimedAt": t(r["claimed_at"]), "redelivered": bool(r.get("redelivered")), "error": r["error"],
            "missedFrom": t(r["missed_from"]), "missedCount": r["missed_count"], "instant": t(r.get("instant")),
            "backfill": r.get("backfill"), "finishedAt": t(r.get("finished_at"))}


async def settle(nem: Nemesis, start: float, healed: float) -> dict[str, Any]:
    """Wait until every job's ledger over [start, healed) has no unaccounted and no running instant (or the
    deadline passes), then gather the evidence for ``check``."""
    c = nem.c
    await wait_for(lambda: time.time() >= healed + SETTLE + 0.5, SETTLE + 5, "the settle horizon to pass")
    jobs = await job_rows(c)
    node = nem.node(nem.up()[0])
    latest: dict[str, list[dict]] = {}

    async def settled() -> bool:
        nonlocal latest
        latest = await ledgers(c, node, sorted(jobs), start, healed)
        return not any(t["fate"] in ("unaccounted", "running") for ticks in latest.values() for t in ticks)

    try:
        await wait_for(settled, SETTLE_DEADLINE, "every instant in the window to have a final fate", interval=1.0)
    except AssertionError as e:
        nem.record("phase", "settle deadline passed", detail=str(e)[:300])
    nem.record("phase", "settled")
    alerts: dict[str, Any] = {}
    try:  # the alerts the cluster raised (every page; how far each got), and what the receiver got
        raised: list[dict[str, Any]] = []
        params = {"limit": "500"}
        while True:
            status, body, _ = await c.request("GET", f"{node.url}/api/alerts", params=params)
            if status != 200:
                raise AssertionError(f"GET /api/alerts answered {status}")
            raised += body
            if len(body) < 500:
                break
            params = {"limit": "500", "before": body[-1]["at"]}
        alerts["cluster"] = raised
        assert c.receiver is not None
        alerts["received"] = await c.get_json(f"{c.receiver.url}/alerts")
    except Exception as e:
        alerts["error"] = f"{type(e).__name__}: {e}"
    health = {}
    for n in nem.up():
        try:
            status, body, _ = await c.request("GET", f"{nem.node(n).url}/api/health")
            health[n] = body if isinstance(body, dict) else {"status": status, "body": str(body)[:200]}
        except Exception as e:
            health[n] = {"error": f"{type(e).__name__}: {e}"}
    return {
        "window": {"start": _iso(start), "end": _iso(healed)},
        "params": {"memberTtl": MEMBER_TTL, "heartbeat": HEARTBEAT, "leaseTolerance": LEASE_TOLERANCE,
                   "editGrace": EDIT_GRACE, "historyPerJob": HISTORY_PER_JOB, "stallSeconds": STALL_SECONDS,
                   "stallAfterResume": STALL_AFTER_RESUME},
        "history": nem.history, "deliveries": await c.deliveries(),
        "executions": [_exec_json(r) for r in await c.executions()], "ledgers": latest, "jobs": jobs,
        "health": health, "stalls": stall_lines({n: node.log_path for n, node in c.nodes.items()}),
        "alerts": alerts,
    }


# ================================================================================================
# The checker: pure
# ================================================================================================

@dataclass
class Verdict:
    violations: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, Any] = field(default_factory=dict)

    def add(self, check: str, detail: str, **evidence: Any) -> None:
        self.violations.append({"check": check, "detail": detail, **evidence})

    def warn(self, check: str, detail: str, **evidence: Any) -> None:
        self.warnings.append({"check": check, "detail": detail, **evidence})


_NOT_RUN = ("missed", "skipped", "excluded")
_RUN_KINDS = ("tick", "catchup")
_BACKFILL = "backfill"


def check(ev: Mapping[str, Any]) -> Verdict:
    """Every check over the evidence gathered by ``settle`` (or read back from an artifact)."""
    v = Verdict()
    start, end = _ts(ev["window"]["start"]), _ts(ev["window"]["end"])
    assert start is not None and end is not None
    p = ev["params"]
    deliveries = [dict(d, _a=_ts(d["arrivedAt"]), _s=_ts(d["scheduledAt"])) for d in ev["deliveries"]]
    # a backfill's row stands for its instant (its scheduledAt is when it was claimed)
    rows = {r["id"]: dict(r, _s=_ts(r.get("instant") or r["scheduledAt"]), _c=_ts(r["claimedAt"]))
            for r in ev["executions"]}
    first_arrival: dict[str, float] = {}
    for d in deliveries:
        if d["executionId"] and (d["executionId"] not in first_arrival or d["_a"] < first_arrival[d["executionId"]]):
            first_arrival[d["executionId"]] = d["_a"]
    _check_duplicates(v, deliveries, rows)
    _check_fates(v, ev, deliveries, rows, first_arrival)
    v.counts["deliveriesInWindow"] = sum(1 for d in deliveries if d["_s"] is not None and start <= d["_s"] < end)
    _check_edits(v, ev["history"], deliveries, rows, first_arrival, p["editGrace"])
    _check_leases(v, ev["history"], deliveries, rows, end, p["memberTtl"] + p["leaseTolerance"])
    _check_at_least_once(v, ev)
    _check_api(v, ev["history"])
    _check_alerts(v, ev)
    _check_stalls(v, ev["history"], ev.get("stalls", []), end, p.get("stallSeconds", STALL_SECONDS),
                  p.get("stallAfterResume", STALL_AFTER_RESUME))
    _check_skips_and_calendars(v, ev, deliveries, rows, p["editGrace"])
    _add_context(v, ev["history"])
    fates: Counter[str] = Counter(t["fate"] for ticks in ev["ledgers"].values() for t in ticks)
    v.counts.update(ticks=sum(fates.values()), fates=dict(fates), deliveries=len(deliveries), jobs=len(ev["jobs"]),
                    executions=len(rows), redelivered=sum(1 for r in rows.values() if r["redelivered"]))
    return v


def _add_context(v: Verdict, history: list[dict], before: float = 8.0, after: float = 4.0) -> None:
    """Each violation with an instant gets the faults, and the calls on its job, from shortly before to after it."""
    for x in v.violations:
        at = _ts(x.get("at"))
        if at is None:
            continue
        x["nearby"] = [
            f"{h['time'][11:23]} {h['kind']} {h.get('node') or ''} {h.get('status') or ''}".rstrip()
            + (" (skipped)" if h.get("skipped") else "")
            for h in sorted(history, key=lambda h: h["t"])
            if at - before <= h["t"] <= at + after and (h["type"] == "fault" or (x.get("job") and h.get("job") == x["job"]))
        ]


def _check_duplicates(v: Verdict, deliveries: list[dict], rows: Mapping[str, dict] | None = None) -> None:
    """1. No (job, scheduledAt) requested under two execution ids, but for backfills: a backfill sends an instant
    that was not delivered under an execution of its own; then at most one of them may have succeeded."""
    rows = rows or {}
    by_tick: dict[tuple[str, str], set[str]] = defaultdict(set)
    for d in deliveries:
        if d["jobId"] and d["scheduledAt"]:
            by_tick[(d["jobId"], d["scheduledAt"])].add(d["executionId"] or "?")
    for (job, at), ids in sorted(by_tick.items()):
        backfilled = {i for i in ids if (rows.get(i) or {}).get("kind") == _BACKFILL}
        succeeded = {i for i in ids if (rows.get(i) or {}).get("state") == "succeeded"}
        if len(ids - backfilled) > 1 or len(succeeded) > 1:
            v.add("1 duplicate", f"tick {at} of job {job} requested under {len(ids)} execution ids"
                  + (f" ({len(backfilled)} of them a backfill's, {len(succeeded)} succeeded)" if backfilled else ""),
                  job=job, at=at, executions=sorted(ids),
                  nodes=sorted({d["node"] or "?" for d in deliveries if d["jobId"] == job and d["scheduledAt"] == at}))


def _check_fates(v: Verdict, ev: Mapping[str, Any], deliveries: list[dict], rows: dict[str, dict],
                 first_arrival: dict[str, float]) -> None:
    """2. Every instant has a fate, live nodes counted no unaccounted tick, and the ledger agrees with the witness."""
    kept = ev["params"].get("historyPerJob")
    rows_per_job = Counter(r["jobId"] for r in rows.values())
    for job, ticks in sorted(ev["ledgers"].items()):
        for t in ticks:
            if t["fate"] == "unaccounted":
                v.add("2 unaccounted", f"instant {t['scheduledAt']} of job {job}: {t['detail']}", job=job,
                      at=t["scheduledAt"])
            elif t["fate"] == "trimmed" and kept and rows_per_job[job] < kept:
                v.add("2 unaccounted", f"instant {t['scheduledAt']} of job {job} is called trimmed, but retention "
                      f"(keeps {kept}) never trimmed this job ({rows_per_job[job]} rows): no row, lost",
                      job=job, at=t["scheduledAt"])
            elif t["fate"] == "running":
                v.warn("2 still running", f"instant {t['scheduledAt']} of job {job} still open after the settle "
                       f"deadline: {t['detail']}", job=job, at=t["scheduledAt"], execution=t["executionId"])
            elif t["fate"] == "delivered" and t["executionId"] not in first_arrival:
                v.add("2 ledger vs witness", f"instant {t['scheduledAt']} of job {job} is delivered in the ledger "
                      "but never arrived at the receiver", job=job, at=t["scheduledAt"], execution=t["executionId"])
    for node, h in sorted(ev["health"].items()):
        if h.get("unaccountedTicks"):
            v.add("2 unaccounted", f"{node} counted {h['unaccountedTicks']} unaccounted ticks (its audit log has "
                  "an error line for each)", node=node)
        elif "unaccountedTicks" not in h:
            v.warn("2 health", f"{node}'s health had no unaccountedTicks: {h}", node=node)
    reported: set[str] = set()
    for d in deliveries:
        eid = d["executionId"]
        if not eid or eid in reported:
            continue
        row = rows.get(eid)
        if row is None:
            reported.add(eid)
            v.add("2 no claim", f"a request for job {d['jobId']} tick {d['scheduledAt']} arrived from {d['node']} "
                  "with no execution row: sent without a claim", job=d["jobId"], at=d["scheduledAt"], execution=eid)
        elif row["jobId"] != d["jobId"] or row["_s"] is None or d["_s"] is None or abs(row["_s"] - d["_s"]) > 0.0015:
            reported.add(eid)
            v.add("2 no claim", f"execution {eid} arrived as job {d['jobId']} tick {d['scheduledAt']}, but its row "
                  f"is job {row['jobId']} tick {row['scheduledAt']}", job=d["jobId"], at=d["scheduledAt"], execution=eid)
        elif row["state"] in _NOT_RUN:
            reported.add(eid)
            v.add("2 ledger vs witness", f"execution {eid} (job {d['jobId']} tick {d['scheduledAt']}) arrived, "
                  f"but its row says {row['state']}: {row['error']}", job=d["jobId"], at=d["scheduledAt"], execution=eid)
        elif row["state"] == "abandoned" and not row["redelivered"]:
            reported.add(eid)
            v.warn("2 abandoned but sent", f"execution {eid} (job {d['jobId']} tick {d['scheduledAt']}) arrived "
                   f"from {d['node']} at {d['arrivedAt']}, but its row says abandoned ({row['error']}); a claimer "
                   "lost (killed, or MariaDB cut) between sending and recording cannot tell", job=d["jobId"], at=d["scheduledAt"],
                   execution=eid)


def _check_skips_and_calendars(v: Verdict, ev: Mapping[str, Any], deliveries: list[dict], rows: dict[str, dict],
                               grace: float) -> None:
    """7. A skip covers its instants from ``grace`` after its reply until the next skip or restore request of the
    job is sent (a skip replaces the one before: ``{"count": 0}`` cancels; a restore brings back the restored
    version's skip, README "Versions and restore"), unless decided (claimed) after that request; a calendar a job names excludes what every definition of it that may have
    been in force when the instant was decided (claimed) excludes. Only ticks are judged (a backfill sends what it
    is asked)."""
    history = ev["history"]
    asked = sorted((h for h in history if h["type"] == "op" and h["kind"] in ("skip", "restore") and h.get("job")
                    and not h.get("skipped")), key=lambda h: h["t"])
    replaced: dict[int, float] = {}  # id(skip) -> when the next skip or restore request of its job was sent
    last: dict[str, dict] = {}
    for h in asked:
        if h["job"] in last:
            replaced[id(last[h["job"]])] = h["t"]
        last[h["job"]] = h
    skips = [h for h in asked if h["kind"] == "skip" and h.get("skipUntil") and _ok(h)]
    cal_ops = sorted((h for h in history if h["type"] == "op" and h["kind"] == "calendar" and "status" in h
                      and (h["status"] is None or h["status"] < 400)), key=lambda h: h["t"])
    naming = {jid for jid, j in ev["jobs"].items() if CALENDAR in (j.get("calendars") or [])}
    judged = 0
    for d in deliveries:
        row = rows.get(d["executionId"] or "")
        if row is None or row["kind"] not in _RUN_KINDS or d["_s"] is None:
            continue
        # (an instant decided — claimed — after the request that replaced the skip was sent follows the definition
        # that request made: a restore of a version without the skip, planned as a catch-up after it)
        decided_at = _ts(row.get("claimedAt")) or d["_s"]
        for h in skips:
            until = _ts(h["skipUntil"])
            if h["job"] == d["jobId"] and until is not None and h["reply"] + grace <= d["_s"] <= until \
                    and decided_at < replaced.get(id(h), float("inf")):
                v.add("7 skip not obeyed", f"job {d['jobId']} tick {d['scheduledAt']} arrived, though a skip up to "
                      f"{h['skipUntil']} was answered at {_iso(h['reply'])}", job=d["jobId"], at=d["scheduledAt"],
                      execution=d["executionId"])
        if d["jobId"] in naming and cal_ops:
            judged += 1
            # judged by the calendar in force when the instant was decided, as the README says: a tick is
            # decided when claimed (just before its instant), a caught-up one when caught up; a buffered tick was
            # decided when buffered (at its instant), though its row's claimedAt says when it was dequeued
            decided = _ts(row.get("claimedAt")) or d["_s"]
            states = _calendar_states(cal_ops, decided, grace)
            if row["kind"] == "tick" and decided > d["_s"]:
                states += _calendar_states(cal_ops, d["_s"], grace)
            if states and all(_calendar_excludes(c, d["_s"]) for c in states):
                v.add("7 calendar not obeyed", f"job {d['jobId']} tick {d['scheduledAt']} arrived, though the calendar "
                      f"it names excluded it ({states})", job=d["jobId"], at=d["scheduledAt"], execution=d["executionId"])
    v.counts["skipsAndCalendars"] = {"skips": len(skips), "calendarEdits": len(cal_ops), "ticksJudged": judged}


def _calendar_states(ops: list[dict], at: float, grace: float) -> list[dict[str, Any]]:
    """The calendar definitions that may be in force at ``at``: the last confirmed ``grace`` before, and any sent
    after it and before ``at``."""
    base = None
    for i, h in enumerate(ops):
        if _ok(h) and h["reply"] + grace <= at:
            base = i
    if base is None:
        return []
    return [ops[base]["calendar"]] + [h["calendar"] for h in ops[base + 1:] if h["t"] <= at]


def _calendar_excludes(cal: Mapping[str, Any], at: float) -> bool:
    t = datetime.fromtimestamp(at, UTC)
    if (t.isoweekday() % 7) in cal.get("weekdays", []):
        return True
    local = t.replace(tzinfo=None)
    return any(datetime.fromisoformat(r["from"]) <= local < datetime.fromisoformat(r["to"]) for r in cal.get("ranges", []))


def _job_records(history: list[dict]) -> dict[str, list[dict]]:
    """Per job, the API calls that may have changed its definition, in the order they were sent."""
    out: dict[str, list[dict]] = defaultdict(list)
    for h in history:
        if h["type"] != "op" or not h.get("job") or "status" not in h or h.get("want") is None:
            continue
        if h["kind"] in ("run_now", "apply.list", "skip", "backfill", "calendar"):
            continue
        status = h["status"]
        if status is not None and 400 <= status < 500:
            continue  # refused: changed nothing
        out[h["job"]].append(h)
    for recs in out.values():
        recs.sort(key=lambda h: h["t"])
    return out


def _ok(h: Mapping[str, Any]) -> bool:
    return h["status"] is not None and 200 <= h["status"] < 300


def _states_at(recs: list[dict], at: float, grace: float) -> list[dict[str, Any]] | None:
    """The definitions that may be in force at ``at``: the one the last call confirmed ``grace`` before
    it, and each later call's change (applied or not yet). None: no call was confirmed that long ago."""
    base = None
    for i, h in enumerate(recs):
        if _ok(h) and h["reply"] + grace <= at:
            base = i
    if base is None:
        return None
    first: dict[str, Any] = {}
    for h in recs[: base + 1]:  # the last confirmed view, then what confirmed calls without a view changed
        if not _ok(h):
            continue
        if h["kind"].endswith("delete"):
            first = {"deleted": True}
        elif h.get("got"):
            first = dict(h["got"])
        else:  # a bulk action's job, a pause's end: no view in the reply, the change it made
            first = {**first, **(h["want"] or {})}
    states = [first]
    for later in recs[base + 1:]:
        if later["t"] > at:
            break
        states.append({**first, **later["want"]})
    return states


def _path(uri: str | None) -> str | None:
    return urlsplit(uri).path if uri else None


def _is_instant(expression: str, zone: str, at: float) -> bool:
    from node.model.schedule import parse

    t = datetime.fromtimestamp(at, UTC)
    try:
        return parse(expression, zone).next_after(datetime.fromtimestamp(at - 0.0005, UTC)) == t
    except Exception:
        return True  # an expression this checker cannot judge is not held against the cluster


def _check_edits(v: Verdict, history: list[dict], deliveries: list[dict], rows: dict[str, dict],
                 first_arrival: dict[str, float], grace: float) -> None:
    """3. An edit reaches the owner within ``grace`` of the API's reply: superseded URI, delete, pause, schedule."""
    records = _job_records(history)
    seen: set[str] = set()
    judged = after_uri_edit = 0
    for d in deliveries:
        eid, job = d["executionId"], d["jobId"]
        row = rows.get(eid or "")
        if row is None or row["kind"] not in _RUN_KINDS or job not in records or d["_s"] is None:
            continue
        recs = records[job]
        arrived = first_arrival.get(eid, d["_a"])  # a retry is judged with its first attempt (and its own time)
        states = _states_at(recs, arrived, grace)
        if states is not None:
            judged += 1
            if any(h["kind"] != "create" and "uri" in (h["want"] or {}) and _ok(h) and h["reply"] + grace <= arrived
                   for h in recs):
                after_uri_edit += 1
            if all(s.get("deleted") for s in states):
                v.add("3 edit not applied", f"job {job} was deleted, yet its tick {d['scheduledAt']} arrived at "
                      f"{d['arrivedAt']} from {d['node']}", job=job, at=d["scheduledAt"], execution=eid)
                continue
            paths = {_path(s.get("uri")) for s in states if not s.get("deleted")}
            if arrived < d["_a"]:  # a retry or redelivery may also use what is in force when it is sent
                paths |= {_path(s.get("uri")) for s in _states_at(recs, d["_a"], grace) or [] if not s.get("deleted")}
            if d["path"] not in paths:
                v.add("3 superseded uri", f"job {job} tick {d['scheduledAt']} went to {d['path']} at "
                      f"{d['arrivedAt']} from {d['node']}; the URI in force {grace:.0f} s before was "
                      f"{sorted(p for p in paths if p)}", job=job, at=d["scheduledAt"], execution=eid, path=d["path"])
        if eid in seen:
            continue
        seen.add(eid)
        states = _states_at(recs, d["_s"], grace)
        if states is None:
            continue
        live = [s for s in states if not s.get("deleted")]
        if live and all(s.get("paused") for s in live):
            v.add("3 edit not applied", f"job {job} was paused well before its instant {d['scheduledAt']}, which "
                  f"was sent anyway by {d['node']}", job=job, at=d["scheduledAt"], execution=eid)
        elif live and not any(_is_instant(s.get("schedule") or "", s.get("timeZone") or "UTC", d["_s"])
                              for s in live if s.get("schedule")):
            v.add("3 edit not applied", f"job {job} tick {d['scheduledAt']} is no instant of its schedule(s) "
                  f"{sorted({(s.get('schedule'), s.get('timeZone')) for s in live})} in force {grace:.0f} s before",
                  job=job, at=d["scheduledAt"], execution=eid)
    v.counts["editsJudged"] = {"requests": judged, "afterAUriEdit": after_uri_edit,
                               "definitionChanges": sum(len(r) for r in records.values())}


def fault_windows(history: list[dict], end: float) -> list[dict[str, Any]]:
    """(node or None for all, start, end, kind) of the faults after which a node's lease lapses."""
    windows = []
    faults = [h for h in history if h["type"] == "fault" and not h.get("skipped") and not h.get("error")]
    for i, h in enumerate(faults):
        if h["kind"] in ("stop", "kill"):
            ends = ("cont",) if h["kind"] == "stop" else ("restart",)
            stop = next((x["t"] for x in faults[i + 1:] if x["kind"] in ends and x.get("node") == h["node"]), end)
            windows.append({"node": h["node"], "start": h["t"], "end": stop, "kind": h["kind"]})
        elif h["kind"] == "redis_pause":
            windows.append({"node": None, "start": h["t"], "end": h["until"], "kind": "redis_pause"})
    return windows


def _check_leases(v: Verdict, history: list[dict], deliveries: list[dict], rows: dict[str, dict], end: float,
                  lapse: float) -> None:
    """4. Nothing from a node whose lease lapsed: not while it is paused or gone, nor afterwards what it had
    claimed before (``lapse`` = member_ttl + the in-flight tolerance)."""
    windows = fault_windows(history, end)
    v.counts["leaseWindows"] = dict(Counter(w["kind"] for w in windows if w["end"] - w["start"] > lapse))
    for d in deliveries:
        a, node = d["_a"], d["node"]
        for w in windows:
            if w["node"] not in (None, node) or a <= w["start"] + lapse:
                continue
            what = {"stop": "SIGSTOP", "kill": "kill -9", "redis_pause": "Redis CLIENT PAUSE"}[w["kind"]]
            if a < w["end"]:
                v.add("4 sent after lease lapsed", f"{node} sent job {d['jobId']} tick {d['scheduledAt']} "
                      f"(arrived {d['arrivedAt']}) during a {what} from {_iso(w['start'])} to {_iso(w['end'])}",
                      job=d["jobId"], at=d["scheduledAt"], execution=d["executionId"], node=node)
                continue
            if w["kind"] == "kill" or w["end"] - w["start"] <= lapse:
                continue  # a new process holds no old claim; a short pause need not lapse the lease
            row = rows.get(d["executionId"] or "")
            if row is not None and not row["redelivered"] and row["_c"] is not None and row["_c"] < w["start"]:
                v.add("4 sent after lease lapsed", f"{node} sent job {d['jobId']} tick {d['scheduledAt']} "
                      f"(claimed {row['claimedAt']}, attempt {d['attempt']}) at {d['arrivedAt']}, after a {what} "
                      f"from {_iso(w['start'])} to {_iso(w['end'])} lapsed its lease: a stale send",
                      job=d["jobId"], at=d["scheduledAt"], execution=d["executionId"], node=node)


def _check_at_least_once(v: Verdict, ev: Mapping[str, Any]) -> None:
    """5. An at_least_once job's instant is never abandoned — while the job exists: deleting a job ends its
    guarantees, so a tick whose claimer was lost just before the delete has nobody to re-send it (the
    delete marks it abandoned, and says so)."""
    alo = [job for job, info in sorted(ev["jobs"].items()) if info.get("delivery") == "at_least_once"]
    v.counts["atLeastOnce"] = {"jobs": len(alo), "instants": sum(len(ev["ledgers"].get(j, [])) for j in alo)}
    # A paused job has no owner to re-send a lost claim; its next owner does once it is resumed, if the instant is
    # still within the grace (README: "still within misfireGraceSeconds"). So an instant claimed before a pause
    # may be abandoned when the job stayed paused through the grace (120 s, the nemesis's longest): every instant
    # of its ledger after it, within the grace, paused, or missed in the gap before the pause (no node took the
    # job over between the claim's loss and the pause: the 30-minute soak, seed 20261209, had two, each owner of
    # the job lapsing part-way through taking over tens of thousands of jobs), at least one of them paused.
    # An owner re-sends a lost claim at its takeover "if still within misfireGraceSeconds" (README): when no node
    # took the job over within the grace (faults every few seconds, each takeover of tens of thousands of
    # background jobs cut short: the 10-minute soak at 100,000 jobs, seed 20261211), the takeover that came after
    # marks it abandoned. Such a one is accepted only when the row was settled after the instant's grace and no
    # row of the job was claimed within it (an owner in the grace would have claimed the job's next instants).
    rows = {r["id"]: r for r in ev.get("executions", [])}
    claimed: dict[str, list[float]] = {}
    for r in rows.values():
        if (c := _ts(r.get("claimedAt"))) is not None:
            claimed.setdefault(r["jobId"], []).append(c)
    for job in alo:
        ledger = ev["ledgers"].get(job, [])
        grace = float(ev["jobs"][job].get("grace") or MAX_GRACE)
        for k, t in enumerate(ledger):
            at = _ts(t["scheduledAt"])
            if t["fate"] == "abandoned" and at is not None:
                within = [u for u in ledger[k + 1:] if (_ts(u["scheduledAt"]) or 0) <= at + MAX_GRACE]
                if any(u["fate"] == "paused" for u in within) and all(_pause_gap(u) for u in within):
                    continue
                settled = _ts((rows.get(t["executionId"] or "") or {}).get("finishedAt"))
                if (settled is not None and settled > at + grace and "not re-sent" in (t["detail"] or "")
                        and not any(at < c <= at + grace for c in claimed.get(job, []))):
                    continue
            if t["fate"] == "abandoned" and "job deleted before" not in (t["detail"] or ""):
                v.add("5 at_least_once lost", f"instant {t['scheduledAt']} of at_least_once job {job} is abandoned: "
                      f"{t['detail']}", job=job, at=t["scheduledAt"], execution=t["executionId"])


def _pause_gap(u: Mapping[str, Any]) -> bool:
    """A ledger entry of a job paused, or of the gap before its pause that no node could claim."""
    return u["fate"] == "paused" or (u["fate"] == "missed" and "due before the job was paused" in (u["detail"] or ""))


def _too_large(h: Mapping[str, Any]) -> bool:
    """A reader's 400 that says its range was too large for the schedule (a step budget spent)."""
    return h["kind"].startswith("read.") and h["status"] == 400 and TOO_LARGE in str(h.get("message") or "")


def _check_alerts(v: Verdict, ev: Mapping[str, Any]) -> None:
    """8. Failure alerts: once per streak (a job's job.failing and job.recovered alternate in the order of their
    runs' instants, a streak's first alert being job.failing), and every alert the cluster calls sent arrived."""
    alerts = ev.get("alerts") or {}
    received = alerts.get("received")
    if received is None:
        if "error" in alerts:
            v.warn("8 alerts", f"the alerts were not read: {alerts['error']}")
        return
    # the alternation is judged on what the cluster raised (whatever state each is in: one still pending is
    # no second alert); what arrived is judged against it below. Without the cluster's list, on what arrived.
    cluster = alerts.get("cluster")
    raised = cluster if cluster is not None else [{**(a.get("body") or {}), "id": a["id"], "type": a.get("type"),
                                                   "jobId": ((a.get("body") or {}).get("job") or {}).get("id")}
                                                  for a in received]
    by_job: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for a in raised:
        if a.get("type") in ("job.failing", "job.recovered") and a.get("jobId"):
            by_job[a["jobId"]].append(a)
    for job, got in sorted(by_job.items()):
        got.sort(key=lambda a: ((a.get("execution") or {}).get("scheduledAt") or "", a["type"]))
        previous = "job.recovered"
        for a in got:
            if a["type"] == previous:
                v.add("8 alert twice", f"job {job}: {a['type']} for the run at "
                      f"{(a.get('execution') or {}).get('scheduledAt')} follows another {previous} with no "
                      f"{'job.recovered' if previous == 'job.failing' else 'job.failing'} between", job=job,
                      alert=a["id"])
            previous = a["type"]
    ids = {a["id"] for a in received}
    cluster = cluster or []
    for a in cluster:
        if a.get("state") == "sent" and a["id"] not in ids:
            v.add("8 alert lost", f"alert {a['id']} ({a['type']}, job {a.get('jobId')}) is sent in the cluster's "
                  "list but never arrived", alert=a["id"], job=a.get("jobId"))
        elif a.get("state") in ("pending", "sending"):
            v.warn("8 alert pending", f"alert {a['id']} ({a['type']}) still {a['state']} after the settle",
                   alert=a["id"])
    kinds = Counter(a["type"] for a in received)
    v.counts["alerts"] = {"received": len(received), "resent": sum(max(0, a.get("deliveries", 1) - 1) for a in received),
                          **{k: kinds[k] for k in sorted(kinds)}, "raised": len(cluster)}


def _check_api(v: Verdict, history: list[dict]) -> None:
    """The API answers 503 during outages, never another 5xx, and no 400 to a valid request (a reader's
    "range too large" excepted: a preview or ledger may refuse a range too costly to compute); a node stops on
    SIGTERM (exit 0) and starts."""
    reads = [h for h in history if h["type"] == "op" and h["kind"].startswith("read.") and "status" in h]
    v.counts["reads"] = {"calls": len(reads), "ok": sum(1 for h in reads if h["status"] == 200),
                         "tooLarge": sum(1 for h in reads if _too_large(h)),
                         "slowestSeconds": round(max((h["reply"] - h["t"] for h in reads), default=0.0), 3)}
    for h in history:
        if h["type"] != "op" or h.get("status") is None or h.get("probe") or _too_large(h):
            continue
        s = h["status"]
        if (s >= 500 and s != 503) or s == 400:
            v.add("api status", f"{h['kind']} via {h.get('node')} answered {s}: {h.get('error')}", at=h["time"],
                  job=h.get("job"))
    for h in history:
        if h["type"] == "fault" and h.get("hung"):
            v.add("node stop", f"{h['node']} {h['hung']} ({h['kind']} at {h['time']})", at=h["time"], node=h["node"])
        elif h["type"] == "fault" and h.get("returncode") not in (None, 0):
            v.add("node stop", f"{h['node']} exited with {h['returncode']} after SIGTERM ({h['kind']} at {h['time']})",
                  at=h["time"], node=h["node"])
    for i, h in enumerate(history):
        if h["type"] == "fault" and h.get("failed"):
            later = any(x["type"] == "fault" and x.get("node") == h["node"] and x.get("healthy")
                        for x in history[i + 1:])
            (v.warn if later else v.add)("node start", f"{h['node']} did not become healthy ({h['kind']})"
                                         f"{', a later start did' if later else ''}: {h['failed'][-300:]}",
                                         at=h["time"], node=h["node"])


def _check_stalls(v: Verdict, history: list[dict], stalls: list[dict], end: float, limit: float,
                  after: float) -> None:
    """6. No node stalled its event loop: every "event loop was blocked" line of ``limit`` seconds or more is
    logged during a SIGSTOP of that node or within ``after`` of its SIGCONT (a stopped process reads its pause
    as loop lag when it resumes). Any other is a violation: the loop was held (the heartbeat with it) for that
    long by the node's own work."""
    stops = [w for w in fault_windows(history, end) if w["kind"] == "stop"]
    judged = excused = 0
    for x in stalls:
        at, secs = _ts(x.get("timestamp")), x.get("seconds")
        if at is None or not isinstance(secs, int | float) or secs < limit:
            continue
        judged += 1
        if any(w["node"] == x["node"] and w["start"] <= at <= w["end"] + after for w in stops):
            excused += 1
            continue
        v.add("6 event loop stalled", f"{x['node']}'s event loop was blocked for {secs} s (logged at "
              f"{x['timestamp']}), outside any SIGSTOP of it", node=x["node"], at=x["timestamp"], seconds=secs)
    v.counts["stalls"] = {"lines": len(stalls), "atLeastLimit": judged, "afterSigstop": excused,
                          "longest": max((x["seconds"] for x in stalls if isinstance(x.get("seconds"), int | float)),
                                         default=0)}


# ================================================================================================
# One run: servers, cluster, plan, heal, settle, check, report
# ================================================================================================

@dataclass
class Report:
    seed: int
    seconds: float
    verdict: Verdict
    history: list[dict[str, Any]]
    artifact: Path | None
    logs: Path

    def summary(self) -> str:
        faults = Counter(h["kind"] for h in self.history if h["type"] == "fault" and not h.get("skipped"))
        skipped = sum(1 for h in self.history if h["type"] in ("fault", "op") and h.get("skipped"))
        ops = Counter(h["kind"] for h in self.history if h["type"] == "op" and "status" in h)
        statuses = Counter(str(h["status"]) for h in self.history if h["type"] == "op" and "status" in h)
        targets = Counter(h["target"] for h in self.history if h["type"] == "op" and h.get("target"))
        c = self.verdict.counts
        return (f"nemesis seed={self.seed} {self.seconds:.0f}s: faults {dict(sorted(faults.items()))} "
                f"(skipped steps {skipped}); ops {dict(sorted(ops.items()))} statuses {dict(sorted(statuses.items()))} "
                f"targets {dict(sorted(targets.items()))}; ticks checked {c.get('ticks')} "
                f"{dict(sorted(c.get('fates', {}).items()))}; jobs {c.get('jobs')}; deliveries {c.get('deliveriesInWindow')} "
                f"in the window ({c.get('deliveries')} in all)"
                f"(redelivered executions {c.get('redelivered')}); edits judged {c.get('editsJudged')}; lease windows "
                f"{c.get('leaseWindows')}; at_least_once {c.get('atLeastOnce')}; reads {c.get('reads')}; "
                f"loop stalls {c.get('stalls')}; alerts {c.get('alerts')}; "
                f"violations {len(self.verdict.violations)}; warnings {len(self.verdict.warnings)}")

    def failure(self) -> str:
        by_check = Counter(x["check"] for x in self.verdict.violations)
        lines = [f"{len(self.verdict.violations)} violation(s) with seed {self.seed}: {dict(by_check)}"]
        for x in self.verdict.violations[:12]:
            lines.append(f"  - [{x['check']}] {x['detail']}")
            if x.get("nearby"):
                lines.append(f"      nearby: {'; '.join(x['nearby'])}")
        lines.append(f"history, evidence and violations: {self.artifact}")
        lines.append(f"node logs: {self.logs}")
        lines.append(f"replay: scripts/soak --minutes {self.seconds / 60:g} --seed {self.seed}")
        return "\n".join(lines)


def write_artifact(seed: int, seconds: float, verdict: Verdict, evidence: Mapping[str, Any], logs: Path,
                   steps: list[Step]) -> Path:
    ARTIFACT_DIR.mkdir(parents=True, exist_ok=True)
    path = ARTIFACT_DIR / f"{seed}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    doc = {
        "seed": seed, "seconds": seconds, "replay": f"scripts/soak --minutes {seconds / 60:g} --seed {seed}",
        "violations": verdict.violations, "warnings": verdict.warnings, "counts": verdict.counts,
        "logs": sorted(str(p) for p in logs.glob("*")) if logs.exists() else [], "plan": [s.to_json() for s in steps],
        "evidence": evidence,
    }
    path.write_text(json.dumps(doc, indent=1, default=str))
    return path


async def run(seed: int, seconds: float, *, progress: Callable[[str], None] = print,
              always_write: bool = False, dormant: int = 0, ticking: int = 0) -> Report:
    """One nemesis run from nothing to a report (servers and cluster torn down after); ``dormant`` and ``ticking``:
    the background load (``load_background``)."""
    steps = plan(seed, seconds)
    cluster = Cluster(f"nem{seed}", CRONRING_HISTORY_PER_JOB=str(HISTORY_PER_JOB))
    redis = RedisServer(free_port(), cluster.dir)
    redis.start()
    u = urlparse(DATABASE_URL)
    proxy = await TcpProxy(u.hostname or "127.0.0.1", u.port or 3306).start()
    nem: Nemesis | None = None
    try:
        await redis.ready()
        cluster.redis_url = redis.url
        cluster.db_host, cluster.db_port = "127.0.0.1", proxy.port
        await cluster.start_receiver()
        assert cluster.receiver is not None
        cluster.node_env["CRONRING_ALERT_URL"] = f"{cluster.receiver.url}/alerts/nemesis"  # check 8's witness
        if dormant or ticking:
            t = time.time()
            await load_background(cluster, dormant, ticking)
            progress(f"[nemesis] background: {dormant} dormant jobs and {ticking} every-second jobs loaded in"
                     f" {time.time() - t:.0f} s")
        nem = Nemesis(cluster, redis, proxy, seed=seed, progress=progress)
        await nem.start()
        progress(f"[nemesis] seed {seed}: {len(steps)} steps over {seconds:.0f} s; logs in {cluster.dir}")
        start = time.time()
        try:
            await nem.run(steps, seconds)
            healed = await nem.heal()
            progress(f"[nemesis] healed after {healed - start:.0f} s; waiting for the ledger to settle")
            evidence = await settle(nem, start, healed)
        except Exception as e:  # the cluster did not come back (or the harness broke): keep what happened
            nem.record("phase", "aborted", error=f"{type(e).__name__}: {e}"[:2000])
            path = write_artifact(seed, seconds, Verdict(), {"history": nem.history}, cluster.dir, steps)
            raise AssertionError(f"nemesis seed {seed} could not complete: {type(e).__name__}: {e}\n"
                                 f"history: {path}\nnode logs: {cluster.dir}\n"
                                 f"replay: scripts/soak --minutes {seconds / 60:g} --seed {seed}") from e
        verdict = check(evidence)
        artifact = None
        if verdict.violations or always_write:
            artifact = write_artifact(seed, seconds, verdict, evidence, cluster.dir, steps)
        return Report(seed=seed, seconds=seconds, verdict=verdict, history=nem.history, artifact=artifact,
                      logs=cluster.dir)
    finally:
        if nem is not None:
            for n in nem.state:
                if n in cluster.nodes:
                    cluster.nodes[n].signal(signal.SIGCONT)
            redis = nem.redis
        await cluster.close()
        await proxy.close()
        await _end_proxy_tasks()
        redis.kill()


def _dump_stacks(node: Node) -> None:
    """Where a node that will not stop is: its Python stacks (py-spy, when installed) into its log's folder."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        return
    try:
        out = subprocess.run([spy, "dump", "--locals", "--pid", str(node.pid)], capture_output=True, text=True,
                             timeout=20)
        node.log_path.with_suffix(".stacks.txt").write_text(out.stdout + out.stderr)
    except (OSError, subprocess.SubprocessError):
        pass


async def _end_proxy_tasks() -> None:
    """The proxy's connection handlers outlive its server: end them now, quietly, rather than let the loop's
    shutdown cancel them (asyncio then prints a traceback per connection)."""
    loop = asyncio.get_running_loop()
    tasks = [t for t in asyncio.all_tasks() if "TcpProxy" in getattr(t.get_coro(), "__qualname__", "")]
    previous = loop.get_exception_handler()

    def quiet(lp: asyncio.AbstractEventLoop, ctx: dict[str, Any]) -> None:
        if isinstance(ctx.get("exception"), asyncio.CancelledError):
            return
        if previous is not None:
            previous(lp, ctx)
        else:
            lp.default_exception_handler(ctx)

    loop.set_exception_handler(quiet)
    try:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for _ in range(3):
            await asyncio.sleep(0)  # the streams' done-callbacks run under the quiet handler
    finally:
        loop.set_exception_handler(previous)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scripts/soak", description="the generative nemesis over real processes")
    p.add_argument("--minutes", type=float, default=3.0)
    p.add_argument("--seed", type=int, default=None, help="default: a random seed, printed")
    p.add_argument("--always-write", action="store_true", help="write the artifact even without violations")
    p.add_argument("--recheck", metavar="ARTIFACT", help="run the checker again over a saved artifact's evidence")
    p.add_argument("--plan", action="store_true", help="print the plan for the seed and exit")
    p.add_argument("--background-jobs", type=int, default=0, metavar="N",
                   help="N jobs due only on 29 February loaded before the start (owned and handed over all through)")
    p.add_argument("--every-second", type=int, default=0, metavar="K",
                   help="K every-second jobs loaded before the start (every instant checked)")
    args = p.parse_args(argv)
    if args.recheck:
        doc = json.loads(Path(args.recheck).read_text())
        verdict = check(doc["evidence"])
        for x in verdict.violations:
            print(f"[{x['check']}] {x['detail']}" + (f"\n    nearby: {'; '.join(x['nearby'])}" if x.get("nearby") else ""))
        print(f"violations {len(verdict.violations)}, warnings {len(verdict.warnings)}, counts {verdict.counts}")
        return 1 if verdict.violations else 0
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 10**6)
    if args.plan:
        for s in plan(seed, args.minutes * 60):
            print(json.dumps(s.to_json()))
        return 0

    def say(line: str) -> None:
        print(line, flush=True)

    def interrupted(_sig: int, _frame: Any) -> None:
        raise KeyboardInterrupt  # SIGTERM as Ctrl-C: the run's finally stops every process it started

    signal.signal(signal.SIGTERM, interrupted)

    try:
        report = asyncio.run(run(seed, args.minutes * 60, progress=say, always_write=args.always_write,
                                 dormant=args.background_jobs, ticking=args.every_second))
    except AssertionError as e:
        say(str(e))
        return 1
    say(report.summary())
    for w in report.verdict.warnings[:10]:
        say(f"  warning [{w['check']}] {w['detail']}")
    if report.verdict.violations:
        say(report.failure())
        return 1
    if report.artifact:
        say(f"artifact: {report.artifact}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
