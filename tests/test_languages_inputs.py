"""Every offered language through the real engine: MultiPL-E's own test inputs (completion
0 must pass, completion 1 must fail with an ordinary status) and, for dataset languages
without such a file, one real problem (HumanEval_53_add) with a right and a wrong completion
written by hand. An offered language whose image is not built FAILS (CI builds them all:
`make images`); only the languages that are not offered (no TOML: jl, dart) are skipped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_execute_support import offered_language

from harness.records import Completions

MULTIPLE = Path(__file__).resolve().parent.parent.parent / "shared" / "multipl-e"
TEST_INPUTS = sorted((MULTIPLE / "test_inputs").glob("*-davinci-0.2-keep-HumanEval53.json"))
DATASET_LANGS = [p.stem.removeprefix("humaneval-") for p in (MULTIPLE / "humaneval").glob("*.jsonl")]

# Languages of the dataset that upstream's test_inputs folder lacks: the dataset's own
# prompt and tests for HumanEval_53_add, with a right and a wrong completion of ours.
HAND_COMPLETIONS = {
    "ml": ("\n  x + y\n", "\n  x - y\n"),
    "hs": (" x + y\n", " x - y\n"),
    "elixir": ("x + y\n  end\nend\n", "x - y\n  end\nend\n"),
    "clj": ("(+ x y))\n", "(- x y))\n"),
    "adb": (" is\n   begin\n      return X + Y;", " is\n   begin\n      return X - Y;"),
}
# What a wrong program may give: a status of MultiPL-E's rules for an ordinary failure (not a
# Timeout, which would mean the toolchain is too slow, nor anything the engine makes up).
ORDINARY_FAILURES = {"Exception", "AssertionError", "SyntaxError"}


def _lang_of(path: Path) -> str:
    return path.name.split("-", 1)[0]


# the dataset languages without a test input: checked with HAND_COMPLETIONS
BY_HAND = sorted(set(DATASET_LANGS) - {_lang_of(p) for p in TEST_INPUTS})


def _execute(path: Path, out_dir: Path, monkeypatch: pytest.MonkeyPatch):
    """Through the real engine, with a fresh cache so every program really runs."""
    from harness.execute import execute_paths
    from harness.files import read_results

    monkeypatch.setenv("FLORA_EVAL_CACHE", str(out_dir / "exec.sqlite"))
    (out,) = execute_paths([path], jobs=2, out_dir=out_dir)
    return read_results(out).results


def _check(key: str, good, bad) -> None:
    assert good.passed, f"{key}: the right completion gave {good.status} ({good.stderr[-400:]!r})"
    assert good.status == "OK" and good.exit_code == 0
    assert not bad.passed, f"{key}: the wrong completion passed"
    assert bad.status in ORDINARY_FAILURES, (
        f"{key}: the wrong completion gave {bad.status} (exit {bad.exit_code}: {bad.stderr[-400:]!r})")


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.parametrize("path", TEST_INPUTS, ids=_lang_of)
def test_multiple_test_inputs(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lang = offered_language(_lang_of(path))
    data = json.loads(path.read_text())
    assert len(data["completions"]) == 2
    good, bad = _execute(path, tmp_path, monkeypatch)
    _check(lang.key, good, bad)


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.parametrize("key", BY_HAND)
def test_real_problem_by_hand(key: str, humaneval_dir: Path, tmp_path: Path,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    lang = offered_language(key)
    assert key in HAND_COMPLETIONS, f"{key}: add a right and a wrong HumanEval_53_add completion here"
    rows = [json.loads(line) for line in (humaneval_dir / f"humaneval-{key}.jsonl").open()]
    (row,) = [r for r in rows if r["name"] == "HumanEval_53_add"]
    completions = Completions(name=row["name"], language=row["language"], temperature=0.0, top_p=1.0,
                              max_tokens=0, prompt=row["prompt"], tests=row["tests"],
                              stop_tokens=tuple(row["stop_tokens"]), completions=HAND_COMPLETIONS[key])
    path = tmp_path / f"{row['name']}.json"
    path.write_text(json.dumps(completions.to_json()))
    good, bad = _execute(path, tmp_path / "out", monkeypatch)
    _check(lang.key, good, bad)


def test_every_offered_language_has_a_real_problem(humaneval_dir: Path, test_inputs_dir: Path) -> None:
    """Each offered language is executed on a real problem above: a test input or one by hand."""
    from harness.execute.languages import language_files

    covered = {_lang_of(p) for p in TEST_INPUTS} | set(HAND_COMPLETIONS)
    missing = sorted(set(language_files()) - covered)
    assert not missing, f"no test input and no hand completions for {missing}"
    assert set(HAND_COMPLETIONS) <= set(BY_HAND), "hand completions for a language that has a test input"


def test_every_dataset_language_is_offered_or_documented(humaneval_dir: Path) -> None:
    """A dataset language without a definition must be listed as not offered, with a reason."""
    from harness.execute.languages import language_files

    docs = (Path(__file__).resolve().parent.parent / "docs" / "languages.md").read_text()
    offered = set(language_files())
    not_offered = docs.split("## Not offered", 1)[-1]
    for path in sorted(humaneval_dir.glob("humaneval-*.jsonl")):
        key = path.stem.removeprefix("humaneval-")
        if key not in offered:
            assert f"| {key} |" in not_offered, f"{key}: neither offered nor documented"


def test_every_language_has_its_image_recipe() -> None:
    """Each TOML loads, and its Dockerfile builds on the base through `ARG BASE`."""
    from harness.execute.languages import all_languages

    containers = Path(__file__).resolve().parent.parent / "containers"
    for lang in all_languages():
        dockerfile = (containers / lang.key / "Dockerfile").read_text()
        assert "ARG BASE=flora-eval/base:trixie" in dockerfile and "FROM ${BASE}" in dockerfile, lang.key
        assert lang.version, f"{lang.key}: no `version` command to label the image with"


# Upstream's own rules on outcomes that a plain "exit 0 passes" rule would get wrong:
# (language, final-step exit code, stdout, stderr, timed out) → MultiPL-E's status.
UPSTREAM_CASES = [
    ("rkt", 0, "", "FAILURE\nname: check-equal?\n", False, "Exception"),  # rackunit exits 0
    ("rkt", 1, "", "main.rkt:3:0: read-syntax: expected a `)`", False, "SyntaxError"),
    ("rkt", -1, "", "", True, "Exception"),  # upstream has no Timeout for racket
    ("pl", 0, "ERROR: something", "", False, "Exception"),
    ("rb", 1, "Failure: test_add", "", False, "Exception"),
    ("rb", 1, "", "main.rb:3: syntax error", False, "SyntaxError"),
    ("cs", 0, "", "at System.Diagnostics.DefaultTraceListener.Fail (String message)", False, "Exception"),
    ("cs", 0, "", "", False, "OK"),
    ("go", 1, "--- FAIL: TestAdd (0.00s)\nFAIL", "", False, "Exception"),
    ("go", 1, "FAIL\tcommand-line-arguments [build failed]", "", False, "SyntaxError"),
    ("clj", 0, "Ran 1 tests containing 1 assertions.\n1 failures, 0 errors.\n", "", False, "Exception"),
    ("clj", 0, "\nRan 1 tests containing 1 assertions.\n0 failures, 0 errors.\n", "", False, "OK"),
    ("hs", 1, "", "main.hs: assertion failed", False, "SyntaxError"),  # upstream's constant test
    ("scala", 0, "", "warning: deprecated", False, "Exception"),
    ("d", 1, "", "main.d(3): Error: undefined identifier", False, "SyntaxError"),
    ("d", 1, "main.d(9): [unittest] Assertion failure", "1/1 modules FAILED unittests", False, "Exception"),
    ("r", 1, "", "", False, "AssertionError"),
    ("r", 1, "", "Error: unexpected symbol in", False, "SyntaxError"),
    ("php", -1, "", "", True, "Exception"),  # upstream has no Timeout for php
    ("ml", 2, "", "Exception: Assert_failure(\"main.ml\", 10, 2).", False, "AssertionError"),
    ("elixir", 2, "Assertion with == failed", "", False, "AssertionError"),
    ("js", 1, "", "AssertionError [ERR_ASSERTION]: 6 == 14", False, "AssertionError"),
    ("sh", 2, "", "main.sh: line 3: syntax error near unexpected token", False, "SyntaxError"),
]


@pytest.mark.parametrize(("key", "exit_code", "stdout", "stderr", "timed_out", "status"), UPSTREAM_CASES,
                         ids=[f"{c[0]}-{c[-1]}-{i}" for i, c in enumerate(UPSTREAM_CASES)])
def test_upstream_status_rules(key: str, exit_code: int, stdout: str, stderr: str, timed_out: bool,
                               status: str) -> None:
    from harness.execute.languages import load_language, status_of

    lang = load_language(key)
    final = len(lang.steps) - 1
    assert status_of(lang, final, exit_code, stdout, stderr, timed_out) == status
