"""Keeps an engine process behind the server: restarts it when it dies, a bounded number of
times, and stops the server with one line when it may not.

    engine dies ──► its requests answered 503 at once ──► log one line, start a new engine
    process (same model and adapters; requests meanwhile 503 "restarting", /health 503) ──►
    serving again
    died MAX_RESTARTS times within RESTART_WINDOW_S, or the new one does not load, or it
    loaded other files (another identity) ──► log one line, stop the server (`on_fatal`)

A stalled engine (no progress for `stall_s`) is reported by /health and refused new work,
not killed: a slow step is not a dead one. Kill it, and it is restarted.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from harness.errors import UserError
from harness.serve.engine_process import EngineProcess, EngineUnavailable, Health
from harness.serve.scheduler import Job
from harness.serve.spec import ServeSpec

MAX_RESTARTS = 3
RESTART_WINDOW_S = 600.0
log = logging.getLogger("flora_eval.serve")


class Supervisor:
    """The app's handle on the engine, whichever process it is now: submit, cancel,
    snapshot, health."""

    def __init__(self, spec: ServeSpec, stall_s: float = 60.0):
        self.spec, self.stall_s = spec, stall_s
        self.engine = EngineProcess(spec, stall_s)
        self.info: dict = {}
        self.fatal: str | None = None  # why the server stopped, once it did
        self.on_fatal: Callable[[str], None] = lambda message: None
        self._restarts: deque[float] = deque()
        self._restarting: str | None = None
        self._stopping = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="flora-eval-engine-watch", daemon=True)

    def start(self) -> dict:
        self.info = self.engine.start()
        self._watcher.start()
        return self.info

    def stop(self) -> None:
        self._stopping.set()
        self.engine.died.set()  # wakes the watcher
        self.engine.stop()
        self._watcher.join(timeout=5)

    def health(self) -> Health:
        if self.fatal:
            return Health("dead", self.fatal)
        if self._restarting:
            return Health("restarting", self._restarting)
        return self.engine.health()

    def submit(self, job: Job) -> None:
        health = self.health()
        if not health.ok:
            raise EngineUnavailable(health.message)
        self.engine.submit(job)

    def cancel(self, job: Job) -> None:
        self.engine.cancel(job)

    def snapshot(self) -> dict:
        health = self.health()
        if not health.ok:
            raise EngineUnavailable(health.message)
        return self.engine.snapshot()

    def _watch(self) -> None:
        while True:
            self.engine.died.wait()
            if self._stopping.is_set():
                return
            if not self._restart():
                return

    def _restart(self) -> bool:
        """Start a new engine process in place of the dead one; False: the server stops."""
        why = self.engine.dead or "the engine process died"
        now = time.monotonic()
        while self._restarts and now - self._restarts[0] > RESTART_WINDOW_S:
            self._restarts.popleft()
        if len(self._restarts) >= MAX_RESTARTS:
            return self._give_up(f"{why}, the {MAX_RESTARTS + 1}th time in {RESTART_WINDOW_S / 60:g} min; "
                                 "the server stops")
        self._restarts.append(now)
        self._restarting = f"{why}; a new one is loading {self.spec.model}: retry in a few seconds"
        log.warning("%s; restarting it (restart %d of at most %d in %g min)", why, len(self._restarts),
                    MAX_RESTARTS, RESTART_WINDOW_S / 60)
        engine = EngineProcess(self.spec, self.stall_s)
        try:
            info = engine.start()
        except UserError as exc:
            return self._give_up(f"{why}, and its restart failed: {exc}; the server stops")
        if info["models"] != self.info["models"]:
            engine.stop()
            return self._give_up(f"{why}, and the restarted engine loaded other files (model or adapters "
                                 "changed on disk); the server stops")
        if self._stopping.is_set():
            engine.stop()
            return False
        self.engine, self._restarting = engine, None
        log.warning("the engine process is serving again (pid %s)", engine.pid)
        return True

    def _give_up(self, message: str) -> bool:
        self.fatal, self._restarting = message, None
        log.error("%s", message)
        self.on_fatal(message)
        return False


__all__ = ["MAX_RESTARTS", "Supervisor"]
