"""Fixtures shared by the execute/images/hostile tests (imported by them; no tests here)."""

from __future__ import annotations

import dataclasses

import pytest

from harness.errors import UserError
from harness.execute.languages import Language, load_language


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
