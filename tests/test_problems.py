import json
import tomllib

import pytest

from harness.errors import UserError
from harness.problems import all_benchmarks, benchmark_files, load_benchmark, load_problems, parse_benchmark

V3_3 = "28441b6024e71d4a1c1c0f6bf171c935cd5a43f2"
PRE_V3 = "d23b094346c5dbda1080a74bb2a24c18adbf7409"


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
    with pytest.raises(UserError, match="mbpp-py.jsonl"):
        load_problems("py", tmp_path, benchmark="mbpp")


def test_row_without_fields_is_refused(tmp_path):
    bad = tmp_path / "humaneval-py.jsonl"
    bad.write_text(json.dumps({"name": "x"}) + "\n")
    with pytest.raises(UserError, match="field"):
        load_problems("py", tmp_path)


def test_pinned_revisions():
    for key in ("humaneval", "mbpp"):
        benchmark = load_benchmark(key)
        assert benchmark.revision_for("py") == PRE_V3  # v3 dropped Python
        assert benchmark.revision_for("rb") == V3_3  # v3.3 fixed Lua's stop token
        assert benchmark.config("rb") == f"{key}-rb" and benchmark.hub_dataset == "nuprl/MultiPL-E"


def test_every_benchmark_definition_is_complete():
    keys = [b.key for b in all_benchmarks()]
    assert keys == ["humaneval", "mbpp"]
    for benchmark in all_benchmarks():
        assert benchmark.name and benchmark.file_name("rb") == f"{benchmark.key}-rb.jsonl"
        for defect in benchmark.known_defects:
            assert defect.problem.startswith(f"{benchmark.key}_") and defect.why


def test_a_bad_definition_or_name_is_one_line():
    with pytest.raises(ValueError, match=r"^benchmarks/x.toml: unknown benchmark keys \['colour'\] \(known"):
        parse_benchmark({"key": "x", "colour": "red"}, "benchmarks/x.toml")
    good = tomllib.loads(benchmark_files()["mbpp"].read_text())
    assert parse_benchmark(good, "mbpp.toml") == load_benchmark("mbpp")
    bad = good | {"known_defects": [{"lang": "rb", "problem": "mbpp_1"}], "revision": 7}
    with pytest.raises(ValueError) as info:
        parse_benchmark(bad, "benchmarks/mbpp.toml")
    first, second = str(info.value).split("; ")
    assert first.startswith("benchmarks/mbpp.toml.revision: ")
    assert second == "benchmarks/mbpp.toml.known_defects[0].why: is required"
    with pytest.raises(UserError, match="unknown benchmark 'mbbp'.*did you mean mbpp"):
        load_benchmark("mbbp")


def test_mbpp_loads_from_its_file_or_the_folder_of_benchmarks(humaneval_dir):
    shared = humaneval_dir.parent
    from_folder = load_problems("rb", shared, benchmark="mbpp")
    from_dir = load_problems("rb", shared / "mbpp", benchmark="mbpp")
    assert len(from_folder.problems) == len(from_dir.problems) == 397
    assert from_folder.problems[0].name == "mbpp_3_is_not_prime" and from_folder.benchmark == "mbpp"
    assert load_problems("rs", shared, benchmark="mbpp", limit=None).problems[-1].name.startswith("mbpp_")
    assert len(load_problems("rs", shared, benchmark="mbpp").problems) == 354
    assert load_problems("py", shared).benchmark == "humaneval"  # the default benchmark
    assert len(load_problems("py", shared).problems) == 161


def test_hub_unreachable_says_how_to_pass_local_data(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(UserError, match="--dataset"):
        load_problems("zz_not_a_language")


def test_a_file_of_another_language_stops_with_one_line(humaneval_dir, tmp_path, capsys):
    """`--dataset humaneval-py.jsonl --lang py --lang rb` would run Python prompts in the Ruby
    image and report them as Ruby: it stops before anything is written."""
    from harness.cli import main

    run = tmp_path / "run"
    code = main(["generate", "--model", "tiny", "--dataset", str(humaneval_dir / "humaneval-py.jsonl"),
                 "--lang", "py", "--lang", "rb", "--limit", "1", "-n", "1", "--max-tokens", "2",
                 "--device", "cpu", "--run-dir", str(run)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "holds 'py' problems" in err and "--lang rb" in err
    assert not list(run.rglob("*.json.gz"))
