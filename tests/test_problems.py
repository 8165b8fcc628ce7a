import json

import pytest

from harness.errors import UserError
from harness.problems import REVISION_PRE_V3, REVISION_V3_3, hub_revision, load_problems


def test_local_directory_loads_all_rows(humaneval_dir):
    problem_set = load_problems("rb", humaneval_dir)
    assert len(problem_set.problems) == 161
    first = problem_set.problems[0]
    assert first.name.startswith("HumanEval_0_")
    assert first.language == "rb"
    assert "\ndef" in first.stop_tokens  # the row's own list is authoritative
    assert problem_set.revision.startswith("sha256:")


def test_limit_and_single_file(humaneval_dir):
    problem_set = load_problems("py", humaneval_dir / "humaneval-py.jsonl", limit=3)
    assert [p.name for p in problem_set.problems][:1] == ["HumanEval_0_has_close_elements"]
    assert len(problem_set.problems) == 3


def test_missing_file_is_one_clear_line(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_problems("py", tmp_path / "nope.jsonl")
    with pytest.raises(UserError, match="humaneval-py.jsonl"):
        load_problems("py", tmp_path)


def test_row_without_fields_is_refused(tmp_path):
    bad = tmp_path / "humaneval-py.jsonl"
    bad.write_text(json.dumps({"name": "x"}) + "\n")
    with pytest.raises(UserError, match="field"):
        load_problems("py", tmp_path)


def test_pinned_revisions():
    assert hub_revision("py") == REVISION_PRE_V3
    assert hub_revision("rb") == REVISION_V3_3


def test_hub_unreachable_says_how_to_pass_local_data(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(UserError, match="--dataset"):
        load_problems("zz_not_a_language")
