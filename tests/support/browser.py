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


def driver_or_skip(**options):
    """:func:`driver`, or a skip that says why there is no browser. The skip happens only where apt-get cannot
    install Debian's chromium (no apt-get, or not root): CI runs as root, installs it here, and so always runs the
    browser tests; a developer's machine without them learns the one command to run."""
    import pytest

    found = ensure_chromium()
    if isinstance(found, str):
        pytest.skip(found)
    return driver(**options)


def driver(size=(1400, 950), resolver_rules: str | None = None):
    """A headless Chrome WebDriver on Debian's chromium. ``resolver_rules`` (Chromium's --host-resolver-rules, e.g.
    :meth:`tests.support.egress.EgressRecorder.resolver_rules`) sends every non-loopback host to a local recorder."""
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
    # the browser's own calls home (autofill, password checks, sign-in, variations, safe browsing) off
    for flag in ("--disable-features=AutofillServerCommunication,PasswordLeakDetection,OptimizationHints,"
                 "MediaRouter,Translate,CertificateTransparencyComponentUpdater,InterestFeedContentSuggestions",
                 "--disable-client-side-phishing-detection", "--disable-domain-reliability", "--disable-breakpad",
                 "--no-default-browser-check", "--no-pings", "--password-store=basic", "--use-mock-keychain",
                 "--disable-default-apps", "--disable-extensions", "--metrics-recording-only",
                 "--safebrowsing-disable-auto-update"):
        options.add_argument(flag)
    options.add_experimental_option("prefs", {"credentials_enable_service": False,
                                              "profile.password_manager_enabled": False,
                                              "profile.password_manager_leak_detection": False,
                                              "autofill.profile_enabled": False, "autofill.credit_card_enabled": False,
                                              "safebrowsing.enabled": False, "search.suggest_enabled": False,
                                              "signin.allowed": False})
    if resolver_rules:
        options.add_argument(f"--host-resolver-rules={resolver_rules}")
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})  # the pages' requests: page_requests()
    return webdriver.Chrome(service=Service(chromedriver), options=options)


# Hosts of the browser's OWN services (component updates, sign-in, its connectivity checks): Chromium calls them
# whatever page is open. They are sent to the recorder like every other host; page_requests() checks the pages.
BROWSER_SERVICE_SUFFIXES = (".google.com", ".googleapis.com", ".gvt1.com", ".gstatic.com")


def page_requests(web) -> list[str]:
    """URLs the open pages requested since the last call (Chrome's performance log: Network.requestWillBeSent)."""
    import json

    urls = []
    for entry in web.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def docs_screenshot(web, name: str, scratch) -> None:
    """Save the page as the manual's screenshot ``docs/<name>`` when ``EDITKIT_UPDATE_SCREENSHOTS=1``, otherwise
    into ``scratch`` (the screenshot is still taken, so the step is tested): pixels differ from run to run (font
    hinting, timing), and a test run must not leave the tree changed."""
    from pathlib import Path

    docs = Path(__file__).resolve().parents[2] / "docs"
    target = docs / name if os.environ.get("EDITKIT_UPDATE_SCREENSHOTS") == "1" else Path(scratch) / name
    assert web.save_screenshot(str(target)), f"the browser saved no screenshot to {target}"
