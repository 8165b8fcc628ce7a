"""Languages as data: `languages/<key>.toml` (installed as the package `harness.languages`).

The schema is documented at the top of `languages/py.toml`. In short: a language names the
file a program is written to, its steps (compile steps, then one run step, each with its
own timeout), ordered (condition → status) rules for the final step, canaries and the
container's resources. `status_of` turns one step's outcome into MultiPL-E's status; it is
a pure function, so every language's rules are testable without Docker. A program that the
sandbox stopped (time limit, memory, file size, or a failure after hitting the process
limit) is never OK, whatever the rules say (go's rule, for one, reads stdout only).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from functools import cache
from typing import Annotated, Any, ClassVar

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

DEFAULT_STATUS = "Exception"
TIMEOUT_EXIT_CODE = -1  # MultiPL-E's exit code for a timed-out program
STATUS_LOGIC_VERSION = 1  # bump when `status_of`'s code (not a TOML rule) changes what it derives



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

    def holds(self, exit_code: int, stdout: str, stderr: str, timed_out: bool) -> bool:
        output = (stdout, stderr)
        checks = (
            self.timed_out is None or self.timed_out == timed_out,
            not self.exit_code or exit_code in self.exit_code,
            exit_code not in self.exit_code_not,
            not self.stdout_contains or any(s in stdout for s in self.stdout_contains),
            not self.stderr_contains or any(s in stderr for s in self.stderr_contains),
            not self.output_contains or any(s in o for s in self.output_contains for o in output),
            not any(s in stdout for s in self.stdout_lacks),
            not any(s in stderr for s in self.stderr_lacks),
            not any(s in o for s in self.output_lacks for o in output),
            self.stdout_empty is None or self.stdout_empty == (stdout.strip() == ""),
            self.stderr_empty is None or self.stderr_empty == (stderr.strip() == ""),
        )
        return all(checks)


@dataclass(frozen=True)
class Rule:
    when: Condition
    status: str


@dataclass(frozen=True)
class Step:
    argv: tuple[str, ...]
    timeout_s: float
    fail_status: str = "SyntaxError"
    timeout_status: str = "Timeout"
    ok_when: Condition = field(default_factory=lambda: Condition(exit_code=(0,)))


@dataclass(frozen=True)
class Canary:
    good: str
    bad: str
    bad_status: str | None = None


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

    def fingerprint(self) -> str:
        """A hash of everything that decides a program's result (part of the cache key)."""
        data = asdict(self)
        for key in ("name", "aliases", "corpus_dir", "extensions", "canary", "version", "image"):
            data.pop(key)
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

    def rules_fingerprint(self) -> str:
        """A hash of what turns an observation into a status: the status rules, each step's
        ok/fail/timeout rules and the version of `status_of`'s own logic. A score or a
        judgment made under another value is derived again."""
        data = {"rules": [asdict(r) for r in self.rules],
                "steps": [{k: v for k, v in asdict(s).items() if k not in ("argv", "timeout_s")}
                          for s in self.steps],
                "logic": STATUS_LOGIC_VERSION}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def status_of(lang: Language, step_index: int, exit_code: int, stdout: str, stderr: str,
              timed_out: bool, stopped: str | None = None) -> str:
    """MultiPL-E's status of a program whose last step run was `step_index`: a compile step
    that failed gives its fail/timeout status; the final step goes through the rules.
    `stopped` is why the sandbox ended the step ("time", "memory", "file_size", "pids"), if
    it did: such a step is never OK (a time limit gives Timeout, anything else Exception)."""
    step = lang.steps[step_index]
    if step_index < len(lang.steps) - 1:
        if timed_out:
            return step.timeout_status
        if stopped or not step.ok_when.holds(exit_code, stdout, stderr, timed_out):
            return step.fail_status
        return "OK"  # a compile step that succeeded is not a final outcome; callers go on
    status = next((rule.status for rule in lang.rules
                   if rule.when.holds(exit_code, stdout, stderr, timed_out)), DEFAULT_STATUS)
    if status == "OK" and timed_out:
        return "Timeout"
    if status == "OK" and stopped:
        return DEFAULT_STATUS
    return status


def compile_step_ok(lang: Language, step_index: int, exit_code: int, stdout: str, stderr: str,
                    timed_out: bool, stopped: str | None = None) -> bool:
    step = lang.steps[step_index]
    return not timed_out and not stopped and step.ok_when.holds(exit_code, stdout, stderr, timed_out)


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


class StepTable(Table):
    kind: ClassVar[str] = "step"
    argv: Annotated[tuple[Name, ...], non_empty("must name a program and its arguments")]
    timeout_s: Annotated[float, Field(gt=0, strict=True)]
    fail_status: Name | None = None  # None: the Step's default
    timeout_status: Name | None = None
    ok_when: ConditionTable | None = None

    def build(self) -> Step:
        given = {key: getattr(self, key) for key in self.model_fields_set}
        if self.ok_when is not None:
            given["ok_when"] = self.ok_when.build()
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
    env: dict[str, StrictStr] = {}
    steps: Annotated[tuple[StepTable, ...], non_empty("needs at least one [[steps]]")]
    status: Annotated[tuple[RuleTable, ...], non_empty("needs [[status]] rules")]
    canary: CanaryTable

    @model_validator(mode="after")
    def _some_rule_gives_ok(self) -> LanguageTable:
        if not any(rule.status == "OK" for rule in self.status):
            raise ValueError("no [[status]] rule gives OK")
        return self

    def build(self) -> Language:
        limits = {key: getattr(self, key) for key in ("output_limit", "memory", "pids", "tmpfs", "image")
                  if getattr(self, key) is not None}
        return Language(
            key=self.key, name=self.name, file=self.file, corpus_dir=self.corpus_dir,
            extensions=self.extensions, aliases=self.aliases, version=self.version,
            steps=tuple(step.build() for step in self.steps),
            rules=tuple(Rule(rule.when.build(), rule.status) for rule in self.status),
            canary=Canary(self.canary.good, self.canary.bad, self.canary.bad_status),
            env=tuple(sorted(self.env.items())), **limits,
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
