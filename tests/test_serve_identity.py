"""A served model's identity, seeds and cut samples, against real servers on loopback:
`flora-eval serve` on the tiny model, seen through a small real HTTP server that forwards to it
and changes what a test needs (a server that says other things about itself, ignores seeds,
caps max_tokens silently or answers 408 before it serves). The model behind it is real."""

from __future__ import annotations

import email.utils
import json
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx2
import pytest
from serve_helpers import ADAPTERS, flora_serve, save_adapters

from harness.cli import main
from harness.files import read_completions
from harness.generate.endpoint import Choice, Reply
from harness.generate.remote import cut_short
from harness.models import load_model
from harness.runs import RunDir
from harness.serve.server import LOOPBACK

ADAPTER = ADAPTERS[0]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    model = load_model("tiny", device="cpu").model
    adapters = save_adapters(model, tmp_path_factory.mktemp("ad") / "adapters")
    with flora_serve(adapters, tmp_path_factory.mktemp("log") / "serve.log") as url:
        yield url


@dataclass
class Alter:
    """What the forwarding server changes: `card` replaces fields of every /v1/models card and
    drops flora-eval's own facts (a third-party server); `cap` lowers max_tokens silently;
    `seedless` drops the seed; `refuse` answers the first requests with these statuses."""

    card: dict | None = None
    cap: int | None = None
    seedless: bool = False
    refuse: list[tuple[int, dict]] = field(default_factory=list)  # (status, headers), in order
    refused: list[int] = field(default_factory=list)
    fingerprints: list[str] = field(default_factory=list)  # the replies' system_fingerprint, in order
    answered: int = 0


@contextmanager
def forwarding(upstream: str, alter: Alter):
    """A real HTTP server on a loopback port that forwards to `upstream`, altered by `alter`."""
    client = httpx2.Client(base_url=upstream, timeout=60)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def _answer(self, status: int, body: bytes, headers: dict | None = None) -> None:
            self.send_response(status)
            for key, value in {"Content-Type": "application/json", **(headers or {})}.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _refused(self) -> bool:
            with lock:
                if not alter.refuse:
                    return False
                status, headers = alter.refuse.pop(0)
                alter.refused.append(status)
            self._answer(status, json.dumps({"error": {"message": "try again"}}).encode(), headers)
            return True

        def do_GET(self) -> None:
            reply = client.get(self.path)
            data = reply.json()
            if alter.card is not None and self.path.endswith("/models"):
                data["data"] = [{**{k: v for k, v in card.items() if k != "flora_eval"}, **alter.card}
                                for card in data["data"]]
            self._answer(reply.status_code, json.dumps(data).encode())

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if self._refused():
                return
            if alter.cap is not None:
                body["max_tokens"] = min(body["max_tokens"], alter.cap)
            if alter.seedless:
                body.pop("seed", None)
            reply = client.post(self.path, json=body)
            content = reply.content
            if alter.fingerprints and reply.status_code == 200:
                with lock:
                    said = alter.fingerprints[min(alter.answered, len(alter.fingerprints) - 1)]
                    alter.answered += 1
                content = json.dumps({**reply.json(), "system_fingerprint": said}).encode()
            self._answer(reply.status_code, content)

    class Quiet(ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request, client_address) -> None:
            pass  # a client that left (a run stopped by a refusal): nothing to say on stderr

    httpd = Quiet((LOOPBACK, 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{LOOPBACK}:{httpd.server_address[1]}/v1"
    finally:
        httpd.shutdown()
        httpd.server_close()
        client.close()


def generate(url: str, run: Path, humaneval_dir: Path, n: int, *extra: str, max_tokens: int = 6) -> int:
    return main(["generate", "--model", "tiny", "--endpoint", url, "--adapter", ADAPTER, "--lang", "py",
                 "--dataset", str(humaneval_dir), "--limit", "2", "-n", str(n), "--max-tokens",
                 str(max_tokens), "--temperature", "0.8", "--run-dir", str(run), *extra])


def records(run: Path) -> dict[str, object]:
    return {str(p.relative_to(run)): read_completions(p) for p in RunDir(run).completion_files()}


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


@pytest.mark.slow
def test_a_changed_model_card_is_refused_and_another_port_is_not(server, humaneval_dir, tmp_path, capsys):
    run, card = tmp_path / "run", {"root": "/models/tiny-a", "owned_by": "someone"}
    with forwarding(server, Alter(card=dict(card))) as url:
        assert generate(url, run, humaneval_dir, 1) == 0
    first = records(run)
    revisions = {r.provenance.model_revision for r in first.values()}
    hashes = {r.provenance.adapter_hash for r in first.values() if r.provenance.adapter == ADAPTER}
    assert len(revisions) == 1 and next(iter(revisions)).startswith("served:sha256:")
    assert len(hashes) == 1 and next(iter(hashes)).startswith("served:sha256:")
    identity = RunDir(run).read_manifest()["model"]["identity"]
    assert identity["root"] == "/models/tiny-a" and identity["id"] == "tiny" and "created" in identity

    with forwarding(server, Alter(card=dict(card))) as url:  # the same server on another port
        assert generate(url, run, humaneval_dir, 2) == 0
    grown = records(run)
    assert all(len(r.completions) == 2 and r.completions[:1] == first[k].completions
               for k, r in grown.items())

    with forwarding(server, Alter(card={**card, "root": "/models/tiny-b"})) as url:
        assert generate(url, run, humaneval_dir, 3) == 2
    line = one_line(capsys)
    assert "model_revision is 'served:sha256:" in line and "--overwrite" in line and "--run-id" in line
    assert records(run) == grown


@pytest.mark.slow
def test_a_fingerprint_that_changes_during_the_run_stops_it(server, humaneval_dir, tmp_path, capsys):
    """The probe and two samples see fp-a, then the server says fp-b: nothing of fp-b is kept,
    and the next start (identity fp-b) refuses what fp-a made (or --overwrite redoes it)."""
    run, card = tmp_path / "run", {"root": "/models/tiny"}
    with forwarding(server, Alter(card=card, fingerprints=["fp-a"] * 6 + ["fp-b"])) as url:
        assert generate(url, run, humaneval_dir, 2, "--concurrency", "1") == 2
    line = one_line(capsys)
    assert "changed during the run (system_fingerprint 'fp-a' → 'fp-b')" in line
    kept = [entry for p in run.rglob("*.partial.jsonl") for entry in p.read_text().splitlines()[1:]]
    assert len(kept) <= 2  # at most the samples fp-a answered; none of fp-b's
    with forwarding(server, Alter(card=card, fingerprints=["fp-b"])) as url:
        assert generate(url, run, humaneval_dir, 2) == 2
        assert "model_revision is 'served:sha256:" in one_line(capsys)
        assert generate(url, run, humaneval_dir, 2, "--overwrite") == 0
    assert len(records(run)) == 4


@pytest.mark.slow
def test_a_file_never_mixes_seeded_and_unseeded_samples(server, humaneval_dir, tmp_path, capsys):
    run = tmp_path / "run"
    with forwarding(server, Alter()) as url:
        assert generate(url, run, humaneval_dir, 1) == 0
    assert {r.provenance.seeded for r in records(run).values()} == {True}
    with forwarding(server, Alter(seedless=True)) as url:  # a server that ignores seeds
        assert generate(url, run, humaneval_dir, 2) == 2
        assert "seeded is True there, False now" in one_line(capsys)
        assert generate(url, run, humaneval_dir, 2, "--overwrite") == 0
    assert all(r.provenance.seeded is False and len(r.completions) == 2 for r in records(run).values())
    manifest = RunDir(run).read_manifest()
    assert manifest["telemetry"]["generate"]["honoured"]["seed"] is False


@pytest.mark.slow
def test_samples_cut_by_a_silent_server_cap_are_refused_not_scored(server, humaneval_dir, tmp_path, capsys):
    run = tmp_path / "run"
    with forwarding(server, Alter(cap=3)) as url:
        assert generate(url, run, humaneval_dir, 2, max_tokens=12) == 2
        line = one_line(capsys)
        assert "at 3 tokens, fewer than the --max-tokens 12 asked" in line and "--max-tokens" in line
        assert not RunDir(run).completion_files()  # nothing cut is kept
        for partial in run.rglob("*.partial.jsonl"):
            assert all(json.loads(entry).get("finish_reason") != "length"
                       for entry in partial.read_text().splitlines()[1:])
        assert generate(url, run, humaneval_dir, 2, "--overwrite", max_tokens=3) == 0
    made = records(run)
    assert len(made) == 4 and all(len(r.finish_reasons) == 2 for r in made.values())
    assert "length" in {reason for r in made.values() for reason in r.finish_reasons}


@pytest.mark.slow
def test_408_and_a_retry_after_date_are_retried(server, humaneval_dir, tmp_path):
    """The `openai` client's own retries: 408 is retried, Retry-After is read as a date too."""
    when = email.utils.formatdate(time.time() + 1, usegmt=True)
    alter = Alter(refuse=[(408, {}), (429, {"Retry-After": when}), (503, {"Retry-After": "0"})])
    with forwarding(server, alter) as url:
        assert generate(url, tmp_path / "run", humaneval_dir, 1) == 0
    assert alter.refused == [408, 429, 503]
    calls = RunDir(tmp_path / "run").read_manifest()["telemetry"]["generate"]
    assert calls["retried"] == {"HTTP 408": 1, "HTTP 429": 1, "HTTP 503": 1} and calls["retries"] == 3


def choices(*reasons: str) -> tuple[Choice, ...]:
    return tuple(Choice("x", reason) for reason in reasons)


@pytest.mark.parametrize(("reply", "asked", "context", "cut"), [
    (Reply(choices("length"), prompt_tokens=10, completion_tokens=16), 16, None, None),  # the run's limit
    (Reply(choices("length"), prompt_tokens=10, completion_tokens=4), 16, None, 4),  # the server's
    (Reply(choices("length"), prompt_tokens=10, completion_tokens=4), 16, 14, None),  # the context's
    (Reply(choices("stop"), prompt_tokens=10, completion_tokens=4), 16, None, None),
    (Reply(choices("length", "stop"), prompt_tokens=10, completion_tokens=12), 16, None, 12),
    (Reply(choices("length", "stop"), prompt_tokens=10, completion_tokens=20), 16, None, None),
    (Reply(choices("length"), prompt_tokens=0, completion_tokens=None), 16, None, None),  # no usage
])
def test_cut_short_tells_a_server_limit_from_the_runs(reply, asked, context, cut):
    assert cut_short(reply, asked, context) == cut

