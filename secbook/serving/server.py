"""The HTTP front: OpenAI's API on Starlette + uvicorn, in front of the engine.

The OpenAI API is what every serving engine speaks (vLLM, SGLang, TGI, llama.cpp's ``server``,
``transformers serve``), so any client — the ``openai`` package, a load tester — works against all of them.
Routes: ``POST /v1/completions`` (a prompt), ``POST /v1/chat/completions`` (messages rendered with the model's
chat template), both with ``stream: true`` as server-sent events (``data: {json}`` lines, ``data: [DONE]`` at
the end); ``GET /v1/models``; ``GET /health``; ``GET /metrics`` (Prometheus' text format, as vLLM and
llama.cpp's server publish it).

What a server meets in practice is handled explicitly: malformed input gets a 400 with a JSON error naming the
field (an oversize body a 413), a full queue a 429 with ``Retry-After`` at once instead of an ever longer wait,
a client that disconnects has its request cancelled (its batch slot and KV blocks are freed at the next step),
and SIGTERM drains: uvicorn stops accepting, lets in-flight requests finish (up to ``shutdown_timeout``),
then the engine stops and fails whatever is left with an error.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
import uuid

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from .engine import Engine, EngineStopped, QueueFull
from .scheduler import Sampling

ROLES = ("system", "user", "assistant", "developer", "tool")


class ApiError(Exception):
    """An error answer: HTTP status, a message that says what is wrong, the offending field."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.headers = status, message, param, code, headers


def error_body(message: str, kind: str = "invalid_request_error", param=None, code=None) -> dict:
    """OpenAI's error object."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _error_response(e: ApiError) -> JSONResponse:
    kind = {429: "rate_limit_error", 503: "server_error", 500: "server_error"}.get(e.status, "invalid_request_error")
    return JSONResponse(error_body(e.message, kind, e.param, e.code), status_code=e.status, headers=e.headers)


# --- reading and checking a request -------------------------------------------------------------------------
async def read_json(request: Request, limit: int) -> dict:
    """The body as a JSON object; 413 past ``limit`` bytes (checked before and while reading), 400 otherwise."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise ApiError(413, f"request body of {length} bytes is larger than the limit of {limit} bytes",
                       code="body_too_large")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(413, f"request body is larger than the limit of {limit} bytes", code="body_too_large")
    try:
        data = json.loads(bytes(body))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ApiError(400, f"invalid JSON in the request body: {e}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise ApiError(400, f"the request body must be a JSON object, got {type(data).__name__}",
                       code="invalid_json")
    return data


def _typed(body: dict, key: str, kinds: tuple, what: str, default=None):
    value = body.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        raise ApiError(400, f"'{key}' must be {what}, got {json.dumps(value)[:60]}", param=key,
                       code="invalid_type")
    return value


def _number(body: dict, key: str, default: float, lo: float, hi: float, lo_open: bool = False) -> float:
    value = _typed(body, key, (int, float), "a number", default)
    if not math.isfinite(value) or value > hi or value < lo or (lo_open and value == lo):
        raise ApiError(400, f"'{key}' must be in {'(' if lo_open else '['}{lo}, {hi}], got {value}", param=key,
                       code="invalid_value")
    return float(value)


# Fields of the OpenAI API this server does not implement: refused when they ask for something, rather than
# silently ignored (their neutral values — false, 0, null, a text response — are accepted).
UNSUPPORTED = {"echo": (False,), "logprobs": (False, None), "top_logprobs": (0, None), "best_of": (1, None),
               "suffix": (None, ""), "presence_penalty": (0, None), "frequency_penalty": (0, None),
               "logit_bias": (None,), "tools": (None,), "functions": (None,), "tool_choice": (None, "none"),
               "response_format": (None, {"type": "text"})}


class Params:
    """The sampling and output fields shared by both endpoints, checked."""

    def __init__(self, body: dict, keys: tuple = ("max_tokens",)):
        for key, neutral in UNSUPPORTED.items():
            if key in body and body[key] not in neutral and body[key] != {} and body[key] != []:
                raise ApiError(400, f"'{key}' is not supported by this server (got {json.dumps(body[key])[:60]})",
                               param=key, code="unsupported")
        self.stream = _typed(body, "stream", (bool,), "true or false", False)
        opts = _typed(body, "stream_options", (dict,), "an object", {})
        self.include_usage = _typed(opts, "include_usage", (bool,), "true or false", False)
        n = _typed(body, "n", (int,), "an integer", 1)
        if n != 1:
            raise ApiError(400, f"only n = 1 is supported, got {n}", param="n", code="invalid_value")
        self.max_tokens = None
        for key in keys:
            value = _typed(body, key, (int,), "an integer", None)
            if value is not None:
                if value < 1:
                    raise ApiError(400, f"'{key}' must be at least 1, got {value}", param=key, code="invalid_value")
                self.max_tokens, self.max_tokens_key = value, key
        self.sampling = Sampling(temperature=_number(body, "temperature", 1.0, 0.0, 2.0),
                                 top_p=_number(body, "top_p", 1.0, 0.0, 1.0, lo_open=True),
                                 seed=_typed(body, "seed", (int,), "an integer", None))
        stop = body.get("stop")
        if stop is None:
            self.stop = []
        elif isinstance(stop, str):
            self.stop = [stop] if stop else []
        elif isinstance(stop, list) and len(stop) <= 4 and all(isinstance(s, str) and s for s in stop):
            self.stop = list(stop)
        else:
            raise ApiError(400, "'stop' must be a string or a list of up to 4 non-empty strings", param="stop",
                           code="invalid_type")


def _message_text(m, i: int) -> dict:
    if not isinstance(m, dict):
        raise ApiError(400, f"messages[{i}] must be an object with 'role' and 'content'", param="messages",
                       code="invalid_type")
    role, content = m.get("role"), m.get("content")
    if role not in ROLES:
        raise ApiError(400, f"messages[{i}].role must be one of {', '.join(ROLES)}, got {json.dumps(role)}",
                       param="messages", code="invalid_value")
    if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
        if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                   for p in content):
            raise ApiError(400, f"messages[{i}].content parts must be {{'type': 'text', 'text': str}}",
                           param="messages", code="invalid_type")
        content = "".join(p["text"] for p in content)
    if not isinstance(content, str):
        raise ApiError(400, f"messages[{i}].content must be a string, got {json.dumps(content)[:60]}",
                       param="messages", code="invalid_type")
    return {"role": role, "content": content}


def render_chat(tokenizer, messages: list[dict]) -> str:
    """The model's chat template with the assistant's turn opened; a plain ``role: text`` transcript for a
    model that has no template (such as the book's tiny model)."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"


# --- one request in flight ------------------------------------------------------------------------------------
class EngineError(RuntimeError):
    """The engine failed or dropped the request (a failed forward, a shutdown)."""


class ClientGone(RuntimeError):
    """The client disconnected before its answer was ready."""


class Job:
    """A submitted request seen from the event loop: the engine's callbacks arrive on an asyncio queue,
    :meth:`deltas` turns tokens into text pieces (holding back a broken UTF-8 character and anything that
    could be the start of a stop string)."""

    def __init__(self, state: "State", prompt: list[int], params: Params):
        loop = asyncio.get_running_loop()
        self.state, self.params, self.prompt = state, params, prompt
        self.queue: asyncio.Queue = asyncio.Queue()
        self.ids: list[int] = []
        self.text, self.sent, self.finish_reason = "", 0, None

        def on_event(kind, payload):
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is listening
                loop.call_soon_threadsafe(self.queue.put_nowait, (kind, payload))

        self.seq = state.engine.submit(prompt, params.max_tokens, params.sampling, state.stop_ids, on_event)

    def close(self, reason: str = "cancelled") -> None:
        """Stop the request in the engine unless it is already finished: its client left (``"cancelled"``)
        or a stop string ended it (``"stop"``)."""
        if self.seq.finish_reason is None:
            self.state.engine.cancel(self.seq, reason)

    def _cut(self, final: bool) -> tuple[str, bool]:
        stop = self.params.stop
        for s in stop:
            i = self.text.find(s, max(0, self.sent - len(s)))
            if i >= 0:
                self.text = self.text[:i]
                return self.text[self.sent:], True
        hold = 0 if final else max((len(s) - 1 for s in stop), default=0)
        end = max(self.sent, len(self.text) - hold)
        return self.text[self.sent:end], False

    async def deltas(self):
        """Yield ``(text, None)`` pieces, then ``("", finish_reason)``; raise :class:`EngineError` on failure."""
        decode = self.state.tokenizer.decode
        while True:
            kind, payload = await self.queue.get()
            if kind == "error":
                raise EngineError(payload)
            if kind == "gone":
                raise ClientGone(payload)
            if kind == "token":
                self.ids.append(payload)
                text = decode(self.ids, skip_special_tokens=True)
                if text.endswith("\ufffd"):
                    continue  # half a UTF-8 character: wait for the rest
                self.text = text
                piece, stopped = self._cut(final=False)
                self.sent += len(piece)
                if piece:
                    yield piece, None
                if stopped:
                    self.close("stop")
                    self.finish_reason = "stop"
                    yield "", "stop"
                    return
            else:  # done
                self.text = decode(self.ids, skip_special_tokens=True)
                piece, _ = self._cut(final=True)
                self.sent += len(piece)
                if piece:
                    yield piece, None
                self.finish_reason = payload
                yield "", payload
                return

    def usage(self) -> dict:
        return {"prompt_tokens": len(self.prompt), "completion_tokens": len(self.ids),
                "total_tokens": len(self.prompt) + len(self.ids)}


class State:
    """What the routes share: the engine, the tokenizer, the served name, limits and HTTP counters."""

    def __init__(self, engine: Engine, tokenizer, model_name: str, max_body_bytes: int = 1 << 20,
                 default_max_tokens: int = 256, model=None):
        self.engine, self.tokenizer, self.model_name = engine, tokenizer, model_name
        self.max_body_bytes, self.default_max_tokens = max_body_bytes, default_max_tokens
        ids = set()
        for source in (tokenizer.eos_token_id, getattr(getattr(model, "generation_config", None), "eos_token_id", None)):
            ids.update(source if isinstance(source, (list, tuple, set)) else [source] if source is not None else [])
        self.stop_ids = frozenset(ids)
        self.http: dict[int, int] = {}
        self.started = time.time()
        self.draining = False


# --- routes -------------------------------------------------------------------------------------------------
def _check_model(state: State, body: dict) -> None:
    name = _typed(body, "model", (str,), "a string", state.model_name)
    if name != state.model_name:
        raise ApiError(400, f"unknown model {name!r}; this server serves {state.model_name!r} (GET /v1/models)",
                       param="model", code="model_not_found")


def _budget(state: State, prompt: list[int], params: Params, default: int) -> None:
    ctx = state.engine.max_model_len
    if not prompt:
        raise ApiError(400, "the prompt is empty", code="invalid_value")
    if len(prompt) >= ctx:
        raise ApiError(400, f"the prompt has {len(prompt)} tokens; this model's context is {ctx} tokens",
                       code="context_length_exceeded")
    if params.max_tokens is None:
        params.max_tokens = min(default, ctx - len(prompt))
    elif len(prompt) + params.max_tokens > ctx:
        raise ApiError(400, f"prompt ({len(prompt)} tokens) + {params.max_tokens_key} ({params.max_tokens}) is "
                       f"more than the context of {ctx} tokens; ask for at most {ctx - len(prompt)}",
                       param=params.max_tokens_key, code="context_length_exceeded")


def _submit(state: State, prompt: list[int], params: Params) -> Job:
    try:
        return Job(state, prompt, params)
    except QueueFull as e:
        raise ApiError(429, f"server busy: {e}; retry later", code="queue_full", headers={"Retry-After": "1"})
    except EngineStopped as e:
        raise ApiError(503, str(e), code="shutting_down", headers={"Retry-After": "5"})
    except ValueError as e:
        raise ApiError(400, str(e), code="invalid_value")


def _completion_prompt(state: State, body: dict) -> list[int]:
    if "prompt" not in body:
        raise ApiError(400, "missing 'prompt' (a string)", param="prompt", code="missing_field")
    p = body["prompt"]
    if isinstance(p, list) and len(p) == 1 and isinstance(p[0], str):
        p = p[0]
    if isinstance(p, str):
        return state.tokenizer(p, add_special_tokens=False)["input_ids"]
    vocab = len(state.tokenizer)
    if isinstance(p, list) and p and all(isinstance(t, int) and not isinstance(t, bool) and 0 <= t < vocab
                                         for t in p):
        return list(p)
    raise ApiError(400, "'prompt' must be a string, a list of one string, or a list of token ids",
                   param="prompt", code="invalid_type")


def _chat_prompt(state: State, body: dict) -> list[int]:
    if "messages" not in body:
        raise ApiError(400, "missing 'messages' (a list of {role, content})", param="messages", code="missing_field")
    msgs = body["messages"]
    if not isinstance(msgs, list) or not msgs:
        raise ApiError(400, "'messages' must be a non-empty list of {role, content}", param="messages",
                       code="invalid_type")
    text = render_chat(state.tokenizer, [_message_text(m, i) for i, m in enumerate(msgs)])
    return state.tokenizer(text, add_special_tokens=False)["input_ids"]


async def _watch_disconnect(request: Request, job: Job) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            job.close()
            job.queue.put_nowait(("gone", "client disconnected"))
            return


def _sse(obj) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


async def _generate(request: Request, chat: bool):
    state: State = request.app.state.serving
    body = await read_json(request, state.max_body_bytes)
    _check_model(state, body)
    # tokenizing a long prompt takes a while: do it in a worker thread, not in the loop that feeds every stream
    if chat:
        params = Params(body, ("max_tokens", "max_completion_tokens"))
        prompt = await run_in_threadpool(_chat_prompt, state, body)
        _budget(state, prompt, params, state.default_max_tokens)
    else:
        params = Params(body)
        prompt = await run_in_threadpool(_completion_prompt, state, body)
        _budget(state, prompt, params, 16)  # OpenAI's default for completions
    job = _submit(state, prompt, params)
    rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
    created = int(time.time())
    obj = "chat.completion" if chat else "text_completion"
    head = {"id": rid, "created": created, "model": state.model_name}

    def chunk(text: str, finish) -> dict:
        if chat:
            return {**head, "object": "chat.completion.chunk",
                    "choices": [{"index": 0, "delta": {"content": text} if text else {}, "finish_reason": finish}]}
        return {**head, "object": obj, "choices": [{"index": 0, "text": text, "finish_reason": finish,
                                                    "logprobs": None}]}

    if params.stream:
        async def events():
            try:
                if chat:
                    yield _sse({**head, "object": "chat.completion.chunk",
                                "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                             "finish_reason": None}]})
                async for text, finish in job.deltas():
                    yield _sse(chunk(text, finish))
                if params.include_usage:
                    yield _sse({**head, "object": "chat.completion.chunk" if chat else obj, "choices": [],
                                "usage": job.usage()})
            except EngineError as e:
                yield _sse(error_body(str(e), "server_error", code="generation_failed"))
            finally:
                job.close()
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    watcher = asyncio.create_task(_watch_disconnect(request, job))
    try:
        async for _ in job.deltas():
            pass
    except EngineError as e:
        raise ApiError(500, f"generation failed: {e}", code="generation_failed")
    except ClientGone:
        return Response(status_code=499)  # nginx's "client closed request": nobody reads it
    finally:
        watcher.cancel()
        job.close()
    text = job.text[:job.sent]
    choice = {"index": 0, "finish_reason": job.finish_reason}
    choice.update({"message": {"role": "assistant", "content": text}} if chat else {"text": text, "logprobs": None})
    return JSONResponse({**head, "object": obj, "choices": [choice], "usage": job.usage()})


def _route(handler):
    async def endpoint(request: Request):
        try:
            return await handler(request)
        except ApiError as e:
            return _error_response(e)
        except Exception as e:  # a bug: still answer in JSON
            return _error_response(ApiError(500, f"internal error: {type(e).__name__}: {e}", code="internal"))
    return endpoint


async def completions(request: Request):
    return await _generate(request, chat=False)


async def chat_completions(request: Request):
    return await _generate(request, chat=True)


async def models(request: Request):
    state: State = request.app.state.serving
    return JSONResponse({"object": "list", "data": [{
        "id": state.model_name, "object": "model", "created": int(state.started), "owned_by": "secbook",
        "max_model_len": state.engine.max_model_len}]})


async def health(request: Request):
    state: State = request.app.state.serving
    s = state.engine.stats()
    ok = not state.draining
    return JSONResponse({"status": "ok" if ok else "draining", "model": state.model_name,
                         "running": s["running"], "waiting": s["waiting"]}, status_code=200 if ok else 503)


def metrics_text(state: State) -> str:
    """The engine's counters, queues and KV-cache use, and the HTTP answers by status, in Prometheus' format."""
    s = state.engine.stats()
    lines = []

    def metric(name, kind, help_, samples):
        lines.append(f"# HELP secbook_{name} {help_}")
        lines.append(f"# TYPE secbook_{name} {kind}")
        for labels, value in samples:
            lab = "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else ""
            lines.append(f"secbook_{name}{lab} {value}")

    metric("requests_total", "counter", "requests by outcome (submitted = accepted into the queue)",
           [({"outcome": k}, s[k]) for k in ("submitted", "completed", "cancelled", "failed", "rejected")])
    metric("prompt_tokens_total", "counter", "prompt tokens of accepted requests", [({}, s["prompt_tokens"])])
    metric("generation_tokens_total", "counter", "tokens generated", [({}, s["generated_tokens"])])
    metric("steps_total", "counter", "engine iterations", [({}, s["steps"])])
    metric("decode_rows_total", "counter", "sequences decoded, summed over steps", [({}, s["decode_rows"])])
    metric("preemptions_total", "counter", "sequences preempted for lack of KV blocks", [({}, s["preemptions"])])
    metric("busy_seconds_total", "counter", "seconds the engine spent running forwards", [({}, round(s["busy_s"], 6))])
    metric("requests_running", "gauge", "sequences in the running batch", [({}, s["running"])])
    metric("requests_waiting", "gauge", "sequences in the queue", [({}, s["waiting"])])
    metric("kv_blocks", "gauge", "KV cache blocks", [({"state": "used"}, s["kv_blocks_used"]),
                                                     ({"state": "total"}, s["kv_blocks_total"])])
    metric("kv_sequences", "gauge", "sequences holding KV blocks", [({}, s["kv_sequences"])])
    metric("kv_bytes_per_token", "gauge", "KV cache bytes of one token (all layers, K and V)",
           [({}, s["kv_bytes_per_token"])])
    metric("context_tokens", "gauge", "the longest sequence the server accepts", [({}, state.engine.max_model_len)])
    metric("kv_bytes", "gauge", "KV cache bytes: reserved by blocks, written, a contiguous max-length cache",
           [({"kind": k}, s[f"kv_bytes_{k}"]) for k in ("reserved", "used", "contiguous", "total")])
    metric("http_responses_total", "counter", "HTTP answers by status code",
           [({"code": c}, n) for c, n in sorted(state.http.items())])
    return "\n".join(lines) + "\n"


async def metrics(request: Request):
    return PlainTextResponse(metrics_text(request.app.state.serving), media_type="text/plain; version=0.0.4")


def parse_metrics(text: str) -> dict:
    """Prometheus text → ``{"name{labels}": value}`` (enough to read our own /metrics back)."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


class _CountStatus:
    """ASGI middleware: count HTTP answers by status code (for /metrics)."""

    def __init__(self, app, counts: dict):
        self.app, self.counts = app, counts

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def counting_send(message):
            if message["type"] == "http.response.start":
                self.counts[message["status"]] = self.counts.get(message["status"], 0) + 1
            await send(message)

        await self.app(scope, receive, counting_send)


def build_app(state: State) -> Starlette:
    """The Starlette app; the engine starts with the app and stops (failing what is left) when it stops."""

    @contextlib.asynccontextmanager
    async def lifespan(app):
        state.engine.start()
        try:
            yield
        finally:
            state.draining = True
            await asyncio.get_running_loop().run_in_executor(None, state.engine.stop)

    app = Starlette(routes=[
        Route("/v1/completions", _route(completions), methods=["POST"]),
        Route("/v1/chat/completions", _route(chat_completions), methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ], lifespan=lifespan)
    app.state.serving = state
    app.add_middleware(_CountStatus, counts=state.http)
    return app
