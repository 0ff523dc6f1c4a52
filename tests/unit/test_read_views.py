"""The API's read path keeps what it made for a job object (its view) and a job's lock holder for a second:
what it hands out must still be each caller's own, and a change must show."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

from node.model.jobs import validate
from node.web import presentation


def test_a_view_made_once_is_handed_out_as_a_copy() -> None:
    job = replace(validate({"uri": "http://127.0.0.1:9/?token=s3cret", "schedule": "* * * * *", "name": "a"}),
                  id="ab12", version=3)
    first = presentation._api_view(job)
    first["owner"] = "node-x"
    first["name"] = "changed by a caller"
    second = presentation._api_view(job)
    assert second["name"] == "a" and second["owner"] is None and "s3cret" not in second["uri"]
    other = replace(job, name="b")  # another Job (another row text): its own view
    assert presentation._api_view(other)["name"] == "b"


def test_a_lock_holder_is_asked_again_after_a_second() -> None:
    asked: list[list[str]] = []
    holder = {"j1": "node-1"}

    class Locks:
        async def holders(self, ids: list[str]) -> dict[str, Any]:
            asked.append(list(ids))
            return {i: holder.get(i) for i in ids}

    r: Any = SimpleNamespace(locks=Locks())

    async def scenario() -> None:
        assert await presentation._holders(r, ["j1", "j2"]) == {"j1": "node-1", "j2": None}
        holder["j1"] = "node-2"
        assert await presentation._holders(r, ["j1"]) == {"j1": "node-1"}  # within the second: kept
        assert asked == [["j1", "j2"]]
        for k in ("j1", "j2"):  # a second later
            t, h = presentation._HOLDERS[k]
            presentation._HOLDERS[k] = (t - presentation.HOLDERS_FOR, h)
        assert await presentation._holders(r, ["j1", "j2"]) == {"j1": "node-2", "j2": None}
        assert asked[-1] == ["j1", "j2"]

    asyncio.run(scenario())
