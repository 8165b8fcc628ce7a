"""Report stage: pass@k tables with intervals, paired comparisons, the paper's Table 1 layout,
the status breakdown and one self-contained report.html, for one run or several combined.

    load.py    a run directory → RunData (its score records, capped sample digests, manifest)
    labels.py  adapter → Table 1 column (base / FLoRA / IA3 / LoRA), language display names
    tables.py  pandas frames: estimates, comparisons, Table 1, statuses; markdown and LaTeX
    build.py   RunData list → Report (every table) → files on disk
    html.py    Report → report.html (templates/report.html.j2, charts.py for inline SVG)
    gate.py    `flora-eval check` · baseline.py  `flora-eval baseline save`
"""

from __future__ import annotations

from pathlib import Path

from harness.runs import RunDir

# pandas and numpy load on first use (inside the functions): the CLI imports this package
# to build its parser (harness.report.gate, harness.report.baseline).


def write_reports(run: RunDir) -> dict[str, Path]:
    """Every report file of one run, in the run directory: table.md (Table 1, intervals,
    paired comparisons, statuses), table1.csv/.tex, cells.csv, comparisons.csv, statuses.csv
    and report.html (key "html"). The numbers come from the score records (scores.csv)."""
    from harness.report.build import assemble, write_files
    from harness.report.load import load_run

    return write_files(assemble([load_run(run)]), run.root)


def write_combined_report(runs: list[RunDir], out_dir: str | Path) -> dict[str, Path]:
    """The same files for several runs side by side in `out_dir`: columns that would clash get
    the run's name, and every cell of a later run is compared with the first run's."""
    from harness.report.build import assemble, write_files
    from harness.report.load import load_run

    labels = _unique_labels(runs)
    return write_files(assemble([load_run(r, label) for r, label in zip(runs, labels, strict=True)]),
                       Path(out_dir))


def _unique_labels(runs: list[RunDir]) -> list[str]:
    """Run names (folder names), made unique with the parent folder where two coincide."""
    names = [r.root.name for r in runs]
    return [f"{r.root.parent.name}/{n}" if names.count(n) > 1 else n
            for r, n in zip(runs, names, strict=True)]
