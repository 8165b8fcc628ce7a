"""What one training run is: plain values (the paper's defaults) and the adapters it trains.

Imports nothing heavy: the CLI builds these while building its parser. What a method is (its
default learning rate, whether it has a rank) the method says: `harness.adapters.methods`.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, field

SCHEDULES = ("constant", "linear", "cosine")


@dataclass(frozen=True)
class AdapterJob:
    """One adapter to train: its method, rank, language, data and learning rate."""

    name: str
    method: str
    rank: int | None  # None for a rankless method (IA3)
    lang: str
    lr: float
    data: str  # the corpus description recorded in metadata, e.g. "dir:/usr/share/perl"

    @property
    def seed_key(self) -> str:
        return f"{self.name}|{self.method}|{self.rank}|{self.lang}"


@dataclass(frozen=True)
class TrainConfig:
    """How adapters are trained; the paper's defaults (1,500 steps, batch 8)."""

    model: str
    steps: int = 1500
    batch_size: int = 8  # rows per adapter per optimizer step
    grad_accum: int = 1  # the batch is split into this many micro-batches
    seq_len: int = 1024
    schedule: str = "constant"
    warmup: int = 0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0  # clipped per adapter (0 = off), so mixing adapters changes nothing
    seed: int = 0
    heldout_fraction: float = 0.05
    eval_blocks: int = 32
    checkpoint_every: int = 250
    precision: str = "fp32"  # "fp32" | "bf16" (autocast on GPU)
    targets: tuple[str, ...] = field(default_factory=tuple)  # empty: the adapters package's defaults

    def __post_init__(self) -> None:
        if self.batch_size % self.grad_accum:
            raise ValueError(f"batch size {self.batch_size} is not a multiple of --grad-accum "
                             f"{self.grad_accum}")

    @property
    def micro_batch(self) -> int:
        return self.batch_size // self.grad_accum

    def fingerprint(self, jobs: list[AdapterJob]) -> str:
        """What a checkpoint must match to be resumed: everything that changes the math. Under a
        constant schedule the step count does not, so `--resume --steps N` extends a run."""
        skip = {"checkpoint_every", "eval_blocks"} | ({"steps"} if self.schedule == "constant" else set())
        values = {k: v for k, v in asdict(self).items() if k not in skip}
        text = repr((sorted(values.items()), [asdict(j) for j in jobs]))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def adapter_name(lang: str, rank: int | None, method: str) -> str:
    """`<lang>-r<R>-<method>` (`rb-r1-flora`), or `<lang>-<method>` without a rank (`rb-ia3`):
    the directory under adapters/ and what `--adapter` takes."""
    return f"{lang}-{method}" if rank is None else f"{lang}-r{rank}-{method}"


def adapter_seed(seed: int, job: AdapterJob) -> int:
    """An adapter's init seed depends on the run seed and the adapter, never on its position
    in the run, so training it alone or beside others starts from the same tensors."""
    digest = hashlib.sha256(f"{seed}|{job.seed_key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def lr_at(step: int, config: TrainConfig) -> float:
    """The learning-rate multiplier at `step` (0-based): linear warmup, then the schedule."""
    if config.warmup and step < config.warmup:
        return (step + 1) / config.warmup
    span = max(1, config.steps - config.warmup)
    progress = min(1.0, (step - config.warmup) / span)
    return {
        "constant": 1.0,
        "linear": 1.0 - progress,
        "cosine": 0.5 * (1.0 + math.cos(math.pi * progress)),
    }[config.schedule]
