"""Headless Chromium (Debian's ``chromium`` and ``chromium-driver``) driven by Selenium.

The driver is ``/usr/bin/chromedriver`` named explicitly, so Selenium Manager never
downloads a browser or a driver; the browser runs with a fresh profile in a temporary
directory and with everything that phones home turned off. :func:`browser_missing` says why
the browser tests cannot run here (they skip with that reason).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

CHROMIUM = os.environ.get("CHANGEFEED_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHANGEFEED_CHROMEDRIVER", "/usr/bin/chromedriver")
DESKTOP = (1280, 900)
PHONE = (390, 844)
ARTIFACTS = Path(__file__).resolve().parents[3] / "test-artifacts" / "explorer"


def browser_missing() -> str | None:
    """Why no browser test can run here, or None when they can."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            return (
                f"{path} is missing: install Debian's {package} "
                "(apt-get install -y chromium chromium-driver; scripts/test.sh does it as root)"
            )
    return None


def start_chromium(profile_dir: Path, size: tuple[int, int] = DESKTOP) -> WebDriver:
    """A headless Chromium with a fresh profile in ``profile_dir``."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile_dir}",
        f"--window-size={size[0]},{size[1]}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    driver.set_script_timeout(30)
    return driver


def fresh_profile() -> Path:
    return Path(tempfile.mkdtemp(prefix="explorer-chromium-"))


def save_screenshot(
    driver: WebDriver,
    out_dir: Path,
    name: str,
    size: tuple[int, int] = DESKTOP,
    *,
    full_page: bool = True,
) -> Path:
    """A PNG of the current view at ``size`` (a phone's width emulated as a mobile
    viewport): the whole page, or (``full_page=False``) what the screen shows; saved in
    ``out_dir`` and copied to ``test-artifacts/explorer/``."""
    width, height = size
    mobile = width < 600

    def emulate(h: int) -> None:
        driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": h, "deviceScaleFactor": 1, "mobile": mobile},
        )

    emulate(height)
    try:
        full = driver.execute_script(
            "return Math.max(document.documentElement.scrollHeight, window.innerHeight)"
        )
        if full_page:
            emulate(min(int(full), 5000))
        path = out_dir / f"{name}.png"
        driver.save_screenshot(str(path))
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, ARTIFACTS / path.name)
    return path
