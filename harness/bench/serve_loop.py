"""The serving loop: continuous batching with arrival times, per-request output lengths and
a prefill budget, written as a thin driver over the generation engine's `Engine.prefill` and
`DecodeBatch` (`place`, `step`, `resize`).

Why not `Engine.generate`: it pulls the next request whenever a slot is free (no arrival
times: it would block decoding while waiting) and prefills without a budget per step. Each
request carries its own output length (`Request.max_new_tokens`; end-of-text ignored, as
vLLM's benchmark does). The loop here:

    admit requests that have arrived (prefill each, ≤ max_batched_tokens prompt tokens per
    step, ≤ max_rows live rows) ──► one decode step for all live rows ──► retire rows at
    their output length ──► drop idle slots when half are idle ──► repeat; idle: wait

Clocks: `wall` (GPU synchronised before each timestamp) or `process` (this process's CPU
seconds plus skipped idle time: the run as on a machine of its own, for busy shared CPUs).
"""

from __future__ import annotations

import statistics
import time
from collections import deque
from dataclasses import dataclass

from harness.bench.workload import ServeRequest


@dataclass(frozen=True)
class Served:
    """One run: wall seconds, and per request (index, arrival_s, finish_s, output tokens)."""

    seconds: float
    finished: tuple[tuple[int, float, float, int], ...]
    tokens: dict[int, tuple[int, ...]]  # request index -> its output tokens (greedy)
    decode_steps: int
    mean_rows: float  # rows per decode step


class WallClock:
    """Seconds since the run started (waits for the GPU first, so a timestamp means done)."""

    def __init__(self, device):
        self.device, self.start = device, time.perf_counter()

    def now(self) -> float:
        if self.device.type == "cuda":
            import torch

            torch.cuda.synchronize(self.device)
        return time.perf_counter() - self.start

    def wait_until(self, t: float) -> None:
        time.sleep(max(0.0, t - self.now()))


class ProcessClock:
    """This process's CPU seconds since the start, plus the idle time it skipped: the run as
    it would be on a machine of its own (with one torch thread). For shared CPU machines."""

    def __init__(self, device):
        if device.type != "cpu":
            raise ValueError("the process clock only measures CPU work; use the wall clock on a GPU")
        self.start, self.skipped = time.process_time(), 0.0

    def now(self) -> float:
        return time.process_time() - self.start + self.skipped

    def wait_until(self, t: float) -> None:
        self.skipped += max(0.0, t - self.now())


CLOCKS = {"wall": WallClock, "process": ProcessClock}


def serve_requests(engine, requests: list[ServeRequest], prompts: dict[int, tuple[int, ...]],
                   adapter_of: dict[int, int], max_batched_tokens: int, max_rows: int,
                   clock: str = "wall") -> Served:
    """Serve `requests` in real time: admit those that have arrived (prefill, at most
    `max_batched_tokens` prompt tokens per step), decode all live rows one token, retire
    rows at their output length, repeat; idle until the next arrival when nothing is live."""
    import torch

    if not engine.config.ignore_eos:
        raise ValueError("requests are served to their own output length: EngineConfig(ignore_eos=True)")
    pending = deque(sorted(requests, key=lambda r: (r.arrival_s, r.index)))
    with torch.inference_mode():  # the engine's tensors are inference tensors
        return _serve(engine, pending, prompts, adapter_of, max_batched_tokens, max_rows, len(requests),
                      CLOCKS[clock])


def _serve(engine, pending: deque, prompts, adapter_of, max_batched_tokens: int, max_rows: int,
           total: int, clock_class) -> Served:
    from harness.generate.engine import DecodeBatch, Request

    batch = DecodeBatch(engine, min(max_rows, total))
    finished, tokens, steps, rows_sum = [], {}, 0, 0
    clock = clock_class(engine.device)
    now = clock.now

    def record(done) -> None:
        stamp = now()
        for request, sample in done:
            served = request.key
            finished.append((served.index, served.arrival_s, stamp, served.output_len))
            tokens[served.index] = sample.tokens

    while True:
        arrived_by, budget = now(), max_batched_tokens
        live = batch.active()
        while pending and pending[0].arrival_s <= arrived_by and live < max_rows and (
                budget == max_batched_tokens or pending[0].prompt_len <= budget):
            request = pending.popleft()
            budget -= request.prompt_len
            [prompt] = engine.prefill([Request(request, prompts[request.index], adapter_of[request.index],
                                               ((0, 0),), max_new_tokens=request.output_len)])
            if not batch.free_slots():
                batch.resize(min(max_rows, max(2 * live, live + 1)))
            record(list(batch.place(prompt)))  # a one-token request finishes here
            live = batch.active()
        if live == 0:
            if not pending:
                break
            clock.wait_until(pending[0].arrival_s)
            continue
        rows_sum += live
        steps += 1
        record(list(batch.step()))
        remaining = batch.active()
        waiting = bool(pending) and pending[0].arrival_s <= now()
        if batch.size > 1 and remaining <= batch.size // 2 and not waiting:
            batch.resize(max(remaining, 1))  # speed trick: drop idle slots
    return Served(now(), tuple(sorted(finished)), tokens, steps, rows_sum / steps if steps else 0.0)


def figures(served: Served) -> dict:
    """Output tokens/s over the run and mean (finish - arrival) / output tokens per request."""
    tokens = sum(n for *_, n in served.finished)
    per_token = [(finish - arrival) / n for _, arrival, finish, n in served.finished]
    return {"tokens_per_s": tokens / served.seconds, "s_per_output_token": statistics.fmean(per_token),
            "seconds": served.seconds, "output_tokens": tokens, "mean_rows": served.mean_rows}
