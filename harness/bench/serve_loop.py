"""The serving loop: continuous batching with arrival times, per-request output lengths and
a prefill budget, written as a thin driver over the generation engine's own model-facing
functions (`Engine.prefill`, `Engine.decode_step`, `Engine.sample`) and its `SlotCache`.

Why not `Engine.generate`: it pulls the next request whenever a slot is free (no arrival
times: it would block decoding while waiting), stops rows at one `max_new_tokens` or at
end-of-text (a benchmark needs each request's own output length, end-of-text ignored, as
vLLM's benchmark does), and prefills without a budget per step. The loop here:

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


class _Slots:
    """The decode batch: a SlotCache plus per-slot next token, position, adapter and request."""

    def __init__(self, engine, prompt_kv, size: int):
        import torch

        from harness.generate.kvcache import SlotCache

        self.engine, self.device = engine, engine.device
        self.cache = SlotCache(prompt_kv, size)
        self.rows: list[list | None] = [None] * size  # [request, its tokens so far]
        self.tokens = torch.zeros(size, dtype=torch.long, device=self.device)
        self.positions = torch.zeros(size, dtype=torch.long, device=self.device)
        self.adapters = torch.full((size,), -1, dtype=torch.long)  # CPU: only set_rows reads it
        self.max_position = engine.config.max_positions - 1
        self.steps = 0

    def live(self) -> list[int]:
        return [i for i, row in enumerate(self.rows) if row is not None]

    def resize(self, keep: list[int], size: int) -> None:
        """Keep slots `keep` (in order) and add empty ones up to `size`: one gather per layer."""
        import torch

        pad = size - len(keep)
        index = torch.tensor(keep + [keep[0] if keep else 0] * pad, device=self.device)
        self.cache.select_rows(index)
        for slot in range(len(keep), size):
            self.cache.free(slot)
        self.rows = [self.rows[i] for i in keep] + [None] * pad
        self.tokens, self.positions = self.tokens[index], self.positions[index]
        self.adapters = self.adapters[index.cpu()]
        self.positions[len(keep):], self.adapters[len(keep):] = 0, -1

    def place(self, request, prompt, first_token: int, adapter: int, max_rows: int) -> None:
        import torch

        free = [i for i, row in enumerate(self.rows) if row is None]
        if not free:
            live = self.live()
            self.resize(live, min(max_rows, max(2 * len(live), len(live) + 1)))
            free = [len(live)]
        slot = free[0]
        self.cache.place(torch.tensor([slot], device=self.device), prompt.kv)
        self.tokens[slot], self.positions[slot] = first_token, request.prompt_len
        self.adapters[slot] = adapter
        self.rows[slot] = [request, [first_token]]

    def step(self) -> list:
        """One decode step for every slot; returns (request, tokens) of rows that finished."""
        import torch

        from harness.generate.engine import TRIM_EVERY

        logits = self.engine.decode_step(self.cache, self.tokens, self.positions, self.adapters)
        greedy = torch.zeros(len(logits), dtype=torch.float64)  # temperature 0: uniforms unused
        self.tokens = self.engine.sample(logits, greedy).to(self.tokens.dtype)
        self.positions += 1
        self.positions.clamp_(max=self.max_position)  # idle slots keep stepping; stay in range
        live = self.live()
        done = []
        for slot, token in zip(live, self.tokens[live].tolist(), strict=True):
            row = self.rows[slot]
            row[1].append(token)
            if len(row[1]) >= row[0].output_len:
                done.append((row[0], tuple(row[1])))
                self.rows[slot] = None
                self.cache.free(slot)
                self.positions[slot] = 0
        self.steps += 1
        if self.steps % TRIM_EVERY == 0:
            self.cache.trim_left(self.cache.unused_prefix())
        return done


def serve_requests(engine, requests: list[ServeRequest], prompts: dict[int, tuple[int, ...]],
                   adapter_of: dict[int, int], max_batched_tokens: int, max_rows: int,
                   clock: str = "wall") -> Served:
    """Serve `requests` in real time: admit those that have arrived (prefill, at most
    `max_batched_tokens` prompt tokens per step), decode all live rows one token, retire
    rows at their output length, repeat; idle until the next arrival when nothing is live."""
    import torch

    pending = deque(sorted(requests, key=lambda r: (r.arrival_s, r.index)))
    with torch.inference_mode():  # the engine's tensors are inference tensors
        return _serve(engine, pending, prompts, adapter_of, max_batched_tokens, max_rows, len(requests),
                      CLOCKS[clock])


def _serve(engine, pending: deque, prompts, adapter_of, max_batched_tokens: int, max_rows: int,
           total: int, clock_class) -> Served:
    import torch

    from harness.generate.engine import Request

    slots: _Slots | None = None
    finished, tokens, steps, rows_sum = [], {}, 0, 0
    clock = clock_class(engine.device)
    now = clock.now

    while True:
        arrived_by, budget = now(), max_batched_tokens
        live = len(slots.live()) if slots else 0
        while pending and pending[0].arrival_s <= arrived_by and live < max_rows and (
                budget == max_batched_tokens or pending[0].prompt_len <= budget):
            request = pending.popleft()
            budget -= request.prompt_len
            adapter = adapter_of[request.index]
            prompt = engine.prefill([Request(request.index, prompts[request.index], adapter, ((0, 0),))])[0]
            first = int(engine.sample(prompt.logits[None], torch.zeros(1, dtype=torch.float64))[0])
            if request.output_len <= 1:
                finished.append((request.index, request.arrival_s, now(), request.output_len))
                tokens[request.index] = (first,)
                continue
            if slots is None:
                slots = _Slots(engine, prompt.kv, min(max_rows, total))
            slots.place(request, prompt, first, adapter, max_rows)
            live += 1
        if live == 0:
            if not pending:
                break
            clock.wait_until(pending[0].arrival_s)
            continue
        rows_sum += live
        steps += 1
        done = slots.step()
        stamp = now()
        for request, output in done:
            finished.append((request.index, request.arrival_s, stamp, request.output_len))
            tokens[request.index] = output
        remaining = slots.live()
        waiting = bool(pending) and pending[0].arrival_s <= stamp
        if len(slots.rows) > 1 and len(remaining) <= len(slots.rows) // 2 and not waiting:
            slots.resize(remaining, max(len(remaining), 1))  # speed trick: drop idle slots
    return Served(now(), tuple(sorted(finished)), tokens, steps, rows_sum / steps if steps else 0.0)


def figures(served: Served) -> dict:
    """Output tokens/s over the run and mean (finish - arrival) / output tokens per request."""
    tokens = sum(n for *_, n in served.finished)
    per_token = [(finish - arrival) / n for _, arrival, finish, n in served.finished]
    return {"tokens_per_s": tokens / served.seconds, "s_per_output_token": statistics.fmean(per_token),
            "seconds": served.seconds, "output_tokens": tokens, "mean_rows": served.mean_rows}
