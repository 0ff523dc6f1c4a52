"""The forecast (issue 23) against a real node and MariaDB: 10,000 jobs, 2,000 of them on ``0 * * * *``, make the
hour's first minute the hottest; after they move to ``H * * * *`` it is flattened. A scoped token sees its own
jobs' forecast; bad windows are 400s that say why; the dashboard draws it."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from axe_playwright_python.async_playwright import Axe
from playwright.async_api import Page, async_playwright, expect

from node.client import AsyncClient, Client
from tests.e2e.fixtures import cluster_fixture
from tests.e2e.test_ecosystem import cli
from tests.harness import ARTIFACTS, Cluster

SHOTS = ARTIFACTS / "screenshots"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]

ADMIN = "forecast-admin-token-01"
TEAM = "forecast-team-token-002"
READER = "forecast-read-token-003"
GREEDY = "forecast-greedy-token-04"
PER_MINUTE = 20  # forecasts computed for one caller in any 60 s (the tests below compute fewer a token)
cluster = cluster_fixture("fc", "fc-1", receiver=False, token=ADMIN, CRONRING_MAX_APPLY_BODY_BYTES=str(1 << 20),
                          CRONRING_API_TOKENS=f"admin={ADMIN}:admin; team={TEAM}:admin:team=herd; "
                                              f"reader={READER}:read; greedy={GREEDY}:read",
                          CRONRING_FORECASTS_PER_CALLER_PER_MINUTE=str(PER_MINUTE))
HERD, REST = 2_000, 8_000


async def api(c: Cluster, method: str, path: str, token: str = ADMIN, **kw: Any) -> tuple[int, Any]:
    status, body, _ = await c.request(method, f"{c.any_node().url}{path}",
                                      headers={"Authorization": f"Bearer {token}"}, **kw)
    return status, body


async def apply(c: Cluster, jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for k in range(0, len(jobs), 1000):
        status, body = await api(c, "POST", "/api/crons/apply", json={"jobs": jobs[k:k + 1000]})
        assert status == 200, body
        out += body["jobs"]
    return out


def spec(name: str, schedule: str, **more: Any) -> dict[str, Any]:
    return {"name": name, "uri": "http://127.0.0.1:9/x", "schedule": schedule, **more}


@pytest.fixture(scope="module")
async def herd(cluster: Cluster) -> list[str]:
    rows = await apply(cluster, [spec(f"herd-{i}", "0 * * * *", labels={"team": "herd"}) for i in range(HERD)])
    # the others: daily, at a minute and hour of their own (120 combinations: ~67 jobs a minute at most)
    await apply(cluster, [spec(f"rest-{i}", f"{i % 60} {i % 24} * * *") for i in range(REST)])
    return [r["id"] for r in rows]


def next_day() -> str:
    """From the next whole hour on, 24 hours: a window no instant of which is past while the test runs."""
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    return f"from={start:%Y-%m-%dT%H:%M:%SZ}&to={start + timedelta(days=1):%Y-%m-%dT%H:%M:%SZ}"


async def test_the_herd_is_the_hottest_minute_and_h_flattens_it(cluster: Cluster, herd: list[str]) -> None:
    window = next_day()
    status, f = await api(cluster, "GET", f"/api/forecast?{window}", token=READER)
    assert status == 200, f
    assert f["step"] == 60 and len(f["counts"]) == 1440 and f["complete"] and f["jobs"] == HERD + REST
    assert f["total"] == HERD * 24 + REST
    top = f["busiest"][0]
    at = datetime.fromisoformat(top["at"].replace("Z", "+00:00"))
    assert at.minute == 0 and top["fires"] >= HERD and f["peak"] == top["fires"]
    assert top["groups"][0]["schedule"] == "0 * * * *" and top["groups"][0]["jobs"] == HERD
    assert [i for i, n in enumerate(f["counts"]) if n >= HERD] == list(range(0, 1440, 60))

    await apply(cluster, [{"id": i, "schedule": "H * * * *"} for i in herd])
    status, flat = await api(cluster, "GET", f"/api/forecast?{window}", token=READER)
    assert status == 200 and flat["total"] == f["total"]  # as many requests, spread
    assert flat["peak"] < 200, flat["busiest"][:2]
    assert all(g["schedule"] != "0 * * * *" for b in flat["busiest"] for g in b["groups"])
    assert any(g["schedule"] == "H * * * *" and g.get("resolved") for b in flat["busiest"] for g in b["groups"])


async def test_a_scoped_token_sees_its_own_jobs_forecast(cluster: Cluster, herd: list[str]) -> None:
    status, f = await api(cluster, "GET", f"/api/forecast?{next_day()}&step=3600", token=TEAM)
    assert status == 200 and f["jobs"] == HERD and f["total"] == HERD * 24 and len(f["counts"]) == 24


async def test_jobs_counted_one_by_one_jitter_bounds_run_limits(cluster: Cluster, herd: list[str]) -> None:
    window = next_day()
    start = datetime.fromisoformat(window.split("&")[0][5:].replace("Z", "+00:00"))
    status, before = await api(cluster, "GET", f"/api/forecast?{window}")
    assert status == 200
    made = await apply(cluster, [
        spec("solo-jitter", "30 * * * *", jitterSeconds=120),  # 24 requests, each up to 2 min after :30
        spec("solo-ends", "45 * * * *", endAt=(start + timedelta(hours=5)).isoformat()),  # 5 of them
        spec("solo-limited", "0 * * * *", maxRuns=3)])  # 3 runs left, none before the window (from a whole hour)
    status, after = await api(cluster, "GET", f"/api/forecast?{window}")
    assert status == 200 and after["total"] - before["total"] == 24 + 5 + 3 and after["jobs"] == before["jobs"] + 3
    moved = [i for i, (a, b) in enumerate(zip(before["counts"], after["counts"], strict=True)) if a != b]
    jittered = [i for i in moved if i % 60 in (30, 31)]
    assert len(jittered) >= 20  # (a send time lands in :30 or :31)
    for row in made:
        assert (await api(cluster, "DELETE", f"/api/crons/{row['id']}"))[0] in (200, 204)


async def test_the_next_ten_minutes_by_the_second(cluster: Cluster, herd: list[str]) -> None:
    (made,) = await apply(cluster, [spec("every-minute", "* * * * *")])
    try:
        start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
        end = start + timedelta(minutes=10)
        q = f"from={start:%Y-%m-%dT%H:%M:%SZ}&to={end:%Y-%m-%dT%H:%M:%SZ}&step=1"
        status, f = await api(cluster, "GET", f"/api/forecast?{q}")
        assert status == 200 and len(f["counts"]) == 600
        zero = (60 - start.second) % 60  # the slots of second :00
        assert all(n == 0 for k, n in enumerate(f["counts"]) if k % 60 != zero)
        assert all(f["counts"][k] >= 1 for k in range(zero, 600, 60))  # the every-minute job, at least
    finally:
        assert (await api(cluster, "DELETE", f"/api/crons/{made['id']}"))[0] in (200, 204)


@pytest.mark.parametrize(("query", "field"), [
    ("step=0", "step"), ("step=x", "step"), ("step=86401", "step"), ("from=yesterday", "from"),
    ("from=2026-12-07T10:00:00Z&to=2026-12-07T09:00:00Z", "to"),
    ("from=2026-12-01T00:00:00Z&to=2026-12-09T00:00:00Z&step=3600", "7 days"),
    ("from=2026-12-01T00:00:00Z&to=2026-12-07T00:00:00Z&step=1", "slots")])
async def test_a_window_that_cannot_be_forecast_is_a_400_that_says_why(cluster: Cluster, query: str,
                                                                       field: str) -> None:
    status, body = await api(cluster, "GET", f"/api/forecast?{query}")
    assert status == 400 and field in str(body), body


async def test_the_cli_draws_it_and_the_client_library_reads_it(cluster: Cluster, herd: list[str]) -> None:
    code, out = await cli(cluster, "forecast", "--step", "3600", env={"CRONRING_TOKEN": READER})
    assert code == 0, out
    lines = out.splitlines()
    assert "requests from 10,000 jobs" in lines[0] and "by 3600 s" in lines[0]
    assert lines[1].startswith("|") and len(lines[1]) == 26  # a character an hour
    assert "█" in lines[1] and len(lines) == 2 + 10 and all(" (UTC) x" in x for x in lines[2:])  # the busiest ten
    code, out = await cli(cluster, "forecast", "--step", "0", env={"CRONRING_TOKEN": READER})
    assert code != 0 and "step must be between 1 and 86400" in out
    code, out = await cli(cluster, "forecast", "-o", "json", env={"CRONRING_TOKEN": TEAM})
    assert code == 0 and json.loads(out)["jobs"] == HERD
    url = cluster.any_node().url
    assert len((await asyncio.to_thread(Client(url, READER).forecast, None, None, 600))["counts"]) == 144
    async with AsyncClient(url, TEAM) as c:
        assert (await c.forecast(step=3600))["jobs"] == HERD


async def test_one_token_asking_window_after_window_is_limited_and_others_are_not(cluster: Cluster,
                                                                                  herd: list[str]) -> None:
    """A node computes one forecast at a time: one token asking for window after window kept it busy for every
    other reader (the review of issue 23). It may have PER_MINUTE computed in any 60 s; a window asked for again is
    served kept and costs nothing; beyond, a 429 that says why; another token is not affected."""
    window = next_day()
    status, first = await api(cluster, "GET", f"/api/forecast?{window}&step=60", token=GREEDY)
    assert status == 200, first
    for _ in range(3):  # kept: not counted
        status, again = await api(cluster, "GET", f"/api/forecast?{window}&step=60", token=GREEDY)
        assert status == 200 and again == first
    for k in range(2, PER_MINUTE + 1):  # distinct windows: each computed
        status, body = await api(cluster, "GET", f"/api/forecast?{window}&step={60 * k}", token=GREEDY)
        assert status == 200, (k, body)
    status, body = await api(cluster, "GET", f"/api/forecast?{window}&step={60 * (PER_MINUTE + 1)}", token=GREEDY)
    assert status == 429 and f"at most {PER_MINUTE} forecasts for one caller" in body["error"], body
    # the page, for the same caller (a window nobody had computed): the same limit, said on the page
    status, html, _ = await cluster.request("GET", f"{cluster.any_node().url}/forecast?view=week",
                                            headers={"Authorization": f"Bearer {GREEDY}"})
    assert status == 429 and f"at most {PER_MINUTE} forecasts for one caller" in str(html), str(html)[:300]
    status, body = await api(cluster, "GET", f"/api/forecast?{window}&step={60 * (PER_MINUTE + 2)}", token=READER)
    assert status == 200, body


async def test_the_forecast_needs_a_token(cluster: Cluster) -> None:
    status, _, _ = await cluster.request("GET", f"{cluster.any_node().url}/api/forecast")
    assert status == 401


async def test_the_dashboard_draws_the_forecast_as_a_heatmap_with_the_busiest_slots(cluster: Cluster,
                                                                                   herd: list[str]) -> None:
    url = f"{cluster.any_node().url}/forecast"
    for view, cells, rows in (("day", 1500, 25), ("minutes", 660, 11), ("week", 192, 8), ("nonsense", 1500, 25)):
        status, html, _ = await cluster.request("GET", f"{url}?view={view}", headers={"Authorization": f"Bearer {READER}"})
        assert status == 200, html
        assert html.count("<rect ") == cells and html.count('class="axis" text-anchor="end"') == rows
        assert 'role="img"' in html and "aria-label=" in html
        assert 'id="busiest"' in html and "Nothing is scheduled" not in html
    # the herd moved to H (the first test): no minute holds it, and the slots name H and what it resolved to
    assert "H * * * *" in html and "(H: <code>" in html
    assert 'class="h6"' in html  # the busiest slot at the top of the scale
    status, html, _ = await cluster.request("GET", f"{url}?view=week", headers={"Authorization": f"Bearer {TEAM}"})
    assert status == 200 and "team=herd" in html and "2,000 active jobs" in html


async def accessibility_violations(page: Page) -> list[str]:
    """axe-core's violations on the page as it stands (WCAG 2 A and AA: names, labels, contrast, ARIA)."""
    result = await Axe().run(page, options={"runOnly": {"type": "tag", "values": ["wcag2a", "wcag2aa"]}})
    return [f"{v['id']}: {v['help']} ({len(v['nodes'])}: {v['nodes'][0]['target']})"
            for v in result.response["violations"]]


async def login(page: Page, url: str, token: str) -> None:
    await page.goto(f"{url}/login?next=/forecast")
    await page.fill("input[name=token]", token)
    await page.click("button.primary")
    await page.wait_for_url(f"{url}/forecast")


@pytest.mark.browser
@pytest.mark.slow
async def test_the_forecast_page_in_a_browser_light_dark_and_on_a_phone(cluster: Cluster, herd: list[str]) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    url = cluster.any_node().url
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1300, "height": 1000})
            await login(page, url, READER)
            heat = page.locator("#heatmap")
            await expect(heat).to_be_visible()
            assert await heat.locator("rect").count() == 1500
            hot = heat.locator("rect.h6").first
            assert "request" in (await hot.locator("title").text_content() or "")
            await expect(page.locator("#busiest tbody tr").first).to_contain_text(" jobs, e.g.")
            assert await accessibility_violations(page) == []
            await page.screenshot(path=str(SHOTS / "forecast.png"), full_page=True)
            # live: a job created elsewhere shows in the forecast without a reload
            await expect(page.locator("#live")).to_have_text("live", timeout=10_000)
            total = int(await page.locator("#forecast-summary").get_attribute("data-total") or 0)
            status, created = await api(cluster, "POST", "/api/crons", json=spec("live-one", "* * * * *"))
            assert status in (200, 201), created
            await page.wait_for_function(
                "(t) => Number(document.getElementById('forecast-summary').dataset.total) > t", arg=total + 1300,
                timeout=15_000)
            assert (await api(cluster, "DELETE", f"/api/crons/{created['id']}"))[0] in (200, 204)
            await page.click("nav.tabs >> text=Next 10 minutes, by the second")
            await expect(page.locator("nav.tabs a.on")).to_have_text("Next 10 minutes, by the second")
            assert await heat.locator("rect").count() == 660
            await page.emulate_media(color_scheme="dark")
            assert await page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(11, 16, 32)"
            assert await accessibility_violations(page) == []
            await page.screenshot(path=str(SHOTS / "forecast-dark.png"), full_page=True)
            phone = await browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True)
            await login(phone, url, READER)
            width = await phone.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, f"the page is {width}px wide on a 390px phone"
            await phone.screenshot(path=str(SHOTS / "forecast-phone.png"), full_page=True)
        finally:
            await browser.close()
