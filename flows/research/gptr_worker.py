"""Runs ONE gpt-researcher query; executed by the interpreter of gpt-researcher's own venv.

gpt-researcher 0.15.1 requires numpy<2.3 while the project runs numpy 2.4, so it lives in a separate
venv and this script is its only entry point: a JSON job on stdin, one JSON result line on stdout.
It imports nothing from the project (the project is not installed in that venv).

Offline by construction: the retriever is SearXNG only, LLM and embeddings go to the configured
OpenAI-compatible gateway, tiktoken's cost estimates (which download encoding files on first use) are
replaced by a character count, and telemetry/cost-map downloads are switched off.
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

# Per-token prices used by gpt-researcher's own estimate (USD), applied to ~4 characters per token.
INPUT_COST_PER_TOKEN = 0.000005
OUTPUT_COST_PER_TOKEN = 0.000015
EMBEDDING_COST_PER_TOKEN = 0.02 / 1_000_000


def approx_tokens(text: str) -> int:
    return (len(text) + 3) // 4


def estimate_llm_cost(input_content: str, output_content: str) -> float:
    return approx_tokens(input_content) * INPUT_COST_PER_TOKEN + approx_tokens(output_content) * OUTPUT_COST_PER_TOKEN


def estimate_embedding_cost(model: str, docs: list) -> float:
    return sum(approx_tokens(str(d)) for d in docs) * EMBEDDING_COST_PER_TOKEN


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
    """Replace the tiktoken-based estimates everywhere gpt-researcher bound them."""
    import gpt_researcher.context.compression as compression
    import gpt_researcher.utils.costs as costs
    import gpt_researcher.utils.llm as llm_utils

    costs.estimate_llm_cost = estimate_llm_cost
    costs.estimate_embedding_cost = estimate_embedding_cost
    llm_utils.estimate_llm_cost = estimate_llm_cost
    compression.estimate_embedding_cost = estimate_embedding_cost


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
    return {"report": report, "sources": sources, "cost_usd": float(researcher.get_costs())}


def main() -> int:
    job = json.loads(sys.stdin.read())
    configure(job)
    t0 = time.monotonic()
    try:
        patch_costs()
        result = asyncio.run(research(job))
        result.update(ok=True, duration_s=time.monotonic() - t0)
    except Exception as exc:  # report every failure as data; the flow records it
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "duration_s": time.monotonic() - t0}
    sys.stdout.write("\n" + json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
