"""`flora-eval serve`: a real server process on a loopback port, the tiny model and one
adapter per method. The official `openai` client gets completions from it; bad input is
answered (404, 400, 429) and the next good request is still served; a client that leaves
frees its rows; prompts of concurrent requests for different adapters are prefilled in one
forward, equal token for token to prefilling each alone."""

from __future__ import annotations

import asyncio
import json
import time

import httpx2
import openai
import pytest
import torch
from serve_helpers import ADAPTERS, flora_serve, save_adapters, trained_like

from harness.adapters import FLoRAConfig, IA3Config, LoRAConfig, attach
from harness.generate.engine import BASE_ROW, DecodeBatch, Engine, EngineConfig, Request
from harness.models import load_model
from harness.serve.server import ServerThread, build_state
from harness.serve.spec import ServeOptions, ServeSpec

MODELS = ("tiny", *ADAPTERS)


@pytest.fixture(scope="module")
def loaded():
    return load_model("tiny", device="cpu")


@pytest.fixture(scope="module")
def server(tmp_path_factory, loaded):
    folder = tmp_path_factory.mktemp("serve")
    save_adapters(loaded.model, folder / "adapters")
    with flora_serve(folder / "adapters", folder / "serve.log") as url:
        yield url


def ok(url: str, model: str = "tiny") -> dict:
    """A good request; it must be served."""
    reply = httpx2.post(f"{url}/v1/completions", json={"model": model, "prompt": "def f(x):", "max_tokens": 4,
                                                        "seed": 1}, timeout=60)
    assert reply.status_code == 200, reply.text
    return reply.json()


def error(reply, status: int) -> dict:
    assert reply.status_code == status, reply.text
    body = reply.json()["error"]
    assert body["message"] and body["type"]
    return body


def test_openai_client_gets_completions_for_every_adapter(server):
    client = openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0)
    listed = {m.id: m.model_dump() for m in client.models.list().data}
    assert set(listed) == set(MODELS)
    assert [listed[a]["flora_eval"]["method"] for a in ADAPTERS] == ["flora", "lora", "ia3"]
    texts = {}
    for model in MODELS:
        reply = client.completions.create(model=model, prompt="def add(a, b):", n=3, max_tokens=12, seed=7,
                                          temperature=0.8, top_p=0.95)
        assert len(reply.choices) == 3 and [c.index for c in reply.choices] == [0, 1, 2]
        assert reply.usage.completion_tokens > 0 and reply.usage.prompt_tokens == len("def add(a, b):")
        again = client.completions.create(model=model, prompt="def add(a, b):", n=3, max_tokens=12, seed=7,
                                          temperature=0.8, top_p=0.95)
        assert [c.text for c in again.choices] == [c.text for c in reply.choices]  # seeded
        texts[model] = tuple(c.text for c in reply.choices)
    assert len(set(texts.values())) == 4  # four different models answered


def test_streaming_gives_the_same_text_as_one_reply(server):
    client = openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0)
    args = dict(model="py-r1-flora", prompt="def add(a, b):", n=2, max_tokens=16, seed=3, temperature=0.8,
                stop=["\n\n"])
    whole = client.completions.create(**args)
    parts, reasons = ["", ""], [None, None]
    for chunk in client.completions.create(**args, stream=True):
        for c in chunk.choices:
            parts[c.index] += c.text
            reasons[c.index] = c.finish_reason or reasons[c.index]
    assert parts == [c.text for c in whole.choices]
    assert reasons == [c.finish_reason for c in whole.choices]


def test_unknown_model_is_404_and_the_server_goes_on(server):
    body = error(httpx2.post(f"{server}/v1/completions", json={"model": "nope", "prompt": "x"}), 404)
    assert body["code"] == "model_not_found" and "py-ia3" in body["message"]
    ok(server)


@pytest.mark.parametrize("payload", [
    b"{not json",
    b"[1, 2]",
    json.dumps({"prompt": "x"}).encode(),  # no model
    json.dumps({"model": "tiny", "prompt": "x", "n": 0}).encode(),
    json.dumps({"model": "tiny", "prompt": "x", "temperature": 7}).encode(),
    json.dumps({"model": "tiny", "prompt": "x", "max_tokens": -3}).encode(),
    json.dumps({"model": "tiny", "prompt": "x", "top_p": 0}).encode(),
    json.dumps({"model": "tiny", "prompt": {"a": 1}}).encode(),
    json.dumps({"model": "tiny", "prompt": ""}).encode(),
    json.dumps({"model": "tiny", "prompt": [1, 99999]}).encode(),
    json.dumps({"model": "tiny", "prompt": "x", "stop": [""]}).encode(),
    json.dumps({"model": "tiny", "prompt": "x", "seed": -1}).encode(),
    json.dumps({"model": "tiny", "prompt": "x", "logprobs": 3}).encode(),
    json.dumps({"model": "tiny", "prompt": ["a", "b"]}).encode(),
], ids=["malformed", "not-an-object", "no-model", "n0", "temperature", "max-tokens", "top-p", "prompt-type",
        "empty-prompt", "token-range", "empty-stop", "seed", "logprobs", "two-prompts"])
def test_bad_request_is_400_and_the_server_goes_on(server, payload):
    error(httpx2.post(f"{server}/v1/completions", content=payload,
                      headers={"content-type": "application/json"}), 400)
    ok(server)


def test_prompt_longer_than_the_context_is_400(server):
    body = error(httpx2.post(f"{server}/v1/completions",
                             json={"model": "py-ia3", "prompt": [65] * 2048, "max_tokens": 4}), 400)
    assert body["code"] == "context_length_exceeded"
    ok(server, "py-ia3")


def telemetry(url: str) -> dict:
    return httpx2.get(f"{url}/telemetry", timeout=10).json()


def test_a_client_that_leaves_frees_its_rows_at_once(server):
    before = telemetry(server)
    body = {"model": "py-r2-lora", "prompt": "def f(x):", "max_tokens": 1000, "n": 8, "temperature": 0}
    with pytest.raises(httpx2.ReadTimeout):  # gives up long before 8 greedy rows reach 1,000 tokens
        httpx2.post(f"{server}/v1/completions", json=body, timeout=httpx2.Timeout(10, read=0.15))
    wait_idle(server)
    with httpx2.Client(timeout=10) as client:  # reads the first chunk of a stream, then hangs up
        with client.stream("POST", f"{server}/v1/completions", json={**body, "stream": True}) as reply:
            assert next(reply.iter_lines()).startswith("data: ")
    wait_idle(server)
    after = telemetry(server)
    assert after["cancelled"] - before["cancelled"] == 2
    assert after["decode_tokens"] - before["decode_tokens"] < 2 * 8 * 1000  # stopped early
    ok(server)


def wait_idle(url: str, seconds: float = 3.0) -> None:
    """Rows of a departed client are freed within a few decode steps, not at their end."""
    deadline = time.monotonic() + seconds
    while telemetry(url)["live_rows"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert telemetry(url)["live_rows"] == 0


def test_an_overloaded_server_answers_429_then_serves_again(loaded, tmp_path):
    # a server in this process (real HTTP on loopback) with one row and room for two waiting samples
    state = build_state(ServeSpec("tiny", device="cpu", options=ServeOptions(max_rows=1, max_waiting=2)))
    with ServerThread(state) as url:
        async def burst() -> list[int]:
            async with httpx2.AsyncClient(timeout=60) as client:
                replies = await asyncio.gather(*(client.post(f"{url}/v1/completions", json={
                    "model": "tiny", "prompt": "def f(x):", "max_tokens": 200, "seed": i}) for i in range(8)))
            return [r.status_code for r in replies]

        codes = asyncio.run(burst())
        assert 429 in codes and 200 in codes and set(codes) <= {200, 429}
        assert telemetry(url)["rejected"] == codes.count(429)
        ok(url)


def test_api_key_is_required_when_set(loaded):
    state = build_state(ServeSpec("tiny", device="cpu", options=ServeOptions(api_key="s3cret")))
    with ServerThread(state) as url:
        error(httpx2.post(f"{url}/v1/completions", json={"model": "tiny", "prompt": "x"}), 401)
        good = openai.OpenAI(base_url=f"{url}/v1", api_key="s3cret", max_retries=0)
        assert good.completions.create(model="tiny", prompt="x", max_tokens=2).choices
        assert httpx2.get(f"{url}/health").status_code == 200  # health needs no key


def test_concurrent_prompts_for_different_adapters_are_prefilled_together(server):
    before = telemetry(server)
    prompts = ["def f(x):", "def longer_name(a, b, c):\n    ", "#", "import os\n\ndef g():"]

    async def together() -> None:
        async with httpx2.AsyncClient(timeout=60) as client:
            await asyncio.gather(*(client.post(f"{server}/v1/completions", json={
                "model": model, "prompt": prompt, "max_tokens": 64, "seed": 1})
                for model, prompt in zip(MODELS, prompts, strict=True) for _ in range(4)))

    asyncio.run(together())
    after = telemetry(server)
    assert after["max_prompts_per_prefill"] >= 2 and after["max_adapters_per_prefill"] >= 2
    assert after["prefill_forwards"] - before["prefill_forwards"] < 16  # not one forward per request


def test_serve_with_a_missing_adapter_stops_with_one_line(capsys):
    from harness.cli import main

    assert main(["serve", "--adapter", "no-such-adapter", "--port", "1", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert "no-such-adapter" in err and len(err.splitlines()) == 1


def test_batched_prefill_equals_prefilling_each_alone(loaded):
    """Prompts of different lengths under four adapters (base, FLoRA, LoRA, IA3) in one forward:
    each row's keys/values and logits are those of its prompt alone, and so are the tokens."""
    model, tokenizer = loaded.model, loaded.tokenizer
    specs = [trained_like(model, FLoRAConfig(r=1), "f", 1),
             trained_like(model, LoRAConfig(r=2, lora_alpha=4), "l", 2),
             trained_like(model, IA3Config(), "i", 3)]
    handle = attach(model, specs)
    try:
        torch.set_grad_enabled(False)
        texts = ["def f(x):", "def longer_name(a, b, c):\n    return", "#", "import os\n\ndef g():"]
        requests = [Request((i,), tuple(tokenizer(t)["input_ids"]), adapter, ((0, 11 + i),))
                    for i, (t, adapter) in enumerate(zip(texts, (BASE_ROW, 0, 1, 2), strict=True))]
        engine = Engine(model, tokenizer, EngineConfig(0.0, 1.0, 24, 4), set_rows=handle.set_rows)
        forwards = []
        hook = model.register_forward_hook(lambda *_: forwards.append(1))
        together = engine.prefill(requests)
        hook.remove()
        assert len(forwards) == 1
        alone = [engine.prefill([r])[0] for r in requests]
        for a, b in zip(together, alone, strict=True):
            assert torch.allclose(a.logits, b.logits, atol=1e-5)
            for (ka, va), (kb, vb) in zip(a.kv, b.kv, strict=True):
                assert ka.shape == kb.shape
                assert torch.allclose(ka, kb, atol=1e-5) and torch.allclose(va, vb, atol=1e-5)
        batched = decode(engine, together)
        single = {key: tokens for p in alone for key, tokens in decode(engine, [p]).items()}
        assert batched == single and all(len(t) > 0 for t in batched.values())
    finally:
        handle.detach()
        torch.set_grad_enabled(True)


@torch.inference_mode()
def decode(engine: Engine, prompts) -> dict:
    """Greedy tokens of prefilled prompts, decoded together in one batch."""
    batch, out = DecodeBatch(engine, len(prompts)), {}
    for prompt in prompts:
        out.update({r.key: s.tokens for r, s in batch.place(prompt)})
    while batch.active():
        out.update({r.key: s.tokens for r, s in batch.step()})
    return out
