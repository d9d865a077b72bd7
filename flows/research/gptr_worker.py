"""Runs ONE gpt-researcher query; executed by the interpreter of gpt-researcher's own venv.

gpt-researcher 0.15.1 requires numpy<2.3 while the project runs numpy 2.4, so it lives in a separate
venv and this script is its only entry point: a JSON job on stdin, one JSON result line on stdout.
It imports nothing from the project (the project is not installed in that venv).

Offline by construction: the retriever is SearXNG only, LLM and embeddings go to the configured
OpenAI-compatible gateway, gpt-researcher's tiktoken cost estimates (which download encoding files on first use)
are not computed, and telemetry/cost-map downloads are switched off.

Costs are measured, not estimated: every response of the gateway is recorded as it arrived (the request's
model, the body's model and usage, LiteLLM's cost header) and handed back raw in ``calls``; the flow sums them
per model with the same code as batch inference (flows/inference/usage.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any

# Set before gpt-researcher (and litellm/langchain under it) is imported.
OFFLINE_ENV = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # litellm would fetch its price table from the internet
    "LANGCHAIN_TRACING_V2": "false",
    "LANGSMITH_TRACING": "false",
    "ANONYMIZED_TELEMETRY": "False",
    "HF_HUB_OFFLINE": "1",
}
# The LiteLLM proxy's cost of one response, in USD; flows/inference/usage.py's name, which this venv cannot import.
COST_HEADER = "x-litellm-response-cost"
METERED_PATHS = ("/chat/completions", "/completions", "/embeddings")


class Meter:
    """The gateway's successful answers, one record each, in the shape flows/research/runs.py reads."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def note(self, request: Any, response: Any, stream: bool) -> None:
        if not response.is_success or not response.url.path.endswith(METERED_PATHS):
            return
        try:
            sent = json.loads(request.content or b"{}")
        except ValueError:
            sent = {}
        body: Any = None
        if not stream:  # a streamed body is not read yet; its record says usage and cost are unknown
            try:
                body = response.json()
            except ValueError:
                body = None
        body = body if isinstance(body, dict) else {}
        self.calls.append(
            {
                "request_model": sent.get("model") if isinstance(sent, dict) else None,
                "response": {"model": body.get("model"), "usage": body.get("usage")},
                "cost_header": response.headers.get(COST_HEADER),
            }
        )


def no_estimate(*args: Any, **kwargs: Any) -> float:
    """gpt-researcher's own cost estimate is not used: the gateway's numbers are."""
    return 0.0


def configure(job: dict[str, Any]) -> None:
    """Environment gpt-researcher reads its configuration from."""
    os.environ.update(OFFLINE_ENV)
    os.environ["OPENAI_BASE_URL"] = job["llm_base_url"].rstrip("/")
    os.environ["OPENAI_API_KEY"] = job.get("llm_api_key") or "none"
    os.environ["RETRIEVER"] = "searx"
    os.environ["SEARX_URL"] = job["searx_url"]
    os.environ["FAST_LLM"] = f"openai:{job['fast_llm']}"
    os.environ["SMART_LLM"] = f"openai:{job.get('smart_llm') or job['fast_llm']}"
    os.environ["STRATEGIC_LLM"] = f"openai:{job.get('strategic_llm') or job['fast_llm']}"
    # "custom" = OpenAI-compatible embeddings without tiktoken-based context-length checks.
    os.environ["EMBEDDING"] = f"custom:{job['embedding_model']}"
    os.environ["SCRAPER"] = "bs"
    os.environ["MAX_ITERATIONS"] = str(job.get("max_iterations", 3))
    os.environ["MAX_SUBTOPICS"] = str(job.get("max_subtopics", 3))
    os.environ["TOTAL_WORDS"] = str(job.get("total_words", 1200))
    os.environ["DOC_PATH"] = job.get("doc_path") or os.environ.get("DOC_PATH", "./my-docs")


def patch_costs() -> None:
    """Switch off the tiktoken-based estimates everywhere gpt-researcher bound them."""
    import gpt_researcher.context.compression as compression
    import gpt_researcher.utils.costs as costs
    import gpt_researcher.utils.llm as llm_utils

    costs.estimate_llm_cost = no_estimate
    costs.estimate_embedding_cost = no_estimate
    llm_utils.estimate_llm_cost = no_estimate
    compression.estimate_embedding_cost = no_estimate


def meter_gateway(meter: Meter) -> None:
    """Record every response the OpenAI client (chat and embeddings alike) gets, at its one send hook."""
    from openai import _base_client as base

    sync_send, async_send = base.SyncAPIClient._send_request, base.AsyncAPIClient._send_request

    def send(self: Any, request: Any, *, stream: bool, **kwargs: Any) -> Any:
        response = sync_send(self, request, stream=stream, **kwargs)
        meter.note(request, response, stream)
        return response

    async def asend(self: Any, request: Any, *, stream: bool, **kwargs: Any) -> Any:
        response = await async_send(self, request, stream=stream, **kwargs)
        meter.note(request, response, stream)
        return response

    base.SyncAPIClient._send_request = send
    base.AsyncAPIClient._send_request = asend


def answer_whole() -> None:
    """gpt-researcher streams its report to a websocket when it has one; without one (here) the report is asked
    for whole, since LiteLLM sends a streamed answer's headers, its cost header among them, before it knows it."""
    from gpt_researcher.llm_provider.generic.base import GenericLLMProvider

    streamed = GenericLLMProvider.get_chat_response

    async def get_chat_response(self: Any, messages: Any, stream: bool, websocket: Any = None, **kwargs: Any) -> Any:
        return await streamed(self, messages, stream and websocket is not None, websocket, **kwargs)

    GenericLLMProvider.get_chat_response = get_chat_response


async def research(job: dict[str, Any]) -> dict[str, Any]:
    from gpt_researcher import GPTResearcher

    researcher = GPTResearcher(
        query=job["query"],
        report_type=job.get("report_type", "research_report"),
        report_source=job.get("report_source") or "web",
        verbose=False,
    )
    await researcher.conduct_research()
    report = await researcher.write_report()
    sources = [
        {"url": s.get("url", ""), "title": s.get("title", "")}
        for s in researcher.get_research_sources()
        if isinstance(s, dict)
    ]
    known = {s["url"] for s in sources}
    sources += [{"url": u, "title": ""} for u in researcher.get_source_urls() if u not in known]
    return {"report": report, "sources": sources}


def main() -> int:
    job = json.loads(sys.stdin.read())
    configure(job)
    t0 = time.monotonic()
    meter = Meter()
    try:
        patch_costs()
        meter_gateway(meter)
        answer_whole()
        result = asyncio.run(research(job))
        result.update(ok=True)
    except Exception as exc:  # report every failure as data; the flow records it
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    result.update(calls=meter.calls, duration_s=time.monotonic() - t0)  # a failed query's calls cost too
    sys.stdout.write("\n" + json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
