"""Data-parallel generation under torchrun: which work is this rank's, and the final gather.

Ranks split the (language, problem) list round-robin by position in the full, deterministic
list (not the still-missing part, which changes as ranks write files); a rank takes all the
adapters of its problems, writes their completions files, and rank 0 waits for all of them.
Per-sample seeds make the files identical to a one-process run. A rank lost during the final
gather or barrier ends the others with one line (`one_line`), not a traceback; one lost while
samples stream is noticed by the stream (stream.py).

    torchrun --nproc-per-node 2 -m harness.cli generate --model tiny ...   # gloo on CPU
    torchrun --nproc-per-node 8 -m harness.cli generate --device cuda ...  # nccl, one GPU each
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from harness.errors import UserError


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    owns_group: bool = False  # this module started the process group and ends it

    def mine(self, position: int) -> bool:
        return position % self.size == self.rank


def launched_size() -> int:
    """The world size torchrun set (1 when not under torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def local_device() -> str:
    """The device this rank should load the model on: its own GPU under torchrun, else cpu."""
    if torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return "cpu"


def join(device: torch.device) -> World:
    """Join torchrun's process group (gloo on CPU, nccl on GPU); a lone process is world 1."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size())
    if launched_size() <= 1:
        return World()
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend)
    return World(dist.get_rank(), dist.get_world_size(), owns_group=True)


def gather(world: World, payload: dict) -> list[dict]:
    """Every rank's payload on rank 0 (others get [])."""
    if world.size == 1:
        return [payload]
    import torch.distributed as dist

    out: list[dict] | None = [{} for _ in range(world.size)] if world.rank == 0 else None
    with one_line("the final gather"):
        dist.gather_object(payload, out, dst=0)
    return out or []


def leave(world: World) -> None:
    if world.size > 1:
        import torch.distributed as dist

        with one_line("the final barrier"):
            dist.barrier()
        if world.owns_group:
            dist.destroy_process_group()


@contextmanager
def one_line(where: str) -> Iterator[None]:
    """A rank lost during a collective (gloo: its connection closed, or the group's timeout;
    nccl: its watchdog) as one line instead of a traceback."""
    try:
        yield
    except RuntimeError as exc:  # torch.distributed's DistBackendError is one
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise UserError(f"a rank of the torchrun job stopped during {where} ({first}); the samples "
                        "finished so far are kept: run the same command again to resume") from None
