"""Scheduling power through two real nodes and the receiver: exclusion calendars, skips, run caps and one-off
runs, bounds, several schedules, jitter, H and DST notes in previews, and the refusals that name both fields.
Every instant is followed to the receiver (what arrived) and to the tick ledger (why)."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.e2e.fixtures import cluster_fixture
from tests.harness import Cluster, wait_for

cluster = cluster_fixture("sched", "sched-a", "sched-b")


def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def ts(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


async def call(c: Cluster, method: str, path: str, expect: int | None = None, **kw: Any) -> Any:
    status, body, _ = await c.request(method, f"{c.any_node().url}{path}", **kw)
    if expect is not None:
        assert status == expect, (method, path, status, body)
    return status, body


async def ledger(c: Cluster, job_id: str, start: datetime, end: datetime) -> dict[str, Any]:
    _, body = await call(c, "GET", f"/api/crons/{job_id}/ticks", 200, params={"from": iso(start), "to": iso(end)})
    return body


async def arrived(c: Cluster, job_id: str) -> list[dict[str, Any]]:
    return [d for d in await c.deliveries() if d["jobId"] == job_id]


async def test_calendars_are_managed_and_refuse_bad_input_and_a_delete_in_use(cluster: Cluster) -> None:
    cal = {"timeZone": "Europe/Lisbon", "dates": ["2026-12-25", "2027-01-01"], "weekdays": [0],
           "ranges": [{"from": "2026-08-01T00:00:00", "to": "2026-08-16T00:00:00"}], "description": "holidays"}
    _, created = await call(cluster, "PUT", "/api/calendars/pt-holidays", 201, json=cal)
    assert created["version"] == 1 and created["dates"] == ["2026-12-25", "2027-01-01"]
    _, same = await call(cluster, "PUT", "/api/calendars/pt-holidays", 200, json=cal)
    assert same["version"] == 1  # nothing changed: no new version
    status, body, headers = await cluster.request("GET", f"{cluster.any_node().url}/api/calendars/pt-holidays")
    assert status == 200 and headers["ETag"] == '"1"'
    _, listed = await call(cluster, "GET", "/api/calendars", 200)
    assert "pt-holidays" in [x["name"] for x in listed]
    for bad, field in (({"dates": ["2026-13-01"]}, "dates"), ({"weekdays": [7]}, "weekdays"),
                       ({"timeZone": "Mars/Olympus"}, "timeZone"), ({"ranges": [{"from": "2026-01-02T00:00:00",
                                                                                 "to": "2026-01-01T00:00:00"}]},
                                                                     "ranges[0]"),
                       ({"ranges": [{"from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00"}]}, "ranges[0]"),
                       ({"colour": "red"}, "colour")):
        status, body = await call(cluster, "PUT", "/api/calendars/bad-one", json=bad)
        assert status == 400 and field in body["details"], (bad, body)
    assert (await call(cluster, "GET", "/api/calendars/bad-one"))[0] == 404
    assert (await call(cluster, "PUT", "/api/calendars/Bad_Name!", json={}))[0] in (400, 404)
    assert (await call(cluster, "PUT", "/api/calendars/pt-holidays", headers={"If-Match": '"7"'}, json=cal))[0] == 412

    job = await cluster.create_job(schedule="0 12 * * *", name="uses-holidays", excludeCalendars=["pt-holidays"])
    status, body = await call(cluster, "DELETE", "/api/calendars/pt-holidays")
    assert status == 409 and body["details"]["jobs"] == [{"id": job["id"], "name": "uses-holidays"}], body
    status, body = await call(cluster, "POST", "/api/crons", json={"uri": "http://127.0.0.1:9/", "schedule": "@daily",
                                                                  "excludeCalendars": ["nope"]})
    assert status == 400 and "nope" in body["details"]["excludeCalendars"], body
    # the preview skips the excluded days, and lists them with their reason when asked
    _, pv = await call(cluster, "GET", f"/api/crons/{job['id']}/preview", 200,
                       params={"from": "2026-12-24T00:00:00Z", "count": "3", "excluded": "true"})
    assert [f["utc"][:10] for f in pv["fires"]] == ["2026-12-24", "2026-12-25", "2026-12-26"]
    assert "pt-holidays" in pv["fires"][1]["excluded"] and "excluded" not in pv["fires"][0]
    _, pv = await call(cluster, "GET", f"/api/crons/{job['id']}/preview", 200,
                       params={"from": "2026-12-24T00:00:00Z", "count": "2"})
    assert [f["utc"][:10] for f in pv["fires"]] == ["2026-12-24", "2026-12-26"]
    await call(cluster, "DELETE", f"/api/crons/{job['id']}", 200)
    await call(cluster, "DELETE", "/api/calendars/pt-holidays", 200)
    assert (await call(cluster, "GET", "/api/calendars/pt-holidays"))[0] == 404


async def test_an_excluded_instant_is_not_sent_and_the_ledger_names_the_calendar(cluster: Cluster) -> None:
    today = datetime.now(UTC).isoweekday() % 7
    await call(cluster, "PUT", "/api/calendars/today", 201, json={"weekdays": [today, (today + 1) % 7]})
    start = datetime.now(UTC)
    job = await cluster.create_job(schedule="* * * * * *", excludeCalendars=["today"])
    jid = job["id"]

    async def excluded_recorded() -> bool:
        led = await ledger(cluster, jid, start, datetime.now(UTC) - timedelta(seconds=1))
        return led["counts"]["excluded"] >= 3

    await wait_for(excluded_recorded, 15, "excluded instants recorded")
    assert not await arrived(cluster, jid)
    led = await ledger(cluster, jid, start, datetime.now(UTC))
    assert {t["fate"] for t in led["ticks"]} <= {"excluded", "pending"}, led["counts"]
    assert all("calendar 'today'" in t["detail"] for t in led["ticks"] if t["fate"] == "excluded")
    # the calendar changes: the owner obeys the new one from then on
    await call(cluster, "PUT", "/api/calendars/today", 200, json={"weekdays": [(today + 3) % 7]})
    await wait_for(lambda: _has(cluster, jid), 15, "deliveries once the day is no longer excluded")
    changed = datetime.now(UTC)
    await call(cluster, "DELETE", f"/api/crons/{jid}", 200)
    led = await ledger(cluster, jid, start, changed)
    assert "unaccounted" not in {t["fate"] for t in led["ticks"]}, led["counts"]
    await call(cluster, "DELETE", "/api/calendars/today", 200)


async def _has(c: Cluster, jid: str, n: int = 1) -> bool:
    return len(await arrived(c, jid)) >= n


async def test_skip_count_and_until_skip_exactly_those_instants(cluster: Cluster) -> None:
    job = await cluster.create_job(schedule="*/2 * * * * *")
    jid = job["id"]
    await wait_for(lambda: _has(cluster, jid), 15, "a first delivery")
    _, skipped = await call(cluster, "POST", f"/api/crons/{jid}/skip", 200, json={"count": 3})
    until = ts(skipped["skipUntil"])
    asked = datetime.now(UTC)
    assert asked < until <= asked + timedelta(seconds=7)
    await wait_for(lambda: _delivered_after(cluster, jid, until), 20, "a delivery after the skipped instants")
    got = {ts(d["scheduledAt"]) for d in await arrived(cluster, jid)}
    led = await ledger(cluster, jid, asked - timedelta(seconds=1), until + timedelta(seconds=1))
    skipped_ticks = [ts(t["scheduledAt"]) for t in led["ticks"] if t["fate"] == "skipped"]
    assert len(skipped_ticks) >= 2 and max(skipped_ticks) == until, led["ticks"]
    assert all("skipped by request" in t["detail"] for t in led["ticks"] if t["fate"] == "skipped")
    assert not got & set(skipped_ticks)
    # until, then cancelled: nothing skipped
    later = datetime.now(UTC) + timedelta(seconds=30)
    _, j = await call(cluster, "POST", f"/api/crons/{jid}/skip", 200, json={"until": iso(later)})
    assert ts(j["skipUntil"]) == later.replace(microsecond=later.microsecond // 1000 * 1000)
    _, j = await call(cluster, "POST", f"/api/crons/{jid}/skip", 200, json={"until": None})
    assert j["skipUntil"] is None
    for bad in ({"count": -1}, {"count": 10001}, {"count": "3"}, {"until": "tomorrow"}, {"until": "2020-01-01T00:00:00Z"},
                {"count": 1, "until": iso(later)}, {}, [1]):
        status, body = await call(cluster, "POST", f"/api/crons/{jid}/skip", json=bad)
        assert status == 400, (bad, status, body)
    await call(cluster, "DELETE", f"/api/crons/{jid}", 200)


async def _delivered_after(c: Cluster, jid: str, t: datetime) -> bool:
    return any(ts(d["scheduledAt"]) > t for d in await arrived(c, jid))


async def test_max_runs_completes_the_job_and_raising_it_reopens_it(cluster: Cluster) -> None:
    job = await cluster.create_job(schedule="* * * * * *", maxRuns=3)
    jid = job["id"]
    assert job["remainingRuns"] == 3

    async def completed() -> bool:
        _, j = await call(cluster, "GET", f"/api/crons/{jid}")
        return j["state"] == "completed"

    await wait_for(completed, 20, "the job to complete")
    _, j = await call(cluster, "GET", f"/api/crons/{jid}", 200)
    assert j["remainingRuns"] == 0 and j["completedAt"] and j["nextRunAt"] is None
    await wait_for(lambda: _has(cluster, jid, 3), 5, "the last run (claimed when the job completed) to arrive")
    await asyncio.sleep(2)
    first = await arrived(cluster, jid)
    assert len(first) == 3, first
    done_at = datetime.now(UTC)
    led = await ledger(cluster, jid, ts(j["createdAt"]), done_at)
    fates = Counter(t["fate"] for t in led["ticks"])
    assert fates["delivered"] == 3 and fates["unaccounted"] == 0 and fates["completed"] >= 1, fates
    # more runs: it fires again, twice
    _, j = await call(cluster, "PATCH", f"/api/crons/{jid}", 200, json={"maxRuns": 5})
    assert j["state"] != "completed" and j["remainingRuns"] == 2
    await wait_for(completed, 20, "the job to complete again")
    await wait_for(lambda: _has(cluster, jid, 5), 5, "the fifth run")
    await asyncio.sleep(2)
    assert len(await arrived(cluster, jid)) == 5
    assert (await call(cluster, "PATCH", f"/api/crons/{jid}", json={"maxRuns": 0}))[0] == 400
    await call(cluster, "DELETE", f"/api/crons/{jid}", 200)


async def test_an_at_schedule_fires_once_then_completes_and_the_past_is_refused(cluster: Cluster) -> None:
    at = (datetime.now(UTC) + timedelta(seconds=4)).replace(microsecond=0)
    local = at.astimezone(__import__("zoneinfo").ZoneInfo("America/Sao_Paulo")).replace(tzinfo=None)
    job = await cluster.create_job(schedule=f"@at {local.isoformat()}", timeZone="America/Sao_Paulo")
    jid = job["id"]
    assert ts(job["nextRunAt"]) == at

    async def completed() -> bool:
        _, j = await call(cluster, "GET", f"/api/crons/{jid}")
        return j["state"] == "completed"

    await wait_for(completed, 20, "the one-off to complete (when its run is claimed)")
    await wait_for(lambda: _has(cluster, jid), 5, "the one-off's run")
    await asyncio.sleep(1.5)
    got = await arrived(cluster, jid)
    assert [ts(d["scheduledAt"]) for d in got] == [at]
    # a completed job has no owner to run a backfill: refused, not queued for ever
    status, body = await call(cluster, "POST", f"/api/crons/{jid}/backfill",
                              json={"from": iso(at - timedelta(minutes=1)), "to": iso(datetime.now(UTC))})
    assert status == 409 and "completed" in body["error"], body
    status, body = await call(cluster, "POST", "/api/crons", json={"uri": "http://127.0.0.1:9/",
                                                                  "schedule": "@at 2020-01-01T00:00:00"})
    assert status == 400 and "in the past" in body["details"]["schedule"], body
    status, body = await call(cluster, "POST", "/api/crons", json={
        "uri": "http://127.0.0.1:9/", "schedules": ["@at 2030-01-01T00:00:00", "@daily"]})
    assert status == 400 and {"schedule", "schedules"} <= set(body["details"]), body
    # renaming a fired one-off is fine (its @at is not re-judged)
    assert (await call(cluster, "PATCH", f"/api/crons/{jid}", json={"name": "fired once"}))[0] == 200
    await call(cluster, "DELETE", f"/api/crons/{jid}", 200)


async def test_bounds_exclude_what_lies_outside_and_the_ledger_names_the_bound(cluster: Cluster) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    start_at, end_at = now + timedelta(seconds=4), now + timedelta(seconds=8)
    job = await cluster.create_job(schedule="* * * * * *", startAt=iso(start_at), endAt=iso(end_at))
    jid = job["id"]

    async def completed() -> bool:
        _, j = await call(cluster, "GET", f"/api/crons/{jid}")
        return j["state"] == "completed"

    await wait_for(completed, 20, "the job to complete after endAt")
    await asyncio.sleep(1.5)
    got = sorted(ts(d["scheduledAt"]) for d in await arrived(cluster, jid))
    assert got == [start_at + timedelta(seconds=k) for k in range(4)], got
    led = await ledger(cluster, jid, now, end_at + timedelta(seconds=2))
    by = {ts(t["scheduledAt"]): t for t in led["ticks"]}
    assert by[now + timedelta(seconds=1)]["fate"] == "excluded" and "before startAt" in by[now + timedelta(seconds=1)]["detail"]
    assert by[end_at]["fate"] == "excluded" and "endAt" in by[end_at]["detail"]
    assert all(by[start_at + timedelta(seconds=k)]["fate"] == "delivered" for k in range(4))
    status, body = await call(cluster, "POST", "/api/crons", json={"uri": "http://127.0.0.1:9/", "schedule": "@daily",
                                                                  "startAt": iso(end_at), "endAt": iso(start_at)})
    assert status == 400 and {"startAt", "endAt"} <= set(body["details"]), body
    await call(cluster, "DELETE", f"/api/crons/{jid}", 200)


async def test_several_schedules_merge_and_a_shared_instant_fires_once(cluster: Cluster) -> None:
    start = datetime.now(UTC)
    job = await cluster.create_job(schedules=["*/2 * * * * *", "*/3 * * * * *"])
    jid = job["id"]
    assert job["schedule"] == "*/2 * * * * *" and job["schedules"] == ["*/2 * * * * *", "*/3 * * * * *"]
    await wait_for(lambda: _has(cluster, jid, 8), 20, "eight deliveries")
    await call(cluster, "DELETE", f"/api/crons/{jid}", 200)
    got = [ts(d["scheduledAt"]) for d in await arrived(cluster, jid)]
    assert len(got) == len(set(got)), "an instant of both schedules fired twice"
    assert all(t.second % 2 == 0 or t.second % 3 == 0 for t in got)
    assert any(t.second % 6 == 0 for t in got) and any(t.second % 6 in (2, 4) for t in got) and any(
        t.second % 6 == 3 for t in got)
    led = await ledger(cluster, jid, start + timedelta(seconds=2), max(got))
    assert "unaccounted" not in {t["fate"] for t in led["ticks"]}, led["counts"]
    # schedule alone replaces the list; schedule and schedules must agree
    job = await cluster.create_job(schedules=["@daily", "@hourly"])
    _, j = await call(cluster, "PATCH", f"/api/crons/{job['id']}", 200, json={"schedule": "@weekly"})
    assert j["schedules"] == ["@weekly"]
    status, body = await call(cluster, "PATCH", f"/api/crons/{job['id']}", json={"schedule": "@daily",
                                                                                 "schedules": ["@hourly"]})
    assert status == 400 and {"schedule", "schedules"} <= set(body["details"])
    status, body = await call(cluster, "PATCH", f"/api/crons/{job['id']}", json={"schedules": ["@daily"] * 11})
    assert status == 400 and "schedules" in body["details"]
    await call(cluster, "DELETE", f"/api/crons/{job['id']}", 200)


async def test_jitter_sends_late_by_a_fixed_offset_and_keeps_the_instant(cluster: Cluster) -> None:
    job = await cluster.create_job(schedule="*/5 * * * * *", jitterSeconds=3)
    jid = job["id"]
    _, pv = await call(cluster, "GET", f"/api/crons/{jid}/preview", 200, params={"count": "4"})
    send_at = {ts(f["utc"]): ts(f["sendAt"]) for f in pv["fires"]}
    assert all(timedelta(0) <= s - t < timedelta(seconds=3) for t, s in send_at.items())
    assert len({s - t for t, s in send_at.items()}) > 1  # an offset per instant (the same on every node)
    last = max(send_at)

    async def all_sent() -> bool:
        return {ts(d["scheduledAt"]) for d in await arrived(cluster, jid)} >= set(send_at)

    await wait_for(all_sent, (last - datetime.now(UTC)).total_seconds() + 10, "the previewed instants to arrive")
    await call(cluster, "DELETE", f"/api/crons/{jid}", 200)
    for d in await arrived(cluster, jid):
        t = ts(d["scheduledAt"])
        if t not in send_at:
            continue
        assert t.second % 5 == 0 and t.microsecond == 0  # the nominal instant, as X-Cron-Scheduled-At says
        early_late = (ts(d["arrivedAt"]) - send_at[t]).total_seconds()
        # sent at the instant plus its own offset (a few ms either side: the wait is on the monotonic clock,
        # the arrival stamped on the wall clock, to the millisecond)
        assert -0.005 <= early_late < 0.5, (d, send_at[t])
    rows = [r for r in await cluster.executions() if r["job_id"] == jid and r["lateness_ms"] is not None]
    assert rows and max(r["lateness_ms"] for r in rows) < 500  # measured from the instant plus its offset
    status, body = await call(cluster, "POST", "/api/crons", json={"uri": "http://127.0.0.1:9/",
                                                                  "schedule": "*/5 * * * * *", "jitterSeconds": 5})
    assert status == 400 and {"jitterSeconds", "schedule"} <= set(body["details"]), body


async def test_h_and_dst_notes_in_previews(cluster: Cluster) -> None:
    a = await cluster.create_job(schedule="H H * * *")
    b = await cluster.create_job(schedule="H H * * *")
    _, pa = await call(cluster, "GET", f"/api/crons/{a['id']}/preview", 200)
    _, pb = await call(cluster, "GET", f"/api/crons/{b['id']}/preview", 200)
    assert pa["resolved"] != pb["resolved"] or a["id"] == b["id"]
    assert ts(a["nextRunAt"]) == ts(pa["fires"][0]["utc"])
    minute, hour = (int(x) for x in pa["resolved"][0].split()[:2])
    assert ts(pa["fires"][0]["utc"]).minute == minute and ts(pa["fires"][0]["utc"]).hour == hour
    # the form's preview: DST policy notes and the zone's transitions
    _, p = await call(cluster, "POST", "/api/schedules/preview", 200, json={
        "schedule": "30 1 * * *", "timeZone": "Europe/Lisbon", "from": "2026-10-24T00:00:00Z", "count": 3,
        "dstPolicy": {"overlap": "both"}})
    assert [f["utc"] for f in p["fires"]] == ["2026-10-24T00:30:00.000Z", "2026-10-25T00:30:00.000Z",
                                             "2026-10-25T01:30:00.000Z"]
    assert "first occurrence" in p["fires"][1]["dst"] and "second occurrence" in p["fires"][2]["dst"]
    assert p["transitions"][0]["kind"] == "overlap" and "both" in p["transitions"][0]["policy"]
    _, p = await call(cluster, "POST", "/api/schedules/preview", 200, json={
        "schedule": "*/30 * * * *", "timeZone": "Europe/Lisbon", "dstPolicy": {"gap": "skip"}})
    assert any("interval schedule" in w for w in p["warnings"])
    for jid in (a["id"], b["id"]):
        await call(cluster, "DELETE", f"/api/crons/{jid}", 200)


async def test_a_backfill_sends_each_instant_once_reports_progress_and_can_be_cancelled(cluster: Cluster) -> None:
    job = await cluster.create_job(schedule="*/2 * * * * *", name="backfilled")
    jid = job["id"]
    end = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=1)
    end -= timedelta(seconds=end.second % 2)
    start = end - timedelta(seconds=40)
    _, b = await call(cluster, "POST", f"/api/crons/{jid}/backfill", 202,
                      json={"from": iso(start), "to": iso(end), "maxPerSecond": 50})
    assert b["ticks"] == 20 and b["state"] in ("queued", "running")

    async def done(bid: str) -> bool:
        _, body = await call(cluster, "GET", f"/api/crons/{jid}/backfills/{bid}", 200)
        return body["state"] == "done"

    await wait_for(lambda: done(b["id"]), 30, "the backfill to finish")
    _, b = await call(cluster, "GET", f"/api/crons/{jid}/backfills/{b['id']}", 200)
    assert (b["sent"], b["alreadyDone"], b["failed"], b["progress"]) == (20, 0, 0, 1.0), b
    got = [d for d in await arrived(cluster, jid) if start <= ts(d["scheduledAt"]) < end]
    assert sorted(ts(d["scheduledAt"]) for d in got) == [start + timedelta(seconds=2 * k) for k in range(20)]
    # the ledger lists them, though the job did not exist then
    led = await ledger(cluster, jid, start, end)
    assert led["counts"]["delivered"] == 20 and all("backfill" in t["detail"] for t in led["ticks"]), led["ticks"][:2]
    # again, overlapping: nothing twice
    _, again = await call(cluster, "POST", f"/api/crons/{jid}/backfill", 202,
                          json={"from": iso(start - timedelta(seconds=4)), "to": iso(end), "concurrencyPolicy": "allow"})
    await wait_for(lambda: done(again["id"]), 30, "the second backfill")
    _, again = await call(cluster, "GET", f"/api/crons/{jid}/backfills/{again['id']}", 200)
    assert (again["total"], again["alreadyDone"], again["sent"]) == (22, 20, 2), again
    _, listed = await call(cluster, "GET", f"/api/crons/{jid}/backfills", 200)
    assert [x["id"] for x in listed] == [again["id"], b["id"]]
    # a slow one, cancelled: it stops sending
    _, slow = await call(cluster, "POST", f"/api/crons/{jid}/backfill", 202,
                         json={"from": iso(start - timedelta(seconds=400)), "to": iso(start - timedelta(seconds=4)),
                               "maxPerSecond": 2})
    await asyncio.sleep(2.5)
    _, cancelled = await call(cluster, "DELETE", f"/api/crons/{jid}/backfills/{slow['id']}", 200)
    assert cancelled["state"] == "cancelled"
    await asyncio.sleep(2)
    _, after = await call(cluster, "GET", f"/api/crons/{jid}/backfills/{slow['id']}", 200)
    sent_then = after["sent"]
    await asyncio.sleep(2)
    _, later = await call(cluster, "GET", f"/api/crons/{jid}/backfills/{slow['id']}", 200)
    assert later["state"] == "cancelled" and later["sent"] == sent_then < 20, later
    for bad, field in (({"from": iso(end), "to": iso(start)}, "from"),
                       ({"from": iso(start), "to": iso(datetime.now(UTC) + timedelta(hours=1))}, "to"),
                       ({"from": "2000-01-01T00:00:00Z", "to": iso(end)}, "to"),  # more than 10,000 instants
                       ({"from": iso(start), "to": iso(end), "maxPerSecond": 0}, "maxPerSecond"),
                       ({"from": iso(start), "to": iso(end), "concurrencyPolicy": "replace"}, "concurrencyPolicy"),
                       ({"from": iso(start)}, "to"), ({"from": iso(start), "to": iso(end), "x": 1}, "x")):
        status, body = await call(cluster, "POST", f"/api/crons/{jid}/backfill", json=bad)
        assert status == 400 and field in (body["details"] or {}), (bad, body)
    assert (await call(cluster, "GET", f"/api/crons/{jid}/backfills/0000000000000000"))[0] == 404
    await call(cluster, "DELETE", f"/api/crons/{jid}", 200)


async def test_the_cli_follows_a_backfill_with_a_progress_bar(cluster: Cluster, tmp_path: Any) -> None:
    import sys

    job = await cluster.create_job(schedule="*/5 * * * * *", name="cli-backfill")
    end = datetime.now(UTC).replace(microsecond=0)
    end -= timedelta(seconds=end.second % 5)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "node", "--url", cluster.any_node().url, "jobs", "backfill", job["id"],
        "--from", iso(end - timedelta(seconds=50)), "--to", iso(end), "--max-per-second", "20",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    text = out.decode()
    assert proc.returncode == 0, text
    assert "10 instant(s)" in text and "[##############################] 100%  10/10" in text and "done" in text, text
    await call(cluster, "DELETE", f"/api/crons/{job['id']}", 200)
