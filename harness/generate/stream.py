"""Multi-node generation without a shared filesystem: rank 0 alone owns the run directory.

    rank 0: check the run directory ──► broadcast what it holds ──► generate its share,
            and a thread per other rank receives that rank's finished samples;
            every sample (its own or received) goes into the run's partial and completions files
    rank r: generate its share ──► send each finished sample to rank 0 ──► "done"

The stream runs on a gloo group of its own (CPU tensors over TCP), beside the main group,
which may be nccl. A restarted job resumes from what rank 0 has: its partial files hold
every sample any rank finished, and the other ranks are told which samples exist.

Every failure ends: each rank > 0 also sends a heartbeat every HEARTBEAT_S, and every receive
and send of the side group gives up after STREAM_TIMEOUT_S (FLORA_EVAL_RANK_TIMEOUT). A rank
that dies (its connection closes) or hangs (no heartbeat) stops rank 0 with one line within
that time, after what it had sent was written; rank 0 dying stops the others the same way.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

from harness.errors import UserError
from harness.generate.distributed import World
from harness.generate.resume import Holding

DONE = "done"
BEAT = "beat"
HEARTBEAT_S = 5.0
STREAM_TIMEOUT_S = 120.0  # no message (sample or heartbeat) from a rank for this long: it is gone
TIMEOUT_ENV = "FLORA_EVAL_RANK_TIMEOUT"
RESUME = "the samples finished so far are kept: run the same command again to resume"
T = TypeVar("T")


def stream_timeout_s() -> float:
    return float(os.environ.get(TIMEOUT_ENV) or STREAM_TIMEOUT_S)


def heartbeat_s() -> float:
    """Often enough that a live rank is never taken for a lost one."""
    return min(HEARTBEAT_S, stream_timeout_s() / 4)


def side_group(world: World):
    """A gloo group of every rank for the object stream (collective: every rank calls it)."""
    if world.size == 1:
        return None
    import torch.distributed as dist

    return dist.new_group(backend="gloo", timeout=timedelta(seconds=stream_timeout_s()))


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


def lost_rank(rank: int, exc: BaseException) -> UserError:
    """The one line for a rank that stopped answering: died (its connection broke: closed or
    reset) or hung (nothing, not even a heartbeat, within the side group's timeout)."""
    why = (f"nothing from it in {stream_timeout_s():.0f} s" if "timed out" in str(exc).lower()
           else "its connection broke")
    return UserError(f"rank {rank} of the torchrun job stopped ({why}); {RESUME}")


@dataclass
class Sender:
    """Rank r > 0: each finished sample to rank 0, as (item position, sample index, text,
    finish reason), and a heartbeat from a thread while the rank computes."""

    group: object
    lock: threading.Lock = field(default_factory=threading.Lock)
    stopped: threading.Event = field(default_factory=threading.Event)
    failed: list[UserError] = field(default_factory=list)
    beating: threading.Thread | None = None

    def __post_init__(self) -> None:
        self.beating = threading.Thread(target=self._beat, daemon=True, name="heartbeat")
        self.beating.start()

    def _send(self, message) -> None:
        import torch.distributed as dist

        if self.failed:
            raise self.failed[0]
        with self.lock:
            try:
                dist.send_object_list([message], dst=0, group=self.group)
            except RuntimeError as exc:  # gloo: connection closed, or timed out
                self.failed.append(lost_rank(0, exc))
                raise self.failed[0] from None

    def _beat(self) -> None:
        while not self.stopped.wait(heartbeat_s()):
            try:
                self._send(BEAT)
            except UserError:
                return

    def add(self, position: int, index: int, text: str, reason: str) -> None:
        self._send((position, index, text, reason))

    def close(self) -> None:
        self.stopped.set()
        if self.beating is not None:
            self.beating.join()
        self._send(DONE)


@dataclass
class Receiver:
    """Rank 0: one thread per other rank, handing each received sample to `handle`. A rank
    that stops answering is noticed by `check` (between samples) and `join`."""

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
            try:
                dist.recv_object_list(box, src=rank, group=self.group)
            except RuntimeError as exc:  # gloo: the rank's connection closed, or nothing came in time
                self.errors.append(lost_rank(rank, exc))
                return
            if box[0] == DONE:
                return
            if box[0] == BEAT or self.errors:
                continue  # keep draining so the sender never blocks; the error is raised at join
            try:
                self.handle(*box[0])
            except BaseException as exc:  # raised in the main thread at check() or join()
                self.errors.append(exc)

    def check(self) -> None:
        if self.errors:
            raise self.errors[0]

    def watch(self, items: Iterable[T]) -> Iterator[T]:
        """`items`, checking between them that every rank still answers."""
        for item in items:
            self.check()
            yield item
        self.check()

    def join(self) -> None:
        """Wait for every rank's "done"; the first rank that stopped ends the wait at once."""
        for thread in self.threads:
            while thread.is_alive():
                self.check()
                thread.join(timeout=0.2)
        self.check()


def watched(items: Iterable[T], receiver: Receiver | None) -> Iterable[T]:
    """Rank 0's own samples, stopping as soon as another rank is lost (others: as they are)."""
    return receiver.watch(items) if receiver is not None else items
