"""A real browser (headless Chromium) loads the gateway's dashboard from `spreadagg all` on the
embedded default: the page shows the widest spreads, draws the selected pair's chart with its
bands (uPlot, served by the gateway), and every exchange's health, with no external assets.
The test reads the rendered page through the DevTools protocol, in real time, and saves a
screenshot to target/test-artifacts/dashboard.png."""

import base64
import json
import pathlib
import re
import shutil
import subprocess
import time
import urllib.request

ARTIFACTS = pathlib.Path(__file__).resolve().parents[2] / "target" / "test-artifacts"

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
            "--remote-debugging-port=0", "--window-size=1440,1400", "--hide-scrollbars", f"--user-data-dir={profile}", f"http://{gateway}/",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with devtools_page(profile, timeout=60) as page:
            # The widest-spreads table fills, the first pair is charted with its bands, and
            # the exchanges report in.
            # Some seconds of live points on the chart before the screenshot.
            time.sleep(5)
            chart = page.wait_for(
                "(() => { const d = window.dashboard; if (!d || !d.chart) return null;"
                " const x = d.chart.data; return x[0].length > 5 ? {points: x[0].length,"
                " series: d.chart.series.map(s => s.label), upper: x[2][x[2].length - 1],"
                " lower: x[3][x[3].length - 1], widest: d.widest.length,"
                " live: d.exchanges.filter(e => e.state === 'live').length} : null; })()",
                timeout=90,
            )
            text = page.evaluate("document.body.innerText")
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            shot = page.call("Page.captureScreenshot", {"format": "png"})
            (ARTIFACTS / "dashboard.png").write_bytes(base64.b64decode(shot["data"]))
            print(f"dashboard screenshot: {ARTIFACTS / 'dashboard.png'}")
    finally:
        browser.kill()
        browser.wait()
    shown = text.lower()  # section titles are styled upper case, which innerText reflects
    assert "widest spreads now" in shown and "exchanges" in shown and "active signals" in shown
    assert re.search(r"\b[A-Z0-9]{2,}-[A-Z0-9]{2,}\b", text), f"a symbol in the widest table:\n{text[:2000]}"
    assert "\u2192" in text, "a buy -> sell direction rendered"
    assert re.search(r"-?\d+\.\d{4}", text), f"no numeric cell rendered:\n{text[:2000]}"
    assert chart["series"][1:] == ["bid/bid %", "upper band (97%)", "lower band (3%)"], chart
    assert chart["widest"] > 0, chart
    assert chart["upper"] is not None and chart["lower"] is not None and chart["upper"] >= chart["lower"], chart
    assert chart["live"] >= 2, f"exchanges live on the embedded simulator: {chart}"
    assert re.search(r"binance live", text), text[:2000]
    code, _ = system.terminate()
    assert code == 0, system.log()


class devtools_page:
    """The first page of a Chromium started with --remote-debugging-port=0, over DevTools."""

    def __init__(self, profile, timeout):
        self.profile = profile
        self.deadline = time.time() + timeout
        self.request = 0

    def __enter__(self):
        port_file = self.profile / "DevToolsActivePort"
        while not port_file.exists():
            assert time.time() < self.deadline, "Chromium did not open its DevTools port"
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        pages = []
        while not pages:
            assert time.time() < self.deadline, "Chromium opened no page"
            pages = [t for t in json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5)) if t["type"] == "page"]
            time.sleep(0.1)
        self.ws = connect(pages[0]["webSocketDebuggerUrl"], max_size=None)
        return self

    def __exit__(self, *exc):
        self.ws.close()

    def call(self, method, params=None):
        self.request += 1
        self.ws.send(json.dumps({"id": self.request, "method": method, "params": params or {}}))
        while True:
            answer = json.loads(self.ws.recv(timeout=30))
            if answer.get("id") == self.request:
                assert "error" not in answer, answer
                return answer.get("result", {})

    def evaluate(self, expression):
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        return result.get("result", {}).get("value")

    def wait_for(self, expression, timeout):
        deadline = time.time() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            assert time.time() < deadline, f"never true: {expression}\n{self.evaluate('document.body.innerText')}"
            time.sleep(0.5)


