"""Pure ring maths: who owns a job for a given set of live members."""

from __future__ import annotations

from collections.abc import Iterable

from uhashring import HashRing


class Ring:
    """A consistent-hash ring over the sorted live member ids (uhashring, ketama)."""

    __slots__ = ("members", "_ring", "_single")

    def __init__(self, members: Iterable[str]) -> None:
        self.members: tuple[str, ...] = tuple(sorted(set(members)))
        self._single = self.members[0] if len(self.members) == 1 else None
        self._ring = HashRing(nodes=list(self.members)) if len(self.members) > 1 else None

    def owner(self, job_id: str) -> str | None:
        if self._ring is None:
            return self._single
        owner: str | None = self._ring.get_node(job_id)
        return owner

    def owned_by(self, node_id: str, job_ids: Iterable[str]) -> set[str]:
        return {j for j in job_ids if self.owner(j) == node_id}


def moved(before: Ring, after: Ring, job_ids: Iterable[str]) -> set[str]:
    """The jobs whose owner differs between two rings."""
    return {j for j in job_ids if before.owner(j) != after.owner(j)}
