"""End to end in a real browser: Debian's Chromium driven by Playwright (no browser download), the UI started
with ``braintumor ui`` against the session's real API.

register → sign in → upload real MRIs (four at once) → result and heatmap → History → download the PDF (its
text checked with ``pdftotext``) → sign out; then the admin's page. And a study: a zipped series of real slices
uploaded in the Study mode → the study page → the scrubber moved → History opens it again. A screenshot of every
page goes to ``BRAINTUMOR_SCREENSHOT_DIR`` (or the test's tmp_path): login, analyze, history, dashboard, admin,
profile, about, study.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from ..missing import missing
from ..servers import free_port, http_ok, serving

pytestmark = [pytest.mark.browser, pytest.mark.integration]

CHROMIUM = Path("/usr/bin/chromium")
#: The flags that let Chromium run as root in a container, with nothing reaching out to the network.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WIDTH = 1280
PASSWORD = "tumour-board-2026"


@pytest.fixture(scope="module")
def browser_ready() -> None:
    """Chromium from Debian and the Playwright driver must be installed already: nothing is fetched here."""
    if not CHROMIUM.is_file():
        missing(f"{CHROMIUM} is missing: install Debian's Chromium (apt-get install -y chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing("Playwright is missing: pip install playwright (never 'playwright install': Debian's Chromium is used)")
    if shutil.which("pdftotext") is None:
        missing("pdftotext is missing: apt-get install -y poppler-utils")


@pytest.fixture(scope="module")
def ui_url(api_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``braintumor ui`` on a free loopback port, talking to the test API."""
    port = free_port()
    log = tmp_path_factory.mktemp("ui-server") / "streamlit.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BRAINTUMOR_", "STREAMLIT_"))}
    cmd = [sys.executable, "-m", "braintumor.cli", "ui", "--host", "127.0.0.1", "--port", str(port)]
    url = f"http://127.0.0.1:{port}"
    with serving([*cmd, "--api-url", api_server.url], log=log, ready=http_ok(f"{url}/_stcore/health"),
                 what="the UI", timeout=60, env=env):  # fmt: skip
        yield url


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    """Where screenshots go: ``BRAINTUMOR_SCREENSHOT_DIR`` or the test's tmp_path."""
    folder = Path(os.environ.get("BRAINTUMOR_SCREENSHOT_DIR") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def settle(page: Any) -> None:
    """Wait until Streamlit has finished the current run (its status widget is gone) and the page is drawn."""
    page.wait_for_timeout(300)
    page.wait_for_function("!document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=30_000)
    page.wait_for_timeout(400)


def screenshot(page: Any, folder: Path, name: str, height: int = 1400) -> Path:
    """A PNG of the page at WIDTH×height (Streamlit scrolls inside its own container, so the viewport is grown),
    stored as an optimised RGB PNG."""
    page.set_viewport_size({"width": WIDTH, "height": height})
    settle(page)
    path = folder / f"{name}.png"
    page.screenshot(path=str(path))
    page.set_viewport_size({"width": WIDTH, "height": 900})
    with Image.open(path) as im:
        rgb = im.convert("RGB")  # no alpha channel: smaller, and a palette would band the heatmap
    rgb.save(path, optimize=True)
    return path


def nav(page: Any, name: str) -> None:
    page.get_by_test_id("stSidebar").get_by_text(name, exact=False).first.click()
    settle(page)


def test_clinician_journey(
    browser_ready: None,
    ui_url: str,
    api_server: Any,
    shots: Path,
    tmp_path: Path,
    mri: Callable[[str], tuple[str, bytes]],
    shared_data: Path,
) -> None:
    from playwright.sync_api import expect, sync_playwright

    username = f"dr_{os.getpid()}_{int(time.time()) % 100000}"
    scan_path = shared_data / "brain_tumor_dataset" / "yes" / "Y1.jpg"
    with sync_playwright() as p:
        # launch() gives the browser a fresh, temporary user-data-dir of its own
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": WIDTH, "height": 900}, accept_downloads=True)
            page.set_default_timeout(30_000)
            page.goto(ui_url)
            expect(page.get_by_role("tab", name="Create account")).to_be_visible()
            screenshot(page, shots, "login", 900)

            # register: the recovery key is shown once, with a warning
            page.get_by_role("tab", name="Create account").click()
            page.get_by_role("textbox", name="Username").fill(username)
            page.get_by_role("textbox", name="Password", exact=True).fill(PASSWORD)
            page.get_by_role("textbox", name="Repeat the password").fill(PASSWORD)
            page.get_by_role("button", name="Create account").click()
            expect(page.get_by_text("Save your recovery key now")).to_be_visible()
            key = page.get_by_test_id("stCode").inner_text().strip()
            assert re.fullmatch(r"[A-Z2-7]{4}(-[A-Z2-7]{4}){7}", key), key
            page.mouse.move(0, 0)  # the copy button the text names is shown without hovering (issue 14 item 9)
            copy = page.get_by_test_id("stCode").locator("button")
            expect(copy).to_be_visible()
            assert copy.evaluate("b => getComputedStyle(b).opacity") == "1"
            page.get_by_text("I have stored my recovery key safely").click()
            page.get_by_role("button", name="Continue to sign in").click()

            # sign in: the token never reaches the URL
            expect(page.get_by_role("textbox", name="Username")).to_have_value(username)
            page.get_by_role("textbox", name="Password", exact=True).fill(PASSWORD)
            page.get_by_role("button", name="Sign in", exact=True).click()
            expect(page.get_by_role("heading", name="Analyze scans")).to_be_visible()
            assert "token" not in page.url and "eyJ" not in page.url

            # analyze a real MRI
            more = [shared_data / "brain_tumor_dataset" / p for p in ("no/1 no.jpeg", "yes/Y10.jpg", "no/10 no.jpg")]
            page.locator("input[type=file]").set_input_files([str(scan_path), *map(str, more)])
            page.get_by_role("button", name="Analyze 4 scans").click()
            expect(page.get_by_role("button", name="Download PDF report")).to_be_visible(timeout=60_000)
            banner = page.locator(".bt-banner").inner_text()
            assert re.search(r"(Tumor suspected|Refer for expert review|No tumor detected)", banner), banner
            assert re.search(r"Calibrated probability of tumor \d+\.\d%", banner), banner
            expect(page.get_by_text("Referral band").first).to_be_visible()
            expect(page.get_by_text("Original", exact=True)).to_be_visible()
            expect(page.get_by_text(re.compile(r"Grad-CAM overlay \(opacity 0\.40\)"))).to_be_visible()
            images = page.get_by_test_id("stImage").locator("img")
            expect(images.first).to_be_visible()
            assert images.count() >= 3  # original, overlay, colour bar
            expect(page.get_by_text("4 of 4 analysed")).to_be_visible()
            assert all(images.nth(i).evaluate("i => i.naturalWidth > 0") for i in range(images.count()))
            screenshot(page, shots, "analyze", 2250)

            # a refresh keeps the session and the results; the browser holds an opaque id, never the token
            page.reload()
            expect(page.get_by_role("heading", name="Analyze scans")).to_be_visible()
            expect(page.get_by_text(f"Signed in as {username}")).to_be_visible()
            expect(page.get_by_text("4 of 4 analysed")).to_be_visible()
            expect(page.get_by_role("button", name="Download PDF report")).to_be_visible()
            cookies = {c["name"]: c for c in page.context.cookies()}
            assert "bt_session" in cookies and cookies["bt_session"]["sameSite"] == "Strict"
            assert not cookies["bt_session"]["value"].startswith("eyJ") and "eyJ" not in page.url
            assert all(not c["value"].startswith("eyJ") for c in cookies.values())  # no JWT in any cookie

            # history: the scan is listed; open it and download its report
            nav(page, "History")
            expect(page.get_by_text("Y1.jpg").first).to_be_visible()
            expect(page.get_by_text("4 scans · showing 1–4")).to_be_visible()
            screenshot(page, shots, "history", 900)
            page.get_by_test_id("stMain").locator("button", has_text="Open").last.click()  # the oldest: Y1.jpg
            expect(page.get_by_role("heading", name="Y1.jpg")).to_be_visible()
            with page.expect_download() as download:
                page.get_by_role("button", name="Download PDF report").click()
            pdf = tmp_path / "report.pdf"
            download.value.save_as(pdf)
            assert pdf.read_bytes().startswith(b"%PDF")
            text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True)
            report = " ".join(text.stdout.split())
            assert "Y1.jpg" in report
            assert re.search(r"tumou?r", report, re.IGNORECASE)
            assert "not a diagnosis" in report.lower()

            nav(page, "Dashboard")
            expect(page.get_by_text("Probability distribution")).to_be_visible()
            page.wait_for_function("document.querySelectorAll('[data-testid=\"stVegaLiteChart\"] canvas, "
                                   "[data-testid=\"stVegaLiteChart\"] svg').length >= 4", timeout=30_000)  # fmt: skip
            screenshot(page, shots, "dashboard", 1400)
            nav(page, "Profile")
            expect(page.get_by_role("heading", name="Change password")).to_be_visible()
            screenshot(page, shots, "profile", 900)
            nav(page, "About")
            expect(page.get_by_text("Intended use.")).to_be_visible()
            screenshot(page, shots, "about", 1000)

            # sign out: back to the sign-in page, the session forgotten
            page.get_by_role("button", name="Sign out").click()
            expect(page.get_by_text("You are signed out.")).to_be_visible()
            expect(page.get_by_role("tab", name="Create account")).to_be_visible()
            page.reload()  # signed out stays signed out
            expect(page.get_by_role("tab", name="Create account")).to_be_visible()
            expect(page.get_by_text(f"Signed in as {username}")).to_have_count(0)

            # the administrator's page
            page.get_by_role("textbox", name="Username").fill(api_server.admin)
            page.get_by_role("textbox", name="Password", exact=True).fill(api_server.admin_password)
            page.get_by_role("button", name="Sign in", exact=True).click()
            expect(page.get_by_role("heading", name="Analyze scans")).to_be_visible()
            nav(page, "Admin")
            expect(page.get_by_text("Activity per user")).to_be_visible()
            expect(page.get_by_text(username).first).to_be_visible()
            screenshot(page, shots, "admin", 1750)
        finally:
            browser.close()
    for name in ("login", "analyze", "history", "dashboard", "admin", "profile", "about"):
        with Image.open(shots / f"{name}.png") as im:
            assert im.width <= WIDTH, name


def test_study_journey(
    browser_ready: None, ui_url: str, api_server: Any, shots: Path, tmp_path: Path, study_zip: tuple[str, bytes]
) -> None:
    """Upload a zipped series on Analyze's Study mode, read the study page, move the scrubber, reopen it from
    History."""
    from playwright.sync_api import expect, sync_playwright

    from .conftest import PASSWORD as ACCOUNT_PASSWORD
    from .conftest import STUDY_SLICES

    username = api_server.user("study")
    archive = tmp_path / study_zip[0]
    archive.write_bytes(study_zip[1])
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": WIDTH, "height": 900})
            page.set_default_timeout(30_000)
            page.goto(ui_url)
            page.get_by_role("textbox", name="Username").fill(username)
            page.get_by_role("textbox", name="Password", exact=True).fill(ACCOUNT_PASSWORD)
            page.get_by_role("button", name="Sign in", exact=True).click()
            expect(page.get_by_role("heading", name="Analyze scans")).to_be_visible()

            page.get_by_text("Study (a whole series)").click()
            settle(page)
            page.locator("input[type=file]").set_input_files(str(archive))
            page.get_by_role("button", name="Analyze study (1 file)").click()
            expect(page.get_by_role("heading", name="series.zip")).to_be_visible(timeout=120_000)
            banner = page.locator(".bt-banner").inner_text()
            assert re.search(r"(Tumor suspected|Refer for expert review|No tumor detected)", banner), banner
            assert "Study outcome:" in banner
            expect(page.get_by_text("Study rule: tumor when")).to_be_visible()
            expect(page.get_by_text("validated on 2-D slices", exact=False).first).to_be_visible()
            expect(page.get_by_text(f"Study · {STUDY_SLICES} slices in 1 series", exact=False)).to_be_visible()
            page.wait_for_function("document.querySelectorAll('[data-testid=\"stVegaLiteChart\"] canvas, "
                                   "[data-testid=\"stVegaLiteChart\"] svg').length >= 1", timeout=30_000)  # fmt: skip

            # the scrubber: Home is slice 0 (the first of the stack), two steps right slice 2, each with its own view
            # and overlay
            thumb = page.get_by_test_id("stSlider").get_by_role("slider")
            thumb.focus()
            thumb.press("Home")
            settle(page)
            expect(page.get_by_text(f"slice 0 of 0–{STUDY_SLICES - 1}", exact=False)).to_be_visible()
            thumb.press("ArrowRight")
            thumb.press("ArrowRight")
            settle(page)
            expect(page.get_by_text(f"slice 2 of 0–{STUDY_SLICES - 1}", exact=False)).to_be_visible()
            expect(page.get_by_text("Grad-CAM overlay", exact=True)).to_be_visible()
            images = page.get_by_test_id("stImage").locator("img")
            assert images.count() >= 4  # the slice, its overlay, the colour bar, top slices
            page.wait_for_function("[...document.querySelectorAll('[data-testid=\"stImage\"] img')]"
                                   ".every(i => i.complete && i.naturalWidth > 0)", timeout=30_000)  # fmt: skip
            page.evaluate("document.querySelectorAll('*').forEach(e => { if (e.scrollTop) e.scrollTop = 0; })")
            screenshot(page, shots, "study", 2000)

            # a top slice's button moves the scrubber to it
            top = page.get_by_test_id("stMain").locator("button", has_text=re.compile(r"Slice \d+ · ")).first
            found = re.search(r"Slice (\d+) ·", top.inner_text())
            assert found, top.inner_text()
            top.click()
            settle(page)
            expect(page.get_by_text(f"slice {found.group(1)} of 0–{STUDY_SLICES - 1}", exact=False)).to_be_visible()
            expect(page.get_by_test_id("stSliderThumbValue")).to_have_text(found.group(1))

            # History marks the study and opens it on the study page
            nav(page, "History")
            row = page.get_by_test_id("stMain").get_by_role("paragraph").filter(has_text="series.zip")
            expect(row).to_contain_text("Study")
            expect(row.get_by_role("img", name="stacks icon")).to_be_visible()
            page.get_by_test_id("stMain").locator("button", has_text="Open").first.click()
            expect(page.get_by_role("heading", name="series.zip")).to_be_visible()
            expect(page.get_by_text("Study rule: tumor when")).to_be_visible()
        finally:
            browser.close()
    with Image.open(shots / "study.png") as im:
        assert im.width <= WIDTH
