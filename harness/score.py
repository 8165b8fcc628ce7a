"""Score stage: the unbiased pass@k estimator and per-language means. Pure: takes records."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from harness.errors import UserError
from harness.records import ProblemResults, ProblemScore


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


def score_problem(results: ProblemResults, ks: Iterable[int]) -> ProblemScore:
    n, c = results.n, results.n_passed
    return ProblemScore(
        model=results.model,
        adapter=results.adapter,
        language=results.language,
        problem=results.name,
        n=n,
        c=c,
        pass_at={k: pass_at_k(n, c, k) for k in ks if k <= n},
    )


def default_ks(n: int) -> list[int]:
    """The k values reported for n samples: 1, 10, 100 where n allows."""
    return [k for k in (1, 10, 100) if k <= n]
