"""The engine in a process of its own: the HTTP side and the scheduler never share a GIL.

    HTTP process                                   engine process
    EngineProcess.submit(job) ──("job", fields)──► Scheduler.submit (continuous batching)
    job.deliver(event) ◄──("event", id, Event)──── the scheduler's events
    EngineProcess.cancel(job) ──("cancel", id)───► Scheduler.cancel
    health()           ◄──("beat", loops)───────── every BEAT_S: the scheduler's loop count

Measured (bench serve --http): with the scheduler in a thread of the HTTP process, parsing
requests and writing answers took the GIL from the decode loop and the server ran at about
two thirds of the in-process engine's tokens/s on the tiny model; apart, the two overlap.
The HTTP side bounds the samples in flight (rows + `max_waiting`; more → 429) itself, so a
full server answers at once, without a round trip to the engine.

The engine process can die or hang. Its end of the pipe closes when it dies: the reader
fails every job in flight at once (503) and `dead` says why. A hung one (stopped, or a step
that never ends) stops beating or its loop count stops moving: `health` says "stalled" after
`stall_s`. Messages to it go through a sender thread, so a process that stopped reading
blocks that thread only, never an HTTP handler.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import queue
import threading
import time
from dataclasses import dataclass, fields

from harness.errors import UserError
from harness.serve.scheduler import Event, Job, Overloaded
from harness.serve.spec import ServeSpec

READY_TIMEOUT_S = 600  # loading a large model from disk may take minutes
REPLY_TIMEOUT_S = 10  # a telemetry round trip
BEAT_S = 0.5  # how often the engine process says how far its scheduler's loop has come
STOP_TIMEOUT_S = 15
log = logging.getLogger("flora_eval.serve")


class EngineUnavailable(Exception):
    """The engine process is dead, stalled or restarting: answer 503 with this message."""


@dataclass(frozen=True)
class Health:
    """What GET /health reports: "ok", "loading", "restarting", "stalled" or "dead"."""

    status: str
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def engine_main(spec: ServeSpec, conn) -> None:
    """The engine process: load, report ready (with what the HTTP side needs), then serve
    jobs until told to stop or the HTTP side goes away."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the HTTP side, which stops us
    logging.basicConfig(format="flora-eval serve (engine): %(message)s")
    try:
        from harness.serve.load import build_engine

        if spec.threads:
            import torch

            torch.set_num_threads(spec.threads)
        scheduler, info = build_engine(spec)
    except Exception as exc:  # noqa: BLE001 - one line back to the HTTP side, which stops
        conn.send(("fatal", str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}"))
        return
    lock = threading.Lock()
    stopping = threading.Event()

    def send(message) -> None:
        with lock:
            conn.send(message)

    jobs: dict[int, Job] = {}
    left: dict[int, int] = {}

    def deliver(job_id: int, event: Event) -> None:  # from the scheduler's thread
        with lock:
            if event.kind != "text" and job_id in left:
                left[job_id] = 0 if event.kind == "error" else left[job_id] - 1
                if left[job_id] <= 0:
                    jobs.pop(job_id, None)
                    left.pop(job_id, None)
            conn.send(("event", job_id, event))

    def beat() -> None:
        while not stopping.wait(BEAT_S):
            try:
                send(("beat", scheduler.loops))
            except (OSError, ValueError):
                return

    scheduler.start()
    conn.send(("ready", info))
    threading.Thread(target=beat, name="flora-eval-engine-beat", daemon=True).start()
    try:
        while True:
            kind, payload = conn.recv()
            if kind == "job":
                job_id = payload["id"]
                job = Job(**payload, deliver=lambda event, job_id=job_id: deliver(job_id, event))
                with lock:
                    jobs[job_id], left[job_id] = job, len(job.seeds)
                try:
                    scheduler.submit(job)
                except Overloaded as exc:  # the HTTP side counts first; a cancel may not have landed yet
                    deliver(job_id, Event("error", text=str(exc), status=429))
            elif kind == "cancel":
                with lock:
                    job = jobs.pop(payload, None)
                    left.pop(payload, None)
                if job is not None:
                    scheduler.cancel(job)
            elif kind == "telemetry":
                send(("telemetry", payload,
                      {**scheduler.telemetry.as_dict(), "live_rows": scheduler.live_rows()}))
            elif kind == "stop":
                break
    except (EOFError, OSError):
        pass  # the HTTP side is gone
    finally:
        stopping.set()
        scheduler.stop()


class EngineProcess:
    """The HTTP side's handle on one engine process; the same verbs as a Scheduler, plus
    `health` and `dead`."""

    def __init__(self, spec: ServeSpec, stall_s: float = 60.0):
        context = multiprocessing.get_context("spawn")
        self.spec, self.options, self.stall_s = spec, spec.options, stall_s
        self.conn, self._child = context.Pipe()
        self.process = context.Process(target=engine_main, args=(spec, self._child), name="flora-eval-engine",
                                       daemon=True)
        self.dead: str | None = None  # why the process is gone, once it is
        self.died = threading.Event()
        self._lock = threading.Lock()
        self._jobs: dict[int, Job] = {}
        self._left: dict[int, int] = {}
        self._in_flight = 0
        self._rejected = 0
        self._loops = -1
        self._progress_at = time.monotonic()
        self._replies: dict[int, dict] = {}
        self._reply_ids = itertools.count()
        self._reply_ready = threading.Condition(self._lock)
        self._outbox: queue.SimpleQueue = queue.SimpleQueue()
        self._reader = threading.Thread(target=self._read, name="flora-eval-engine-reader", daemon=True)
        self._sender = threading.Thread(target=self._send_loop, name="flora-eval-engine-sender", daemon=True)

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def start(self) -> dict:
        """Start the engine process and wait until it has loaded; returns what it reported."""
        self.process.start()
        self._child.close()  # ours closed, the pipe ends when the process does: EOF, not a hang
        if not self.conn.poll(READY_TIMEOUT_S):
            self.process.kill()
            raise UserError(f"the engine process did not load {self.spec.model} in {READY_TIMEOUT_S} s")
        try:
            kind, info = self.conn.recv()
        except (EOFError, OSError):
            self.process.join(timeout=10)
            raise UserError(f"the engine process died while loading {self.spec.model} "
                            f"({exit_text(self.process.exitcode)})") from None
        if kind == "fatal":
            self.process.join(timeout=10)
            raise UserError(info)
        self._progress_at = time.monotonic()
        self._reader.start()
        self._sender.start()
        return info

    def stop(self) -> None:
        """Ask the engine to stop; kill it when it does not within STOP_TIMEOUT_S (or is stalled)."""
        self._outbox.put(("stop", None))
        self._outbox.put(None)
        self.process.join(timeout=1 if self.health().status == "stalled" else STOP_TIMEOUT_S)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=STOP_TIMEOUT_S)

    def health(self) -> Health:
        if self.dead:
            return Health("dead", self.dead)
        quiet = time.monotonic() - self._progress_at
        if quiet > self.stall_s:
            return Health("stalled", f"the engine process has made no progress for {quiet:.0f} s "
                                     f"(--stall-timeout {self.stall_s:g}); {self._in_flight} samples wait")
        return Health("ok")

    def submit(self, job: Job) -> None:
        """Refuse (Overloaded) when rows + max_waiting samples are already in flight, and
        (EngineUnavailable) when the engine is dead or stalled."""
        n = len(job.seeds)
        limit = self.options.max_rows + self.options.max_waiting
        with self._lock:
            health = self.health()
            if not health.ok:
                raise EngineUnavailable(health.message)
            if self._in_flight + n > limit:
                self._rejected += 1
                raise Overloaded(f"{self._in_flight} samples are in flight; the server takes at most {limit} "
                                 "(--max-rows + --max-waiting): retry later")
            self._in_flight += n
            self._jobs[job.id] = job
            self._left[job.id] = n
        self._outbox.put(("job", {f.name: getattr(job, f.name) for f in fields(Job)
                                  if f.name not in ("deliver", "cancelled")}))

    def cancel(self, job: Job) -> None:
        """The client left (or its deadline passed): its samples no longer count, the engine
        drops its rows."""
        with self._lock:
            if self._jobs.pop(job.id, None) is None:
                return
            self._in_flight -= self._left.pop(job.id)
        self._outbox.put(("cancel", job.id))

    def snapshot(self) -> dict:
        """The engine's counters (GET /telemetry), plus the 429s answered here."""
        health = self.health()
        if not health.ok:
            raise EngineUnavailable(health.message)
        reply_id = next(self._reply_ids)
        self._outbox.put(("telemetry", reply_id))
        with self._reply_ready:
            answered = self._reply_ready.wait_for(lambda: reply_id in self._replies or self.dead,
                                                  REPLY_TIMEOUT_S)
            if not answered:
                raise EngineUnavailable(f"the engine process did not answer in {REPLY_TIMEOUT_S} s")
            if reply_id not in self._replies:
                raise EngineUnavailable(self.dead)
            reply = self._replies.pop(reply_id)
        return {**reply, "rejected": self._rejected}

    def _send_loop(self) -> None:
        while (message := self._outbox.get()) is not None:
            try:
                self.conn.send(message)
            except (OSError, ValueError):
                return  # the process is gone; the reader sees the pipe close and says so

    def _read(self) -> None:
        while True:
            try:
                message = self.conn.recv()
            except (EOFError, OSError):
                self._died()
                return
            if message[0] == "beat":
                if message[1] != self._loops:
                    self._loops, self._progress_at = message[1], time.monotonic()
                continue
            if message[0] == "telemetry":
                with self._reply_ready:
                    self._replies[message[1]] = message[2]
                    self._reply_ready.notify_all()
                continue
            _, job_id, event = message
            with self._lock:
                job = self._jobs.get(job_id)
                if job is None:
                    continue
                finished = {"done": 1, "error": self._left[job_id]}.get(event.kind, 0)
                self._left[job_id] -= finished
                self._in_flight -= finished
                if self._left[job_id] <= 0:
                    del self._jobs[job_id], self._left[job_id]
            job.deliver(event)

    def _died(self) -> None:
        """The pipe closed: fail every job in flight (503) and say why, once."""
        self.process.join(timeout=5)
        message = f"the engine process died ({exit_text(self.process.exitcode)})"
        with self._reply_ready:
            self.dead = message
            jobs = list(self._jobs.values())
            self._jobs.clear()
            self._left.clear()
            self._in_flight = 0
            self._reply_ready.notify_all()
        self._outbox.put(None)
        for job in jobs:
            job.deliver(Event("error", text=f"{message}; this request was lost, retry it", status=503))
        self.died.set()


def exit_text(code: int | None) -> str:
    """`exit 1`, `killed by SIGKILL` or `still running` for a process's exit code."""
    import signal

    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit {code}"


__all__ = ["EngineProcess", "EngineUnavailable", "Health", "engine_main", "exit_text"]
