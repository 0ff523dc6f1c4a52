"""The tick ledger through real nodes: the API, bad input, metrics and health, and the job page's strip
in a real browser."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from playwright.async_api import async_playwright, expect

from tests.e2e.fixtures import cluster_fixture
from tests.e2e.test_dashboard import CHROMIUM_ARGS, SHOTS
from tests.harness import Cluster, wait_for

cluster = cluster_fixture("ticks", "ticks-a", "ticks-b")


def iso(dt: datetime) -> str:
    return dt.isoformat().replace("+00:00", "Z")


async def ticks(c: Cluster, job_id: str, start: datetime, end: datetime) -> dict:
    status, body, _ = await c.request("GET", f"{c.any_node().url}/api/crons/{job_id}/ticks",
                                      params={"from": iso(start), "to": iso(end)})
    assert status == 200, body
    return body


async def test_every_instant_has_a_fate_through_runs_pause_resume_and_edit(cluster: Cluster) -> None:
    created = datetime.now(UTC)
    job = await cluster.create_job(schedule="* * * * * *")
    jid = job["id"]

    async def delivered(n: int) -> bool:
        body = await ticks(cluster, jid, created, datetime.now(UTC))
        return body["counts"]["delivered"] >= n

    await wait_for(lambda: delivered(3), 15, "three delivered ticks")
    url = cluster.any_node().url
    assert (await cluster.request("POST", f"{url}/api/crons/{jid}/pause"))[0] == 200
    paused_at = datetime.now(UTC)
    assert (await cluster.request("POST", f"{url}/api/crons/{jid}/run"))[0] == 202  # a run-now is no instant
    await wait_for(lambda: _ticks_after(cluster, jid, created, paused_at + timedelta(seconds=2), "paused"), 10,
                   "paused instants")
    assert (await cluster.request("POST", f"{url}/api/crons/{jid}/resume"))[0] == 200
    status, _, _ = await cluster.request("PUT", f"{url}/api/crons/{jid}", json={"schedule": "*/2 * * * * *"})
    assert status == 200
    edited_at = datetime.now(UTC)
    await wait_for(lambda: _ticks_after(cluster, jid, created, edited_at + timedelta(seconds=3), "delivered"), 15,
                   "delivered ticks under the edited schedule")
    body = await ticks(cluster, jid, created, datetime.now(UTC))
    fates = [t["fate"] for t in body["ticks"]]
    assert "unaccounted" not in fates and {"delivered", "paused"} <= set(fates), body["counts"]
    after_edit = [t for t in body["ticks"] if t["scheduledAt"] > iso(edited_at + timedelta(seconds=1))]
    assert after_edit and all(int(t["scheduledAt"][17:19]) % 2 == 0 for t in after_edit)  # */2 from the edit on
    by_exec = [t for t in body["ticks"] if t["fate"] == "delivered"]
    assert all(t["executionId"] and "HTTP 200" in t["detail"] for t in by_exec)
    # instants not due yet are pending; the window is [from, to)
    future = await ticks(cluster, jid, datetime.now(UTC) + timedelta(minutes=1), datetime.now(UTC) + timedelta(minutes=2))
    assert {t["fate"] for t in future["ticks"]} == {"pending"} and len(future["ticks"]) == 30


async def _ticks_after(c: Cluster, jid: str, start: datetime, after: datetime, fate: str) -> bool:
    body = await ticks(c, jid, start, datetime.now(UTC))
    return any(t["fate"] == fate and t["scheduledAt"] > iso(after) for t in body["ticks"])


async def test_bad_ticks_queries_are_400s_and_404s(cluster: Cluster) -> None:
    job = await cluster.create_job(schedule="@hourly")
    url = f"{cluster.any_node().url}/api/crons/{job['id']}/ticks"
    for params in ({"from": "yesterday"}, {"from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z"},
                   {"to": "9999-12-31T23:59:59Z"}, {"from": "0001-01-01T00:00:00Z"}, {"limit": "0"},
                   {"limit": "10001"}, {"from": "2026-01-01T00:00:00"}):
        status, body, _ = await cluster.request("GET", url, params=params)
        assert status == 400, (params, status, body)
    status, _, _ = await cluster.request("GET", f"{cluster.any_node().url}/api/crons/abcdef/ticks")
    assert status == 404
    # a year of an hourly job: bounded, in order, with nextFrom to go on
    status, body, _ = await cluster.request("GET", url, params={"from": "2027-01-01T00:00:00Z",
                                                                "to": "2028-06-01T00:00:00Z", "limit": "5000"})
    assert status == 200 and body["truncated"] and len(body["ticks"]) == 5000 and body["nextFrom"]


async def test_health_and_metrics_carry_the_audit(cluster: Cluster) -> None:
    for node in cluster.nodes.values():
        health = await cluster.get_json(f"{node.url}/api/health")
        assert health["unaccountedTicks"] == 0
        async with cluster.session().get(f"{node.url}/metrics") as r:
            text = await r.text()
        assert "cronring_ticks_unaccounted_total 0.0" in text and "cronring_jobs_stuck" in text


@pytest.mark.browser
async def test_the_job_page_shows_the_strip_and_keeps_it_current(cluster: Cluster) -> None:
    job = await cluster.create_job(schedule="* * * * * *", name="strip")
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1400, "height": 900})
            await page.goto(f"{cluster.nodes['ticks-b'].url}/jobs/{job['id']}")
            strip = page.locator("#ticks .tick.delivered")
            await expect(strip.first).to_be_visible(timeout=15_000)
            first = await strip.count()
            # the strip refreshes itself (every 5 s): more delivered instants without a reload
            await expect(page.locator("#ticks .tick.delivered").nth(first + 2)).to_be_attached(timeout=15_000)
            title = await page.locator("#ticks .tick.delivered").first.get_attribute("title")
            assert title and "delivered" in title and "HTTP 200" in title
            await expect(page.locator("#ticks-legend")).to_contain_text("delivered")
            # a history row that arrives live is the server's own row: its time, kind, state colour, status
            served = set(await page.locator("#history tr[data-exec]").evaluate_all(
                "rows => rows.map(r => r.dataset.exec)"))
            await expect(page.locator("#history tbody tr[data-exec]").first).not_to_have_attribute(
                "data-exec", re.compile("|".join(served) or "^$"), timeout=10_000)
            cells = page.locator("#history tbody tr[data-exec]").first.locator("td")
            await expect(cells.nth(0)).to_have_text(re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$"))
            await expect(cells.nth(1)).to_have_text("tick")
            await expect(cells.nth(2).locator("span.st.succeeded")).to_have_text("succeeded")
            await expect(cells.nth(3)).to_have_text("200")
            # the timeline of the last hour (drawn by the server: the page again, now that instants have run), a
            # column per 15 s, and the lateness chart
            await page.reload()
            await expect(page.locator("#timeline-chart g.col").first).to_be_attached()
            label = await page.locator("#timeline-chart").get_attribute("aria-label") or ""
            assert re.search(r"\d+ delivered", label), label
            assert await page.locator("#lateness-chart circle.p99dot").count() >= 1
            await page.click("nav.tabs >> text=the last day")
            await expect(page.locator("nav.tabs a.on")).to_have_text("the last day")
            from tests.e2e.test_forecast import accessibility_violations
            assert await accessibility_violations(page) == []
            SHOTS.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(SHOTS / "ticks.png"), full_page=True)
        finally:
            await browser.close()


async def test_the_jobs_page_shows_each_rows_last_ticks_readable_without_colour_and_live(cluster: Cluster) -> None:
    ok = await cluster.create_job(schedule="* * * * * *", name="strip-ok", labels={"strip": "yes"})
    bad = await cluster.create_job(schedule="* * * * * *", name="strip-bad", labels={"strip": "yes"},
                                   uri="http://127.0.0.1:9/refused", timeZone="Asia/Tokyo")
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1500, "height": 700})
            await wait_for(lambda: _ticks_after(cluster, bad["id"], datetime.now(UTC) - timedelta(minutes=1),
                                                datetime.now(UTC) - timedelta(seconds=30), "failed"), 15,
                           "a failed tick")
            await page.goto(f"{cluster.nodes['ticks-a'].url}/?label=strip%3Dyes")
            await expect(page.locator("#live")).to_have_text("live", timeout=10_000)
            ok_strip = page.locator(f'tr[data-job="{ok["id"]}"] [data-role="strip"]')
            bad_strip = page.locator(f'tr[data-job="{bad["id"]}"] [data-role="strip"]')
            await expect(ok_strip.locator(".tick.delivered").first).to_be_visible()
            await expect(bad_strip.locator(".tick.failed").first).to_be_visible()
            assert "delivered" in (await ok_strip.get_attribute("aria-label") or "")
            assert "failed" in (await bad_strip.get_attribute("aria-label") or "")
            # without colour: a failed tick carries a cross, a delivered one none
            cross = "el => getComputedStyle(el, '::after').content"
            assert await bad_strip.locator(".tick.failed").first.evaluate(cross) == '"×"'
            assert await ok_strip.locator(".tick.delivered").first.evaluate(cross) in ("none", "normal")
            assert await ok_strip.locator(".tick").count() <= 20
            # live: the stream adds the instants that run now, without a reload
            newest = await ok_strip.locator(".tick").last.get_attribute("data-at")
            await expect(ok_strip.locator(".tick").last).not_to_have_attribute("data-at", newest or "", timeout=10_000)
            await expect(ok_strip.locator(".tick")).to_have_count(20, timeout=30_000)
            title = await bad_strip.locator(".tick.failed").first.get_attribute("title")
            assert title and "failed" in title
            from tests.e2e.test_forecast import accessibility_violations
            assert await accessibility_violations(page) == []
            SHOTS.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(SHOTS / "jobs-strips.png"), full_page=True)
            # times: UTC from the server; each job's zone, or the reader's, at the header's switch (remembered)
            shown = page.locator(f'tr[data-job="{bad["id"]}"] [data-role="nextrun"] time')
            await expect(shown).to_have_text(re.compile(r"UTC$"))
            await page.select_option("#tz", "job")
            await expect(shown).to_have_text(re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d GMT\+9$"))
            await page.reload()
            await expect(shown).to_have_text(re.compile(r"GMT\+9$"))
            await page.select_option("#tz", "utc")
            await expect(shown).to_have_text(re.compile(r"UTC$"))
        finally:
            await browser.close()
        for j in (ok, bad):
            assert (await cluster.request("DELETE", f"{cluster.any_node().url}/api/crons/{j['id']}"))[0] in (200, 204)


async def test_a_resume_through_put_does_not_catch_up_the_paused_period(cluster: Cluster) -> None:
    """Found by the 30-minute soak: a resume sent as PUT {"paused": false} left the anchor before the
    pause, and fire_all caught up every paused instant."""
    job = await cluster.create_job(schedule="* * * * * *", misfirePolicy="fire_all", misfireGraceSeconds=120)
    url = f"{cluster.any_node().url}/api/crons/{job['id']}"
    await wait_for(lambda: _ticks_after(cluster, job["id"], datetime.now(UTC) - timedelta(minutes=1),
                                        datetime.now(UTC) - timedelta(minutes=1), "delivered"), 15, "a delivery")
    assert (await cluster.request("PUT", url, json={"paused": True}))[0] == 200
    paused_at = datetime.now(UTC)
    await wait_for(lambda: _ticks_after(cluster, job["id"], paused_at, paused_at + timedelta(seconds=3), "paused"),
                   10, "paused instants")
    assert (await cluster.request("PUT", url, json={"paused": False}))[0] == 200
    resumed_at = datetime.now(UTC)
    await wait_for(lambda: _ticks_after(cluster, job["id"], resumed_at, resumed_at + timedelta(seconds=2),
                                        "delivered"), 15, "deliveries after the resume")
    body = await ticks(cluster, job["id"], paused_at + timedelta(seconds=1), resumed_at - timedelta(seconds=1))
    assert body["ticks"] and {t["fate"] for t in body["ticks"]} == {"paused"}, body["counts"]
