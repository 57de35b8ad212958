"""The live scheduler: the engine's session loop run against a clock, ahead of the play head.

A generator thread keeps `lookahead_beats` of music generated ahead of the play head
(the same `engine.session.Session` as offline render, so the same emotions and seed give
the same notes). Bars are cheap to make (tens of ms), so when the DAW moves a lane the
scheduler rolls back the bars that have not started yet and makes them again with the new
emotion: content follows from the next bar line, not after the whole lookahead. Between
bar lines, arousal acts at once as expression (note velocity, CC 11) so the change is
heard at the next note. Sinks (MIDI port, audio stream) each run their own thread or
callback and never wait on the generator.
"""

from __future__ import annotations

import copy
import heapq
import itertools
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from daw_bridge.clock import Clock
from daw_bridge.control import LiveControl
from engine.chunk import Chunk, Generator
from engine.session import EmotionSource, Session
from engine.symbolic.dynamics import scale_velocity

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LiveConfig:
    lookahead_beats: float = 2.0  # music kept ready ahead of the play head
    regenerate_distance: float = 0.1  # VA distance that makes queued bars stale
    expression: bool = True  # arousal scales velocity and sends CC 11 between bar lines
    expression_depth: float = 0.8  # velocity x 2**(depth * (a_now - a_bar))


@dataclass(order=True)
class NoteEvent:
    beat: float
    order: int
    kind: int = field(compare=False)  # 1 note-on, 0 note-off
    pitch: int = field(compare=False)
    velocity: int = field(compare=False)
    chunk: int = field(compare=False)
    arousal: float = field(compare=False)


_order = itertools.count()


def chunk_events(chunk: Chunk, start_beat: float) -> list[NoteEvent]:
    """Note-ons and their note-offs in absolute beats (offs sort before ons at a tie)."""
    ev = []
    a = chunk.emotion.arousal
    for s, d, p, v in zip(chunk.notes.start, chunk.notes.duration, chunk.notes.pitch, chunk.notes.velocity):
        on = start_beat + float(s)
        ev.append(NoteEvent(on, next(_order), 1, int(p), int(v), chunk.bar, a))
        ev.append(NoteEvent(on + float(d) - 1e-6, next(_order), 0, int(p), 0, chunk.bar, a))
    return ev


class EventQueue:
    """A heap of note events one sink consumes; the scheduler adds and cancels."""

    def __init__(self) -> None:
        self._heap: list[NoteEvent] = []
        self.cond = threading.Condition()

    def push(self, events: list[NoteEvent]) -> None:
        with self.cond:
            for e in events:
                heapq.heappush(self._heap, e)
            self.cond.notify_all()

    def cancel_from(self, chunk: int) -> None:
        """Drop events of bars >= chunk whose note has not started (their offs too)."""
        with self.cond:
            self._heap = [e for e in self._heap if e.chunk < chunk]
            heapq.heapify(self._heap)

    def clear(self) -> None:
        with self.cond:
            self._heap.clear()

    def peek(self) -> NoteEvent | None:
        return self._heap[0] if self._heap else None

    def pop(self) -> NoteEvent:
        return heapq.heappop(self._heap)

    def due(self, beat: float) -> list[NoteEvent]:
        out = []
        with self.cond:
            while self._heap and self._heap[0].beat < beat:
                out.append(heapq.heappop(self._heap))
        return out

    def __len__(self) -> int:
        return len(self._heap)


def _clone(state: object) -> object:
    return state.clone() if hasattr(state, "clone") else copy.deepcopy(state)


class LiveScheduler:
    def __init__(
        self,
        generator: Generator,
        source: EmotionSource,
        clock: Clock,
        queues: list[EventQueue],
        seed: int = 0,
        config: LiveConfig = LiveConfig(),
    ) -> None:
        self.generator = generator
        self.source = source
        self.clock = clock
        self.queues = queues
        self.seed = seed
        self.config = config
        self.session = Session(generator, source, seed, qpm=clock.tempo)
        # (bar, start beat, state before it, chunk) for bars not yet played: what a rollback
        # needs. Played bars are dropped at once (a state holds the whole KV cache).
        self.history: deque[tuple[int, float, object, Chunk]] = deque()
        self.generated: deque[Chunk] = deque(maxlen=4096)  # recent chunks (tests, bench)
        self.regenerations = 0
        self.gen_times: deque[float] = deque(maxlen=256)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    @property
    def ahead_beats(self) -> float:
        return self.session.beat - self.clock.beat()

    def reset(self, beat: float = 0.0) -> None:
        """New transport start: forget queued music, begin a fresh session at `beat`."""
        for q in self.queues:
            q.clear()
        self.session = Session(self.generator, self.source, self.seed, qpm=self.clock.tempo)
        self.session.beat = beat
        self.history.clear()

    def step(self) -> int:
        """One pass: roll back stale bars, then fill the lookahead. Returns bars made."""
        now = self.clock.beat()
        while self.history and self.history[0][1] + self.history[0][3].beats <= now:
            self.history.popleft()
        self._rollback_stale(now)
        made = 0
        while self.session.beat < now + self.config.lookahead_beats:
            before = _clone(self.session.state)
            start = self.session.beat
            t = time.perf_counter()
            chunk = self.session.next_chunk()
            self.gen_times.append(time.perf_counter() - t)
            self.history.append((chunk.bar, start, before, chunk))
            self.generated.append(chunk)
            ev = chunk_events(chunk, start)
            for q in self.queues:
                q.push(ev)
            made += 1
        return made

    def _rollback_stale(self, now: float) -> None:
        if not isinstance(self.source, LiveControl):
            return  # a timeline (automation file) never goes stale
        target = self.source.current()
        # a bar is remade only if the new one can be ready before its downbeat
        margin_s = 0.02 + 2.0 * max(self.gen_times, default=0.05)
        horizon = self.clock.beat(self.clock.now() + margin_s)
        for i, (bar, start, state, chunk) in enumerate(self.history):
            if start <= max(now, horizon):
                continue  # sounding, or too close to its downbeat: keep it
            e = chunk.emotion
            if max(abs(e.valence - target.valence), abs(e.arousal - target.arousal)) < self.config.regenerate_distance:
                continue
            for q in self.queues:
                q.cancel_from(bar)
            self.session.state = state
            self.session.beat = start
            while len(self.history) > i:
                self.history.pop()
            self.regenerations += 1
            return

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                if self.clock.running:
                    self.step()
                self._stop.wait(0.01)
        except BaseException as e:  # surfaced by serve, which silences the outputs
            self.error = e
            log.exception("generator thread failed")

    def start(self) -> LiveScheduler:
        self._thread = threading.Thread(target=self._run, name="generator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def expressive_velocity(velocity: int, bar_arousal: float, now_arousal: float, depth: float) -> int:
    """A note made for `bar_arousal`, played when the lane is at `now_arousal`."""
    return int(scale_velocity(velocity, now_arousal - bar_arousal, depth))


def expression_cc(arousal: float) -> int:
    """CC 11 (expression) for an arousal: 64 at the calmest, 127 at the most excited."""
    return int(round(64 + 63 * (arousal + 1) / 2))


class MidiSink:
    """Sends due note events to a `MidiOut` on its own thread, on time (sleep, then a short
    spin for the last millisecond). Records timing error and control-to-note latency."""

    def __init__(self, out, clock: Clock, control: LiveControl | None = None, config: LiveConfig = LiveConfig()) -> None:
        self.out = out
        self.clock = clock
        self.control = control
        self.config = config
        self.queue = EventQueue()
        self.timing_error_ms: deque[float] = deque(maxlen=20_000)
        self.latency_ms: deque[float] = deque(maxlen=1000)
        self.sent_on = 0
        self._seen_version = control.version if control else 0
        self._last_cc: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _expression(self, ev: NoteEvent) -> int:
        if not (self.config.expression and self.control is not None):
            return ev.velocity
        now = self.control.current().arousal
        return expressive_velocity(ev.velocity, ev.arousal, now, self.config.expression_depth)

    def _send_cc11(self) -> None:
        if not (self.config.expression and self.control is not None):
            return
        v = expression_cc(self.control.current().arousal)
        if v != self._last_cc:
            self.out.cc(11, v)
            self._last_cc = v

    def _run(self) -> None:
        q = self.queue
        next_cc = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_cc:
                self._send_cc11()
                next_cc = now + 0.02
            if not self.clock.running:
                time.sleep(0.005)
                continue
            with q.cond:
                ev = q.peek()
                if ev is None:
                    q.cond.wait(0.01)
                    continue
                due = self.clock.time_of(ev.beat)
                wait = due - time.monotonic()
                if wait > 0.0015:
                    q.cond.wait(min(wait - 0.001, 0.01))
                    continue
            while time.monotonic() < due:  # the last millisecond: spin for accuracy
                pass
            with q.cond:
                if q.peek() is not ev:
                    continue  # cancelled or re-queued meanwhile
                q.pop()
            if ev.kind:
                self.out.note_on(ev.pitch, self._expression(ev))
                self.sent_on += 1
                self._note_latency()
            else:
                self.out.note_off(ev.pitch)
            self.timing_error_ms.append((time.monotonic() - due) * 1000.0)

    def _note_latency(self) -> None:
        c = self.control
        if c is None or c.last_event is None or c.version == self._seen_version:
            return
        self._seen_version = c.version
        self.latency_ms.append((time.monotonic() - c.last_event.t) * 1000.0)

    def start(self) -> MidiSink:
        self._thread = threading.Thread(target=self._run, name="midi-out", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        self.out.panic()
