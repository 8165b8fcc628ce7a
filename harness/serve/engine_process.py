"""The engine in a process of its own: the HTTP side and the scheduler never share a GIL.

    HTTP process                                   engine process
    EngineProcess.submit(job) ──("job", fields)──► Scheduler.submit (continuous batching)
    job.deliver(event) ◄──("event", id, Event)──── the scheduler's events
    EngineProcess.cancel(job) ──("cancel", id)───► Scheduler.cancel

Measured (bench serve --http): with the scheduler in a thread of the HTTP process, parsing
requests and writing answers took the GIL from the decode loop and the server ran at about
two thirds of the in-process engine's tokens/s on the tiny model; apart, the two overlap.
The HTTP side bounds the samples in flight (rows + `max_waiting`; more → 429) itself, so a
full server answers at once, without a round trip to the engine.
"""

from __future__ import annotations

import multiprocessing
import threading
from dataclasses import fields

from harness.errors import UserError
from harness.serve.scheduler import Event, Job, Overloaded
from harness.serve.spec import ServeSpec

READY_TIMEOUT_S = 600  # loading a large model from disk may take minutes
REPLY_TIMEOUT_S = 30


def engine_main(spec: ServeSpec, conn) -> None:
    """The engine process: load, report ready (with what the HTTP side needs), then serve
    jobs until told to stop or the HTTP side goes away."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the HTTP side, which stops us
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

    scheduler.start()
    conn.send(("ready", info))
    try:
        while True:
            kind, payload = conn.recv()
            if kind == "job":
                job_id = payload["id"]
                job = Job(**payload, deliver=lambda event, job_id=job_id: deliver(job_id, event))
                with lock:
                    jobs[job_id], left[job_id] = job, len(job.seeds)
                scheduler.submit(job)
            elif kind == "cancel":
                with lock:
                    job = jobs.pop(payload, None)
                    left.pop(payload, None)
                if job is not None:
                    scheduler.cancel(job)
            elif kind == "telemetry":
                send(("telemetry", {**scheduler.telemetry.as_dict(), "live_rows": scheduler.live_rows()}))
            elif kind == "stop":
                break
    except (EOFError, OSError):
        pass  # the HTTP side is gone
    finally:
        scheduler.stop()


class EngineProcess:
    """The HTTP side's handle on the engine process; the same verbs as a Scheduler."""

    def __init__(self, spec: ServeSpec):
        context = multiprocessing.get_context("spawn")
        self.spec, self.options = spec, spec.options
        self.conn, child = context.Pipe()
        self.process = context.Process(target=engine_main, args=(spec, child), name="flora-eval-engine",
                                       daemon=True)
        self._lock = threading.Lock()
        self._jobs: dict[int, Job] = {}
        self._left: dict[int, int] = {}
        self._in_flight = 0
        self._rejected = 0
        self._replies: list = []
        self._reply_ready = threading.Condition(self._lock)
        self._reader = threading.Thread(target=self._read, name="flora-eval-engine-reader", daemon=True)

    def start(self) -> dict:
        """Start the engine process and wait until it has loaded; returns what it reported."""
        self.process.start()
        if not self.conn.poll(READY_TIMEOUT_S):
            self.process.kill()
            raise UserError(f"the engine process did not load {self.spec.model} in {READY_TIMEOUT_S} s")
        try:
            kind, info = self.conn.recv()
        except EOFError:
            raise UserError(f"the engine process died while loading {self.spec.model}") from None
        if kind == "fatal":
            self.process.join(timeout=10)
            raise UserError(info)
        self._reader.start()
        return info

    def stop(self) -> None:
        try:
            with self._lock:
                self.conn.send(("stop", None))
        except (OSError, ValueError):
            pass
        self.process.join(timeout=15)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()

    def submit(self, job: Job) -> None:
        """Refuse (Overloaded) when rows + max_waiting samples are already in flight."""
        n = len(job.seeds)
        limit = self.options.max_rows + self.options.max_waiting
        with self._lock:
            if self._in_flight + n > limit:
                self._rejected += 1
                raise Overloaded(f"{self._in_flight} samples are in flight; the server takes at most {limit} "
                                 "(--max-rows + --max-waiting): retry later")
            self._in_flight += n
            self._jobs[job.id] = job
            self._left[job.id] = n
            self.conn.send(("job", {f.name: getattr(job, f.name) for f in fields(Job)
                                    if f.name not in ("deliver", "cancelled")}))

    def cancel(self, job: Job) -> None:
        """The client left: its samples no longer count, the engine drops its rows."""
        with self._lock:
            if self._jobs.pop(job.id, None) is not None:
                self._in_flight -= self._left.pop(job.id)
                self.conn.send(("cancel", job.id))

    def snapshot(self) -> dict:
        """The engine's counters (GET /telemetry), plus the 429s answered here."""
        with self._lock:
            self.conn.send(("telemetry", None))
            if not self._reply_ready.wait_for(lambda: self._replies, REPLY_TIMEOUT_S):
                raise TimeoutError("the engine process did not answer")
            reply = self._replies.pop(0)
        return {**reply, "rejected": self._rejected}

    def _read(self) -> None:
        while True:
            try:
                message = self.conn.recv()
            except (EOFError, OSError):
                self._fail_all("the engine process stopped")
                return
            if message[0] == "telemetry":
                with self._reply_ready:
                    self._replies.append(message[1])
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

    def _fail_all(self, message: str) -> None:
        with self._lock:
            jobs = list(self._jobs.values())
            self._jobs.clear()
            self._left.clear()
            self._in_flight = 0
        for job in jobs:
            job.deliver(Event("error", text=message))


__all__ = ["EngineProcess", "engine_main"]
