"""A screenshot of a Label Studio labeling page with headless Chromium (how docs/review.png was made).

Logs in through Label Studio's login form with httpx, hands the session cookie to a fresh headless Chromium over the
DevTools protocol, opens the task and captures the page. Needs the `chromium` binary (``apt-get install chromium``).
"""
from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from annotate import server
from annotate.settings import AnnotateParams

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]


def session_cookies(params: AnnotateParams) -> dict[str, str]:
    import httpx

    creds = server.credentials(params)
    base = server.base_url(params)
    with httpx.Client(base_url=base, follow_redirects=False) as web:
        form = web.get("/user/login/")
        match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text)
        if match is None:
            raise RuntimeError("Label Studio's login page has no CSRF token; is the server up?")
        answer = web.post("/user/login/", headers={"Referer": f"{base}/user/login/"},
                          data={"csrfmiddlewaretoken": match.group(1), "email": creds.username, "password": creds.password})
        if answer.status_code != 302 or "sessionid" not in web.cookies:
            raise RuntimeError(f"login failed (HTTP {answer.status_code})")
        return dict(web.cookies)


def capture(params: AnnotateParams, project_id: int, task_id: int, out: Path, settle_s: float = 20.0,
            debug_port: int = 19222, size: tuple[int, int] = (1400, 900)) -> Path:
    import httpx
    import websocket

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise RuntimeError("chromium not found: apt-get install chromium")
    cookies = session_cookies(params)
    profile = tempfile.mkdtemp(prefix="editkit-chromium-")
    browser = subprocess.Popen([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                                f"--remote-debugging-port={debug_port}",
                                f"--remote-allow-origins=http://127.0.0.1:{debug_port}", "about:blank"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        targets = None
        for _ in range(100):
            try:
                targets = httpx.get(f"http://127.0.0.1:{debug_port}/json").json()
                break
            except httpx.TransportError:
                time.sleep(0.2)
        if not targets:
            raise RuntimeError("headless chromium did not open its DevTools port")
        page = websocket.create_connection(next(t for t in targets if t["type"] == "page")["webSocketDebuggerUrl"],
                                           timeout=60)
        counter = iter(range(1, 1 << 30))

        def call(method: str, **arguments):
            call_id = next(counter)
            page.send(json.dumps({"id": call_id, "method": method, "params": arguments}))
            while True:
                message = json.loads(page.recv())
                if message.get("id") == call_id:
                    return message.get("result")

        call("Network.enable")
        for name, value in cookies.items():
            call("Network.setCookie", name=name, value=value, domain="127.0.0.1", path="/")
        call("Emulation.setDeviceMetricsOverride", width=size[0], height=size[1], deviceScaleFactor=1, mobile=False)
        call("Page.navigate", url=f"{server.base_url(params)}/projects/{project_id}/data?task={task_id}")
        time.sleep(settle_s)  # the editor loads its bundle, the images and the brush mask asynchronously
        shot = call("Page.captureScreenshot", format="png")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(base64.b64decode(shot["data"]))
        page.close()
        return out
    finally:
        browser.terminate()
        browser.wait(10)
        shutil.rmtree(profile, ignore_errors=True)
