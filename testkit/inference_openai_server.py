"""A local HTTP server speaking the OpenAI-compatible API subset that vLLM and LiteLLM serve.

Endpoints: POST /v1/chat/completions (also streamed as SSE), /v1/completions, /v1/embeddings;
GET /v1/models, /health.
Faults for tests: ``faults`` is a queue of per-request injections ("500", "429", "slow") consumed by the
next POSTs; a prompt containing ``[fail400]``/``[fail500]`` always gets that status; ``down`` makes
/health answer 503; ``delay_s`` (+ random ``jitter_s``) slows every POST; ``response_cost`` is sent as
LiteLLM's ``x-litellm-response-cost`` header on every success (None: no header, as vLLM).
Every request body is recorded in ``requests``, its Authorization header (or None) in ``auth``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from testkit.serving import serving


class FakeOpenAIState:
    def __init__(self, model: str = "fake-model") -> None:
        self.model = model
        self.faults: deque[str] = deque()
        self.retry_after = "0"
        self.slow_s = 2.0
        self.delay_s = 0.0
        self.jitter_s = 0.0  # extra random delay per POST, so answers come back out of order
        self.down = False
        self.fail_all: int | None = None  # answer every POST with this status (a sick server)
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.auth: list[str | None] = []
        self.lock = threading.Lock()
        self.url = ""
        # Optional: the assistant's answer for a chat request body (default: echo the last message).
        self.chat_responder: Callable[[dict[str, Any]], str] | None = None
        self.response_cost: str | None = None
        # Optional: an error status to answer a request body with (None: answer it), e.g. to fail chosen lines once.
        self.reject: Callable[[dict[str, Any]], int | None] | None = None

    def next_fault(self) -> str | None:
        with self.lock:
            return self.faults.popleft() if self.faults else None


def _text_of(body: dict[str, Any]) -> str:
    if "messages" in body:
        msgs = body.get("messages") or []
        last = msgs[-1] if msgs else {}
        content = last.get("content", "") if isinstance(last, dict) else ""
        return content if isinstance(content, str) else json.dumps(content)
    if "prompt" in body:
        return str(body["prompt"])
    return json.dumps(body.get("input", ""))


def _vector(text: str, dim: int = 8) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest()
    return [b / 255.0 for b in digest[:dim]]


def make_handler(state: FakeOpenAIState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:  # keep test output quiet
            pass

        def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
            if status < 400 and self.command == "POST" and state.response_cost is not None:
                headers = {**(headers or {}), "x-litellm-response-cost": state.response_cost}
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.wfile.write(data)  # the client may have given up (timeout test)

        def _stream(self, model: str, answer: str) -> None:
            """Server-sent events as the OpenAI API streams a chat completion: a few deltas, then [DONE]."""
            cid = f"chatcmpl-{uuid.uuid4().hex}"
            words = answer.split(" ")
            pieces = [" ".join(words[i : i + 5]) + (" " if i + 5 < len(words) else "") for i in range(0, len(words), 5)]
            events = []
            for k, piece in enumerate(pieces):
                delta = {"content": piece, **({"role": "assistant"} if k == 0 else {})}
                choice = {"index": 0, "delta": delta, "finish_reason": None}
                events.append({"id": cid, "object": "chat.completion.chunk", "model": model, "choices": [choice]})
            last = {"index": 0, "delta": {}, "finish_reason": "stop"}
            events.append({"id": cid, "object": "chat.completion.chunk", "model": model, "choices": [last]})
            data = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
            raw = data.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.wfile.write(raw)

        def do_GET(self) -> None:
            if self.path == "/health":
                self._send(503 if state.down else 200, {} if not state.down else {"error": "down"})
            elif self.path == "/v1/models":
                self._send(200, {"object": "list", "data": [{"id": state.model, "object": "model"}]})
            else:
                self._send(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
            except json.JSONDecodeError:
                self._send(400, {"error": {"message": "invalid JSON body", "type": "invalid_request_error"}})
                return
            with state.lock:
                state.requests.append((self.path, body))
                state.auth.append(self.headers.get("Authorization"))
            if state.delay_s or state.jitter_s:
                time.sleep(state.delay_s + random.uniform(0, state.jitter_s))
            if state.fail_all:
                self._send(state.fail_all, {"error": {"message": "server unavailable", "type": "server_error"}})
                return
            if state.reject and (status := state.reject(body)):
                self._send(status, {"error": {"message": "rejected by the test", "type": "invalid_request_error"}})
                return
            fault = state.next_fault()
            if fault == "500":
                self._send(500, {"error": {"message": "injected server error", "type": "server_error"}})
                return
            if fault == "429":
                self._send(
                    429,
                    {"error": {"message": "rate limited", "type": "rate_limit_error"}},
                    {"Retry-After": state.retry_after},
                )
                return
            if fault == "slow":
                time.sleep(state.slow_s)
            text = _text_of(body)
            if "[fail400]" in text:
                self._send(400, {"error": {"message": "injected bad request", "type": "invalid_request_error"}})
                return
            if "[fail500]" in text:
                self._send(500, {"error": {"message": "injected permanent failure", "type": "server_error"}})
                return
            model = body.get("model", state.model)
            prompt_tokens = len(text.split())
            if self.path == "/v1/chat/completions":
                answer = state.chat_responder(body) if state.chat_responder else f"echo: {text}"
                if body.get("stream"):
                    self._stream(model, answer)
                    return
                self._send(200, _completion(model, prompt_tokens, answer, chat=True))
            elif self.path == "/v1/completions":
                self._send(200, _completion(model, prompt_tokens, f"echo: {text}", chat=False))
            elif self.path == "/v1/embeddings":
                inputs = body.get("input", "")
                items = inputs if isinstance(inputs, list) else [inputs]
                data = [{"object": "embedding", "index": i, "embedding": _vector(str(x))} for i, x in enumerate(items)]
                usage = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
                self._send(200, {"object": "list", "model": model, "data": data, "usage": usage})
            else:
                self._send(404, {"error": {"message": f"no route {self.path}"}})

    return Handler


def _completion(model: str, prompt_tokens: int, answer: str, chat: bool) -> dict[str, Any]:
    completion_tokens = len(answer.split())
    choice: dict[str, Any] = {"index": 0, "finish_reason": "stop"}
    if chat:
        choice["message"] = {"role": "assistant", "content": answer}
    else:
        choice["text"] = answer
    return {
        "id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}",
        "object": "chat.completion" if chat else "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


@contextmanager
def run_fake_openai(model: str = "fake-model") -> Iterator[FakeOpenAIState]:
    state = FakeOpenAIState(model)
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(state))
    server.daemon_threads = True
    with serving(server) as url:
        state.url = url
        yield state
