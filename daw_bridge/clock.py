"""Clock sources: where the play head is, in beats, and when a beat will sound.

One shape for all: an anchor (monotonic time, beat) plus a tempo. The internal clock
re-anchors on tempo changes; the MIDI clock re-anchors on every 24-ppqn tick at a line
fitted through the recent tick times (tempo = its slope), and follows start/stop/continue
and song position pointer as the MIDI 1.0 spec has them.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable


class Clock:
    def __init__(self, tempo: float = 120.0, now: Callable[[], float] = time.monotonic) -> None:
        self.now = now
        self.tempo = float(tempo)
        self.running = False
        self.jumps = 0  # transport starts and position jumps: serve re-places the music on each
        self._t0 = now()
        self._b0 = 0.0
        self._lock = threading.Lock()

    def beat(self, t: float | None = None) -> float:
        t = self.now() if t is None else t
        with self._lock:
            if not self.running:
                return self._b0
            return self._b0 + (t - self._t0) * self.tempo / 60.0

    def time_of(self, beat: float) -> float:
        with self._lock:
            return self._t0 + (beat - self._b0) * 60.0 / self.tempo

    def _anchor(self, t: float, b: float) -> None:
        self._t0, self._b0 = t, b

    def start(self, beat: float = 0.0, preroll_s: float = 0.0) -> None:
        """Run from `beat`, reached `preroll_s` from now (time for the first bar to be made)."""
        with self._lock:
            self._anchor(self.now() + preroll_s, beat)
            self.running = True
            self.jumps += 1

    def stop(self) -> None:
        b = self.beat()
        with self._lock:
            self.running = False
            self._b0 = b

    def resume(self) -> None:
        with self._lock:
            self._anchor(self.now(), self._b0)
            self.running = True

    def set_tempo(self, bpm: float) -> None:
        t = self.now()
        b = self.beat(t)
        with self._lock:
            self._anchor(t, b)
            self.tempo = float(bpm)


class MidiClock(Clock):
    """Follows a MIDI clock master: 0xF8 ticks (24 per quarter), 0xFA start, 0xFB
    continue, 0xFC stop, 0xF2 song position pointer (in 16ths).

    Position follows the MIDI 1.0 spec (System Real Time messages): Start and Continue do
    not move the play head themselves; the slave starts on the FIRST Timing Clock that
    follows them. After Start that clock is the downbeat (tick 0, beat 0.0); after
    Continue it is the tick after the last one played, or the Song Position Pointer's
    position if one came while stopped. Each later clock advances one tick. Counting the
    first clock after Start as tick 1 put the whole grid one tick early (25 ms at 100 BPM).

    Tempo and phase come from a least-squares line through the receive times of the last
    `window` ticks (time = a + b * tick count), not from the spacing of the last 25 ticks
    and the receive time of the last one: those times jitter by a whole audio period
    (rtmidi's JACK backend hands over every event of a period when the period is processed,
    whatever its frame offset in it; mido passes on no timestamp), plus thread scheduling
    delays. Measured on a JACK dummy server at 100 BPM, 512 frames at 48 kHz: receive
    times scatter +-5.3 ms around the master's grid, and a 25-tick tempo read 98.7 to
    100.9 BPM. A line through 8 beats of ticks averages that out (read 99.98 to 100.04
    BPM there; with +-5 ms of simulated jitter, tempo within 0.06 % and phase within
    1.6 ms); the play head is anchored at the line's time of each tick.
    Late outliers (a callback held up by the GIL) are left out of the fit. Lost ticks (a
    JACK cycle skipped under load, a byte lost on a cable: seen once in CI, where the grid
    then sat a tick, 25 ms, late) show as ticks that jump off the line by a whole number of
    ticks and stay there without drifting: after LOST_TICKS (8) such ticks they are counted and
    the play head moves on over them (`lost_ticks`). A tempo step drifts off the line
    instead, and is never taken for a loss (simulated steps of -50 % to +20 % at 90 to 140
    BPM, +-5 ms jitter); where the jitter reaches half a tick (+-5 ms at 120 BPM and up)
    losses cannot be told from jitter and are not counted. A tempo step
    (ticks ever further off the line, on one side) restarts the fit; a phase shift (ticks
    off the line by about the same amount, tick after tick) restarts it at the same tempo;
    a ramp (the newest ticks' median error beyond the jitter) shrinks it to its newer half,
    and a significant bend is fitted by a parabola. A new fit takes its slope from medians
    (Theil-Sen) until it holds a beat of ticks. A gap in the ticks, Start and Continue
    restart it too.

    No constant latency is compensated: on JACK the period-wide jitter is symmetric once
    averaged (the input is delivered up to a period early relative to its frame, the
    output goes out at the start of the next period), and the measured mean offset of
    MoodLane's note-ons from the master's 16ths is -1.2 to +0.5 ms at 100, 120 and 140 BPM
    (`python -m moodlane.daw_bridge.clock_check`). The averaging needs the ticks to fall at varied
    places in the period; a tempo whose tick is a whole number of periods (117.1875 BPM at
    48 kHz / 512) gets no averaging, and its notes sit up to a period early.
    """

    PPQN = 24
    WINDOW = 192  # ticks in the fit: 8 beats (4.8 s at 100 BPM)
    MIN_BPM, MAX_BPM = 20.0, 400.0
    MIN_FIT = 6  # ticks before the slope is trusted; until then the tempo stays
    CHANGE_TICKS = 3  # this many ticks ever further off the line on one side: a tempo step
    SHIFT_TICKS = 6  # this many off the line on one side, all about as far: a phase shift
    TREND_TICKS = 8  # the median prediction error of this many ticks tells a tempo ramp ...
    MIN_WINDOW = 24  # ... which shrinks the fit to its newer half, down to one beat
    GAP_S = 1.0  # no tick for this long: the master paused its clock; restart the fit
    LOST_TICKS = 8  # this many ticks in a row late by the same whole number of ticks: lost ticks

    def __init__(self, tempo: float = 120.0, now: Callable[[], float] = time.monotonic, window: int = WINDOW) -> None:
        super().__init__(tempo, now)
        self.ticks = 0  # song position of the last tick played, in ticks (24 a beat)
        self._next = 0  # song position the next tick will have, once running
        self._armed = False  # Start/Continue seen: the next clock starts the play head
        self._window = max(3, int(window))
        self._count = 0  # ticks received, running or not (the fit's x axis)
        self._fit: deque[tuple[int, float]] = deque(maxlen=self._window)  # (count, receive time)
        self._est: tuple[float, float] | None = None  # (fitted time of the newest tick, s per tick)
        self._resid_scale = 0.0  # robust spread of the fit's residuals (s)
        self._off_line = 0  # signed run of ticks off the line on the same side
        self._run_line = (0.0, 0.0, 0)  # the line before the run: (time at tick, s per tick, tick)
        self._run: deque[float] = deque(maxlen=self.SHIFT_TICKS)  # |errors| from it, newest ticks
        self._hold_tempo = False  # after a phase shift: the slope stays until the fit holds a beat
        self._pred_err: deque[float] = deque(maxlen=self.TREND_TICKS)  # newest prediction errors (s)
        self._lost_run: list[tuple[int, float]] = []  # (whole ticks late, error) of the newest ticks
        self._on_line = True  # the last tick was on the fitted line
        self._last_err: deque[float] = deque(maxlen=self.TREND_TICKS)  # the newest ticks' errors (s)
        self._before: list[float] = []  # those errors when the run in `_lost_run` began
        self.lost_ticks = 0  # ticks that never came (counted from the line): diagnostics
        self.restarts = 0  # fit restarts (tempo steps and ramps, phase shifts, gaps): diagnostics
        self.source = "midi clock"

    # -- tempo and phase from the tick times ----------------------------------------------
    @staticmethod
    def _line(pts: list[tuple[float, float]]) -> tuple[float, float]:
        """Least squares y = a + b x; returns (a, b)."""
        n = len(pts)
        mx = sum(x for x, _ in pts) / n
        my = sum(y for _, y in pts) / n
        sxx = sum((x - mx) ** 2 for x, _ in pts)
        sxy = sum((x - mx) * (y - my) for x, y in pts)
        b = sxy / sxx if sxx > 0 else 0.0
        return my - b * mx, b

    @staticmethod
    def _bend(pts: list[tuple[float, float]], a: float, b: float) -> tuple[float, float]:
        """A tempo ramp bends the tick times into a curve, which a line lags. Fit a parabola
        as well (orthogonal polynomials) and take it, at the newest tick (x = 0), only where
        its bend is significant (t > 6): at a steady tempo the line is kept, and its
        lower noise with it."""
        n = len(pts)
        mx = sum(x for x, _ in pts) / n
        xs = [x - mx for x, _ in pts]
        s2 = sum(x * x for x in xs)
        g = sum(x**3 for x in xs) / s2
        h = s2 / n
        p2 = [x * x - g * x - h for x in xs]
        s22 = sum(p * p for p in p2)
        if s22 <= 0:
            return a, b
        c = sum(p * y for p, (_, y) in zip(p2, pts)) / s22
        res2 = sum((y - a - b * x - c * p) ** 2 for p, (x, y) in zip(p2, pts))
        se = (res2 / (n - 3) / s22) ** 0.5
        if se <= 0 or abs(c) < 6.0 * se:
            return a, b
        x0 = -mx  # the newest tick, centred
        return a + c * (x0 * x0 - g * x0 - h), b + c * (2.0 * x0 - g)

    def _estimate(self) -> tuple[float, float] | None:
        """(fitted receive time of the newest tick, seconds per tick), or None when empty."""
        if not self._fit:
            return None
        k0, t0 = self._fit[-1]
        pts = [(float(k - k0), t - t0) for k, t in self._fit]  # small numbers: no cancellation
        n = len(pts)
        spt = 60.0 / (self.tempo * self.PPQN)
        if n < self.MIN_FIT or (self._hold_tempo and n < self.MIN_WINDOW):
            # too few ticks for a slope (3 ticks jittered by a period can read 30% off), or
            # a phase shift: keep the tempo known so far and fit only the phase
            return t0 + _median([y - spt * x for x, y in pts]), spt
        if n < self.MIN_WINDOW:
            # a fresh fit (after Start or a tempo change): Theil-Sen, the median of the slopes
            # between pairs, which a late callback or two cannot pull
            b = _median([(pts[j][1] - pts[i][1]) / (pts[j][0] - pts[i][0]) for i in range(n) for j in range(i + 1, n)])
            a = _median([y - b * x for x, y in pts])
            self._resid_scale = 1.4826 * _median([abs(y - a - b * x) for x, y in pts])
        else:
            a, b = self._line(pts)
            # a callback held up (GIL, scheduler) is late, never early: drop the late outliers.
            # 3 x the robust spread keeps every point of a uniform period-wide jitter. Twice:
            # the outliers tilt the first line, and the spread and cut measured from it.
            for _ in range(2):
                res = [y - (a + b * x) for x, y in pts]
                med = _median(res)
                scale = 1.4826 * _median([abs(r - med) for r in res])
                cut = med + max(3.0 * scale, 0.002)
                if len(kept := [p for p, r in zip(pts, res) if r <= cut]) == n:
                    break
                a, b = self._line(kept)
            # the detectors' yardstick: the MAD alone swings by a third from one window to the
            # next under uniform (period-wide) jitter; the kept points' deviation does not
            rk = [y - (a + b * x) for x, y in kept]
            self._resid_scale = max(scale, (sum(r * r for r in rk) / (len(rk) - 2)) ** 0.5)
            if len(kept) >= 2 * self.MIN_WINDOW:
                a, b = self._bend(kept, a, b)
        if b <= 0 or not self.MIN_BPM <= 60.0 / (b * self.PPQN) <= self.MAX_BPM:
            return t0 + _median([y - spt * x for x, y in pts]), spt
        return t0 + a, b

    def _restart_fit(self, keep: int = 0, count: bool = True, hold_tempo: bool = False) -> None:
        pts = list(self._fit)[-keep:] if keep else []
        self._fit.clear()
        self._fit.extend(pts)
        self._hold_tempo = hold_tempo
        self._est = self._estimate()
        self._off_line = 0
        self._pred_err.clear()
        self._lost_run.clear()
        self.restarts += count

    def _observe(self, t: float) -> tuple[tuple[float, float], int]:
        """Adds a tick received at `t`; returns ((phase time of this tick, seconds per tick),
        ticks found lost just before it)."""
        spt = 60.0 / (self.tempo * self.PPQN)
        if self._fit:
            if t - self._fit[-1][1] > max(self.GAP_S, 8 * spt):
                self._restart_fit()
            elif len(self._fit) >= self.MIN_WINDOW and self._est is not None:  # on the predicted line?
                t_last, spt_fit = self._est
                r = t - (t_last + spt_fit * (self._count + 1 - self._fit[-1][0]))
                # a tempo step: CHANGE_TICKS ticks in a row far off the line on one side, and
                # further off it each tick (callbacks held up and then let through together
                # are the other way round: the first is the latest)
                thr = max(3.0 * self._resid_scale, 0.002)
                side = 1 if r > thr else -1 if r < -thr else 0
                if side and side * self._off_line > 0:
                    self._off_line += side
                else:  # a new run: its errors are measured against the line before it
                    self._off_line, self._run_line = side, (t_last, spt_fit, self._fit[-1][0])
                    self._run.clear()
                # lost ticks (a JACK cycle skipped under load, a byte dropped on a DIN cable):
                # the ticks come in on the line, but whole ticks late, by the same number each
                # time. Count the missing ones and relabel the run instead of re-phasing the
                # grid by a tick (the grid then sat 25 ms late at 100 BPM). A burst of held-up
                # callbacks is late by fewer ticks each time: not a loss.
                # A tempo step drifts off the line; a loss jumps off it from one tick to the next.
                lost = round(r / spt_fit)
                whole = lost >= 1 and side > 0 and thr < 0.55 * spt_fit  # else a tick and the jitter overlap
                if whole and (self._lost_run[-1][0] == lost if self._lost_run else self._on_line):
                    if not self._lost_run:  # where the ticks sat before the jump
                        self._before = list(self._last_err)
                    self._lost_run.append((lost, r))
                else:
                    self._lost_run.clear()
                self._on_line = not side
                self._last_err.append(r)
                n_lost = len(self._lost_run)
                if n_lost == self.LOST_TICKS and self._whole_ticks_late(lost * spt_fit):
                    self._relabel(lost)
                    return self._add(t), lost
                t0, s0, k0 = self._run_line
                r0 = abs(t - (t0 + s0 * (self._count + 1 - k0)))
                self._run.append(r0)
                run = abs(self._off_line)
                step = run >= self.CHANGE_TICKS and r0 > self._run[0]
                # a phase shift: the ticks moved, and stay moved by the same amount (a master
                # whose ticks sit on a period boundary slips to the period before: receive
                # times jump a period). Callbacks held up by a busy GIL are off by amounts
                # that vary from tick to tick: not a shift.
                shift = run >= self.SHIFT_TICKS and max(self._run) - min(self._run) < 0.2 * min(self._run)
                if not side:  # a ramp drifts off slowly; far-off ticks are the step test's
                    self._pred_err.append(r)
                m = len(self._pred_err)
                mid = sorted(self._pred_err)[m // 4 : m - m // 4]  # trimmed: a late callback or two do not count
                if 0 < n_lost < self.LOST_TICKS:  # maybe lost ticks: the next ticks tell
                    pass
                elif step:
                    self._restart_fit(keep=self.CHANGE_TICKS - 1)  # keep the ticks since the step
                elif shift:  # the tempo holds: fit the phase of the ticks since the shift
                    self._restart_fit(keep=self.SHIFT_TICKS - 1, hold_tempo=True)
                elif (
                    m == self.TREND_TICKS
                    and len(self._fit) > self.MIN_WINDOW
                    and abs(sum(mid) / len(mid)) > max(5.0 * self._resid_scale / m**0.5, 0.001)
                ):  # a ramp, which a line through 8 beats lags: fit the newer half only
                    self._restart_fit(keep=max(self.MIN_WINDOW, len(self._fit) // 2))
        return self._add(t), 0

    def _add(self, t: float) -> tuple[float, float]:
        """The tick received at `t` joins the fit as the next count; returns the new estimate."""
        self._count += 1
        self._fit.append((self._count, t))
        self._est = self._estimate()
        return self._est

    def _whole_ticks_late(self, late: float) -> bool:
        """Do the ticks before the run in `_lost_run` and the run, less `late` seconds, lie on
        one flat line at 0, as lost ticks leave them? A slower tempo's ticks drift off the
        line instead: before the run already, and on through it (a sawtooth, once the run is
        moved back by a tick)."""
        before, run = self._before, [e - late for _, e in self._lost_run]
        if len(before) < self.TREND_TICKS:
            return False
        scale = max(self._resid_scale, 0.0005)

        def flat(errs: list[float]) -> bool:
            n = len(errs)
            a, b = self._line([(float(i), e) for i, e in enumerate(errs)])
            return abs(a + b * (n - 1) / 2.0) < 3.0 * scale / n**0.5 and abs(b * (n - 1)) < 2.5 * scale

        return flat(before) and flat(run) and flat(before + run)

    def _relabel(self, lost: int) -> None:
        """`lost` ticks went missing before the newest LOST_TICKS - 1 ticks in the fit (and
        before the one arriving): move them (and the count) on by `lost`."""
        newest = [self._fit.pop() for _ in range(self.LOST_TICKS - 1)][::-1]
        self._fit.extend((k + lost, t) for k, t in newest)
        self._count += lost
        self._off_line = 0
        self._run.clear()
        self._pred_err.clear()
        self._lost_run.clear()
        self.lost_ticks += lost

    # -- messages -------------------------------------------------------------------------
    def on_message(self, msg_type: str, pos: int = 0, t: float | None = None) -> None:
        """One MIDI real-time message (or song position) received at monotonic time `t`."""
        t = self.now() if t is None else float(t)
        if msg_type == "clock":
            (t_fit, spt), lost = self._observe(t)
            with self._lock:
                self.tempo = 60.0 / (spt * self.PPQN)
                if self._armed:  # the first clock after Start/Continue: the play head starts here
                    self._armed = False
                    self.running = True
                if not self.running:
                    return  # clocks while stopped only tell the tempo
                self._next += lost  # the play head moves on over ticks that never came
                self.ticks = self._next
                self._next += 1
                # the anchor is the fitted time of this tick, not its jittered receive time
                self._anchor(t_fit, self.ticks / self.PPQN)
        elif msg_type == "start":
            with self._lock:
                self.ticks = self._next = 0
                self._armed, self.running = True, False
                self._b0 = 0.0  # beat() says 0.0 until the first clock starts the play head
                self.jumps += 1
            self._restart_fit(count=False)  # a master may re-phase its clock on Start
        elif msg_type == "continue":
            with self._lock:
                self._armed, self.running = True, False
                self._b0 = self._next / self.PPQN
                self.jumps += 1
            self._restart_fit(count=False)
        elif msg_type == "stop":
            with self._lock:
                self._armed = self.running = False
                self._b0 = self._next / self.PPQN  # where Continue will resume
        elif msg_type == "songpos":
            with self._lock:
                self._next = int(pos) * (self.PPQN // 4)  # SPP counts 16ths (6 ticks each)
                if not self.running:
                    self._b0 = self._next / self.PPQN
                else:  # while running (not per spec, some masters do): the next clock is at `pos`
                    self.jumps += 1


def _median(xs: list[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


class ClockUnavailable(RuntimeError):
    """A clock source whose library is not installed."""


class LinkClock(Clock):
    """Ableton Link (through the `aalink` package, optional: `pip install aalink`): tempo
    and beat phase shared with Live, Bitwig and other Link peers on the network. The Link
    session runs on its own asyncio thread; the clock re-anchors to it every 10 ms."""

    def __init__(self, tempo: float = 120.0, quantum: float = 4.0, now: Callable[[], float] = time.monotonic) -> None:
        try:
            import aalink
        except ImportError:
            raise ClockUnavailable("Ableton Link needs the optional package aalink (pip install aalink)") from None
        import asyncio

        super().__init__(tempo, now)
        self.source = "ableton link"
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._closed = False

        async def main() -> None:
            self.link = aalink.Link(tempo, self._loop)
            self.link.quantum = quantum
            self.link.enabled = True
            self._ready.set()
            while not self._closed:
                self._follow()
                await asyncio.sleep(0.01)

        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(main(),), name="link", daemon=True)
        self._thread.start()
        if not self._ready.wait(5):
            raise ClockUnavailable("Ableton Link did not start")

    def _follow(self) -> None:
        t, b, bpm = self.now(), float(self.link.beat), float(self.link.tempo)
        with self._lock:
            self.tempo = bpm
            if self.running:
                self._anchor(t, b)
            else:
                self._b0 = b

    @property
    def peers(self) -> int:
        return int(self.link.num_peers)

    def start(self, beat: float = 0.0, preroll_s: float = 0.0) -> None:
        """Join the shared timeline: the beat is Link's, whatever `beat` asks."""
        with self._lock:
            self.running = True
            self.jumps += 1
        self._follow()

    def set_tempo(self, bpm: float) -> None:
        self._loop.call_soon_threadsafe(setattr, self.link, "tempo", float(bpm))

    def close(self) -> None:
        self._closed = True
        self._thread.join(timeout=2)
