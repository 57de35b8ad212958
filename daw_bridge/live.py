"""The live scheduler: the engine's session loop run against a clock, ahead of the play head.

A generator thread keeps `lookahead_beats` of music generated ahead of the play head (the
same `engine.session.Session` as offline render, so the same emotions and seed give the same
chunks). Chunks hold notes or audio; each sink takes what it can play. When the DAW moves a
lane, the chunks that have not started are rolled back and made again for the new target
(debounced, so a fader sweep does not remake them every few ms): content follows from the
next chunk boundary. Between boundaries, arousal acts at once on note velocity through the
one loudness rule (`engine.symbolic.dynamics`). A generator that falls behind skips or
shortens chunks instead of playing late material as a burst.

Threads: other threads never touch the session; they post commands (reset, sinks) that the
scheduler thread runs at its next pass. Sinks run their own thread or callback, never wait
on the generator, and survive their own errors (caught, counted, restarted).
"""

from __future__ import annotations

import copy
import heapq
import itertools
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from moodlane.daw_bridge.clock import Clock
from moodlane.daw_bridge.control import LiveControl
from moodlane.engine.chunk import AUDIO_CHUNK_BEATS, Chunk, Generator
from moodlane.engine.emotion import Emotion
from moodlane.engine.session import EmotionSource, Session
from moodlane.engine.symbolic.attributes import lead_line
from moodlane.engine.symbolic.dynamics import DEPTH, scale_velocity

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LiveConfig:
    lookahead_beats: float = 2.0  # music kept ready ahead of the play head
    audio_chunk_beats: float = AUDIO_CHUNK_BEATS  # chunk length asked of audio engines, as offline (notes: a bar)
    regenerate_distance: float = 0.1  # target VA distance that makes queued chunks stale
    debounce_s: float = 0.04  # remake once a lane has been still this long ...
    max_wait_s: float = 0.15  # ... or once it has been moving this long
    expression: bool = True  # an arousal change scales the velocity of notes already made
    expression_depth: float = DEPTH  # the same depth as the bar rule: one loudness rule
    late_tolerance_s: float = 0.03  # a note-on later than this is dropped, not played late
    max_events: int = 50_000  # bound of each sink's queue (a stalled sink drops the oldest)


@dataclass(order=True)
class NoteEvent:
    beat: float
    order: int
    kind: int = field(compare=False)  # 1 note-on, 0 note-off
    pitch: int = field(compare=False)
    velocity: int = field(compare=False)
    chunk: int = field(compare=False)
    arousal: float = field(compare=False)
    version: int = field(compare=False, default=0)  # control version the chunk was made under
    lead: bool = field(compare=False, default=False)  # a note of the lead (melody), not the accompaniment


_order = itertools.count()


def chunk_events(chunk: Chunk, start_beat: float, version: int = 0) -> list[NoteEvent]:
    """Note-ons and their note-offs in absolute beats (offs sort before ons at a tie), each
    marked lead or not (`lead_line`: the parts a model with parts wrote, else the bar's skyline)."""
    if chunk.notes is None:
        return []
    ev = []
    a = chunk.emotion.arousal
    n = chunk.notes
    for s, d, p, v, lead in zip(n.start, n.duration, n.pitch, n.velocity, lead_line(n)):
        on, lead = start_beat + float(s), bool(lead)
        ev.append(NoteEvent(on, next(_order), 1, int(p), int(v), chunk.bar, a, version, lead))
        ev.append(NoteEvent(on + float(d) - 1e-6, next(_order), 0, int(p), 0, chunk.bar, a, version, lead))
    return ev


class EventQueue:
    """A bounded heap of note events one sink consumes; the scheduler adds and cancels."""

    def __init__(self, maxlen: int = 50_000) -> None:
        self._heap: list[NoteEvent] = []
        self.cond = threading.Condition()
        self.maxlen = maxlen
        self.overflow = 0

    def push(self, events: list[NoteEvent]) -> None:
        with self.cond:
            for e in events:
                heapq.heappush(self._heap, e)
            if len(self._heap) > self.maxlen:  # a sink that stopped consuming: drop the earliest
                drop = len(self._heap) - self.maxlen  # note-ons, never an off (a sounding note must end)
                ons = sorted(e for e in self._heap if e.kind)[:drop]
                gone = {id(e) for e in ons}
                self._heap = [e for e in self._heap if id(e) not in gone]
                heapq.heapify(self._heap)
                self.overflow += len(ons)
            self.cond.notify_all()

    def cancel_from(self, chunk: int) -> None:
        """Drop events of chunks >= chunk (their notes have not started)."""
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


class ChunkSink(Protocol):
    """What the scheduler feeds: chunks at their start beat; rollbacks; a reset."""

    def schedule(self, chunk: Chunk, start_beat: float, version: int = 0) -> None: ...

    def cancel_from(self, chunk: int) -> None: ...

    def clear(self) -> None: ...

    @property
    def read_ahead_s(self) -> float:
        """How far ahead of its clock the sink commits what it was given (a rollback must
        not touch a chunk inside this horizon)."""
        ...


class ClockedControl:
    """Live control as an emotion timeline: the smoothed value each chunk will meet at its
    downbeat (if the target holds), so chunks made ahead are made for the right moment."""

    def __init__(self, control: LiveControl, clock: Clock) -> None:
        self.control, self.clock = control, clock

    def at(self, beat: float) -> Emotion:
        if not self.clock.running:
            return self.control.current()
        return self.control.predict(max(self.clock.now(), self.clock.time_of(beat)))


def _clone(state: object) -> object:
    return state.clone() if hasattr(state, "clone") else copy.deepcopy(state)


@dataclass
class _Made:
    bar: int
    start: float  # beat
    state: object  # the session state before this chunk (what a rollback restores)
    chunk: Chunk
    target: Emotion | None  # the lane target it was made for (None: a timeline)
    version: int = 0  # the control version it was made under


class LiveScheduler:
    def __init__(
        self,
        generator: Generator,
        source: EmotionSource,
        clock: Clock,
        sinks: list[ChunkSink],
        seed: int = 0,
        config: LiveConfig = LiveConfig(),
        paused: bool = False,
    ) -> None:
        self.generator = generator
        # audio: short chunks, and a lane change remakes even the one that plays (the sink splices it in)
        self.audio_engine = getattr(generator, "kind", "notes") == "audio"
        self.paused = paused  # serve starts paused: the first transport start places the first chunk
        self.control = source if isinstance(source, LiveControl) else None
        self.source = ClockedControl(source, clock) if self.control is not None else source
        self.clock = clock
        self.sinks = list(sinks)
        self.seed = seed
        self.config = config
        self.session = self._new_session(0.0)
        # chunks not yet played: what a rollback needs. Played ones are dropped at once
        # (a state holds the whole KV cache).
        self.history: deque[_Made] = deque()
        self.generated: deque[Chunk] = deque(maxlen=256)  # recent chunks (tests, bench); audio chunks hold PCM: keep few
        self.regenerations = 0
        self.skipped = 0  # chunks skipped because the generator fell behind
        self.gen_times: deque[float] = deque(maxlen=256)
        self.sink_errors = 0  # a sink that raised while given a chunk (counted, never fatal)
        self._commands: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._stale_since: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def _new_session(self, beat: float) -> Session:
        beats = self.config.audio_chunk_beats if self.audio_engine else None
        s = Session(self.generator, self.source, self.seed, qpm=self.clock.tempo, chunk_beats=beats)
        s.beat = beat
        return s

    @property
    def ahead_beats(self) -> float:
        return self.session.beat - self.clock.beat()

    # -- commands from other threads ---------------------------------------------------
    def post(self, command: Callable[[], None]) -> None:
        """Run `command` on the scheduler thread at its next pass (before it generates)."""
        self._commands.put(command)

    def reset(self, beat: float = 0.0) -> None:
        """New transport start: forget queued music, begin a fresh session at `beat`."""
        self.post(lambda: self._reset(beat))

    def pause(self) -> None:
        """Transport stop: forget queued music and make nothing until the next `reset`
        (an external clock may run again before serve has placed the first chunk)."""
        self.post(self._pause)

    def set_sinks(self, sinks: list[ChunkSink]) -> None:
        """Feed these sinks from now on (a sink left out is cleared)."""
        self.post(lambda: self._set_sinks(list(sinks)))

    def _each_sink(self, call: Callable[[ChunkSink], None], sinks: list[ChunkSink] | None = None) -> None:
        """`call` on every sink; a sink that raises is counted and the others still get it."""
        for s in self.sinks if sinks is None else sinks:
            try:
                call(s)
            except Exception as e:
                self.sink_errors += 1
                if self.sink_errors == 1 or self.sink_errors % 100 == 0:
                    log.warning("%s failed %d times (%s: %s)", type(s).__name__, self.sink_errors, type(e).__name__, e)

    def _reset(self, beat: float) -> None:
        self._each_sink(lambda s: s.clear())
        self.session = self._new_session(beat)
        self.history.clear()
        self.paused = False

    def _pause(self) -> None:
        self._each_sink(lambda s: s.clear())
        self.history.clear()
        self.paused = True

    def _set_sinks(self, sinks: list[ChunkSink]) -> None:
        self._each_sink(lambda s: s.clear(), [s for s in self.sinks if s not in sinks])
        added = [s for s in sinks if s not in self.sinks]
        for m in self.history:  # what is already made and not over: a new sink joins mid-chunk
            self._each_sink(lambda s, m=m: s.schedule(m.chunk, m.start, m.version), added)
        self.sinks = sinks

    def _run_commands(self) -> None:
        while True:
            try:
                self._commands.get_nowait()()
            except queue.Empty:
                return

    # -- the pass ----------------------------------------------------------------------
    def step(self) -> int:
        """One pass: commands, then roll back stale chunks, then fill the lookahead.
        Returns the chunks made."""
        self._run_commands()
        if self.paused:
            return 0
        now = self.clock.beat()
        while self.history and self.history[0].start + self.history[0].chunk.beats <= now:
            self.history.popleft()
        self._rollback_stale(now)
        made = 0
        while self.session.beat < now + self.config.lookahead_beats:
            last = self.history[-1].chunk.beats if self.history else 4.0
            while self.session.beat + last <= self.clock.beat():  # behind: skip, never burst
                self.session.beat += last
                self.skipped += 1
            self.session.qpm = self.clock.tempo
            if self.control is not None:
                self.session.prompt = self.control.prompt
            before = _clone(self.session.state)
            start = self.session.beat
            target = self.control.target() if self.control is not None else None
            version = self.control.version if self.control is not None else 0
            t = time.perf_counter()
            chunk = self.session.next_chunk()
            self.gen_times.append(time.perf_counter() - t)
            self.history.append(_Made(chunk.bar, start, before, chunk, target, version))
            self.generated.append(chunk)
            self._each_sink(lambda s, c=chunk, b=start, v=version: s.schedule(c, b, v))
            made += 1
        return made

    def _rollback_stale(self, now: float) -> None:
        if self.control is None:
            return  # a timeline (automation file) never goes stale
        target = self.control.target()
        d = self.config.regenerate_distance
        stale = {
            id(m)
            for m in self.history
            if m.target is not None and max(abs(m.target.valence - target.valence), abs(m.target.arousal - target.arousal)) >= d
        }
        if not stale:
            self._stale_since = None
            return
        t = self.clock.now()
        self._stale_since = self._stale_since or t
        last = self.control.last_event.t if self.control.last_event is not None else 0.0
        if t - last < self.config.debounce_s and t - self._stale_since < self.config.max_wait_s:
            return  # the lane is still moving: wait for it to settle (or for max_wait)
        read_ahead = max((s.read_ahead_s for s in self.sinks), default=0.0)
        recent = list(self.gen_times)[-16:]  # the first chunk (and a new prompt's) are slower: they age out
        if self.audio_engine:
            # audio sinks splice a remake in where it lands (crossfaded) and play the old take
            # until then, so even the chunk that plays is remade if it likely outlasts its remake
            horizon = self.clock.beat(t + float(np.median(recent or [0.05])) + read_ahead)
        else:
            # notes are cancelled, then remade: only if surely ready before their downbeat and
            # before any sink has committed them
            horizon = max(now, self.clock.beat(t + 0.02 + 2.0 * max(recent, default=0.05) + read_ahead))
        for i, m in enumerate(self.history):
            if (m.start + m.chunk.beats if self.audio_engine else m.start) <= horizon or id(m) not in stale:
                continue  # sounding, too close, or made for this target
            if not self.audio_engine:
                self._each_sink(lambda s, b=m.bar: s.cancel_from(b))
            self.session.state = m.state
            self.session.beat = m.start
            while len(self.history) > i:
                self.history.pop()
            self.regenerations += 1
            break
        self._stale_since = None

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                if self.clock.running:
                    self.step()
                else:
                    self._run_commands()  # commands still run while stopped
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


def expressive_velocity(velocity: int, bar_arousal: float, now_arousal: float, depth: float = DEPTH) -> int:
    """A note made for `bar_arousal`, played when the lane is at `now_arousal`."""
    return int(scale_velocity(velocity, now_arousal - bar_arousal, depth))


class LiveExpression:
    """What every sink does with the lane between chunks: a note's velocity follows the
    lane now (the one loudness rule), and the first output that reflects a control change
    gives its control-to-output latency."""

    def __init__(self, control: LiveControl | None, config: LiveConfig) -> None:
        self.control, self.config = control, config
        self.latency_ms: deque[float] = deque(maxlen=1000)
        self._seen = control.version if control else 0

    def velocity(self, ev: NoteEvent) -> int:
        if not (self.config.expression and self.control is not None):
            return ev.velocity
        return expressive_velocity(ev.velocity, ev.arousal, self.control.current().arousal, self.config.expression_depth)

    def heard(self, t: float, made_under: int | None = None) -> None:
        """Output at monotonic time `t` reflects the lane; `made_under`: the control version
        the content was made under (content made before the latest change does not count)."""
        c = self.control
        if c is None or c.last_event is None or c.version == self._seen or (made_under is not None and made_under < c.version):
            return
        self._seen = c.version
        self.latency_ms.append((t - c.last_event.t) * 1000.0)


class NoteLog:
    """The last notes a sink played, for a display (the web page's piano roll): entries
    (seq, monotonic time, pitch, velocity), velocity 0 for a note-off. Bounded; written by
    one output thread, read by the web thread."""

    def __init__(self, maxlen: int = 512) -> None:
        self._log: deque[tuple[int, float, int, int]] = deque(maxlen=maxlen)
        self.seq = 0

    def add(self, t: float, pitch: int, velocity: int) -> None:
        self.seq += 1
        self._log.append((self.seq, t, int(pitch), int(velocity)))

    def since(self, seq: int) -> list[tuple[int, float, int, int]]:
        """Entries after `seq` (as many as are still kept), oldest first."""
        return [e for e in list(self._log) if e[0] > seq]


class SupervisedThread:
    """A sink's worker: an exception is logged and counted and the loop starts again, so a
    sink never dies silently while its queue fills."""

    def __init__(self, name: str, body: Callable[[threading.Event], None]) -> None:
        self.name, self.body = name, body
        self.errors = 0
        self.last_error = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.body(self._stop)
            except Exception as e:
                self.errors += 1
                self.last_error = f"{type(e).__name__}: {e}"
                if self.errors == 1 or self.errors % 100 == 0:  # a port that keeps failing must not flood the terminal
                    log.warning("%s failed %d times (%s); restarting it", self.name, self.errors, self.last_error)
                self._stop.wait(0.05)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)


class MidiSink:
    """Sends due note events to a `MidiOut` on its own thread, on time (sleep, then a short
    spin for the last millisecond). Plays notes; audio chunks are not its to play. Records
    timing error and control-to-note latency."""

    def __init__(self, out, clock: Clock, control: LiveControl | None = None, config: LiveConfig = LiveConfig()) -> None:
        self.out = out
        self.clock = clock
        self.control = control
        self.config = config
        self.queue = EventQueue(config.max_events)
        self.timing_error_ms: deque[float] = deque(maxlen=20_000)
        self.expression = LiveExpression(control, config)
        self.latency_ms = self.expression.latency_ms
        self.sent_on = 0
        self.late_dropped = 0
        self.played = NoteLog()
        self.worker = SupervisedThread("midi-out", self._loop)

    # -- ChunkSink ---------------------------------------------------------------------
    def schedule(self, chunk: Chunk, start_beat: float, version: int = 0) -> None:
        self.queue.push(chunk_events(chunk, start_beat, version))

    def cancel_from(self, chunk: int) -> None:
        self.queue.cancel_from(chunk)

    def clear(self) -> None:
        self.queue.clear()
        self.out.panic()

    read_ahead_s = 0.0015  # it sends each event at its time

    # -- output ------------------------------------------------------------------------
    def _expression(self, ev: NoteEvent) -> int:
        return self.expression.velocity(ev)

    def _loop(self, stop: threading.Event) -> None:
        q = self.queue
        while not stop.is_set():
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
            with q.cond:  # sent under the queue's lock: a clear() (panic) cannot slip in between
                if q.peek() is not ev:
                    continue  # cancelled or re-queued meanwhile
                q.pop()
                late = time.monotonic() - due
                if ev.kind:
                    if late > self.config.late_tolerance_s:  # behind (generator, transport jump): skip it
                        self.late_dropped += 1
                        continue
                    velocity = self._expression(ev)
                    self.out.note_on(ev.pitch, velocity, ev.lead)
                    self.sent_on += 1
                    now = time.monotonic()
                    self.expression.heard(now)
                    self.played.add(now, ev.pitch, velocity)
                else:
                    self.out.note_off(ev.pitch, ev.lead)  # offs always go out: nothing may hang
                    self.played.add(time.monotonic(), ev.pitch, 0)
            self.timing_error_ms.append(late * 1000.0)

    @property
    def errors(self) -> int:
        return self.worker.errors

    def start(self) -> MidiSink:
        self.worker.start()
        return self

    def stop(self) -> None:
        self.worker.stop()
        self.out.panic()
