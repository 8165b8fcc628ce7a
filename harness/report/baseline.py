"""`flora-eval baseline save RUN -o FILE`: freeze a run's per-problem pass counts as the CI
baseline that `flora-eval check` compares later runs with.

The file keeps (n, c) per problem, not just means, so the check can pair problems and
recompute any pass@k. Module-level imports stay light: the CLI imports this to build its parser."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

FORMAT = "flora-eval-baseline"
VERSION = 1
Cells = dict[tuple[str, str, str], dict[str, tuple[int, int]]]  # (model, adapter, lang) → {problem: (n, c)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="baseline_command", metavar="ACTION", required=True)
    save = sub.add_parser("save", help="write a run's per-problem pass counts to a baseline file")
    save.add_argument("run", help="run directory (results/<run-id>)")
    save.add_argument("-o", "--output", required=True, metavar="FILE", help="baseline JSON to write")


def run(args: argparse.Namespace) -> int:
    from harness.runs import RunDir

    cells = run_cells(RunDir.existing(args.run))
    path = Path(args.output)
    save_baseline(path, cells, source=str(args.run))
    problems = sum(len(c) for c in cells.values())
    print(f"baseline: {path} ({len(cells)} model/adapter/language cells, {problems} problems)")
    return 0


def run_cells(run) -> Cells:
    """Per-problem (n, c) of every results file in a run; a run without results is an error."""
    from harness.errors import UserError
    from harness.report import collect_scores

    cells: Cells = {}
    for s in collect_scores(run, ks=[1]):
        cells.setdefault((s.model, s.adapter, s.language), {})[s.problem] = (s.n, s.c)
    if not cells:
        raise UserError(f"{run.root} has no results files; run the evaluation "
                        "(or `flora-eval execute`) first")
    return cells


def to_json(cells: Cells, source: str = "") -> dict[str, Any]:
    return {
        "format": FORMAT, "version": VERSION, "source": source,
        "cells": [{"model": m, "adapter": a, "lang": lang,
                   "problems": {p: [n, c] for p, (n, c) in sorted(problems.items())}}
                  for (m, a, lang), problems in sorted(cells.items())],
    }


def from_json(data: Any, where: str = "baseline") -> Cells:
    """Parse a baseline file's content; anything else is a one-line UserError."""
    from harness.errors import UserError

    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise UserError(f"{where} is not a flora-eval baseline; write one with "
                        "`flora-eval baseline save RUN -o FILE`")
    if data.get("version") != VERSION:
        raise UserError(f"{where} has baseline version {data.get('version')}, this flora-eval reads "
                        f"{VERSION}; save the baseline again")
    try:
        return {(c["model"], c["adapter"], c["lang"]): {p: (int(n), int(k)) for p, (n, k) in
                                                         c["problems"].items()}
                for c in data["cells"]}
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{where} is malformed ({type(exc).__name__}: {exc}); "
                        "save the baseline again") from None


def save_baseline(path: Path, cells: Cells, source: str = "") -> None:
    from harness.files import write_json

    write_json(path, to_json(cells, source))


def load_baseline(path: Path) -> Cells:
    from harness.files import read_json

    return from_json(read_json(path), str(path))
