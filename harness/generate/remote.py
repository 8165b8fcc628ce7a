"""The generate stage against a served model: the same work items, provenance, resume and
completions files as in-process generation (run.py), filled by an OpenAI-compatible server.

    connect: /v1/models → the served model's identity, each adapter's method/rank/hash;
             probe what the server honours (n, seed) and what its replies say of it ──►
    one request per sample with its own seed (`sample_seed`, as in-process), or n per request
    when the server honours n but not seed ──► append each sample and its finish reason to
    the partial file ──► write `<problem>.json.gz`

A served model's identity is what the server says about itself: the /v1/models card (id,
created, owned_by, root, parent, max_model_len where given) and its replies' model and
system_fingerprint; the URL is no part of it. flora-eval serve states the weights' revision
and each adapter's content hash: the revision is its revision plus the fingerprint (which
hashes the revision, adapters, dtype and device), the adapter hash its content hash. For any
other server the revision and adapter hash are `served:<sha256>` of that identity. So resume
refuses when the identity changes, not when the port does.

Against `flora-eval serve` the completions equal the in-process run's: the server seeds a
sample from the request's seed exactly as the engine does. A server that ignores `seed`
still gives valid samples, not reproducible ones: the provenance records `seeded` per file,
and a file is never resumed under the other answer. One that ignores `n` is sent more
requests, so every problem gets exactly n samples. A sample the server cut at fewer tokens
than asked (its own limit, not the run's) stops the run with one line: it is never scored.

With `--prompt-style instruct` every request (the probe's too) goes to /v1/chat/completions
with the row's conversation (`harness.prompts.conversation`) and no stop sequences: the
server's chat template renders it and a reply ends at its end of turn. The template's hash
in the provenance is the one the server states (flora-eval serve's card: `chat_template`),
else "served" (the server's template cannot be seen; the served identity stands for it).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from dataclasses import dataclass, field

from harness.errors import UserError
from harness.generate.endpoint import CallStats, Client, EndpointConfig, Reply, probe
from harness.generate.resume import Holding, Plan, append_partial
from harness.generate.run import AdapterChoice, WorkItem, _finish, drawn, plan_generation, work_items
from harness.generate.sampling import sample_seed
from harness.generate.stops import truncate_at_stop
from harness.problems import ProblemSet
from harness.prompts import COMPLETION, COMPLETION_STYLE, INSTRUCT, Style, conversation
from harness.records import BASE, SamplingConfig
from harness.runs import RunDir

__all__ = ["Endpoint", "EndpointTelemetry", "ServedAdapter", "connect", "generate_remote"]

CARD_FIELDS = ("id", "created", "owned_by", "root", "parent", "max_model_len")
PROBE_PROMPT = "def add(a, b):\n"
PROBE_MESSAGES = [{"role": "user", "content": "Complete this function:\n```python\ndef add(a, b):\n```"}]
SERVED_TEMPLATE = "served"  # a server that does not state its chat template's hash
CLOCK_S = 5.0  # a `created` this close to now may be the listing's own time: read it again


@dataclass(frozen=True)
class ServedModel:
    """The served base model, shaped like `LoadedModel` where work items read it. How the
    server holds the weights (dtype, quantization, device) is recorded when its card says it
    (`flora_eval` facts), else as "" (unknown: never equal to a value an in-process run records)."""

    name: str  # the name the run records (the base model's served name, or --model)
    revision: str
    source: str
    identity: dict = field(default_factory=dict, compare=False)  # what the server says of itself
    seeded: bool | None = None  # the server honours `seed` (None: cannot tell)
    dtype: str = ""
    quantization: str = ""
    device_type: str = ""


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
    honoured: dict = field(default_factory=dict)  # {"n": bool, "seed": bool | None}
    stats: CallStats = field(default_factory=CallStats, compare=False)  # every call, connect's too
    style: Style = COMPLETION_STYLE  # the prompt style, with the served chat template's hash

    def languages(self) -> list[str]:
        langs = [a.spec.metadata.get("language") for a in self.adapters if a.spec is not None]
        return list(dict.fromkeys(lang for lang in langs if lang))

    @property
    def context(self) -> int | None:
        """The model's context length, when its card says it (`max_model_len`)."""
        value = self.model.identity.get("max_model_len")
        return value if isinstance(value, int) and value > 0 else None


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


def connect(config: EndpointConfig, model: str, adapters: tuple[str, ...],
            style: str = COMPLETION) -> Endpoint:
    """Ask the server who it is: its model list (each card's identity; flora-eval serve adds
    the revision, each adapter's method, rank and content hash, the chat template's hash),
    then a probe of what it honours (on the chat route for `instruct`), whose reply gives its
    model and system fingerprint."""
    stats = CallStats()
    probe_prompt = PROBE_MESSAGES if style == INSTRUCT else PROBE_PROMPT

    async def introduce() -> tuple[dict[str, dict], dict, Reply]:
        client = Client(config, stats)
        try:
            cards = await client.models()
            if _maybe_clock(cards):
                await asyncio.sleep(1.1)
                cards = _without_clocks(cards, await client.models())
            honoured, reply = await probe(client, config.served(model), probe_prompt)
            return cards, honoured, reply
        finally:
            await client.close()

    cards, honoured, reply = asyncio.run(introduce())
    speaks = {"system_fingerprint": reply.system_fingerprint, "model": reply.model}
    base_card = cards.get(config.served(model), {})
    identity = {**card_identity(base_card), **speaks}
    revision = served_revision(_facts(base_card).get("revision") or "", identity)
    choices = [AdapterChoice(BASE)]
    for name in dict.fromkeys(a for a in adapters if a != BASE):
        card = cards.get(config.served(name), {})
        facts = _facts(card)
        spec = ServedAdapter(facts.get("method") or "", facts.get("rank"),  # "": tables show the name
                             {"language": facts.get("language")})
        adapter_identity = {**card_identity(card), "system_fingerprint": reply.system_fingerprint}
        choices.append(AdapterChoice(name, facts.get("hash") or served_digest(adapter_identity), spec))
    facts = _facts(base_card)
    served = ServedModel(model, revision, f"endpoint:{config.public_url()}", identity, honoured.get("seed"),
                         *(str(facts.get(key) or "") for key in ("dtype", "quantization", "device")))
    chosen = COMPLETION_STYLE
    if style == INSTRUCT:
        chosen = Style(INSTRUCT, facts.get("chat_template") or SERVED_TEMPLATE)
    return Endpoint(config, served, tuple(choices), honoured, stats, chosen)


def served_revision(stated: str, identity: dict) -> str:
    """The revision a served run records: the weights' revision the server states, with its
    fingerprint (`rev+fp`), else a hash of all it says of itself."""
    if not stated:
        return served_digest(identity)
    fingerprint = identity.get("system_fingerprint")
    return f"{stated}+{fingerprint}" if fingerprint else stated


def card_identity(card: dict) -> dict:
    """The fields of a /v1/models card that say which model it is (those it gives)."""
    return {key: card[key] for key in CARD_FIELDS if card.get(key) is not None}


def served_digest(identity: dict) -> str:
    text = json.dumps(identity, sort_keys=True, default=str)
    return "served:sha256:" + hashlib.sha256(text.encode()).hexdigest()[:16]


def _maybe_clock(cards: dict[str, dict]) -> bool:
    now = time.time()
    return any(isinstance(c.get("created"), int | float) and abs(c["created"] - now) <= CLOCK_S
               for c in cards.values())


def _without_clocks(first: dict[str, dict], second: dict[str, dict]) -> dict[str, dict]:
    """Cards whose `created` moved between two listings stamp each listing with the time
    (vLLM does): that `created` says nothing of the model and is left out."""
    return {name: {k: v for k, v in card.items()
                   if k != "created" or second.get(name, {}).get("created") == v}
            for name, card in first.items()}


def _facts(card: dict) -> dict:
    facts = card.get("flora_eval")
    return facts if isinstance(facts, dict) else {}


def generate_remote(endpoint: Endpoint, problem_sets: list[ProblemSet], sampling: SamplingConfig,
                    run: RunDir, overwrite: bool = False, plan: Plan | None = None) -> EndpointTelemetry:
    """Sample every missing completion through the endpoint (resuming what is on disk, as
    `plan` says; made here when not given)."""
    start = time.perf_counter()
    items = [item for _, item in work_items(endpoint.model, problem_sets, list(endpoint.adapters), sampling,
                                            run, endpoint.style)]
    plan = plan or plan_generation([(0, item) for item in items], run, overwrite)
    plan.redo()
    todo = [item for item in items if not plan.held[item.path].complete]
    telemetry = asyncio.run(_generate(endpoint, todo, plan.held, sampling))
    telemetry.seconds = time.perf_counter() - start
    return telemetry


async def _generate(endpoint: Endpoint, todo: list[WorkItem], held, sampling: SamplingConfig):
    config = endpoint.config
    telemetry = EndpointTelemetry(url=config.public_url(), prompts=len(todo), honoured=endpoint.honoured)
    client = Client(config, endpoint.stats)
    witness = Witness(endpoint)
    try:
        work = [(item, held[item.path]) for item in todo]
        waiting = [(item, have) for item, have in work if len(have.samples) < sampling.n]
        for item, have in work:
            if len(have.samples) >= sampling.n:
                _finish(item, drawn(have))
        per_sample = endpoint.honoured.get("seed") is not False or not endpoint.honoured.get("n")
        sem = asyncio.Semaphore(config.concurrency * 2)  # items in flight: keep the server's queue fed

        async def one(item: WorkItem, have: Holding) -> None:
            async with sem:
                made = await _sample_item(client, witness, item, have, sampling, per_sample)
            telemetry.samples += made

        await asyncio.gather(*(one(item, have) for item, have in waiting))
    finally:
        telemetry.calls = client.stats.as_dict()
        await client.close()
    return telemetry


@dataclass
class Witness:
    """Checks every reply against the identity the run records: the system fingerprint of the
    connect-time probe, and one `model` per served name. A change means the samples of one
    file would come from two models: the run stops (and its next start refuses or redoes)."""

    endpoint: Endpoint
    models: dict[str, str] = field(default_factory=dict)

    def check(self, served: str, reply: Reply) -> None:
        expected = self.endpoint.model.identity.get("system_fingerprint", "")
        said = self.models.setdefault(served, reply.model)
        if reply.system_fingerprint == expected and reply.model == said:
            return
        what = (f"system_fingerprint {expected!r} → {reply.system_fingerprint!r}"
                if reply.system_fingerprint != expected else f"model {said!r} → {reply.model!r}")
        raise UserError(f"{self.endpoint.config.public_url()} changed during the run ({what}); its samples "
                        "would mix two models: run again (files made before the change are refused; "
                        "--overwrite regenerates them)")


def cut_short(reply: Reply, asked: int, context: int | None) -> int | None:
    """The tokens at which the server cut this reply's samples below the `asked` max tokens
    (a limit of its own, not the run's), or None. Needs the reply's usage: with one choice its
    completion tokens; with several, fewer tokens than every "length" choice at `asked` means
    at least one was cut. A cut at the model's context length (the card's max_model_len) is
    the model's, as in-process."""
    cut = [c for c in reply.choices if c.finish_reason == "length"]
    if not cut or reply.completion_tokens is None:
        return None
    if len(reply.choices) == 1:
        tokens = reply.completion_tokens
        at_context = context is not None and reply.prompt_tokens + tokens >= context
        return tokens if tokens < asked and not at_context else None
    return reply.completion_tokens if reply.completion_tokens < len(cut) * asked else None


async def _sample_item(client: Client, witness: Witness, item: WorkItem, have: Holding,
                       sampling: SamplingConfig, per_sample: bool) -> int:
    """Fill the missing samples of one work item: each sample alone with its own seed, or,
    for a server that ignores seeds but honours n, several per request. Asks again until
    exactly n are there (a server may give fewer choices than asked)."""
    done = drawn(have)
    model = client.config.served(item.adapter.name if item.adapter.name != BASE else item.provenance.model)
    prompt, stop = _prompt(item), item.problem.stop_tokens
    if item.provenance.prompt_style == INSTRUCT:  # replies end at the template's end of turn
        prompt, stop = conversation(item.problem, item.lang), ()

    async def ask(index: int, n: int) -> list[tuple[int, str, str]]:
        seed = sample_seed(sampling.seed, f"{item.lang}/{item.problem.name}", item.adapter.name, index)
        reply = await client.complete(model, prompt, n=n, max_tokens=sampling.max_tokens,
                                      temperature=sampling.temperature, top_p=sampling.top_p, stop=stop,
                                      seed=seed if per_sample else None)
        witness.check(model, reply)
        tokens = cut_short(reply, sampling.max_tokens, witness.endpoint.context)
        if tokens is not None:
            raise UserError(f"{client.config.public_url()} cut samples of {item.problem.name} ({model}) "
                            f"at {tokens} tokens, fewer than the --max-tokens {sampling.max_tokens} asked (a "
                            "limit of the server's); lower --max-tokens to its limit or raise the limit "
                            "on the server, then run again")
        return [(index + k, truncate_at_stop(c.text, stop), c.finish_reason or "")
                for k, c in enumerate(reply.choices[:n])]

    made = 0
    while len(done) < sampling.n:
        missing = [i for i in range(sampling.n) if i not in done]
        if per_sample:
            batches = await asyncio.gather(*(ask(i, 1) for i in missing))
            triples = [triple for batch in batches for triple in batch]
        else:
            got = await ask(0, len(missing))
            triples = [(index, text, reason) for index, (_, text, reason) in zip(missing, got, strict=False)]
        if not triples:
            raise UserError(f"{client.config.public_url()} answered a request for {model!r} with no "
                            "choices; check the server")
        for index, text, reason in triples:
            append_partial(item.path, item.provenance, item.problem.prompt, index, text, reason)
            done[index] = (text, reason)
            made += 1
    _finish(item, done)
    return made


def _prompt(item: WorkItem) -> str | list[dict]:
    """MultiPL-E gives the model `prompt.strip()`."""
    return item.problem.prompt.strip()
