"""The forecast as the API (``GET /api/forecast``) and the dashboard's forecast page serve it: computed from the
jobs in MariaDB (scheduling/forecast.py) one at a time per node, and kept while the jobs stay as they were (the
newest ``updated_at``: any create, edit, pause or delete moves it) for up to FRESH_FOR seconds, so a page viewed
by ten people, or reloaded, costs one computation."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from datetime import UTC, datetime

from ..aio import Slices
from ..model.labels import Selector
from ..scheduling import forecast as fc
from .errors import Busy, TooManyRequests
from .runtime import Runtime

FRESH_FOR = 60.0
WAIT_FOR_TURN = 20.0  # seconds a request waits for the forecast being computed before it is a 503 (Retry-After)
KEPT = 32  # forecasts kept (by token scope and window)
READ_PAGE = 5_000  # jobs read a statement (H jobs, and the jobs counted one by one)
CALLERS_KEPT = 1_000  # callers whose computations are counted, per node (then the idle ones are forgotten)

_KEPT: dict[tuple[object, ...], tuple[float, fc.Forecast]] = {}
_LOCKS: dict[int, asyncio.Lock] = {}  # by the runtime: one forecast computed at a time by each node
_SPENT: dict[tuple[int, str], deque[float]] = {}  # (runtime, caller) -> when its computations began, the last 60 s


def _spend(r: Runtime, caller: str | None, *, record: bool) -> None:
    """One caller (a token, a login, an address) may have at most ``forecasts_per_caller_per_minute`` forecasts
    computed by this node in any 60 s; one served kept costs nothing. Without it one token asking for window after
    window kept the node's one forecast busy and every other reader waiting (a fresh-eyes review, issue 23)."""
    if caller is None:
        return
    limit = r.settings.forecasts_per_caller_per_minute
    now = time.monotonic()
    spent = _SPENT.get((id(r), caller))
    if spent is not None:
        while spent and spent[0] <= now - 60.0:
            spent.popleft()
        if len(spent) >= limit:
            raise TooManyRequests(f"a node computes at most {limit} forecasts for one caller in any 60 s (a window "
                                  f"asked for again within a minute, while no job changes, is served kept)")
    if record:
        if spent is None:
            if len(_SPENT) >= CALLERS_KEPT:
                for k in [k for k, v in _SPENT.items() if not v or v[-1] <= now - 60.0]:
                    del _SPENT[k]
            spent = _SPENT[(id(r), caller)] = deque()
        spent.append(now)


async def forecast(r: Runtime, window: fc.Window, selector: Selector | None, *, now: datetime | None = None,
                   caller: str | None = None) -> fc.Forecast:
    """The forecast of the jobs ``selector`` lets the caller see (every job: None) over ``window``; ``caller``
    (auth.caller) is limited in how many it has computed (TooManyRequests)."""
    now = now or datetime.now(UTC)
    mark = await r.store.jobs.last_change()
    key = (id(r), str(selector or ""), window, mark)
    hit = _KEPT.get(key)
    if hit is not None and time.monotonic() - hit[0] < FRESH_FOR:
        return hit[1]
    _spend(r, caller, record=False)  # (refused before it waits for its turn)
    lock = _LOCKS.setdefault(id(r), asyncio.Lock())
    try:
        async with asyncio.timeout(WAIT_FOR_TURN):
            await lock.acquire()
    except TimeoutError:
        raise Busy("other forecasts are being computed on this node: retry in a few seconds") from None
    try:
        hit = _KEPT.get(key)  # (computed meanwhile by the request this one waited for)
        if hit is not None and time.monotonic() - hit[0] < FRESH_FOR:
            return hit[1]
        _spend(r, caller, record=True)
        groups: list[fc.Group] = []
        slices = Slices()  # (every loop below yields: thousands of schedules to parse, a million H jobs)
        for g in await r.store.jobs.forecast_groups(selector):
            if (p := fc.plain_group(g["schedule"], g["time_zone"], int(g["n"]), g["id"], g["name"])) is not None:
                groups.append(p)
            await slices.pause()
        # H jobs and the rest a page at a time
        hs = fc.HGroups()
        after = 0
        while page := await r.store.jobs.forecast_h(selector, after, READ_PAGE):
            for seq, job_id, name, schedule, zone in page:
                hs.add(job_id, name, schedule, zone)
                after = seq
                await slices.pause()
        groups += hs.groups()
        calendars = r.catalogue.calendars
        after = 0
        while jobs := await r.store.jobs.forecast_rest(selector, after, READ_PAGE):
            for j in jobs:
                if (one := fc.job_group(j, calendars)) is not None:
                    groups.append(one)
                after = j.seq
                await slices.pause()
        result = await fc.compute(groups, window, now=now)
        del groups  # (the result holds none of them)
        fresh = time.monotonic() - FRESH_FOR
        for k in [k for k, (at, _) in _KEPT.items() if at < fresh]:
            del _KEPT[k]
        if len(_KEPT) >= KEPT:
            _KEPT.clear()
        _KEPT[key] = (time.monotonic(), result)
        return result
    finally:
        lock.release()
