"""The dashboard in a real headless Chromium (Debian's, driven by Playwright) against a real 2-node cluster."""

from __future__ import annotations

import re

import pytest
from playwright.async_api import async_playwright, expect

from tests.e2e.fixtures import cluster_fixture
from tests.harness import ARTIFACTS, Cluster

pytestmark = [pytest.mark.browser, pytest.mark.slow]
SHOTS = ARTIFACTS / "screenshots"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


# (a search budget of 0: a search reads one window of the creation order per page, test_a_search_goes_on_by_itself)
cluster = cluster_fixture("ui", "ui-a", "ui-b", CRONRING_SEARCH_BUDGET="0")


@pytest.fixture(scope="module")
async def browser():
    SHOTS.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        yield b
        await b.close()


async def test_created_on_a_appears_live_on_b_then_runs_pauses_deletes(cluster: Cluster, browser) -> None:
    a, b = cluster.nodes["ui-a"], cluster.nodes["ui-b"]
    page_b = await browser.new_page(viewport={"width": 1400, "height": 800})
    await page_b.goto(f"{b.url}/")
    await expect(page_b.locator("#live")).to_have_text("live", timeout=10_000)

    page_a = await browser.new_page(viewport={"width": 1400, "height": 1000})
    await page_a.goto(f"{a.url}/jobs/new")
    await page_a.fill("input[name=name]", "ui job")
    await page_a.fill("input[name=uri]", f"{cluster.receiver.url}/webhook?delay_ms=1500")
    await page_a.fill("[name=schedule]", "*/4 * * * * *")
    await page_a.fill("input[name=timeZone]", "Europe/Lisbon")
    # the live preview of fire times appears while typing
    await expect(page_a.locator("#preview ol.fires li")).to_have_count(5, timeout=10_000)
    await page_a.screenshot(path=str(SHOTS / "form.png"), full_page=True)
    await page_a.click("button[type=submit]")
    await expect(page_a).to_have_url(re.compile(r"/jobs/[0-9a-f]+$"))
    job_id = page_a.url.rsplit("/", 1)[1]

    row = page_b.locator(f'tr[data-job="{job_id}"]')
    await expect(row).to_be_visible(timeout=10_000)  # appeared on node B's page without reload
    chip = row.locator('[data-role="chip"]')
    await expect(chip).to_have_text("Running", timeout=15_000)
    await expect(chip).to_have_text("Waiting", timeout=10_000)
    await expect(row.locator('[data-role="lastrun"]')).to_contain_text("200", timeout=5_000)
    await page_b.screenshot(path=str(SHOTS / "jobs.png"), full_page=True)

    # pause from the job page on node A: node B's row shows Paused
    await page_a.goto(f"{a.url}/jobs/{job_id}")
    await page_a.click("button:has-text('Pause')")
    await expect(page_a.locator('[data-role="chip"]').first).to_have_text("Paused", timeout=10_000)
    await expect(row.locator('[data-role="chip"]')).to_have_text("Paused", timeout=10_000)
    await page_a.screenshot(path=str(SHOTS / "job.png"), full_page=True)

    # delete with confirmation
    page_a.on("dialog", lambda d: d.accept())
    await page_a.click("button:has-text('Delete')")
    await expect(page_a).to_have_url(f"{a.url}/")
    await expect(page_b.locator(f'tr[data-job="{job_id}"]')).to_have_count(0, timeout=10_000)
    status, _, _ = await cluster.request("GET", f"{a.url}/api/crons/{job_id}")
    assert status == 404


async def test_form_errors_beside_fields_and_xss_renders_as_text(cluster: Cluster, browser) -> None:
    a = cluster.nodes["ui-a"]
    page = await browser.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    await page.goto(f"{a.url}/jobs/new")
    await page.fill("input[name=name]", "<script>alert(1)</script>")
    await page.fill("input[name=uri]", "ftp://nope")
    await page.fill("[name=schedule]", "61 * * * *")
    await page.click("button[type=submit]")
    await expect(page.locator("#err-uri")).to_contain_text("http")
    await expect(page.locator("#err-schedule")).to_be_visible()
    await page.fill("input[name=uri]", f"{cluster.receiver.url}/webhook")
    await page.fill("[name=schedule]", "0 3 * * *")
    await page.click("button[type=submit]")
    await expect(page).to_have_url(re.compile(r"/jobs/[0-9a-f]+$"))
    await expect(page.locator("h1")).to_contain_text("<script>alert(1)</script>")
    await page.goto(f"{a.url}/")
    await expect(page.locator("table#jobs")).to_contain_text("<script>alert(1)</script>")
    assert dialogs == []


async def test_pages_work_without_javascript(cluster: Cluster, browser) -> None:
    a = cluster.nodes["ui-a"]
    ctx = await browser.new_context(java_script_enabled=False)
    page = await ctx.new_page()
    await page.goto(f"{a.url}/jobs/new")
    await page.fill("input[name=name]", "no-js job")
    await page.fill("input[name=uri]", f"{cluster.receiver.url}/webhook")
    await page.fill("[name=schedule]", "@daily")
    await page.click("button[type=submit]")
    await expect(page).to_have_url(re.compile(r"/jobs/[0-9a-f]+$"))
    await page.click("button:has-text('Delete')")
    await expect(page.locator("h1")).to_contain_text("Delete no-js job?")
    await page.click("button:has-text('Yes, delete it')")
    await expect(page).to_have_url(f"{a.url}/")
    await page.goto(f"{a.url}/cluster")
    await expect(page.locator("#members")).to_contain_text("ui-b")
    await page.screenshot(path=str(SHOTS / "cluster.png"), full_page=True)
    await ctx.close()


async def test_forms_refuse_a_missing_csrf_token(cluster: Cluster) -> None:
    a = cluster.nodes["ui-a"]
    status, body, _ = await cluster.request("POST", f"{a.url}/jobs/new", data={"uri": "http://x/", "schedule": "@daily"})
    assert status == 403


async def test_next_run_cell_stays_current_without_reload(cluster: Cluster, browser) -> None:
    """The "Next run" cell advances through the fire times its row carries, then asks for the row again."""
    b = cluster.nodes["ui-b"]
    job = await cluster.create_job(schedule="*/2 * * * * *", name="next-run")
    page = await browser.new_page(viewport={"width": 1400, "height": 800})
    await page.goto(f"{b.url}/?q=next-run")
    cell = page.locator(f'tr[data-job="{job["id"]}"] [data-role="nextrun"]')
    first = await cell.text_content()
    upcoming = (await cell.get_attribute("data-upcoming") or "").split()
    assert len(upcoming) == 30 and first and upcoming[0].startswith(first[:10])
    await expect(cell).not_to_have_text(first, timeout=5_000)  # advanced by the page itself
    # fire times exhausted: the page fetches the row again and gets fresh ones
    await page.evaluate("""id => { const c = document.querySelector(`tr[data-job="${id}"] [data-role="nextrun"]`);
                                   c.setAttribute("data-upcoming", "2000-01-01T00:00:00.000Z"); c.textContent = "stale"; }""",
                        job["id"])
    await expect(cell).not_to_have_text("stale", timeout=5_000)
    assert len((await cell.get_attribute("data-upcoming") or "").split()) >= 25
    await page.close()


async def test_swagger_ui_renders_the_api_from_the_node_itself(cluster: Cluster, browser) -> None:
    """/api/docs: Swagger UI's files come from the node (no CDN), under the page's CSP, and it reads
    /api/openapi.json."""
    page = await browser.new_page()
    outside: list[str] = []
    problems: list[str] = []
    page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(cluster.nodes["ui-a"].url) else None)
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    await page.goto(f"{cluster.nodes['ui-a'].url}/api/docs")
    await expect(page.locator(".swagger-ui .info .title")).to_contain_text("cronring", timeout=15_000)
    await expect(page.locator(".opblock-summary-path").first).to_be_visible()
    assert await page.locator(".opblock").count() >= 15
    assert not outside, outside  # nothing fetched from anywhere but the node
    assert not [p for p in problems if "Content Security Policy" in p], problems
    await page.screenshot(path=str(SHOTS / "api-docs.png"))
    await page.close()


async def test_a_search_goes_on_by_itself_while_it_has_found_nothing(cluster: Cluster, browser) -> None:
    """A search answers within its budget (0 here: one window of 8,000 seqs a page). A page that has found nothing
    yet shows how far it got and goes on by itself; the one that finds the job shows it, with the progress bar and
    a link to search further. (Last in this module: it leaves a gap of 100,000 in the creation order.)"""
    b = cluster.nodes["ui-b"]
    await cluster.create_job(schedule="0 4 * * *", name="far-needle-early", paused=True)
    conn = await cluster.db_conn()
    try:
        async with conn.cursor() as cur:
            await cur.execute("SELECT MAX(seq) FROM jobs")
            (top,) = await cur.fetchone()
            await cur.execute(f"ALTER TABLE jobs AUTO_INCREMENT = {int(top) + 100_000}")
    finally:
        conn.close()
    late = await cluster.create_job(schedule="0 4 * * *", name="far-needle-late", paused=True)
    page = await browser.new_page(viewport={"width": 1400, "height": 800})
    await page.goto(f"{b.url}/?q=far-needle-late")
    await expect(page.locator(f'tr[data-job="{late["id"]}"]')).to_be_visible(timeout=15_000)
    assert "cursor=" in page.url  # (it went on by itself, page after page)
    await expect(page.locator("#search-progress")).to_have_count(0)  # (it read to the end: nothing more to search)
    await page.screenshot(path=str(SHOTS / "search-found.png"), full_page=True)
    # a page on the way: how far it got, and the link it follows
    await page.goto(f"{b.url}/?q=far-needle-nobody")
    bar = page.locator("#search-progress progress")
    await expect(bar).to_be_visible()  # (no screenshot: the page moves on every few milliseconds)
    await expect(page.locator("tr.empty")).to_contain_text("No job matches", timeout=15_000)  # (at the end)
    await page.close()
