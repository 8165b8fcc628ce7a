"""Assemble one or more loaded runs into every table of the report, and write the files."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness.report.contents import Report
from harness.report.labels import column_labels
from harness.report.load import RunData
from harness.report.tables import (
    cell_estimates,
    comparisons,
    cut_markdown,
    cut_shares,
    extraction_markdown,
    extraction_shares,
    interval_table,
    known_defects,
    latex_table1,
    markdown_report,
    status_table,
    style_line,
    table1,
    timeout_shares,
)

SEED = 0  # one seed for every bootstrap and permutation draw of a report


def assemble(runs: list[RunData], seed: int = SEED) -> Report:
    """Every table of the report for `runs` (one run, or several combined)."""
    counts = pd.concat([r.counts() for r in runs], ignore_index=True)
    statuses = pd.concat([r.statuses() for r in runs], ignore_index=True)
    keys = list(zip(counts["run"], counts["adapter"], strict=True))
    methods = {(r.label, adapter): method for r in runs for adapter, method in r.methods.items()}
    labels = column_labels(keys, methods)
    counts = counts.assign(column=[labels[key] for key in keys])
    ks = tuple(int(c[5:]) for c in counts.columns if c.startswith("pass@")) or (1,)
    cells = {k: cell_estimates(counts, k, seed) for k in ks}
    return Report(
        runs=tuple(runs), counts=counts, ks=ks, cells=cells,
        comparisons=comparisons(counts, 1, seed),
        table1=table1(cells[1]), intervals=interval_table(cells[1]),
        statuses=status_table(statuses, counts), defects=known_defects(counts),
        timeouts=timeout_shares(counts),
        cuts=cut_shares(pd.concat([r.finish_counts() for r in runs], ignore_index=True)),
        extractions=extraction_shares(pd.concat([r.extraction_counts() for r in runs], ignore_index=True)),
    )


def write_files(report: Report, out_dir: Path) -> dict[str, Path]:
    """cells.csv, comparisons.csv, statuses.csv, table.md, table1.csv, table1.tex and
    report.html in `out_dir`; returns their paths by name."""
    from harness.report.html import render_html

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {name: out_dir / file for name, file in (
        ("cells", "cells.csv"), ("comparisons", "comparisons.csv"),
        ("statuses", "statuses.csv"), ("table", "table.md"), ("table1_csv", "table1.csv"),
        ("latex", "table1.tex"), ("html", "report.html"))}
    pd.concat(report.cells.values(), ignore_index=True).to_csv(paths["cells"], index=False)
    report.comparisons.to_csv(paths["comparisons"], index=False)
    report.statuses.to_csv(paths["statuses"], index=False)
    report.table1.to_csv(paths["table1_csv"])
    paths["table"].write_text(style_line(report.styles)
                              + markdown_report(report.table1, report.intervals, report.comparisons,
                                                report.statuses, report.defects, report.timeouts)
                              + cut_markdown(report.cuts) + extraction_markdown(report.extractions),
                              encoding="utf-8")
    paths["latex"].write_text(latex_table1(report.table1) if not report.table1.empty else "",
                              encoding="utf-8")
    paths["html"].write_text(render_html(report), encoding="utf-8")
    return paths
