"""The web page in a real browser: Debian's headless Chromium, driven by Playwright
(`executable_path`, never Playwright's own download), against `moodlane serve --web` with
the shipped model on a JACK server. A monitor port in its own process listens to MoodLane
Out, as a DAW track would."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from pythonosc.udp_client import SimpleUDPClient

from moodlane.daw_bridge.jack import JACK_MIDI, connect, find_port, ports
from moodlane.daw_bridge.osc import free_udp_port
from tests.conftest import run_cli
from tests.test_serve_jack import ProcessMonitor, wait_for

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="the browser test needs Playwright (the [browser] extra; scripts/test.sh installs it)"
)
CHROMIUM = os.environ.get("MOODLANE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
# as the machine notes say: without the background-networking flags, Chromium's calls home
# are refused by a closed network, many at a time
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TEMPO = 120.0
BAR_S = 4 * 60.0 / TEMPO


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def browser():
    if CHROMIUM is None:
        pytest.skip("needs Chromium (Debian: apt-get install chromium; scripts/test.sh installs it) or $MOODLANE_CHROMIUM")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def served(jack_server):
    """`moodlane serve --web` with the shipped model; yields (page URL, OSC port, monitor)."""
    web_port, osc_port = free_tcp_port(), free_udp_port()
    before = ports()
    env = dict(os.environ, MOODLANE_MIDI_BACKEND=JACK_MIDI)
    cmd = [sys.executable, "-m", "moodlane.daw_bridge.cli", "serve", "--web", "--web-port", str(web_port), "--port", str(osc_port)]
    cmd += ["--tempo", str(TEMPO), "--valence", "0.3", "--arousal", "-0.8", "-q"]
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{web_port}/"
    mon = None
    try:

        def up() -> bool:
            try:
                return urllib.request.urlopen(url, timeout=1).status == 200
            except OSError:
                return False

        assert wait_for(up, 60.0), "the web page never answered"
        mon = ProcessMonitor("Web Monitor")
        connect(find_port("MoodLane Out", timeout=30, exclude=before), find_port("Web Monitor", timeout=10))
        yield url, osc_port, mon
    finally:
        if mon is not None:
            mon.close()
        proc.terminate()
        _, err = proc.communicate(timeout=15)
        print(err[-3000:])


def pad_xy(page, v: float, a: float) -> tuple[float, float]:
    box = page.locator("#pad").bounding_box()
    return box["x"] + (v + 1) / 2 * box["width"], box["y"] + (1 - a) / 2 * box["height"]


def drag(page, path: list[tuple[float, float]], step_s: float = 0.03) -> float:
    """Press on the pad at the first point, move through the rest, release; returns the
    monotonic time of the release."""
    page.mouse.move(*pad_xy(page, *path[0]))
    page.mouse.down()
    for v, a in path[1:]:
        page.mouse.move(*pad_xy(page, v, a), steps=2)
        time.sleep(step_s)
    page.mouse.up()
    return time.monotonic()


def line(p0, p1, n: int = 10) -> list[tuple[float, float]]:
    return [(p0[0] + (p1[0] - p0[0]) * i / n, p0[1] + (p1[1] - p0[1]) * i / n) for i in range(n + 1)]


def shows(page, element: str, v: float, a: float, fraction: float, start: tuple[float, float], timeout_ms: int) -> float:
    """Seconds until the element's data-v/data-a have moved `fraction` of the way from
    `start` to (v, a) (1.0: within 0.02 of it)."""
    t0 = time.monotonic()
    page.wait_for_function(
        """([el, v, a, f, v0, a0]) => {
            const d = document.getElementById(el).dataset;
            if (d.v === undefined) return false;
            const dv = Number(d.v) - v, da = Number(d.a) - a;
            if (f >= 1) return Math.abs(dv) <= 0.02 && Math.abs(da) <= 0.02;
            const done = (x, x0, x1) => (x1 === x0 ? 1 : (x - x0) / (x1 - x0));
            return done(Number(d.v), v0, v) >= f && done(Number(d.a), a0, a) >= f;
        }""",
        arg=[element, v, a, fraction, start[0], start[1]],
        polling=5,
        timeout=timeout_ms,
    )
    return time.monotonic() - t0


def note_rate(mon, seconds: float) -> float:
    time.sleep(2 * BAR_S)  # the bars made before the move play out
    t0 = time.monotonic()
    time.sleep(seconds)
    return len(mon.note_ons(t0, time.monotonic())) / seconds


@pytest.mark.slow
def test_the_pad_steers_the_music_in_a_real_browser(served, browser, tmp_path, capsys):
    url, osc_port, mon = served
    ctx = browser.new_context(bypass_csp=True, accept_downloads=True, viewport={"width": 1150, "height": 780})
    page = ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    page.wait_for_function("() => window.moodlane && window.moodlane.frames > 3", timeout=20000)
    assert page.locator("#presets button").count() >= 8
    assert wait_for(mon.note_ons, 20.0), "no notes reached the monitor"

    calm, excited = (0.3, -0.8), (0.3, 0.9)
    drag(page, line((0.0, 0.0), calm, 4))  # where serve started, held by hand
    calm_rate = note_rate(mon, 4.0)

    # a flick to high arousal: the status on the page follows within 300 ms
    t_up = drag(page, [calm, excited])
    t_target = time.monotonic() - t_up + shows(page, "s-target", *excited, 1.0, calm, 2000)
    t_quarter = time.monotonic() - t_up + shows(page, "s-va", *excited, 0.25, calm, 2000)
    t_half = time.monotonic() - t_up + shows(page, "s-va", *excited, 0.5, calm, 3000)
    t_most = time.monotonic() - t_up + shows(page, "s-va", *excited, 0.9, calm, 5000)
    excited_rate = note_rate(mon, 4.0)

    # a lane change from OSC shows on the page
    SimpleUDPClient("127.0.0.1", osc_port).send_message("/moodlane/va", [-0.5, 0.5])
    t_osc = shows(page, "s-target", -0.5, 0.5, 1.0, excited, 2000)

    # record a lane by hand and save it
    page.click("#rec")
    drag(page, line((-0.5, 0.5), (-0.6, -0.6), 8) + line((-0.6, -0.6), (0.7, 0.2), 8), step_s=0.08)
    page.click("#rec")
    with page.expect_download() as dl:
        page.click("#save")
    lane = tmp_path / "lane.json"
    dl.value.save_as(lane)
    shot = tmp_path / "surface.png"
    page.screenshot(path=str(shot))
    if os.environ.get("MOODLANE_SCREENSHOT"):
        shutil.copy(shot, os.environ["MOODLANE_SCREENSHOT"])
    ctx.close()

    with capsys.disabled():
        print(
            f"\nweb pad -> status: target shown after {t_target * 1000:.0f} ms, smoothed value 25/50/90% of the way after "
            f"{t_quarter * 1000:.0f}/{t_half * 1000:.0f}/{t_most * 1000:.0f} ms (smoothing 0.3 s); OSC -> page {t_osc * 1000:.0f} ms; "
            f"notes/s at arousal -0.8: {calm_rate:.1f}, at +0.9: {excited_rate:.1f}"
        )
    assert not errors, errors
    # the target at once; the smoothed value (time constant 0.3 s) well on its way
    assert t_target <= 0.3 and t_quarter <= 0.3 and t_osc <= 0.3, (t_target, t_quarter, t_osc)
    assert excited_rate >= 1.3 * calm_rate > 0, (calm_rate, excited_rate)

    doc = json.loads(lane.read_text())
    assert doc["format"] == "moodlane.automation" and doc["unit"] == "beats" and doc["tempo"] == TEMPO
    pts = doc["points"]
    assert len(pts) >= 10 and pts[0]["time"] == 0
    assert min(p["arousal"] for p in pts) < -0.5 and max(p["valence"] for p in pts) > 0.6
    out = tmp_path / "bounce.mid"
    code, _, err = run_cli(["render", "--automation", str(lane), "-o", str(out), "-q"], capsys)
    assert code == 0, err
    assert out.stat().st_size > 100
    assert Path(shot).stat().st_size > 10_000
