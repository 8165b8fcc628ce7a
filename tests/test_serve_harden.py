"""`flora-eval serve` hardened: one real server process on a loopback port (the tiny model, an
API key, short deadlines), and checks that each end with a good request it still serves:
`max_tokens` over the cap → 400 naming it; a body over the limit → 413; a prompt the
tokenizer refuses → 400 with no exception text (that is in the log); /telemetry needs the
key, compared in constant time; a stopped (SIGSTOP) engine makes a request end at its
deadline (504) and /health say "stalled"; a SIGKILLed engine ends the request in flight and
later ones at once with 503, is restarted, and serves the same completions again; a restart
that would serve other files stops the server with one line. Also: a non-loopback --host
without a key prints a warning line."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest
from serve_helpers import BIN, started_server, trained_like

from harness.adapters import LoRAConfig, save_adapter
from harness.models import load_model
from harness.serve.app import MAX_BODY_BYTES
from harness.serve.server import LOOPBACK, exposure_warning, free_port, is_loopback

KEY = "sk-harden-ü-test"  # not ASCII: the comparison works on bytes
AUTH = {"authorization": f"Bearer {KEY}".encode()}
CAP, DEADLINE_S, STALL_S = 64, 8, 5  # a stall well above a loaded machine's hiccups


@dataclass
class Served:
    url: str
    log: Path
    process: subprocess.Popen
    adapters: Path


def save_lora(folder: Path, seed: int) -> None:
    model = load_model("tiny", device="cpu").model
    adapter = trained_like(model, LoRAConfig(r=2, lora_alpha=4), "py-lora", seed)
    save_adapter(adapter, folder / "py-lora", metadata={"language": "py", "base_model": "tiny"})


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """One server for the whole file (its last test stops it): the tiny model and one adapter."""
    folder = tmp_path_factory.mktemp("harden")
    save_lora(folder / "adapters", 1)
    port = free_port()
    argv = [str(BIN / "flora-eval"), "serve", "--model", "tiny", "--device", "cpu", "--port", str(port),
            "--adapters-dir", str(folder / "adapters"), "--adapter", "py-lora", "--max-tokens", str(CAP),
            "--request-timeout", str(DEADLINE_S), "--stall-timeout", str(STALL_S)]
    env = {"OMP_NUM_THREADS": "1", "FLORA_EVAL_SERVE_API_KEY": KEY}
    with started_server(argv, folder / "serve.log", port, env=env) as (url, process):
        yield Served(url, folder / "serve.log", process, folder / "adapters")


def post(url: str, body: dict | bytes, timeout: float = 30, **headers) -> httpx2.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx2.post(f"{url}/v1/completions", content=content, timeout=timeout,
                       headers={**AUTH, "content-type": "application/json", **headers})


GOOD = {"model": "tiny", "prompt": "def f(x):", "max_tokens": 8, "seed": 1}
CHAT = {"model": "py-lora", "messages": [{"role": "user", "content": "def f(x):"}], "max_tokens": 8,
        "seed": 1}


def post_chat(url: str, body: dict | bytes, **headers) -> httpx2.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx2.post(f"{url}/v1/chat/completions", content=content, timeout=30,
                       headers={**AUTH, "content-type": "application/json", **headers})


def ok(url: str) -> dict:
    """A good request; it must be served, with the server's fingerprint."""
    reply = post(url, GOOD)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["system_fingerprint"].startswith("fp_") and body["model"] == "tiny"
    assert body["choices"][0]["finish_reason"] in ("stop", "length")
    return body


def error(reply: httpx2.Response, status: int) -> dict:
    assert reply.status_code == status, reply.text
    body = reply.json()["error"]
    assert body["message"] and body["type"]
    return body


def engine_pid(log: Path) -> int:
    """The engine process's pid, as the server's log last named it (at start, after a restart)."""
    return int(re.findall(r"pid (\d+)", log.read_text())[-1])


def test_max_tokens_above_the_cap_is_400_naming_it(served):
    url = served.url
    body = error(post(url, {**GOOD, "max_tokens": CAP + 1}), 400)
    assert body["param"] == "max_tokens" and str(CAP) in body["message"]
    at_cap = post(url, {**GOOD, "max_tokens": CAP, "temperature": 0}).json()
    assert at_cap["usage"]["completion_tokens"] <= CAP
    body = error(post_chat(url, {**CHAT, "max_completion_tokens": CAP + 1}), 400)  # the chat route too
    assert body["param"] == "max_tokens" and str(CAP) in body["message"]
    assert post_chat(url, CHAT).json()["choices"][0]["message"]["role"] == "assistant"
    ok(url)


def test_a_body_over_the_limit_is_413(served):
    url = served.url
    big = json.dumps({**GOOD, "prompt": "x" * MAX_BODY_BYTES}).encode()
    assert error(post(url, big), 413)["code"] == "request_too_large"
    chunked = httpx2.post(f"{url}/v1/completions", content=iter([big[:1000], big[1000:]]), timeout=30,
                          headers={**AUTH, "content-type": "application/json"})  # no Content-Length
    assert error(chunked, 413)["code"] == "request_too_large"
    big_chat = json.dumps({**CHAT, "messages": [{"role": "user", "content": "x" * MAX_BODY_BYTES}]}).encode()
    assert error(post_chat(url, big_chat), 413)["code"] == "request_too_large"
    ok(url)


def test_exception_text_goes_to_the_log_not_the_client(served):
    url, log = served.url, served.log
    body = error(post(url, b'{"model": "tiny", "prompt": "\\ud800"}'), 400)  # a lone surrogate
    assert "Error" not in body["message"] and "TextEncodeInput" not in body["message"]
    request_id = re.search(r"req-[0-9a-f]+", body["message"]).group()
    text = log.read_text()
    assert request_id in text and "TextEncodeInput" in text.split(request_id, 1)[1]  # the traceback
    ok(url)


def test_every_route_but_health_needs_the_key(served):
    url = served.url
    for wrong in ({}, {"authorization": "Bearer nope"}, {"authorization": "Bearer sk-harden-?-test"},
                  {"authorization": "Bearer sk-harden-ü-tesT".encode()}):
        for reply in (httpx2.get(f"{url}/telemetry", headers=wrong),
                      httpx2.get(f"{url}/v1/models", headers=wrong),
                      httpx2.post(f"{url}/v1/completions", json=GOOD, headers=wrong),
                      httpx2.post(f"{url}/v1/chat/completions", json=CHAT, headers=wrong)):
            assert error(reply, 401)["code"] == "invalid_api_key"
    assert httpx2.get(f"{url}/telemetry", headers=AUTH).json()["completed"] >= 0
    assert httpx2.get(f"{url}/health").json() == {"status": "ok"}
    ok(url)


def test_a_stopped_engine_ends_requests_at_the_deadline_and_health_says_stalled(served):
    url, log = served.url, served.log
    first = ok(url)
    pid = engine_pid(log)
    os.kill(pid, signal.SIGSTOP)
    try:
        start = time.monotonic()
        reply = post(url, GOOD, timeout=DEADLINE_S + 20)  # submitted before the stall is noticed
        took = time.monotonic() - start
        assert error(reply, 504)["code"] == "timeout" and DEADLINE_S - 0.5 < took < DEADLINE_S + 10
        health = httpx2.get(f"{url}/health", timeout=5)
        assert health.status_code == 503 and health.json()["status"] == "stalled"
        start = time.monotonic()
        assert error(post(url, GOOD), 503)["code"] == "engine_unavailable"  # refused at once now
        assert error(httpx2.get(f"{url}/telemetry", headers=AUTH, timeout=5), 503)
        assert time.monotonic() - start < 3
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_ok(url, 30)
    assert ok(url)["choices"] == first["choices"]


def test_a_killed_engine_ends_requests_at_once_and_is_restarted(served):
    url, log = served.url, served.log
    first = ok(url)
    pid = engine_pid(log)
    os.kill(pid, signal.SIGSTOP)  # holds the next request in flight, whatever the machine's speed
    replies: list[httpx2.Response] = []
    flight = threading.Thread(target=lambda: replies.append(post(url, GOOD, timeout=DEADLINE_S + 20)))
    flight.start()
    time.sleep(0.5)
    start = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    flight.join(timeout=DEADLINE_S + 20)
    assert time.monotonic() - start < DEADLINE_S - 2  # ended by the death, not by the deadline
    body = error(replies[0], 503)
    assert "killed by SIGKILL" in body["message"] and body["code"] == "engine_unavailable"
    for _ in range(5):  # later requests: 503 at once while it restarts, not 500s or 429s
        start = time.monotonic()
        assert error(post(url, GOOD), 503)["code"] == "engine_unavailable"
        assert time.monotonic() - start < 3
    assert httpx2.get(f"{url}/health", timeout=5).status_code == 503
    wait_ok(url, 120)
    assert engine_pid(log) != pid
    again = ok(url)
    assert again["choices"] == first["choices"] and again["system_fingerprint"] == first["system_fingerprint"]
    assert log.read_text().count("restarting it") == 1


def wait_ok(url: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if httpx2.get(f"{url}/health", timeout=5).status_code == 200:
            return
        time.sleep(0.3)
    raise AssertionError(f"the server was not healthy again within {seconds} s")


def test_a_non_loopback_host_without_a_key_prints_a_warning(capsys, monkeypatch):
    from harness.cli import main

    monkeypatch.delenv("FLORA_EVAL_SERVE_API_KEY", raising=False)
    # the warning comes first; a bad option then stops it before it binds: nothing listens beyond loopback
    assert main(["serve", "--host", "0.0.0.0", "--max-rows", "0", "--port", "1", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "warning" in err[0] and "0.0.0.0" in err[0] and "--api-key" in err[0]
    assert "--max-rows" in err[1]
    assert main(["serve", "--host", LOOPBACK, "--max-rows", "0"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1  # loopback: no warning
    assert [is_loopback(h) for h in (LOOPBACK, "127.0.0.2", "::1", "[::1]", "localhost", "0.0.0.0", "::",
                                     "10.0.0.1", "example.org")] == [True] * 5 + [False] * 4
    assert exposure_warning("0.0.0.0", "key") is None and exposure_warning(LOOPBACK, None) is None


def test_a_restart_that_would_serve_other_files_stops_the_server(served):
    """Last: it stops the module's server."""
    save_lora(served.adapters, 2)  # the adapter changes on disk under the running server
    os.kill(engine_pid(served.log), signal.SIGKILL)
    assert served.process.wait(timeout=120) == 1
    lines = served.log.read_text().strip().splitlines()
    assert "restarting it" in lines[-2]
    assert "loaded other files" in lines[-1] and lines[-1].endswith("the server stops")
