"""Debian's chromium + chromium-driver for the real-browser review tests, installed with apt-get when missing.

CI runs as root on Debian and installs them; elsewhere the tests skip with the reason (no apt-get, not root).
"""
from __future__ import annotations

import os
import shutil
import subprocess


def _binaries() -> tuple[str | None, str | None]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver") or ("/usr/bin/chromedriver" if os.path.exists("/usr/bin/chromedriver") else None)
    return browser, driver


def ensure_chromium() -> tuple[str, str] | str:
    """(chromium, chromedriver) paths, installing the Debian packages if needed; else a reason string to skip."""
    browser, driver = _binaries()
    if browser and driver:
        return browser, driver
    if shutil.which("apt-get") is None:
        return "chromium/chromium-driver missing and apt-get is unavailable (install them to run browser tests)"
    if os.geteuid() != 0:
        return "chromium/chromium-driver missing and not root: apt-get install chromium chromium-driver"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium", "chromium-driver"],
                   check=True, env=env, stdout=subprocess.DEVNULL)
    browser, driver = _binaries()
    if not (browser and driver):
        return "apt-get installed chromium but the binaries were not found"
    return browser, driver


def driver(size=(1400, 950)):
    """A headless Chrome WebDriver on Debian's chromium (no network access beyond what the page asks for)."""
    found = ensure_chromium()
    if isinstance(found, str):
        raise RuntimeError(found)
    browser, chromedriver = found
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--window-size={size[0]},{size[1]}", "--force-device-scale-factor=1"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(chromedriver), options=options)
