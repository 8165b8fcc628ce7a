"""Chat prompts through servers: `flora-eval serve`'s /v1/chat/completions (every adapter, the
model's chat template, streaming, errors) and `--endpoint` with `--prompt-style instruct`
against it (the same replies as in-process, same seed) and against `transformers serve`."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import httpx2
import pytest
from serve_helpers import ADAPTERS, BIN, server_process

from harness import api
from harness.cli import main
from harness.errors import UserError
from harness.files import read_completions
from harness.generate.endpoint import EndpointConfig
from harness.models import build_tiny, load_model
from harness.prompts import template_hash
from harness.records import SamplingConfig
from harness.serve.server import ServerThread, build_state, free_port
from harness.serve.spec import ServeOptions, ServeSpec

SAMPLING = ["-n", "2", "--max-tokens", "24", "--temperature", "0.8", "--seed", "7"]
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Add two numbers."}]


def records(run: Path) -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    """Each completions file's (completions, replies)."""
    out = {}
    for path in sorted(run.rglob("*.json.gz")):
        if not path.name.endswith(".results.json.gz"):
            record = read_completions(path)
            out[str(path.relative_to(run))] = (record.completions, record.replies)
    return out


def instruct_argv(url: str, humaneval_dir: Path, run: Path, *extra: str) -> list[str]:
    adapters = [a for name in ADAPTERS for a in ("--adapter", name)]
    return ["--model", "tiny", "--prompt-style", "instruct", "--endpoint", f"{url}/v1", *adapters,
            "--lang", "py", "--lang", "rb", "--dataset", str(humaneval_dir), "--limit", "2",
            "--run-dir", str(run), *SAMPLING, *extra]


def chat(url: str, **body) -> httpx2.Response:
    return httpx2.post(f"{url}/v1/chat/completions", json={"model": "tiny", "messages": MESSAGES, **body},
                       timeout=60)


def test_the_chat_route_answers_streams_and_refuses(server):
    """Seeded choices are reproducible, streamed ones join to the same text, every adapter is
    served, and what the server cannot do is a 400 or 404 with OpenAI's error body."""
    reply = chat(server, n=2, seed=3, max_tokens=12).json()
    assert reply["object"] == "chat.completion" and reply["system_fingerprint"].startswith("fp_")
    texts = [c["message"]["content"] for c in reply["choices"]]
    assert [c["message"]["role"] for c in reply["choices"]] == ["assistant"] * 2
    assert all(c["finish_reason"] in ("stop", "length") for c in reply["choices"])
    assert reply["usage"]["prompt_tokens"] > 0 and texts == [
        c["message"]["content"] for c in chat(server, n=2, seed=3, max_tokens=12).json()["choices"]]

    streamed = ["", ""]
    with httpx2.stream("POST", f"{server}/v1/chat/completions", timeout=60, json={
            "model": "tiny", "messages": MESSAGES, "n": 2, "seed": 3, "max_tokens": 12, "stream": True}) as r:
        for line in r.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                chunk = json.loads(line[6:])
                assert chunk["object"] == "chat.completion.chunk"
                for c in chunk["choices"]:
                    streamed[c["index"]] += c["delta"]["content"]
    assert streamed == texts

    for name in ADAPTERS:  # every adapter answers on the chat route too
        assert chat(server, model=name, seed=3, max_tokens=4).status_code == 200
    card = httpx2.get(f"{server}/v1/models").json()["data"][0]
    assert card["flora_eval"]["chat_template"] == template_hash(load_model("tiny", device="cpu").tokenizer)

    refused = {"model": ("no-such", 404), "max_tokens": (5000, 400), "tools": ([{"type": "function"}], 400),
               "messages": ([{"role": "wizard", "content": "x"}], 400), "logprobs": (True, 400)}
    for field, (value, status) in refused.items():
        answer = chat(server, **{field: value})
        assert answer.status_code == status, (field, answer.text)
        assert answer.json()["error"]["param"] == field and "message" in answer.json()["error"]


def test_a_served_model_without_a_chat_template_refuses_chat(tmp_path):
    """A template-less model: the chat route answers 400 in one line; --endpoint with
    instruct stops with one line (exit 2), naming the missing template."""
    model, tokenizer = build_tiny()
    tokenizer.chat_template = None
    folder = tmp_path / "plain"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    for leftover in folder.glob("chat_template*"):
        leftover.unlink()
    state = build_state(ServeSpec(str(folder), device="cpu", options=ServeOptions(max_rows=2)))
    with ServerThread(state) as url:
        answer = httpx2.post(f"{url}/v1/chat/completions", json={"model": str(folder), "messages": MESSAGES})
        assert answer.status_code == 400 and answer.json()["error"]["code"] == "chat_template_missing"
        evaluation = api.Evaluation(str(folder), (), ("py",), SamplingConfig(1, 0.8, 0.95, 4, 0),
                                    limit=1, prompt_style="instruct",
                                    endpoint=EndpointConfig(url))
        with pytest.raises(UserError, match="no chat template"):
            api.generate(evaluation, tmp_path / "run")


def end_of_turn_model(folder: Path) -> Path:
    """The tiny model saved with a template whose end of turn is not the end of text: a byte
    it emits often ('<'), made a special token, so replies end early at it."""
    model, tokenizer = build_tiny()
    tokenizer.add_special_tokens({"additional_special_tokens": ["<"]})  # an existing id: no new row
    tokenizer.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<\n{% endfor %}"
                               "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_served_replies_end_at_the_templates_end_of_turn(humaneval_dir, tmp_path):
    """A template whose end of turn differs from the end of text: the server ends replies
    there as in-process runs do (same replies, same seed), and some end before max_tokens."""
    folder = end_of_turn_model(tmp_path / "model")
    sampling = SamplingConfig(4, 1.0, 1.0, 24, 11)
    evaluation = api.Evaluation(str(folder), (), ("py",), sampling, dataset=str(humaneval_dir), limit=2,
                                prompt_style="instruct")
    api.generate(evaluation, tmp_path / "local", device="cpu")
    state = build_state(ServeSpec(str(folder), device="cpu", options=ServeOptions(max_rows=8)))
    with ServerThread(state) as url:
        served = dataclasses.replace(evaluation, endpoint=EndpointConfig(url))
        api.generate(served, tmp_path / "served")
    local = records(tmp_path / "local")
    assert records(tmp_path / "served") == local and len(local) == 2
    reasons = [r for p in (tmp_path / "served").rglob("HumanEval_*.json.gz") if "results" not in p.name
               for r in read_completions(p).finish_reasons]
    assert "stop" in reasons and len(reasons) == 8


@pytest.mark.slow
def test_instruct_through_the_chat_endpoint_equals_the_in_process_run(server, adapters_dir, humaneval_dir,
                                                                     tmp_path):
    """Same seed: every reply and extracted completion through flora-eval serve's chat route
    equals the in-process run's, for the base model and three adapters in two languages; the
    provenance records the style and the template's hash the server states."""
    evaluation = api.Evaluation("tiny", ADAPTERS, ("py", "rb"), SamplingConfig(2, 0.8, 0.95, 24, 7),
                                dataset=str(humaneval_dir), limit=2, adapters_dir=str(adapters_dir),
                                prompt_style="instruct")
    api.generate(evaluation, tmp_path / "local", device="cpu")
    before = httpx2.get(f"{server}/telemetry").json()
    assert main(["generate", *instruct_argv(server, humaneval_dir, tmp_path / "served")]) == 0

    local, served = records(tmp_path / "local"), records(tmp_path / "served")
    assert len(local) == 2 * 2 * 4 and served == local
    assert all(len(replies) == 2 for _, replies in served.values())
    after = httpx2.get(f"{server}/telemetry").json()
    assert after["max_adapters_per_step"] >= 2  # adapters decoded in one batch, chat prompts too
    assert after["requests"] - before["requests"] == 16 * 2 + 4  # one per sample, plus the probe
    provenance = read_completions(next((tmp_path / "served").rglob("HumanEval_0_*.json.gz"))).provenance
    mine = read_completions(next((tmp_path / "local").rglob("HumanEval_0_*.json.gz"))).provenance
    assert provenance.prompt_style == "instruct" and provenance.chat_template == mine.chat_template
    manifest = json.loads((tmp_path / "served" / "manifest.json").read_text())
    assert manifest["telemetry"]["generate"]["honoured"] == {"n": True, "seed": True}
    # run again: every file is complete, so only the probe is asked; completion prompts refuse
    assert main(["generate", *instruct_argv(server, humaneval_dir, tmp_path / "served")]) == 0
    assert httpx2.get(f"{server}/telemetry").json()["requests"] == after["requests"] + 4
    assert records(tmp_path / "served") == local
    completion = ["completion" if a == "instruct" else a
                  for a in instruct_argv(server, humaneval_dir, tmp_path / "served")]
    assert main(["generate", *completion]) == 2


@pytest.mark.docker
@pytest.mark.slow
def test_instruct_main_command_against_flora_serve_end_to_end(server, humaneval_dir, tmp_path, monkeypatch,
                                                              capsys):
    """`flora-eval --model tiny --prompt-style instruct --adapter A --lang py --lang rb --endpoint`:
    generation through the chat route, execution in Docker, a report naming the style and
    the extraction breakdown."""
    monkeypatch.setenv("FLORA_EVAL_CACHE", str(tmp_path / "cache.sqlite"))
    run = tmp_path / "run"
    assert main(instruct_argv(server, humaneval_dir, run)) == 0, capsys.readouterr().err
    assert len(list(run.rglob("*.results.json.gz"))) == 2 * 2 * 4
    table = (run / "table.md").read_text()
    assert table.startswith("Prompt style: run: instruct") and "| tiny (instruct) |" in table
    assert "## Extraction" in table and "fenced in the language" in table and "no code" in table
    assert "instruct" in (run / "report.html").read_text()


@pytest.mark.docker
@pytest.mark.slow
def test_instruct_against_transformers_serve_chat(humaneval_dir, tmp_path, capsys):
    """`transformers serve`'s /v1/chat/completions (it ignores n) on the tiny model saved with
    its chat template: exactly n replies per problem, code extracted, the template recorded
    as "served" (that server does not state it); then executed and reported like any run,
    with the style and the extraction breakdown."""
    model, tokenizer = build_tiny()
    model.generation_config.do_sample = True
    folder = tmp_path / "tiny"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    port = free_port()
    argv = [str(BIN / "transformers"), "serve", str(folder), "--host", "127.0.0.1", "--port", str(port),
            "--device", "cpu", "--log-level", "warning"]
    with server_process(argv, tmp_path / "transformers.log", port) as url:
        code = main(["generate", "--model", str(folder), "--prompt-style", "instruct", "--endpoint", url,
                     "--lang", "py", "--lang", "rb", "--dataset", str(humaneval_dir), "--limit", "1",
                     "-n", "2", "--max-tokens", "12", "--run-dir", str(tmp_path / "run")])
    assert code == 0, capsys.readouterr().err
    made = records(tmp_path / "run")
    assert len(made) == 2 and all(len(c) == len(r) == 2 for c, r in made.values())
    provenance = read_completions(next((tmp_path / "run").rglob("*.json.gz"))).provenance
    assert provenance.prompt_style == "instruct" and provenance.chat_template == "served"
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["telemetry"]["generate"]["samples"] == 4
    assert main(["execute", str(tmp_path / "run"), "--jobs", "2"]) == 0, capsys.readouterr().err
    assert main(["report", str(tmp_path / "run")]) == 0, capsys.readouterr().err
    assert len(list((tmp_path / "run").rglob("*.results.json.gz"))) == 2
    table = (tmp_path / "run" / "table.md").read_text()
    assert table.startswith("Prompt style: run: instruct") and " (instruct) |" in table
    assert "## Extraction" in table and "fenced in the language" in table
