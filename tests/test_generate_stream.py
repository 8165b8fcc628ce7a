"""Multi-node generation without a shared filesystem: the ranks send their samples to rank 0
over torch.distributed (gloo here), and rank 0 alone writes the run directory. Each process
runs in a directory of its own, as on separate nodes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_generate_run import cli, completions

from harness.files import read_completions, read_json
from harness.generate.resume import PARTIAL_SUFFIX, append_partial
from harness.generate.run import AdapterChoice, provenance_of
from harness.generate.stream import TIMEOUT_ENV
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


def start_two_nodes(tmp_path: Path, humaneval_dir: Path, *extra: str, out=subprocess.PIPE,
                    **args) -> list[subprocess.Popen]:
    """Two gloo ranks, each in its own working directory with a relative --run-dir, on loopback."""
    port = free_port()
    procs = []
    for rank in (0, 1):
        home = tmp_path / f"node{rank}"
        home.mkdir(exist_ok=True)
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
               "WORLD_SIZE": "2", "RANK": str(rank), "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1",
               "PYTHONPATH": str(REPO)}
        streams = out(rank) if callable(out) else (out, out)
        procs.append(subprocess.Popen([sys.executable, *cli(Path("run"), humaneval_dir, *extra, **args)],
                                      cwd=home, env=env, stdout=streams[0], stderr=streams[1], text=True))
    return procs


def two_nodes(tmp_path: Path, humaneval_dir: Path, *extra: str, **args) -> list[subprocess.CompletedProcess]:
    procs = start_two_nodes(tmp_path, humaneval_dir, *extra, **({"limit": 3} | args))
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


@pytest.mark.slow
def test_rank1_killed_mid_run_ends_rank0_in_one_line_and_a_rerun_resumes(humaneval_dir, tmp_path):
    """Rank 1 is SIGKILLed once rank 0 has written some of its samples: rank 0 notices at once
    (its connection closed; a hung rank: no heartbeat within the side group's timeout), ends
    with one line, keeps what it wrote, and the same command again completes the run as one
    process would have written it."""
    args = dict(limit=2, n=8, max_tokens=32)  # rank 1 owns position 1
    extra = ("--batch-size", "2")
    logs = tmp_path / "logs"
    logs.mkdir()

    def out(rank: int):
        return (logs / f"{rank}.out").open("w"), (logs / f"{rank}.err").open("w")

    rank0, rank1 = start_two_nodes(tmp_path, humaneval_dir, *extra, out=out, **args)
    run = tmp_path / "node0" / "run"
    problem_set = load_problems("py", humaneval_dir, limit=2)
    mine = [problem_set.problems[1].name]
    deadline = time.monotonic() + 300
    while not any(name in p.name for p in run.rglob(f"*{PARTIAL_SUFFIX}") for name in mine):
        assert rank1.poll() is None and time.monotonic() < deadline, (logs / "1.err").read_text()[-2000:]
        time.sleep(0.01)
    os.kill(rank1.pid, signal.SIGKILL)
    killed = time.monotonic()
    code = rank0.wait(timeout=60)
    assert code == 2 and time.monotonic() - killed < 30
    err = (logs / "0.err").read_text()
    lines = [line for line in err.splitlines() if line.startswith("flora-eval")]
    said = "flora-eval: error: rank 1 of the torchrun job stopped (its connection broke)"
    assert len(lines) == 1 and lines[0].startswith(said), err[-2000:]
    assert "Traceback" not in err and "run the same command again to resume" in lines[0]
    assert list(run.rglob(f"*{PARTIAL_SUFFIX}"))  # what rank 0 had received is kept
    ranks = two_nodes(tmp_path, humaneval_dir, *extra, **args)
    assert all(r.returncode == 0 for r in ranks), ranks[0].stderr[-2000:] + ranks[1].stderr[-2000:]
    from harness.generate import generate_run

    sampling = SamplingConfig(n=8, temperature=0.8, top_p=0.95, max_tokens=32, seed=7)
    generate_run(load_model("tiny", device="cpu"), [problem_set], [AdapterChoice()], sampling,
                 RunDir.open(tmp_path / "one"), batch_size=2)
    assert len(completions(run)) == 2 and completions(run) == completions(tmp_path / "one")
    assert not list(run.rglob(f"*{PARTIAL_SUFFIX}")) and files_under(tmp_path / "node1") == []


@pytest.mark.slow
def test_a_hung_rank_ends_rank0_within_the_stream_timeout(humaneval_dir, tmp_path, monkeypatch):
    """Rank 1 stopped (SIGSTOP: alive, connection open, silent, as a hung node): rank 0 hears no
    heartbeat within the side group's timeout (8 s here) and ends with one line."""
    logs = tmp_path / "logs"
    logs.mkdir()

    def out(rank: int):
        return (logs / f"{rank}.out").open("w"), (logs / f"{rank}.err").open("w")

    monkeypatch.setenv(TIMEOUT_ENV, "8")
    rank0, rank1 = start_two_nodes(tmp_path, humaneval_dir, "--batch-size", "2", out=out, limit=2, n=8,
                                   max_tokens=32)
    run = tmp_path / "node0" / "run"
    mine = load_problems("py", humaneval_dir, limit=2).problems[1].name
    try:
        deadline = time.monotonic() + 300
        while not any(mine in p.name for p in run.rglob(f"*{PARTIAL_SUFFIX}")):
            assert rank1.poll() is None and time.monotonic() < deadline, (logs / "1.err").read_text()[-2000:]
            time.sleep(0.01)
        os.kill(rank1.pid, signal.SIGSTOP)
        stopped = time.monotonic()
        code = rank0.wait(timeout=90)
        assert code == 2 and 8 <= time.monotonic() - stopped < 40
    finally:
        rank1.kill()
        rank1.wait(timeout=30)
    err = (logs / "0.err").read_text()
    lines = [line for line in err.splitlines() if line.startswith("flora-eval")]
    said = ("flora-eval: error: rank 1 of the torchrun job stopped (nothing from it in 8 s); "
            "the samples finished so far are kept: run the same command again to resume")
    assert lines == [said], err[-2000:]
