"""`flora-eval baseline save RUN -o FILE`: freeze a run's per-problem pass counts as the CI
baseline that `flora-eval check` compares later runs with.

The file keeps (n, c) per problem, not just means, so the check can pair problems and
recompute any pass@k, and each cell's settings (model revision, dtype, quantization, device,
sampling, benchmark, dataset revision), so the check can refuse to compare unlike runs.
Module-level imports stay light: the CLI imports this to build its parser."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FORMAT = "flora-eval-baseline"
VERSION = 2
Key = tuple[str, str, str, str]  # (model, adapter, benchmark, lang): one gate cell
Cells = dict[Key, dict[str, tuple[int, int]]]  # cell → {problem: (n, c)}
Settings = dict[Key, dict[str, Any]]  # cell → what it was sampled with


@dataclass(frozen=True)
class Baseline:
    """Per-problem pass counts of every cell, and the settings each cell was sampled with."""

    cells: Cells
    settings: Settings = field(default_factory=dict)
    source: str = ""


def cell_settings(provenance) -> dict[str, Any]:
    """What makes two cells comparable: the model's weights and how they were held (dtype,
    8-bit quantization, device type), the distribution sampled from (temperature, top-p, max
    tokens), how the model was prompted (prompt style, chat template) and the problems
    (benchmark, dataset revision). n and the seed change only which samples are drawn, not
    what pass@k estimates."""
    return {"model_revision": provenance.model_revision, "dtype": provenance.dtype,
            "quantization": provenance.quantization, "device": provenance.device,
            "temperature": provenance.sampling.temperature,
            "top_p": provenance.sampling.top_p, "max_tokens": provenance.sampling.max_tokens,
            "prompt_style": provenance.prompt_style, "chat_template": provenance.chat_template,
            "benchmark": provenance.benchmark, "dataset_revision": provenance.dataset_revision}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="baseline_command", metavar="ACTION", required=True)
    save = sub.add_parser("save", help="write a run's per-problem pass counts to a baseline file")
    save.add_argument("run", help="run directory (results/<run-id>)")
    save.add_argument("-o", "--output", required=True, metavar="FILE", help="baseline JSON to write")


def run(args: argparse.Namespace) -> int:
    from harness.runs import RunDir

    baseline = run_baseline(RunDir.existing(args.run))
    path = Path(args.output)
    save_baseline(path, baseline)
    problems = sum(len(c) for c in baseline.cells.values())
    print(f"baseline: {path} ({len(baseline.cells)} model/adapter/benchmark/language cells, "
          f"{problems} problems)")
    return 0


def run_baseline(run) -> Baseline:
    """Per-problem (n, c) and settings of every cell of a run, from its score records; a run
    without results is an error."""
    from harness.errors import UserError
    from harness.report.load import run_scores

    cells: Cells = {}
    settings: Settings = {}
    for s in run_scores(run):
        key = (s.model, s.adapter, s.provenance.benchmark, s.lang)
        cells.setdefault(key, {})[s.problem] = (s.n, s.c)
        settings.setdefault(key, cell_settings(s.provenance))
    if not cells:
        raise UserError(f"{run.root} has no results files; run the evaluation "
                        "(or `flora-eval execute`) first")
    return Baseline(cells, settings, str(run.root))


def to_json(baseline: Baseline) -> dict[str, Any]:
    return {
        "format": FORMAT, "version": VERSION, "source": baseline.source,
        "cells": [{"model": m, "adapter": a, "benchmark": b, "lang": lang,
                   "settings": baseline.settings.get((m, a, b, lang), {}),
                   "problems": {p: [n, c] for p, (n, c) in sorted(problems.items())}}
                  for (m, a, b, lang), problems in sorted(baseline.cells.items())],
    }


def from_json(data: Any, where: str = "baseline") -> Baseline:
    """Parse a baseline file's content; anything else is a one-line UserError."""
    from harness.errors import UserError

    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise UserError(f"{where} is not a flora-eval baseline; write one with "
                        "`flora-eval baseline save RUN -o FILE`")
    if data.get("version") != VERSION:
        raise UserError(f"{where} has baseline version {data.get('version')}, this flora-eval reads "
                        f"{VERSION}; save the baseline again with `flora-eval baseline save RUN -o FILE`")
    try:
        keys = [(c["model"], c["adapter"], c["benchmark"], c["lang"]) for c in data["cells"]]
        cells = {key: {p: (int(n), int(k)) for p, (n, k) in c["problems"].items()}
                 for key, c in zip(keys, data["cells"], strict=True)}
        settings = {key: dict(c.get("settings") or {}) for key, c in zip(keys, data["cells"], strict=True)}
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{where} is malformed ({type(exc).__name__}: {exc}); "
                        "save the baseline again") from None
    return Baseline(cells, settings, str(data.get("source") or ""))


def save_baseline(path: Path, baseline: Baseline) -> None:
    from harness.files import write_json

    write_json(path, to_json(baseline))


def load_baseline(path: Path) -> Baseline:
    from harness.files import read_json

    return from_json(read_json(path), str(path))
