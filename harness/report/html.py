"""report.html: one self-contained page (inline CSS and SVG, no script, no network) rendered
from the assembled Report with the jinja2 template in templates/."""

from __future__ import annotations

import json
import re
from typing import Any

import jinja2
from markupsafe import Markup

from harness.problems import benchmark_defect
from harness.report.charts import STATUS_COLORS, bar_chart, colors_for, heatmap, status_bar
from harness.report.contents import Report
from harness.report.labels import benchmark_name, column_sort_key, language_name

MANIFEST_VALUE_CHARS = 400
SIGNIFICANCE = 0.05


def problem_order(name: str) -> tuple[int, str]:
    """HumanEval_<N>_... and mbpp_<N>_... by N, others after, by name."""
    m = re.match(r"[A-Za-z]+_(\d+)_", name)
    return (int(m.group(1)) if m else 1 << 30, name)


def flatten(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Nested manifest values as (dotted key, text) rows, long values capped."""
    if isinstance(value, dict):
        if not value:
            return [(prefix, "{}")]
        return [row for k, v in value.items() for row in flatten(v, f"{prefix}.{k}" if prefix else str(k))]
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return [row for i, v in enumerate(value) for row in flatten(v, f"{prefix}[{i}]")]
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    if len(text) > MANIFEST_VALUE_CHARS:
        text = text[:MANIFEST_VALUE_CHARS] + f" … [{len(text) - MANIFEST_VALUE_CHARS} more characters]"
    return [(prefix, text)]


def _columns(frame) -> list[str]:
    return sorted(dict.fromkeys(frame["column"]), key=column_sort_key)


def summary_rows(report: Report, k: int) -> tuple[list[str], list[dict]]:
    """Table 1 with intervals: per (model, language) row, per column mean, interval and the
    paired test against base."""
    cells = report.cells[k]
    columns = _columns(cells)
    comps = report.comparisons
    against_base = comps[comps["comparison"] == "vs base"] if not comps.empty else comps
    vs_base = {} if comps.empty or k != 1 else {
        (r.benchmark, r.model, r.lang, r.column): r for r in against_base.itertuples()}
    rows = []
    for (benchmark, model, lang), group in cells.groupby(["benchmark", "model", "lang"], sort=False):
        by_column = {r.column: r for r in group.itertuples()}
        entries = []
        for column in columns:
            r = by_column.get(column)
            c = vs_base.get((benchmark, model, lang, column))
            entries.append(None if r is None else {
                "mean": r.mean, "se": r.se, "lo": r.lo, "hi": r.hi, "problems": r.problems,
                "relative": None if c is None else c.relative,
                "diff": None if c is None else c.diff, "p": None if c is None else c.p_permutation,
                "significant": c is not None and c.p_permutation < SIGNIFICANCE,
            })
        rows.append({"benchmark": benchmark_name(benchmark), "model": model, "lang": language_name(lang),
                     "cells": entries})
    return columns, rows


def charts(report: Report) -> list[dict]:
    """One grouped bar chart of pass@1 per (benchmark, model): languages × columns, with 95%
    intervals."""
    cells = report.cells[1]
    out = []
    for (benchmark, model), group in cells.groupby(["benchmark", "model"], sort=False):
        langs = list(dict.fromkeys(group["lang"].map(language_name)))
        values = {(language_name(r.lang), r.column): (r.mean, r.lo, r.hi) for r in group.itertuples()}
        title = f"{benchmark_name(benchmark)} · {model}"
        out.append({"model": title, "svg": Markup(bar_chart(
            langs, _columns(group), values, f"pass@1 per language, {title}"))})
    return out


def heatmaps(report: Report) -> list[dict]:
    """Per (benchmark, model, language): adapters × problems, pass rate c / n."""
    out = []
    for (benchmark, model, lang), group in report.counts.groupby(["benchmark", "model", "lang"], sort=False):
        problems = sorted(dict.fromkeys(group["problem"]), key=problem_order)
        rates = {(r.column, r.problem): r.c / r.n for r in group.itertuples() if r.n}
        title = f"{benchmark_name(benchmark)} · {model}"
        out.append({"model": title, "lang": language_name(lang), "svg": Markup(heatmap(
            _columns(group), problems, rates, f"pass rate per problem, {title} {lang}"))})
    return out


def status_rows(report: Report) -> tuple[list[str], list[dict]]:
    frame = report.statuses
    if frame.empty:
        return [], []
    statuses = [c for c in frame.columns if c not in ("run", "model", "adapter", "benchmark", "lang",
                                                       "column", "samples")]
    rows = [{"benchmark": benchmark_name(r["benchmark"]), "model": r["model"],
             "lang": language_name(r["lang"]), "column": r["column"],
             "samples": int(r["samples"]), "shares": [r[s] for s in statuses],
             "bar": Markup(status_bar({s: r[s] for s in statuses}))}
            for _, r in frame.iterrows()]
    return statuses, rows


def extraction_rows(report: Report) -> tuple[list[str], list[dict]]:
    """The extraction kinds and one row per (model, adapter, benchmark, language) of instruct runs."""
    frame = report.extractions
    if frame.empty:
        return [], []
    kinds = [c for c in frame.columns if c not in ("run", "model", "adapter", "benchmark", "lang", "replies")]
    rows = [{"model": r["model"], "adapter": r["adapter"], "benchmark": benchmark_name(r["benchmark"]),
             "lang": language_name(r["lang"]), "replies": int(r["replies"]), "shares": [r[k] for k in kinds]}
            for _, r in frame.iterrows()]
    return kinds, rows


def drill_down(report: Report) -> list[dict]:
    """Per (model, language), per problem: the prompt and each column's distinct programs."""
    label = dict(zip(zip(report.counts["run"], report.counts["adapter"], strict=True),
                     report.counts["column"], strict=True))
    sections: dict[tuple[str, str, str], dict[str, dict]] = {}
    prompts = {}
    for run in report.runs:
        prompts.update(run.prompts)
        for d in run.digests:
            problems = sections.setdefault((d.benchmark, d.model, d.lang), {})
            entry = problems.setdefault(d.problem, {"name": d.problem, "cells": []})
            entry["cells"].append({"column": label[(run.label, d.adapter)], "digest": d})
    out = []
    for (benchmark, model, lang), problems in sections.items():
        ordered = [problems[p] for p in sorted(problems, key=problem_order)]
        for entry in ordered:
            entry["cells"].sort(key=lambda c: column_sort_key(c["column"]))
            entry["prompt"] = prompts.get((lang, entry["name"]), "")
            entry["defect"] = benchmark_defect(benchmark, lang, entry["name"])
        out.append({"model": f"{benchmark_name(benchmark)} · {model}", "lang": language_name(lang),
                    "problems": ordered})
    return out


def manifests(report: Report) -> list[dict]:
    """Each run's manifest, section by section; telemetry apart."""
    return [{"label": run.label, "root": str(run.root),
             "sections": [(key, flatten(value)) for key, value in run.manifest.items()
                          if key != "telemetry"],
             "telemetry": flatten(run.manifest.get("telemetry") or {})
             if run.manifest.get("telemetry") else []}
            for run in report.runs]


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("harness.report", "templates"),
                             autoescape=True, trim_blocks=True, lstrip_blocks=True,
                             undefined=jinja2.StrictUndefined)
    env.filters["pct"] = lambda v, d=2: "–" if v is None else f"{v:.{d}f}"
    env.filters["signed"] = lambda v, d=2: "–" if v is None else f"{v:+.{d}f}"
    env.filters["pvalue"] = lambda p: "–" if p is None else ("<0.0001" if p < 1e-4 else f"{p:.4f}")
    return env


def render_html(report: Report) -> str:
    columns, rows = summary_rows(report, 1)
    statuses, status_table = status_rows(report)
    models = list(dict.fromkeys(report.counts["model"])) if len(report.counts) else []
    context = {
        "title": "flora-eval report: " + ", ".join(r.label for r in report.runs),
        "runs": [r.label for r in report.runs],
        "models": models,
        "languages": sorted({language_name(x) for x in report.counts["lang"]}),
        "samples": int(report.counts["n"].sum()) if len(report.counts) else 0,
        "problems": int(len(report.counts)),
        "columns": columns, "summary": rows,
        "colors": colors_for(columns),
        "other_ks": [(k, *summary_rows(report, k)) for k in report.ks if k != 1],
        "charts": charts(report) if len(report.counts) else [],
        "comparisons": [] if report.comparisons.empty else
        list(report.comparisons.assign(language=report.comparisons["lang"].map(language_name),
                                       benchmark_name=report.comparisons["benchmark"].map(benchmark_name))
             .itertuples()),
        "benchmarks": [benchmark_name(b) for b in dict.fromkeys(report.counts["benchmark"])]
        if len(report.counts) else [],
        "defects": [] if report.defects.empty else
        list(report.defects.assign(benchmark=report.defects["benchmark"].map(benchmark_name),
                                   language=report.defects["lang"].map(language_name)).itertuples()),
        "heatmaps": heatmaps(report) if len(report.counts) else [],
        "statuses": statuses, "status_rows": status_table,
        "timeouts": [{"benchmark": benchmark_name(r.benchmark), "lang": language_name(r.lang),
                      "share": r.share, "timeouts": r.timeouts, "samples": r.samples}
                     for r in report.timeouts.itertuples()],
        "cuts": [{"benchmark": benchmark_name(r.benchmark), "lang": language_name(r.lang), "share": r.share,
                  "cut": r.cut, "samples": r.samples} for r in report.cuts.itertuples()],
        "status_colors": {s: STATUS_COLORS.get(s, "#94a3b8") for s in statuses},
        "styles": report.styles,
        "extraction_kinds": extraction_rows(report)[0], "extractions": extraction_rows(report)[1],
        "drill": drill_down(report),
        "manifests": manifests(report),
        "significance": SIGNIFICANCE,
    }
    return _environment().get_template("report.html.j2").render(**context)

