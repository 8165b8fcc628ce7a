"""Talking to an OpenAI-compatible `/v1/completions` server: its address, the served names,
what it honours, and one call with retries.

    EndpointConfig   the URL, served names (`--served-name ADAPTER=NAME`), concurrency,
                     the environment variable holding the API key (never written anywhere)
    Client           the `openai` package's AsyncOpenAI, with our own retry loop (backoff on
                     429, 5xx, timeouts and dropped connections; counted for the manifest)
    probe            does the server honour `n` and `seed`? (four short requests)
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

from harness.errors import UserError

API_KEY_ENV = "OPENAI_API_KEY"
PROBE_SEED = 1234
PROBE_TOKENS = 8
BACKOFF_S = 0.5  # first retry's wait; doubles, capped at BACKOFF_CAP_S, plus jitter
BACKOFF_CAP_S = 20.0


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


@dataclass
class CallStats:
    """Requests, retries, token usage and latency: the manifest's `endpoint` telemetry."""

    requests: int = 0
    retries: int = 0
    retried: dict = field(default_factory=dict)  # reason → count
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latencies: list[float] = field(default_factory=list)

    def as_dict(self) -> dict:
        lat = sorted(self.latencies)

        def quantile(q: float) -> float:
            return round(lat[min(len(lat) - 1, int(q * len(lat)))], 4) if lat else 0.0

        return {"requests": self.requests, "retries": self.retries, "retried": dict(self.retried),
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "latency_s": {"mean": round(statistics.fmean(lat), 4) if lat else 0.0, "p50": quantile(0.5),
                              "p95": quantile(0.95), "max": round(lat[-1], 4) if lat else 0.0}}


class Client:
    """One AsyncOpenAI client, `concurrency` calls at a time, retried on transient faults."""

    def __init__(self, config: EndpointConfig):
        from openai import AsyncOpenAI

        self.config = config
        self.stats = CallStats()
        self.gate = asyncio.Semaphore(config.concurrency)
        key = os.environ.get(config.api_key_env) or "none"  # servers without keys ignore it
        self.openai = AsyncOpenAI(base_url=config.base_url(), api_key=key, max_retries=0,
                                  timeout=config.timeout_s)

    async def close(self) -> None:
        await self.openai.close()

    async def models(self) -> dict[str, dict]:
        """The server's /v1/models, by id ({} when it has no such route)."""
        import openai

        try:
            page = await self._retrying(self.openai.models.list)
        except openai.AuthenticationError:
            raise self._auth_error() from None
        except openai.APIStatusError:
            return {}
        return {m.id: m.model_dump() for m in page.data}

    async def complete(self, model: str, prompt: str, *, n: int, max_tokens: int, temperature: float,
                       top_p: float, stop: tuple[str, ...], seed: int | None) -> list[Choice]:
        """One completions request (transient faults retried); the choices in index order."""
        import openai

        extra = {"seed": seed} if seed is not None else {}
        try:
            reply = await self._retrying(lambda: self.openai.completions.create(
                model=model, prompt=prompt, n=n, max_tokens=max_tokens, temperature=temperature, top_p=top_p,
                stop=list(stop) or None, **extra))
        except openai.NotFoundError:
            raise UserError(f"{self.config.public_url()} serves no model {model!r} (GET /v1/models "
                            "lists them); name it with --served-name ADAPTER=NAME") from None
        except openai.AuthenticationError:
            raise self._auth_error() from None
        except openai.APIStatusError as exc:
            raise UserError(f"{self.config.public_url()} refused a request for {model!r} "
                            f"(HTTP {exc.status_code}: {_message(exc)})") from None
        if reply.usage is not None:
            self.stats.prompt_tokens += reply.usage.prompt_tokens or 0
            self.stats.completion_tokens += reply.usage.completion_tokens or 0
        return [Choice(c.text or "", c.finish_reason) for c in sorted(reply.choices, key=lambda c: c.index)]

    async def _retrying(self, call):
        """`call()` with at most `concurrency` in flight; 429, 5xx, timeouts and dropped
        connections are retried with backoff (the server's Retry-After when it gives one)."""
        import openai

        transient = (openai.RateLimitError, openai.InternalServerError, openai.APITimeoutError,
                     openai.APIConnectionError)
        for attempt in range(self.config.retries + 1):
            async with self.gate:
                start = time.perf_counter()
                try:
                    result = await call()
                except transient as exc:
                    reason = _reason(exc)
                    if attempt == self.config.retries:
                        raise UserError(f"{self.config.public_url()} failed {attempt + 1} times ({reason}); "
                                        "check the server, then run the same command again to resume"
                                        ) from None
                    wait = _retry_after(exc) or min(BACKOFF_CAP_S, BACKOFF_S * 2**attempt)
                    self.stats.retries += 1
                    self.stats.retried[reason] = self.stats.retried.get(reason, 0) + 1
                else:
                    self.stats.requests += 1
                    self.stats.latencies.append(time.perf_counter() - start)
                    return result
            await asyncio.sleep(wait * (1 + 0.25 * random.random()))
        raise AssertionError("unreachable")

    def _auth_error(self) -> UserError:
        return UserError(f"{self.config.public_url()} refused the API key; put the key in "
                         f"${self.config.api_key_env} (or name another variable with --api-key-env)")


def _reason(exc: Exception) -> str:
    status = getattr(exc, "status_code", None)
    return f"HTTP {status}" if status else type(exc).__name__


def _message(exc: Exception) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        error = body.get("error", body)
        return str(error.get("message", error) if isinstance(error, dict) else error)[:200]
    return str(exc)[:200]


def _retry_after(exc: Exception) -> float | None:
    response = getattr(exc, "response", None)
    value = response.headers.get("retry-after") if response is not None else None
    try:
        return min(BACKOFF_CAP_S, float(value)) if value else None
    except ValueError:
        return None


async def probe(client: Client, model: str, prompt: str) -> dict:
    """What the server honours: `n` (two choices asked, two given) and `seed` (the same seed
    twice gives the same text, another seed another text; None when it cannot tell)."""
    def ask(n: int, seed: int):
        return client.complete(model, prompt, n=n, max_tokens=PROBE_TOKENS, temperature=1.0, top_p=1.0,
                               stop=(), seed=seed)

    two = await ask(2, PROBE_SEED)
    first, again, other = [(await ask(1, seed))[0].text for seed in (PROBE_SEED, PROBE_SEED, PROBE_SEED + 1)]
    seed = None if first == again == other else (first == again and first != other)
    return {"n": len(two) == 2, "seed": seed}
