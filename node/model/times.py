"""Instants as the API, the stream and the headers spell them: RFC 3339 UTC with milliseconds. No I/O
(``now_iso`` reads the clock)."""

from __future__ import annotations

import functools
import time
from datetime import UTC, datetime
from typing import Any


def rfc3339(dt: datetime | None) -> str | None:
    if dt is None:
        return None
    if dt.tzinfo is not UTC:
        dt = dt.astimezone(UTC)
    return dt.isoformat(timespec="milliseconds")[:23] + "Z"  # isoformat is C; strftime is not


_now_cache: list[Any] = [0, ""]  # (second, its rfc3339 up to the seconds)


def now_iso() -> str:
    """rfc3339 of now in milliseconds; the date and time up to the second is formatted once a second."""
    ms = time.time_ns() // 1_000_000
    sec, frac = divmod(ms, 1000)
    if sec != _now_cache[0]:
        _now_cache[0], _now_cache[1] = sec, datetime.fromtimestamp(sec, UTC).isoformat()[:19]
    return f"{_now_cache[1]}.{frac:03d}Z"


@functools.lru_cache(maxsize=4096)
def tick_iso(scheduled_at: datetime) -> str:
    """rfc3339 of a scheduled instant, cached: every job due in the same second shares it, and each run
    spells it several times (header, events, log). 0.13 µs against 1.9 µs."""
    return rfc3339(scheduled_at) or ""
