"""The OpenAI-compatible HTTP layer (FastAPI) over one AsyncEngine: it translates requests
and streams, and never schedules on its own.

Endpoints: POST /v1/completions and /v1/chat/completions (``stream: true`` as server-sent
events), GET /v1/models, /health and /metrics. Errors are OpenAI's bodies
``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, Optional

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException

from ..core.errors import RequestError
from ..engine.sampling_params import SamplingParams
from .async_engine import AsyncEngine, EngineClosedError, QueueFullError
from .engine_loop import ChatPrompt, ContextError, PromptSource, StepError
from .metrics import ServerMetrics
from .protocol import ChatCompletionRequest, CompletionRequest, FieldError, parse_request
from .request_stream import RequestStream, merge_deltas
from .responses import SSE_DONE, ResponseBuilder, sse

RETRY_AFTER_S = 1  # what a refused client is told to wait (Retry-After) when the queue is full


@dataclass(frozen=True)
class ServeConfig:
    """served_model_name  the model name requests must give
    api_key            when set, every endpoint but /health needs "Authorization: Bearer KEY"
    """

    served_model_name: str
    api_key: Optional[str] = None


class APIError(Exception):
    """An error response: the HTTP status and OpenAI's error fields."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error",
                 param: Optional[str] = None, code: Optional[str] = None,
                 headers: Optional[dict[str, str]] = None):
        super().__init__(message)
        self.status, self.message, self.type = status, message, type
        self.param, self.code, self.headers = param, code, headers

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param,
                          "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def api_error(exc: BaseException, prompt_field: str = "prompt",
              max_tokens_field: str = "max_tokens") -> APIError:
    """The response for an exception raised while serving a request."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, FieldError):
        return APIError(400, str(exc), param=exc.param)
    if isinstance(exc, ContextError):
        return APIError(400, str(exc), param=max_tokens_field)
    if isinstance(exc, RequestError):  # the engine's checks of a prompt (or of its params)
        field = str(exc).split("=")[0].removeprefix("SamplingParams ") \
            if str(exc).startswith("SamplingParams ") else prompt_field
        return APIError(400, str(exc), param=field)
    if isinstance(exc, QueueFullError):
        return APIError(503, str(exc), type="service_unavailable", code="queue_full",
                        headers={"Retry-After": str(RETRY_AFTER_S)})
    if isinstance(exc, EngineClosedError):
        return APIError(503, str(exc), type="service_unavailable")
    if isinstance(exc, StepError):
        return APIError(500, str(exc), type="server_error")
    return APIError(500, f"the request failed inside the server ({type(exc).__name__}: "
                         f"{exc}).", type="server_error")


class ApiKeyMiddleware:
    """Every path but /health needs "Authorization: Bearer KEY" (a plain ASGI middleware,
    so that streamed responses and disconnects pass through untouched)."""

    def __init__(self, app: Any, api_key: str):
        self.app = app
        self.expected = f"Bearer {api_key}".encode()

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "http" and scope["path"] != "/health":
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not secrets.compare_digest(given, self.expected):
                response = APIError(401, "a valid API key is required: send the header "
                                         "'Authorization: Bearer <key>' with the server's "
                                         "--api-key.", code="invalid_api_key").response()
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(engine: AsyncEngine, config: ServeConfig) -> FastAPI:
    """The FastAPI app serving ``engine`` (``AsyncEngine.over(llm)``, or one over an
    EngineProcess); its loop starts and stops with the app's lifespan (the loop drains
    what it runs before it stops). /metrics shows ``engine.metrics``, made here when the
    engine has none."""
    if engine.metrics is None:
        engine.metrics = ServerMetrics()
    metrics = engine.metrics
    max_model_len = engine.max_model_len
    created = int(time.time())

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine.start()
        try:
            yield
        finally:
            await asyncio.to_thread(engine.shutdown)

    app = FastAPI(title="baseboard", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.engine = engine
    app.state.metrics = metrics
    if config.api_key:
        app.add_middleware(ApiKeyMiddleware, api_key=config.api_key)

    @app.exception_handler(APIError)
    async def on_api_error(request: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestError)
    async def on_request_error(request: Request, exc: RequestError) -> JSONResponse:
        return api_error(exc).response()

    @app.exception_handler(Exception)
    async def on_server_error(request: Request, exc: Exception) -> JSONResponse:
        return api_error(exc).response()  # a 500 in OpenAI's shape; the traceback is logged

    @app.exception_handler(HTTPException)
    async def on_http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return APIError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}",
                        type="invalid_request_error" if exc.status_code < 500
                        else "server_error").response()

    def check_model(name: str) -> None:
        if name != config.served_model_name:
            raise APIError(404, f"the model {name!r} does not exist on this server; it serves "
                                f"{config.served_model_name!r}.", param="model",
                           code="model_not_found")

    def model_card() -> dict:
        return {"id": config.served_model_name, "object": "model", "created": created,
                "owned_by": "baseboard", "max_model_len": max_model_len}

    @app.get("/health")
    async def health() -> Response:
        return Response(status_code=200 if engine.alive else 503)

    @app.get("/metrics")
    async def get_metrics() -> Response:
        content, content_type = metrics.exposition()
        return Response(content, media_type=content_type)

    @app.get("/v1/models")
    async def list_models() -> dict:
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{name:path}")
    async def get_model(name: str) -> dict:
        check_model(name)
        return model_card()

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        body = parse_request(CompletionRequest, await read_json(request))
        check_model(body.model)
        params = body.to_sampling_params()
        builder = ResponseBuilder("completion", body.model, params.n, params.logprobs,
                                  body.include_usage)
        return await serve(request, body.prompts(), params, builder, bool(body.stream),
                           check_context=body.max_tokens is not None, prompt_field="prompt",
                           max_tokens_field="max_tokens")

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        body = parse_request(ChatCompletionRequest, await read_json(request))
        check_model(body.model)
        params = body.to_sampling_params(max_model_len)
        messages = body.template_messages()
        prompt = ChatPrompt(messages, body.add_generation_prompt is not False)
        builder = ResponseBuilder("chat", body.model, params.n, params.logprobs,
                                  body.include_usage)
        return await serve(request, [prompt], params, builder, bool(body.stream),
                           check_context=body.max_tokens_given is not None,
                           prompt_field="messages",
                           max_tokens_field="max_completion_tokens"
                           if body.max_completion_tokens is not None else "max_tokens")

    async def serve(request: Request, prompts: list[PromptSource], params: SamplingParams,
                    builder: ResponseBuilder, stream: bool, *, check_context: bool,
                    prompt_field: str, max_tokens_field: str) -> Response:
        try:
            outputs = engine.submit(prompts, params, check_context=check_context)
            builder.started(await outputs.started())
        except Exception as exc:
            raise api_error(exc, prompt_field, max_tokens_field) from None
        if stream:
            return StreamingResponse(events(outputs, builder), media_type="text/event-stream")
        return await collect(request, outputs, builder)

    return app


async def read_json(request: Request) -> Any:
    raw = await request.body()
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise APIError(400, f"the request body is not valid JSON ({exc}); send a JSON "
                            f"object.") from None


async def events(outputs: RequestStream, builder: ResponseBuilder) -> AsyncIterator[str]:
    """The response as server-sent events: one chunk per choice and step (the steps a slow
    client missed, joined), the usage chunk when asked, then [DONE]. A request that fails
    on the way ends with an error event. The last step's chunks, the usage and [DONE] go
    out in one write: its client can send its next request a write sooner."""
    async with outputs:  # a client that leaves cancels this: the request is aborted
        last = ""
        try:
            if builder.kind == "chat":
                yield "".join(sse(chunk) for chunk in builder.role_chunks())
            async for deltas in outputs:
                # a stream behind the engine sends what it missed as one chunk per choice
                parts = [part for part in map(builder.add, merge_deltas(deltas))
                         if part is not None]
                text = "".join(map(builder.chunk_event, parts))
                if outputs.finished:
                    last = text
                elif text:
                    yield text
            if builder.include_usage:
                last += sse(builder.usage_chunk())
        except Exception as exc:
            last += sse(api_error(exc).body())
        yield last + SSE_DONE


async def collect(request: Request, outputs: RequestStream, builder: ResponseBuilder
                  ) -> Response:
    """The whole response; a client that disconnects first aborts the request."""
    async def consume() -> None:
        async for deltas in outputs:
            for delta in deltas:
                builder.add(delta)

    consuming = asyncio.ensure_future(consume())
    leaving = asyncio.ensure_future(wait_for_disconnect(request))
    try:
        await asyncio.wait({consuming, leaving}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        leaving.cancel()
        consuming.cancel()
        outputs.abort()
    if not consuming.done() or consuming.cancelled():
        return Response(status_code=499)  # nobody reads it: the client has gone
    if consuming.exception() is not None:
        raise api_error(consuming.exception())
    return JSONResponse(builder.response())


async def wait_for_disconnect(request: Request) -> None:
    """Returns when the client disconnects (the body has been read: what is left to
    receive is the disconnect)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
