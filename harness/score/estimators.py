"""The unbiased pass@k estimator, uncertainty over problems and paired comparisons.

Pure: every function takes numbers or records and returns numbers or frozen records; the only
randomness is a numpy Generator seeded by the caller's `seed`, so a report is reproducible.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from harness.errors import UserError
from harness.records import ProblemResults, ProblemScore

BOOTSTRAP_SAMPLES = 2000
EXACT_PERMUTATION_MAX = 16  # up to 2**16 sign patterns are enumerated; beyond, Monte Carlo


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al., 2021): 1 - C(n-c, k) / C(n, k), computed stably as
    1 - prod_{i=n-c+1}^{n} (1 - k / i); exactly 1.0 when n - c < k."""
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
    if k > n:
        raise UserError(f"pass@{k} needs at least {k} samples per problem, got n={n}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def score_problem(results: ProblemResults, ks: Iterable[int] | None = None) -> ProblemScore:
    """One results file's score record: n, c, pass@k for each k (default: `default_ks(n)`)
    that n allows, the count of every status and of the samples that timed out."""
    n, c = results.n, results.n_passed
    ks = default_ks(n) if ks is None else ks
    return ProblemScore(
        provenance=results.provenance,
        problem=results.name,
        n=n,
        c=c,
        pass_at={k: pass_at_k(n, c, k) for k in ks if k <= n},
        statuses=dict(Counter(r.status for r in results.results)),
        image_id=results.image_id,
        timeouts=sum(r.timed_out for r in results.results),
    )


def default_ks(n: int) -> list[int]:
    """The k values reported for n samples: 1, 10, 100 where n allows."""
    return [k for k in (1, 10, 100) if k <= n]


# ---------------------------------------------------------------------------------------
# Uncertainty over problems: a language's score is the mean over its problems, and the
# problems are the sample (the paper's standard error; a bootstrap interval beside it).
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Estimate:
    """A mean over problems with its standard error and a percentile bootstrap interval."""

    mean: float
    se: float
    lo: float
    hi: float
    problems: int
    level: float = 0.95


def standard_error(values: Sequence[float]) -> float:
    """Standard error of the mean (sample sd / sqrt(m)); 0 for fewer than two values."""
    x = np.asarray(values, dtype=float)
    return float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else 0.0


def bootstrap_means(values: Sequence[float], samples: int, seed: int) -> np.ndarray:
    """Means of `samples` resamples (with replacement) of `values`."""
    x = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    return x[rng.integers(0, len(x), size=(samples, len(x)))].mean(axis=1)


def bootstrap_ci(values: Sequence[float], level: float = 0.95, samples: int = BOOTSTRAP_SAMPLES,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean over problems."""
    if len(values) == 0:
        raise ValueError("no values to bootstrap")
    means = bootstrap_means(values, samples, seed)
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return float(lo), float(hi)


def estimate(values: Sequence[float], level: float = 0.95, samples: int = BOOTSTRAP_SAMPLES,
             seed: int = 0) -> Estimate:
    """Mean, standard error and bootstrap interval of per-problem scores."""
    if len(values) == 0:
        raise ValueError("no values to estimate")
    lo, hi = bootstrap_ci(values, level, samples, seed)
    return Estimate(float(np.mean(values)), standard_error(values), lo, hi, len(values), level)


# ---------------------------------------------------------------------------------------
# Paired comparison: two scores of the SAME problems (an adapter against the base model, or a
# run against a baseline). Differences per problem remove the problems' own difficulty.
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Paired:
    """`treated - control` over common problems: mean difference with its paired bootstrap
    interval, problem-level wins/losses/ties, an exact two-sided sign test and a sign-flip
    permutation test (two-sided and one-sided 'treated is worse')."""

    diff: Estimate
    wins: int
    losses: int
    ties: int
    p_sign: float
    p_permutation: float
    p_worse: float
    exact_permutation: bool


def sign_test(wins: int, losses: int) -> float:
    """Exact two-sided sign test: P(a split at least this uneven | no difference); ties dropped."""
    m = wins + losses
    if m == 0:
        return 1.0
    tail = sum(math.comb(m, i) for i in range(min(wins, losses) + 1))
    return min(1.0, 2 * tail / 2**m)


def sign_test_less(wins: int, losses: int) -> float:
    """Exact one-sided sign test: P(wins this few or fewer | no difference)."""
    m = wins + losses
    if m == 0:
        return 1.0
    return sum(math.comb(m, i) for i in range(wins + 1)) / 2**m


def permutation_test(diffs: Sequence[float], samples: int = 20000,
                     seed: int = 0) -> tuple[float, float, bool]:
    """Paired sign-flip permutation test of the mean difference: returns (two-sided p,
    one-sided p for 'mean < 0', exact?). Enumerates every sign pattern of the non-zero
    differences when there are at most EXACT_PERMUTATION_MAX, else draws `samples` seeded
    patterns (with the +1 correction that keeps a Monte Carlo p-value valid)."""
    d = np.asarray([x for x in diffs if x != 0], dtype=float)
    if len(d) == 0:
        return 1.0, 1.0, True
    observed = d.sum()
    eps = 1e-12 * max(1.0, float(np.abs(d).sum()))
    exact = len(d) <= EXACT_PERMUTATION_MAX
    if exact:
        patterns = ((np.arange(2 ** len(d))[:, None] >> np.arange(len(d))) & 1) * 2 - 1
        sums = patterns @ d
        return (float(np.mean(np.abs(sums) >= abs(observed) - eps)),
                float(np.mean(sums <= observed + eps)), True)
    rng = np.random.default_rng(seed)
    sums = rng.choice((-1.0, 1.0), size=(samples, len(d))) @ d
    two = (np.sum(np.abs(sums) >= abs(observed) - eps) + 1) / (samples + 1)
    less = (np.sum(sums <= observed + eps) + 1) / (samples + 1)
    return float(two), float(less), False


def paired(treated: Sequence[float], control: Sequence[float], level: float = 0.95,
           samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> Paired:
    """Compare two aligned per-problem score vectors (same problems, same order)."""
    if len(treated) != len(control):
        raise ValueError(f"paired scores need the same problems: {len(treated)} vs {len(control)}")
    diffs = np.asarray(treated, dtype=float) - np.asarray(control, dtype=float)
    wins, losses = int(np.sum(diffs > 0)), int(np.sum(diffs < 0))
    p_two, p_less, exact = permutation_test(diffs, seed=seed)
    return Paired(
        diff=estimate(diffs, level, samples, seed),
        wins=wins,
        losses=losses,
        ties=len(diffs) - wins - losses,
        p_sign=sign_test(wins, losses),
        p_permutation=p_two,
        p_worse=p_less,
        exact_permutation=exact,
    )


def align(treated: dict[str, float], control: dict[str, float]) -> tuple[list[str], list[float],
                                                                           list[float]]:
    """The common problems of two {problem: score} maps, in a stable order, with both scores."""
    common = sorted(set(treated) & set(control))
    return common, [treated[p] for p in common], [control[p] for p in common]


def relative_improvement(value: float, base: float) -> float | None:
    """The paper's relative column: (value - base) / base in percent; None when base is 0."""
    if base == 0:
        return None
    return (value - base) / base * 100
