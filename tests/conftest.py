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
