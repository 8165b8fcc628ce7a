"""No hub, one line: a model, a benchmark or a training corpus that needs the Hugging Face hub
ends within seconds with one line on stderr when the hub is switched off or out of reach.

"Out of reach" is an HF_ENDPOINT on a closed loopback port, so these tests hold the same on a
machine that has a hub and one that has none. Each points HF_HOME at an empty folder: nothing
can come from a local cache."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from harness import hub
from harness.corpus import open_corpus
from harness.errors import UserError

# The libraries' retries alone take 46 s (1+2+4+8+8 s, twice); one probe takes at most 4.5 s.
# The rest is starting Python and torch, which on a busy 2-core machine can take 10 s itself.
BOUND_S = 25.0
OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def hub_env(tmp_path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in OFFLINE_VARS and k != "HF_ENDPOINT"}
    return env | {"HF_HOME": str(tmp_path / "hf-home"), **extra}


def cli(tmp_path, env: dict[str, str], *argv: str) -> tuple[int, list[str], float]:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "harness.cli", *argv, "--run-dir", str(tmp_path / "runs")],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    return done.returncode, done.stderr.strip().splitlines(), time.monotonic() - started


@pytest.mark.parametrize("setting", ["unreachable", "HF_HUB_OFFLINE"])
def test_a_hub_model_without_the_hub_is_one_line_in_seconds(tmp_path, setting):
    extra = ({"HF_ENDPOINT": f"http://127.0.0.1:{closed_port()}"} if setting == "unreachable"
             else {"HF_HUB_OFFLINE": "1"})
    code, stderr, took = cli(tmp_path, hub_env(tmp_path, **extra),
                             "--model", "starcoder-15b", "--lang", "py", "-n", "1")
    assert code == 2 and len(stderr) == 1, stderr
    assert stderr[0].startswith("flora-eval: error: cannot load model 'starcoder-15b'")
    assert "--model PATH" in stderr[0]
    assert ("Connection refused" if setting == "unreachable" else "HF_HUB_OFFLINE is set") in stderr[0]
    assert took < BOUND_S, f"{took:.1f} s"


def test_a_hub_benchmark_without_the_hub_is_one_line_in_seconds(tmp_path):
    env = hub_env(tmp_path, HF_ENDPOINT=f"http://127.0.0.1:{closed_port()}")
    code, stderr, took = cli(tmp_path, env, "generate", "--model", "tiny", "--lang", "py", "-n", "1")
    assert code == 2 and len(stderr) == 1, stderr
    assert "cannot load nuprl/MultiPL-E humaneval-py" in stderr[0] and "--dataset PATH" in stderr[0]
    assert took < BOUND_S, f"{took:.1f} s"


def test_the_stack_without_the_hub_is_one_line_in_seconds(monkeypatch):
    for name in OFFLINE_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    started = time.monotonic()
    with pytest.raises(UserError, match="--data DIR") as info:
        open_corpus("rb")
    assert "cannot be reached" in str(info.value) and "\n" not in str(info.value)
    assert time.monotonic() - started < BOUND_S


def test_a_hub_adapter_without_the_hub_is_one_line_in_seconds(monkeypatch, tmp_path):
    from harness.adapters.files import load_adapter

    for name in OFFLINE_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.chdir(tmp_path)
    started = time.monotonic()
    with pytest.raises(UserError, match="cannot fetch adapter 'someorg/ruby-r1' .*cannot be reached") as info:
        load_adapter("someorg/ruby-r1")
    assert "\n" not in str(info.value) and "local directory" in str(info.value)
    assert time.monotonic() - started < BOUND_S


class _Answer(BaseHTTPRequestHandler):
    def do_HEAD(self):  # noqa: N802 (the http.server name)
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_the_probe_counts_any_answer_and_bounds_silence():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert hub._probe(f"http://127.0.0.1:{server.server_port}", 2.0) == ""  # 404 is an answer
    finally:
        server.shutdown()
        server.server_close()
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        started = time.monotonic()
        why = hub._probe(f"http://127.0.0.1:{silent.getsockname()[1]}", 0.5)
        assert why and time.monotonic() - started < 3.0


def test_offline_variables_read_as_the_libraries_do(monkeypatch):
    for name in OFFLINE_VARS:
        monkeypatch.delenv(name, raising=False)
    assert hub.offline_variable() is None
    monkeypatch.setenv("HF_HUB_OFFLINE", "yes")
    assert hub.offline_variable() == "HF_HUB_OFFLINE"
    assert not hub.hub_state().usable and hub.hub_state().switched_off
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "0")  # datasets reads its own variable first
    assert hub.offline_variable(hub.DATASET_OFFLINE_VARS) is None
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert hub.offline_variable() is None


@pytest.mark.slow
def test_a_model_in_the_local_cache_still_loads_without_the_hub(tmp_path):
    """The hub out of reach is not an error when the model is in the hub's local cache: it
    loads from there (`local_files_only`), with the commit it was cached at as its revision."""
    from harness.models import build_tiny

    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = tmp_path / "hf-home" / "hub" / "models--org--tiny-cached" / "snapshots" / commit
    model, tokenizer = build_tiny()
    model.save_pretrained(snapshot)
    tokenizer.save_pretrained(snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text(commit)
    env = hub_env(tmp_path, HF_ENDPOINT=f"http://127.0.0.1:{closed_port()}")
    script = "from harness.models import load_model; print(load_model('org/tiny-cached', 'cpu').revision)"
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == commit
    assert time.monotonic() - started < BOUND_S  # no retries of files the cache lacks
