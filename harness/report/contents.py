"""What one report holds: every table, as `build.assemble` makes them and the writers
(`build.write_files`, `html.render_html`) read them."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from harness.report.load import RunData


@dataclass(frozen=True)
class Report:
    runs: tuple[RunData, ...]
    counts: pd.DataFrame  # per problem: run, model, adapter, benchmark, lang, problem, n, c, pass@k, column
    ks: tuple[int, ...]
    cells: dict[int, pd.DataFrame]  # k → cell estimates
    comparisons: pd.DataFrame  # pass@1, paired
    table1: pd.DataFrame
    intervals: pd.DataFrame
    statuses: pd.DataFrame  # status shares per cell
    defects: pd.DataFrame  # the run's problems that are broken upstream
    timeouts: pd.DataFrame  # Timeout share per (run, benchmark, language)
    cuts: pd.DataFrame = field(default_factory=pd.DataFrame)  # share cut at max_tokens, the same cells
    extractions: pd.DataFrame = field(default_factory=pd.DataFrame)  # instruct: share per extraction kind

    @property
    def styles(self) -> dict[str, tuple[str, ...]]:
        """run label → its prompt styles."""
        return {run.label: run.styles for run in self.runs}
