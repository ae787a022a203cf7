"""A real browser (headless Chromium) loads the gateway's dashboard from `spreadagg all` on the
embedded default: the page's script connects over WebSocket, subscribes and renders live
spread rows, with no external assets. The test reads the rendered page through the DevTools
protocol, in real time."""

import json
import re
import shutil
import subprocess
import time
import urllib.request

from websockets.sync.client import connect


def chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    raise AssertionError("Chromium is missing: scripts/test installs the Debian package chromium")


def test_dashboard_renders_live_spreads_in_chromium(roles, tmp_path):
    system = roles("all", "all", "--listen", "127.0.0.1:0")
    gateway = system.announced("listening gateway ")
    profile = tmp_path / "chromium-profile"
    # Headless as root without a sandbox, nothing that reaches for the network, and a DevTools
    # port of the browser's choosing (written to DevToolsActivePort in the profile).
    browser = subprocess.Popen(
        [
            chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--remote-debugging-port=0", f"--user-data-dir={profile}", f"http://{gateway}/",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        text = rendered_text(profile, wait_for="binance / okx", timeout=60)
    finally:
        browser.kill()
        browser.wait()
    assert "Live cross-exchange spreads" in text
    assert "BTC-USDT" in text
    assert re.search(r"-?\d+\.\d{4}", text), f"no numeric cell rendered:\n{text[:2000]}"
    code, _ = system.terminate()
    assert code == 0, system.log()


def rendered_text(profile, wait_for, timeout):
    """The page's visible text once it contains `wait_for`."""
    deadline = time.time() + timeout
    port_file = profile / "DevToolsActivePort"
    while not port_file.exists():
        assert time.time() < deadline, "Chromium did not open its DevTools port"
        time.sleep(0.1)
    port = int(port_file.read_text().split()[0])
    pages = []
    while not pages:
        assert time.time() < deadline, "Chromium opened no page"
        pages = [t for t in json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5)) if t["type"] == "page"]
        time.sleep(0.1)
    text = ""
    with connect(pages[0]["webSocketDebuggerUrl"], max_size=None) as devtools:
        request = 0
        while wait_for not in text:
            assert time.time() < deadline, f"the page never showed {wait_for!r}:\n{text[:2000]}"
            time.sleep(0.5)
            request += 1
            devtools.send(json.dumps({"id": request, "method": "Runtime.evaluate", "params": {"expression": "document.body.innerText", "returnByValue": True}}))
            while True:
                answer = json.loads(devtools.recv(timeout=10))
                if answer.get("id") == request:
                    text = answer.get("result", {}).get("result", {}).get("value", "") or ""
                    break
    return text
