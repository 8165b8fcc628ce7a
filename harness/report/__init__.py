"""Report stage: per-language pass@k tables from results files (terminal and markdown)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness.files import read_results
from harness.records import ProblemScore
from harness.runs import RunDir
from harness.score import default_ks, score_problem


def collect_scores(run: RunDir, ks: list[int] | None = None) -> list[ProblemScore]:
    """Score every results file of a run (the folder layout names model/adapter/lang)."""
    scores = []
    for path in run.result_files():
        results = read_results(path)
        lang = path.parent.name
        model, adapter = path.parent.parent.parent.name, path.parent.parent.name
        score = score_problem(results, ks or default_ks(results.n))
        scores.append(
            ProblemScore(model, adapter, lang, score.problem, score.n, score.c, score.pass_at)
        )
    return scores


def scores_frame(scores: list[ProblemScore]) -> pd.DataFrame:
    rows = [
        {"model": s.model, "adapter": s.adapter, "lang": s.language, "problem": s.problem,
         "n": s.n, "c": s.c, **{f"pass@{k}": v for k, v in s.pass_at.items()}}
        for s in scores
    ]
    return pd.DataFrame(rows)


def summary_table(frame: pd.DataFrame, k: int = 1) -> pd.DataFrame:
    """One row per language, one column per model/adapter: mean pass@k in percent."""
    column = f"pass@{k}"
    frame = frame.assign(column=frame["model"] + "/" + frame["adapter"])
    table = frame.pivot_table(index="lang", columns="column", values=column, aggfunc="mean")
    return (table * 100).round(2)


def write_reports(run: RunDir) -> dict[str, Path]:
    """Write scores.csv and table.md into the run directory; return their paths."""
    frame = scores_frame(collect_scores(run))
    paths = {"scores": run.root / "scores.csv", "table": run.root / "table.md"}
    frame.to_csv(paths["scores"], index=False)
    table = summary_table(frame) if len(frame) else pd.DataFrame()
    paths["table"].write_text(
        "# pass@1 (%) per language\n\n" + table.to_markdown() + "\n", encoding="utf-8"
    )
    return paths


def print_summary(run: RunDir) -> None:
    """The per-language pass@1 table on the terminal."""
    frame = scores_frame(collect_scores(run))
    if frame.empty:
        print("no results to score yet")
        return
    print(summary_table(frame).to_string())
