"""When the timer next looks at each owned job: a heap for the wakes within the hour, hour buckets for the rest.

A heap entry is a 56-byte tuple and a slot (64 bytes a job); a job whose next instant is a day, a month or a year
away waits instead as one id in its hour's list (8 bytes), and joins the heap when its hour comes within reach
(issue 22, memory per owned job). Entries are never removed: the scheduler keeps each job's current wake on its
record and skips an entry that no longer matches it (a job rescheduled, released or reloaded), as it always did
with the heap alone.
"""

from __future__ import annotations

import heapq

FAR = 3600.0  # a wake further away than this waits in a bucket
BUCKET = 3600.0  # each bucket: one hour of wakes


def bucket_of(wake: float) -> int:
    return int(wake // BUCKET)


class Wakes:
    __slots__ = ("heap", "far", "_buckets")

    def __init__(self) -> None:
        # (wake, job id): equal wakes are ordered by id (an entry is a 56-byte tuple whose float is the record's
        # own ``wake``: a sequence number for ties cost 36 bytes more a job)
        self.heap: list[tuple[float, str]] = []
        self.far: dict[int, list[str]] = {}  # bucket -> the ids pushed with a wake in it
        self._buckets: list[int] = []  # the buckets in ``far``, a heap

    def push(self, wake: float, job_id: str, now: float) -> bool:
        """Keep ``job_id`` to be looked at ``wake``; True when it is now the first wake (the timer must know)."""
        if wake - now > FAR:
            b = bucket_of(wake)
            ids = self.far.get(b)
            if ids is None:
                self.far[b] = [job_id]
                heapq.heappush(self._buckets, b)
            else:
                ids.append(job_id)
            return False
        heapq.heappush(self.heap, (wake, job_id))
        return self.heap[0][1] == job_id

    def near(self, wake: float, job_id: str) -> None:
        """Into the heap whatever the wake (a job of a bucket that came within reach)."""
        heapq.heappush(self.heap, (wake, job_id))

    def first(self) -> float | None:
        """The earliest wake in the heap (a bucket's are all later than it, or about to join it: ``ripe``)."""
        return self.heap[0][0] if self.heap else None

    def pop(self) -> tuple[float, str]:
        return heapq.heappop(self.heap)

    def ripening(self, now: float) -> bool:
        """A bucket came within ``FAR`` of ``now`` (the timer's look on every turn: no coroutine made for nothing)."""
        return bool(self._buckets) and self._buckets[0] * BUCKET - now <= FAR

    def ripe(self, now: float) -> list[tuple[int, list[str]]]:
        """The buckets that came within ``FAR`` of ``now``, taken out, earliest first: their ids go into the heap
        (the scheduler checks each against its record's wake first)."""
        out: list[tuple[int, list[str]]] = []
        while self.ripening(now):
            b = heapq.heappop(self._buckets)
            out.append((b, self.far.pop(b)))
        return out

    def clear(self) -> None:
        self.heap.clear()
        self.far.clear()
        self._buckets.clear()

    def __len__(self) -> int:
        return len(self.heap) + sum(len(ids) for ids in self.far.values())
