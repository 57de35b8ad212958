"""Audio chunks on one timeline, crossfaded: the same mixer joins an offline bounce and
feeds the live audio callback.

Each chunk is placed at a start frame. Its head is faded in over its `tail` frames (unless
it opens the piece) while the previous chunk's tail, which covers the same frames, fades
out: a raised-cosine crossfade whose two gains sum to one, so a generator that continues
its own signal into the tail joins seamlessly and one that does not never clicks. A
chunk that is cancelled while it sounds (stop, transport jump) fades out the same way.

Worked example, 1-frame units, tail 2: chunk A at 0 with 4 + 2 frames, chunk B at 4:

    frame   0 1 2 3 4 5 6 7
    A       1 1 1 1 ↘ ↘          (A's tail fades out over frames 4-5)
    B                 ↗ ↗ 1 1    (B's head fades in over the same frames)
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from moodlane.engine.chunk import Audio


def fade_in(n: int) -> np.ndarray:
    """(n,) raised-cosine gains from ~0 to ~1; `fade_in(n) + fade_in(n)[::-1] == 1`."""
    if n <= 0:
        return np.zeros(0, np.float32)
    return (0.5 - 0.5 * np.cos(np.pi * (np.arange(n) + 0.5) / n)).astype(np.float32)


def resample(audio: Audio, sample_rate: int) -> Audio:
    """The chunk at another sample rate (polyphase, scipy), tail scaled alike."""
    if audio.sample_rate == sample_rate:
        return audio
    from math import gcd

    from scipy.signal import resample_poly

    g = gcd(audio.sample_rate, sample_rate)
    up, down = sample_rate // g, audio.sample_rate // g
    pcm = resample_poly(audio.pcm, up, down, axis=0).astype(np.float32)
    tail = min(int(round(audio.tail * up / down)), max(pcm.shape[0] - 1, 0))
    return Audio(pcm, sample_rate, tail)


@dataclass
class _Placed:
    index: int
    start: int  # timeline frame of the chunk's first sample
    pcm: np.ndarray  # (frames + tail, channels), windows applied
    end: int  # start + len(pcm)


class Mixer:
    """A timeline of crossfaded PCM chunks at one sample rate, `channels` wide. Thread-safe:
    a scheduler adds and cancels while an audio callback renders."""

    def __init__(self, sample_rate: int, channels: int = 2) -> None:
        self.sample_rate = int(sample_rate)
        self.channels = int(channels)
        self._chunks: list[_Placed] = []
        self._lock = threading.Lock()

    def prepare(self, audio: Audio, first: bool = False) -> np.ndarray:
        """A chunk (already at this sample rate) as the timeline holds it: this many
        channels, its tail faded out and, unless it opens the piece (`first`), its head
        faded in. Costly enough to keep out of an audio callback."""
        if audio.sample_rate != self.sample_rate:
            raise ValueError(f"chunk at {audio.sample_rate} Hz on a {self.sample_rate} Hz mixer (resample first)")
        pcm = audio.pcm
        if pcm.shape[1] != self.channels:
            pcm = np.repeat(pcm[:, :1], self.channels, axis=1) if pcm.shape[1] == 1 else pcm.mean(1, keepdims=True)
        pcm = pcm.copy()
        n = audio.tail
        if n:
            w = fade_in(n)
            pcm[pcm.shape[0] - n :] *= w[::-1, None]
            if not first:
                pcm[:n] *= w[:, None]
        return pcm

    def place(self, index: int, start: int, pcm: np.ndarray) -> None:
        """Put a prepared chunk at timeline frame `start`."""
        with self._lock:
            self._chunks.append(_Placed(index, int(start), pcm, int(start) + pcm.shape[0]))

    def add(self, index: int, start: int, audio: Audio, first: bool = False) -> None:
        self.place(index, start, self.prepare(audio, first))

    def cancel_from(self, index: int, fade_from: int | None = None, fade_frames: int = 0) -> None:
        """Forget chunks whose index is >= `index` (a rollback). With `fade_from`, one of them
        that already sounds there fades out over `fade_frames` instead of stopping."""
        with self._lock:
            keep = [c for c in self._chunks if c.index < index]
            if fade_from is not None:
                keep += [self._faded(c, fade_from, fade_frames) for c in self._chunks if c.index >= index and c.start < fade_from]
            self._chunks = keep

    @staticmethod
    def _faded(c: _Placed, frame: int, frames: int) -> _Placed:
        """`c` cut to fade out over `frames` from timeline frame `frame`."""
        cut = min(c.end, frame + frames)
        pcm = c.pcm[: max(cut - c.start, 0)].copy()
        k = min(cut - frame, pcm.shape[0])
        if k > 0:
            pcm[pcm.shape[0] - k :] *= fade_in(frames)[::-1][:k, None]
        return _Placed(c.index, c.start, pcm, c.start + pcm.shape[0])

    def splice(self, index: int, start: int, pcm: np.ndarray, at: int, frames: int) -> None:
        """A remake of chunk `index` (prepared, for timeline frame `start`) takes over at frame
        `at`: what sounds of the old version fades out over `frames` while the remake fades in
        over the same frames (gains summing to one); the remake's part before `at` is never
        heard. A live lane change can so reach the chunk that is already playing."""
        with self._lock:
            old = [c for c in self._chunks if c.index == index and c.start < at]
            keep = [c for c in self._chunks if c.index != index] + [self._faded(c, at, frames) for c in old]
            s0 = max(at, start)
            cut = pcm[s0 - start :].copy()
            k = min(frames, cut.shape[0])
            if s0 == at and k:
                cut[:k] *= fade_in(frames)[:k, None]
            if cut.shape[0]:
                keep.append(_Placed(index, s0, cut, s0 + cut.shape[0]))
            self._chunks = keep

    def fade_out(self, frame: int, frames: int) -> None:
        """Everything sounding at `frame` fades to silence over `frames`; later chunks go."""
        with self._lock:
            self._chunks = [self._faded(c, frame, frames) for c in self._chunks if c.start < frame]

    def render(self, frame: int, frames: int) -> np.ndarray:
        """(frames, channels) of the timeline from `frame` on; chunks that ended are dropped."""
        out = np.zeros((frames, self.channels), np.float32)
        self.mix_into(out, frame)
        return out

    def mix_into(self, out: np.ndarray, frame: int) -> None:
        """Add the timeline from `frame` on into `out` (frames, channels), in place: what an
        audio callback does, with nothing allocated when no chunk sounds."""
        end = frame + out.shape[0]
        with self._lock:
            if self._chunks and min(c.end for c in self._chunks) <= frame:
                self._chunks = [c for c in self._chunks if c.end > frame]
            for c in self._chunks:
                lo, hi = max(frame, c.start), min(end, c.end)
                if lo < hi:
                    out[lo - frame : hi - frame] += c.pcm[lo - c.start : hi - c.start]

    @property
    def end(self) -> int:
        with self._lock:
            return max((c.end for c in self._chunks), default=0)

    def __len__(self) -> int:
        with self._lock:
            return len(self._chunks)


def join_audio(chunks: list, tempo: float, sample_rate: int | None = None) -> Audio:
    """An offline bounce of audio chunks: each placed at its beat position at `tempo`."""
    audio = [c.audio for c in chunks if c.audio is not None]
    if not audio:
        raise ValueError("no audio chunks to join")
    sr = sample_rate or audio[0].sample_rate
    mixer = Mixer(sr, max(a.channels for a in audio))
    beat = 0.0
    for i, c in enumerate(chunks):  # (chunks hold notes or audio, never both kinds in one piece)
        mixer.add(c.bar, int(round(beat * 60.0 / tempo * sr)), resample(c.audio, sr), first=i == 0)
        beat += c.beats
    return Audio(mixer.render(0, mixer.end), sr)  # the last chunk's tail fades the piece out
