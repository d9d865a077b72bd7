"""Engines that turn batch requests into response bodies, behind one small interface.

- :class:`HttpEngine`: any OpenAI-compatible server (vLLM's own, LiteLLM) over httpx, with bounded
  concurrency, retries with backoff on 429/5xx/timeouts (honouring ``Retry-After``) and rate limits.
- :class:`VllmEngine`: ``vllm.LLM`` in-process; a whole chunk goes in one ``chat``/``generate``/``embed``
  call so continuous batching fills the GPU. vllm is imported only when this engine is chosen.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from flows.common.errors import ConfigError
from flows.inference.batch_io import BatchRequest
from flows.inference.limits import RateLimiter
from flows.inference.usage import COST_HEADER, Usage, usage_of

RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class Outcome:
    """What one request produced: a body on success, or an error code and message."""

    status_code: int
    body: Any = None
    error_code: str | None = None
    error_message: str | None = None
    usage: Usage = field(default_factory=Usage)
    attempts: int = 1

    @property
    def ok(self) -> bool:
        return self.error_code is None

    @property
    def tokens(self) -> int:
        return self.usage.total_tokens


ResultCallback = Callable[[int, Outcome], None]


class Engine(Protocol):
    name: str

    def run(self, requests: list[BatchRequest], on_result: ResultCallback) -> None:
        """Process ``requests``; call ``on_result(index, outcome)`` once per request, in any order."""
        ...


def retry_delay(attempt: int, retry_after: str | None, base_s: float, cap_s: float) -> float:
    """Server's Retry-After (seconds) when given, else capped exponential backoff with jitter."""
    if retry_after:
        try:
            return min(cap_s, max(0.0, float(retry_after)))
        except ValueError:
            pass  # an HTTP-date: fall back to our own backoff
    return min(cap_s, base_s * (2**attempt)) * (0.5 + random.random() / 2)


@dataclass
class HttpSettings:
    base_url: str
    api_key: str | None = None
    model: str | None = None  # used when a request body names no model
    concurrency: int = 8
    timeout_s: float = 120.0
    max_retries: int = 5
    backoff_base_s: float = 1.0
    backoff_cap_s: float = 60.0
    requests_per_minute: float | None = None
    tokens_per_hour: float | None = None
    # on_primary_down=fallback: a request the primary still fails after its retries (down, 5xx,
    # timeout) goes to the gateway, and so does everything after it in this run (no flapping).
    fallback_base_url: str | None = None
    fallback_api_key: str | None = None


def is_outage(o: Outcome) -> bool:
    """Failures that say the server is unwell, not that the request is wrong."""
    return o.error_code in ("timeout", "connection_error") or (o.error_code == "http_error" and o.status_code >= 500)


class HttpEngine:
    name = "http"

    def __init__(self, settings: HttpSettings, clock: Callable[[], float] = time.monotonic) -> None:
        if settings.concurrency < 1:
            raise ConfigError("concurrency must be at least 1")
        self.settings = settings
        self.limiter = RateLimiter(settings.requests_per_minute, settings.tokens_per_hour, clock)
        self.failed_over = False  # set once the primary has failed a request after all its retries
        self.fallback_requests = 0

    def run(self, requests: list[BatchRequest], on_result: ResultCallback) -> None:
        asyncio.run(self._run(requests, on_result))

    async def _run(self, requests: list[BatchRequest], on_result: ResultCallback) -> None:
        s = self.settings
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(len(requests)):
            queue.put_nowait(i)
        async with AsyncExitStack() as stack:
            primary = await stack.enter_async_context(_client(s.base_url, s.api_key, s.timeout_s))
            fallback = None
            if s.fallback_base_url:
                fallback = await stack.enter_async_context(
                    _client(s.fallback_base_url, s.fallback_api_key, s.timeout_s)
                )

            async def worker() -> None:
                while True:
                    try:
                        i = queue.get_nowait()
                    except asyncio.QueueEmpty:
                        return
                    outcome = None
                    if not (self.failed_over and fallback is not None):
                        outcome = await self._send(primary, requests[i])
                        if fallback is not None and is_outage(outcome):
                            self.failed_over = True
                            outcome = None
                    if outcome is None:
                        assert fallback is not None
                        self.fallback_requests += 1
                        outcome = await self._send(fallback, requests[i])
                    on_result(i, outcome)

            await asyncio.gather(*(worker() for _ in range(min(s.concurrency, len(requests)) or 1)))

    async def _send(self, client: httpx.AsyncClient, req: BatchRequest) -> Outcome:
        s = self.settings
        base_url = str(client.base_url)
        body = dict(req.body)
        if s.model and "model" not in body:
            body["model"] = s.model
        last = Outcome(0, None, "no_attempt", "not sent")
        for attempt in range(s.max_retries + 1):
            while (wait := self.limiter.try_acquire()) > 0:
                await asyncio.sleep(wait)
            retry_after = None
            try:
                resp = await client.post(req.url, json=body)
            except httpx.TimeoutException:
                last = Outcome(504, None, "timeout", f"no answer from {base_url} within {s.timeout_s}s")
            except httpx.TransportError as exc:
                last = Outcome(503, None, "connection_error", f"{base_url}: {type(exc).__name__}: {exc}")
            else:
                payload = _json_or_text(resp)
                if resp.status_code < 400:
                    usage = usage_of(payload, resp.headers.get(COST_HEADER), body.get("model"))
                    self.limiter.record_tokens(usage.total_tokens)
                    return Outcome(resp.status_code, payload, usage=usage, attempts=attempt + 1)
                last = Outcome(resp.status_code, payload, "http_error", _error_message(resp.status_code, payload))
                if resp.status_code not in RETRYABLE_STATUS:
                    return _with_attempts(last, attempt + 1)
                retry_after = resp.headers.get("retry-after")
            if attempt < s.max_retries:
                await asyncio.sleep(retry_delay(attempt, retry_after, s.backoff_base_s, s.backoff_cap_s))
        return _with_attempts(last, s.max_retries + 1)


def _client(base_url: str, api_key: str | None, timeout_s: float) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    return httpx.AsyncClient(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout_s)


def _with_attempts(o: Outcome, attempts: int) -> Outcome:
    return Outcome(o.status_code, o.body, o.error_code, o.error_message, o.usage, attempts)


def _json_or_text(resp: httpx.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        return {"text": resp.text[:2000]}


def _error_message(status: int, payload: Any) -> str:
    err = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(err, dict) and err.get("message"):
        return f"HTTP {status}: {err['message']}"
    if isinstance(err, str):
        return f"HTTP {status}: {err}"
    return f"HTTP {status}"


def health_check(base_url: str, path: str = "/health", timeout_s: float = 5.0) -> bool:
    """True when the server answers 2xx on its health endpoint (vLLM: ``/health``)."""
    try:
        resp = httpx.get(base_url.rstrip("/") + path, timeout=timeout_s)
    except httpx.HTTPError:
        return False
    return resp.is_success


# --- vLLM in-process ---------------------------------------------------------------------------

_SAMPLING_KEYS = (
    "temperature",
    "top_p",
    "top_k",
    "n",
    "stop",
    "seed",
    "presence_penalty",
    "frequency_penalty",
)


def sampling_kwargs(body: dict[str, Any]) -> dict[str, Any]:
    """The OpenAI request fields that map one-to-one onto ``vllm.SamplingParams``."""
    kw = {k: body[k] for k in _SAMPLING_KEYS if body.get(k) is not None}
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None:
        kw["max_tokens"] = max_tokens
    return kw


def import_vllm() -> Any:
    try:
        import vllm  # type: ignore[import-not-found]
    except ImportError as exc:
        raise ConfigError(
            "engine 'vllm' needs the vllm package on this node (pip install 'swarm-flows[vllm]'); "
            "use engine 'http' to send the batch to a vLLM or LiteLLM server instead"
        ) from exc
    return vllm


class VllmEngine:
    """One ``vllm.LLM`` per process, loaded on first use and kept for later chunks."""

    name = "vllm"
    _llm_cache: dict[tuple[str, tuple[tuple[str, Any], ...]], Any] = {}  # noqa: RUF012

    def __init__(self, model: str, llm_kwargs: dict[str, Any] | None = None) -> None:
        self.vllm = import_vllm()
        self.model = model
        self.llm_kwargs = dict(llm_kwargs or {})

    @property
    def llm(self) -> Any:
        key = (self.model, tuple(sorted(self.llm_kwargs.items())))
        if key not in self._llm_cache:
            self._llm_cache[key] = self.vllm.LLM(model=self.model, **self.llm_kwargs)
        return self._llm_cache[key]

    def run(self, requests: list[BatchRequest], on_result: ResultCallback) -> None:
        groups: dict[str, list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault(r.url, []).append(i)
        for url, idx in groups.items():
            try:
                outcomes = self._run_group(url, [requests[i] for i in idx])
            except Exception as exc:  # one bad group must not lose the others
                outcomes = [Outcome(500, None, "engine_error", f"{type(exc).__name__}: {exc}")] * len(idx)
            for i, o in zip(idx, outcomes, strict=True):
                on_result(i, o)

    def _run_group(self, url: str, reqs: list[BatchRequest]) -> list[Outcome]:
        llm = self.llm
        created = int(time.time())
        if url == "/v1/embeddings":
            inputs: list[str] = []
            owners: list[int] = []
            for k, r in enumerate(reqs):
                inp = r.body.get("input", "")
                items = inp if isinstance(inp, list) else [inp]
                inputs.extend(str(x) for x in items)
                owners.extend([k] * len(items))
            outs = llm.embed(inputs)
            data: list[list[dict[str, Any]]] = [[] for _ in reqs]
            tokens = [0] * len(reqs)
            for owner, out in zip(owners, outs, strict=True):
                data[owner].append(
                    {
                        "object": "embedding",
                        "index": len(data[owner]),
                        "embedding": list(out.outputs.embedding),
                    }
                )
                tokens[owner] += len(getattr(out, "prompt_token_ids", []) or [])
            bodies = [
                {
                    "id": f"embd-{uuid.uuid4().hex}",
                    "object": "list",
                    "created": created,
                    "model": self.model,
                    "data": data[k],
                    "usage": {"prompt_tokens": tokens[k], "total_tokens": tokens[k]},
                }
                for k in range(len(reqs))
            ]
            return [Outcome(200, b, usage=usage_of(b)) for b in bodies]
        params = [self.vllm.SamplingParams(**sampling_kwargs(r.body)) for r in reqs]
        if url == "/v1/chat/completions":
            outs = llm.chat([r.body.get("messages", []) for r in reqs], sampling_params=params, use_tqdm=False)
        else:
            outs = llm.generate([str(r.body.get("prompt", "")) for r in reqs], params, use_tqdm=False)
        return [self._completion(url, out, created) for out in outs]

    def _completion(self, url: str, out: Any, created: int) -> Outcome:
        prompt_tokens = len(out.prompt_token_ids or [])
        completion_tokens = sum(len(c.token_ids) for c in out.outputs)
        chat = url == "/v1/chat/completions"
        choices = [
            {
                "index": c.index,
                **({"message": {"role": "assistant", "content": c.text}} if chat else {"text": c.text}),
                "finish_reason": c.finish_reason,
            }
            for c in out.outputs
        ]
        total = prompt_tokens + completion_tokens
        body = {
            "id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}",
            "object": "chat.completion" if chat else "text_completion",
            "created": created,
            "model": self.model,
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": total,
            },
        }
        return Outcome(200, body, usage=usage_of(body))
