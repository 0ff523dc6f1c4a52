"""Every view of the dashboard, in a real headless Chromium against a real 2-node cluster, checked by axe-core
(WCAG 2 A and AA: every control labelled, names, contrast, ARIA) in light and dark mode, and laid out on a phone
without sideways scrolling (issue 23). Screenshots of each under test-artifacts/screenshots/a11y/."""

from __future__ import annotations

import pytest
from playwright.async_api import async_playwright

from tests.e2e.fixtures import cluster_fixture
from tests.e2e.test_forecast import CHROMIUM_ARGS, SHOTS, accessibility_violations
from tests.harness import Cluster, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.slow]
cluster = cluster_fixture("a11y", "a11y-1", "a11y-2")


async def test_every_view_passes_axe_in_light_and_dark_and_fits_a_phone(cluster: Cluster) -> None:
    url = cluster.any_node().url
    ok = await cluster.create_job(schedule="* * * * * *", name="a11y-ok", labels={"team": "a11y"})
    bad = await cluster.create_job(schedule="*/2 * * * * *", name="a11y-bad", uri="http://127.0.0.1:9/x",
                                   labels={"team": "a11y"}, pauseAfterFailures=0)
    status, _, _ = await cluster.request("PUT", f"{url}/api/calendars/holidays",
                                         json={"timeZone": "UTC", "dates": ["2026-12-25"]})
    assert status in (200, 201)

    async def some_runs() -> bool:
        status, body, _ = await cluster.request("GET", f"{url}/api/crons/{bad['id']}/executions")
        return status == 200 and len(body) >= 2

    await wait_for(some_runs, 20, "a few runs")
    pages = {"jobs": "/", "job": f"/jobs/{ok['id']}", "failing-job": f"/jobs/{bad['id']}", "new": "/jobs/new",
             "edit": f"/jobs/{ok['id']}/edit", "calendars": "/calendars", "calendar": "/calendars/holidays",
             "cluster": "/cluster", "audit": "/audit", "forecast": "/forecast", "forecast-seconds": "/forecast?view=minutes"}
    shots = SHOTS / "a11y"
    shots.mkdir(parents=True, exist_ok=True)
    found: dict[str, list[str]] = {}
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            for scheme in ("light", "dark"):
                page = await browser.new_page(viewport={"width": 1300, "height": 900}, color_scheme=scheme)
                for name, path in pages.items():
                    await page.goto(url + path)
                    if v := await accessibility_violations(page):
                        found[f"{name} ({scheme})"] = v
                    await page.screenshot(path=str(shots / f"{name}-{scheme}.png"), full_page=True)
                await page.close()
            phone = await browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True)
            for name, path in pages.items():
                await phone.goto(url + path)
                width = await phone.evaluate("document.documentElement.scrollWidth")
                if width > 390:
                    wide = await phone.evaluate(
                        "() => [...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > 392)"
                        ".slice(0, 3).map(e => e.tagName + (e.id ? '#' + e.id : '') + '.' + e.className)")
                    found[f"{name} (phone)"] = [f"the page is {width}px wide on a 390px phone: {wide}"]
                await phone.screenshot(path=str(shots / f"{name}-phone.png"), full_page=True)
        finally:
            await browser.close()
    assert found == {}, "\n".join(f"{k}: {v}" for k, v in found.items())
