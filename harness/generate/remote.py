"""The generate stage against a served model: the same work items, provenance, resume and
completions files as in-process generation (run.py), filled by an OpenAI-compatible server.

    connect: /v1/models → the served model's revision, each adapter's method/rank/hash ──►
    probe what the server honours (n, seed) ──► one request per sample with its own seed
    (`sample_seed`, as in-process), or n per request when the server honours n but not seed
    ──► append each sample to the partial file ──► write `<problem>.json.gz`

Against `flora-eval serve` the completions equal the in-process run's: the server seeds a
sample from the request's seed exactly as the engine does. A server that ignores `seed`
still gives valid samples, not reproducible ones (the manifest says so); one that ignores
`n` is sent more requests, so every problem gets exactly n samples.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from harness.errors import UserError
from harness.generate.endpoint import Client, EndpointConfig, probe
from harness.generate.resume import Holding, append_partial
from harness.generate.run import AdapterChoice, WorkItem, _finish, check_run, work_items
from harness.generate.sampling import sample_seed
from harness.generate.stops import truncate_at_stop
from harness.problems import ProblemSet
from harness.records import BASE, SamplingConfig
from harness.runs import RunDir

__all__ = ["Endpoint", "EndpointTelemetry", "ServedAdapter", "connect", "generate_remote"]


@dataclass(frozen=True)
class ServedModel:
    """The served base model, shaped like `LoadedModel` where work items read it."""

    name: str  # the name the run records (the base model's served name, or --model)
    revision: str
    source: str


@dataclass(frozen=True)
class ServedAdapter:
    """What the server says of an adapter (flora-eval serve's `flora_eval` card), shaped
    like an AdapterFile where AdapterChoice reads it."""

    method: str
    rank: int | None
    metadata: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Endpoint:
    config: EndpointConfig
    model: ServedModel
    adapters: tuple[AdapterChoice, ...]  # the base model first

    def languages(self) -> list[str]:
        langs = [a.spec.metadata.get("language") for a in self.adapters if a.spec is not None]
        return list(dict.fromkeys(lang for lang in langs if lang))


@dataclass
class EndpointTelemetry:
    """The manifest's telemetry for an endpoint run (`prompts`: work items sampled)."""

    prompts: int = 0
    samples: int = 0
    seconds: float = 0.0
    honoured: dict = field(default_factory=dict)
    calls: dict = field(default_factory=dict)
    url: str = ""

    def as_dict(self) -> dict:
        tokens = self.calls.get("completion_tokens", 0)
        return {"endpoint": self.url, "prompts": self.prompts, "samples": self.samples,
                "seconds": round(self.seconds, 3), "honoured": self.honoured,
                "completion_tokens_per_s": round(tokens / self.seconds, 1) if self.seconds else 0.0,
                **self.calls}


def connect(config: EndpointConfig, model: str, adapters: tuple[str, ...]) -> Endpoint:
    """Read the server's model list: the base model's revision (else `endpoint:<url>`), each
    adapter's method, rank and content hash when the server says them."""
    async def listed() -> dict[str, dict]:
        client = Client(config)
        try:
            return await client.models()
        finally:
            await client.close()

    cards = asyncio.run(listed())
    base = cards.get(config.served(model), {})
    revision = _facts(base).get("revision") or f"endpoint:{config.public_url()}"
    choices = [AdapterChoice(BASE)]
    for name in dict.fromkeys(a for a in adapters if a != BASE):
        facts = _facts(cards.get(config.served(name), {}))
        spec = ServedAdapter(facts.get("method") or "", facts.get("rank"),  # "": tables show the name
                             {"language": facts.get("language")})
        choices.append(AdapterChoice(name, facts.get("hash") or "", spec))
    return Endpoint(config, ServedModel(model, revision, f"endpoint:{config.public_url()}"), tuple(choices))


def _facts(card: dict) -> dict:
    facts = card.get("flora_eval")
    return facts if isinstance(facts, dict) else {}


def generate_remote(endpoint: Endpoint, problem_sets: list[ProblemSet], sampling: SamplingConfig,
                    run: RunDir, overwrite: bool = False) -> EndpointTelemetry:
    """Sample every missing completion through the endpoint (resuming what is on disk)."""
    start = time.perf_counter()
    adapters = list(endpoint.adapters)
    items = [item for _, item in work_items(endpoint.model, problem_sets, adapters, sampling, run)]
    held = check_run([(0, item) for item in items], run, overwrite)
    todo = [item for item in items if not held[item.path].complete]
    telemetry = asyncio.run(_generate(endpoint, todo, held, sampling))
    telemetry.seconds = time.perf_counter() - start
    return telemetry


async def _generate(endpoint: Endpoint, todo: list[WorkItem], held: dict, sampling: SamplingConfig):
    config = endpoint.config
    telemetry = EndpointTelemetry(url=config.public_url(), prompts=len(todo))
    client = Client(config)
    try:
        work = [(item, held[item.path]) for item in todo]
        waiting = [(item, have) for item, have in work if len(have.samples) < sampling.n]
        for item, have in work:
            if len(have.samples) >= sampling.n:
                _finish(item, have.samples)
        if waiting:
            first = waiting[0][0]
            telemetry.honoured = await probe(client, config.served(first.provenance.model), _prompt(first))
        per_sample = telemetry.honoured.get("seed") is not False or not telemetry.honoured.get("n")
        sem = asyncio.Semaphore(config.concurrency * 2)  # items in flight: keep the server's queue fed

        async def one(item: WorkItem, have: Holding) -> None:
            async with sem:
                made = await _sample_item(client, item, have, sampling, per_sample)
            telemetry.samples += made

        await asyncio.gather(*(one(item, have) for item, have in waiting))
    finally:
        telemetry.calls = client.stats.as_dict()
        await client.close()
    return telemetry


async def _sample_item(client: Client, item: WorkItem, have: Holding, sampling: SamplingConfig,
                       per_sample: bool) -> int:
    """Fill the missing samples of one work item: each sample alone with its own seed, or,
    for a server that ignores seeds but honours n, several per request. Asks again until
    exactly n are there (a server may give fewer choices than asked)."""
    done = dict(have.samples)
    model = client.config.served(item.adapter.name if item.adapter.name != BASE else item.provenance.model)
    prompt, stop = _prompt(item), item.problem.stop_tokens

    async def ask(index: int, n: int) -> list[tuple[int, str]]:
        seed = sample_seed(sampling.seed, f"{item.lang}/{item.problem.name}", item.adapter.name, index)
        choices = await client.complete(model, prompt, n=n, max_tokens=sampling.max_tokens,
                                        temperature=sampling.temperature, top_p=sampling.top_p, stop=stop,
                                        seed=seed if per_sample else None)
        return [(index + k, truncate_at_stop(c.text, stop)) for k, c in enumerate(choices[:n])]

    made = 0
    while len(done) < sampling.n:
        missing = [i for i in range(sampling.n) if i not in done]
        if per_sample:
            batches = await asyncio.gather(*(ask(i, 1) for i in missing))
            pairs = [pair for batch in batches for pair in batch]
        else:
            got = await ask(0, len(missing))
            pairs = [(index, text) for index, (_, text) in zip(missing, got, strict=False)]
        if not pairs:
            raise UserError(f"{client.config.public_url()} answered a request for {model!r} with no "
                            "choices; check the server")
        for index, text in pairs:
            append_partial(item.path, item.provenance, item.problem.prompt, index, text)
            done[index] = text
            made += 1
    _finish(item, done)
    return made


def _prompt(item: WorkItem) -> str:
    """MultiPL-E gives the model `prompt.strip()`."""
    return item.problem.prompt.strip()
