"""The node's pulse: what it sent in each slot of PULSE_SECONDS (runs ended by state, and their lateness), for the
cluster page's live charts. ``note`` is called for every run that ends (O(1)); ``close`` hands the slots that are
over, as ``PulseEvent``s, to a loop that publishes them (app.py: the events stream for the live pages, and a
Redis ZSET holding the last PULSE_KEPT seconds of every node for the page's first draw)."""

from __future__ import annotations

import random
from collections import Counter

from ..cluster.messages import PulseEvent

PULSE_SECONDS = 10
PULSE_KEPT = 15 * 60
LATENESS_KEPT = 20_000  # lateness values a slot keeps for its percentiles (2,000 runs a second); more are sampled


class Pulse:
    __slots__ = ("node_id", "slot", "states", "lateness", "seen", "max_ms", "rng")

    def __init__(self, node_id: str, now: float) -> None:
        self.node_id = node_id
        self.slot = int(now) // PULSE_SECONDS * PULSE_SECONDS
        self.states: Counter[str] = Counter()
        self.lateness: list[int] = []
        self.seen = 0
        self.max_ms: int | None = None
        self.rng = random.Random()  # noqa: S311 (a statistical sample, not a secret)

    def note(self, state: str, lateness_ms: int | None) -> None:
        self.states[state] += 1
        if lateness_ms is not None:
            self.seen += 1
            if self.max_ms is None or lateness_ms > self.max_ms:
                self.max_ms = lateness_ms
            if len(self.lateness) < LATENESS_KEPT:
                self.lateness.append(lateness_ms)
            else:  # past the cap, a uniform sample of the slot's values (reservoir sampling, algorithm R)
                k = self.rng.randrange(self.seen)
                if k < LATENESS_KEPT:
                    self.lateness[k] = lateness_ms

    def close(self, now: float) -> list[PulseEvent]:
        """The slots over by ``now``: the one that held the notes, then an empty one for each slot skipped (a
        loop held up), at most PULSE_KEPT seconds of them."""
        current = int(now) // PULSE_SECONDS * PULSE_SECONDS
        if current <= self.slot:
            return []
        late = sorted(self.lateness)
        out = [PulseEvent(node_id=self.node_id, at=self.slot, seconds=PULSE_SECONDS, states=dict(self.states),
                          p50_ms=_pct(late, 0.5), p99_ms=_pct(late, 0.99), max_ms=self.max_ms)]
        for at in range(max(self.slot + PULSE_SECONDS, current - PULSE_KEPT), current, PULSE_SECONDS):
            out.append(PulseEvent(node_id=self.node_id, at=at, seconds=PULSE_SECONDS))
        self.slot, self.states, self.lateness, self.seen, self.max_ms = current, Counter(), [], 0, None
        return out


def _pct(values: list[int], q: float) -> int | None:
    return values[min(len(values) - 1, int(q * len(values)))] if values else None
