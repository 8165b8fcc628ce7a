"""Per-sample randomness and the sampling function (temperature + top-p).

Reproducibility rests on two choices made here:
- every sample owns a random stream seeded by `sample_seed(run seed, problem, adapter, index)`;
  its uniforms are drawn once, up front (`sample_uniforms`), so no other row, batch size or
  process count can shift them;
- `sample_tokens` turns one uniform per row into a token by inverse-CDF sampling over the
  top-p set, a pure function of (logits row, uniform): no global generator is touched.
"""

from __future__ import annotations

import hashlib

import torch

# Speed trick: top-p over a top-k prefix instead of sorting the whole vocabulary. Exact:
# when a row's k most likely tokens already hold `top_p` of the mass, no later token can be
# in its nucleus. Each row tries growing prefixes on its own and only rows that no prefix
# holds are sorted in full. At the low temperatures of code evaluation the nucleus is a
# handful of tokens; at T=0.8 over StarCoder's 49k vocabulary it is hundreds (100 rows on a
# CPU: a full sort 240 ms, top-16 7 ms, top-1024 52 ms).
TOP_K_PREFIXES = (16, 128, 1024)
PREFIX_SHARE = 32  # a prefix is tried only when it is at most 1/32 of the vocabulary: over
# smaller vocabularies (the tiny model's 257 tokens) one sort costs about what a failed top-k does


def sample_seed(run_seed: int, problem: str, adapter: str, index: int = 0) -> int:
    """The one place per-sample randomness is derived: (run seed, problem, adapter, index)."""
    key = f"{run_seed}|{problem}|{adapter}|{index}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "little") & (2**63 - 1)


def sample_uniforms(seed: int, steps: int) -> torch.Tensor:
    """The uniforms in [0, 1) a sample consumes, one per generated token (float64, CPU)."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    return torch.rand(steps, dtype=torch.float64, generator=generator)


def sort_probabilities(probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Descending sort of non-negative float32 rows. Speed trick: their bit patterns read as
    int32 sort in the same order, and torch's integer sort is a third faster on a CPU."""
    if probs.dtype != torch.float32:
        return probs.sort(dim=-1, descending=True)
    bits, ids = probs.view(torch.int32).sort(dim=-1, descending=True)
    return bits.view(torch.float32), ids


def sample_tokens(logits: torch.Tensor, temperature: float, top_p: float, uniforms: torch.Tensor):
    """One token per row of `logits` [rows, vocab]: greedy when temperature is 0, else the
    smallest set of most likely tokens holding `top_p` of the mass, sampled by `uniforms` [rows]."""
    if temperature <= 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    uniforms = uniforms.to(probs.device, probs.dtype)
    rows = probs.shape[0]
    todo: torch.Tensor | None = None  # rows not sampled yet (None: all of them)
    tokens = None
    for k in TOP_K_PREFIXES:
        if k * PREFIX_SHARE > probs.shape[-1]:
            break
        sub = probs if todo is None else probs[todo]
        # k tokens hold at most k × the row's largest probability: skip rows it cannot hold
        may = sub.amax(dim=-1) * k >= top_p
        if not bool(may.any()):
            continue
        top_probs, top_ids = sub[may].topk(k, dim=-1)
        cdf = top_probs.cumsum(dim=-1)
        held = cdf[:, -1] >= top_p
        index = torch.arange(rows, device=probs.device) if todo is None else todo
        done = index[may][held]
        if tokens is None:
            tokens = torch.empty(rows, dtype=torch.long, device=probs.device)
        tokens[done] = inverse_cdf(cdf[held], top_ids[held], uniforms[done], top_p)
        left = torch.ones(len(index), dtype=torch.bool, device=probs.device)
        left[may.nonzero().squeeze(-1)[held]] = False
        todo = index[left]
        if todo.numel() == 0:
            return tokens
    if todo is None:  # no prefix tried or held: sort every row
        top_probs, top_ids = sort_probabilities(probs)
        return inverse_cdf(top_probs.cumsum(dim=-1), top_ids, uniforms, top_p)
    top_probs, top_ids = sort_probabilities(probs[todo])
    tokens[todo] = inverse_cdf(top_probs.cumsum(dim=-1), top_ids, uniforms[todo], top_p)
    return tokens


def inverse_cdf(cdf: torch.Tensor, ids: torch.Tensor, uniforms: torch.Tensor, top_p: float) -> torch.Tensor:
    """Rows of descending probabilities' running sums `cdf` and their token `ids`: the nucleus
    is the prefix up to the first token whose running sum reaches `top_p`; each row's uniform
    picks a token in it, in proportion to its probability."""
    last = cdf.shape[-1] - 1
    end = torch.searchsorted(cdf, torch.full_like(cdf[:, :1], top_p)).clamp(max=last)
    target = uniforms.unsqueeze(-1) * cdf.gather(-1, end)
    choice = torch.minimum(torch.searchsorted(cdf, target, right=True), end)
    return ids.gather(-1, choice).squeeze(-1)
