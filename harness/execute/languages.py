"""Languages as data: `languages/<key>.toml` (installed as the package `harness.languages`).

The schema is documented at the top of `languages/py.toml`. In short: a language names the
file a program is written to, its steps (compile steps, then one run step, each with its
own timeout), ordered (condition → status) rules for the final step, canaries and the
container's resources. `judge` turns a program's observation (what the worker recorded of
each step: exit code, stop reason, the output kept, its size, the bytes cut and the rules'
texts found in the whole stream) into MultiPL-E's status; it is a pure function of the
observation and today's rules, so every language's rules are testable without Docker and a
rule change applies to cached observations without running anything. A program that the
sandbox stopped (time limit, memory, file size, or a failure after hitting the process
limit) is never OK, whatever the rules say (go's rule, for one, reads stdout only); neither
is one whose deciding text may lie in output that was cut and not scanned for it.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from functools import cache
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, Field, StrictBool, StrictInt, StrictStr, model_validator

from harness.definitions import (
    Ints,
    Name,
    Strings,
    Table,
    definition_files,
    load_definition,
    non_empty,
    validate,
)
from harness.errors import UserError, did_you_mean
from harness.records import ExecResult

DEFAULT_STATUS = "Exception"
TIMEOUT_EXIT_CODE = -1  # MultiPL-E's exit code for a timed-out program
STATUS_LOGIC_VERSION = 2  # bump when `judge`'s code (not a TOML rule) changes what it derives
OBSERVATION_VERSION = 2  # bump when what the worker records of a step changes (part of the cache key)
TEXT_KEYS = ("stdout_contains", "stderr_contains", "output_contains",
             "stdout_lacks", "stderr_lacks", "output_lacks")  # a Condition's text tests



def any_of(values: Iterable[bool | None]) -> bool | None:
    """Three-valued "any": True if one holds, None (unknown) if none does but one is unknown."""
    values = list(values)
    return True if True in values else None if None in values else False


def all_of(values: Iterable[bool | None]) -> bool | None:
    """Three-valued "all": False if one fails, None (unknown) if none does but one is unknown."""
    values = list(values)
    return False if False in values else None if None in values else True


def none_of(values: Iterable[bool | None]) -> bool | None:
    found = any_of(values)
    return None if found is None else not found


@dataclass(frozen=True)
class Output:
    """One stream of a step as observed: the text kept (whole, or its head and tail around
    the cut), its size in bytes (None: not recorded), the bytes cut, and for a cut stream
    the rules' texts it was scanned for and those found anywhere in it."""

    text: str = ""
    size: int | None = None
    cut: int = 0
    scanned: frozenset[str] = frozenset()
    found: frozenset[str] = frozenset()

    def has(self, needle: str) -> bool | None:
        """Whether the whole stream contains `needle`; None when that cannot be known (the
        stream was cut and not scanned for it: a rule changed since it ran)."""
        if not self.cut:
            return needle in self.text
        return needle in self.found if needle in self.scanned else None

    @property
    def empty(self) -> bool:
        return self.size == 0 or (not self.cut and not self.text.strip())


@dataclass(frozen=True)
class Outcome:
    """One step as observed: what the worker reports for it."""

    exit_code: int
    stdout: Output = Output()
    stderr: Output = Output()
    timed_out: bool = False
    stopped: str | None = None  # why the sandbox ended it ("time", "memory", ...), if it did

    @classmethod
    def of(cls, step: dict) -> Outcome:
        """From the worker's step dict (older records lack the sizes and the scan)."""
        scanned = frozenset(step.get("scanned") or ())

        def stream(name: str) -> Output:
            return Output(step.get(name) or "", step.get(f"{name}_bytes"), step.get(f"{name}_cut") or 0,
                          scanned, frozenset(step.get(f"{name}_found") or ()))

        return cls(step["exit_code"], stream("stdout"), stream("stderr"), bool(step["timed_out"]),
                   step.get("stopped"))


@dataclass(frozen=True)
class Condition:
    """Every field that is set must hold (an empty condition always holds)."""

    timed_out: bool | None = None
    exit_code: tuple[int, ...] = ()
    exit_code_not: tuple[int, ...] = ()
    stdout_contains: tuple[str, ...] = ()
    stderr_contains: tuple[str, ...] = ()
    output_contains: tuple[str, ...] = ()
    stdout_lacks: tuple[str, ...] = ()
    stderr_lacks: tuple[str, ...] = ()
    output_lacks: tuple[str, ...] = ()
    stdout_empty: bool | None = None
    stderr_empty: bool | None = None

    @property
    def needles(self) -> set[str]:
        return {text for key in TEXT_KEYS for text in getattr(self, key)}

    def holds(self, o: Outcome) -> bool | None:
        """Whether the condition holds for the step; None when the output it needs was cut."""
        streams = {"stdout": (o.stdout,), "stderr": (o.stderr,), "output": (o.stdout, o.stderr)}
        checks: list[bool | None] = [
            self.timed_out is None or self.timed_out == o.timed_out,
            not self.exit_code or o.exit_code in self.exit_code,
            o.exit_code not in self.exit_code_not,
            self.stdout_empty is None or self.stdout_empty == o.stdout.empty,
            self.stderr_empty is None or self.stderr_empty == o.stderr.empty,
        ]
        for where, outputs in streams.items():
            contains, lacks = getattr(self, f"{where}_contains"), getattr(self, f"{where}_lacks")
            if contains:
                checks.append(any_of(out.has(s) for s in contains for out in outputs))
            checks.append(none_of(out.has(s) for s in lacks for out in outputs))
        return all_of(checks)


@dataclass(frozen=True)
class Rule:
    when: Condition
    status: str


@dataclass(frozen=True)
class Warm:
    """A long-lived process that answers a step on the program's behalf (the worker's "Warm
    steps"): started once per lane, restarted after `quota` requests; it must observe what
    the step's own `argv` would (the equality tests compare the two paths), so it is not part
    of the cache key. `memory` and `pids` are added to the slot's for it: the program keeps
    all of its own."""

    argv: tuple[str, ...]
    quota: int = 100
    start_s: float = 60.0
    memory: str = "512m"
    pids: int = 64


@dataclass(frozen=True)
class Step:
    argv: tuple[str, ...]
    timeout_s: float
    fail_status: str = "SyntaxError"
    timeout_status: str = "Timeout"
    ok_when: Condition = field(default_factory=lambda: Condition(exit_code=(0,)))
    warm: Warm | None = None
    # the same step as a fresh process that starts faster (a class-data archive, JIT choices,
    # a cache built into the image), run instead of `argv` unless the toolchains are cold;
    # like `warm`, tested to give the same statuses as `argv`
    fast_argv: tuple[str, ...] = ()


@dataclass(frozen=True)
class Canary:
    good: str
    bad: str
    bad_status: str | None = None


@dataclass(frozen=True)
class ExtractRules:
    """How code is taken from an instruction-tuned model's reply and fitted after the row's
    prompt (`harness.extract`; the `[extract]` table of languages/py.toml documents each key)."""

    fences: tuple[str, ...] = ()  # info-string tags that mark a fenced block in this language
    header: str = ""  # regex with {name}: a restated function's start; its match ends where the prompt does
    skip: str = ""  # regex matched right after the header: text the prompt already holds (py's docstring)
    closing: str = ""  # regex (with {name}) of the line that closes the function ("": no such line)
    continues: str = ""  # regex of lines at the header's indentation that do not end it (Ada's `begin`)
    imports: str = ""  # regex of a reply's import lines that may move into the body ("": none may)
    tests_close: bool = False  # the row's tests start with that closing line: the completion omits it
    body_indent: str = ""  # a body given alone and unindented gets this indentation
    body_open: str = ""  # put before a body given alone (d: the prompt stops before `{`)
    body_close: str = ""  # put after a body given alone when the tests do not close the function
    after: str = ""  # put after a restated function: what the prompt opened around it (elixir's module)


@dataclass(frozen=True)
class Language:
    key: str
    name: str  # the display name: what reports and tables show
    file: str
    steps: tuple[Step, ...]
    rules: tuple[Rule, ...]
    canary: Canary
    aliases: tuple[str, ...] = ()
    corpus_dir: str = ""  # The Stack's folder (data/<corpus_dir>): training's default source
    extensions: tuple[str, ...] = ()  # source files training collects from a directory
    version: tuple[str, ...] = ()
    output_limit: int = 2048
    memory: str = "1g"
    pids: int = 256
    tmpfs: str = "256m"
    env: tuple[tuple[str, str], ...] = ()
    image: str = ""  # the image tag; default flora-eval/<key>
    extract: ExtractRules = ExtractRules()  # instruct replies: how their code is taken
    toolchains: str = "warm"  # "cold": never use the steps' warm processes or fast starts

    @property
    def warm_steps(self) -> tuple[Step, ...]:
        """The steps a warm process answers (none when the language's toolchains are cold)."""
        return tuple(s for s in self.steps if s.warm) if self.toolchains == "warm" else ()

    @property
    def fast_steps(self) -> tuple[Step, ...]:
        """The steps run by their `fast_argv` (none when the language's toolchains are cold)."""
        return tuple(s for s in self.steps if s.fast_argv) if self.toolchains == "warm" else ()

    @property
    def image_tag(self) -> str:
        return self.image or f"flora-eval/{self.key}"

    @property
    def names(self) -> tuple[str, ...]:
        """Every name that finds this language: key, aliases and display name."""
        return (self.key, *self.aliases, self.name)

    @property
    def compile_steps(self) -> tuple[Step, ...]:
        return self.steps[:-1]

    @property
    def run_step(self) -> Step:
        return self.steps[-1]

    @property
    def needles(self) -> tuple[str, ...]:
        """Every text a rule or a step's `ok_when` looks for: the worker scans whole streams
        for them, so a status is decided on the whole output, not on what was kept."""
        conditions = [r.when for r in self.rules] + [s.ok_when for s in self.steps]
        return tuple(sorted(set().union(*(c.needles for c in conditions))))

    def fingerprint(self) -> str:
        """A hash of everything that decides what is observed of a program (part of the cache
        key): the file, the steps' commands, limits and the exit codes that let the next step
        run, the env, the output kept, the container's resources. Not the status rules
        (`rules_fingerprint`): a rule change re-judges cached observations, it runs nothing."""
        data = {"file": self.file, "env": self.env, "output_limit": self.output_limit,
                "memory": self.memory, "pids": self.pids, "tmpfs": self.tmpfs,
                "steps": [{"argv": s.argv, "timeout_s": s.timeout_s, "ok_exit": s.ok_when.exit_code}
                          | ({"fast_argv": s.fast_argv} if s.fast_argv else {}) for s in self.steps],
                "observation": OBSERVATION_VERSION}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

    def rules_fingerprint(self) -> str:
        """A hash of what turns an observation into a status: the status rules, each step's
        ok/fail/timeout rules and the version of `status_of`'s own logic. A score or a
        judgment made under another value is derived again."""
        how_run = ("argv", "timeout_s", "warm", "fast_argv")  # in `fingerprint`
        data = {"rules": [asdict(r) for r in self.rules],
                "steps": [{k: v for k, v in asdict(s).items() if k not in how_run} for s in self.steps],
                "logic": STATUS_LOGIC_VERSION}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def step_status(lang: Language, step_index: int, outcome: Outcome) -> str:
    """MultiPL-E's status of a program whose deciding step was `step_index`: a compile step
    that failed gives its fail/timeout status ("OK" for one that succeeded: not a final
    outcome); the final step goes through the rules, in order. A rule that cannot be decided
    (its text may lie in output that was cut) ends the rules at Exception: never OK. A step
    the sandbox stopped is never OK either (a time limit gives Timeout, anything else
    Exception)."""
    step = lang.steps[step_index]
    if step_index < len(lang.steps) - 1:
        if outcome.timed_out:
            return step.timeout_status
        if outcome.stopped or step.ok_when.holds(outcome) is not True:
            return step.fail_status
        return "OK"
    status = DEFAULT_STATUS
    for rule in lang.rules:
        verdict = rule.when.holds(outcome)
        if verdict is not False:
            status = rule.status if verdict else DEFAULT_STATUS
            break
    if status == "OK" and outcome.timed_out:
        return "Timeout"
    if status == "OK" and outcome.stopped:
        return DEFAULT_STATUS
    return status


def status_of(lang: Language, step_index: int, exit_code: int, stdout: str, stderr: str,
              timed_out: bool, stopped: str | None = None) -> str:
    """`step_status` of a step whose whole output is `stdout` and `stderr`."""
    return step_status(lang, step_index, Outcome(exit_code, Output(stdout, len(stdout.encode())),
                                                 Output(stderr, len(stderr.encode())), timed_out, stopped))


def judge(lang: Language, steps: Sequence[dict]) -> tuple[int, str]:
    """(the deciding step's index, the status) of a program's observation: the first compile
    step that failed decides, else the final step's rules."""
    for index, step in enumerate(steps):
        status = step_status(lang, index, Outcome.of(step))
        if index == len(lang.steps) - 1 or status != "OK":
            return index, status
    if not steps:
        raise ValueError("no step outcomes")
    return len(steps) - 1, DEFAULT_STATUS  # cannot happen: the worker stops after a passed compile step


def result_of(lang: Language, program: str, steps: Sequence[dict],
              timestamp: int | None = None) -> ExecResult:
    """MultiPL-E's result record from a program's observation (the worker's step outcomes,
    kept in the record), judged with today's rules."""
    index, status = judge(lang, steps)
    step = steps[index]
    exit_code = TIMEOUT_EXIT_CODE if step["timed_out"] else step["exit_code"]
    return ExecResult(program=program, stdout=step["stdout"], stderr=step["stderr"], exit_code=exit_code,
                      status=status, timestamp=int(time.time()) if timestamp is None else timestamp,
                      observation=tuple(steps))


# ---------------------------------------------------------------------------------------
# Loading: the TOML schema as pydantic tables, each built into the dataclass the code uses
# ---------------------------------------------------------------------------------------
def _extensions(value: tuple[str, ...]) -> tuple[str, ...]:
    if not value or not all(e.startswith(".") and len(e) > 1 for e in value):
        raise ValueError('must list file extensions, e.g. [".rb"]')
    return value


def _plain_file_name(value: str) -> str:
    if "/" in value:
        raise ValueError("must be a plain file name")
    return value


class ConditionTable(Table):
    kind: ClassVar[str] = "condition"
    timed_out: StrictBool | None = None
    exit_code: Ints = ()
    exit_code_not: Ints = ()
    stdout_contains: Strings = ()
    stderr_contains: Strings = ()
    output_contains: Strings = ()
    stdout_lacks: Strings = ()
    stderr_lacks: Strings = ()
    output_lacks: Strings = ()
    stdout_empty: StrictBool | None = None
    stderr_empty: StrictBool | None = None

    def build(self) -> Condition:
        return Condition(**dict(self))


class WarmTable(Table):
    kind: ClassVar[str] = "warm"
    argv: Annotated[tuple[Name, ...], non_empty("must name a program and its arguments")]
    quota: Annotated[int, Field(gt=0, strict=True)] = 100
    start_s: Annotated[float, Field(gt=0, strict=True)] = 60.0
    memory: StrictStr = "512m"
    pids: Annotated[int, Field(ge=0, strict=True)] = 64

    def build(self) -> Warm:
        return Warm(**dict(self))


class StepTable(Table):
    kind: ClassVar[str] = "step"
    argv: Annotated[tuple[Name, ...], non_empty("must name a program and its arguments")]
    timeout_s: Annotated[float, Field(gt=0, strict=True)]
    fail_status: Name | None = None  # None: the Step's default
    timeout_status: Name | None = None
    ok_when: ConditionTable | None = None
    warm: WarmTable | None = None
    fast_argv: tuple[Name, ...] = ()

    def build(self) -> Step:
        given = {key: getattr(self, key) for key in self.model_fields_set}
        if self.ok_when is not None:
            given["ok_when"] = self.ok_when.build()
        if self.warm is not None:
            given["warm"] = self.warm.build()
        return Step(**given)


class RuleTable(Table):
    kind: ClassVar[str] = "status rule"
    when: ConditionTable = ConditionTable()
    status: Name


class CanaryTable(Table):
    kind: ClassVar[str] = "canary"
    good: StrictStr
    bad: StrictStr
    bad_status: Name | None = None


class ExtractTable(Table):
    kind: ClassVar[str] = "extract"
    fences: Strings = ()
    header: StrictStr = ""
    skip: StrictStr = ""
    closing: StrictStr = ""
    continues: StrictStr = ""
    imports: StrictStr = ""
    tests_close: StrictBool = False
    body_indent: StrictStr = ""
    body_open: StrictStr = ""
    body_close: StrictStr = ""
    after: StrictStr = ""

    @model_validator(mode="after")
    def _patterns_compile(self) -> ExtractTable:
        for key in ("header", "skip", "closing", "continues", "imports"):
            try:
                re.compile(getattr(self, key).replace("{name}", "x"))
            except re.error as exc:
                raise ValueError(f"{key} is not a regular expression ({exc})") from None
        if self.header and "{name}" not in self.header:
            raise ValueError("header must hold {name} (where the function's name stands)")
        return self

    def build(self) -> ExtractRules:
        return ExtractRules(**self.model_dump())


class LanguageTable(Table):
    kind: ClassVar[str] = "language"
    key: Name
    name: Name
    file: Annotated[Name, AfterValidator(_plain_file_name)]
    corpus_dir: Name
    extensions: Annotated[Strings, AfterValidator(_extensions)]
    aliases: Strings = ()
    version: Strings = ()
    output_limit: StrictInt | None = None  # None: the Language's default
    memory: StrictStr | None = None
    pids: StrictInt | None = None
    tmpfs: StrictStr | None = None
    image: StrictStr | None = None
    toolchains: Literal["warm", "cold"] | None = None
    env: dict[str, StrictStr] = {}
    steps: Annotated[tuple[StepTable, ...], non_empty("needs at least one [[steps]]")]
    status: Annotated[tuple[RuleTable, ...], non_empty("needs [[status]] rules")]
    canary: CanaryTable
    extract: ExtractTable = ExtractTable()

    @model_validator(mode="after")
    def _some_rule_gives_ok(self) -> LanguageTable:
        if not any(rule.status == "OK" for rule in self.status):
            raise ValueError("no [[status]] rule gives OK")
        return self

    def build(self) -> Language:
        limits = {key: getattr(self, key) for key in ("output_limit", "memory", "pids", "tmpfs", "image",
                                                     "toolchains")
                  if getattr(self, key) is not None}
        return Language(
            key=self.key, name=self.name, file=self.file, corpus_dir=self.corpus_dir,
            extensions=self.extensions, aliases=self.aliases, version=self.version,
            steps=tuple(step.build() for step in self.steps),
            rules=tuple(Rule(rule.when.build(), rule.status) for rule in self.status),
            canary=Canary(self.canary.good, self.canary.bad, self.canary.bad_status),
            env=tuple(sorted(self.env.items())), extract=self.extract.build(), **limits,
        )


def parse_condition(raw: Any, where: str) -> Condition:
    return validate(ConditionTable, raw, where).build()


def parse_step(raw: Any, where: str) -> Step:
    return validate(StepTable, raw, where).build()


def parse_language(data: dict[str, Any], where: str) -> Language:
    """Validate one TOML document into a Language (ValueError names the file and the bad field)."""
    return validate(LanguageTable, data, where).build()


def language_files() -> dict[str, Any]:
    """The TOML files shipped in `harness.languages`, by file stem."""
    return definition_files("harness.languages")


@cache
def _load_file(stem: str) -> Language:
    return load_definition("harness.languages", "languages", stem, parse_language)


def all_languages() -> list[Language]:
    return [_load_file(stem) for stem in sorted(language_files())]


@cache
def _by_name() -> dict[str, str]:
    """Every accepted name (case-folded) → its language's key; two languages naming the same
    name is an error in the TOML files."""
    found: dict[str, str] = {}
    for lang in all_languages():
        for name in lang.names:
            other = found.setdefault(name.casefold(), lang.key)
            if other != lang.key:
                raise UserError(f"languages/{lang.key}.toml: the name {name!r} is also "
                                f"languages/{other}.toml's; names must be unique")
    return found


def language_key(name: str) -> str | None:
    """The key of the language called `name` (key, alias or display name), or None."""
    if name in language_files():
        return name
    return _by_name().get(name.casefold())


def load_language(key_or_alias: str) -> Language:
    """A language by key (`py`), alias (`python`, MultiPL-E's own name) or display name."""
    key = language_key(key_or_alias)
    if key is not None:
        return _load_file(key)
    keys = sorted(language_files())
    raise UserError(f"unknown language {key_or_alias!r} (known: {', '.join(keys)})"
                    + did_you_mean(key_or_alias.casefold(), [*keys, *sorted(_by_name())]))


def display_name(key_or_alias: str) -> str:
    """The name tables show for a language; an unknown one shows as given."""
    key = language_key(key_or_alias)
    return _load_file(key).name if key is not None else key_or_alias
