"""`serve --web`: the page, its WebSocket on the OSC control path, and bad input."""

import asyncio
import json
import math
import os
import random
import threading
import time

import numpy as np
import pytest

aiohttp = pytest.importorskip("aiohttp", reason="serve --web needs aiohttp (a base dependency)")

from pythonosc.udp_client import SimpleUDPClient  # noqa: E402

from moodlane.daw_bridge.bench import _rss_mb as rss_mb  # noqa: E402
from moodlane.daw_bridge.osc import free_udp_port  # noqa: E402
from moodlane.daw_bridge.serve import ServeOptions, Server  # noqa: E402
from moodlane.daw_bridge.web import WebOptions, levels, parse_message  # noqa: E402
from moodlane.engine.mock import MockGenerator  # noqa: E402
from tests.conftest import run_cli  # noqa: E402


def start(web: WebOptions = WebOptions(port=0), **kw) -> Server:
    opts = ServeOptions(osc_port=free_udp_port(), midi=False, status_line=False, web=web, **kw)
    srv = Server(opts, MockGenerator()).start()
    threading.Thread(target=srv.run, daemon=True).start()
    assert srv.web is not None, srv.unavailable
    return srv


@pytest.fixture
def server():
    srv = start()
    yield srv
    srv.stop()


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


async def frames(ws, n: int, kind: str = "status") -> list[dict]:
    out = []
    while len(out) < n:
        m = await ws.receive_json(timeout=5)
        if m["type"] == kind:
            out.append(m)
    return out


def test_page_and_assets_are_served_from_the_package(server):
    async def go():
        async with aiohttp.ClientSession() as s:
            async with s.get(server.web.url) as r:
                assert r.status == 200 and "text/html" in r.headers["Content-Type"]
                assert 'id="pad"' in await r.text()
                assert "default-src 'self'" in r.headers["Content-Security-Policy"]
            for name, kind in (("app.js", "javascript"), ("style.css", "css")):
                async with s.get(server.web.url + name) as r:
                    assert r.status == 200 and kind in r.headers["Content-Type"]
            async with s.get(server.web.url + "..%2Fweb.py") as r:
                assert r.status == 404
            async with s.get(server.web.url + "nothing.js") as r:
                assert r.status == 404

    run(go())


def test_pad_messages_take_the_osc_path_with_its_checks(server):
    """What the page sends lands on the same control, through the same handlers: values
    set, out-of-range ones clamped, NaN and wrong types dropped and counted, unknown
    addresses counted, and the feedback destination left alone."""
    stats = server.router.stats

    async def go():
        async with aiohttp.ClientSession() as s, s.ws_connect(server.web.url + "ws") as ws:
            hello = await ws.receive_json()
            assert hello["type"] == "hello" and hello["engine"] == "mock"
            assert {"tender", "angry"} <= {p["name"] for p in hello["presets"]}
            assert hello["modes"] == ["midi", "audio", "both"]
            await ws.send_json({"address": "/moodlane/va", "args": [0.5, -0.25]})
            await asyncio.sleep(0.2)
            assert server.control.target().valence == 0.5 and server.control.target().arousal == -0.25
            assert server.control.last_event.source == "web /moodlane/va"
            clamped = stats.clamped
            await ws.send_json({"address": "/moodlane/arousal", "args": [7.0]})
            await asyncio.sleep(0.2)
            assert server.control.target().arousal == 1.0 and stats.clamped == clamped + 1
            dropped = stats.dropped
            await ws.send_str('{"address": "/moodlane/valence", "args": [NaN]}')  # JSON as Python reads it
            await ws.send_json({"address": "/moodlane/valence", "args": ["loud"]})
            await asyncio.sleep(0.2)
            assert stats.dropped == dropped + 2 and server.control.target().valence == 0.5
            unknown = stats.unknown
            await ws.send_json({"address": "/moodlane/nothing", "args": []})
            await ws.send_json({"address": "/moodlane/preset", "args": ["angry"]})
            await ws.send_json({"address": "/moodlane/tempo", "args": [90]})
            await asyncio.sleep(0.2)
            assert stats.unknown == unknown + 1
            assert server.control.preset == "angry" and server.control.tempo == 90.0
            assert server.router.last_sender is None  # OSC feedback still goes to OSC senders

    run(go())


def test_status_frames_carry_the_osc_status_and_show_osc_changes(server):
    async def go():
        async with aiohttp.ClientSession() as s, s.ws_connect(server.web.url + "ws") as ws:
            SimpleUDPClient("127.0.0.1", server.opts.osc_port).send_message("/moodlane/va", [-0.75, 0.5])
            await asyncio.sleep(0.3)
            (m,) = await frames(ws, 1)
            assert m["target"] == [-0.75, 0.5]
            assert set(m["status"]) == set(server.status())  # the dict /moodlane/status sends, key for key
            assert -0.75 <= m["status"]["va"][0] < 0.0 and 0.0 < m["status"]["va"][1] <= 0.5  # smoothed towards it
            t = [m["t"] for m in await frames(ws, 6)]
            assert 0.03 < (t[-1] - t[0]) / 5 < 0.1  # about 20 frames a second

    run(go())


def test_cross_origin_foreign_host_and_extra_clients_are_refused():
    srv = start(WebOptions(port=0, max_clients=2))
    url = srv.web.url

    async def go():
        async with aiohttp.ClientSession() as s:
            with pytest.raises(aiohttp.WSServerHandshakeError) as e:
                await s.ws_connect(url + "ws", headers={"Origin": "http://evil.example"})
            assert e.value.status == 403
            host = url.split("/")[2]
            async with s.ws_connect(url + "ws", headers={"Origin": f"http://{host}"}) as ok:  # the page's own origin
                assert (await ok.receive_json())["type"] == "hello"
            async with s.get(url, headers={"Host": "attacker.example:9080"}) as r:  # DNS rebinding
                assert r.status == 403 and "loopback" in await r.text()
            a = await s.ws_connect(url + "ws")
            b = await s.ws_connect(url + "ws")
            with pytest.raises(aiohttp.WSServerHandshakeError) as e:
                await s.ws_connect(url + "ws")
            assert e.value.status == 503
            await a.close()
            await b.close()
            await asyncio.sleep(0.1)
            async with s.ws_connect(url + "ws") as c:  # room again
                assert (await c.receive_json())["type"] == "hello"
        assert srv.web.stats.refused_clients >= 1 and srv.web.stats.refused_origin == 2

    try:
        run(go())
    finally:
        srv.stop()


def test_a_non_loopback_page_needs_its_token(capsys):
    srv = start(WebOptions(host="0.0.0.0", port=0))
    try:
        token = srv.web.token
        assert token and len(token) >= 16 and f"token={token}" in srv.web.url
        lines = srv.startup_report()
        assert any("warning" in line and "0.0.0.0" in line for line in lines)
        base = f"http://127.0.0.1:{srv.web.address[1]}/"

        async def go():
            async with aiohttp.ClientSession() as s:
                async with s.get(base) as r:
                    assert r.status == 403 and "token" in await r.text()
                async with s.get(base + "?token=wrong") as r:
                    assert r.status == 403
                async with s.get(base + f"?token={token}") as r:
                    assert r.status == 200
                with pytest.raises(aiohttp.WSServerHandshakeError):
                    await s.ws_connect(base + "ws")
                async with s.ws_connect(base + f"ws?token={token}") as ws:
                    assert (await ws.receive_json())["type"] == "hello"

        run(go())
        assert srv.web.stats.refused_token == 3
    finally:
        srv.stop()


def test_floods_oversized_and_binary_frames_are_dropped_not_fatal(server):
    stats = server.web.stats

    async def go():
        async with aiohttp.ClientSession() as s:
            async with s.ws_connect(server.web.url + "ws") as ws:
                await ws.receive_json()
                for i in range(2000):  # a flood far over 200 a second
                    await ws.send_json({"address": "/moodlane/arousal", "args": [(i % 10) / 10]})
                await ws.send_bytes(b"\x00\x01")
                await asyncio.sleep(0.5)
                errors = []
                until = time.monotonic() + 1.0
                while time.monotonic() < until:  # status frames keep coming: read for a second
                    m = await ws.receive_json(timeout=1)
                    if m["type"] == "error":
                        errors.append(m["error"])
                assert 1 <= len(errors) <= 3  # one answer a second, not one per message
            assert stats.rate_limited > 1000 and stats.messages >= 100
            async with s.ws_connect(server.web.url + "ws") as ws:
                await ws.receive_json()
                await ws.send_str("x" * 10_000)  # over max_message
                m = await ws.receive(timeout=5)
                while m.type == aiohttp.WSMsgType.TEXT:
                    m = await ws.receive(timeout=5)
                assert m.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
                assert ws.close_code == 1009
            async with s.ws_connect(server.web.url + "ws") as ws:  # still serving
                await ws.receive_json()
                await ws.send_json({"address": "/moodlane/valence", "args": [-0.5]})
                await asyncio.sleep(0.2)
        assert server.control.target().valence == -0.5
        assert stats.oversized == 1 and stats.malformed >= 1

    run(go())


def test_parse_message_names_each_problem():
    assert parse_message('{"address": "/moodlane/va", "args": [0.1, 2]}') == ("/moodlane/va", [0.1, 2])
    assert parse_message('{"address": "/moodlane/play"}') == ("/moodlane/play", [])
    for bad, words in [
        ("[", "not JSON"),
        ("[1, 2]", "expected"),
        ('{"address": "/other/va"}', "/moodlane/"),
        ('{"address": "/moodlane/va", "args": {"v": 1}}', "list"),
        ('{"address": "/moodlane/va", "args": [true]}', "numbers or strings"),
        ('{"address": "/moodlane/va", "args": [[1]]}', "numbers or strings"),
        ('{"address": "/moodlane/va", "args": [1e30, 99999999999]}', "32 bits"),
        ('{"address": "/moodlane/va", "args": [0, 0, 0, 0, 0, 0, 0, 0, 0]}', "at most 8"),
        ("[" * 100_000 + "]" * 100_000, "not JSON"),
    ]:
        with pytest.raises(ValueError, match=words):
            parse_message(bad)


def test_levels_of_a_sine_put_its_band_on_top():
    sr = 48000
    x = (0.5 * np.sin(2 * math.pi * 1000 * np.arange(2048) / sr)).astype(np.float32)
    lv = levels(x, sr)
    assert -10 < lv["rms_db"] < -8 and -7 < lv["peak_db"] < -5  # 0.5 peak: -6 dB; RMS -9 dB
    top = max(range(len(lv["bands"])), key=lambda i: lv["bands"][i])
    lo, hi = 40 * (sr / 2 / 40) ** (top / 48), 40 * (sr / 2 / 40) ** ((top + 1) / 48)
    assert lo <= 1000 * 1.1 and hi >= 1000 / 1.1
    assert levels(x[:0], sr)["rms_db"] == -120.0


def test_web_options_need_web(capsys):
    code, _, err = run_cli(["serve", "--web-port", "9999", "--duration", "0.1"], capsys)
    assert code == 2 and "--web" in err


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.slow
def test_websocket_fuzz_keeps_fds_and_memory_flat(server):
    """Like the OSC fuzz: many clients, random frames (garbage text, random JSON, deep
    nesting, binary, over-long, valid messages with wild values), sockets dropped
    mid-stream. The server answers a valid message at the end; fds and RSS stay flat."""
    rnd = random.Random(0)
    url = server.web.url
    seconds = float(os.environ.get("MOODLANE_WEB_FUZZ_SECONDS", "6"))

    def frame() -> tuple[str, object]:
        k = rnd.randrange(9)
        if k == 0:
            return "bytes", rnd.randbytes(rnd.randrange(1, 300))
        if k == 1:
            return "str", "".join(chr(rnd.randrange(1, 0x2FFF)) for _ in range(rnd.randrange(1, 200)))
        if k == 2:
            return "str", "[" * rnd.randrange(1, 3000)
        if k == 3:
            return "str", "x" * rnd.randrange(4000, 9000)  # some over the limit: that socket closes
        if k == 4:
            addr = rnd.choice(["/moodlane/va", "/moodlane/valence", "/moodlane/*", "/moodlane/preset", "/moodlane/{a,b}", "/moodlane/["])
            vals = [
                rnd.choice([math.inf, -1e308, 1e308, 3, -7, 0.5, "s" * rnd.randrange(600), None, [], {}]) for _ in range(rnd.randrange(4))
            ]
            return "str", json.dumps({"address": addr, "args": vals})
        if k == 5:
            return "str", json.dumps(rnd.choice([None, 1, "a", [], {}, {"address": 5}, {"address": "/moodlane/va", "args": "x"}]))
        return "str", json.dumps({"address": "/moodlane/va", "args": [rnd.uniform(-2, 2), rnd.uniform(-2, 2)]})

    async def client(s, until: float) -> int:
        sent = 0
        while time.monotonic() < until:
            try:
                async with s.ws_connect(url + "ws") as ws:
                    for _ in range(rnd.randrange(5, 200)):
                        kind, data = frame()
                        await (ws.send_bytes(data) if kind == "bytes" else ws.send_str(data))
                        sent += 1
                        if rnd.random() < 0.02:
                            break  # drop the socket mid-stream
                        if rnd.random() < 0.1:
                            await asyncio.sleep(0)
            except (aiohttp.ClientError, ConnectionError, asyncio.TimeoutError):
                pass  # the server closed an over-long one on us
        return sent

    async def fuzz() -> int:
        async with aiohttp.ClientSession() as s:
            until = time.monotonic() + seconds
            return sum(await asyncio.gather(*[client(s, until) for _ in range(12)]))

    async def alive() -> None:
        async with aiohttp.ClientSession() as s, s.ws_connect(url + "ws") as ws:
            await ws.receive_json()
            await ws.send_json({"address": "/moodlane/va", "args": [0.125, -0.125]})
            await asyncio.sleep(0.3)
            (m,) = await frames(ws, 1)
            assert m["target"] == [0.125, -0.125]

    run(fuzz())  # warm-up: allocator pools, aiohttp's caches
    time.sleep(0.5)
    fds0, rss0 = _fds(), rss_mb()
    sent = run(fuzz())
    time.sleep(1.0)
    fds1, rss1 = _fds(), rss_mb()
    run(alive())
    st = server.web.stats
    print(f"\nWebSocket fuzz: {sent} frames from 12 clients in {seconds:.0f} s; fds {fds0} -> {fds1}, RSS {rss0:.1f} -> {rss1:.1f} MB")
    print(" ", st.counters())
    assert sent > 1000
    assert fds1 <= fds0 + 4, (fds0, fds1)
    assert rss1 - rss0 < 20, (rss0, rss1)
    assert st.clients == 0 or st.clients <= 1
    assert st.malformed > 0 and st.oversized > 0 and st.messages > 0
    assert server.scheduler.error is None


def test_web_client_sends_as_the_page_does(server):
    from moodlane.daw_bridge.web import WebClient

    c = WebClient(server.web.url)
    try:
        c.send("/moodlane/va", [-0.5, 0.25])
        deadline = time.monotonic() + 2
        while server.control.target().valence != -0.5 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        c.close()
    assert (server.control.target().valence, server.control.target().arousal) == (-0.5, 0.25)
    assert server.control.last_event.source == "web /moodlane/va"
