"""End to end in a real Chromium: sign in, deep links and reloads, triage, open and label.

The browser is the Chromium found on PATH (Debian's ``chromium`` that ``make install`` /
``make browser`` installs, or Chrome), driven by Playwright; never a downloaded build.
"""

from __future__ import annotations

import re
import shutil
import tempfile

import pytest

from secml.settings import ROOT, Settings

from .conftest import detection_rows

pytestmark = [pytest.mark.integration, pytest.mark.browser]

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
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


def find_browser() -> str | None:
    """The first Chromium-family browser on PATH."""
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.fixture(scope="module")
def browser():
    """A Playwright-driven Chromium from PATH with a fresh user-data dir."""
    chromium = find_browser()
    if chromium is None:
        pytest.skip(f"no Chromium on PATH ({', '.join(BROWSERS)}): `make browser` installs it")
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="chromium-")
    with sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(
            profile,
            executable_path=chromium,
            headless=True,
            args=FLAGS,
            viewport={"width": 1400, "height": 1000},
        )
        yield ctx
        ctx.close()
    shutil.rmtree(profile, ignore_errors=True)


def _sign_in(page, settings: Settings) -> None:
    """Fill and submit the sign-in form."""
    page.get_by_role("textbox", name="Username").fill(settings.ui_username)
    page.get_by_role("textbox", name="Password").fill(settings.ui_password.get_secret_value())
    page.get_by_role("button", name="Sign in").click()


def _dfp_row(n: int) -> dict:
    """A DFP detection whose details carry expected values and the threshold (as the gateway
    stores them)."""
    row = detection_rows()[0]
    return row | {
        "record": {**row["record"], "n": 1000 + n},
        "details": {
            "threshold": 2.0,
            "mean_abs_z": 4.7,
            "score_kind": "mean_abs_z",
            "top_features": [
                {"feature": "locationcity", "z": 6.2, "value": "Lagos", "expected": "Austin"}
            ],
        },
    }


def test_sign_in_open_label_and_find_it_in_the_store(ui_server: Settings, browser) -> None:
    from playwright.sync_api import expect

    from secml.store import DetectionStore

    expect.set_options(timeout=60_000)  # Streamlit renders after its websocket round trips
    browser.clear_cookies()
    store = DetectionStore(str(ui_server.store_url))
    det_id = store.add_detections([_dfp_row(1), _dfp_row(1)])[0]  # one record scored twice
    page = browser.new_page()
    page.set_default_timeout(60_000)
    page.goto(str(ui_server.ui_url))
    page.wait_for_selector('[data-testid="stApp"]')
    _sign_in(page, ui_server)
    expect(page.get_by_text("Security ML platform")).to_be_visible()
    expect(page.get_by_text("Unlabelled events")).to_be_visible()
    expect(page.get_by_text("Detections over time")).to_be_visible()

    page.get_by_role("link", name="Detections").click()
    expect(page.get_by_text(re.compile(r"Page 1 of \d+ · [\d,]+ events match"))).to_be_visible()
    box = page.get_by_role("spinbutton", name="Open detection #")
    box.fill(str(det_id))
    box.press("Enter")
    expect(page.get_by_text(f"Detection #{det_id}")).to_be_visible()
    expect(page.get_by_text("Expected vs actual")).to_be_visible()
    expect(page.get_by_text(re.compile(r"scored 2 time\(s\)"))).to_be_visible()
    expect(page).to_have_url(re.compile(rf"detection={det_id}"))

    page.get_by_text("True positive", exact=True).click()
    page.get_by_role("textbox", name="Note").fill("seen from a new country in the browser test")
    page.get_by_role("button", name="Save label for 1 event(s)").click()
    expect(page.get_by_text(f"Stored True positive for event(s) of detection(s) #{det_id}"))
    expect(page.get_by_text("Latest label: True positive")).to_be_visible()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "ui-labelled-detection.png"), full_page=True)

    hist = store.event_labels(det_id)
    assert list(hist["label"]) == ["true_positive"]
    assert list(hist["labelled_by"]) == [ui_server.ui_username]
    assert list(hist["note"]) == ["seen from a new country in the browser test"]
    assert len(hist) == 1, "one label for the event, not one per copy"
    page.close()


def test_deep_link_survives_sign_in_and_reload(ui_server: Settings, browser) -> None:
    from playwright.sync_api import expect

    from secml.store import DetectionStore

    expect.set_options(timeout=60_000)
    browser.clear_cookies()
    store = DetectionStore(str(ui_server.store_url))
    det_id = store.add_detections([_dfp_row(2)])[0]
    page = browser.new_page()
    page.set_default_timeout(60_000)
    link = f"{ui_server.ui_url}/detections?label=unlabelled&sort=score&detection={det_id}"
    page.goto(link)
    page.wait_for_selector('[data-testid="stApp"]')
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    _sign_in(page, ui_server)
    expect(page.get_by_text(f"Detection #{det_id}")).to_be_visible()
    expect(page).to_have_url(re.compile(rf"/detections\?.*detection={det_id}"))
    assert "label=unlabelled" in page.url and "sort=score" in page.url

    page.reload()  # a new Streamlit session: the signed cookie keeps the analyst in
    page.wait_for_selector('[data-testid="stApp"]')
    expect(page.get_by_text(f"Detection #{det_id}")).to_be_visible()
    expect(page.get_by_role("button", name="Sign in")).to_have_count(0)
    # the label filter came back from the URL
    expect(page.get_by_role("combobox", name="Label", exact=True)).to_have_value("Unlabelled")

    other = browser.new_page()  # the link shared with a second tab of the same analyst
    other.goto(link)
    expect(other.get_by_text(f"Detection #{det_id}")).to_be_visible()
    other.close()

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    page.wait_for_timeout(1000)  # the cookie is cleared by the page's script
    page.reload()
    page.wait_for_selector('[data-testid="stApp"]')
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    expect(page.get_by_text(f"Detection #{det_id}")).to_have_count(0)
    page.close()


def test_page_choices_deep_link_and_reload(ui_server: Settings, browser) -> None:
    """A Monitoring link with a dashboard and a window reopens them after sign-in and a reload;
    a new choice is written to the URL."""
    from playwright.sync_api import expect

    expect.set_options(timeout=60_000)
    browser.clear_cookies()
    page = browser.new_page()
    page.set_default_timeout(60_000)
    page.goto(f"{ui_server.ui_url}/monitoring?dashboard=Triton&window=6h")
    page.wait_for_selector('[data-testid="stApp"]')
    _sign_in(page, ui_server)
    board = page.get_by_role("combobox", name="Dashboard", exact=True)
    window = page.get_by_role("combobox", name="Window", exact=True)
    expect(board).to_have_value("Triton")
    expect(window).to_have_value("6 hours")
    page.reload()
    page.wait_for_selector('[data-testid="stApp"]')
    expect(window).to_have_value("6 hours")
    expect(board).to_have_value("Triton")
    window.click()
    page.get_by_role("option", name="15 minutes").click()
    expect(page).to_have_url(re.compile(r"/monitoring\?.*window=15m"))
    assert "dashboard=Triton" in page.url
    page.close()
