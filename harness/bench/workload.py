"""The serving workload: requests with a prompt length, an output length and an arrival time.

The paper served 1,000 ShareGPT conversations of 50-2,000 tokens (vLLM's benchmark data),
which cannot be downloaded here, so the default is a synthetic stand-in from a fixed seed:
prompt and output lengths drawn from log-normal distributions (medians `PROMPT_MEDIAN`,
`OUTPUT_MEDIAN`, a long right tail like chat data), kept only when they pass vLLM's
benchmark filters (prompt ≤ 1,024, prompt + output ≤ 2,048, both ≥ 4 tokens) and the
paper's 50-2,000 total. `scale` shrinks every length for CPU runs (same shape, fewer tokens).
These medians are our assumption, not the data set's measured statistics.

A real workload is a file (`read_workload`):
- JSON lines, one request per line: {"prompt_len": 161, "output_len": 338} and optionally
  "arrival_s" (seconds from the start; else Poisson arrivals at the given rate are drawn);
- a ShareGPT json (a list of {"conversations": [{"from": "human", "value": ...},
  {"from": "gpt", "value": ...}, ...]}): the first two turns of each conversation, lengths
  counted with a tokenizer you pass (a local directory AutoTokenizer can load), then the
  same filters as the synthetic draw.

Arrivals follow vLLM's serving benchmark: exponential gaps at `rate` requests/s (a Poisson
process); rate None means every request is there at time 0 (the throughput experiment).
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, replace
from pathlib import Path

PROMPT_MEDIAN = 120.0
OUTPUT_MEDIAN = 180.0
SIGMA = 0.9  # log-normal spread of both lengths
MIN_TOKENS = 4
MAX_PROMPT = 1024
MAX_TOTAL = 2048
PAPER_RANGE = (50, 2000)  # total tokens per request in the paper's subset


@dataclass(frozen=True)
class ServeRequest:
    """One request of the workload; its prompt token ids are drawn later from `seed`."""

    index: int
    prompt_len: int
    output_len: int
    arrival_s: float = 0.0


def keep(prompt_len: int, output_len: int, scale: float = 1.0) -> bool:
    """vLLM's benchmark filters and the paper's range, on lengths scaled by `scale`."""
    low, high = (max(MIN_TOKENS, round(v * scale)) for v in PAPER_RANGE)
    total = prompt_len + output_len
    return (
        prompt_len >= MIN_TOKENS
        and output_len >= MIN_TOKENS
        and prompt_len <= max(MIN_TOKENS, round(MAX_PROMPT * scale))
        and total <= max(2 * MIN_TOKENS, round(MAX_TOTAL * scale))
        and low <= total <= high
    )


def synthetic_lengths(n: int, seed: int, scale: float = 1.0) -> list[tuple[int, int]]:
    """`n` (prompt_len, output_len) pairs, ShareGPT-like, reproducible from `seed`."""
    if n < 1:
        raise ValueError(f"need at least one request, not {n}")
    rng = random.Random(seed)
    pairs: list[tuple[int, int]] = []
    while len(pairs) < n:
        prompt = round(rng.lognormvariate(math.log(PROMPT_MEDIAN * scale), SIGMA))
        output = round(rng.lognormvariate(math.log(OUTPUT_MEDIAN * scale), SIGMA))
        if keep(prompt, output, scale):
            pairs.append((prompt, output))
    return pairs


def poisson_arrivals(n: int, rate: float | None, seed: int) -> list[float]:
    """Arrival times (s) of `n` requests at `rate` requests/s; all at 0 when rate is None."""
    if rate is None or math.isinf(rate):
        return [0.0] * n
    if rate <= 0:
        raise ValueError(f"rate must be positive, not {rate}")
    rng = random.Random(seed + 1)
    times, now = [], 0.0
    for _ in range(n):
        times.append(now)
        now += rng.expovariate(rate)
    return times


def with_arrivals(requests: list[ServeRequest], rate: float | None, seed: int) -> list[ServeRequest]:
    """The same requests arriving as a Poisson process (file-given arrival times are kept)."""
    if any(r.arrival_s for r in requests):
        return requests
    times = poisson_arrivals(len(requests), rate, seed)
    return [replace(r, arrival_s=t) for r, t in zip(requests, times, strict=True)]


def synthetic_workload(n: int, seed: int, scale: float = 1.0) -> list[ServeRequest]:
    return [ServeRequest(i, p, o) for i, (p, o) in enumerate(synthetic_lengths(n, seed, scale))]


def read_workload(path: Path, n: int | None = None, tokenizer_dir: str | None = None) -> list[ServeRequest]:
    """Requests from a JSON-lines file (prompt_len, output_len[, arrival_s]) or a ShareGPT json."""
    from harness.errors import UserError

    path = Path(path)
    if not path.is_file():
        raise UserError(f"workload file {path} does not exist; pass a .jsonl of prompt_len/output_len rows")
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    if stripped.startswith("["):
        pairs = _sharegpt_pairs(json.loads(stripped), path, tokenizer_dir)
        requests = [ServeRequest(i, p, o) for i, (p, o) in enumerate(pairs)]
    else:
        requests = _jsonl_requests(text, path)
    if not requests:
        raise UserError(f"workload file {path} holds no usable request (lengths must be ≥ {MIN_TOKENS})")
    return requests[:n] if n else requests


def _jsonl_requests(text: str, path: Path) -> list[ServeRequest]:
    from harness.errors import UserError

    requests = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            prompt, output = int(row["prompt_len"]), int(row["output_len"])
            arrival = float(row.get("arrival_s", 0.0))
        except (ValueError, KeyError, TypeError) as exc:
            raise UserError(
                f"{path}:{number}: each line must be a JSON object with integer prompt_len and "
                f"output_len (optional arrival_s), not {line[:80]!r} ({type(exc).__name__})"
            ) from None
        if prompt < 1 or output < 1 or arrival < 0:
            raise UserError(f"{path}:{number}: lengths must be ≥ 1 and arrival_s ≥ 0, got {line[:80]!r}")
        requests.append(ServeRequest(len(requests), prompt, output, arrival))
    return requests


def _sharegpt_pairs(data, path: Path, tokenizer_dir: str | None) -> list[tuple[int, int]]:
    """(prompt, output) token counts of each conversation's first exchange, filtered."""
    from harness.errors import UserError

    if tokenizer_dir is None:
        raise UserError(f"{path} is a ShareGPT json: pass --tokenizer DIR to count its tokens")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    pairs = []
    for item in data:
        turns = item.get("conversations", []) if isinstance(item, dict) else []
        if len(turns) < 2:
            continue
        prompt = len(tokenizer(turns[0]["value"]).input_ids)
        output = len(tokenizer(turns[1]["value"]).input_ids)
        if keep(prompt, output):
            pairs.append((prompt, output))
    return pairs


def prompt_ids(requests: list[ServeRequest], vocab: int, seed: int) -> dict[int, tuple[int, ...]]:
    """Random token ids per request (content does not change the cost), never end-of-text (0)."""
    import torch

    gen = torch.Generator().manual_seed(seed + 2)
    return {r.index: tuple(torch.randint(1, vocab, (r.prompt_len,), generator=gen).tolist())
            for r in requests}


def summary(requests: list[ServeRequest]) -> dict:
    """Counts and length statistics recorded in the benchmark's config."""
    prompts = sorted(r.prompt_len for r in requests)
    outputs = sorted(r.output_len for r in requests)
    return {
        "requests": len(requests),
        "prompt_tokens": sum(prompts),
        "output_tokens": sum(outputs),
        "prompt_len_median": prompts[len(prompts) // 2],
        "output_len_median": outputs[len(outputs) // 2],
        "prompt_len_range": [prompts[0], prompts[-1]],
        "output_len_range": [outputs[0], outputs[-1]],
    }
