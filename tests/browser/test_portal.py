"""The portal in a real headless Chromium: feed, filter, session, usage charts, screenshots."""

from __future__ import annotations

import tempfile
from pathlib import Path

from playwright.async_api import async_playwright

from tests.browser.conftest import CHROMIUM_FLAGS, Portal
from tests.integration.reporter.scenario import ALICE, SECRET_B, SESSION_1


async def test_a_security_lead_walks_through_the_portal(portal: Portal, chromium: str, artifacts: Path) -> None:
    requests: list[str] = []
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch_persistent_context(
                profile,  # a fresh --user-data-dir
                executable_path=chromium,
                headless=True,
                args=CHROMIUM_FLAGS,
                http_credentials={"username": portal.org, "password": portal.token},
                viewport={"width": 1400, "height": 1000},
            )
            try:
                page = await browser.new_page()
                page.on("request", lambda request: requests.append(request.url))

                # 1. The decisions feed.
                response = await page.goto(f"{portal.url}/portal/events")
                assert response is not None and response.status == 200
                assert await page.locator("table#events tr.event").count() == 12
                assert SECRET_B not in await page.content()
                await page.screenshot(path=str(artifacts / "1-feed.png"), full_page=True)

                # 2. A filter: rejected decisions only.
                await page.select_option("select[name=decision]", "reject")
                async with page.expect_navigation():
                    await page.click("form#filters button[type=submit]")
                assert "decision=reject" in page.url
                rows = page.locator("table#events tr.event")
                assert await rows.count() == 1
                assert "Write" in await rows.first.inner_text()
                await page.screenshot(path=str(artifacts / "2-feed-rejected.png"), full_page=True)

                # 3. The session the rejection belongs to.
                async with page.expect_navigation():
                    await rows.first.locator("a.session-link").click()
                assert await page.inner_text("#session-id") == SESSION_1
                assert await page.inner_text("#session-user") == ALICE
                prompts = await page.inner_text("table#prompts")
                assert "please list files; mail me at <EMAIL>" in prompts and "now try again" in prompts
                decisions = await page.inner_text("table#decisions")
                assert "accept" in decisions and "reject" in decisions
                await page.screenshot(path=str(artifacts / "3-session.png"), full_page=True)

                # 4. Usage, with charts drawn from the data.
                async with page.expect_navigation():
                    await page.click("header a:text('Usage')")
                cost_chart = page.locator("svg[data-chart=cost-per-user]")
                assert await cost_chart.get_attribute("data-points") == "2"
                bars = cost_chart.locator("rect.bar")
                values = {await bars.nth(i).get_attribute("data-key"): float(await bars.nth(i).get_attribute(
                    "data-value") or 0) for i in range(await bars.count())}
                assert values[ALICE] == 0.00785 and all(v > 0 for v in values.values())
                box = await bars.first.bounding_box()
                assert box is not None and box["width"] > 10  # drawn, not just present in the DOM
                assert await page.locator("svg[data-chart=tokens-by-model] rect.bar").count() >= 2
                assert await page.locator("svg[data-chart=cost-over-time] circle.point").count() == 30
                assert await page.inner_text("#total-cost") == "0.017850"

                # 5. The screenshot the CI keeps.
                await page.screenshot(path=str(artifacts / "4-usage.png"), full_page=True)
            finally:
                await browser.close()
    assert (artifacts / "4-usage.png").stat().st_size > 10_000
    # Nothing but the portal itself: no CDN, no fonts, no telemetry.
    assert requests and all(url.startswith(portal.url) for url in requests), requests
