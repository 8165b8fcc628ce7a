"""The plain records that flow between stages: problems → generate → execute → score → report.

Each record mirrors a MultiPL-E file so a stage can start from files another tool wrote:
`Completions` is a `<name>.json.gz` completions file, `ProblemResults` a
`<name>.results.json.gz` results file. Extra provenance fields (model, adapter, seed, ...)
are ours; MultiPL-E readers ignore unknown keys.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

BASE = "base"  # the adapter name used for the base model (no adapter)


@dataclass(frozen=True)
class Problem:
    """One MultiPL-E HumanEval row for one language."""

    name: str
    language: str  # MultiPL-E's `language`: the file extension (`rb`, `go_test.go`, ...)
    prompt: str
    tests: str
    stop_tokens: tuple[str, ...]
    doctests: str = ""
    original: str = ""
    prompt_terminology: str = ""

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Problem:
        return cls(
            name=row["name"],
            language=row["language"],
            prompt=row["prompt"],
            tests=row["tests"],
            stop_tokens=tuple(row["stop_tokens"]),
            doctests=row.get("doctests") or "",
            original=row.get("original") or "",
            prompt_terminology=row.get("prompt_terminology") or "",
        )


@dataclass(frozen=True)
class SamplingConfig:
    """How completions are sampled; the paper's defaults (n=100, T=0.1), MultiPL-E's top_p."""

    n: int = 100
    temperature: float = 0.1
    top_p: float = 0.95
    max_tokens: int = 1024
    seed: int = 0


@dataclass(frozen=True)
class Completions:
    """All completions of one problem by one (model, adapter): a MultiPL-E completions file."""

    name: str
    language: str
    temperature: float
    top_p: float
    max_tokens: int
    prompt: str
    tests: str
    stop_tokens: tuple[str, ...]
    completions: tuple[str, ...]
    model: str = ""
    adapter: str = BASE
    adapter_hash: str = ""
    seed: int = 0

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["stop_tokens"] = list(self.stop_tokens)
        d["completions"] = list(self.completions)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Completions:
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        kw["stop_tokens"] = tuple(kw.get("stop_tokens") or ())
        kw["completions"] = tuple(kw["completions"])
        kw.setdefault("tests", "")
        for key, default in (("temperature", 0.0), ("top_p", 1.0), ("max_tokens", 0)):
            if kw.get(key) is None:
                kw[key] = default
        return cls(**kw)


@dataclass(frozen=True)
class ExecResult:
    """What running one program gave: MultiPL-E's per-program result entry."""

    program: str
    stdout: str
    stderr: str
    exit_code: int
    status: str  # OK, SyntaxError, Exception, Timeout, ...
    timestamp: int = 0

    @property
    def passed(self) -> bool:
        """MultiPL-E's pass rule: status OK and exit code 0."""
        return self.status == "OK" and self.exit_code == 0


@dataclass(frozen=True)
class ProblemResults:
    """Execution results of one problem's completions: a MultiPL-E results file."""

    name: str
    language: str
    temperature: float
    top_p: float
    max_tokens: int
    prompt: str
    tests: str
    stop_tokens: tuple[str, ...]
    results: tuple[ExecResult, ...]
    model: str = ""
    adapter: str = BASE
    adapter_hash: str = ""
    seed: int = 0
    image_id: str = ""

    @property
    def n(self) -> int:
        return len(self.results)

    @property
    def n_passed(self) -> int:
        return sum(r.passed for r in self.results)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["stop_tokens"] = list(self.stop_tokens)
        d["results"] = [asdict(r) for r in self.results]
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ProblemResults:
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        kw["stop_tokens"] = tuple(kw.get("stop_tokens") or ())
        kw["results"] = tuple(ExecResult(**_result_fields(r)) for r in d["results"])
        kw.setdefault("tests", "")
        for key, default in (("temperature", 0.0), ("top_p", 1.0), ("max_tokens", 0)):
            if kw.get(key) is None:
                kw[key] = default
        return cls(**kw)

    @classmethod
    def of(cls, completions: Completions, results: list[ExecResult], image_id: str = ""):
        meta = completions.to_json()
        meta.pop("completions")
        meta["stop_tokens"] = completions.stop_tokens
        return cls(**meta, results=tuple(results), image_id=image_id)


def _result_fields(r: dict[str, Any]) -> dict[str, Any]:
    keys = {f.name for f in fields(ExecResult)}
    out = {k: r.get(k) for k in keys}
    out["stdout"] = out["stdout"] or ""
    out["stderr"] = out["stderr"] or ""
    out["timestamp"] = out["timestamp"] or 0
    out["exit_code"] = -1 if out["exit_code"] is None else out["exit_code"]
    return out


@dataclass(frozen=True)
class ProblemScore:
    """pass@k of one problem for one (model, adapter, language)."""

    model: str
    adapter: str
    language: str
    problem: str
    n: int
    c: int
    pass_at: dict[int, float] = field(default_factory=dict)
