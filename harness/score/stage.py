"""The score stage over a run directory: every results file → one `ProblemScore` record,
written to `scores.csv` (and nothing else). Reports, the CI gate and the Python API read
these records back with `read_scores`; none of them computes pass@k again.

scores.csv has one row per (model, adapter, language, problem): the provenance fields,
`n`, `c`, `timeouts` (samples the sandbox stopped at a time limit, from the observation, so
also in languages without a Timeout status), `rules` (the fingerprint of the language rules
that judged the statuses), one `pass@k` column per k (empty where n < k) and `statuses`
(JSON counts).

Beside it, scores.sources.json records what it was made from: the content hash of every
results file and each language's status-rules fingerprint. scores.csv is current only when
both equal what is there now (never by comparing file times): a results file deleted by
`--overwrite`, re-made by execution, or judged by changed rules makes it stale.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path

from tqdm import tqdm

from harness.errors import UserError
from harness.files import read_json, write_json, write_text
from harness.records import ProblemResults, ProblemScore, Provenance, SamplingConfig
from harness.runs import RunDir
from harness.score.estimators import score_problem
from harness.score.judge import UNKNOWN_RULES, judge_file, rules_of, status_rules

SCORES_FILE = "scores.csv"
SOURCES_FILE = "scores.sources.json"
# language key → the fingerprint of the rules that turn its observations into statuses
RulesLookup = Callable[[str], str]
PROVENANCE_COLUMNS = [f.name for f in fields(Provenance) if f.name != "sampling"]
SAMPLING_COLUMNS = [f"sampling_{f.name}" for f in fields(SamplingConfig)]
COLUMNS = [*PROVENANCE_COLUMNS, *SAMPLING_COLUMNS, "image_id", "problem", "n", "c", "timeouts", "rules"]


@dataclass(frozen=True)
class ScoreSources:
    """What a scores.csv was made from: results file (relative path) → content hash, and
    language → status-rules fingerprint."""

    results: dict[str, str]
    rules: dict[str, str]

    def to_json(self) -> dict:
        return {"results": self.results, "rules": self.rules}


def score_run(run: RunDir, rules: RulesLookup = status_rules) -> list[ProblemScore]:
    """Score every results file of `run` (its statuses judged again with today's rules, the
    file rewritten when they changed) and write `scores.csv` and what it was made from
    (`rules`: each language's rules fingerprint); returns the records."""
    paths = run.result_files()
    hashes = results_hashes(run, paths)  # before reading: a file re-made meanwhile makes these stale
    scores = []
    for path in tqdm(paths, desc="score", unit="file", disable=len(paths) < 500):
        results, rewritten = judge_file(path)
        if rewritten:  # our own rewrite: its new content is what was scored
            hashes.update(results_hashes(run, [path]))
        scores.append(_scored(results))
    langs = sorted({s.rules.partition(":")[0] for s in scores if s.rules})  # the judged ones
    write_scores(run.root / SCORES_FILE, scores)
    sources = ScoreSources(hashes, {lang: rules(lang) for lang in langs})
    write_json(run.root / SOURCES_FILE, sources.to_json())  # after scores.csv: a kill between keeps it stale
    return scores


def _scored(results: ProblemResults) -> ProblemScore:
    return replace(score_problem(results), rules=rules_of(results))


def scores_current(run: RunDir, rules: RulesLookup = status_rules) -> bool:
    """Whether scores.csv was made from exactly the results files now present (same paths,
    same contents) and under every language's current status rules."""
    path, sources_path = run.root / SCORES_FILE, run.root / SOURCES_FILE
    if not (path.exists() and sources_path.exists()):
        return False
    try:
        data = read_json(sources_path)
        sources = ScoreSources(dict(data["results"]), dict(data["rules"]))
    except (UserError, KeyError, TypeError, ValueError):
        return False
    if any(rules(lang) != fingerprint for lang, fingerprint in sources.rules.items()):
        return False
    return sources.results == results_hashes(run, run.result_files())


def results_hashes(run: RunDir, paths: list[Path]) -> dict[str, str]:
    return {p.relative_to(run.root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


def write_scores(path: Path, scores: list[ProblemScore]) -> None:
    ks = sorted({k for s in scores for k in s.pass_at})
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*COLUMNS, *(f"pass@{k}" for k in ks), "statuses"])
    for s in sorted(scores, key=_order):
        p = s.provenance
        row = [_cell(getattr(p, name)) for name in PROVENANCE_COLUMNS]
        row += [getattr(p.sampling, name.removeprefix("sampling_")) for name in SAMPLING_COLUMNS]
        row += [s.image_id, s.problem, s.n, s.c, s.timeouts, s.rules]
        row += [repr(s.pass_at[k]) if k in s.pass_at else "" for k in ks]
        row.append(json.dumps(s.statuses, sort_keys=True))
        writer.writerow(row)
    write_text(path, buffer.getvalue())


def read_scores(path: Path) -> list[ProblemScore]:
    """The records of a scores.csv; a file that is not one is a one-line UserError."""
    try:
        with path.open(newline="", encoding="utf-8") as f:
            return [_record(row) for row in csv.DictReader(f)]
    except FileNotFoundError:
        raise UserError(f"{path} not found; run `flora-eval score {path.parent}` first") from None
    except (KeyError, ValueError, TypeError) as exc:
        raise UserError(f"{path}: not a flora-eval scores file ({type(exc).__name__}: {exc}); "
                        f"write it again with `flora-eval score {path.parent}`") from None


def _record(row: dict[str, str]) -> ProblemScore:
    sampling = SamplingConfig(n=int(row["sampling_n"]), temperature=float(row["sampling_temperature"]),
                              top_p=float(row["sampling_top_p"]), max_tokens=int(row["sampling_max_tokens"]),
                              seed=int(row["sampling_seed"]))
    kw = {name: row.get(name, "") for name in PROVENANCE_COLUMNS}  # a column added later reads ""
    kw["rank"] = int(kw["rank"]) if kw["rank"] else None
    kw["seeded"] = {"True": True, "False": False}.get(kw["seeded"])
    kw["prompt_style"] = kw["prompt_style"] or "completion"  # files before styles: completion prompts
    pass_at = {int(key[5:]): float(value) for key, value in row.items()
               if key.startswith("pass@") and value != ""}
    statuses = {k: int(v) for k, v in json.loads(row["statuses"]).items()}
    return ProblemScore(provenance=Provenance(**kw, sampling=sampling), problem=row["problem"],
                        n=int(row["n"]), c=int(row["c"]), pass_at=pass_at,
                        statuses=statuses, image_id=row["image_id"],
                        timeouts=int(row["timeouts"]) if row.get("timeouts") else statuses.get("Timeout", 0),
                        rules=row.get("rules", UNKNOWN_RULES))


def _cell(value: object) -> object:
    return "" if value is None else value


def _order(s: ProblemScore) -> tuple:
    p = s.provenance
    return (p.benchmark, p.model, p.adapter != "base", p.adapter, p.lang, _problem_number(s.problem),
            s.problem)


def _problem_number(name: str) -> int:
    parts = name.split("_")
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else -1

