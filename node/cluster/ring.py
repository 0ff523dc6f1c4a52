"""Pure ring maths: who owns a job for a given set of live members, and which arcs of the ring a member owns.

The ring is uhashring's (ketama-style points, 160 per member, each the md5 of a member's name and a number, as a
128-bit integer). A job's **point** is the md5 of its id as a 128-bit integer, and its owner is the member of the
first ring point strictly above it (wrapping round). So a member owns half-open **arcs** ``[lo, hi)`` of the
point space, and MariaDB can select a member's jobs by range: ``jobs.ring_point`` is ``UNHEX(MD5(id))``, 16
bytes whose byte order is the integer's (store/codec.arcs_sql). A node reads only its own share of a million jobs.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Sequence
from hashlib import md5

from uhashring import HashRing

SPACE = 1 << 128  # points are 0 <= p < SPACE
Arc = tuple[int, int]  # [lo, hi): 0 <= lo < hi <= SPACE
WHOLE: tuple[Arc, ...] = ((0, SPACE),)


def point(job_id: str) -> int:
    """A job's place on the ring (uhashring's key hash)."""
    return int.from_bytes(md5(job_id.encode(), usedforsecurity=False).digest(), "big")  # placement, not security


class Ring:
    """A consistent-hash ring over the sorted live member ids (uhashring's points, looked up here)."""

    __slots__ = ("members", "_keys", "_owners", "_single")

    def __init__(self, members: Iterable[str]) -> None:
        self.members: tuple[str, ...] = tuple(sorted(set(members)))
        self._single = self.members[0] if len(self.members) == 1 else None
        points = HashRing(nodes=list(self.members)).get_points() if len(self.members) > 1 else []
        self._keys: list[int] = [k for k, _ in points]
        self._owners: list[str] = [n for _, n in points]

    def owner(self, job_id: str) -> str | None:
        return self.owner_of_point(point(job_id))

    def owner_of_point(self, p: int) -> str | None:
        if not self._keys:
            return self._single
        i = bisect_right(self._keys, p)
        return self._owners[i if i < len(self._keys) else 0]

    def owned_by(self, node_id: str, job_ids: Iterable[str]) -> set[str]:
        return {j for j in job_ids if self.owner(j) == node_id}

    def arcs(self, node_id: str) -> tuple[Arc, ...]:
        """The member's arcs, sorted and merged (none if it is not a member; the whole ring if it is alone)."""
        if node_id not in self.members:
            return ()
        if not self._keys:
            return WHOLE
        out: list[Arc] = []
        keys, owners = self._keys, self._owners
        for i, k in enumerate(keys):
            if owners[i] != node_id:
                continue
            if i == 0:  # the first point also owns the wrap: [last, SPACE) and [0, first)
                out += [(0, k), (keys[-1], SPACE)] if keys[-1] < SPACE else [(0, k)]
            else:
                out.append((keys[i - 1], k))
        return merge(out)


def merge(arcs: Iterable[Arc]) -> tuple[Arc, ...]:
    out: list[list[int]] = []
    for lo, hi in sorted(a for a in arcs if a[0] < a[1]):
        if out and lo <= out[-1][1]:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return tuple((lo, hi) for lo, hi in out)


def subtract(arcs: Sequence[Arc], minus: Sequence[Arc]) -> tuple[Arc, ...]:
    """The parts of ``arcs`` outside ``minus`` (both sorted and merged)."""
    out: list[Arc] = []
    j = 0
    for lo, hi in arcs:
        while j < len(minus) and minus[j][1] <= lo:
            j += 1
        k, cur = j, lo
        while k < len(minus) and minus[k][0] < hi:
            if minus[k][0] > cur:
                out.append((cur, minus[k][0]))
            cur = max(cur, minus[k][1])
            k += 1
        if cur < hi:
            out.append((cur, hi))
    return tuple(out)


def covers(arcs: Sequence[Arc], p: int) -> bool:
    i = bisect_right(arcs, (p, SPACE)) - 1
    return i >= 0 and arcs[i][0] <= p < arcs[i][1]


def moved(before: Ring, after: Ring, job_ids: Iterable[str]) -> set[str]:
    """The jobs whose owner differs between two rings."""
    return {j for j in job_ids if before.owner(j) != after.owner(j)}
