"""Generators by name (`--engine`): one place that turns options into a generator, for the
CLI, the benchmarks and the evaluation alike. Loading reads checkpoint files; nothing else
in the engine touches files.

* `symbolic`: the EmoGen-style attribute-conditioned decoder and its shipped weights;
* `audio`: LARA-Gen, the neural audio generator: the shipped LM and codec, another LM stem,
  or a MusicGen folder (`lm_checkpoint`);
* `mock`, `mock-audio`: no weights, the real interface (`engine.mock`).
"""

from __future__ import annotations

from dataclasses import dataclass

from moodlane.engine.audio.checkpoint import BACKENDS
from moodlane.engine.audio.generator import AV_CFG, CFG
from moodlane.engine.chunk import Generator

KINDS = {"symbolic": "notes", "audio": "audio", "mock": "notes", "mock-audio": "audio"}  # what each engine's chunks hold
ENGINES = tuple(KINDS)
PRECISIONS = ("auto", "int8", "fp32")
# one token step is latency-bound: measured (bench audio, AMD EPYC) 3.4x real time with guidance on 1 thread, 3.6x on 2,
# and 4.4x vs 4.2x without; the second core is left to the live audio path and the rest of the machine
AUDIO_THREADS = 1


@dataclass(frozen=True)
class GeneratorOptions:
    engine: str = "symbolic"
    checkpoint: str | None = None  # symbolic checkpoint stem (None: the shipped model)
    precision: str = "auto"  # decoder weights on the CPU: measured at load ("auto"), int8 or fp32
    mapping: str = "smooth"  # continuous VA map, EmoGen's quadrant prototypes, or calibrated (engine/symbolic/emotion_map.py)
    temperature: float = 1.0
    guidance: float = 1.0  # valence contrast guidance of the symbolic decoder
    guide_texture: bool = True  # symbolic: the valence contrast also mirrors texture attributes
    mode_rule: bool = True
    lm_checkpoint: str | None = None  # audio: LM stem or MusicGen folder (None: the shipped LM)
    codec_checkpoint: str | None = None  # audio: codec stem (None: the LM's own)
    cfg: float = CFG  # audio: classifier-free guidance
    av_cfg: float = AV_CFG  # audio: extra guidance on the emotion alone
    top_k: int = 250  # audio
    backend: str = "auto"  # audio: torch, onnx (engine.audio.onnx_runtime), or auto (ONNX when an export matches the LM)
    onnx_dir: str | None = None  # audio: the export folder (None: the cache folder for this LM)
    providers: tuple[str, ...] | None = None  # audio on ONNX: provider preference (None: CUDA, then CPU)
    threads: int | None = None  # audio: intra-op threads of torch or onnxruntime (None: AUDIO_THREADS)

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {self.engine!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        # sampling values are checked by the generator's own config (SamplingConfig)


def describe_backend(gen: Generator) -> str | None:
    """One line on what runs an audio generator: its backend, providers and threads."""
    lm = getattr(gen, "lm", None)
    if lm is None:
        return None
    d = lm.describe()
    if d["backend"] != "onnx":
        return f"backend: torch {d['version']}, {d['threads']} thread(s)"
    return (
        f"backend: onnx {gen.meta.get('precision', 'fp32')} ({gen.meta.get('onnx')}), providers used: "
        f"{', '.join(d['providers_used'])} (available: {', '.join(d['providers_available'])}), {d['threads']} thread(s)"
    )


def load_generator(opts: GeneratorOptions = GeneratorOptions()) -> Generator:
    """The generator `opts` names, ready to run on this machine."""
    if opts.engine == "mock":
        from moodlane.engine.mock import MockGenerator

        return MockGenerator()
    if opts.engine == "mock-audio":
        from moodlane.engine.mock import MockAudioGenerator

        return MockAudioGenerator()
    import torch

    if opts.engine == "audio":
        from moodlane.engine.audio.checkpoint import load_lara
        from moodlane.engine.audio.generator import AudioSampling

        threads = opts.threads or AUDIO_THREADS
        torch.set_num_threads(threads)
        sampling = AudioSampling(cfg=opts.cfg, av_cfg=opts.av_cfg, top_k=opts.top_k, temperature=opts.temperature)
        providers = list(opts.providers) if opts.providers else None
        precision = "int8" if opts.precision == "int8" else "fp32"  # auto: fp32, which reproduces PyTorch
        return load_lara(opts.lm_checkpoint, opts.codec_checkpoint, sampling, opts.backend, opts.onnx_dir, providers, threads, precision)

    from moodlane.engine.symbolic.generator import SamplingConfig, SymbolicGenerator

    # batch-1 decoding of a small model is latency-bound: more threads only spin (measured:
    # 19 tokens/s with 2 threads beside another busy process, 525 with one)
    torch.set_num_threads(1)
    sampling = SamplingConfig(
        temperature=opts.temperature,
        mapping=opts.mapping,
        mode_rule=opts.mode_rule,
        guidance=opts.guidance,
        guide_texture=opts.guide_texture,
    )
    return SymbolicGenerator.load(opts.checkpoint, sampling=sampling, precision=opts.precision)
