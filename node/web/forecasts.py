"""The forecast as the API (``GET /api/forecast``) and the dashboard's forecast page serve it: computed from the
jobs in MariaDB (scheduling/forecast.py) one at a time per node, and kept while the jobs stay as they were (the
newest ``updated_at``: any create, edit, pause or delete moves it) for up to FRESH_FOR seconds, so a page viewed
by ten people, or reloaded, costs one computation."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

from ..model.labels import Selector
from ..scheduling import forecast as fc
from .runtime import Runtime

FRESH_FOR = 60.0
KEPT = 32  # forecasts kept (by token scope and window)

_KEPT: dict[tuple[object, ...], tuple[float, fc.Forecast]] = {}
_LOCKS: dict[int, asyncio.Lock] = {}  # by the runtime: one forecast computed at a time by each node


async def forecast(r: Runtime, window: fc.Window, selector: Selector | None, *, now: datetime | None = None
                   ) -> fc.Forecast:
    """The forecast of the jobs ``selector`` lets the caller see (every job: None) over ``window``."""
    now = now or datetime.now(UTC)
    mark = await r.store.jobs.last_change()
    key = (id(r), str(selector or ""), window, mark)
    hit = _KEPT.get(key)
    if hit is not None and time.monotonic() - hit[0] < FRESH_FOR:
        return hit[1]
    async with _LOCKS.setdefault(id(r), asyncio.Lock()):
        hit = _KEPT.get(key)  # (computed meanwhile by the request this one waited for)
        if hit is not None and time.monotonic() - hit[0] < FRESH_FOR:
            return hit[1]
        plain, hs, rest = await r.store.jobs.forecast_inputs(selector)
        groups: list[fc.Group] = []
        for g in plain:
            if (p := fc.plain_group(g["schedule"], g["time_zone"], int(g["n"]), g["id"], g["name"])) is not None:
                groups.append(p)
        groups += fc.h_groups(hs)
        calendars = r.catalogue.calendars
        groups += [one for j in rest if (one := fc.job_group(j, calendars)) is not None]
        result = await fc.compute(groups, window, now=now)
        if len(_KEPT) >= KEPT:
            _KEPT.clear()
        _KEPT[key] = (time.monotonic(), result)
        return result
