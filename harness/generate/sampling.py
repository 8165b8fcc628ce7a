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
# when the k most likely tokens already hold `top_p` of the mass, no later token can be in
# the nucleus; if some row's do not, the batch falls back to a full sort. At the low
# temperatures of code evaluation the nucleus is a handful of tokens; a top-16 costs about a
# tenth of a sort even over a 257-token vocabulary.
TOP_K_PREFIX = 16


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
    prefix = min(TOP_K_PREFIX, probs.shape[-1])
    cdf = None
    # k tokens hold at most k × the largest probability: where that is short of top_p the
    # prefix cannot hold the nucleus, so skip the top-k (flat distributions) and sort at once
    if bool((probs.amax(dim=-1) * prefix >= top_p).all()):
        top_probs, top_ids = probs.topk(prefix, dim=-1)
        cdf = top_probs.cumsum(dim=-1)
    if cdf is None or bool((cdf[:, -1] < top_p).any()):  # the prefix misses part of the nucleus
        top_probs, top_ids = sort_probabilities(probs)
        cdf = top_probs.cumsum(dim=-1)
    last = cdf.shape[-1] - 1
    # the nucleus is the prefix up to the first token whose cumulative mass reaches top_p
    end = torch.searchsorted(cdf, torch.full_like(cdf[:, :1], top_p)).clamp(max=last)
    target = uniforms.to(cdf.device, cdf.dtype).unsqueeze(-1) * cdf.gather(-1, end)
    choice = torch.minimum(torch.searchsorted(cdf, target, right=True), end)
    return top_ids.gather(-1, choice).squeeze(-1)
