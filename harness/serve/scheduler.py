"""The server's scheduler: one thread owns the engine and its decode batch.

    HTTP handlers ──submit(Job)──► inbox ──► admit waiting jobs: their prompts prefilled
    together (one forward, each row with its own adapter, ≤ max_batched_tokens) ──► place
    their samples into free rows ──► one decode step for every live row (every adapter in
    the same batch) ──► events (text so far, finished samples) back to each handler

A job is one HTTP request: a prompt under one adapter and its n samples, each with its own
seed. The engine seeds a sample exactly as the generate stage does (`Request.samples`:
(index, seed) pairs), so a request sent with the seed of a sample of a run gets that
sample's completion. Jobs wait in a bounded queue (`max_waiting` samples): beyond it
`submit` raises `Overloaded` (HTTP 429) instead of queueing without bound. A cancelled job
(its client left) loses its rows at the next step.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch

from harness.generate.attention import shared_prefix_attention
from harness.generate.engine import DecodeBatch, Engine, Request, Sample
from harness.generate.stops import stop_index

IDLE_WAIT_S = 0.5  # an idle scheduler wakes this often to see whether it should stop
_job_ids = itertools.count()
log = logging.getLogger("flora_eval.serve")


class Overloaded(Exception):
    """More samples wait than the server queues: answer 429, the client retries later."""


@dataclass(frozen=True)
class Event:
    """What a job's handler hears: `text` (a choice's safe text so far, streaming only),
    `done` (a choice finished: its text, finish reason and token count) or `error` (its
    message for the client and the HTTP status to answer with)."""

    kind: str
    index: int = 0
    text: str = ""
    finish_reason: str | None = None
    tokens: int = 0
    status: int = 500


@dataclass(eq=False)
class Job:
    """One request: a prompt under one adapter (`adapter_index`, -1 = base) and its samples."""

    prompt_ids: tuple[int, ...]
    adapter_index: int
    seeds: tuple[int, ...]  # one per choice
    deliver: Callable[[Event], None]  # thread-safe: called from the scheduler's thread
    stop: tuple[str, ...] = ()
    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    stream: bool = False
    end_ids: tuple[int, ...] = ()  # tokens that also end a sample (a chat template's end of turn)
    id: int = field(default_factory=lambda: next(_job_ids))
    cancelled: bool = False

    def request(self) -> Request:
        return Request((self.id,), self.prompt_ids, self.adapter_index, tuple(enumerate(self.seeds)),
                       self.stop, self.max_tokens, self.temperature, self.top_p, self.end_ids)


@dataclass
class ServeTelemetry:
    """Counters for GET /telemetry: what was served and how it was batched."""

    requests: int = 0
    completed: int = 0
    cancelled: int = 0
    cancelled_rows: int = 0
    rejected: int = 0  # 429: the queue was full
    errors: int = 0
    prefill_forwards: int = 0
    prefill_prompts: int = 0
    prefill_tokens: int = 0
    max_prompts_per_prefill: int = 0
    max_adapters_per_prefill: int = 0
    decode_steps: int = 0
    decode_tokens: int = 0
    max_rows_per_step: int = 0
    steps_by_adapters: Counter = field(default_factory=Counter)  # distinct adapters in a step → steps
    busy_seconds: float = 0.0

    def as_dict(self) -> dict:
        out = {k: v for k, v in vars(self).items() if k != "steps_by_adapters"}
        out["steps_by_adapters"] = {str(k): v for k, v in sorted(self.steps_by_adapters.items())}
        out["max_adapters_per_step"] = max(self.steps_by_adapters, default=0)
        out["busy_seconds"] = round(self.busy_seconds, 3)
        return out


class Scheduler:
    """Continuous batching over `engine` for jobs arriving from other threads."""

    def __init__(self, engine: Engine, max_rows: int, max_waiting: int, max_batched_tokens: int):
        self.engine, self.max_rows = engine, max_rows
        self.max_waiting, self.max_batched_tokens = max_waiting, max_batched_tokens
        self.telemetry = ServeTelemetry()
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._inbox: list[Job] = []
        self._queued = 0  # samples submitted and not yet given a row
        self._stopping = False
        self._jobs: dict[int, Job] = {}
        self._left: dict[int, int] = {}  # job id → choices not finished
        self._sent: dict[tuple[int, int], int] = {}  # (job, choice) → streamed characters
        self._waiting: deque[Job] = deque()
        self._placing: deque = deque()  # prefilled prompts with samples still to place
        self.batch = DecodeBatch(engine, 1)
        self.loops = 0  # turns of the scheduler's loop: a number that stops moving means a stall
        self._thread = threading.Thread(target=self._run, name="flora-eval-scheduler", daemon=True)

    # -- called from the HTTP handlers' threads -----------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._thread.join(timeout=10)

    def submit(self, job: Job) -> None:
        with self._wake:
            if self._queued + len(job.seeds) > self.max_waiting:
                self.telemetry.rejected += 1
                raise Overloaded(f"{self._queued} samples are waiting; the server queues at most "
                                 f"{self.max_waiting}: retry later")
            self._queued += len(job.seeds)
            self.telemetry.requests += 1
            self._inbox.append(job)
            self._wake.notify()

    def cancel(self, job: Job) -> None:
        """The client left: drop the job's rows at the next step."""
        with self._wake:
            job.cancelled = True
            self._wake.notify()

    def live_rows(self) -> int:
        return self.batch.active()

    # -- the scheduler's thread --------------------------------------------------------------------
    def _run(self) -> None:
        engine = self.engine
        sharing = shared_prefix_attention(engine.model) if engine.share_prefixes else nullcontext()
        with torch.inference_mode(), sharing:
            while self._receive():
                start = time.perf_counter()
                try:
                    self._drop_cancelled()
                    self._admit()
                    self._place()
                    if self.batch.active():
                        self._step()
                except Exception as exc:  # a fault of ours fails the jobs in flight, not the server
                    self._fail_all(exc)
                self.telemetry.busy_seconds += time.perf_counter() - start
                self.loops += 1

    def _receive(self) -> bool:
        """Take new jobs; block while there is nothing to do. False: stop."""
        with self._wake:
            idle = not (self.batch.active() or self._waiting or self._placing or self._inbox)
            if idle and not self._stopping:
                self._wake.wait(IDLE_WAIT_S)
            for job in self._inbox:
                self._jobs[job.id] = job
                self._left[job.id] = len(job.seeds)
                self._waiting.append(job)
            self._inbox.clear()
            return not self._stopping

    def _drop_cancelled(self) -> None:
        gone = {job_id for job_id, job in self._jobs.items() if job.cancelled}
        if not gone:
            return
        self.telemetry.cancelled += len(gone)
        self.telemetry.cancelled_rows += self.batch.evict({(job_id,) for job_id in gone})
        unplaced = sum(len(j.seeds) for j in self._waiting if j.id in gone)
        unplaced += sum(len(p.todo) for p in self._placing if p.request.key[0] in gone)
        self._waiting = deque(j for j in self._waiting if j.id not in gone)
        self._placing = deque(p for p in self._placing if p.request.key[0] not in gone)
        with self._lock:
            self._queued -= unplaced
        for job_id in gone:
            self._forget(job_id)

    def _admit(self) -> None:
        """Prefill waiting jobs' prompts together while rows and the token budget allow."""
        room = self.max_rows - self.batch.active() - sum(len(p.todo) for p in self._placing)
        group: list[Job] = []
        longest = 0
        while self._waiting and room > 0:
            job = self._waiting[0]
            longest_then = max(longest, len(job.prompt_ids))
            if group and longest_then * (len(group) + 1) > self.max_batched_tokens:
                break
            group.append(self._waiting.popleft())
            longest, room = longest_then, room - len(job.seeds)
        if not group:
            return
        prompts = self.engine.prefill([job.request() for job in group])
        self._placing.extend(prompts)
        t = self.telemetry
        t.prefill_forwards += 1
        t.prefill_prompts += len(group)
        t.prefill_tokens += sum(len(job.prompt_ids) for job in group)
        t.max_prompts_per_prefill = max(t.max_prompts_per_prefill, len(group))
        t.max_adapters_per_prefill = max(t.max_adapters_per_prefill, len({j.adapter_index for j in group}))

    def _place(self) -> None:
        batch = self.batch
        while self._placing:
            prompt = self._placing[0]
            if not prompt.todo:
                self._placing.popleft()
                continue
            if len(batch.free_slots()) < len(prompt.todo) and batch.size < self.max_rows:
                wanted = batch.active() + sum(len(p.todo) for p in self._placing)
                batch.resize(min(self.max_rows, max(wanted, 2 * batch.active())))
            if not batch.free_slots():
                return
            before = len(prompt.todo)
            finished = list(batch.place(prompt))
            with self._lock:
                self._queued -= before - len(prompt.todo)
            self._finish(finished)

    def _step(self) -> None:
        batch, t = self.batch, self.telemetry
        live = batch.live()
        t.decode_steps += 1
        t.decode_tokens += len(live)
        t.max_rows_per_step = max(t.max_rows_per_step, len(live))
        t.steps_by_adapters[len(set(batch.adapters[live].tolist()))] += 1
        self._finish(list(batch.step()))
        self._stream()
        remaining = batch.active()
        if batch.size > 1 and remaining <= batch.size // 2 and not (self._waiting or self._placing):
            batch.resize(max(remaining, 1))  # an idle row still costs its share of every step

    def _stream(self) -> None:
        """Send streaming jobs the text their rows have so far, short of what might still
        become a stop sequence or an incomplete character."""
        for row in self.batch.rows:
            if row is None:
                continue
            job = self._jobs.get(row.request.key[0])
            if job is None or not job.stream:
                continue
            text = self.engine.text(row.tokens)
            cut = stop_index(text, job.stop) if job.stop else None
            if cut is not None:
                text = text[:cut]
            else:
                text = text[: len(text) - max((len(s) - 1 for s in job.stop), default=0)]
            text = text.rstrip("\ufffd")
            key = (job.id, row.index)
            if len(text) > self._sent.get(key, 0):
                self._sent[key] = len(text)
                job.deliver(Event("text", row.index, text))

    def _finish(self, finished: list[tuple[Request, Sample]]) -> None:
        for request, sample in finished:
            job = self._jobs.get(request.key[0])
            if job is None:
                continue
            limit = self.engine.token_limit(request)
            text = self.engine.text(list(sample.tokens))
            at_stop = bool(job.stop) and stop_index(text, job.stop) is not None
            reason = "length" if len(sample.tokens) >= limit and not at_stop else "stop"
            job.deliver(Event("done", sample.index, sample.text, reason, len(sample.tokens)))
            self._left[job.id] -= 1
            if self._left[job.id] == 0:
                self.telemetry.completed += 1
                self._forget(job.id)

    def _forget(self, job_id: int) -> None:
        job = self._jobs.pop(job_id, None)
        self._left.pop(job_id, None)
        if job is not None and job.stream:
            for index in range(len(job.seeds)):
                self._sent.pop((job_id, index), None)

    def _fail_all(self, exc: Exception) -> None:
        """Fail every job in flight and start again from an empty batch. The exception goes
        to the server's log, never to clients."""
        self.telemetry.errors += 1
        log.error("the engine failed on a batch of %d requests; they are answered 500", len(self._jobs),
                  exc_info=exc)
        message = "the server failed while decoding this request; its log has the details"
        for job in list(self._jobs.values()):
            job.deliver(Event("error", text=message))
            self._forget(job.id)
        self._waiting.clear()
        self._placing.clear()
        with self._lock:
            self._queued = sum(len(j.seeds) for j in self._inbox)
        self.batch = DecodeBatch(self.engine, 1)
