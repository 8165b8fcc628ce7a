"""Multi-node generation without a shared filesystem: the ranks send their samples to rank 0
over torch.distributed (gloo here), and rank 0 alone writes the run directory. Each process
runs in a directory of its own, as on separate nodes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from test_generate_run import cli, completions

from harness.files import read_completions, read_json
from harness.generate.resume import PARTIAL_SUFFIX, append_partial
from harness.generate.run import AdapterChoice, provenance_of
from harness.models import load_model
from harness.problems import load_problems
from harness.records import SamplingConfig
from harness.runs import RunDir

REPO = Path(__file__).resolve().parent.parent
SAMPLING = SamplingConfig(n=4, temperature=0.8, top_p=0.95, max_tokens=32, seed=7)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_nodes(tmp_path: Path, humaneval_dir: Path, limit: int = 3) -> list[subprocess.CompletedProcess]:
    """Two gloo ranks, each in its own working directory with a relative --run-dir, on loopback."""
    port = free_port()
    procs = []
    for rank in (0, 1):
        home = tmp_path / f"node{rank}"
        home.mkdir(exist_ok=True)
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
               "WORLD_SIZE": "2", "RANK": str(rank), "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1",
               "PYTHONPATH": str(REPO)}
        procs.append(subprocess.Popen([sys.executable, *cli(Path("run"), humaneval_dir, limit=limit)],
                                      cwd=home, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    done = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return done


def files_under(path: Path) -> list[Path]:
    return [p for p in path.rglob("*") if p.is_file()]


@pytest.mark.slow
def test_two_gloo_ranks_without_shared_files_write_the_one_process_run(humaneval_dir, tmp_path):
    ranks = two_nodes(tmp_path, humaneval_dir)
    assert all(r.returncode == 0 for r in ranks), ranks[0].stderr[-2000:] + ranks[1].stderr[-2000:]
    one = subprocess.run([sys.executable, *cli(tmp_path / "one", humaneval_dir, limit=3)],
                         cwd=REPO, capture_output=True, text=True)
    assert one.returncode == 0, one.stderr
    run = tmp_path / "node0" / "run"
    assert len(completions(run)) == 3 and completions(run) == completions(tmp_path / "one")
    assert files_under(tmp_path / "node1") == []  # rank 1 wrote nothing of the run
    assert not list(run.rglob(f"*{PARTIAL_SUFFIX}"))
    # rank 1 sampled one of the three prompts; rank 0 reports the sum over both ranks
    assert "(1 prompts sampled)" in ranks[1].stdout and "(3 prompts sampled)" in ranks[0].stdout
    assert read_json(run / "manifest.json")["telemetry"]["generate"]["world_size"] == 2


@pytest.mark.slow
def test_a_restarted_job_resumes_from_what_rank0_has(humaneval_dir, tmp_path):
    """Rank 0's run holds two samples of the problem rank 1 owns (as a killed job leaves them):
    rank 1 samples only the two missing ones, and the files equal an uninterrupted run."""
    reference = RunDir.open(tmp_path / "reference")
    loaded = load_model("tiny", device="cpu")
    problem_set = load_problems("py", humaneval_dir, limit=3)
    from harness.generate import generate_run

    generate_run(loaded, [problem_set], [AdapterChoice()], SAMPLING, reference, batch_size=16)
    run = RunDir.open(tmp_path / "node0" / "run")
    problem = problem_set.problems[1]  # position 1: rank 1's
    path = run.completions_path("tiny", "base", "py", problem.name)
    texts = read_completions(reference.root / path.relative_to(run.root)).completions
    provenance = provenance_of(loaded, problem_set, AdapterChoice(), SAMPLING)
    for index in (0, 3):
        append_partial(path, provenance, problem.prompt, index, texts[index])
    ranks = two_nodes(tmp_path, humaneval_dir)
    assert all(r.returncode == 0 for r in ranks), ranks[0].stderr[-2000:] + ranks[1].stderr[-2000:]
    assert completions(run.root) == completions(reference.root)
    assert read_json(run.manifest_path)["telemetry"]["generate"]["samples"] == 3 * 4 - 2
    assert files_under(tmp_path / "node1") == []
