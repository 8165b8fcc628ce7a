"""The generate stage over a run directory: files per (problem, adapter), sample-level
resume, SIGKILL and restart, two torchrun (gloo) processes equal to one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.errors import UserError
from harness.files import read_completions
from harness.generate import AdapterChoice, generate_run
from harness.generate.resume import PARTIAL_SUFFIX, append_partial, partial_path
from harness.generate.run import provenance_of
from harness.models import load_model
from harness.problems import load_problems
from harness.records import SamplingConfig
from harness.runs import RunDir

REPO = Path(__file__).resolve().parent.parent
SAMPLING = SamplingConfig(n=4, temperature=0.8, top_p=0.95, max_tokens=32, seed=7)


@pytest.fixture(scope="module")
def loaded():
    return load_model("tiny", device="cpu")


@pytest.fixture(scope="module")
def problem_sets(humaneval_dir):
    return [load_problems("py", humaneval_dir, limit=2), load_problems("rb", humaneval_dir, limit=1)]


def completions(root: Path) -> dict[str, tuple[str, ...]]:
    run = RunDir(root)
    return {str(p.relative_to(root)): read_completions(p).completions for p in run.completion_files()}


def test_every_problem_gets_one_file_of_n_completions_and_telemetry(loaded, problem_sets, tmp_path):
    telemetry = generate_run(loaded, problem_sets, [AdapterChoice()], SAMPLING, RunDir.open(tmp_path),
                             batch_size=5)
    files = completions(tmp_path)
    assert sorted(files) == ["tiny/base/humaneval-py/HumanEval_0_has_close_elements.json.gz",
                             "tiny/base/humaneval-py/HumanEval_100_make_a_pile.json.gz",
                             "tiny/base/humaneval-rb/HumanEval_0_has_close_elements.json.gz"]
    assert all(len(texts) == 4 for texts in files.values())
    record = read_completions(tmp_path / "tiny/base/humaneval-rb/HumanEval_0_has_close_elements.json.gz")
    assert record.language == "rb" and record.stop_tokens
    provenance = record.provenance
    assert provenance.lang == "rb" and provenance.sampling == SAMPLING and provenance.model == "tiny"
    assert provenance.model_revision == loaded.revision and provenance.model_revision.startswith("sha256:")
    assert provenance.method == "base" and provenance.benchmark == "humaneval"
    assert provenance.dataset_revision == problem_sets[1].revision and provenance.harness_version
    report = telemetry.as_dict()
    assert report["prompts"] == 3 and report["samples"] == 12
    assert report["prefill_tokens"] > 0 and report["decode_tokens"] > 0
    assert 0 < report["batch_occupancy"] <= 1
    assert {"prefill", "decode", "write"} <= set(report["stage_seconds"])
    assert not list(tmp_path.rglob(f"*{PARTIAL_SUFFIX}"))
    # a second call finds everything on disk and samples nothing
    again = generate_run(loaded, problem_sets, [AdapterChoice()], SAMPLING, RunDir(tmp_path))
    assert again.samples == 0 and again.prompts == 0


def test_partial_file_resumes_only_the_missing_samples(loaded, problem_sets, tmp_path):
    reference = tmp_path / "reference"
    generate_run(loaded, problem_sets, [AdapterChoice()], SAMPLING, RunDir.open(reference), batch_size=16)
    resumed = RunDir.open(tmp_path / "resumed")
    problem = problem_sets[0].problems[1]
    path = resumed.completions_path("tiny", "base", "py", problem.name)
    done = read_completions(reference / path.relative_to(resumed.root)).completions
    provenance = provenance_of(loaded, problem_sets[0], AdapterChoice(), SAMPLING)
    for index in (0, 2):  # as a killed run leaves them: two samples and a torn line
        append_partial(path, provenance, problem.prompt, index, done[index])
    with partial_path(path).open("a") as f:
        f.write('{"index": 3, "compl')
    telemetry = generate_run(loaded, problem_sets, [AdapterChoice()], SAMPLING, resumed, batch_size=3)
    assert telemetry.samples == 2 * 4 + 2
    assert completions(resumed.root) == completions(reference)
    assert not partial_path(path).exists()


def test_partial_file_of_other_settings_stops_the_run_unless_overwrite(loaded, problem_sets, tmp_path):
    run = RunDir.open(tmp_path)
    problem = problem_sets[0].problems[0]
    path = run.completions_path("tiny", "base", "py", problem.name)
    other = SamplingConfig(n=4, temperature=0.2, max_tokens=32, seed=7)
    append_partial(path, provenance_of(loaded, problem_sets[0], AdapterChoice(), other), problem.prompt,
                   0, "stale")
    with pytest.raises(UserError, match="temperature is 0.2 there, 0.8 now"):
        generate_run(loaded, problem_sets[:1], [AdapterChoice()], SAMPLING, run, batch_size=8)
    assert not path.exists() and partial_path(path).exists()
    generate_run(loaded, problem_sets[:1], [AdapterChoice()], SAMPLING, run, batch_size=8, overwrite=True)
    assert "stale" not in read_completions(path).completions


def cli(run_dir: Path, humaneval_dir: Path, *extra: str, limit: int = 2, n: int = 4, max_tokens: int = 32):
    return ["-m", "harness.cli", "generate", "--model", "tiny", "--device", "cpu",
            "--dataset", str(humaneval_dir), "--lang", "py", "--limit", str(limit), "-n", str(n),
            "--max-tokens", str(max_tokens), "--temperature", "0.8", "--seed", "7",
            "--run-dir", str(run_dir), *extra]


@pytest.mark.slow
def test_sigkill_mid_run_then_restart_gives_the_uninterrupted_completions(loaded, humaneval_dir, tmp_path):
    args = dict(limit=3, n=8, max_tokens=64)
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, *cli(killed, humaneval_dir, "--batch-size", "4", **args)],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        partials = list(killed.rglob(f"*{PARTIAL_SUFFIX}"))
        if any(len(p.read_text().splitlines()) >= 3 for p in partials):
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(RunDir(killed).completion_files()) < 3  # it really stopped mid-run
    done = subprocess.run([sys.executable, *cli(killed, humaneval_dir, "--batch-size", "6", **args)],
                          cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    problems = [load_problems("py", humaneval_dir, limit=3)]
    sampling = SamplingConfig(n=8, temperature=0.8, top_p=0.95, max_tokens=64, seed=7)
    whole = RunDir.open(tmp_path / "whole")
    generate_run(loaded, problems, [AdapterChoice()], sampling, whole, batch_size=32)
    assert completions(killed) == completions(tmp_path / "whole")
    assert not list(killed.rglob(f"*{PARTIAL_SUFFIX}"))


@pytest.mark.slow
def test_two_gloo_processes_give_the_same_completions_as_one(humaneval_dir, tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    two = subprocess.run([str(torchrun), "--nproc-per-node", "2", "--master-port", "29517",
                          *cli(tmp_path / "two", humaneval_dir, limit=3)],
                         cwd=REPO, capture_output=True, text=True, env=env)
    assert two.returncode == 0, two.stderr[-2000:]
    one = subprocess.run([sys.executable, *cli(tmp_path / "one", humaneval_dir, limit=3)],
                         cwd=REPO, capture_output=True, text=True)
    assert one.returncode == 0, one.stderr
    assert len(completions(tmp_path / "one")) == 3
    assert completions(tmp_path / "two") == completions(tmp_path / "one")
    # the work was split: rank 1 sampled one prompt, rank 0 reports the sum over both ranks
    assert "(1 prompts sampled)" in two.stdout and "(3 prompts sampled)" in two.stdout
