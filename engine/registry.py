"""Generators by name (`--engine`): one place that turns options into a generator, for the
CLI, the benchmarks and the evaluation alike. Loading reads checkpoint files; nothing else
in the engine touches files.

* `symbolic`: the EmoGen-style attribute-conditioned decoder and its shipped weights;
* `audio`: LARA-Gen, the neural audio generator (not in this release);
* `mock`, `mock-audio`: no weights, the real interface (`engine.mock`).
"""

from __future__ import annotations

from dataclasses import dataclass

from moodlane.engine.chunk import Generator

KINDS = {"symbolic": "notes", "audio": "audio", "mock": "notes", "mock-audio": "audio"}  # what each engine's chunks hold
ENGINES = tuple(KINDS)
PRECISIONS = ("auto", "int8", "fp32")


class EngineUnavailable(ValueError):
    """An engine that this installation cannot provide."""


@dataclass(frozen=True)
class GeneratorOptions:
    engine: str = "symbolic"
    checkpoint: str | None = None  # symbolic checkpoint stem (None: the shipped model)
    precision: str = "auto"  # decoder weights on the CPU: measured at load ("auto"), int8 or fp32
    mapping: str = "smooth"  # continuous VA map, or EmoGen's quadrant prototypes
    temperature: float = 1.0
    guidance: float = 1.0  # valence contrast guidance of the symbolic decoder
    mode_rule: bool = True

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {self.engine!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        # sampling values are checked by the generator's own config (SamplingConfig)


def load_generator(opts: GeneratorOptions = GeneratorOptions()) -> Generator:
    """The generator `opts` names, ready to run on this machine."""
    if opts.engine == "mock":
        from moodlane.engine.mock import MockGenerator

        return MockGenerator()
    if opts.engine == "mock-audio":
        from moodlane.engine.mock import MockAudioGenerator

        return MockAudioGenerator()
    if opts.engine == "audio":
        raise EngineUnavailable(
            "the neural audio engine (LARA-Gen) is not in this release yet; "
            "use --engine symbolic, or --engine mock-audio to try the audio path without weights"
        )
    import torch

    from moodlane.engine.symbolic.generator import SamplingConfig, SymbolicGenerator

    # batch-1 decoding of a small model is latency-bound: more threads only spin (measured:
    # 19 tokens/s with 2 threads beside another busy process, 525 with one)
    torch.set_num_threads(1)
    sampling = SamplingConfig(temperature=opts.temperature, mapping=opts.mapping, mode_rule=opts.mode_rule, guidance=opts.guidance)
    return SymbolicGenerator.load(opts.checkpoint, sampling=sampling, precision=opts.precision)
