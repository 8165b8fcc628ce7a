"""`--endpoint`: the generate stage against a served model. Against `flora-eval serve` (a real
process, three adapters) it gives exactly the in-process run's completions for all four
columns, with requests for four adapters in one decode batch; it resumes and extends as
in-process; it retries a server that answers 429; against `transformers serve` (a real
third-party server) the whole pipeline runs: generation, execution, report, n samples each."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path

import httpx2
import pytest
from serve_helpers import ADAPTERS, BIN, server_process

from harness import api
from harness.cli import main
from harness.errors import UserError
from harness.files import read_completions
from harness.generate.endpoint import EndpointConfig
from harness.models import build_tiny
from harness.records import SamplingConfig
from harness.serve.server import LOOPBACK, ServerThread, build_state, free_port
from harness.serve.spec import ServeOptions, ServeSpec

SAMPLING = ["-n", "3", "--max-tokens", "24", "--temperature", "0.8", "--seed", "5"]
SECRET = "sk-test-never-on-disk"


def completions(run: Path) -> dict[str, tuple[str, ...]]:
    return {str(p.relative_to(run)): read_completions(p).completions
            for p in sorted(run.rglob("*.json.gz")) if not p.name.endswith(".results.json.gz")}


def endpoint_argv(url: str, humaneval_dir: Path, run: Path, *extra: str) -> list[str]:
    adapters = [a for name in ADAPTERS for a in ("--adapter", name)]
    return ["generate", "--model", "tiny", "--endpoint", f"{url}/v1", *adapters, "--lang", "py",
            "--dataset", str(humaneval_dir), "--limit", "3", "--run-dir", str(run), *extra]


@pytest.mark.slow
def test_endpoint_run_equals_the_in_process_run(server, adapters_dir, humaneval_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    evaluation = api.Evaluation("tiny", ADAPTERS, ("py",), SamplingConfig(3, 0.8, 0.95, 24, 5),
                                dataset=str(humaneval_dir), limit=3, adapters_dir=str(adapters_dir))
    api.generate(evaluation, tmp_path / "local", device="cpu")
    before = httpx2.get(f"{server}/telemetry").json()
    assert main(endpoint_argv(server, humaneval_dir, tmp_path / "served", *SAMPLING)) == 0

    local, served = completions(tmp_path / "local"), completions(tmp_path / "served")
    assert len(local) == 3 * 4 and served == local  # base, FLoRA, LoRA, IA3: every sample equal
    assert {Path(k).parts[1] for k in served} == {"base", *ADAPTERS}
    record = read_completions(next((tmp_path / "served").rglob("HumanEval_0*.json.gz")))
    assert record.provenance.model == "tiny" and record.provenance.model_revision.startswith("sha256:")

    after = httpx2.get(f"{server}/telemetry").json()
    assert after["requests"] - before["requests"] == 12 * 3 + 4  # one per sample, plus the probe
    assert after["max_adapters_per_step"] >= 4  # four adapters decoded in one batch
    manifest = json.loads((tmp_path / "served" / "manifest.json").read_text())
    generated = manifest["telemetry"]["generate"]
    assert generated["honoured"] == {"n": True, "seed": True} and generated["samples"] == 36
    assert generated["completion_tokens"] > 0 and generated["latency_s"]["p95"] > 0
    assert manifest["config"]["endpoint"]["url"] == f"{server}/v1"
    assert [a["method"] for a in manifest["config"]["adapters"]] == ["base", "flora", "lora", "ia3"]
    for path in (tmp_path / "served").rglob("*"):
        assert not path.is_file() or SECRET.encode() not in path.read_bytes()


@pytest.mark.slow
def test_endpoint_run_resumes_extends_and_refuses_other_settings(server, humaneval_dir, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(endpoint_argv(server, humaneval_dir, run, "-n", "2", "--max-tokens", "16")) == 0
    two = completions(run)
    assert main(endpoint_argv(server, humaneval_dir, run, "-n", "3", "--max-tokens", "16")) == 0
    three = completions(run)
    assert all(len(v) == 3 and v[:2] == two[k] for k, v in three.items())  # extended, kept
    assert main(endpoint_argv(server, humaneval_dir, run, "-n", "3", "--max-tokens", "17")) == 2
    assert "other settings" in capsys.readouterr().err
    assert completions(run) == three


def test_an_unknown_served_name_stops_with_one_line(server, humaneval_dir, tmp_path, capsys):
    argv = endpoint_argv(server, humaneval_dir, tmp_path / "r", "-n", "1", "--max-tokens", "4",
                         "--served-name", "py-ia3=no-such-adapter")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "no-such-adapter" in err and "--served-name" in err and len(err.splitlines()) == 1


def test_max_tokens_above_the_server_cap_stops_with_one_line(server, humaneval_dir, tmp_path, capsys):
    """The server answers 400 naming its cap (1,024) instead of cutting samples silently."""
    argv = endpoint_argv(server, humaneval_dir, tmp_path / "r", "-n", "1", "--max-tokens", "2000")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "1024" in err and "--max-tokens" in err and len(err.splitlines()) == 1


def test_the_client_retries_a_server_that_answers_429(humaneval_dir, tmp_path):
    state = build_state(ServeSpec("tiny", device="cpu", options=ServeOptions(max_rows=2, max_waiting=2)))
    with ServerThread(state) as url:
        evaluation = api.Evaluation("tiny", (), ("py",), SamplingConfig(6, 0.8, 0.95, 32, 0),
                                    dataset=str(humaneval_dir), limit=2,
                                    endpoint=EndpointConfig(url, concurrency=16))
        run, _, telemetry = api.generate(evaluation, tmp_path / "run")
        rejected = state.engine.snapshot()["rejected"]
    calls = telemetry.as_dict()
    assert rejected > 0 and calls["retries"] >= rejected and calls["retried"]["HTTP 429"] > 0
    assert all(len(v) == 6 for v in completions(run.root).values()) and len(completions(run.root)) == 2


def test_dropped_connections_are_retried_then_stop_with_one_line(humaneval_dir, tmp_path, capsys):
    """A real server on loopback that accepts each connection and closes it at once."""
    listener = socket.create_server((LOOPBACK, 0))
    port = listener.getsockname()[1]
    dropped = []

    def drop() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            dropped.append(1)
            conn.close()

    threading.Thread(target=drop, daemon=True).start()
    try:
        code = main(["generate", "--model", "tiny", "--endpoint", f"http://{LOOPBACK}:{port}", "--lang", "py",
                     "--dataset", str(humaneval_dir), "--limit", "1", "-n", "1", "--retries", "2",
                     "--run-dir", str(tmp_path / "run")])
    finally:
        listener.close()
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "failed 3 times" in err and "resume" in err
    assert len(dropped) >= 3  # the first request and its two retries


def test_endpoint_options_are_checked_and_credentials_never_recorded():
    config = EndpointConfig.from_cli("http://user:pw@127.0.0.1:9/v1/?token=x", ["a=b"], 4, "MY_KEY", 30, 2)
    assert config.public_url() == "http://127.0.0.1:9/v1" and config.served("a") == "b"
    assert "pw" not in json.dumps(config.entry()) and config.entry()["api_key_env"] == "MY_KEY"
    assert EndpointConfig("http://127.0.0.1:9").base_url() == "http://127.0.0.1:9/v1"
    bad = (("127.0.0.1:9", []), ("ftp://x", []), ("http://x", ["novalue"]), ("http://x", ["=b"]))
    for url, served in bad:
        with pytest.raises(UserError):
            EndpointConfig.from_cli(url, served, 4, "K", 30, 2)
    with pytest.raises(UserError):
        EndpointConfig.from_cli("http://x", [], 0, "K", 30, 2)


@pytest.mark.docker
@pytest.mark.slow
def test_transformers_serve_end_to_end(humaneval_dir, tmp_path, monkeypatch, capsys):
    """`transformers serve` (it ignores n) on the tiny model saved to a folder: generation,
    execution in Docker, report; exactly n samples per problem."""
    monkeypatch.setenv("FLORA_EVAL_CACHE", str(tmp_path / "cache.sqlite"))
    model, tokenizer = build_tiny()
    model.generation_config.do_sample = True  # else transformers decodes greedily whatever is asked
    folder = tmp_path / "tiny"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    port = free_port()
    argv = [str(BIN / "transformers"), "serve", str(folder), "--host", "127.0.0.1", "--port", str(port),
            "--device", "cpu", "--log-level", "warning"]
    with server_process(argv, tmp_path / "transformers.log", port) as url:
        code = main(["--model", str(folder), "--endpoint", url, "--lang", "py",
                     "--dataset", str(humaneval_dir), "--limit", "2", "-n", "3", "--max-tokens", "16",
                     "--run-dir", str(tmp_path / "run")])
    assert code == 0, capsys.readouterr().err
    run = tmp_path / "run"
    made = completions(run)
    assert len(made) == 2 and all(len(v) == 3 for v in made.values())
    assert len(list(run.rglob("*.results.json.gz"))) == 2 and (run / "report.html").is_file()
    manifest = json.loads((run / "manifest.json").read_text())
    generated = manifest["telemetry"]["generate"]
    assert generated["honoured"]["n"] is False  # transformers serve ignores n: one request per sample
    assert generated["samples"] == 6 and manifest["model"]["source"] == f"endpoint:{url}/v1"
    # what transformers serve says of itself, hashed (the URL no part of it)
    assert manifest["model"]["revision"].startswith("served:sha256:") and manifest["model"]["identity"]
