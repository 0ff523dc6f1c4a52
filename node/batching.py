"""Work in batches: one way to cut a sequence, and the batch sizes, each named for what it bounds."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")

STATEMENT_ROWS = 1000  # rows (or ids in an IN list) per multi-row statement
CLAIM_ROWS = 500  # claims per claim statement (each is a row of a UNION in one INSERT … SELECT)
TAKEOVER_JOBS = 2000  # jobs per takeover transaction, and per step of a big ownership change
LOCK_KEYS = 1000  # keys per Lua script call on Redis (lock acquire, update, release)
AUDIT_JOBS = 500  # jobs whose minute is read in one ledger query
OUTCOME_BATCH = 2000  # outcomes written per flush round (each a CLAIM_ROWS-row upsert)
STREAM_EVENTS = 1000  # execution events per entry of the events stream


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """``items`` in consecutive slices of at most ``size`` (none for an empty sequence)."""
    for k in range(0, len(items), size):
        yield items[k : k + size]
