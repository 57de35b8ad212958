"""Chunks that carry audio: the mixer's crossfades, the mock audio generator, the session and
the render command on audio, and the registry."""

import numpy as np
import pytest
import soundfile as sf
from conftest import run_cli

from moodlane.engine.automation import EmotionCurve
from moodlane.engine.chunk import Audio, Chunk, Conditions
from moodlane.engine.emotion import Emotion
from moodlane.engine.mixer import Mixer, fade_in, join_audio, resample
from moodlane.engine.mock import MockAudioGenerator, MockGenerator
from moodlane.engine.registry import GeneratorOptions, load_generator
from moodlane.engine.session import join, render_chunks

SR = 8000


def test_crossfade_gains_sum_to_one():
    w = fade_in(64)
    assert w[0] < 0.01 and w[-1] > 0.99
    np.testing.assert_allclose(w + w[::-1], 1.0, atol=1e-6)


def test_a_signal_split_into_overlapping_chunks_rejoins_exactly():
    """A generator that continues its signal into the tail joins seamlessly."""
    x = np.sin(np.arange(3 * 1000 + 100) * 0.05).astype(np.float32)
    m = Mixer(SR, 1)
    for i in range(3):  # each chunk: its 1000 frames plus 100 of the next one's
        m.add(i, 1000 * i, Audio(x[1000 * i : 1000 * (i + 1) + 100], SR, 100), first=i == 0)
    y = m.render(0, 3000)[:, 0]
    np.testing.assert_allclose(y, x[:3000], atol=1e-5)


def test_unrelated_chunks_never_jump_at_a_join():
    m = Mixer(SR, 1)
    m.add(0, 0, Audio(np.full(1100, 0.5, np.float32), SR, 100), first=True)
    m.add(1, 1000, Audio(np.full(1100, -0.5, np.float32), SR, 100))
    y = m.render(0, 2000)[:, 0]
    assert np.abs(np.diff(y)).max() < 0.02  # a hard cut would step by 1.0


def test_cancel_and_fade_out():
    m = Mixer(SR, 2)
    for i in range(3):
        m.add(i, 1000 * i, Audio(np.ones((1100, 1), np.float32), SR, 100), first=i == 0)
    m.cancel_from(2)  # a rollback: chunk 2 had not started
    assert len(m) == 2
    m.fade_out(500, 50)  # a stop: everything sounding fades over 50 frames, later chunks go
    y = m.render(0, 3000)
    assert y[499, 0] == pytest.approx(1.0) and np.all(y[550:] == 0) and np.all(np.diff(y[500:550, 0]) <= 0)


def test_resample_keeps_duration_and_pitch():
    sr_in, sr_out, f = 32000, 48000, 440.0
    x = np.sin(2 * np.pi * f * np.arange(sr_in) / sr_in).astype(np.float32)
    a = resample(Audio(x, sr_in, 320), sr_out)
    assert a.sample_rate == sr_out and a.pcm.shape[0] == sr_out and a.tail == 480
    spec = np.abs(np.fft.rfft(a.pcm[:, 0]))
    assert abs(int(np.argmax(spec)) - f) <= 1  # 1 Hz bins


def test_audio_and_chunk_validate():
    with pytest.raises(ValueError, match="frames"):
        Audio(np.zeros((10, 3)), SR)
    with pytest.raises(ValueError, match="sample_rate"):
        Audio(np.zeros(10), 100)
    with pytest.raises(ValueError, match="either notes or audio"):
        Chunk(0, Emotion(0, 0))
    with pytest.raises(ValueError, match="tempo"):
        Conditions(Emotion(0, 0), tempo=float("nan"))


def _loudness_and_pulses(emotion, seed=0):
    gen = MockAudioGenerator(sample_rate=SR)
    chunk, _ = gen.generate_chunk(gen.init_state(seed), Conditions(emotion, tempo=120.0))
    x = chunk.audio.pcm[: chunk.audio.frames, 0]
    return float(np.sqrt((x**2).mean())), count_pulses(x, SR)


def pulse_rate_hz(x: np.ndarray, sr: int) -> float:
    """The strongest loudness modulation between 0.5 and 20 Hz (10 ms frames)."""
    n = sr // 100
    env = np.sqrt((x[: len(x) // n * n].reshape(-1, n) ** 2).mean(1))
    spec = np.abs(np.fft.rfft((env - env.mean()) * np.hanning(len(env))))
    hz = np.fft.rfftfreq(len(env), 0.01)
    band = (hz >= 0.5) & (hz <= 20)
    return float(hz[band][np.argmax(spec[band])])


def count_pulses(x: np.ndarray, sr: int) -> int:
    """Struck pulses: 10 ms frames whose loudness jumps 2.5x over the previous one (+ the first)."""
    n = sr // 100
    env = np.sqrt((x[: len(x) // n * n].reshape(-1, n) ** 2).mean(1))
    return 1 + int((env[1:] > 2.5 * env[:-1]).sum())


def test_mock_audio_follows_arousal():
    (calm_rms, calm_pulses), (wild_rms, wild_pulses) = _loudness_and_pulses(Emotion(0, -1)), _loudness_and_pulses(Emotion(0, 1))
    assert wild_rms > 3 * calm_rms  # x4 loudness
    assert calm_pulses == pytest.approx(4, abs=1) and wild_pulses == pytest.approx(16, abs=1)  # 1 and 4 pulses a beat, one bar


def test_mock_audio_chunks_continue_each_other():
    gen = MockAudioGenerator(sample_rate=SR)
    state = gen.init_state(0)
    a, state = gen.generate_chunk(state, Conditions(Emotion(0.5, 0.0)))
    b, _ = gen.generate_chunk(state, Conditions(Emotion(0.5, 0.0)))
    tail = a.audio.pcm[a.audio.frames :, 0]
    head = b.audio.pcm[: a.audio.tail, 0]
    # same signal up to the per-bar gain jitter: the crossfade joins like-with-like
    assert np.corrcoef(tail, head)[0, 1] > 0.99


def test_session_renders_audio_with_automation():
    curve = EmotionCurve.from_points([(0.0, Emotion(0, -1)), (12.0, Emotion(0, 1))])
    chunks, tempo = render_chunks(MockAudioGenerator(sample_rate=SR), curve, 16.0, seed=1, qpm=120.0)
    assert [c.kind for c in chunks] == ["audio"] * 16 and tempo == 120.0  # one-beat chunks, as live
    piece = join(chunks, tempo)
    assert piece.sample_rate == SR and piece.pcm.shape[0] == 8 * SR + chunks[-1].audio.tail  # 16 beats at 120 BPM
    bars = piece.pcm[: 8 * SR, 0].reshape(4, -1)
    rms = np.sqrt((bars**2).mean(1))
    assert np.all(np.diff(rms) > 0)  # louder bar by bar as arousal rises
    same, _ = render_chunks(MockAudioGenerator(sample_rate=SR), curve, 16.0, seed=1, qpm=120.0)
    np.testing.assert_array_equal(join(same, tempo).pcm, piece.pcm)  # same seed, same audio


def test_join_audio_needs_audio():
    notes, _ = MockGenerator().generate_chunk(MockGenerator().init_state(0), Conditions(Emotion(0, 0)))
    with pytest.raises(ValueError, match="no audio"):
        join_audio([notes], 120.0)


def test_registry():
    assert load_generator(GeneratorOptions(engine="mock-audio")).kind == "audio"
    assert load_generator(GeneratorOptions(engine="mock")).kind == "notes"
    assert load_generator(GeneratorOptions(engine="audio", cfg=1.0)).kind == "audio"  # LARA-Gen, shipped
    with pytest.raises(ValueError, match="engine"):
        GeneratorOptions(engine="nope")


run = run_cli


def test_render_mock_audio_to_wav(tmp_path, capsys):
    """The issue's command: `moodlane render --engine mock-audio --valence 0 --arousal 0.8
    --seconds 8 -o out.wav` writes audio."""
    out = tmp_path / "out.wav"
    code, stdout, _ = run(
        ["render", "--engine", "mock-audio", "--valence", "0", "--arousal", "0.8", "--seconds", "8", "-o", str(out)], capsys
    )
    assert code == 0 and "out.wav" in stdout
    x, sr = sf.read(out)
    assert sr == 32000 and x.shape[0] >= 8 * sr and np.abs(x).max() > 0.1


@pytest.mark.parametrize(
    "args,message",
    [
        (["--engine", "mock-audio", "-o", "{d}/a.mid"], "makes audio"),
        (["--engine", "audio", "--lm-checkpoint", "{d}/missing", "-o", "{d}/a.wav"], "does not exist"),
        (["--engine", "mock", "-o", "{d}/a.txt"], ".mid or .wav"),
    ],
)
def test_render_engine_errors(tmp_path, capsys, args, message):
    code, _, err = run(["render", *[a.format(d=tmp_path) for a in args]], capsys)
    assert code == 2 and message in err and list(tmp_path.iterdir()) == []


def test_far_future_automation_is_refused(tmp_path, capsys):
    auto = tmp_path / "far.csv"
    auto.write_text("beats,valence,arousal\n0,0,0\n1e9,0,0\n")
    code, _, err = run(["render", "--engine", "mock", "--automation", str(auto), "-o", str(tmp_path / "x.mid")], capsys)
    assert code == 2 and "pass --bars" in err
    code, _, _ = run(["render", "--engine", "mock", "--automation", str(auto), "--bars", "2", "-o", str(tmp_path / "x.mid"), "-q"], capsys)
    assert code == 0


@pytest.mark.parametrize(
    "flag,value", [("--port", "70000"), ("--port", "0"), ("--sample-rate", "12"), ("--blocksize", "0"), ("--feedback", "localhost:65536")]
)
def test_serve_options_are_validated(capsys, flag, value):
    code, _, err = run(["serve", "--engine", "mock", flag, value], capsys)
    assert code == 2 and "must be a whole number" in err and "Traceback" not in err


def test_serve_refuses_midi_mode_for_an_audio_engine(capsys):
    code, _, err = run(["serve", "--engine", "mock-audio", "--mode", "midi"], capsys)
    assert code == 2 and "--mode audio" in err


def test_a_remake_splices_into_the_playing_chunk_without_a_jump():
    """Live: a lane change remakes the chunk that plays; from the splice frame the old take
    fades out while the remake fades in (gains sum to one), and the successor still joins."""
    m = Mixer(SR, 1)
    m.add(0, 0, Audio(np.full(1100, 0.5, np.float32), SR, 100), first=True)
    remake = m.prepare(Audio(np.full(1100, -0.5, np.float32), SR, 100), first=True)
    m.splice(0, 0, remake, at=400, frames=200)
    m.add(1, 1000, Audio(np.full(1100, -0.5, np.float32), SR, 100))
    y = m.render(0, 2000)[:, 0]
    assert np.allclose(y[:400], 0.5) and np.allclose(y[600:2000], -0.5)  # the old take, then the remake (and its successor)
    assert np.abs(np.diff(y)).max() < 0.02  # no click at the splice nor at the join
    assert len([c for c in m._chunks if c.index == 0]) == 2  # the old take's fade and the remake's rest


def test_a_late_chunk_fades_in_where_it_lands():
    m = Mixer(SR, 1)
    m.splice(3, 0, np.ones((1000, 1), np.float32), at=300, frames=100)  # its start passed: nothing of it before 300
    y = m.render(0, 1000)[:, 0]
    assert np.all(y[:300] == 0) and y[299:401].max() <= 1.0 and np.all(np.diff(y[300:400]) >= 0) and np.allclose(y[400:], 1.0)


def test_audio_sink_splices_a_remake_into_the_chunk_it_plays(monkeypatch):
    """The live sink (no device: its callback driven by hand): chunk 0 plays; its remake,
    scheduled while it sounds, takes over at the next block with a crossfade, at the old
    take's timeline position; no sample jumps."""
    from types import SimpleNamespace

    import moodlane.daw_bridge.audio as audio_mod
    from moodlane.daw_bridge.audio import SPLICE_S, AudioSink
    from moodlane.daw_bridge.clock import Clock
    from moodlane.engine.chunk import Chunk
    from moodlane.engine.emotion import Emotion

    sd = SimpleNamespace(query_devices=lambda device, kind: {"name": "fake", "default_samplerate": 8000})
    monkeypatch.setattr(audio_mod, "_sounddevice", lambda: sd)
    clk = Clock(120.0)
    clk.start()
    sink = AudioSink(clk, synth=False, blocksize=256)
    info, status = SimpleNamespace(outputBufferDacTime=0.0, currentTime=0.0), SimpleNamespace(output_underflow=False)

    def block() -> np.ndarray:
        out = np.zeros((256, 2), np.float32)
        sink._callback(out, 256, info, status)
        return out[:, 0]

    def chunk(pcm: np.ndarray) -> Chunk:  # one beat at 120 BPM: 0.5 s, plus a 10 ms tail
        return Chunk(0, Emotion(0, 0), 1.0, audio=Audio(pcm.astype(np.float32), 8000, 80))

    ramp = -0.25 - 0.25 * np.arange(4080) / 4080  # where each sample lands shows
    sink.schedule(chunk(np.full(4080, 0.5)), 0.0)
    heard = [block() for _ in range(4)]
    start = sink._placed_at[0]
    info.outputBufferDacTime = 0.01  # the stream's timing moved by 80 frames: the remake must still land where chunk 0 is
    sink.schedule(chunk(ramp), 0.0, version=1)  # the lane moved: chunk 0 remade while it sounds
    heard += [block() for _ in range(8)]
    y = np.concatenate(heard)
    fade = int(SPLICE_S * 8000)
    assert np.allclose(y[fade + 10 : 1024], 0.5)
    np.testing.assert_allclose(y[1024 + fade :], ramp[1024 + fade - start : len(y) - start], atol=1e-6)
    assert np.abs(np.diff(y)).max() < 0.01  # the late first chunk fades in, the remake crossfades: no click
    assert sink.errors == 0 and len(sink._placed_at) == 1
