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
from typing import Any

from harness.definitions import definition_files, load_definition
from harness.errors import UserError, did_you_mean

DEFAULT_STATUS = "Exception"
TIMEOUT_EXIT_CODE = -1  # MultiPL-E's exit code for a timed-out program
STATUS_LOGIC_VERSION = 1  # bump when `status_of`'s code (not a TOML rule) changes what it derives

TEXT_KEYS = ("stdout_contains", "stderr_contains", "output_contains",
             "stdout_lacks", "stderr_lacks", "output_lacks")
CONDITION_KEYS = {"timed_out", "exit_code", "exit_code_not", "stdout_empty", "stderr_empty", *TEXT_KEYS}
TOP_KEYS = {"key", "name", "file", "aliases", "corpus_dir", "extensions", "version", "output_limit",
            "memory", "pids", "tmpfs", "env", "steps", "status", "canary", "image"}
STEP_KEYS = {"argv", "timeout_s", "fail_status", "timeout_status", "ok_when"}


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
# Loading
# ---------------------------------------------------------------------------------------
def _strings(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ValueError(f"{where}: expected a string or a list of strings")


def _ints(value: Any, where: str) -> tuple[int, ...]:
    if isinstance(value, bool):
        raise ValueError(f"{where}: expected an int or a list of ints")
    if isinstance(value, int):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return tuple(value)
    raise ValueError(f"{where}: expected an int or a list of ints")


def parse_condition(raw: Any, where: str) -> Condition:
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: a condition must be a table")
    unknown = set(raw) - CONDITION_KEYS
    if unknown:
        raise ValueError(f"{where}: unknown condition keys {sorted(unknown)}")
    kw: dict[str, Any] = {}
    for key, value in raw.items():
        if key in ("timed_out", "stdout_empty", "stderr_empty"):
            if not isinstance(value, bool):
                raise ValueError(f"{where}.{key}: expected true or false")
            kw[key] = value
        elif key in ("exit_code", "exit_code_not"):
            kw[key] = _ints(value, f"{where}.{key}")
        else:
            kw[key] = _strings(value, f"{where}.{key}")
    return Condition(**kw)


def parse_step(raw: Any, where: str) -> Step:
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: a step must be a table")
    unknown = set(raw) - STEP_KEYS
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}")
    argv = raw.get("argv")
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) and a for a in argv):
        raise ValueError(f"{where}.argv: expected a non-empty list of non-empty strings")
    timeout = raw.get("timeout_s")
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise ValueError(f"{where}.timeout_s: expected a positive number of seconds")
    kw: dict[str, Any] = {"argv": tuple(argv), "timeout_s": float(timeout)}
    for key in ("fail_status", "timeout_status"):
        if key in raw:
            if not isinstance(raw[key], str) or not raw[key]:
                raise ValueError(f"{where}.{key}: expected a status name")
            kw[key] = raw[key]
    if "ok_when" in raw:
        kw["ok_when"] = parse_condition(raw["ok_when"], f"{where}.ok_when")
    return Step(**kw)


def parse_language(data: dict[str, Any], where: str) -> Language:
    """Validate one TOML document into a Language (ValueError names the bad field)."""
    unknown = set(data) - TOP_KEYS
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}")
    for key in ("key", "name", "file", "corpus_dir"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise ValueError(f"{where}: `{key}` must be a non-empty string")
    if "/" in data["file"]:
        raise ValueError(f"{where}: `file` must be a plain file name")
    extensions = _strings(data.get("extensions"), f"{where}.extensions") if "extensions" in data else ()
    if not extensions or not all(e.startswith(".") and len(e) > 1 for e in extensions):
        raise ValueError(f"{where}: `extensions` must list file extensions, e.g. [\".rb\"]")
    steps_raw = data.get("steps")
    if not isinstance(steps_raw, list) or not steps_raw:
        raise ValueError(f"{where}: needs at least one [[steps]]")
    steps = tuple(parse_step(s, f"{where}.steps[{i}]") for i, s in enumerate(steps_raw))
    rules_raw = data.get("status")
    if not isinstance(rules_raw, list) or not rules_raw:
        raise ValueError(f"{where}: needs [[status]] rules")
    rules = []
    for i, rule in enumerate(rules_raw):
        if not isinstance(rule, dict) or set(rule) - {"when", "status"} or "status" not in rule:
            raise ValueError(f"{where}.status[{i}]: expected `when` and `status`")
        rules.append(Rule(parse_condition(rule.get("when", {}), f"{where}.status[{i}].when"),
                          str(rule["status"])))
    if not any(r.status == "OK" for r in rules):
        raise ValueError(f"{where}: no [[status]] rule gives OK")
    canary = data.get("canary")
    if not isinstance(canary, dict) or not all(isinstance(canary.get(k), str) for k in ("good", "bad")):
        raise ValueError(f"{where}: [canary] needs `good` and `bad` programs")
    env = data.get("env", {})
    if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
        raise ValueError(f"{where}: `env` must be a table of strings")
    kw: dict[str, Any] = {}
    for key, kind in (("output_limit", int), ("pids", int), ("memory", str), ("tmpfs", str),
                      ("image", str)):
        if key in data:
            if not isinstance(data[key], kind) or isinstance(data[key], bool):
                raise ValueError(f"{where}: `{key}` must be a {kind.__name__}")
            kw[key] = data[key]
    return Language(
        key=data["key"], name=data["name"], file=data["file"], steps=steps, rules=tuple(rules),
        canary=Canary(canary["good"], canary["bad"], canary.get("bad_status")),
        corpus_dir=data["corpus_dir"], extensions=extensions,
        aliases=_strings(data.get("aliases", []), f"{where}.aliases"),
        version=_strings(data.get("version", []), f"{where}.version"),
        env=tuple(sorted(env.items())), **kw,
    )


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
