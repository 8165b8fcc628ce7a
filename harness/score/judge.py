"""Judgments derived from observations: a results file's statuses judged again with today's
language rules. Every reader that turns results into numbers (the score stage, the report's
drill-down) reads them through `read_judged`, so a rule change (in a TOML file or in
`status_of`'s code) applies without running anything, and a file whose stored statuses
differ from today's judgment is rewritten.

Results without an observation (files of MultiPL-E or other tools) keep the status they
were written with. Score records name the rules they were judged with (`rules`), so a
scores.csv made under other rules is made again (`status_rules`, in scores.sources.json)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from harness.execute.languages import language_key, load_language, result_of
from harness.files import read_results, write_results
from harness.records import ExecResult, ProblemResults


def rejudge(results: ProblemResults) -> ProblemResults:
    """`results` with every observed program judged by today's rules (the same object when
    nothing changed)."""
    if not any(r.observation for r in results.results):
        return results
    lang = load_language(results.lang or results.language)
    judged = tuple(_judged(lang, r) for r in results.results)
    return results if judged == results.results else replace(results, results=judged)


def _judged(lang, result: ExecResult) -> ExecResult:
    if not result.observation:
        return result
    return result_of(lang, result.program, result.observation, result.timestamp)


UNKNOWN_RULES = "unknown"  # the `rules` of a score record written before the field existed


def rules_of(results: ProblemResults) -> str:
    """`<language key>:<rules fingerprint>` of the rules that judge `results` ("" when
    nothing was observed: the statuses are as written)."""
    if not any(r.observation for r in results.results):
        return ""
    return _rules(load_language(results.lang or results.language).key)


def _rules(key: str) -> str:
    return f"{key}:{load_language(key).rules_fingerprint()}"


def status_rules(lang: str) -> str:
    """The fingerprint of the rules that turn `lang`'s observations into statuses ("" for a
    language this build does not define): what dates a scores.csv besides its results."""
    key = language_key(lang) if lang else None
    return load_language(key).rules_fingerprint() if key else ""


def judge_file(path: Path) -> tuple[ProblemResults, bool]:
    """A results file judged by today's rules, rewritten when that changed a status; and
    whether it was rewritten."""
    results = read_results(path)
    judged = rejudge(results)
    if judged is not results:
        write_results(path, judged)
    return judged, judged is not results


def read_judged(path: Path) -> ProblemResults:
    """A results file judged by today's rules, rewritten when that changed a status."""
    return judge_file(path)[0]
