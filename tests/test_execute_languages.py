"""Languages as data: the loader, the status rules (pure, no Docker) and a contract test
over every `languages/*.toml`, so a language added by anyone is tested the moment it lands."""

from __future__ import annotations

import re
import tomllib

import pytest

from harness.errors import UserError
from harness.execute.engine import result_of
from harness.execute.images import context_dir
from harness.execute.languages import (
    all_languages,
    language_files,
    load_language,
    parse_language,
    status_of,
)

ALL = sorted(language_files())
PLACEHOLDER = re.compile(r"\{([a-z_]*)\}")
KNOWN_PLACEHOLDERS = {"file", "stem", "dir"}


# -- loader -----------------------------------------------------------------------------
def test_py_by_key_and_legacy_alias():
    assert load_language("py").key == "py"
    assert load_language("python") is load_language("py")


def test_unknown_language_is_one_line_user_error():
    with pytest.raises(UserError) as err:
        load_language("klingon")
    message = str(err.value)
    assert "unknown language 'klingon'" in message and "py" in message and "\n" not in message


def test_bad_definition_names_the_field():
    data = tomllib.loads((language_files()["py"]).read_text())
    data["steps"][0]["timeout_s"] = -1
    with pytest.raises(ValueError, match=r"steps\[0\]\.timeout_s"):
        parse_language(data, "py.toml")
    data = tomllib.loads((language_files()["py"]).read_text())
    data["status"][0]["when"] = {"stdout_has": "x"}
    with pytest.raises(ValueError, match="unknown condition keys"):
        parse_language(data, "py.toml")


def py_definition() -> dict:
    return tomllib.loads((language_files()["py"]).read_text())


BAD_DEFINITIONS = [
    # (change to py.toml's data, the start of the one line it gives: the field, and our own
    # words where the check is ours; pydantic words its own messages by version)
    (lambda d: d["steps"][0].update(timeout_s="5"), "py.toml.steps[0].timeout_s: "),
    (lambda d: d["steps"][0].update(timeout_s=True), "py.toml.steps[0].timeout_s: "),
    (lambda d: d["steps"][0].update(timeout_s=0), "py.toml.steps[0].timeout_s: "),
    (lambda d: d["steps"][0].update(argv=[]), "py.toml.steps[0].argv: must name a program and its arguments"),
    (lambda d: d["steps"][0].update(argv=["python3", ""]), "py.toml.steps[0].argv[1]: "),
    (lambda d: d.update(steps=[]), "py.toml.steps: needs at least one [[steps]]"),
    (lambda d: d["status"][0]["when"].update(exit_code=[0, True]), "py.toml.status[0].when.exit_code[1]: "),
    (lambda d: d.update(extensions="py"), 'py.toml.extensions: must list file extensions, e.g. [".rb"]'),
    (lambda d: d.update(file="a/b.py"), "py.toml.file: must be a plain file name"),
    (lambda d: d.pop("canary"), "py.toml.canary: is required"),
    (lambda d: d.update(status=[r for r in d["status"] if r["status"] != "OK"]),
     "py.toml: no [[status]] rule gives OK"),
    (lambda d: d.update(colour="red"), "py.toml: unknown language keys ['colour'] (known: key, name, "),
    (lambda d: d.update(env={"A": 1}), "py.toml.env.A: "),
]


@pytest.mark.parametrize(("change", "message"), BAD_DEFINITIONS)
def test_each_bad_field_is_one_line_naming_it(change, message):
    data = py_definition()
    change(data)
    with pytest.raises(ValueError) as info:
        parse_language(data, "py.toml")
    assert str(info.value).startswith(message) and "\n" not in str(info.value)
    assert not str(info.value).endswith(": ")  # something is said about the field
    assert "; " not in str(info.value)  # one problem, one error (a bad step is not also "too few steps")


def test_the_pydantic_schema_builds_the_same_language():
    py = load_language("py")
    assert parse_language(py_definition(), "py.toml") == py
    assert py.run_step.ok_when.exit_code == (0,) and py.run_step.fail_status == "SyntaxError"  # defaults
    data = py_definition()
    data["aliases"], data["status"][0]["when"]["exit_code"] = "snake", 3  # one value for a list
    parsed = parse_language(data, "py.toml")
    assert parsed.aliases == ("snake",) and parsed.rules[0].when.exit_code == (3,)


# -- py status rules (MultiPL-E eval_python) ---------------------------------------------
PY_CASES = [
    # (exit_code, stdout, stderr, timed_out) → status
    ((0, "", "", False), "OK"),
    ((0, "some output", "a warning", False), "OK"),
    ((1, "", 'File "f.py", line 3\n    rexturn x\nSyntaxError: invalid syntax', False), "SyntaxError"),
    ((1, "", "Traceback ...\nAssertionError", False), "Exception"),
    ((1, "", "IndentationError: unexpected indent", False), "Exception"),  # as MultiPL-E: substring rule
    ((-9, "", "", False), "Exception"),
    ((-9, "", "", True), "Timeout"),
    ((0, "", "", True), "Timeout"),
]


@pytest.mark.parametrize(("outcome", "expected"), PY_CASES)
def test_py_status_rules(outcome, expected):
    assert status_of(load_language("py"), 0, *outcome) == expected


def test_timeout_result_has_exit_code_minus_one():
    step = {"exit_code": -9, "stdout": "", "stderr": "", "timed_out": True}
    result = result_of(load_language("py"), "prog", [step])
    assert (result.status, result.exit_code, result.passed) == ("Timeout", -1, False)


def test_failed_compile_step_decides_with_its_own_status():
    from harness.execute.languages import Canary, Condition, Language, Rule, Step

    lang = Language(key="x", name="X", file="f.x",
                    steps=(Step(("cc", "{file}"), 10), Step(("./f",), 5)),
                    rules=(Rule(Condition(exit_code=(0,)), "OK"), Rule(Condition(), "Exception")),
                    canary=Canary("good", "bad"))
    fail = {"exit_code": 1, "stdout": "", "stderr": "error: expected ;", "timed_out": False}
    slow = {"exit_code": -9, "stdout": "", "stderr": "", "timed_out": True}
    ok = {"exit_code": 0, "stdout": "", "stderr": "", "timed_out": False}
    assert result_of(lang, "p", [fail]).status == "SyntaxError"
    assert result_of(lang, "p", [slow]).status == "Timeout"
    assert result_of(lang, "p", [ok, {**fail, "exit_code": 101}]).status == "Exception"
    assert result_of(lang, "p", [ok, ok]).passed


# -- contract: every language file ------------------------------------------------------
@pytest.mark.parametrize("key", ALL)
def test_language_contract(key):
    lang = load_language(key)
    assert lang.key == key and lang.name and lang.file and "/" not in lang.file
    assert lang.steps and all(step.timeout_s > 0 and step.argv for step in lang.steps)
    for step in lang.steps:
        for arg in step.argv:
            assert set(PLACEHOLDER.findall(arg)) <= KNOWN_PLACEHOLDERS, f"{key}: unknown placeholder in {arg}"
    names = ("{file}", "{stem}", lang.file, lang.file.rsplit(".", 1)[0])
    assert any(n in a for s in lang.steps for a in s.argv for n in names), "no step uses the program"
    assert lang.output_limit == 2048, "MultiPL-E keeps 2048 characters of output"
    assert lang.canary.good.strip() and lang.canary.bad.strip() and lang.canary.good != lang.canary.bad
    # whatever the rules, a timed-out program never passes
    assert status_of(lang, len(lang.steps) - 1, -1, "", "", True) != "OK"
    assert (context_dir(key) / "Dockerfile").is_file()


def test_aliases_are_unambiguous():
    owners: dict[str, str] = {}
    for lang in all_languages():
        for name in (lang.key, *lang.aliases):
            assert owners.setdefault(name, lang.key) == lang.key, f"{name} names two languages"


def test_every_test_input_language_is_known(test_inputs_dir):
    """Each MultiPL-E test input's `language` field (e.g. "python") resolves, once defined."""
    import json

    for path in sorted(test_inputs_dir.glob("*.json")):
        key = path.name.split("-")[0]
        if key in ALL:
            language = json.loads(path.read_text())["language"]
            assert load_language(language).key == key


# -- a program the sandbox stopped is never OK ------------------------------------------
@pytest.mark.parametrize("key", ALL)
@pytest.mark.parametrize("stopped", ["memory", "file_size", "pids"])
def test_a_stopped_program_is_never_ok(key, stopped):
    """Killed for memory (exit -9), by the file-size limit or failed at the pids limit, with
    output that the language's rules alone would call OK (go reads stdout only)."""
    lang = load_language(key)
    ok = {"exit_code": 0, "stdout": "ok\n0 failures, 0 errors.\n", "stderr": "", "timed_out": False}
    steps = [dict(ok, stopped=None) for _ in lang.compile_steps]
    assert result_of(lang, "p", [*steps, dict(ok, stopped=None)]).status == "OK", "the rules call it OK"
    killed = dict(ok, exit_code=-9, stopped=stopped)
    assert result_of(lang, "p", [*steps, killed]).status != "OK"
    if lang.compile_steps:  # a compiler that the sandbox stopped fails its step
        assert result_of(lang, "p", [dict(ok, stopped=stopped)]).status == lang.steps[0].fail_status


def test_go_killed_for_memory_is_an_exception_not_ok():
    go = load_language("go")
    assert status_of(go, 0, -9, "", "", False) == "OK"  # upstream's stdout-only rule
    assert status_of(go, 0, -9, "", "", False, stopped="memory") == "Exception"
    assert status_of(go, 0, -9, "", "", True, stopped="time") == "Timeout"
