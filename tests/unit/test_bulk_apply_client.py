"""Bulk apply in the client library and the CLI, on a fake node: batches (by count and by size, smaller after a
413), merged answers with indexes into the whole list, a refused batch (what it named, what was applied before it),
the fallback to one request per job on a node without the route (a refused job named as a batch's item), and the
CLI's progress (a bar on a terminal, lines otherwise)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import yaml

from node import cli
from node.client import (
    APPLY_BATCH_BYTES,
    ApiError,
    AsyncClient,
    BadRequest,
    Client,
    NotFound,
    _apply_body,
    _Batches,
    error_for,
)


class FakeNode:
    """What a node answers: bulk apply (refusing items whose ``retries`` is 99; a body over ``limit`` bytes is a
    413), single creates and updates, bulk delete, the list; ``older``: a release without the bulk routes (404)."""

    def __init__(self, *, older: bool = False, limit: int | None = None, tell: bool = True) -> None:
        self.older, self.limit, self.tell = older, limit, tell  # tell: the 413 names the limit
        self.calls: list[tuple[str, str, int]] = []  # (method, path, jobs in the body)
        self.sizes: list[int] = []  # the bytes of each bulk apply request
        self.jobs: dict[str, dict[str, Any]] = {}

    def answer(self, method: str, path: str, body: Any) -> Any:
        if path == "/api/crons/apply" and isinstance(body, bytes):
            self.sizes.append(len(body))
        if self.limit is not None and isinstance(body, bytes) and len(body) > self.limit:
            self.calls.append((method, path, 0))
            raise error_for(413, json.dumps({"error": "request body too large",
                                             "details": {"limit": self.limit} if self.tell else None}).encode())
        if isinstance(body, bytes):
            body = json.loads(body)
        self.calls.append((method, path, len(body["jobs"]) if isinstance(body, dict) and "jobs" in body else 1))
        if path in ("/api/crons/apply", "/api/crons/delete") and self.older:
            raise NotFound(404, "Not Found")
        if path == "/api/crons/apply":
            bad = [{"index": i, "name": j.get("name"), "id": None, "status": 400, "error": "invalid input",
                    "fields": {"retries": "must be between 0 and 10"}}
                   for i, j in enumerate(body["jobs"]) if j.get("retries") == 99]
            if bad:  # as the node answers: the items once, beside two counts
                raise error_for(400, json.dumps({
                    "error": f"{len(bad)} of {len(body['jobs'])} job(s) refused: nothing was written",
                    "details": {"refused": len(bad), "jobs": len(body["jobs"])}, "items": bad}).encode())
            out = []
            for i, j in enumerate(body["jobs"]):
                job_id = j.get("id") or f"{len(self.jobs) + 1:016x}"
                if not body["dryRun"]:
                    self.jobs[job_id] = {**self.jobs.get(job_id, {}), **j, "id": job_id}
                out.append({"index": i, "id": job_id, "name": j.get("name"), "version": 1,
                            "result": "updated" if "id" in j else "created"})
            return {"dryRun": body["dryRun"], "created": sum(o["result"] == "created" for o in out),
                    "updated": sum(o["result"] == "updated" for o in out), "unchanged": 0, "jobs": out}
        if path == "/api/crons/delete":
            return {"jobs": [{"id": i, "ok": True} for i in body["ids"] if self.jobs.pop(i, None) is not None]}
        if method == "POST" and path == "/api/crons":
            if body.get("retries") == 99:
                raise BadRequest(400, "invalid input", {"retries": "must be between 0 and 10"})
            job_id = f"{len(self.jobs) + 1:016x}"
            self.jobs[job_id] = {**body, "id": job_id}
            return {**body, "id": job_id, "version": 1}
        if method == "PUT":
            job_id = path.rsplit("/", 1)[1]
            self.jobs[job_id].update(body)
            return {**self.jobs[job_id], "version": 2}
        if method == "DELETE":
            self.jobs.pop(path.rsplit("/", 1)[1])
            return {"deleted": True}
        raise AssertionError((method, path))


class SyncFake(Client):
    def __init__(self, node: FakeNode) -> None:
        super().__init__("http://fake.invalid")
        self.node = node

    def call(self, method: str, path: str, body: Any = None) -> Any:
        return self.node.answer(method, path, body)


class AsyncFake(AsyncClient):
    def __init__(self, node: FakeNode) -> None:
        super().__init__("http://fake.invalid")
        self.node = node

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        await asyncio.sleep(0)
        return self.node.answer(method, path, body)


def specs(n: int, **fields: Any) -> list[dict[str, Any]]:
    return [{"name": f"j{i}", "uri": "http://127.0.0.1:9/", "schedule": "0 3 * * *", **fields} for i in range(n)]


def cuts(batches: _Batches) -> list[tuple[int, list[bytes]]]:
    out, start = [], 0
    while start < len(batches.docs):
        out.append((start, batches.cut(start)))
        start += len(out[-1][1])
    return out


def test_batches_are_cut_by_count_and_by_size() -> None:
    cut = cuts(_Batches(specs(2500), 1000))
    assert [(start, len(part)) for start, part in cut] == [(0, 1000), (1000, 1000), (2000, 500)]
    assert json.loads(cut[1][1][0]) == specs(2500)[1000]
    fat = specs(10, body="x" * (APPLY_BATCH_BYTES // 4))  # four bodies are a request's bytes: with the rest, three
    assert [(start, len(part)) for start, part in cuts(_Batches(fat, 1000))] == [(0, 3), (3, 3), (6, 3), (9, 1)]
    assert all(len(_apply_body(part, False)) <= APPLY_BATCH_BYTES for _, part in cuts(_Batches(fat, 1000)))
    huge = specs(2, body="x" * APPLY_BATCH_BYTES)  # a job bigger than a request goes alone
    assert [(start, len(part)) for start, part in cuts(_Batches(huge, 1000))] == [(0, 1), (1, 1)]
    assert cuts(_Batches([], 1000)) == []
    for wrong in (0, 1001):
        with pytest.raises(BadRequest):
            _Batches(specs(1), wrong)


def test_a_batch_over_the_nodes_body_limit_is_sent_again_in_smaller_ones() -> None:
    """CRONRING_MAX_APPLY_BODY_BYTES below the client's 4 MiB: the 413 (nothing written) names the node's limit, and
    the batches from the refused one on fit it."""
    node = FakeNode(limit=1 << 20)
    jobs = specs(400, body={"pad": "x" * 3000})  # ~1.2 MiB in all
    seen: list[int] = []
    done = SyncFake(node).apply_jobs(jobs, progress=lambda d, _t: seen.append(d))
    assert (done["created"], [j["index"] for j in done["jobs"]]) == (400, list(range(400)))
    refused, first, rest = node.sizes
    assert refused > 1 << 20 >= first >= (1 << 20) - 3200 and rest <= 1 << 20  # as many as fit, each ~3 KiB
    assert seen == [node.calls[1][2], 400]
    # no limit told (a proxy's 413, or more JSON values than the node takes): half the request, again if need be
    node = FakeNode(limit=300 * 1024, tell=False)
    done = SyncFake(node).apply_jobs(jobs)
    assert done["created"] == 400 and [n for _, _, n in node.calls][:3] == [0, 0, 0]  # 1.2 MiB, 600 KiB, 300 KiB
    assert all(size <= 300 * 1024 for size in node.sizes[3:]) and sum(n for _, _, n in node.calls) == 400
    # one job alone too large: its 413 is raised, as the refusal of its batch, with what went in before it
    node = FakeNode(limit=3000)
    with pytest.raises(ApiError) as refused:
        SyncFake(node).apply_jobs(specs(2) + specs(1, body="x" * 3000))
    assert refused.value.status == 413 and refused.value.applied is not None
    assert (refused.value.applied["created"], len(node.jobs)) == (2, 2)


def test_the_answers_of_every_batch_are_merged() -> None:
    node = FakeNode()
    seen: list[tuple[int, int]] = []
    done = SyncFake(node).apply_jobs(specs(2500), progress=lambda d, t: seen.append((d, t)))
    assert (done["created"], done["updated"], done["batches"]) == (2500, 0, 3)
    assert [j["index"] for j in done["jobs"]] == list(range(2500))
    assert [j["name"] for j in done["jobs"]][1234] == "j1234"
    assert node.calls == [("POST", "/api/crons/apply", 1000), ("POST", "/api/crons/apply", 1000),
                          ("POST", "/api/crons/apply", 500)]
    assert seen == [(1000, 2500), (2000, 2500), (2500, 2500)]


def test_a_refused_batch_names_its_items_in_the_whole_list_and_what_was_applied_before() -> None:
    jobs = specs(2500)
    jobs[1500]["retries"] = jobs[1700]["retries"] = 99
    node = FakeNode()
    with pytest.raises(BadRequest) as refused:
        SyncFake(node).apply_jobs(jobs)
    e = refused.value
    assert [(i["index"], i["name"]) for i in e.details] == [(1500, "j1500"), (1700, "j1700")]
    assert e.applied is not None and (e.applied["batches"], e.applied["created"]) == (1, 1000)
    assert len(node.calls) == 2 and len(node.jobs) == 1000  # the third batch was not sent


def test_an_older_node_gets_one_request_per_job() -> None:
    node = FakeNode(older=True)
    seen: list[int] = []
    jobs = specs(5) + [{"id": "0000000000000001", "retries": 2}]
    done = SyncFake(node).apply_jobs(jobs, progress=lambda d, _t: seen.append(d))
    assert (done["created"], done["updated"], done["batches"], seen) == (5, 1, 0, [1, 2, 3, 4, 5, 6])
    assert node.calls[0] == ("POST", "/api/crons/apply", 6) and node.calls[-1] == (
        "PUT", "/api/crons/0000000000000001", 1)
    assert node.jobs["0000000000000001"]["retries"] == 2 and "id" in node.jobs["0000000000000001"]
    # one by one is not all or nothing: a refusal says what was done before it
    jobs = specs(4)
    jobs[2]["retries"] = 99
    with pytest.raises(BadRequest) as refused:
        SyncFake(FakeNode(older=True)).apply_jobs(jobs)
    assert refused.value.applied is not None and refused.value.applied["created"] == 2
    with pytest.raises(NotFound):  # a dry run cannot be done one by one
        SyncFake(FakeNode(older=True)).apply_jobs(specs(2), dry_run=True)


def test_on_an_older_node_a_refused_job_is_raised_as_a_batchs_item() -> None:
    """One by one, the single route's refusal (its fields) is told as the bulk route tells an item: index into
    ``jobs``, name, status, error, fields."""
    jobs = specs(4)
    jobs[2]["retries"] = 99
    with pytest.raises(BadRequest) as refused:
        SyncFake(FakeNode(older=True)).apply_jobs(jobs)
    assert refused.value.details == [{"index": 2, "name": "j2", "status": 400, "error": "invalid input",
                                      "fields": {"retries": "must be between 0 and 10"}}]
    assert refused.value.applied is not None and refused.value.applied["created"] == 2


def test_on_an_older_node_the_cli_names_the_refused_job_and_counts_jobs(capsys: pytest.CaptureFixture[str]) -> None:
    node = FakeNode(older=True)
    plan = plan_of(node, 6, 0, 0)
    plan[4][2]["retries"] = 99  # the file's job #5 (plan[1] is an unchanged job)
    assert not cli.send_plan(SyncFake(node), plan, tty=False)
    assert capsys.readouterr().err.splitlines() == [
        "cronring: refused (400): invalid input", "  job #5 j3: invalid input: retries: must be between 0 and 10",
        "cronring: 3 of 6 job(s) applied before it; the rest was not sent"]


def test_a_refused_batchs_items_are_the_errors_details() -> None:
    """The node sends the items once (``items``; its ``details`` are two counts): the client's error has them as
    its ``details``; any other error keeps its own."""
    e = error_for(400, json.dumps({"error": "1 of 3 job(s) refused: nothing was written",
                                   "details": {"refused": 1, "jobs": 3}, "items": [{"index": 1}]}).encode())
    assert isinstance(e, BadRequest) and e.details == [{"index": 1}]
    assert error_for(400, b'{"error": "invalid input", "details": {"retries": "bad"}}').details == {"retries": "bad"}


async def test_the_async_client_does_the_same() -> None:
    node = FakeNode()
    async with AsyncFake(node) as c:
        done = await c.apply_jobs(specs(1200), batch=500)
        assert (done["created"], done["batches"]) == (1200, 3) and done["jobs"][-1]["index"] == 1199
        jobs = specs(700)
        jobs[650]["retries"] = 99
        with pytest.raises(BadRequest) as refused:
            await c.apply_jobs(jobs, batch=500)
        assert refused.value.details[0]["index"] == 650 and refused.value.applied["batches"] == 1
    async with AsyncFake(FakeNode(older=True)) as c:
        done = await c.apply_jobs(specs(3))
        assert (done["created"], done["batches"]) == (3, 0)
        jobs[650]["retries"], jobs[690]["retries"] = 0, 99
        with pytest.raises(BadRequest) as refused:
            await c.apply_jobs(jobs)
        assert refused.value.details[0]["index"] == 690 and refused.value.applied["created"] == 690
    node = FakeNode(limit=1 << 20)
    async with AsyncFake(node) as c:
        done = await c.apply_jobs(specs(400, body={"pad": "x" * 3000}))
        assert done["created"] == 400 and [n for _, _, n in node.calls][0] == 0 and len(node.calls) == 3


def plan_of(node: FakeNode, creates: int, updates: int, deletes: int) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    plan: list[tuple[str, dict[str, Any], dict[str, Any]]] = [("create", {}, s) for s in specs(creates)]
    for i in range(updates + deletes):
        job_id = f"{0xABC000 + i:016x}"
        node.jobs[job_id] = {"id": job_id, "name": f"old{i}"}
        plan.append(("update", node.jobs[job_id], {"retries": 1}) if i < updates else ("delete", node.jobs[job_id], {}))
    plan.insert(1, ("unchanged", {"id": "f" * 16, "name": "same"}, {}))
    return plan


def test_the_cli_sends_a_plan_with_lines_off_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    node = FakeNode()
    plan = plan_of(node, 1500, 600, 40)
    assert cli.send_plan(SyncFake(node), plan, tty=False)
    out, err = capsys.readouterr()
    assert out.splitlines() == ["  1000/2140 job(s) done", "  2000/2140 job(s) done", "  2100/2140 job(s) done",
                                "sent 2100 job(s) in 3 request(s): 1500 new, 600 changed, 0 already so",
                                "  2140/2140 job(s) done", "pruned 40 job(s)"]
    assert err == "" and len(node.jobs) == 1500 + 600
    assert node.calls[-1] == ("POST", "/api/crons/delete", 1)


def test_the_cli_draws_a_bar_on_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    node = FakeNode()
    assert cli.send_plan(SyncFake(node), plan_of(node, 1500, 0, 2), tty=True)
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("\r[") and err.endswith("100%  1502/1502\n") and err.count("\r") == 3, repr(err)


def test_the_cli_prints_a_refused_batch_and_stops(capsys: pytest.CaptureFixture[str]) -> None:
    node = FakeNode()
    plan = plan_of(node, 2500, 0, 5)
    plan[1601][2]["retries"] = 99  # (plan[1] is the unchanged job: the file's job #1602)
    assert not cli.send_plan(SyncFake(node), plan, tty=False)
    out, err = capsys.readouterr()
    assert err.splitlines() == [
        "cronring: refused (400): 1 of 1000 job(s) refused: nothing was written",
        "  job #1602 j1600: invalid input: retries: must be between 0 and 10",
        "cronring: 1000 of 2500 job(s) applied before it, in 1 batch(es); the rest was not sent"]
    assert len(node.jobs) == 1000 + 5  # nothing deleted either
    assert all(path != "/api/crons/delete" for _, path, _ in node.calls)


def test_an_older_node_gets_single_deletes_too(capsys: pytest.CaptureFixture[str]) -> None:
    node = FakeNode(older=True)
    assert cli.send_plan(SyncFake(node), plan_of(node, 2, 1, 3), tty=False)
    assert [(m, p.split("/")[-1] if m == "DELETE" else p) for m, p, _ in node.calls][-4:] == [
        ("POST", "/api/crons/delete"), ("DELETE", f"{0xABC001:016x}"), ("DELETE", f"{0xABC002:016x}"),
        ("DELETE", f"{0xABC003:016x}")]
    assert "sent 3 job(s) in 3 request(s): 2 new, 1 changed" in capsys.readouterr().out


def test_a_file_is_read_once_with_libyaml_as_the_safe_loader_reads_it(tmp_path: Any) -> None:
    text = ("calendars: [{name: h, dates: ['2026-12-25']}]\njobs:\n  - {name: a, uri: 'http://h/', schedule: '0 3 * * *',"
            " paused: yes, retries: 010, body: {when: 2026-01-01, n: 1.5e3, none: ~, t: 12:30}}\n")
    f = tmp_path / "jobs.yaml"
    f.write_text(text)
    assert cli.read_yaml(str(f)) == yaml.safe_load(text)
    doc = cli.read_yaml(str(f))
    assert cli.load_file(str(f), {}, doc=doc) == cli.load_file(str(f), {})
    assert cli.load_calendars(str(f), doc=doc) == [{"name": "h", "dates": ["2026-12-25"]}]
    with pytest.raises(cli.CliError, match="not valid YAML"):
        f.write_text("jobs: [\n")
        cli.read_yaml(str(f))


def test_duplicate_names_are_found_in_a_big_file() -> None:
    wanted = specs(20_000) + [{"name": "j17", "uri": "http://h/", "schedule": "@daily"}]
    with pytest.raises(cli.CliError, match=r"names must be unique in the file: \['j17'\]"):
        cli.plan_apply([], wanted, False)


def test_api_error_keeps_what_was_applied() -> None:
    e = ApiError(400, "refused", [{"index": 3}])
    assert e.applied is None and e.details == [{"index": 3}]
