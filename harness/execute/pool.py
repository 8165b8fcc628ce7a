"""A pool of program slots for one language: one container (worker) per slot, each fed a
few programs at a time by its own driver thread, with a watchdog and retries.

Infrastructure failures (the engine refused, the worker died or stopped answering) put the
slot's unfinished programs back in the queue and start a fresh container; a program is
never scored from a failure of the sandbox. After `MAX_ATTEMPTS` such failures on one
program, the run stops with an error instead.

A worker that reports a harness fault (a program it could not start, say EAGAIN from fork
under pids pressure, or a cleanup that left processes of a program's uid alive) is retired:
the slot sends it nothing more, takes the answers of what it is running, puts back what it
bounced and goes on in a fresh container.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

from harness.errors import UserError
from harness.execute.languages import Language
from harness.execute.sandbox import Limits, SandboxError, WorkerConnection

MAX_ATTEMPTS = 3
WATCHDOG_GRACE_S = 30.0  # beyond the sum of a program's step timeouts
READY_TIMEOUT_S = 60.0


@dataclass
class Item:
    key: str  # unique in the pool
    index: int  # position in the caller's list
    source: str
    out: queue.Queue
    attempts: int = 0  # infrastructure failures so far (a bounce, never run, is not one)


class Pool:
    def __init__(self, client, lang: Language, image: str, slots: int, limits: Limits):
        self.client, self.lang, self.image, self.limits = client, lang, image, limits
        self.slots = max(1, slots)
        self.pending: deque[Item] = deque()
        self.cond = threading.Condition()
        self.stopping = False
        self.conns: set[WorkerConnection] = set()
        self.drivers: list[threading.Thread] = []
        self.max_program_s = sum(s.timeout_s for s in lang.steps) + WATCHDOG_GRACE_S
        self.restarts = 0  # containers that died or stopped answering
        self.retired = 0  # containers retired after a harness fault their worker reported
        self.infra_retries = 0  # programs run again after such a fault (spawn failure, ...)
        self.submitted = 0

    # -- public -------------------------------------------------------------------------
    def run(self, sources: list[str]) -> Iterator[tuple[int, list[dict]]]:
        """Run every source; yield (index, step outcomes) as each finishes."""
        if not sources:
            return
        out: queue.Queue = queue.Queue()
        with self.cond:
            first = self.submitted
            self.submitted += len(sources)
            self.pending.extend(Item(str(first + i), i, s, out) for i, s in enumerate(sources))
            self.cond.notify_all()
        self._start_drivers()
        for _ in range(len(sources)):
            kind, index, payload = out.get()
            if kind == "failed":
                last = " | ".join(line.strip() for line in str(payload).splitlines() if line.strip())
                raise UserError(f"the {self.lang.key} sandbox failed {MAX_ATTEMPTS} times on one program "
                                f"(last: {last[:500]}); check `docker info` and `flora-eval images check "
                                f"{self.lang.key}`")
            yield index, payload

    def close(self) -> None:
        with self.cond:
            self.stopping = True
            self.pending.clear()
            self.cond.notify_all()
            conns = list(self.conns)
        for conn in conns:
            conn.close()

    # -- drivers ------------------------------------------------------------------------
    def _start_drivers(self) -> None:
        while len(self.drivers) < self.slots:
            t = threading.Thread(target=self._drive, daemon=True, name=f"slot-{len(self.drivers)}")
            self.drivers.append(t)
            t.start()

    def _connect(self, answers: queue.Queue) -> WorkerConnection:
        conn = WorkerConnection(self.client, self.image, self.lang, self.limits,
                                on_line=lambda obj: answers.put(("line", obj)),
                                on_close=lambda reason: answers.put(("closed", reason)))
        with self.cond:
            self.conns.add(conn)
        if not conn.ready.wait(READY_TIMEOUT_S) or not conn.started:
            self._drop(conn)
            why = conn.stderr_tail() or "no answer"
            raise SandboxError(f"the worker did not start in {self.image}: {why}")
        return conn

    def _drop(self, conn: WorkerConnection) -> None:
        conn.close()
        with self.cond:
            self.conns.discard(conn)

    def _take(self, n: int, block: bool) -> list[Item]:
        with self.cond:
            while block and not self.pending and not self.stopping:
                self.cond.wait(timeout=1.0)
            taken = []
            while self.pending and len(taken) < n and not self.stopping:
                taken.append(self.pending.popleft())
            return taken

    def _retry(self, items: list[Item], reason: str, count: bool = True) -> None:
        with self.cond:
            for item in items:
                item.attempts += count
                if item.attempts >= MAX_ATTEMPTS:
                    item.out.put(("failed", item.index, reason))
                else:
                    self.pending.appendleft(item)
            self.cond.notify_all()

    def _drive(self) -> None:
        depth = self.limits.lanes + 1  # one waiting per lane, so a lane never idles
        while not self.stopping:
            first = self._take(1, block=True)
            if not first:
                continue
            answers: queue.Queue = queue.Queue()
            try:
                conn = self._connect(answers)
            except SandboxError as exc:
                self._retry(first, str(exc))
                time.sleep(1.0)
                continue
            self._serve(conn, answers, first, depth)
            self._drop(conn)

    def _serve(self, conn: WorkerConnection, answers: queue.Queue, first: list[Item], depth: int) -> None:
        """Feed one connection until it fails or there is no more work."""
        inflight: dict[str, Item] = {}
        backlog = list(first)
        last_progress = time.monotonic()
        retiring = ""  # why this worker gets nothing more; the slot leaves once it is idle
        while not self.stopping:
            if retiring and not inflight:
                with self.cond:
                    self.retired += 1
                return
            if not inflight and not backlog:
                backlog = self._take(depth, block=True)  # idle: keep the warm container
                if not backlog:
                    break
            if not retiring:
                backlog += self._take(depth - len(inflight) - len(backlog), block=False)
            try:
                while backlog:
                    item = backlog[0]
                    if not inflight:
                        last_progress = time.monotonic()
                    conn.send({"id": item.key, "source": item.source})
                    inflight[item.key] = backlog.pop(0)
            except SandboxError as exc:
                self._retry(list(inflight.values()) + backlog, str(exc))
                return
            try:
                kind, obj = answers.get(timeout=1.0)
            except queue.Empty:
                if time.monotonic() - last_progress > self.max_program_s:
                    self.restarts += 1
                    self._retry(list(inflight.values()), "the worker stopped answering")
                    return
                continue
            if kind == "closed":
                self.restarts += 1
                self._retry(list(inflight.values()), obj)
                return
            item = inflight.pop(obj.get("id"), None)
            if item is None:
                continue
            last_progress = time.monotonic()
            if "error" in obj:
                bounced = bool(obj.get("bounced"))
                with self.cond:
                    self.infra_retries += not bounced
                self._retry([item], f"worker error: {obj['error']}", count=not bounced)
                retiring = retiring or obj["error"]
            else:
                item.out.put(("done", item.index, obj["steps"]))
                retiring = retiring or obj.get("retire", "")
        self._retry(list(inflight.values()) + backlog, "pool closed")
