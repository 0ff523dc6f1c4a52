"""The scheduling features in a real headless Chromium against a real 2-node cluster: a calendar made on its page
and named in the job form (the live preview says what it excludes), the form's scheduling fields, a skip from
the job page, and a backfill's progress bar moving live from the stream."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from playwright.async_api import async_playwright, expect

from tests.e2e.fixtures import cluster_fixture
from tests.e2e.test_dashboard import CHROMIUM_ARGS, SHOTS
from tests.harness import Cluster

pytestmark = [pytest.mark.browser, pytest.mark.slow]

cluster = cluster_fixture("uisched", "uis-a", "uis-b")


@pytest.fixture(scope="module")
async def browser():
    SHOTS.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        yield b
        await b.close()


def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


async def test_a_calendar_then_a_job_that_obeys_it_from_the_form(cluster: Cluster, browser) -> None:
    a = cluster.nodes["uis-a"]
    page = await browser.new_page(viewport={"width": 1400, "height": 1100})
    await page.goto(f"{a.url}/calendars/new")
    await page.fill("input[name=name]", "xmas")
    await page.fill("input[name=timeZone]", "Europe/Lisbon")
    await page.fill("textarea[name=dates]", "2026-12-25\n2027-12-25")
    await page.check("input[name=weekdays][value='0']")
    await page.click("button[type=submit]")
    await expect(page).to_have_url(f"{a.url}/calendars")
    row = page.locator("#calendars tr", has_text="xmas")
    await expect(row).to_contain_text("2026-12-25")
    await expect(row).to_contain_text("Sun")
    await page.screenshot(path=str(SHOTS / "calendars.png"), full_page=True)

    # the job form: two schedules, a jitter, a DST policy, the calendar; the preview shows what is excluded
    await page.goto(f"{a.url}/jobs/new")
    await page.fill("input[name=name]", "daily report")
    await page.fill("input[name=uri]", f"{cluster.receiver.url}/webhook")
    await page.fill("[name=schedule]", "0 9 * * *\n0 17 * * *")
    await page.fill("input[name=timeZone]", "Europe/Lisbon")
    await page.fill("input[name=jitterSeconds]", "30")
    await page.select_option("select[name=dstOverlap]", "both")
    await page.select_option("select[name=excludeCalendars]", ["xmas"])
    preview = page.locator("#preview")
    await expect(preview.locator("ol.fires li")).to_have_count(5, timeout=10_000)
    await expect(preview).to_contain_text("sent")  # the jitter's send times
    await page.screenshot(path=str(SHOTS / "form-scheduling.png"), full_page=True)
    await page.click("button[type=submit]")
    await expect(page).to_have_url(re.compile(r"/jobs/[0-9a-f]+$"))
    job_id = page.url.rsplit("/", 1)[1]
    status, job, _ = await cluster.request("GET", f"{a.url}/api/crons/{job_id}")
    assert status == 200
    assert job["schedules"] == ["0 9 * * *", "0 17 * * *"] and job["jitterSeconds"] == 30
    assert job["dstPolicy"] == {"gap": "shift", "overlap": "both"} and job["excludeCalendars"] == ["xmas"]
    await expect(page.locator("dl.def")).to_contain_text("xmas")
    await expect(page.locator("dl.def")).to_contain_text("0 17 * * *")
    # the edit form shows them back, and deleting the calendar in use is refused with the job named
    await page.goto(f"{a.url}/jobs/{job_id}/edit")
    await expect(page.locator("[name=schedule]")).to_have_value("0 9 * * *\n0 17 * * *")
    await expect(page.locator("select[name=excludeCalendars] option[value=xmas]")).to_have_attribute("selected", "")
    await page.goto(f"{a.url}/calendars/xmas")
    page.on("dialog", lambda d: d.accept())
    await page.click("button:has-text('Delete')")
    await expect(page.locator("main")).to_contain_text("daily report")
    await cluster.request("DELETE", f"{a.url}/api/crons/{job_id}")


async def test_skip_and_a_backfills_progress_bar_on_the_job_page(cluster: Cluster, browser) -> None:
    a = cluster.nodes["uis-a"]
    job = await cluster.create_job(schedule="*/5 * * * * *", name="to backfill")
    jid = job["id"]
    page = await browser.new_page(viewport={"width": 1400, "height": 1200})
    await page.goto(f"{a.url}/jobs/{jid}")
    await expect(page.locator("#live")).to_have_text("live", timeout=10_000)
    # skip the next 3
    await page.fill("#skip-count", "3")
    await page.click("button:has-text('Skip next')")
    await expect(page.locator('[data-role="skip"]')).to_contain_text("every instant up to", timeout=5_000)
    # a backfill of the last 10 minutes, 2 a second: the bar moves while the page stays open
    end = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=10)
    await page.fill("form.backfill input[name=from]", iso(end - timedelta(minutes=10)))
    await page.fill("form.backfill input[name=to]", iso(end))
    await page.fill("form.backfill input[name=maxPerSecond]", "8")
    await page.click("form.backfill button")
    await expect(page).to_have_url(f"{a.url}/jobs/{jid}")
    bar = page.locator("#backfills progress").first
    await expect(bar).to_have_attribute("max", "120")
    await expect(page.locator("#backfills [data-role=pct]").first).not_to_have_text("0%", timeout=10_000)
    await page.screenshot(path=str(SHOTS / "backfill.png"), full_page=True)
    await expect(page.locator("#backfills [data-role=state]").first).to_have_text("done", timeout=40_000)
    await expect(page.locator("#backfills [data-role=pct]").first).to_have_text("100%")
    assert int(await bar.get_attribute("value") or 0) == 120 or await bar.evaluate("b => b.value") == 120
    await cluster.request("DELETE", f"{a.url}/api/crons/{jid}")
