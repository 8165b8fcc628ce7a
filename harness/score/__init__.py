"""Score stage: results records → per-problem score records (`scores.csv`), and the math.

    estimators.py  pass@k (the one place it is computed), intervals, paired comparisons: pure
    judge.py       results judged again from their observations with today's language rules
    stage.py       score_run: a run's results files → ProblemScore records → scores.csv
"""

from harness.score.estimators import (
    Estimate,
    Paired,
    align,
    bootstrap_ci,
    bootstrap_means,
    default_ks,
    estimate,
    paired,
    pass_at_k,
    permutation_test,
    relative_improvement,
    score_problem,
    sign_test,
    sign_test_less,
    standard_error,
)
from harness.score.stage import (
    SCORES_FILE,
    SOURCES_FILE,
    read_scores,
    score_run,
    scores_current,
    write_scores,
)

__all__ = [
    "SCORES_FILE",
    "SOURCES_FILE",
    "Estimate",
    "Paired",
    "align",
    "bootstrap_ci",
    "bootstrap_means",
    "default_ks",
    "estimate",
    "paired",
    "pass_at_k",
    "permutation_test",
    "read_scores",
    "relative_improvement",
    "score_problem",
    "score_run",
    "scores_current",
    "sign_test",
    "sign_test_less",
    "standard_error",
    "write_scores",
]
