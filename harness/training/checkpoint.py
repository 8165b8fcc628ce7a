"""Checkpoints: adapter tensors, optimizer, RNG and data position, so `--resume` continues
exactly where the run stopped (same final weights as a run that was never interrupted).

    <out>/.checkpoints/<run key>/step-000250.pt     (the newest KEEP files are kept)
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from harness.errors import UserError

KEEP = 2
FORMAT = 1
_STEP_FILE = re.compile(r"step-(\d+)\.pt$")


@dataclass
class TrainState:
    """Everything that changes from step to step (what a checkpoint holds)."""

    step: int = 0  # optimizer steps done
    blocks_used: list[int] = field(default_factory=list)  # training blocks consumed, per adapter
    losses: list[list[float]] = field(default_factory=list)  # per step: one mean loss per adapter
    seconds: float = 0.0


@dataclass
class Checkpoint:
    step: int
    blocks_used: list[int]
    losses: list[list[float]]
    seconds: float
    adapter_tensors: list[list[torch.Tensor]]  # per adapter, its parameters in order
    optimizer: dict[str, Any]
    rng: torch.Tensor
    fingerprint: str = ""

    @classmethod
    def of(cls, state: TrainState, adapters, optimizer, n: int) -> Checkpoint:
        tensors = [[p.detach().to("cpu").clone() for p in adapters.parameters_of(i)] for i in range(n)]
        return cls(step=state.step, blocks_used=list(state.blocks_used),
                   losses=[list(x) for x in state.losses], seconds=state.seconds, adapter_tensors=tensors,
                   optimizer=optimizer.state_dict(), rng=torch.get_rng_state())

    def restore(self, adapters, optimizer, n: int) -> TrainState:
        """Put the saved tensors, optimizer and RNG back; return the loop's TrainState."""
        if len(self.adapter_tensors) != n:
            raise UserError(f"checkpoint holds {len(self.adapter_tensors)} adapters, this run trains {n}; "
                            "resume with the command that wrote it")
        with torch.no_grad():
            for i, saved in enumerate(self.adapter_tensors):
                for param, tensor in zip(adapters.parameters_of(i), saved, strict=True):
                    param.copy_(tensor)
        optimizer.load_state_dict(self.optimizer)
        torch.set_rng_state(self.rng)
        return TrainState(step=self.step, blocks_used=list(self.blocks_used),
                          losses=[list(x) for x in self.losses], seconds=self.seconds)


@dataclass(frozen=True)
class CheckpointStore:
    """The checkpoints of one run (one set of adapters and config, named by its fingerprint)."""

    root: Path
    fingerprint: str

    def save(self, checkpoint: Checkpoint) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        checkpoint.fingerprint = self.fingerprint
        path = self.root / f"step-{checkpoint.step:06d}.pt"
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        try:
            torch.save({"format": FORMAT, **vars(checkpoint)}, tmp)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        for old in self.files()[:-KEEP]:
            old.unlink(missing_ok=True)
        return path

    def files(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return sorted((p for p in self.root.iterdir() if _STEP_FILE.search(p.name)),
                      key=lambda p: int(_STEP_FILE.search(p.name).group(1)))

    def latest(self) -> Checkpoint | None:
        files = self.files()
        if not files:
            return None
        data = torch.load(files[-1], map_location="cpu", weights_only=False)
        data.pop("format", None)
        checkpoint = Checkpoint(**data)
        if checkpoint.fingerprint != self.fingerprint:
            raise UserError(f"{files[-1]} was written by a run with other settings; rerun the same "
                            "command to resume, or drop --resume to start again")
        return checkpoint

    def clear(self) -> None:
        for path in self.files():
            path.unlink(missing_ok=True)
