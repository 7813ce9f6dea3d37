"""The portal in a real headless Chromium: signing in with a token, feed, filter, session, usage charts,
screenshots; and each role signed in, seeing what it may."""

from __future__ import annotations

import tempfile
from pathlib import Path

from playwright.async_api import Page, async_playwright

from tests.browser.conftest import CHROMIUM_FLAGS, Portal
from tests.integration.reporter.scenario import ALICE, SECRET_B, SESSION_1, SESSION_2


async def sign_in(page: Page, portal: Portal, role: str, then: str = "/portal/events") -> None:
    """Through the login page, as a person would: the protected page sends the browser there first."""
    await page.goto(f"{portal.url}{then}")
    assert "/portal/login" in page.url
    await page.fill("#token", portal.tokens[role])
    async with page.expect_navigation(url=f"**{then}*"):
        await page.click("#sign-in")
    assert await page.locator("#who").inner_text() != ""


async def test_a_security_lead_walks_through_the_portal(portal: Portal, chromium: str, artifacts: Path) -> None:
    requests: list[str] = []
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch_persistent_context(
                profile,  # a fresh --user-data-dir
                executable_path=chromium,
                headless=True,
                args=CHROMIUM_FLAGS,
                viewport={"width": 1400, "height": 1000},
            )
            try:
                page = await browser.new_page()
                page.on("request", lambda request: requests.append(request.url))

                # 1. Signing in, then the decisions feed.
                await sign_in(page, portal, "auditor")
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


async def test_each_role_signs_in_and_sees_what_it_may(portal: Portal, chromium: str, artifacts: Path) -> None:
    nav_of = {
        "admin": ["Decisions", "Sessions", "Usage", "Completeness", "Chain", "Tokens"],
        "auditor": ["Decisions", "Sessions", "Usage", "Completeness", "Chain"],
        "analyst": ["Decisions", "Sessions", "Usage", "Completeness"],
        "developer": ["Decisions", "Sessions"],
    }
    async with async_playwright() as playwright:
        for role, nav in nav_of.items():
            with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
                browser = await playwright.chromium.launch_persistent_context(
                    profile, executable_path=chromium, headless=True, args=CHROMIUM_FLAGS,
                    viewport={"width": 1400, "height": 1000})
                try:
                    page = await browser.new_page()
                    await sign_in(page, portal, role)
                    assert await page.locator("header a").all_inner_texts() == nav, role
                    assert (await page.locator("#who").inner_text()).startswith(role)
                    feed = await page.inner_text("table#events")
                    rows = await page.locator("table#events tr.event").count()
                    if role == "analyst":
                        assert rows == 12 and "please list files" not in feed and "characters" in feed
                    elif role == "developer":
                        assert rows == 8 and "please list files" in feed and "refactor the parser" not in feed
                    else:
                        assert rows == 12 and "please list files" in feed and "refactor the parser" in feed
                    await page.screenshot(path=str(artifacts / f"role-{role}-feed.png"), full_page=True)
                    await page.goto(f"{portal.url}/portal/sessions/{SESSION_1}")
                    prompts = await page.inner_text("table#prompts")
                    assert ("now try again" in prompts) == (role != "analyst"), role
                    other = await page.goto(f"{portal.url}/portal/sessions/{SESSION_2}")
                    assert other is not None and other.status == (404 if role == "developer" else 200), role
                    chain = await page.goto(f"{portal.url}/portal/chain")
                    assert chain is not None and chain.status == (200 if "Chain" in nav else 403), role
                    gaps = await page.goto(f"{portal.url}/portal/completeness")
                    assert gaps is not None and gaps.status == (200 if "Completeness" in nav else 403), role
                    if role == "auditor":
                        assert await page.locator("#tenant-completeness").count() == 1
                        await page.screenshot(path=str(artifacts / "completeness.png"), full_page=True)
                    if role == "admin":
                        await page.goto(f"{portal.url}/portal/tokens")
                        await page.select_option("select[name=role]", "analyst")
                        async with page.expect_navigation():
                            await page.click("form.filters button[type=submit]")
                        assert (await page.inner_text("#new-token")).startswith("rpt1.")
                        await page.screenshot(path=str(artifacts / "role-admin-tokens.png"), full_page=True)
                    # Sign out: the session ends, and the portal sends the browser back to the login.
                    await page.goto(f"{portal.url}/portal/events")
                    async with page.expect_navigation():
                        await page.click("form.logout button")
                    assert "/portal/login" in page.url
                    await page.goto(f"{portal.url}/portal/events")
                    assert "/portal/login" in page.url
                finally:
                    await browser.close()
