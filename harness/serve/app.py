"""The HTTP face of `flora-eval serve`: OpenAI's completions and chat completions APIs over
the scheduler.

    POST /v1/completions   prompt (text or token ids), model (the base or an adapter's served
                           name), n, seed, stop, max_tokens, temperature, top_p, stream
    POST /v1/chat/completions
                           messages, rendered with the served model's chat template and its
                           generation prompt (harness.prompts.render, as in-process instruct
                           runs); a reply ends at the template's end of turn or the end of
                           text (or `stop`, `max_tokens`); the same other fields, every adapter
    GET  /v1/models        the base model and each adapter (`flora_eval`: revision, method,
                           rank, content hash, language)
    GET  /health           {"status": "ok"}; 503 with "dead", "stalled" or "restarting"
    GET  /telemetry        how requests were batched (the scheduler's counters)

Bad input is answered, never fatal: an unknown model → 404, malformed JSON, bad parameters,
`max_tokens` above the server's cap or a prompt that fills the context → 400, a body over
MAX_BODY_BYTES → 413, a full queue → 429, an engine that is dead, stalled or restarting →
503, no answer by the request's deadline → 504, all with OpenAI's error body {"error":
{"message", "type", "param", "code"}}. An unexpected exception is logged with a request id
and answered 500 with that id only: exception text never reaches a client. With an API key
set, everything but /health needs it (compared in constant time). A client that disconnects
cancels its job.
A model without a chat template answers the chat route 400 (`chat_template_missing`).
Choice i of a request with `seed` s samples with seed s + i (a sample of a run is sent alone
with its own seed: `harness.generate.remote`); without a seed each choice draws a fresh one.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import json
import logging
import secrets
import time
import uuid
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from harness.errors import UserError
from harness.prompts import end_of_turn_ids, render, template_of
from harness.serve.engine_process import EngineUnavailable
from harness.serve.scheduler import Event, Job, Overloaded

MAX_N = 256  # choices per request
MAX_STOPS = 16
SEED_SPACE = 2**63
MAX_BODY_BYTES = 1 << 20  # a full context of token ids is far less (2,048 ids ≈ 12 kB)
RETRY_AFTER_S = 5  # what a 503 suggests
log = logging.getLogger("flora_eval.serve")


@dataclass(frozen=True)
class ServedModel:
    """One name the server answers to: the base model (`adapter_index` -1) or an adapter."""

    name: str
    adapter_index: int
    card: dict[str, Any]


@dataclass
class ServerState:
    engine: Any  # the engine's handle (Supervisor): submit, cancel, snapshot, health
    tokenizer: Any
    models: dict[str, ServedModel]
    context: int  # the model's context length: a prompt must leave room for one token
    max_tokens: int  # the most new tokens a request may ask for (more → 400)
    api_key: str | None = None
    fingerprint: str = ""  # the responses' system_fingerprint: model revision, adapters, dtype
    request_timeout: float = 600.0  # seconds a request waits for the engine's answer
    created: int = field(default_factory=lambda: int(time.time()))


class SamplingFields(BaseModel):
    """What the completions and chat completions requests share: the model and how to sample."""

    model_config = ConfigDict(extra="allow")

    model: str
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n: int = Field(1, ge=1, le=MAX_N)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: dict | None = None


class CompletionRequest(SamplingFields):
    """The fields of OpenAI's legacy completions request that the server honours; others
    are accepted and ignored unless they ask for something it cannot do (`unsupported`)."""

    prompt: str | list[int] | list[str]
    max_tokens: int = Field(16, ge=1)
    echo: bool = False
    logprobs: int | None = None
    best_of: int | None = None
    suffix: str | None = None


class Message(BaseModel):
    """One chat message: its role and its text (a string, or OpenAI's list of text parts)."""

    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[dict] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            if any(part.get("type") != "text" or not isinstance(part.get("text"), str)
                   for part in self.content):
                raise ApiError(400, "messages: only text content parts are supported by this server",
                               param="messages")
            return "".join(part["text"] for part in self.content)
        return self.content or ""


class ChatRequest(SamplingFields):
    """The fields of OpenAI's chat completions request that the server honours; a request
    for tools, logprobs or a structured response format is refused (400)."""

    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = None
    tools: list | None = None
    response_format: dict | None = None

    def limit(self, default: int) -> int:
        return self.max_completion_tokens or self.max_tokens or default


CHAT_ROLES = ("system", "developer", "user", "assistant")


class ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.code = status, message, kind, param, code
        self.headers = headers

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def unavailable(message: str) -> ApiError:
    """503: the engine is dead, stalled or restarting; the message says which."""
    return ApiError(503, message, "server_error", code="engine_unavailable",
                    headers={"retry-after": str(RETRY_AFTER_S)})


def event_error(event: Event) -> ApiError:
    """The error a job's handler heard from the engine side, as the answer to its client."""
    if event.status == 503:
        return unavailable(event.text)
    if event.status == 429:
        return ApiError(429, event.text, "rate_limit_error", code="overloaded")
    return ApiError(event.status, event.text, "server_error")


def deadline_error(seconds: float) -> ApiError:
    return ApiError(504, f"no answer from the engine within {seconds:g} s (the server's --request-timeout); "
                         "the request was cancelled", "server_error", code="timeout")


def create_app(state: ServerState) -> FastAPI:
    app = FastAPI(title="flora-eval serve", docs_url=None, redoc_url=None, openapi_url=None)
    tokenize_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="flora-eval-tokenize")

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return exc.response()

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):
        request_id = f"req-{uuid.uuid4().hex[:12]}"
        log.error("%s %s failed (request id %s)", request.method, request.url.path, request_id, exc_info=exc)
        return ApiError(500, f"internal error (request id {request_id}); the server's log has the details",
                        "server_error").response()

    @app.get("/health")
    async def health():
        now = state.engine.health()
        if now.ok:
            return {"status": "ok"}
        return JSONResponse({"status": now.status, "message": now.message}, status_code=503,
                            headers={"retry-after": str(RETRY_AFTER_S)})

    @app.get("/telemetry")
    async def telemetry(request: Request):
        authorize(state, request)
        try:
            return await asyncio.to_thread(state.engine.snapshot)
        except EngineUnavailable as exc:
            raise unavailable(str(exc)) from None

    @app.get("/v1/models")
    async def models(request: Request):
        authorize(state, request)
        return {"object": "list", "data": [
            {"id": m.name, "object": "model", "created": state.created, "owned_by": "flora-eval", **m.card}
            for m in state.models.values()]}

    @app.post("/v1/completions")
    async def completions(request: Request):
        authorize(state, request)
        body = parse_body(await read_body(request))
        served = served_model(state, body.model)
        check_max_tokens(state, body.max_tokens)
        ids = await prompt_ids(state, body.prompt, tokenize_pool)
        job, events = make_job(state, body, served, ids, asyncio.get_running_loop())
        return await answer(state, job, events, Reply(body.model, len(ids), body.n, state.fingerprint),
                            body, request)

    end_ids = end_of_turn_ids(state.tokenizer) if template_of(state.tokenizer) else ()

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        authorize(state, request)
        body = parse_chat(await read_body(request))
        served = served_model(state, body.model)
        if not end_ids:
            raise ApiError(400, f"the model {body.model!r} has no chat template, so this server cannot "
                                "answer chat requests; use /v1/completions", param="messages",
                           code="chat_template_missing")
        max_tokens = check_max_tokens(state, body.limit(state.max_tokens))
        text = await rendered(state, body.messages, tokenize_pool)
        ids = await prompt_ids(state, text, tokenize_pool, special_tokens=False)
        job, events = make_job(state, body, served, ids, asyncio.get_running_loop(), max_tokens, end_ids)
        reply = Reply(body.model, len(ids), body.n, state.fingerprint, chat=True,
                      id=f"chatcmpl-{uuid.uuid4().hex}")
        return await answer(state, job, events, reply, body, request)

    return app


def served_model(state: ServerState, name: str) -> ServedModel:
    served = state.models.get(name)
    if served is None:
        raise ApiError(404, f"the model {name!r} does not exist here; GET /v1/models lists "
                            f"{', '.join(state.models)}", param="model", code="model_not_found")
    return served


def check_max_tokens(state: ServerState, max_tokens: int) -> int:
    if max_tokens > state.max_tokens:
        raise ApiError(400, f"max_tokens is {max_tokens}; this server gives at most "
                            f"{state.max_tokens} new tokens (flora-eval serve --max-tokens): ask for "
                            "fewer, or restart it with a larger --max-tokens", param="max_tokens",
                       code="max_tokens_exceeded")
    return max_tokens


async def answer(state: ServerState, job: Job, events: asyncio.Queue, reply: Reply, body, request: Request):
    """Submit the job, then answer with every choice, or stream them."""
    try:
        state.engine.submit(job)
    except Overloaded as exc:
        raise ApiError(429, str(exc), "rate_limit_error", code="overloaded") from None
    except EngineUnavailable as exc:
        raise unavailable(str(exc)) from None
    if body.stream:
        return StreamingResponse(stream(state, job, events, reply, body), media_type="text/event-stream")
    return JSONResponse(await collect(state, job, events, reply, request))


async def rendered(state: ServerState, messages: list[Message], pool: Executor) -> str:
    """The conversation as the served model's chat template writes it, with the generation
    prompt (rendered in `pool`, off the event loop); a template that refuses it (roles out of
    the order it wants, say) is a 400 whose cause is logged."""
    plain = []
    for message in messages:
        if message.role not in CHAT_ROLES:
            raise ApiError(400, f"messages: unknown role {message.role!r}; use one of "
                                f"{', '.join(CHAT_ROLES)}", param="messages")
        plain.append({"role": "system" if message.role == "developer" else message.role,
                      "content": message.text()})
    try:
        return await asyncio.get_running_loop().run_in_executor(pool, render, state.tokenizer, plain)
    except UserError as exc:  # our own line (a template that refused the conversation)
        raise ApiError(400, str(exc), param="messages") from None
    except Exception as exc:  # noqa: BLE001 - the template's own errors: logged, not sent
        request_id = f"req-{uuid.uuid4().hex[:12]}"
        log.warning("the chat template refused a conversation (request id %s)", request_id, exc_info=exc)
        raise ApiError(400, f"the model's chat template refused these messages (request id {request_id}); "
                            "check their roles and order", param="messages") from None


def authorize(state: ServerState, request: Request) -> None:
    """With an API key set, every route but /health needs `Authorization: Bearer <key>`,
    compared in constant time (a plain check, not a middleware: Starlette's HTTP middleware
    costs about a millisecond per request)."""
    if not state.api_key:
        return
    given = request.headers.get("authorization", "").encode("latin-1")  # the header's bytes, as sent
    if not hmac.compare_digest(given, f"Bearer {state.api_key}".encode()):
        raise ApiError(401, "missing or wrong API key (Authorization: Bearer <key>)", "authentication_error",
                       code="invalid_api_key")


async def read_body(request: Request) -> bytes:
    """The body, refused with 413 past MAX_BODY_BYTES: by its Content-Length before reading,
    or as it arrives when it has none (chunked)."""
    too_large = ApiError(413, f"the request body is over {MAX_BODY_BYTES} bytes, the most this server reads",
                         param=None, code="request_too_large")
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_BODY_BYTES:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def validated(raw: bytes, model: type[BaseModel]):
    """The body as `model`, or a 400 naming the first bad field."""
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first["loc"]) or None
        raise ApiError(400, f"{param}: {first['msg']}", param=param) from None


def parse_chat(raw: bytes) -> ChatRequest:
    body = validated(raw, ChatRequest)
    for name, value in (("logprobs", body.logprobs), ("tools", body.tools)):
        if value:
            raise ApiError(400, f"{name} is not supported by this server", param=name)
    if body.response_format not in (None, {"type": "text"}):
        raise ApiError(400, "response_format is not supported by this server", param="response_format")
    return body


def parse_body(raw: bytes) -> CompletionRequest:
    body = validated(raw, CompletionRequest)
    for name, value, default in (("echo", body.echo, False), ("logprobs", body.logprobs, None),
                                 ("suffix", body.suffix, None)):
        if value != default:
            raise ApiError(400, f"{name} is not supported by this server", param=name)
    if body.best_of not in (None, 1, body.n):
        raise ApiError(400, "best_of is not supported by this server", param="best_of")
    return body


async def prompt_ids(state: ServerState, prompt, pool: Executor,
                     special_tokens: bool = True) -> tuple[int, ...]:
    """The prompt's token ids; text is tokenized in `pool`, off the event loop (one thread: a
    fast tokenizer called from two threads at once can fail with "Already borrowed"). A text
    the tokenizer cannot take (a lone surrogate, say) is a 400 whose cause is logged. A
    rendered chat template holds its own special tokens (`special_tokens=False`)."""
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        if len(prompt) != 1:
            raise ApiError(400, "one prompt per request", param="prompt")
        prompt = prompt[0]
    if isinstance(prompt, str):
        try:
            encode = functools.partial(state.tokenizer, add_special_tokens=special_tokens)
            encoded = await asyncio.get_running_loop().run_in_executor(pool, encode, prompt)
            ids = tuple(encoded["input_ids"])
        except Exception as exc:  # noqa: BLE001 - the tokenizer's own errors: logged, not sent
            request_id = f"req-{uuid.uuid4().hex[:12]}"
            log.warning("the tokenizer refused a prompt (request id %s)", request_id, exc_info=exc)
            raise ApiError(400, f"the prompt could not be tokenized (request id {request_id}); send valid "
                                "UTF-8 text or token ids", param="prompt") from None
    else:
        ids = tuple(prompt)
    if not ids:
        raise ApiError(400, "the prompt is empty", param="prompt")
    vocab = len(state.tokenizer)
    if any(not 0 <= i < vocab for i in ids):
        raise ApiError(400, f"the prompt has token ids outside the vocabulary (0..{vocab - 1})",
                       param="prompt")
    if len(ids) >= state.context:
        raise ApiError(400, f"the prompt is {len(ids)} tokens; the model's context is {state.context} "
                            "(prompt and completion together)", param="prompt",
                       code="context_length_exceeded")
    return ids


def make_job(state: ServerState, body: CompletionRequest | ChatRequest, served: ServedModel,
             ids: tuple[int, ...], loop, max_tokens: int | None = None,
             end_ids: tuple[int, ...] = ()) -> tuple[Job, asyncio.Queue]:
    stop = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ())
    if len(stop) > MAX_STOPS or any(not s for s in stop):
        raise ApiError(400, f"stop: at most {MAX_STOPS} non-empty sequences", param="stop")
    if body.seed is None:
        seeds = tuple(secrets.randbelow(SEED_SPACE) for _ in range(body.n))
    elif not 0 <= body.seed < SEED_SPACE:
        raise ApiError(400, f"seed must be in [0, 2**63), not {body.seed}", param="seed")
    else:
        seeds = tuple((body.seed + i) % SEED_SPACE for i in range(body.n))
    events: asyncio.Queue[Event] = asyncio.Queue()

    def deliver(event: Event) -> None:  # from the scheduler's thread
        try:
            loop.call_soon_threadsafe(events.put_nowait, event)
        except RuntimeError:  # the event loop is gone (server shutting down)
            pass

    job = Job(ids, served.adapter_index, seeds, deliver, stop, max_tokens or body.max_tokens,
              body.temperature, body.top_p, body.stream, end_ids)
    return job, events


@dataclass
class Reply:
    model: str
    prompt_tokens: int
    n: int
    fingerprint: str = ""
    chat: bool = False  # a chat completion: choices carry a message (a delta when streamed)
    id: str = field(default_factory=lambda: f"cmpl-{uuid.uuid4().hex}")
    created: int = field(default_factory=lambda: int(time.time()))
    completion_tokens: int = 0

    def usage(self) -> dict:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens}

    def body(self, choices: list[dict], usage: bool = True, chunk: bool = False) -> dict:
        kind = ("chat.completion.chunk" if chunk else "chat.completion") if self.chat else "text_completion"
        out = {"id": self.id, "object": kind, "created": self.created, "model": self.model,
               "system_fingerprint": self.fingerprint, "choices": choices}
        if usage:
            out["usage"] = self.usage()
        return out

    def choice(self, index: int, text: str, finish_reason: str | None, delta: bool = False) -> dict:
        if not self.chat:
            return {"index": index, "text": text, "logprobs": None, "finish_reason": finish_reason}
        key = "delta" if delta else "message"
        return {"index": index, key: {"role": "assistant", "content": text}, "logprobs": None,
                "finish_reason": finish_reason}


async def collect(state: ServerState, job: Job, events: asyncio.Queue, reply: Reply,
                  request: Request) -> dict:
    """Wait for every choice until the request's deadline; a client that disconnects first
    cancels the job, and so does the deadline (504)."""
    disconnected = asyncio.ensure_future(_disconnect(request))
    deadline = time.monotonic() + state.request_timeout
    done: dict[int, dict] = {}
    try:
        while len(done) < reply.n:
            getter = asyncio.ensure_future(events.get())
            await asyncio.wait({getter, disconnected}, timeout=max(0.0, deadline - time.monotonic()),
                               return_when=asyncio.FIRST_COMPLETED)
            if not getter.done():
                getter.cancel()
                if disconnected.done():
                    return {}  # the client left: nobody reads this (`finally` cancels the job)
                raise deadline_error(state.request_timeout)
            event = getter.result()
            if event.kind == "error":
                raise event_error(event)
            if event.kind == "done":
                done[event.index] = reply.choice(event.index, event.text, event.finish_reason)
                reply.completion_tokens += event.tokens
        return reply.body([done[i] for i in range(reply.n)])
    finally:
        disconnected.cancel()
        if len(done) < reply.n:
            state.engine.cancel(job)


async def _disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def stream(state: ServerState, job: Job, events: asyncio.Queue, reply: Reply,
                 body: CompletionRequest | ChatRequest):
    """Server-sent events: text deltas per choice, a last chunk per choice with its finish
    reason, the usage when asked (`stream_options.include_usage`), then [DONE]. An error or
    the deadline ends the stream with an error event."""
    sent = [0] * reply.n
    finished = 0
    deadline = time.monotonic() + state.request_timeout
    try:
        while finished < reply.n:
            try:
                event = await asyncio.wait_for(events.get(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                yield _sse(deadline_error(state.request_timeout).body())
                return
            if event.kind == "error":
                yield _sse(event_error(event).body())
                return
            delta = event.text[sent[event.index]:]
            sent[event.index] = max(sent[event.index], len(event.text))
            reason = event.finish_reason if event.kind == "done" else None
            if event.kind == "done":
                finished += 1
                reply.completion_tokens += event.tokens
            if delta or reason:
                yield _sse(reply.body([reply.choice(event.index, delta, reason, delta=True)], usage=False,
                                      chunk=True))
        if (body.stream_options or {}).get("include_usage"):
            yield _sse({**reply.body([], usage=True, chunk=True)})
        yield "data: [DONE]\n\n"
    finally:
        if finished < reply.n:
            state.engine.cancel(job)


def _sse(data: dict) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"
