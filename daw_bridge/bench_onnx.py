"""`moodlane bench onnx`: LARA-Gen on PyTorch eager and on onnxruntime, side by side, on
the shipped model with guidance on. Each configuration runs in its own process (so each
peak RSS is its own): load time, time to first audio, LM per-step latency, generation speed
as a multiple of real time; then each backend live, serving audio on a JACK server, with
the control-to-audio latency of arousal changes and the underruns. Figures, never a verdict.

    python -m moodlane.daw_bridge.bench_onnx WORKER JSON   (one configuration; used internally)
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from moodlane.daw_bridge.bench import _pcts, _Timed, cpu_name, peak_rss_mb
from moodlane.engine.emotion import Emotion
from moodlane.engine.registry import GeneratorOptions, describe_backend, load_generator

PROMPT = "solo acoustic piano"


def speed_worker(opts: GeneratorOptions, seconds: float, repeats: int) -> dict:
    """One backend and thread count, in a fresh process: load, first audio, speed."""
    from moodlane.engine.automation import EmotionCurve
    from moodlane.engine.chunk import Conditions
    from moodlane.engine.session import render_chunks

    t0 = time.perf_counter()
    gen = load_generator(opts)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    first, _ = gen.generate_chunk(gen.init_state(0), Conditions(Emotion(-0.5, -0.5), 120.0, PROMPT))
    first_s = time.perf_counter() - t0
    step, decode = _Timed(gen.step), _Timed(gen.codec.decode)
    gen.step, gen.codec.decode = step, decode
    curve = EmotionCurve.from_points([(0.0, Emotion(-0.5, -0.5)), (seconds * 2.0, Emotion(0.5, 0.5))])
    walls, step_ms, shares = [], [], []
    for r in range(repeats):
        step.seconds, decode.seconds, step.calls = 0.0, 0.0, 0
        t = time.perf_counter()
        chunks, _ = render_chunks(gen, curve, seconds * 2.0, seed=r, qpm=120.0, prompt=PROMPT)
        wall = time.perf_counter() - t
        walls.append(wall)
        step_ms.append(1000.0 * step.seconds / max(step.calls, 1))
        shares.append(decode.seconds / wall)
    audio_s = sum(c.audio.frames for c in chunks) / gen.sample_rate
    return {
        "backend": describe_backend(gen),
        "load_s": round(load_s, 2),
        "first_audio_s": round(first_s, 3),
        "first_chunk_audio_s": round(first.audio.frames / gen.sample_rate, 2),
        "lm_step_ms": round(float(np.median(step_ms)), 3),
        "x_realtime": round(audio_s / float(np.median(walls)), 2),
        "codec_decode_share": round(float(np.median(shares)), 3),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }


def live_worker(opts: GeneratorOptions, trials: int, seed: int = 0) -> dict:
    """`serve --engine audio --mode audio` at the default settings on the running JACK
    server; arousal flips at random phases of the bar; the audio sink's control-to-audio
    latency (control message to the DAC time of the first chunk made after it)."""
    import threading

    from pythonosc.udp_client import SimpleUDPClient

    from moodlane.daw_bridge.osc import free_udp_port
    from moodlane.daw_bridge.serve import ServeOptions, Server

    gen = load_generator(opts)
    sopts = ServeOptions(osc_port=free_udp_port(), midi=False, mode="audio", tempo=120.0, status_line=False, emotion=Emotion(0, -0.8))
    t0 = time.monotonic()
    server = Server(sopts, gen).start()
    runner = threading.Thread(target=server.run, daemon=True)
    runner.start()
    rng = random.Random(seed)
    try:
        if server.audio is None:
            return {"unavailable": dict(server.unavailable)}
        while not server.scheduler.generated and time.monotonic() - t0 < 30:
            time.sleep(0.005)
        first_chunk_s = time.monotonic() - t0
        time.sleep(1.5)  # the stream's own start (PortAudio reports an underflow there)
        under0 = server.audio.underruns
        server.audio.latency_ms.clear()
        client = SimpleUDPClient("127.0.0.1", sopts.osc_port)
        for i in range(trials):
            time.sleep(rng.uniform(2.0, 3.0))  # lands anywhere in a chunk
            client.send_message("/moodlane/arousal", 0.8 if i % 2 == 0 else -0.8)
        time.sleep(4.5)
        lat = list(server.audio.latency_ms)
        chunk_ms = server.config.audio_chunk_beats * 60000.0 / 120.0
        gen_ms = [1000.0 * t for t in server.scheduler.gen_times]
        return {
            "backend": describe_backend(gen),
            "first_chunk_s": round(first_chunk_s, 2),
            "control_to_audio_ms": {**_pcts(lat), "max": round(max(lat), 1) if lat else None},
            "chunk_ms": chunk_ms,
            "max_beyond_one_chunk_ms": round(max(lat) - chunk_ms, 1) if lat else None,
            "chunk_generation_ms": _pcts(gen_ms),
            "regenerations": server.scheduler.regenerations,
            "underruns_after_start": server.audio.underruns - under0,
            "underruns_at_start": under0,
            "output_buffer_ms": round(server.audio.output_latency_ms, 1),
            "peak_rss_mb": round(peak_rss_mb(), 1),
        }
    finally:
        server.stop()
        runner.join(timeout=5)


class _TwinCache:
    def __init__(self, a, b) -> None:
        self.a, self.b = a, b
        self.capacity, self.batch = a.capacity, a.batch

    @property
    def length(self) -> int:
        return self.a.length

    def clone(self) -> _TwinCache:
        return _TwinCache(self.a.clone(), self.b.clone())


class _TwinLM:
    """Two LM backends fed the same inputs, each with its own cache; the first one's logits
    drive the generation, every pair is kept."""

    name = "twin"

    def __init__(self, a, b) -> None:
        self.a, self.b, self.cfg = a, b, a.cfg
        self.pairs: list = []

    def memory(self, *cond):
        return self.a.memory(*cond), self.b.memory(*cond)

    def new_cache(self, batch: int) -> _TwinCache:
        return _TwinCache(self.a.new_cache(batch), self.b.new_cache(batch))

    def logits(self, tokens, mem, cache: _TwinCache):
        la, lb = self.a.logits(tokens, mem[0], cache.a), self.b.logits(tokens, mem[1], cache.b)
        self.pairs.append((la, lb))
        return la

    def describe(self) -> dict:
        return self.a.describe()


def int8_fidelity(folder: Path, opts: GeneratorOptions, seconds: float) -> dict:
    """How far the int8 decoder's next-token distributions are from fp32's on the same
    inputs (fp32's own samples over a valence/arousal ramp, guidance rows included): mean
    KL (nats) and how often the likeliest token is the same."""
    import torch

    from moodlane.engine.audio.generator import LaraGenerator
    from moodlane.engine.chunk import Conditions

    onnx = replace(opts, backend="onnx", onnx_dir=str(folder), providers=("cpu",))
    ref, q = load_generator(replace(onnx, precision="fp32")), load_generator(replace(onnx, precision="int8"))
    twin = _TwinLM(ref.lm, q.lm)
    gen = LaraGenerator(twin, ref.codec, ref.text, ref.sampling)
    state, n = gen.init_state(0), max(2, int(seconds / 2.0))
    for i in range(n):
        x = -0.8 + 1.6 * i / (n - 1)
        _, state = gen.generate_chunk(state, Conditions(Emotion(x, x), 120.0, PROMPT))
    pairs = [(a, b) for a, b in twin.pairs if a.shape == b.shape]
    pa = torch.cat([torch.log_softmax(a, -1).flatten(0, -2) for a, _ in pairs])
    pb = torch.cat([torch.log_softmax(b, -1).flatten(0, -2) for _, b in pairs])
    kl = (pa.exp() * (pa - pb)).sum(-1)
    return {
        "model_calls": len(pairs),
        "mean_kl_nats": round(float(kl.mean()), 5),
        "top1_agreement": round(float((pa.argmax(-1) == pb.argmax(-1)).float().mean()), 3),
    }


WORKERS = {"speed": speed_worker, "live": live_worker}


def _in_process(kind: str, opts: GeneratorOptions, **kw) -> dict:
    """One worker in a fresh Python process (its own peak RSS, no warm caches)."""
    job = json.dumps({"opts": {**asdict(opts), "providers": list(opts.providers) if opts.providers else None}, "kw": kw})
    r = subprocess.run([sys.executable, "-m", "moodlane.daw_bridge.bench_onnx", kind, job], capture_output=True, text=True)
    if r.returncode != 0:
        return {"failed": (r.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def _median_of(rows: list[dict]) -> dict:
    """Per figure, the median over runs (peak RSS: the largest); a failed run is reported."""
    ok = [r for r in rows if "failed" not in r]
    if not ok:
        return rows[0]
    out = {}
    for k, v in ok[0].items():
        vals = [r[k] for r in ok]
        out[k] = max(vals) if k == "peak_rss_mb" else round(float(np.median(vals)), 3) if isinstance(v, (int, float)) else v
    out["runs"] = len(ok)
    return out


def bench_onnx(
    opts: GeneratorOptions, seconds: float = 10.0, repeats: int = 2, threads: tuple[int, ...] = (1, 2), trials: int = 8, live: bool = True
) -> dict:
    """The side-by-side run: `repeats` rounds of every configuration, interleaved. An export
    matching the LM is used where it is (`--onnx`, or the cache folder); else one is made in
    a temporary folder for this run."""
    import onnxruntime

    from moodlane.engine.audio.checkpoint import load_lara
    from moodlane.engine.audio.onnx_runtime import OnnxExportError, default_folder, read_manifest
    from moodlane.export.onnx import export_lara

    opts = replace(opts, engine="audio")
    out: dict = {"cpu": cpu_name(), "cfg": opts.cfg, "top_k": opts.top_k, "seconds": seconds, "repeats": repeats}
    gen = load_lara(opts.lm_checkpoint, opts.codec_checkpoint, backend="torch")
    sha = gen.meta.get("weights_sha256", "")
    folder = Path(opts.onnx_dir) if opts.onnx_dir else default_folder(sha)
    tmp = None
    try:
        if read_manifest(folder)["source"]["lm_sha256"] != sha:
            raise OnnxExportError("another LM")
    except OnnxExportError:
        tmp = tempfile.TemporaryDirectory(prefix="moodlane-onnx-")
        folder = Path(tmp.name)
        t = time.perf_counter()
        export_lara(gen, folder)
        out["export_s"] = round(time.perf_counter() - t, 1)
    del gen
    out["onnx_dir"] = str(folder) if tmp is None else "a temporary export made for this run"
    out["onnxruntime"] = onnxruntime.__version__
    out["providers_available"] = onnxruntime.get_available_providers()
    configs = [(f"torch, {n} thread{'s' * (n > 1)}", replace(opts, backend="torch", threads=n)) for n in threads]
    configs += [
        (f"onnx cpu, {n} thread{'s' * (n > 1)}", replace(opts, backend="onnx", onnx_dir=str(folder), providers=("cpu",), threads=n))
        for n in threads
    ]
    configs.append(
        ("onnx cpu int8, 1 thread", replace(opts, backend="onnx", onnx_dir=str(folder), providers=("cpu",), threads=1, precision="int8"))
    )
    if "CUDAExecutionProvider" in out["providers_available"]:
        configs.append(("onnx cuda", replace(opts, backend="onnx", onnx_dir=str(folder), providers=("cuda", "cpu"), threads=1)))
    else:
        out["gpu"] = "none here: onnxruntime has no CUDA provider (install moodlane[gpu] on a GPU machine)"
    try:
        # rounds interleaved (every configuration once, then again), each run a fresh process:
        # a machine whose speed drifts over minutes shifts every configuration alike
        runs: dict[str, list[dict]] = {label: [] for label, _ in configs}
        for _ in range(repeats):
            for label, o in configs:
                runs[label].append(_in_process("speed", o, seconds=seconds, repeats=1))
        out["speed"] = {label: _median_of(rows) for label, rows in runs.items()}
        t1, o1 = out["speed"].get(configs[0][0], {}), out["speed"].get(configs[len(threads)][0], {})
        if "x_realtime" in t1 and "x_realtime" in o1:
            out["onnx_over_torch_1_thread"] = {
                "speed": round(o1["x_realtime"] / t1["x_realtime"], 2),
                "step": round(t1["lm_step_ms"] / o1["lm_step_ms"], 2),
            }
        out["int8_fidelity"] = int8_fidelity(folder, opts, seconds)
        if live:
            from moodlane.daw_bridge.jack import JackUnavailable, ensure_jack

            try:
                with ensure_jack() as started:
                    out["jack"] = "started (dummy driver)" if started else "already running"
                    live_configs = [c for c in configs if c[0].endswith("1 thread")]  # the default: 1 thread
                    out["live"] = {label: _in_process("live", o, trials=trials) for label, o in live_configs}
            except JackUnavailable as e:
                out["live"] = f"not measured: {e}"
    finally:
        if tmp is not None:
            tmp.cleanup()
    return out


if __name__ == "__main__":
    kind, job = sys.argv[1], json.loads(sys.argv[2])
    o = job["opts"]
    o["providers"] = tuple(o["providers"]) if o["providers"] else None
    print(json.dumps(WORKERS[kind](GeneratorOptions(**o), **job["kw"])))
