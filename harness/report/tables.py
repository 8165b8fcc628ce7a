"""The report's tables as pandas frames (pure: frames in, frames out), and their text forms.

Every score is a mean over problems in percent. `counts` frames have one row per
(run, model, adapter, benchmark, lang, problem) with n, c and pass@k, plus the `column` label
of Table 1. Table 1 has a row per (benchmark, model, language)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from harness.report.labels import benchmark_name, column_sort_key, language_name
from harness.score import align, estimate, paired, relative_improvement

CELL = ["run", "model", "adapter", "benchmark", "lang"]
ROW = ["benchmark", "model", "lang"]  # a row of Table 1
STATUS_ORDER = ("OK", "SyntaxError", "Exception", "Timeout")


def with_pass_at(counts: pd.DataFrame, k: int) -> pd.DataFrame:
    """`counts` plus a `score` column: the score records' pass@k in percent (NaN where a
    problem has n < k)."""
    column = f"pass@{k}"
    return counts.assign(score=counts[column] if column in counts else math.nan)


def problem_scores(counts: pd.DataFrame, k: int) -> dict[tuple, dict[str, float]]:
    """(run, model, adapter, benchmark, lang) → {problem: pass@k %}, problems with n < k left out."""
    frame = with_pass_at(counts, k).dropna(subset=["score"])
    return {key: dict(zip(g["problem"], g["score"], strict=True))
            for key, g in frame.groupby(CELL, sort=False)}


def cell_estimates(counts: pd.DataFrame, k: int = 1, seed: int = 0) -> pd.DataFrame:
    """One row per cell: mean pass@k (%), standard error, 95% bootstrap interval, problems, samples."""
    labels = counts.drop_duplicates(CELL).set_index(CELL)["column"]
    samples = counts.groupby(CELL, sort=False)["n"].sum()
    rows = []
    for key, scores in problem_scores(counts, k).items():
        e = estimate(list(scores.values()), seed=seed)
        rows.append(dict(zip(CELL, key, strict=True), column=labels[key], k=k, mean=e.mean, se=e.se,
                         lo=e.lo, hi=e.hi, problems=e.problems, samples=int(samples[key])))
    columns = [*CELL, "column", "k", "mean", "se", "lo", "hi", "problems", "samples"]
    return _ordered(pd.DataFrame(rows, columns=columns))


def base_of(cells: pd.DataFrame) -> dict[tuple[str, str, str], tuple]:
    """(run, model, benchmark, lang) → the cell key of the base model to compare against: the
    same run's base, else the first run's base for that model, benchmark and language."""
    bases = cells[cells["adapter"] == "base"]
    first: dict[tuple[str, str, str], tuple] = {}
    own: dict[tuple[str, str, str, str], tuple] = {}
    for row in bases.itertuples(index=False):
        key = (row.run, row.model, row.adapter, row.benchmark, row.lang)
        own[(row.run, row.model, row.benchmark, row.lang)] = key
        first.setdefault((row.model, row.benchmark, row.lang), key)
    return {(r, m, b, lang): own.get((r, m, b, lang), first.get((m, b, lang)))
            for r, m, b, lang in cells[["run", "model", "benchmark", "lang"]].itertuples(index=False)
            if (m, b, lang) in first}


def comparisons(counts: pd.DataFrame, k: int = 1, seed: int = 0) -> pd.DataFrame:
    """Paired comparisons on common problems: every adapter against the base model (of its run,
    else the first run's), and every cell of a later run against the same cell of the first
    run. Differences are percentage points of pass@k."""
    scores = problem_scores(counts, k)
    cells = pd.DataFrame([dict(zip(CELL, key, strict=True)) for key in scores], columns=CELL)
    labels = counts.drop_duplicates(CELL).set_index(CELL)["column"]
    bases = base_of(cells)
    pairs = [(key, bases[(key[0], key[1], key[3], key[4])], "vs base") for key in scores
             if key[2] != "base" and bases.get((key[0], key[1], key[3], key[4]))]
    first_run = counts["run"].iloc[0] if len(counts) else None
    pairs += [(key, (first_run, *key[1:]), "vs run " + str(first_run)) for key in scores
              if key[0] != first_run and (first_run, *key[1:]) in scores]
    rows = []
    for treated, control, kind in pairs:
        problems, a, b = align(scores[treated], scores[control])
        if not problems:
            continue
        p = paired(a, b, seed=seed)
        rows.append({**dict(zip(CELL, treated, strict=True)), "column": labels[treated],
                     "comparison": kind, "control": labels[control], "control_run": control[0],
                     "k": k, "problems": len(problems), "treated_mean": float(np.mean(a)),
                     "control_mean": float(np.mean(b)), "diff": p.diff.mean, "diff_lo": p.diff.lo,
                     "diff_hi": p.diff.hi, "wins": p.wins, "losses": p.losses, "ties": p.ties,
                     "p_sign": p.p_sign, "p_permutation": p.p_permutation,
                     "relative": relative_improvement(float(np.mean(a)), float(np.mean(b)))})
    return _ordered(pd.DataFrame(rows))


def table1(cells: pd.DataFrame, digits: int = 2) -> pd.DataFrame:
    """The paper's Table 1, per benchmark: rows (benchmark, model, language), columns base /
    FLoRA / IA3 / LoRA / ..., cells "value (relative %)" against the row's base, relative from
    unrounded values."""
    if cells.empty:
        return pd.DataFrame()
    values = cells.pivot_table(index=ROW, columns="column", values="mean", aggfunc="first", sort=False)
    columns = sorted(values.columns, key=column_sort_key)
    base = {column: _base_column(column, columns) for column in columns}
    text = pd.DataFrame(index=values.index, columns=columns, dtype=object)
    for key, row in values.iterrows():
        for column in columns:
            base_value = row[base[column]] if base[column] else math.nan
            text.loc[key, column] = _cell(row[column], base_value, column == base[column], digits)
    text.index = _row_names(text.index)
    text.columns.name = None
    return text


def _row_names(index: pd.Index) -> pd.MultiIndex:
    """(benchmark, model, lang) keys → (benchmark, model, language) display names."""
    return pd.MultiIndex.from_tuples([(benchmark_name(b), m, language_name(lang)) for b, m, lang in index],
                                     names=["benchmark", "model", "language"])


def _base_column(column: str, columns: list[str]) -> str | None:
    """The base column a column is relative to: its own run's ("X [run]" → "base [run]") when
    there is one, else the first base column."""
    bases = [c for c in columns if c.split(" ")[0] == "base"]
    if column.endswith("]") and " [" in column:
        own = "base" + column[column.rfind(" ["):]
        if own in bases:
            return own
    return bases[0] if bases else None


def _cell(value: float, base: float, is_base: bool, digits: int) -> str:
    if value is None or math.isnan(value):
        return "–"
    if is_base or base is None or math.isnan(base):
        return f"{value:.{digits}f}"
    rel = relative_improvement(value, base)
    return f"{value:.{digits}f}" + ("" if rel is None else f" ({rel:.{digits}f}%)")


def status_table(statuses: pd.DataFrame, counts: pd.DataFrame) -> pd.DataFrame:
    """Share of samples (%) per status, one row per (run, model, benchmark, lang, column)."""
    labels = counts.drop_duplicates(CELL).set_index(CELL)["column"]
    if statuses.empty:
        return pd.DataFrame()
    table = statuses.pivot_table(index=CELL, columns="status", values="count", aggfunc="sum",
                                 fill_value=0, sort=False)
    order = [s for s in STATUS_ORDER if s in table.columns] + sorted(
        s for s in table.columns if s not in STATUS_ORDER)
    table = table[order]
    share = table.div(table.sum(axis=1), axis=0) * 100
    share.insert(0, "samples", table.sum(axis=1))
    share.insert(0, "column", [labels[key] for key in share.index])
    share.columns.name = None
    return _ordered(share.reset_index())


def _ordered(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows by run order, benchmark, model, language, then Table 1 column order."""
    if frame.empty:
        return frame
    runs = {r: i for i, r in enumerate(dict.fromkeys(frame["run"]))}
    key = frame.apply(lambda r: (runs[r["run"]], r["benchmark"], r["model"], r["lang"],
                                 column_sort_key(r["column"])), axis=1)
    return frame.iloc[sorted(range(len(frame)), key=lambda i: key.iloc[i])].reset_index(drop=True)


# ---------------------------------------------------------------------------------------
# Text forms
# ---------------------------------------------------------------------------------------
def interval_table(cells: pd.DataFrame) -> pd.DataFrame:
    """Table 1's layout with "mean ± se [lo, hi]" cells, for the markdown summary."""
    if cells.empty:
        return pd.DataFrame()
    text = cells.assign(cell=[f"{r.mean:.2f} ± {r.se:.2f} [{r.lo:.2f}, {r.hi:.2f}]"
                              for r in cells.itertuples(index=False)])
    table = text.pivot_table(index=ROW, columns="column", values="cell", aggfunc="first", sort=False)
    table = table[sorted(table.columns, key=column_sort_key)]
    table.index = _row_names(table.index)
    table.columns.name = None
    return table.fillna("–")


def comparisons_text(comps: pd.DataFrame) -> pd.DataFrame:
    """The paired comparisons, rounded for reading."""
    if comps.empty:
        return comps
    return pd.DataFrame({
        "benchmark": comps["benchmark"].map(benchmark_name), "model": comps["model"],
        "language": comps["lang"].map(language_name),
        "adapter": comps["column"], "comparison": comps["comparison"], "problems": comps["problems"],
        "Δ pts": comps["diff"].round(2),
        "95% CI": [f"[{lo:.2f}, {hi:.2f}]" for lo, hi in zip(comps["diff_lo"], comps["diff_hi"],
                                                              strict=True)],
        "wins/losses/ties": [f"{w}/{lo}/{t}" for w, lo, t in
                             zip(comps["wins"], comps["losses"], comps["ties"], strict=True)],
        "p (sign)": comps["p_sign"].map(_p), "p (perm.)": comps["p_permutation"].map(_p),
    })


def _p(p: float) -> str:
    return "<0.0001" if p < 1e-4 else f"{p:.4f}"


def timeout_shares(counts: pd.DataFrame) -> pd.DataFrame:
    """Per (run, benchmark, language): samples, those the sandbox stopped at a time limit
    (the score records' `timeouts`, from the observation: also in rkt and php, whose status
    for it is Exception) and their share (%), over every column. A share that jumps between
    runs of the same programs points at a loaded machine."""
    if counts.empty:
        return pd.DataFrame(columns=["run", "benchmark", "lang", "samples", "timeouts", "share"])
    group = counts.groupby(["run", "benchmark", "lang"], sort=False)
    frame = pd.DataFrame({"samples": group["n"].sum(), "timeouts": group["timeouts"].sum()}).reset_index()
    frame = frame.astype({"samples": int, "timeouts": int})
    return frame.assign(share=frame["timeouts"] / frame["samples"] * 100)


def cut_shares(finishes: pd.DataFrame) -> pd.DataFrame:
    """Per (run, benchmark, language): samples with a recorded finish reason, those cut at
    max_tokens (finish_reason "length") and their share (%). A large share means the budget,
    not the model, decided many outcomes: raise --max-tokens or read pass@k with that in mind."""
    columns = ["run", "benchmark", "lang", "samples", "cut", "share"]
    if finishes.empty:
        return pd.DataFrame(columns=columns)
    known = finishes.assign(samples=finishes["samples"] - finishes["unknown"])
    frame = known.groupby(["run", "benchmark", "lang"], sort=False)[["samples", "cut"]].sum().reset_index()
    frame = frame[frame["samples"] > 0]
    return frame.assign(share=frame["cut"] / frame["samples"] * 100)[columns]


def cut_markdown(cuts: pd.DataFrame) -> str:
    """table.md's line on the samples cut at max_tokens (empty when no file records reasons)."""
    if cuts.empty:
        return ""
    shares = ", ".join(f"{benchmark_name(r.benchmark)} {language_name(r.lang)} {r.share:.1f} % "
                       f"({r.cut} of {r.samples})" for r in cuts.itertuples())
    return f"Samples cut at max_tokens per language: {shares}.\n"


def extraction_shares(extractions: pd.DataFrame) -> pd.DataFrame:
    """Per (run, model, adapter, benchmark, language) of instruct runs: the replies and the
    share (%) of each extraction kind (harness/extract.py: fenced in the language, fenced
    other, no fence, no code). Many "no fence" or "no code" replies mean the model did not
    answer with code, whatever its pass@k."""
    keys = ["run", "model", "adapter", "benchmark", "lang"]
    if extractions.empty:
        return pd.DataFrame(columns=[*keys, "replies"])
    kinds = [c for c in extractions.columns if c not in keys]
    frame = extractions.groupby(keys, sort=False)[kinds].sum().reset_index()
    total = frame[kinds].sum(axis=1)
    return frame[keys].assign(replies=total, **{k: frame[k] / total.where(total > 0) * 100 for k in kinds})


def extraction_markdown(shares: pd.DataFrame) -> str:
    """table.md's extraction breakdown (empty when no run used instruct prompts)."""
    if shares.empty:
        return ""
    shown = shares.drop(columns=["run"]).assign(lang=shares["lang"].map(language_name),
                                                 benchmark=shares["benchmark"].map(benchmark_name))
    return "\n".join(["", "## Extraction (% of replies): where the code was found", "",
                      shown.to_markdown(index=False, floatfmt=".1f"), ""]) + "\n"


def style_line(styles: dict[str, tuple[str, ...]]) -> str:
    """table.md's line naming each run's prompt style."""
    shown = "; ".join(f"{run}: {', '.join(found) or 'completion'}" for run, found in styles.items())
    return f"Prompt style: {shown} (completion: MultiPL-E's prompt and stop tokens; instruct: the model's " \
           "chat template, code extracted from the reply).\n\n"


def known_defects(counts: pd.DataFrame) -> pd.DataFrame:
    """The run's problems that their benchmark lists as broken upstream (no completion can
    pass): one row per (benchmark, model, language, problem), with the samples that passed
    in each column. They are scored as published, and shown so nobody reads them as the
    model's failures."""
    from harness.problems import benchmark_defect

    rows = []
    for (benchmark, model, lang, problem), group in counts.groupby(["benchmark", "model", "lang", "problem"],
                                                                   sort=False):
        defect = benchmark_defect(benchmark, lang, problem)
        if defect is not None:
            rows.append({"benchmark": benchmark, "model": model, "lang": lang, "problem": problem,
                         "why": defect.why, "passed": int(group["c"].sum()),
                         "samples": int(group["n"].sum())})
    return pd.DataFrame(rows, columns=["benchmark", "model", "lang", "problem", "why", "passed", "samples"])


def markdown_report(table: pd.DataFrame, intervals: pd.DataFrame, comps: pd.DataFrame,
                    statuses: pd.DataFrame, defects: pd.DataFrame | None = None,
                    timeouts: pd.DataFrame | None = None, k: int = 1) -> str:
    """table.md: Table 1 (one per benchmark), intervals, paired comparisons, the status
    breakdown and the known upstream defects among the run's problems."""
    parts = [f"# pass@{k} (%) — Table 1 layout, value (relative improvement over base)", ""]
    parts += _per_benchmark(table) if not table.empty else ["no results yet", ""]
    if not intervals.empty:
        parts += [f"## pass@{k} (%): mean ± standard error [95% bootstrap interval over problems]", "",
                  *_per_benchmark(intervals, level="###")]
    if not comps.empty:
        parts += ["## Paired comparisons (percentage points, same problems)", "",
                  comparisons_text(comps).to_markdown(index=False), ""]
    if not statuses.empty:
        shown = statuses.drop(columns=["adapter"]).assign(lang=statuses["lang"].map(language_name),
                                                          benchmark=statuses["benchmark"].map(benchmark_name))
        parts += ["## Status breakdown (% of samples)", "",
                  shown.to_markdown(index=False, floatfmt=".1f"), ""]
    if timeouts is not None and not timeouts.empty:
        shares = ", ".join(f"{benchmark_name(r.benchmark)} {language_name(r.lang)} {r.share:.1f} %"
                           for r in timeouts.itertuples())
        parts += [f"Timeout share per language: {shares}.", ""]
    if defects is not None and not defects.empty:
        shown = defects.assign(benchmark=defects["benchmark"].map(benchmark_name),
                               lang=defects["lang"].map(language_name))
        parts += ["## Known upstream defects (scored as published: no completion can pass)", "",
                  shown.to_markdown(index=False), ""]
    return "\n".join(parts)


def _per_benchmark(table: pd.DataFrame, level: str = "##") -> list[str]:
    """One markdown table per benchmark of a (benchmark, model, language)-indexed table."""
    parts = []
    for name in dict.fromkeys(table.index.get_level_values("benchmark")):
        parts += [f"{level} {name}", "", _markdown(table.xs(name, level="benchmark")), ""]
    return parts


def _markdown(table: pd.DataFrame) -> str:
    """A (model, language)-indexed table as markdown, each model named once, cells verbatim."""
    flat = table.reset_index()
    flat["model"] = flat["model"].where(flat["model"] != flat["model"].shift(), "")
    return flat.to_markdown(index=False, disable_numparse=True)


def latex_table1(table: pd.DataFrame, k: int = 1) -> str:
    """Table 1 as a LaTeX tabular (booktabs), percent signs escaped."""
    escaped = table.map(_latex)
    escaped.index = pd.MultiIndex.from_tuples([tuple(map(_latex, i)) for i in table.index],
                                              names=table.index.names)
    escaped.columns = [_latex(c) for c in table.columns]
    return escaped.to_latex(escape=False, multirow=True,
                            caption=f"pass@{k} (relative improvement over the base model)",
                            label="tab:pass-at-k")


LATEX_SPECIALS = {"\\": r"\textbackslash{}", "%": r"\%", "&": r"\&", "#": r"\#", "_": r"\_",
                  "$": r"\$", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}"}


def _latex(value: object) -> str:
    return "".join(LATEX_SPECIALS.get(ch, ch) for ch in str(value))
