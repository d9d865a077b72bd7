"""Drives LiteLLM's real ``Router``, built from deployments/litellm/config.yaml, through each routing rule of the
cluster; run by the gateway venv's python (``python testkit/litellm_routes.py CONFIG``), it imports nothing from
the project and prints one JSON object: scenario -> the deployments that answered, in order, or the error.

Cloud deployments answer with LiteLLM's ``mock_response`` (their model id), so no request leaves the machine.
Where a rule hinges on what a server says (vLLM refusing connections, OpenRouter's HTTP 402 for credits, a
provider's 429), the deployment's ``api_base`` points at a local server that says exactly that over HTTP, and
LiteLLM's own provider code reads it.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # the price table from the package, not the web

import litellm
import yaml
from litellm import Router

OPENROUTER_402 = {"error": {"code": 402, "message": "Insufficient credits. Add more using https://openrouter.ai"}}
RATE_LIMITED = {"error": {"code": 429, "message": "Rate limit exceeded: free-models-per-min"}}


def refusing_url() -> str:
    """A loopback port nobody listens on: vLLM down."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}/v1"


def error_server(status: int, body: dict[str, Any]) -> str:
    """A server answering every POST with ``status`` and ``body`` (a provider refusing); returns its /v1 URL."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}/v1"


def offline_model_list(config: dict[str, Any]) -> list[dict[str, Any]]:
    models = copy.deepcopy(config["model_list"])
    for m in models:
        m["litellm_params"].update(api_key="offline", mock_response=f"answered by {m['model_info']['id']}")
    return models


def deployment(models: list[dict[str, Any]], model_id: str) -> dict[str, Any]:
    return next(m for m in models if m["model_info"]["id"] == model_id)


def serve_for_real(models: list[dict[str, Any]], model_id: str, api_base: str) -> None:
    """This deployment talks HTTP to ``api_base`` instead of being mocked."""
    params = deployment(models, model_id)["litellm_params"]
    params.pop("mock_response")
    params["api_base"] = api_base


def router_for(config: dict[str, Any], models: list[dict[str, Any]]) -> Router:
    """A fresh router; its budget and rate-limit callbacks register in litellm's global lists, so the previous
    scenario's are dropped first (LiteLLM's own tests do the same)."""
    litellm.logging_callback_manager._reset_all_callbacks()
    return Router(model_list=models, **config["router_settings"])


async def ask(router: Router, model: str, prompt: str = "hello", times: int = 1, settle: float = 0.0) -> list[str]:
    """Who answered each of ``times`` sequential requests (a model id), or the error's class and first line.
    ``settle``: seconds between requests, for the spend that success callbacks record after a response."""
    answers = []
    for _ in range(times):
        try:
            response = await router.acompletion(model=model, messages=[{"role": "user", "content": prompt}])
            answers.append(str(response.choices[0].message.content).removeprefix("answered by "))
        except Exception as exc:  # the scenario's result, reported to the test
            answers.append(f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
        await asyncio.sleep(settle)
    return answers


def words(n: int) -> str:
    return "tok " * n


async def scenarios(config: dict[str, Any]) -> dict[str, Any]:
    results: dict[str, Any] = {}
    base = offline_model_list(config)

    async def run(name: str, change: Callable[[list[dict[str, Any]]], Any], *args: Any, **kwargs: Any) -> None:
        models = copy.deepcopy(base)
        change(models)
        started = time.monotonic()
        results[name] = await ask(router_for(config, models), *args, **kwargs)
        print(f"{name}: {time.monotonic() - started:.1f} s", file=sys.stderr)

    await run("vllm_answers", lambda m: None, "default")
    await run("vllm_down", lambda m: serve_for_real(m, "vllm-starlord", refusing_url()), "default")
    await run(
        "vllm_busy", lambda m: None, "default", times=deployment(base, "vllm-starlord")["litellm_params"]["rpm"] + 1
    )
    await run("prompt_40k_tokens", lambda m: None, "default", words(40_000))
    await run("prompt_over_128k_tokens", lambda m: None, "default", words(140_000))
    await run("flash_prompt_over_128k_tokens", lambda m: None, "gemini-flash", words(140_000))

    def tiny_primary_budget(models: list[dict[str, Any]]) -> None:
        # the configured 10 USD would take millions of mocked tokens; one answer's cost exceeds this one
        deployment(models, "gemini-flash-primary")["litellm_params"]["max_budget"] = 1e-9

    await run("flash_budget_exhausted", tiny_primary_budget, "gemini-flash", times=3, settle=0.5)

    def both_flash_budgets_exhausted(models: list[dict[str, Any]]) -> None:
        for model_id in ("gemini-flash-primary", "gemini-flash-secondary"):
            deployment(models, model_id)["litellm_params"]["max_budget"] = 1e-9

    await run("flash_budgets_both_exhausted", both_flash_budgets_exhausted, "gemini-flash", times=3, settle=0.5)
    out_of_credits = error_server(402, OPENROUTER_402)
    await run("openrouter_out_of_credits", lambda m: serve_for_real(m, "openrouter-paid", out_of_credits), "openrouter")

    def credits_and_first_free_model_gone(models: list[dict[str, Any]]) -> None:
        serve_for_real(models, "openrouter-paid", out_of_credits)
        serve_for_real(models, "openrouter-free-deepseek-v3.1", error_server(429, RATE_LIMITED))

    await run("openrouter_free_model_rate_limited", credits_and_first_free_model_gone, "openrouter", times=2)
    flash_rpm = deployment(base, "gemini-flash-primary")["litellm_params"]["rpm"]
    await run("flash_rpm_reached", lambda m: None, "gemini-flash", times=flash_rpm + 1)
    await run("provider_429", lambda m: serve_for_real(m, "vllm-starlord", error_server(429, RATE_LIMITED)), "default")
    return results


def main() -> int:
    litellm.suppress_debug_info = True
    with open(sys.argv[1], encoding="utf-8") as file:
        config = yaml.safe_load(file)
    print(json.dumps(asyncio.run(scenarios(config))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
