"""End to end in Debian Chromium: sign in, open a detection, label it, find it in the store."""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

import pytest

from secml.settings import ROOT, Settings

from .conftest import detection_rows

pytestmark = [pytest.mark.integration, pytest.mark.browser]

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture(scope="module")
def browser():
    """A Playwright-driven Debian Chromium with a fresh user-data dir."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="chromium-")
    with sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            headless=True,
            args=FLAGS,
            viewport={"width": 1400, "height": 1000},
        )
        yield ctx
        ctx.close()
    shutil.rmtree(profile, ignore_errors=True)


def _choose(page, label: str, option: re.Pattern[str], tries: int = 6) -> None:
    """Open a selectbox and click an option; retry when a rerun closes the list under us."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    box = page.locator('[data-testid="stSelectbox"]').filter(has_text=label)
    for attempt in range(tries):
        box.click()
        try:
            page.get_by_role("option", name=option).click(timeout=10_000)
            return
        except PlaywrightTimeout:
            if attempt == tries - 1:
                raise
            page.keyboard.press("Escape")


def test_sign_in_open_label_and_find_it_in_the_store(ui_server: Settings, browser) -> None:
    from playwright.sync_api import expect

    from secml.store import DetectionStore

    expect.set_options(timeout=60_000)  # Streamlit renders after its websocket round trips
    store = DetectionStore(str(ui_server.store_url))
    det_id = store.add_detections(detection_rows()[:1])[0]
    page = browser.new_page()
    page.set_default_timeout(60_000)
    page.goto(str(ui_server.ui_url))
    page.wait_for_selector('[data-testid="stApp"]')
    page.get_by_role("textbox", name="Username").fill(ui_server.ui_username)
    page.get_by_role("textbox", name="Password").fill(ui_server.ui_password.get_secret_value())
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_text("Security ML platform")).to_be_visible()

    page.get_by_role("link", name="Detections").click()
    expect(page.get_by_text(re.compile(r"\d+ detections match"))).to_be_visible()
    _choose(page, "Open detection", re.compile(rf"^#{det_id} "))
    expect(page.get_by_text(f"Detection #{det_id}")).to_be_visible()
    expect(page.get_by_text("Per-feature z-scores")).to_be_visible()

    page.get_by_text("True positive", exact=True).click()
    page.get_by_role("textbox", name="Note").fill("seen from a new country in the browser test")
    page.get_by_role("button", name="Save label for 1 detection(s)").click()
    expect(page.get_by_text(f"Stored True positive for detection(s) #{det_id}")).to_be_visible()
    expect(page.get_by_text("Latest label: True positive")).to_be_visible()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "ui-labelled-detection.png"), full_page=True)

    hist = store.labels_history(det_id)
    assert list(hist["label"]) == ["true_positive"]
    assert list(hist["labelled_by"]) == [ui_server.ui_username]
    assert list(hist["note"]) == ["seen from a new country in the browser test"]
    page.close()
