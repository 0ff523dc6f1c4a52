"""The operations layer in a real headless Chromium against a real 2-node cluster: labels and assertions from the
form, a pause with a note, versions compared field by field and one restored, the audit page and its filters,
the label filter and a bulk pause of the rows ticked, the failing filter, alerts on the cluster page."""

from __future__ import annotations

import re

import pytest
from playwright.async_api import async_playwright, expect

from tests.e2e.fixtures import cluster_fixture
from tests.e2e.test_dashboard import CHROMIUM_ARGS, SHOTS
from tests.harness import Cluster, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.slow]

cluster = cluster_fixture("uiops", "uio-a", "uio-b")


@pytest.fixture(scope="module")
async def browser():
    SHOTS.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        yield b
        await b.close()


async def test_versions_pause_audit_and_bulk_from_the_pages(cluster: Cluster, browser) -> None:
    a = cluster.nodes["uio-a"]
    page = await browser.new_page(viewport={"width": 1400, "height": 1100})
    page.on("dialog", lambda d: d.accept())
    # a job from the form, with labels and response assertions
    await page.goto(f"{a.url}/jobs/new")
    await page.fill("input[name=name]", "invoices")
    await page.fill("input[name=uri]", f"{cluster.receiver.url}/webhook")
    await page.fill("[name=schedule]", "0 3 * * *")
    await page.fill("textarea[name=labels]", "team=billing\ntier=batch")
    await page.fill("input[name=expectBody]", "/success/i")
    await page.fill("textarea[name=expectJson]", '$.success = true')
    await page.fill("input[name=maxDurationMs]", "2000")
    await page.fill("input[name=pauseAfterFailures]", "3")
    await page.click("button[type=submit]")
    await expect(page).to_have_url(re.compile(r"/jobs/[0-9a-f]+$"))
    job_id = page.url.rsplit("/", 1)[1]
    status, job, _ = await cluster.request("GET", f"{a.url}/api/crons/{job_id}")
    assert job["labels"] == {"team": "billing", "tier": "batch"} and job["expectBody"] == "/success/i"
    assert job["expectJson"] == [{"path": "$.success", "equals": True}] and job["maxDurationMs"] == 2000
    await expect(page.locator("dl.def")).to_contain_text("team=billing")
    other = await cluster.create_job(name="crawl", schedule="0 4 * * *", labels={"team": "search"})

    # pause with a note: shown on the page, by whom
    await page.fill("#pause-note", "month-end close")
    await page.click("form.pause button")
    await expect(page.locator("[data-role=paused]")).to_contain_text("month-end close")
    await expect(page.locator("[data-role=paused]")).to_contain_text("anonymous")

    # an edit, then the versions: compare 1 with 3, restore 1
    await page.goto(f"{a.url}/jobs/{job_id}/edit")
    await page.fill("input[name=name]", "invoices-v3")
    await page.click("button[type=submit]")
    await expect(page.locator("h1")).to_contain_text("invoices-v3")
    await page.select_option("#compare select[name=a]", "1")
    await page.select_option("#compare select[name=b]", "3")
    await page.click("#compare button")
    diff = page.locator("#diff")
    await expect(diff.locator("tr[data-field=name] td.old")).to_have_text('"invoices"')
    await expect(diff.locator("tr[data-field=name] td.new")).to_have_text('"invoices-v3"')
    await expect(diff.locator("tr[data-field=paused]")).to_have_count(1)
    await page.screenshot(path=str(SHOTS / "versions.png"), full_page=True)
    await page.click("#versions tr[data-version='1'] button:has-text('Restore')")
    await expect(page.locator("h1")).to_contain_text("invoices")
    await expect(page.locator("h1")).not_to_contain_text("v3")
    await expect(page.locator("#versions tr[data-version='4']")).to_contain_text("restore")

    # the audit page, filtered by this job, then by action
    await page.goto(f"{a.url}/audit?jobId={job_id}")
    rows = page.locator("#audit tbody tr")
    await expect(rows).to_have_count(4)  # create, pause, update, restore
    await expect(rows.nth(0)).to_contain_text("restore")
    await expect(rows.nth(0)).to_contain_text("dashboard")
    await page.select_option("#audit-filters select[name=action]", "pause")
    await page.click("#audit-filters button")
    await expect(rows).to_have_count(1)
    await expect(rows.nth(0)).to_contain_text("month-end close")
    await page.screenshot(path=str(SHOTS / "audit.png"), full_page=True)

    # the label filter, and a bulk resume of the ticked row (then every job matching the filter)
    await page.goto(f"{a.url}/?label=team%3Dbilling")
    await expect(page.locator("#jobs tbody tr[data-job]")).to_have_count(1)
    await expect(page.locator(f"#jobs tr[data-job='{other['id']}']")).to_have_count(0)
    await page.check(f"#jobs tr[data-job='{job_id}'] input[name=ids]")
    await page.select_option("#bulk select[name=action]", "resume")
    await page.click("#bulk button")
    await expect(page.locator(f"#bulk-result tr[data-job='{job_id}']")).to_contain_text("done")
    status, job, _ = await cluster.request("GET", f"{a.url}/api/crons/{job_id}")
    assert not job["paused"]
    await page.goto(f"{a.url}/?label=team%3Dbilling")
    await page.select_option("#bulk select[name=action]", "pause")
    await page.check("#bulk input[name=all]")
    await page.click("#bulk button")
    await expect(page.locator("#bulk-result tbody tr")).to_have_count(1)
    _, other_now, _ = await cluster.request("GET", f"{a.url}/api/crons/{other['id']}")
    assert not other_now["paused"]  # outside the filter: untouched
    # the failing filter (nothing failing here) and the cluster page's alerts table
    await page.goto(f"{a.url}/?state=failing")
    await expect(page.locator("#jobs tbody tr.empty")).to_have_count(1)
    await page.goto(f"{a.url}/cluster")
    await expect(page.locator("#alerts")).to_be_visible()

    async def audited() -> bool:
        _, rows_, _ = await cluster.request("GET", f"{a.url}/api/audit?jobId={job_id}&action=pause")
        return len(rows_) == 2

    await wait_for(audited, 5, "the bulk pause in the audit log")
