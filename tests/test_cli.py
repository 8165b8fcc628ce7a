"""The main command's contract: bad input stops with one line on stderr and exit code 2,
before any expensive work; the pipeline runs end to end on the tiny model."""

from __future__ import annotations

import json

import pytest

from harness.cli import main


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    err = capsys.readouterr().err.strip()
    return code, err


def assert_one_line_error(code: int, err: str, *words: str) -> None:
    assert code == 2
    assert err.startswith("flora-eval: error:") and "\n" not in err, err
    for word in words:
        assert word in err, err


def test_unknown_language(capsys, tmp_path):
    code, err = run_cli(capsys, "--lang", "cobol", "--run-dir", str(tmp_path))
    assert_one_line_error(code, err, "unknown language 'cobol'", "rb")


def test_unknown_model_alias(capsys, tmp_path, humaneval_dir):
    code, err = run_cli(capsys, "--model", "starcoder-99b", "--dataset", str(humaneval_dir),
                        "--run-dir", str(tmp_path))
    assert_one_line_error(code, err, "unknown model 'starcoder-99b'", "starcoder-15b")


def test_missing_dataset_file(capsys, tmp_path):
    code, err = run_cli(capsys, "--dataset", str(tmp_path / "missing.jsonl"), "--run-dir",
                        str(tmp_path / "run"))
    assert_one_line_error(code, err, "not found", "--dataset")


def test_missing_adapter_stops_before_generation(capsys, tmp_path, humaneval_dir):
    run_dir = tmp_path / "run"
    code, err = run_cli(capsys, "--adapter", "rb-r9-nothing", "--dataset", str(humaneval_dir),
                        "--limit", "1", "-n", "1", "--run-dir", str(run_dir))
    assert_one_line_error(code, err, "rb-r9-nothing")
    assert not list(run_dir.glob("*/*/*/*.json.gz"))


def test_corrupt_completions_file(capsys, tmp_path):
    bad = tmp_path / "HumanEval_0_x.json.gz"
    bad.write_bytes(b"\x1f\x8b not really gzip")
    code, err = run_cli(capsys, "execute", str(bad))
    assert_one_line_error(code, err, str(bad))


def test_docker_not_available(capsys, tmp_path, test_inputs_dir, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    code, err = run_cli(capsys, "execute", str(test_inputs_dir / "py-davinci-0.2-keep-HumanEval53.json"),
                        "--out", str(tmp_path / "out"))
    assert_one_line_error(code, err, "Docker")


@pytest.mark.docker
@pytest.mark.slow
def test_pipeline_end_to_end_and_resume(capsys, tmp_path, humaneval_dir, monkeypatch):
    """problems → generate → execute → score → report on the tiny model; the same command
    again finds everything on disk and changes nothing."""
    monkeypatch.setenv("FLORA_EVAL_CACHE", str(tmp_path / "cache.sqlite"))
    run_dir = tmp_path / "run"
    argv = ["--model", "tiny", "--lang", "py", "--dataset", str(humaneval_dir), "--limit", "2",
            "-n", "3", "--max-tokens", "24", "--run-dir", str(run_dir)]
    assert main(argv) == 0
    results = sorted(run_dir.glob("tiny/base/humaneval-py/*.results.json.gz"))
    assert len(results) == 2
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["dataset"]["humaneval-py"]["problems"] == 2
    assert manifest["images"]["py"].startswith("sha256:")
    assert {"generate", "execute"} <= set(manifest["telemetry"])
    assert (run_dir / "report.html").is_file() and (run_dir / "table.md").is_file()
    before = {p: p.stat().st_mtime_ns for p in run_dir.glob("tiny/base/humaneval-py/*.json.gz")}
    assert main(argv) == 0
    after = {p: p.stat().st_mtime_ns for p in run_dir.glob("tiny/base/humaneval-py/*.json.gz")}
    assert before == after
    capsys.readouterr()


@pytest.mark.docker
@pytest.mark.slow
def test_both_benchmarks_in_one_run_and_gated_separately(capsys, tmp_path, humaneval_dir, monkeypatch):
    """`--benchmark humaneval --benchmark mbpp`: one run, one report with both; `check` has a
    cell per benchmark × language × adapter."""
    monkeypatch.setenv("FLORA_EVAL_CACHE", str(tmp_path / "cache.sqlite"))
    run_dir = tmp_path / "run"
    argv = ["--model", "tiny", "--benchmark", "humaneval", "--benchmark", "mbpp", "--lang", "py",
            "--lang", "rb", "--dataset", str(humaneval_dir.parent), "--limit", "5", "-n", "2",
            "--max-tokens", "16", "--run-dir", str(run_dir)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "## HumanEval" in out and "## MBPP" in out
    for cell in ("humaneval-py", "humaneval-rb", "mbpp-py", "mbpp-rb"):
        assert len(list((run_dir / "tiny" / "base" / cell).glob("*.results.json.gz"))) == 5
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert set(manifest["dataset"]) == {"humaneval-py", "humaneval-rb", "mbpp-py", "mbpp-rb"}
    assert manifest["config"]["benchmarks"] == ["humaneval", "mbpp"]
    html = (run_dir / "report.html").read_text(encoding="utf-8")
    assert "<td class=\"l\">HumanEval</td>" in html and "<td class=\"l\">MBPP</td>" in html
    baseline = tmp_path / "baseline.json"
    assert main(["baseline", "save", str(run_dir), "-o", str(baseline)]) == 0
    assert main(["check", str(run_dir), "--baseline", str(baseline)]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("PASS ")]
    assert sorted(line.split(":")[0] for line in lines) == [
        "PASS tiny/base/humaneval-py", "PASS tiny/base/humaneval-rb", "PASS tiny/base/mbpp-py",
        "PASS tiny/base/mbpp-rb"]
