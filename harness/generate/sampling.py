"""Per-sample randomness and the sampling function (temperature + top-p).

Reproducibility rests on two choices made here:
- every sample owns a random stream seeded by `sample_seed(run seed, problem, adapter, index)`;
  its uniforms are drawn once, up front (`sample_uniforms`), so no other row, batch size or
  process count can shift them;
- `sample_tokens` turns one uniform per row into a token by inverse-CDF sampling over the
  top-p set, a pure function of (logits row, uniform): no global generator is touched.

The top-p set (nucleus) of a row is every token whose probability is at least τ, the
probability of the token at which the descending running sum first reaches `top_p`. The
uniform then picks a token of the nucleus in proportion to its probability, walking the
nucleus in vocabulary order. Any fixed order gives the same distribution; vocabulary order
needs only the sorted probabilities (to find τ), never the sorting permutation, which is
what costs on a CPU (100 rows × 257 tokens: an index sort 520 µs, a value sort 60 µs).
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

# Speed trick: τ from a top-k prefix instead of sorting the whole vocabulary. Exact: when a
# row's k most likely tokens already hold `top_p` of the mass (and the k-th is below τ), no
# other token can be in its nucleus. Each row tries growing prefixes on its own and only
# rows that no prefix holds are sorted in full. At the low temperatures of code evaluation
# the nucleus is a handful of tokens; at T=0.8 over StarCoder's 49k vocabulary it is
# hundreds (100 rows on a CPU: a full index sort 240 ms, top-16 7 ms, top-1024 52 ms).
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


def sample_tokens(logits: torch.Tensor, temperature: float, top_p: float, uniforms: torch.Tensor):
    """One token per row of `logits` [rows, vocab]: greedy when temperature is 0, else a token
    of the row's nucleus (module docstring), picked by the row's uniform in `uniforms` [rows]."""
    if temperature <= 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    uniforms = uniforms.to(probs.device, probs.dtype)
    rows, vocab = probs.shape
    tokens = torch.empty(rows, dtype=torch.long, device=probs.device)
    todo: torch.Tensor | None = None  # rows not sampled yet (None: all of them)
    for k in TOP_K_PREFIXES:
        if k * PREFIX_SHARE > vocab:
            break
        sub = probs if todo is None else probs[todo]
        # k tokens hold at most k × the row's largest probability: skip rows it cannot hold
        may = torch.nonzero(sub.amax(dim=-1) * k >= top_p).squeeze(-1)
        if may.numel() == 0:
            continue
        top_probs, top_ids = sub[may].topk(k, dim=-1)
        tau = nucleus_threshold(top_probs, top_p)
        held = (top_probs[:, -1:] < tau).squeeze(-1)  # the nucleus ends inside the prefix
        if not bool(held.any()):
            continue
        done = may[held] if todo is None else todo[may[held]]
        tokens[done] = pick_in_prefix(top_probs[held], top_ids[held], tau[held], uniforms[done])
        left = torch.ones(sub.shape[0], dtype=torch.bool, device=probs.device)
        left[may[held]] = False
        todo = torch.nonzero(left).squeeze(-1) if todo is None else todo[left]
        if todo.numel() == 0:
            return tokens
    if todo is None:
        return pick(probs, nucleus_threshold(descending(probs), top_p), uniforms)
    sub = probs[todo]
    tokens[todo] = pick(sub, nucleus_threshold(descending(sub), top_p), uniforms[todo])
    return tokens


def descending(probs: torch.Tensor) -> torch.Tensor:
    """Each row's values sorted in descending order. Speed trick: on a CPU, numpy's SIMD
    value sort (no permutation) is about 8× faster than torch's sort."""
    if probs.device.type != "cpu":
        return probs.sort(dim=-1, descending=True).values
    return torch.from_numpy(np.ascontiguousarray(np.sort(probs.detach().numpy(), axis=-1)[:, ::-1]))


def nucleus_threshold(top_probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """τ [rows, 1] from each row's largest probabilities in descending order: the value at
    which their running sum first reaches `top_p` (the last one when it never does)."""
    cdf = top_probs.cumsum(dim=-1)
    end = torch.searchsorted(cdf, torch.full_like(cdf[:, :1], top_p)).clamp(max=cdf.shape[-1] - 1)
    return top_probs.gather(-1, end)


def pick(probs: torch.Tensor, tau: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Inverse CDF over the tokens with probability ≥ τ, in vocabulary order; the running
    sums skip other tokens, so the chosen position is always a nucleus token."""
    cdf = probs.where(probs >= tau, 0.0).cumsum(dim=-1)
    total = cdf[:, -1:]
    # the last nucleus token caps the choice: a uniform just below 1 may round to 1 in float32
    last = torch.searchsorted(cdf, total.contiguous())
    choice = torch.searchsorted(cdf, uniforms.unsqueeze(-1) * total, right=True)
    return torch.minimum(choice, last).squeeze(-1)


def pick_in_prefix(top_probs: torch.Tensor, top_ids: torch.Tensor, tau: torch.Tensor,
                   uniforms: torch.Tensor) -> torch.Tensor:
    """`pick` on a prefix that holds the whole nucleus: its tokens reordered by id, the
    others moved past the end (the same running sums, so the same token)."""
    in_nucleus = top_probs >= tau
    order = top_ids.where(in_nucleus, torch.iinfo(top_ids.dtype).max).argsort(dim=-1)
    by_id = top_probs.where(in_nucleus, 0.0).gather(-1, order)
    chosen = pick(by_id, torch.zeros_like(tau), uniforms)
    return top_ids.gather(-1, order).gather(-1, chosen[:, None]).squeeze(-1)
