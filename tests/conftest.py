"""Shared fixtures: the MultiPL-E data in ../shared, located from the repository root."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
MULTIPLE = SHARED / "multipl-e"


@pytest.fixture(scope="session")
def humaneval_dir() -> Path:
    path = MULTIPLE / "humaneval"
    if not path.is_dir():
        pytest.skip("../shared/multipl-e/humaneval is not present")
    return path


@pytest.fixture(scope="session")
def test_inputs_dir() -> Path:
    path = MULTIPLE / "test_inputs"
    if not path.is_dir():
        pytest.skip("../shared/multipl-e/test_inputs is not present")
    return path


@pytest.fixture(scope="module")
def adapters_dir(tmp_path_factory) -> Path:
    """Adapters of every method saved from the tiny model (the serving tests')."""
    from serve_helpers import save_adapters

    from harness.models import load_model

    return save_adapters(load_model("tiny", device="cpu").model, tmp_path_factory.mktemp("ad") / "adapters")


@pytest.fixture(scope="module")
def server(adapters_dir, tmp_path_factory):
    """`flora-eval serve` over `adapters_dir` on a loopback port: its base URL. Modules that
    need another server define their own `server`."""
    from serve_helpers import flora_serve

    with flora_serve(adapters_dir, tmp_path_factory.mktemp("log") / "serve.log") as url:
        yield url
