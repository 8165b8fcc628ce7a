"""Problems stage: MultiPL-E HumanEval rows for a language, from the hub or local files."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from harness.errors import UserError
from harness.records import BENCHMARK, Problem

HUB_DATASET = "nuprl/MultiPL-E"
# v3.3 fixes Lua's stop token (bigcode-evaluation-harness uses it); v3 dropped Python,
# so `py` comes from the last pre-v3 release.
REVISION_V3_3 = "28441b6024e71d4a1c1c0f6bf171c935cd5a43f2"
REVISION_PRE_V3 = "d23b094346c5dbda1080a74bb2a24c18adbf7409"


@dataclass(frozen=True)
class ProblemSet:
    """The problems of one language plus where they came from (for the manifest)."""

    lang: str
    problems: tuple[Problem, ...]
    source: str  # "hub:nuprl/MultiPL-E" or a local path
    revision: str  # the pinned hub revision, or a content hash of the local file
    benchmark: str = BENCHMARK


def hub_revision(lang: str) -> str:
    return REVISION_PRE_V3 if lang == "py" else REVISION_V3_3


def load_problems(lang: str, dataset: str | Path | None = None, limit: int | None = None):
    """Load a language's problems: from `dataset` (a .jsonl/.json file or a directory of
    `humaneval-<lang>.jsonl` files) when given, else from the hub at the pinned revision."""
    if dataset is not None:
        problem_set = _load_local(lang, Path(dataset))
    else:
        problem_set = _load_hub(lang)
    if limit is not None:
        problem_set = replace(problem_set, problems=problem_set.problems[:limit])
    return problem_set


def _load_hub(lang: str) -> ProblemSet:
    import datasets

    revision = hub_revision(lang)
    try:
        rows = datasets.load_dataset(
            HUB_DATASET, f"humaneval-{lang}", revision=revision, split="test"
        )
    except Exception as exc:  # the hub raises many types: offline, DNS, 404, ...
        raise UserError(
            f"cannot load {HUB_DATASET} humaneval-{lang} from the hub ({type(exc).__name__}); "
            "pass local data with --dataset PATH (e.g. --dataset ../shared/multipl-e/humaneval)"
        ) from None
    problems = tuple(Problem.from_row(dict(row)) for row in rows)
    return ProblemSet(lang, problems, f"hub:{HUB_DATASET}", revision)


def _load_local(lang: str, path: Path) -> ProblemSet:
    if path.is_dir():
        candidates = [path / f"humaneval-{lang}.jsonl", path / f"humaneval-{lang}.json"]
        found = [p for p in candidates if p.is_file()]
        if not found:
            raise UserError(
                f"no humaneval-{lang}.jsonl in {path}; "
                "pass a directory holding humaneval-<lang>.jsonl files or the file itself"
            )
        path = found[0]
    if not path.is_file():
        raise UserError(f"dataset file not found: {path}; check the --dataset path")
    rows = _read_rows(path)
    try:
        problems = tuple(Problem.from_row(row) for row in rows)
    except (KeyError, TypeError) as exc:
        raise UserError(f"{path}: a row lacks the MultiPL-E field {exc}") from None
    return ProblemSet(lang, problems, str(path.resolve()), _file_digest(path))


def _read_rows(path: Path) -> list[dict]:
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".jsonl":
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    return data if isinstance(data, list) else [data]


def _file_digest(path: Path) -> str:
    import hashlib

    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()[:16]
