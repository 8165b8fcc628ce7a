"""The trainer's one contact with `harness.adapters`: fresh adapters attached as trainable
banks (one leaf parameter per adapter and module), routing, and saving an adapter's file."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from harness.errors import UserError
from harness.training.config import AdapterJob, TrainConfig, adapter_seed


def method_config(job: AdapterJob, targets: tuple[str, ...] = (), alpha: float | None = None) -> Any:
    """The adapters package's config for `job`: its defaults (PEFT's targets for gpt_bigcode)
    with the rank, and the targets and LoRA alpha when given."""
    from harness.adapters.methods import method

    cls = method(job.method).config_cls
    names = {f.name for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    if job.rank is not None:
        values["r"] = job.rank
    if alpha is not None:
        if "lora_alpha" not in names:
            raise UserError(f"--alpha applies to LoRA only, not {job.method}; drop --alpha")
        values["lora_alpha"] = alpha
    if targets:
        values["target_modules"] = tuple(targets)
        if "feedforward_modules" in names:  # IA3: keep the feed-forward rule for targets that remain
            ff = cls.feedforward_modules if isinstance(cls.feedforward_modules, tuple) else ()
            values["feedforward_modules"] = tuple(t for t in ff if t in targets)
    return cls(**values)


@dataclass
class TrainingAdapters:
    """The attached trainable adapters, in the order of the run's jobs."""

    handle: Any  # harness.adapters.AdapterHandle

    def set_rows(self, rows: torch.Tensor) -> None:
        self.handle.set_rows(rows)

    def parameters_of(self, i: int) -> list[torch.nn.Parameter]:
        return self.handle.parameters(i)


def start(model: torch.nn.Module, jobs: list[AdapterJob], config: TrainConfig,
          alphas: list[float | None] | None = None) -> TrainingAdapters:
    """Fresh adapters for `jobs`, reproducible from (run seed, adapter), attached trainable."""
    from harness.adapters import attach, init_adapter

    alphas = alphas or [None] * len(jobs)
    fresh = [
        init_adapter(model, method_config(job, config.targets, alpha), name=job.name,
                     seed=adapter_seed(config.seed, job), metadata={"language": job.lang})
        for job, alpha in zip(jobs, alphas, strict=True)
    ]
    return TrainingAdapters(attach(model, fresh, trainable=True))


def save(adapters: TrainingAdapters, i: int, out_dir: Path, metadata: dict[str, Any]) -> str:
    """Write adapter i in the adapters package's (PEFT-shaped) format; return its content hash."""
    from harness.adapters import save_adapter

    return save_adapter(adapters.handle.export(i), out_dir, metadata=metadata).content_hash
