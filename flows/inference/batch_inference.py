"""batch-inference: an OpenAI Batch JSONL file through vLLM, written in vLLM ``run-batch`` format.

Pool: starlord (the RTX 4090 with vLLM). Reads the input JSONL (``custom_id``, ``method``, ``url``,
``body`` for /v1/chat/completions, /v1/completions, /v1/embeddings) and appends one output line per
input line, in input order, to ``output_path``. Engines: ``http`` (vLLM's server or the LiteLLM gateway,
bounded concurrency, retries, rate limits) or ``vllm`` (in-process ``vllm.LLM``). Work on this node's GPU
(the vLLM server, or vLLM in-process) holds the node's GPU slot (``SWARM_GPU_SLOT``: ``gpu:starlord``).
When the vLLM server is down the run waits, fails, or routes to the gateway (``on_primary_down``).
Writes a progress artifact, a summary artifact (counts, tokens and cost per model) and one row per run in the
ledger (``inference_jobs``, ``inference_job_usage``).

Safe to re-run: a re-run repairs a torn last output line and skips every custom_id already written; with
``retry_failed`` it sends the lines whose answer was an error again, in place. A file with duplicate
custom_ids is refused before anything is sent.
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact

from blocks.llm import OpenAICompatibleEndpoint
from blocks.postgres import PostgresLedger
from flows.common.blocks import resolve_ledger_url
from flows.common.errors import ConfigError, SwarmError
from flows.common.gpu import gpu_section, node_gpu_slot
from flows.common.redact import refuse_password
from flows.inference.batch_io import read_input
from flows.inference.endpoints import resolve_endpoint
from flows.inference.engines import Engine, HttpEngine, HttpSettings, VllmEngine, health_check
from flows.inference.ledger import finish_job, open_ledger, start_job
from flows.inference.paths import batch_roots, confine
from flows.inference.routing import choose_endpoint
from flows.inference.runner import BatchStats, run_batch
from flows.inference.usage import usage_table


def summary_markdown(job_id: str, engine: str, endpoint: str | None, stats: BatchStats, output: str) -> str:
    rows = [
        ("lines in input", stats.total),
        ("ok", stats.ok),
        ("failed", stats.failed),
        ("skipped (done earlier)", stats.skipped),
        ("retried (failed earlier)", stats.retried),
        ("tokens", stats.tokens),
        ("duration", f"{stats.elapsed_s:.1f} s"),
        ("throughput", f"{stats.requests_per_s:.2f} req/s, {stats.tokens_per_s:.1f} tokens/s"),
    ]
    lines = [
        f"# Batch inference `{job_id}`",
        "",
        f"Engine **{engine}**" + (f" at `{endpoint}`" if endpoint else "") + f", output `{output}`.",
        "",
        "| | |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in rows],
    ]
    if stats.usage:
        lines += ["", *usage_table(stats.usage)]
    if stats.error_codes:
        lines += ["", "| error | lines |", "|---|---|"]
        lines += [f"| {code} | {n} |" for code, n in sorted(stats.error_codes.items())]
    return "\n".join(lines) + "\n"


@flow(name="batch-inference", log_prints=True)
def batch_inference(
    input_path: str,
    output_path: str,
    engine: Literal["http", "vllm"] = "http",
    base_url: str = "http://127.0.0.1:8000",
    fallback_url: str | None = None,
    api_key_env: str | None = "VLLM_API_KEY",
    fallback_api_key_env: str | None = "LITELLM_API_KEY",
    model: str | None = None,
    on_primary_down: Literal["wait", "fail", "fallback"] = "wait",
    max_wait_s: float = 300.0,
    poll_s: float = 10.0,
    health_path: str = "/health",
    concurrency: int = 16,
    chunk_size: int = 256,
    timeout_s: float = 120.0,
    max_retries: int = 5,
    requests_per_minute: float | None = None,
    tokens_per_hour: float | None = None,
    vllm_kwargs: dict[str, Any] | None = None,
    progress_every: int = 100,
    ledger_url: str | None = None,
    endpoint_block: OpenAICompatibleEndpoint | str | None = None,
    fallback_block: OpenAICompatibleEndpoint | str | None = None,
    ledger_block: PostgresLedger | str | None = None,
    retry_failed: bool = False,
) -> dict[str, Any]:
    """Run an OpenAI Batch JSONL file through vLLM (or the LiteLLM gateway); returns the counts.

    Args:
        input_path: Batch input (JSONL), under the node's data folder (relative paths start there) or SWARM_BATCH_ROOTS.
        output_path: Where the answers go, one line per input line in input order; a re-run resumes it.
        engine: http: vLLM's server (or the gateway) over HTTP; vllm: vllm.LLM in this process (vllm extra).
        base_url: vLLM server root (no /v1), when endpoint_block is not given.
        fallback_url: LiteLLM gateway root (no /v1) for on_primary_down=fallback, when fallback_block is not given.
        api_key_env: Name of the environment variable holding base_url's API key (never the key itself).
        fallback_api_key_env: Name of the environment variable holding fallback_url's API key.
        model: Model for request bodies that name none (engine vllm: the model to load); default: the block's.
        on_primary_down: When vLLM's health check fails: wait (up to max_wait_s), fail at once, or fallback.
        max_wait_s: Seconds to wait for vLLM to come back before failing (wait) or falling back (fallback).
        poll_s: Seconds between health checks while waiting.
        health_path: vLLM's health endpoint, relative to the server root.
        concurrency: Requests in flight at once (engine http).
        chunk_size: Lines per chunk (one vllm.LLM call, or one progress step).
        timeout_s: Seconds one HTTP request may take before it counts as a timeout (and is retried).
        max_retries: Retries per request on 429, 5xx and timeouts (with backoff and Retry-After).
        requests_per_minute: Request rate limit; empty: none.
        tokens_per_hour: Token rate limit (from the responses' usage); empty: none.
        vllm_kwargs: Extra vllm.LLM arguments (engine vllm), e.g. {"gpu_memory_utilization": 0.8}.
        progress_every: Lines between progress artifact updates and log lines.
        ledger_url: Ledger database (postgresql://...) when ledger_block is not given; default: the node's.
        endpoint_block: Saved OpenAICompatibleEndpoint block for vLLM (UI: pick one; CLI: its name); wins over base_url.
        fallback_block: Saved OpenAICompatibleEndpoint block for the gateway (UI: pick one); wins over fallback_url.
        ledger_block: Saved PostgresLedger block (UI: pick one; CLI/prefect.yaml: its name); wins over ledger_url.
        retry_failed: Also send again the lines whose answer in output_path is an error (they are replaced in place).
    """
    logger = get_run_logger()
    roots = batch_roots()
    inp, out = confine(input_path, roots, "input_path"), confine(output_path, roots, "output_path")
    if inp == out:
        raise ConfigError("output_path must differ from input_path")
    refuse_password("base_url", base_url)
    refuse_password("fallback_url", fallback_url)
    primary = resolve_endpoint(endpoint_block, "endpoint_block", base_url, api_key_env)
    fallback = resolve_endpoint(fallback_block, "fallback_block", fallback_url, fallback_api_key_env)
    ledger = resolve_ledger_url(ledger_block, ledger_url)
    items = read_input(inp)  # refuses duplicates before any job row or request
    db = open_ledger(ledger)
    job_id = f"batch-{uuid.uuid4().hex[:12]}"
    start_job(db, job_id, str(inp), str(out), engine)
    stats = BatchStats(total=len(items))
    endpoint: str | None = None
    progress_id = create_progress_artifact(0.0, key="batch-inference-progress", description=f"{job_id}: {inp}")
    last_reported = [0]

    def on_progress(s: BatchStats) -> None:
        nonlocal stats
        stats = s  # so a failure later still records how far the run got
        if s.done - last_reported[0] >= progress_every or s.done >= s.total:
            last_reported[0] = s.done
            update_progress_artifact(progress_id, 100.0 * s.done / max(1, s.total))
            logger.info("%s: %d/%d lines (%d failed)", job_id, s.done, s.total, s.failed)

    try:
        if engine == "vllm":
            if not model:
                raise ConfigError("engine 'vllm' needs model= (a model name or local path)")
            vllm_engine: Engine = VllmEngine(model, vllm_kwargs)  # clear error here if vllm is missing
            if (slot := node_gpu_slot()) is None:
                raise ConfigError(
                    "engine 'vllm' runs on this node's GPU, but the node names no GPU slot (SWARM_GPU_SLOT)"
                )
            with gpu_section(slot):
                stats = run_batch(inp, out, vllm_engine, chunk_size, on_progress, items, retry_failed)
        elif engine == "http":
            if primary is None:
                raise ConfigError("engine 'http' needs base_url or endpoint_block")
            endpoint = choose_endpoint(
                primary.url,
                fallback.url if fallback else None,
                lambda url: health_check(url, health_path),
                on_primary_down,
                max_wait_s,
                poll_s,
            )
            used = primary if endpoint == primary.url else fallback
            assert used is not None  # choose_endpoint returns one of the two URLs
            if used is not primary:
                logger.warning("%s is down; routing the batch to the gateway %s", primary.url, endpoint)
            fail_over = fallback if on_primary_down == "fallback" and used is primary else None
            settings = HttpSettings(
                base_url=endpoint,
                api_key=used.api_key,
                model=model or used.model,
                concurrency=concurrency,
                timeout_s=timeout_s,
                max_retries=max_retries,
                requests_per_minute=requests_per_minute,
                tokens_per_hour=tokens_per_hour,
                fallback_base_url=fail_over.url if fail_over else None,
                fallback_api_key=fail_over.api_key if fail_over else None,
            )
            http_engine = HttpEngine(settings)
            # vLLM's server on this node is GPU work; a batch sent to the gateway is not.
            with gpu_section(node_gpu_slot() if used is primary else None):
                stats = run_batch(inp, out, http_engine, chunk_size, on_progress, items, retry_failed)
            if http_engine.failed_over and fallback is not None:
                logger.warning(
                    "%s failed mid-run; %d requests went to the gateway %s",
                    primary.url,
                    http_engine.fallback_requests,
                    fallback.url,
                )
                endpoint = f"{primary.url} -> {fallback.url}"
        else:
            raise ConfigError(f"engine must be 'http' or 'vllm', got {engine!r}")
    except SwarmError as exc:
        finish_job(db, job_id, "failed", stats.as_dict(), endpoint, str(exc), stats.usage)
        raise
    except BaseException as exc:
        finish_job(db, job_id, "crashed", stats.as_dict(), endpoint, f"{type(exc).__name__}: {exc}", stats.usage)
        raise
    update_progress_artifact(progress_id, 100.0)
    status = "completed" if stats.failed == 0 else "completed_with_errors"
    finish_job(db, job_id, status, stats.as_dict(), endpoint, usage=stats.usage)
    create_markdown_artifact(
        summary_markdown(job_id, engine, endpoint, stats, str(out)),
        key="batch-inference-summary",
        description=f"{job_id}: {stats.ok} ok, {stats.failed} failed, {stats.skipped} skipped, {stats.retried} retried",
    )
    return {"job_id": job_id, "status": status, "endpoint": endpoint, **stats.as_dict()}
