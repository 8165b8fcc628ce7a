"""Talking to an OpenAI-compatible `/v1/completions` (or, for chat prompts,
`/v1/chat/completions`) server: its address, the served names, what it honours, and one call
with retries.

    EndpointConfig   the URL, served names (`--served-name ADAPTER=NAME`), concurrency,
                     the environment variable holding the API key (never written anywhere)
    Client           the `openai` package's AsyncOpenAI and its own retries (408, 409, 429,
                     5xx, timeouts and dropped connections, with backoff and the server's
                     Retry-After in seconds or as a date); every attempt counted for the manifest
    probe            does the server honour `n` and `seed`? (four short requests, on the
                     route the run will use)
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from dataclasses import dataclass, field
from functools import partial
from urllib.parse import urlsplit, urlunsplit

from harness.errors import UserError

API_KEY_ENV = "OPENAI_API_KEY"
PROBE_SEED = 1234
PROBE_TOKENS = 8


@dataclass(frozen=True)
class EndpointConfig:
    url: str
    served_names: tuple[tuple[str, str], ...] = ()  # (adapter or model name, served name)
    concurrency: int = 8
    api_key_env: str = API_KEY_ENV
    timeout_s: float = 600.0
    retries: int = 6

    @classmethod
    def from_cli(cls, url: str, served: list[str] | None, concurrency: int, api_key_env: str,
                 timeout_s: float, retries: int) -> EndpointConfig:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise UserError(f"--endpoint {url!r} is not an http(s) URL; pass e.g. http://127.0.0.1:8000/v1")
        pairs = []
        for text in served or ():
            name, sep, served_name = text.partition("=")
            if not sep or not name or not served_name:
                raise UserError(f"--served-name {text!r}: use ADAPTER=NAME (the name the server knows it by)")
            pairs.append((name, served_name))
        if concurrency < 1 or retries < 0 or timeout_s <= 0:
            raise UserError("--concurrency must be ≥ 1, --retries ≥ 0 and --request-timeout > 0")
        return cls(url, tuple(pairs), concurrency, api_key_env, timeout_s, retries)

    def served(self, name: str) -> str:
        return dict(self.served_names).get(name, name)

    def base_url(self) -> str:
        """The URL the client is given: its path ends in /v1."""
        parts = urlsplit(self.url)
        path = parts.path.rstrip("/")
        path = path if path.endswith("/v1") else path + "/v1"
        return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))

    def public_url(self) -> str:
        """The URL as recorded: no user, password, query or fragment."""
        parts = urlsplit(self.base_url())
        host = parts.hostname or ""
        netloc = f"[{host}]" if ":" in host else host
        if parts.port:
            netloc += f":{parts.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))

    def entry(self) -> dict:
        """What the manifest's config records (the key's variable name, never the key)."""
        return {"url": self.public_url(), "served_names": dict(self.served_names),
                "concurrency": self.concurrency, "api_key_env": self.api_key_env,
                "timeout_s": self.timeout_s, "retries": self.retries}


@dataclass(frozen=True)
class Choice:
    text: str
    finish_reason: str | None


@dataclass(frozen=True)
class Reply:
    """One completions response: its choices in index order and what it says of the server."""

    choices: tuple[Choice, ...]
    model: str = ""
    system_fingerprint: str = ""
    prompt_tokens: int = 0
    completion_tokens: int | None = None  # None: the reply gave no usage


@dataclass
class CallStats:
    """Requests, retries, token usage and latency: the manifest's `endpoint` telemetry."""

    requests: int = 0  # calls answered
    calls: int = 0  # calls made (each may take several attempts)
    attempts: int = 0  # HTTP attempts, retries included
    retried: dict = field(default_factory=dict)  # reason → failed attempts
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latencies: list[float] = field(default_factory=list)

    @property
    def retries(self) -> int:
        return max(0, self.attempts - self.calls)

    def failed(self, reason: str) -> None:
        self.retried[reason] = self.retried.get(reason, 0) + 1

    def as_dict(self) -> dict:
        lat = sorted(self.latencies)

        def quantile(q: float) -> float:
            return round(lat[min(len(lat) - 1, int(q * len(lat)))], 4) if lat else 0.0

        return {"requests": self.requests, "retries": self.retries, "retried": dict(self.retried),
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "latency_s": {"mean": round(statistics.fmean(lat), 4) if lat else 0.0, "p50": quantile(0.5),
                              "p95": quantile(0.95), "max": round(lat[-1], 4) if lat else 0.0}}


class Client:
    """One AsyncOpenAI client, `concurrency` calls at a time; transient faults are retried by
    the `openai` client itself (`config.retries` times), every attempt counted in `stats`."""

    def __init__(self, config: EndpointConfig, stats: CallStats | None = None):
        try:
            from openai import AsyncOpenAI, DefaultAsyncHttpxClient
        except ImportError:
            raise UserError("--endpoint needs the `openai` client: pip install 'flora-eval[serve]'") from None

        self.config = config
        self.stats = stats if stats is not None else CallStats()
        self.gate = asyncio.Semaphore(config.concurrency)
        key = os.environ.get(config.api_key_env) or "none"  # servers without keys ignore it
        http = DefaultAsyncHttpxClient(transport=_counting_transport(self.stats))
        self.openai = AsyncOpenAI(base_url=config.base_url(), api_key=key, max_retries=config.retries,
                                  timeout=config.timeout_s, http_client=http)

    async def close(self) -> None:
        await self.openai.close()

    async def models(self) -> dict[str, dict]:
        """The server's /v1/models, by id ({} when it has no such route)."""
        import openai

        try:
            page = await self._call(self.openai.models.list)
        except openai.AuthenticationError:
            raise self._auth_error() from None
        except openai.APIStatusError as exc:
            if _transient(exc):
                raise self._gave_up(exc) from None
            return {}
        return {m.id: m.model_dump() for m in page.data}

    async def complete(self, model: str, prompt: str | list[dict], *, n: int, max_tokens: int,
                       temperature: float, top_p: float, stop: tuple[str, ...], seed: int | None) -> Reply:
        """One completions request (transient faults retried): the choices in index order,
        the response's model and system fingerprint, and its token usage. A prompt given as
        chat messages goes to /v1/chat/completions; each choice's text is its message's."""
        import openai

        extra = {"seed": seed} if seed is not None else {}
        settings = dict(model=model, n=n, max_tokens=max_tokens, temperature=temperature, top_p=top_p,
                        stop=list(stop) or None, **extra)
        chat = isinstance(prompt, list)
        create = (partial(self.openai.chat.completions.create, messages=prompt, **settings) if chat
                  else partial(self.openai.completions.create, prompt=prompt, **settings))
        try:
            reply = await self._call(create)
        except openai.NotFoundError:
            raise UserError(f"{self.config.public_url()} serves no model {model!r} (GET /v1/models "
                            "lists them); name it with --served-name ADAPTER=NAME") from None
        except openai.AuthenticationError:
            raise self._auth_error() from None
        except openai.APIStatusError as exc:
            if _transient(exc):
                raise self._gave_up(exc) from None
            raise UserError(f"{self.config.public_url()} refused a request for {model!r} "
                            f"(HTTP {exc.status_code}: {_message(exc)})") from None
        usage = reply.usage
        prompt_tokens = (usage.prompt_tokens or 0) if usage is not None else 0
        completion_tokens = usage.completion_tokens if usage is not None else None
        self.stats.prompt_tokens += prompt_tokens
        self.stats.completion_tokens += completion_tokens or 0
        ordered = sorted(reply.choices, key=lambda c: c.index)
        texts = [(c.message.content if chat else c.text) or "" for c in ordered]
        return Reply(tuple(Choice(t, c.finish_reason) for t, c in zip(texts, ordered, strict=True)),
                     reply.model or "",
                     reply.system_fingerprint or "", prompt_tokens, completion_tokens)

    async def _call(self, call):
        """`call()` with at most `concurrency` in flight; a transient fault that outlasts the
        client's retries ends the run with one line."""
        import openai

        async with self.gate:
            self.stats.calls += 1
            start = time.perf_counter()
            try:
                result = await call()
            except (openai.APITimeoutError, openai.APIConnectionError) as exc:
                raise self._gave_up(exc) from None
            self.stats.requests += 1
            self.stats.latencies.append(time.perf_counter() - start)
            return result

    def _gave_up(self, exc: Exception) -> UserError:
        tries = self.config.retries + 1
        return UserError(f"{self.config.public_url()} failed {tries} times ({_reason(exc)}); check the server"
                         ", then run the same command again to resume")

    def _auth_error(self) -> UserError:
        return UserError(f"{self.config.public_url()} refused the API key; put the key in "
                         f"${self.config.api_key_env} (or name another variable with --api-key-env)")


def _counting_transport(stats: CallStats):
    """The HTTP transport, counting each attempt and why one failed (a status the `openai`
    client retries, or a transport error) into `stats`."""
    import httpx2

    class Counting(httpx2.AsyncHTTPTransport):
        async def handle_async_request(self, request):
            stats.attempts += 1
            try:
                response = await super().handle_async_request(request)
            except Exception as exc:
                stats.failed(type(exc).__name__)
                raise
            if response.status_code in RETRIED_STATUS or response.status_code >= 500:
                stats.failed(f"HTTP {response.status_code}")
            return response

    return Counting()


RETRIED_STATUS = (408, 409, 429)  # and 5xx: what the `openai` client retries


def _transient(exc: Exception) -> bool:
    status = getattr(exc, "status_code", None) or 0
    return status in RETRIED_STATUS or status >= 500


def _reason(exc: Exception) -> str:
    status = getattr(exc, "status_code", None)
    return f"HTTP {status}" if status else type(exc).__name__


def _message(exc: Exception) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        error = body.get("error", body)
        return str(error.get("message", error) if isinstance(error, dict) else error)[:200]
    return str(exc)[:200]


async def probe(client: Client, model: str, prompt: str | list[dict]) -> tuple[dict, Reply]:
    """What the server honours: `n` (two choices asked, two given) and `seed` (the same seed
    twice gives the same text, another seed another text; None when it cannot tell); and the
    first reply (what the server says of itself: its model and system fingerprint). A prompt
    given as chat messages probes the chat route."""
    def ask(n: int, seed: int):
        return client.complete(model, prompt, n=n, max_tokens=PROBE_TOKENS, temperature=1.0, top_p=1.0,
                               stop=(), seed=seed)

    two = await ask(2, PROBE_SEED)
    first, again, other = [(await ask(1, seed)).choices[0].text
                           for seed in (PROBE_SEED, PROBE_SEED, PROBE_SEED + 1)]
    seed = None if first == again == other else (first == again and first != other)
    return {"n": len(two.choices) == 2, "seed": seed}, two
