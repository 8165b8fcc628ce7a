"""Multi-node generation without a shared filesystem: rank 0 alone owns the run directory.

    rank 0: check the run directory ──► broadcast what it holds ──► generate its share,
            and a thread per other rank receives that rank's finished samples;
            every sample (its own or received) goes into the run's partial and completions files
    rank r: generate its share ──► send each finished sample to rank 0 ──► "done"

The stream runs on a gloo group of its own (CPU tensors over TCP), beside the main group,
which may be nccl. A restarted job resumes from what rank 0 has: its partial files hold
every sample any rank finished, and the other ranks are told which samples exist.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import UserError
from harness.generate.distributed import World
from harness.generate.resume import Holding

DONE = "done"


def side_group(world: World):
    """A gloo group of every rank for the object stream (collective: every rank calls it)."""
    if world.size == 1:
        return None
    import torch.distributed as dist

    return dist.new_group(backend="gloo")


def share_holdings(world: World, group, held: dict[Path, Holding] | None, error: str = "",
                   paths: list[Path] | None = None) -> dict[Path, Holding]:
    """Rank 0's holdings on every rank: which items are complete and which samples exist (the
    texts stay on rank 0). An `error` of rank 0 (a conflicting file) stops every rank."""
    if world.size == 1:
        if error:
            raise UserError(error)
        return held or {}
    import torch.distributed as dist

    payload = [None]
    if world.rank == 0:
        payload = [{"error": error, "held": {str(p): (h.complete, sorted(h.samples))
                                             for p, h in (held or {}).items()}}]
    dist.broadcast_object_list(payload, src=0, group=group)
    if payload[0]["error"]:
        raise UserError(payload[0]["error"])
    if world.rank == 0:
        return held or {}
    return {Path(p): Holding(samples=dict.fromkeys(indices, ""), complete=complete)
            for p, (complete, indices) in payload[0]["held"].items()}


@dataclass
class Sender:
    """Rank r > 0: each finished sample to rank 0, as (item position, sample index, text,
    finish reason)."""

    group: object

    def add(self, position: int, index: int, text: str, reason: str) -> None:
        import torch.distributed as dist

        dist.send_object_list([(position, index, text, reason)], dst=0, group=self.group)

    def close(self) -> None:
        import torch.distributed as dist

        dist.send_object_list([DONE], dst=0, group=self.group)


@dataclass
class Receiver:
    """Rank 0: one thread per other rank, handing each received sample to `handle`."""

    world: World
    group: object
    handle: Callable[[int, int, str, str], None]
    threads: list[threading.Thread] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)

    def start(self) -> Receiver:
        for rank in range(1, self.world.size):
            thread = threading.Thread(target=self._receive, args=(rank,), daemon=True,
                                      name=f"from-rank-{rank}")
            self.threads.append(thread)
            thread.start()
        return self

    def _receive(self, rank: int) -> None:
        import torch.distributed as dist

        while True:
            box = [None]
            dist.recv_object_list(box, src=rank, group=self.group)
            if box[0] == DONE:
                return
            if self.errors:
                continue  # keep draining so the sender never blocks; the error is raised at join
            try:
                self.handle(*box[0])
            except BaseException as exc:  # raised in the main thread at join()
                self.errors.append(exc)

    def join(self) -> None:
        for thread in self.threads:
            thread.join()
        if self.errors:
            raise self.errors[0]
