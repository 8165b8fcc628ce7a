"""Read a run directory once into what the report needs: its score records (the numbers), the
manifest, a capped digest of each problem's samples for the HTML drill-down, and how each
completions file's samples ended (the share cut at max_tokens).

The numbers come from the score stage's records (`scores.csv`, written first when missing or
stale: made from other results files or under other status rules, harness/score/stage.py).
Every results file is judged again with today's language rules first (`read_judged`:
rewritten when a status changed, so the scores are made again from it). A full run is 161
problems × 100 samples × adapters × languages; keeping every program would cost gigabytes,
so each results file is reduced here to its distinct programs (most frequent first) with
their text capped."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from harness.files import read_completions
from harness.records import Completions, ExecResult, ProblemResults, ProblemScore
from harness.runs import COMPLETIONS_SUFFIX, RESULTS_SUFFIX, RunDir
from harness.score import SCORES_FILE, read_scores, score_run, scores_current
from harness.score.judge import read_judged

# Text kept for the drill-down: the whole report aims at about this many characters of
# samples, spread over its (problem, adapter) cells, within these bounds per field.
DRILL_BUDGET_CHARS = 6_000_000
PROGRAMS_PER_CELL = 3
TEXT_BOUNDS = {"program": (300, 4000), "output": (120, 1500), "prompt": (400, 2000)}


@dataclass(frozen=True)
class DistinctProgram:
    """One distinct program of a problem's samples, shown once with how often it was sampled."""

    completion: str  # the model's part of the program (prompt and tests cut off when present)
    status: str
    exit_code: int
    passed: bool
    count: int
    stdout: str
    stderr: str
    reply: str = ""  # instruct runs: the raw reply the completion was extracted from


@dataclass(frozen=True)
class ProblemDigest:
    """One results file reduced for the report."""

    model: str
    adapter: str
    benchmark: str
    lang: str
    problem: str
    n: int
    c: int
    distinct: int
    statuses: dict[str, int]
    programs: tuple[DistinctProgram, ...]


@dataclass(frozen=True)
class FinishCount:
    """How one completions file's samples ended: `cut` at max_tokens (finish_reason "length")
    of `samples`; `unknown` of them have no recorded reason (files of other tools or of older
    flora-eval versions)."""

    benchmark: str
    lang: str
    samples: int
    cut: int
    unknown: int

    @classmethod
    def of(cls, record: Completions) -> FinishCount:
        reasons = record.finish_reasons
        known = sum(reason in ("stop", "length") for reason in reasons)
        return cls(record.provenance.benchmark, record.lang, len(record.completions),
                   sum(reason == "length" for reason in reasons), len(record.completions) - known)


@dataclass(frozen=True)
class ExtractCount:
    """How the code of one instruct completions file's replies was found (harness/extract.py
    kinds, derived from the stored replies with the language's current rules)."""

    model: str
    adapter: str
    benchmark: str
    lang: str
    kinds: dict[str, int]

    @classmethod
    def of(cls, record: Completions) -> ExtractCount | None:
        if not record.replies:
            return None
        from harness.extract import kind_of

        kinds = Counter(kind_of(reply, record.lang) for reply in record.replies)
        p = record.provenance
        return cls(model_label(p), p.adapter, p.benchmark, p.lang, dict(kinds))


def model_label(provenance) -> str:
    """The model as tables show it: with its prompt style when that is not MultiPL-E's."""
    style = provenance.prompt_style
    return provenance.model if style == "completion" else f"{provenance.model} ({style})"


@dataclass(frozen=True)
class RunData:
    """One run as the report sees it."""

    label: str
    root: Path
    manifest: dict[str, Any]
    scores: tuple[ProblemScore, ...]
    digests: tuple[ProblemDigest, ...]
    prompts: dict[tuple[str, str], str]  # (lang, problem) → prompt
    finishes: tuple[FinishCount, ...] = ()  # one per completions file
    extractions: tuple[ExtractCount, ...] = ()  # one per instruct completions file

    @property
    def styles(self) -> tuple[str, ...]:
        """The prompt styles of the run's score records ("completion", "instruct")."""
        return tuple(sorted({s.provenance.prompt_style for s in self.scores}))

    @property
    def methods(self) -> dict[str, str]:
        """adapter → method, as the score records say."""
        return {s.adapter: s.provenance.method for s in self.scores}

    def counts(self) -> pd.DataFrame:
        """One row per (model, adapter, lang, problem): n, c, the samples that timed out and
        every pass@k (percent, NaN where n < k) of the score records, tagged with the run."""
        ks = sorted({k for s in self.scores for k in s.pass_at})
        rows = [{"run": self.label, "model": model_label(s.provenance), "adapter": s.adapter,
                 "benchmark": s.provenance.benchmark, "lang": s.lang, "problem": s.problem,
                 "n": s.n, "c": s.c, "timeouts": s.timeouts,
                 **{f"pass@{k}": s.pass_at[k] * 100 if k in s.pass_at else float("nan") for k in ks}}
                for s in self.scores]
        return pd.DataFrame(rows, columns=["run", "model", "adapter", "benchmark", "lang", "problem",
                                           "n", "c", "timeouts", *(f"pass@{k}" for k in ks)])

    def finish_counts(self) -> pd.DataFrame:
        """One row per completions file: samples, those cut at max_tokens, those without a reason."""
        rows = [{"run": self.label, "benchmark": f.benchmark, "lang": f.lang, "samples": f.samples,
                 "cut": f.cut, "unknown": f.unknown} for f in self.finishes]
        return pd.DataFrame(rows, columns=["run", "benchmark", "lang", "samples", "cut", "unknown"])

    def extraction_counts(self) -> pd.DataFrame:
        """One row per instruct completions file: its replies per extraction kind."""
        from harness.extract import KINDS

        rows = [{"run": self.label, "model": e.model, "adapter": e.adapter, "benchmark": e.benchmark,
                 "lang": e.lang, **{kind: e.kinds.get(kind, 0) for kind in KINDS}} for e in self.extractions]
        return pd.DataFrame(rows, columns=["run", "model", "adapter", "benchmark", "lang", *KINDS])

    def statuses(self) -> pd.DataFrame:
        """One row per (model, adapter, lang, status) with its sample count."""
        rows = [{"run": self.label, "model": model_label(s.provenance), "adapter": s.adapter,
                 "benchmark": s.provenance.benchmark, "lang": s.lang, "status": status, "count": count}
                for s in self.scores for status, count in s.statuses.items()]
        return pd.DataFrame(rows, columns=["run", "model", "adapter", "benchmark", "lang", "status", "count"])


def text_limits(cells: int, budget: int = DRILL_BUDGET_CHARS) -> dict[str, int]:
    """Per-field character caps so that `cells` drill-down cells fit in about `budget`."""
    per_program = budget / max(cells, 1) / PROGRAMS_PER_CELL
    share = {"program": 0.6, "output": 0.2, "prompt": 1.0}
    return {field: int(min(hi, max(lo, per_program * share[field])))
            for field, (lo, hi) in TEXT_BOUNDS.items()}


def cap(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, saying how much was cut."""
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n… [{len(text) - limit} more characters]"


def completion_of(program: str, results: ProblemResults) -> str:
    """The model's part of `prompt + completion + "\\n" + tests`, else the whole program."""
    start = len(results.prompt) if results.prompt and program.startswith(results.prompt) else 0
    end = len(program)
    if results.tests and program.endswith("\n" + results.tests):
        end -= len(results.tests) + 1
    return program[start:end] if start <= end else program


def digest(results: ProblemResults, limits: dict[str, int], replies: tuple[str, ...] = ()) -> ProblemDigest:
    """Reduce one results file: counts per status and the most frequent distinct programs,
    the most frequent passing one first when there is one, then the failing ones; with the
    samples' `replies` (instruct), each program beside the first reply it came from."""
    by_program: dict[str, list[ExecResult]] = {}
    first_reply: dict[str, str] = {}
    for i, r in enumerate(results.results):
        by_program.setdefault(r.program, []).append(r)
        if i < len(replies):
            first_reply.setdefault(r.program, replies[i])
    by_count = sorted(by_program.values(), key=len, reverse=True)
    passing = [rs for rs in by_count if rs[0].passed][:1]
    shown = (passing + [rs for rs in by_count if not rs[0].passed])[:PROGRAMS_PER_CELL]
    programs = tuple(
        DistinctProgram(
            completion=cap(completion_of(rs[0].program, results), limits["program"]),
            status=rs[0].status, exit_code=rs[0].exit_code, passed=rs[0].passed, count=len(rs),
            stdout=cap(rs[0].stdout, limits["output"]), stderr=cap(rs[0].stderr, limits["output"]),
            reply=cap(first_reply.get(rs[0].program, ""), limits["program"]),
        )
        for rs in shown
    )
    p = results.provenance
    statuses = dict(Counter(r.status for r in results.results))
    return ProblemDigest(model_label(p), p.adapter, p.benchmark, p.lang, results.name, results.n,
                         results.n_passed, len(by_program), statuses, programs)


def run_scores(run: RunDir) -> list[ProblemScore]:
    """The run's score records: scores.csv, scored first when missing or stale (made from
    other results than those now present, or under other status rules)."""
    if scores_current(run):
        return read_scores(run.root / SCORES_FILE)
    return score_run(run)


def load_run(run: RunDir, label: str | None = None) -> RunData:
    """The run's score records, its manifest and a digest of every results file (each
    judged with today's rules before the scores are read)."""
    paths = run.result_files()
    judged = [read_judged(path) for path in paths]
    scores = run_scores(run)
    limits = text_limits(len(paths))
    digests, prompts = [], {}
    completions = {path: read_completions(path) for path in run.completion_files()}
    replies = {_results_of(path): record.replies for path, record in completions.items() if record.replies}
    for path, results in zip(paths, judged, strict=True):
        digests.append(digest(results, limits, replies.get(path, ())))
        prompts.setdefault((results.provenance.lang, results.name), cap(results.prompt, limits["prompt"]))
    finishes = tuple(FinishCount.of(record) for record in completions.values())
    extractions = tuple(e for e in map(ExtractCount.of, completions.values()) if e is not None)
    return RunData(label or run.root.name, run.root, run.read_manifest(), tuple(scores), tuple(digests),
                   prompts, finishes, extractions)


def _results_of(completions_path: Path) -> Path:
    return completions_path.with_name(completions_path.name[: -len(COMPLETIONS_SUFFIX)] + RESULTS_SUFFIX)
