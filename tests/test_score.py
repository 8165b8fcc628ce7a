"""score.py against explicit formulas: pass@k, standard error, bootstrap, sign and permutation tests."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.errors import UserError
from harness.score import (
    align,
    bootstrap_ci,
    default_ks,
    estimate,
    paired,
    pass_at_k,
    permutation_test,
    relative_improvement,
    sign_test,
    sign_test_less,
    standard_error,
)


def exact_pass_at_k(n: int, c: int, k: int) -> Fraction:
    return 1 - Fraction(math.comb(n - c, k), math.comb(n, k))


@st.composite
def n_c_k(draw, max_n: int = 500):
    n = draw(st.integers(1, max_n))
    return n, draw(st.integers(0, n)), draw(st.integers(1, n))


@settings(max_examples=600, deadline=None)
@given(n_c_k())
def test_pass_at_k_equals_the_combinatorial_formula(nck):
    n, c, k = nck
    assert math.isclose(pass_at_k(n, c, k), float(exact_pass_at_k(n, c, k)), rel_tol=1e-9, abs_tol=1e-12)


def test_pass_at_k_on_the_full_small_grid():
    for n in range(1, 41):
        for c, k in itertools.product(range(n + 1), range(1, n + 1)):
            assert math.isclose(pass_at_k(n, c, k), float(exact_pass_at_k(n, c, k)),
                                rel_tol=1e-9, abs_tol=1e-12), (n, c, k)


def test_pass_at_1_is_the_pass_fraction():
    assert pass_at_k(100, 37, 1) == pytest.approx(0.37)


@given(st.integers(1, 300).flatmap(lambda n: st.tuples(st.just(n), st.integers(n + 1, n + 50))))
def test_k_greater_than_n_is_refused(nk):
    n, k = nk
    with pytest.raises(UserError, match=f"pass@{k} needs at least {k} samples"):
        pass_at_k(n, 0, k)


def test_bad_counts_are_refused():
    with pytest.raises(ValueError):
        pass_at_k(10, 11, 1)
    with pytest.raises(ValueError):
        pass_at_k(10, 3, 0)


def test_default_ks():
    assert default_ks(1) == [1]
    assert default_ks(20) == [1, 10]
    assert default_ks(100) == [1, 10, 100]


def test_standard_error_matches_its_formula():
    x = [0.1, 0.5, 0.9, 0.3]
    mean = sum(x) / 4
    sd = math.sqrt(sum((v - mean) ** 2 for v in x) / 3)
    assert standard_error(x) == pytest.approx(sd / 2)
    assert standard_error([0.4]) == 0.0


def test_bootstrap_is_seeded_and_brackets_the_mean():
    rng = np.random.default_rng(1)
    x = rng.uniform(size=161)
    a, b = bootstrap_ci(x, seed=7), bootstrap_ci(x, seed=7)
    assert a == b
    assert a[0] < x.mean() < a[1]
    # For a mean, the percentile interval is close to mean ± 1.96 se.
    se = standard_error(x)
    assert a[0] == pytest.approx(x.mean() - 1.96 * se, abs=0.3 * se)
    assert a[1] == pytest.approx(x.mean() + 1.96 * se, abs=0.3 * se)


def test_estimate_of_a_constant_has_no_width():
    e = estimate([0.25] * 10)
    assert (e.mean, e.se, e.lo, e.hi, e.problems) == (0.25, 0.0, 0.25, 0.25, 10)


def binomial_two_sided(w: int, m: int) -> float:
    """Reference: the sum of all outcomes at most as likely as the observed one."""
    probs = [math.comb(m, i) / 2**m for i in range(m + 1)]
    return min(1.0, sum(p for p in probs if p <= probs[w] * (1 + 1e-12)))


@given(st.integers(0, 40), st.integers(0, 40))
def test_sign_test_matches_the_binomial_distribution(wins, losses):
    m = wins + losses
    if m == 0:
        assert sign_test(0, 0) == 1.0
        return
    assert sign_test(wins, losses) == pytest.approx(binomial_two_sided(wins, m))
    assert sign_test_less(wins, losses) == pytest.approx(
        sum(math.comb(m, i) for i in range(wins + 1)) / 2**m)


def test_exact_permutation_test_by_enumeration():
    d = [0.3, -0.1, 0.2, 0.05, 0.0, 0.4]
    nonzero = [x for x in d if x]
    sums = [sum(s * x for s, x in zip(signs, nonzero, strict=True))
            for signs in itertools.product((-1, 1), repeat=len(nonzero))]
    observed = sum(nonzero)
    two, less, exact = permutation_test(d)
    assert exact
    assert two == pytest.approx(sum(abs(s) >= abs(observed) - 1e-12 for s in sums) / len(sums))
    assert less == pytest.approx(sum(s <= observed + 1e-12 for s in sums) / len(sums))


def test_monte_carlo_permutation_test_is_seeded_and_sensible():
    rng = np.random.default_rng(3)
    worse = rng.normal(-0.05, 0.05, size=100)
    two, less, exact = permutation_test(worse, seed=1)
    assert not exact and permutation_test(worse, seed=1) == (two, less, exact)
    assert less < 0.001 and two < 0.002
    noise = rng.normal(0, 0.05, size=100)
    assert permutation_test(noise, seed=1)[0] > 0.01


def test_paired_comparison_counts_and_direction():
    base = [0.1, 0.2, 0.3, 0.4, 0.5]
    treated = [0.2, 0.2, 0.5, 0.3, 0.6]
    p = paired(treated, base)
    assert (p.wins, p.losses, p.ties) == (3, 1, 1)
    assert p.diff.mean == pytest.approx(0.06)
    assert p.p_sign == pytest.approx(sign_test(3, 1))
    assert p.exact_permutation
    with pytest.raises(ValueError):
        paired([0.1], [0.1, 0.2])


def test_align_keeps_common_problems_only():
    common, a, b = align({"p2": 0.5, "p1": 0.1, "p3": 1.0}, {"p1": 0.2, "p2": 0.4})
    assert common == ["p1", "p2"] and a == [0.1, 0.5] and b == [0.2, 0.4]


def test_relative_improvement():
    assert relative_improvement(17.26, 14.13) == pytest.approx(22.1514, abs=1e-4)
    assert relative_improvement(3.0, 0.0) is None
