"""Fixtures shared by the execute/images/hostile tests (imported by them; no tests here)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from harness.errors import UserError
from harness.execute.languages import Language, load_language
from harness.files import write_completions
from harness.records import Completions
from harness.runs import RunDir


@pytest.fixture(scope="session")
def docker_client():
    from harness.execute.sandbox import docker_client as connect

    try:
        return connect()
    except UserError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def py_image(docker_client) -> str:
    """The py image (built when missing, as `flora-eval images build py` would)."""
    from harness.execute.images import ensure_language

    return ensure_language(docker_client, load_language("py"))


def offered_language(key: str) -> Language:
    """The language `key` with its image built, for a test that executes its programs.

    A dataset language with no `languages/<key>.toml` (jl, dart) is not offered: skipped, and
    the reason says so. An offered language whose image is not built FAILS: CI builds every
    image (`make images`), so a missing one means CI did not execute that language. No
    Docker engine at all skips, as every Docker test does."""
    from harness.execute.images import language_image
    from harness.execute.languages import language_files
    from harness.execute.sandbox import docker_client as connect

    if key not in language_files():
        pytest.skip(f"{key}: not offered (no languages/{key}.toml; docs/languages.md says why)")
    lang = load_language(key)
    try:
        client = connect()
    except UserError as exc:
        pytest.skip(str(exc))
    if language_image(client, lang) is None:
        pytest.fail(f"{key}: image {lang.image_tag} is not built; run `make images` "
                    f"or `flora-eval images build {key}`", pytrace=False)
    return lang


@pytest.fixture
def exec_cache(tmp_path, monkeypatch):
    """A private execution cache (FLORA_EVAL_CACHE), so tests neither share nor pollute one."""
    path = tmp_path / "exec.sqlite"
    monkeypatch.setenv("FLORA_EVAL_CACHE", str(path))
    return path


def with_timeout(lang: Language, seconds: float) -> Language:
    """The language with a shorter run-step timeout (same rules), to keep hostile tests quick."""
    steps = lang.steps[:-1] + (dataclasses.replace(lang.run_step, timeout_s=seconds),)
    return dataclasses.replace(lang, steps=steps)


def engine_containers(client) -> list:
    from harness.execute.sandbox import LABEL

    return client.api.containers(all=True, filters={"label": LABEL})


def own_containers(client) -> list:
    """The engine's containers started by this process (other harnesses may share the engine)."""
    from harness.execute.sandbox import OWNER_LABEL, owner_id

    return [c for c in engine_containers(client) if c["Labels"].get(OWNER_LABEL) == owner_id()]


def small_run(root: Path, humaneval_dir: Path, problems: int = 4, slow_variants: int = 0,
              hold_last: float = 0.0) -> RunDir:
    """A run directory for a few py problems: the canonical solution twice, a wrong one, and
    `slow_variants` distinct correct ones that sleep 50 ms per call; with `hold_last`, the last
    problem also has one that sleeps that long per call (a run that cannot end quickly)."""
    from harness.bench.execute import canonical_solutions
    from harness.problems import load_problems

    solutions = canonical_solutions()
    run = RunDir.open(root)
    chosen = load_problems("py", humaneval_dir, limit=problems).problems
    for problem in chosen:
        number = int(problem.name.split("_")[1])
        slow = tuple(f"    import time; time.sleep(0.05)\n{solutions[number]}\n# variant {k}\n"
                     for k in range(slow_variants))
        completions = (solutions[number], solutions[number], "    return None\n", *slow)
        if hold_last and problem is chosen[-1]:
            completions += (f"    import time; time.sleep({hold_last})\n{solutions[number]}\n# hold\n",)
        write_completions(run.completions_path("tiny", "base", "py", problem.name), Completions(
            name=problem.name, language="py", temperature=0.1, top_p=0.95, max_tokens=64,
            prompt=problem.prompt, tests=problem.tests, stop_tokens=problem.stop_tokens,
            completions=completions))
    return run
