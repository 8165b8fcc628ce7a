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


@dataclass(frozen=True, kw_only=True)
class ProblemFile:
    """The fields every MultiPL-E per-problem file carries, plus our provenance."""

    name: str
    language: str
    temperature: float
    top_p: float
    max_tokens: int
    prompt: str
    tests: str
    stop_tokens: tuple[str, ...]
    model: str = ""
    adapter: str = BASE
    adapter_hash: str = ""
    seed: int = 0

    @classmethod
    def _header_from_json(cls, d: dict[str, Any]) -> dict[str, Any]:
        """Keyword arguments from a file written by us or by another tool (MultiPL-E,
        bigcode): unknown keys are dropped, missing sampling fields get neutral values."""
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        kw["stop_tokens"] = tuple(kw.get("stop_tokens") or ())
        kw.setdefault("tests", "")
        for key, default in (("temperature", 0.0), ("top_p", 1.0), ("max_tokens", 0)):
            if kw.get(key) is None:
                kw[key] = default
        return kw

    def _header_json(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(ProblemFile)}
        d["stop_tokens"] = list(self.stop_tokens)
        return d


@dataclass(frozen=True, kw_only=True)
class Completions(ProblemFile):
    """All completions of one problem by one (model, adapter): a MultiPL-E completions file."""

    completions: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {**self._header_json(), "completions": list(self.completions)}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Completions:
        kw = cls._header_from_json(d)
        kw["completions"] = tuple(d["completions"])
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


@dataclass(frozen=True, kw_only=True)
class ProblemResults(ProblemFile):
    """Execution results of one problem's completions: a MultiPL-E results file."""

    results: tuple[ExecResult, ...]
    image_id: str = ""
    limits: str = ""  # the language definition's and the sandbox's limits that made them

    @property
    def n(self) -> int:
        return len(self.results)

    @property
    def n_passed(self) -> int:
        return sum(r.passed for r in self.results)

    def to_json(self) -> dict[str, Any]:
        return {**self._header_json(), "results": [asdict(r) for r in self.results],
                "image_id": self.image_id, "limits": self.limits}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ProblemResults:
        kw = cls._header_from_json(d)
        kw["results"] = tuple(ExecResult(**_result_fields(r)) for r in d["results"])
        return cls(**kw)

    @classmethod
    def of(cls, completions: Completions, results: list[ExecResult], image_id: str = "", limits: str = ""):
        header = {f.name: getattr(completions, f.name) for f in fields(ProblemFile)}
        return cls(**header, results=tuple(results), image_id=image_id, limits=limits)


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
