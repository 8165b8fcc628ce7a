"""The plain records that flow between stages: problems → generate → execute → score → report.

Each record mirrors a MultiPL-E file so a stage can start from files another tool wrote:
`Completions` is a `<name>.json.gz` completions file, `ProblemResults` a
`<name>.results.json.gz` results file. Both carry a `Provenance` (under the key
`provenance`; MultiPL-E readers ignore unknown keys): which model, adapter, language,
sampling settings, benchmark and dataset made them. Code that reads a run reads this record,
never folder names.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

BASE = "base"  # the adapter name (and method) of the base model (no adapter)
BENCHMARK = "humaneval"


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

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> SamplingConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known and v is not None})


@dataclass(frozen=True)
class Provenance:
    """What made a record: the model and its revision, how its weights were held (dtype,
    quantization, device type), the adapter (method, rank, content hash), the language, the
    full sampling config and seed, whether the seeds were honoured, the benchmark and dataset
    revision, and the flora-eval version that wrote it.

    A setting a file does not record reads as "" (or None), which differs from every value a
    run records now: such a file is never taken for one made with today's settings."""

    model: str = ""  # the name the run was asked for (alias, hub id, path or "tiny")
    model_revision: str = ""  # hub commit, "sha256:..." of a local directory / the tiny model,
    # or "served:sha256:..." of what a server says of itself (remote.py)
    dtype: str = ""  # "float32", "bfloat16", ... ("" served: the server's own business)
    quantization: str = ""  # "none" or "int8" (8-bit base weights); "" served
    device: str = ""  # the device type ("cpu", "cuda"), not its ordinal; "" served
    adapter: str = BASE
    method: str = BASE  # "base" | a method key ("flora", "lora", "ia3")
    rank: int | None = None
    adapter_hash: str = ""
    lang: str = ""  # the language key (`rb`), not MultiPL-E's `language` field
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    seeded: bool | None = None  # every sample drawn from its own seed (False: the server ignores
    # seeds; None: unknown, as in files that predate this field)
    prompt_style: str = "completion"  # "completion" (MultiPL-E's) or "instruct" (harness/prompts.py);
    # files that predate this field were all made with completion prompts
    chat_template: str = ""  # instruct: "sha256:..." of the exact chat template that rendered the prompts
    benchmark: str = BENCHMARK
    dataset: str = ""  # "hub:nuprl/MultiPL-E" or a local file
    dataset_revision: str = ""  # pinned hub revision, or "sha256:..." of the local file
    harness_version: str = ""  # "0.1.0", plus "+g<commit>" when run from a git checkout

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Provenance:
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        kw["sampling"] = SamplingConfig.from_json(d.get("sampling") or {})
        return cls(**kw)


class Traced:
    """Records that carry a `provenance`: who made them, read through these names."""

    provenance: Provenance

    @property
    def model(self) -> str:
        return self.provenance.model

    @property
    def adapter(self) -> str:
        return self.provenance.adapter

    @property
    def lang(self) -> str:
        return self.provenance.lang


@dataclass(frozen=True, kw_only=True)
class ProblemFile(Traced):
    """The fields every MultiPL-E per-problem file carries, plus our provenance."""

    name: str
    language: str
    temperature: float
    top_p: float
    max_tokens: int
    prompt: str
    tests: str
    stop_tokens: tuple[str, ...]
    provenance: Provenance = field(default_factory=Provenance)

    @classmethod
    def _header_from_json(cls, d: dict[str, Any]) -> dict[str, Any]:
        """Keyword arguments from a file written by us or by another tool (MultiPL-E,
        bigcode): unknown keys are dropped, missing sampling fields get neutral values."""
        known = {f.name for f in fields(ProblemFile)}
        kw = {k: v for k, v in d.items() if k in known}
        kw["stop_tokens"] = tuple(kw.get("stop_tokens") or ())
        kw.setdefault("tests", "")
        for key, default in (("temperature", 0.0), ("top_p", 1.0), ("max_tokens", 0)):
            if kw.get(key) is None:
                kw[key] = default
        kw["provenance"] = _provenance_from_json(d)
        return kw

    def _header_json(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(ProblemFile)}
        d["stop_tokens"] = list(self.stop_tokens)
        d["provenance"] = self.provenance.to_json()
        return d

    def header(self) -> dict[str, Any]:
        """The ProblemFile fields as keyword arguments (to build a record of another kind)."""
        return {f.name: getattr(self, f.name) for f in fields(ProblemFile)}


def _provenance_from_json(d: dict[str, Any]) -> Provenance:
    """Our `provenance` object; files of flora-eval 0.1 kept model/adapter/adapter_hash/seed at
    the top level, and files of other tools have none (an empty provenance)."""
    if isinstance(d.get("provenance"), dict):
        return Provenance.from_json(d["provenance"])
    sampling = SamplingConfig(n=len(d.get("completions") or d.get("results") or ()),
                              temperature=d.get("temperature") or 0.0, top_p=d.get("top_p") or 1.0,
                              max_tokens=d.get("max_tokens") or 0, seed=d.get("seed") or 0)
    return Provenance(model=d.get("model") or "", adapter=d.get("adapter") or BASE,
                      adapter_hash=d.get("adapter_hash") or "", sampling=sampling)


@dataclass(frozen=True, kw_only=True)
class Completions(ProblemFile):
    """All completions of one problem by one (model, adapter): a MultiPL-E completions file,
    with each sample's `finish_reason` ("stop": end of text, end of turn or a stop token,
    "length": the token limit; empty for files of other tools). Instruct runs also keep each
    sample's raw `replies`, the completions being the code extracted from them
    (harness/extract.py); completion-style files have none."""

    completions: tuple[str, ...]
    finish_reasons: tuple[str, ...] = ()
    replies: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        replies = {"replies": list(self.replies)} if self.replies else {}
        return {**self._header_json(), "completions": list(self.completions),
                "finish_reasons": list(self.finish_reasons), **replies}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Completions:
        kw = cls._header_from_json(d)
        kw["completions"] = tuple(d["completions"])
        kw["finish_reasons"] = tuple(d.get("finish_reasons") or ())
        kw["replies"] = tuple(d.get("replies") or ())
        return cls(**kw)


@dataclass(frozen=True)
class ExecResult:
    """What running one program gave: MultiPL-E's per-program result entry, plus the
    observation it was judged from (every step's outcome as the worker recorded it: exit
    code, stop reason, output kept, sizes, bytes cut, the rules' texts found). The status,
    exit code and output fields are derived from the observation with the current rules;
    results of other tools have no observation (their status is taken as written)."""

    program: str
    stdout: str
    stderr: str
    exit_code: int
    status: str  # OK, SyntaxError, Exception, Timeout, ...
    timestamp: int = 0
    observation: tuple[dict, ...] = ()

    @property
    def passed(self) -> bool:
        """MultiPL-E's pass rule: status OK and exit code 0."""
        return self.status == "OK" and self.exit_code == 0

    @property
    def timed_out(self) -> bool:
        """Whether the sandbox stopped it at a time limit, whatever its language calls that
        (rkt and php have no Timeout status): from the observation, else MultiPL-E's -1."""
        if self.observation:
            return any(step.get("timed_out") for step in self.observation)
        return self.exit_code == -1

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["observation"] = list(self.observation)
        return d


@dataclass(frozen=True, kw_only=True)
class ProblemResults(ProblemFile):
    """Execution results of one problem's completions: a MultiPL-E results file, plus the
    image and limits the programs ran under (results made under others are re-run)."""

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
        return {**self._header_json(), "results": [r.to_json() for r in self.results],
                "image_id": self.image_id, "limits": self.limits}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ProblemResults:
        kw = cls._header_from_json(d)
        kw["results"] = tuple(ExecResult(**_result_fields(r)) for r in d["results"])
        kw["image_id"] = d.get("image_id") or ""
        kw["limits"] = d.get("limits") or ""
        return cls(**kw)

    @classmethod
    def of(cls, completions: Completions, results: list[ExecResult], image_id: str = "",
           limits: str = "") -> ProblemResults:
        return cls(**completions.header(), results=tuple(results), image_id=image_id, limits=limits)


def _result_fields(r: dict[str, Any]) -> dict[str, Any]:
    keys = {f.name for f in fields(ExecResult)}
    out = {k: r.get(k) for k in keys}
    out["stdout"] = out["stdout"] or ""
    out["stderr"] = out["stderr"] or ""
    out["timestamp"] = out["timestamp"] or 0
    out["exit_code"] = -1 if out["exit_code"] is None else out["exit_code"]
    out["observation"] = tuple(out["observation"] or ())
    return out


@dataclass(frozen=True)
class ProblemScore(Traced):
    """The score stage's record: pass@k of one problem for one (model, adapter, language),
    with the counts it rests on, the status of every sample, and the provenance."""

    provenance: Provenance
    problem: str
    n: int
    c: int
    pass_at: dict[int, float] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)
    image_id: str = ""
    timeouts: int = 0  # samples the sandbox stopped at a time limit (whatever their status)
    rules: str = ""  # "<lang>:<rules_fingerprint>" that judged the statuses ("": none observed)
